//! Attacks on the runtime from inside a container, played for real.
//!
//! CVE-2019-5736: a root process in a container hunts for the runtime's own
//! processes in its pid namespace, opens their `/proc/PID/exe` and tries to write the runtime's
//! binary through it, while the host runs `exec`, a `create`/`start` of a second container that
//! joins the first one's pid namespace, and `run --init`. The attacker
//! (`tests/attack/exe_overwrite.c`) is built static here. The runtime used is a private copy of
//! the binary, compared byte for byte afterwards. Also: a container's process that makes the
//! runtime its tracer (`PTRACE_TRACEME`) neither hangs nor escapes signals.
//!
//! Needs root, /dev/fuse, busybox-static and a C compiler with a static libc (`cc -static`:
//! Debian's gcc and libc6-dev); under `CI=true` a missing one fails the test.

mod common;

use std::fs;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::oci::Oci;
use common::{attacker_report as report, build_static, can_run, image, unionfs_bin, Run};
use serde_json::{json, Value};

/// The OCI helper on a private copy of the runtime, and that copy's bytes as they were.
struct Runtime {
    oci: Oci,
    original: Vec<u8>,
}

impl Runtime {
    fn new() -> Runtime {
        let oci = Oci::with_runtime_copy();
        let original = fs::read(&oci.bin).unwrap();
        Runtime { oci, original }
    }

    fn scratch(&self) -> &Path {
        self.oci.scratch.path()
    }

    fn run(&self, args: &[&str]) -> Run {
        self.oci.runtime(args)
    }

    /// A `runner spec` bundle (runc's default: a root process with only AUDIT_WRITE, KILL and
    /// NET_BIND_SERVICE) with `extra` files added at the root of its rootfs.
    fn bundle(
        &self,
        name: &str,
        args: &[&str],
        extra: &[&Path],
        edit: impl FnOnce(&mut Value),
    ) -> PathBuf {
        let dir = self.oci.bundle(name, args, edit);
        for f in extra {
            fs::copy(f, dir.join("rootfs").join(f.file_name().unwrap())).unwrap();
        }
        dir
    }

    fn pid(&self, id: &str) -> i64 {
        self.oci.state(id)["pid"].as_i64().unwrap()
    }

    fn wait_stopped(&self, id: &str) {
        self.oci.wait_status(id, "stopped");
    }

    #[track_caller]
    fn assert_binary_unchanged(&self) {
        let now = fs::read(&self.oci.bin).unwrap();
        assert!(
            now == self.original,
            "the runtime binary was changed from inside a container"
        );
    }
}

fn wait_for_file(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_and_a_pid_namespace_sharing_create_never_expose_the_runtime_binary() {
    if !can_run("exe attack: exec and create") {
        return;
    }
    let rt = Runtime::new();
    let Some(attacker) = build_static("exe_overwrite.c", rt.scratch()) else {
        return;
    };
    let a = rt.bundle(
        "a",
        &["/exe_overwrite", "120", "/tmp/ready", "/tmp/report"],
        &[&attacker],
        // Writable, for the attacker's report (runc's default root is read-only).
        |c| c["root"]["readonly"] = json!(false),
    );
    // Ids of this run only (they name cgroups, which other runs must not meet).
    let victim = &format!("victim-{}", std::process::id());
    let joiner = &format!("joiner-{}", std::process::id());
    rt.run(&["create", "--bundle", a.to_str().unwrap(), victim])
        .ok();
    rt.run(&["start", victim]).ok();
    wait_for_file(&a.join("rootfs/tmp/ready"), Duration::from_secs(10));

    // `runner exec`, over and over, while the attacker scans. A failure is kept for the end:
    // an overwritten runtime fails here, and the binary check below says why.
    let execs: Vec<Run> = (0..15)
        .map(|_| rt.run(&["exec", victim, "/bin/true"]))
        .collect();

    // A second container joining the first one's pid namespace: its process waits for `start`
    // in the attacker's sight.
    let victim_pid = rt.pid(victim);
    let b = rt.bundle("b", &["/bin/true"], &[], |c| {
        // The same root: its process runs the container's own /bin/true, no file of another.
        c["root"]["path"] = json!(a.join("rootfs"));
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
        ns.push(json!({"type": "pid", "path": format!("/proc/{victim_pid}/ns/pid")}));
    });
    rt.run(&["create", "--bundle", b.to_str().unwrap(), joiner])
        .ok();
    let joiner_pid = rt.pid(joiner);
    // It runs from a sealed view, not from the file on the host, and even the host's root
    // cannot write it through /proc/PID/exe.
    assert_sealed_exe(joiner_pid);
    std::thread::sleep(Duration::from_secs(2));
    rt.run(&["start", joiner]).ok();
    rt.wait_stopped(joiner);
    rt.run(&["delete", joiner]).ok();

    // Some more scanning while nothing runs, then the report (the attacker ends on SIGTERM).
    std::thread::sleep(Duration::from_secs(1));
    rt.run(&["kill", victim, "TERM"]).ok();
    rt.wait_stopped(victim);
    let text = fs::read_to_string(a.join("rootfs/tmp/report")).unwrap();
    rt.run(&["delete", victim]).ok();
    rt.assert_binary_unchanged();
    let (seen, opened, written) = report(&text);
    assert_eq!((opened, written), (0, 0), "the attacker got in: {text}");
    // It did see the runtime's processes (the joiner's, at least): the attack ran in time.
    assert!(seen >= 1, "the attacker saw no runtime process: {text}");
    for run in &execs {
        run.ok();
    }
}

/// The process runs from a view of the runtime that cannot be written (crate::exeseal):
/// a read-only overlayfs (root's zero-copy way) or a memfd with the write seals. Either way an
/// open for writing through `/proc/PID/exe`, here by the host's root, fails.
#[track_caller]
fn assert_sealed_exe(pid: i64) {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    let exe_file = fs::File::open(format!("/proc/{pid}/exe")).unwrap();
    let fs_type = nix::sys::statfs::fstatfs(&exe_file)
        .unwrap()
        .filesystem_type();
    if exe.to_string_lossy().starts_with("/memfd:") {
        let seals = nix::fcntl::fcntl(exe_file.as_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).unwrap();
        let needed =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & needed, needed, "seals {seals:#x}");
    } else {
        assert_eq!(
            fs_type,
            nix::sys::statfs::OVERLAYFS_SUPER_MAGIC,
            "the process runs from {} (neither a memfd nor an overlayfs view)",
            exe.display()
        );
        // A detached mount: neither the process's mount table nor ours lists it.
        let fdinfo = fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            std::os::fd::AsRawFd::as_raw_fd(&exe_file)
        ))
        .unwrap();
        let mnt_id = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .unwrap()
            .trim()
            .to_string();
        for table in [
            format!("/proc/{pid}/mountinfo"),
            "/proc/self/mountinfo".into(),
        ] {
            let info = fs::read_to_string(&table).unwrap();
            assert!(
                !info.lines().any(|l| l.split(' ').next() == Some(&mnt_id)),
                "mount {mnt_id} of the runtime's exe is listed in {table}"
            );
        }
    }
    let write = fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/exe"));
    let err = write.expect_err("the runtime's exe opened for writing");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::EROFS | libc::EPERM | libc::ETXTBSY)
        ),
        "opening the runtime's exe for writing: {err}"
    );
    let mut buf = Vec::new();
    fs::File::open(format!("/proc/{pid}/exe"))
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap();
    assert!(
        buf.starts_with(b"\x7fELF"),
        "the sealed view is not the binary"
    );
}

/// An image directory (the test image plus a layer holding `files` at its root).
fn image_with(dir: &Path, files: &[&Path]) -> PathBuf {
    let img = dir.join("image");
    let extra = img.join("layers/extra");
    fs::create_dir_all(&extra).unwrap();
    for f in files {
        fs::copy(f, extra.join(f.file_name().unwrap())).unwrap();
    }
    let mut json: Value =
        serde_json::from_slice(&fs::read(image().join("image.json")).unwrap()).unwrap();
    for layer in json["layers"].as_array_mut().unwrap() {
        let path = image().join(layer["path"].as_str().unwrap());
        layer["path"] = json!(path);
    }
    json["layers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"digest": format!("sha256:{}", "3".repeat(64)), "path": extra}));
    fs::write(img.join("image.json"), json.to_string()).unwrap();
    img
}

#[test]
fn the_init_reaper_never_exposes_the_runtime_binary() {
    if !can_run("exe attack: --init") {
        return;
    }
    let rt = Runtime::new();
    let Some(attacker) = build_static("exe_overwrite.c", rt.scratch()) else {
        return;
    };
    let img = image_with(rt.scratch(), &[&attacker]);
    let store = rt.scratch().join("store");
    let out = Command::new(&rt.oci.bin)
        .args(["run", "--rm", "--init"])
        .arg(&img)
        .args(["/exe_overwrite", "3"])
        .env("UNIONFS_STORE", &store)
        .env("UNIONFS_BIN", unionfs_bin().unwrap())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run::from(out);
    let (seen, opened, written) = report(run.ok());
    assert_eq!((opened, written), (0, 0), "the attacker got in: {run:?}");
    assert!(seen >= 1, "the attacker never saw the reaper: {run:?}");
    rt.assert_binary_unchanged();
}

#[test]
fn a_process_that_makes_the_runtime_its_tracer_neither_hangs_nor_escapes_signals() {
    if !can_run("PTRACE_TRACEME") {
        return;
    }
    let rt = Runtime::new();
    let Some(traceme) = build_static("traceme.c", rt.scratch()) else {
        return;
    };
    let img = image_with(rt.scratch(), &[&traceme]);
    let store = rt.scratch().join("store");
    let runner = |opts: &[&str], script: &str| {
        let mut cmd = Command::new(&rt.oci.bin);
        cmd.arg("run")
            .args(opts)
            .arg(&img)
            .args(["/traceme", "/bin/sh", "-c", script])
            .env("UNIONFS_STORE", &store)
            .env("UNIONFS_BIN", unionfs_bin().unwrap())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    // pid 1 (and, with --init, the reaper's child) calls PTRACE_TRACEME and then execve: it
    // stops for its tracer at once. The runtime must let it go on.
    for opts in [&["--rm"][..], &["--rm", "--init"][..]] {
        let child = runner(opts, "echo ran; exit 7");
        let out = wait_with_timeout(child, Duration::from_secs(20));
        assert_eq!(out.code, 7, "{opts:?}: {out:?}");
        assert_eq!(out.stdout, "traced\nran\n", "{opts:?}: {out:?}");
    }
    // And a SIGTERM to the runner still reaches a traced pid 1 that handles it.
    let child = runner(
        &["--rm"],
        "trap 'exit 9' TERM; echo up; while :; do sleep 0.1; done",
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stdout = child.stdout.as_ref().unwrap().try_clone_fd();
    let mut seen = String::new();
    while !seen.contains("up") {
        assert!(
            Instant::now() < deadline,
            "the container never started: {seen:?}"
        );
        let mut buf = [0u8; 64];
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "the container ended early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.code, 9, "{out:?}");
}

trait TryCloneFd {
    fn try_clone_fd(&self) -> fs::File;
}

impl TryCloneFd for std::process::ChildStdout {
    fn try_clone_fd(&self) -> fs::File {
        fs::File::from(self.as_fd().try_clone_to_owned().unwrap())
    }
}

/// Wait for `child`; kill it and fail when it takes longer than `within`.
fn wait_with_timeout(mut child: std::process::Child, within: Duration) -> Run {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Run::from(child.wait_with_output().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the runner hung: {:?}", Run::from(out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CVE-2019-19921's pattern: an image whose `/proc` is a symlink would have proc mounted where
/// it points, and the masks laid on `/proc/...` would miss it. Refused, as runc does.
#[test]
fn kernel_filesystems_are_never_mounted_through_a_symlink() {
    if !can_run("proc through a symlink") {
        return;
    }
    let rt = Runtime::new();
    for (fs_name, target) in [("proc", "proc"), ("sysfs", "sys")] {
        let bundle = rt.bundle(&format!("b-{fs_name}"), &["/bin/true"], &[], |_| {});
        let rootfs = bundle.join("rootfs");
        fs::remove_dir_all(rootfs.join(target)).unwrap();
        fs::create_dir_all(rootfs.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", rootfs.join(target)).unwrap();
        let id = format!("symlinked-{fs_name}-{}", std::process::id());
        let out = rt.run(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_ne!(out.code, 0, "{out:?}");
        assert!(
            out.stderr.contains(&format!(
                "filesystem \"{fs_name}\" must be mounted on ordinary directory"
            )),
            "{out:?}"
        );
        assert!(rt.run(&["state", &id]).stderr.contains("does not exist"));
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(rootfs.to_str().unwrap()), "{mounts}");
    }
}

/// The state root and each container's directory are the runtime's alone (0700, as runc's).
#[test]
fn state_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    if !can_run("state directory modes") {
        return;
    }
    let rt = Runtime::new();
    let bundle = rt.bundle("b", &["/bin/true"], &[], |_| {});
    let id = format!("private-{}", std::process::id());
    rt.run(&["create", "--bundle", bundle.to_str().unwrap(), &id])
        .ok();
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let state = rt.scratch().join("state");
    assert_eq!(mode(state.clone()), 0o700);
    assert_eq!(mode(state.join(&id)), 0o700);
    rt.run(&["delete", "--force", &id]).ok();
}
