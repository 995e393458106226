//! A real client of the OCI interface: podman (through conmon) with `runner` as its runtime,
//! offline, on an image that `podman import` made from the demo image's merged root, with the
//! cgroupfs manager. Once with the vfs storage driver, once with the overlay driver and
//! `unionfs` as its `mount_program`. Everything lives in a temporary podman root.
//!
//! Needs root, podman (scripts/install-deps.sh) and the demo image (scripts/build-demo-image.sh);
//! under `CI=true` a missing one fails the test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{attacker_report, build_static, can_run, unionfs_bin};

/// A podman with its own root, run root and tmp dir, using `runner` as the OCI runtime.
struct Podman {
    dir: tempfile::TempDir,
    storage: Vec<String>,
    runtime: PathBuf,
}

impl Podman {
    fn new(storage: &[&str]) -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("runner-podman")
                .tempdir()
                .unwrap(),
            storage: storage.iter().map(|s| s.to_string()).collect(),
            runtime: PathBuf::from(env!("CARGO_BIN_EXE_runner")),
        }
    }

    /// The same with a private copy of the runtime (to check nothing changed it).
    fn with_runtime_copy(storage: &[&str]) -> Podman {
        let mut p = Podman::new(storage);
        p.runtime = p.dir.path().join("runner");
        fs::copy(env!("CARGO_BIN_EXE_runner"), &p.runtime).unwrap();
        p
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(&self.runtime)
            .args(&self.storage)
            .args(args)
            .env("UNIONFS_BIN", unionfs_bin().expect("checked by can_run"))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running podman")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["umount", "--all"]);
        let _ = self.run(&["system", "reset", "--force"]);
        // Anything still mounted below the scratch directory (a failed test), lazily.
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let base = self.dir.path().to_string_lossy().into_owned();
        for mnt in info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&base))
        {
            let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// podman instances share one lock segment in /dev/shm whatever their roots: one at a time.
static ONE_PODMAN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// True when podman and the demo image are here; panics under `CI=true` otherwise.
fn prerequisites(test: &str) -> bool {
    if !can_run(test) {
        return false;
    }
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let missing = if Command::new("podman").arg("--version").output().is_err() {
        Some("podman (scripts/install-deps.sh)")
    } else if !demo_image().join("image.json").is_file() {
        Some("the demo image (bash scripts/build-demo-image.sh)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(what) if ci => panic!("{test}: needs {what}, and CI=true: failing, not skipping"),
        Some(what) => {
            eprintln!("SKIPPED {test}: needs {what}");
            false
        }
    }
}

fn demo_image() -> PathBuf {
    let store = std::env::var_os("UNIONFS_STORE").unwrap_or_else(|| "/var/lib/unionfs".into());
    Path::new(&store).join("images/demo")
}

/// The demo image's merged root as a tar, made once: `layer-tool mount` (through unionfs),
/// then tar.
fn demo_rootfs_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("podman-runtime");
        fs::create_dir_all(&scratch).unwrap();
        let tar = scratch.join("demo-rootfs.tar");
        let mnt = tempfile::tempdir_in(&scratch).unwrap();
        let layer_tool = PathBuf::from(env!("CARGO_BIN_EXE_runner")).with_file_name("layer-tool");
        let layer_tool = if layer_tool.is_file() {
            layer_tool
        } else {
            PathBuf::from("layer-tool")
        };
        let status = Command::new(&layer_tool)
            .arg("mount")
            .arg(demo_image())
            .arg(mnt.path())
            .env("UNIONFS_BIN", unionfs_bin().unwrap())
            .status()
            .expect("layer-tool mount");
        assert!(status.success(), "layer-tool mount of the demo image");
        let tarred = Command::new("tar")
            .arg("-C")
            .arg(mnt.path())
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        let _ = Command::new(&layer_tool)
            .arg("umount")
            .arg(mnt.path())
            .env("UNIONFS_BIN", unionfs_bin().unwrap())
            .status();
        assert!(tarred.success(), "tar of the demo root");
        tar
    })
}

/// Import the demo root, then the checks both storage set-ups share: output and exit code
/// through conmon, `podman ps -a` states, exec, stop.
fn run_the_demo(p: &Podman) {
    p.ok(&[
        "import",
        demo_rootfs_tar().to_str().unwrap(),
        "localhost/demo:latest",
    ]);
    let out = p.run(&[
        "run",
        "--name",
        "once",
        "--network",
        "none",
        "localhost/demo",
        "sh",
        "-c",
        "cat /etc/demo/message 2>/dev/null || ls /etc; echo pid=$$; exit 3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exit code through podman: {out:?}"
    );
    assert!(stdout.contains("pid=1"), "the command is pid 1: {stdout}");
    let ps = p.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("once Exited (3)"), "podman ps -a: {ps}");
    p.ok(&["rm", "once"]);

    let id = p.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--network",
        "none",
        "localhost/demo",
        "sleep",
        "1000",
    ]);
    assert!(!id.is_empty());
    let ps = p.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("bg Up"), "podman ps: {ps}");
    let exec = p.ok(&[
        "exec",
        "bg",
        "sh",
        "-c",
        "echo from exec; cat /proc/1/cmdline",
    ]);
    assert!(exec.starts_with("from exec"), "{exec}");
    assert!(exec.contains("sleep"), "exec joined the container: {exec}");
    // pid 1 ignores SIGTERM (no handler): podman escalates to SIGKILL after the timeout.
    p.ok(&["stop", "--time", "1", "bg"]);
    let ps = p.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.contains("bg Exited"), "stopped: {ps}");
    p.ok(&["rm", "bg"]);
    let out = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/demo",
        "echo",
        "bye",
    ]);
    assert_eq!(out, "bye");
    assert_eq!(p.ok(&["ps", "-a", "-q"]), "", "nothing left");
}

#[test]
fn podman_runs_containers_with_runner_as_its_runtime() {
    if !prerequisites("podman with runner (vfs)") {
        return;
    }
    let _one = ONE_PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let p = Podman::new(&["--storage-driver", "vfs"]);
    run_the_demo(&p);
}

#[test]
fn podman_with_runner_and_unionfs_as_the_overlay_mount_program() {
    if !prerequisites("podman with runner (overlay + unionfs)") {
        return;
    }
    let mount_program = format!("overlay.mount_program={}", unionfs_bin().unwrap().display());
    let p = Podman::new(&[
        "--storage-driver",
        "overlay",
        "--storage-opt",
        &mount_program,
    ]);
    run_the_demo(&p);
    // The container's root really was a unionfs mount.
    let out = p.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/demo",
        "sh",
        "-c",
        "grep ' / ' /proc/self/mountinfo",
    ]);
    assert!(out.contains("fuse.unionfs"), "{out}");
}

/// CVE-2019-5736 through podman: `podman exec` (conmon, then `runner exec`) while a root process
/// in the container hunts for the runtime's processes and tries to write the runtime's binary
/// through their `/proc/PID/exe` (tests/attack/exe_overwrite.c; see tests/security.rs).
#[test]
fn podman_exec_never_exposes_the_runtime_binary() {
    if !prerequisites("podman exec attack") {
        return;
    }
    let _one = ONE_PODMAN.lock().unwrap_or_else(|e| e.into_inner());
    let p = Podman::with_runtime_copy(&["--storage-driver", "vfs"]);
    let original = fs::read(&p.runtime).unwrap();
    let Some(attacker) = build_static("exe_overwrite.c", p.dir.path()) else {
        return;
    };
    // The demo root with the attacker added at /exe_overwrite.
    let tar = p.dir.path().join("attack.tar");
    fs::copy(demo_rootfs_tar(), &tar).unwrap();
    let appended = Command::new("tar")
        .arg("-C")
        .arg(attacker.parent().unwrap())
        .arg("-rf")
        .arg(&tar)
        .arg("./exe_overwrite")
        .status()
        .unwrap();
    assert!(appended.success());
    p.ok(&["import", tar.to_str().unwrap(), "localhost/attack:latest"]);
    p.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        "--network",
        "none",
        "localhost/attack",
        "/exe_overwrite",
        "120",
        "/tmp/ready",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !p
        .run(&["exec", "victim", "test", "-e", "/tmp/ready"])
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the attacker never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let execs: Vec<Output> = (0..10)
        .map(|_| p.run(&["exec", "victim", "/bin/true"]))
        .collect();
    // The attacker reports on SIGTERM.
    p.ok(&["stop", "--time", "20", "victim"]);
    let logs = p.ok(&["logs", "victim"]);
    p.ok(&["rm", "victim"]);
    assert!(
        fs::read(&p.runtime).unwrap() == original,
        "the runtime binary was changed from inside a container: {logs}"
    );
    let (_seen, opened, written) = attacker_report(&logs);
    assert_eq!((opened, written), (0, 0), "the attacker got in: {logs}");
    for out in execs {
        assert!(out.status.success(), "podman exec: {out:?}");
    }
}
