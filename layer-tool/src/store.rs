//! The local image store that `layer-tool` writes and `runner` reads.
//!
//! Layout (the root is `$UNIONFS_STORE`, default [`DEFAULT_ROOT`]):
//!
//! ```text
//! ROOT/layers/sha256/<hex>/        one layer: a directory tree in aufs/OCI `.wh.` form,
//!                                  keyed by the sha256 of its uncompressed tar (the OCI diff id)
//! ROOT/images/<name>/image.json    one image: its layers bottom first, and its config
//! ```
//!
//! An image directory can also live outside the store: `image.json` names each layer by digest
//! and by a path relative to the image directory, so a directory with `image.json` and
//! `layers/…` beside it is a complete image.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where the store lives when `$UNIONFS_STORE` is unset.
pub const DEFAULT_ROOT: &str = "/var/lib/unionfs";
/// The file that describes an image inside its directory.
pub const IMAGE_FILE: &str = "image.json";

/// The image config a container starts from (the parts of the OCI image config we use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:<hex>` of the layer's uncompressed tar (OCI diff id).
    pub digest: String,
    /// The layer directory, relative to the image directory (or absolute).
    pub path: PathBuf,
}

/// `image.json`: an ordered list of layers (bottom first, as in OCI) and a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub layers: Vec<LayerRef>,
    #[serde(default)]
    pub config: ImageConfig,
}

/// The store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `$UNIONFS_STORE`, or [`DEFAULT_ROOT`].
    pub fn from_env() -> Store {
        let root = std::env::var_os("UNIONFS_STORE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        Store { root }
    }

    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The directory of the layer with this digest (`sha256:<hex>` or `<hex>`).
    pub fn layer_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("not a sha256 digest: {digest:?}");
        }
        Ok(self.layers_dir().join(hex))
    }

    /// The directory of the image called `name`.
    pub fn image_dir(&self, name: &str) -> Result<PathBuf> {
        validate_image_name(name)?;
        Ok(self.images_dir().join(name))
    }

    /// Find an image by store name, or by path to an image directory.
    pub fn find_image(&self, name_or_path: &str) -> Result<(PathBuf, Image)> {
        let as_path = Path::new(name_or_path);
        let dir = if as_path.join(IMAGE_FILE).is_file() {
            as_path.to_path_buf()
        } else {
            let dir = self.image_dir(name_or_path)?;
            if !dir.join(IMAGE_FILE).is_file() {
                bail!(
                    "unknown image {name_or_path:?}: no {} in {} and no image directory at that path",
                    IMAGE_FILE,
                    dir.display()
                );
            }
            dir
        };
        let image = Image::load(&dir)?;
        Ok((dir, image))
    }

    /// Every image in the store, sorted by name.
    pub fn list_images(&self) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        let dir = self.images_dir();
        if !dir.exists() {
            return Ok(out);
        }
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if entry.path().join(IMAGE_FILE).is_file() {
                out.push(Image::load(&entry.path())?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Image {
    /// Read `DIR/image.json`.
    pub fn load(dir: &Path) -> Result<Image> {
        let file = dir.join(IMAGE_FILE);
        let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
    }

    /// Write `DIR/image.json` atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".{IMAGE_FILE}.tmp"));
        let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, dir.join(IMAGE_FILE))
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        Ok(())
    }

    /// Absolute layer directories, bottom first.
    pub fn layer_dirs(&self, image_dir: &Path) -> Vec<PathBuf> {
        self.layers.iter().map(|l| image_dir.join(&l.path)).collect()
    }
}

/// Image names: what docker accepts for a repository name, plus an optional `:tag`.
pub fn validate_image_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        && !name.starts_with('.')
        && !name.starts_with('-');
    if !ok {
        bail!("invalid image name {name:?}: use letters, digits, '.', '_', '-', ':'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let image = Image {
            name: "demo".into(),
            layers: vec![LayerRef {
                digest: format!("sha256:{}", "a".repeat(64)),
                path: PathBuf::from("../../layers/sha256").join("a".repeat(64)),
            }],
            config: ImageConfig {
                cmd: vec!["/bin/sh".into()],
                ..Default::default()
            },
        };
        image.save(dir.path()).unwrap();
        assert_eq!(Image::load(dir.path()).unwrap(), image);
    }

    #[test]
    fn rejects_bad_names_and_digests() {
        assert!(validate_image_name("../etc").is_err());
        assert!(validate_image_name("demo:latest").is_ok());
        let store = Store::at("/nonexistent");
        assert!(store.layer_path("sha256:zz").is_err());
        let err = store.find_image("nope").unwrap_err().to_string();
        assert!(err.contains("unknown image"), "{err}");
    }
}
