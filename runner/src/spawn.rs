//! Cloning a container process and letting it go: the one sequence `runner run`, OCI `create`
//! and OCI `exec` share. The clone waits on a go pipe until the caller has done its part (joined
//! it to the cgroup on v1, written its id maps), reports set-up errors on an error pipe that
//! closes at `execve`, and, for OCI, says on a ready pipe when its set-up is complete. With
//! [`Spawn::confine_gate`] the go comes in two steps: set up, then execute.
#![forbid(unsafe_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::child::{self, ChildConfig, ChildFds};
use crate::sys::{self, Forked};

/// How to clone.
pub struct Spawn<'a> {
    /// `CLONE_NEW*` namespaces.
    pub flags: CloneFlags,
    /// A cgroup2 directory to clone straight into (`CLONE_INTO_CGROUP`).
    pub cgroup_dir: Option<&'a Path>,
    /// The socket the child sends its pty master over.
    pub tty_channel: Option<OwnedFd>,
    /// OCI `create`: the exec fifo (read end, and a writer of the child's own).
    pub exec_gate: Option<(OwnedFd, OwnedFd)>,
    /// Ask the child to report when its set-up is done (before exec, or before the gate).
    pub ready: bool,
    /// Two-step go: [`Spawned::release_setup`] lets the child build its root while the caller
    /// joins it to its cgroup (a v1 attach waits for an RCU grace period, ~10 ms: the two
    /// overlap), and [`Spawned::release`] lets it go on to execute. Nothing of the container's
    /// runs before the second step: the child waits for it before the command's `execve`, the
    /// `--init` fork and the ready report.
    pub confine_gate: bool,
}

impl Default for Spawn<'_> {
    fn default() -> Self {
        Spawn {
            flags: CloneFlags::empty(),
            cgroup_dir: None,
            tty_channel: None,
            exec_gate: None,
            ready: false,
            confine_gate: false,
        }
    }
}

/// The cloned process, held until it is released.
pub struct Spawned {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    /// Whether the kernel put it in `cgroup_dir` already.
    pub joined_cgroup: bool,
    /// Read end of the error pipe.
    pub err: Option<OwnedFd>,
    go: Option<OwnedFd>,
    ready: Option<OwnedFd>,
}

/// Clone `cfg`'s process. The caller must be single-threaded (checked): the clone copies only
/// the calling thread.
pub fn spawn(cfg: &ChildConfig, s: Spawn<'_>) -> Result<Spawned> {
    let threads = sys::thread_count().context("counting threads")?;
    if threads != 1 {
        bail!("internal error: {threads} threads at clone time; there must be one");
    }
    let (go_read, go_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2")?;
    let ready = if s.ready {
        Some(nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2")?)
    } else {
        None
    };
    let cgroup_fd = s.cgroup_dir.map(open_cgroup_dir).transpose()?;
    // Non-dumpable from the clone's first instruction (it inherits this) until its `execve`:
    // the container cannot ptrace it or open its `/proc/PID/exe` (CVE-2019-5736, see
    // crate::exeseal), nor can it the `--init` reaper or anything else the clone forks. A change
    // of credentials keeps it so (it sets `suid_dumpable`, not 1); only `execve` of the user's
    // program makes that program dumpable. We stay non-dumpable too, which costs nothing.
    sys::set_not_dumpable().context("prctl(PR_SET_DUMPABLE, 0)")?;
    let forked = sys::clone_process(s.flags.bits() as u64, cgroup_fd.as_ref().map(|f| f.as_fd()))
        .context("clone")?;
    match forked {
        Forked::Child => {
            let (ready_read, ready_write) = ready.unzip();
            drop((go_write, err_read, ready_read));
            child::run(
                cfg,
                ChildFds {
                    go: go_read,
                    err: err_write,
                    tty_channel: s.tty_channel,
                    ready: ready_write,
                    exec_gate: s.exec_gate,
                    confine_gate: s.confine_gate,
                },
            )
        }
        Forked::Parent {
            pid,
            pidfd,
            joined_cgroup,
        } => Ok(Spawned {
            pid,
            pidfd,
            joined_cgroup,
            err: Some(err_read),
            go: Some(go_write),
            ready: ready.map(|(r, _w)| r),
        }),
    }
}

/// A cgroup2 directory opened for `CLONE_INTO_CGROUP`.
pub fn open_cgroup_dir(dir: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening {}", dir.display()))
}

impl Spawned {
    /// Let a [`Spawn::confine_gate`] process set itself up; it then waits for [`Self::release`]
    /// before it executes anything of the container's.
    pub fn release_setup(&mut self) -> Result<()> {
        let go = self.go.as_ref().context("released already")?;
        nix::unistd::write(go, b"s").context("letting the container process set up")?;
        Ok(())
    }

    /// The second step of a [`Spawn::confine_gate`] go: let the process execute. A process
    /// that failed its set-up has exited already (the go pipe is broken): that is no error
    /// here, its exit status and error pipe say what happened to whoever waits for it.
    pub fn release_confined(&mut self) -> Result<()> {
        let go = self.go.take().context("released twice")?;
        match nix::unistd::write(&go, b"g") {
            Ok(_) | Err(nix::errno::Errno::EPIPE) => Ok(()),
            Err(e) => Err(e).context("releasing the container process"),
        }
    }

    /// What the process wrote on its error pipe before it died (after [`Self::abort`]).
    pub fn error_message(&mut self) -> Option<String> {
        let mut msg = String::new();
        let _ = fs::File::from(self.err.take()?).read_to_string(&mut msg);
        let msg = msg.trim();
        (!msg.is_empty()).then(|| msg.to_string())
    }

    /// Let the process go.
    pub fn release(&mut self) -> Result<()> {
        let go = self.go.take().context("released twice")?;
        fs::File::from(go)
            .write_all(b"g")
            .context("releasing the container process")
    }

    /// Kill and reap the process (a start that failed half-way).
    pub fn abort(&self) {
        let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    /// Wait until the released process reports its set-up complete; its error otherwise.
    pub fn wait_ready(&mut self) -> Result<()> {
        let ready = self.ready.take().context("not spawned with a ready pipe")?;
        let mut byte = [0u8; 1];
        if fs::File::from(ready).read(&mut byte).unwrap_or(0) == 1 {
            return Ok(());
        }
        let mut msg = String::new();
        if let Some(err) = self.err.take() {
            let _ = fs::File::from(err).read_to_string(&mut msg);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
        let msg = msg.trim();
        if msg.is_empty() {
            bail!("the container process died during its set-up");
        }
        bail!("{msg}")
    }
}
