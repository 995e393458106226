//! export -> import keeps every layer digest, in every export form; the deterministic writer
//! gives the same digest for the same tree.

mod common;

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::{is_root, require, snapshot};
use layer_tool::build::{build, BuildOptions};
use layer_tool::export::{export_image, export_layer, ExportOptions};
use layer_tool::import::{import, ImportOptions};
use layer_tool::store::Store;

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with the things tar writers get wrong: hardlinks, symlinks, odd modes and owners,
/// long names, fifos, empty directories; devices when root.
fn tricky_tree(root: &Path) {
    fs::create_dir_all(root.join("a/empty")).unwrap();
    fs::write(root.join("a/f"), b"setuid program").unwrap();
    set_mode(&root.join("a/f"), 0o4755);
    fs::hard_link(root.join("a/f"), root.join("a/f-link")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("a/big"), big).unwrap();
    symlink("f", root.join("a/rel")).unwrap();
    symlink("/etc/passwd", root.join("abs")).unwrap();
    fs::hard_link(root.join("abs"), root.join("abs-hardlink")).unwrap();
    let long = "n".repeat(120);
    fs::create_dir_all(root.join(&long).join(&long)).unwrap();
    fs::write(root.join(&long).join(&long).join("file"), b"deep").unwrap();
    symlink(format!("../{long}/{long}/file"), root.join("a/long-target")).unwrap();
    nix::unistd::mkfifo(
        &root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::write(root.join("a/.wh.gone"), b"").unwrap();
    fs::create_dir(root.join("opaque")).unwrap();
    fs::write(root.join("opaque/.wh..wh..opq"), b"").unwrap();
    set_mode(&root.join("a"), 0o750);
    // xattrs travel in PAX records; /tmp may be a filesystem without user xattrs.
    let _ = xattr::set(root.join("a/big"), "user.comment", b"kept");
    if is_root() {
        xattr::set(
            root.join("a/f"),
            "trusted.layer-tool-test",
            b"\x00binary\xff",
        )
        .unwrap();
    }
    if is_root() {
        fs::write(root.join("owned"), b"someone else's").unwrap();
        chown(root.join("owned"), Some(12345), Some(54321)).unwrap();
        nix::sys::stat::mknod(
            &root.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
    }
}

#[test]
fn same_tree_same_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tricky_tree(&src);
    let a = layer_tool::tarball::layer_digest(&src).unwrap();
    let b = layer_tool::tarball::layer_digest(&src).unwrap();
    assert_eq!(a, b);
    let store = Store::at(tmp.path().join("store"));
    let opts = BuildOptions::default();
    let one = build(&store, &src, "one", &opts).unwrap();
    let two = build(&store, &src, "two", &opts).unwrap();
    assert_eq!(one.layers, two.layers, "the same tree twice is one layer");
    assert_eq!(
        one.layers[0].digest, a,
        "the stored copy hashes as its source"
    );
    // The stored copy holds the same tree (directory mtimes included).
    let stored = store.layer_path(&a).unwrap();
    assert_eq!(snapshot(&stored, true), snapshot(&src, true));
}

#[test]
fn gnu_tar_reads_our_layer_tar() {
    if !require(common::have("tar"), "GNU tar not installed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tricky_tree(&src);
    let out = tmp.path().join("layer.tar");
    let (file, _, _) =
        layer_tool::tarball::write_layer(&src, fs::File::create(&out).unwrap()).unwrap();
    drop(file);
    let x = tmp.path().join("x");
    fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "-xpf",
            out.to_str().unwrap(),
            "--numeric-owner",
            "-C",
            x.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(snapshot(&x, false), snapshot(&src, false));
}

fn two_layer_image(store: &Store, tmp: &Path) -> layer_tool::store::Image {
    let base = tmp.join("base");
    tricky_tree(&base);
    build(store, &base, "base", &BuildOptions::default()).unwrap();
    let top = tmp.join("top");
    fs::create_dir_all(top.join("a")).unwrap();
    fs::write(top.join("a/.wh.big"), b"").unwrap();
    fs::write(top.join("a/new"), b"new in layer 2").unwrap();
    let opts = BuildOptions {
        base: Some("base".into()),
        config: layer_tool::config::ConfigChanges {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]),
            workdir: Some("/a".into()),
            user: Some("1000:1000".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    build(store, &top, "img", &opts).unwrap()
}

fn round_trip(out_name: &str, gzip: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let image = two_layer_image(&store, tmp.path());
    let out = tmp.path().join(out_name);
    let opts = ExportOptions {
        gzip,
        ..Default::default()
    };
    export_image(&store, "img", &out, &opts).unwrap();

    let other = Store::at(tmp.path().join("other"));
    let back = import(&other, &out, &ImportOptions::default()).unwrap();
    assert_eq!(back.name, "img");
    assert_eq!(back.config, image.config);
    let digests = |i: &layer_tool::store::Image| {
        i.layers
            .iter()
            .map(|l| l.digest.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(digests(&back), digests(&image));
    for layer in &image.layers {
        assert_eq!(
            snapshot(&store.layer_path(&layer.digest).unwrap(), true),
            snapshot(&other.layer_path(&layer.digest).unwrap(), true),
            "layer {} differs after the round trip",
            layer.digest
        );
    }
    if is_root() {
        let f = other
            .layer_path(&image.layers[0].digest)
            .unwrap()
            .join("a/f");
        assert_eq!(
            xattr::get(&f, "trusted.layer-tool-test").unwrap(),
            Some(b"\x00binary\xff".to_vec()),
            "xattrs survive export and import"
        );
    }
    // Importing again into the same store changes nothing and shares the layers.
    let again = import(
        &other,
        &out,
        &ImportOptions {
            name: Some("img2".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(digests(&again), digests(&image));
    assert_eq!(other.list_layers().unwrap().len(), 2);
}

#[test]
fn round_trip_layout_dir() {
    round_trip("layout", false);
}

#[test]
fn round_trip_layout_dir_gzip() {
    round_trip("layout-gz", true);
}

#[test]
fn round_trip_layout_tar() {
    round_trip("layout.tar", false);
}

#[test]
fn layer_tarball_export_is_the_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let image = two_layer_image(&store, tmp.path());
    for layer in &image.layers {
        let out = tmp.path().join("layer.tar");
        let blob = export_layer(&store, &layer.digest, &out, &ExportOptions::default()).unwrap();
        assert_eq!(blob.diff_id, layer.digest);
        assert_eq!(common::sha256(&fs::read(&out).unwrap()), layer.digest);
        let gz = tmp.path().join("layer.tar.gz");
        let blob = export_layer(
            &store,
            &layer.digest,
            &gz,
            &ExportOptions {
                gzip: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(blob.diff_id, layer.digest);
        assert_eq!(common::sha256(&fs::read(&gz).unwrap()), blob.digest);
    }
}

#[test]
fn export_notices_a_layer_changed_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let image = two_layer_image(&store, tmp.path());
    let dir = store.layer_path(&image.layers[1].digest).unwrap();
    fs::write(dir.join("a/new"), b"tampered").unwrap();
    let err = export_image(
        &store,
        "img",
        &tmp.path().join("out"),
        &ExportOptions::default(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("changed on disk"), "{err:#}");
    assert!(!tmp.path().join("out").exists());
}

/// A `docker save` archive (legacy layout: `<id>/layer.tar`, `<hex>.json`) imports too.
#[test]
fn docker_save_archive_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::at(tmp.path().join("store"));
    let image = two_layer_image(&store, tmp.path());
    let dir = tmp.path().join("docker");
    fs::create_dir(&dir).unwrap();
    let mut layer_paths = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        fs::create_dir(dir.join(format!("l{i}"))).unwrap();
        let out = dir.join(format!("l{i}/layer.tar"));
        let gzip = i == 1; // one plain, one gzip: docker save writes plain, `docker save | gzip` users mix
        export_layer(
            &store,
            &layer.digest,
            &out,
            &ExportOptions {
                gzip,
                ..Default::default()
            },
        )
        .unwrap();
        layer_paths.push(format!("l{i}/layer.tar"));
        diff_ids.push(layer.digest.clone());
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/a"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!(
        "{}.json",
        common::sha256(&config_bytes).trim_start_matches("sha256:")
    );
    fs::write(dir.join(&config_name), &config_bytes).unwrap();
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": ["example.com/team/app:1.0"], "Layers": layer_paths}]);
    fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let archive = tmp.path().join("docker.tar.gz");
    let st = Command::new("tar")
        .args([
            "-czf",
            archive.to_str().unwrap(),
            "-C",
            dir.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());

    let other = Store::at(tmp.path().join("other"));
    let back = import(&other, &archive, &ImportOptions::default()).unwrap();
    assert_eq!(back.name, "app:1.0");
    assert_eq!(back.config.workdir, "/a");
    assert_eq!(
        back.layers.iter().map(|l| &l.digest).collect::<Vec<_>>(),
        image.layers.iter().map(|l| &l.digest).collect::<Vec<_>>()
    );
}
