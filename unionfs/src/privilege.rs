//! Who am I, and what may I do: the one place in unionfs that decides how a mount is made and
//! unmade, and which options the caller may ask for. The rest of the crate asks [`Host`], never
//! `geteuid()` itself.
//!
//! Three cases (as runc's `rootless_linux.go` lists its own):
//! - **root in the initial user namespace**: `mount(2)` directly, `allow_other` by default.
//! - **root of a user namespace that owns our mount namespace** (`unshare -Urm`, a rootless
//!   container runner): it holds `CAP_SYS_ADMIN` there and the kernel lets it mount FUSE, so the
//!   same direct path. Both are recognised by `CAP_SYS_ADMIN` in the effective set.
//! - **anyone else** (an ordinary user): the FUSE setuid helper `fusermount3` mounts for us. It
//!   opens `/dev/fuse`, mounts, and hands the descriptor back over a socket (`_FUSE_COMMFD`);
//!   fuser 0.18 does that dance (`Session::new` falls back to it on `EPERM`). The helper forces
//!   `nosuid,nodev` and refuses `allow_other`/`allow_root` unless `/etc/fuse.conf` says
//!   `user_allow_other`; we check that first so the error names the file.
//!
//! Nothing here grants anything: every decision only narrows what is attempted, and the kernel
//! and the setuid helper remain the ones that check.

use std::path::{Path, PathBuf};

/// The bit of `CAP_SYS_ADMIN` in `/proc/self/status` `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;

/// The FUSE setuid helper (libfuse 3, Debian package `fuse3`).
pub const FUSERMOUNT: &str = "fusermount3";

/// How a mount is made and unmade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountPath {
    /// `mount(2)`/`umount2(2)` ourselves: we hold `CAP_SYS_ADMIN` over our mount namespace.
    Kernel,
    /// Through the setuid helper `fusermount3` (and `fusermount3 -u`).
    Fusermount,
}

/// What this process is and may do, read once from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The effective user id (in our user namespace).
    pub euid: u32,
    /// `CAP_SYS_ADMIN` is in our effective capability set.
    pub cap_sys_admin: bool,
    /// `/etc/fuse.conf` has a `user_allow_other` line.
    pub user_allow_other: bool,
    /// `$XDG_RUNTIME_DIR`, when set to an absolute path.
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl Host {
    /// Reads the current process's ids, capabilities, `/etc/fuse.conf` and environment.
    pub fn current() -> Host {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let fuse_conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        Host::from_parts(
            nix::unistd::geteuid().as_raw(),
            &status,
            &fuse_conf,
            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        )
    }

    /// The pure decision from what was read: `/proc/self/status`, `/etc/fuse.conf` and
    /// `$XDG_RUNTIME_DIR` (tests pass their own).
    pub fn from_parts(
        euid: u32,
        proc_status: &str,
        fuse_conf: &str,
        xdg_runtime_dir: Option<PathBuf>,
    ) -> Host {
        let cap_eff = proc_status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        Host {
            euid,
            cap_sys_admin: cap_eff & (1 << CAP_SYS_ADMIN) != 0,
            user_allow_other: fuse_conf.lines().any(|l| l.trim() == "user_allow_other"),
            xdg_runtime_dir: xdg_runtime_dir.filter(|p| p.is_absolute()),
        }
    }

    /// How this process mounts and unmounts.
    pub fn mount_path(&self) -> MountPath {
        if self.cap_sys_admin {
            MountPath::Kernel
        } else {
            MountPath::Fusermount
        }
    }

    /// Whether a mount lets other users in when the options do not say: only when we mount
    /// through the kernel ourselves (see [`crate::config::default_allow_other`]). Through
    /// `fusermount3` the default stays FUSE's own (only our user), so a plain `unionfs mount`
    /// by a user works without `user_allow_other`.
    pub fn default_allow_other(&self) -> bool {
        crate::config::default_allow_other(self.mount_path() == MountPath::Kernel)
    }

    /// Refuses, before anything is mounted, what the helper would refuse: `allow_other` or
    /// `allow_root` asked for by a user when `/etc/fuse.conf` lacks `user_allow_other`.
    pub fn check_options(&self, allow_other: bool, allow_root: bool) -> Result<(), String> {
        if self.mount_path() == MountPath::Kernel || self.user_allow_other {
            return Ok(());
        }
        let asked = match (allow_other, allow_root) {
            (true, _) => "allow_other",
            (false, true) => "allow_root",
            (false, false) => return Ok(()),
        };
        Err(format!(
            "{asked} needs `user_allow_other` in /etc/fuse.conf when unionfs runs without root \
             (uid {}, mounting through {FUSERMOUNT}); ask the administrator to add it, or mount \
             without {asked} (only your own user will see the union)",
            self.euid
        ))
    }

    /// Where daemons record their pids: `/run/unionfs` as root, `$XDG_RUNTIME_DIR/unionfs`
    /// otherwise; `None` when neither applies (then `unionfs umount` does not wait for the
    /// daemon, and nothing is written to a shared directory such as /tmp).
    pub fn run_dir(&self) -> Option<PathBuf> {
        if self.euid == 0 {
            Some(PathBuf::from("/run/unionfs"))
        } else {
            self.xdg_runtime_dir.as_deref().map(|d| d.join("unionfs"))
        }
    }
}

/// The helper to run: `$FUSERMOUNT_PATH` when set (fuser's own override, which the mount path
/// honours too), else `fusermount3` from PATH.
pub fn fusermount_bin() -> std::ffi::OsString {
    std::env::var_os("FUSERMOUNT_PATH").unwrap_or_else(|| FUSERMOUNT.into())
}

/// Runs `fusermount3 -u [-z] -- MOUNTPOINT` and names the helper, its arguments and its output
/// when it fails.
pub fn fusermount_unmount(mountpoint: &Path, lazy: bool) -> anyhow::Result<()> {
    let bin = fusermount_bin();
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    cmd.arg("--").arg(mountpoint);
    let shown = format!(
        "{} -u{} -- {}",
        bin.to_string_lossy(),
        if lazy { " -z" } else { "" },
        mountpoint.display()
    );
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "unmounting {} without root needs {} (package fuse3), which is not there",
            mountpoint.display(),
            bin.to_string_lossy()
        ),
        _ => anyhow::anyhow!("running {shown}: {e}"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    if stderr.contains("Device or resource busy") {
        anyhow::bail!(
            "{} is busy (files open or a process inside it); close them, or use umount -l ({shown}: {stderr})",
            mountpoint.display()
        );
    }
    anyhow::bail!("{shown} failed ({}): {stderr}", out.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_STATUS: &str = "Name:\tx\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n";
    const USER_STATUS: &str = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n";

    #[test]
    fn root_and_userns_root_mount_through_the_kernel_users_through_fusermount() {
        let root = Host::from_parts(0, ROOT_STATUS, "", None);
        assert_eq!(root.mount_path(), MountPath::Kernel);
        assert!(root.default_allow_other());
        let user = Host::from_parts(1000, USER_STATUS, "", None);
        assert_eq!(user.mount_path(), MountPath::Fusermount);
        assert!(!user.default_allow_other());
        // Root without CAP_SYS_ADMIN (a container that dropped it) goes through the helper too,
        // and so does not get allow_other by default.
        let capless_root = Host::from_parts(0, USER_STATUS, "", None);
        assert_eq!(capless_root.mount_path(), MountPath::Fusermount);
        assert!(!capless_root.default_allow_other());
    }

    #[test]
    fn allow_other_without_user_allow_other_is_refused_naming_fuse_conf() {
        let user = Host::from_parts(1000, USER_STATUS, "# user_allow_other\n", None);
        assert!(!user.user_allow_other, "a comment is not the option");
        let e = user.check_options(true, false).unwrap_err();
        assert!(
            e.contains("allow_other") && e.contains("/etc/fuse.conf"),
            "{e}"
        );
        let e = user.check_options(false, true).unwrap_err();
        assert!(e.starts_with("allow_root"), "{e}");
        assert!(user.check_options(false, false).is_ok());
        let allowed = Host::from_parts(1000, USER_STATUS, "user_allow_other\n", None);
        assert!(allowed.check_options(true, true).is_ok());
        let root = Host::from_parts(0, ROOT_STATUS, "", None);
        assert!(root.check_options(true, false).is_ok());
    }

    #[test]
    fn pid_records_go_to_run_as_root_and_to_the_runtime_dir_otherwise() {
        let root = Host::from_parts(0, ROOT_STATUS, "", Some("/run/user/0".into()));
        assert_eq!(root.run_dir(), Some(PathBuf::from("/run/unionfs")));
        let user = Host::from_parts(1000, USER_STATUS, "", Some("/run/user/1000".into()));
        assert_eq!(
            user.run_dir(),
            Some(PathBuf::from("/run/user/1000/unionfs"))
        );
        let relative = Host::from_parts(1000, USER_STATUS, "", Some("run".into()));
        assert_eq!(relative.run_dir(), None);
        assert_eq!(
            Host::from_parts(1000, USER_STATUS, "", None).run_dir(),
            None
        );
    }
}
