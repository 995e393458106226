//! The container's root: a union mount served by the `unionfs` binary.
//!
//! The binary is spawned (not the library in-process) so that its daemon stays outside the
//! container's namespaces and cgroup: a memory limit or a freeze that hit the daemon would hang
//! the container's every file access. The daemon is put in its own process group so a Ctrl-C at
//! the terminal reaches the container, not the filesystem under it.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Mount options: every container uid gets ordinary permission checks from the kernel.
pub const MOUNT_OPTIONS: &str = "allow_other,default_permissions";

/// The `unionfs` binary: `$UNIONFS_BIN`, else beside our own executable (or one directory up,
/// for test binaries in `target/debug/deps`), else from `PATH`. Each candidate must be this
/// project's `unionfs` of our version: Debian's `unionfs-fuse` installs another program as
/// `/usr/bin/unionfs`, whose own errors would only confuse.
pub fn find_unionfs_bin() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("UNIONFS_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("$UNIONFS_BIN={} is not a file", p.display());
        }
        check_ours(&p).map_err(|why| anyhow::anyhow!("$UNIONFS_BIN={}: {why}", p.display()))?;
        return Ok(p);
    }
    let mut candidates = Vec::new();
    // The file on the host, not the sealed copy we may run from (crate::exeseal).
    if let Some(exe) = crate::exeseal::original_exe() {
        candidates.extend(exe.ancestors().skip(1).take(2).map(|d| d.join("unionfs")));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("unionfs")));
    }
    let mut foreign = Vec::new();
    for cand in candidates.into_iter().filter(|c| c.is_file()) {
        match check_ours(&cand) {
            Ok(()) => return Ok(cand),
            Err(why) => foreign.push(format!("{}: {why}", cand.display())),
        }
    }
    if !foreign.is_empty() {
        bail!(
            "no unionfs of this project found: {}; set $UNIONFS_BIN, or install this project's \
             unionfs beside runner",
            foreign.join("; ")
        );
    }
    bail!("cannot find the unionfs binary: set $UNIONFS_BIN, or build it (cargo build -p unionfs)")
}

/// Whether `bin --version` says it is this project's `unionfs`, of our version (both come
/// from one workspace).
fn check_ours(bin: &Path) -> std::result::Result<(), String> {
    let want = format!("unionfs {}", env!("CARGO_PKG_VERSION"));
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout);
    let first = said.lines().next().unwrap_or("").trim();
    if out.status.success() && first == want {
        return Ok(());
    }
    let shown = if first.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    } else {
        first.to_string()
    };
    Err(format!(
        "it is another program (its --version says {shown:?}; this runner needs {want:?}, \
         e.g. not Debian's unionfs-fuse)"
    ))
}

/// The arguments of `unionfs mount`: `UPPER=rw:INIT=rr:LAYER=rr:… MNT -o OPTIONS --log-file LOG`,
/// with the image layers given top first. The init layer and the image layers are `rr`: nothing
/// changes them while a container runs (layers are content-addressed), so the kernel may cache
/// the root for long.
pub fn mount_args(
    upper: &Path,
    init: &Path,
    layers_top_first: &[PathBuf],
    mnt: &Path,
    daemon_log: &Path,
) -> Result<Vec<OsString>> {
    let branches: Vec<(&Path, &str)> = [(upper, "rw"), (init, "rr")]
        .into_iter()
        .chain(layers_top_first.iter().map(|l| (l.as_path(), "rr")))
        .collect();
    branch_args(&branches, mnt, daemon_log)
}

/// The arguments of `unionfs mount` for any list of (branch, permission), top first.
pub fn branch_args(
    branches: &[(&Path, &str)],
    mnt: &Path,
    daemon_log: &Path,
) -> Result<Vec<OsString>> {
    let mut spec = Vec::new();
    for (path, perm) in branches {
        let s = path
            .to_str()
            .with_context(|| format!("branch path {} is not UTF-8", path.display()))?;
        if s.contains(':') || s.contains('=') {
            bail!("branch path {s:?} contains ':' or '=', which the branch list cannot carry");
        }
        spec.push(format!("{s}={perm}"));
    }
    Ok(vec![
        "mount".into(),
        spec.join(":").into(),
        mnt.into(),
        "-o".into(),
        MOUNT_OPTIONS.into(),
        "--log-file".into(),
        daemon_log.into(),
    ])
}

/// Whether `path` is a mount point in our mount namespace (from `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let found = mount_points(&info).any(|p| Path::new(&p) == path);
    found
}

/// Mount points listed in a mountinfo text, with `\040`-style escapes decoded.
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_octal)
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mounted union; unmounted by [`UnionMount::unmount`], or on drop as a last resort.
#[derive(Debug)]
pub struct UnionMount {
    bin: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    /// The daemon serving the mount, when it could be found: watched while the container runs
    /// (its exit means the container's root is gone) and awaited after the unmount.
    daemon: Option<Daemon>,
}

/// The process serving a union, held by a pidfd (never confused with a recycled pid).
#[derive(Debug)]
pub struct Daemon {
    pub pid: nix::unistd::Pid,
    pub pidfd: OwnedFd,
}

impl Daemon {
    /// The daemon serving `mnt`: the pid it recorded when the mount became ready (cheap: one
    /// file and one command line), else a scan of `/proc` for `BIN mount … MNT`.
    fn find(bin: &Path, mnt: &Path) -> Option<Daemon> {
        let pid = unionfs::mount::daemon_pid(mnt).or_else(|| find_daemon(bin, mnt))?;
        let pidfd = crate::sys::pidfd_open(pid).ok()?;
        Some(Daemon { pid, pidfd })
    }

    /// True once the process has exited (its pidfd polls readable).
    pub fn has_exited(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

impl UnionMount {
    /// Run `unionfs mount …`, its output going to `log`, and wait until the mount is listed.
    pub fn mount(bin: &Path, args: &[OsString], mnt: &Path, log: &Path) -> Result<UnionMount> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let status = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        if !status.success() {
            let text = fs::read_to_string(log).unwrap_or_default();
            bail!(
                "{} mount failed ({status}): {}",
                bin.display(),
                text.lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        let mut m = UnionMount {
            bin: bin.to_path_buf(),
            mnt: mnt.to_path_buf(),
            mounted: true,
            daemon: None,
        };
        // The binary returns once it serves; poll the mount table briefly in case it returns
        // just before the kernel lists the mount.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_mounted(mnt) {
            if Instant::now() > deadline {
                bail!(
                    "{} mount returned but {} is not a mount point",
                    bin.display(),
                    mnt.display()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        m.daemon = Daemon::find(bin, mnt);
        if m.daemon.is_none() {
            tracing::warn!(mnt = %mnt.display(), "cannot find the unionfs daemon: its death will not be noticed while the container runs");
        }
        Ok(m)
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The daemon serving the mount, if it was found.
    pub fn daemon(&self) -> Option<&Daemon> {
        self.daemon.as_ref()
    }

    /// Unmount, then wait for the daemon to exit: the unmount returns once the kernel has
    /// dropped the mount, and the daemon leaves a moment later (after cleaning its branches).
    /// With the daemon's pidfd in hand, `umount2` is called here and its exit awaited on the
    /// pidfd: no `unionfs umount` process to start, and no polling. Where `umount2` is refused
    /// (a user namespace that does not own the mount: rootless runs), or without a pidfd,
    /// `unionfs umount` does it as before.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        match self.daemon.take() {
            Some(d) => {
                if let Err(e) = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::empty()) {
                    tracing::debug!(mnt = %self.mnt.display(), "umount2: {e}; running unionfs umount");
                    unmount_path(&self.bin, &self.mnt)?;
                }
                wait_for_exit(&d.pidfd, &self.mnt);
                Ok(())
            }
            None => unmount_and_wait(&self.bin, &self.mnt),
        }
    }
}

/// Unmount the union at `mnt` and wait for its daemon to exit (found first, while it still
/// serves the mount).
pub fn unmount_and_wait(bin: &Path, mnt: &Path) -> Result<()> {
    let daemon = Daemon::find(bin, mnt);
    if daemon.is_none() && is_mounted(mnt) {
        tracing::warn!(mnt = %mnt.display(), "cannot find the unionfs daemon; its exit is not awaited");
    }
    unmount_path(bin, mnt)?;
    if let Some(d) = daemon {
        wait_for_exit(&d.pidfd, mnt);
    }
    Ok(())
}

/// Wait up to 5 s for the process behind `pidfd` to exit, then terminate it (the mount is gone by
/// now, so nothing can need it any more).
fn wait_for_exit(pidfd: &OwnedFd, mnt: &Path) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    if matches!(poll(&mut fds, PollTimeout::from(5000u16)), Ok(n) if n > 0) {
        return;
    }
    tracing::warn!(mnt = %mnt.display(), "the unionfs daemon is still running 5 s after the unmount; terminating it");
    let _ = crate::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGTERM);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::from(2000u16)), Ok(n) if n > 0) {
        let _ = crate::sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
    }
}

/// The daemon serving `mnt`: a process other than us whose command line is `BIN mount … MNT …`
/// (the mount command forks it and exits).
fn find_daemon(bin: &Path, mnt: &Path) -> Option<nix::unistd::Pid> {
    let me = std::process::id().to_string();
    let bin_name = bin.file_name()?;
    // `comm` (the first 15 bytes of the name) is cheap to read; `cmdline` takes the target's
    // memory lock and can take milliseconds, so read it only for candidates.
    let comm: Vec<u8> = bin_name.as_bytes().iter().take(15).copied().collect();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && *n != me)
        else {
            continue;
        };
        match fs::read(entry.path().join("comm")) {
            Ok(c) if c.strip_suffix(b"\n").unwrap_or(&c) == comm.as_slice() => {}
            _ => continue,
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_unionfs = args.first().is_some_and(|a0| {
            Path::new(std::ffi::OsStr::from_bytes(a0)).file_name() == Some(bin_name)
        });
        if is_unionfs
            && args.contains(&b"mount".as_slice())
            && args.contains(&mnt.as_os_str().as_bytes())
        {
            return pid.parse().ok().map(nix::unistd::Pid::from_raw);
        }
    }
    None
}

impl Drop for UnionMount {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount_path(&self.bin, &self.mnt) {
                tracing::error!(mnt = %self.mnt.display(), "unmounting the container root: {e:#}");
            }
        }
    }
}

/// Unmount a union mounted by the `unionfs` binary at `mnt`.
pub fn unmount_path(bin: &Path, mnt: &Path) -> Result<()> {
    let out = Command::new(bin)
        .arg("umount")
        .arg(mnt)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} umount", bin.display()))?;
    if out.status.success() && !is_mounted(mnt) {
        return Ok(());
    }
    tracing::warn!(
        mnt = %mnt.display(),
        "{} umount failed ({}): {}; detaching the mount",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    if is_mounted(mnt) {
        nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("umount2({}, MNT_DETACH)", mnt.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_args_put_upper_then_init_then_layers_top_first() {
        let layers = vec![PathBuf::from("/s/l/top"), PathBuf::from("/s/l/base")];
        let log = Path::new("/c/unionfs-daemon.log");
        let args = mount_args(
            Path::new("/c/upper"),
            Path::new("/c/init"),
            &layers,
            Path::new("/c/rootfs"),
            log,
        )
        .unwrap();
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "mount",
                "/c/upper=rw:/c/init=rr:/s/l/top=rr:/s/l/base=rr",
                "/c/rootfs",
                "-o",
                "allow_other,default_permissions",
                "--log-file",
                "/c/unionfs-daemon.log"
            ]
        );
        assert!(mount_args(
            Path::new("/a:b"),
            Path::new("/i"),
            &[],
            Path::new("/m"),
            log
        )
        .is_err());
        assert!(mount_args(
            Path::new("/a=b"),
            Path::new("/i"),
            &[],
            Path::new("/m"),
            log
        )
        .is_err());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let info = "36 35 98:0 / /mnt/with\\040space rw - ext3 /dev/root rw\n";
        assert_eq!(mount_points(info).collect::<Vec<_>>(), ["/mnt/with space"]);
        assert!(is_mounted(Path::new("/")) || !Path::new("/proc/self/mountinfo").exists());
    }
}
