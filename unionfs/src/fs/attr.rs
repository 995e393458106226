//! setattr: chmod, chown, truncate and utimens, each after a copy-up.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::time::SystemTime;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::error::{Context, Error, Result};
use crate::fs::{Attr, Union};
use crate::handle::Handle;

/// A time to set: a given instant, now, or left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Omit,
    Now,
    At(SystemTime),
}

impl SetTime {
    fn timespec(self) -> TimeSpec {
        match self {
            SetTime::Omit => TimeSpec::UTIME_OMIT,
            SetTime::Now => TimeSpec::UTIME_NOW,
            SetTime::At(t) => match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => TimeSpec::new(d.as_secs() as i64, d.subsec_nanos() as i64),
                Err(e) => {
                    let d = e.duration();
                    TimeSpec::new(-(d.as_secs() as i64), 0)
                }
            },
        }
    }
}

/// What a setattr call asks to change.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

impl Union {
    pub fn setattr(&self, node: u64, fh: Option<u64>, set: SetAttr) -> Result<Attr> {
        if let Some(file) = fh.and_then(|fh| self.top_handle_file(node, fh, set)) {
            // f{chown,chmod,utimens,truncate} on a file open in the top branch: that file is
            // the node's for as long as it is open (nothing is copied up from the top branch,
            // and a rename or unlink moves the name, not the file), so change it through its
            // descriptor, without resolving the name again.
            apply_to_file(&file, set)?;
            let st = nix::sys::stat::fstat(&file).ctx(|| "fstat open file")?;
            return Ok(Attr { ino: node, st });
        }
        let n = match self.locate(node) {
            Ok(n) => n,
            Err(e) if e.is(libc::ENOENT) => return self.setattr_unlinked(node, fh, set, e),
            Err(e) => return Err(e),
        };
        let n = self.copied_up(n)?;
        let (path, found) = (&n.path, &n.found);
        let branch = self.branches.get(found.top());
        let (dir, name) = self.top_entry(&n)?;
        // The root has no name in a parent: address it as "." of itself.
        let name = if name.is_empty() {
            OsStr::new(".")
        } else {
            name
        };
        let dir = &*dir;
        let is_link = found.st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        if set.uid.is_some() || set.gid.is_some() {
            nix::unistd::fchownat(
                dir,
                name,
                set.uid.map(Uid::from_raw),
                set.gid.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .ctx(|| format!("chown {path:?}"))?;
        }
        if let Some(mode) = set.mode {
            if !is_link {
                nix::sys::stat::fchmodat(
                    dir,
                    name,
                    Mode::from_bits_truncate(mode & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .ctx(|| format!("chmod {path:?}"))?;
            }
        }
        if let Some(size) = set.size {
            if found.is_dir() {
                return Err(Error::errno(libc::EISDIR));
            }
            let handle = fh.and_then(|fh| self.handles.get(fh, node).ok());
            match handle.as_deref() {
                Some(Handle::File(f)) if f.branch() == found.top() => {
                    nix::unistd::ftruncate(&*f.file(), size as i64)
                        .ctx(|| format!("truncate {path:?}"))?
                }
                _ => {
                    // By its name in its directory, never by the whole path (which may be
                    // longer than PATH_MAX in a deep union).
                    let fd = crate::sys::open_beneath(
                        dir.as_fd(),
                        name,
                        OFlag::O_WRONLY | OFlag::O_NOFOLLOW,
                        Mode::empty(),
                    )
                    .ctx(|| {
                        format!(
                            "open {path:?} to truncate in branch {}",
                            branch.path.display()
                        )
                    })?;
                    nix::unistd::ftruncate(fd.as_fd(), size as i64)
                        .ctx(|| format!("truncate {path:?}"))?;
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let a = set.atime.unwrap_or(SetTime::Omit).timespec();
            let m = set.mtime.unwrap_or(SetTime::Omit).timespec();
            nix::sys::stat::utimensat(dir, name, &a, &m, UtimensatFlags::NoFollowSymlink)
                .ctx(|| format!("set times of {path:?}"))?;
        }
        self.getattr(node, None)
    }

    /// setattr of a file that was unlinked while open (ftruncate, fchmod... on its descriptor):
    /// applied to the open branch file, when that one is writable.
    fn setattr_unlinked(
        &self,
        node: u64,
        fh: Option<u64>,
        set: SetAttr,
        gone: Error,
    ) -> Result<Attr> {
        let file = match fh.and_then(|fh| self.handles.get(fh, node).ok()) {
            Some(h) => match &*h {
                Handle::File(f) if self.branches.get(f.branch()).writable() => {
                    f.file().try_clone()?
                }
                _ => return Err(gone),
            },
            None => self.handles.any_file_of(node).ok_or(gone)?,
        };
        apply_to_file(&file, set)?;
        self.getattr(node, None)
    }
}

impl Union {
    /// The file behind handle `fh` of `node` when it is open in the top branch and writable
    /// there (and, for a truncate, open for writing); None sends the caller the long way.
    fn top_handle_file(&self, node: u64, fh: u64, set: SetAttr) -> Option<std::fs::File> {
        let h = self.handles.get(fh, node).ok()?;
        let Handle::File(f) = &*h else {
            return None;
        };
        let top_rw = self.branches.get(0).writable() && !self.is_read_only();
        let writes = f.flags & nix::fcntl::OFlag::O_ACCMODE != nix::fcntl::OFlag::O_RDONLY;
        if f.branch() != 0 || !top_rw || (set.size.is_some() && !writes) {
            return None;
        }
        f.file().try_clone().ok()
    }
}

/// Applies a setattr to an open file: owner, mode, size, times (in that order, as the path
/// form does).
fn apply_to_file(file: &std::fs::File, set: SetAttr) -> Result<()> {
    if set.uid.is_some() || set.gid.is_some() {
        nix::unistd::fchown(file, set.uid.map(Uid::from_raw), set.gid.map(Gid::from_raw))
            .ctx(|| "fchown open file")?;
    }
    if let Some(mode) = set.mode {
        nix::sys::stat::fchmod(file, Mode::from_bits_truncate(mode & 0o7777))
            .ctx(|| "fchmod open file")?;
    }
    if let Some(size) = set.size {
        nix::unistd::ftruncate(file, size as i64).ctx(|| "ftruncate open file")?;
    }
    if set.atime.is_some() || set.mtime.is_some() {
        let a = set.atime.unwrap_or(SetTime::Omit).timespec();
        let m = set.mtime.unwrap_or(SetTime::Omit).timespec();
        nix::sys::stat::futimens(file, &a, &m).ctx(|| "futimens open file")?;
    }
    Ok(())
}
