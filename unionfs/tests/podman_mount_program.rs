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
    /// Extra mount options containers/storage hands `unionfs` (`overlay.mountopt`).
    mount_opts: Option<String>,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("root");
        let run = self.dir.path().join("run");
        let mount_program = format!("overlay.mount_program={BIN}");
        let mount_opts = self
            .mount_opts
            .as_ref()
            .map(|o| vec!["--storage-opt".to_string(), format!("overlay.mountopt={o}")])
            .unwrap_or_default();
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
            .args(&mount_opts)
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            // runc: crun refuses a hybrid cgroup hierarchy (v1 controllers beside cgroup2).
            .args(["--runtime", "runc"])
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

/// podman instances share one lock segment in /dev/shm whatever their roots: one at a time.
static ONE_PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// True when this machine can run these tests: FUSE mounts and podman. Under CI=true a
/// machine that cannot is a failure.
fn have_podman() -> bool {
    if !can_mount() {
        return false;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs podman (scripts/install-deps.sh)"
        );
        eprintln!("skipping: no podman");
        return false;
    }
    true
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("unionfs-podman")
                .tempdir()
                .unwrap(),
            mount_opts: None,
        }
    }

    /// Imports the rootfs `fx/rootfs` as image `name`, with Dockerfile-style `changes`.
    fn import(&self, fx: &Fixture, name: &str, changes: &[&str]) {
        let tar = fx.path(&format!("{}.tar", name.replace(['/', ':'], "_")));
        assert!(Command::new("tar")
            .arg("-C")
            .arg(fx.path("rootfs"))
            .arg("--numeric-owner")
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let mut args = vec!["import".to_string()];
        for c in changes {
            args.push("--change".into());
            args.push(c.to_string());
        }
        args.push(tar.to_str().unwrap().into());
        args.push(name.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }
}

/// A root filesystem with a static busybox as its shell and tools, a root-owned file, a world
/// writable /tmp and a home owned by user 1000.
fn busybox_rootfs(fx: &Fixture) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(busybox) = busybox else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs busybox-static (scripts/install-deps.sh)"
        );
        panic!("no busybox on this machine");
    };
    fx.mkdir("rootfs/bin");
    std::fs::copy(busybox, fx.path("rootfs/bin/busybox")).unwrap();
    for tool in ["sh", "cat", "id", "ls", "echo"] {
        std::os::unix::fs::symlink("busybox", fx.path(&format!("rootfs/bin/{tool}"))).unwrap();
    }
    fx.write("rootfs/etc/motd", "welcome\n");
    set_mode(&fx.path("rootfs/etc/motd"), 0o644);
    fx.mkdir("rootfs/tmp");
    set_mode(&fx.path("rootfs/tmp"), 0o1777);
    fx.mkdir("rootfs/home/user");
    nix::unistd::chown(
        &fx.path("rootfs/home/user"),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(1000)),
    )
    .unwrap();
}

/// fuse-overlayfs mounts with `allow_other` when it runs as root, so containers/storage never
/// asks for it. A process that is not root in a container whose root is a unionfs mount must
/// reach its root like on overlayfs: read it, write where its permissions let it, execute from
/// it. And `noallow_other` (through `overlay.mountopt`) turns that off again.
#[test]
fn a_container_process_that_is_not_root_reads_writes_and_executes_its_root() {
    if !have_podman() {
        return;
    }
    let _one = ONE_PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let fx = Fixture::new();
    busybox_rootfs(&fx);
    let podman = Podman::new();
    podman.import(&fx, "localhost/unionfs-user:1", &[]);
    podman.import(&fx, "localhost/unionfs-user:2", &["USER 1000"]);
    let run = |podman: &Podman, args: &[&str]| {
        // podman raises the open-files and process limits by default, beyond what a machine
        // with lower hard limits (a CI sandbox) lets even root set: ask for modest ones.
        let mut all = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        all.extend_from_slice(args);
        podman.cmd(&all)
    };
    // `--user 65534`: reads a root-owned file, lists the root, writes to /tmp, executes.
    let out = run(
        &podman,
        &[
            "--user",
            "65534",
            "localhost/unionfs-user:1",
            "/bin/sh",
            "-c",
            "id -u && cat /etc/motd && ls / >/dev/null && echo hi >/tmp/x && cat /tmp/x && \
             if echo no >/etc/motd; then echo wrote; else echo refused; fi",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "podman run --user 65534: exit {:?}: {}{stdout}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "65534\nwelcome\nhi\nrefused\n");
    // The image's own non-root USER: writes its home, not root's files.
    let out = run(
        &podman,
        &[
            "localhost/unionfs-user:2",
            "/bin/sh",
            "-c",
            "id -u && echo mine >/home/user/f && cat /home/user/f && \
             if echo no >/etc/motd; then echo wrote; else echo refused; fi",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "podman run of a USER 1000 image: exit {:?}: {}{stdout}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "1000\nmine\nrefused\n");
    // With `noallow_other` the kernel keeps everyone but the daemon's user out: the
    // process cannot even execute its shell (podman reports 126 or 127, as the field saw).
    let mut closed = Podman::new();
    closed.mount_opts = Some("noallow_other".into());
    closed.import(&fx, "localhost/unionfs-user:1", &[]);
    let out = run(
        &closed,
        &[
            "--user",
            "65534",
            "localhost/unionfs-user:1",
            "/bin/sh",
            "-c",
            "id -u",
        ],
    );
    assert!(
        matches!(out.status.code(), Some(126 | 127)),
        "noallow_other must keep a non-root container process out of its root: exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn podman_mounts_diffs_and_commits_through_unionfs() {
    if !have_podman() {
        return;
    }
    let _one = ONE_PODMAN.lock().unwrap_or_else(|e| e.into_inner());
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
    let podman = Podman::new();
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
