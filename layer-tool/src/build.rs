//! `layer-tool build DIR --name NAME [--base IMAGE]`: a directory becomes a layer and an image.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::ConfigChanges;
use crate::copy::{copy_tree, CopyOptions};
use crate::store::{Image, ImageConfig, Store};

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The image the new layer goes on top of (its layers and config are inherited).
    pub base: Option<String>,
    pub config: ConfigChanges,
    /// Clamp file mtimes to this value (for reproducible digests, as `SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<i64>,
}

/// Copy `dir` into a new layer, and save image `name` = base layers + that layer.
pub fn build(store: &Store, dir: &Path, name: &str, opts: &BuildOptions) -> Result<Image> {
    crate::store::validate_image_name(name)?;
    let base = match &opts.base {
        Some(base) => Some(
            store
                .find_image(base)
                .with_context(|| format!("base image {base:?}"))?,
        ),
        None => None,
    };
    let (mut layers, mut config) = match &base {
        Some((base_dir, base_image)) => (
            store.rebase_layers(base_dir, base_image)?,
            base_image.config.clone(),
        ),
        None => (Vec::new(), ImageConfig::default()),
    };
    // Created at the clamp time when there is one, so a reproducible build stays reproducible.
    let provenance = crate::provenance::one_more_layer(
        base.as_ref().map(|(_, image)| image),
        "layer-tool build".to_string(),
        opts.clamp_mtime,
    );
    opts.config.apply(&mut config)?;

    let staging = store.staging_dir("build")?;
    let staged = staging.path().join("layer");
    std::fs::create_dir(&staged).with_context(|| format!("mkdir {}", staged.display()))?;
    let copy_opts = CopyOptions {
        clamp_mtime: opts.clamp_mtime,
        ..CopyOptions::default()
    };
    copy_tree(dir, &staged, &copy_opts)
        .with_context(|| format!("copying {} into a new layer", dir.display()))?;
    crate::copy::normalize_root_mode(&staged)?;
    let installed = store.install_layer(&staged)?;
    layers.push(store.layer_ref(&installed.digest)?);

    let image = Image {
        name: name.to_string(),
        layers,
        config,
        provenance,
    };
    store.save_image(&image)?;
    Ok(image)
}
