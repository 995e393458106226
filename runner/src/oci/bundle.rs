//! An OCI bundle (`config.json` and a root filesystem), read with the `oci-spec` crate and
//! checked into a [`Config`]: everything the runtime will do, or a clear error naming the field
//! it cannot honour. Nothing that weakens isolation is ignored silently: unsupported fields are
//! refused; fields that only tune (a soft memory reservation, swappiness) are logged and skipped.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use oci_spec::runtime::{
    Capabilities, LinuxNamespaceType, LinuxResources, PosixRlimitType, Process, Spec,
};

use crate::caps::{self, CapSets};
use crate::cgroup::{CpuQuota, DeviceRule, Limits, V1Write};
use crate::oci::mounts::{self, DeviceNode, MountEntry};
use crate::oci::seccomp;

/// The annotation naming the layers of a union root: absolute directories, top first,
/// separated by `:`. The bundle's `root.path` is then the mount point.
pub const LAYERS_ANNOTATION: &str = "run.unionfs.layers";

/// The runtime-spec version this runtime implements.
pub const OCI_VERSION: &str = "1.2.0";

/// Where the container's root comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A directory as it is (the usual case: the engine prepared it).
    Plain,
    /// A union of these layers (top first) under a fresh writable layer, mounted at the root
    /// path through `unionfs`.
    Union(Vec<PathBuf>),
}

/// A namespace of the container: new (`path` None) or joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub kind: CloneFlags,
    pub path: Option<PathBuf>,
}

/// One hook of `hooks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<u64>,
}

/// The hooks this runtime runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

/// A bundle, checked.
#[derive(Debug)]
pub struct Config {
    pub bundle: PathBuf,
    /// Absolute path of the root (the mount point for a union root).
    pub rootfs: PathBuf,
    pub root_source: RootSource,
    pub fs: mounts::FsSpec,
    pub namespaces: Vec<Namespace>,
    pub uid_map: Option<String>,
    pub gid_map: Option<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub process: ProcessConfig,
    pub limits: Limits,
    pub cgroups_path: Option<PathBuf>,
    pub hooks: Hooks,
    pub annotations: HashMap<String, String>,
    pub seccomp: Option<seccomp::Filter>,
}

/// `process` (also what `exec --process` reads).
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub caps: CapSets,
    pub no_new_privs: bool,
    pub rlimits: Vec<crate::child::Rlimit>,
    pub oom_score_adj: Option<i32>,
    pub apparmor: Option<String>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
}

impl Config {
    /// Whether the container gets a namespace of this kind (new or joined).
    pub fn has_ns(&self, kind: CloneFlags) -> bool {
        self.namespaces.iter().any(|n| n.kind == kind)
    }

    /// Whether it gets a new one of this kind.
    pub fn new_ns(&self, kind: CloneFlags) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.kind == kind && n.path.is_none())
    }
}

/// Read `BUNDLE/config.json` and check it.
pub fn load(bundle: &Path) -> Result<(Spec, Config)> {
    let bundle = std::fs::canonicalize(bundle)
        .with_context(|| format!("bundle {} does not exist", bundle.display()))?;
    let path = bundle.join("config.json");
    if !path.is_file() {
        bail!("bundle {}: no config.json", bundle.display());
    }
    let spec = Spec::load(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = check(&spec, &bundle)?;
    Ok((spec, config))
}

/// Check a spec whose bundle directory is `bundle`.
pub fn check(spec: &Spec, bundle: &Path) -> Result<Config> {
    let version = spec.version();
    if !version.starts_with("1.") {
        bail!("ociVersion {version:?}: this runtime implements {OCI_VERSION} (1.x)");
    }
    let Some(root) = spec.root() else {
        bail!("root: missing (the bundle must name its root filesystem)");
    };
    let rootfs = bundle.join(root.path());
    let annotations = spec.annotations().clone().unwrap_or_default();
    let root_source = match annotations.get(LAYERS_ANNOTATION) {
        Some(list) => RootSource::Union(parse_layers(list)?),
        None => match image_layers(&rootfs)? {
            Some(layers) => RootSource::Union(layers),
            None => RootSource::Plain,
        },
    };
    if root_source == RootSource::Plain && !rootfs.is_dir() {
        bail!("root.path {}: not a directory", rootfs.display());
    }
    let Some(process) = spec.process() else {
        bail!("process: missing (create needs a process to start)");
    };
    let process = check_process(process)?;
    let Some(linux) = spec.linux() else {
        bail!("linux: missing (this is a Linux runtime)");
    };
    refuse_if(
        linux.mount_label().as_ref().is_some_and(|l| !l.is_empty()),
        "linux.mountLabel (SELinux is not supported)",
    )?;
    refuse_if(linux.intel_rdt().is_some(), "linux.intelRdt")?;
    refuse_if(linux.personality().is_some(), "linux.personality")?;
    refuse_if(linux.time_offsets().is_some(), "linux.timeOffsets")?;
    refuse_if(linux.net_devices().is_some(), "linux.netDevices")?;
    refuse_if(linux.memory_policy().is_some(), "linux.memoryPolicy")?;

    let mut namespaces = Vec::new();
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let kind = match ns.typ() {
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            other => bail!("linux.namespaces: {other:?} namespaces are not supported"),
        };
        if namespaces.iter().any(|n: &Namespace| n.kind == kind) {
            bail!("linux.namespaces: {:?} is listed twice", ns.typ());
        }
        let path = ns.path().clone().filter(|p| !p.as_os_str().is_empty());
        if let Some(p) = &path {
            if kind == CloneFlags::CLONE_NEWUSER {
                bail!(
                    "linux.namespaces: joining a user namespace ({}) is not supported",
                    p.display()
                );
            }
            if !p.exists() {
                bail!(
                    "linux.namespaces: {:?} namespace path {} does not exist",
                    ns.typ(),
                    p.display()
                );
            }
        }
        namespaces.push(Namespace { kind, path });
    }
    // Without a new mount namespace (the runtime's, or one joined by path) the mounts are made
    // in that namespace and the root is entered with chroot, as runc does. What cannot be
    // confined there is refused, by name, rather than done half-way.
    let shared_mount_ns = !namespaces
        .iter()
        .any(|n| n.kind == CloneFlags::CLONE_NEWNS && n.path.is_none());
    let new_user = namespaces
        .iter()
        .any(|n| n.kind == CloneFlags::CLONE_NEWUSER);
    let map = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.as_ref().filter(|v| !v.is_empty()).map(|v| {
            v.iter()
                .map(|e| format!("{} {} {}\n", e.container_id(), e.host_id(), e.size()))
                .collect::<String>()
        })
    };
    let (uid_map, gid_map) = (map(linux.uid_mappings()), map(linux.gid_mappings()));
    if new_user && (uid_map.is_none() || gid_map.is_none()) {
        bail!("linux.uidMappings/gidMappings: a new user namespace needs both");
    }
    if !new_user && (uid_map.is_some() || gid_map.is_some()) {
        bail!("linux.uidMappings: mappings given without a user namespace");
    }

    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
    let own_uts = namespaces
        .iter()
        .any(|n| n.kind == CloneFlags::CLONE_NEWUTS);
    if (hostname.is_some() || domainname.is_some()) && !own_uts {
        bail!("hostname: setting it needs a UTS namespace of the container's own");
    }
    // A network namespace of the container's own: a new one, or one joined by path that is
    // not the runtime's (podman and CNI make one for the container and pass its path).
    let own_net = namespaces.iter().any(|n| {
        n.kind == CloneFlags::CLONE_NEWNET && n.path.as_deref().is_none_or(|p| !same_ns(p, "net"))
    });

    let mut sysctl: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctl.sort();
    for (k, _) in &sysctl {
        mounts::check_sysctl(k, own_net)?;
    }

    let mut mount_entries = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let kind = m.typ().clone().unwrap_or_else(|| "bind".to_string());
        let options = m.options().clone().unwrap_or_default();
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        refuse_if(
            m.uid_mappings().is_some() || m.gid_mappings().is_some(),
            "mounts[].uidMappings (id-mapped mounts)",
        )?;
        let source = m.source().clone().map(|s| {
            if is_bind && s.is_relative() {
                bundle.join(s)
            } else {
                s
            }
        });
        if is_bind {
            match &source {
                Some(s) if s.exists() => {}
                Some(s) => bail!(
                    "mounts: the source {} of the bind mount on {} does not exist",
                    s.display(),
                    m.destination().display()
                ),
                None => bail!(
                    "mounts: bind mount on {} has no source",
                    m.destination().display()
                ),
            }
        }
        mount_entries.push(MountEntry {
            destination: m.destination().clone(),
            kind,
            source,
            options,
        });
    }

    let mut devices = Vec::new();
    for d in linux.devices().as_deref().unwrap_or_default() {
        let kind = match d.typ().as_str() {
            "c" | "u" => 'c',
            "b" => 'b',
            "p" => 'p',
            other => bail!(
                "linux.devices: {}: unknown type {other:?}",
                d.path().display()
            ),
        };
        if !d.path().starts_with("/dev/") {
            bail!("linux.devices: {} is not under /dev", d.path().display());
        }
        devices.push(DeviceNode {
            path: d.path().clone(),
            kind,
            major: u64::try_from(d.major()).context("linux.devices: negative major")?,
            minor: u64::try_from(d.minor()).context("linux.devices: negative minor")?,
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }

    if shared_mount_ns {
        let not_own = "needs a new mount namespace (the mount namespace is the runtime's or \
                       one joined by path, and every process of it would be affected)";
        refuse_if_shared(
            linux.masked_paths().as_ref().is_some_and(|v| !v.is_empty()),
            "linux.maskedPaths",
            not_own,
        )?;
        refuse_if_shared(
            linux
                .readonly_paths()
                .as_ref()
                .is_some_and(|v| !v.is_empty()),
            "linux.readonlyPaths",
            not_own,
        )?;
        refuse_if_shared(root.readonly().unwrap_or(false), "root.readonly", not_own)?;
        refuse_if_shared(
            linux
                .rootfs_propagation()
                .as_ref()
                .is_some_and(|p| !p.is_empty()),
            "linux.rootfsPropagation",
            not_own,
        )?;
    }
    let fs = mounts::FsSpec {
        rootfs: rootfs.clone(),
        mounts: mount_entries,
        devices,
        propagation: linux.rootfs_propagation().clone(),
        readonly_root: root.readonly().unwrap_or(false),
        sysctl,
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        userns: new_user,
        cgroup_dirs: Vec::new(),
        shared_mount_ns,
        root_parent_mount: None,
    };
    let mut limits = match linux.resources() {
        Some(r) => check_resources(r)?,
        None => Limits::default(),
    };
    if !limits.devices.is_empty() {
        // As runc: whatever the rules deny, the devices the runtime itself creates stay usable.
        limits.devices.extend(default_device_rules(&fs.devices));
    }
    let seccomp = match linux.seccomp() {
        Some(s) => Some(seccomp::compile(s).context("linux.seccomp")?),
        None => None,
    };
    let hooks = check_hooks(spec)?;
    Ok(Config {
        bundle: bundle.to_path_buf(),
        rootfs,
        root_source,
        fs,
        namespaces,
        uid_map,
        gid_map,
        hostname,
        domainname,
        process,
        limits: Limits {
            join_all: true,
            ..limits
        },
        cgroups_path: linux
            .cgroups_path()
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        hooks,
        annotations,
        seccomp,
    })
}

/// The device rules runc adds after a bundle's own (the defaults, and each of `linux.devices`).
fn default_device_rules(devices: &[DeviceNode]) -> Vec<DeviceRule> {
    let mut out = crate::cgroup::default_device_rules();
    for d in devices.iter().filter(|d| d.kind != 'p') {
        out.push(DeviceRule {
            allow: true,
            kind: d.kind,
            major: Some(d.major as i64),
            minor: Some(d.minor as i64),
            access: "rwm".to_string(),
        });
    }
    out
}

/// Whether the namespace file `path` is the runtime's own namespace of `kind`.
fn same_ns(path: &Path, kind: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        std::fs::metadata(format!("/proc/self/ns/{kind}")),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn refuse_if_shared(present: bool, field: &str, why: &str) -> Result<()> {
    if present {
        bail!("{field}: {why}");
    }
    Ok(())
}

fn refuse_if(present: bool, field: &str) -> Result<()> {
    if present {
        bail!("{field}: not supported by this runtime");
    }
    Ok(())
}

/// `a:b:c`, absolute directories that exist.
fn parse_layers(list: &str) -> Result<Vec<PathBuf>> {
    let layers: Vec<PathBuf> = list
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if layers.is_empty() {
        bail!("annotation {LAYERS_ANNOTATION}: no layers");
    }
    for l in &layers {
        if !l.is_absolute() || !l.is_dir() {
            bail!(
                "annotation {LAYERS_ANNOTATION}: layer {} is not an absolute path to a directory",
                l.display()
            );
        }
    }
    Ok(layers)
}

/// When `root` is an image directory of this project's store (it has `image.json`), its
/// layers, top first.
fn image_layers(root: &Path) -> Result<Option<Vec<PathBuf>>> {
    if !root.join("image.json").is_file() {
        return Ok(None);
    }
    let image = layer_tool::store::Image::load(root)
        .with_context(|| format!("root.path {} looks like an image but", root.display()))?;
    let mut layers = Vec::new();
    for l in image.layer_dirs(root).into_iter().rev() {
        layers.push(std::fs::canonicalize(&l).with_context(|| {
            format!("layer {} of image {} is missing", l.display(), image.name)
        })?);
    }
    Ok(Some(layers))
}

/// `process`, checked (also `exec --process`).
pub fn check_process(p: &Process) -> Result<ProcessConfig> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        bail!("process.args: empty (nothing to run)");
    }
    if args.iter().any(|a| a.contains('\0')) {
        bail!("process.args: contains a NUL byte");
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        bail!("process.cwd {cwd:?}: must be an absolute path");
    }
    refuse_if(
        p.selinux_label().as_ref().is_some_and(|l| !l.is_empty()),
        "process.selinuxLabel (SELinux is not supported)",
    )?;
    refuse_if(p.io_priority().is_some(), "process.ioPriority")?;
    refuse_if(p.scheduler().is_some(), "process.scheduler")?;
    refuse_if(p.exec_cpu_affinity().is_some(), "process.execCPUAffinity")?;
    let caps = match p.capabilities() {
        None => CapSets::default(),
        Some(c) => CapSets {
            bounding: cap_mask(c.bounding(), "bounding")?,
            effective: cap_mask(c.effective(), "effective")?,
            permitted: cap_mask(c.permitted(), "permitted")?,
            inheritable: cap_mask(c.inheritable(), "inheritable")?,
            ambient: cap_mask(c.ambient(), "ambient")?,
        },
    };
    let caps = grantable_caps(caps);
    let mut rlimits = Vec::new();
    for r in p.rlimits().as_deref().unwrap_or_default() {
        if r.soft() > r.hard() {
            bail!(
                "process.rlimits: {:?} soft limit {} is above its hard limit {}",
                r.typ(),
                r.soft(),
                r.hard()
            );
        }
        rlimits.push((rlimit_resource(r.typ())?, r.soft(), r.hard()));
    }
    let user = p.user();
    Ok(ProcessConfig {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        caps,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        rlimits,
        oom_score_adj: p.oom_score_adj(),
        apparmor: p.apparmor_profile().clone().filter(|a| !a.is_empty()),
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
    })
}

/// The runtime-spec: a runtime SHOULD NOT fail when a capability cannot be granted. What the
/// kernel will not grant is left out, with one warning at create (runc does the same): ambient
/// capabilities that are not also permitted and inheritable, and capabilities this kernel does
/// not know or this runtime does not hold in its own bounding set.
fn grantable_caps(c: CapSets) -> CapSets {
    let names = |mask: u64| {
        (0..64)
            .filter(|n| mask & (1u64 << n) != 0)
            .map(|n| caps::ALL_CAPS.get(n).copied().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ambient = c.ambient & !c.raisable_ambient();
    if ambient != 0 {
        tracing::warn!(
            "process.capabilities.ambient: {} not granted (an ambient capability must also be \
             permitted and inheritable)",
            names(ambient)
        );
    }
    let grantable = caps::grantable_mask();
    let missing = (c.bounding | c.effective | c.permitted | c.inheritable | c.ambient) & !grantable;
    if missing != 0 {
        tracing::warn!(
            "process.capabilities: {} not granted (unknown to this kernel, or not in the \
             runtime's own bounding set)",
            names(missing)
        );
    }
    CapSets {
        bounding: c.bounding & grantable,
        effective: c.effective & grantable,
        permitted: c.permitted & grantable,
        inheritable: c.inheritable & grantable,
        ambient: c.raisable_ambient() & grantable,
    }
}

fn cap_mask(set: &Option<Capabilities>, which: &str) -> Result<u64> {
    let mut mask = 0u64;
    for cap in set.iter().flatten() {
        let name = serde_json::to_value(cap)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let name = if name.starts_with("CAP_") {
            name
        } else {
            format!("CAP_{name}")
        };
        let Some(n) = caps::number(&name) else {
            bail!("process.capabilities.{which}: unknown capability {name}");
        };
        mask |= 1u64 << n;
    }
    Ok(mask)
}

fn rlimit_resource(t: PosixRlimitType) -> Result<Resource> {
    use PosixRlimitType as R;
    Ok(match t {
        R::RlimitCpu => Resource::RLIMIT_CPU,
        R::RlimitFsize => Resource::RLIMIT_FSIZE,
        R::RlimitData => Resource::RLIMIT_DATA,
        R::RlimitStack => Resource::RLIMIT_STACK,
        R::RlimitCore => Resource::RLIMIT_CORE,
        R::RlimitRss => Resource::RLIMIT_RSS,
        R::RlimitNproc => Resource::RLIMIT_NPROC,
        R::RlimitNofile => Resource::RLIMIT_NOFILE,
        R::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        R::RlimitAs => Resource::RLIMIT_AS,
        R::RlimitLocks => Resource::RLIMIT_LOCKS,
        R::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        R::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        R::RlimitNice => Resource::RLIMIT_NICE,
        R::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        R::RlimitRttime => Resource::RLIMIT_RTTIME,
        #[allow(unreachable_patterns)]
        other => bail!("process.rlimits: {other:?} is not a Linux resource limit"),
    })
}

/// Queue a v1 file write for a finer resource field.
fn w(
    limits: &mut Limits,
    controller: &'static str,
    file: &str,
    value: impl ToString,
    field: &'static str,
) {
    limits.v1_files.push(V1Write {
        controller,
        file: file.to_string(),
        value: value.to_string(),
        field,
    });
}

/// `linux.resources` as [`Limits`]; limits this runtime cannot enforce are refused.
pub fn check_resources(r: &LinuxResources) -> Result<Limits> {
    let mut limits = Limits::default();
    if let Some(m) = r.memory() {
        if let Some(l) = m.limit().filter(|l| *l > 0) {
            limits.memory = Some(l as u64);
        }
        if let Some(s) = m.swap().filter(|s| *s > 0) {
            if limits.memory.is_some_and(|l| (s as u64) < l) {
                bail!("linux.resources.memory.swap {s} is below the memory limit");
            }
            // memory+swap, written after the limit (which turns swap off by default).
            w(
                &mut limits,
                "memory",
                "memory.memsw.limit_in_bytes",
                s,
                "linux.resources.memory.swap",
            );
        }
        if let Some(v) = m.reservation().filter(|v| *v > 0) {
            w(
                &mut limits,
                "memory",
                "memory.soft_limit_in_bytes",
                v,
                "linux.resources.memory.reservation",
            );
        }
        if let Some(v) = m.swappiness() {
            if v > 100 {
                bail!("linux.resources.memory.swappiness {v}: out of range 0..=100");
            }
            w(
                &mut limits,
                "memory",
                "memory.swappiness",
                v,
                "linux.resources.memory.swappiness",
            );
        }
        if m.disable_oom_killer() == Some(true) {
            w(
                &mut limits,
                "memory",
                "memory.oom_control",
                1,
                "linux.resources.memory.disableOOMKiller",
            );
        }
        if let Some(v) = m.kernel().filter(|v| *v > 0) {
            w(
                &mut limits,
                "memory",
                "memory.kmem.limit_in_bytes",
                v,
                "linux.resources.memory.kernel",
            );
        }
        if let Some(v) = m.kernel_tcp().filter(|v| *v > 0) {
            w(
                &mut limits,
                "memory",
                "memory.kmem.tcp.limit_in_bytes",
                v,
                "linux.resources.memory.kernelTCP",
            );
        }
    }
    if let Some(c) = r.cpu() {
        match (c.quota(), c.period()) {
            (Some(q), p) if q > 0 => {
                let period = p.unwrap_or(crate::spec::CPU_PERIOD_US);
                limits.cpu = Some(CpuQuota {
                    quota_us: q as u64,
                    period_us: period,
                });
            }
            _ => {}
        }
        limits.cpu_shares = c.shares().filter(|s| *s > 0);
        limits.cpuset_cpus = c.cpus().clone().filter(|s| !s.is_empty());
        limits.cpuset_mems = c.mems().clone().filter(|s| !s.is_empty());
        // Period first: the kernel checks the runtime against it.
        if let Some(v) = c.realtime_period().filter(|v| *v > 0) {
            w(
                &mut limits,
                "cpu",
                "cpu.rt_period_us",
                v,
                "linux.resources.cpu.realtimePeriod",
            );
        }
        if let Some(v) = c.realtime_runtime().filter(|v| *v != 0) {
            w(
                &mut limits,
                "cpu",
                "cpu.rt_runtime_us",
                v,
                "linux.resources.cpu.realtimeRuntime",
            );
        }
        if c.idle().is_some() || c.burst().is_some() {
            tracing::warn!("linux.resources.cpu: idle and burst are not applied");
        }
    }
    if let Some(p) = r.pids() {
        if p.limit() > 0 {
            limits.pids = Some(p.limit() as u64);
        }
    }
    if let Some(b) = r.block_io() {
        if let Some(w) = b.weight() {
            if !(10..=1000).contains(&w) {
                bail!("linux.resources.blockIO.weight {w}: out of range 10..=1000");
            }
            limits.io_weight = Some(w);
        }
        if let Some(v) = b.leaf_weight() {
            w(
                &mut limits,
                "blkio",
                "blkio.leaf_weight",
                v,
                "linux.resources.blockIO.leafWeight",
            );
        }
        for d in b.weight_device().iter().flatten() {
            if let Some(weight) = d.weight() {
                let value = format!("{}:{} {weight}", d.major(), d.minor());
                w(
                    &mut limits,
                    "blkio",
                    "blkio.weight_device",
                    value,
                    "linux.resources.blockIO.weightDevice",
                );
            }
        }
        let throttles = [
            (
                b.throttle_read_bps_device(),
                "blkio.throttle.read_bps_device",
                "linux.resources.blockIO.throttleReadBpsDevice",
            ),
            (
                b.throttle_write_bps_device(),
                "blkio.throttle.write_bps_device",
                "linux.resources.blockIO.throttleWriteBpsDevice",
            ),
            (
                b.throttle_read_iops_device(),
                "blkio.throttle.read_iops_device",
                "linux.resources.blockIO.throttleReadIOPSDevice",
            ),
            (
                b.throttle_write_iops_device(),
                "blkio.throttle.write_iops_device",
                "linux.resources.blockIO.throttleWriteIOPSDevice",
            ),
        ];
        for (list, file, field) in throttles {
            for d in list.iter().flatten() {
                let value = format!("{}:{} {}", d.major(), d.minor(), d.rate());
                w(&mut limits, "blkio", file, value, field);
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            bail!("linux.resources.hugepageLimits: page size {size:?}");
        }
        let file = format!("hugetlb.{size}.limit_in_bytes");
        w(
            &mut limits,
            "hugetlb",
            &file,
            h.limit(),
            "linux.resources.hugepageLimits",
        );
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            w(
                &mut limits,
                "net_cls",
                "net_cls.classid",
                id,
                "linux.resources.network.classID",
            );
        }
        for p in n.priorities().iter().flatten() {
            if p.name().contains(char::is_whitespace) || p.name().is_empty() {
                bail!(
                    "linux.resources.network.priorities: interface name {:?}",
                    p.name()
                );
            }
            let value = format!("{} {}", p.name(), p.priority());
            w(
                &mut limits,
                "net_prio",
                "net_prio.ifpriomap",
                value,
                "linux.resources.network.priorities",
            );
        }
    }
    refuse_if(
        r.rdma().as_ref().is_some_and(|v| !v.is_empty()),
        "linux.resources.rdma",
    )?;
    for (file, value) in r.unified().iter().flatten() {
        limits.v2_files.push((file.clone(), value.clone()));
    }
    for d in r.devices().as_deref().unwrap_or_default() {
        let kind = match d.typ().map(|t| t.as_str().to_string()).as_deref() {
            None | Some("a") => 'a',
            Some("c") | Some("u") => 'c',
            Some("b") => 'b',
            Some(other) => bail!("linux.resources.devices: unknown type {other:?}"),
        };
        let access = d.access().clone().unwrap_or_else(|| "rwm".to_string());
        if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
            bail!("linux.resources.devices: access {access:?} must be made of r, w and m");
        }
        limits.devices.push(DeviceRule {
            allow: d.allow(),
            kind,
            major: d.major(),
            minor: d.minor(),
            access,
        });
    }
    Ok(limits)
}

fn check_hooks(spec: &Spec) -> Result<Hooks> {
    let Some(h) = spec.hooks() else {
        return Ok(Hooks::default());
    };
    refuse_if(
        h.create_container().as_ref().is_some_and(|v| !v.is_empty()),
        "hooks.createContainer",
    )?;
    refuse_if(
        h.start_container().as_ref().is_some_and(|v| !v.is_empty()),
        "hooks.startContainer",
    )?;
    let conv = |v: &Option<Vec<oci_spec::runtime::Hook>>, name: &str| -> Result<Vec<Hook>> {
        v.iter()
            .flatten()
            .map(|h| {
                if !h.path().is_absolute() {
                    bail!("hooks.{name}: path {} must be absolute", h.path().display());
                }
                Ok(Hook {
                    path: h.path().clone(),
                    args: h.args().clone().unwrap_or_default(),
                    env: h.env().clone().unwrap_or_default(),
                    timeout: match h.timeout() {
                        Some(t) if t <= 0 => bail!("hooks.{name}: timeout {t} must be positive"),
                        t => t.map(|t| t as u64),
                    },
                })
            })
            .collect()
    };
    #[allow(deprecated)]
    let prestart = conv(h.prestart(), "prestart")?;
    Ok(Hooks {
        prestart,
        create_runtime: conv(h.create_runtime(), "createRuntime")?,
        poststart: conv(h.poststart(), "poststart")?,
        poststop: conv(h.poststop(), "poststop")?,
    })
}
