//! `layer-tool ls` and `layer-tool inspect`: what the store holds, sizes, digests, whiteouts.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use unionfs::whiteout::{self, EntryKind};

use crate::store::{Image, ImageConfig, Provenance, Store};
use crate::tarball::sorted_names;

/// What one layer directory holds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerInfo {
    pub digest: String,
    pub path: PathBuf,
    /// Bytes of regular files (each inode once).
    pub size: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub others: u64,
    /// Paths (relative to the layer root) that this layer deletes from lower layers.
    pub whiteouts: Vec<PathBuf>,
    /// Directories that hide lower directories of the same path.
    pub opaque_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub dir: PathBuf,
    pub config: ImageConfig,
    /// `created` and `history`, as in `image.json`.
    #[serde(flatten)]
    pub provenance: Provenance,
    pub size: u64,
    pub layers: Vec<LayerInfo>,
}

/// Walk a layer directory.
pub fn layer_info(digest: &str, dir: &Path) -> Result<LayerInfo> {
    let mut info = LayerInfo {
        digest: digest.to_string(),
        path: dir.to_path_buf(),
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    walk(dir, Path::new(""), &mut info, &mut seen)?;
    Ok(info)
}

fn walk(
    root: &Path,
    rel: &Path,
    info: &mut LayerInfo,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> Result<()> {
    for name in sorted_names(&root.join(rel))? {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let md =
            fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
        match whiteout::classify(&name) {
            EntryKind::Whiteout(hidden) => {
                info.whiteouts.push(rel.join(hidden));
                continue;
            }
            EntryKind::Opaque => {
                info.opaque_dirs.push(rel.to_path_buf());
                continue;
            }
            EntryKind::Meta | EntryKind::Plain => {}
        }
        let ft = md.file_type();
        if ft.is_dir() {
            info.dirs += 1;
            walk(root, &rel_path, info, seen)?;
        } else if ft.is_symlink() {
            info.symlinks += 1;
        } else if ft.is_file() {
            info.files += 1;
            if seen.insert((md.dev(), md.ino())) {
                info.size += md.len();
            }
        } else {
            info.others += 1;
        }
    }
    Ok(())
}

pub fn image_info(store: &Store, name_or_path: &str) -> Result<ImageInfo> {
    let (dir, image) = store.find_image(name_or_path)?;
    let mut layers = Vec::new();
    for layer in &image.layers {
        let path = dir.join(&layer.path);
        let path = path.canonicalize().unwrap_or(path);
        layers.push(layer_info(&layer.digest, &path)?);
    }
    Ok(ImageInfo {
        name: image.name.clone(),
        size: layers.iter().map(|l| l.size).sum(),
        dir,
        config: image.config,
        provenance: image.provenance,
        layers,
    })
}

/// `inspect` of an image name/path, or of a layer digest (`sha256:…`, or a bare 64-hex).
pub fn inspect(store: &Store, what: &str) -> Result<serde_json::Value> {
    if let Some(digest) = crate::digest::normalize(what) {
        let dir = store.layer_path(&digest)?;
        if dir.is_dir() {
            return Ok(serde_json::to_value(layer_info(&digest, &dir)?)?);
        }
        bail!("no layer {digest} in the store");
    }
    Ok(serde_json::to_value(image_info(store, what)?)?)
}

/// The `ls` table: images, or layers with the images that use them.
pub fn list(store: &Store, layers: bool) -> Result<String> {
    let images = store.list_images()?;
    let mut out = String::new();
    if layers {
        out.push_str(&format!("{:<71}  {:>12}  IMAGES\n", "DIGEST", "SIZE"));
        for (digest, path) in store.list_layers()? {
            let info = layer_info(&digest, &path)?;
            let users: Vec<&str> = images
                .iter()
                .filter(|i| i.layers.iter().any(|l| l.digest == digest))
                .map(|i| i.name.as_str())
                .collect();
            out.push_str(&format!(
                "{:<71}  {:>12}  {}\n",
                digest,
                info.size,
                users.join(",")
            ));
        }
    } else {
        out.push_str(&format!(
            "{:<32}  {:>6}  {:>12}  TOP LAYER\n",
            "NAME", "LAYERS", "SIZE"
        ));
        for image in &images {
            let info = image_info(store, &image.name)?;
            out.push_str(&format!(
                "{:<32}  {:>6}  {:>12}  {}\n",
                image.name,
                image.layers.len(),
                info.size,
                top_digest(image)
            ));
        }
    }
    Ok(out)
}

fn top_digest(image: &Image) -> &str {
    image
        .layers
        .last()
        .map(|l| l.digest.as_str())
        .unwrap_or("-")
}
