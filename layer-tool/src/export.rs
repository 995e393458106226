//! `layer-tool export`: one layer as an OCI layer tarball, or an image as an OCI image layout
//! (a directory, or a tar of one when OUT ends in `.tar`) that other OCI tools read.
//!
//! Layers are written by the deterministic writer, so a layer's exported diff id is its store
//! key; if the two differ, the layer directory was changed on disk and the export fails.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;

use crate::digest::{self, HashWriter};
use crate::oci::{self, ConfigFile, ContainerConfig, Descriptor, Index, Manifest, RootFs};
use crate::progress;
use crate::store::{Image, Store};
use crate::tarball;

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// gzip the layer blobs (`tar+gzip` media type); default plain tar.
    pub gzip: bool,
    /// The ref name annotation in `index.json` (default: the image name).
    pub reference: Option<String>,
    pub progress: bool,
}

/// A written layer blob.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub diff_id: String,
    pub digest: String,
    pub size: u64,
}

/// Write the layer directory `layer_dir` to `out` (gzip when asked); check it against `expect`.
pub fn write_layer_blob(
    layer_dir: &Path,
    out: &Path,
    gzip: bool,
    expect: Option<&str>,
    show: bool,
) -> Result<LayerBlob> {
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let for_sync = file
        .try_clone()
        .with_context(|| format!("dup {}", out.display()))?;
    let bar = progress::bytes(show, 0, format!("writing {}", out.display()));
    let sink = HashWriter::new(BufWriter::new(bar.wrap_write(file)));
    let (sink, diff_id) = if gzip {
        let gz = GzEncoder::new(sink, flate2::Compression::default());
        let (gz, diff_id, _) = tarball::write_layer(layer_dir, gz)?;
        (
            gz.finish()
                .with_context(|| format!("compressing {}", out.display()))?,
            diff_id,
        )
    } else {
        let (sink, diff_id, _) = tarball::write_layer(layer_dir, sink)?;
        (sink, diff_id)
    };
    let (buffered, digest, size) = sink.finish();
    buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", out.display()))?;
    for_sync
        .sync_all()
        .with_context(|| format!("syncing {}", out.display()))?;
    bar.finish_and_clear();
    if let Some(want) = expect {
        if diff_id != want {
            bail!(
                "layer {} changed on disk: its content now hashes to {diff_id} (expected {want})",
                layer_dir.display()
            );
        }
    }
    Ok(LayerBlob {
        diff_id,
        digest,
        size,
    })
}

/// Export the store layer `digest` as a layer tarball at `out`.
pub fn export_layer(
    store: &Store,
    digest: &str,
    out: &Path,
    opts: &ExportOptions,
) -> Result<LayerBlob> {
    let dir = store.layer_path(digest)?;
    if !dir.is_dir() {
        bail!("no layer {digest} in the store ({})", dir.display());
    }
    let tmp = temp_sibling(out)?;
    let blob = write_layer_blob(&dir, &tmp, opts.gzip, Some(digest), opts.progress)?;
    fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(blob)
}

/// Export image `name_or_path` as an OCI image layout at `out` (a `.tar` when it ends so).
/// Returns the manifest descriptor.
pub fn export_image(
    store: &Store,
    name_or_path: &str,
    out: &Path,
    opts: &ExportOptions,
) -> Result<Descriptor> {
    let (image_dir, image) = store.find_image(name_or_path)?;
    if out.exists() {
        bail!("{} already exists", out.display());
    }
    let parent = parent_of(out);
    let staging = tempfile::Builder::new()
        .prefix(".layer-tool-export-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    let layout = staging.path().join("layout");
    let desc = write_layout(&image_dir, &image, &layout, opts)?;
    if out.extension().is_some_and(|e| e == "tar") {
        let tmp = staging.path().join("layout.tar");
        let file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let (writer, _, _) = tarball::write_layer(&layout, BufWriter::new(file))?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    } else {
        fs::rename(&layout, out)
            .with_context(|| format!("renaming {} to {}", layout.display(), out.display()))?;
    }
    Ok(desc)
}

/// Write the OCI image layout of `image` into the new directory `layout`.
fn write_layout(
    image_dir: &Path,
    image: &Image,
    layout: &Path,
    opts: &ExportOptions,
) -> Result<Descriptor> {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("mkdir {}", blobs.display()))?;
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let dir = image_dir.join(&layer.path);
        let tmp = blobs.join(format!(".layer-{i}.tmp"));
        let blob = write_layer_blob(&dir, &tmp, opts.gzip, Some(&layer.digest), opts.progress)
            .with_context(|| format!("exporting layer {} of {}", layer.digest, image.name))?;
        let dest = blobs.join(digest::hex_part(&blob.digest)?);
        fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
        layer_descs.push(Descriptor {
            media_type: if opts.gzip {
                oci::MEDIA_LAYER_GZIP
            } else {
                oci::MEDIA_LAYER
            }
            .to_string(),
            digest: blob.digest,
            size: blob.size,
            platform: None,
            annotations: None,
        });
        diff_ids.push(blob.diff_id);
    }
    let config = ConfigFile {
        created: image.provenance.created.clone(),
        architecture: oci::host_arch().to_string(),
        os: "linux".to_string(),
        config: ContainerConfig::from_image_config(&image.config),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids,
        },
        history: image.provenance.history.clone(),
    };
    let config_desc = write_blob(&blobs, oci::MEDIA_CONFIG, &serde_json::to_vec(&config)?)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_string()),
        config: config_desc,
        layers: layer_descs,
    };
    let mut manifest_desc =
        write_blob(&blobs, oci::MEDIA_MANIFEST, &serde_json::to_vec(&manifest)?)?;
    let reference = opts.reference.clone().unwrap_or_else(|| image.name.clone());
    manifest_desc.annotations = Some(BTreeMap::from([(oci::REF_NAME.to_string(), reference)]));
    let index = Index {
        schema_version: 2,
        media_type: Some(oci::MEDIA_INDEX.to_string()),
        manifests: vec![manifest_desc.clone()],
    };
    write_file(&layout.join("index.json"), &serde_json::to_vec(&index)?)?;
    write_file(
        &layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(manifest_desc)
}

fn write_blob(blobs: &Path, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let digest = digest::of_bytes(bytes);
    write_file(&blobs.join(digest::hex_part(&digest)?), bytes)?;
    Ok(Descriptor {
        media_type: media_type.to_string(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn parent_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary name next to `out`, for write-then-rename.
fn temp_sibling(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{} has no file name", out.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(parent_of(out).join(tmp))
}
