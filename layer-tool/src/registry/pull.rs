//! `layer-tool pull REF`: an image from a registry into the store.
//!
//! 1. The manifest by tag or digest (OCI or docker schema 2; an OCI index or docker manifest
//!    list is resolved to the requested platform, the host's by default), checked against the
//!    digest asked for or the one the registry announces, and capped in size.
//! 2. The config blob, checked against its descriptor's digest and size.
//! 3. The layers the store does not already hold (by diff id, see [`crate::diffids`]) are
//!    fetched in parallel into a staging directory of the store, each checked against its
//!    digest and size while it streams; the first failure stops the others.
//! 4. The store's import path ([`crate::import::install_source`]) unpacks them, checking each
//!    diff id, and installs layers and image all or nothing. An interrupted pull leaves only
//!    its staging directory, which `gc` removes; the next pull starts over.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use ureq::http::Method;

use super::client::{Access, Client, Payload, RegistryOptions};
use super::error::RegistryError;
use super::reference::ImageRef;
use super::verify;
use crate::extract::Limits;
use crate::import::{install_source, ImportOptions};
use crate::oci::{self, ConfigFile, Descriptor, Index, Manifest};
use crate::source::{SourceImage, SourceLayer};
use crate::store::{Image, Provenance, Store};
use crate::{diffids, digest, progress};

/// Manifests and indexes larger than this are refused (they are a few KiB).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Config blobs larger than this are refused.
pub const MAX_CONFIG: u64 = 16 << 20;
/// Layers fetched at once (docker's default `max-concurrent-downloads`).
pub const PARALLEL: usize = 3;

const MANIFEST_TYPES: &[&str] = &[
    oci::MEDIA_MANIFEST,
    oci::MEDIA_INDEX,
    oci::DOCKER_MANIFEST,
    oci::DOCKER_MANIFEST_LIST,
];

/// An OS/architecture/variant triple, as `--platform` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/amd64`, `linux/arm64/v8`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts
                    .get(2)
                    .filter(|v| !v.is_empty())
                    .map(|v| v.to_string()),
            }),
            _ => bail!("--platform {text:?}: want OS/ARCH or OS/ARCH/VARIANT (linux/arm64/v8)"),
        }
    }

    /// The machine this runs on, as docker names it.
    pub fn host() -> Platform {
        let architecture = oci::host_arch().to_string();
        let variant = match architecture.as_str() {
            "arm64" => Some("v8".to_string()),
            "arm" => Some("v7".to_string()),
            _ => None,
        };
        Platform {
            os: "linux".to_string(),
            architecture,
            variant,
        }
    }

    /// Whether an index entry's platform is this one. A missing variant matches any, and
    /// arm64 without a variant is v8 (as containerd's platform matcher has it).
    fn matches(&self, p: &oci::Platform) -> bool {
        let norm = |arch: &str, v: Option<&str>| match (arch, v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        if p.os != self.os || p.architecture != self.architecture {
            return false;
        }
        match (&self.variant, norm(&p.architecture, p.variant.as_deref())) {
            (Some(want), Some(have)) => *want == have,
            _ => true,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The store name (default: [`ImageRef::store_name`]).
    pub name: Option<String>,
    /// Which platform of a multi-platform image (default: the host's).
    pub platform: Option<Platform>,
    pub registry: RegistryOptions,
    /// Progress bars (on a terminal).
    pub progress: bool,
    pub limits: Limits,
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: Image,
    /// The digest of the image manifest (of the chosen platform).
    pub manifest: String,
    /// Layers fetched, and layers the store already had.
    pub fetched: usize,
    pub reused: usize,
}

/// Pull `image` into `store`.
pub fn pull(store: &Store, image: &ImageRef, opts: &PullOptions) -> Result<Pulled> {
    let name = opts.name.clone().unwrap_or_else(|| image.store_name());
    crate::store::validate_image_name(&name)?;
    let client = Client::connect(image, Access::Pull, &opts.registry)?;

    // 1. The manifest, through an index when there is one.
    let (bytes, digest) = fetch_manifest(&client, image, image.manifest_reference(), None)?;
    let doc: Value = serde_json::from_slice(&bytes).context("parsing the manifest")?;
    let (bytes, digest) = if is_index(&doc) {
        let index: Index = serde_json::from_value(doc).context("parsing the image index")?;
        let want = opts.platform.clone().unwrap_or_else(Platform::host);
        let desc = choose(&index, &want, image)?;
        fetch_manifest(&client, image, &desc.digest, Some(&desc))?
    } else {
        (bytes, digest)
    };
    let doc: Value = serde_json::from_slice(&bytes).context("parsing the manifest")?;
    check_manifest_kind(&doc)?;
    let manifest: Manifest = serde_json::from_value(doc).context("parsing the image manifest")?;

    // 2. The config.
    let config_desc = &manifest.config;
    if !matches!(
        config_desc.media_type.as_str(),
        oci::MEDIA_CONFIG | oci::DOCKER_CONFIG | ""
    ) {
        bail!(
            "{image} is not a container image: its config is {:?}",
            config_desc.media_type
        );
    }
    if config_desc.size > MAX_CONFIG {
        bail!(
            "the image config of {image} is {} bytes, more than {MAX_CONFIG}",
            config_desc.size
        );
    }
    let mut config_bytes = Vec::new();
    fetch_blob(
        &client,
        image,
        config_desc,
        &mut config_bytes,
        "the image config",
        |_| {},
        &|| false,
    )?;
    let config: ConfigFile =
        serde_json::from_slice(&config_bytes).context("parsing the image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "the manifest of {image} lists {} layers but its config has {} diff ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }

    // 3. The layers the store lacks. The staging directory holds the store's shared lock from
    // here on, so `gc` cannot remove a layer we decided to reuse.
    let staging = store.staging_dir("pull")?;
    let blob_dir = staging.path().join("blobs/sha256");
    fs::create_dir_all(&blob_dir).with_context(|| format!("creating {}", blob_dir.display()))?;
    let mut layers = Vec::new();
    let mut to_fetch = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        digest::hex_part(diff_id).context("a diff id in the image config")?;
        let hex = digest::hex_part(&desc.digest).context("a layer digest in the manifest")?;
        check_layer_type(desc)?;
        // The declared size bounds what is read; it must itself be bounded (a registry could
        // declare a terabyte and fill the disk).
        if desc.size > opts.limits.max_bytes {
            bail!(
                "layer {} of {image} declares {} bytes, more than the limit of {} (--max-size)",
                desc.digest,
                desc.size,
                opts.limits.max_bytes
            );
        }
        let stored = diffids::lookup(store, diff_id);
        if stored.is_none()
            && !to_fetch
                .iter()
                .any(|d: &Descriptor| d.digest == desc.digest)
        {
            to_fetch.push(desc.clone());
        }
        layers.push(SourceLayer {
            rel: Path::new("blobs/sha256").join(hex),
            blob_digest: Some(desc.digest.clone()),
            diff_id: diff_id.clone(),
            stored,
        });
    }
    let reused = layers.iter().filter(|l| l.stored.is_some()).count();
    fetch_layers(&client, image, &to_fetch, &blob_dir, opts.progress)?;

    // 4. Unpack and install through the import path.
    let source = SourceImage {
        name: Some(name.clone()),
        config: config.config.to_image_config(),
        provenance: Provenance {
            created: config.created.clone(),
            history: config.history.clone(),
        },
        layers,
    };
    let import_opts = ImportOptions {
        name: Some(name.clone()),
        reference: None,
        limits: opts.limits,
        allow_devices: None,
        progress: opts.progress,
    };
    let saved = install_source(
        store,
        &staging,
        staging.path(),
        &source,
        &name,
        &import_opts,
    )?;
    if let Err(e) = super::local::record(store, &name, image, &digest) {
        // The image is saved; without the record `runner run REF` pulls it once more.
        tracing::warn!("recording where {name} came from: {e:#}");
    }
    Ok(Pulled {
        image: saved,
        manifest: digest,
        fetched: to_fetch.len(),
        reused,
    })
}

/// When to pull before using an image (docker's `--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull when the store does not have it (the default, as docker).
    #[default]
    Missing,
    /// Pull every time (layers already stored are still not fetched again).
    Always,
    /// Never pull: the image must be in the store.
    Never,
}

/// The store image `what` names (a store name, an image directory, or a registry reference),
/// pulled first as `policy` says. `on_pull` hears about a pull before it starts. Returns
/// what [`Store::find_image`] takes.
pub fn ensure(
    store: &Store,
    what: &str,
    policy: PullPolicy,
    opts: &PullOptions,
    on_pull: impl FnOnce(&ImageRef),
) -> Result<String> {
    if policy != PullPolicy::Always && is_local(store, what) {
        return Ok(what.to_string());
    }
    let image = ImageRef::parse(what).with_context(|| {
        format!("unknown image {what:?}: not in the store, and not a registry reference")
    })?;
    if policy != PullPolicy::Always {
        if let Some(name) = super::local::find(store, &image, opts.name.as_deref()) {
            return Ok(name);
        }
        // `import` of a docker-save archive names `docker.io/library/busybox:latest`
        // `busybox:latest` and records no source: for docker.io, as docker would, that is it.
        let short = image.store_name();
        if image.registry == super::reference::DOCKER_HUB
            && super::local::source_of(store, &short).is_none()
            && is_local(store, &short)
        {
            return Ok(short);
        }
    }
    if policy == PullPolicy::Never {
        bail!("unknown image {what:?}: not in the store, and --pull never forbids pulling {image}");
    }
    on_pull(&image);
    let pulled = pull(store, &image, opts).with_context(|| {
        format!("unknown image {what:?}: not in the store, and pulling {image} failed")
    })?;
    Ok(pulled.image.name)
}

/// A store name with an `image.json`, or a path to an image directory.
fn is_local(store: &Store, what: &str) -> bool {
    if Path::new(what).join(crate::store::IMAGE_FILE).is_file() {
        return true;
    }
    crate::store::validate_image_name(what).is_ok()
        && store
            .image_dir(what)
            .is_ok_and(|d| d.join(crate::store::IMAGE_FILE).is_file())
}

fn is_index(doc: &Value) -> bool {
    let mt = doc.get("mediaType").and_then(Value::as_str).unwrap_or("");
    mt == oci::MEDIA_INDEX
        || mt == oci::DOCKER_MANIFEST_LIST
        || (mt.is_empty() && doc.get("manifests").is_some())
}

/// Refuse what is not an image manifest we can read, naming it.
fn check_manifest_kind(doc: &Value) -> Result<()> {
    if doc.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
        bail!(
            "docker schema 1 manifests are not supported (an image pushed by docker before 1.10)"
        );
    }
    let mt = doc.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if !(mt.is_empty() || mt == oci::MEDIA_MANIFEST || mt == oci::DOCKER_MANIFEST) {
        bail!("unsupported manifest type {mt:?}");
    }
    Ok(())
}

fn check_layer_type(desc: &Descriptor) -> Result<()> {
    let mt = desc.media_type.as_str();
    if mt.contains("encrypted") {
        bail!("layer {} is encrypted ({mt})", desc.digest);
    }
    if mt.contains("foreign") || mt.contains("nondistributable") {
        bail!(
            "layer {} is not distributable ({mt}): it must come from elsewhere",
            desc.digest
        );
    }
    let known = mt.starts_with("application/vnd.oci.image.layer.v1.tar")
        || mt.starts_with("application/vnd.docker.image.rootfs.diff.tar");
    if !known {
        bail!(
            "layer {} has media type {mt:?}, not a layer tarball",
            desc.digest
        );
    }
    Ok(())
}

/// The index entry for `want`, or an error listing the platforms there are.
fn choose(index: &Index, want: &Platform, image: &ImageRef) -> Result<Descriptor> {
    let found = index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)) && !d.is_index());
    if let Some(d) = found {
        return Ok(d.clone());
    }
    let have: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if let Some(v) = &p.variant {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    Err(RegistryError::NoPlatform {
        reference: image.to_string(),
        want: want.to_string(),
        have: if have.is_empty() {
            "none".into()
        } else {
            have.join(", ")
        },
    }
    .into())
}

/// Fetch a manifest or index; check it against `desc` (by digest) or the digest the reference
/// names, else the digest the registry announces. Returns the bytes and their digest.
fn fetch_manifest(
    client: &Client,
    image: &ImageRef,
    reference: &str,
    desc: Option<&Descriptor>,
) -> Result<(Vec<u8>, String)> {
    let url = client.url(&format!("manifests/{reference}"));
    let mut resp = client.request(Method::GET, &url, MANIFEST_TYPES, &Payload::Empty)?;
    if resp.status() == 404 && !repository_exists(client) {
        return Err(RegistryError::UnknownRepository {
            reference: image.to_string(),
            repository: image.repository.clone(),
            detail: String::new(),
        }
        .into());
    }
    if !resp.status().is_success() {
        return Err(client.status_error(&mut resp, image, "manifest"));
    }
    let announced = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(MAX_MANIFEST)
        .read_to_vec()
        .with_context(|| {
            format!("reading the manifest of {image} (at most {MAX_MANIFEST} bytes)")
        })?;
    let what = format!("the manifest {reference} of {image}");
    let digest = digest::of_bytes(&bytes);
    if let Some(d) = desc {
        verify::check_bytes(&bytes, &d.digest, Some(d.size), &what)?;
    } else if reference.starts_with("sha256:") {
        verify::check_bytes(&bytes, reference, None, &what)?;
    } else if let Some(a) = announced.filter(|a| a.starts_with("sha256:")) {
        verify::check_bytes(&bytes, &a, None, &what)?;
    }
    Ok((bytes, digest))
}

/// Whether the repository exists, for telling "unknown image" from "no such tag": registries
/// (distribution 2.8 among them) answer both with `MANIFEST_UNKNOWN`, but list the tags of
/// a repository only when it exists. Assumed to exist when the registry will not say.
fn repository_exists(client: &Client) -> bool {
    let url = client.url("tags/list?n=1");
    match client.request(Method::GET, &url, &[], &Payload::Empty) {
        Ok(resp) => resp.status() != 404,
        Err(_) => true,
    }
}

/// Stream the blob `desc` into `out`, checked against digest and size.
fn fetch_blob(
    client: &Client,
    image: &ImageRef,
    desc: &Descriptor,
    out: impl std::io::Write,
    what: &str,
    on_bytes: impl FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    digest::hex_part(&desc.digest).with_context(|| what.to_string())?;
    let url = client.url(&format!("blobs/{}", desc.digest));
    let mut resp = client.request(Method::GET, &url, &[], &Payload::Empty)?;
    if !resp.status().is_success() {
        return Err(client.status_error(&mut resp, image, what));
    }
    let reader = resp.into_body().into_with_config().limit(u64::MAX).reader();
    verify::copy_verified(reader, out, &desc.digest, desc.size, what, on_bytes, stop)
}

/// Fetch `layers` into `blob_dir/<hex>`, [`PARALLEL`] at a time, a progress bar each.
fn fetch_layers(
    client: &Client,
    image: &ImageRef,
    layers: &[Descriptor],
    blob_dir: &Path,
    show: bool,
) -> Result<()> {
    let bars = indicatif::MultiProgress::new();
    if !show {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(layers.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= layers.len() || failed.load(Ordering::SeqCst) {
                    return;
                }
                let desc = &layers[i];
                let short = desc
                    .digest
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or("");
                let bar = bars.add(progress::bytes(show, desc.size, format!("layer {short}")));
                let result = fetch_layer(client, image, desc, blob_dir, &bar, &failed);
                bar.finish_and_clear();
                if let Err(e) = result {
                    failed.store(true, Ordering::SeqCst);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    // The first real failure, not the others' "stopped".
                    if slot.is_none() {
                        *slot = Some(e);
                    }
                    return;
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn fetch_layer(
    client: &Client,
    image: &ImageRef,
    desc: &Descriptor,
    blob_dir: &Path,
    bar: &indicatif::ProgressBar,
    failed: &AtomicBool,
) -> Result<()> {
    let hex = digest::hex_part(&desc.digest)?;
    let path: PathBuf = blob_dir.join(hex);
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let what = format!("layer {}", desc.digest);
    fetch_blob(
        client,
        image,
        desc,
        &mut out,
        &what,
        |n| bar.inc(n),
        &|| failed.load(Ordering::SeqCst),
    )?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> oci::Platform {
        oci::Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        }
    }

    #[test]
    fn ensure_finds_local_images_without_asking_a_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::at(tmp.path().join("store"));
        let save = |name: &str| {
            store
                .save_image(&Image {
                    name: name.into(),
                    layers: vec![],
                    config: Default::default(),
                    provenance: Default::default(),
                })
                .unwrap()
        };
        let never =
            |what: &str| ensure(&store, what, PullPolicy::Never, &Default::default(), |_| {});
        save("demo");
        assert_eq!(never("demo").unwrap(), "demo");
        // A docker.io image imported from a file (no source record) is docker's `busybox`.
        save("busybox:latest");
        assert_eq!(never("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            never("docker.io/library/busybox").unwrap(),
            "busybox:latest"
        );
        // Another registry's `app:v1` needs the record that it came from there.
        save("app:v1");
        let err = format!("{:#}", never("127.0.0.1:5000/team/app:v1").unwrap_err());
        assert!(err.contains("--pull never"), "{err}");
        let r = ImageRef::parse("127.0.0.1:5000/team/app:v1").unwrap();
        super::super::local::record(&store, "app:v1", &r, &digest::of_bytes(b"m")).unwrap();
        assert_eq!(never("127.0.0.1:5000/team/app:v1").unwrap(), "app:v1");
        assert!(never("127.0.0.1:5000/other/app:v1").is_err());
        // A record made stale by another image saved under the name no longer counts.
        store
            .save_image(&Image {
                name: "app:v1".into(),
                layers: vec![],
                config: crate::store::ImageConfig {
                    cmd: vec!["other".into()],
                    ..Default::default()
                },
                provenance: Default::default(),
            })
            .unwrap();
        assert!(never("127.0.0.1:5000/team/app:v1").is_err());
    }

    #[test]
    fn platforms_parse_and_match_as_docker_does() {
        let arm = Platform::parse("linux/arm64/v8").unwrap();
        assert!(arm.matches(&p("linux", "arm64", None)));
        assert!(arm.matches(&p("linux", "arm64", Some("v8"))));
        assert!(!Platform::parse("linux/arm/v7")
            .unwrap()
            .matches(&p("linux", "arm", Some("v6"))));
        assert!(Platform::parse("linux/arm")
            .unwrap()
            .matches(&p("linux", "arm", Some("v6"))));
        assert!(!Platform::parse("linux/amd64")
            .unwrap()
            .matches(&p("linux", "arm64", None)));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//v7").is_err());
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
    }
}
