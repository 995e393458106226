//! Faults under a running container: the unionfs daemon that serves its root is killed. The
//! container must not hang on a dead root, the runner must say what happened and take
//! everything down, and the writable layer must hold everything that was fsynced and nothing
//! half-copied. Needs root and FUSE (see common).

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{can_run, image, leftovers, unionfs_bin, Env};

macro_rules! require {
    () => {
        if !can_run(module_path!()) {
            return;
        }
    };
}

/// A union mounted by the test; unmounted on drop (lazily if it must).
struct TestMount(PathBuf);

impl Drop for TestMount {
    fn drop(&mut self) {
        let bin = unionfs_bin().unwrap();
        let ok = Command::new(&bin)
            .arg("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new(&bin)
                .args(["umount", "-l"])
                .arg(&self.0)
                .status();
        }
    }
}

/// Names below `dir`, recursively, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A runner killed (and its container removed) if the test fails before it ends.
struct Victim<'a> {
    env: &'a Env,
    child: Option<std::process::Child>,
}

impl Drop for Victim<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.env.runner(&["rm", "--force", "victim"]);
    }
}

#[test]
fn daemon_killed_under_a_running_container_is_reported_cleaned_up_and_loses_no_synced_data() {
    require!();
    let env = Env::new();
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    // Files written and fsynced before "ready"; then, until the root dies, endless changes:
    // appends to a new file and copy-ups of a lower one. Only shell builtins run in the loop, so
    // nothing needs a page of the (now unreachable) busybox binary: without the runner noticing,
    // this container would spin on ENOTCONN for ever.
    let script = "mkdir /data && i=0 && while [ $i -lt 20 ]; do echo \"file $i\" > /data/f$i; i=$((i+1)); done; \
                  dd if=/dev/zero of=/data/big bs=64k count=16 conv=fsync 2>/dev/null; sync; \
                  echo ready; \
                  while :; do echo more >> /data/growing; echo x >> /etc/motd; done";
    let mut cmd = env.command(&[
        "run",
        "--name",
        "victim",
        image().to_str().unwrap(),
        "sh",
        "-c",
        script,
    ]);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_file.reopen().unwrap()));
    let mut victim = Victim {
        env: &env,
        child: Some(cmd.spawn().unwrap()),
    };
    let child = victim.child.as_mut().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let id = env.container_ids().pop().unwrap();
    let dir = env.containers_dir().join(&id);
    let rootfs = dir.join("rootfs");
    let daemon = unionfs::mount::daemon_pid(&rootfs).expect("the daemon's pid file");
    // Let the loop run a little, so the kill lands in the middle of writes and copy-ups.
    std::thread::sleep(Duration::from_millis(200));
    nix::sys::signal::kill(daemon, nix::sys::signal::SIGKILL).unwrap();

    // The runner notices, kills the container and ends on its own.
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the runner did not end after its root filesystem died"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    victim.child = None;
    let stderr = fs::read_to_string(stderr_file.path()).unwrap();
    let report: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("runner:"))
        .collect();
    // Killed by the runner (137), or first by a SIGBUS from a page of its binary that the dead
    // root could no longer supply (135).
    assert!(
        matches!(status.code(), Some(137 | 135)),
        "{status:?} {report:?}"
    );
    assert!(
        report.iter().any(|l| l.contains("root filesystem died")
            && l.contains(&rootfs.display().to_string())
            && l.contains(&format!("pid {daemon}"))),
        "the runner names the dead root: {report:?}"
    );
    // (The container's own writes fail with ENOTCONN from the kill on; the runner kills it
    // within a poll round, usually before it has printed anything.)
    // Nothing left: no mount, no cgroup, no process (the daemon, the container).
    assert_eq!(leftovers(&id), Vec::<String>::new());
    eprintln!("runner ended {took:?} after the daemon was killed");

    // The same layers mounted again: everything synced is there and whole; the file being
    // copied up is either the old one or a whole new one; no work file is visible.
    let state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
    let layers: Vec<String> = state["layers"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|l| format!("{}=rr", l.as_str().unwrap()))
        .collect();
    let spec = format!(
        "{}=rw:{}=rr:{}",
        dir.join("upper").display(),
        dir.join("init").display(),
        layers.join(":")
    );
    let mnt = tempfile::Builder::new()
        .prefix("remount")
        .tempdir()
        .unwrap();
    let out = Command::new(unionfs_bin().unwrap())
        .args(["mount", &spec])
        .arg(mnt.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let m = TestMount(mnt.path().to_path_buf());
    for i in 0..20 {
        assert_eq!(
            fs::read_to_string(m.0.join(format!("data/f{i}"))).unwrap(),
            format!("file {i}\n")
        );
    }
    let big = fs::read(m.0.join("data/big")).unwrap();
    assert!(big.len() == 1 << 20 && big.iter().all(|b| *b == 0));
    let growing = fs::read_to_string(m.0.join("data/growing")).unwrap_or_default();
    assert!(
        growing.lines().all(|l| l == "more"),
        "appends are whole lines: {growing:?}"
    );
    let motd = fs::read_to_string(m.0.join("etc/motd")).unwrap();
    let rest = motd
        .strip_prefix("from the base layer\n")
        .unwrap_or_else(|| panic!("the copied-up file lost its start: {motd:?}"));
    assert!(rest.lines().all(|l| l == "x"), "{motd:?}");
    // No work directory or temporary copy shows through the union, none is left in the layer.
    let names = tree(&m.0);
    assert!(!names.iter().any(|n| n.contains(".wh.")), "{names:?}");
    drop(m);
    let work = dir.join("upper/.wh..wh.work");
    assert!(
        !work.exists() || fs::read_dir(&work).unwrap().next().is_none(),
        "{:?}",
        tree(&work)
    );
    // The container is recorded as exited, and removable.
    assert!(env.runner(&["ps"]).ok().contains("victim"));
    env.runner(&["rm", "victim"]).ok();
    assert!(env.container_ids().is_empty());
    assert_eq!(leftovers(&id), Vec::<String>::new());
}
