//! Directories: the merged listing (opendir/readdir), mkdir and rmdir.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::branch::merge::{merge_entries, MergedEntry, RawEntry};
use crate::branch::resolve::Layers;
use crate::error::{Context, Error, Result};
use crate::fs::{child_path, Attr, Caller, DirView, Entry, Union};
use crate::handle::{DirEntry, DirHandle, Handle};
use crate::sys;
use crate::whiteout;

/// One entry handed to readdir: its offset cookie and what the kernel needs.
pub type ReaddirEntry = (u64, DirEntry);

impl Union {
    /// The merged listing of directory `rel` (without `.` and `..`).
    pub(crate) fn merged_listing(&self, rel: &Path, view: &DirView) -> Result<Vec<MergedEntry>> {
        let mut per_branch = Vec::with_capacity(view.branches.len());
        for &b in &view.branches {
            let branch = self.branches.get(b);
            // The held directory reopened for reading, or the path opened beneath the root.
            let (at, path) = match view.held(b) {
                Some(fd) => (fd.as_fd(), OsStr::new("")),
                None => (branch.root.as_fd(), rel.as_os_str()),
            };
            let fd = match sys::open_beneath(
                at,
                path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => continue,
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("open {rel:?} in branch {}", branch.path.display()))
                }
            };
            let mut dir = nix::dir::Dir::from_fd(fd).ctx(|| format!("read {rel:?}"))?;
            let dir_fd = nix::unistd::dup(dir.as_fd()).ctx(|| "dup")?;
            let mut raw = Vec::new();
            for e in dir.iter() {
                let e = e.ctx(|| format!("readdir {rel:?} in branch {}", branch.path.display()))?;
                let name = OsStr::from_bytes(e.file_name().to_bytes()).to_os_string();
                let dtype = match e.file_type() {
                    Some(t) => dtype_of(t),
                    None => libc::DT_UNKNOWN,
                };
                // Only character devices can be overlay whiteouts; stat just those.
                let overlay_whiteout = !branch.writable()
                    && (dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN)
                    && nix::sys::stat::fstatat(
                        &dir_fd,
                        name.as_os_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map(|st| whiteout::is_overlay_whiteout(st.st_mode, st.st_rdev))
                    .unwrap_or(false);
                raw.push(RawEntry {
                    name,
                    dtype,
                    ino: self.inos.ino(branch.dev, e.ino()),
                    overlay_whiteout,
                });
            }
            per_branch.push((b, raw));
        }
        Ok(merge_entries(&per_branch))
    }

    pub fn opendir(&self, node: u64) -> Result<u64> {
        self.dir_view(node)?;
        Ok(self.handles.insert(Handle::Dir(DirHandle {
            node,
            entries: parking_lot::Mutex::new(None),
        })))
    }

    /// Entries from `offset` on. The listing is taken when read from offset 0 (rewinddir
    /// refreshes it) and kept for the following calls.
    pub fn readdir(&self, node: u64, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let h = self.handles.get(fh, node)?;
        let Handle::Dir(d) = &*h else {
            return Err(Error::errno(libc::ENOTDIR));
        };
        let mut cached = d.entries.lock();
        if offset == 0 || cached.is_none() {
            let (path, view) = self.dir_view(node)?;
            let self_ino = node;
            let mut out = vec![
                DirEntry {
                    name: OsString::from("."),
                    ino: self_ino,
                    dtype: libc::DT_DIR,
                    branch: None,
                },
                DirEntry {
                    name: OsString::from(".."),
                    ino: self.inodes.parent_of(node),
                    dtype: libc::DT_DIR,
                    branch: None,
                },
            ];
            out.extend(
                self.merged_listing(&path, &view)?
                    .into_iter()
                    .map(|e| DirEntry {
                        name: e.name,
                        ino: e.ino,
                        dtype: e.dtype,
                        branch: Some(e.branch),
                    }),
            );
            *cached = Some(Arc::new(out));
        }
        Ok(Arc::clone(cached.as_ref().expect("filled above")))
    }

    /// Attributes of listed entries, for readdirplus: the stat of the branch entry that shows
    /// each (None for one gone since the listing was taken). Each branch directory is opened
    /// once per batch. Not registered with the kernel until [`Union::remember`] says an entry
    /// was sent.
    pub fn listed_attrs(&self, dir: u64, entries: &[DirEntry]) -> Result<Vec<Option<Listed>>> {
        let (path, view) = self.dir_view(dir)?;
        let mut fds: std::collections::HashMap<usize, Arc<std::os::fd::OwnedFd>> =
            Default::default();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let Some(branch) = e.branch else {
                out.push(self.getattr(dir, None).ok().map(|attr| Listed {
                    attr,
                    settled: true,
                    generation: 0,
                }));
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(v) = fds.entry(branch) {
                v.insert(
                    self.branch_dir(&view, &path, branch)
                        .ctx(|| format!("open {path:?}"))?,
                );
            }
            let Some(st) = crate::branch::stat_at(&fds[&branch], &e.name)? else {
                out.push(None);
                continue;
            };
            let kind = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                crate::branch::resolve::Presence::Dir
            } else {
                crate::branch::resolve::Presence::NonDir
            };
            let mut found = crate::fs::Found {
                layers: Layers {
                    kind,
                    branches: vec![branch],
                },
                st,
            };
            // A listing need not pay for a branch walk (cold: a stat of every file in the
            // branch) that only a hardlinked lower file's link count needs: such an entry goes
            // out with the branch's own count, unsettled, and is counted at its lookup.
            let settled = self.link_count_known(&found);
            if settled {
                self.count_visible_links(&mut found)?;
            }
            // As a lookup would send it: the kernel retires an inode whose generation differs.
            let target = if crate::fs::is_symlink(&found.st) && self.changes_only_through_us() {
                self.generation_of(&fds[&branch], &e.name, &found.st)
            } else {
                0
            };
            let attr = self.attr_of(&found.st);
            let generation = target.wrapping_add(self.inodes.generation(attr.ino));
            out.push(Some(Listed {
                attr,
                settled,
                generation,
            }));
        }
        Ok(out)
    }

    /// The kernel now knows `dir/name` as node `ino` (readdirplus sent it).
    pub fn remember(&self, dir: u64, name: &OsStr, ino: u64) {
        if self.inodes.lookup(dir, name, ino).moved_dir {
            self.layers_changed();
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> Result<Entry> {
        let n = self.place_new_name(parent, name)?;
        let mode = self.creation_mode(&n.dir, mode, caller.umask);
        sys::as_caller(caller.uid, caller.gid, || {
            nix::sys::stat::mkdirat(n.dir.as_fd(), name, Mode::from_bits_truncate(mode & 0o7777))
        })
        .ctx(|| format!("mkdir {:?}", child_path(&n.ppath, name)))?;
        self.after_create(parent, &n, name, true)?;
        self.entry_in(parent, n.t, &n.dir, name)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, true)
    }

    pub fn fsyncdir(&self, node: u64) -> Result<()> {
        let (path, view) = self.dir_view(node)?;
        let b = self.branches.get(view.top());
        if !b.writable() {
            return Ok(());
        }
        let (at, rel) = match view.held(view.top()) {
            Some(fd) => (fd.as_fd(), OsStr::new("")),
            None => (b.root.as_fd(), path.as_os_str()),
        };
        let fd = sys::open_beneath(at, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .ctx(|| format!("open {path:?}"))?;
        nix::unistd::fsync(&fd).ctx(|| format!("fsync {path:?}"))
    }
}

/// A listed entry's attributes. `settled` is false when its link count is the branch's own,
/// not yet the number of names the union shows: the kernel must not keep it.
#[derive(Debug, Clone, Copy)]
pub struct Listed {
    pub attr: Attr,
    pub settled: bool,
    /// As [`Entry::generation`](crate::fs::Entry).
    pub generation: u64,
}

fn dtype_of(t: nix::dir::Type) -> u8 {
    use nix::dir::Type::*;
    match t {
        Fifo => libc::DT_FIFO,
        CharacterDevice => libc::DT_CHR,
        Directory => libc::DT_DIR,
        BlockDevice => libc::DT_BLK,
        File => libc::DT_REG,
        Symlink => libc::DT_LNK,
        Socket => libc::DT_SOCK,
    }
}
