//! Open file and directory handles.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};

/// An open file: the branch file's descriptor. A handle is moved to the copy when its node is
/// copied up, so it reads what writers write (as overlayfs does since Linux 4.19).
#[derive(Debug)]
pub struct FileHandle {
    pub node: u64,
    /// The flags the branch file was opened with (to open its copy the same way).
    pub flags: nix::fcntl::OFlag,
    current: RwLock<(Arc<File>, usize)>,
}

impl FileHandle {
    pub fn new(node: u64, file: File, branch: usize, flags: nix::fcntl::OFlag) -> FileHandle {
        FileHandle {
            node,
            flags,
            current: RwLock::new((Arc::new(file), branch)),
        }
    }

    /// The branch file now behind this handle.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.current.read().0)
    }

    /// The branch the file is in.
    pub fn branch(&self) -> usize {
        self.current.read().1
    }

    /// Moves the handle to another file of its node (after a copy-up).
    pub fn redirect(&self, file: File, branch: usize) {
        *self.current.write() = (Arc::new(file), branch);
    }
}

/// One entry of a directory listing as the kernel gets it.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: std::ffi::OsString,
    pub ino: u64,
    pub dtype: u8,
    /// The branch that shows this name (None for `.` and `..`).
    pub branch: Option<usize>,
}

/// An open directory: its merged listing, taken at the first readdir (a snapshot, which POSIX
/// allows for entries added or removed after opendir).
#[derive(Debug)]
pub struct DirHandle {
    pub node: u64,
    pub entries: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

#[derive(Debug)]
pub enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

#[derive(Debug, Default)]
pub struct HandleTable {
    map: DashMap<u64, Arc<Handle>>,
    next: AtomicU64,
}

impl HandleTable {
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.insert(fh, Arc::new(h));
        fh
    }

    /// The handle `fh`, which must belong to node `node` (a handle of another inode is refused).
    pub fn get(&self, fh: u64, node: u64) -> Result<Arc<Handle>> {
        let h = self
            .map
            .get(&fh)
            .map(|h| Arc::clone(&h))
            .ok_or_else(|| Error::new(libc::EBADF, format!("no handle {fh}")))?;
        let owner = match &*h {
            Handle::File(f) => f.node,
            Handle::Dir(d) => d.node,
        };
        if owner != node {
            return Err(Error::new(
                libc::EBADF,
                format!("handle {fh} is not of inode {node}"),
            ));
        }
        Ok(h)
    }

    pub fn file(&self, fh: u64, node: u64) -> Result<Arc<Handle>> {
        let h = self.get(fh, node)?;
        match &*h {
            Handle::File(_) => Ok(h),
            Handle::Dir(_) => Err(Error::errno(libc::EISDIR)),
        }
    }

    /// A descriptor of some open file handle of `node` (for an unlinked, still open file).
    pub fn any_file_of(&self, node: u64) -> Option<File> {
        self.map.iter().find_map(|h| match &**h.value() {
            Handle::File(f) if f.node == node => f.file().try_clone().ok(),
            _ => None,
        })
    }

    /// Every open file handle of `node`.
    pub fn files_of(&self, node: u64) -> Vec<Arc<Handle>> {
        self.map
            .iter()
            .filter(|h| matches!(&**h.value(), Handle::File(f) if f.node == node))
            .map(|h| Arc::clone(h.value()))
            .collect()
    }

    pub fn remove(&self, fh: u64) {
        self.map.remove(&fh);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
