//! An OCI bundle's filesystem set-up as mount operations: `mounts`, the default devices and
//! `linux.devices`, `sysctl`, `readonlyPaths`, `maskedPaths` and `root.readonly`.
//!
//! Pure: [`plan`] turns the bundle into a list of [`Op`]s that the container's first process
//! performs with [`rootfs::apply`](crate::rootfs::apply), which resolves every path inside the
//! root (the image's symlinks cannot aim a mount at the host).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use nix::mount::MsFlags;

use crate::rootfs::{self, in_root, Op};

/// One entry of the bundle's `mounts`, with its source made absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub destination: PathBuf,
    pub kind: String,
    pub source: Option<PathBuf>,
    pub options: Vec<String>,
}

/// A device node of `linux.devices` (or a default one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub path: PathBuf,
    /// `c`, `b` or `p`.
    pub kind: char,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the plan depends on besides the mounts.
#[derive(Debug, Clone, Default)]
pub struct FsSpec {
    pub rootfs: PathBuf,
    pub mounts: Vec<MountEntry>,
    pub devices: Vec<DeviceNode>,
    /// `linux.rootfsPropagation`, default `rprivate`.
    pub propagation: Option<String>,
    pub readonly_root: bool,
    pub sysctl: Vec<(String, String)>,
    pub readonly_paths: Vec<String>,
    pub masked_paths: Vec<String>,
    /// In a new user namespace: device nodes are bind mounts of the host's.
    pub userns: bool,
    /// The container's own cgroup directory in each hierarchy: (name under `/sys/fs/cgroup`,
    /// host directory), bound read-only where the bundle mounts `cgroup`.
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    /// The mount namespace is not the container's own (the runtime's, or one joined by path):
    /// the namespace's propagation is left alone and the root is not bound onto itself (it is
    /// entered with `chroot`, as runc does).
    pub shared_mount_ns: bool,
    /// The mount point of the mount holding the root (`rootfs::mount_point_of`): made private
    /// (or slave) before the root is bound, so that pivot_root works and the bind does not
    /// propagate to the host, whatever `rootfsPropagation` made of `/`.
    pub root_parent_mount: Option<PathBuf>,
}

/// The devices every container gets (runtime-spec "Default Devices").
pub fn default_devices() -> Vec<DeviceNode> {
    rootfs::DEVICES
        .iter()
        .map(|(name, major, minor)| DeviceNode {
            path: PathBuf::from(format!("/dev/{name}")),
            kind: 'c',
            major: *major,
            minor: *minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect()
}

/// Mount flags and the rest of the options (the filesystem's data), as mount(8) reads them.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    /// Flags that a bind mount only takes on a remount (`ro`, `nosuid`, …).
    pub remount_flags: MsFlags,
    pub propagation: MsFlags,
    pub bind: bool,
    pub recursive: bool,
    pub data: Vec<String>,
}

/// Parse mount options; unknown ones that look like flags are refused rather than passed on.
pub fn parse_options(opts: &[String]) -> Result<Options> {
    let mut o = Options {
        flags: MsFlags::empty(),
        remount_flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        bind: false,
        recursive: false,
        data: Vec::new(),
    };
    for opt in opts {
        let (set, clear) = match opt.as_str() {
            "defaults" | "rw" | "suid" | "dev" | "exec" | "async" | "atime" | "diratime"
            | "nomand" | "norelatime" | "nostrictatime" => (MsFlags::empty(), flag_cleared(opt)),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nosymfollow" => (MsFlags::from_bits_retain(0x100), MsFlags::empty()),
            "bind" => {
                o.bind = true;
                continue;
            }
            "rbind" => {
                o.bind = true;
                o.recursive = true;
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                o.propagation |= propagation_flags(opt);
                continue;
            }
            // podman's: copy the image's files under the mount point into a new tmpfs. Without it
            // the tmpfs starts empty, which hides no more than the mount itself does.
            "tmpcopyup" | "notmpcopyup" => continue,
            "idmap" | "ridmap" | "rro" | "rrw" | "rnosuid" | "rnodev" | "rnoexec"
            | "copy-symlink" | "src-nofollow" | "dest-nofollow" => {
                bail!("mount option {opt:?} is not supported by this runtime")
            }
            other => {
                o.data.push(other.to_string());
                continue;
            }
        };
        o.flags = (o.flags | set) - clear;
    }
    o.remount_flags = o.flags
        & (MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::MS_NOATIME
            | MsFlags::MS_NODIRATIME
            | MsFlags::MS_RELATIME
            | MsFlags::MS_STRICTATIME
            | MsFlags::from_bits_retain(0x100));
    Ok(o)
}

fn flag_cleared(opt: &str) -> MsFlags {
    match opt {
        "rw" => MsFlags::MS_RDONLY,
        "suid" => MsFlags::MS_NOSUID,
        "dev" => MsFlags::MS_NODEV,
        "exec" => MsFlags::MS_NOEXEC,
        "async" => MsFlags::MS_SYNCHRONOUS,
        "atime" => MsFlags::MS_NOATIME,
        "diratime" => MsFlags::MS_NODIRATIME,
        "nomand" => MsFlags::MS_MANDLOCK,
        "norelatime" => MsFlags::MS_RELATIME,
        "nostrictatime" => MsFlags::MS_STRICTATIME,
        _ => MsFlags::empty(),
    }
}

fn propagation_flags(opt: &str) -> MsFlags {
    let base = match opt.trim_start_matches('r') {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        _ => MsFlags::MS_UNBINDABLE,
    };
    if opt.starts_with('r') && opt != "rw" {
        base | MsFlags::MS_REC
    } else {
        base
    }
}

fn mount_op(
    source: Option<PathBuf>,
    target: PathBuf,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<String>,
) -> Op {
    Op::Mount {
        source,
        target,
        fstype: fstype.map(String::from),
        flags,
        data,
    }
}

/// The namespaced sysctls a container may set (runc's list): IPC ones, `net.*` with a network
/// namespace of its own, and the UTS names.
pub fn check_sysctl(key: &str, own_net: bool) -> Result<()> {
    const IPC: [&str; 6] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
    ];
    let ok = IPC.contains(&key)
        || key == "kernel.shmmni"
        || key == "kernel.shm_rmid_forced"
        || key.starts_with("fs.mqueue.")
        || (key.starts_with("net.") && own_net)
        || key == "kernel.hostname"
        || key == "kernel.domainname";
    if !ok || key.contains('/') || key.contains("..") {
        bail!(
            "linux.sysctl {key:?}: not a sysctl of the container's own namespaces{}",
            if key.starts_with("net.") {
                " (net.* needs a network namespace of its own)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// The operations, in order: propagation, the root bound onto itself, each mount (its mount
/// point created), the devices and `/dev` links, sysctls, read-only and masked paths, and
/// finally the read-only root.
pub fn plan(spec: &FsSpec) -> Result<Vec<Op>> {
    let root = spec.rootfs.as_path();
    let prop = root_propagation(spec)?;
    let mut ops = Vec::new();
    if !spec.shared_mount_ns {
        ops.push(mount_op(None, "/".into(), None, prop, None));
        if prop != MsFlags::MS_REC | MsFlags::MS_PRIVATE {
            // As runc: a shared parent would make pivot_root fail (EINVAL) and carry the bind
            // below, and every mount on top of it, out to the host.
            if let Some(parent) = &spec.root_parent_mount {
                let keep = if prop.contains(MsFlags::MS_SLAVE) {
                    MsFlags::MS_SLAVE
                } else {
                    MsFlags::MS_PRIVATE
                };
                ops.push(mount_op(None, parent.clone(), None, keep, None));
            }
        }
        ops.push(mount_op(
            Some(root.to_path_buf()),
            root.to_path_buf(),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ));
    }
    let mut dev_is_tmpfs = false;
    for m in &spec.mounts {
        if !m.destination.is_absolute() {
            bail!(
                "mounts: destination {:?} must be an absolute path",
                m.destination
            );
        }
        if m.destination == Path::new("/") {
            bail!("mounts: a mount over the container's root is not supported");
        }
        let target = in_root(root, &m.destination);
        let o = parse_options(&m.options)
            .map_err(|e| e.context(format!("mounts: {}", m.destination.display())))?;
        let data = (!o.data.is_empty()).then(|| o.data.join(","));
        if o.bind || m.kind == "bind" {
            let Some(source) = &m.source else {
                bail!(
                    "mounts: bind mount on {} has no source",
                    m.destination.display()
                );
            };
            if source.is_dir() {
                ops.push(Op::MkdirAll {
                    path: target.clone(),
                });
            } else {
                if let Some(parent) = target.parent() {
                    ops.push(Op::MkdirAll {
                        path: parent.to_path_buf(),
                    });
                }
                ops.push(Op::Touch {
                    path: target.clone(),
                });
            }
            let mut flags = MsFlags::MS_BIND;
            if o.recursive {
                flags |= MsFlags::MS_REC;
            }
            ops.push(mount_op(
                Some(source.clone()),
                target.clone(),
                None,
                flags,
                None,
            ));
            if !o.remount_flags.is_empty() {
                // A bind takes its flags only on a remount.
                ops.push(mount_op(
                    None,
                    target.clone(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | o.remount_flags,
                    None,
                ));
            }
        } else if m.kind == "cgroup" || m.kind == "cgroup2" {
            ops.extend(cgroup_mount(spec, &target, &o));
            continue;
        } else {
            if m.destination == Path::new("/dev") && m.kind == "tmpfs" {
                dev_is_tmpfs = true;
            }
            ops.push(Op::MkdirAll {
                path: target.clone(),
            });
            let source = m.source.clone().or_else(|| Some(PathBuf::from(&m.kind)));
            ops.push(mount_op(
                source,
                target.clone(),
                Some(&m.kind),
                o.flags,
                data,
            ));
        }
        if !o.propagation.is_empty() {
            ops.push(mount_op(None, target, None, o.propagation, None));
        }
    }
    // The default devices go into a /dev the bundle mounts as tmpfs; over an image's own /dev
    // (no tmpfs) only what `linux.devices` asks for is made.
    let mut devices = if dev_is_tmpfs {
        default_devices()
    } else {
        Vec::new()
    };
    for d in &spec.devices {
        devices.retain(|x| x.path != d.path);
        devices.push(d.clone());
    }
    for d in &devices {
        let path = in_root(root, &d.path);
        if let Some(parent) = path.parent() {
            ops.push(Op::MkdirAll {
                path: parent.to_path_buf(),
            });
        }
        if spec.userns {
            ops.push(Op::Touch { path: path.clone() });
            ops.push(mount_op(
                Some(d.path.clone()),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            ));
        } else {
            ops.push(Op::Device {
                path,
                kind: d.kind,
                major: d.major,
                minor: d.minor,
                mode: d.mode,
                uid: d.uid,
                gid: d.gid,
            });
        }
    }
    if dev_is_tmpfs {
        ops.extend(rootfs::dev_symlinks(root));
    }
    for (key, value) in &spec.sysctl {
        ops.push(Op::Write {
            path: in_root(root, format!("proc/sys/{}", key.replace('.', "/"))),
            value: value.clone(),
        });
    }
    for p in &spec.readonly_paths {
        ops.push(Op::ReadOnly {
            path: in_root(root, p),
        });
    }
    for p in &spec.masked_paths {
        ops.push(Op::Mask {
            path: in_root(root, p),
        });
    }
    if spec.readonly_root {
        ops.push(mount_op(
            None,
            root.to_path_buf(),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        ));
    }
    Ok(ops)
}

/// `linux.rootfsPropagation` as mount flags (default `rprivate`).
pub fn root_propagation(spec: &FsSpec) -> Result<MsFlags> {
    Ok(match spec.propagation.as_deref() {
        None | Some("") => MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        Some(
            p @ ("private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared" | "unbindable"
            | "runbindable"),
        ) => propagation_flags(p),
        Some(p) => bail!("linux.rootfsPropagation {p:?}: not a propagation mode"),
    })
}

/// What goes onto the new `/` after pivot_root: a shared or unbindable `rootfsPropagation`
/// (private and slave were already applied before, to the whole namespace).
pub fn propagation_after_entry(spec: &FsSpec) -> Result<Option<MsFlags>> {
    let prop = root_propagation(spec)?;
    Ok(
        (!spec.shared_mount_ns && prop.intersects(MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE))
            .then_some(prop),
    )
}

/// `/sys/fs/cgroup` in the container: a tmpfs holding, per hierarchy, a bind of the container's
/// own group (so the container sees its limits and nothing above them), read-only when asked.
fn cgroup_mount(spec: &FsSpec, target: &Path, o: &Options) -> Vec<Op> {
    let ro = o.flags.contains(MsFlags::MS_RDONLY);
    let mut ops = vec![Op::MkdirAll {
        path: target.to_path_buf(),
    }];
    // cgroup v2: the one group is bound at the target itself (named "."), no tmpfs under it
    // (a tmpfs covered by the bind could not be remounted read-only: the remount would reach
    // cgroup2 with tmpfs's options).
    if let [(name, dir)] = spec.cgroup_dirs.as_slice() {
        if name == "." {
            ops.extend(bind_group(dir, target, ro));
            return ops;
        }
    }
    ops.push(mount_op(
        Some("tmpfs".into()),
        target.to_path_buf(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755".into()),
    ));
    for (name, dir) in &spec.cgroup_dirs {
        let sub = target.join(name);
        ops.push(Op::MkdirAll { path: sub.clone() });
        ops.extend(bind_group(dir, &sub, ro));
    }
    if ro {
        ops.push(mount_op(
            None,
            target.to_path_buf(),
            None,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755".into()),
        ));
    }
    ops
}

/// Bind the container's group `dir` at `at`, then remount the bind nosuid, nodev, noexec (and
/// read-only when asked).
fn bind_group(dir: &Path, at: &Path, ro: bool) -> [Op; 2] {
    let mut flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    if ro {
        flags |= MsFlags::MS_RDONLY;
    }
    [
        mount_op(
            Some(dir.to_path_buf()),
            at.to_path_buf(),
            None,
            MsFlags::MS_BIND,
            None,
        ),
        mount_op(None, at.to_path_buf(), None, flags, None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&s(&["nosuid", "strictatime", "mode=755", "size=65536k"])).unwrap();
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, s(&["mode=755", "size=65536k"]));
        let o = parse_options(&s(&["rbind", "ro", "rprivate"])).unwrap();
        assert!(o.bind && o.recursive);
        assert_eq!(o.remount_flags, MsFlags::MS_RDONLY);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let o = parse_options(&s(&["ro", "rw"])).unwrap();
        assert!(!o.flags.contains(MsFlags::MS_RDONLY), "a later rw wins");
        assert!(parse_options(&s(&["idmap"])).is_err());
    }

    fn podman_like() -> FsSpec {
        FsSpec {
            rootfs: "/b/rootfs".into(),
            mounts: vec![
                MountEntry {
                    destination: "/proc".into(),
                    kind: "proc".into(),
                    source: Some("proc".into()),
                    options: s(&["nosuid", "noexec", "nodev"]),
                },
                MountEntry {
                    destination: "/dev".into(),
                    kind: "tmpfs".into(),
                    source: Some("tmpfs".into()),
                    options: s(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
                },
                MountEntry {
                    destination: "/etc/hosts".into(),
                    kind: "bind".into(),
                    source: Some("/definitely/not/a/dir/hosts".into()),
                    options: s(&["rbind", "ro", "rprivate"]),
                },
                MountEntry {
                    destination: "/sys/fs/cgroup".into(),
                    kind: "cgroup".into(),
                    source: Some("cgroup".into()),
                    options: s(&["ro", "nosuid"]),
                },
            ],
            readonly_paths: s(&["/proc/sys"]),
            masked_paths: s(&["/proc/kcore"]),
            readonly_root: true,
            cgroup_dirs: vec![("memory".into(), "/sys/fs/cgroup/memory/x".into())],
            sysctl: vec![("net.ipv4.ip_forward".into(), "1".into())],
            ..Default::default()
        }
    }

    #[test]
    fn plan_mounts_in_order_with_devices_links_and_paths() {
        let ops = plan(&podman_like()).unwrap();
        let pos = |pred: &dyn Fn(&Op) -> bool| ops.iter().position(pred).expect("op present");
        let proc_ = pos(&|o| matches!(o, Op::Mount { fstype: Some(t), .. } if t == "proc"));
        let null = pos(&|o| matches!(o, Op::Device { path, .. } if path.ends_with("dev/null")));
        let hosts = pos(&|o| matches!(o, Op::Touch { path } if path.ends_with("etc/hosts")));
        let ro_hosts = pos(&|o| {
            matches!(o, Op::Mount { target, flags, .. }
                if target.ends_with("etc/hosts") && flags.contains(MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))
        });
        let cg = pos(
            &|o| matches!(o, Op::Mount { source: Some(s), .. } if s == Path::new("/sys/fs/cgroup/memory/x")),
        );
        let sysctl = pos(
            &|o| matches!(o, Op::Write { path, value } if path.ends_with("proc/sys/net/ipv4/ip_forward") && value == "1"),
        );
        let ro = pos(&|o| matches!(o, Op::ReadOnly { path } if path.ends_with("proc/sys")));
        let mask = pos(&|o| matches!(o, Op::Mask { path } if path.ends_with("proc/kcore")));
        let root_ro = ops.len() - 1;
        assert!(proc_ < null && hosts < ro_hosts && ro_hosts < null && cg < null);
        assert!(null < sysctl && sysctl < ro && ro < mask && mask < root_ro);
        assert!(ops
            .iter()
            .any(|o| matches!(o, Op::Symlink { link, .. } if link.ends_with("dev/ptmx"))));
        assert!(
            matches!(&ops[root_ro], Op::Mount { flags, .. } if flags.contains(MsFlags::MS_RDONLY))
        );
    }

    #[test]
    fn a_shared_root_keeps_the_parent_private_until_after_the_pivot() {
        let mut spec = podman_like();
        spec.propagation = Some("shared".into());
        spec.root_parent_mount = Some("/b".into());
        let ops = plan(&spec).unwrap();
        let targets: Vec<(&Path, MsFlags)> = ops[..3]
            .iter()
            .map(|o| match o {
                Op::Mount { target, flags, .. } => (target.as_path(), *flags),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                (Path::new("/"), MsFlags::MS_SHARED),
                (Path::new("/b"), MsFlags::MS_PRIVATE),
                (Path::new("/b/rootfs"), MsFlags::MS_BIND | MsFlags::MS_REC),
            ]
        );
        assert_eq!(
            propagation_after_entry(&spec).unwrap(),
            Some(MsFlags::MS_SHARED)
        );
        spec.propagation = Some("rslave".into());
        assert!(matches!(&plan(&spec).unwrap()[1],
            Op::Mount { target, flags, .. } if target == Path::new("/b") && *flags == MsFlags::MS_SLAVE));
        assert_eq!(propagation_after_entry(&spec).unwrap(), None);
        // The default: nothing more than before.
        spec.propagation = None;
        assert!(
            matches!(&plan(&spec).unwrap()[1], Op::Mount { target, .. } if target == Path::new("/b/rootfs"))
        );
    }

    #[test]
    fn in_a_mount_namespace_not_its_own_the_namespace_is_left_alone() {
        let mut spec = podman_like();
        spec.shared_mount_ns = true;
        spec.readonly_root = false;
        let ops = plan(&spec).unwrap();
        assert!(
            !ops.iter().any(|o| matches!(o, Op::Mount { target, .. }
                if target == Path::new("/") || target == Path::new("/b/rootfs"))),
            "{ops:?}"
        );
        assert!(matches!(&ops[0], Op::MkdirAll { path } if path.ends_with("proc")));
    }

    #[test]
    fn bad_mounts_and_sysctls_are_refused() {
        let mut spec = podman_like();
        spec.mounts[0].destination = "proc".into();
        assert!(plan(&spec).unwrap_err().to_string().contains("absolute"));
        assert!(check_sysctl("kernel.shmmax", false).is_ok());
        assert!(check_sysctl("net.ipv4.ip_forward", true).is_ok());
        assert!(check_sysctl("net.ipv4.ip_forward", false).is_err());
        assert!(check_sysctl("vm.overcommit_memory", true).is_err());
        assert!(check_sysctl("fs.mqueue.../x", true).is_err());
    }
}
