//! Who am I, and what may I do: the one place in runner that asks whether it runs as root, and
//! the way a user without root gets a container (rootlesskit's shape, in one process pair).
//!
//! `runner run` started by a user (euid != 0):
//! 1. **outside** ([`enter`]): re-executes itself with `RUNNER_ROOTLESS_SYNC` naming one end of a
//!    socketpair, and sets `UNIONFS_STORE` to the user's store (`$XDG_DATA_HOME/unionfs`) so that
//!    the inner runner, root in its namespace, does not pick root's;
//! 2. **inside** ([`child_setup`], first thing in `main`): `unshare(CLONE_NEWUSER|CLONE_NEWNS)`,
//!    says "ready" on the socket and waits;
//! 3. outside writes the id maps: the caller becomes root (0) and its subordinate range from
//!    /etc/subuid, /etc/subgid becomes 1..N, through the setuid helpers `newuidmap`/`newgidmap`
//!    (package `uidmap`; their exits are checked and their output named). A user without a range
//!    gets a single mapping (0 -> the caller, written directly, `setgroups` denied), with a
//!    warning: files of other ids in an image then show as `nobody`;
//! 4. inside goes on as the ordinary runner, root in a user namespace that owns its mount
//!    namespace: it mounts the union itself (FUSE may be mounted there), and clones the container
//!    into new pid, uts, ipc, (net) namespaces owned by it. What it cannot do, [`inside`] tells
//!    it: no cgroup (the limits asked for are named in a warning and not applied), devices bound
//!    from the host instead of made;
//! 5. outside waits, passing on SIGINT, SIGTERM, SIGHUP and SIGQUIT that are sent to it, and
//!    exits with the inner runner's code; the inner runner gets SIGTERM if the outer one dies.
//!
//! Nothing here gains privilege: the maps are the kernel's and the setuid helpers' to check,
//! and every capability the inner runner has is confined to namespaces the user owns.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Set (to a descriptor number) in the inner runner's environment: it must create its user
/// namespace and wait for the maps.
const SYNC_ENV: &str = "RUNNER_ROOTLESS_SYNC";
/// Set in the inner runner once its maps are written.
const INSIDE_ENV: &str = "RUNNER_ROOTLESS";

/// True when running as root (no user namespace of our own needed).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True in the inner runner of a rootless run: root of a user namespace the user owns. The
/// environment variable alone never decides: root of the initial user namespace (whose
/// `uid_map` is the whole identity range) is never "inside", so setting it cannot make a
/// root-started container lose its cgroup or device policy.
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some_and(|v| v == "1")
        && is_root()
        && !is_initial_userns(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
}

/// Whether a `uid_map` text is the initial user namespace's (`0 0 4294967295`).
pub fn is_initial_userns(uid_map: &str) -> bool {
    let f: Vec<&str> = uid_map.split_whitespace().collect();
    f == ["0", "0", "4294967295"]
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

/// In `main`, before anything else (one thread, nothing opened): when this is the inner runner
/// of a rootless run, create the user and mount namespaces and wait for the maps. Returns
/// normally (then everything proceeds as root in the namespace) or exits.
pub fn child_setup() {
    let Some(fd) = std::env::var_os(SYNC_ENV) else {
        return;
    };
    std::env::remove_var(SYNC_ENV);
    // The outer runner blocked the signals it forwards before it started us: take them again
    // (the run blocks them itself, and the container must not inherit them blocked).
    let _ = forwarded_signals().thread_unblock();
    // The outer runner gone (killed): stop as if told to, so the container and the union are
    // taken down rather than left running in a namespace nobody waits for.
    let _ = crate::sys::set_parent_death_signal(libc::SIGTERM);
    let fd: i32 = match fd.to_str().and_then(|s| s.parse().ok()) {
        Some(fd) => fd,
        None => {
            eprintln!("runner: bad {SYNC_ENV}");
            std::process::exit(125);
        }
    };
    let mut sock = match crate::sys::adopt_inherited_fd(fd) {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("runner: {SYNC_ENV}={fd}: {e}");
            std::process::exit(125);
        }
    };
    let _ = nix::fcntl::fcntl(
        &sock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let result = (|| -> Result<()> {
        nix::sched::unshare(
            nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
        )
        .context("unshare(CLONE_NEWUSER|CLONE_NEWNS) (are unprivileged user namespaces enabled? see kernel.unprivileged_userns_clone)")?;
        sock.write_all(b"R").context("telling the outer runner")?;
        let mut b = [0u8];
        sock.read_exact(&mut b).context("waiting for the id maps")?;
        if b[0] != b'M' {
            bail!("the outer runner could not write the id maps");
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
        // The outer runner has already said why when it was its part that failed.
        if !format!("{e:#}").contains("could not write the id maps") {
            eprintln!("runner: rootless set-up: {e:#}");
        }
        std::process::exit(125);
    }
    std::env::set_var(INSIDE_ENV, "1");
}

/// `runner run` by a user: start the inner runner in a new user namespace, map ids, wait for it.
/// Returns its exit code. As root (or already inside) returns `None`: go on as usual.
pub fn enter() -> Result<Option<i32>> {
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
    let store = layer_tool::rootless::store_root(&layer_tool::rootless::Env::current())?;
    if !std::path::Path::new("/dev/fuse").exists() {
        bail!("no /dev/fuse: load the fuse module (modprobe fuse); the container's root is a FUSE mount");
    }
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    nix::fcntl::fcntl(
        &theirs,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .context("passing the sync socket")?;
    let exe = crate::exeseal::original_exe()
        .or_else(|| std::env::current_exe().ok())
        .context("finding runner's own executable")?;
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1))
        .env(SYNC_ENV, theirs.as_raw_fd().to_string())
        .env("UNIONFS_STORE", &store);
    // Blocked before the start, so that none is lost: from now on a thread forwards them
    // (the inner runner unblocks them first thing).
    forwarded_signals().thread_block()?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {} in a user namespace", exe.display()))?;
    drop(theirs);
    let pid = child.id();
    forward_signals(nix::unistd::Pid::from_raw(pid as i32))?;
    let mapped = (|| -> Result<()> {
        let mut ours = &ours;
        let mut b = [0u8];
        ours.read_exact(&mut b)
            .context("the inner runner exited before creating its user namespace")?;
        write_maps(pid, uid, gid, &name)
    })();
    let mut ours = ours;
    match mapped {
        Ok(()) => ours.write_all(b"M").context("releasing the inner runner")?,
        Err(e) => {
            let _ = ours.write_all(b"E");
            let _ = child.wait();
            return Err(e);
        }
    }
    drop(ours);
    let status = child.wait().context("waiting for the inner runner")?;
    use std::os::unix::process::ExitStatusExt;
    Ok(Some(match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 125,
    }))
}

/// The signals the outer runner passes on to the inner one (those `runner run` forwards to a
/// container).
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
/// terminal sent (Ctrl-C: `SI_KERNEL`): the terminal sends them to the inner runner as well, as
/// it is in our process group, and the container must not get two.
fn forward_signals(pid: nix::unistd::Pid) -> Result<()> {
    let fd = nix::sys::signalfd::SignalFd::with_flags(
        &forwarded_signals(),
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC,
    )
    .context("signalfd for the signals to forward")?;
    std::thread::Builder::new()
        .name("rootless-signals".into())
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

/// Writes the inner runner's uid and gid maps (see the module doc, step 3).
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
                "runner: warning: {name} has no subordinate ids in /etc/subuid and /etc/subgid: \
                 mapping only your own uid {uid} and gid {gid} (root in the container); files of \
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
                "runner without root needs {helper} (package uidmap) to map subordinate ids; it is not on PATH"
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

/// True when this user namespace forbids `setgroups` (`/proc/self/setgroups` is `deny`).
pub fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Whether `id` is mapped in this process's user namespace, from `/proc/self/{uid,gid}_map`'s
/// text.
pub fn id_mapped(map: &str, id: u32) -> bool {
    map.lines().any(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        matches!(f[..], [inside, _, count] if (inside..inside + count).contains(&u64::from(id)))
    })
}

/// What a rootless run's mounts cannot have: devpts' `gid=5` (the tty group) when gid 5 is not
/// mapped (a user without subordinate ids); the kernel refuses it (EINVAL). The ptys are then
/// the container root's group, as rootless podman does.
pub fn adapt_mounts(ops: &mut [crate::rootfs::Op]) {
    let gid_map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    if id_mapped(&gid_map, 5) {
        return;
    }
    for op in ops {
        if let crate::rootfs::Op::Mount {
            fstype: Some(t),
            data: Some(d),
            ..
        } = op
        {
            if t == "devpts" {
                *d = d
                    .split(',')
                    .filter(|o| *o != "gid=5")
                    .collect::<Vec<_>>()
                    .join(",");
            }
        }
    }
}

/// The limits that a rootless run cannot apply (no cgroup the user may write), by option name.
pub fn unapplied_limits(l: &crate::cgroup::Limits) -> Vec<&'static str> {
    let mut v = Vec::new();
    if l.memory.is_some() {
        v.push("--memory");
    }
    if l.cpu.is_some() {
        v.push("--cpus");
    }
    if l.pids.is_some() {
        v.push("--pids-limit");
    }
    if l.cpuset_cpus.is_some() {
        v.push("--cpuset-cpus");
    }
    if l.cpuset_mems.is_some() {
        v.push("cpuset mems");
    }
    if l.cpu_shares.is_some() {
        v.push("cpu shares");
    }
    if l.io_weight.is_some() {
        v.push("--io-weight");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_never_inside() {
        assert!(is_initial_userns("         0          0 4294967295\n"));
        assert!(!is_initial_userns("0 1002 1\n1 165536 65536\n"));
        assert!(!is_initial_userns("0 1002 1\n"));
    }

    #[test]
    fn mapped_ids() {
        let single = "         0       1002          1\n";
        assert!(id_mapped(single, 0));
        assert!(!id_mapped(single, 5));
        let range = "0 1002 1\n1 165536 65536\n";
        assert!(id_mapped(range, 5));
        assert!(id_mapped(range, 65536));
        assert!(!id_mapped(range, 65537));
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
