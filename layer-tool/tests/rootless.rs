//! layer-tool without root: an ordinary user (created by the test) imports an image whose layer
//! has files of several owners and a device node, and builds a layer of such a directory. The
//! store is the user's own (`$XDG_DATA_HOME/unionfs`, default `~/.local/share/unionfs`); the
//! device node is skipped with a warning naming it; owners the user may not give are recorded
//! in `user.containers.override_stat` and come back in `export`'s tar.

mod common;
#[path = "../../unionfs/tests/common/unprivileged.rs"]
mod unprivileged;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use unprivileged::{describe, Session};

const LT: &str = env!("CARGO_BIN_EXE_layer-tool");

fn override_stat(path: &Path) -> Option<String> {
    xattr::get(path, "user.containers.override_stat")
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

/// A layer tar: a root-owned tree, a file of another user, a setuid file, a device node, and a
/// file of uid/gid `own`.
fn layer_tar(own: u32) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, uid: u32, gid: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if kind == tar::EntryType::Char {
            h.set_device_major(4).unwrap();
            h.set_device_minor(1).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    };
    use tar::EntryType::{Char, Directory, Regular};
    add("etc/", Directory, 0o755, 0, 0, b"");
    add("etc/root-file", Regular, 0o644, 0, 0, b"root\n");
    add("etc/other", Regular, 0o640, 1234, 5678, b"other\n");
    add("bin/", Directory, 0o755, 0, 0, b"");
    add("bin/su", Regular, 0o4755, 0, 0, b"setuid\n");
    add("dev/", Directory, 0o755, 0, 0, b"");
    add("dev/tty1", Char, 0o620, 0, 5, b"");
    add("home/", Directory, 0o755, 0, 0, b"");
    add("home/mine", Regular, 0o600, own, own, b"mine\n");
    b.into_inner().unwrap()
}

#[test]
fn a_user_imports_and_exports_a_layer_of_several_owners_and_a_device_node() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("layer-tool-rootless");
    let lt = s.reachable_binary(&d.dir, LT);
    let own = s.user.uid;
    let layout = d.path("layout");
    common::oci_layout(&layout, &[layer_tar(own)], None);
    unprivileged::chown_r(&layout, &s.user);
    let data = d.path("data");

    let out = s
        .command(&lt)
        .args(["import", "--name", "multi"])
        .arg(&layout)
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    assert!(out.status.success(), "import as a user: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped device node /dev/tty1 (char 4:1)"),
        "the skipped device is named: {err}"
    );

    // The user's own store, private to the user.
    let store = data.join("unionfs");
    let md = fs::metadata(&store).expect("the store is under $XDG_DATA_HOME/unionfs");
    assert_eq!(md.uid(), own);
    assert_eq!(md.mode() & 0o777, 0o700);
    let image: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("images/multi/image.json")).unwrap()).unwrap();
    let digest = image["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer = store
        .join("layers/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());

    // Every file is the user's on disk; the owners it could not give are recorded.
    for (rel, want) in [
        ("etc/root-file", Some("0:0:0644")),
        ("etc/other", Some("1234:5678:0640")),
        ("bin/su", Some("0:0:04755")),
        ("etc", Some("0:0:0755")),
        ("home/mine", None),
    ] {
        let p = layer.join(rel);
        assert_eq!(fs::symlink_metadata(&p).unwrap().uid(), own, "{rel}");
        assert_eq!(override_stat(&p).as_deref(), want, "{rel}");
    }
    assert_eq!(fs::read(layer.join("etc/other")).unwrap(), b"other\n");
    assert!(fs::symlink_metadata(layer.join("dev/tty1")).is_err());
    assert!(layer.join("dev").is_dir(), "the device's directory is kept");

    // export puts the recorded owners back in the tar (and not the xattr itself).
    let out_tar = d.path("exported.tar");
    let out = s
        .command(&lt)
        .args(["export", &digest, "-o"])
        .arg(&out_tar)
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    assert!(out.status.success(), "export as a user: {}", describe(&out));
    let mut archive = tar::Archive::new(fs::File::open(&out_tar).unwrap());
    let mut seen = std::collections::BTreeMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header();
        seen.insert(
            name.trim_end_matches('/').to_string(),
            (h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap()),
        );
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let key = ext.unwrap().key().unwrap().to_string();
                assert!(!key.contains("override_stat"), "{name}: {key}");
            }
        }
    }
    assert_eq!(seen["etc/root-file"], (0, 0, 0o644));
    assert_eq!(seen["etc/other"], (1234, 5678, 0o640));
    assert_eq!(seen["bin/su"], (0, 0, 0o4755));
    assert_eq!(seen["etc"], (0, 0, 0o755));
    assert_eq!(seen["home/mine"], (u64::from(own), u64::from(own), 0o600));
    assert!(!seen.contains_key("dev/tty1"));
}

#[test]
fn a_user_builds_a_layer_of_a_tree_with_several_owners_and_a_device_node() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("layer-tool-rootless-build");
    let lt = s.reachable_binary(&d.dir, LT);
    let own = s.user.uid;
    // The tree, made by root (as an unpacked image a user was given would be): readable by the
    // user, owned by several ids.
    let tree = d.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/root-file"), "root\n").unwrap();
    fs::write(tree.join("etc/other"), "other\n").unwrap();
    fs::write(tree.join("mine"), "mine\n").unwrap();
    nix::sys::stat::mknod(
        &tree.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    unprivileged::chown_r(&tree, &s.user);
    for (rel, uid, gid) in [
        ("etc", 0, 0),
        ("etc/root-file", 0, 0),
        ("etc/other", 1234, 5678),
    ] {
        std::os::unix::fs::lchown(tree.join(rel), Some(uid), Some(gid)).unwrap();
    }
    let home = d.path("home");
    let out = s.sh(&format!("mkdir {}", home.display()));
    assert!(out.status.success(), "{}", describe(&out));

    // No XDG_DATA_HOME: the store goes to ~/.local/share/unionfs.
    let out = s
        .command(&lt)
        .args(["build", "--name", "built"])
        .arg(&tree)
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "build as a user: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped device node") && err.contains("null"),
        "the skipped device is named: {err}"
    );
    let store = home.join(".local/share/unionfs");
    let image: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("images/built/image.json")).unwrap()).unwrap();
    let digest = image["layers"][0]["digest"].as_str().unwrap();
    let layer = store
        .join("layers/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    assert_eq!(
        override_stat(&layer.join("etc/other")).as_deref(),
        Some("1234:5678:0644")
    );
    assert_eq!(
        override_stat(&layer.join("etc/root-file")).as_deref(),
        Some("0:0:0644")
    );
    assert_eq!(override_stat(&layer.join("mine")), None);
    assert_eq!(fs::metadata(layer.join("etc/other")).unwrap().uid(), own);
    assert!(fs::symlink_metadata(layer.join("null")).is_err());
}
