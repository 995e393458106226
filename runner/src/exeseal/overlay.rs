//! A zero-copy sealed view of the runtime's binary: its directory as the top lower layer of a
//! read-only overlayfs that is never attached to any mount tree (after runc 1.2's exeseal).
//!
//! Why this is as strong as the sealed memfd copy against CVE-2019-5736: the only way to the
//! host's file is a write through `/proc/PID/exe`, and here that file lives on an overlayfs
//! superblock with lower layers only. Such a superblock is read-only for good: a write or an
//! open for writing fails with EROFS, and a remount read-write is refused ("cannot remount
//! read-write": overlayfs has no upper layer to write to). The mount is detached (made with
//! `fsmount`, never `move_mount`ed), so no path in any namespace reaches it or its lower
//! directories; it lives as long as the process that executes from it. The copy in memory is
//! what the memfd variant pays for (an 11 MB write per start); here the page cache of the
//! host's file is shared.
//!
//! Needs CAP_SYS_ADMIN (fsopen of overlayfs) and a kernel with the mount API (5.2) and
//! overlayfs; elsewhere [`super`] falls back to the memfd copy.
#![forbid(unsafe_code)]

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{fstat, fstatfs, openat, statx, AtFlags, Mode, OFlags, StatxFlags, CWD};
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
    MountAttrFlags,
};

/// `OVERLAYFS_SUPER_MAGIC` of `statfs(2)`.
const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
/// `ST_RDONLY` of `statfs(2)`'s `f_flags`.
const ST_RDONLY: u64 = 1;

/// The second lower layer: overlayfs wants two lower layers to mount without an upper one. It
/// is below the binary's directory, so nothing in it can hide the binary; root's only.
pub const SECOND_LOWER: &str = "/run/runner-exeseal";

/// Open `exe` (the host's file, an absolute path) through a fresh read-only overlayfs view, as
/// an `O_PATH` descriptor to execute.
pub fn open_sealed_view(exe: &Path) -> Result<OwnedFd> {
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        bail!("{} has no directory and file name", exe.display());
    };
    // First, so that a user without CAP_SYS_ADMIN falls back before touching /run.
    let ctx = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).context("fsopen(\"overlay\")")?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(SECOND_LOWER)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists if Path::new(SECOND_LOWER).is_dir() => Ok(()),
            _ => Err(e),
        })
        .with_context(|| format!("mkdir {SECOND_LOWER}"))?;
    let dir_str = dir
        .to_str()
        .with_context(|| format!("{} is not UTF-8", dir.display()))?;
    let lower = format!("{}:{SECOND_LOWER}", escape_lower(dir_str));
    fsconfig_set_string(&ctx, "lowerdir", &lower)
        .with_context(|| format!("fsconfig(overlay, lowerdir={lower})"))?;
    // Only to keep dmesg quiet when the layers are on different filesystems.
    let _ = fsconfig_set_string(&ctx, "xino", "off");
    fsconfig_create(&ctx).with_context(|| format!("fsconfig(overlay, CREATE) on {lower}"))?;
    let mnt = fsmount(
        &ctx,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .context("fsmount(overlay)")?;
    let file = openat(
        &mnt,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("openat {name:?} on the overlayfs view of {}", dir.display()))?;
    // The same file, as far as can be told cheaply (overlayfs maps inode and device numbers).
    let seen = fstat(&file).context("fstat of the overlayfs view")?;
    let host = fs::metadata(exe).with_context(|| format!("stat {}", exe.display()))?;
    if seen.st_size as u64 != host.size() || seen.st_mtime != host.mtime() {
        bail!(
            "the overlayfs view of {} is not the same file (size or mtime differ)",
            exe.display()
        );
    }
    Ok(file)
}

/// `:` separates lower layers and `\` escapes it.
fn escape_lower(path: &str) -> String {
    path.replace('\\', "\\\\").replace(':', "\\:")
}

/// Whether this process executes from such a view: `/proc/self/exe` is on a read-only
/// overlayfs whose mount is in no mount table of ours (detached).
pub fn runs_from_sealed_view() -> bool {
    let Ok(exe) = openat(
        CWD,
        "/proc/self/exe",
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let Ok(st) = fstatfs(&exe) else {
        return false;
    };
    if st.f_type as u64 != OVERLAYFS_SUPER_MAGIC || (st.f_flags as u64) & ST_RDONLY == 0 {
        return false;
    }
    let Ok(sx) = statx(&exe, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) else {
        return false;
    };
    if sx.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return false;
    }
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let id = sx.stx_mnt_id.to_string();
    !info
        .lines()
        .any(|l| l.split(' ').next() == Some(id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_paths_escape_colons_and_backslashes() {
        assert_eq!(escape_lower("/a:b\\c"), "/a\\:b\\\\c");
        assert_eq!(escape_lower("/usr/bin"), "/usr/bin");
    }

    #[test]
    fn a_test_binary_on_the_host_is_not_a_sealed_view() {
        assert!(!runs_from_sealed_view());
    }
}
