//! Device rules on cgroup v2, enforced by the eBPF program runner attaches to a container's
//! group: checked for real, in a cgroup2 hierarchy (`/sys/fs/cgroup` on a unified host, the
//! hybrid host's `/sys/fs/cgroup/unified` otherwise, through `RUNNER_CGROUP_ROOT`). A loop device
//! holding a known secret stands for a host disk.
//!
//! Needs root, /dev/fuse, busybox-static, losetup and a cgroup2 mount; under `CI=true` a missing
//! prerequisite fails the test.

mod common;
#[path = "common/host_disk.rs"]
mod host_disk;

use std::fs;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{can_run, image, leftovers, unionfs_bin, Env, Run};
use host_disk::HostDisk;
use runner::cgroup::{v2, DeviceRule, Limits};
use serde_json::{json, Value};

/// The cgroup2 mount to run in, or `None` (a failure under `CI=true`).
fn cgroup2_root(test: &str) -> Option<PathBuf> {
    let unified = Path::new("/sys/fs/cgroup/unified");
    let is_cgroup2 = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    };
    if is_cgroup2(Path::new("/sys/fs/cgroup")) {
        return Some(PathBuf::from("/sys/fs/cgroup"));
    }
    if is_cgroup2(unified) {
        return Some(unified.to_path_buf());
    }
    let why = "no cgroup2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified";
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test}: {why}, and CI=true: failing, not skipping"
    );
    eprintln!("SKIPPED {test}: {why}; CI=true makes this a failure");
    None
}

#[test]
fn runner_run_keeps_mknod_and_the_program_refuses_a_host_disk() {
    let test = "cgroup2 docker device policy";
    if !can_run(test) {
        return;
    }
    let Some(root) = cgroup2_root(test) else {
        return;
    };
    let disk = HostDisk::new();
    let env = Env::new();
    let script = format!(
        "grep CapEff /proc/self/status; \
         echo x > /dev/null && head -c 1 /dev/zero >/dev/null && echo null-and-zero-ok; \
         mknod /tmp/disk b {} {} && echo mknod-ok; \
         head -c 16 /tmp/disk; echo head=$?; \
         grep ^0:: /proc/self/cgroup",
        disk.major, disk.minor
    );
    let out = env
        .command(&[
            "run",
            "--rm",
            image().to_str().unwrap(),
            "sh",
            "-c",
            &script,
        ])
        .env("RUNNER_CGROUP_ROOT", &root)
        .output()
        .unwrap();
    let out = Run::from(out);
    let o = out.ok();
    // Where rules are enforced, docker keeps CAP_MKNOD (bit 27): its default set.
    assert!(o.contains("CapEff:\t00000000a80425fb"), "{out:#?}");
    assert!(o.contains("null-and-zero-ok"), "{out:#?}");
    assert!(o.contains("mknod-ok"), "{out:#?}");
    assert!(
        !o.contains("HOST-DISK-SECRET"),
        "a host disk was read: {out:#?}"
    );
    assert!(o.contains("head=1"), "{out:#?}");
    assert!(
        out.stderr.contains("/tmp/disk: Operation not permitted"),
        "{out:#?}"
    );
    // The group (and with it the program) is gone afterwards.
    let line = o
        .lines()
        .find(|l| l.starts_with("0::/"))
        .expect("the cgroup line");
    assert!(line.contains("/runner-"), "{out:#?}");
    let id = line.rsplit("runner-").next().unwrap();
    assert_eq!(leftovers(id), Vec::<String>::new());
}

#[test]
fn oci_device_rules_are_enforced_per_access() {
    let test = "cgroup2 OCI device rules";
    if !can_run(test) {
        return;
    }
    let Some(root) = cgroup2_root(test) else {
        return;
    };
    let disk = HostDisk::new();
    let scratch = tempfile::Builder::new()
        .prefix("runner-cgv2-devices")
        .tempdir()
        .unwrap();
    let bundle = scratch.path().join("bundle");
    fs::create_dir(&bundle).unwrap();
    let spec = Command::new(env!("CARGO_BIN_EXE_runner"))
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(spec.status.success(), "runner spec: {spec:?}");
    common::copy_base_layer(&bundle.join("rootfs"));
    let script = format!(
        "mknod /tmp/disk b {maj} {min} && echo mknod-ok; \
         head -c 16 /tmp/disk; echo \" read=$?\"; \
         echo x > /tmp/disk; echo write=$?; \
         echo x > /dev/null && echo null-ok; \
         grep ' /sys/fs/cgroup ' /proc/self/mountinfo",
        maj = disk.major,
        min = disk.minor
    );
    let path = bundle.join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    config["process"]["args"] = json!(["sh", "-c", script]);
    config["process"]["terminal"] = json!(false);
    config["root"]["readonly"] = json!(false);
    config["process"]["capabilities"] = json!({
        "bounding": ["CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_KILL"],
        "effective": ["CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_KILL"],
        "permitted": ["CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_KILL"],
    });
    // Everything denied, then the host disk for reading only (the runtime's own defaults, as
    // runc's, follow: the default devices and mknod of anything).
    config["linux"]["resources"]["devices"] = json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "b", "major": disk.major, "minor": disk.minor, "access": "r"},
    ]);
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let id = format!("cgv2-dev-{}", std::process::id());
    let state = scratch.path().join("state");
    let (stdout, stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let status = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .env("RUNNER_CGROUP_ROOT", &root)
        .env("UNIONFS_BIN", unionfs_bin().expect("checked by can_run"))
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .status()
        .unwrap();
    let read = |mut f: fs::File| {
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    };
    let (o, e) = (read(stdout), read(stderr));
    assert!(status.success(), "{status:?}\n{o}\n{e}");
    assert!(o.contains("mknod-ok"), "{o}\n{e}");
    assert!(
        o.contains("HOST-DISK-SECRET read=0"),
        "reading was allowed: {o}\n{e}"
    );
    assert!(o.contains("write=1"), "writing was refused: {o}\n{e}");
    assert!(e.contains("Operation not permitted"), "{o}\n{e}");
    assert!(o.contains("null-ok"), "{o}\n{e}");
    // runc spec's read-only cgroup mount: on v2 the container's own group, bound read-only.
    let cg = o
        .lines()
        .find(|l| l.contains(" /sys/fs/cgroup "))
        .unwrap_or_else(|| panic!("no cgroup mount: {o}"));
    assert!(cg.contains(" - cgroup2 ") && cg.contains(" ro,"), "{cg}");
    assert_eq!(leftovers(&id), Vec::<String>::new());
}

/// A process in `dir` (it joins by writing its own pid, then execs `cmd`): its output.
fn in_group(dir: &Path, cmd: &str) -> std::process::Output {
    Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {}/cgroup.procs && exec {cmd}", dir.display()),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_group_whose_rules_deny_mknod_refuses_it() {
    let test = "cgroup2 device program, mknod";
    if !nix::unistd::geteuid().is_root() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test}: not root, CI=true"
        );
        eprintln!("SKIPPED {test}: not root");
        return;
    }
    let Some(root) = cgroup2_root(test) else {
        return;
    };
    let own = v2::own_cgroup_dir(&root, &fs::read_to_string("/proc/self/cgroup").unwrap()).unwrap();
    let rule = |allow, kind, major, minor, access: &str| DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: access.to_string(),
    };
    let limits = Limits {
        devices: vec![
            rule(true, 'a', None, None, "rwm"),
            // /dev/zero (1:5): no mknod, no writing; reading stays.
            rule(false, 'c', Some(1), Some(5), "mw"),
        ],
        ..Default::default()
    };
    let name = format!("runner-devtest-{}", std::process::id());
    let cg = v2::Cgroup::create(&own, &name, &limits).unwrap();
    assert!(cg.has_device_rules());
    let dir = cg.dir().to_path_buf();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = runner::cgroup::remove_dirs(
                std::slice::from_ref(&self.0),
                std::time::Duration::from_secs(5),
            );
        }
    }
    let _remove = Remove(dir.clone());
    // An independent look (bpftool): one device program of ours, attached with ALLOW_MULTI.
    let attached = bpftool(&["cgroup", "show", dir.to_str().unwrap()]);
    let attached = attached.as_array().expect("a list of programs");
    assert_eq!(attached.len(), 1, "{attached:?}");
    assert_eq!(attached[0]["attach_type"], "cgroup_device", "{attached:?}");
    assert_eq!(attached[0]["attach_flags"], "multi", "{attached:?}");
    assert_eq!(attached[0]["name"], "runner_devices", "{attached:?}");
    let prog_id = attached[0]["id"].as_u64().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().display();

    let denied = in_group(&dir, &format!("mknod {t}/zero c 1 5"));
    assert!(!denied.status.success(), "{denied:?}");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Operation not permitted"),
        "{denied:?}"
    );
    assert!(!tmp.path().join("zero").exists());
    // Another node is made; /dev/zero can be read but not opened for writing.
    let made = in_group(&dir, &format!("mknod {t}/null c 1 3"));
    assert!(made.status.success(), "{made:?}");
    let read = in_group(&dir, "head -c 4 /dev/zero");
    assert_eq!(read.stdout, [0u8; 4], "{read:?}");
    let write = in_group(&dir, "sh -c 'echo x > /dev/zero'");
    assert!(!write.status.success(), "{write:?}");
    // Outside the group nothing is refused.
    let outside = Command::new("mknod")
        .arg(tmp.path().join("zero"))
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(outside.success());
    drop(_remove);
    assert!(!dir.exists());
    // The program goes with the group (the kernel frees it a little later).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bpftool_ok(&["prog", "show", "id", &prog_id]) {
        assert!(
            std::time::Instant::now() < deadline,
            "program {prog_id} outlived its cgroup"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `bpftool -j ARGS…`, parsed.
fn bpftool(args: &[&str]) -> Value {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .expect("bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}: {out:?}"))
}

fn bpftool_ok(args: &[&str]) -> bool {
    Command::new("bpftool")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bpftool (apt-get install bpftool)")
        .success()
}
