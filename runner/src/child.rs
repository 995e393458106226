//! The container's first process, from `clone` to `execve`.
//!
//! It waits for the runner's go (sent once the cgroup is joined), builds its mount namespace,
//! sets the hostname, brings `lo` up, enters the root, drops to the container's user and
//! capabilities, and executes the command (or, with `--init`, forks it and stays as the reaper).
//! A failure before `execve` is written to the error pipe for the runner to print; the pipe is
//! close-on-exec, so a successful `execve` shows up as end-of-file.
#![forbid(unsafe_code)]

use std::ffi::{CStr, CString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Uid};

use crate::process::{exec_failure, find_command, resolve_user, ExecError, ProcessSpec};
use crate::rootfs::{self, Entered};
use crate::{caps, init, sys};

/// Exit code for a failure of the runner itself (docker's 125).
pub const SETUP_FAILED: i32 = 125;

/// Whose credentials the command runs with.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `UID[:GID]` or `NAME[:GROUP]`, looked up in the container's `/etc/passwd` and `/etc/group`
    /// once inside its root (`runner run -u`); no supplementary groups.
    Lookup(String),
    /// Numeric ids as an OCI bundle gives them.
    Ids {
        uid: u32,
        gid: u32,
        additional_gids: Vec<u32>,
    },
}

/// The capability sets of the command.
#[derive(Debug, Clone, Copy)]
pub enum CapsPolicy {
    /// docker's default set (`keep`, normally [`caps::default_mask`]) for uid 0, nothing for
    /// other users (`runner run`).
    DockerDefault { keep: u64 },
    /// The OCI bundle's sets, as bit masks.
    Sets(caps::CapSets),
}

/// One resource limit: (resource, soft, hard).
pub type Rlimit = (nix::sys::resource::Resource, u64, u64);

/// Everything the child needs, prepared by the parent before the clone.
#[derive(Debug)]
pub struct ChildConfig {
    pub rootfs: PathBuf,
    /// The mount namespace's set-up before the root is entered ([`rootfs::plan`] or the OCI
    /// bundle's mounts); paths below `rootfs` are resolved inside it.
    pub mounts: Vec<rootfs::Op>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// Bring up `lo` (a new network namespace).
    pub lo_up: bool,
    /// How the root is entered (`pivot_root`, `--no-pivot`, or `chroot` in a mount namespace
    /// that is not the container's own).
    pub jail: rootfs::Jail,
    /// Propagation for the new `/` once entered (`linux.rootfsPropagation` shared or
    /// unbindable).
    pub root_propagation: Option<nix::mount::MsFlags>,
    /// Set up the mount namespace and enter the root (false for `exec`, whose joined mount
    /// namespace is rooted in the container's root already).
    pub enter_root: bool,
    /// Existing namespaces to join, in order (a user namespace first), before anything else.
    pub join: Vec<(OwnedFd, CloneFlags)>,
    /// A cgroup namespace of its own, made once the cgroup is joined (so it is rooted there).
    pub unshare_cgroupns: bool,
    /// In a new user namespace with mappings other than the identity: become its root first
    /// (a clone keeps the parent's host ids, which the namespace may not map).
    pub userns_root: bool,
    pub init: bool,
    pub process: ProcessSpec,
    pub identity: Identity,
    pub caps: CapsPolicy,
    pub no_new_privs: bool,
    pub rlimits: Vec<Rlimit>,
    pub oom_score_adj: Option<i32>,
    pub umask: Option<u32>,
    /// An AppArmor profile to switch to at exec.
    pub apparmor: Option<String>,
    pub seccomp: Option<crate::oci::seccomp::Filter>,
    /// Die with the runner (`runner run`); an OCI container outlives `create`.
    pub die_with_parent: bool,
    /// The signal mask to restore right before exec (the runner blocks the ones it forwards).
    pub exec_sigmask: SigSet,
    /// Descriptors 3..3+N are passed to the command (`--preserve-fds`); the rest are closed.
    pub preserve_fds: u32,
}

/// The pipe ends the child holds.
#[derive(Debug)]
pub struct ChildFds {
    /// Read end of the go pipe: one byte means go, end-of-file means the runner died.
    pub go: OwnedFd,
    /// Write end of the error pipe (close-on-exec).
    pub err: OwnedFd,
    /// With a terminal: the socket to send the pty master over (the runner's, or the OCI
    /// console socket).
    pub tty_channel: Option<OwnedFd>,
    /// OCI `create`: one byte written here says the set-up is done and the process waits for
    /// `start` on `exec_gate`.
    pub ready: Option<OwnedFd>,
    /// OCI `create`: the container's exec fifo, (read end, a write end of our own so the read
    /// blocks instead of seeing end-of-file); `start` writes one byte.
    pub exec_gate: Option<(OwnedFd, OwnedFd)>,
    /// A second byte on `go` is awaited before anything of the container's runs
    /// ([`crate::spawn::Spawn::confine_gate`]).
    pub confine_gate: bool,
}

/// Run in the cloned child; never returns.
pub fn run(cfg: &ChildConfig, fds: ChildFds) -> ! {
    let ChildFds {
        go,
        err,
        tty_channel,
        ready,
        exec_gate,
        confine_gate,
    } = fds;
    let err = fs::File::from(err);
    let mut err_out = &err;
    // A panic must not unwind out of here: the frames above belong to the runner's copy of
    // itself, whose destructors would unmount and delete the container from inside it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let gates = Gates {
            go,
            confine_gate,
            ready,
            exec_gate,
        };
        setup_and_exec(cfg, gates, tty_channel, &err)
    }));
    let result = result.unwrap_or_else(|_| {
        Err(Failure::Setup(anyhow::anyhow!(
            "panic in the container's setup"
        )))
    });
    let code = match result {
        Ok(never) => match never {},
        Err(Failure::Exec(e)) => {
            let _ = writeln!(err_out, "{}", e.message);
            e.code
        }
        Err(Failure::Setup(e)) => {
            let _ = writeln!(err_out, "container setup failed: {e:#}");
            SETUP_FAILED
        }
        Err(Failure::Quiet) => SETUP_FAILED,
    };
    let _ = err_out.flush();
    sys::exit_now(code)
}

enum Failure {
    Setup(anyhow::Error),
    Exec(ExecError),
    /// The runner went away before the go, or the container was deleted before `start`:
    /// nothing to report to.
    Quiet,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Setup(e)
    }
}

enum Never {}

/// The points where the child waits for its runtime.
struct Gates {
    go: OwnedFd,
    confine_gate: bool,
    ready: Option<OwnedFd>,
    exec_gate: Option<(OwnedFd, OwnedFd)>,
}

/// One byte from the go pipe; end-of-file (the runner died or gave up) ends the child quietly.
fn wait_for_go(go: &mut fs::File) -> Result<(), Failure> {
    let mut byte = [0u8; 1];
    match go.read(&mut byte) {
        Ok(1) => Ok(()),
        _ => Err(Failure::Quiet),
    }
}

fn setup_and_exec(
    cfg: &ChildConfig,
    gates: Gates,
    tty_channel: Option<OwnedFd>,
    err: &fs::File,
) -> Result<Never, Failure> {
    let Gates {
        go,
        confine_gate,
        ready,
        exec_gate,
    } = gates;
    let mut go = fs::File::from(go);
    wait_for_go(&mut go)?;
    // First, while the host's /proc is still there for the fallback and long before a seccomp
    // filter could refuse the syscalls: only what we open from here on (all close-on-exec) and
    // the passed descriptors survive exec.
    sys::cloexec_from(3 + cfg.preserve_fds)
        .context("marking inherited descriptors close-on-exec")?;
    if cfg.die_with_parent {
        // If the runner is killed, the container goes too (its mounts and cgroup are the
        // runner's to clean; `runner rm` does it for a runner that died).
        sys::set_parent_death_signal(libc::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    }
    // Through the host's /proc, before the root changes (lowering needs CAP_SYS_RESOURCE), and
    // before any user namespace: we are non-dumpable (crate::spawn), so our /proc files belong
    // to the host's root, which a user namespace's root is not.
    if let Some(adj) = cfg.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .with_context(|| format!("writing {adj} to /proc/self/oom_score_adj"))?;
    }
    if cfg.userns_root {
        let root_g = Gid::from_raw(0);
        let root_u = Uid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g)
            .context("setresgid(0) in the user namespace")?;
        nix::unistd::setresuid(root_u, root_u, root_u)
            .context("setresuid(0) in the user namespace")?;
    }
    for (fd, kind) in &cfg.join {
        nix::sched::setns(fd, *kind).with_context(|| format!("setns({kind:?})"))?;
    }
    if cfg.unshare_cgroupns {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP).context("unshare(CLONE_NEWCGROUP)")?;
    }
    if let Some(profile) = &cfg.apparmor {
        fs::write("/proc/self/attr/apparmor/exec", format!("exec {profile}"))
            .or_else(|_| fs::write("/proc/self/attr/exec", format!("exec {profile}")))
            .with_context(|| format!("setting the AppArmor profile {profile:?}"))?;
    }

    if cfg.enter_root {
        rootfs::apply(&cfg.mounts, Some(&cfg.rootfs))?;
    }
    if let Some(h) = &cfg.hostname {
        nix::unistd::sethostname(h).with_context(|| format!("sethostname {h:?}"))?;
    }
    if let Some(d) = &cfg.domainname {
        sys::set_domainname(d).with_context(|| format!("setdomainname {d:?}"))?;
    }
    if cfg.lo_up {
        sys::interface_up(c"lo").context("bringing up lo")?;
    }
    if cfg.enter_root
        && rootfs::enter(&cfg.rootfs, cfg.jail, cfg.root_propagation)? == Entered::Chroot
    {
        tracing::info!("container root entered with chroot");
    }

    let (uid, gid, groups, home) = match &cfg.identity {
        Identity::Lookup(spec) => {
            let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
            let group = fs::read_to_string("/etc/group").unwrap_or_default();
            let user = resolve_user(spec, &passwd, &group)?;
            (user.uid, user.gid, Vec::new(), user.home)
        }
        Identity::Ids {
            uid,
            gid,
            additional_gids,
        } => (*uid, *gid, additional_gids.clone(), String::new()),
    };
    let mut env = cfg.process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) && !home.is_empty() {
        env.push(format!("HOME={home}"));
    }
    nix::unistd::chdir(Path::new(&cfg.process.workdir))
        .with_context(|| format!("chdir to the working directory {}", cfg.process.workdir))?;

    // A session of its own: a Ctrl-C at the runner's terminal reaches the container once, as a
    // forwarded signal; with a terminal the pty becomes its controlling terminal.
    nix::unistd::setsid().context("setsid")?;
    if let Some(channel) = tty_channel {
        let (tty, name) = crate::tty::open_in_container(&channel)?;
        drop(channel);
        // The first process's console; an exec'd process (no mounts of its own, chroot only
        // when the container shares a mount namespace) leaves the container's as it is.
        if cfg.enter_root && !cfg.mounts.is_empty() {
            crate::tty::bind_console(&name)?;
        }
        sys::set_controlling_terminal(tty.as_fd()).context("ioctl(TIOCSCTTY)")?;
        nix::unistd::dup2_stdin(&tty).context("dup2 pty to stdin")?;
        nix::unistd::dup2_stdout(&tty).context("dup2 pty to stdout")?;
        nix::unistd::dup2_stderr(&tty).context("dup2 pty to stderr")?;
    }

    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::process::DEFAULT_PATH)
        .to_string();
    let program = find_command(
        &cfg.process.argv[0],
        &path_var,
        Path::new("/"),
        is_executable,
    )
    .map_err(Failure::Exec)?;

    for &(resource, soft, hard) in &cfg.rlimits {
        nix::sys::resource::setrlimit(resource, soft, hard)
            .with_context(|| format!("setrlimit({resource:?}, {soft}, {hard})"))?;
    }
    if let Some(mask) = cfg.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let sets = match cfg.caps {
        CapsPolicy::DockerDefault { keep } => caps::CapSets::docker_default(uid, keep),
        CapsPolicy::Sets(s) => s,
    };
    // Without no_new_privs, installing a seccomp filter takes CAP_SYS_ADMIN: it is held (in
    // the effective and permitted sets only) until the filter is in; execve drops it (below).
    let held = if cfg.seccomp.is_some() && !cfg.no_new_privs {
        caps::CAP_SYS_ADMIN_BIT & !(sets.effective & sets.permitted)
    } else {
        0
    };
    caps::drop_bounding(sets.bounding)?;
    if uid != 0 {
        // Keep the permitted set across setuid; capset below trims it to what is asked.
        sys::set_keep_caps(true).context("prctl(PR_SET_KEEPCAPS)")?;
    }
    let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    match nix::unistd::setgroups(&gids) {
        // A rootless run with a single mapping (crate::rootless) denies setgroups in its user
        // namespace (CVE-2014-8989): the process keeps the groups the user already had, which
        // is no more than the user holds on the host.
        Err(nix::errno::Errno::EPERM) if crate::rootless::setgroups_denied() => {}
        r => r.context("setgroups")?,
    }
    nix::unistd::setgid(Gid::from_raw(gid)).with_context(|| format!("setgid {gid}"))?;
    nix::unistd::setuid(Uid::from_raw(uid)).with_context(|| format!("setuid {uid}"))?;
    caps::set_process_caps(&sets, held)?;
    // Still non-dumpable (crate::spawn): a change of ids resets it to `fs.suid_dumpable`,
    // which a host may have set to 1.
    sys::set_not_dumpable().context("prctl(PR_SET_DUMPABLE, 0)")?;
    if cfg.no_new_privs {
        sys::set_no_new_privs().context("prctl(PR_SET_NO_NEW_PRIVS)")?;
    }
    if cfg.die_with_parent {
        // A change of credentials clears the parent-death signal: set it again.
        sys::set_parent_death_signal(libc::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    }

    let argv = cstrings(&cfg.process.argv)?;
    let envp = cstrings(&env)?;
    let program_c = CString::new(program.as_os_str().as_encoded_bytes())
        .context("program path has a NUL byte")?;

    if confine_gate {
        // The runner has joined us to the container's cgroup once this byte comes: from here
        // on, what runs (the command, the --init fork) is confined.
        wait_for_go(&mut go)?;
    }
    drop(go);
    if let Some(ready) = ready {
        fs::File::from(ready)
            .write_all(b"r")
            .context("telling the runtime the container is created")?;
    }
    if let Some((gate, own_writer)) = exec_gate {
        wait_for_start(gate)?;
        drop(own_writer);
    }

    if cfg.init {
        // pid 1 stays here as the reaper (under the filter: `runner run`'s default profile
        // allows what it does), and must not keep what it held; the command runs in a child.
        install_seccomp(cfg)?;
        if held != 0 {
            caps::drop_held(&sets)?;
        }
        match sys::fork().context("fork for --init")? {
            Some(command_pid) => init::reap(command_pid, err),
            None => {
                prepare_exec(&cfg.exec_sigmask)?;
                exec(&program_c, &argv, &envp, &cfg.process.argv[0])
            }
        }
    } else {
        // The filter comes last: a profile lists what the container's program needs, not what
        // the runtime does, and after it only `execve` remains, which any profile that lets the
        // container start at all allows. A capability held for the filter needs no `capset`
        // to go: execve computes the new permitted and effective sets from the inheritable,
        // bounding and ambient sets and the file's capabilities only (capabilities(7),
        // "Transformation of capabilities during execve()"), and the held one is in none of
        // them unless the bundle grants it anyway.
        prepare_exec(&cfg.exec_sigmask)?;
        install_seccomp(cfg)?;
        exec(&program_c, &argv, &envp, &cfg.process.argv[0])
    }
}

/// Install the container's seccomp filter, if it has one.
fn install_seccomp(cfg: &ChildConfig) -> Result<()> {
    match &cfg.seccomp {
        Some(f) => crate::oci::seccomp::install(f),
        None => Ok(()),
    }
}

/// Block until `start` writes its byte into the exec fifo (we hold a writer too, so the read
/// blocks rather than seeing end-of-file while nobody else has it open).
fn wait_for_start(gate: OwnedFd) -> Result<(), Failure> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(&gate, FcntlArg::F_GETFL).context("fcntl")?);
    fcntl(&gate, FcntlArg::F_SETFL(fl - OFlag::O_NONBLOCK)).context("fcntl(F_SETFL)")?;
    let mut f = fs::File::from(gate);
    let mut byte = [0u8; 1];
    loop {
        match f.read(&mut byte) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(Failure::Quiet),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Failure::Quiet),
        }
    }
}

/// Signals as the command must find them: default dispositions, and the runner's original mask
/// (blocked signals stay blocked across execve).
fn prepare_exec(mask: &SigSet) -> Result<()> {
    sys::reset_signal_dispositions();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None).context("sigprocmask")
}

fn exec(program: &CStr, argv: &[CString], envp: &[CString], name: &str) -> Result<Never, Failure> {
    let Err(errno) = nix::unistd::execve(program, argv, envp);
    Err(Failure::Exec(exec_failure(name, errno)))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn cstrings(v: &[String]) -> Result<Vec<CString>> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte")))
        .collect()
}

/// The signals the runner forwards to the container (and `--init` to its command).
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Refuse a command line that cannot be a process (caught before anything is created).
pub fn check_argv(argv: &[String]) -> Result<()> {
    if argv.iter().any(|a| a.contains('\0')) {
        bail!("the command contains a NUL byte");
    }
    Ok(())
}
