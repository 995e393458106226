//! Extended attributes: read from the branch that shows the file, written after a copy-up.
//! overlayfs' own attributes of lower layers are not shown.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use crate::error::{Context, Error, Result};
use crate::fs::Union;
use crate::sys;

fn is_layer_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

impl Union {
    pub fn getxattr(&self, node: u64, attr: &OsStr) -> Result<Vec<u8>> {
        if is_layer_xattr(attr.as_bytes()) {
            return Err(Error::errno(libc::ENODATA));
        }
        // `ls -l` asks every file for security.selinux and ACLs; most have no xattrs at all.
        if self.changes_only_through_us() && self.inodes.has_no_xattrs(node) {
            return Err(Error::errno(libc::ENODATA));
        }
        let n = self.locate(node)?;
        let (dir, name) = self.top_entry(&n)?;
        match sys::getxattr_at(dir.as_fd(), name, attr) {
            Ok(v) => Ok(v),
            Err(nix::errno::Errno::ENODATA) => {
                if sys::listxattr_at(dir.as_fd(), name).is_ok_and(|l| l.is_empty()) {
                    self.inodes.set_no_xattrs(node, true);
                }
                Err(Error::errno(libc::ENODATA))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The NUL-separated list of names.
    pub fn listxattr(&self, node: u64) -> Result<Vec<u8>> {
        let n = self.locate(node)?;
        let (dir, name) = self.top_entry(&n)?;
        let raw = sys::listxattr_at(dir.as_fd(), name)?;
        let mut out = Vec::with_capacity(raw.len());
        for n in raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty() && !is_layer_xattr(n))
        {
            out.extend_from_slice(n);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(&self, node: u64, attr: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        self.inodes.set_no_xattrs(node, false);
        if is_layer_xattr(attr.as_bytes()) {
            return Err(Error::errno(libc::EPERM));
        }
        let n = self.locate(node)?;
        let n = self.copied_up(n)?;
        let (dir, name) = self.top_entry(&n)?;
        let path = &n.path;
        sys::setxattr_at(dir.as_fd(), name, attr, value, flags)
            .ctx(|| format!("setxattr {attr:?} on {path:?}"))
    }

    pub fn removexattr(&self, node: u64, attr: &OsStr) -> Result<()> {
        if is_layer_xattr(attr.as_bytes()) {
            return Err(Error::errno(libc::ENODATA));
        }
        let n = self.locate(node)?;
        // Nothing to remove means no copy-up either.
        self.getxattr(node, attr)?;
        let n = self.copied_up(n)?;
        let (dir, name) = self.top_entry(&n)?;
        let path = &n.path;
        sys::removexattr_at(dir.as_fd(), name, attr)
            .ctx(|| format!("removexattr {attr:?} on {path:?}"))
    }
}
