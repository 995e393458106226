//! A real client: podman's overlay storage driver with `unionfs` as its `mount_program` (the
//! role fuse-overlayfs plays). podman creates a container, mounts its root through unionfs,
//! diffs and commits it, and a container of the committed image sees the changes, deletions
//! included. Everything lives in a temporary podman root.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("root");
        let run = self.dir.path().join("run");
        let mount_program = format!("overlay.mount_program={BIN}");
        Command::new("podman")
            .args([
                "--root",
                root.to_str().unwrap(),
                "--runroot",
                run.to_str().unwrap(),
            ])
            .args([
                "--storage-driver",
                "overlay",
                "--storage-opt",
                &mount_program,
            ])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["umount", "--all"]);
        let _ = self.cmd(&["rm", "--all", "--force"]);
        let _ = self.cmd(&["system", "reset", "--force"]);
    }
}

#[test]
fn podman_mounts_diffs_and_commits_through_unionfs() {
    if !can_mount() {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs podman (scripts/install-deps.sh)"
        );
        eprintln!("skipping: no podman");
        return;
    }
    let fx = Fixture::new();
    fx.write("rootfs/etc/motd", "welcome\n");
    fx.write("rootfs/etc/keep", "keep\n");
    fx.mkdir("rootfs/tmp");
    let tar = fx.path("rootfs.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(fx.path("rootfs"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let podman = Podman {
        dir: tempfile::Builder::new()
            .prefix("unionfs-podman")
            .tempdir()
            .unwrap(),
    };
    podman.ok(&["import", tar.to_str().unwrap(), "localhost/unionfs-test:1"]);
    let ctr = podman.ok(&["create", "localhost/unionfs-test:1", "/bin/true"]);
    let mnt = podman.ok(&["mount", &ctr]);
    let mnt = Path::new(&mnt);
    assert!(is_mounted(mnt), "podman's mount is ours");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(info
        .lines()
        .any(|l| l.contains(mnt.to_str().unwrap()) && l.contains("fuse.unionfs")));
    assert_eq!(read(&mnt.join("etc/motd")), "welcome\n");
    std::fs::write(mnt.join("new"), "added\n").unwrap();
    std::fs::remove_file(mnt.join("etc/motd")).unwrap();
    let diff = podman.ok(&["diff", &ctr]);
    assert!(diff.contains("A /new"), "{diff}");
    assert!(diff.contains("D /etc/motd"), "{diff}");
    podman.ok(&["commit", "-q", &ctr, "localhost/unionfs-test:2"]);
    podman.ok(&["umount", &ctr]);
    assert!(!is_mounted(mnt));
    let ctr2 = podman.ok(&["create", "localhost/unionfs-test:2", "/bin/true"]);
    let mnt2 = podman.ok(&["mount", &ctr2]);
    let mnt2 = Path::new(&mnt2);
    assert_eq!(read(&mnt2.join("new")), "added\n");
    assert!(
        !mnt2.join("etc/motd").exists(),
        "the deletion was committed"
    );
    assert_eq!(read(&mnt2.join("etc/keep")), "keep\n");
    podman.ok(&["umount", &ctr2]);
}
