//! `layer-tool push IMAGE REF`: an image of the store to a registry.
//!
//! The image is exported as `export --gzip` writes it (deterministic tars, deterministic gzip),
//! into a staging directory of the store, so pushing the same image twice names the same
//! blobs. Each blob (layers, then the config) is first asked for with `HEAD`: what the
//! registry has is not sent again. A blob it lacks is mounted from the repository the image
//! was pulled from when that is on the same registry (`POST ...?mount=DIGEST&from=REPO`; a
//! registry that will not mount answers with an upload session instead), else uploaded
//! monolithically (`POST` for a session, `PUT ...&digest=`). The manifest goes last, so the
//! tag never names a blob the registry does not have.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ureq::http::Method;

use super::client::{Access, Client, Payload, RegistryOptions};
use super::reference::ImageRef;
use crate::export::{export_image, ExportOptions};
use crate::oci::{self, Descriptor, Manifest};
use crate::progress;
use crate::store::Store;

#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub registry: RegistryOptions,
    pub progress: bool,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Pushed {
    /// The digest of the manifest pushed.
    pub manifest: String,
    /// Blobs uploaded, mounted from another repository, and already there.
    pub sent: usize,
    pub mounted: usize,
    pub present: usize,
}

/// Push the store image `name` to `target`.
pub fn push(store: &Store, name: &str, target: &ImageRef, opts: &PushOptions) -> Result<Pushed> {
    let staging = store.staging_dir("push")?;
    let layout = staging.path().join("layout");
    let export = ExportOptions {
        gzip: true,
        reference: None,
        progress: opts.progress,
    };
    let desc = export_image(store, name, &layout, &export)
        .with_context(|| format!("exporting {name} for the push"))?;
    let blob = |d: &str| -> Result<std::path::PathBuf> {
        Ok(layout
            .join("blobs/sha256")
            .join(crate::digest::hex_part(d)?))
    };
    let manifest_bytes = fs::read(blob(&desc.digest)?).context("reading the exported manifest")?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).context("parsing the exported manifest")?;

    // Mount from where the image came from, when that is this registry's other repository.
    let mount_from = super::local::source_of(store, name)
        .and_then(|rec| ImageRef::parse(&rec.reference).ok())
        .filter(|src| src.registry == target.registry && src.repository != target.repository)
        .map(|src| src.repository);

    let client = Client::connect(target, Access::Push, &opts.registry)?;
    let mut pushed = Pushed {
        manifest: desc.digest.clone(),
        ..Default::default()
    };
    let blobs: Vec<&Descriptor> = manifest.layers.iter().chain([&manifest.config]).collect();
    for d in blobs {
        let path = blob(&d.digest)?;
        match push_blob(
            &client,
            target,
            d,
            &path,
            mount_from.as_deref(),
            opts.progress,
        )
        .with_context(|| format!("pushing blob {}", d.digest))?
        {
            Sent::Present => pushed.present += 1,
            Sent::Mounted => pushed.mounted += 1,
            Sent::Uploaded => pushed.sent += 1,
        }
    }
    let reference = target.manifest_reference();
    let url = client.url(&format!("manifests/{reference}"));
    let mut resp = client.request(
        Method::PUT,
        &url,
        &[],
        &Payload::Bytes(&manifest_bytes, oci::MEDIA_MANIFEST),
    )?;
    if !resp.status().is_success() {
        return Err(client.status_error(&mut resp, target, "manifest upload"));
    }
    Ok(pushed)
}

enum Sent {
    Present,
    Mounted,
    Uploaded,
}

fn push_blob(
    client: &Client,
    target: &ImageRef,
    desc: &Descriptor,
    path: &Path,
    mount_from: Option<&str>,
    show: bool,
) -> Result<Sent> {
    let url = client.url(&format!("blobs/{}", desc.digest));
    let mut head = client.request(Method::HEAD, &url, &[], &Payload::Empty)?;
    if head.status().is_success() {
        return Ok(Sent::Present);
    }
    if head.status() != 404 {
        return Err(client.status_error(&mut head, target, "blob check"));
    }
    let mut resp = None;
    if let Some(from) = mount_from {
        let url = client.url(&format!("blobs/uploads/?mount={}&from={from}", desc.digest));
        let r = client.request(Method::POST, &url, &[], &Payload::Empty)?;
        match r.status().as_u16() {
            201 => return Ok(Sent::Mounted),
            // Not allowed to read the source: upload as docker does.
            401 | 403 => {}
            _ => resp = Some(r),
        }
    }
    let mut resp = match resp {
        Some(r) => r,
        None => client.request(
            Method::POST,
            &client.url("blobs/uploads/"),
            &[],
            &Payload::Empty,
        )?,
    };
    if resp.status() != 202 {
        return Err(client.status_error(&mut resp, target, "blob upload start"));
    }
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .context("the registry started an upload without a Location")?;
    let location = client.absolute(location);
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={}", desc.digest);
    let bar = progress::bytes(show, desc.size, format!("push {}", short(&desc.digest)));
    let mut resp = client.request(Method::PUT, &put, &[], &Payload::File(path))?;
    bar.finish_and_clear();
    if resp.status() != 201 {
        return Err(client.status_error(&mut resp, target, "blob upload"));
    }
    if fs::metadata(path).map(|m| m.len()).unwrap_or(0) != desc.size {
        bail!("{} changed while it was sent", path.display());
    }
    Ok(Sent::Uploaded)
}

fn short(digest: &str) -> &str {
    digest
        .trim_start_matches("sha256:")
        .get(..12)
        .unwrap_or(digest)
}
