//! Reading an image source directory (an OCI image layout or an unpacked `docker save`) into
//! the list of layer blobs to import, with every JSON document's digest checked.
//!
//! Source directories may come from an untrusted archive, so files are opened only inside the
//! directory: no `..`, no absolute paths, and symlinks followed only while they stay inside.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

use crate::digest;
use crate::oci::{self, ConfigFile, Descriptor, DockerManifestEntry, Index, Manifest};
use crate::store::{ImageConfig, Provenance};

/// JSON documents larger than this are refused.
const MAX_JSON: u64 = 16 << 20;

/// What an image source holds: its name (if it says), config, and layers bottom first.
#[derive(Debug, Clone)]
pub struct SourceImage {
    pub name: Option<String>,
    pub config: ImageConfig,
    pub provenance: Provenance,
    pub layers: Vec<SourceLayer>,
}

#[derive(Debug, Clone)]
pub struct SourceLayer {
    /// The blob, relative to the source directory.
    pub rel: PathBuf,
    /// The digest of the blob as stored (compressed), when the source records it.
    pub blob_digest: Option<String>,
    /// The digest of the uncompressed tar, from the image config.
    pub diff_id: String,
    /// The store already holds this layer (its store digest): nothing to read or unpack.
    pub stored: Option<String>,
}

/// Read the image in `dir`; `reference` picks one of several (a ref name or docker tag).
pub fn read_source(dir: &Path, reference: Option<&str>) -> Result<SourceImage> {
    if dir.join("index.json").is_file() {
        read_oci(dir, reference)
            .with_context(|| format!("reading OCI image layout {}", dir.display()))
    } else if dir.join("manifest.json").is_file() {
        read_docker(dir, reference)
            .with_context(|| format!("reading docker-save archive {}", dir.display()))
    } else {
        bail!(
            "{} is neither an OCI image layout (no index.json) nor a docker-save archive (no manifest.json)",
            dir.display()
        )
    }
}

fn blob_rel(digest_str: &str) -> Result<PathBuf> {
    Ok(Path::new("blobs/sha256").join(digest::hex_part(digest_str)?))
}

fn read_oci(dir: &Path, reference: Option<&str>) -> Result<SourceImage> {
    let index: Index = read_json(dir, Path::new("index.json"), None)?;
    let (manifest_desc, name) = select_manifest(dir, &index, reference, 0)?;
    let manifest: Manifest = read_json(
        dir,
        &blob_rel(&manifest_desc.digest)?,
        Some(&manifest_desc.digest),
    )
    .context("reading the image manifest")?;
    let config: ConfigFile = read_json(
        dir,
        &blob_rel(&manifest.config.digest)?,
        Some(&manifest.config.digest),
    )
    .context("reading the image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        bail!(
            "the manifest lists {} layers but the config has {} diff ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (desc, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        digest::hex_part(diff_id)?;
        if desc.media_type.contains("encrypted") {
            bail!("layer {} is encrypted ({})", desc.digest, desc.media_type);
        }
        layers.push(SourceLayer {
            rel: blob_rel(&desc.digest)?,
            blob_digest: Some(desc.digest.clone()),
            diff_id: diff_id.clone(),
            stored: None,
        });
    }
    Ok(SourceImage {
        name,
        config: config.config.to_image_config(),
        provenance: Provenance {
            created: config.created,
            history: config.history,
        },
        layers,
    })
}

/// Pick the image manifest: by ref name when asked, the only one, or the host's platform.
fn select_manifest(
    dir: &Path,
    index: &Index,
    reference: Option<&str>,
    depth: u32,
) -> Result<(Descriptor, Option<String>)> {
    if depth > 4 {
        bail!("image indexes nested too deeply");
    }
    let mut candidates: Vec<&Descriptor> = index.manifests.iter().collect();
    if let Some(want) = reference {
        candidates.retain(|d| d.is_named(want));
        if candidates.is_empty() && depth == 0 {
            let names: Vec<_> = index
                .manifests
                .iter()
                .filter_map(|d| d.ref_name())
                .collect();
            bail!("no image named {want:?} in the layout (it has {names:?})");
        }
        if candidates.is_empty() {
            candidates = index.manifests.iter().collect();
        }
    }
    if candidates.len() > 1 {
        let host: Vec<&Descriptor> = candidates
            .iter()
            .copied()
            .filter(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == oci::host_arch())
            })
            .collect();
        if !host.is_empty() {
            candidates = host;
        }
    }
    let desc = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => bail!("the index lists no manifests"),
        many => {
            let names: Vec<_> = many
                .iter()
                .map(|d| d.ref_name().unwrap_or(&d.digest))
                .collect();
            bail!("the layout holds several images {names:?}; pick one with --ref")
        }
    };
    // Docker's `latest` ref name alone would be a poor store name: prefer the full name.
    let name = desc.image_name().or(desc.ref_name()).map(str::to_string);
    if desc.is_index() {
        let nested: Index = read_json(dir, &blob_rel(&desc.digest)?, Some(&desc.digest))
            .context("reading a nested image index")?;
        let (inner, inner_name) = select_manifest(dir, &nested, reference, depth + 1)?;
        return Ok((inner, name.or(inner_name)));
    }
    Ok((desc, name))
}

fn read_docker(dir: &Path, reference: Option<&str>) -> Result<SourceImage> {
    let entries: Vec<DockerManifestEntry> = read_json(dir, Path::new("manifest.json"), None)?;
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let entry = match reference {
        Some(want) => entries
            .iter()
            .find(|e| tags(e).iter().any(|t| t == want))
            .with_context(|| format!("no image tagged {want:?} in manifest.json"))?,
        None => match entries.as_slice() {
            [one] => one,
            [] => bail!("manifest.json lists no images"),
            many => {
                let names: Vec<_> = many.iter().flat_map(tags).collect();
                bail!("the archive holds several images {names:?}; pick one with --ref")
            }
        },
    };
    let name = match reference {
        Some(r) => Some(r.to_string()),
        None => tags(entry).first().cloned(),
    };
    let config_rel = relative(&entry.config)?;
    let config: ConfigFile = read_json(dir, &config_rel, digest_from_name(&config_rel).as_deref())
        .context("reading the image config")?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        bail!(
            "manifest.json lists {} layers but the config has {} diff ids",
            entry.layers.len(),
            config.rootfs.diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (layer, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
        digest::hex_part(diff_id)?;
        let rel = relative(layer)?;
        layers.push(SourceLayer {
            blob_digest: digest_from_name(&rel),
            rel,
            diff_id: diff_id.clone(),
            stored: None,
        });
    }
    Ok(SourceImage {
        name,
        config: config.config.to_image_config(),
        provenance: Provenance {
            created: config.created,
            history: config.history,
        },
        layers,
    })
}

/// `blobs/sha256/<hex>` and `<hex>.json` names say what their digest must be.
fn digest_from_name(rel: &Path) -> Option<String> {
    let name = rel.file_name()?.to_str()?;
    let hex = name.strip_suffix(".json").unwrap_or(name);
    let d = format!("sha256:{hex}");
    let in_blobs = rel
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|p| p == "sha256");
    (digest::hex_part(&d).is_ok() && (in_blobs || name.ends_with(".json"))).then_some(d)
}

/// A path from a manifest, checked to be relative and free of `..`.
fn relative(text: &str) -> Result<PathBuf> {
    crate::extract::clean_path(Path::new(text))?
        .with_context(|| format!("empty path {text:?} in manifest"))
}

/// Parse a JSON document inside `dir`, checking its digest when one is given.
fn read_json<T: DeserializeOwned>(dir: &Path, rel: &Path, want: Option<&str>) -> Result<T> {
    let mut bytes = Vec::new();
    open_inside(dir, rel)?
        .take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", rel.display()))?;
    if bytes.len() as u64 > MAX_JSON {
        bail!("{} is larger than {MAX_JSON} bytes", rel.display());
    }
    if let Some(want) = want {
        let got = digest::of_bytes(&bytes);
        if got != want {
            bail!(
                "{}: digest mismatch: expected {want}, content has {got}",
                rel.display()
            );
        }
    }
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", rel.display()))
}

/// Open the regular file `rel` inside `root`, following symlinks only while they stay inside.
pub fn open_inside(root: &Path, rel: &Path) -> Result<fs::File> {
    let mut rel = normalize(Path::new(""), rel)
        .with_context(|| format!("{} leaves the image directory", rel.display()))?;
    for _ in 0..16 {
        let mut cur = PathBuf::new();
        let mut redirected = None;
        let comps: Vec<_> = rel.components().collect();
        for (i, comp) in comps.iter().enumerate() {
            cur.push(comp);
            let path = root.join(&cur);
            let md = fs::symlink_metadata(&path)
                .with_context(|| format!("{} in {}", cur.display(), root.display()))?;
            if md.file_type().is_symlink() {
                let target =
                    fs::read_link(&path).with_context(|| format!("readlink {}", path.display()))?;
                if target.is_absolute() {
                    bail!("{} is a symlink out of the image directory", cur.display());
                }
                let mut next = normalize(cur.parent().unwrap_or(Path::new("")), &target)
                    .with_context(|| {
                        format!("{} is a symlink out of the image directory", cur.display())
                    })?;
                for rest in &comps[i + 1..] {
                    next.push(rest);
                }
                redirected = Some(next);
                break;
            }
            if i + 1 < comps.len() && !md.is_dir() {
                bail!("{} is not a directory", cur.display());
            }
            if i + 1 == comps.len() && !md.is_file() {
                bail!("{} is not a regular file", cur.display());
            }
        }
        match redirected {
            Some(next) => rel = next,
            None => {
                let path = root.join(&rel);
                return fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()));
            }
        }
    }
    bail!("too many symlinks resolving {}", rel.display())
}

/// `base/rel` with `.` and `..` resolved lexically; `None` if it climbs above the root.
fn normalize(base: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out: Vec<_> = base.components().collect();
    for comp in rel.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            Component::Normal(_) => out.push(comp),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("b/f", root.join("a/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", root.join("a/up")).unwrap();
        assert!(open_inside(root, Path::new("a/b/f")).is_ok());
        assert!(open_inside(root, Path::new("a/link")).is_ok());
        assert!(open_inside(root, Path::new("abs")).is_err());
        assert!(open_inside(root, Path::new("a/up")).is_err());
        assert!(open_inside(root, Path::new("../x")).is_err());
        assert!(open_inside(root, Path::new("a/b")).is_err());
    }

    #[test]
    fn digest_names() {
        let hex = "a".repeat(64);
        assert_eq!(
            digest_from_name(&Path::new("blobs/sha256").join(&hex)),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            digest_from_name(Path::new(&format!("{hex}.json"))),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(digest_from_name(Path::new("abc/layer.tar")), None);
    }
}
