//! The OCI runtime interface, driven through the binary as an engine drives runc: bundles made
//! here (`runner spec`, then edited), every command of the lifecycle, each `state` checked
//! against the runtime-spec's state schema (fixtures/oci/state.schema.json).
//!
//! Real containers: root, /dev/fuse, busybox-static and cgroups are needed; under `CI=true` a
//! missing prerequisite fails the test.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::oci::Oci;
use common::{can_run, image, unionfs_bin};
use serde_json::{json, Value};

fn cgroup_leftovers(id: &str) -> Vec<String> {
    common::leftovers(id)
        .into_iter()
        .filter(|l| !l.starts_with("process"))
        .collect()
}

#[test]
fn lifecycle_create_start_kill_delete_with_states_per_the_schema() {
    if !can_run("oci lifecycle") {
        return;
    }
    let oci = Oci::new();
    let bundle = oci.bundle("b", &["sleep", "1000"], |_| {});
    let pid_file = oci.scratch.path().join("pid");
    let id = "oci-life-1";
    oci.runtime(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
    ])
    .ok();
    let created = oci.state(id);
    assert_eq!(created["status"], "created");
    assert_eq!(created["bundle"], bundle.to_str().unwrap());
    let pid = created["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    // Created means set up but not started: the process has not exec'd the command yet.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("sleep"),
        "{cmdline:?}"
    );
    assert!(oci.runtime(&["start", "no-such-container"]).code != 0);

    oci.runtime(&["start", id]).ok();
    let running = oci.wait_status(id, "running");
    assert_eq!(running["pid"].as_i64(), Some(pid));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).starts_with("sleep"),
        "{cmdline:?}"
    );
    let again = oci.runtime(&["start", id]);
    assert!(
        again.code != 0 && again.stderr.contains("running"),
        "{again:?}"
    );
    let list = oci.runtime(&["list", "--format", "json"]);
    let list: Value = serde_json::from_str(list.ok()).unwrap();
    assert_eq!(list[0]["id"], id);
    let busy = oci.runtime(&["delete", id]);
    assert!(
        busy.code != 0 && busy.stderr.contains("running"),
        "{busy:?}"
    );

    oci.runtime(&["kill", id, "KILL"]).ok();
    let stopped = oci.wait_status(id, "stopped");
    assert_eq!(stopped["pid"], 0);
    // runc's answers for a stopped container, which containerd's shim relies on: a plain kill
    // fails with "container not running", `kill --all` (sent after every exit) succeeds.
    let late = oci.runtime(&["kill", id, "KILL"]);
    assert!(
        late.code == 1 && late.stderr.contains("container not running"),
        "{late:?}"
    );
    assert_eq!(oci.runtime(&["kill", "--all", id, "9"]).ok(), "");
    assert_eq!(oci.state(id)["status"], "stopped");
    oci.runtime(&["delete", id]).ok();
    let gone = oci.runtime(&["state", id]);
    assert!(
        gone.code != 0 && gone.stderr.contains("does not exist"),
        "{gone:?}"
    );
    assert!(!oci.root().join(id).exists());
    assert_eq!(cgroup_leftovers(id), Vec::<String>::new());
    // As runc: deleting what is gone is an error, unless forced (containerd's shim deletes
    // with --force once more when it shuts down).
    let again = oci.runtime(&["delete", id]);
    assert!(
        again.code == 1 && again.stderr.contains("does not exist"),
        "{again:?}"
    );
    assert_eq!(oci.runtime(&["delete", "--force", id]).ok(), "");

    // A created container (it never ran) is deleted without --force, as runc does.
    let id2 = "oci-life-2";
    oci.runtime(&["create", "--bundle", bundle.to_str().unwrap(), id2])
        .ok();
    let pid2 = oci.state(id2)["pid"].as_i64().unwrap();
    oci.runtime(&["delete", id2]).ok();
    assert!(!oci.root().join(id2).exists());
    assert!(
        state_of(pid2).is_none_or(|s| s == 'Z'),
        "pid {pid2} still runs"
    );
    assert_eq!(cgroup_leftovers(id2), Vec::<String>::new());
}

/// The state letter of a process in /proc/PID/stat, `None` when it is gone.
fn state_of(pid: i64) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[test]
fn run_passes_output_and_exit_code_and_exec_joins_the_container() {
    if !can_run("oci run and exec") {
        return;
    }
    let oci = Oci::new();
    let bundle = oci.bundle(
        "run",
        &["sh", "-c", "echo hello $(hostname); exit 7"],
        |c| {
            c["hostname"] = json!("ocibox");
        },
    );
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-run-1"]);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout.trim(), "hello ocibox");
    assert!(
        !oci.root().join("oci-run-1").exists(),
        "run deletes the container after it"
    );

    let bundle = oci.bundle("exec", &["sleep", "1000"], |c| {
        c["process"]["env"] = json!(["PATH=/bin:/usr/bin", "FROM_BUNDLE=1"]);
        c["root"]["readonly"] = json!(false);
    });
    let id = "oci-exec-1";
    oci.runtime(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), id])
        .ok();
    oci.wait_status(id, "running");
    let out = oci.runtime(&[
        "exec",
        "--env",
        "EXTRA=2",
        id,
        "sh",
        "-c",
        "echo $FROM_BUNDLE$EXTRA; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 5",
    ]);
    assert_eq!(out.code, 5, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "12");
    assert_eq!(
        lines[1].trim(),
        "sleep 1000",
        "pid 1 of the joined pid namespace"
    );
    // A process.json as conmon passes it, detached with a pid file.
    let process = oci.scratch.path().join("process.json");
    let marker = "/tmp/from-exec";
    fs::write(
        &process,
        serde_json::to_vec(&json!({
            "args": ["sh", "-c", format!("echo done > {marker}; sleep 1000")],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"],
        }))
        .unwrap(),
    )
    .unwrap();
    let pid_file = oci.scratch.path().join("exec.pid");
    oci.runtime(&[
        "exec",
        "--process",
        process.to_str().unwrap(),
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        id,
    ])
    .ok();
    let exec_pid = fs::read_to_string(&pid_file).unwrap();
    let ps = oci.runtime(&["ps", "--format", "json", id]);
    let pids: Vec<i64> = serde_json::from_str(ps.ok()).unwrap();
    assert!(
        pids.contains(&exec_pid.trim().parse().unwrap()),
        "{pids:?} {exec_pid}"
    );
    assert_eq!(pids.len(), 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bundle.join("rootfs").join(&marker[1..]).exists() {
        assert!(Instant::now() < deadline, "the exec'd process never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // kill --all reaches the exec'd process too; delete --force takes down the rest.
    oci.runtime(&["kill", "--all", id, "KILL"]).ok();
    oci.wait_status(id, "stopped");
    oci.runtime(&["delete", "--force", id]).ok();
    assert_eq!(cgroup_leftovers(id), Vec::<String>::new());
}

#[test]
fn bundle_errors_name_the_field_and_leave_nothing() {
    if !can_run("oci errors") {
        return;
    }
    let oci = Oci::new();
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "rdt",
            Box::new(|c| c["linux"]["intelRdt"] = json!({"closID": "x"})),
            "linux.intelRdt",
        ),
        (
            "notify",
            Box::new(|c| {
                c["linux"]["seccomp"] =
                    json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"})
            }),
            "seccomp",
        ),
        (
            "tty",
            Box::new(|c| c["process"]["terminal"] = json!(true)),
            "console-socket",
        ),
        (
            "sysctl",
            Box::new(|c| c["linux"]["sysctl"] = json!({"vm.overcommit_memory": "1"})),
            "vm.overcommit_memory",
        ),
        (
            // Paths cannot be masked in a mount namespace that is not the container's own.
            "nomountns",
            Box::new(|c| c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}])),
            "linux.maskedPaths: needs a new mount namespace",
        ),
        (
            "rdma",
            Box::new(|c| c["linux"]["resources"]["rdma"] = json!({"mlx5_1": {"hcaHandles": 3}})),
            "linux.resources.rdma",
        ),
    ];
    for (name, edit, want) in cases {
        let bundle = oci.bundle(name, &["true"], edit);
        let id = format!("oci-err-{name}");
        let out = oci.runtime(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert!(out.code != 0, "{name}: {out:?}");
        assert!(
            out.stderr.contains(want),
            "{name}: wanted {want:?} in {:?}",
            out.stderr
        );
        assert!(!oci.root().join(&id).exists(), "{name}: state left behind");
        assert_eq!(cgroup_leftovers(&id), Vec::<String>::new(), "{name}");
    }
    let out = oci.runtime(&["create", "--bundle", "/nonexistent/bundle", "x"]);
    assert!(
        out.code != 0 && out.stderr.contains("does not exist"),
        "{out:?}"
    );
    let log = oci.scratch.path().join("log.json");
    let out = oci.runtime(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "kill",
        "no-such",
        "KILL",
    ]);
    assert!(out.code != 0);
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("does not exist"),
        "{line}"
    );
    let bundle = oci.bundle("dup", &["sleep", "100"], |_| {});
    oci.runtime(&["create", "--bundle", bundle.to_str().unwrap(), "oci-dup"])
        .ok();
    let dup = oci.runtime(&["create", "--bundle", bundle.to_str().unwrap(), "oci-dup"]);
    assert!(
        dup.code != 0 && dup.stderr.contains("already exists"),
        "{dup:?}"
    );
    assert_eq!(
        oci.state("oci-dup")["status"],
        "created",
        "the first is untouched"
    );
    oci.runtime(&["delete", "--force", "oci-dup"]).ok();
    assert_eq!(cgroup_leftovers("oci-dup"), Vec::<String>::new());
}

#[test]
fn hooks_get_the_state_and_isolation_settings_apply() {
    if !can_run("oci hooks and settings") {
        return;
    }
    let oci = Oci::new();
    let out_dir = oci.scratch.path().join("hooks");
    fs::create_dir_all(&out_dir).unwrap();
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/{name}", out_dir.display())]});
    let script = "grep CapEff /proc/self/status; mkdir /tmp/x 2>&1; \
                  cat /etc/motd | wc -c; (echo x > /proc/sys/kernel/domainname) 2>&1; \
                  ulimit -n; hostname";
    let bundle = oci.bundle("settings", &["sh", "-c", script], |c| {
        c["hooks"] = json!({
            "prestart": [hook("prestart")],
            "poststart": [hook("poststart")],
            "poststop": [hook("poststop")],
        });
        // Only CAP_KILL and CAP_CHOWN; mkdir refused with EACCES by seccomp.
        let caps = json!(["CAP_KILL", "CAP_CHOWN"]);
        c["process"]["capabilities"] =
            json!({"bounding": caps, "effective": caps, "permitted": caps});
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]);
        c["process"]["noNewPrivileges"] = json!(true);
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
        });
        c["linux"]["maskedPaths"] = json!(["/etc/motd"]);
        c["linux"]["readonlyPaths"] = json!(["/proc/sys"]);
        c["hostname"] = json!("hooked");
    });
    let id = "oci-hooks-1";
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), id]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().nth(1),
        Some("0000000000000021"),
        "{out:?}"
    );
    assert!(
        lines[1].contains("Permission denied"),
        "seccomp errno: {out:?}"
    );
    assert_eq!(
        lines[2].trim(),
        "0",
        "masked /proc/kcore reads empty: {out:?}"
    );
    assert!(
        lines[3].contains("Read-only"),
        "read-only /proc/sys: {out:?}"
    );
    assert_eq!(lines[4], "256");
    assert_eq!(lines[5], "hooked");
    for name in ["prestart", "poststart", "poststop"] {
        let text = fs::read_to_string(out_dir.join(name)).unwrap();
        let state: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(state["id"], id, "{name}: {text}");
        assert_eq!(state["bundle"], bundle.to_str().unwrap(), "{name}");
    }
    let pre: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("prestart")).unwrap()).unwrap();
    assert_eq!(pre["status"], "created");
    assert!(pre["pid"].as_i64().unwrap() > 0);
}

#[test]
fn union_root_from_the_layers_annotation_and_from_an_image_directory() {
    if !can_run("oci union root") {
        return;
    }
    let oci = Oci::new();
    let layers = format!(
        "{}:{}",
        image().join("layers/top").display(),
        image().join("layers/base").display()
    );
    let script = "cat /etc/top-file; ls /etc/base-only 2>&1; echo new > /root/new; \
                  grep ' / ' /proc/self/mountinfo | grep -o fuse.unionfs";
    let bundle = oci.bundle("union", &["sh", "-c", script], |c| {
        c["annotations"] = json!({"run.unionfs.layers": layers});
        c["root"] = json!({"path": "mnt", "readonly": false});
    });
    fs::remove_dir_all(bundle.join("rootfs")).unwrap();
    let before = tree_listing(&image().join("layers"));
    let id = "oci-union-1";
    let out = oci.runtime(&["run", "--keep", "--bundle", bundle.to_str().unwrap(), id]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "from the top layer");
    assert!(lines[1].contains("No such file"), "whited out: {out:?}");
    assert_eq!(lines[2], "fuse.unionfs");
    let upper = oci.root().join(id).join("upper");
    assert_eq!(fs::read_to_string(upper.join("root/new")).unwrap(), "new\n");
    oci.runtime(&["delete", id]).ok();
    assert!(
        !common_is_mounted(&bundle.join("mnt")),
        "delete unmounts the union"
    );
    assert_eq!(
        tree_listing(&image().join("layers")),
        before,
        "layers unchanged"
    );

    // root.path naming an image directory of the store: mounted beside the state.
    let bundle = oci.bundle("image", &["cat", "/etc/top-file"], |c| {
        c["root"]["path"] = json!(image().to_str().unwrap());
    });
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-union-2"]);
    assert_eq!(out.stdout, "from the top layer\n", "{out:?}");
    assert_eq!(
        tree_listing(&image().join("layers")),
        before,
        "layers unchanged"
    );
    assert!(!image().join("rootfs").exists());
}

fn common_is_mounted(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = p.to_str().unwrap();
    info.lines().any(|l| l.split_whitespace().nth(4) == Some(p))
}

/// Every path with its size and mode, sorted: enough to see a change to a layer.
fn tree_listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            out.push(format!(
                "{} {} {:o}",
                e.path().display(),
                m.len(),
                m.permissions().mode()
            ));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_terminal_goes_to_the_console_socket() {
    if !can_run("oci console socket") {
        return;
    }
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let oci = Oci::new();
    let sock_path = oci.scratch.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let script = "tty; stat -c %t:%T $(tty) /dev/console; echo size $(stty size)";
    let bundle = oci.bundle("tty", &["sh", "-c", script], |c| {
        c["process"]["terminal"] = json!(true);
    });
    let id = "oci-tty-1";
    let create = std::thread::scope(|s| {
        let h = s.spawn(|| {
            oci.runtime(&[
                "create",
                "--bundle",
                bundle.to_str().unwrap(),
                "--console-socket",
                sock_path.to_str().unwrap(),
                id,
            ])
        });
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 64];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        let mut master = None;
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the descriptor arrived with SCM_RIGHTS just now; nothing else owns it.
                master = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
            }
        }
        (
            h.join().unwrap(),
            master.expect("a pty master over the console socket"),
        )
    });
    let (out, master) = create;
    out.ok();
    oci.runtime(&["start", id]).ok();
    let mut text = String::new();
    let mut f = fs::File::from(master);
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !text.contains("size") && Instant::now() < deadline {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(
        text.contains("/dev/pts/"),
        "the command's terminal: {text:?}"
    );
    oci.wait_status(id, "stopped");
    oci.runtime(&["delete", id]).ok();
}

#[test]
fn features_and_version_describe_the_runtime() {
    let oci = Oci::new();
    let out = oci.runtime(&["features"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(v["ociVersionMax"], "1.2.0");
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!("pid")));
    assert_eq!(v["linux"]["seccomp"]["enabled"], true);
    let version = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains("spec: 1.2.0"));
}

#[test]
fn a_user_namespace_maps_the_container_root_to_an_unprivileged_host_id() {
    if !can_run("oci user namespace") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let oci = Oci::new();
    let script = "id -u; cat /proc/self/uid_map; echo x > /tmp/made-inside; \
                  cat /etc/shadow-free 2>&1; touch /etc/not-mine 2>&1; true";
    let bundle = oci.bundle("userns", &["sh", "-c", script], |c| {
        c["root"]["readonly"] = json!(false);
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
    });
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-userns-1"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "0", "root inside: {out:?}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    let made = fs::metadata(bundle.join("rootfs/tmp/made-inside")).unwrap();
    assert_eq!(
        (made.uid(), made.gid()),
        (200000, 200000),
        "the host sees the mapped id"
    );
    assert!(
        out.stdout.contains("Permission denied"),
        "host root's /etc is not the container root's: {out:?}"
    );
    assert!(!bundle.join("rootfs/etc/not-mine").exists());
}

#[test]
fn an_image_symlink_cannot_aim_a_mount_at_the_host() {
    if !can_run("oci symlinked mount target") {
        return;
    }
    let oci = Oci::new();
    let victim = oci.scratch.path().join("victim");
    fs::create_dir_all(&victim).unwrap();
    let bundle = oci.bundle(
        "symlinks",
        &[
            "sh",
            "-c",
            "echo in > /data/sub/file && grep -c 'victim/sub ' /proc/self/mountinfo",
        ],
        |c| {
            c["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/data/sub", "type": "tmpfs", "source": "tmpfs"}));
            c["root"]["readonly"] = json!(false);
        },
    );
    // The image's /data points at a host directory by absolute path.
    std::os::unix::fs::symlink(&victim, bundle.join("rootfs/data")).unwrap();
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-symlink-1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "1",
        "the tmpfs is where the link leads inside: {out:?}"
    );
    assert_eq!(
        fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing made in the host directory"
    );
    // The link was followed inside the root: the mount point is the image's own copy of it.
    let inside = bundle
        .join("rootfs")
        .join(victim.strip_prefix("/").unwrap())
        .join("sub");
    assert!(inside.is_dir(), "{} made inside the root", inside.display());
}

#[test]
fn finer_cgroup_resources_are_written_or_refused_by_name() {
    if !can_run("oci finer resources") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let oci = Oci::new();
    // A real block device for the throttle: the one under the scratch directory's filesystem
    // when /sys/dev/block knows it, else the first of /sys/block.
    let dev = fs::metadata(oci.scratch.path()).unwrap().dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let (major, minor) = if Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
        (major, minor)
    } else {
        let first = fs::read_dir("/sys/block")
            .unwrap()
            .flatten()
            .next()
            .unwrap();
        let text = fs::read_to_string(first.path().join("dev")).unwrap();
        let (a, b) = text.trim().split_once(':').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let script = "cat /sys/fs/cgroup/memory/memory.soft_limit_in_bytes \
                  /sys/fs/cgroup/memory/memory.swappiness \
                  /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device \
                  /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/pids/pids.max";
    let bundle = oci.bundle("finer", &["sh", "-c", script], |c| {
        c["linux"]["resources"] = json!({
            "memory": {"limit": 67108864, "reservation": 33554432, "swappiness": 10},
            "cpu": {"shares": 512},
            "pids": {"limit": 50},
            "blockIO": {"throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}]},
        });
    });
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-finer-1"]);
    let v2 = matches!(
        nix::sys::statfs::statfs("/sys/fs/cgroup").map(|s| s.filesystem_type()),
        Ok(t) if t == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    );
    if v2 {
        assert!(
            out.code != 0 && out.stderr.contains("linux.resources"),
            "{out:?}"
        );
        return;
    }
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "33554432",
            "10",
            &format!("{major}:{minor} 1048576"),
            "512",
            "50"
        ],
        "{out:?}"
    );
    assert_eq!(cgroup_leftovers("oci-finer-1"), Vec::<String>::new());
}

#[test]
fn pause_and_resume_freeze_and_thaw_the_container() {
    if !can_run("oci pause") {
        return;
    }
    let oci = Oci::new();
    let bundle = oci.bundle(
        "pause",
        &[
            "sh",
            "-c",
            "while :; do echo x >> /tmp/ticks; sleep 0.02; done",
        ],
        |c| c["root"]["readonly"] = json!(false),
    );
    let id = "oci-pause-1";
    oci.runtime(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), id])
        .ok();
    let ticks = bundle.join("rootfs/tmp/ticks");
    let count = || fs::read_to_string(&ticks).map_or(0, |t| t.lines().count());
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() < 3 {
        assert!(Instant::now() < deadline, "the loop never ticked");
        std::thread::sleep(Duration::from_millis(20));
    }
    oci.runtime(&["pause", id]).ok();
    // runc's "paused" is not one of the spec's four statuses: read it without the schema.
    let raw: Value = serde_json::from_str(oci.runtime(&["state", id]).ok()).unwrap();
    assert_eq!(raw["status"], "paused");
    let frozen_at = count();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(), frozen_at, "nothing runs while paused");
    assert!(
        oci.runtime(&["pause", id]).code != 0,
        "pausing twice is an error"
    );
    oci.runtime(&["resume", id]).ok();
    assert_eq!(oci.state(id)["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() <= frozen_at {
        assert!(
            Instant::now() < deadline,
            "the loop never went on after resume"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    oci.runtime(&["pause", id]).ok();
    oci.runtime(&["delete", "--force", id]).ok();
    assert_eq!(
        cgroup_leftovers(id),
        Vec::<String>::new(),
        "a paused container is deleted too"
    );
}

#[test]
fn a_joined_network_namespace_takes_net_sysctls_and_the_host_keeps_its_own() {
    if !can_run("oci joined netns") {
        return;
    }
    let name = format!("runner-oci-test-{}", std::process::id());
    let add = Command::new("ip").args(["netns", "add", &name]).status();
    assert!(
        add.is_ok_and(|s| s.success()),
        "ip netns add (iproute2, scripts/install-deps.sh)"
    );
    struct DelNetns(String);
    impl Drop for DelNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _netns = DelNetns(name.clone());
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host_forward.trim() == "1" { "0" } else { "1" };
    let oci = Oci::new();
    let path = format!("/run/netns/{name}");
    let bundle = oci.bundle("netns", &["cat", "/proc/sys/net/ipv4/ip_forward"], |c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(path);
            }
        }
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": want});
    });
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-netns-1"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), want);
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "the host's own value is untouched"
    );
}

/// What busybox needs to run a shell, `echo`, `grep` and `mkdir`, and `execve` for the runtime:
/// an allow-list as a hand-written profile could be, deliberately without `close_range` (newer
/// than most such lists), `capset` (which a runtime may still want after the filter) and `mkdir`.
const ALLOWED_SYSCALLS: [&str; 60] = [
    "read",
    "write",
    "readv",
    "writev",
    "open",
    "openat",
    "close",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "lseek",
    "mmap",
    "munmap",
    "mprotect",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "access",
    "faccessat",
    "faccessat2",
    "pipe",
    "pipe2",
    "dup",
    "dup2",
    "dup3",
    "getpid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getpgrp",
    "setpgid",
    "clone",
    "fork",
    "vfork",
    "wait4",
    "execve",
    "exit",
    "exit_group",
    "uname",
    "fcntl",
    "getcwd",
    "chdir",
    "getdents64",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "prlimit64",
    "getrandom",
    "rseq",
    "futex",
    "readlink",
    "readlinkat",
    "sysinfo",
    "madvise",
];

#[test]
fn a_seccomp_allow_list_without_close_range_runs_the_container() {
    if !can_run("oci seccomp allow-list") {
        return;
    }
    let oci = Oci::new();
    // Without no_new_privs the filter is installed with CAP_SYS_ADMIN, before the runtime's
    // last calls; with defaultErrnoRet 38 every unlisted call answers ENOSYS.
    for (nnp, errno) in [(false, None), (false, Some(38)), (true, Some(38))] {
        let name = format!("allow-{nnp}-{}", errno.unwrap_or(1));
        let script = "grep Seccomp: /proc/self/status; mkdir /tmp/x 2>&1; echo still here";
        let bundle = oci.bundle(&name, &["sh", "-c", script], |c| {
            c["process"]["noNewPrivileges"] = json!(nnp);
            let mut profile = json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
                "syscalls": [{"names": ALLOWED_SYSCALLS.to_vec(), "action": "SCMP_ACT_ALLOW"}],
            });
            if let Some(e) = errno {
                profile["defaultErrnoRet"] = json!(e);
            }
            c["linux"]["seccomp"] = profile;
        });
        let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), &name]);
        assert_eq!(out.code, 0, "{name}: {out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some("Seccomp:\t2"),
            "{name}: {out:?}"
        );
        let refused = if errno == Some(38) {
            "not implemented"
        } else {
            "not permitted"
        };
        assert!(
            lines.get(1).is_some_and(|l| l.contains(refused)),
            "{name}: mkdir must be refused: {out:?}"
        );
        assert_eq!(lines.get(2).copied(), Some("still here"), "{name}");
    }
}

#[test]
fn ambient_capabilities_that_cannot_be_raised_are_skipped_with_a_warning() {
    if !can_run("oci ambient caps") {
        return;
    }
    let oci = Oci::new();
    // runc spec's sets: ambient without inheritable. Only CAP_CHOWN is also inheritable.
    let bundle = oci.bundle("ambient", &["grep", "Cap", "/proc/self/status"], |c| {
        let caps = json!(["CAP_CHOWN", "CAP_KILL"]);
        c["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": ["CAP_CHOWN"], "ambient": caps,
        });
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
    });
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-ambient"]);
    assert_eq!(out.code, 0, "{out:?}");
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("{name} in {out:?}"))
    };
    // A non-root process keeps across exec exactly its ambient capabilities.
    assert_eq!(field("CapAmb:"), 1, "CAP_CHOWN only: {out:?}");
    assert_eq!(field("CapEff:"), 1, "{out:?}");
    assert_eq!(field("CapBnd:"), 0b100001, "{out:?}");
    assert!(
        out.stderr.contains("CAP_KILL not granted"),
        "the skipped one is named: {out:?}"
    );
}

/// The mount namespace of process `pid` (`mnt:[N]`).
fn mnt_ns(pid: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn without_a_new_mount_namespace_the_container_shares_the_runtimes_or_a_joined_one() {
    if !can_run("oci mount namespace not its own") {
        return;
    }
    let oci = Oci::new();
    let no_mnt_ns = |c: &mut Value| {
        c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}, {"type": "ipc"}]);
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
        c["root"]["readonly"] = json!(false);
    };
    // The runtime's own namespace: the runtime runs in a private copy made by unshare(1), so
    // that what the container mounts there goes with it.
    let bundle = oci.bundle("hostmnt", &["readlink", "/proc/self/ns/mnt"], no_mnt_ns);
    let script = format!(
        "readlink /proc/self/ns/mnt; exec {} --root {} run --bundle {} oci-hostmnt",
        env!("CARGO_BIN_EXE_runner"),
        oci.root().display(),
        bundle.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("UNIONFS_BIN", unionfs_bin().unwrap())
        .stdin(Stdio::null())
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(
        lines[0], lines[1],
        "the container is in the runtime's mount namespace"
    );
    assert!(lines[0].starts_with("mnt:["), "{out:?}");

    // One joined by path (as runtime-tools' linux_ns_path does with unshare --mount).
    let mut holder = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "1000"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let holder_pid = holder.id().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while mnt_ns(&holder_pid) == mnt_ns("self") {
        assert!(
            Instant::now() < deadline,
            "unshare never made its namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let want = mnt_ns(&holder_pid);
    let ns_path = format!("/proc/{holder_pid}/ns/mnt");
    let host_mounts_before = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let bundle = oci.bundle(
        "joinmnt",
        &["sh", "-c", "readlink /proc/self/ns/mnt; ls /"],
        |c| {
            no_mnt_ns(c);
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "mount", "path": ns_path}));
        },
    );
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-joinmnt"]);
    assert_eq!(out.code, 0, "{out:?}");
    // exec into such a container lands in its root too, not in the namespace's.
    let bundle_exec = oci.bundle("joinmnt-exec", &["sleep", "1000"], |c| {
        no_mnt_ns(c);
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "mount", "path": format!("/proc/{holder_pid}/ns/mnt")}));
    });
    let exec_id = "oci-joinmnt-exec";
    oci.runtime(&[
        "run",
        "--detach",
        "--bundle",
        bundle_exec.to_str().unwrap(),
        exec_id,
    ])
    .ok();
    let motd = oci.runtime(&["exec", exec_id, "cat", "/etc/motd"]);
    oci.runtime(&["delete", "--force", exec_id]).ok();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(motd.stdout, "from the base layer\n", "{motd:?}");
    assert_eq!(out.stdout.lines().next(), Some(want.as_str()), "{out:?}");
    assert!(
        out.stdout.lines().any(|l| l == "etc"),
        "the root is the bundle's: {out:?}"
    );
    assert_eq!(
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        host_mounts_before,
        "nothing was mounted in the test's own namespace"
    );
    // Masking needs a namespace of the container's own: refused by name.
    let bundle = oci.bundle("joinmask", &["true"], |c| {
        c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "uts"}]);
    });
    let out = oci.runtime(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "oci-joinmask",
    ]);
    assert!(
        out.code != 0
            && out
                .stderr
                .contains("linux.maskedPaths: needs a new mount namespace"),
        "{out:?}"
    );
}

#[test]
fn poststart_hooks_run_after_the_process_is_executed() {
    if !can_run("oci poststart") {
        return;
    }
    let oci = Oci::new();
    let seen = oci.scratch.path().join("seen-by-poststart");
    // The hook reads the container process's command line from the state's pid.
    let hook = format!(
        "pid=$(sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'); tr '\\0' ' ' < /proc/$pid/cmdline > {}",
        seen.display()
    );
    let bundle = oci.bundle("poststart", &["sleep", "1000"], |c| {
        c["hooks"] = json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    });
    for round in 0..3 {
        let id = format!("oci-poststart-{round}");
        oci.runtime(&["create", "--bundle", bundle.to_str().unwrap(), &id])
            .ok();
        // The created process is held stopped for a while, so that its exec comes well after
        // `start` wrote the byte: the hooks must wait for it, not race it.
        let pid = nix::unistd::Pid::from_raw(oci.state(&id)["pid"].as_i64().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let resume = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        });
        oci.runtime(&["start", &id]).ok();
        resume.join().unwrap();
        // start returns after its poststart hooks: the file is there.
        let cmdline = fs::read_to_string(&seen).unwrap();
        assert_eq!(cmdline.trim(), "sleep 1000", "round {round}");
        oci.runtime(&["delete", "--force", &id]).ok();
        fs::remove_file(&seen).unwrap();
    }
}

#[test]
fn an_existing_empty_cgroups_path_is_joined_and_a_busy_one_refused() {
    if !can_run("oci existing cgroupsPath") {
        return;
    }
    // The pids hierarchy (cgroup v1) or the unified one: where the runner puts the group.
    let pids = Path::new("/sys/fs/cgroup/pids");
    let base = if pids.join("cgroup.procs").exists() {
        pids.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    let name = format!("runner-test-existing-{}", std::process::id());
    let dir = base.join(&name);
    fs::create_dir(&dir).unwrap();
    let oci = Oci::new();
    let cg_path = format!("/{name}");
    let bundle = oci.bundle("cgexists", &["cat", "/proc/self/cgroup"], |c| {
        c["linux"]["cgroupsPath"] = json!(cg_path);
        c["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}, {"type": "uts"}]);
    });
    let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), "oci-cgexists"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.lines().any(|l| l.ends_with(&cg_path)),
        "the container ran in the existing group: {out:?}"
    );
    // A group with a process of its own is not the container's to take (runc 1.2).
    let _ = fs::create_dir(&dir);
    let mut squatter = Command::new("sleep").arg("1000").spawn().unwrap();
    fs::write(dir.join("cgroup.procs"), squatter.id().to_string()).unwrap();
    let out = oci.runtime(&["create", "--bundle", bundle.to_str().unwrap(), "oci-cgbusy"]);
    let _ = squatter.kill();
    let _ = squatter.wait();
    let _ = fs::remove_dir(&dir);
    assert!(
        out.code != 0 && out.stderr.contains(&name) && out.stderr.contains("1 process"),
        "{out:?}"
    );
    assert!(!oci.root().join("oci-cgbusy").exists());
}

#[test]
fn root_propagation_applies_to_the_pivoted_root() {
    if !can_run("oci rootfsPropagation") {
        return;
    }
    let oci = Oci::new();
    let cases = [
        ("shared", Some("shared:")),
        ("rshared", Some("shared:")),
        ("unbindable", Some("unbindable")),
        ("rslave", None),
        ("private", None),
    ];
    for (mode, tag) in cases {
        let script = "awk '$5 == \"/\"' /proc/self/mountinfo";
        let bundle = oci.bundle(mode, &["sh", "-c", script], |c| {
            c["linux"]["rootfsPropagation"] = json!(mode);
        });
        let id = format!("oci-prop-{mode}");
        let out = oci.runtime(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(out.code, 0, "{mode}: {out:?}");
        let root_line = out.stdout.lines().next().unwrap_or_default();
        assert!(!root_line.is_empty(), "{mode}: {out:?}");
        match tag {
            Some(tag) => assert!(root_line.contains(tag), "{mode}: {out:?}"),
            None => assert!(!root_line.contains("shared:"), "{mode}: {out:?}"),
        }
        // pivot_root worked: no fall back to chroot (which left the old root's mounts).
        assert!(!out.stderr.contains("chroot"), "{mode}: {out:?}");
    }
}
