//! Hardlink groups of read-only branches: for each branch, the names of every non-directory
//! with more than one link. Found by one walk of the branch the first time a group matters
//! (a copy-up of, or a link count for, such a file), then kept: read-only branches do not
//! change under the union (`rr`), or change rarely enough (`ro`) that a stale name is only
//! skipped.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

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

    /// Every name in branch `index` (rooted at `root`) of the inode `ino`.
    /// `gen`: for a writable branch, the union's names generation; the walk is redone when it
    /// changed since the last one.
    pub fn names(&self, index: usize, root: &Path, ino: u64, gen: Option<u64>) -> Vec<PathBuf> {
        let groups = {
            let mut map = self.per_branch.lock();
            match map.get(&index) {
                Some((g, groups)) if *g == gen => Arc::clone(groups),
                _ => {
                    let mut g = Groups::new();
                    walk(root, PathBuf::new(), &mut g);
                    let g = Arc::new(g);
                    map.insert(index, (gen, Arc::clone(&g)));
                    g
                }
            }
        };
        groups.get(&ino).cloned().unwrap_or_default()
    }
}

/// Records every non-directory with several links below `root/rel`. Symlinks are not
/// followed (`DirEntry::file_type` does not follow them); whiteouts and bookkeeping names are
/// not files of the layer (aufs makes its whiteouts hardlinks of one file).
fn walk(root: &Path, rel: PathBuf, out: &mut Groups) {
    let Ok(entries) = fs::read_dir(root.join(&rel)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if classify(&name) != EntryKind::Plain {
            continue;
        }
        let Ok(ft) = e.file_type() else {
            continue;
        };
        let child = rel.join(&name);
        if ft.is_dir() {
            walk(root, child, out);
        } else if let Ok(m) = e.metadata() {
            if m.nlink() > 1 {
                out.entry(m.ino()).or_default().push(child);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_name_of_a_hardlinked_file() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        fs::write(d.path().join("a"), "x").unwrap();
        fs::hard_link(d.path().join("a"), d.path().join("sub/b")).unwrap();
        fs::hard_link(d.path().join("a"), d.path().join(".wh.c")).unwrap();
        fs::write(d.path().join("single"), "y").unwrap();
        let ino = fs::metadata(d.path().join("a")).unwrap().ino();
        let mut names = LinkGroups::default().names(0, d.path(), ino, None);
        names.sort();
        assert_eq!(names, vec![PathBuf::from("a"), PathBuf::from("sub/b")]);
    }
}
