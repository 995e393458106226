//! unionfs-snapshotter under a real containerd 1.6: `ctr images import --snapshotter unionfs`
//! unpacks the demo image's layers into it, and `ctr run --snapshotter unionfs` starts a
//! container on a fuse.unionfs root; the snapshotter is restarted between steps.

mod common;

use std::fs;
use std::time::Duration;

use common::containerd::{
    demo_archive, missing, mounts_mentioning, processes_mentioning, proxy_config, wait_for,
    Containerd, SnapshotterDaemon, DEMO_REF,
};

fn can_run(test: &str) -> bool {
    common::can_run(test) && common::can_run_with(test, missing())
}

#[test]
fn ctr_run_on_a_unionfs_root_with_the_snapshotter_restarted_between_steps() {
    if !can_run("ctr_run_on_a_unionfs_root_with_the_snapshotter_restarted_between_steps") {
        return;
    }
    let archive = demo_archive();
    let dir = tempfile::Builder::new()
        .prefix("snapshotter-ctr")
        .tempdir()
        .unwrap();
    let snap_root = dir.path().join("snapshots");
    let mut snap = SnapshotterDaemon::start(
        &dir.path().join("snap.sock"),
        &snap_root,
        &dir.path().join("snap.log"),
    );
    let mut ctd = Containerd::start(
        &dir.path().join("containerd"),
        &proxy_config(&snap.socket),
        common::path_with_unionfs(),
    );

    // The image's two layers are unpacked by containerd into union mounts of the snapshotter
    // and committed there.
    ctd.ctr_ok(&[
        "images",
        "import",
        "--snapshotter",
        "unionfs",
        archive.to_str().unwrap(),
    ]);
    let committed = |snap: &SnapshotterDaemon| {
        snap.records()
            .into_iter()
            .filter(|r| r.2 == "committed")
            .count()
    };
    assert_eq!(committed(&snap), 2, "{:?}", snap.records());

    // A container on the image: its root is a unionfs mount, and what it writes and deletes
    // lands in its snapshot's own directory, never in the image's layers.
    let out = ctd.ctr_ok(&[
        "run",
        "--snapshotter",
        "unionfs",
        DEMO_REF,
        "c1",
        "sh",
        "-c",
        "grep ' / / ' /proc/self/mountinfo; echo from-c1 > /etc/c1-file; rm /etc/motd; cat /etc/c1-file",
    ]);
    let root_line = out.lines().next().unwrap_or_default();
    assert!(
        root_line.contains(" - fuse.unionfs "),
        "the container's / is not unionfs: {out}"
    );
    assert!(out.contains("from-c1"), "{out}");
    let upper = snap.tree_of("c1");
    assert_eq!(
        fs::read_to_string(upper.join("etc/c1-file")).unwrap(),
        "from-c1\n"
    );
    assert!(
        upper.join("etc/.wh.motd").exists(),
        "the deletion is a whiteout in the upper directory"
    );
    let motd_layers = snap_root.join("snapshots");
    let layers_with_motd = fs::read_dir(&motd_layers)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("fs/etc/motd").is_file())
        .count();
    assert_eq!(
        layers_with_motd, 2,
        "both image layers keep their /etc/motd"
    );

    // A running container, to outlive the restart.
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--snapshotter",
        "unionfs",
        DEMO_REF,
        "long",
        "sleep",
        "1000",
    ]);

    // Restarted: the state is kept, and containerd reconnects.
    let before = snap.records();
    snap.restart();
    assert_eq!(snap.records(), before);
    reconnected(&ctd);

    // The running container's root never depended on the snapshotter process (it is its own
    // unionfs daemon): it still reads and writes.
    let out = ctd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "after-restart",
        "long",
        "sh",
        "-c",
        "cat /etc/hostname >/dev/null; echo after > /after-restart; cat /after-restart",
    ]);
    assert_eq!(out.trim(), "after");
    assert_eq!(
        fs::read_to_string(snap.tree_of("long").join("after-restart")).unwrap(),
        "after\n"
    );
    ctd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "long"]);
    wait_for(
        "the long container to stop",
        Duration::from_secs(30),
        || {
            let tasks = ctd.ctr_ok(&["tasks", "ls"]);
            tasks
                .lines()
                .any(|l| l.starts_with("long ") && l.contains("STOPPED"))
                .then_some(())
        },
    );
    ctd.ctr_ok(&["tasks", "rm", "long"]);
    ctd.ctr_ok(&["containers", "rm", "long"]);

    // The container's layer committed (as `ctr snapshots commit` does) and reused under a
    // new snapshot: what c1 wrote is there, what c2 writes goes to c2's own directory.
    ctd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "unionfs",
        "commit",
        "c1-layer",
        "c1",
    ]);
    let _ = ctd.ctr(&["containers", "rm", "c1"]);
    ctd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "unionfs",
        "prepare",
        "c2-root",
        "c1-layer",
    ]);
    let mounts_cmd = ctd.ctr_ok(&[
        "snapshots",
        "--snapshotter",
        "unionfs",
        "mounts",
        "/target",
        "c2-root",
    ]);
    assert!(
        mounts_cmd.contains("fuse3.unionfs") && mounts_cmd.contains("upperdir="),
        "{mounts_cmd}"
    );
    let info = ctd.ctr_ok(&["snapshots", "--snapshotter", "unionfs", "info", "c2-root"]);
    assert!(
        info.contains("\"Parent\": \"c1-layer\"") && info.contains("\"Kind\": \"Active\""),
        "{info}"
    );

    snap.restart();
    reconnected(&ctd);
    // A second container of the same image reuses the committed image layers: nothing is
    // unpacked again. It runs on a fresh snapshot: c1's changes are not in it.
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--snapshotter",
        "unionfs",
        DEMO_REF,
        "c3",
        "sh",
        "-c",
        "cat /etc/motd; test ! -e /etc/c1-file && echo no-c1-file",
    ]);
    assert!(
        out.contains("Welcome") && out.contains("no-c1-file"),
        "{out}"
    );
    assert_eq!(
        committed(&snap),
        3,
        "two image layers and c1-layer: {:?}",
        snap.records()
    );

    // c2-root through containerd's mount path (ctr snapshots mount prints the same mount, and
    // containerd performs it with mount.fuse3): c1's file is there, c2's writes land in c2-root.
    let target = dir.path().join("c2-rootfs");
    fs::create_dir(&target).unwrap();
    let mounts = [containerd_snapshots::api::types::Mount {
        r#type: "fuse3.unionfs".into(),
        source: "unionfs".into(),
        target: String::new(),
        options: mount_options(&mounts_cmd),
    }];
    let m = common::mount_all(&mounts, &target);
    let out = ctd.ctr_ok(&[
        "run",
        "--rm",
        "--rootfs",
        target.to_str().unwrap(),
        "c2",
        "/bin/sh",
        "-c",
        "cat /etc/c1-file; echo from-c2 > /c2-file",
    ]);
    assert_eq!(out.trim(), "from-c1");
    common::unmount(m);
    assert_eq!(
        fs::read_to_string(snap.tree_of("c2-root").join("c2-file")).unwrap(),
        "from-c2\n"
    );
    assert!(!snap.tree_of("c1-layer").join("c2-file").exists());

    // Removed through containerd: the snapshots and their directories go.
    ctd.ctr_ok(&["snapshots", "--snapshotter", "unionfs", "rm", "c2-root"]);
    ctd.ctr_ok(&["snapshots", "--snapshotter", "unionfs", "rm", "c1-layer"]);
    // containerd removes them from the snapshotter in its next collection, but its scheduler
    // drops a deletion that lands while the previous collection is still removing from the
    // snapshotter (here c1-layer's, during c2-root's): the event is older than that
    // collection's end. Then nothing collects until the next deletion. A synchronous
    // collection (deleting a lease with --sync) is what ctr offers to ask for one now.
    ctd.ctr_ok(&["leases", "create", "--id", "collect-now"]);
    ctd.ctr_ok(&["leases", "rm", "--sync", "collect-now"]);
    wait_for(
        "c1-layer and c2-root to leave the snapshotter",
        Duration::from_secs(30),
        || {
            (!snap
                .records()
                .iter()
                .any(|r| r.0.ends_with("/c1-layer") || r.0.ends_with("/c2-root")))
            .then_some(())
        },
    );
    // The image removed, containerd's garbage collector removes its layers, children first.
    ctd.ctr_ok(&["images", "rm", "--sync", DEMO_REF]);
    wait_for(
        "containerd's collector to remove the image's snapshots",
        Duration::from_secs(30),
        || snap.records().is_empty().then_some(()),
    );
    ctd.stop();
    snap.stop();
    let dirs: Vec<_> = fs::read_dir(snap_root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        dirs,
        Vec::<std::ffi::OsString>::new(),
        "directories of removed snapshots"
    );
    assert_eq!(mounts_mentioning(dir.path()), Vec::<String>::new());
    assert_eq!(ctd.cgroups_left(), Vec::<String>::new());
    assert_eq!(processes_mentioning(dir.path()), Vec::<String>::new());
}

/// Polls until containerd reaches the restarted snapshotter: its gRPC connection to a proxy
/// plugin fails fast ("unavailable") until the next reconnection attempt of its backoff
/// (about a second after the socket went away).
fn reconnected(ctd: &Containerd) {
    wait_for(
        "containerd to reconnect to the snapshotter",
        Duration::from_secs(30),
        || {
            let out = ctd.ctr(&["snapshots", "--snapshotter", "unionfs", "ls"]);
            if out.status.success() {
                return Some(());
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("unavailable"),
                "not a reconnection delay: {err}"
            );
            None
        },
    );
}

/// The `-o` options of the `mount -t fuse3.unionfs unionfs /target -o OPTS` line that
/// `ctr snapshots mounts` prints.
fn mount_options(line: &str) -> Vec<String> {
    let opts = line
        .split(" -o ")
        .nth(1)
        .unwrap_or_else(|| panic!("no options in {line:?}"));
    opts.trim().split(',').map(String::from).collect()
}
