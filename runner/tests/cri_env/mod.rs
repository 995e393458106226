//! Helpers for tests/cri.rs: a private containerd 1.6 with its CRI plugin (temporary root,
//! state, sockets, config.toml and CNI configuration; no systemd) whose runtime handler
//! `runner` is this crate's binary under containerd's runc shim, the images it needs imported
//! offline, and a CRI v1 client on its socket.
//!
//! Self-contained (tests/common is for runner's own command line). Needs root, containerd, ctr,
//! containerd-shim-runc-v2, the CNI plugins (containernetworking-plugins), busybox-static and
//! iproute2; without them a test fails when `CI=true`, and otherwise says loudly that it skipped.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// The application image (scripts/build-demo-image.sh) and the pause image the CRI plugin
/// starts for each pod (the demo image with `sleep` as its entrypoint).
pub const DEMO_REF: &str = "docker.io/library/unionfs-demo:latest";
pub const PAUSE_REF: &str = "localhost/unionfs-pause:1";
/// Where Debian's containernetworking-plugins put the CNI plugins.
pub const CNI_BIN: &str = "/usr/lib/cni";
/// The standard PATH plus the sbin directories (mount helpers, ip).
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::split_paths(PATH)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    for (cmd, pkg) in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("containerd-shim-runc-v2", "containerd"),
        ("busybox", "busybox-static"),
        ("ip", "iproute2"),
    ] {
        if which(cmd).is_none() {
            return Some(format!("no {cmd} (apt-get install {pkg})"));
        }
    }
    for plugin in ["loopback", "host-device", "static"] {
        if !Path::new(CNI_BIN).join(plugin).is_file() {
            return Some(format!(
                "no CNI plugin {CNI_BIN}/{plugin} (apt-get install containernetworking-plugins)"
            ));
        }
    }
    None
}

/// True when the test can run. When it cannot: panics under `CI=true`, else prints why.
pub fn can_run(test: &str) -> bool {
    match missing_prerequisite() {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: cannot run here ({why}) and CI=true: failing, not skipping")
        }
        Some(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: cannot run here ({why}); CI=true makes this a failure"
            );
            false
        }
    }
}

/// Polls `f` every 100 ms until it gives `Some`, or panics after `timeout` saying `what`.
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
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// stdout of a command that must have succeeded.
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

/// A binary of another package of the workspace: next to runner, else built with cargo in a
/// target dir of its own (`cargo test -p runner` builds only runner's).
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    let runner = PathBuf::from(env!("CARGO_BIN_EXE_runner"));
    let dir = runner.parent().unwrap();
    if dir.join(bin).is_file() {
        return dir.join(bin);
    }
    let target = dir.parent().unwrap().join("runner-tests-cri-tools");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", package, "--bin", bin, "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build -p {package} --bin {bin}");
    target.join("debug").join(bin)
}

fn layer_tool() -> PathBuf {
    workspace_bin("layer-tool", "layer-tool")
}

/// PATH with the unionfs binary's directory first: containerd performs a `fuse3.unionfs` mount
/// with mount.fuse3, which runs `unionfs` from PATH.
pub fn path_with_unionfs() -> String {
    let unionfs = workspace_bin("unionfs", "unionfs");
    format!("{}:{PATH}", unionfs.parent().unwrap().display())
}

/// unionfs-snapshotter serving `socket`, its snapshots under `root`; stopped on drop.
pub struct Snapshotter {
    pub socket: PathBuf,
    child: Child,
}

impl Snapshotter {
    pub fn start(socket: &Path, root: &Path, log: &Path) -> Snapshotter {
        let log = fs::File::create(log).unwrap();
        let mut child = Command::new(workspace_bin("snapshotter", "unionfs-snapshotter"))
            .arg(socket)
            .arg(root)
            .env("PATH", path_with_unionfs())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("the snapshotter's socket", Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("unionfs-snapshotter exited: {status}");
            }
            socket.exists().then_some(())
        });
        Snapshotter {
            socket: socket.to_path_buf(),
            child,
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// OCI archives of the demo and pause images (`layer-tool export`), built once into cargo's
/// test scratch directory: (demo.tar, pause.tar).
pub fn image_archives() -> &'static (PathBuf, PathBuf) {
    static ARCHIVES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ARCHIVES.get_or_init(|| {
        let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cri-images-v1");
        let (demo, pause) = (scratch.join("demo.tar"), scratch.join("pause.tar"));
        if demo.is_file() && pause.is_file() {
            return (demo, pause);
        }
        fs::create_dir_all(&scratch).unwrap();
        let work = tempfile::Builder::new()
            .prefix("staging")
            .tempdir_in(&scratch)
            .unwrap();
        let store = work.path().join("store");
        let tool = layer_tool();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let run = |what: &str, cmd: &mut Command| {
            ok(what, cmd.env("UNIONFS_STORE", &store).output().unwrap())
        };
        run(
            "scripts/build-demo-image.sh",
            Command::new("bash")
                .arg(repo.join("scripts/build-demo-image.sh"))
                .env("LAYER_TOOL", &tool),
        );
        let pause_dir = work.path().join("pause-layer/etc");
        fs::create_dir_all(&pause_dir).unwrap();
        fs::write(
            pause_dir.join("pause"),
            "the pause image: sleeps until killed\n",
        )
        .unwrap();
        run(
            "layer-tool build pause",
            Command::new(&tool)
                .arg("build")
                .arg(work.path().join("pause-layer"))
                .args([
                    "--name",
                    "pause",
                    "--base",
                    "demo",
                    "--entrypoint",
                    "/bin/sleep 2147483647",
                    "--cmd",
                    "[]",
                ]),
        );
        for (image, reference, out) in [("demo", DEMO_REF, &demo), ("pause", PAUSE_REF, &pause)] {
            let staging = work.path().join(format!("{image}.tar"));
            run(
                "layer-tool export",
                Command::new(&tool)
                    .args(["export", image, "-o"])
                    .arg(&staging)
                    .args(["--ref", reference]),
            );
            fs::rename(&staging, out).unwrap();
        }
        (demo, pause)
    })
}

/// A private containerd with the CRI plugin, `runner` registered as runtime handler.
pub struct CriContainerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The veth end the pod's CNI network moves into the pod as eth0.
    pub netdev: String,
    /// The cgroup parent pods of this test get (the kubelet's choice on a node), relative to
    /// each hierarchy's root.
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl CriContainerd {
    /// Starts containerd with a config.toml under `dir`. The CRI plugin's snapshotter is
    /// overlayfs, or with `unionfs` the unionfs-snapshotter serving that socket (declared as
    /// the proxy plugin `unionfs`).
    pub fn start(dir: &Path, unionfs: Option<&Path>) -> CriContainerd {
        let (snapshotter, extra, path) = match unionfs {
            None => ("overlayfs", String::new(), PATH.to_string()),
            Some(socket) => (
                "unionfs",
                format!(
                    "[proxy_plugins.unionfs]\n  type = \"snapshot\"\n  address = \"{}\"\n",
                    socket.display()
                ),
                path_with_unionfs(),
            ),
        };
        fs::create_dir_all(dir.join("cni")).unwrap();
        // Names unique per test of this process (tests run in parallel): an interface name
        // has at most 15 bytes.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let netdev = format!("ufcri{}{n}", pid % 100_000);
        // The pod's network. CRI 1.6 sets `lo` up itself (the loopback plugin) and then wants
        // an address on the pod's eth0 from the configured network: a loopback-only
        // configuration fails RunPodSandbox with "failed to find network info for sandbox".
        // host-device moves one end of a veth pair made for this test into the pod's network
        // namespace as eth0 (and back on teardown): no bridge, route or address on the host.
        let _ = Command::new("ip").args(["link", "del", &netdev]).output();
        ok(
            "ip link add",
            Command::new("ip")
                .args([
                    "link",
                    "add",
                    &netdev,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &format!("{netdev}p"),
                ])
                .output()
                .unwrap(),
        );
        let octet = (pid + n) % 250 + 1;
        fs::write(
            dir.join("cni/10-unionfs-test.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "unionfs-test", "plugins": [
  {{"type": "host-device", "device": "{netdev}",
    "ipam": {{"type": "static", "addresses": [{{"address": "10.254.{octet}.2/24"}}]}}}}
]}}"#
            ),
        )
        .unwrap();
        let d = dir.display();
        let runner = env!("CARGO_BIN_EXE_runner");
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
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_REF}"
  # Without CAP_SYS_RESOURCE a runtime may not lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    # Declaring a runtime replaces the default table: runc stays the default handler.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runner]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runner.options]
        BinaryName = "{runner}"
{extra}"#
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut c = CriContainerd {
            dir: dir.to_path_buf(),
            socket: dir.join("containerd.sock"),
            netdev,
            cgroup_parent: format!("/unionfs-cri-{pid}-{n}"),
            child: Some(child),
        };
        wait_for("containerd to answer", Duration::from_secs(60), || {
            if let Some(Ok(Some(status))) = c.child.as_mut().map(|ch| ch.try_wait()) {
                panic!("containerd exited ({status}): {}", c.log());
            }
            c.ctr(&["version"]).status.success().then_some(())
        });
        c
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr -a SOCKET -n k8s.io ARGS...` (the CRI plugin's namespace).
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        ok(&format!("ctr {}", args.join(" ")), self.ctr(args))
    }

    /// CRI v1 clients on containerd's socket.
    pub async fn clients(&self) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
        let socket = self.socket.clone();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        (
            RuntimeServiceClient::new(channel.clone()),
            ImageServiceClient::new(channel),
        )
    }

    /// Kills and deletes every task and container left in the CRI namespace (no shim outlives
    /// this containerd), stops containerd, deletes the test's network device.
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
        let _ = child.wait();
    }
}

impl Drop for CriContainerd {
    /// After a failed test too: what the CRI plugin would have removed with the pod (its shm
    /// and network namespace mounts, the pod's network namespace holding our veth end, the
    /// cgroup parent) goes, so that a failure leaves nothing on a shared host.
    fn drop(&mut self) {
        self.stop();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut ours: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&dir))
            .collect();
        ours.reverse();
        for m in ours {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        // host-device keeps the device's host name as its alias inside the pod.
        let alias = format!("alias {}\n", self.netdev);
        for ns in fs::read_dir("/var/run/netns")
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = ns.file_name().to_string_lossy().into_owned();
            let links = Command::new("ip")
                .args(["-n", &name, "-d", "link", "show"])
                .output();
            if links.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&alias)) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.netdev])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}p", self.netdev)])
            .output();
        remove_cgroup_tree(self.cgroup_parent.trim_start_matches('/'));
    }
}

/// What the host still has of `id`: mounts, cgroup directories and processes naming it.
pub fn leftovers(id: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(id))
        .map(|l| format!("mount: {l}"))
        .collect();
    out.extend(
        cgroups_under(Path::new("/sys/fs/cgroup"), 6)
            .into_iter()
            .filter(|p| p.contains(id))
            .map(|p| format!("cgroup: {p}")),
    );
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

/// Directories under `root`, at most `depth` levels down.
pub fn cgroups_under(root: &Path, depth: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, d)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path().display().to_string());
                if d + 1 < depth {
                    stack.push((e.path(), d + 1));
                }
            }
        }
    }
    out
}

/// Removes the (empty) cgroup directories `name` directly under /sys/fs/cgroup and under each
/// v1 controller, children first: the pod's cgroup parent, which the kubelet would own.
fn remove_cgroup_tree(name: &str) {
    let mut roots = vec![Path::new("/sys/fs/cgroup").join(name)];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path().join(name)));
    }
    for root in roots.into_iter().filter(|r| r.is_dir()) {
        let mut dirs = vec![root];
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

/// What the CRI streaming server sent on each channel of the Kubernetes WebSocket channel
/// protocol (`v4.channel.k8s.io`: every binary message starts with its channel, 0 stdin,
/// 1 stdout, 2 stderr, 3 the final status), read from `url` (as `Exec` or `Attach` answer it)
/// until the server closes the stream or `enough` says so.
pub async fn stream(url: &str, enough: impl Fn(&[Vec<u8>; 4]) -> bool) -> [Vec<u8>; 4] {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("WebSocket to {ws_url}: {e}"));
    let mut out: [Vec<u8>; 4] = Default::default();
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Binary(b)) => {
                if let Some((&channel, data)) = b.split_first() {
                    if let Some(buf) = out.get_mut(usize::from(channel)) {
                        buf.extend_from_slice(data);
                    }
                }
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(e) => panic!("reading {ws_url}: {e}"),
        }
        if enough(&out) {
            break;
        }
    }
    out
}
