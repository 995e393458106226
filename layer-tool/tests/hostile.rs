//! Hostile and broken input is refused by `import`, with a clear error, nothing written outside
//! the destination, and the store left exactly as it was.

mod common;

use std::fs;
use std::path::Path;

use common::{gzip, oci_layout, raw_tar, sha256, snapshot, Ent};
use layer_tool::extract::Limits;
use layer_tool::import::{import, ImportOptions};
use layer_tool::store::Store;

/// A store holding one image, so "unchanged" means something.
fn seeded_store(dir: &Path) -> Store {
    let store = Store::at(dir.join("store"));
    let src = dir.join("seed");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/motd"), "hi\n").unwrap();
    layer_tool::build::build(&store, &src, "seed", &Default::default()).unwrap();
    store
}

/// Import `layers` (as an OCI layout) and expect an error containing `expect`; check the store
/// did not change and that `canary` (outside everything) was not created.
fn refused_with(
    layers: Vec<Vec<u8>>,
    diff_ids: Option<Vec<String>>,
    opts: ImportOptions,
    expect: &str,
) {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let layout = tmp.path().join("layout");
    oci_layout(&layout, &layers, diff_ids);
    let before = snapshot(store.root(), false);
    let err = import(&store, &layout, &opts).expect_err("hostile import must fail");
    let msg = format!("{err:#}");
    eprintln!("refused as expected: {msg}");
    assert!(
        msg.contains(expect),
        "error {msg:?} does not mention {expect:?}"
    );
    assert_eq!(
        snapshot(store.root(), false),
        before,
        "store changed by a failed import"
    );
    assert!(
        !tmp.path().join("evil").exists(),
        "something was written outside: {msg}"
    );
    assert!(
        !tmp.path().join("layout/evil").exists(),
        "something was written outside: {msg}"
    );
}

fn refused(layer: Vec<u8>, expect: &str) {
    refused_with(vec![layer], None, ImportOptions::default(), expect);
}

#[test]
fn dotdot_path() {
    refused(
        raw_tar(&[Ent::File("../../../evil", b"x")]),
        "contains `..`",
    );
    refused(
        raw_tar(&[Ent::Dir("a/"), Ent::File("a/../../evil", b"x")]),
        "contains `..`",
    );
}

#[test]
fn whiteout_of_the_parent_directory() {
    refused(
        raw_tar(&[Ent::File(".wh...", b"")]),
        "whiteout of \"..\" refused",
    );
    refused(
        raw_tar(&[Ent::Dir("a/"), Ent::File("a/.wh..", b"")]),
        "whiteout of \".\" refused",
    );
}

#[test]
fn absolute_path() {
    refused(raw_tar(&[Ent::File("/tmp/evil", b"x")]), "absolute path");
}

#[test]
fn symlink_pointing_outside() {
    refused(
        raw_tar(&[Ent::Symlink("link", "../../../../etc")]),
        "points outside the layer",
    );
    refused(
        raw_tar(&[Ent::Dir("a/"), Ent::Symlink("a/link", "../..")]),
        "points outside the layer",
    );
}

#[test]
fn hardlink_pointing_outside() {
    refused(
        raw_tar(&[Ent::Hardlink("hl", "../../../etc/passwd")]),
        "contains `..`",
    );
    refused(
        raw_tar(&[Ent::Hardlink("hl", "/etc/passwd")]),
        "absolute path",
    );
    refused(
        raw_tar(&[Ent::Hardlink("hl", "not/in/archive")]),
        "not in the archive before",
    );
}

#[test]
fn path_through_planted_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap().to_string();
    // Absolute targets are kept (they resolve inside the container), but never followed here.
    refused(
        raw_tar(&[Ent::Symlink("dir", &target), Ent::File("dir/evil", b"x")]),
        "goes through the symlink",
    );
    refused(
        raw_tar(&[
            Ent::Dir("a/"),
            Ent::Symlink("a/b", "."),
            Ent::File("a/b/evil", b"x"),
        ]),
        "goes through the symlink",
    );
    // A hardlink may not reach through a planted symlink either.
    refused(
        raw_tar(&[
            Ent::Symlink("dir", &target),
            Ent::Hardlink("hl", "dir/secret"),
        ]),
        "goes through the symlink",
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the symlink"
    );
}

/// Without device nodes allowed (a user's import), a layer's device node is skipped with a
/// warning and the rest of the layer is imported: never a failure of the whole import.
#[test]
fn device_node_when_not_root_is_skipped_not_fatal() {
    let opts = ImportOptions {
        allow_devices: Some(false),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let layout = tmp.path().join("layout");
    oci_layout(
        &layout,
        &[raw_tar(&[
            Ent::Char("dev/sda", 8, 0),
            Ent::File("etc/kept", b"kept\n"),
        ])],
        None,
    );
    let image = import(&store, &layout, &opts).expect("the import goes on past the device node");
    let layer = store.layer_path(&image.layers[0].digest).unwrap();
    assert_eq!(fs::read(layer.join("etc/kept")).unwrap(), b"kept\n");
    assert!(
        fs::symlink_metadata(layer.join("dev/sda")).is_err(),
        "no device node made"
    );
}

#[test]
fn truncated_archive() {
    let full = raw_tar(&[Ent::File("big", &[7u8; 10_000]), Ent::File("after", b"x")]);
    // Cut inside the first file's data; the config's diff id matches the cut bytes, so it is the
    // unpacker itself that must notice.
    let cut = full[..4096].to_vec();
    refused(cut, "archive truncated");
}

#[test]
fn corrupt_header() {
    let mut bad = raw_tar(&[Ent::File("a", b"hello")]);
    bad[0..4].copy_from_slice(b"\xff\xfe\xfd\xfc"); // checksum no longer matches
    refused(bad, "corrupt or truncated");
}

#[test]
fn corrupt_gzip() {
    let plain = raw_tar(&[Ent::File("a", &[1u8; 50_000])]);
    let mut gz = gzip(&plain);
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    gz[mid + 1] ^= 0xff;
    refused_with(
        vec![gz],
        Some(vec![sha256(&plain)]),
        ImportOptions::default(),
        "importing layer 1/1",
    );
}

#[test]
fn truncated_gzip() {
    let plain = raw_tar(&[Ent::File("a", &[1u8; 50_000])]);
    let gz = gzip(&plain);
    let cut = gz[..gz.len() - 20].to_vec();
    refused_with(
        vec![cut],
        Some(vec![sha256(&plain)]),
        ImportOptions::default(),
        "importing layer 1/1",
    );
}

#[test]
fn diff_id_mismatch() {
    let layer = raw_tar(&[Ent::File("a", b"x")]);
    refused_with(
        vec![layer],
        Some(vec![sha256(b"something else")]),
        ImportOptions::default(),
        "diff id mismatch",
    );
}

#[test]
fn blob_digest_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let layout = tmp.path().join("layout");
    let layer = raw_tar(&[Ent::File("a", b"x")]);
    oci_layout(&layout, std::slice::from_ref(&layer), None);
    // Swap the blob's content behind the manifest's back.
    let blob = layout
        .join("blobs/sha256")
        .join(sha256(&layer).trim_start_matches("sha256:"));
    fs::write(&blob, raw_tar(&[Ent::File("a", b"y")])).unwrap();
    let before = snapshot(store.root(), false);
    let err = format!(
        "{:#}",
        import(&store, &layout, &ImportOptions::default()).unwrap_err()
    );
    assert!(err.contains("blob digest mismatch"), "{err}");
    assert_eq!(snapshot(store.root(), false), before);
}

#[test]
fn tar_bomb_past_size_limit() {
    let opts = ImportOptions {
        limits: Limits {
            max_bytes: 1 << 20,
            ..Limits::default()
        },
        ..Default::default()
    };
    // 8 MiB of zeros compresses to a few KiB.
    let plain = raw_tar(&[Ent::File("bomb", &vec![0u8; 8 << 20])]);
    let gz = gzip(&plain);
    assert!(gz.len() < 100_000);
    refused_with(vec![gz], Some(vec![sha256(&plain)]), opts, "limit");
}

#[test]
fn too_many_entries() {
    let opts = ImportOptions {
        limits: Limits {
            max_entries: 10,
            ..Limits::default()
        },
        ..Default::default()
    };
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<Ent> = names.iter().map(|n| Ent::File(n, b"")).collect();
    refused_with(vec![raw_tar(&entries)], None, opts, "entries");
}

#[test]
fn failure_in_a_later_layer_rolls_back_earlier_ones() {
    let good = raw_tar(&[Ent::File("fresh-layer-file", b"new content")]);
    let bad = raw_tar(&[Ent::File("../evil", b"x")]);
    refused_with(
        vec![good, bad],
        None,
        ImportOptions::default(),
        "contains `..`",
    );
}

#[test]
fn docker_archive_blob_symlink_out_of_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let secret = tmp.path().join("secret.tar");
    let layer = raw_tar(&[Ent::File("stolen", b"host secret")]);
    fs::write(&secret, &layer).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!(
        "{}.json",
        sha256(&config_bytes).trim_start_matches("sha256:")
    );
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["evil:latest"], "Layers": ["abc/layer.tar"],
    }]);
    // The archive itself: the layer is a symlink to a file on the host.
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    add(&config_name, &config_bytes);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_link(&mut h, "abc/layer.tar", &secret).unwrap();
    let archive = tmp.path().join("evil.tar");
    fs::write(&archive, b.into_inner().unwrap()).unwrap();

    let before = snapshot(store.root(), false);
    let err = format!(
        "{:#}",
        import(&store, &archive, &ImportOptions::default()).unwrap_err()
    );
    assert!(err.contains("symlink out of the image directory"), "{err}");
    assert_eq!(snapshot(store.root(), false), before);
}

#[test]
fn a_good_layout_imports() {
    // The control for the tests above: the same helper with benign content succeeds.
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let layout = tmp.path().join("layout");
    let layer = raw_tar(&[
        Ent::Dir("etc/"),
        Ent::File("etc/ok", b"fine"),
        Ent::Symlink("etc/abs", "/etc/ok"),
        Ent::Symlink("etc/rel", "../etc/ok"),
        Ent::Hardlink("etc/hl", "etc/ok"),
        Ent::File("etc/.wh.motd", b""),
    ]);
    let second = raw_tar(&[
        Ent::Dir("etc/"),
        Ent::File("etc/zstd", b"from a zstd layer"),
    ]);
    let zstd =
        ruzstd::encoding::compress_to_vec(&second[..], ruzstd::encoding::CompressionLevel::Fastest);
    oci_layout(
        &layout,
        &[gzip(&layer), zstd],
        Some(vec![sha256(&layer), sha256(&second)]),
    );
    let image = import(&store, &layout, &ImportOptions::default()).unwrap();
    assert_eq!(image.name, "t");
    let top = store.layer_path(&image.layers[1].digest).unwrap();
    assert_eq!(
        fs::read(top.join("etc/zstd")).unwrap(),
        b"from a zstd layer"
    );
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    let dir = store.layer_path(&image.layers[0].digest).unwrap();
    assert_eq!(fs::read(dir.join("etc/hl")).unwrap(), b"fine");
    assert!(
        dir.join("etc/.wh.motd").is_file(),
        "whiteouts are kept in the stored layer"
    );
    assert_eq!(
        fs::read_link(dir.join("etc/abs")).unwrap(),
        Path::new("/etc/ok")
    );
}

/// Several images in one layout: refused without `--ref`, picked by ref name with it; a nested
/// index is followed.
#[test]
fn layout_with_several_images_needs_a_ref() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let layout = tmp.path().join("layout");
    let read_index = |dir: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap()
    };
    oci_layout(&layout, &[raw_tar(&[Ent::File("which", b"first")])], None);
    let mut first = read_index(&layout)["manifests"][0].clone();
    first["annotations"]["org.opencontainers.image.ref.name"] = "one".into();
    oci_layout(&layout, &[raw_tar(&[Ent::File("which", b"second")])], None);
    let second = read_index(&layout)["manifests"][0].clone();
    // The second image sits behind a nested index named "two".
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [second],
    });
    let nested_bytes = serde_json::to_vec(&nested).unwrap();
    let nested_digest = sha256(&nested_bytes);
    fs::write(
        layout
            .join("blobs/sha256")
            .join(nested_digest.trim_start_matches("sha256:")),
        &nested_bytes,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [first, {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": nested_digest, "size": nested_bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "two"},
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();

    let err = format!(
        "{:#}",
        import(&store, &layout, &ImportOptions::default()).unwrap_err()
    );
    assert!(
        err.contains("several images") && err.contains("--ref"),
        "{err}"
    );
    for (reference, content) in [("one", "first"), ("two", "second")] {
        let opts = ImportOptions {
            reference: Some(reference.into()),
            ..Default::default()
        };
        let image = import(&store, &layout, &opts).unwrap();
        assert_eq!(image.name, reference);
        let dir = store.layer_path(&image.layers[0].digest).unwrap();
        assert_eq!(fs::read_to_string(dir.join("which")).unwrap(), content);
    }
    let opts = ImportOptions {
        reference: Some("three".into()),
        ..Default::default()
    };
    let err = format!("{:#}", import(&store, &layout, &opts).unwrap_err());
    assert!(err.contains("no image named \"three\""), "{err}");
}

/// Every entry that would be written through a non-directory of the same layer is refused:
/// a file, a directory, a symlink, a hardlink beneath a file or a device node.
#[test]
fn writes_through_a_non_directory() {
    for entries in [
        vec![Ent::File("a", b"file"), Ent::File("a/evil", b"x")],
        vec![Ent::File("a", b"file"), Ent::Dir("a/evil/")],
        vec![Ent::File("a", b"file"), Ent::Symlink("a/evil", "/etc")],
        vec![
            Ent::File("t", b"t"),
            Ent::File("a", b"file"),
            Ent::Hardlink("a/evil", "t"),
        ],
        vec![Ent::Char("a", 1, 3), Ent::File("a/evil", b"x")],
        // A whiteout's own path through a file is fine, but not a file beside it.
        vec![
            Ent::File("a", b"file"),
            Ent::File("a/.wh.old", b""),
            Ent::File("a/evil", b"x"),
        ],
    ] {
        refused(raw_tar(&entries), "which is not a directory");
    }
}

/// umoci 0.4.7 replaces a directory by a file (or symlink) and then writes whiteouts for the
/// directory's old contents beneath it. Those hide nothing: they are skipped, nothing is written
/// through the non-directory (not even through a symlink pointing outside), and the layer holds
/// just the file.
#[test]
fn whiteouts_beneath_a_replacing_non_directory_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let store = seeded_store(tmp.path());
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let layout = tmp.path().join("layout");
    let base = raw_tar(&[
        Ent::Dir("var/"),
        Ent::Dir("var/lib/"),
        Ent::Dir("var/lib/app/"),
        Ent::File("var/lib/app/db", b"db"),
        Ent::Dir("var/lib/app/sub/"),
        Ent::Dir("link/"),
        Ent::File("link/x", b"x"),
    ]);
    let top = raw_tar(&[
        Ent::File("var/lib/app", b"now a file"),
        Ent::File("var/lib/app/.wh.db", b""),
        Ent::File("var/lib/app/.wh.sub", b""),
        Ent::File("var/lib/app/.wh..wh..opq", b""),
        Ent::Symlink("link", outside.to_str().unwrap()),
        Ent::File("link/.wh.x", b""),
    ]);
    oci_layout(&layout, &[base, top], None);
    let image = import(&store, &layout, &ImportOptions::default()).unwrap();
    let dir = store.layer_path(&image.layers[1].digest).unwrap();
    assert_eq!(
        fs::read(dir.join("var/lib/app")).unwrap(),
        b"now a file",
        "the file replaces the directory"
    );
    assert!(fs::symlink_metadata(dir.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "wrote through the symlink"
    );
    // The same layer squashed on its base: the union by the extractor's apply rules.
    layer_tool::squash::squash(&store, "t", "flat", false).unwrap();
    let (flat_dir, flat) = store.find_image("flat").unwrap();
    let flat_root = flat.layer_dirs(&flat_dir)[0].clone();
    assert_eq!(
        fs::read(flat_root.join("var/lib/app")).unwrap(),
        b"now a file"
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}
