//! `layer-tool rm IMAGE` and `layer-tool gc`: forget images, and delete layers no image uses.
//!
//! `gc` knows only the images in the store: an image directory kept elsewhere, or a container
//! still running from an image that was removed, is not seen. It holds the store's exclusive
//! lock, so it waits for imports, builds, commits and squashes in progress, and they wait for
//! it.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{bail, Context, Result};

use crate::store::Store;

/// Remove image `name` from the store (its layers stay until `gc`).
pub fn remove_image(store: &Store, name: &str) -> Result<()> {
    let dir = store.image_dir(name)?;
    if !dir.join(crate::store::IMAGE_FILE).is_file() {
        bail!("no image {name:?} in the store");
    }
    let _lock = store.lock(false)?;
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// What `gc` removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub layers: Vec<String>,
    pub staging: usize,
}

/// Delete layers that no image in the store names, and staging left by interrupted work.
pub fn gc(store: &Store) -> Result<GcReport> {
    let _lock = store.lock(true)?;
    let used: BTreeSet<String> = store
        .list_images()?
        .into_iter()
        .flat_map(|image| image.layers.into_iter().map(|l| l.digest))
        .collect();
    let mut report = GcReport::default();
    for (digest, path) in store.list_layers()? {
        if !used.contains(&digest) {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
            report.layers.push(digest);
        }
    }
    // Under the exclusive lock nothing is staging: whatever is in tmp was left by a crash.
    let tmp = store.tmp_root();
    if tmp.is_dir() {
        for entry in fs::read_dir(&tmp).with_context(|| format!("reading {}", tmp.display()))? {
            let path = entry
                .with_context(|| format!("reading {}", tmp.display()))?
                .path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("removing {}", path.display()))?;
            report.staging += 1;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build, BuildOptions};

    #[test]
    fn gc_keeps_used_layers_and_drops_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("store"));
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("f"), "a").unwrap();
        fs::write(b.join("f"), "b").unwrap();
        let ia = build(&store, &a, "a", &BuildOptions::default()).unwrap();
        let ib = build(&store, &b, "b", &BuildOptions::default()).unwrap();
        fs::create_dir_all(store.tmp_root().join("import-crashed")).unwrap();
        assert!(remove_image(&store, "nope").is_err());
        remove_image(&store, "b").unwrap();
        let report = gc(&store).unwrap();
        assert_eq!(report.layers, vec![ib.layers[0].digest.clone()]);
        assert_eq!(report.staging, 1);
        assert!(store.layer_path(&ia.layers[0].digest).unwrap().is_dir());
        assert!(!store.layer_path(&ib.layers[0].digest).unwrap().exists());
        assert!(store.find_image("a").is_ok());
    }
}
