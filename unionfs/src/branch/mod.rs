//! The branch set: each branch's root held open, the syscalls that probe one branch, and the
//! pure rules (`resolve`, `merge`) that combine them.

pub mod merge;
pub mod resolve;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

use crate::config::{BranchSpec, Perm};
use crate::error::{Context, Result};
use crate::sys;
use crate::whiteout::{self, OPAQUE_MARKER};
use resolve::{Presence, Probe};

/// Name of the copy-up work directory inside a writable branch (hidden: a `.wh..wh.` name).
pub const WORK_DIR: &str = ".wh..wh.work";

/// One branch: its root directory held open, so every path is resolved beneath it.
#[derive(Debug)]
pub struct Branch {
    pub index: usize,
    pub path: PathBuf,
    pub perm: Perm,
    pub root: OwnedFd,
    pub dev: u64,
}

impl Branch {
    pub fn open(index: usize, spec: &BranchSpec) -> Result<Branch> {
        let root = nix::fcntl::open(
            &spec.path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open branch {}", spec.path.display()))?;
        let st =
            nix::sys::stat::fstat(&root).ctx(|| format!("stat branch {}", spec.path.display()))?;
        Ok(Branch {
            index,
            path: spec.path.clone(),
            perm: spec.perm,
            root,
            dev: st.st_dev,
        })
    }

    pub fn writable(&self) -> bool {
        self.perm.is_writable()
    }

    /// Opens directory `rel` of this branch as an `O_PATH` handle, never following a symlink.
    pub fn dir(&self, rel: &Path) -> nix::Result<OwnedFd> {
        sys::open_beneath(
            self.root.as_fd(),
            rel.as_os_str(),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
    }

    /// Opens `rel` with `flags` (never following a symlink, not even the last component).
    pub fn open_file(&self, rel: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
        sys::open_beneath(
            self.root.as_fd(),
            rel.as_os_str(),
            flags | OFlag::O_NOFOLLOW,
            mode,
        )
    }

    /// Probes one name in a directory of this branch: the entry, its whiteout, and whether it is
    /// an opaque directory. Overlayfs whiteouts and opaque xattrs count only in read-only
    /// branches: a 0/0 device made through the mount is an ordinary device. The whiteout and
    /// the opaque marker matter only for branches below this one: with `below` false (none is
    /// probed after this one) and for a non-directory (which ends the walk), they are not
    /// looked for.
    pub fn probe(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        below: bool,
    ) -> Result<(Probe, Option<FileStat>)> {
        let mut probe = Probe::default();
        let st = stat_at(dir, name)?;
        if let Some(s) = &st {
            let mode = s.st_mode;
            if !self.writable() && whiteout::is_overlay_whiteout(mode, s.st_rdev) {
                probe.whiteout = true;
                return Ok((probe, None));
            }
            if mode & libc::S_IFMT == libc::S_IFDIR {
                probe.entry = Some(Presence::Dir);
                probe.opaque = below && self.dir_is_opaque(dir, name)?;
            } else {
                probe.entry = Some(Presence::NonDir);
                return Ok((probe, st));
            }
        }
        if below && !probe.opaque {
            probe.whiteout = stat_at(dir, &whiteout::whiteout_name(name))?.is_some();
        }
        Ok((probe, st))
    }

    /// True when directory `name` of `parent` holds `.wh..wh..opq` (or, in a read-only branch,
    /// carries overlayfs' opaque xattr).
    pub fn dir_is_opaque(&self, parent: &OwnedFd, name: &OsStr) -> Result<bool> {
        let child = match sys::open_beneath(
            parent.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(false),
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("open dir {name:?} in branch {}", self.path.display()))
            }
        };
        self.is_opaque(&child)
    }

    /// Opaque test of an open directory.
    pub fn is_opaque(&self, dir: &OwnedFd) -> Result<bool> {
        if stat_at(dir, OsStr::new(OPAQUE_MARKER))?.is_some() {
            return Ok(true);
        }
        if !self.writable() {
            for attr in whiteout::OVERLAY_OPAQUE_XATTRS {
                if let Ok(v) = sys::getxattr_at(dir.as_fd(), OsStr::new(""), OsStr::new(attr)) {
                    if whiteout::is_overlay_opaque_value(&v) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`, with a missing name as `None`.
pub fn stat_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<FileStat>> {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Ok(None),
        Err(Errno::ENAMETOOLONG) if name.as_bytes().len() > 255 => Ok(None),
        Err(e) => Err(e).ctx(|| format!("stat {name:?}")),
    }
}

/// The branches, top first.
#[derive(Debug)]
pub struct BranchSet {
    pub list: Vec<Branch>,
}

impl BranchSet {
    pub fn open(specs: &[BranchSpec]) -> Result<BranchSet> {
        let list = specs
            .iter()
            .enumerate()
            .map(|(i, s)| Branch::open(i, s))
            .collect::<Result<Vec<_>>>()?;
        Ok(BranchSet { list })
    }

    pub fn get(&self, i: usize) -> &Branch {
        &self.list[i]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The topmost writable branch at or above `limit` (index ≤ limit).
    pub fn topmost_rw_at_or_above(&self, limit: usize) -> Option<usize> {
        self.list.iter().take(limit + 1).position(|b| b.writable())
    }

    pub fn any_writable(&self) -> bool {
        self.list.iter().any(|b| b.writable())
    }
}
