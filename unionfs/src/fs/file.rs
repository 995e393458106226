//! Open files: open (copying up before the first write), create, read, write, fsync,
//! fallocate, lseek, release.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsFd;

use nix::fcntl::{FallocateFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::Whence;

use crate::error::{Context, Error, Result};
use crate::fs::{child_path, Caller, Entry, Union};
use crate::handle::{FileHandle, Handle};
use crate::sys;

/// Open flags passed on to the branch file; the rest are the kernel's business (O_CREAT and
/// O_EXCL were handled by create, O_NOATIME needs ownership the daemon does not check, and
/// O_DIRECT is not supported by every branch filesystem).
fn branch_flags(flags: i32) -> OFlag {
    let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC;
    OFlag::from_bits_truncate(flags & keep) | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

impl Union {
    pub fn open(&self, node: u64, flags: i32) -> Result<u64> {
        let n = self.locate(node)?;
        let (path, mut found) = (&n.path, n.found.clone());
        if found.is_dir() {
            return Err(Error::errno(libc::EISDIR));
        }
        if flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY {
            found = self.copy_up_truncated(path, &found)?;
        } else if wants_write(flags) {
            found = self.copy_up(path, &found)?;
        }
        let b = found.top();
        let branch = self.branches.get(b);
        let oflags = branch_flags(flags);
        let fd = if b == n.found.top() {
            // Where it was found: open it in its directory, held or opened by path.
            let (dir, name) = self.top_entry(&n)?;
            sys::open_beneath(dir.as_fd(), name, oflags | OFlag::O_NOFOLLOW, Mode::empty())
        } else {
            branch.open_file(path, oflags, Mode::empty())
        }
        .ctx(|| format!("open {path:?} in branch {}", branch.path.display()))?;
        Ok(self.handles.insert(Handle::File(FileHandle::new(
            node,
            File::from(fd),
            b,
            oflags,
        ))))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Entry, u64)> {
        let n = match self.place_new_name(parent, name) {
            Ok(n) => n,
            // Raced with another creator: without O_EXCL, open what is there.
            Err(e) if e.is(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                let entry = self.lookup(parent, name)?;
                let fh = self.open(entry.node, flags & !libc::O_CREAT)?;
                return Ok((entry, fh));
            }
            Err(e) => return Err(e),
        };
        let t = n.t;
        let branch = self.branches.get(t);
        let mode = self.creation_mode(&n.dir, mode, caller.umask);
        let oflags = branch_flags(flags) | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = sys::as_caller(caller.uid, caller.gid, || {
            sys::open_beneath(
                n.dir.as_fd(),
                name,
                oflags,
                Mode::from_bits_truncate(mode & 0o7777),
            )
        })
        .ctx(|| {
            format!(
                "create {:?} in branch {}",
                child_path(&n.ppath, name),
                branch.path.display()
            )
        })?;
        self.after_create(parent, &n, name, false)?;
        // The file just made, by its descriptor: no second lookup of the name.
        let st = nix::sys::stat::fstat(&fd).ctx(|| "fstat new file")?;
        let entry = self.entry_of(parent, t, name, st);
        let fh = self.handles.insert(Handle::File(FileHandle::new(
            entry.node,
            File::from(fd),
            t,
            branch_flags(flags),
        )));
        Ok((entry, fh))
    }

    /// A second descriptor of an open handle's branch file (for the kernel's passthrough).
    /// And whether that file stays the node's file for as long as it is open: true in the
    /// topmost writable branch, from which nothing is ever copied to another branch (a file
    /// of a lower branch, writable or not, may be copied up while open).
    pub fn handle_file(&self, node: u64, fh: u64) -> Option<(File, bool)> {
        let h = self.handles.file(fh, node).ok()?;
        match &*h {
            Handle::File(f) => Some((
                f.file().try_clone().ok()?,
                self.branches
                    .topmost_rw_at_or_above(self.branches.len() - 1)
                    == Some(f.branch()),
            )),
            Handle::Dir(_) => None,
        }
    }

    fn with_file<T>(
        &self,
        node: u64,
        fh: u64,
        f: impl FnOnce(&FileHandle) -> Result<T>,
    ) -> Result<T> {
        let h = self.handles.file(fh, node)?;
        match &*h {
            Handle::File(file) => f(file),
            Handle::Dir(_) => Err(Error::errno(libc::EISDIR)),
        }
    }

    pub fn read(&self, node: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.with_file(node, fh, |h| {
            let mut buf = vec![0u8; size as usize];
            let mut done = 0;
            while done < buf.len() {
                let n =
                    nix::sys::uio::pread(&*h.file(), &mut buf[done..], offset as i64 + done as i64)
                        .ctx(|| "read")?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            buf.truncate(done);
            Ok(buf)
        })
    }

    pub fn write(&self, node: u64, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        self.with_file(node, fh, |h| {
            let mut done = 0;
            while done < data.len() {
                let n =
                    nix::sys::uio::pwrite(&*h.file(), &data[done..], offset as i64 + done as i64)
                        .ctx(|| "write")?;
                if n == 0 {
                    return Err(Error::errno(libc::ENOSPC));
                }
                done += n;
            }
            Ok(done)
        })
    }

    pub fn fsync(&self, node: u64, fh: u64, datasync: bool) -> Result<()> {
        self.with_file(node, fh, |h| {
            if datasync {
                nix::unistd::fdatasync(&*h.file()).ctx(|| "fdatasync")
            } else {
                nix::unistd::fsync(&*h.file()).ctx(|| "fsync")
            }
        })
    }

    pub fn fallocate(&self, node: u64, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        self.with_file(node, fh, |h| {
            nix::fcntl::fallocate(
                &*h.file(),
                FallocateFlags::from_bits_truncate(mode),
                offset as i64,
                length as i64,
            )
            .ctx(|| "fallocate")
        })
    }

    pub fn lseek(&self, node: u64, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let whence = match whence {
            libc::SEEK_SET => Whence::SeekSet,
            libc::SEEK_CUR => Whence::SeekCur,
            libc::SEEK_END => Whence::SeekEnd,
            libc::SEEK_DATA => Whence::SeekData,
            libc::SEEK_HOLE => Whence::SeekHole,
            _ => return Err(Error::errno(libc::EINVAL)),
        };
        self.with_file(node, fh, |h| {
            nix::unistd::lseek(h.file().as_fd(), offset, whence).ctx(|| "lseek")
        })
    }

    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
    }
}
