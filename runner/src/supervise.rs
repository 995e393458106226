//! The runner's side while the container runs: forward signals, relay the pty, collect the
//! child's setup error, and reap it.
//!
//! One `poll` loop over a pidfd (readable when the child exits: it exists from the clone on, so an
//! exit is never missed), a signalfd (the forwarded signals were blocked before the clone), the
//! error pipe, the pidfd of the unionfs daemon that serves the container's root and, with `-t`,
//! the terminal and the pty.
//!
//! When the daemon dies the container's root is gone: every file access fails (ENOTCONN), and a
//! page of a mapped binary that is not in memory yet kills its process with SIGBUS. A shell
//! looping over such commands never ends by itself, and pid 1 ignores the forwarded SIGTERM, so
//! the runner kills the container (SIGKILL to its pid 1 ends the whole pid namespace), says why,
//! and takes the rest down as after any exit.
#![forbid(unsafe_code)]

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::sys;

/// What the container's end looks like to the runner.
#[derive(Debug)]
pub struct Outcome {
    pub status: WaitStatus,
    /// What the child wrote to the error pipe before exec (empty when it exec'd).
    pub error: String,
    /// Set when the daemon serving the container's root died while the container ran (the
    /// runner then killed the container): what happened, to report.
    pub root_died: Option<String>,
}

/// The daemon serving the container's root, watched while the container runs.
pub struct RootDaemon<'a> {
    pub pid: Pid,
    pub pidfd: BorrowedFd<'a>,
    pub rootfs: &'a Path,
}

/// The pty relay of `-t`.
pub struct TtyRelay {
    pub master: OwnedFd,
}

/// The signals the runner handles itself (the forwarded ones, SIGCHLD, SIGWINCH), blocked so
/// that they wait for a signalfd; the old mask comes back on drop.
pub struct BlockedSignals {
    pub set: SigSet,
    pub old: SigSet,
}

impl BlockedSignals {
    pub fn block() -> Result<BlockedSignals> {
        let mut set = SigSet::empty();
        for s in crate::child::FORWARDED {
            set.add(s);
        }
        set.add(Signal::SIGCHLD);
        set.add(Signal::SIGWINCH);
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old))
            .context("sigprocmask")?;
        Ok(BlockedSignals { set, old })
    }

    /// A signalfd for the blocked signals.
    pub fn signalfd(&self) -> Result<SignalFd> {
        SignalFd::with_flags(&self.set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .context("signalfd")
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Wait in the foreground for a process without a terminal (OCI `run`, `exec`), forwarding the
/// blocked signals; print what it reported before exec; its exit code (128+N for signal N).
pub fn exit_code_of(
    pid: Pid,
    pidfd: &OwnedFd,
    mask: &BlockedSignals,
    err_pipe: OwnedFd,
) -> Result<i32> {
    let outcome = supervise(pid, pidfd, &mask.signalfd()?, err_pipe, None, None)?;
    if !outcome.error.is_empty() {
        let _ = writeln!(std::io::stderr(), "runner: {}", outcome.error);
    }
    Ok(crate::init::exit_code(outcome.status).unwrap_or(crate::child::SETUP_FAILED))
}

/// Wait for the container's first process, forwarding signals and relaying the tty meanwhile.
pub fn supervise(
    pid: Pid,
    pidfd: &OwnedFd,
    sigfd: &SignalFd,
    err_pipe: OwnedFd,
    tty: Option<&TtyRelay>,
    root: Option<RootDaemon<'_>>,
) -> Result<Outcome> {
    let mut err_pipe = Some(fs::File::from(err_pipe));
    let mut error = Vec::new();
    let mut root_died = None;
    let stdin = std::io::stdin();
    let mut stdin_open = tty.is_some();
    let mut master_open = tty.is_some();
    loop {
        let mut fds: Vec<PollFd> = vec![
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
        ];
        let err_idx = err_pipe.as_ref().map(|f| {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_idx = (stdin_open).then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let master_idx = match (tty, master_open) {
            (Some(t), true) => {
                fds.push(PollFd::new(t.master.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let root_idx = match &root {
            Some(r) if root_died.is_none() => {
                fds.push(PollFd::new(r.pidfd, PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("poll"),
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let exited = ready(0);
        let got_signal = ready(1);
        let err_ready = err_idx.is_some_and(ready);
        let stdin_ready = stdin_idx.is_some_and(ready);
        let master_ready = master_idx.is_some_and(ready);
        let root_gone = root_idx.is_some_and(ready);
        drop(fds);

        if let (true, Some(r)) = (root_gone, &root) {
            root_died = Some(root_died_message(r));
            if let Err(e) = sys::pidfd_send_signal(pidfd.as_fd(), libc::SIGKILL) {
                tracing::debug!("killing the container: {e}");
            }
        }

        if got_signal {
            while let Ok(Some(info)) = sigfd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == Signal::SIGCHLD as i32 {
                    release_traced_stops(pid);
                } else if sig == Signal::SIGWINCH as i32 {
                    if let Some(t) = tty {
                        copy_winsize(t.master.as_fd());
                    }
                } else {
                    tracing::debug!(sig, "forwarding signal");
                    if let Err(e) = sys::pidfd_send_signal(pidfd.as_fd(), sig) {
                        tracing::debug!("forwarding signal {sig}: {e}");
                    }
                }
            }
        }
        if err_ready {
            if let Some(f) = err_pipe.as_mut() {
                let mut buf = [0u8; 4096];
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => err_pipe = None,
                    Ok(n) => error.extend_from_slice(&buf[..n]),
                }
            }
        }
        if stdin_ready {
            let mut buf = [0u8; 4096];
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if let Some(t) = tty {
                        write_all_to_pty(t.master.as_fd(), &buf[..n]);
                    }
                }
            }
        }
        if master_ready {
            if let Some(t) = tty {
                if !relay_output(t.master.as_fd()) {
                    master_open = false;
                }
            }
        }
        if exited {
            break;
        }
    }
    let status = loop {
        match waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.with_context(|| format!("waitpid {pid}"))?,
        }
    };
    // The container may die of its dead root (SIGBUS on a page of a mapped binary, SIGSEGV)
    // before the daemon's pidfd turns readable: the kernel aborts the FUSE connection while
    // closing the daemon's files, a moment before it reports the exit. After such a death, give
    // the daemon's exit a short while to show, so the cause is named.
    if let (None, Some(r)) = (&root_died, &root) {
        let wait = match status {
            WaitStatus::Signaled(..) => 50u16,
            _ => 0,
        };
        let mut fds = [PollFd::new(r.pidfd, PollFlags::POLLIN)];
        if matches!(poll(&mut fds, PollTimeout::from(wait)), Ok(n) if n > 0) {
            root_died = Some(root_died_message(r));
        }
    }
    // What the child wrote just before exiting, and the pty's last output.
    if let Some(mut f) = err_pipe {
        let _ = f.read_to_end(&mut error);
    }
    if let Some(t) = tty {
        while master_open && relay_output(t.master.as_fd()) {}
    }
    Ok(Outcome {
        status,
        error: String::from_utf8_lossy(&error).trim().to_string(),
        root_died,
    })
}

/// A process that calls `PTRACE_TRACEME` makes its parent its tracer: a container's first
/// process (or an exec'd one) would make us, and the `--init` reaper, its tracer. It then stops at
/// every signal and at `execve` and waits there for a tracer that never meant to trace it:
/// hung, deaf to the signals we forward. So we are never a usable tracer: a traced stop is
/// detached at once, passing on the signal it stopped for, except the SIGTRAP that a traced
/// `execve` raises (an untraced process never gets it). True when `status` was such a stop.
pub fn detach_if_traced(status: WaitStatus) -> bool {
    let (pid, sig) = match status {
        WaitStatus::Stopped(pid, sig) | WaitStatus::PtraceEvent(pid, sig, _) => (pid, Some(sig)),
        WaitStatus::PtraceSyscall(pid) => (pid, None),
        _ => return false,
    };
    let sig = sig.filter(|s| *s != Signal::SIGTRAP);
    match nix::sys::ptrace::detach(pid, sig) {
        Ok(()) => {
            tracing::info!(%pid, "the container's process made the runner its tracer (PTRACE_TRACEME): detached")
        }
        // Not traced: an ordinary stop (SIGSTOP), which is the container's own business.
        Err(e) => tracing::debug!(%pid, "ptrace(PTRACE_DETACH): {e}"),
    }
    true
}

/// Detach `pid` from us if it stopped as our tracee (see [`detach_if_traced`]); its exit is
/// left for the final wait (`WSTOPPED` without `WEXITED` never reaps).
fn release_traced_stops(pid: Pid) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    // Bounded: a process that stops again at once gets another SIGCHLD, hence another pass.
    for _ in 0..16 {
        match waitid(Id::Pid(pid), WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG) {
            Ok(st) if detach_if_traced(st) => {}
            _ => return,
        }
    }
}

/// What the runner says when the container's root died under it (also logged).
fn root_died_message(r: &RootDaemon<'_>) -> String {
    let msg = format!(
        "the container's root filesystem died: the unionfs daemon (pid {}) serving {} exited while the container ran; the container was killed",
        r.pid,
        r.rootfs.display()
    );
    tracing::error!("{msg}");
    msg
}

/// Write all of `data` to the (non-blocking) pty, waiting for room when it is full.
fn write_all_to_pty(master: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(master, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EAGAIN) => {
                let mut fds = [PollFd::new(master, PollFlags::POLLOUT)];
                if !matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0) {
                    return; // the container reads nothing: drop the input rather than hang
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Copy what the pty has to stdout; false once the pty is closed (EIO) or drained after exit.
fn relay_output(master: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(master, &mut buf) {
        Ok(0) => false,
        Ok(n) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            true
        }
        Err(nix::errno::Errno::EINTR) => true,
        Err(e) if std::io::Error::from(e).kind() == ErrorKind::WouldBlock => false,
        Err(_) => false,
    }
}

/// Give the pty the window size of our terminal.
pub fn copy_winsize(master: BorrowedFd<'_>) {
    if let Ok(ws) = sys::get_winsize(std::io::stdin().as_fd()) {
        let _ = sys::set_winsize(master, &ws);
    }
}
