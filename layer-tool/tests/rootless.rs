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
/// file of uid/gid 1000.
fn layer_tar() -> Vec<u8> {
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
    add("home/user", Regular, 0o600, 1000, 1000, b"mine\n");
    b.into_inner().unwrap()
}

/// The start of `name`'s range in a subid file.
fn subid_start(file: &str, name: &str) -> u32 {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| f[1].parse().unwrap())
        })
        .unwrap()
}

/// `user` imports [`layer_tar`] into its own store and exports it again. `on_disk` gives, per
/// path, the host owner expected in the store and the override record expected, if any.
fn import_and_export(
    s: &Session,
    user: &unprivileged::User,
    on_disk: &[(&str, (u32, u32), Option<&str>)],
    env: &[(&str, &str)],
) -> String {
    let d = s.user_dir_for(user, "layer-tool-rootless");
    let lt = s.reachable_binary(&d.dir, LT);
    let layout = d.path("layout");
    common::oci_layout(&layout, &[layer_tar()], None);
    unprivileged::chown_r(&layout, user);
    let data = d.path("data");

    let out = s
        .command_as(user, &lt)
        .args(["import", "--name", "multi"])
        .arg(&layout)
        .env("XDG_DATA_HOME", &data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "import as a user: {}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("skipped device node /dev/tty1 (char 4:1)"),
        "the skipped device is named: {err}"
    );

    // The user's own store, private to the user.
    let store = data.join("unionfs");
    let md = fs::metadata(&store).expect("the store is under $XDG_DATA_HOME/unionfs");
    assert_eq!(md.uid(), user.uid);
    assert_eq!(md.mode() & 0o777, 0o700);
    let image: serde_json::Value =
        serde_json::from_slice(&fs::read(store.join("images/multi/image.json")).unwrap()).unwrap();
    let digest = image["layers"][0]["digest"].as_str().unwrap().to_string();
    let layer = store
        .join("layers/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    for (rel, owner, record) in on_disk {
        let p = layer.join(rel);
        let md = fs::symlink_metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), *owner, "{rel}");
        assert_eq!(override_stat(&p).as_deref(), *record, "{rel}");
    }
    assert_eq!(
        fs::metadata(layer.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(fs::read(layer.join("etc/other")).unwrap(), b"other\n");
    assert!(fs::symlink_metadata(layer.join("dev/tty1")).is_err());
    assert!(layer.join("dev").is_dir(), "the device's directory is kept");

    // export gives every owner back as the layer had it (and never the xattr itself).
    let out_tar = d.path("exported.tar");
    let out = s
        .command_as(user, &lt)
        .args(["export", &digest, "-o"])
        .arg(&out_tar)
        .env("XDG_DATA_HOME", &data)
        .envs(env.iter().copied())
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
    assert_eq!(seen["home/user"], (1000, 1000, 0o600));
    assert!(!seen.contains_key("dev/tty1"));
    // The user's store files are removable by the user through layer-tool (rm and gc enter the
    // same namespace), though subordinate ids own some.
    for args in [&["rm", "multi"][..], &["gc"][..]] {
        let out = s
            .command_as(user, &lt)
            .args(args)
            .env("XDG_DATA_HOME", &data)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
    }
    assert!(!layer.exists(), "gc removed the layer");
    err
}

/// With subordinate ids: layer-tool works in the user's namespace, where every id of the layer
/// is mapped: the store holds the files with their owners (as host ids of the range), exactly
/// what a container of the same user will see; nothing needs recording.
#[test]
fn a_user_with_subordinate_ids_imports_a_layer_of_several_owners_keeping_them() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let (u, g) = (s.user.uid, s.user.gid);
    let su = subid_start("/etc/subuid", unprivileged::USER);
    let sg = subid_start("/etc/subgid", unprivileged::USER);
    let err = import_and_export(
        &s,
        &s.user.clone(),
        &[
            ("etc/root-file", (u, g), None),
            ("etc", (u, g), None),
            ("bin/su", (u, g), None),
            ("etc/other", (su + 1233, sg + 5677), None),
            ("home/user", (su + 999, sg + 999), None),
        ],
        &[],
    );
    assert!(!err.contains("no subordinate ids"), "{err}");
}

/// Without subordinate ids: a single mapping (the user is root); the ids it lacks are
/// recorded in `user.containers.override_stat` and given back by export.
#[test]
fn a_user_without_subordinate_ids_records_the_owners_it_cannot_give() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let lone = s.other_user("ufs-rootless-nosub", false);
    let (u, g) = (lone.uid, lone.gid);
    let err = import_and_export(
        &s,
        &lone,
        &[
            ("etc/root-file", (u, g), None),
            ("etc", (u, g), None),
            ("bin/su", (u, g), None),
            ("etc/other", (u, g), Some("1234:5678:0640")),
            ("home/user", (u, g), Some("1000:1000:0600")),
        ],
        &[],
    );
    assert!(
        err.contains("no subordinate ids"),
        "the single mapping is said: {err}"
    );
}

/// A host that gives no namespace (here: the user has a range but no `newuidmap` on PATH):
/// layer-tool says why and works without one; every owner but the user's is recorded.
#[test]
fn without_a_user_namespace_every_foreign_owner_is_recorded() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let (u, g) = (s.user.uid, s.user.gid);
    let err = import_and_export(
        &s,
        &s.user.clone(),
        &[
            ("etc/root-file", (u, g), Some("0:0:0644")),
            ("etc", (u, g), Some("0:0:0755")),
            ("bin/su", (u, g), Some("0:0:04755")),
            ("etc/other", (u, g), Some("1234:5678:0640")),
            ("home/user", (u, g), Some("1000:1000:0600")),
        ],
        &[("PATH", "/nonexistent")],
    );
    assert!(
        err.contains("newuidmap/newgidmap (package uidmap) are not on PATH")
            && err.contains("working without a user namespace"),
        "{err}"
    );
}

/// `build` of a tree: the user's own files become root's in the layer (the user is root of its
/// namespace, as with rootless buildah), files of ids the user's namespace does not map are
/// `nobody`'s, and a device node is skipped with a warning naming it.
#[test]
fn a_user_builds_a_layer_of_its_tree_with_a_device_node() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("layer-tool-rootless-build");
    let lt = s.reachable_binary(&d.dir, LT);
    let tree = d.path("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/mine"), "mine\n").unwrap();
    fs::write(tree.join("etc/roots"), "root\n").unwrap();
    nix::sys::stat::mknod(
        &tree.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    unprivileged::chown_r(&tree, &s.user);
    std::os::unix::fs::lchown(tree.join("etc/roots"), Some(0), Some(0)).unwrap();
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
    assert!(store.join("images/built/image.json").is_file());
    let out_tar = d.path("built.tar");
    let out = s
        .command(&lt)
        .args(["export", "built", "-o"])
        .arg(&out_tar)
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    // An OCI layout tar: find the layer blob (the only tar inside with etc/mine).
    let mut outer = tar::Archive::new(fs::File::open(&out_tar).unwrap());
    let mut owners = std::collections::BTreeMap::new();
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let mut blob = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut blob).unwrap();
        let mut inner = tar::Archive::new(&blob[..]);
        let Ok(entries) = inner.entries() else {
            continue;
        };
        for f in entries.flatten() {
            let name = f.path().unwrap().to_string_lossy().into_owned();
            owners.insert(name, (f.header().uid().unwrap(), f.header().gid().unwrap()));
        }
    }
    assert_eq!(owners.get("etc/mine"), Some(&(0, 0)), "{owners:?}");
    assert_eq!(owners.get("etc/roots"), Some(&(65534, 65534)), "{owners:?}");
    assert!(!owners.contains_key("null"), "{owners:?}");
}
