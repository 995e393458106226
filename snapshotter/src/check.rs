//! Before serving, one real union mount made the way containerd will make them: `mount.fuse3
//! unionfs MNT -o lowerdir=…,upperdir=…,workdir=…,allow_other -t unionfs`, which runs `unionfs`
//! from `PATH`. A snapshotter whose mounts containerd cannot perform would fail much later, on the
//! first container, with a message about some temporary directory; this says what is missing at
//! start.
//!
//! The options are those of a container's root ([`crate::mounts::for_snapshot`]), `allow_other`
//! included: root and the root of a user namespace owning its mount namespace (rootless
//! containerd in rootlesskit) mount FUSE themselves and may ask for it, but an ordinary user's
//! mount goes through fusermount3, which refuses it without `user_allow_other` in
//! /etc/fuse.conf. Probing without it would pass here and fail on the first container.

use std::path::Path;
use std::process::Command;

use crate::mounts::{for_snapshot, Access, Dirs};

/// Mounts a one-file union under `root`, reads the file through it, unmounts it. The error
/// names the command that failed and what it printed.
pub fn union_mount_works(root: &Path) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("check-")
        .tempdir_in(root)
        .map_err(|e| format!("cannot create a directory under {}: {e}", root.display()))?;
    let p = |n: &str| dir.path().join(n);
    for d in ["lower", "upper", "work", "mnt"] {
        std::fs::create_dir(p(d)).map_err(|e| format!("creating {}: {e}", p(d).display()))?;
    }
    std::fs::write(p("lower/probe"), "unionfs-snapshotter\n")
        .map_err(|e| format!("writing {}: {e}", p("lower/probe").display()))?;
    let own = Dirs {
        fs: p("upper"),
        work: p("work"),
    };
    let mount = for_snapshot(Access::ReadWrite, &own, &[p("lower")]);
    let opts = mount[0].options.join(",");
    let out = Command::new("mount.fuse3")
        .arg("unionfs")
        .arg(p("mnt"))
        .args(["-o", &opts, "-t", "unionfs"])
        .output()
        .map_err(|e| format!("cannot run mount.fuse3 (apt-get install fuse3): {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("not found") {
            " (mount.fuse3 runs `unionfs` from PATH: put the unionfs binary in a PATH directory of this daemon and of containerd)"
        } else {
            ""
        };
        return Err(format!(
            "`mount.fuse3 unionfs {} -o {opts} -t unionfs` failed ({}): {}{hint}",
            p("mnt").display(),
            out.status,
            stderr.trim()
        ));
    }
    let read = std::fs::read_to_string(p("mnt/probe"));
    let unmounted = unmount(&p("mnt"));
    match read {
        Ok(s) if s == "unionfs-snapshotter\n" => {}
        other => {
            return Err(format!(
                "the union mount does not show its lower branch: {other:?}"
            ))
        }
    }
    unmounted
}

fn unmount(mnt: &Path) -> Result<(), String> {
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .arg(mnt)
            .output()
            .map_err(|e| format!("{cmd}: {e}"))
            .and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{cmd} {}: {}",
                        mnt.display(),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))
                }
            })
    };
    // umount(8) as root; fusermount3 where a user mounted it.
    run("umount", &[]).or_else(|e| run("fusermount3", &["-u"]).map_err(|e2| format!("{e}; {e2}")))
}
