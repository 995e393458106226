//! Helpers shared by the layer-tool integration tests: hand-made archives (including hostile
//! ones the `tar` crate would refuse to write), OCI layouts around them, and tree snapshots.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One entry of a hand-made tar.
pub enum Ent<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str, u32, u32),
}

/// A tar with exactly these entries; names and link targets are written raw, unchecked.
pub fn raw_tar(entries: &[Ent]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        let (name, data): (&str, &[u8]) = match e {
            Ent::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                (n, d)
            }
            Ent::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, &[])
            }
            Ent::Symlink(n, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                set_raw(&mut h.as_gnu_mut().unwrap().linkname, t);
                (n, &[])
            }
            Ent::Hardlink(n, t) => {
                h.set_entry_type(tar::EntryType::Link);
                set_raw(&mut h.as_gnu_mut().unwrap().linkname, t);
                (n, &[])
            }
            Ent::Char(n, maj, min) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*maj).unwrap();
                h.set_device_minor(*min).unwrap();
                (n, &[])
            }
        };
        set_raw(&mut h.as_gnu_mut().unwrap().name, name);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn set_raw(field: &mut [u8], text: &str) {
    assert!(
        text.len() < field.len(),
        "name too long for a raw header: {text}"
    );
    field.fill(0);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An OCI image layout at `dir` holding one image (ref name `t`) with these layer blobs.
/// `diff_ids` defaults to the sha256 of each blob (right for uncompressed layers).
pub fn oci_layout(dir: &Path, blobs: &[Vec<u8>], diff_ids: Option<Vec<String>>) {
    let blob_dir = dir.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        fs::write(blob_dir.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let mut layers = Vec::new();
    for blob in blobs {
        let (d, size) = put(blob);
        let media = if blob.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        layers.push(serde_json::json!({"mediaType": media, "digest": d, "size": size}));
    }
    let diff_ids = diff_ids.unwrap_or_else(|| blobs.iter().map(|b| sha256(b)).collect());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                       "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Every path under `root` (recursively, sorted) with a description of what it is.
/// Directory mtimes are left out unless `dir_mtimes`.
pub fn snapshot(root: &Path, dir_mtimes: bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), dir_mtimes, &mut out);
    out
}

fn walk(root: &Path, rel: &Path, dir_mtimes: bool, out: &mut BTreeMap<PathBuf, String>) {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", root.join(rel).display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let md = fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let owner = format!("{:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
        let desc = if ft.is_dir() {
            if dir_mtimes {
                format!("dir {owner} {}", md.mtime())
            } else {
                format!("dir {owner}")
            }
        } else if ft.is_symlink() {
            format!("symlink -> {}", fs::read_link(&path).unwrap().display())
        } else if ft.is_file() {
            format!(
                "file {owner} {} {}",
                md.mtime(),
                sha256(&fs::read(&path).unwrap())
            )
        } else if ft.is_char_device() {
            format!("char {owner} {}", md.rdev())
        } else if ft.is_fifo() {
            format!("fifo {owner}")
        } else {
            format!("other {owner}")
        };
        let links = if ft.is_dir() {
            String::new()
        } else {
            format!(" nlink={}", md.nlink())
        };
        let desc = format!("{desc}{links}{}", xattrs(&path));
        out.insert(rel_path.clone(), desc);
        if ft.is_dir() {
            walk(root, &rel_path, dir_mtimes, out);
        }
    }
}

/// True when the tests must not skip: CI=true.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip (return false) outside CI, fail in CI, when a requirement is missing.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("CI=true but this test cannot run: {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

/// The effective uid is 0 (read from /proc, no libc call).
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .is_some_and(|euid| euid == "0")
}

pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// ` xattrs[name=hex,...]` for the xattrs a layer carries, or nothing.
fn xattrs(path: &Path) -> String {
    let mut pairs: Vec<String> = xattr::list(path)
        .map(|names| names.collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| layer_tool::fsmeta::carried_xattr(n))
        .map(|n| {
            let v = xattr::get(path, &n).ok().flatten().unwrap_or_default();
            format!("{n}={}", hex::encode(v))
        })
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        String::new()
    } else {
        format!(" xattrs[{}]", pairs.join(","))
    }
}
