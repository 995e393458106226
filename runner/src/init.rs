//! `--init`: a small pid 1 that forwards signals to the command and reaps orphans (tini's job).
//!
//! Without it the command is pid 1, and the kernel drops every signal for which pid 1 has no
//! handler, from inside the namespace and from the runner alike (only SIGKILL and SIGSTOP from an
//! ancestor namespace get through): a command that does not handle SIGTERM then ignores
//! `docker stop`-style termination, and zombies whose parents die are never reaped.
#![forbid(unsafe_code)]

use std::fs;

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::child::FORWARDED;
use crate::sys;

/// The exit code a wait status maps to: the code, or 128+N for signal N.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Forward signals to `command` and reap every child until `command` exits; then exit with its
/// code. The forwarded signals and SIGCHLD were blocked before the runner cloned us, so none that
/// arrived early is lost: they wait, pending, for `sigwait`.
pub fn reap(command: Pid, err_pipe: &fs::File) -> ! {
    // Non-dumpable since the clone (crate::spawn), so the command, forked before its exec,
    // cannot reach us through /proc either.
    let _ = err_pipe; // stays open until exit; the command's own copy closed on exec
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGWINCH);
    if mask.thread_block().is_err() {
        sys::exit_now(crate::child::SETUP_FAILED);
    }
    loop {
        let sig = match mask.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(command, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(st) if crate::supervise::detach_if_traced(st) => {}
                Ok(st) if st.pid() == Some(command) => {
                    if let Some(code) = exit_code(st) {
                        // Leaving pid 1 makes the kernel kill what is left in the namespace.
                        sys::exit_now(code);
                    }
                }
                Ok(_) => {} // an orphan, reaped
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let p = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(p, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(p, Signal::SIGTERM, true)),
            Some(143)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
