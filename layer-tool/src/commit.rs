//! Commit a container's writable layer as a new read-only layer on top of its image.
//!
//! The runner and `layer-tool commit` share this. The upper directory is in aufs form (`.wh.`
//! whiteouts, `.wh..wh..opq` markers) as unionfs writes it; overlayfs whiteouts found there (0/0
//! character devices, the opaque xattr) are converted, and aufs bookkeeping names (`.wh..wh.*`,
//! e.g. unionfs' work directory) are left out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::ConfigChanges;
use crate::copy::{copy_tree, CopyOptions};
use crate::store::{Image, Store};

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Paths relative to the upper directory (`etc/hostname`) that must not land in the layer,
    /// with everything under them and their whiteouts.
    pub exclude: Vec<PathBuf>,
    pub config: ConfigChanges,
}

/// Copy `upper_dir` into a new layer keyed by its digest, and save image `new_name` = the layers
/// of `base` (a store name or an image directory) + the new layer, with `base`'s config.
pub fn commit_layer(
    store: &Store,
    upper_dir: &Path,
    base: &str,
    new_name: &str,
    exclude: &[&Path],
) -> Result<Image> {
    let opts = CommitOptions {
        exclude: exclude.iter().map(|p| p.to_path_buf()).collect(),
        ..Default::default()
    };
    commit_layer_with(store, upper_dir, base, new_name, &opts)
}

/// [`commit_layer`] with config changes.
pub fn commit_layer_with(
    store: &Store,
    upper_dir: &Path,
    base: &str,
    new_name: &str,
    opts: &CommitOptions,
) -> Result<Image> {
    crate::store::validate_image_name(new_name)?;
    let (base_dir, base_image) = store
        .find_image(base)
        .with_context(|| format!("base image {base:?}"))?;
    let mut layers = store.rebase_layers(&base_dir, &base_image)?;
    let mut config = base_image.config.clone();
    opts.config.apply(&mut config)?;

    let exclude = opts
        .exclude
        .iter()
        .map(|p| p.strip_prefix("/").unwrap_or(p).to_path_buf())
        .collect();
    let staging = store.staging_dir("commit")?;
    let staged = staging.path().join("layer");
    std::fs::create_dir(&staged).with_context(|| format!("mkdir {}", staged.display()))?;
    let copy_opts = CopyOptions {
        exclude,
        ..CopyOptions::default()
    };
    copy_tree(upper_dir, &staged, &copy_opts).with_context(|| {
        format!(
            "copying writable layer {} into a new layer",
            upper_dir.display()
        )
    })?;
    crate::copy::normalize_root_mode(&staged)?;
    let installed = store.install_layer(&staged)?;
    layers.push(store.layer_ref(&installed.digest)?);

    let image = Image {
        name: new_name.to_string(),
        layers,
        config,
        provenance: crate::provenance::one_more_layer(
            Some(&base_image),
            "layer-tool commit".to_string(),
            None,
        ),
    };
    store.save_image(&image)?;
    Ok(image)
}
