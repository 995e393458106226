//! Name lookup and the read-only queries on one node: getattr, readlink, statfs, access.

use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;

use nix::sys::statvfs::Statvfs;

use crate::error::{Context, Error, Result};
use crate::fs::{Attr, Caller, Entry, Union};
use crate::handle::Handle;

impl Union {
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Entry> {
        if name.len() > 255 {
            return Err(Error::errno(libc::ENAMETOOLONG));
        }
        let (ppath, pview) = self.dir_view(parent)?;
        let found = self
            .resolve_child(&ppath, &pview, name)?
            .ok_or_else(|| Error::errno(libc::ENOENT))?;
        Ok(self.entry_for(parent, name, &found))
    }

    pub fn forget(&self, node: u64, n: u64) {
        self.inodes.forget(node, n);
    }

    /// Attributes of a node; with an open handle, of the file behind it (so `fstat` works on an
    /// unlinked file).
    pub fn getattr(&self, node: u64, fh: Option<u64>) -> Result<Attr> {
        if let Some(fh) = fh {
            if let Ok(h) = self.handles.get(fh, node) {
                if let Handle::File(f) = &*h {
                    let st = nix::sys::stat::fstat(f.file().as_fd()).ctx(|| "fstat open file")?;
                    return Ok(Attr { ino: node, st });
                }
            }
        }
        match self.node(node) {
            // The kernel knows this node by its number; keep showing that one.
            Ok((_, found)) => Ok(Attr {
                ino: node,
                st: found.st,
            }),
            // Unlinked while open: what the open file says, with no name left.
            Err(e) if e.is(libc::ENOENT) => match self.handles.any_file_of(node) {
                Some(file) => {
                    let mut st = nix::sys::stat::fstat(file.as_fd()).ctx(|| "fstat open file")?;
                    st.st_nlink = 0;
                    Ok(Attr { ino: node, st })
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    pub fn readlink(&self, node: u64) -> Result<OsString> {
        let n = self.locate(node)?;
        let (dir, name) = self.top_entry(&n)?;
        nix::fcntl::readlinkat(dir.as_fd(), name).ctx(|| format!("readlink {:?}", n.path))
    }

    /// Space of the branch where new data goes (the topmost writable one), else the top branch.
    pub fn statfs(&self) -> Result<Statvfs> {
        let b = self
            .branches
            .list
            .iter()
            .find(|b| b.writable())
            .unwrap_or_else(|| self.branches.get(0));
        nix::sys::statvfs::fstatvfs(&b.root).ctx(|| format!("statfs branch {}", b.path.display()))
    }

    /// POSIX permission check of `mask` (R_OK/W_OK/X_OK bits) for `caller` on the merged
    /// attributes. Writing to an all-read-only union is EROFS.
    pub fn access(&self, node: u64, mask: i32, caller: Caller) -> Result<()> {
        let (_, found) = self.node(node)?;
        if mask & libc::W_OK != 0 && self.is_read_only() {
            return Err(Error::errno(libc::EROFS));
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        let st = &found.st;
        if caller.uid == 0 {
            // root may read and write anything, and execute what anyone may execute.
            let any_x = st.st_mode & 0o111 != 0 || st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            return if mask & libc::X_OK != 0 && !any_x {
                Err(Error::errno(libc::EACCES))
            } else {
                Ok(())
            };
        }
        let bits = if caller.uid == st.st_uid {
            (st.st_mode >> 6) & 7
        } else if caller.gid == st.st_gid {
            (st.st_mode >> 3) & 7
        } else {
            st.st_mode & 7
        };
        if (mask as u32) & !bits & 7 != 0 {
            return Err(Error::errno(libc::EACCES));
        }
        Ok(())
    }
}
