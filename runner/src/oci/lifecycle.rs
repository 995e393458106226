//! The OCI lifecycle: `create`, `start`, `kill`, `delete` and `run`.
//!
//! `create` sets the container up completely (namespaces, cgroup, mounts, root, user,
//! capabilities) with the same child code as `runner run`, and leaves its first process blocked
//! on the exec fifo before `execve`; then it exits, and the process is the engine's (or
//! init's) to reap. `start` writes one byte into the fifo and removes it. Nothing supervises the
//! container in between: its status is read off the process and the fifo ([`state::status`]).
#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::cgroup::{self, Cgroup};
use crate::child::{self, CapsPolicy, ChildConfig, Identity};
use crate::oci::bundle::{self, Config, Hook, RootSource};
use crate::oci::hooks;
use crate::oci::state::{self, Root, Saved, Status, UnionRoot};
use crate::process::ProcessSpec;
use crate::rootfs::Jail;
use crate::spawn::{self, Spawn};
use crate::sys;
use crate::union::{self, UnionMount};

/// The options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
}

/// A created container, for `run` to go on with.
pub struct Created {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub err_pipe: OwnedFd,
}

/// What a failed `create` must take down again.
struct Undo {
    dir: Option<PathBuf>,
    union: Option<UnionMount>,
    cgroup: Option<Cgroup>,
    child: Option<(Pid, OwnedFd)>,
}

impl Undo {
    /// Keep everything: the container exists now.
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.child = None;
        if let Some(m) = self.union.take() {
            // The mount outlives this process; `delete` unmounts it.
            std::mem::forget(m);
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some((pid, pidfd)) = self.child.take() {
            let _ = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                tracing::error!("removing the cgroup of a failed create: {e:#}");
            }
        }
        if let Some(m) = self.union.take() {
            if let Err(e) = m.unmount() {
                tracing::error!("unmounting the root of a failed create: {e:#}");
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the OCI runtime must run as root (rootless containers are not supported)");
    }
    Ok(())
}

/// `create`: set the container up and leave it waiting for `start`.
pub fn create(root: &Root, id: &str, opts: &CreateOpts) -> Result<()> {
    let c = create_inner(root, id, opts)?;
    drop(c);
    Ok(())
}

fn create_inner(root: &Root, id: &str, opts: &CreateOpts) -> Result<Created> {
    require_root()?;
    let (_spec, mut cfg) = bundle::load(&opts.bundle)?;
    if cfg.process.terminal && opts.console_socket.is_none() {
        bail!("process.terminal is true but no --console-socket was given to pass the terminal to");
    }
    if !cfg.process.terminal && opts.console_socket.is_some() {
        bail!("--console-socket given but process.terminal is false");
    }
    let dir = root.create(id)?;
    let mut undo = Undo {
        dir: Some(dir.clone()),
        union: None,
        cgroup: None,
        child: None,
    };

    let union_root = match &cfg.root_source {
        RootSource::Plain => None,
        RootSource::Union(layers) => {
            // An image directory as root.path: mount beside the state, not over the image.
            if cfg.rootfs.join("image.json").is_file() {
                cfg.rootfs = dir.join("rootfs");
                cfg.fs.rootfs = cfg.rootfs.clone();
            }
            let upper = dir.join("upper");
            fs::create_dir(&upper).with_context(|| format!("creating {}", upper.display()))?;
            fs::create_dir_all(&cfg.rootfs)
                .with_context(|| format!("creating the mount point {}", cfg.rootfs.display()))?;
            let bin = union::find_unionfs_bin()?;
            let mut branches: Vec<(&Path, &str)> = vec![(upper.as_path(), "rw")];
            branches.extend(layers.iter().map(|l| (l.as_path(), "rr")));
            let args = union::branch_args(&branches, &cfg.rootfs, &dir.join("unionfs-daemon.log"))?;
            undo.union = Some(UnionMount::mount(
                &bin,
                &args,
                &cfg.rootfs,
                &dir.join("unionfs.log"),
            )?);
            Some(UnionRoot {
                mountpoint: cfg.rootfs.clone(),
                upper,
            })
        }
    };

    let cg_path = cfg
        .cgroups_path
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runner-oci-{id}")));
    let cgroup = match Cgroup::create_at(&cg_path, &cfg.limits) {
        Ok(cg) => Some(cg),
        // Root of a user namespace (rootless podman runs its runtime so) may not write the
        // host's cgroups: a path in a cgroup v2 subtree delegated to the user is used, with the
        // limits it can apply; otherwise, as runc's rootless mode on cgroup v1, no cgroup.
        Err(e) if crate::rootless::oci_rootless() => {
            tracing::info!("rootless: {e:#}; looking for a delegated cgroup v2 subtree");
            let d = crate::cgroup::delegated::create(&cg_path, &cfg.limits)
                .with_context(|| format!("linux.cgroupsPath {}", cg_path.display()))?;
            if let Some(why) = &d.no_cgroup {
                if !d.not_applied.is_empty() || cfg.cgroups_path.is_some() {
                    eprintln!(
                        "runner: warning: rootless: no cgroup at linux.cgroupsPath {}: {why}",
                        cg_path.display()
                    );
                }
            }
            for n in &d.not_applied {
                eprintln!("runner: warning: rootless: {n}");
            }
            d.cgroup.map(Cgroup::V2)
        }
        Err(e) => {
            return Err(e).with_context(|| format!("linux.cgroupsPath {}", cg_path.display()))
        }
    };
    if crate::rootless::oci_rootless() {
        // Device nodes cannot be made in a user namespace: bound from the host instead.
        cfg.fs.userns = true;
    }
    cfg.fs.cgroup_dirs = cgroup.as_ref().map(cgroup_binds).unwrap_or_default();
    let cgroup_dirs = cgroup.as_ref().map(|c| c.dirs()).unwrap_or_default();
    undo.cgroup = cgroup;

    let mut saved = Saved {
        id: id.to_string(),
        bundle: cfg.bundle.clone(),
        rootfs: cfg.rootfs.clone(),
        pid: 0,
        pid_start: 0,
        created: state::rfc3339_now(),
        annotations: cfg.annotations.clone(),
        cgroup_dirs,
        union: union_root,
        poststart: cfg.hooks.poststart.clone(),
        poststop: cfg.hooks.poststop.clone(),
        config_path: cfg.bundle.join("config.json"),
    };
    root.save(&saved)?;

    // The exec fifo: the container holds its read end (and a writer, so its read blocks);
    // `start` opens it for writing.
    let fifo = state::fifo_path(&dir);
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", fifo.display()))?;
    let gate_read = open_fifo(&fifo, OFlag::O_RDONLY)?;
    let gate_write = open_fifo(&fifo, OFlag::O_WRONLY)?;
    // The exec-done fifo: the container process inherits a close-on-exec writer (the clone
    // copies this one), so its last writer goes away exactly when the command is executed (or
    // the process dies); `start` waits for that end-of-file before the poststart hooks.
    let done = exec_done_path(&dir);
    nix::unistd::mkfifo(&done, Mode::from_bits_truncate(0o600))
        .with_context(|| format!("mkfifo {}", done.display()))?;
    let done_read = open_fifo(&done, OFlag::O_RDONLY)?;
    let done_write = open_fifo(&done, OFlag::O_WRONLY)?;

    let console = match &opts.console_socket {
        Some(path) => Some(OwnedFd::from(
            std::os::unix::net::UnixStream::connect(path)
                .with_context(|| format!("connecting to the console socket {}", path.display()))?,
        )),
        None => None,
    };

    if !cfg.fs.shared_mount_ns {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        cfg.fs.root_parent_mount = crate::rootfs::mount_point_of(&mountinfo, &cfg.rootfs);
    }
    let mounts = crate::oci::mounts::plan(&cfg.fs)?;
    let child_cfg = child_config(&cfg, mounts, opts)?;
    let (mut flags, pid_ns) = clone_flags(&cfg);
    if let Some(path) = pid_ns {
        // Joining a pid namespace takes effect for our children only: the clone lands in it.
        let f = open_ns(&path)?;
        nix::sched::setns(&f, CloneFlags::CLONE_NEWPID)
            .with_context(|| format!("setns to the pid namespace {}", path.display()))?;
        flags -= CloneFlags::CLONE_NEWPID;
    }

    let cgroup = undo.cgroup.as_ref();
    let mut child = spawn::spawn(
        &child_cfg,
        Spawn {
            flags,
            cgroup_dir: cgroup.and_then(|c| c.clone_into_dir()),
            tty_channel: console,
            exec_gate: Some((gate_read, gate_write)),
            ready: true,
            confine_gate: false,
        },
    )?;
    // The clone holds its own copy of the writer now.
    drop((done_read, done_write));
    let pid = child.pid;
    undo.child = Some((pid, child.pidfd.try_clone().context("dup pidfd")?));
    if let Some(cgroup) = cgroup.filter(|_| !child.joined_cgroup) {
        cgroup.add(pid)?;
    }
    if let (Some(u), Some(g)) = (&cfg.uid_map, &cfg.gid_map) {
        fs::write(format!("/proc/{pid}/uid_map"), u).context("writing uid_map")?;
        fs::write(format!("/proc/{pid}/gid_map"), g).context("writing gid_map")?;
    }
    child.release()?;
    child.wait_ready()?;

    saved.pid = pid.as_raw();
    saved.pid_start = state::proc_start(pid.as_raw())
        .map(|(s, _)| s)
        .context("reading the container process's start time")?;
    root.save(&saved)?;
    let state_json = serde_json::to_string(&state::state_json(root, &saved))?;
    for hook in cfg.hooks.prestart.iter().chain(&cfg.hooks.create_runtime) {
        hooks::run(hook, &state_json).context("a createRuntime/prestart hook failed")?;
    }
    if let Some(pf) = &opts.pid_file {
        write_pid_file(pf, pid)?;
    }
    undo.disarm();
    Ok(Created {
        pid,
        err_pipe: child.err.take().context("the error pipe")?,
        pidfd: child.pidfd,
    })
}

/// The container's view of `/sys/fs/cgroup`: its own group of each hierarchy.
fn cgroup_binds(cg: &Cgroup) -> Vec<(String, PathBuf)> {
    match cg {
        Cgroup::V2(c) => vec![(".".to_string(), c.dir().to_path_buf())],
        Cgroup::V1(c) => c
            .dirs()
            .filter_map(|d| {
                let rel = d.strip_prefix(cgroup::CGROUP_ROOT).ok()?;
                let name = rel.components().next()?.as_os_str().to_str()?.to_string();
                Some((name, d.clone()))
            })
            .collect(),
    }
}

fn open_fifo(path: &Path, mode: OFlag) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        mode | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", path.display()))
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .with_context(|| format!("opening the namespace {}", path.display()))
}

/// The clone flags for the new namespaces (a new cgroup namespace is made by the child after
/// it joined its cgroup), and a pid namespace to join first.
fn clone_flags(cfg: &Config) -> (CloneFlags, Option<PathBuf>) {
    let mut flags = CloneFlags::empty();
    let mut pid_join = None;
    for ns in &cfg.namespaces {
        match (&ns.path, ns.kind) {
            (None, CloneFlags::CLONE_NEWCGROUP) => {}
            (None, k) => flags |= k,
            (Some(p), CloneFlags::CLONE_NEWPID) => pid_join = Some(p.clone()),
            (Some(_), _) => {}
        }
    }
    (flags, pid_join)
}

fn child_config(
    cfg: &Config,
    mounts: Vec<crate::rootfs::Op>,
    opts: &CreateOpts,
) -> Result<ChildConfig> {
    let mut join = Vec::new();
    for ns in &cfg.namespaces {
        if let Some(p) = &ns.path {
            if ns.kind != CloneFlags::CLONE_NEWPID {
                join.push((open_ns(p)?, ns.kind));
            }
        }
    }
    let p = &cfg.process;
    let mut rlimits = p.rlimits.clone();
    fit_rlimits(&mut rlimits, true);
    Ok(ChildConfig {
        rootfs: cfg.rootfs.clone(),
        mounts,
        hostname: cfg.hostname.clone(),
        domainname: cfg.domainname.clone(),
        lo_up: cfg.new_ns(CloneFlags::CLONE_NEWNET),
        jail: if cfg.fs.shared_mount_ns {
            Jail::Chroot
        } else if opts.no_pivot {
            Jail::MoveRoot
        } else {
            Jail::PivotRoot
        },
        root_propagation: crate::oci::mounts::propagation_after_entry(&cfg.fs)?,
        enter_root: true,
        join,
        unshare_cgroupns: cfg.new_ns(CloneFlags::CLONE_NEWCGROUP),
        userns_root: cfg.new_ns(CloneFlags::CLONE_NEWUSER),
        init: false,
        process: ProcessSpec {
            argv: p.args.clone(),
            env: p.env.clone(),
            user: String::new(),
            workdir: p.cwd.clone(),
        },
        identity: Identity::Ids {
            uid: p.uid,
            gid: p.gid,
            additional_gids: p.additional_gids.clone(),
        },
        caps: CapsPolicy::Sets(p.caps),
        no_new_privs: p.no_new_privs,
        rlimits,
        oom_score_adj: p.oom_score_adj,
        umask: p.umask,
        apparmor: p.apparmor.clone(),
        seccomp: cfg.seccomp.clone(),
        die_with_parent: false,
        exec_sigmask: SigSet::empty(),
        preserve_fds: opts.preserve_fds,
    })
}

/// Lower the hard limits above ours when we cannot raise them (no CAP_SYS_RESOURCE, as in some
/// sandboxes): engines ask for more than such a host allows (podman: 1048576 open files), and a
/// lower limit weakens nothing. Each change is logged.
/// `exec` repeats what `create` already reported: it logs at info level only.
pub fn fit_rlimits(rlimits: &mut [crate::child::Rlimit], loud: bool) {
    const CAP_SYS_RESOURCE: u32 = 24;
    let can_raise = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1 << CAP_SYS_RESOURCE) != 0);
    if can_raise {
        return;
    }
    for (resource, soft, hard) in rlimits.iter_mut() {
        let Ok((_, our_hard)) = nix::sys::resource::getrlimit(*resource) else {
            continue;
        };
        if *hard > our_hard {
            let msg = format!(
                "process.rlimits: {resource:?}: hard limit {hard} lowered to {our_hard}, \
                 the most this runtime may grant without CAP_SYS_RESOURCE"
            );
            if loud {
                tracing::warn!("{msg}");
            } else {
                tracing::info!("{msg}");
            }
            *hard = our_hard;
            *soft = (*soft).min(our_hard);
        }
    }
}

/// Write the pid file atomically (engines poll for it).
pub fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    let tmp = path.with_extension("runner-tmp");
    fs::write(&tmp, pid.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing the pid file {}", path.display()))
}

/// `start`: release a created container.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let saved = root.load(id)?;
    let _lock = root.lock(id)?;
    let status = state::status(root, &saved);
    if status != Status::Created {
        bail!("cannot start container {id}: it is {status}, not created");
    }
    let fifo = state::fifo_path(&root.container_dir(id));
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo);
    let mut f = match f {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            bail!("cannot start container {id}: its process is gone")
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", fifo.display())),
    };
    // Opened before the byte goes: the container's writer is still there, so this open cannot
    // race with the exec. A container made by an older runner has no such fifo.
    let done_path = exec_done_path(&root.container_dir(id));
    let done = open_fifo(&done_path, OFlag::O_RDONLY).ok();
    // Gone from the directory before the byte: a `state` from now on says running.
    fs::remove_file(&fifo).with_context(|| format!("removing {}", fifo.display()))?;
    f.write_all(b"s")
        .with_context(|| format!("starting container {id}"))?;
    drop(f);
    if let Some(done) = done {
        wait_for_exec(&done, id, Duration::from_secs(10));
        let _ = fs::remove_file(&done_path);
    }
    let state_json = serde_json::to_string(&state::state_json(root, &saved))?;
    for hook in &saved.poststart {
        if let Err(e) = hooks::run(hook, &state_json) {
            tracing::warn!("poststart hook {}: {e:#}", hook.path.display());
        }
    }
    Ok(())
}

/// The fifo whose end-of-file says the container's process executed its command.
fn exec_done_path(dir: &Path) -> PathBuf {
    dir.join("exec-done.fifo")
}

/// Wait until the container's process has executed its command (or died): every writer of the
/// exec-done fifo is gone. The runtime-spec runs poststart hooks after the user's process is
/// executed; a process stuck before its `execve` longer than `timeout` is reported, and the
/// hooks run anyway (as they would have before).
fn wait_for_exec(done: &OwnedFd, id: &str, timeout: Duration) {
    // A non-blocking read says end-of-file once no writer is left, EAGAIN while one is. (Polling
    // would not do: a fifo reports POLLHUP only for writers that came after the reader.)
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 16];
    loop {
        match nix::unistd::read(done, &mut buf) {
            Ok(0) => return,
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("container {id}: reading the exec-done fifo: {e}");
                return;
            }
        }
        if Instant::now() > deadline {
            tracing::warn!(
                "container {id}: its process has not executed its command after {} s; \
                 running the poststart hooks anyway",
                timeout.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A signal as `kill` takes it: `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).with_context(|| format!("unknown signal {s}"));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<Signal>()
        .with_context(|| format!("unknown signal {s:?}"))
}

/// `kill`: signal the container's process (or, with `all`, every process of its cgroup).
///
/// A stopped container answers as runc does, because engines match its words: a plain `kill`
/// fails with `container not running` (containerd's shim reads that as "already gone"), and
/// `kill --all` succeeds, signalling whatever is still in the cgroup (processes an `exec` left
/// in a container without a pid namespace of its own); containerd's shim sends
/// `kill --all ID 9` after every exit.
pub fn kill(root: &Root, id: &str, sig: Signal, all: bool) -> Result<()> {
    let saved = root.load(id)?;
    let status = state::status(root, &saved);
    if !matches!(status, Status::Created | Status::Running | Status::Paused) {
        if !all {
            bail!("container not running");
        }
        signal_cgroup(&saved, sig);
        return Ok(());
    }
    if all {
        signal_cgroup(&saved, sig);
    }
    signal_process(&saved, sig)
}

/// Send `sig` to every process listed in the container's cgroup directories.
fn signal_cgroup(saved: &Saved, sig: Signal) {
    for dir in &saved.cgroup_dirs {
        for pid in cgroup::procs(dir) {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

/// Signal the container's first process through a pidfd, after checking it is still that
/// process (not a recycled pid).
fn signal_process(saved: &Saved, sig: Signal) -> Result<()> {
    let pidfd = match sys::pidfd_open(Pid::from_raw(saved.pid)) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e).context("pidfd_open"),
    };
    if !state::process_alive(saved) {
        return Ok(());
    }
    sys::pidfd_send_signal(pidfd.as_fd(), sig as i32)
        .with_context(|| format!("sending {sig} to pid {}", saved.pid))
}

/// `pause` (`freeze` true) or `resume`: freeze or thaw every process of the container's cgroup,
/// and wait until the kernel says it is done.
pub fn freeze(root: &Root, id: &str, freeze: bool) -> Result<()> {
    let saved = root.load(id)?;
    let _lock = root.lock(id)?;
    let status = state::status(root, &saved);
    let want = if freeze {
        Status::Running
    } else {
        Status::Paused
    };
    if status != want {
        bail!(
            "cannot {} container {id}: it is {status}",
            if freeze { "pause" } else { "resume" }
        );
    }
    let Some((file, frozen, thawed)) = state::freezer(&saved) else {
        bail!("cannot pause container {id}: its cgroup has no freezer");
    };
    let value = if freeze { frozen } else { thawed };
    fs::write(&file, value).with_context(|| format!("writing {value} to {}", file.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = fs::read_to_string(&file).unwrap_or_default();
        if now.trim() == value {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} still says {:?} after 10 s", file.display(), now.trim());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `delete`: take a stopped container down (with `force`, kill it first). As runc: a created
/// container is killed and deleted without `force` (it never ran), a running or paused one
/// needs `force`; a container that does not exist is an error without `force` and nothing to
/// do with it (containerd's shim deletes with `--force` once more when it shuts down). A
/// directory without a state file (a create that died half-way) is removed either way.
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let dir = root.container_dir(id);
    if state::validate_id(id).is_ok() && !dir.join("state.json").exists() {
        if dir.is_dir() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        if force {
            return Ok(());
        }
    }
    let saved = root.load(id)?;
    let _lock = root.lock(id)?;
    let status = state::status(root, &saved);
    if matches!(status, Status::Running | Status::Paused) && !force {
        bail!("cannot delete container {id} that is not stopped: {status}");
    }
    if matches!(status, Status::Created | Status::Running | Status::Paused) {
        let _ = signal_process(&saved, Signal::SIGKILL);
        if status == Status::Paused {
            // A frozen process dies of its SIGKILL only once thawed.
            if let Some((file, _, thawed)) = state::freezer(&saved) {
                let _ = fs::write(file, thawed);
            }
        }
    }
    // Every process of its cgroup goes (also what an `exec` left), then the group itself.
    cgroup::remove_dirs(&saved.cgroup_dirs, Duration::from_secs(10))?;
    wait_until_gone(&saved, Duration::from_secs(10));
    if let Some(u) = &saved.union {
        if union::is_mounted(&u.mountpoint) {
            let bin = union::find_unionfs_bin()?;
            union::unmount_and_wait(&bin, &u.mountpoint)?;
        }
    }
    let state_json = serde_json::to_string(&state::state_json(root, &saved))?;
    run_poststop(&saved.poststop, &state_json);
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

fn run_poststop(hooks_: &[Hook], state_json: &str) {
    for hook in hooks_ {
        if let Err(e) = hooks::run(hook, state_json) {
            tracing::warn!("poststop hook {}: {e:#}", hook.path.display());
        }
    }
}

fn wait_until_gone(saved: &Saved, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while state::process_alive(saved) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `run`: create and start; with `detach` return at once, else wait, forwarding signals, and
/// delete the container after it exits; the exit code is the process's (128+N for signal N).
pub fn run(root: &Root, id: &str, opts: &CreateOpts, detach: bool, keep: bool) -> Result<i32> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let mut set = SigSet::empty();
    for s in child::FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    if !detach {
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            Some(&mut old),
        )
        .context("sigprocmask")?;
    }
    let created = create_inner(root, id, opts)?;
    if let Err(e) = start(root, id) {
        let _ = delete(root, id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let sigfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;
    let outcome = crate::supervise::supervise(
        created.pid,
        &created.pidfd,
        &sigfd,
        created.err_pipe,
        None,
        None,
    )?;
    if !outcome.error.is_empty() {
        let _ = writeln!(std::io::stderr(), "runner: {}", outcome.error);
    }
    let code = crate::init::exit_code(outcome.status).unwrap_or(child::SETUP_FAILED);
    if !keep {
        delete(root, id, true)?;
    }
    Ok(code)
}

/// Make a directory only root can enter (for `--root`), if it is missing.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
