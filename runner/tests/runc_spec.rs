//! Bundles as another tool writes them: `runc spec` (Debian package `runc`), unmodified apart
//! from `process.args`, `process.terminal` and the root (a copy of the test image's busybox
//! layer). runner must run them as runc does; the same bundle is also run by runc itself and
//! what the two containers see is compared.
//!
//! Real containers: root, /dev/fuse, busybox-static and `runc` are needed; under `CI=true` a
//! missing prerequisite fails the test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{can_run, unionfs_bin, Run};
use serde_json::{json, Value};

/// `runc` from PATH; when missing, fails under `CI=true` and says that it skipped otherwise.
fn runc(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("runc"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let why = "no runc binary (apt-get install runc)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {why} and CI=true: failing, not skipping");
        }
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    }
    found
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("runner-runc-spec")
                .tempdir()
                .unwrap(),
        }
    }

    /// A bundle as `runc spec` writes it, with `args`, `terminal: false` and a private copy of
    /// the test image's base layer as `rootfs` (runc spec's `root.path`).
    fn bundle(&self, runc: &Path, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new(runc)
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "runc spec: {out:?}");
        common::copy_base_layer(&dir.join("rootfs"));
        let path = dir.join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(config["root"]["path"], "rootfs", "runc spec's root.path");
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        dir
    }

    /// Run `bin --root ROOT ARGS…` to completion, its output in files ([`Run::to_files`]).
    fn run(&self, bin: &Path, root: &str, args: &[&str]) -> Run {
        let mut cmd = Command::new(bin);
        cmd.arg("--root")
            .arg(self.dir.path().join(root))
            .args(args)
            .env("UNIONFS_BIN", unionfs_bin().expect("checked by can_run"))
            .stdin(Stdio::null());
        Run::to_files(cmd)
    }
}

fn runner_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runner"))
}

/// What a container reports about itself: hostname, capability sets, no_new_privs, seccomp,
/// its open-files limit, user, and whether its root is read-only.
const PROBE: &str = "hostname; grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status; \
                     ulimit -n; id -u; touch /x 2>&1 | grep -o 'Read-only'";

#[test]
fn run_takes_a_runc_spec_bundle_and_the_container_sees_what_runcs_does() {
    let Some(runc) = runc("runc spec run") else {
        return;
    };
    if !can_run("runc spec run") {
        return;
    }
    let s = Scratch::new();
    let bundle = s.bundle(&runc, "run", &["sh", "-c", PROBE]);
    let b = bundle.to_str().unwrap();
    let ours = s.run(
        &runner_bin(),
        "runner",
        &["run", "--bundle", b, "runc-spec-run"],
    );
    assert_eq!(ours.code, 0, "runner: {ours:?}");
    // runc spec lists its capabilities as ambient but not inheritable: the kernel refuses to
    // raise them, and the runtime-spec says to go on without them.
    assert!(
        ours.stderr.contains("ambient") && ours.stderr.contains("not granted"),
        "the skipped ambient capabilities are reported: {ours:?}"
    );
    let lines: Vec<&str> = ours.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("runc"),
        "runc spec's hostname: {ours:?}"
    );
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} in {ours:?}"))
    };
    // CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE.
    let three = format!("{:016x}", (1u64 << 29) | (1 << 5) | (1 << 10));
    assert_eq!(field("CapEff:"), three);
    assert_eq!(field("CapBnd:"), three);
    assert_eq!(field("CapAmb:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert!(lines.contains(&"1024"), "RLIMIT_NOFILE: {ours:?}");
    assert!(lines.contains(&"Read-only"), "root.readonly: {ours:?}");

    // The same bundle under runc (its own state root): the container sees the same.
    let rootfs_state = fs::read_dir(bundle.join("rootfs")).unwrap().count();
    let theirs = s.run(&runc, "runc", &["run", "--bundle", b, "runc-spec-run-runc"]);
    assert_eq!(theirs.code, 0, "runc: {theirs:?}");
    assert_eq!(ours.stdout, theirs.stdout, "runner and runc disagree");
    assert_eq!(
        fs::read_dir(bundle.join("rootfs")).unwrap().count(),
        rootfs_state
    );
}

#[test]
fn create_start_state_kill_delete_on_a_runc_spec_bundle() {
    let Some(runc) = runc("runc spec lifecycle") else {
        return;
    };
    if !can_run("runc spec lifecycle") {
        return;
    }
    let s = Scratch::new();
    let bundle = s.bundle(&runc, "life", &["sleep", "1000"]);
    let b = bundle.to_str().unwrap();
    let runner = runner_bin();
    let id = "runc-spec-life";
    let state = |want: &str| -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = s.run(&runner, "runner", &["state", id]);
            let v: Value = serde_json::from_str(out.ok())
                .unwrap_or_else(|e| panic!("state is not JSON ({e}): {out:?}"));
            if v["status"] == want {
                return v;
            }
            assert!(Instant::now() < deadline, "never {want}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    s.run(&runner, "runner", &["create", "--bundle", b, id])
        .ok();
    let created = state("created");
    assert_eq!(created["bundle"], b);
    assert_eq!(created["ociVersion"], "1.2.0");
    let pid = created["pid"].as_i64().unwrap();
    s.run(&runner, "runner", &["start", id]).ok();
    state("running");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\x001000\x00");
    // runc spec's namespaces, including the cgroup one (runc 1.1 writes none; newer ones do).
    let spec: Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    for ns in spec["linux"]["namespaces"].as_array().unwrap() {
        let name = match ns["type"].as_str().unwrap() {
            "network" => "net",
            "mount" => "mnt",
            other => other,
        };
        let ours = fs::read_link(format!("/proc/{pid}/ns/{name}")).unwrap();
        let host = fs::read_link(format!("/proc/self/ns/{name}")).unwrap();
        assert_ne!(ours, host, "a new {name} namespace");
    }
    s.run(&runner, "runner", &["kill", id, "KILL"]).ok();
    state("stopped");
    s.run(&runner, "runner", &["delete", id]).ok();
    let gone = s.run(&runner, "runner", &["state", id]);
    assert!(
        gone.code != 0 && gone.stderr.contains("does not exist"),
        "{gone:?}"
    );
    assert_eq!(
        common::leftovers(id)
            .into_iter()
            .filter(|l| !l.starts_with("process"))
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
}
