//! A user-mode network for containers run without root (`--net slirp4netns`): `slirp4netns`
//! (Debian package `slirp4netns`), as rootless podman uses it, gives the container's network
//! namespace a `tap0` with 10.0.2.100/24, a gateway 10.0.2.2 and a DNS forwarder 10.0.2.3, and
//! makes the container's connections from its own process, in the runner's network namespace.
//! No privilege: it runs as the user, in the user's namespace (the runner, root there, may
//! enter the container's network namespace, which that user namespace owns).
//!
//! The host's loopback (10.0.2.2 -> 127.0.0.1) is closed unless asked for
//! (`--net slirp4netns:allow_host_loopback=true`, podman's spelling): services that listen on
//! the host's loopback trust local users, and a container is not one by default.

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

/// The DNS forwarder slirp4netns answers on (`--configure` sets nothing for DNS in the
/// container: its resolv.conf names this).
pub const DNS: &str = "10.0.2.3";

/// A running slirp4netns; stopped (killed and reaped) when dropped, and it also exits by
/// itself when this process exits (its `--exit-fd` closes).
pub struct Slirp {
    child: Child,
    /// Our end of the exit pipe: slirp4netns exits when it is closed.
    _exit: OwnedFd,
}

impl Drop for Slirp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pipe whose read end (for slirp4netns) is inherited and whose write end stays ours.
fn pipe_for_child() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    Ok((r, w))
}

fn inheritable(fd: &OwnedFd) -> Result<()> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .context("passing a descriptor to slirp4netns")?;
    Ok(())
}

/// Starts slirp4netns for the network namespace of `pid` and waits until `tap0` is configured.
/// `log` receives its output (named in errors).
pub fn start(pid: nix::unistd::Pid, allow_host_loopback: bool, log: &Path) -> Result<Slirp> {
    let (ready_r, ready_w) = pipe_for_child()?;
    let (exit_r, exit_w) = pipe_for_child()?;
    inheritable(&ready_w)?;
    inheritable(&exit_r)?;
    let mut args = vec![
        "--configure".to_string(),
        "--mtu=65520".to_string(),
        format!("--ready-fd={}", ready_w.as_raw_fd()),
        format!("--exit-fd={}", exit_r.as_raw_fd()),
    ];
    if !allow_host_loopback {
        args.push("--disable-host-loopback".into());
    }
    args.push(pid.to_string());
    args.push("tap0".into());
    let shown = format!("slirp4netns {}", args.join(" "));
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new("slirp4netns")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "--net slirp4netns needs slirp4netns (package slirp4netns), which is not on PATH"
            ),
            _ => anyhow::anyhow!("starting {shown}: {e}"),
        })?;
    // Only slirp4netns holds these now; the ready pipe's write end must close here for its
    // end-of-file to mean "slirp4netns exited".
    drop(ready_w);
    drop(exit_r);
    let slirp = Slirp {
        child,
        _exit: exit_w,
    };
    let mut ready = fs::File::from(ready_r);
    let mut b = [0u8];
    let n = ready
        .read(&mut b)
        .context("waiting for slirp4netns to configure tap0")?;
    if n == 0 || b[0] != b'1' {
        let output = fs::read_to_string(log).unwrap_or_default();
        bail!("{shown} failed before tap0 was ready: {}", output.trim());
    }
    Ok(slirp)
}
