//! Real containers: namespaces, limits, user/env/workdir, volumes, exit codes and signals,
//! commit, and that nothing is left on the host afterwards. Needs root and FUSE (see common).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::{can_run, image, leftovers, Env};

macro_rules! require {
    () => {
        if !can_run(module_path!()) {
            return;
        }
    };
}

#[test]
fn pid_1_and_no_host_process_visible() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm"],
        "echo $$; ps -o pid,comm; ls /proc | grep -c '^[0-9]'",
    );
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines[0], "1", "{out:#?}");
    // ps shows only the shell (pid 1) and ps itself, both of the container.
    let pids: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(pids.len() <= 3 && pids.contains(&"1"), "{out:#?}");
    let visible: usize = lines.last().unwrap().parse().unwrap();
    assert!(
        visible <= 4,
        "the container's /proc lists {visible} processes: {out:#?}"
    );
}

#[test]
fn own_hostname_and_uts_namespace() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm", "--hostname", "box-1"],
        "hostname; cat /etc/hostname; grep box-1 /etc/hosts",
    );
    assert_eq!(
        out.ok().lines().take(2).collect::<Vec<_>>(),
        ["box-1", "box-1"]
    );
    // Default: the short id, as docker.
    let out = env.sh(&["--rm"], "hostname");
    let h = out.ok().trim().to_string();
    assert!(
        h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()),
        "{h:?}"
    );
    assert_ne!(h, nix::unistd::gethostname().unwrap().to_string_lossy());
}

#[test]
fn network_namespace_has_only_lo_and_it_is_up() {
    require!();
    let env = Env::new();
    let out = env.sh(&["--rm"], "ls /sys/class/net; ip -o link show lo");
    let o = out.ok();
    assert_eq!(o.lines().next(), Some("lo"), "{o}");
    assert_eq!(
        o.lines().filter(|l| !l.contains(':')).count(),
        1,
        "only lo: {o}"
    );
    assert!(o.contains("UP"), "lo is up: {o}");
    let out = env.sh(
        &["--rm"],
        "ping -c 1 -W 1 127.0.0.1 >/dev/null && echo pong",
    );
    assert_eq!(out.ok().trim(), "pong");
}

#[test]
fn proc_sys_dev_and_capabilities() {
    require!();
    let env = Env::new();
    let script = "cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -E '^(CapEff|NoNewPrivs|SigIgn|SigBlk)' /proc/self/status; \
                  ls /dev; touch /sys/x 2>&1; echo; \
                  (echo 1 > /proc/sys/vm/drop_caches) 2>&1 | grep -q Read-only && echo sysctl-ro; \
                  echo keys=$(wc -c < /proc/keys); cat /proc/self/mountinfo | awk '{print $5}'";
    let out = env.sh(&["--rm"], script);
    let o = out.ok();
    assert!(o.starts_with("sh -c "), "{o}");
    // docker's default set: 0xa80425fb.
    assert!(o.contains("CapEff:\t00000000a80425fb"), "{o}");
    assert!(o.contains("NoNewPrivs:\t1"), "{o}");
    // No signal ignored or blocked from the runner leaks into the command.
    assert!(
        o.contains("SigIgn:\t0000000000000000") && o.contains("SigBlk:\t0000000000000000"),
        "{o}"
    );
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx",
    ] {
        assert!(o.lines().any(|l| l == dev), "/dev/{dev} missing: {o}");
    }
    assert!(
        o.contains("Read-only file system"),
        "/sys is read-only: {o}"
    );
    // docker's read-only and masked paths: the host's sysctls, its keyring list.
    assert!(o.contains("sysctl-ro") && o.contains("keys=0"), "{o}");
    // The host's mounts are gone after pivot_root.
    assert!(
        !o.lines()
            .any(|l| l.starts_with("/sys/fs/cgroup") || l.starts_with("/work")),
        "{o}"
    );
}

#[test]
fn the_root_is_the_merged_layers() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm"],
        "cat /etc/motd /etc/top-file; ls /etc/base-only 2>&1; true",
    );
    let o = out.ok();
    assert!(
        o.contains("from the base layer") && o.contains("from the top layer"),
        "{o}"
    );
    assert!(
        o.contains("No such file"),
        "the top layer's whiteout hides base-only: {o}"
    );
}

#[test]
fn memory_limit_kills_with_137() {
    require!();
    let env = Env::new();
    let out = env.runner(&[
        "run",
        "--rm",
        "--memory",
        "32m",
        image().to_str().unwrap(),
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=96M",
        "count=1",
    ]);
    assert_eq!(out.code, 137, "{out:#?}");
    assert!(out.stderr.contains("out-of-memory"), "{out:#?}");
    // Within the limit it runs.
    let out = env.runner(&[
        "run",
        "--rm",
        "--memory",
        "64m",
        image().to_str().unwrap(),
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=8M",
        "count=1",
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    require!();
    let env = Env::new();
    // The inner shell forks until it cannot (busybox sh then exits); the outer one counts the
    // container's processes with a glob, which needs no fork once the limit is reached.
    let script = "sh -c 'n=0; while [ $n -lt 40 ]; do sleep 3 & n=$((n+1)); done' 2>/dev/null; set -- /proc/[0-9]*; echo $#";
    let out = env.sh(&["--rm", "--pids-limit", "10"], script);
    let procs: usize = out.ok().trim().parse().unwrap();
    assert!(procs <= 10, "{procs} processes under --pids-limit 10");
    let out = env.sh(&["--rm"], script);
    assert_eq!(
        out.ok().trim(),
        "41",
        "the shell and 40 sleeps without a limit"
    );
}

#[test]
fn cpu_quota_holds_a_busy_loop_near_its_share() {
    require!();
    let env = Env::new();
    // CPU ticks (1/100 s) a busy loop gets in 2 s of wall time, as the shell's children's times.
    let script = "timeout 2 sh -c 'while :; do :; done' 2>/dev/null; set -- $(cut -d' ' -f16,17 /proc/$$/stat); echo $(($1 + $2))";
    let out = env.sh(&["--rm", "--cpus", "0.25"], script);
    let ticks: u32 = out.ok().trim().parse().unwrap();
    // 50 expected, 200 without the limit; the lower bound leaves room for a busy test machine.
    assert!(
        (15..=80).contains(&ticks),
        "0.25 CPU for 2 s gave {ticks} ticks"
    );
}

#[test]
fn cpuset_pins_the_container() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm", "--cpuset-cpus", "0"],
        "grep Cpus_allowed_list /proc/self/status",
    );
    assert_eq!(out.ok().split_whitespace().last(), Some("0"));
}

#[test]
fn env_workdir_and_user() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm", "-e", "FOO=bar baz", "-w", "/srv/app", "-u", "1000:1001"],
        "echo \"$FOO\"; pwd; id -u; id -g; echo $HOME; grep CapEff /proc/self/status; touch /tmp/ok && echo tmp-writable",
    );
    let o = out.ok();
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(
        &lines[..5],
        ["bar baz", "/srv/app", "1000", "1001", "/"],
        "{o}"
    );
    assert!(o.contains("CapEff:\t0000000000000000"), "{o}");
    assert!(o.contains("tmp-writable"), "/tmp keeps its 1777 mode: {o}");
    let out = env.sh(&["--rm", "-u", "nobody"], "id -u");
    assert_eq!(out.ok().trim(), "65534");
    let out = env.sh(&["--rm", "-u", "nosuchuser"], "true");
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(out.stderr.contains("unable to find user"), "{out:#?}");
}

#[test]
fn volumes_read_write_and_read_only() {
    require!();
    let env = Env::new();
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in"), "from the host\n").unwrap();
    let h = host.path().to_str().unwrap();
    let rw = format!("{h}:/data");
    let ro = format!("{h}:/ro:ro");
    let out = env.sh(
        &["--rm", "-v", &rw, "-v", &ro],
        "cat /data/in; echo out > /data/out; echo x > /ro/x 2>/dev/null || echo ro-refused",
    );
    let o = out.ok();
    assert!(
        o.contains("from the host") && o.contains("ro-refused"),
        "{o}"
    );
    assert_eq!(
        fs::read_to_string(host.path().join("out")).unwrap(),
        "out\n"
    );
    assert!(!host.path().join("x").exists());
    // A missing source: a clear error and nothing left.
    let out = env.sh(&["--rm", "-v", "/no/such/dir:/x"], "true");
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("does not exist"), "{out:#?}");
    assert!(env.container_ids().is_empty());
}

#[test]
fn read_only_root() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm", "--read-only"],
        "touch /x 2>&1; echo ok > /dev/shm/y && cat /dev/shm/y",
    );
    let o = out.ok();
    assert!(
        o.contains("Read-only file system") && o.contains("ok"),
        "{o}"
    );
}

#[test]
fn exit_codes_and_docker_errors() {
    require!();
    let env = Env::new();
    assert_eq!(env.sh(&["--rm"], "exit 3").code, 3);
    // A process of the container killed by a signal: 128+N through the shell.
    assert_eq!(env.sh(&["--rm"], "sleep 5 & kill -9 $!; wait $!").code, 137);
    // pid 1 itself killed by a signal (with --init the reaper passes it on).
    assert_eq!(env.sh(&["--rm", "--init"], "kill -TERM $$").code, 143);
    let out = env.runner(&["run", "--rm", image().to_str().unwrap(), "no-such-command"]);
    assert_eq!(out.code, 127);
    assert!(
        out.stderr
            .contains("exec: \"no-such-command\": executable file not found in $PATH"),
        "{out:#?}"
    );
    let out = env.runner(&["run", "--rm", image().to_str().unwrap(), "/etc/motd"]);
    assert_eq!(out.code, 126, "{out:#?}");
    let out = env.runner(&["run", "--rm", "no-such-image", "true"]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("unknown image"), "{out:#?}");
    // This test's store has no demo image: the message says how to build it.
    let out = env.runner(&["run", "--rm", "demo", "true"]);
    assert_eq!(out.code, 125);
    assert!(
        out.stderr.contains("scripts/build-demo-image.sh"),
        "{out:#?}"
    );
    let out = env.runner(&[
        "run",
        "--rm",
        "--memory",
        "1k",
        image().to_str().unwrap(),
        "true",
    ]);
    assert_eq!(out.code, 125);
    assert!(out.stderr.contains("minimum"), "{out:#?}");
    assert!(env.container_ids().is_empty(), "failed runs leave nothing");
}

/// Send `sig` to the runner once the container has started, and return the runner's exit code.
fn signal_runner(env: &Env, opts: &[&str], script: &str, sig: nix::sys::signal::Signal) -> i32 {
    let image = image().to_str().unwrap();
    let mut args = vec!["run"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&[image, "sh", "-c", script]);
    let mut child = env
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the container's "ready" line so the signal does not race the start.
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "the runner did not end after {sig}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn signals_are_forwarded() {
    require!();
    use nix::sys::signal::Signal;
    let env = Env::new();
    // A pid 1 with a handler gets the forwarded signal.
    let code = signal_runner(
        &env,
        &["--rm"],
        "trap 'exit 7' TERM; echo ready; while :; do sleep 1; done",
        Signal::SIGTERM,
    );
    assert_eq!(code, 7);
    // With --init, a command without a handler dies of the forwarded signal: 128+15.
    let code = signal_runner(
        &env,
        &["--rm", "--init"],
        "echo ready; exec sleep 30",
        Signal::SIGTERM,
    );
    assert_eq!(code, 143);
    let code = signal_runner(
        &env,
        &["--rm", "--init"],
        "echo ready; exec sleep 30",
        Signal::SIGUSR1,
    );
    assert_eq!(code, 128 + 10);
    assert!(env.container_ids().is_empty());
}

#[test]
fn nothing_is_left_after_exit() {
    require!();
    let env = Env::new();
    // Kept (no --rm): only the container directory with its writable layer stays.
    let out = env.sh(
        &[
            "--name",
            "keep",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
        ],
        "sleep 1 & echo x > /new; exit 0",
    );
    out.ok();
    let ids = env.container_ids();
    assert_eq!(ids.len(), 1);
    let id = &ids[0];
    assert_eq!(leftovers(id), Vec::<String>::new());
    let dir = env.containers_dir().join(id);
    assert_eq!(fs::read_to_string(dir.join("upper/new")).unwrap(), "x\n");
    assert_eq!(
        fs::read_dir(dir.join("rootfs")).unwrap().count(),
        0,
        "rootfs is unmounted and empty"
    );
    let ps = env.runner(&["ps"]);
    assert!(
        ps.ok().contains("keep") && ps.stdout.contains("exited (0)"),
        "{ps:#?}"
    );
    env.runner(&["rm", "keep"]).ok();
    assert!(env.container_ids().is_empty());
    assert!(!env.runner(&["ps"]).ok().contains("keep"));

    // --rm: nothing at all, even when the container leaves background processes behind.
    let out = env.sh(&["--rm", "--init"], "sleep 100 & sleep 100 & echo started");
    out.ok();
    assert!(env.container_ids().is_empty());
}

#[test]
fn commit_then_run_sees_the_changes() {
    require!();
    let env = Env::new();
    env.sh(
        &["--name", "c1", "--hostname", "committed-host"],
        "echo new > /etc/new-file; rm /etc/motd; echo 'extra' >> /etc/hosts",
    )
    .ok();
    env.runner(&["commit", "c1", "derived"]).ok();
    // The committed layer has the change and the whiteout, and none of the init layer's files.
    let out = env.runner(&["run", "--rm", "derived", "sh", "-c", "cat /etc/new-file; ls /etc/motd 2>&1; cat /etc/top-file; grep -c extra /etc/hosts; hostname"]);
    let o = out.stdout.clone();
    assert!(o.contains("new\n"), "{out:#?}");
    assert!(
        o.contains("No such file"),
        "the deletion is committed: {out:#?}"
    );
    assert!(o.contains("from the top layer"), "{out:#?}");
    assert!(
        o.lines().any(|l| l == "0"),
        "init-layer files never land in a commit: {out:#?}"
    );
    assert!(!o.contains("committed-host"), "{out:#?}");
    env.runner(&["rm", "c1"]).ok();
}

#[test]
fn chroot_fallback_path() {
    require!();
    let env = Env::new();
    let out = env
        .command(&[
            "run",
            "--rm",
            "--no-pivot",
            image().to_str().unwrap(),
            "sh",
            "-c",
            "echo $$; ls /etc/motd; hostname",
        ])
        .env("RUNNER_LOG", "info")
        .output()
        .unwrap();
    let out = common::Run::from(out);
    let o = out.ok();
    assert!(o.starts_with("1\n/etc/motd\n"), "{out:#?}");
    assert!(
        out.stderr.contains("chroot"),
        "the fallback is logged: {out:#?}"
    );
    assert!(env.container_ids().is_empty());
}

#[test]
fn tty_gives_a_terminal() {
    require!();
    let env = Env::new();
    let out = env.sh(
        &["--rm", "-t"],
        "test -t 0 && test -t 1 && tty && echo $TERM",
    );
    let o = out.ok();
    assert!(o.contains("/dev/pts/0") && o.contains("xterm"), "{out:#?}");
}

#[test]
fn cgroup2_join_with_clone_into_cgroup() {
    require!();
    // On a hybrid host the cgroup2 mount carries no controller we use, but joining a v2 group by
    // clone3(CLONE_INTO_CGROUP) works there; on a unified host every test takes the v2 path.
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if nix::sys::statfs::statfs("/sys/fs/cgroup")
        .unwrap()
        .filesystem_type()
        == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    {
        std::path::PathBuf::from("/sys/fs/cgroup")
    } else if unified.join("cgroup.procs").exists() {
        unified.to_path_buf()
    } else {
        eprintln!("no cgroup2 mount on this host: the v2 join is covered by the unit tests only");
        return;
    };
    let env = Env::new();
    let out = env
        .command(&[
            "run",
            "--rm",
            image().to_str().unwrap(),
            "grep",
            "^0::",
            "/proc/self/cgroup",
        ])
        .env("RUNNER_CGROUP_ROOT", &root)
        .output()
        .unwrap();
    let out = common::Run::from(out);
    let line = out.ok().trim().to_string();
    assert!(
        line.starts_with("0::/") && line.contains("/runner-"),
        "{out:#?}"
    );
    let id = line.rsplit("runner-").next().unwrap();
    assert_eq!(leftovers(id), Vec::<String>::new());
}

#[test]
fn a_killed_runner_leaves_a_dead_container_that_rm_cleans() {
    require!();
    let env = Env::new();
    let image = image().to_str().unwrap();
    let mut child = env
        .command(&[
            "run",
            "--name",
            "victim",
            "--memory",
            "64m",
            image,
            "sh",
            "-c",
            "echo ready; exec sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
    child.kill().unwrap(); // SIGKILL: the runner cannot clean up
    child.wait().unwrap();
    let id = env.container_ids().pop().unwrap();
    // The container dies with its runner (parent-death signal); its mount and cgroup stay.
    let deadline = Instant::now() + Duration::from_secs(5);
    while leftovers(&id)
        .iter()
        .any(|l| l.starts_with("process") && l.contains("sleep"))
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(env.runner(&["ps"]).ok().contains("dead"));
    assert!(
        !leftovers(&id).is_empty(),
        "the mount and cgroup are still there"
    );
    env.runner(&["rm", "victim"]).ok();
    assert_eq!(leftovers(&id), Vec::<String>::new());
    assert!(env.container_ids().is_empty());
}

#[test]
fn rm_refuses_a_running_container_unless_forced() {
    require!();
    let env = Env::new();
    let image = image().to_str().unwrap();
    let mut child = env
        .command(&[
            "run",
            "--name",
            "busy",
            image,
            "sh",
            "-c",
            "echo ready; exec sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
    assert!(env.runner(&["ps"]).ok().contains("running"));
    let out = env.runner(&["rm", "busy"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is running"), "{out:#?}");
    env.runner(&["rm", "--force", "busy"]).ok();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(137));
    assert!(env.container_ids().is_empty());
}

#[test]
fn user_namespace_maps_ids_and_confines_capabilities() {
    require!();
    let env = Env::new();
    let script = "cat /proc/self/uid_map; id -u; echo hi > /tmp/f && cat /tmp/f; \
                  mknod /dev/shm/n c 1 3 2>/dev/null && echo mknod-allowed || echo mknod-refused";
    let out = env.sh(&["--rm", "--userns"], script);
    let o = out.ok();
    let map: Vec<&str> = o.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", "0", "4294967295"], "{o}");
    assert!(o.contains("\n0\nhi\n"), "{o}");
    // CAP_MKNOD of a user namespace does not reach device nodes; without one, docker's set has it.
    assert!(o.contains("mknod-refused"), "{o}");
    assert!(env.sh(&["--rm"], script).ok().contains("mknod-allowed"));
}

#[test]
fn limits_are_written_and_the_container_is_in_every_group() {
    require!();
    if !std::path::Path::new("/sys/fs/cgroup/pids").is_dir() {
        eprintln!("not a cgroup v1 host: the v2 writers are covered by the unit tests");
        return;
    }
    let env = Env::new();
    let image = image().to_str().unwrap();
    let mut args = vec![
        "run",
        "--rm",
        "--memory",
        "48m",
        "--pids-limit",
        "33",
        "--cpus",
        "0.5",
        "--cpuset-cpus",
        "0",
    ];
    let bfq = fs::read_dir("/sys/fs/cgroup/blkio")
        .map(|_| {
            // blkio.weight (CFQ) or blkio.bfq.weight exists in child groups only: probe one.
            let probe = std::path::Path::new("/sys/fs/cgroup/blkio/runner-test-probe");
            let _ = fs::create_dir(probe);
            let ok = probe.join("blkio.weight").exists() || probe.join("blkio.bfq.weight").exists();
            let _ = fs::remove_dir(probe);
            ok
        })
        .unwrap_or(false);
    if bfq {
        args.extend(["--io-weight", "300"]);
    }
    args.extend([image, "sh", "-c", "echo ready; read x || true"]);
    let mut child = env
        .command(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
    let id = env.container_ids().pop().unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(env.containers_dir().join(&id).join("state.json")).unwrap(),
    )
    .unwrap();
    let pid = state["pid"].as_i64().unwrap().to_string();
    let dirs: Vec<std::path::PathBuf> = state["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().into())
        .collect();
    let read = |ctrl: &str, file: &str| {
        let d = dirs
            .iter()
            .find(|d| d.to_string_lossy().contains(&format!("/{ctrl}/")))
            .unwrap();
        fs::read_to_string(d.join(file)).unwrap().trim().to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (48u64 << 20).to_string()
    );
    assert_eq!(read("pids", "pids.max"), "33");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    if bfq {
        let d = dirs
            .iter()
            .find(|d| d.to_string_lossy().contains("/blkio/"))
            .unwrap();
        let w = fs::read_to_string(d.join("blkio.weight"))
            .or_else(|_| fs::read_to_string(d.join("blkio.bfq.weight")))
            .unwrap();
        assert!(w.split_whitespace().any(|t| t == "300"), "{w}");
    }
    // Joined before exec: the container's first process is in every group.
    for d in &dirs {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid),
            "{pid} not in {}: {procs}",
            d.display()
        );
    }
    drop(child.stdin.take()); // EOF: `read` returns, the shell exits
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(leftovers(&id), Vec::<String>::new());
}
