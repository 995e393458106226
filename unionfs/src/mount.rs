//! Mounting: the fuser session (threads, options), the daemon that serves it in the background,
//! and unmounting.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use fuser::{MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::ForkResult;

use crate::config::Config;
use crate::fs::Union;
use crate::fuse::UnionFuse;
use crate::privilege::{Host, MountPath};
use crate::stats::Stats;
use std::sync::Arc;

/// The fuser session settings for a config (threads; the mount itself is ours, see `mount`).
pub fn session_config(cfg: &Config) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.acl = session_acl(cfg);
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = true;
    c.cpu_affine_workers = cfg.cpu_affine;
    c
}

fn session_acl(cfg: &Config) -> SessionACL {
    if cfg.allow_other {
        SessionACL::All
    } else if cfg.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    }
}

/// Mounts a FUSE filesystem at the config's mountpoint with mount(2) and returns the
/// `/dev/fuse` descriptor that serves it.
///
/// We mount ourselves rather than through fuser's `Session::new` because fuser unmounts its
/// mountpoint *path* when the session ends; after `unionfs umount` and a new mount at the same
/// place, that would unmount the new union. A session made `from_fd` never unmounts anything.
fn kernel_mount(cfg: &Config) -> anyhow::Result<OwnedFd> {
    use nix::mount::MsFlags;
    let dev = nix::fcntl::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| anyhow::anyhow!("open /dev/fuse: {e}"))?;
    let mut flags = MsFlags::empty();
    // A container root needs its setuid binaries and device nodes, as on overlayfs.
    if cfg.nodev {
        flags |= MsFlags::MS_NODEV;
    }
    if cfg.nosuid {
        flags |= MsFlags::MS_NOSUID;
    }
    if cfg.noexec {
        flags |= MsFlags::MS_NOEXEC;
    }
    if cfg.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    // The kernel checks permissions against the merged attributes, as on any filesystem; the
    // daemon runs as root and must not be the one deciding.
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
        std::os::fd::AsRawFd::as_raw_fd(&dev),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if cfg.allow_other || cfg.allow_root {
        data.push_str(",allow_other");
    }
    nix::mount::mount(
        Some(cfg.fsname.as_str()),
        &cfg.mountpoint,
        Some("fuse.unionfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| match e {
        nix::errno::Errno::EPERM => anyhow::anyhow!(
            "mounting {}: permission denied (CAP_SYS_ADMIN here, but not over this mount namespace: a user namespace mounts only in a mount namespace it owns; unshare -m, or run unionfs outside it to mount through fusermount3)",
            cfg.mountpoint.display()
        ),
        e => anyhow::anyhow!("mounting {}: {e}", cfg.mountpoint.display()),
    })?;
    Ok(dev)
}

/// Checks that FUSE is usable before anything else is done. The product never changes
/// `/dev/fuse`'s mode: a host that keeps it 0600 (Debian's udev rule makes it 0666) must be set
/// up by its administrator for users to mount.
pub fn check_fuse_device() -> anyhow::Result<()> {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no /dev/fuse: load the fuse module (modprobe fuse), or give a container --device /dev/fuse"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata("/dev/fuse")
                .map(|m| format!("{:o}", m.permissions().mode() & 0o7777))
                .unwrap_or_else(|_| "unknown".into());
            anyhow::bail!(
                "cannot open /dev/fuse as uid {}: permission denied (its mode is {mode}); FUSE \
                 without root needs /dev/fuse readable and writable by you (mode 0666, as \
                 Debian's udev rule sets it): ask the administrator",
                nix::unistd::geteuid()
            )
        }
        Err(e) => anyhow::bail!("cannot open /dev/fuse: {e}"),
    }
}

/// Mounts through the setuid helper `fusermount3` for a caller without `CAP_SYS_ADMIN`.
///
/// fuser's `Session::new` does the libfuse dance (socketpair, `_FUSE_COMMFD`, the descriptor
/// back by `SCM_RIGHTS`; its `mount(2)` attempt first fails with EPERM). It unmounts when the
/// session ends only if the mount is still live (it polls the descriptor first), so a union
/// unmounted by `unionfs umount` and mounted again at the same place is never touched.
fn helper_mount(cfg: &Config, fs: UnionFuse) -> anyhow::Result<Session<UnionFuse>> {
    let mut options = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("unionfs".into()),
        // As on the kernel path: the kernel checks permissions, not the daemon.
        MountOption::DefaultPermissions,
        // The helper forces these for a user anyway; say so rather than be surprised.
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    if cfg.noexec {
        options.push(MountOption::NoExec);
    }
    if cfg.read_only {
        options.push(MountOption::RO);
    }
    let mut shown_opts = vec![
        format!("fsname={}", cfg.fsname),
        "subtype=unionfs,default_permissions,nosuid,nodev".to_string(),
    ];
    if cfg.noexec {
        shown_opts.push("noexec".into());
    }
    if cfg.read_only {
        shown_opts.push("ro".into());
    }
    let mut c = session_config(cfg);
    // fuser passes allow_other for both (it filters allow_root's other users itself).
    if c.acl != SessionACL::Owner {
        shown_opts.push("allow_other".into());
    }
    c.mount_options = options;
    let shown = format!(
        "{} -o {} -- {}",
        crate::privilege::fusermount_bin().to_string_lossy(),
        shown_opts.join(","),
        cfg.mountpoint.display()
    );
    Session::new(fs, &cfg.mountpoint, &c).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "mounting {} without root needs {} (package fuse3): {e}",
            cfg.mountpoint.display(),
            crate::privilege::fusermount_bin().to_string_lossy()
        ),
        _ => anyhow::anyhow!(
            "mounting {} without root through `{shown}` failed: {}",
            cfg.mountpoint.display(),
            e.to_string().trim()
        ),
    })
}

/// A mounted union, ready to be served.
pub struct Mounted {
    session: Session<UnionFuse>,
    /// A duplicate of the session's `/dev/fuse` descriptor, to see the session end.
    dev: OwnedFd,
    /// What `destroy` does, for an exit that cannot wait for it.
    cleanup: Box<dyn FnOnce() + Send>,
    /// Where `unionfs stats` asks for the session's request counters.
    stats_socket: Option<crate::stats::Socket>,
}

/// Mounts the union and returns the session, ready and serving once `run` is called (the
/// kernel's INIT has been answered when this returns).
pub fn mount(cfg: &Config) -> anyhow::Result<Mounted> {
    // Held back from here on: once the mount is visible, SIGTERM must unmount, not kill.
    shutdown_signals().thread_block()?;
    let host = Host::current();
    host.check_options(cfg.allow_other, cfg.allow_root)
        .map_err(anyhow::Error::msg)?;
    let union = Union::new(cfg).map_err(|e| anyhow::anyhow!("opening branches: {e}"))?;
    let cleanup = Box::new(union.cleanup_later());
    let stats = Arc::new(Stats::default());
    let fs = UnionFuse::new(union, Arc::clone(&stats));
    let session = match host.mount_path() {
        MountPath::Kernel => {
            let dev = kernel_mount(cfg)?;
            Session::from_fd(fs, dev, session_acl(cfg), session_config(cfg)).map_err(|e| {
                let _ = nix::mount::umount2(&cfg.mountpoint, nix::mount::MntFlags::MNT_DETACH);
                anyhow::anyhow!(
                    "starting the FUSE session on {}: {e}",
                    cfg.mountpoint.display()
                )
            })?
        }
        MountPath::Fusermount => helper_mount(cfg, fs)?,
    };
    let dev = std::os::fd::AsFd::as_fd(&session)
        .try_clone_to_owned()
        .map_err(|e| anyhow::anyhow!("duplicating the /dev/fuse descriptor: {e}"))?;
    // Listening before the mount is reported ready, so `unionfs stats` works as soon as
    // `unionfs mount` returns.
    let canonical =
        std::fs::canonicalize(&cfg.mountpoint).unwrap_or_else(|_| cfg.mountpoint.clone());
    Ok(Mounted {
        session,
        dev,
        cleanup,
        stats_socket: crate::stats::serve(stats, &canonical),
    })
}

/// Serves a mounted session until it is unmounted. SIGTERM, SIGINT and SIGHUP unmount
/// (lazily, like `umount -l`) so the daemon never leaves a dead mount behind. Once the kernel
/// has ended the session the process is gone within [`crate::shutdown::GRACE`], whatever its
/// request threads are doing.
pub fn serve(mounted: Mounted, mountpoint: &Path) -> anyhow::Result<()> {
    let Mounted {
        session,
        dev,
        cleanup,
        stats_socket,
    } = mounted;
    // Removed on either way out: the watcher's (request threads stuck) and the normal one.
    let watcher_socket = stats_socket.clone();
    let mnt = mountpoint.to_path_buf();
    crate::shutdown::watch(dev, move || {
        cleanup();
        forget_pid_file(&mnt);
        if let Some(sock) = watcher_socket {
            sock.remove();
        }
    })?;
    let signals = shutdown_signals();
    // Blocked (again: `mount` blocked them before the mount appeared, so a signal sent the
    // moment it did is not lost) in this thread before the session threads start, so only
    // the waiter below takes them.
    signals.thread_block()?;
    let mnt = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("unionfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                tracing::info!(?sig, "unmounting on signal");
                let _ = unmount(&mnt, true);
            }
        })?;
    let served = session.run();
    if let Some(sock) = stats_socket {
        sock.remove();
    }
    served?;
    Ok(())
}

fn shutdown_signals() -> SigSet {
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
}

/// Runs the mount in the background: forks, the child mounts and reports back through a pipe,
/// the parent returns once the mount serves (or with the child's error).
pub fn daemonize(cfg: &Config, log_file: Option<&Path>) -> anyhow::Result<()> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    match fork_process()? {
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut msg = String::new();
            std::fs::File::from(read_end).read_to_string(&mut msg)?;
            match msg.strip_prefix("OK") {
                Some(_) => Ok(()),
                None if msg.is_empty() => {
                    anyhow::bail!("the unionfs daemon exited before the mount was ready")
                }
                None => anyhow::bail!("{}", msg.trim_start_matches("ERR ")),
            }
        }
        ForkResult::Child => {
            drop(read_end);
            let code = daemon_child(cfg, log_file, write_end);
            std::process::exit(code);
        }
    }
}

fn daemon_child(cfg: &Config, log_file: Option<&Path>, report: OwnedFd) -> i32 {
    let mut report = std::fs::File::from(report);
    let _ = nix::unistd::setsid();
    if let Err(e) = redirect_stdio(log_file) {
        let _ = write!(report, "ERR {e}");
        return 1;
    }
    crate::init_logging(false);
    let session = match mount(cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = write!(report, "ERR {e:#}");
            return 1;
        }
    };
    write_pid_file(&cfg.mountpoint);
    let _ = report.write_all(b"OK");
    drop(report);
    let code = match serve(session, &cfg.mountpoint) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("serving {}: {e:#}", cfg.mountpoint.display());
            1
        }
    };
    forget_pid_file(&cfg.mountpoint);
    code
}

/// Removes this daemon's pid record of `mountpoint`: after a lazy unmount nobody waits for us
/// to remove it. Only if it is still ours (a new daemon on the same mountpoint may have
/// replaced it).
fn forget_pid_file(mountpoint: &Path) {
    let Some(file) = pid_file(mountpoint) else {
        return;
    };
    if std::fs::read_to_string(&file).is_ok_and(|s| s.trim() == std::process::id().to_string()) {
        let _ = std::fs::remove_file(file);
    }
}

fn redirect_stdio(log_file: Option<&Path>) -> anyhow::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let err = match log_file {
        // An explicit mode: the daemon runs with umask 0 (for exact create modes).
        Some(p) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(p)?,
        None => null.try_clone()?,
    };
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&err)?;
    Ok(())
}

fn fork_process() -> anyhow::Result<ForkResult> {
    crate::sys::fork()
}

/// Where the daemon serving `mountpoint` records its pid, so `unionfs umount` can wait for it
/// to finish (the daemon cleans its branches up after the kernel lets go of the mount). In
/// [`Host::run_dir`]; `None` when there is none (a user without `$XDG_RUNTIME_DIR`).
fn pid_file(mountpoint: &Path) -> Option<std::path::PathBuf> {
    let key: String = mountpoint
        .to_string_lossy()
        .chars()
        .map(|c| if c == '/' { '%' } else { c })
        .collect();
    Some(Host::current().run_dir()?.join(format!("{key}.pid")))
}

/// Records this process as the daemon of `mountpoint` (best effort: without a run directory,
/// umount just does not wait).
fn write_pid_file(mountpoint: &Path) {
    if let Some(file) = pid_file(mountpoint) {
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(file, std::process::id().to_string());
    }
}

/// The pid of the daemon serving `mountpoint`, as it recorded it when the mount became ready
/// (before `unionfs mount` returned). `None` when there is no record, or when the recorded
/// process is gone or is not a unionfs daemon of that mountpoint (a stale record). A program that
/// depends on the union (a container runner) watches this process to learn that its filesystem
/// died.
pub fn daemon_pid(mountpoint: &Path) -> Option<nix::unistd::Pid> {
    use std::os::unix::ffi::OsStrExt;
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let pid: i32 = std::fs::read_to_string(pid_file(&canonical)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let pid = nix::unistd::Pid::from_raw(pid);
    // The daemon's command line names the mountpoint (as given, so compare both spellings).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let names_it = cmdline
        .split(|b| *b == 0)
        .any(|a| a == mountpoint.as_os_str().as_bytes() || a == canonical.as_os_str().as_bytes());
    (names_it && is_running(pid)).then_some(pid)
}

/// The daemon recorded for `mountpoint`, held by a pidfd (taken while it still serves the mount,
/// so that a recycled pid is never waited for).
fn daemon_pidfd(mountpoint: &Path) -> Option<OwnedFd> {
    let pid = daemon_pid(mountpoint)?;
    crate::sys::pidfd_open(pid).ok()
}

/// Waits (a bounded time) for the daemon behind `pidfd` to exit (its pidfd polls readable),
/// then removes its pid record of `mountpoint` if it left one.
fn wait_for_daemon(mountpoint: &Path, pidfd: Option<OwnedFd>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    if let Some(pidfd) = pidfd {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            PollFlags::POLLIN,
        )];
        let _ = poll(&mut fds, PollTimeout::from(10_000u16));
    }
    if let Some(file) = pid_file(mountpoint) {
        let _ = std::fs::remove_file(file);
    }
}

/// True while `pid` exists and is not a zombie (an exited daemon waits for its reaper, which
/// is not us).
fn is_running(pid: nix::unistd::Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Unmounts `mountpoint` (`lazy`: detach now, finish when no longer busy) and waits for its
/// daemon to finish.
pub fn unmount(mountpoint: &Path, lazy: bool) -> anyhow::Result<()> {
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    // As given: the daemon's command line names the mountpoint as its `mount` was given it
    // (a relative `C` stays `C`), and `daemon_pid` compares that spelling and the canonical one.
    let daemon = if lazy { None } else { daemon_pidfd(mountpoint) };
    unmount_only(mountpoint, lazy)?;
    if !lazy {
        wait_for_daemon(&canonical, daemon);
    }
    Ok(())
}

fn unmount_only(mountpoint: &Path, lazy: bool) -> anyhow::Result<()> {
    if Host::current().mount_path() == MountPath::Fusermount {
        // Without CAP_SYS_ADMIN umount2 can only answer EPERM: the setuid helper unmounts a
        // FUSE mount its user made. It is told nothing it could not check itself.
        let canonical = std::fs::canonicalize(mountpoint)
            .map_err(|_| anyhow::anyhow!("{} does not exist", mountpoint.display()))?;
        anyhow::ensure!(
            crate::config::is_mountpoint(&canonical),
            "{} is not a mountpoint",
            mountpoint.display()
        );
        return crate::privilege::fusermount_unmount(&canonical, lazy);
    }
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(mountpoint, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => anyhow::bail!(
            "{} is busy (files open or a process inside it); close them, or use umount -l",
            mountpoint.display()
        ),
        Err(nix::errno::Errno::EINVAL) => {
            anyhow::bail!("{} is not a mountpoint", mountpoint.display())
        }
        Err(nix::errno::Errno::ENOENT) => anyhow::bail!("{} does not exist", mountpoint.display()),
        // CAP_SYS_ADMIN in a user namespace that does not own this mount's namespace: the
        // helper may still unmount a FUSE mount of ours.
        Err(nix::errno::Errno::EPERM) => crate::privilege::fusermount_unmount(mountpoint, lazy),
        Err(e) => anyhow::bail!("umount {}: {e}", mountpoint.display()),
    }
}
