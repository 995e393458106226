//! `runner run`: the steps of starting a container, in order, and taking everything down again.
//!
//! 1. find the image and the unionfs binary; make the container directory and its init layer;
//! 2. mount the union (writable, init, image layers top first);
//! 3. create the cgroup and write the limits;
//! 4. block the signals to forward, then clone the child into new namespaces (into the cgroup
//!    directly on v2), join it to the cgroup (v1) and let it go;
//! 5. supervise it; then kill what is left, remove the cgroup, unmount, and keep or delete the
//!    writable layer.
//!
//! Every resource is held by [`Resources`], whose drop takes down whatever an early error left.
#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layer_tool::store::Store;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::cgroup::Cgroup;
use crate::child::{self, CapsPolicy, ChildConfig, Identity};
use crate::container::{now, ContainerDir, Containers, State, Status};
use crate::initlayer::{self, InitLayer};
use crate::rootfs::{self, RootfsSpec};
use crate::spawn::{self, Spawn};
use crate::spec::{Net, RunSpec};
use crate::supervise::{self, BlockedSignals, TtyRelay};
use crate::sys;
use crate::union::{self, UnionMount};
use crate::{caps, init, process, tty};

/// What an early error must take down; also the normal teardown.
struct Resources {
    containers: Containers,
    dir: ContainerDir,
    name: String,
    /// Delete the container directory at the end (always before the command started).
    delete_dir: bool,
    mount: Option<UnionMount>,
    cgroup: Option<Cgroup>,
    /// Reaped once the container's process is attached (or with the rest).
    early_attach: Option<crate::cgroup::v1::EarlyAttach>,
}

impl Resources {
    /// Take everything down in order: processes and cgroup (the container's mount namespace dies
    /// with its last process), then the union, then the directory if it is not kept.
    fn teardown(&mut self) -> Result<()> {
        let mut first_err = None;
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.remove() {
                first_err.get_or_insert(e);
            }
        }
        if let Some(m) = self.mount.take() {
            if let Err(e) = m.unmount() {
                first_err.get_or_insert(e);
            }
        }
        if self.delete_dir {
            if union::is_mounted(&self.dir.rootfs()) {
                first_err.get_or_insert(anyhow::anyhow!(
                    "{} is still mounted; not deleting the container directory",
                    self.dir.rootfs().display()
                ));
            } else {
                if let Err(e) = self.dir.remove() {
                    first_err.get_or_insert(e);
                }
                self.containers.release_name(&self.name);
            }
            self.delete_dir = false;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Resources {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::error!("cleaning up container {}: {e:#}", self.name);
        }
    }
}

/// Run a container; returns the exit code for the runner (the command's, 128+N for signal N).
pub fn run(spec: RunSpec) -> Result<i32> {
    // Block the signals we forward (and SIGCHLD) before anything exists: one that arrives during
    // the set-up stops it cleanly (checked before the clone), and one that arrives between the
    // clone and the supervise loop waits, pending, for the signalfd.
    let mask = BlockedSignals::block()?;
    run_blocked(spec, &mask)
}

fn run_blocked(spec: RunSpec, mask: &BlockedSignals) -> Result<i32> {
    if !crate::rootless::is_root() {
        bail!("runner run without root runs in a user namespace of its own (crate::rootless)");
    }
    if matches!(spec.net, Net::Slirp4netns { .. }) && !crate::rootless::inside() {
        // As root, slirp4netns would be a root process parsing the container's packets.
        bail!("--net slirp4netns is for runs without root; as root use --net none or host");
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("no /dev/fuse: load the fuse module (modprobe fuse); the container's root is a FUSE mount");
    }
    // The first cgroup v1 attach's grace period runs alongside the preparations
    // (cgroup::v1::EarlyAttach); reaped after the container's attach.
    let early_attach = match crate::cgroup::detect(Path::new(crate::cgroup::CGROUP_ROOT)) {
        Ok(crate::cgroup::Mode::V1 { .. }) if !crate::rootless::inside() => {
            crate::cgroup::v1::EarlyAttach::start()
        }
        _ => None,
    };
    let store = Store::from_env();
    // A registry reference is pulled (by layer-tool's library) when the store lacks it.
    let pull_opts = layer_tool::registry::pull::PullOptions {
        progress: layer_tool::progress::wanted(),
        ..Default::default()
    };
    let image_name =
        layer_tool::registry::pull::ensure(&store, &spec.image, spec.pull, &pull_opts, |r| {
            eprintln!("runner: pulling {r}");
        })
        .map_err(|e| {
            if spec.image == "demo" {
                e.context("the demo image is not in the store: build it with `bash scripts/build-demo-image.sh`")
            } else {
                e
            }
        })?;
    let (image_dir, image) = store.find_image(&image_name).map_err(|e| {
        if spec.image == "demo" {
            e.context("the demo image is not in the store: build it with `bash scripts/build-demo-image.sh`")
        } else {
            e
        }
    })?;
    let mut layers = Vec::new();
    for l in image.layer_dirs(&image_dir) {
        // Canonical paths: `image.json` names layers relative to the image (`../../layers/…`).
        let canon = fs::canonicalize(&l)
            .with_context(|| format!("layer {} of image {} is missing", l.display(), image.name))?;
        if !canon.is_dir() {
            bail!(
                "layer {} of image {} is not a directory",
                l.display(),
                image.name
            );
        }
        layers.push(canon);
    }
    let layers_top_first: Vec<PathBuf> = layers.iter().rev().cloned().collect();
    let bin = union::find_unionfs_bin()?;

    // Private (0700) before anything of a container goes in: its layers and writable layer
    // hold whatever device nodes an image brought.
    store.secure()?;
    let containers = Containers::for_run(store.root())?;
    let (dir, name) = containers.create(spec.name.as_deref())?;
    let mut res = Resources {
        containers,
        dir: dir.clone(),
        name: name.clone(),
        delete_dir: true,
        mount: None,
        cgroup: None,
        early_attach,
    };
    let hostname = match (&spec.hostname, spec.net) {
        (Some(h), _) => h.clone(),
        (None, Net::Host) => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| dir.id[..12].to_string()),
        (None, Net::None | Net::Slirp4netns { .. }) => dir.id[..12].to_string(),
    };
    let proc_spec = process::process_spec(
        &image.config,
        &spec.command,
        &spec.env,
        spec.user.as_deref(),
        spec.workdir.as_deref(),
        &hostname,
        spec.tty,
    )?;
    child::check_argv(&proc_spec.argv)?;

    let (mut dirs, mut files) = (vec![PathBuf::from(&proc_spec.workdir)], Vec::new());
    for v in &spec.volumes {
        if v.host.is_dir() {
            dirs.push(v.container.clone());
        } else {
            files.push(v.container.clone());
        }
    }
    let init_layer = InitLayer {
        hostname: &hostname,
        net: spec.net,
        dirs,
        files,
    };
    initlayer::write(&dir.init(), &init_layer, &layers_top_first)?;

    let mut state = State {
        id: dir.id.clone(),
        name: name.clone(),
        image: image.name.clone(),
        image_dir: image_dir.clone(),
        layers: layers.clone(),
        command: proc_spec.argv.clone(),
        created: now(),
        status: Status::Created,
        runner_pid: Some(std::process::id() as i32),
        pid: None,
        exit_code: None,
        cgroups: Vec::new(),
    };
    dir.save(&state)?;

    let args = union::mount_args(
        &dir.upper(),
        &dir.init(),
        &layers_top_first,
        &dir.rootfs(),
        &dir.daemon_log_file(),
    )?;
    res.mount = Some(UnionMount::mount(
        &bin,
        &args,
        &dir.rootfs(),
        &dir.log_file(),
    )?);

    let mut limits = spec.limits.clone();
    if crate::cgroup::device_rules_supported() {
        limits.devices = crate::cgroup::docker_device_rules();
    }
    let cgroup = if crate::rootless::inside() {
        // A delegated cgroup v2 subtree when the user may write one; the limits it cannot
        // apply are named, once each.
        let d =
            crate::cgroup::delegated::create(Path::new(&format!("runner-{}", dir.id)), &limits)?;
        for n in &d.not_applied {
            let _ = writeln!(std::io::stderr(), "runner: warning: {n}");
        }
        d.cgroup.map(Cgroup::V2)
    } else {
        Some(Cgroup::create(&format!("runner-{}", dir.id), &limits)?)
    };
    if let Some(cgroup) = cgroup {
        state.cgroups = cgroup.dirs();
        dir.save(&state)?;
        res.cgroup = Some(cgroup);
    }

    let outcome = start_and_supervise(
        &spec, &dir, &hostname, proc_spec, &mut res, &mut state, mask,
    )?;

    let code = init::exit_code(outcome.status).unwrap_or(child::SETUP_FAILED);
    let failed_before_exec = !outcome.error.is_empty();
    if let Some(msg) = &outcome.root_died {
        let _ = writeln!(std::io::stderr(), "runner: container {name}: {msg}");
    }
    if failed_before_exec {
        let _ = writeln!(std::io::stderr(), "runner: {}", outcome.error);
    }
    if code == 128 + Signal::SIGKILL as i32 && res.cgroup.as_ref().is_some_and(|c| c.oom_killed()) {
        let _ = writeln!(
            std::io::stderr(),
            "runner: container {name} was killed by the out-of-memory killer (memory limit {} bytes)",
            spec.limits.memory.unwrap_or(0)
        );
    }
    state.status = Status::Exited;
    state.exit_code = Some(code);
    state.pid = None;
    state.runner_pid = None;
    // A container that never ran its command is not kept; otherwise --rm decides.
    res.delete_dir = spec.remove || failed_before_exec;
    if !res.delete_dir {
        dir.save(&state)?;
    }
    res.teardown()?;
    Ok(code)
}

fn start_and_supervise(
    spec: &RunSpec,
    dir: &ContainerDir,
    hostname: &str,
    proc_spec: process::ProcessSpec,
    res: &mut Resources,
    state: &mut State,
    mask: &BlockedSignals,
) -> Result<supervise::Outcome> {
    // A Ctrl-C or SIGTERM during the set-up: stop here, and let the teardown undo it all.
    let pending = sys::pending_signals().context("sigpending")?;
    if let Some(sig) = [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ]
    .into_iter()
    .find(|s| pending.contains(*s))
    {
        bail!("interrupted by {sig} before the container started");
    }
    let sigfd = mask.signalfd()?;

    let pty = if spec.tty {
        Some(tty::channel()?)
    } else {
        None
    };
    let _raw = spec.tty.then(tty::RawMode::enter);

    let rootfs = dir.rootfs();
    let mut mounts = rootfs::plan(&RootfsSpec {
        rootfs: &rootfs,
        volumes: &spec.volumes,
        read_only: spec.read_only,
        // Root of a user namespace cannot make device nodes: they are bound from the host.
        userns: spec.userns || crate::rootless::inside(),
        net_host: spec.net == Net::Host,
    });
    if crate::rootless::inside() {
        crate::rootless::adapt_mounts(&mut mounts);
    }
    let user = proc_spec.user.clone();
    let cfg = ChildConfig {
        rootfs,
        mounts,
        hostname: Some(hostname.to_string()),
        domainname: None,
        lo_up: spec.net != Net::Host,
        jail: if spec.no_pivot {
            crate::rootfs::Jail::MoveRoot
        } else {
            crate::rootfs::Jail::PivotRoot
        },
        root_propagation: None,
        enter_root: true,
        join: Vec::new(),
        unshare_cgroupns: false,
        userns_root: false,
        init: spec.init,
        process: proc_spec,
        identity: Identity::Lookup(user),
        caps: CapsPolicy::DockerDefault {
            keep: docker_caps(res.cgroup.as_ref()),
        },
        no_new_privs: true,
        rlimits: Vec::new(),
        oom_score_adj: None,
        umask: None,
        apparmor: None,
        seccomp: Some(crate::default_seccomp::filter()?),
        die_with_parent: true,
        exec_sigmask: mask.old,
        preserve_fds: 0,
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if spec.net != Net::Host {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if spec.userns {
        // Created first by the kernel, so it owns the other new namespaces.
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    let cgroup = res.cgroup.as_ref();
    let (tty_ours, tty_theirs) = match pty {
        Some((ours, theirs)) => (Some(ours), Some(theirs)),
        None => (None, None),
    };
    // The clone copies this process as it is (`spawn` checks it has one thread).
    let mut child = spawn::spawn(
        &cfg,
        Spawn {
            flags,
            cgroup_dir: cgroup.and_then(|c| c.clone_into_dir()),
            tty_channel: tty_theirs,
            confine_gate: true,
            ..Default::default()
        },
    )?;
    let pid = child.pid;
    // Held until the container is gone (the user-mode network serves it).
    let mut _slirp = None;
    let started = (|| -> Result<()> {
        if spec.userns {
            // Before the go: the child's first step needs its capabilities in the namespace,
            // which it has only once it maps to an id.
            write_id_maps(pid)?;
        }
        // The child builds its root while we join it to the cgroup (on v1 each start waits
        // there for an RCU grace period); it executes nothing before the final go below.
        child.release_setup()?;
        if let Some(cgroup) = cgroup.filter(|_| !child.joined_cgroup) {
            cgroup.add(pid)?;
        }
        res.early_attach = None;
        if let Net::Slirp4netns {
            allow_host_loopback,
        } = spec.net
        {
            // tap0 is up before the command runs.
            _slirp = Some(crate::slirp::start(
                pid,
                allow_host_loopback,
                &dir.slirp_log_file(),
            )?);
        }
        state.status = Status::Running;
        state.pid = Some(pid.as_raw());
        dir.save(state)?;
        child.release_confined()
    })();
    if let Err(e) = started {
        // The child sees end-of-file on the go pipe (or is killed here) and exits.
        child.abort();
        // It may have failed its set-up first (then the join found it gone): its words say why.
        return Err(match child.error_message() {
            Some(msg) => e.context(msg),
            None => e,
        });
    }
    res.delete_dir = spec.remove;
    // The container sends its pty master once its /dev/pts exists (or closes the socket on error).
    let relay = match &tty_ours {
        Some(ch) => tty::receive_master(ch)?.map(|master| TtyRelay { master }),
        None => None,
    };
    drop(tty_ours);
    if let Some(r) = &relay {
        supervise::copy_winsize(r.master.as_fd());
    }
    let root = res.mount.as_ref().and_then(|m| {
        m.daemon().map(|d| supervise::RootDaemon {
            pid: d.pid,
            pidfd: d.pidfd.as_fd(),
            rootfs: m.path(),
        })
    });
    let err = child.err.take().expect("the error pipe is unread");
    supervise::supervise(pid, &child.pidfd, &sigfd, err, relay.as_ref(), root)
}

/// docker's device policy: device cgroup rules where they can be enforced (cgroup v1, written
/// when the cgroup was made, so the group has a `devices` directory); elsewhere the container gets no CAP_MKNOD, so that it cannot make a
/// node for a host device. Either way, docker's default capabilities otherwise.
fn docker_caps(cgroup: Option<&Cgroup>) -> u64 {
    let mut keep = caps::default_mask();
    if !cgroup.is_some_and(|c| c.has_device_rules()) {
        keep &= !(1u64 << caps::number("CAP_MKNOD").expect("a known capability"));
    }
    keep
}

/// The identity maps of `--userns`: every id maps to itself (the whole 32-bit range, less the
/// invalid id 4294967295), so files keep their owners, while capabilities stay in the namespace.
pub const IDENTITY_MAP: &str = "0 0 4294967295\n";

fn write_id_maps(pid: nix::unistd::Pid) -> Result<()> {
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, IDENTITY_MAP).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
