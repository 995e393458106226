//! commit (the runner's entry point), squash against a naive model of the union rules, and
//! convert between the aufs and overlayfs whiteout forms.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::Path;

use common::{is_root, require, snapshot};
use layer_tool::build::{build, BuildOptions};
use layer_tool::commit::commit_layer;
use layer_tool::copy::WhiteoutForm;
use layer_tool::store::Store;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

#[test]
fn commit_makes_a_layer_on_top_and_leaves_out_excluded_and_bookkeeping() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let base = tmp.path().join("base");
    write(&base, "etc/motd", "base");
    write(&base, "etc/demo/hello.txt", "hello");
    let base_image = build(
        &store,
        &base,
        "base",
        &BuildOptions {
            config: layer_tool::config::ConfigChanges {
                cmd: Some(vec!["/bin/sh".into()]),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();

    // A writable layer as unionfs leaves it.
    let upper = tmp.path().join("upper");
    write(&upper, "etc/motd", "changed");
    write(&upper, "etc/demo/.wh.hello.txt", "");
    write(&upper, "etc/hostname", "container-1");
    write(&upper, "etc/.wh.hosts", "");
    write(&upper, ".wh..wh.work/pending-copy", "half a file");
    write(&upper, "root/new", "new file");

    let exclude = [Path::new("etc/hostname"), Path::new("/etc/hosts")];
    let image = commit_layer(&store, &upper, "base", "committed", &exclude).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[0], base_image.layers[0]);
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    let saved = store.find_image("committed").unwrap().1;
    assert_eq!(saved, image);

    let layer = store.layer_path(&image.layers[1].digest).unwrap();
    let got: Vec<_> = snapshot(&layer, false).into_keys().collect();
    let want: Vec<_> = [
        "etc",
        "etc/demo",
        "etc/demo/.wh.hello.txt",
        "etc/motd",
        "root",
        "root/new",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .collect();
    assert_eq!(got, want);
    assert_eq!(
        image.layers[1].digest,
        layer_tool::tarball::layer_digest(&layer).unwrap()
    );
}

#[test]
fn commit_converts_overlay_whiteouts() {
    if !require(is_root(), "needs root to make 0/0 character devices") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let base = tmp.path().join("base");
    write(&base, "d/x", "x");
    write(&base, "gone", "g");
    build(&store, &base, "base", &BuildOptions::default()).unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("d")).unwrap();
    layer_tool::copy::make_overlay_whiteout(&upper.join("gone")).unwrap();
    xattr::set(upper.join("d"), "trusted.overlay.opaque", b"y").unwrap();
    let image = commit_layer(&store, &upper, "base", "c", &[]).unwrap();
    let layer = store.layer_path(&image.layers[1].digest).unwrap();
    assert!(layer.join(".wh.gone").is_file());
    assert!(layer.join("d/.wh..wh..opq").is_file());
    assert!(!layer.join("gone").exists());
}

/// A naive model of the union: apply layers bottom first to a map of path -> content.
#[test]
fn squash_equals_the_union_model() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let l1 = tmp.path().join("l1");
    write(&l1, "x/a", "a1");
    write(&l1, "x/b", "b1");
    write(&l1, "y/c", "c1");
    write(&l1, "y/sub/deep", "deep1");
    write(&l1, "z", "z is a file");
    write(&l1, "keep", "k1");
    let l2 = tmp.path().join("l2");
    write(&l2, "x/.wh.a", "");
    write(&l2, "y/.wh..wh..opq", "");
    write(&l2, "y/d", "d2");
    write(&l2, "y/-sorted-before-the-marker", "s2");
    write(&l2, "z/e", "z is now a directory");
    fs::create_dir_all(l2.join("w")).unwrap();
    let l3 = tmp.path().join("l3");
    write(&l3, "x/a", "a3");
    write(&l3, ".wh.keep", "");
    fs::create_dir_all(&l3).unwrap();
    symlink("x/a", l3.join("w2")).unwrap();
    write(&l3, "w/.wh..wh..opq", "");

    build(&store, &l1, "s1", &BuildOptions::default()).unwrap();
    build(
        &store,
        &l2,
        "s2",
        &BuildOptions {
            base: Some("s1".into()),
            ..Default::default()
        },
    )
    .unwrap();
    build(
        &store,
        &l3,
        "s3",
        &BuildOptions {
            base: Some("s2".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let squashed = layer_tool::squash::squash(&store, "s3", "flat", false).unwrap();
    assert_eq!(squashed.layers.len(), 1);
    let root = store.layer_path(&squashed.layers[0].digest).unwrap();

    let mut got = Vec::new();
    for (path, desc) in snapshot(&root, false) {
        let kind = desc.split(' ').next().unwrap().to_string();
        let content = if kind == "file" {
            fs::read_to_string(root.join(&path)).unwrap()
        } else if kind == "symlink" {
            fs::read_link(root.join(&path))
                .unwrap()
                .display()
                .to_string()
        } else {
            String::new()
        };
        got.push((path.display().to_string(), kind, content));
    }
    let want: Vec<(String, String, String)> = [
        ("w", "dir", ""),
        ("w2", "symlink", "x/a"),
        ("x", "dir", ""),
        ("x/a", "file", "a3"),
        ("x/b", "file", "b1"),
        ("y", "dir", ""),
        ("y/-sorted-before-the-marker", "file", "s2"),
        ("y/d", "file", "d2"),
        ("z", "dir", ""),
        ("z/e", "file", "z is now a directory"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
    // The squashed image keeps the config and is a valid store layer.
    assert_eq!(
        squashed.layers[0].digest,
        layer_tool::tarball::layer_digest(&root).unwrap()
    );
}

#[test]
fn convert_to_overlay_and_back() {
    if !require(is_root(), "needs root for 0/0 devices and trusted.* xattrs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let aufs = tmp.path().join("aufs");
    write(&aufs, "etc/.wh.motd", "");
    write(&aufs, "etc/keep", "k");
    write(&aufs, "opaque/.wh..wh..opq", "");
    write(&aufs, "opaque/new", "n");
    let overlay = tmp.path().join("overlay");
    layer_tool::convert::convert(&aufs, &overlay, WhiteoutForm::Overlay { userxattr: false })
        .unwrap();
    let md = fs::symlink_metadata(overlay.join("etc/motd")).unwrap();
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    assert!(!overlay.join("etc/.wh.motd").exists());
    assert!(!overlay.join("opaque/.wh..wh..opq").exists());
    assert_eq!(
        xattr::get(overlay.join("opaque"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    let back = tmp.path().join("back");
    layer_tool::convert::convert(&overlay, &back, WhiteoutForm::Aufs).unwrap();
    // Everything comes back, with its metadata, except the opaque marker's own mtime (the xattr
    // has none; the marker gets its directory's).
    let without_marker_meta = |p: &Path| {
        let mut snap = snapshot(p, true);
        let marker = Path::new("opaque/.wh..wh..opq").to_path_buf();
        let desc = snap.remove(&marker).expect("marker present");
        snap.insert(
            marker,
            desc.split(' ').take(3).collect::<Vec<_>>().join(" "),
        );
        snap
    };
    assert_eq!(without_marker_meta(&back), without_marker_meta(&aufs));
}

/// The overlay form is what kernel overlayfs reads: mount it and see the whiteouts applied.
#[test]
fn converted_layers_work_with_kernel_overlayfs() {
    if !require(is_root(), "needs root to mount overlayfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    write(&lower, "etc/motd", "lower motd");
    write(&lower, "opaque/old", "old");
    let aufs = tmp.path().join("aufs");
    write(&aufs, "etc/.wh.motd", "");
    write(&aufs, "opaque/.wh..wh..opq", "");
    write(&aufs, "opaque/new", "n");
    let upper = tmp.path().join("upper");
    layer_tool::convert::convert(&aufs, &upper, WhiteoutForm::Overlay { userxattr: false })
        .unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let opts = format!("lowerdir={}:{}", upper.display(), lower.display());
    let st = std::process::Command::new("mount")
        .args([
            "-t",
            "overlay",
            "overlay",
            "-o",
            &opts,
            mnt.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    if !require(
        st.success(),
        "kernel overlayfs mount failed (no overlay module in this kernel?)",
    ) {
        return;
    }
    let seen = (
        mnt.join("etc/motd").exists(),
        mnt.join("opaque/old").exists(),
        mnt.join("opaque/new").exists(),
    );
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert_eq!(seen, (false, false, true));
}

/// An image directory outside the store may name raw branch directories as layers (a writable
/// branch left by unionfs, say); squash leaves out their aufs bookkeeping.
#[test]
fn squash_leaves_out_aufs_bookkeeping() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let branch = tmp.path().join("branch");
    write(&branch, "a", "a");
    write(&branch, ".wh..wh.plnk/65024_1", "pseudo-link");
    write(&branch, "x/.wh..wh.work/half", "half a copy");
    let image = layer_tool::store::Image {
        name: "raw".into(),
        layers: vec![layer_tool::store::LayerRef {
            digest: format!("sha256:{}", "0".repeat(64)),
            path: branch.clone(),
        }],
        config: Default::default(),
        provenance: Default::default(),
    };
    let image_dir = tmp.path().join("image");
    image.save(&image_dir).unwrap();
    let out =
        layer_tool::squash::squash(&store, image_dir.to_str().unwrap(), "flat", false).unwrap();
    let root = store.layer_path(&out.layers[0].digest).unwrap();
    let names: Vec<_> = snapshot(&root, false).into_keys().collect();
    assert_eq!(
        names,
        vec![Path::new("a").to_path_buf(), Path::new("x").to_path_buf()]
    );
}

/// unionfs makes a branch's whiteouts hardlinks of one empty file; in the layer's tar each is an
/// empty regular file of its own (OCI's form), while real hardlinks stay links.
#[test]
fn hardlinked_whiteouts_become_separate_files_in_the_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let base = tmp.path().join("base");
    write(&base, "d/a", "a");
    write(&base, "d/b", "b");
    write(&base, "c", "c");
    build(&store, &base, "base", &BuildOptions::default()).unwrap();

    let upper = tmp.path().join("upper");
    write(&upper, "d/.wh.a", "");
    fs::hard_link(upper.join("d/.wh.a"), upper.join("d/.wh.b")).unwrap();
    fs::hard_link(upper.join("d/.wh.a"), upper.join(".wh.c")).unwrap();
    write(&upper, "x", "data");
    fs::hard_link(upper.join("x"), upper.join("y")).unwrap();
    let image = commit_layer(&store, &upper, "base", "c", &[]).unwrap();
    let layer = store.layer_path(&image.layers[1].digest).unwrap();

    let (tar_bytes, _, _) = layer_tool::tarball::write_layer(&layer, Vec::new()).unwrap();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut kinds = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        kinds.insert(path, (entry.header().entry_type(), entry.size()));
    }
    for wh in [".wh.c", "d/.wh.a", "d/.wh.b"] {
        assert_eq!(kinds[wh], (tar::EntryType::Regular, 0), "{wh}: {kinds:?}");
    }
    let links = [&kinds["x"].0, &kinds["y"].0];
    assert!(
        links.contains(&&tar::EntryType::Link) && links.contains(&&tar::EntryType::Regular),
        "x and y stay one file and a link to it: {kinds:?}"
    );
}
