//! A private containerd (its own root, state, sockets and config.toml under a temporary
//! directory; no systemd), a unionfs-snapshotter daemon to plug into it, and the demo image as
//! an OCI archive to import offline.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{path_with_unionfs, which};

/// The reference the demo image is imported under.
pub const DEMO_REF: &str = "docker.io/library/unionfs-demo:latest";

/// Why containerd tests cannot run here, if they cannot (beyond `super::can_run`'s reasons).
pub fn missing() -> Option<String> {
    for (cmd, pkg) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("runc", "runc"),
        ("busybox", "busybox-static"),
    ] {
        if which(cmd).is_none() {
            return Some(format!("no {cmd} (apt-get install {pkg})"));
        }
    }
    None
}

/// The config lines that make the snapshotter on `socket` containerd's proxy plugin `unionfs`
/// (the CRI plugin off: these tests drive containerd through ctr only).
pub fn proxy_config(socket: &Path) -> String {
    format!(
        r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]
[proxy_plugins.unionfs]
  type = "snapshot"
  address = "{}"
"#,
        socket.display()
    )
}

/// Polls `f` every 50 ms until it gives `Some`, or panics after `timeout` saying `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A finished command: status, stdout, stderr, and a readable panic when it failed.
#[track_caller]
pub fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A binary of this workspace: next to the snapshotter's, else built in a target dir of our own.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_unionfs-snapshotter"));
    let dir = me.parent().unwrap();
    if dir.join(bin).is_file() {
        return dir.join(bin);
    }
    let target = dir.parent().unwrap().join("snapshotter-tests-tools");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", bin, "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p {package}");
    target.join("debug").join(bin)
}

/// The demo image (scripts/build-demo-image.sh, in a private store) exported by `layer-tool
/// export` as an OCI archive named [`DEMO_REF`]; built once into cargo's test scratch directory.
pub fn demo_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("snapshotter-demo-v1");
        let archive = scratch.join("demo.tar");
        if archive.is_file() {
            return archive;
        }
        fs::create_dir_all(&scratch).unwrap();
        let store = tempfile::Builder::new()
            .prefix("demo-store")
            .tempdir_in(&scratch)
            .unwrap();
        let layer_tool = workspace_bin("layer-tool", "layer-tool");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        ok(
            "scripts/build-demo-image.sh",
            Command::new("bash")
                .arg(repo.join("scripts/build-demo-image.sh"))
                .env("UNIONFS_STORE", store.path())
                .env("LAYER_TOOL", &layer_tool)
                .output()
                .unwrap(),
        );
        let staging = scratch.join(format!("staging-{}.tar", std::process::id()));
        ok(
            "layer-tool export",
            Command::new(&layer_tool)
                .args(["export", "demo", "-o"])
                .arg(&staging)
                .args(["--ref", DEMO_REF])
                .env("UNIONFS_STORE", store.path())
                .output()
                .unwrap(),
        );
        fs::rename(&staging, &archive).unwrap();
        archive
    })
}

/// A command that runs a program: the program named, with the environment it needs. The root
/// tests run programs directly; the rootless test runs them as its user, inside rootlesskit's
/// namespaces (`nsenter`).
pub type Launch = Box<dyn Fn(&Path) -> Command>;

/// Runs `program` directly, with `PATH` = [`path_with_unionfs`].
pub fn direct() -> Launch {
    Box::new(|program| {
        let mut c = Command::new(program);
        c.env("PATH", path_with_unionfs());
        c
    })
}

/// A unionfs-snapshotter daemon serving `socket` with its snapshots under `root`.
pub struct SnapshotterDaemon {
    pub socket: PathBuf,
    pub root: PathBuf,
    log: PathBuf,
    binary: PathBuf,
    launch: Launch,
    child: Option<Child>,
}

impl SnapshotterDaemon {
    pub fn start(socket: &Path, root: &Path, log: &Path) -> SnapshotterDaemon {
        let binary = PathBuf::from(env!("CARGO_BIN_EXE_unionfs-snapshotter"));
        SnapshotterDaemon::start_with(socket, root, log, &binary, direct())
    }

    /// Starts `binary` through `launch` (whose process must be the daemon itself: signals go to
    /// it).
    pub fn start_with(
        socket: &Path,
        root: &Path,
        log: &Path,
        binary: &Path,
        launch: Launch,
    ) -> SnapshotterDaemon {
        let mut d = SnapshotterDaemon {
            socket: socket.to_path_buf(),
            root: root.to_path_buf(),
            log: log.to_path_buf(),
            binary: binary.to_path_buf(),
            launch,
            child: None,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let _ = fs::remove_file(&self.socket);
        let mut child = (self.launch)(&self.binary)
            .arg(&self.socket)
            .arg(&self.root)
            .env("RUST_LOG", "snapshotter=debug,unionfs_snapshotter=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let socket = self.socket.clone();
        wait_for("the snapshotter's socket", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "unionfs-snapshotter exited ({status}): {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            socket.exists().then_some(())
        });
        self.child = Some(child);
    }

    /// SIGTERM, wait for it to exit 0 (it removes its socket), start it again on the same root.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            !self.socket.exists(),
            "a stopped snapshotter leaves its socket"
        );
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "unionfs-snapshotter on SIGTERM: {status}");
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The snapshotter's own metadata (`ROOT/metadata.json`): backend key -> (id, kind).
    pub fn records(&self) -> Vec<(String, u64, String)> {
        let text = fs::read_to_string(self.root.join("metadata.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["snapshots"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, r)| {
                (
                    k.clone(),
                    r["id"].as_u64().unwrap(),
                    r["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The tree of the snapshot whose containerd key is `key` (containerd prefixes the keys
    /// it gives a proxy snapshotter with `NAMESPACE/N/`).
    pub fn tree_of(&self, key: &str) -> PathBuf {
        let suffix = format!("/{key}");
        let found: Vec<_> = self
            .records()
            .into_iter()
            .filter(|(k, _, _)| k.ends_with(&suffix))
            .collect();
        assert_eq!(found.len(), 1, "snapshot {key}: {found:?}");
        self.root
            .join("snapshots")
            .join(found[0].1.to_string())
            .join("fs")
    }
}

impl Drop for SnapshotterDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private containerd.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub namespace: String,
    /// How `ctr` is run.
    ctr: Launch,
    child: Option<Child>,
    exit: Option<std::process::ExitStatus>,
}

impl Containerd {
    /// Starts containerd with `extra` appended to a config.toml that puts everything under
    /// `dir`; `PATH` is `path` (mount.fuse3 runs `unionfs` from it).
    pub fn start(dir: &Path, extra: &str, path: OsString) -> Containerd {
        let ctr_path = path.clone();
        Containerd::start_with(
            dir,
            extra,
            move |config: &Path| {
                let mut c = Command::new("containerd");
                c.arg("--config").arg(config).env("PATH", &path);
                c
            },
            Box::new(move |program| {
                let mut c = Command::new(program);
                c.env("PATH", &ctr_path);
                c
            }),
        )
    }

    /// Writes the config.toml of [`Containerd::start`] and runs `daemon(CONFIG)`, whose process
    /// is signalled to stop containerd (containerd itself, or rootlesskit which forwards the
    /// signal); `ctr` runs `ctr`.
    pub fn start_with(
        dir: &Path,
        extra: &str,
        daemon: impl FnOnce(&Path) -> Command,
        ctr: Launch,
    ) -> Containerd {
        fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
# A collection after every deletion: by default containerd waits an interval that grows with
# its last collection's duration (pause_threshold 2%), which on a loaded machine outlasts the
# tests' waits for removed snapshots to leave the snapshotter.
[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
{extra}"#
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = daemon(&dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut c = Containerd {
            dir: dir.to_path_buf(),
            socket: dir.join("containerd.sock"),
            namespace: format!("unionfs-test-{}", std::process::id()),
            ctr,
            child: Some(child),
            exit: None,
        };
        wait_for("containerd to answer", Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                panic!("containerd exited ({status}): {}", c.log());
            }
            c.ctr(&["version"]).status.success().then_some(())
        });
        c
    }

    /// The process started to run containerd, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCKET -n NAMESPACE ARGS...`
    pub fn ctr(&self, args: &[&str]) -> Output {
        (self.ctr)(Path::new("ctr"))
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `ctr ARGS...`, which must succeed; its stdout.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        ok(&format!("ctr {}", args.join(" ")), self.ctr(args))
    }

    /// Kills and deletes every task and container of our namespace (so that no shim outlives
    /// this containerd), then stops containerd.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let tasks = String::from_utf8_lossy(&self.ctr(&["tasks", "ls", "-q"]).stdout).into_owned();
        for id in tasks.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
        }
        let containers =
            String::from_utf8_lossy(&self.ctr(&["containers", "ls", "-q"]).stdout).into_owned();
        for id in containers.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["containers", "rm", id]);
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = child.wait();
        self.exit = status.ok();
    }

    /// How containerd's process ended, once [`Containerd::stop`] has stopped it.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.exit
    }
}

impl Containerd {
    /// The cgroup directories containerd made for our namespace (`/sys/fs/cgroup[/CONTROLLER]/
    /// NAMESPACE`): one per controller, and whatever is still below them.
    fn namespace_cgroups(&self) -> Vec<std::path::PathBuf> {
        let mut roots = vec![Path::new("/sys/fs/cgroup").join(&self.namespace)];
        if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
            roots.extend(rd.flatten().map(|e| e.path().join(&self.namespace)));
        }
        roots.into_iter().filter(|p| p.is_dir()).collect()
    }

    /// Container cgroups still below our namespace's cgroup directories.
    pub fn cgroups_left(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ns in self.namespace_cgroups() {
            for e in fs::read_dir(&ns).unwrap().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path().display().to_string());
                }
            }
        }
        out
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // containerd leaves the namespace's own cgroup directories (empty once the containers'
        // are gone): remove them, children first.
        for ns in self.namespace_cgroups() {
            let mut dirs = vec![ns.clone()];
            let mut i = 0;
            while i < dirs.len() {
                if let Ok(rd) = fs::read_dir(&dirs[i]) {
                    dirs.extend(
                        rd.flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
                i += 1;
            }
            for d in dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        }
    }
}

/// Lines of /proc/self/mountinfo that mention `needle`.
pub fn mounts_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle.as_ref()))
        .map(String::from)
        .collect()
}

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle.as_ref()) {
                out.push(format!("{}: {cmdline}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}
