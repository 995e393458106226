//! Many containers started and stopped in a row, in every way a container ends (exit, --rm,
//! kept then `rm`, killed with `rm --force`, with --init and background processes), and nothing
//! may pile up: mounts, cgroup directories, unionfs daemons, container directories, descriptors
//! handed to the containers, or descriptors and memory of a daemon under a container that opens
//! many files. (Each runner is a process of its own, so descriptors it leaked would die with it;
//! what could accumulate is on the host, which is what is counted.) Needs root and FUSE (see common).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{can_run, image, leftovers, Env};

macro_rules! require {
    () => {
        if !can_run(module_path!()) {
            return;
        }
    };
}

/// Containers per run of the loop test (`RUNNER_LEAK_CONTAINERS` overrides).
fn rounds() -> usize {
    std::env::var("RUNNER_LEAK_CONTAINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25)
}

/// What the host holds that belongs to containers of `store`: mounts below it, processes
/// naming it (unionfs daemons, runners, containers), and cgroup directories of `ids`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Held {
    mounts: usize,
    processes: usize,
    cgroups: usize,
    container_dirs: usize,
}

fn held(env: &Env, ids: &[String]) -> Held {
    let store = env.store.path().to_string_lossy().into_owned();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts = mountinfo.lines().filter(|l| l.contains(&store)).count();
    let mut processes = 0;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&store) {
                processes += 1;
            }
        }
    }
    let cgroups = ids
        .iter()
        .map(|id| {
            leftovers(id)
                .iter()
                .filter(|l| l.starts_with("cgroup"))
                .count()
        })
        .sum();
    Held {
        mounts,
        processes,
        cgroups,
        container_dirs: env.container_ids().len(),
    }
}

fn fd_count(pid: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

#[test]
fn containers_started_and_stopped_in_a_loop_leave_nothing() {
    require!();
    let env = Env::new();
    let image = image().to_str().unwrap().to_string();
    let started = Instant::now();
    let mut ids = Vec::new();
    let n = rounds();
    for i in 0..n {
        // The container prints its full id (from its cgroup) and its open descriptors.
        let report = "grep -o 'runner-[0-9a-f]*' /proc/self/cgroup | head -1; ls /proc/self/fd | tr '\\n' ' '; echo";
        let out = match i % 5 {
            // Plain exit, removed.
            0 => env.sh(&["--rm"], report),
            // With limits and --init and background processes left behind.
            1 => env.sh(
                &["--rm", "--init", "--memory", "64m", "--pids-limit", "20"],
                &format!("sleep 30 & sleep 30 & {report}"),
            ),
            // Kept, then removed with `rm`.
            2 => {
                let name = format!("kept-{i}");
                let out = env.sh(&["--name", &name], &format!("echo x > /new; {report}"));
                env.runner(&["rm", &name]).ok();
                out
            }
            // A failing command, removed.
            3 => {
                let out = env.sh(&["--rm"], &format!("{report}; exit 7"));
                assert_eq!(out.code, 7, "{out:#?}");
                common::Run { code: 0, ..out }
            }
            // Still running when `rm --force` kills it.
            _ => {
                let name = format!("killed-{i}");
                let mut child = env
                    .command(&[
                        "run",
                        "--name",
                        &name,
                        &image,
                        "sh",
                        "-c",
                        &format!("{report}; echo ready; exec sleep 60"),
                    ])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
                let mut stdout = String::new();
                for l in lines.by_ref() {
                    let l = l.unwrap();
                    if l == "ready" {
                        break;
                    }
                    stdout.push_str(&l);
                    stdout.push('\n');
                }
                // Reap the runner while `rm` waits for it: `rm` counts a zombie runner as alive.
                let rm = env
                    .command(&["rm", "--force", &name])
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                let st = child.wait().unwrap();
                assert_eq!(st.code(), Some(137));
                let rm = common::Run::from(rm.wait_with_output().unwrap());
                assert_eq!(rm.code, 0, "{rm:#?}");
                common::Run {
                    code: 0,
                    stdout,
                    stderr: String::new(),
                }
            }
        };
        let o = out.ok();
        let mut lines = o.lines();
        let id = lines
            .next()
            .and_then(|l| l.strip_prefix("runner-"))
            .unwrap_or_else(|| panic!("no cgroup id: {o}"))
            .to_string();
        // Only stdin, stdout, stderr (and the descriptor `ls` reads /proc/self/fd with): none
        // of the runner's own descriptors reaches the container.
        let fds: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "descriptors in container {i}");
        ids.push(id);
    }
    let took = started.elapsed();
    // The last teardown may still be finishing its daemon's exit: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = held(&env, &ids);
    while now != Held::default() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        now = held(&env, &ids);
    }
    eprintln!(
        "leaks: {n} containers in {took:?} ({:?} each); left: {now:?}",
        took / n as u32
    );
    assert_eq!(now, Held::default(), "left behind after {n} containers");
    for id in &ids {
        assert_eq!(leftovers(id), Vec::<String>::new());
    }
    assert!(!Path::new(&env.containers_dir().join("names/kept-2")).exists());
}

/// Resident memory (kB) of a process.
fn rss_kb(pid: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_daemon_under_a_busy_container_keeps_its_descriptors_and_memory_bounded() {
    require!();
    let env = Env::new();
    // Rounds of work (create, write, read, stat, list, remove 200 files), each acknowledged on a
    // line so the test can sample the daemon between them.
    let script = "mkdir /work; echo ready; \
        while read cmd; do \
          i=0; while [ $i -lt 200 ]; do echo data$i > /work/f$i; cat /work/f$i > /dev/null; i=$((i+1)); done; \
          ls -l /work > /dev/null; cat /etc/motd /etc/passwd > /dev/null; rm -f /work/f*; echo done; \
        done";
    let child = env
        .command(&[
            "run",
            "--rm",
            "--name",
            "busy",
            image().to_str().unwrap(),
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    /// Kills the runner (its container dies with it) and removes what is left, on failure.
    struct Kill<'a>(&'a Env, Option<std::process::Child>);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            if let Some(mut c) = self.1.take() {
                let _ = c.kill();
                let _ = c.wait();
                let _ = self.0.runner(&["rm", "--force", "busy"]);
            }
        }
    }
    let mut guard = Kill(&env, Some(child));
    let child = guard.1.as_mut().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let id = env.container_ids().pop().unwrap();
    let rootfs = env.containers_dir().join(&id).join("rootfs");
    let daemon = unionfs::mount::daemon_pid(&rootfs)
        .expect("the daemon of the container's root")
        .to_string();
    let mut round = |n: usize| {
        for _ in 0..n {
            std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
            assert_eq!(lines.next().unwrap().unwrap(), "done");
        }
    };
    // Warm up (thread stacks, caches, tables at their working size), then measure.
    round(2);
    let (fds0, rss0) = (fd_count(&daemon), rss_kb(&daemon));
    round(10);
    let (fds1, rss1) = (fd_count(&daemon), rss_kb(&daemon));
    drop(stdin);
    let mut child = guard.1.take().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    eprintln!(
        "daemon after 2 rounds: {fds0} fds, {rss0} kB; after 12 rounds (2400 files made and removed): {fds1} fds, {rss1} kB"
    );
    assert!(
        fds1 <= fds0 + 2,
        "the daemon's descriptors grow with the work: {fds0} -> {fds1}"
    );
    // Memory may move a little (allocator, kernel caches answering forgets late), not with
    // the number of files handled.
    assert!(
        rss1 <= rss0 + rss0 / 2 + 2048,
        "the daemon's memory grows with the work: {rss0} kB -> {rss1} kB"
    );
    assert_eq!(leftovers(&id), Vec::<String>::new());
}
