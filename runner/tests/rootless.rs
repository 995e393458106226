//! runner without root: an ordinary user (created by the test, with subordinate ids) runs
//! containers from its own store. The runner puts itself in a user namespace of the user's own
//! (the user is root there, its subordinate range maps 1..65536), mounts the union from inside,
//! and starts the container in new pid, uts, ipc and net namespaces. What the host forbids (no
//! `newuidmap`, no subordinate ids, `/dev/fuse` closed) is named.

mod common;
#[path = "../../unionfs/tests/common/unprivileged.rs"]
mod unprivileged;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use unprivileged::{describe, Session, User, UserDir};

/// A busybox image `demo` in the user's store `DATA/unionfs` (built by root with layer-tool's
/// library, then given to the user, as if the user had built it).
fn demo_store(d: &UserDir, user: &User) -> PathBuf {
    let data = d.path("data");
    let tree = d.path("tree");
    for dir in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(tree.join(dir)).unwrap();
    }
    fs::copy(common::BUSYBOX, tree.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(common::BUSYBOX)
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let link = tree.join(applet);
        if applet == "bin/busybox" || link.exists() {
            continue;
        }
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", &link).unwrap();
    }
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(tree.join("etc/group"), "root:x:0:\n").unwrap();
    fs::write(tree.join("etc/motd"), "from the demo layer\n").unwrap();
    let store = layer_tool::store::Store::at(data.join("unionfs"));
    layer_tool::build::build(&store, &tree, "demo", &Default::default()).unwrap();
    unprivileged::chown_r(&data, user);
    data
}

struct Rootless<'a> {
    s: &'a Session,
    user: User,
    runner: PathBuf,
    data: PathBuf,
    run: PathBuf,
}

impl Rootless<'_> {
    fn new<'a>(s: &'a Session, user: &User, d: &UserDir) -> Rootless<'a> {
        let runner = s.reachable_binary(&d.dir, env!("CARGO_BIN_EXE_runner"));
        let unionfs = common::unionfs_bin().expect("the unionfs binary");
        s.reachable_binary(&d.dir, unionfs.to_str().unwrap());
        let data = demo_store(d, user);
        let run = d.path("run");
        fs::create_dir_all(&run).unwrap();
        unprivileged::chown_r(&run, user);
        Rootless {
            s,
            user: user.clone(),
            runner,
            data,
            run,
        }
    }

    fn runner(&self, args: &[&str], path: Option<&str>) -> Output {
        let mut c = self.s.command_as(&self.user, &self.runner);
        c.args(args)
            .env("XDG_DATA_HOME", &self.data)
            .env("XDG_RUNTIME_DIR", &self.run)
            .stdin(std::process::Stdio::null());
        if let Some(p) = path {
            c.env("PATH", p);
        }
        c.output().unwrap()
    }

    /// [`Rootless::runner`] started from inside a delegated group.
    fn runner_in(&self, g: &DelegatedGroup, args: &[&str]) -> Output {
        let mut c = self.s.command_as(&self.user, &self.runner);
        c.args(args)
            .env("XDG_DATA_HOME", &self.data)
            .env("XDG_RUNTIME_DIR", &self.run);
        g.wrap(&c)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    fn containers(&self) -> PathBuf {
        self.data.join("unionfs/containers")
    }
}

/// A cgroup v2 group delegated to the test user as systemd's `Delegate=yes` does it: made by
/// root under the cgroup2 mount, its directory, `cgroup.procs`, `cgroup.subtree_control` and
/// `cgroup.threads` given to the user; `hugetlb` (the one controller this host's v2 tree has)
/// offered to it. Removed on drop, with whatever a failed test left in it.
struct DelegatedGroup {
    dir: PathBuf,
    /// The cgroup2 root's `cgroup.subtree_control` did not list hugetlb before.
    enabled_hugetlb: bool,
}

impl DelegatedGroup {
    /// `None` (with SKIPPED, or a failure under CI=true) when there is no cgroup2 mount.
    fn new(user: &User, name: &str) -> Option<DelegatedGroup> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(mount) = info.lines().find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next() == Some("cgroup2"))
                .then(|| PathBuf::from(pre.split_whitespace().nth(4).unwrap()))
        }) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs a cgroup2 mount for the delegated-cgroup test"
            );
            eprintln!("SKIPPED: no cgroup2 mount to delegate a group from");
            return None;
        };
        let control = mount.join("cgroup.subtree_control");
        let before = fs::read_to_string(&control).unwrap();
        let offered = fs::read_to_string(mount.join("cgroup.controllers")).unwrap();
        let enabled_hugetlb = offered.split_whitespace().any(|c| c == "hugetlb")
            && !before.split_whitespace().any(|c| c == "hugetlb");
        if enabled_hugetlb {
            fs::write(&control, "+hugetlb").unwrap();
        }
        // What an earlier run of this test left when it was killed (its pid is gone).
        for e in fs::read_dir(&mount).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = n
                .rsplit('-')
                .next()
                .filter(|_| n.starts_with("runner-test-deleg-"))
            {
                if !Path::new("/proc").join(pid).exists() {
                    remove_group_tree(&e.path());
                }
            }
        }
        let dir = mount.join(name);
        let _ = fs::create_dir(&dir);
        let g = DelegatedGroup {
            dir,
            enabled_hugetlb,
        };
        for f in [
            "",
            "cgroup.procs",
            "cgroup.subtree_control",
            "cgroup.threads",
        ] {
            nix::unistd::chown(
                &g.dir.join(f),
                Some(nix::unistd::Uid::from_raw(user.uid)),
                Some(nix::unistd::Gid::from_raw(user.gid)),
            )
            .unwrap();
        }
        Some(g)
    }

    /// `cmd` (a command as the user, from [`Session::command_as`]) started by a root shell
    /// that first joins the group, as a login in a delegated scope would start.
    fn wrap(&self, cmd: &Command) -> Command {
        let mut w = Command::new("/bin/sh");
        w.arg("-ec")
            // Into the leaf that runner made when it had to enable a controller (the group
            // itself may then hold no processes), as a systemd user's processes are in leaves.
            .arg(
                r#"g=$1; shift; [ -d "$g/runner-leaf" ] && g=$g/runner-leaf
echo $$ > "$g/cgroup.procs"; exec "$@""#,
            )
            .arg("sh")
            .arg(&self.dir)
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env_clear()
            .current_dir("/");
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                w.env(k, v);
            }
        }
        w
    }

    /// The groups below this one, as paths relative to it.
    fn children(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        out
    }
}

impl Drop for DelegatedGroup {
    fn drop(&mut self) {
        remove_group_tree(&self.dir);
        if self.enabled_hugetlb {
            let root = self.dir.parent().unwrap().join("cgroup.subtree_control");
            // Another group may use it by now (EBUSY): then it stays.
            let _ = fs::write(root, "-hugetlb");
        }
    }
}

/// Remove a cgroup and its descendants, deepest first: kill what is left in each, then rmdir
/// (EBUSY until the processes are gone).
fn remove_group_tree(top: &Path) {
    let mut dirs: Vec<PathBuf> = vec![top.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(rd) = fs::read_dir(&dirs[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        for _ in 0..200 {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            if fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The start of `user`'s range in /etc/subuid.
fn subuid_start(user: &str) -> u32 {
    fs::read_to_string("/etc/subuid")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == user).then(|| f[1].parse::<u32>().unwrap())
        })
        .expect("the test user's subordinate range")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn host_hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

#[test]
fn a_user_runs_containers_in_a_user_namespace_of_its_own() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless");
    let r = Rootless::new(&s, &s.user, &d);
    let sub = subuid_start(unprivileged::USER);

    // pid 1, its own hostname, the merged root, root in the container mapped to the user and
    // its range, a network namespace with only lo, the command's exit code.
    let out = r.runner(
        &[
            "run",
            "--rm",
            "demo",
            "sh",
            "-c",
            "echo pid=$$; hostname; cat /etc/motd; id -u; cat /proc/self/uid_map; ls /sys/class/net; exit 7",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "pid=1", "{text}");
    assert_eq!(lines[1].len(), 12, "a container hostname: {text}");
    assert_ne!(lines[1], host_hostname());
    assert_eq!(lines[2], "from the demo layer");
    assert_eq!(lines[3], "0", "root in the container");
    let map: Vec<Vec<&str>> = lines[4..6]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(map[0], ["0", &s.user.uid.to_string(), "1"], "{text}");
    assert_eq!(map[1], ["1", &sub.to_string(), "65536"], "{text}");
    assert_eq!(&lines[6..], ["lo"], "--net none: only lo: {text}");
    assert!(
        fs::read_dir(r.containers())
            .map(|d| d
                .filter(|e| e.as_ref().unwrap().file_name() != "names")
                .count())
            .unwrap_or(0)
            == 0,
        "--rm removed the container"
    );

    // A kept container: its writes land in the writable layer, as the user's own files (root
    // in the container) and as the user's subordinate ids (other ids). A limit that needs a
    // cgroup is named and not applied.
    let out = r.runner(
        &[
            "run",
            "--name",
            "kept",
            "--memory",
            "64m",
            "demo",
            "sh",
            "-c",
            "echo hi > /written; mkdir -p /d/e; touch /d/e/f; chown -R 5:6 /d; false",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--memory 64m not applied: no cgroup to write"),
        "the unapplied limit is named: {err}"
    );
    let upper: Vec<PathBuf> = fs::read_dir(r.containers())
        .unwrap()
        .map(|e| e.unwrap().path().join("upper"))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(upper.len(), 1, "{upper:?}");
    let upper = &upper[0];
    let written = fs::metadata(upper.join("written")).unwrap();
    assert_eq!((written.uid(), written.gid()), (s.user.uid, s.user.gid));
    assert_eq!(fs::read_to_string(upper.join("written")).unwrap(), "hi\n");
    let f = fs::metadata(upper.join("d/e/f")).unwrap();
    assert_eq!(
        (f.uid(), f.gid()),
        (sub + 4, sub + 5),
        "ids 5:6 are range + 4, + 5"
    );
    assert!(
        !Path::new(&format!(
            "/sys/fs/cgroup/runner-{}",
            upper
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ))
        .exists(),
        "no cgroup"
    );
    // `rm` as the user removes files that subordinate ids own (it enters the namespace too).
    let out = r.runner(&["rm", "kept"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!upper.exists(), "the container directory is gone");

    // --net host: the host's interfaces and hostname.
    let out = r.runner(
        &[
            "run",
            "--rm",
            "--net",
            "host",
            "demo",
            "sh",
            "-c",
            "hostname; ls /sys/class/net | wc -l",
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    let host_ifaces = fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [host_hostname(), host_ifaces.to_string()],
        "{text}"
    );
}

/// A user whose login runs in a delegated cgroup v2 group (systemd's `Delegate=yes`): the
/// container gets a group of its own beneath it, the limits whose controllers the group does
/// not offer are named (on this host's hybrid tree only hugetlb is offered), and the group is
/// gone after the container.
#[test]
fn a_delegated_cgroup_v2_group_holds_the_container_and_unapplied_limits_are_named() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-cgroup");
    let r = Rootless::new(&s, &s.user, &d);
    let name = format!("runner-test-deleg-{}", std::process::id());
    let Some(g) = DelegatedGroup::new(&s.user, &name) else {
        return;
    };
    let offered = fs::read_to_string(g.dir.join("cgroup.controllers")).unwrap();
    let offered: Vec<&str> = offered.split_whitespace().collect();
    let out = r.runner_in(
        &g,
        &[
            "run",
            "--rm",
            "--memory",
            "64m",
            "--pids-limit",
            "20",
            "demo",
            "cat",
            "/proc/self/cgroup",
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // The container's own group, a new one beneath the delegated group.
    let text = stdout(&out);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("a cgroup2 line: {text}"));
    let id = line
        .strip_prefix(&format!("/{name}/runner-"))
        .unwrap_or_else(|| panic!("a group under /{name}: {line}"));
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{line}"
    );
    // Each limit whose controller is not offered is named, with the group and what it offers.
    let err = String::from_utf8_lossy(&out.stderr);
    for (what, controller) in [("--memory 64m", "memory"), ("--pids-limit 20", "pids")] {
        let warning = format!(
            "runner: warning: {what} not applied: the {controller} controller is not delegated \
             to {} (available: {})",
            g.dir.display(),
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(" ")
            }
        );
        assert_eq!(
            err.contains(&warning),
            !offered.contains(&controller),
            "{warning:?}: {err}"
        );
    }
    // --rm: the container's group is gone (a leaf of the user's own processes may stay).
    let left: Vec<String> = g
        .children()
        .into_iter()
        .filter(|c| c != "runner-leaf")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Without a delegated group (the user's processes in the root group): no cgroup, every
    // limit named with the reason.
    let out = r.runner(
        &[
            "run",
            "--rm",
            "--memory",
            "64m",
            "demo",
            "cat",
            "/proc/self/cgroup",
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--memory 64m not applied: no cgroup to write:")
            && err.contains("is not delegated to this user"),
        "{err}"
    );
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_line = own.lines().find(|l| l.starts_with("0::")).unwrap();
    assert_eq!(
        stdout(&out).lines().find(|l| l.starts_with("0::")),
        Some(own_line),
        "the container stays in its runner's group"
    );
}

/// A user's runtime state (the union's mount point, the init layer, the logs) is under
/// `$XDG_RUNTIME_DIR/runner`, 0700, apart from the store's writable layer and record; other
/// users cannot read it; `ps` and `rm` still find the container. Without a usable
/// `$XDG_RUNTIME_DIR`, `$TMPDIR/runner-run-UID`, refused when someone else made it first.
#[test]
fn a_users_runtime_state_is_under_xdg_runtime_dir_and_private() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-state");
    let r = Rootless::new(&s, &s.user, &d);
    let out = r.runner(&["run", "--name", "kept", "demo", "true"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let runtime = r.run.join("runner");
    let md = fs::metadata(&runtime).unwrap();
    assert_eq!(
        (md.uid(), md.mode() & 0o7777),
        (s.user.uid, 0o700),
        "{}",
        runtime.display()
    );
    let ids: Vec<String> = fs::read_dir(runtime.join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let run_dir = runtime.join("containers").join(&ids[0]);
    let store_dir = r.containers().join(&ids[0]);
    for f in ["rootfs", "init/etc/hostname", "unionfs.log"] {
        assert!(run_dir.join(f).exists(), "{f} in {}", run_dir.display());
        assert!(!store_dir.join(f).exists(), "{f} not in the store");
    }
    for f in ["upper", "state.json"] {
        assert!(store_dir.join(f).exists(), "{f} in {}", store_dir.display());
    }
    // Another user may pass through $XDG_RUNTIME_DIR (0711 here) but not read runner's part.
    use std::os::unix::fs::PermissionsExt;
    for p in [&d.dir, &r.run] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o711)).unwrap();
    }
    let other = s.other_user("ufs-rootless-nosub", false);
    let out = s
        .command_as(&other, "/bin/ls")
        .arg("-d")
        .arg(&runtime)
        .output()
        .unwrap();
    assert!(out.status.success(), "reachable: {}", describe(&out));
    let out = s
        .command_as(&other, "/bin/ls")
        .arg(&runtime)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        describe(&out)
    );
    // ps (no namespace) and rm (in it) find the container; rm removes both parts.
    let out = r.runner(&["ps"], None);
    assert!(
        stdout(&out)
            .lines()
            .any(|l| l.contains("kept") && l.contains("exited (0)")),
        "{}",
        describe(&out)
    );
    let out = r.runner(&["rm", "kept"], None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!run_dir.exists() && !store_dir.exists());

    // No XDG_RUNTIME_DIR: $TMPDIR/runner-run-UID, made 0700.
    let tmp = d.path("tmp");
    fs::create_dir(&tmp).unwrap();
    unprivileged::chown_r(&tmp, &s.user);
    let no_xdg = |args: &[&str]| {
        s.command_as(&s.user, &r.runner)
            .args(args)
            .env("XDG_DATA_HOME", &r.data)
            .env("TMPDIR", &tmp)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = no_xdg(&["run", "--rm", "demo", "cat", "/etc/hostname"]);
    assert!(out.status.success(), "{}", describe(&out));
    let fallback = tmp.join(format!("runner-run-{}", s.user.uid));
    let md = fs::metadata(&fallback).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (s.user.uid, 0o700));
    // Made first by someone else (here root): refused by name, nothing run.
    fs::remove_dir_all(&fallback).unwrap();
    fs::create_dir(&fallback).unwrap();
    let out = no_xdg(&["run", "--rm", "demo", "echo", "ran"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&fallback.display().to_string()) && err.contains("not by you"),
        "{err}"
    );
    assert!(!stdout(&out).contains("ran"));
}

/// The OCI interface rootless (root of a user namespace of the user's, as podman runs it), in a
/// delegated group: the container's group is made beneath it, and a hugetlb limit (hugetlb is
/// the one controller this host's v2 tree offers) enables the controller, which moves the
/// group's own processes into a leaf first (cgroup v2 allows no controllers with them).
#[test]
fn the_oci_interface_rootless_uses_a_delegated_group_and_enables_what_a_limit_needs() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-oci-cgroup");
    let runner = s.reachable_binary(&d.dir, env!("CARGO_BIN_EXE_runner"));
    let name = format!("runner-test-deleg-oci-{}", std::process::id());
    let Some(g) = DelegatedGroup::new(&s.user, &name) else {
        return;
    };
    let bundle = d.path("bundle");
    for dir in ["bin", "proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(bundle.join("rootfs").join(dir)).unwrap();
    }
    fs::copy(common::BUSYBOX, bundle.join("rootfs/bin/busybox")).unwrap();
    for applet in ["sh", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin").join(applet)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config["process"]["args"] = serde_json::json!(["true"]);
    config["process"]["terminal"] = serde_json::json!(false);
    // A single mapping (unshare --map-root-user) has no gid 5 for devpts, as `runc spec
    // --rootless` leaves it out.
    for m in config["mounts"].as_array_mut().unwrap() {
        if m["type"] == "devpts" {
            m["options"]
                .as_array_mut()
                .unwrap()
                .retain(|o| o != "gid=5");
        }
    }
    config["linux"]["resources"]["hugepageLimits"] =
        serde_json::json!([{"pageSize": "2MB", "limit": 4194304}]);
    fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    unprivileged::chown_r(&d.dir, &s.user);
    let state = d.path("state");
    let oci = |args: &[&str]| {
        let mut c = s.command_as(&s.user, "/usr/bin/unshare");
        c.args(["--user", "--map-root-user", "--"])
            .arg(&runner)
            .arg("--root")
            .arg(&state)
            .args(args);
        // Output in files: the container of `create` keeps the runtime's stdout and stderr
        // open until it runs, so pipes would not reach their end.
        let (out_path, err_path) = (d.path("oci.out"), d.path("oci.err"));
        let status = g
            .wrap(&c)
            .stdin(std::process::Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .status()
            .unwrap();
        Output {
            status,
            stdout: fs::read(&out_path).unwrap(),
            stderr: fs::read(&err_path).unwrap(),
        }
    };
    let offered = fs::read_to_string(g.dir.join("cgroup.controllers")).unwrap();
    let out = oci(&["create", "--bundle", bundle.to_str().unwrap(), "c1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let group = g.dir.join("runner-oci-c1");
    assert!(group.is_dir(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    if offered.split_whitespace().any(|c| c == "hugetlb") {
        assert_eq!(
            fs::read_to_string(group.join("hugetlb.2MB.max"))
                .unwrap()
                .trim(),
            "4194304"
        );
        let control = fs::read_to_string(g.dir.join("cgroup.subtree_control")).unwrap();
        assert!(
            control.split_whitespace().any(|c| c == "hugetlb"),
            "{control}"
        );
        // The group's own processes (the runner's chain) went to the leaf; none are left in it.
        assert!(g.dir.join("runner-leaf").is_dir());
        assert_eq!(fs::read_to_string(g.dir.join("cgroup.procs")).unwrap(), "");
        assert!(!err.contains("not applied"), "{err}");
    } else {
        assert!(
            err.contains("linux.resources.hugepageLimits not applied: the hugetlb controller"),
            "{err}"
        );
    }
    // The container's process is in the group.
    let procs = fs::read_to_string(group.join("cgroup.procs")).unwrap();
    assert_eq!(procs.lines().count(), 1, "{procs:?}");
    let out = oci(&["start", "c1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = oci(&["delete", "--force", "c1"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !group.exists(),
        "the container's group is gone after delete"
    );
}

#[test]
fn what_the_host_forbids_a_rootless_run_is_named() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-refused");
    let r = Rootless::new(&s, &s.user, &d);
    let script = ["run", "--rm", "demo", "sh", "-c", "cat /proc/self/uid_map"];

    // No newuidmap on PATH (the user has subordinate ids): named, with its package.
    let out = r.runner(&script, Some("/nonexistent"));
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newuidmap") && err.contains("uidmap"), "{err}");

    // /dev/fuse closed to users: the union cannot be mounted, and the error says why.
    s.set_fuse_mode(0o600);
    let out = r.runner(&script, None);
    s.set_fuse_mode(0o666);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/fuse") && err.contains("permission denied"),
        "{err}"
    );

    // A user without subordinate ids: a single mapping, with a warning that says so.
    let lone = s.other_user("ufs-rootless-nosub", false);
    let d2 = s.user_dir_for(&lone, "runner-rootless-nosub");
    let r2 = Rootless::new(&s, &lone, &d2);
    let out = r2.runner(&script, None);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no subordinate ids") && err.contains("mapping only your own uid"),
        "{err}"
    );
    let map: Vec<Vec<String>> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    assert_eq!(
        map,
        [vec!["0".to_string(), lone.uid.to_string(), "1".to_string()]]
    );
}

#[test]
fn sigterm_to_a_users_runner_reaches_the_container_and_everything_goes() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-signal");
    let r = Rootless::new(&s, &s.user, &d);
    let mut c = s.command(&r.runner);
    c.args([
        "run",
        "--rm",
        "demo",
        "sh",
        "-c",
        "trap 'echo got-term; exit 143' TERM; echo started; sleep 1000 & wait",
    ])
    .env("XDG_DATA_HOME", &r.data)
    .env("XDG_RUNTIME_DIR", &r.run)
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    // setpriv execs the runner in place: the child's pid is the outer runner's.
    let outer = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    use std::io::Read;
    out.read_exact(&mut first).expect("the container starts");
    assert_eq!(&first, b"started\n");
    nix::sys::signal::kill(outer, nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        rest, "got-term\n",
        "the container's trap ran; stderr: {err}"
    );
    assert_eq!(status.code(), Some(143), "stderr: {err}");
    // --rm: the container is gone, and no process of the user or its range is left (the
    // unionfs daemon included).
    let left: Vec<_> = fs::read_dir(r.containers())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "names")
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let sub = subuid_start(unprivileged::USER);
    unprivileged::assert_no_processes_left(s.user.uid, sub, sub + unprivileged::SUBID_COUNT);
}

/// A one-line HTTP server on the host's loopback only; answers every connection.
fn loopback_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            use std::io::{Read, Write};
            let mut c = c;
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 16\r\n\r\nhello-from-host\n");
        }
    });
    port
}

#[test]
fn a_user_mode_network_reaches_the_hosts_loopback_only_when_allowed() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    // As root the option is refused (slirp4netns would be a root process).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["run", "--rm", "--net", "slirp4netns", "demo", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--net slirp4netns is for runs without root"),
        "{}",
        describe(&out)
    );

    let s = Session::start();
    let d = s.user_dir("runner-rootless-slirp");
    let r = Rootless::new(&s, &s.user, &d);
    let port = loopback_server();
    // busybox nc (busybox-static's wget crashes in glibc's static resolver code).
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 10.0.2.2 {port} | tail -n 1");
    let out = r.runner(
        &[
            "run",
            "--rm",
            "--net",
            "slirp4netns:allow_host_loopback=true",
            "demo",
            "sh",
            "-c",
            &format!("ip -4 addr show tap0 | grep -o 'inet [0-9./]*'; cat /etc/resolv.conf; {get}"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "inet 10.0.2.100/24\nnameserver 10.0.2.3\nhello-from-host\n",
        "{}",
        describe(&out)
    );

    // By default the host's loopback is closed to the container.
    let out = r.runner(
        &[
            "run",
            "--rm",
            "--net",
            "slirp4netns",
            "demo",
            "sh",
            "-c",
            &format!("set -o pipefail; {get}; echo get=$?"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("hello-from-host")
            && text.contains("get=1")
            && String::from_utf8_lossy(&out.stderr).contains("10.0.2.2"),
        "{}",
        describe(&out)
    );
    let sub = subuid_start(unprivileged::USER);
    unprivileged::assert_no_processes_left(s.user.uid, sub, sub + unprivileged::SUBID_COUNT);
}

/// Files of several owners keep them: made in a container (root of the user's namespace may
/// give any id of its mapping), committed as an image (layer-tool, in the same namespace), and
/// seen with the same owners by a container of that image.
#[test]
fn files_of_several_owners_keep_them_through_commit_and_run() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-owners");
    let r = Rootless::new(&s, &s.user, &d);
    let out = r.runner(
        &[
            "run",
            "--name",
            "owners",
            "demo",
            "sh",
            "-c",
            "echo o > /etc/other; chown 1234:5678 /etc/other; chmod 4755 /etc/other; \
             mkdir /home; echo u > /home/user; chown 1000:1000 /home/user",
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let out = r.runner(&["commit", "owners", "owners-image"], None);
    assert!(out.status.success(), "commit as a user: {}", describe(&out));
    let out = r.runner(
        &[
            "run",
            "--rm",
            "owners-image",
            "stat",
            "-c",
            "%u:%g %a %n",
            "/etc/other",
            "/home/user",
            "/etc/motd",
        ],
        None,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "1234:5678 4755 /etc/other\n1000:1000 644 /home/user\n0:0 644 /etc/motd\n",
        "{}",
        describe(&out)
    );
    // On the host: the range's ids.
    let sub = subuid_start(unprivileged::USER);
    let layers = r.data.join("unionfs/layers/sha256");
    let mut found = Vec::new();
    for l in fs::read_dir(&layers).unwrap().flatten() {
        let p = l.path().join("etc/other");
        if let Ok(md) = fs::metadata(&p) {
            found.push(md.uid());
        }
    }
    assert_eq!(
        found,
        [sub + 1233],
        "the committed layer's file, as a host id of the range"
    );
    let out = r.runner(&["rm", "owners"], None);
    assert!(out.status.success(), "{}", describe(&out));
}

/// The OCI interface without root: rootless podman (its storage in the user's directory, the
/// overlay driver with `unionfs` as its `mount_program`) with `--runtime runner`. podman runs
/// the runtime as root of its own user namespace: runner sees that (runc's rule), keeps its
/// state under `$XDG_RUNTIME_DIR/runner`, binds the devices and does without a cgroup.
#[test]
fn rootless_podman_runs_containers_with_runner_as_its_runtime() {
    if !common::can_run("rootless") || !unprivileged::can_run() {
        return;
    }
    if Command::new("podman").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs podman (scripts/install-deps.sh)"
        );
        eprintln!("SKIPPED: no podman");
        return;
    }
    let s = Session::start();
    let d = s.user_dir("runner-rootless-podman");
    let runner = s.reachable_binary(&d.dir, env!("CARGO_BIN_EXE_runner"));
    let unionfs = s.reachable_binary(
        &d.dir,
        common::unionfs_bin()
            .expect("the unionfs binary")
            .to_str()
            .unwrap(),
    );
    let out = s.sh(&format!(
        r#"cd {dir}
mkdir -p rootfs/bin rootfs/etc rootfs/tmp rootfs/proc rootfs/sys rootfs/dev run
chmod 700 run
cp {busybox} rootfs/bin/busybox
for t in sh cat echo id rm ls; do ln -s busybox rootfs/bin/$t; done
echo hello > rootfs/etc/hello
tar -C rootfs -cf rootfs.tar .
"#,
        dir = d.dir.display(),
        busybox = common::BUSYBOX
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let podman = |args: &[&str]| {
        let mut c = s.command("podman");
        c.args(["--root", d.path("root").to_str().unwrap()])
            .args(["--runroot", d.path("run/podman").to_str().unwrap()])
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("overlay.mount_program={}", unionfs.display()))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(&runner)
            .args(args)
            .env("XDG_RUNTIME_DIR", d.path("run"))
            .stdin(std::process::Stdio::null())
            .current_dir(&d.dir);
        c.output().unwrap()
    };
    let out = podman(&["import", "rootfs.tar", "localhost/rootless:1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = podman(&[
        "run",
        "--name",
        "c1",
        "--network",
        "none",
        "localhost/rootless:1",
        "sh",
        "-c",
        "echo pid=$$; cat /etc/hello; id -u; ls /dev/null; echo new > /tmp/new; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "pid=1\nhello\n0\n/dev/null\n",
        "{}",
        describe(&out)
    );
    // runner's state lived under the user's runtime dir (runc's rule), not /run/runner.
    assert!(d.path("run/runner").is_dir(), "$XDG_RUNTIME_DIR/runner");
    let out = podman(&["diff", "c1"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stdout(&out).lines().any(|l| l == "A /tmp/new"),
        "{}",
        describe(&out)
    );
    let out = podman(&["rm", "c1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let _ = podman(&["system", "reset", "--force"]);
    let sub = subuid_start(unprivileged::USER);
    unprivileged::assert_no_processes_left(s.user.uid, sub, sub + unprivileged::SUBID_COUNT);
}
