//! Which store image a registry reference is. Store names have no `/`, so a pulled image is
//! stored under a short name (`app:v1`) that images from other registries could share; the
//! image directory therefore also keeps `source.json`: the full reference it was pulled from,
//! the manifest digest, and the digest of the `image.json` it describes, so that an image saved
//! under that name later by anything else is never taken for the pulled one.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::reference::ImageRef;
use crate::digest;
use crate::store::{validate_image_name, Store, IMAGE_FILE};

pub const SOURCE_FILE: &str = "source.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The full reference as pulled (`127.0.0.1:5000/team/app:v1`).
    pub reference: String,
    /// The digest of the manifest the image came from.
    pub manifest: String,
    /// sha256 of the `image.json` saved by that pull.
    pub image_json: String,
}

/// Write `source.json` beside the image `name`'s freshly saved `image.json`.
pub fn record(store: &Store, name: &str, image: &ImageRef, manifest: &str) -> Result<()> {
    let dir = store.image_dir(name)?;
    let image_json = fs::read(dir.join(IMAGE_FILE))
        .with_context(|| format!("reading {}", dir.join(IMAGE_FILE).display()))?;
    let rec = SourceRecord {
        reference: image.to_string(),
        manifest: manifest.to_string(),
        image_json: digest::of_bytes(&image_json),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".source.json.")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    serde_json::to_writer_pretty(tmp.as_file_mut(), &rec)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .with_context(|| format!("chmod {}", tmp.path().display()))?;
    tmp.persist(dir.join(SOURCE_FILE))
        .with_context(|| format!("saving {}", dir.join(SOURCE_FILE).display()))?;
    Ok(())
}

/// What `name` in the store was pulled from, when its record is still true.
pub fn source_of(store: &Store, name: &str) -> Option<SourceRecord> {
    validate_image_name(name).ok()?;
    let dir = store.image_dir(name).ok()?;
    read_valid(&dir)
}

fn read_valid(dir: &Path) -> Option<SourceRecord> {
    let rec: SourceRecord = serde_json::from_slice(&fs::read(dir.join(SOURCE_FILE)).ok()?).ok()?;
    let image_json = fs::read(dir.join(IMAGE_FILE)).ok()?;
    (digest::of_bytes(&image_json) == rec.image_json).then_some(rec)
}

/// The store name of the image pulled from `image` (under `name`, or its default name), if
/// the store has it.
pub fn find(store: &Store, image: &ImageRef, name: Option<&str>) -> Option<String> {
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| image.store_name());
    let rec = source_of(store, &name)?;
    (rec.reference == image.to_string()).then_some(name)
}
