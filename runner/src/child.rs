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
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::{Gid, Uid};

use crate::process::{exec_failure, find_command, resolve_user, ExecError, ProcessSpec};
use crate::rootfs::{self, Entered, RootfsSpec};
use crate::spec::{Net, Volume};
use crate::{caps, init, sys};

/// Exit code for a failure of the runner itself (docker's 125).
pub const SETUP_FAILED: i32 = 125;

/// Everything the child needs, prepared by the parent before the clone.
#[derive(Debug)]
pub struct ChildConfig {
    pub rootfs: PathBuf,
    pub volumes: Vec<Volume>,
    pub read_only: bool,
    pub hostname: String,
    pub net: Net,
    pub no_pivot: bool,
    /// In a new user namespace: device nodes are bind mounts of the host's (mknod is refused).
    pub userns: bool,
    pub init: bool,
    pub process: ProcessSpec,
    /// The signal mask to restore right before exec (the runner blocks the ones it forwards).
    pub exec_sigmask: SigSet,
}

/// The pipe ends the child holds.
#[derive(Debug)]
pub struct ChildFds {
    /// Read end of the go pipe: one byte means go, end-of-file means the runner died.
    pub go: OwnedFd,
    /// Write end of the error pipe (close-on-exec).
    pub err: OwnedFd,
    /// With `-t`: the socket to send the pty master to the runner over.
    pub tty_channel: Option<OwnedFd>,
}

/// Run in the cloned child; never returns.
pub fn run(cfg: &ChildConfig, fds: ChildFds) -> ! {
    let ChildFds {
        go,
        err,
        tty_channel,
    } = fds;
    let mut err = fs::File::from(err);
    // A panic must not unwind out of here: the frames above belong to the runner's copy of
    // itself, whose destructors would unmount and delete the container from inside it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        setup_and_exec(cfg, go, tty_channel, &err)
    }));
    let result = result.unwrap_or_else(|_| {
        Err(Failure::Setup(anyhow::anyhow!(
            "panic in the container's setup"
        )))
    });
    let code = match result {
        Ok(never) => match never {},
        Err(Failure::Exec(e)) => {
            let _ = writeln!(err, "{}", e.message);
            e.code
        }
        Err(Failure::Setup(e)) => {
            let _ = writeln!(err, "container setup failed: {e:#}");
            SETUP_FAILED
        }
        Err(Failure::Quiet) => SETUP_FAILED,
    };
    sys::exit_now(code)
}

enum Failure {
    Setup(anyhow::Error),
    Exec(ExecError),
    /// The runner went away before the go: nothing to report to.
    Quiet,
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Setup(e)
    }
}

enum Never {}

fn setup_and_exec(
    cfg: &ChildConfig,
    go: OwnedFd,
    tty_channel: Option<OwnedFd>,
    err: &fs::File,
) -> Result<Never, Failure> {
    let mut byte = [0u8; 1];
    match fs::File::from(go).read(&mut byte) {
        Ok(1) => {}
        _ => return Err(Failure::Quiet),
    }
    // If the runner is killed, the container goes too (its mounts and cgroup are the runner's
    // to clean; `runner rm` does it for a runner that died).
    sys::set_parent_death_signal(libc::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;

    rootfs::apply(&rootfs::plan(&RootfsSpec {
        rootfs: &cfg.rootfs,
        volumes: &cfg.volumes,
        read_only: cfg.read_only,
        userns: cfg.userns,
        net_host: cfg.net == Net::Host,
    }))?;
    nix::unistd::sethostname(&cfg.hostname)
        .with_context(|| format!("sethostname {:?}", cfg.hostname))?;
    if cfg.net == Net::None {
        sys::interface_up(c"lo").context("bringing up lo")?;
    }
    if rootfs::enter(&cfg.rootfs, cfg.no_pivot)? == Entered::Chroot {
        tracing::info!("container root entered with chroot");
    }

    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let user = resolve_user(&cfg.process.user, &passwd, &group)?;
    let mut env = cfg.process.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    nix::unistd::chdir(Path::new(&cfg.process.workdir))
        .with_context(|| format!("chdir to the working directory {}", cfg.process.workdir))?;

    // A session of its own: a Ctrl-C at the runner's terminal reaches the container once, as a
    // forwarded signal; with -t the pty becomes its controlling terminal.
    nix::unistd::setsid().context("setsid")?;
    if let Some(channel) = tty_channel {
        let tty = crate::tty::open_in_container(&channel)?;
        drop(channel);
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

    caps::drop_bounding(caps::default_mask())?;
    nix::unistd::setgroups(&[]).context("setgroups")?;
    nix::unistd::setgid(Gid::from_raw(user.gid)).with_context(|| format!("setgid {}", user.gid))?;
    nix::unistd::setuid(Uid::from_raw(user.uid)).with_context(|| format!("setuid {}", user.uid))?;
    caps::set_process_caps(user.uid, caps::default_mask())?;
    sys::set_no_new_privs().context("prctl(PR_SET_NO_NEW_PRIVS)")?;
    // A change of credentials clears the parent-death signal: set it again.
    sys::set_parent_death_signal(libc::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    sys::cloexec_from_3().context("close_range(3, ~0, CLOSE_RANGE_CLOEXEC)")?;

    let argv = cstrings(&cfg.process.argv)?;
    let envp = cstrings(&env)?;
    let program_c = CString::new(program.as_os_str().as_encoded_bytes())
        .context("program path has a NUL byte")?;

    if cfg.init {
        // pid 1 stays here as the reaper; the command runs in a child of it.
        match sys::fork().context("fork for --init")? {
            Some(command_pid) => init::reap(command_pid, err),
            None => exec(
                &program_c,
                &argv,
                &envp,
                &cfg.exec_sigmask,
                &cfg.process.argv[0],
            ),
        }
    } else {
        exec(
            &program_c,
            &argv,
            &envp,
            &cfg.exec_sigmask,
            &cfg.process.argv[0],
        )
    }
}

fn exec(
    program: &CStr,
    argv: &[CString],
    envp: &[CString],
    mask: &SigSet,
    name: &str,
) -> Result<Never, Failure> {
    sys::reset_signal_dispositions();
    // Blocked signals stay blocked across execve: give the command the runner's original mask.
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None)
        .context("sigprocmask")?;
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
