//! unionfs without root: an ordinary user (created by the test) mounts the seed's example
//! through `fusermount3`, outside any user namespace, and unmounts it with `unionfs umount`.
//! What the host forbids (`allow_other` without `user_allow_other`, `/dev/fuse` closed to users)
//! is a clear error naming it.

mod common;
#[path = "common/unprivileged.rs"]
mod unprivileged;

use std::fs;
use std::path::Path;

use unprivileged::{describe, Session};

/// The mountinfo line of `mnt`, if mounted.
fn mountinfo_line(mnt: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let m = mnt.to_string_lossy().into_owned();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(m.as_str()))
        .map(str::to_string)
}

#[test]
fn a_user_mounts_writes_deletes_and_unmounts_through_fusermount3() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("unionfs-rootless");
    let bin = s.reachable_binary(&d.dir, common::BIN);
    let script = format!(
        r#"cd {dir}
mkdir A B C run
chmod 700 run
echo a > A/a
echo b > B/b
echo lower > B/shared
echo upper > A/shared
"#,
        dir = d.dir.display()
    );
    let out = s.sh(&script);
    assert!(out.status.success(), "{}", describe(&out));
    let run = d.path("run");

    let out = s
        .command(&bin)
        .args(["mount", "A:B", "C"])
        .current_dir(&d.dir)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unionfs mount as a user: {}",
        describe(&out)
    );
    let mnt = d.path("C");
    let line = mountinfo_line(&mnt).expect("the union is in mountinfo");
    assert!(line.contains(" - fuse.unionfs "), "{line}");
    assert!(
        line.contains(&format!("user_id={}", s.user.uid)),
        "the mount belongs to the user: {line}"
    );
    assert!(
        !line.contains("allow_other"),
        "no allow_other by default: {line}"
    );
    // The daemon runs as the user, not as root.
    let pid = unionfs::mount::daemon_pid(&mnt);
    // (daemon_pid reads the user's runtime dir only with its XDG_RUNTIME_DIR; look it up there.)
    // (The directory also holds the daemon's statistics socket.)
    let rec = fs::read_dir(run.join("unionfs"))
        .expect("the daemon recorded its pid under $XDG_RUNTIME_DIR/unionfs")
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pid"))
        .expect("one pid record");
    let daemon: i32 = fs::read_to_string(&rec).unwrap().trim().parse().unwrap();
    let status = fs::read_to_string(format!("/proc/{daemon}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(2) == Some(&s.user.uid.to_string()),
        "daemon euid: {uid_line}"
    );
    assert!(
        pid.is_none(),
        "root's own run dir has no record of a user's daemon"
    );

    // The seed's example, through the mount, as the user.
    let out = s.sh(&format!(
        r#"cd {mnt}
ls -a | sort | tr '\n' ' '; echo
cat a b shared
echo new > new
echo changed >> b
rm shared
ls | sort | tr '\n' ' '
"#,
        mnt = mnt.display()
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(". .. a b shared "), "{stdout}");
    assert_eq!(lines.next(), Some("a"));
    assert_eq!(lines.next(), Some("b"));
    assert_eq!(lines.next(), Some("upper"), "A's shared hides B's");
    assert_eq!(lines.next(), Some("a b new "), "after the delete: {stdout}");
    // A new file lands in A (the writable top), B is untouched, a copy-up of b lands in A,
    // the deleted name is a whiteout in A, and B keeps its own copy.
    assert_eq!(fs::read_to_string(d.path("A/new")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(d.path("A/b")).unwrap(), "b\nchanged\n");
    assert_eq!(fs::read_to_string(d.path("B/b")).unwrap(), "b\n");
    assert!(d.path("A/.wh.shared").exists(), "a whiteout in A");
    assert!(!d.path("A/shared").exists());
    assert_eq!(fs::read_to_string(d.path("B/shared")).unwrap(), "lower\n");
    assert!(!d.path("B/new").exists());
    // Files made through the mount belong to the user.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(d.path("A/new")).unwrap().uid(), s.user.uid);

    let out = s
        .command(&bin)
        .args(["umount", "C"])
        .current_dir(&d.dir)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "unionfs umount as a user: {}",
        describe(&out)
    );
    assert!(mountinfo_line(&mnt).is_none(), "unmounted");
    // umount waited for the daemon (its pid record says so) before returning.
    assert!(
        !Path::new(&format!("/proc/{daemon}")).exists()
            || fs::read_to_string(format!("/proc/{daemon}/stat")).is_ok_and(|s| s.contains(") Z ")),
        "the daemon is gone after umount"
    );
    assert!(!rec.exists(), "the pid record is removed");

    // Unmounting what is not mounted names it.
    let out = s
        .command(&bin)
        .args(["umount", "C"])
        .current_dir(&d.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a mountpoint"),
        "{}",
        describe(&out)
    );
}

#[test]
fn what_the_host_forbids_a_user_is_a_clear_error() {
    if !unprivileged::can_run() {
        return;
    }
    let s = Session::start();
    let d = s.user_dir("unionfs-rootless-refused");
    let bin = s.reachable_binary(&d.dir, common::BIN);
    let out = s.sh(&format!("cd {}; mkdir A B C", d.dir.display()));
    assert!(out.status.success(), "{}", describe(&out));
    let mnt = d.path("C");
    let fuse_conf = fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
    let user_allow_other = fuse_conf.lines().any(|l| l.trim() == "user_allow_other");

    // allow_other asked for explicitly: refused before anything is mounted, naming fuse.conf.
    if !user_allow_other {
        let out = s
            .command(&bin)
            .args(["mount", "A:B", "C", "-o", "allow_other"])
            .current_dir(&d.dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("allow_other")
                && err.contains("user_allow_other")
                && err.contains("/etc/fuse.conf"),
            "{err}"
        );
        assert!(mountinfo_line(&mnt).is_none());
    } else {
        eprintln!("/etc/fuse.conf has user_allow_other: the refusal is not testable here");
    }

    // /dev/fuse closed to users (0600, as on this machine before the test opened it).
    s.set_fuse_mode(0o600);
    let out = s
        .command(&bin)
        .args(["mount", "A:B", "C"])
        .current_dir(&d.dir)
        .output()
        .unwrap();
    s.set_fuse_mode(0o666);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/fuse") && err.contains("permission denied") && err.contains("600"),
        "{err}"
    );
    assert!(mountinfo_line(&mnt).is_none());

    // No helper (fuser's FUSERMOUNT_PATH points where none is): the error names the helper
    // and its package.
    let out = s
        .command(&bin)
        .args(["mount", "A:B", "C"])
        .current_dir(&d.dir)
        .env("FUSERMOUNT_PATH", "/nonexistent/fusermount3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fusermount3") && err.contains("fuse3"),
        "{err}"
    );
    assert!(mountinfo_line(&mnt).is_none());
}

/// Rootless podman, its storage in the user's own directory, with `unionfs` as the overlay
/// driver's `mount_program`: podman mounts from inside its user namespace (unionfs mounts
/// directly there), the container's root is the union, and its changes (a write, a delete)
/// are what `podman diff` and a committed image see.
#[test]
fn rootless_podman_uses_unionfs_as_its_mount_program() {
    if !unprivileged::can_run() {
        return;
    }
    if std::process::Command::new("podman")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs podman (scripts/install-deps.sh)"
        );
        eprintln!("skipping: no podman");
        return;
    }
    let s = Session::start();
    let d = s.user_dir("unionfs-rootless-podman");
    let bin = s.reachable_binary(&d.dir, common::BIN);
    let out = s.sh(&format!(
        r#"cd {dir}
mkdir -p rootfs/bin rootfs/etc rootfs/tmp run
chmod 700 run
cp /bin/busybox rootfs/bin/busybox
for t in sh ls cat echo id rm grep; do ln -s busybox rootfs/bin/$t; done
echo hello > rootfs/etc/hello
tar -C rootfs -cf rootfs.tar .
"#,
        dir = d.dir.display()
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let podman = |args: &[&str]| {
        let mut c = s.command("podman");
        c.args(["--root", d.path("root").to_str().unwrap()])
            .args(["--runroot", d.path("run/podman").to_str().unwrap()])
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!("overlay.mount_program={}", bin.display()))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            // runc: crun refuses a hybrid cgroup hierarchy (v1 controllers beside cgroup2).
            .args(["--runtime", "runc"])
            .args(args)
            .env("XDG_RUNTIME_DIR", d.path("run"))
            .current_dir(&d.dir);
        c.output().unwrap()
    };
    let ok = |args: &[&str]| {
        let out = podman(args);
        assert!(out.status.success(), "podman {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    ok(&["import", "rootfs.tar", "localhost/rootless:1"]);
    let info = ok(&[
        "info",
        "--format",
        "{{.Host.Security.Rootless}} {{.Store.GraphOptions}}",
    ]);
    assert!(
        info.starts_with("true ") && info.contains(bin.to_str().unwrap()),
        "{info}"
    );
    let text = ok(&[
        "run",
        "--name",
        "c1",
        "--network",
        "none",
        "localhost/rootless:1",
        "sh",
        "-c",
        "cat /etc/hello; grep ' / / ' /proc/self/mountinfo; echo x > /tmp/x; rm /etc/hello; id -u",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "hello", "{text}");
    assert!(
        lines[1].contains(" - fuse.unionfs "),
        "the root is the union: {text}"
    );
    assert_eq!(lines[2], "0", "{text}");
    let diff = ok(&["diff", "c1"]);
    assert!(diff.lines().any(|l| l == "D /etc/hello"), "{diff}");
    assert!(diff.lines().any(|l| l == "A /tmp/x"), "{diff}");
    ok(&["commit", "c1", "localhost/rootless:2"]);
    let text = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "localhost/rootless:2",
        "sh",
        "-c",
        "cat /tmp/x; ls /etc/hello 2>&1 || true",
    ]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "x", "{text}");
    assert!(
        lines[1].contains("No such file"),
        "the delete was committed: {text}"
    );
    let _ = podman(&["rm", "--all", "--force"]);
    // Stops the user's podman pause process too: nothing of the user is left running.
    let _ = podman(&["system", "reset", "--force"]);
    unprivileged::assert_no_processes_left(s.user.uid, 0, 0);
}
