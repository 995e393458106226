//! File metadata as layers record it (mode, owner, mtime), applied without following symlinks.

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::rootless::{format_override_stat, parse_override_stat, OVERRIDE_STAT_XATTR};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// The metadata a layer tar records for every entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch; tar keeps whole seconds.
    pub mtime: i64,
}

impl Meta {
    pub fn of(md: &fs::Metadata) -> Meta {
        Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
        }
    }

    /// Apply owner, mode and mtime to `path`. For symlinks only owner and mtime apply.
    ///
    /// The owner is set first because chown clears setuid/setgid bits. Without root (EPERM),
    /// or for an id outside our user namespace's mapping (EINVAL), the file keeps our ids and
    /// the owner, group and mode it should have are recorded in [`OVERRIDE_STAT_XATTR`] (not on
    /// symlinks, which cannot carry `user.*` xattrs: they keep our ids). [`Meta::of_path`]
    /// reads them back.
    pub fn apply(&self, path: &Path, is_symlink: bool) -> Result<()> {
        if let Err(e) = lchown(path, Some(self.uid), Some(self.gid)) {
            let refused = matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL));
            if !refused || may_give_any_owner() {
                return Err(e).with_context(|| format!("chown {}", path.display()));
            }
            if !is_symlink {
                let value = format_override_stat(self.uid, self.gid, self.mode);
                if let Err(e) = xattr::set(path, OVERRIDE_STAT_XATTR, value.as_bytes()) {
                    if !unsupported(&e) {
                        return Err(e).with_context(|| {
                            format!(
                                "recording owner {}:{} of {} in {OVERRIDE_STAT_XATTR}",
                                self.uid,
                                self.gid,
                                path.display()
                            )
                        });
                    }
                    tracing::warn!(
                        "{}: owner {}:{} lost (no user xattrs on this filesystem)",
                        path.display(),
                        self.uid,
                        self.gid
                    );
                }
            }
        } else if !is_symlink && xattr::get(path, OVERRIDE_STAT_XATTR).is_ok_and(|v| v.is_some()) {
            // The owner is real now: an older record would contradict it.
            let _ = xattr::remove(path, OVERRIDE_STAT_XATTR);
        }
        if !is_symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(self.mode))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        set_mtime(path, self.mtime)
    }
}

impl Meta {
    /// [`Meta::of`] `md`, the metadata of `path`, with the owner and mode an unprivileged
    /// process recorded in [`OVERRIDE_STAT_XATTR`] in place of the ids the file has.
    pub fn of_path(path: &Path, md: &fs::Metadata) -> Meta {
        let mut meta = Meta::of(md);
        if md.file_type().is_symlink() {
            return meta;
        }
        if let Some((uid, gid, mode)) = xattr::get(path, OVERRIDE_STAT_XATTR)
            .ok()
            .flatten()
            .and_then(|v| parse_override_stat(&v))
        {
            meta.uid = uid;
            meta.gid = gid;
            meta.mode = mode & 0o7777;
        }
        meta
    }
}

/// Set atime and mtime of `path` (not following a symlink) to `secs`.
pub fn set_mtime(path: &Path, secs: i64) -> Result<()> {
    let ts = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &ts,
        &ts,
        UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("setting mtime of {}", path.display()))
}

pub use crate::rootless::is_root;

/// Root of the initial user namespace: may make device nodes (root of a user namespace may not).
pub fn may_make_devices() -> bool {
    crate::userns::initial_root()
}

/// Root of the initial user namespace: may give files any owner (root of a user namespace only
/// the ids of its mapping).
pub fn may_give_any_owner() -> bool {
    crate::userns::initial_root()
}

/// Extended attributes a layer carries for `path` (not following a symlink), sorted by name.
///
/// Left out: overlayfs' own (`trusted.overlay.*`, `user.overlay.*`: whiteout bookkeeping, turned
/// into `.wh.` form instead), `security.selinux` (a host label, not image content) and
/// `system.*` (ACLs and other kernel-synthesised names), and [`OVERRIDE_STAT_XATTR`] (an
/// unprivileged store's record of the owner, put back into the tar header instead).
pub fn layer_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if unsupported(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listxattr {}", path.display())),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(name) = name.to_str() else { continue };
        if !carried_xattr(name) {
            continue;
        }
        match xattr::get(path, name) {
            Ok(Some(value)) => out.push((name.to_string(), value)),
            Ok(None) => {}
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("getxattr {name} {}", path.display())),
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a layer keeps the xattr `name` (see [`layer_xattrs`]).
pub fn carried_xattr(name: &str) -> bool {
    !(name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name == "security.selinux"
        || name == OVERRIDE_STAT_XATTR
        || name.starts_with("system."))
}

/// Set xattrs on `path` (not following a symlink). Call after the owner is set: chown clears
/// `security.capability`. Filesystems without xattrs, and EPERM when not root, are tolerated.
pub fn set_xattrs(path: &Path, xattrs: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, value) in xattrs {
        if let Err(e) = xattr::set(path, name, value) {
            let eperm = e.raw_os_error() == Some(libc::EPERM);
            if unsupported(&e) || (eperm && !may_give_any_owner()) {
                continue;
            }
            return Err(e).with_context(|| format!("setxattr {name} on {}", path.display()));
        }
    }
    Ok(())
}

fn unsupported(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}
