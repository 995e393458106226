//! The `created` time and `history` of images that layer-tool makes (build, commit, squash).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::{History, Image, Provenance};

/// An RFC 3339 time in whole seconds: `at` (epoch seconds, e.g. `SOURCE_DATE_EPOCH`), or now.
pub fn timestamp(at: Option<i64>) -> String {
    let time = match at {
        Some(secs) => UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs()),
        None => SystemTime::now(),
    };
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The provenance of an image made of `base` (if any) plus one new layer, by `created_by`.
///
/// The base's history is kept when it accounts for the base's layers (one entry without
/// `empty_layer` per layer, as OCI requires); a history that does not (an image stored before
/// layer-tool kept histories) is dropped rather than extended into a wrong one.
pub fn one_more_layer(base: Option<&Image>, created_by: String, at: Option<i64>) -> Provenance {
    let created = timestamp(at);
    let mut history = match base {
        Some(image) if accounts_for_layers(image) => image.provenance.history.clone(),
        Some(_) => {
            return Provenance {
                created: Some(created),
                history: Vec::new(),
            }
        }
        None => Vec::new(),
    };
    history.push(History {
        created: Some(created.clone()),
        created_by: Some(created_by),
        ..History::default()
    });
    Provenance {
        created: Some(created),
        history,
    }
}

/// True when `image`'s history has one layer entry per layer.
pub fn accounts_for_layers(image: &Image) -> bool {
    let layer_steps = image
        .provenance
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .count();
    layer_steps == image.layers.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LayerRef;

    fn image(layers: usize, history: usize) -> Image {
        Image {
            name: "base".into(),
            layers: (0..layers)
                .map(|i| LayerRef {
                    digest: format!("sha256:{i:064x}"),
                    path: format!("l{i}").into(),
                })
                .collect(),
            config: Default::default(),
            provenance: Provenance {
                created: Some(timestamp(Some(0))),
                history: (0..history)
                    .map(|i| History {
                        created_by: Some(format!("step {i}")),
                        ..History::default()
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn timestamps_are_rfc3339_seconds() {
        assert_eq!(timestamp(Some(1_600_000_000)), "2020-09-13T12:26:40Z");
    }

    #[test]
    fn a_consistent_history_grows_and_a_wrong_one_is_dropped() {
        let p = one_more_layer(Some(&image(2, 2)), "layer-tool build".into(), Some(0));
        assert_eq!(p.created.as_deref(), Some("1970-01-01T00:00:00Z"));
        let by: Vec<_> = p
            .history
            .iter()
            .map(|h| h.created_by.clone().unwrap())
            .collect();
        assert_eq!(by, ["step 0", "step 1", "layer-tool build"]);
        let p = one_more_layer(Some(&image(2, 0)), "layer-tool build".into(), Some(0));
        assert!(p.history.is_empty());
        assert!(p.created.is_some());
        let p = one_more_layer(None, "layer-tool build".into(), None);
        assert_eq!(p.history.len(), 1);
    }
}
