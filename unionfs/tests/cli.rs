//! The three command-line forms, and each bad input's message and exit code.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn overlay_form_with_lowerdir_upperdir_workdir() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("L1/x", "L1");
    fx.write("L2/x", "L2");
    fx.write("L2/y:colon", "colon");
    fx.write("Lc:olon/z", "z");
    fx.mkdir("U");
    fx.mkdir("W");
    fx.mkdir("mnt");
    let opts = format!(
        "lowerdir={}:{}:{},upperdir={},workdir={}",
        fx.path("L1").display(),
        fx.path("L2").display(),
        fx.path("Lc:olon").display().to_string().replace(':', "\\:"),
        fx.path("U").display(),
        fx.path("W").display()
    );
    let out = run(&["-o", &opts, fx.path("mnt").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = Mounted {
        mnt: fx.path("mnt"),
    };
    assert!(is_mounted(&m.mnt));
    assert_eq!(names(&m.mnt), ["x", "y:colon", "z"]);
    assert_eq!(read(&m.path("x")), "L1");
    fs::write(m.path("new"), "upper").unwrap();
    assert_eq!(read(&fx.path("U/new")), "upper");
    assert!(
        !fx.path("U/.wh..wh.work").exists(),
        "the given workdir is used instead"
    );
}

#[test]
fn mount_helper_form_source_mountpoint_options() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/a", "a");
    fx.write("B/b", "b");
    fx.mkdir("mnt");
    // What mount.fuse runs: SOURCE MOUNTPOINT -o OPTIONS, with generic options mixed in.
    let opts = format!(
        "rw,nosuid,nodev,br={}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let out = run(&["unionfs", fx.path("mnt").to_str().unwrap(), "-o", &opts]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = Mounted {
        mnt: fx.path("mnt"),
    };
    assert_eq!(names(&m.mnt), ["a", "b"]);
    drop(m);
    // SOURCE as the branch list itself.
    let spec = format!("{}:{}", fx.path("A").display(), fx.path("B").display());
    let out = run(&[&spec, fx.path("mnt").to_str().unwrap(), "-o", "dev,suid"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = Mounted {
        mnt: fx.path("mnt"),
    };
    assert_eq!(names(&m.mnt), ["a", "b"]);
}

#[test]
fn mount_t_fuse_through_mount_fuse3() {
    if !can_mount() {
        return;
    }
    if !std::path::Path::new("/usr/sbin/mount.fuse3").exists()
        && !std::path::Path::new("/sbin/mount.fuse3").exists()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs mount.fuse3 (package fuse3)"
        );
        eprintln!("skipping: no mount.fuse3");
        return;
    }
    let fx = Fixture::new();
    fx.write("A/a", "a");
    fx.write("B/b", "b");
    fx.mkdir("mnt");
    // `-t fuse` with TYPE#SOURCE names the helper by path; `-t fuse.unionfs` finds the same
    // helper as `unionfs` on mount's own (sanitised) PATH once installed.
    let opts = format!(
        "br={}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let out = Command::new("mount")
        .args(["-t", "fuse", "-o", &opts, &format!("{BIN}#none")])
        .arg(fx.path("mnt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = Mounted {
        mnt: fx.path("mnt"),
    };
    assert_eq!(names(&m.mnt), ["a", "b"]);
}

#[test]
fn umount_unmounts_and_the_daemon_exits() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/a", "a");
    let spec = format!("{}", fx.path("A").display());
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let out = run(&["umount", m.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!is_mounted(&m.mnt));
    let out = run(&["umount", m.mnt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a mountpoint"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn foreground_mode_serves_until_unmounted() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/a", "a");
    fx.mkdir("mnt");
    let mut child = Command::new(BIN)
        .args([
            "mount",
            "-f",
            fx.path("A").to_str().unwrap(),
            fx.path("mnt").to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    // Poll mountinfo (not a sleep): the foreground daemon mounts, then serves.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !is_mounted(&fx.path("mnt")) {
        assert!(
            std::time::Instant::now() < deadline,
            "foreground mount never appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "foreground daemon exited early"
        );
        std::thread::yield_now();
    }
    assert_eq!(names(&fx.path("mnt")), ["a"]);
    // SIGTERM unmounts and ends the daemon.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&fx.path("mnt")));
}

/// Each bad input: exit code and a message naming the problem.
#[test]
fn bad_inputs_are_refused_with_a_clear_message() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("B");
    fx.mkdir("mnt");
    fx.write("file", "not a dir");
    let a = fx.path("A").display().to_string();
    let b = fx.path("B").display().to_string();
    let mnt = fx.path("mnt").display().to_string();
    let missing = fx.path("missing").display().to_string();
    let file = fx.path("file").display().to_string();
    let inside = fx.path("A/inner");
    fs::create_dir_all(&inside).unwrap();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec!["mount".into(), format!("{a}:{missing}"), mnt.clone()],
            2,
            "does not exist",
        ),
        (
            vec!["mount".into(), format!("{a}:{file}"), mnt.clone()],
            2,
            "not a directory",
        ),
        (
            vec!["mount".into(), format!("{a}:{a}"), mnt.clone()],
            2,
            "given twice",
        ),
        (
            vec!["mount".into(), format!("{a}=xx"), mnt.clone()],
            2,
            "unknown permission",
        ),
        (
            vec!["mount".into(), format!("{a}::{b}"), mnt.clone()],
            2,
            "empty branch",
        ),
        (
            vec![
                "mount".into(),
                format!("{a}:{b}"),
                inside.display().to_string(),
            ],
            2,
            "inside branch",
        ),
        (
            vec!["mount".into(), format!("{a}:{b}"), missing.clone()],
            2,
            "does not exist",
        ),
        (
            vec![
                "mount".into(),
                format!("{a}:{b}"),
                mnt.clone(),
                "-o".into(),
                "frobnicate".into(),
            ],
            2,
            "unknown mount option",
        ),
        (
            vec![
                "-o".into(),
                format!("lowerdir={a},upperdir={b}:{a}"),
                mnt.clone(),
            ],
            2,
            "exactly one writable branch",
        ),
        (
            vec!["-o".into(), format!("upperdir={b}"), mnt.clone()],
            2,
            "needs lowerdir",
        ),
    ];
    for (args, code, needle) in cases {
        let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let out = run(&argv);
        assert_eq!(out.status.code(), Some(code), "{argv:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{argv:?}: expected {needle:?} in {:?}",
            stderr(&out)
        );
        assert!(!is_mounted(&fx.path("mnt")));
    }
    // A busy mountpoint: something is mounted there already.
    let m = mount(&a, &fx.path("mnt"), &[]);
    let out = run(&["mount", &b, &mnt]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    drop(m);
}

#[test]
fn missing_dev_fuse_is_named() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("mnt");
    // In a private mount namespace, hide /dev behind an empty tmpfs.
    let script = format!(
        "mount -t tmpfs none /dev && exec {BIN} mount {} {}",
        fx.path("A").display(),
        fx.path("mnt").display()
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no /dev/fuse"), "{}", stderr(&out));
}
