//! A user namespace of the user's own, for the tools that a user runs without root (rootlesskit's
//! shape, in one process pair; the same for `layer-tool` and `runner`, which uses this module):
//!
//! 1. **outside** ([`enter`]): re-executes this program (same arguments) with [`SETUP_ENV`] set;
//! 2. **inside** ([`child_setup`], first thing in `main`): `unshare(CLONE_NEWUSER|CLONE_NEWNS)`,
//!    then waits (polling its own `uid_map` and `gid_map`, 10 s at most) for the maps;
//! 3. outside sees the new namespace (`/proc/PID/ns/user` differs from its own) and writes the
//!    maps: the caller becomes root (0) and its subordinate range from /etc/subuid, /etc/subgid
//!    becomes 1..N, through the setuid helpers `newuidmap`/`newgidmap` (package `uidmap`; their
//!    exits are checked and their output named). A user without a range gets a single mapping
//!    (0 -> the caller, written directly, `setgroups` denied), with a warning;
//! 4. inside goes on as root of a namespace that owns its mount namespace: files may be given
//!    any mapped id (a layer's owners are kept as the container will see them), and FUSE may be
//!    mounted; device nodes still cannot be made ([`initial_root`] says who may);
//! 5. outside waits, passing on SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to it (not those the
//!    terminal sends: the inner process gets them itself), and exits with the inner code; the
//!    inner process gets SIGTERM if the outer one dies.
//!
//! No descriptor is passed: the two sides see each other through /proc. Nothing here gains
//! privilege: the maps are the kernel's and the setuid helpers' to check, and every capability
//! the inner process has is confined to namespaces the user owns.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Set in the inner process's environment: it must create its user namespace and wait.
pub const SETUP_ENV: &str = "UNIONFS_USERNS_SETUP";
/// Set in the inner process once its maps are written.
pub const INSIDE_ENV: &str = "UNIONFS_USERNS";

/// How long either side waits for the other.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The effective uid is 0 (in whatever user namespace).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root of the initial user namespace: the one who may make device nodes and use ids beyond
/// any mapping.
pub fn initial_root() -> bool {
    is_root()
        && is_initial_userns(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
}

/// Whether a `uid_map` text is the initial user namespace's (`0 0 4294967295`).
pub fn is_initial_userns(uid_map: &str) -> bool {
    let f: Vec<&str> = uid_map.split_whitespace().collect();
    f == ["0", "0", "4294967295"]
}

/// True in the inner process: root of a user namespace made by [`enter`]. The environment
/// variable alone never decides: root of the initial user namespace is never "inside".
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some_and(|v| v == "1") && is_root() && !initial_root()
}

/// One user's subordinate id range, from a `/etc/subuid`-style file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubIds {
    pub start: u32,
    pub count: u32,
}

/// The first range of `name` (or of its numeric id) in a subid file's text.
pub fn parse_subids(text: &str, name: &str, id: u32) -> Option<SubIds> {
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if who != name && who != id {
            return None;
        }
        let start = f.next()?.parse().ok()?;
        let count = f.next()?.parse().ok()?;
        (count > 0).then_some(SubIds { start, count })
    })
}

/// The arguments of `newuidmap PID ...`/`newgidmap PID ...`: `0 ID 1 1 START COUNT`.
pub fn map_args(id: u32, sub: SubIds) -> Vec<String> {
    vec![
        "0".into(),
        id.to_string(),
        "1".into(),
        "1".into(),
        sub.start.to_string(),
        sub.count.to_string(),
    ]
}

/// In `main`, before anything else (one thread, nothing opened): when this is the inner process
/// of [`enter`], create the user and mount namespaces and wait for the maps. Returns normally
/// (then everything proceeds as root in the namespace) or exits with 125.
pub fn child_setup() {
    if std::env::var_os(SETUP_ENV).is_none() {
        return;
    }
    std::env::remove_var(SETUP_ENV);
    // The outer process blocked the signals it forwards before it started us: take them again.
    let _ = forwarded_signals().thread_unblock();
    // The outer process gone (killed): stop as if told to.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let result = (|| -> Result<()> {
        nix::sched::unshare(
            nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
        )
        .context(
            "unshare(CLONE_NEWUSER|CLONE_NEWNS) (are unprivileged user namespaces enabled? \
             see the sysctls user.max_user_namespaces and kernel.unprivileged_userns_clone)",
        )?;
        // Both maps: the uid map is written first, and until the gid map is too, no file's
        // group is mapped, so the capabilities of the namespace do not apply to any file.
        let deadline = Instant::now() + HANDSHAKE;
        let written = |map: &str| std::fs::read_to_string(map).is_ok_and(|m| !m.trim().is_empty());
        while !(written("/proc/self/uid_map") && written("/proc/self/gid_map")) {
            if Instant::now() > deadline {
                bail!("no id maps were written for this user namespace within {HANDSHAKE:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Nothing of ours propagates back to the host's mounts.
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("making mounts private in the new mount namespace")?;
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("user namespace set-up: {e:#}");
        std::process::exit(125);
    }
    std::env::set_var(INSIDE_ENV, "1");
}

/// A user (euid != 0): run this program again, with the same arguments and `env` added, in a
/// user namespace of the user's own, and return its exit code. Root (of any namespace):
/// `None`, go on as usual.
pub fn enter(env: &[(&str, OsString)]) -> Result<Option<i32>> {
    if is_root() {
        return Ok(None);
    }
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let exe = std::env::current_exe().context("finding this program's executable")?;
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1)).env(SETUP_ENV, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Blocked before the start, so that none is lost: from now on a thread forwards them
    // (the inner process unblocks them first thing).
    forwarded_signals().thread_block()?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} in a user namespace", exe.display()))?;
    let pid = child.id();
    let mapped = (|| -> Result<()> {
        let own = std::fs::read_link("/proc/self/ns/user").context("reading our user namespace")?;
        let deadline = Instant::now() + HANDSHAKE;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                bail!(
                    "{} exited before creating its user namespace",
                    exe.display()
                );
            }
            match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
                Ok(ns) if ns != own => break,
                _ if Instant::now() > deadline => {
                    bail!(
                        "{} made no user namespace within {HANDSHAKE:?}",
                        exe.display()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        write_maps(pid, uid, gid, &name)
    })();
    if let Err(e) = mapped {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    forward_signals(nix::unistd::Pid::from_raw(pid as i32))?;
    let status = child.wait().context("waiting for the inner process")?;
    use std::os::unix::process::ExitStatusExt;
    Ok(Some(match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 125,
    }))
}

/// Why this host gives a user no namespace of its own, if it does not: user namespaces turned
/// off (`user.max_user_namespaces` 0, Debian's `kernel.unprivileged_userns_clone` 0), or a
/// subordinate range without `newuidmap` to map it.
pub fn preflight() -> Result<(), String> {
    let sysctl = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err("user namespaces are off (user.max_user_namespaces = 0)".into());
    }
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err(
            "unprivileged user namespaces are off (kernel.unprivileged_userns_clone = 0)".into(),
        );
    }
    let uid = nix::unistd::getuid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let has_range = parse_subids(
        &std::fs::read_to_string("/etc/subuid").unwrap_or_default(),
        &name,
        uid,
    )
    .is_some();
    let on_path = |prog: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
    };
    if has_range && !(on_path("newuidmap") && on_path("newgidmap")) {
        return Err(format!(
            "{name} has subordinate ids but newuidmap/newgidmap (package uidmap) are not on PATH"
        ));
    }
    Ok(())
}

/// The signals the outer process passes on to the inner one.
fn forwarded_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// A thread that passes each forwarded signal sent to this process on to `pid`. Not those the
/// terminal sent (Ctrl-C: `SI_KERNEL`): the terminal sends them to the inner process as well, as
/// it is in our process group, and it must not get two.
fn forward_signals(pid: nix::unistd::Pid) -> Result<()> {
    let fd = nix::sys::signalfd::SignalFd::with_flags(
        &forwarded_signals(),
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    )
    .context("signalfd for the signals to forward")?;
    std::thread::Builder::new()
        .name("userns-signals".into())
        .spawn(move || {
            while let Ok(Some(info)) = fd.read_signal() {
                if info.ssi_code == libc::SI_KERNEL {
                    continue;
                }
                if let Ok(sig) = nix::sys::signal::Signal::try_from(info.ssi_signo as i32) {
                    let _ = nix::sys::signal::kill(pid, sig);
                }
            }
        })
        .context("starting the signal forwarder")?;
    Ok(())
}

/// Writes the inner process's uid and gid maps (see the module doc, step 3).
fn write_maps(pid: u32, uid: u32, gid: u32, name: &str) -> Result<()> {
    let subuid = parse_subids(
        &std::fs::read_to_string("/etc/subuid").unwrap_or_default(),
        name,
        uid,
    );
    let subgid = parse_subids(
        &std::fs::read_to_string("/etc/subgid").unwrap_or_default(),
        name,
        gid,
    );
    match (subuid, subgid) {
        (Some(su), Some(sg)) => {
            run_helper("newuidmap", pid, &map_args(uid, su))?;
            run_helper("newgidmap", pid, &map_args(gid, sg))
        }
        _ => {
            eprintln!(
                "warning: {name} has no subordinate ids in /etc/subuid and /etc/subgid: \
                 mapping only your own uid {uid} and gid {gid} (root in the namespace); files of \
                 other owners show as nobody, and changing to another user fails. Ask the \
                 administrator for a range (usermod --add-subuids/--add-subgids)"
            );
            let proc = PathBuf::from(format!("/proc/{pid}"));
            std::fs::write(proc.join("uid_map"), format!("0 {uid} 1\n"))
                .with_context(|| format!("writing /proc/{pid}/uid_map (0 {uid} 1)"))?;
            // Required before an unprivileged gid_map (CVE-2014-8989).
            std::fs::write(proc.join("setgroups"), "deny")
                .with_context(|| format!("writing /proc/{pid}/setgroups"))?;
            std::fs::write(proc.join("gid_map"), format!("0 {gid} 1\n"))
                .with_context(|| format!("writing /proc/{pid}/gid_map (0 {gid} 1)"))
        }
    }
}

/// Runs `newuidmap`/`newgidmap` and names the helper, its arguments and its output on failure.
fn run_helper(helper: &str, pid: u32, args: &[String]) -> Result<()> {
    let shown = format!("{helper} {pid} {}", args.join(" "));
    let out = Command::new(helper)
        .arg(pid.to_string())
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "without root, {helper} (package uidmap) maps your subordinate ids; it is not on PATH"
            ),
            _ => anyhow::anyhow!("running {shown}: {e}"),
        })?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_recognised() {
        assert!(is_initial_userns("         0          0 4294967295\n"));
        assert!(!is_initial_userns("0 1002 1\n1 165536 65536\n"));
        assert!(!is_initial_userns("0 1002 1\n"));
    }

    #[test]
    fn subids_by_name_or_id_first_range() {
        let text = "alice:100000:65536\nbob:165536:65536\n1002:231072:1000\nbob:9:9\n";
        assert_eq!(
            parse_subids(text, "bob", 1001),
            Some(SubIds {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(
            parse_subids(text, "carol", 1002),
            Some(SubIds {
                start: 231072,
                count: 1000
            })
        );
        assert_eq!(parse_subids(text, "dave", 1003), None);
        assert_eq!(parse_subids("eve:1:0\n", "eve", 1), None, "an empty range");
        assert_eq!(
            map_args(
                1001,
                SubIds {
                    start: 165536,
                    count: 65536
                }
            ),
            ["0", "1001", "1", "1", "165536", "65536"]
        );
    }
}
