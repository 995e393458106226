//! Which store layer holds a layer known by its diff id (the digest of the uncompressed tar an
//! image config names). A layer from another tool is stored under the digest of *our* tar of
//! it, which differs from its diff id, so without this a layer already in the store could not
//! be recognised before it is fetched again.
//!
//! `ROOT/diffids/<hex>` holds `sha256:<store hex>`. An entry is written only after a layer was
//! unpacked and its diff id checked; one whose layer is gone is ignored.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::digest;
use crate::store::Store;

fn dir(store: &Store) -> PathBuf {
    store.root().join("diffids")
}

/// Remember that the layer with `diff_id` is the store layer `stored`.
pub fn record(store: &Store, diff_id: &str, stored: &str) -> Result<()> {
    let hex = digest::hex_part(diff_id)?;
    digest::hex_part(stored)?;
    if diff_id == stored {
        return Ok(()); // the store's own name already says it
    }
    let dir = dir(store);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".diffid.")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(stored.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(dir.join(hex))
        .with_context(|| format!("saving {}", dir.join(hex).display()))?;
    Ok(())
}

/// The store digest of the layer whose diff id is `diff_id`, when the store holds it.
pub fn lookup(store: &Store, diff_id: &str) -> Option<String> {
    let hex = digest::hex_part(diff_id).ok()?;
    let present = |d: &str| store.layer_path(d).is_ok_and(|p| p.is_dir());
    if present(diff_id) {
        return Some(diff_id.to_string());
    }
    let stored = fs::read_to_string(dir(store).join(hex)).ok()?;
    let stored = stored.trim();
    (digest::hex_part(stored).is_ok() && present(stored)).then(|| stored.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_point_only_at_present_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("s"));
        let diff = format!("sha256:{}", "1".repeat(64));
        let stored = format!("sha256:{}", "2".repeat(64));
        assert_eq!(lookup(&store, &diff), None);
        record(&store, &diff, &stored).unwrap();
        assert_eq!(lookup(&store, &diff), None, "the layer is not there");
        fs::create_dir_all(store.layer_path(&stored).unwrap()).unwrap();
        assert_eq!(lookup(&store, &diff), Some(stored.clone()));
        assert_eq!(lookup(&store, &stored), Some(stored));
        assert!(record(&store, "sha256:../x", &diff).is_err());
    }
}
