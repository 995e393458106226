//! Helpers for the snapshotter's tests: what they need to run, the unionfs binary, and mounting
//! a snapshot's mounts the way containerd 1.6 does (`mount/mount_linux.go`).
//!
//! These tests make real mounts: they need root, /dev/fuse, `mount.fuse3` (fuse3) and the
//! unionfs binary (built here when missing). Without them a test fails when `CI=true`, and
//! otherwise says loudly that it skipped.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use containerd_snapshots::api::types::Mount;

fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if which("mount.fuse3").is_none() {
        return Some("no mount.fuse3 (apt-get install fuse3)".into());
    }
    if unionfs_dir().is_none() {
        return Some("no unionfs binary (cargo build -p unionfs)".into());
    }
    None
}

/// True when the test can run. When it cannot: panics under `CI=true`, else prints why.
pub fn can_run(test: &str) -> bool {
    can_run_with(test, missing_prerequisite())
}

pub fn can_run_with(test: &str, missing: Option<String>) -> bool {
    match missing {
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

pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// The directory holding the `unionfs` binary: `$UNIONFS_BIN`'s, else this target directory's
/// (built with cargo, in a target dir of its own, when it is not there yet).
pub fn unionfs_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(p) = std::env::var_os("UNIONFS_BIN") {
            let p = PathBuf::from(p);
            // mount.fuse3 runs the program by the name `unionfs`.
            return (p.file_name()? == "unionfs").then(|| p.parent().map(Path::to_path_buf))?;
        }
        let me = PathBuf::from(env!("CARGO_BIN_EXE_unionfs-snapshotter"));
        let dir = me.parent()?;
        if dir.join("unionfs").is_file() {
            return Some(dir.to_path_buf());
        }
        let target = dir.parent()?.join("snapshotter-tests-unionfs");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "unionfs",
                "--bin",
                "unionfs",
                "--target-dir",
            ])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .ok()?;
        let built = target.join("debug");
        (status.success() && built.join("unionfs").is_file()).then_some(built)
    })
    .clone()
}

/// `PATH` with the unionfs binary's directory first (what containerd's must look like).
pub fn path_with_unionfs() -> OsString {
    let mut dirs = vec![unionfs_dir().expect("checked by can_run")];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    dirs.extend(
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .map(PathBuf::from),
    );
    std::env::join_paths(dirs).unwrap()
}

/// A mounted snapshot, unmounted (lazily, so a failing test still cleans up) on drop.
pub struct Mounted {
    pub target: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts `mounts` on `target` as containerd 1.6 does: a `fuse3.*` type through `mount.fuse3
/// SOURCE TARGET -o OPT... -t TYPE-WITHOUT-PREFIX`, anything else by mount(2) (`bind` with
/// `rbind` and `ro` as the flags say).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Mounted {
    assert_eq!(
        mounts.len(),
        1,
        "this snapshotter gives one mount per snapshot: {mounts:?}"
    );
    let m = &mounts[0];
    if let Some(sub) = m.r#type.strip_prefix("fuse3.") {
        let mut cmd = Command::new("mount.fuse3");
        cmd.arg(&m.source).arg(target);
        for o in &m.options {
            cmd.args(["-o", o]);
        }
        let out = cmd
            .args(["-t", sub])
            .env("PATH", path_with_unionfs())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting {m:?} on {}: {out:?}",
            target.display()
        );
    } else {
        use nix::mount::{mount, MsFlags};
        assert_eq!(m.r#type, "bind", "unexpected mount type: {m:?}");
        let mut flags = MsFlags::MS_BIND;
        if m.options.iter().any(|o| o == "rbind") {
            flags |= MsFlags::MS_REC;
        }
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("bind {m:?} on {}: {e}", target.display()));
        if m.options.iter().any(|o| o == "ro") {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .unwrap_or_else(|e| panic!("read-only remount of {}: {e}", target.display()));
        }
    }
    Mounted {
        target: target.to_path_buf(),
    }
}

/// Unmounts now (not lazily), so that what was written is in the branches for what follows.
/// EBUSY is retried for up to 2.5 s as containerd's `mount.Unmount` does (50 tries, 50 ms
/// apart): a child that a parallel test forks holds our open files until it execs.
pub fn unmount(m: Mounted) {
    let mut tries = 0;
    loop {
        match nix::mount::umount2(&m.target, nix::mount::MntFlags::empty()) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!(
                "unmounting {} (after {tries} retries): {e}",
                m.target.display()
            ),
        }
    }
    std::mem::forget(m);
}
pub mod containerd;
