//! `exec`: start one more process in a running container: its namespaces joined, its cgroup
//! entered, with the bundle's process settings (capabilities, no_new_privs, seccomp, AppArmor)
//! unless `--process` or the flags say otherwise. Same child code as the container's first
//! process, without the root set-up (the joined mount namespace is rooted in it already).
#![forbid(unsafe_code)]

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode;

use crate::child::{CapsPolicy, ChildConfig, Identity};
use crate::oci::bundle::{self, ProcessConfig};
use crate::oci::state::{self, Root, Status};
use crate::process::ProcessSpec;
use crate::spawn::{self, Spawn};
use crate::supervise::{exit_code_of, BlockedSignals};

/// The options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    pub process_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    /// `UID[:GID]`.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub no_new_privs: bool,
    pub preserve_fds: u32,
}

/// The namespaces to join, in order: user first (it owns the others), mount last.
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Run `exec`; returns the process's exit code (0 with `detach`).
pub fn exec(root: &Root, id: &str, opts: &ExecOpts) -> Result<i32> {
    let saved = root.load(id)?;
    let status = state::status(root, &saved);
    if status != Status::Running {
        bail!("cannot exec in container {id}: it is {status}, not running");
    }
    let (spec, cfg) = bundle::load(&saved.bundle)
        .with_context(|| format!("reading the bundle of container {id}"))?;
    drop(spec);
    let process = process_config(&cfg.process, opts)?;
    if process.terminal && opts.console_socket.is_none() {
        bail!("a terminal needs --console-socket to pass it to");
    }

    // Which of the container's namespaces differ from ours: those are joined.
    let mut join = Vec::new();
    let mut pid_ns = None;
    for (name, kind) in NAMESPACES {
        let theirs = format!("/proc/{}/ns/{name}", saved.pid);
        let ours = format!("/proc/self/ns/{name}");
        let (Ok(t), Ok(o)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
            continue;
        };
        if t.ino() == o.ino() && t.dev() == o.dev() {
            continue;
        }
        let fd = nix::fcntl::open(
            Path::new(&theirs),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {theirs}"))?;
        if kind == CloneFlags::CLONE_NEWPID {
            pid_ns = Some(fd);
        } else {
            join.push((fd, kind));
        }
    }
    if !state::process_alive(&saved) {
        bail!("cannot exec in container {id}: its process exited");
    }
    if let Some(fd) = &pid_ns {
        // For our children: the clone below is born in the container's pid namespace.
        nix::sched::setns(fd, CloneFlags::CLONE_NEWPID).context("setns to the pid namespace")?;
    }

    let console = match &opts.console_socket {
        Some(path) => Some(OwnedFd::from(
            std::os::unix::net::UnixStream::connect(path)
                .with_context(|| format!("connecting to the console socket {}", path.display()))?,
        )),
        None => None,
    };
    // Blocked before the clone, so a signal meanwhile waits for the signalfd.
    let mask = if opts.detach {
        None
    } else {
        Some(BlockedSignals::block()?)
    };
    let mut rlimits = process.rlimits.clone();
    crate::oci::lifecycle::fit_rlimits(&mut rlimits, false);
    // A container in a mount namespace not its own (the runtime's, or one joined by path) was
    // put in its root with chroot: the joined namespace's `/` is not the container's, so the
    // process chroots into the container process's root too (an empty mount plan).
    let chroot = cfg.fs.shared_mount_ns;
    let cfg_child = ChildConfig {
        rootfs: if chroot {
            PathBuf::from(format!("/proc/{}/root", saved.pid))
        } else {
            PathBuf::from("/")
        },
        mounts: Vec::new(),
        hostname: None,
        domainname: None,
        lo_up: false,
        jail: crate::rootfs::Jail::Chroot,
        root_propagation: None,
        enter_root: chroot,
        join,
        unshare_cgroupns: false,
        userns_root: false,
        init: false,
        process: ProcessSpec {
            argv: process.args.clone(),
            env: process.env.clone(),
            user: String::new(),
            workdir: process.cwd.clone(),
        },
        identity: Identity::Ids {
            uid: process.uid,
            gid: process.gid,
            additional_gids: process.additional_gids.clone(),
        },
        caps: CapsPolicy::Sets(process.caps),
        no_new_privs: process.no_new_privs,
        rlimits,
        oom_score_adj: process.oom_score_adj,
        umask: process.umask,
        apparmor: process.apparmor.clone(),
        seccomp: cfg.seccomp,
        die_with_parent: false,
        exec_sigmask: mask.as_ref().map_or(SigSet::empty(), |m| m.old),
        preserve_fds: opts.preserve_fds,
    };

    // Into the container's cgroup directly on v2 (then it has one directory, the unified one).
    let v2_dir = saved
        .cgroup_dirs
        .first()
        .filter(|_| saved.cgroup_dirs.len() == 1)
        .filter(|_| {
            crate::cgroup::detect(Path::new(crate::cgroup::CGROUP_ROOT))
                .is_ok_and(|m| m == crate::cgroup::Mode::V2)
        });
    let mut child = spawn::spawn(
        &cfg_child,
        Spawn {
            cgroup_dir: v2_dir.map(PathBuf::as_path),
            tty_channel: console,
            ready: true,
            ..Default::default()
        },
    )?;
    let pid = child.pid;
    let released = (|| -> Result<()> {
        if !child.joined_cgroup {
            for dir in &saved.cgroup_dirs {
                crate::cgroup::write_procs(dir, pid)?;
            }
        }
        child.release()
    })();
    if let Err(e) = released {
        child.abort();
        return Err(e);
    }
    child
        .wait_ready()
        .map_err(|e| e.context(format!("exec in container {id}")))?;
    if let Some(pf) = &opts.pid_file {
        crate::oci::lifecycle::write_pid_file(pf, pid)?;
    }
    let Some(mask) = mask else {
        return Ok(0);
    };
    let err = child.err.take().context("the error pipe")?;
    exit_code_of(pid, &child.pidfd, &mask, err)
}

/// The process to run: `--process FILE`, else the bundle's process with the flags applied.
fn process_config(base: &ProcessConfig, opts: &ExecOpts) -> Result<ProcessConfig> {
    if let Some(file) = &opts.process_file {
        let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let p: oci_spec::runtime::Process = serde_json::from_slice(&text)
            .with_context(|| format!("parsing the process {}", file.display()))?;
        return bundle::check_process(&p);
    }
    if opts.args.is_empty() {
        bail!("exec: no command given (use COMMAND [ARGS...] or --process FILE)");
    }
    let mut p = base.clone();
    p.args = opts.args.clone();
    for kv in &opts.env {
        let key = kv.split('=').next().unwrap_or("");
        p.env.retain(|e| e.split('=').next() != Some(key));
        p.env.push(kv.clone());
    }
    if let Some(cwd) = &opts.cwd {
        if !cwd.starts_with('/') {
            bail!("--cwd {cwd:?}: must be absolute");
        }
        p.cwd = cwd.clone();
    }
    if let Some(user) = &opts.user {
        let (u, g) = user.split_once(':').unwrap_or((user, "0"));
        p.uid = u
            .parse()
            .with_context(|| format!("--user {user:?}: use numeric UID[:GID]"))?;
        p.gid = g
            .parse()
            .with_context(|| format!("--user {user:?}: use numeric UID[:GID]"))?;
    }
    if !opts.additional_gids.is_empty() {
        p.additional_gids = opts.additional_gids.clone();
    }
    p.terminal = opts.tty;
    p.no_new_privs |= opts.no_new_privs;
    Ok(p)
}
