//! The daemon's start: it refuses to serve where containerd could not perform its mounts, and
//! the store it opens recovers from an interrupted operation.

mod common;

use std::collections::HashMap;
use std::fs;
use std::process::Command;

use snapshotter::Store;

#[test]
fn without_unionfs_on_path_the_daemon_says_so_and_does_not_serve() {
    if !common::can_run("without_unionfs_on_path_the_daemon_says_so_and_does_not_serve") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bin");
    fs::create_dir(&bare).unwrap();
    // mount.fuse3 and sh, but no unionfs.
    std::os::unix::fs::symlink(
        common::which("mount.fuse3").unwrap(),
        bare.join("mount.fuse3"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/bin/sh", bare.join("sh")).unwrap();
    std::os::unix::fs::symlink(common::which("umount").unwrap(), bare.join("umount")).unwrap();
    let socket = dir.path().join("snap.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_unionfs-snapshotter"))
        .arg(&socket)
        .arg(dir.path().join("root"))
        .env("PATH", &bare)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("mount.fuse3 runs `unionfs` from PATH") && stderr.contains("not found"),
        "{stderr}"
    );
    assert!(!socket.exists());
    assert!(
        fs::read_dir(dir.path().join("root")).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("check-")),
        "the check's directory is removed"
    );
}

#[test]
fn opening_a_store_removes_what_an_interrupted_operation_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = Store::open(&root).unwrap();
    store.prepare("kept", "", HashMap::new()).unwrap();
    let kept = store.tree_of("kept").unwrap();
    fs::write(kept.join("file"), "x").unwrap();
    drop(store);
    // A prepare that crashed before its rename, a remove that crashed before its delete, a
    // directory the metadata never named, a metadata write that never got renamed.
    for d in ["new-9/fs", "removed-3/fs", "42/fs"] {
        fs::create_dir_all(root.join("snapshots").join(d)).unwrap();
    }
    fs::write(root.join("metadata.json.tmp"), "{half").unwrap();
    let store = Store::open(&root).unwrap();
    let mut left: Vec<_> = fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["1"]);
    assert!(!root.join("metadata.json.tmp").exists());
    assert_eq!(
        fs::read_to_string(store.tree_of("kept").unwrap().join("file")).unwrap(),
        "x"
    );
    // Ids are never reused, so an old directory name cannot come back to life.
    store.prepare("next", "", HashMap::new()).unwrap();
    assert!(store
        .tree_of("next")
        .unwrap()
        .starts_with(root.join("snapshots/2")));
}

#[test]
fn a_root_whose_path_would_break_mount_options_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(&dir.path().join("a,b")).err().expect("refused");
    assert!(err.to_string().contains("separate mount options"), "{err}");
}

#[test]
fn cleanup_while_serving_removes_orphans_and_keeps_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = Store::open(&root).unwrap();
    store.prepare("kept", "", HashMap::new()).unwrap();
    fs::create_dir_all(root.join("snapshots/new-77/fs")).unwrap();
    fs::create_dir_all(root.join("snapshots/removed-5/fs")).unwrap();
    store.cleanup().unwrap();
    let mut left: Vec<_> = fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    // removed-ID is a concurrent remove's to delete.
    assert_eq!(left, ["1", "removed-5"]);
}

#[test]
fn a_failed_metadata_write_leaves_no_snapshot_behind_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = Store::open(&root).unwrap();
    store.prepare("a", "", HashMap::new()).unwrap();
    // The metadata file cannot be replaced: a directory stands in its place.
    fs::remove_file(root.join("metadata.json")).unwrap();
    fs::create_dir(root.join("metadata.json")).unwrap();
    let err = store.prepare("b", "", HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("metadata.json"), "{err}");
    let err = store.commit("c", "a", HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("metadata.json"), "{err}");
    // Nothing changed: b does not exist (nor its directory), a is still active.
    assert!(store.stat("b").is_err());
    assert_eq!(
        store.stat("a").unwrap().kind,
        snapshotter::meta::Kind::Active
    );
    let entries: Vec<_> = fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["1"]);
    // Once the metadata can be written again, everything works.
    fs::remove_dir(root.join("metadata.json")).unwrap();
    store.commit("c", "a", HashMap::new()).unwrap();
    store.prepare("b", "c", HashMap::new()).unwrap();
    drop(store);
    let store = Store::open(&root).unwrap();
    assert_eq!(store.stat("b").unwrap().parent, "c");
}
