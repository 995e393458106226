//! Rootless containerd: an ordinary user (created here, with subordinate ids) runs containerd
//! inside rootlesskit (its own user, mount and network namespaces, as nerdctl's
//! containerd-rootless.sh does), starts unionfs-snapshotter in the same namespaces with
//! `nsenter` (as fuse-overlayfs-snapshotter's docs do), imports the demo image into it and runs
//! containers on `fuse.unionfs` roots, with Debian's runc and with this project's runner. In that
//! user namespace, which owns the mount namespace, mount.fuse3 runs `unionfs`, which mounts FUSE
//! itself (no fusermount3), `allow_other` included.
//!
//! Also: an ordinary user outside any user namespace mounts through fusermount3, which refuses
//! the snapshotter's `allow_other` without `user_allow_other`; the snapshotter's start check says
//! so instead of failing on the first container.

mod common;
#[path = "../../unionfs/tests/common/unprivileged.rs"]
mod unprivileged;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::time::Duration;

use common::containerd::{
    demo_archive, mounts_mentioning, proxy_config, wait_for, workspace_bin, Containerd, Launch,
    SnapshotterDaemon, DEMO_REF,
};
use unprivileged::{Session, UserDir};

/// The first of `commands` (name, Debian package) that is not installed, if any.
fn missing_of(commands: &[(&str, &str)]) -> Option<String> {
    commands
        .iter()
        .find(|(cmd, _)| common::which(cmd).is_none())
        .map(|(cmd, pkg)| format!("no {cmd} (apt-get install {pkg})"))
}

/// What running a command as the test's user needs.
const USER_TOOLS: &[(&str, &str)] = &[("setpriv", "util-linux"), ("useradd", "passwd")];

/// What rootless containerd needs beyond containerd itself.
const ROOTLESS_TOOLS: &[(&str, &str)] = &[
    ("rootlesskit", "rootlesskit"),
    ("newuidmap", "uidmap"),
    ("slirp4netns", "slirp4netns"),
    ("nsenter", "util-linux"),
];

fn can_run(test: &str) -> bool {
    common::can_run(test)
        && common::can_run_with(test, missing_of(USER_TOOLS))
        && common::can_run_with(test, common::containerd::missing())
        && common::can_run_with(test, missing_of(ROOTLESS_TOOLS))
}

/// The start of the test user's range in /etc/subuid (rootlesskit maps 1.. of its namespace
/// there).
fn subuid_start() -> u32 {
    fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == unprivileged::USER).then(|| f[1].parse().unwrap())
        })
        .expect("the test user's subordinate range")
}

/// The user's side of the node: its directories, the binaries it runs, and where rootlesskit
/// keeps its state.
struct UserNode {
    s: Rc<Session>,
    d: UserDir,
    bin: PathBuf,
    home: PathBuf,
    run: PathBuf,
    data: PathBuf,
}

impl UserNode {
    fn new(s: Rc<Session>) -> UserNode {
        let d = s.user_dir("snapshotter-rootless");
        // target/ may be unreachable for the user: copies in a directory it can read.
        let unionfs = common::unionfs_dir().unwrap().join("unionfs");
        let bin = s
            .reachable_binary(&d.dir, unionfs.to_str().unwrap())
            .parent()
            .unwrap()
            .to_path_buf();
        s.reachable_binary(&d.dir, env!("CARGO_BIN_EXE_unionfs-snapshotter"));
        let runner = workspace_bin("runner", "runner");
        s.reachable_binary(&d.dir, runner.to_str().unwrap());
        let (home, run, data) = (d.path("home"), d.path("run"), d.path("data"));
        for dir in [&home, &run, &data] {
            fs::create_dir_all(dir).unwrap();
            unprivileged::chown_r(dir, &s.user);
        }
        UserNode {
            s,
            d,
            bin,
            home,
            run,
            data,
        }
    }

    /// `PATH` for the user's daemons: mount.fuse3 runs `unionfs` from it.
    fn path(&self) -> String {
        format!(
            "{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            self.bin.display()
        )
    }

    /// `program` as the user, with HOME, XDG_RUNTIME_DIR and PATH of its own.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.s.command(program);
        c.env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.run)
            .env("PATH", self.path());
        c
    }

    fn rootlesskit_state(&self) -> PathBuf {
        self.run.join("rootlesskit-containerd")
    }

    /// `program` as the user in rootlesskit's namespaces (user, mount, network), once rootlesskit
    /// has written its child's pid. nsenter execs it: the process is the one we signal.
    fn in_namespaces(&self) -> Launch {
        let s = Rc::clone(&self.s);
        let child_pid = self.rootlesskit_state().join("child_pid");
        let (home, run, path) = (self.home.clone(), self.run.clone(), self.path());
        Box::new(move |program| {
            let pid = wait_for("rootlesskit's child_pid", Duration::from_secs(60), || {
                fs::read_to_string(&child_pid)
                    .ok()
                    .filter(|p| !p.trim().is_empty())
            });
            let mut c = s.command("nsenter");
            c.args(["-U", "--preserve-credentials", "-m", "-n", "-t", pid.trim()])
                .arg(program)
                .env("HOME", &home)
                .env("XDG_RUNTIME_DIR", &run)
                .env("PATH", &path);
            c
        })
    }

    /// containerd in rootlesskit, its config with the proxy plugin `unionfs` on `snap_socket`,
    /// everything of it under the user's directory.
    fn start_containerd(&self, snap_socket: &Path) -> Containerd {
        let dir = self.d.path("containerd");
        fs::create_dir_all(&dir).unwrap();
        unprivileged::chown_r(&dir, &self.s.user);
        let extra = proxy_config(snap_socket);
        let rootlesskit = |config: &Path| {
            let mut c = self.command("rootlesskit");
            c.arg(format!(
                "--state-dir={}",
                self.rootlesskit_state().display()
            ))
            .args([
                "--net=slirp4netns",
                "--disable-host-loopback",
                // Writable /etc, /run, /var/lib in the namespace (symlinks to the host's files on
                // a tmpfs): ctr's fifos go to /run/containerd, the shim's state to /run.
                "--copy-up=/etc",
                "--copy-up=/run",
                "--copy-up=/var/lib",
                "--propagation=rslave",
                "sh",
                "-c",
                // The copied-up symlinks to the host's containerd directories would lead out of
                // the user's reach: drop them (the host's directories are untouched).
                "rm -f /run/containerd /var/lib/containerd /etc/containerd; exec containerd --config \"$1\"",
                "sh",
            ])
            .arg(config);
            c
        };
        Containerd::start_with(&dir, &extra, rootlesskit, self.in_namespaces())
    }
}

/// Kills, when dropped, whatever of the user's processes a failed test left (daemons of its
/// namespaces hold them, and their mounts, alive). Declared before the daemons, dropped after.
struct KillLeftovers {
    uid: u32,
    subuids: std::ops::Range<u32>,
}

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for p in unprivileged::processes_of(self.uid, self.subuids.start, self.subuids.end) {
            if let Some(Ok(pid)) = p.split(' ').next().map(str::parse::<i32>) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Every file under `dir` with its size, mode, owner and mtime, to see a layer unchanged.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            out.push(format!(
                "{} {} {:o} {}:{} {}",
                e.path().strip_prefix(dir).unwrap().display(),
                m.len(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime()
            ));
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The trees of the committed snapshots (the image's layers).
fn layer_trees(snap: &SnapshotterDaemon) -> Vec<PathBuf> {
    snap.records()
        .into_iter()
        .filter(|r| r.2 == "committed")
        .map(|r| snap.root.join("snapshots").join(r.1.to_string()).join("fs"))
        .collect()
}

/// The runc shim's options in `ctr containers info` output (`Runtime.Options.value`: base64 of
/// the protobuf `containerd.runc.v1.Options`, whose `BinaryName` is a plain string in it).
fn runtime_options(info: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(info).unwrap();
    let encoded = v["Runtime"]["Options"]["value"]
        .as_str()
        .unwrap_or_default();
    let mut decode = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    decode
        .stdin
        .take()
        .unwrap()
        .write_all(encoded.as_bytes())
        .unwrap();
    let out = decode.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// cgroup v1 gives a user no cgroups: runc (rootless in the user namespace) ignores a cgroup it
/// cannot create only when the spec names none and asks for no limit (ctr asks for cpu shares
/// 1024 unless told 0).
const NO_CGROUP: &[&str] = &["--cgroup", "", "--cpu-shares", "0"];

/// `ctr ARGS` (a `ctr run` of container `id`), tried again (3 tries) when containerd 1.6's shim
/// loses the exit status of `mount.fuse3` to its own child reaper: "mount helper ... failed with
/// ECHILD (retried 10 times)", containerd/containerd#4387, which fuse-overlayfs-snapshotter
/// meets as well. Any other failure fails at once.
fn run_retrying_echild(ctd: &Containerd, id: &str, args: &[&str]) -> String {
    for attempt in 1.. {
        let out = ctd.ctr(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || attempt == 3 || !stderr.contains("failed with ECHILD") {
            return common::containerd::ok(&format!("ctr {}", args.join(" ")), out);
        }
        eprintln!("containerd#4387 (try {attempt}): {stderr}");
        ctd.ctr_ok(&["containers", "rm", id]);
    }
    unreachable!()
}

/// Runs container `id` of the demo image with `runc_binary` (Debian's runc when `None`) and
/// `ctr run` flags `flags`, and checks its root, where its writes land on the host and that the
/// layers keep theirs.
fn a_container_writes_into_its_snapshot(
    node: &UserNode,
    ctd: &Containerd,
    snap: &SnapshotterDaemon,
    id: &str,
    runc_binary: Option<&Path>,
    flags: &[&str],
) {
    let layers: Vec<_> = layer_trees(snap).iter().map(|t| listing(t)).collect();
    let script = format!(
        "grep ' / / ' /proc/self/mountinfo; echo from-{id} > /etc/{id}-file; \
         echo x > /etc/{id}-by-1000; chown 1000:1000 /etc/{id}-by-1000; rm /etc/motd; \
         cat /etc/{id}-file"
    );
    let mut args = vec!["run", "--snapshotter", "unionfs"];
    args.extend(flags);
    let runtime;
    if let Some(bin) = runc_binary {
        runtime = bin.display().to_string();
        args.extend(["--runc-binary", runtime.as_str()]);
    }
    args.extend([DEMO_REF, id, "sh", "-c", script.as_str()]);
    let out = run_retrying_echild(ctd, id, &args);
    let root_line = out.lines().next().unwrap_or_default();
    assert!(
        root_line.contains(" - fuse.unionfs "),
        "the container's / is not unionfs: {out}"
    );
    assert!(out.contains(&format!("from-{id}")), "{out}");

    // On the host: the container's root (uid 0 of the user namespace) is the user; its uid 1000
    // is the user's subordinate id 1000 - 1 (rootlesskit maps 1.. to the range's start).
    let upper = snap.tree_of(id);
    let written = upper.join(format!("etc/{id}-file"));
    assert_eq!(
        fs::read_to_string(&written).unwrap(),
        format!("from-{id}\n")
    );
    assert_eq!(fs::metadata(&written).unwrap().uid(), node.s.user.uid);
    let by_1000 = fs::metadata(upper.join(format!("etc/{id}-by-1000"))).unwrap();
    assert_eq!(
        (by_1000.uid(), by_1000.gid()),
        (subuid_start() + 999, subuid_start() + 999),
        "chown 1000 in the container is the user's subordinate id on the host"
    );
    assert!(
        upper.join("etc/.wh.motd").exists(),
        "the deletion is a whiteout in the upper directory"
    );
    let after: Vec<_> = layer_trees(snap).iter().map(|t| listing(t)).collect();
    assert_eq!(layers, after, "the image's layers are unchanged");

    // The union lived in rootlesskit's mount namespace only, and is gone with the container.
    assert!(
        mounts_mentioning(&snap.root).is_empty(),
        "a union of the user's namespace shows on the host"
    );
    if let Some(bin) = runc_binary {
        let options = runtime_options(&ctd.ctr_ok(&["containers", "info", id]));
        assert!(
            options.contains(&bin.display().to_string()),
            "the shim was told to run {}: {options}",
            bin.display()
        );
    }
    ctd.ctr_ok(&["containers", "rm", id]);
    // containerd's garbage collector removes the snapshot from the snapshotter after the call.
    wait_for(
        "the removed container's snapshot to go",
        Duration::from_secs(30),
        || (!upper.exists()).then_some(()),
    );
    let pid = fs::read_to_string(node.rootlesskit_state().join("child_pid")).unwrap();
    // The namespace started with a copy of the host's mounts (other tests' unions among them):
    // only the unions under the user's directory (containerd's state and root) are ours.
    let ours = node.d.dir.to_string_lossy().into_owned();
    let ns_mounts = fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim())).unwrap();
    let left: Vec<&str> = ns_mounts
        .lines()
        .filter(|l| l.contains(" - fuse.unionfs ") && l.contains(&ours))
        .collect();
    assert!(
        left.is_empty(),
        "a union is left in rootlesskit's mount namespace: {left:?}"
    );
}

#[test]
fn rootless_containerd_runs_containers_on_unionfs_roots_with_runc_and_runner() {
    let name = "rootless_containerd_runs_containers_on_unionfs_roots_with_runc_and_runner";
    if !can_run(name) {
        return;
    }
    let archive = demo_archive();
    let s = Rc::new(Session::start());
    let uid = s.user.uid;
    let sub = subuid_start();
    let node = UserNode::new(Rc::clone(&s));
    let _leftovers = KillLeftovers {
        uid,
        subuids: sub..sub + unprivileged::SUBID_COUNT,
    };
    let user_archive = node.data.join("demo.tar");
    fs::copy(archive, &user_archive).unwrap();
    unprivileged::chown_r(&user_archive, &s.user);

    let snap_socket = node.run.join("unionfs-snapshotter.sock");
    let mut ctd = node.start_containerd(&snap_socket);
    // In rootlesskit's namespaces, as fuse-overlayfs-snapshotter is started for rootless
    // containerd: its start check mounts a union there (with allow_other) and must pass.
    let snap_log = node.d.path("snapshotter.log");
    let mut snap = SnapshotterDaemon::start_with(
        &snap_socket,
        &node.data.join("unionfs-snapshotter"),
        &snap_log,
        &node.bin.join("unionfs-snapshotter"),
        node.in_namespaces(),
    );

    // containerd dialed the proxy plugin before its socket existed and retries with a backoff
    // (calls meanwhile fail with `unavailable`): wait until it reaches the snapshotter.
    wait_for(
        "containerd to reach the snapshotter",
        Duration::from_secs(30),
        || {
            ctd.ctr(&["snapshots", "--snapshotter", "unionfs", "ls"])
                .status
                .success()
                .then_some(())
        },
    );
    ctd.ctr_ok(&[
        "images",
        "import",
        "--snapshotter",
        "unionfs",
        user_archive.to_str().unwrap(),
    ]);
    let layers = layer_trees(&snap);
    assert_eq!(layers.len(), 2, "{:?}", snap.records());
    for tree in &layers {
        assert_eq!(
            fs::metadata(tree).unwrap().uid(),
            uid,
            "a layer unpacked by rootless containerd belongs to the user"
        );
    }

    let runner = node.bin.join("runner");
    a_container_writes_into_its_snapshot(&node, &ctd, &snap, "with-runc", None, NO_CGROUP);
    a_container_writes_into_its_snapshot(&node, &ctd, &snap, "runner", Some(&runner), NO_CGROUP);
    // With ctr's defaults (cgroup /NAMESPACE/ID, cpu shares 1024), where runc refuses: runner
    // warns that it cannot create the cgroup and runs without the limit.
    a_container_writes_into_its_snapshot(&node, &ctd, &snap, "runner-cg", Some(&runner), &[]);

    // Stopped: containerd (rootlesskit forwards SIGTERM to it and exits with it), then the
    // snapshotter (exit 0 on SIGTERM, its socket removed). With them the namespaces die.
    let rootlesskit = ctd.pid().unwrap();
    ctd.stop();
    assert!(
        ctd.exit_status().is_some(),
        "rootlesskit ({rootlesskit}) exited"
    );
    snap.stop();
    assert!(!snap_socket.exists(), "the snapshotter removes its socket");
    unprivileged::assert_no_processes_left(uid, sub, sub + unprivileged::SUBID_COUNT);
    assert!(
        mounts_mentioning(&node.d.dir).is_empty(),
        "mounts left: {:?}",
        mounts_mentioning(&node.d.dir)
    );
    assert!(
        snap.log().contains("serving"),
        "the snapshotter's log: {}",
        snap.log()
    );
}

#[test]
fn an_ordinary_user_outside_a_user_namespace_is_told_about_allow_other_at_start() {
    let name = "an_ordinary_user_outside_a_user_namespace_is_told_about_allow_other_at_start";
    if !common::can_run(name)
        || !common::can_run_with(name, missing_of(USER_TOOLS))
        || !common::can_run_with(name, missing_of(&[("fusermount3", "fuse3")]))
    {
        return;
    }
    let s = Rc::new(Session::start());
    let node = UserNode::new(Rc::clone(&s));
    let socket = node.run.join("snap.sock");
    let mut daemon = node
        .command(node.bin.join("unionfs-snapshotter"))
        .arg(&socket)
        .arg(node.data.join("root"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let allowed = fs::read_to_string("/etc/fuse.conf")
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim() == "user_allow_other");
    // It either exits (refused at start) or serves (its socket appears).
    let exited = wait_for(
        "the snapshotter to exit or serve",
        Duration::from_secs(30),
        || match daemon.try_wait().unwrap() {
            Some(status) => Some(Some(status)),
            None => socket.exists().then_some(None),
        },
    );
    let mut stderr = String::new();
    use std::io::Read;
    if let Some(status) = exited {
        daemon
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            !allowed,
            "the snapshotter exited ({status}) although user_allow_other is set: {stderr}"
        );
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("allow_other needs `user_allow_other` in /etc/fuse.conf"),
            "{stderr}"
        );
        assert!(!socket.exists(), "it does not serve");
    } else {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = daemon.wait().unwrap();
        // fusermount3 lets users ask for allow_other only with user_allow_other.
        assert!(
            allowed,
            "the snapshotter serves although fusermount3 will refuse its allow_other mounts"
        );
        assert!(status.success(), "{status}");
    }
    assert!(
        mounts_mentioning(&node.d.dir).is_empty(),
        "the check's mount is gone"
    );
}
