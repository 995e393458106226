//! `-t`: a pseudo-terminal for the container, and raw mode on the runner's own terminal.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// A socket pair that carries the pty master from the container to the runner: (runner's end,
/// container's end), both close-on-exec.
pub fn channel() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair for the pty")
}

/// In the container, after its `/dev/pts` is mounted and the root entered: open a pty from the
/// container's own devpts instance (so `ttyname` finds `/dev/pts/N` there, as with runc's
/// console socket), send the master to the runner, and return the terminal side.
pub fn open_in_container(channel: &OwnedFd) -> Result<(OwnedFd, String)> {
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("opening /dev/ptmx")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let name = ptsname_r(&master).context("ptsname")?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .with_context(|| format!("opening {name}"))?;
    crate::sys::send_fd(channel.as_fd(), master.as_fd())
        .context("sending the pty to the runner")?;
    Ok((slave, name))
}

/// Make `/dev/console` the container's terminal (runtime-spec: with `process.terminal`, the
/// console is the pty): bind the pty over it, creating the mount point when missing.
pub fn bind_console(pts: &str) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let console = std::path::Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        std::fs::File::create(console).context("creating /dev/console")?;
    }
    mount(
        Some(pts),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding {pts} over /dev/console"))
}

/// In the runner: receive the pty master (non-blocking from here on); `None` when the container
/// failed before sending it.
pub fn receive_master(channel: &OwnedFd) -> Result<Option<OwnedFd>> {
    let Some(master) = crate::sys::recv_fd(channel.as_fd()).context("receiving the pty")? else {
        return Ok(None);
    };
    let fl =
        OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL).context("fcntl(F_GETFL)")?);
    fcntl(&master, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))
        .context("fcntl(O_NONBLOCK) on the pty")?;
    Ok(Some(master))
}

/// Puts stdin's terminal in raw mode (the container's pty does the line editing) and restores it
/// on drop. Does nothing when stdin is not a terminal.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).is_err() {
            return RawMode { saved: None };
        }
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, t);
        }
    }
}
