//! `layer-tool import PATH`: an OCI image layout (directory or tar) or a `docker save` archive
//! into the store, all or nothing.
//!
//! Every blob's digest is checked before it is unpacked, and every layer's diff id while it is
//! unpacked. Layers are unpacked into a staging directory and only renamed into the store when all
//! of them are good; if anything fails, layers this import added are removed again and no image is
//! written, so the store is as it was.
//!
//! A layer's store key is the digest of the deterministic tar of what was unpacked
//! ([`crate::tarball`]), which equals the source's diff id whenever the source was written by
//! this tool (so export -> import keeps digests), and names the content we hold otherwise.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::compression::Compression;
use crate::digest::HashReader;
use crate::extract::{extract, ExtractOptions, Limits};
use crate::progress;
use crate::source::{open_inside, read_source, SourceImage, SourceLayer};
use crate::store::{validate_image_name, Image, Staging, Store};

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The image name in the store; default: the name the source gives.
    pub name: Option<String>,
    /// Which image of a source with several (OCI ref name or docker tag).
    pub reference: Option<String>,
    pub limits: Limits,
    /// Allow device nodes in layers (`None`: when root).
    pub allow_devices: Option<bool>,
    /// Draw progress bars (only sensible on a terminal).
    pub progress: bool,
}

/// Import the image at `src` (directory or archive) and save it in the store.
pub fn import(store: &Store, src: &Path, opts: &ImportOptions) -> Result<Image> {
    let staging = store.staging_dir("import")?;
    let md = fs::metadata(src).with_context(|| format!("stat {}", src.display()))?;
    let src_dir = if md.is_dir() {
        src.to_path_buf()
    } else {
        let unpacked = staging.path().join("source");
        fs::create_dir(&unpacked).with_context(|| format!("mkdir {}", unpacked.display()))?;
        unpack_archive(src, &unpacked, opts)
            .with_context(|| format!("unpacking image archive {}", src.display()))?;
        unpacked
    };
    let source = read_source(&src_dir, opts.reference.as_deref())?;
    let name = match (&opts.name, &source.name) {
        (Some(n), _) => n.clone(),
        (None, Some(n)) => short_name(n),
        (None, None) => bail!(
            "{} does not name its image; give one with --name",
            src.display()
        ),
    };
    install_source(store, &staging, &src_dir, &source, &name, opts)
}

/// Unpack the layers of `source` (blobs relative to `src_dir`) in `staging`, move them into
/// the store and save the image `name`: all or nothing. Layers the source marks as already
/// stored are used as they are. `pull` comes in here too, with the blobs it fetched.
pub fn install_source(
    store: &Store,
    staging: &Staging,
    src_dir: &Path,
    source: &SourceImage,
    name: &str,
    opts: &ImportOptions,
) -> Result<Image> {
    validate_image_name(name)?;
    // Each layer's directory, bottom first: staged (to install) or already in the store.
    let mut dirs: Vec<(PathBuf, bool)> = Vec::new();
    for (i, layer) in source.layers.iter().enumerate() {
        let label = format!("layer {}/{}", i + 1, source.layers.len());
        if let Some(stored) = &layer.stored {
            let path = store.layer_path(stored)?;
            if !path.is_dir() {
                bail!("{label}: layer {stored} is no longer in the store");
            }
            dirs.push((path, false));
            continue;
        }
        let dir = staging.path().join(format!("layer-{i}"));
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let lower: Vec<PathBuf> = dirs.iter().rev().map(|(d, _)| d.clone()).collect();
        import_layer(src_dir, layer, &dir, &lower, opts, &label)
            .with_context(|| format!("importing {label} ({})", layer.rel.display()))?;
        dirs.push((dir, true));
    }

    let mut added: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<Image> {
        let mut layers = Vec::new();
        for ((dir, staged), layer) in dirs.iter().zip(&source.layers) {
            let digest = if *staged {
                let installed = store.install_layer(dir)?;
                if installed.new {
                    added.push(installed.path.clone());
                }
                installed.digest
            } else {
                store
                    .layer_ref(&layer.stored.clone().unwrap_or_default())?
                    .digest
            };
            layers.push(store.layer_ref(&digest)?);
        }
        let image = Image {
            name: name.to_string(),
            layers,
            config: source.config.clone(),
            provenance: source.provenance.clone(),
        };
        store.save_image(&image)?;
        // A later pull of an image with these layers finds them without fetching them. Only an
        // optimisation: a failure here costs a download later, never the import.
        for (layer, stored) in source.layers.iter().zip(&image.layers) {
            if let Err(e) = crate::diffids::record(store, &layer.diff_id, &stored.digest) {
                tracing::warn!("remembering layer {}: {e:#}", layer.diff_id);
            }
        }
        Ok(image)
    })();
    if result.is_err() {
        for path in added {
            let _ = fs::remove_dir_all(path);
        }
    }
    result
}

/// Check the blob digest, then unpack the layer into `dest` checking its diff id.
fn import_layer(
    src_dir: &Path,
    layer: &SourceLayer,
    dest: &Path,
    lower: &[PathBuf],
    opts: &ImportOptions,
    label: &str,
) -> Result<()> {
    if let Some(want) = &layer.blob_digest {
        let file = open_inside(src_dir, &layer.rel)?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bar = progress::bytes(opts.progress, len, format!("verifying {label}"));
        let (got, _) = HashReader::new(bar.wrap_read(file), u64::MAX)
            .drain()
            .with_context(|| format!("reading {}", layer.rel.display()))?;
        bar.finish_and_clear();
        if &got != want {
            bail!("blob digest mismatch: expected {want}, content has {got}");
        }
    }
    let file = open_inside(src_dir, &layer.rel)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(opts.progress, len, format!("unpacking {label}"));
    let mut buffered = BufReader::new(bar.wrap_read(file));
    let compression = Compression::detect(&mut buffered)?;
    let decoded = compression.decoder(buffered)?;
    let mut tar_stream = HashReader::new(decoded, opts.limits.max_bytes);
    let extract_opts = ExtractOptions {
        limits: opts.limits,
        allow_devices: opts
            .allow_devices
            .unwrap_or_else(crate::fsmeta::may_make_devices),
        apply_whiteouts: false,
        lower: lower.to_vec(),
    };
    extract(&mut tar_stream, dest, &extract_opts)?;
    let (got, _) = tar_stream
        .drain()
        .context("reading the end of the layer (corrupt or truncated?)")?;
    bar.finish_and_clear();
    if got != layer.diff_id {
        bail!(
            "diff id mismatch: the config says {}, the uncompressed layer has {got}",
            layer.diff_id
        );
    }
    Ok(())
}

/// Unpack an image archive (tar, or gzip/zstd-compressed tar) into `dest`.
fn unpack_archive(src: &Path, dest: &Path, opts: &ImportOptions) -> Result<()> {
    let file = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress::bytes(opts.progress, len, "reading archive".to_string());
    let mut buffered = BufReader::new(bar.wrap_read(file));
    let compression = Compression::detect(&mut buffered)?;
    let decoded = compression.decoder(buffered)?;
    let mut limited = HashReader::new(decoded, opts.limits.max_bytes);
    let extract_opts = ExtractOptions {
        limits: opts.limits,
        allow_devices: false,
        apply_whiteouts: false,
        lower: Vec::new(),
    };
    extract(&mut limited, dest, &extract_opts)?;
    io::copy(&mut limited, &mut io::sink()).context("reading the end of the archive")?;
    bar.finish_and_clear();
    Ok(())
}

/// `docker.io/library/busybox:latest` -> `busybox:latest`: store names have no `/`.
fn short_name(reference: &str) -> String {
    reference
        .rsplit('/')
        .next()
        .unwrap_or(reference)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(
            short_name("docker.io/library/busybox:latest"),
            "busybox:latest"
        );
        assert_eq!(short_name("demo"), "demo");
    }
}
