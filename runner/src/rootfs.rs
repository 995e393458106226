//! The container's mount namespace: what is mounted where, then `pivot_root`.
//!
//! [`plan`] is pure: it turns the container's root and options into a list of [`Op`]s, which the
//! tests check one by one. [`apply`] performs them in the child, and [`enter`] switches the root.
#![forbid(unsafe_code)]

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use crate::spec::Volume;

/// One step of setting up the container's mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    /// A character device node with this mode.
    Mknod {
        path: PathBuf,
        major: u64,
        minor: u64,
        mode: u32,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    /// An empty file (a mount point for a device bind).
    Touch {
        path: PathBuf,
    },
    /// Make `path` read-only (bind it onto itself, remount read-only); nothing if it is missing.
    ReadOnly {
        path: PathBuf,
    },
    /// Hide `path`: `/dev/null` over a file, an empty read-only tmpfs over a directory; nothing
    /// if it is missing.
    Mask {
        path: PathBuf,
    },
    Symlink {
        target: String,
        link: PathBuf,
    },
    /// A device node or fifo (`kind` `c`, `b` or `p`) with its mode and owner; one already there
    /// is replaced.
    Device {
        path: PathBuf,
        kind: char,
        major: u64,
        minor: u64,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// `mkdir -p` (mode 0755 for what it creates).
    MkdirAll {
        path: PathBuf,
    },
    /// Write `value` to a file that exists (a sysctl under `/proc/sys`).
    Write {
        path: PathBuf,
        value: String,
    },
}

/// What the mount plan depends on.
#[derive(Debug, Clone)]
pub struct RootfsSpec<'a> {
    pub rootfs: &'a Path,
    pub volumes: &'a [Volume],
    pub read_only: bool,
    /// In a new user namespace: bind the host's device nodes (mknod is refused there).
    pub userns: bool,
    /// The host's network namespace: a user namespace that does not own it cannot mount sysfs,
    /// so `/sys` is then a read-only bind of the host's.
    pub net_host: bool,
}

/// The device nodes of a minimal `/dev`, as docker creates them: (name, major, minor).
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// `root` joined with a container path (absolute or not); symlinks are resolved later, at
/// [`apply`].
pub(crate) fn in_root(root: &Path, p: impl AsRef<Path>) -> PathBuf {
    let p = p.as_ref();
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// Paths of `/proc` and `/sys` that docker hides from containers (moby `oci/defaults.go`): they
/// expose or change the host kernel's state, which namespaces do not cover.
pub const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Paths of `/proc` that docker makes read-only: writing them changes the whole host
/// (`/proc/sysrq-trigger` can reboot it, `/proc/sys` holds the global sysctls).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The symlinks every container's `/dev` has (runtime-spec "Default Devices" and runc).
pub fn dev_symlinks(root: &Path) -> Vec<Op> {
    [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ]
    .into_iter()
    .map(|(name, target)| Op::Symlink {
        target: target.to_string(),
        link: in_root(root, format!("dev/{name}")),
    })
    .collect()
}

/// `root` joined with the container path `path`, every symlink on the way resolved as the
/// container will see it, inside `root` (an absolute link starts again at `root`, `..` stops at
/// it), so that a link in the image can never aim a mount of ours at the host. What does not
/// exist yet is taken literally (then it cannot be a link). Like Go's filepath-securejoin.
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    fn parts(p: &Path) -> VecDeque<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                _ => None,
            })
            .collect()
    }
    let mut pending = parts(path);
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let on_host = root.join(&candidate);
        match std::fs::symlink_metadata(&on_host) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    anyhow::bail!(
                        "too many levels of symbolic links in {} below {}",
                        path.display(),
                        root.display()
                    );
                }
                let target = std::fs::read_link(&on_host)
                    .with_context(|| format!("readlink {}", on_host.display()))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut next = parts(&target);
                next.extend(pending);
                pending = next;
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Where an op's path really is: a path below `root` with its symlinks resolved inside `root`
/// ([`secure_join`]); with `keep_last`, the last component is not followed (it is what the op
/// creates). Paths outside `root` (mount sources, the root itself) are taken as they are.
fn resolve(root: Option<&Path>, path: &Path, keep_last: bool) -> Result<PathBuf> {
    let Some(root) = root else {
        return Ok(path.to_path_buf());
    };
    let Ok(rel) = path.strip_prefix(root) else {
        return Ok(path.to_path_buf());
    };
    if rel.as_os_str().is_empty() {
        return Ok(path.to_path_buf());
    }
    match (keep_last, rel.parent(), rel.file_name()) {
        (true, Some(parent), Some(name)) => Ok(secure_join(root, parent)?.join(name)),
        _ => secure_join(root, rel),
    }
}

/// The mount operations, in order.
pub fn plan(spec: &RootfsSpec<'_>) -> Vec<Op> {
    let root = spec.rootfs;
    let m =
        |source: Option<&str>, target: PathBuf, fstype: Option<&str>, flags, data: Option<&str>| {
            Op::Mount {
                source: source.map(PathBuf::from),
                target,
                fstype: fstype.map(String::from),
                flags,
                data: data.map(String::from),
            }
        };
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut ops = vec![
        // Nothing we mount may propagate back to the host (a shared `/` would carry the
        // container's /proc and /dev into the host's namespace), and the host's later mounts
        // must not appear in the container.
        m(
            None,
            "/".into(),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        ),
        // pivot_root needs the new root to be a mount point of its own in this namespace.
        Op::Mount {
            source: Some(root.to_path_buf()),
            target: root.to_path_buf(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
        },
        m(
            Some("proc"),
            in_root(root, "proc"),
            Some("proc"),
            nosuid_nodev_noexec,
            None,
        ),
        m(
            Some("tmpfs"),
            in_root(root, "dev"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
    ];
    for (name, major, minor) in DEVICES {
        let path = in_root(root, format!("dev/{name}"));
        if spec.userns {
            ops.push(Op::Touch { path: path.clone() });
            ops.push(Op::Mount {
                source: Some(PathBuf::from(format!("/dev/{name}"))),
                target: path,
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None,
            });
        } else {
            ops.push(Op::Mknod {
                path,
                major,
                minor,
                mode: 0o666,
            });
        }
    }
    ops.push(Op::Mkdir {
        path: in_root(root, "dev/pts"),
        mode: 0o755,
    });
    // A devpts instance of its own: the container's ptys are not the host's.
    ops.push(m(
        Some("devpts"),
        in_root(root, "dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    ));
    ops.extend(dev_symlinks(root));
    ops.push(Op::Mkdir {
        path: in_root(root, "dev/shm"),
        mode: 0o1777,
    });
    ops.push(m(
        Some("shm"),
        in_root(root, "dev/shm"),
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    ));
    if spec.userns && spec.net_host {
        ops.push(Op::Mount {
            source: Some(PathBuf::from("/sys")),
            target: in_root(root, "sys"),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
        });
        ops.push(m(
            None,
            in_root(root, "sys"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        ));
    } else {
        ops.push(m(
            Some("sysfs"),
            in_root(root, "sys"),
            Some("sysfs"),
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
        ));
    }
    for v in spec.volumes {
        let target = in_root(root, &v.container);
        ops.push(Op::Mount {
            source: Some(v.host.clone()),
            target: target.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
        });
        if v.read_only {
            // MS_RDONLY is ignored on the first bind; it takes a remount of the bind.
            ops.push(m(
                None,
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            ));
        }
    }
    for p in READONLY_PATHS {
        ops.push(Op::ReadOnly {
            path: in_root(root, p),
        });
    }
    for p in MASKED_PATHS {
        ops.push(Op::Mask {
            path: in_root(root, p),
        });
    }
    if spec.read_only {
        ops.push(m(
            None,
            root.to_path_buf(),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        ));
    }
    ops
}

/// Perform the operations in order; the error names the step that failed. Paths below `root`
/// are resolved inside it first ([`secure_join`]): the image's symlinks cannot redirect them.
pub fn apply(ops: &[Op], root: Option<&Path>) -> Result<()> {
    for op in ops {
        apply_one(op, root)?;
    }
    Ok(())
}

/// Filesystems whose mount point must be an ordinary directory of the image, as runc demands
/// for proc and sysfs: resolved through a symlink, a proc mounted elsewhere would escape the
/// masks laid on `/proc/...` (CVE-2019-19921's pattern).
const KERNEL_FILESYSTEMS: [&str; 6] = ["proc", "sysfs", "cgroup", "cgroup2", "mqueue", "devpts"];

/// Refuse to mount `fs` at `target` when its last component, as named, is a symlink or anything
/// but a directory (a missing one is made later as a directory).
fn refuse_symlinked_target(fs: &str, root: Option<&Path>, target: &Path) -> Result<()> {
    let named = match root {
        Some(root) if !target.starts_with(root) => {
            root.join(target.strip_prefix("/").unwrap_or(target))
        }
        _ => target.to_path_buf(),
    };
    match std::fs::symlink_metadata(&named) {
        Ok(m) if !m.is_dir() => bail!(
            "filesystem {fs:?} must be mounted on ordinary directory: {} is a {}",
            named.display(),
            if m.file_type().is_symlink() {
                "symlink"
            } else {
                "non-directory"
            }
        ),
        _ => Ok(()),
    }
}

fn apply_one(op: &Op, root: Option<&Path>) -> Result<()> {
    match op {
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            if let Some(fs) = fstype.as_deref().filter(|t| KERNEL_FILESYSTEMS.contains(t)) {
                refuse_symlinked_target(fs, root, target)?;
            }
            let target = resolve(root, target, false)?;
            mount(
                source.as_deref(),
                target.as_path(),
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            )
            .with_context(|| {
                format!(
                    "mount({:?}, {}, {:?}, {:?}, {:?})",
                    source,
                    target.display(),
                    fstype,
                    flags,
                    data
                )
            })?
        }
        Op::Mknod {
            path,
            major,
            minor,
            mode,
        } => {
            let path = resolve(root, path, true)?;
            mknod(
                path.as_path(),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(*mode),
                makedev(*major, *minor),
            )
            .with_context(|| format!("mknod {}", path.display()))?;
            chmod(&path, *mode)?;
        }
        Op::Device {
            path,
            kind,
            major,
            minor,
            mode,
            uid,
            gid,
        } => {
            let path = resolve(root, path, true)?;
            let kind_flag = match kind {
                'b' => SFlag::S_IFBLK,
                'p' => SFlag::S_IFIFO,
                _ => SFlag::S_IFCHR,
            };
            if std::fs::symlink_metadata(&path).is_ok() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("replacing {}", path.display()))?;
            }
            mknod(
                path.as_path(),
                kind_flag,
                Mode::from_bits_truncate(*mode),
                makedev(*major, *minor),
            )
            .with_context(|| format!("mknod {}", path.display()))?;
            chmod(&path, *mode)?;
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &path,
                Some(nix::unistd::Uid::from_raw(*uid)),
                Some(nix::unistd::Gid::from_raw(*gid)),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("chown {}", path.display()))?;
        }
        Op::Mkdir { path, mode } => {
            let path = resolve(root, path, true)?;
            match std::fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("mkdir {}", path.display())),
            }
            chmod(&path, *mode)?;
        }
        Op::MkdirAll { path } => {
            // Every existing component resolved inside the root; what is missing is made.
            let here = resolve(root, path, false)?;
            std::fs::create_dir_all(&here)
                .with_context(|| format!("mkdir -p {}", here.display()))?;
        }
        Op::ReadOnly { path } => {
            let path = resolve(root, path, false)?;
            if std::fs::symlink_metadata(&path).is_err() {
                return Ok(());
            }
            let target = path.as_path();
            mount(
                Some(target),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("bind {} onto itself", path.display()))?;
            let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, target, None::<&str>, ro, None::<&str>)
                .with_context(|| format!("remount {} read-only", path.display()))?;
        }
        Op::Mask { path } => {
            let path = resolve(root, path, false)?;
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                return Ok(());
            };
            if meta.is_dir() {
                mount(
                    Some("tmpfs"),
                    path.as_path(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .with_context(|| format!("masking {} with an empty tmpfs", path.display()))?;
            } else {
                mount(
                    Some("/dev/null"),
                    path.as_path(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .with_context(|| format!("masking {} with /dev/null", path.display()))?;
            }
        }
        Op::Touch { path } => {
            let path = resolve(root, path, false)?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        Op::Symlink { target, link } => {
            let link = resolve(root, link, true)?;
            match std::os::unix::fs::symlink(target, &link) {
                Ok(()) => {}
                // An image may bring its own /dev entries; a tmpfs /dev has none.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("symlink {}", link.display())),
            }
        }
        Op::Write { path, value } => {
            let path = resolve(root, path, false)?;
            std::fs::write(&path, value)
                .with_context(|| format!("writing {value:?} to {}", path.display()))?;
        }
    }
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}

/// How the container's root was entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entered {
    PivotRoot,
    Chroot,
}

/// How to enter the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jail {
    /// `pivot_root` in the container's own mount namespace; the old root is detached.
    PivotRoot,
    /// runc's `--no-pivot`: move the root over `/`, then `chroot` (for a root on a ramfs).
    MoveRoot,
    /// `chroot` alone, as runc does when the mount namespace is not the container's own (the
    /// runtime's, or one joined by path): there `pivot_root` would move the root of every
    /// process of the namespace, and moving the root over `/` would bury the host's.
    Chroot,
}

/// Make `rootfs` the root as `jail` says. `pivot_root` falls back to `chroot` only where the
/// kernel can never pivot: a current root on a ramfs (the initramfs), as `--no-pivot` is for.
/// Then, in the container's own namespace, `propagation` (`linux.rootfsPropagation` when it
/// is shared or unbindable) goes onto the new `/`: set before the pivot it would have made
/// the pivot fail (pivot_root(2): EINVAL when a mount involved is shared) and leaked the
/// container's mounts to the host.
pub fn enter(rootfs: &Path, jail: Jail, propagation: Option<MsFlags>) -> Result<Entered> {
    nix::unistd::chdir(rootfs).with_context(|| format!("chdir {}", rootfs.display()))?;
    let entered = match jail {
        Jail::PivotRoot => match pivot_root_here() {
            Ok(()) => Entered::PivotRoot,
            Err(e) if root_is_ramfs() => {
                tracing::warn!("pivot_root refused on a ramfs root ({e:#}); moving the root and chroot instead, as --no-pivot does");
                move_root_and_chroot()?;
                Entered::Chroot
            }
            Err(e) => return Err(e),
        },
        Jail::MoveRoot => {
            move_root_and_chroot()?;
            Entered::Chroot
        }
        Jail::Chroot => {
            chroot_here()?;
            return Ok(Entered::Chroot);
        }
    };
    if let Some(flags) = propagation {
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .with_context(|| format!("linux.rootfsPropagation: mount(/, {flags:?})"))?;
    }
    Ok(entered)
}

/// Whether `/` is a ramfs (an initramfs root), which pivot_root can never move away from.
fn root_is_ramfs() -> bool {
    /// statfs(2)'s magic number of ramfs (neither libc nor nix names it).
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    nix::sys::statfs::statfs("/").is_ok_and(|s| s.filesystem_type().0 == RAMFS_MAGIC)
}

/// runc's `--no-pivot` sequence: move the new root over `/`, then chroot into it, so the old
/// root is at least covered.
fn move_root_and_chroot() -> Result<()> {
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the root over / (MS_MOVE)")?;
    chroot_here()
}

fn chroot_here() -> Result<()> {
    nix::unistd::chroot(".").context("chroot .")?;
    nix::unistd::chdir("/").context("chdir / after chroot")
}

/// `pivot_root(".", ".")` as runc does it, without a directory for the old root.
///
/// After the call the old root is mounted on top of the new one at `/`; we are standing in the
/// new root (cwd). Making the old root a slave first keeps the lazy unmount below from
/// propagating to the host (our mounts are already private, but a volume mount could be shared),
/// and `umount2(".", MNT_DETACH)` removes the top mount, i.e. the old root, leaving the new one.
/// See pivot_root(2), "pivot_root(".", ".")", and runc's `pivotRoot` in libcontainer/rootfs_linux.go.
fn pivot_root_here() -> Result<()> {
    nix::unistd::pivot_root(".", ".").context("pivot_root(\".\", \".\")")?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the old root a slave")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    nix::unistd::chdir("/").context("chdir / after pivot_root")?;
    Ok(())
}

/// The mount point of the mount that holds `path` (itself, if it is one), from the text of
/// `/proc/self/mountinfo`: the longest mount point that is `path` or one of its ancestors.
/// pivot_root needs that mount not to be shared (runc's `rootfsParentMountPrivate`).
pub fn mount_point_of(mountinfo: &str, path: &Path) -> Option<PathBuf> {
    crate::union::mount_points(mountinfo)
        .map(PathBuf::from)
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.components().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(ops: &[Op]) -> Vec<(Option<&str>, &str, Option<&str>, MsFlags)> {
        ops.iter()
            .filter_map(|op| match op {
                Op::Mount {
                    source,
                    target,
                    fstype,
                    flags,
                    ..
                } => Some((
                    source.as_deref().and_then(|s| s.to_str()),
                    target.to_str().unwrap(),
                    fstype.as_deref(),
                    *flags,
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plan_starts_private_binds_root_and_mounts_proc_dev_sys() {
        let spec = RootfsSpec {
            rootfs: Path::new("/c/rootfs"),
            volumes: &[],
            read_only: false,
            userns: false,
            net_host: false,
        };
        let ops = plan(&spec);
        let m = mounts(&ops);
        assert_eq!(
            m[0],
            (None, "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE)
        );
        assert_eq!(
            m[1],
            (
                Some("/c/rootfs"),
                "/c/rootfs",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC
            )
        );
        let by_target = |t: &str| m.iter().find(|x| x.1 == t).copied().unwrap();
        assert_eq!(by_target("/c/rootfs/proc").2, Some("proc"));
        assert_eq!(by_target("/c/rootfs/dev").2, Some("tmpfs"));
        assert_eq!(by_target("/c/rootfs/dev/pts").2, Some("devpts"));
        assert_eq!(by_target("/c/rootfs/dev/shm").2, Some("tmpfs"));
        let sys = by_target("/c/rootfs/sys");
        assert_eq!(sys.2, Some("sysfs"));
        assert!(sys.3.contains(MsFlags::MS_RDONLY));
        // The device nodes come after /dev is mounted and before /dev/pts.
        let pos = |pred: &dyn Fn(&Op) -> bool| ops.iter().position(pred).unwrap();
        let dev =
            pos(&|o| matches!(o, Op::Mount { target, .. } if target == Path::new("/c/rootfs/dev")));
        let null = pos(
            &|o| matches!(o, Op::Mknod { path, major: 1, minor: 3, mode: 0o666 } if path == Path::new("/c/rootfs/dev/null")),
        );
        let pts = pos(
            &|o| matches!(o, Op::Mount { target, .. } if target == Path::new("/c/rootfs/dev/pts")),
        );
        assert!(dev < null && null < pts);
        assert_eq!(
            ops.iter().filter(|o| matches!(o, Op::Mknod { .. })).count(),
            6
        );
        assert!(ops.contains(&Op::Symlink {
            target: "pts/ptmx".to_string(),
            link: "/c/rootfs/dev/ptmx".into()
        }));
        // Nothing read-only about the root without --read-only.
        assert!(!m
            .iter()
            .any(|x| x.1 == "/c/rootfs" && x.3.contains(MsFlags::MS_REMOUNT)));
    }

    #[test]
    fn volumes_bind_then_remount_read_only_and_root_last() {
        let vols = [
            Volume {
                host: "/srv/data".into(),
                container: "/data".into(),
                read_only: true,
            },
            Volume {
                host: "/srv/rw".into(),
                container: "/rw".into(),
                read_only: false,
            },
        ];
        let spec = RootfsSpec {
            rootfs: Path::new("/r"),
            volumes: &vols,
            read_only: true,
            userns: false,
            net_host: false,
        };
        let ops = plan(&spec);
        let m = mounts(&ops);
        let n = m.len();
        assert_eq!(
            m[n - 4],
            (
                Some("/srv/data"),
                "/r/data",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC
            )
        );
        assert_eq!(
            m[n - 3],
            (
                None,
                "/r/data",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
            )
        );
        assert_eq!(
            m[n - 2],
            (
                Some("/srv/rw"),
                "/r/rw",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC
            )
        );
        assert_eq!(
            m[n - 1],
            (
                None,
                "/r",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
            )
        );
    }

    #[test]
    fn the_mount_holding_a_path_is_the_longest_ancestor_mount_point() {
        let info = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    2 1 0:30 / /tmp rw - tmpfs tmpfs rw\n\
                    3 2 0:31 / /tmp/b\\040x/rootfs rw - fuse.unionfs u rw\n\
                    4 1 0:32 / /tmpfoo rw - tmpfs tmpfs rw\n";
        let of = |p: &str| mount_point_of(info, Path::new(p));
        assert_eq!(
            of("/tmp/b x/rootfs"),
            Some(PathBuf::from("/tmp/b x/rootfs"))
        );
        assert_eq!(of("/tmp/b x/other"), Some(PathBuf::from("/tmp")));
        assert_eq!(of("/tmpfoox/r"), Some(PathBuf::from("/")));
    }

    #[test]
    fn apply_makes_dirs_and_symlinks_and_names_failures() {
        let tmp = tempfile::tempdir().unwrap();
        let ops = [
            Op::Mkdir {
                path: tmp.path().join("shm"),
                mode: 0o1777,
            },
            Op::Symlink {
                target: "pts/ptmx".to_string(),
                link: tmp.path().join("ptmx"),
            },
        ];
        apply(&ops, None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(tmp.path().join("shm"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o1777
        );
        assert_eq!(
            std::fs::read_link(tmp.path().join("ptmx")).unwrap(),
            Path::new("pts/ptmx")
        );
        let err = apply(
            &[Op::Mkdir {
                path: tmp.path().join("no/such/parent"),
                mode: 0o755,
            }],
            None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("no/such/parent"));
    }

    #[test]
    fn in_a_user_namespace_devices_are_binds_and_sys_of_the_host_too() {
        let spec = RootfsSpec {
            rootfs: Path::new("/r"),
            volumes: &[],
            read_only: false,
            userns: true,
            net_host: true,
        };
        let ops = plan(&spec);
        assert!(!ops.iter().any(|o| matches!(o, Op::Mknod { .. })));
        assert!(ops.contains(&Op::Touch {
            path: "/r/dev/null".into()
        }));
        let m = mounts(&ops);
        assert!(m.contains(&(Some("/dev/null"), "/r/dev/null", None, MsFlags::MS_BIND)));
        assert!(m.contains(&(
            Some("/sys"),
            "/r/sys",
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC
        )));
        assert!(!m.iter().any(|x| x.2 == Some("sysfs")));
        // With its own network namespace, the user namespace may mount a sysfs of its own.
        let own_net = RootfsSpec {
            net_host: false,
            ..spec
        };
        assert!(mounts(&plan(&own_net)).iter().any(|x| x.2 == Some("sysfs")));
    }

    #[test]
    fn host_kernel_knobs_are_read_only_or_masked_after_proc_and_sys() {
        let spec = RootfsSpec {
            rootfs: Path::new("/r"),
            volumes: &[],
            read_only: false,
            userns: false,
            net_host: false,
        };
        let ops = plan(&spec);
        let pos = |want: &Op| ops.iter().position(|o| o == want).unwrap();
        let sys = ops
            .iter()
            .position(|o| {
                matches!(
                    o,
                    Op::Mount {
                        fstype: Some(t),
                        ..
                    } if t == "sysfs"
                )
            })
            .unwrap();
        let trigger = pos(&Op::ReadOnly {
            path: "/r/proc/sysrq-trigger".into(),
        });
        let kcore = pos(&Op::Mask {
            path: "/r/proc/kcore".into(),
        });
        let firmware = pos(&Op::Mask {
            path: "/r/sys/firmware".into(),
        });
        assert!(sys < trigger && sys < kcore && sys < firmware);
    }
}
