//! Hardlink groups of read-only branches: for each branch, the names of every non-directory
//! with more than one link. Found by one walk of the branch the first time a group matters
//! (a copy-up of, or a link count for, such a file), then kept: read-only branches do not
//! change under the union (`rr`), or change rarely enough (`ro`) that a stale name is only
//! skipped.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use parking_lot::Mutex;

use crate::sys;
use crate::whiteout::{classify, EntryKind};

/// Per branch index: inode number -> names (relative paths) of that inode.
type Groups = HashMap<u64, Vec<PathBuf>>;
/// A branch's groups and the names generation they were walked at (None: a read-only branch).
type Walked = (Option<u64>, Arc<Groups>);

#[derive(Debug, Default)]
pub struct LinkGroups {
    per_branch: Mutex<HashMap<usize, Walked>>,
    /// (branch, inode) -> (names generation, how many names the union shows).
    counts: Mutex<HashMap<(usize, u64), (u64, u64)>>,
}

impl LinkGroups {
    /// A visible-name count computed while the union's names were at generation `gen`.
    pub fn cached_count(&self, key: (usize, u64), gen: u64) -> Option<u64> {
        match self.counts.lock().get(&key) {
            Some((g, n)) if *g == gen => Some(*n),
            _ => None,
        }
    }

    pub fn cache_count(&self, key: (usize, u64), gen: u64, n: u64) {
        self.counts.lock().insert(key, (gen, n));
    }

    /// True when branch `index`'s groups are known for names generation `gen` (see
    /// [`LinkGroups::names`]): asking for names then costs no walk.
    pub fn is_walked(&self, index: usize, gen: Option<u64>) -> bool {
        matches!(self.per_branch.lock().get(&index), Some((g, _)) if *g == gen)
    }

    /// Every name in branch `index` (whose root directory is `root`) of the inode `ino`.
    /// `gen`: for a writable branch, the union's names generation; the walk is redone when it
    /// changed since the last one.
    pub fn names(&self, index: usize, root: &OwnedFd, ino: u64, gen: Option<u64>) -> Vec<PathBuf> {
        let groups = {
            let mut map = self.per_branch.lock();
            match map.get(&index) {
                Some((g, groups)) if *g == gen => Arc::clone(groups),
                _ => {
                    let mut g = Groups::new();
                    walk(root, &mut g);
                    let g = Arc::new(g);
                    map.insert(index, (gen, Arc::clone(&g)));
                    g
                }
            }
        };
        groups.get(&ino).cloned().unwrap_or_default()
    }
}

/// Directories whose descriptors a walk keeps open at once (the chain from the root to where
/// it is): as many as directory views may hold; deeper ones are opened from the root by path,
/// in pieces (see `sys::open_beneath`).
fn held_ancestors() -> usize {
    crate::fs::view::cap()
}

/// One directory of the walk: its path in the branch, its descriptor while held, and the
/// subdirectories still to visit.
struct Frame {
    rel: PathBuf,
    fd: Option<OwnedFd>,
    subdirs: Vec<OsString>,
}

/// Records every non-directory with several links in the branch whose root is `root`.
/// Depth first, each directory opened beneath its parent (never following a symlink), so a
/// tree of any depth is walked with no path longer than one name; whiteouts and bookkeeping
/// names are not files of the layer (aufs makes its whiteouts hardlinks of one file).
fn walk(root: &OwnedFd, out: &mut Groups) {
    let open_dir = |at: &OwnedFd, rel: &OsStr| {
        sys::open_beneath(
            at.as_fd(),
            rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
    };
    let Ok(top) = open_dir(root, OsStr::new("")) else {
        return;
    };
    let mut stack = vec![scan(top, PathBuf::new(), true, out)];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.subdirs.pop() else {
            stack.pop();
            continue;
        };
        let rel = frame.rel.join(&name);
        let fd = match &frame.fd {
            Some(parent) => open_dir(parent, &name),
            None => open_dir(root, rel.as_os_str()),
        };
        let Ok(fd) = fd else {
            continue;
        };
        let hold = stack.len() < held_ancestors();
        stack.push(scan(fd, rel, hold, out));
    }
}

/// Lists one directory: records its hardlinked non-directories, returns its subdirectories.
fn scan(fd: OwnedFd, rel: PathBuf, hold: bool, out: &mut Groups) -> Frame {
    let held = if hold { fd.try_clone().ok() } else { None };
    let mut subdirs = Vec::new();
    if let Ok(mut dir) = nix::dir::Dir::from_fd(fd) {
        let dirfd = dir.as_fd().try_clone_to_owned().ok();
        for e in dir.iter().flatten() {
            let name = OsStr::from_bytes(e.file_name().to_bytes());
            if name == "." || name == ".." || classify(name) != EntryKind::Plain {
                continue;
            }
            let Some(st) = dirfd
                .as_ref()
                .and_then(|d| nix::sys::stat::fstatat(d, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok())
            else {
                continue;
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                subdirs.push(name.to_os_string());
            } else if st.st_nlink > 1 {
                out.entry(st.st_ino).or_default().push(rel.join(name));
            }
        }
    }
    Frame {
        rel,
        fd: held,
        subdirs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn finds_every_name_of_a_hardlinked_file() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("a"), "x").unwrap();
        fs::hard_link(d.path().join("a"), d.path().join("sub/b")).unwrap();
        fs::hard_link(d.path().join("a"), d.path().join(".wh.c")).unwrap();
        fs::write(d.path().join("single"), "y").unwrap();
        let ino = fs::metadata(d.path().join("a")).unwrap().ino();
        let root =
            nix::fcntl::open(d.path(), OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        let mut names = LinkGroups::default().names(0, &root, ino, None);
        names.sort();
        assert_eq!(names, vec![PathBuf::from("a"), PathBuf::from("sub/b")]);
    }
}
