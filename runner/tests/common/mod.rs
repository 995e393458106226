//! Helpers for the privileged tests: a busybox image built once per test binary, a private store
//! per test, and a runner invocation that captures everything.
//!
//! These tests start real containers. They need root, /dev/fuse, a static busybox
//! (`apt-get install busybox-static`) and the unionfs binary (built here when missing). Without
//! them a test fails when `CI=true`, and otherwise says loudly that it skipped.
#![allow(dead_code)]

pub mod oci;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const BUSYBOX: &str = "/bin/busybox";

/// Why the environment cannot run containers, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!("no {BUSYBOX} (apt-get install busybox-static)"));
    }
    if unionfs_bin().is_none() {
        return Some("no unionfs binary (cargo build -p unionfs)".into());
    }
    None
}

/// True when the test can run. When it cannot: panics under `CI=true`, else prints why.
pub fn can_run(test: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: cannot run containers here ({why}) and CI=true: failing, not skipping")
        }
        Some(why) => {
            // Straight to fd 2, past the test harness's capture: a skip is never silent.
            use std::io::Write;
            let name = std::thread::current().name().unwrap_or(test).to_string();
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {name}: cannot run containers here ({why}); CI=true makes this a failure"
            );
            false
        }
    }
}

/// `target/<profile>/unionfs`, built with cargo when it is not there yet.
pub fn unionfs_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("UNIONFS_BIN") {
            return Some(PathBuf::from(p));
        }
        let runner = PathBuf::from(env!("CARGO_BIN_EXE_runner"));
        let dir = runner.parent()?;
        let bin = dir.join("unionfs");
        if bin.is_file() {
            return Some(bin);
        }
        // `cargo test -p runner` does not build other packages' binaries. Build it in a target
        // dir of its own: the outer cargo may still hold the lock of ours.
        let target = dir.parent()?.join("runner-tests-unionfs");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "unionfs",
                "--bin",
                "unionfs",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .ok()?;
        let built = target.join("debug/unionfs");
        (status.success() && built.is_file()).then_some(built)
    })
    .clone()
}

/// A two-layer busybox image, built once into cargo's test scratch directory
/// (`CARGO_TARGET_TMPDIR`) and reused by later runs (a static is never dropped, so a temporary
/// directory would leak on every run): `base` has busybox, its applet links, /etc/passwd and
/// /etc/group, `/tmp` (1777) and `/etc/motd`; `top` adds `/etc/top-file` and whites out
/// `/etc/motd`'s sibling `/etc/base-only`.
pub fn image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let done = scratch.join("runner-test-image-v1");
        if done.join("image.json").is_file() {
            return done;
        }
        fs::create_dir_all(scratch).unwrap();
        let tmp = tempfile::Builder::new().prefix("runner-test-image-staging").tempdir_in(scratch).unwrap();
        {
            let dir = tmp.path().join("image");
            let base = dir.join("layers/base");
            let top = dir.join("layers/top");
            for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "proc", "sys", "dev"] {
                fs::create_dir_all(base.join(d)).unwrap();
            }
            fs::set_permissions(base.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
            fs::copy(BUSYBOX, base.join("bin/busybox")).unwrap();
            let list = Command::new(BUSYBOX).arg("--list-full").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                let link = base.join(applet);
                if applet == "bin/busybox" || link.exists() {
                    continue;
                }
                fs::create_dir_all(link.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink("/bin/busybox", &link).unwrap();
            }
            fs::write(
                base.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            )
            .unwrap();
            fs::write(base.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
            fs::write(base.join("etc/motd"), "from the base layer\n").unwrap();
            fs::write(base.join("etc/base-only"), "hidden by the top layer\n").unwrap();
            fs::create_dir_all(top.join("etc")).unwrap();
            fs::write(top.join("etc/top-file"), "from the top layer\n").unwrap();
            fs::write(top.join("etc/.wh.base-only"), "").unwrap();
            let json = serde_json::json!({
                "name": "runner-test",
                "layers": [
                    {"digest": format!("sha256:{}", "1".repeat(64)), "path": "layers/base"},
                    {"digest": format!("sha256:{}", "2".repeat(64)), "path": "layers/top"},
                ],
                "config": {"env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "cmd": ["/bin/sh"]},
            });
            fs::write(dir.join("image.json"), serde_json::to_string_pretty(&json).unwrap()).unwrap();
        }
        // Another test binary may have finished first: then keep its copy.
        if fs::rename(tmp.path().join("image"), &done).is_err() {
            assert!(done.join("image.json").is_file(), "cannot install {}", done.display());
        }
        done
    })
}

/// A private copy of the test image's base layer at `dir` (a bundle's `rootfs`: the runtime
/// makes mount points in it, and the shared image must stay untouched).
pub fn copy_base_layer(dir: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(image().join("layers/base"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a of the base layer to {}",
        dir.display()
    );
}

/// A private store (for containers and committed images) and helpers to run in it.
pub struct Env {
    pub store: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            store: tempfile::Builder::new()
                .prefix("runner-test-store")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runner"));
        cmd.args(args)
            .env("UNIONFS_STORE", self.store.path())
            .env("UNIONFS_BIN", unionfs_bin().expect("checked by can_run"))
            .stdin(Stdio::null());
        cmd
    }

    /// `runner ARGS…` to completion.
    pub fn runner(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("spawning runner");
        Run::from(out)
    }

    /// `runner run OPTS… IMAGE sh -c SCRIPT`.
    pub fn sh(&self, opts: &[&str], script: &str) -> Run {
        let image = image().to_str().unwrap();
        let mut args = vec!["run"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[image, "sh", "-c", script]);
        self.runner(&args)
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.store.path().join("containers")
    }

    /// Ids of the container directories in the store.
    pub fn container_ids(&self) -> Vec<String> {
        match fs::read_dir(self.containers_dir()) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() == 64)
                .collect(),
            Err(_) => vec![],
        }
    }
}

/// A finished runner.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        Run {
            code: out
                .status
                .code()
                .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Run `cmd` to completion with its output in files, not pipes: a created container's
    /// process inherits them (as with runc) and would hold a pipe open.
    pub fn to_files(mut cmd: Command) -> Run {
        use std::io::{Read, Seek};
        use std::os::unix::process::ExitStatusExt;
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let read = |mut f: fs::File| {
            f.rewind().unwrap();
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            s
        };
        Run {
            code: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// Assert success and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "runner failed: {self:#?}");
        &self.stdout
    }
}

/// Everything the host still has of container `id`: mounts, cgroup directories, processes whose
/// command line names it (the union daemon).
pub fn leftovers(id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    out.extend(
        mountinfo
            .lines()
            .filter(|l| l.contains(id))
            .map(|l| format!("mount: {l}")),
    );
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if p.to_string_lossy().contains(id) {
                    out.push(format!("cgroup: {}", p.display()));
                }
                if p.components().count() < 9 {
                    stack.push(p);
                }
            }
        }
    }
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(id) {
                out.push(format!(
                    "process {}: {cmdline}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}

/// `cc -static` of one of `tests/attack/*.c` into `dir`; None (after saying why, or failing
/// under CI=true) when there is no compiler.
pub fn build_static(source: &str, dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/attack")
        .join(source);
    let out = dir.join(source.trim_end_matches(".c"));
    let built = Command::new("cc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .output();
    match built {
        Ok(o) if o.status.success() => Some(out),
        other => {
            let why = format!("cc -static {} failed: {other:?}", src.display());
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{why} and CI=true"
            );
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// The report of `tests/attack/exe_overwrite.c`: (seen, opened, written).
pub fn attacker_report(text: &str) -> (u64, u64, u64) {
    let line = text
        .lines()
        .find(|l| l.starts_with("seen="))
        .unwrap_or_else(|| panic!("no report from the attacker: {text:?}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad report {line:?}"))
    };
    (field("seen="), field("opened="), field("written="))
}
