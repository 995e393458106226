//! Inode bookkeeping: the merged paths that reach each node, kernel lookup counts, and the
//! stable inode numbers (`st_ino`) the union reports.
//!
//! A node is one file of the union, keyed by its union inode number, which is also its FUSE node
//! id (fuser replies use one value for both): names that are hardlinks of each other in a branch
//! reach one node. A node keeps the names (parent, name) it is known by; its path is rebuilt from
//! its first name on each request, so a rename of a directory moves everything under it at once.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};

use std::sync::Arc;

use crate::fs::view::DirView;

/// The FUSE root node id.
pub const ROOT_ID: u64 = 1;
/// Names kept per node: enough for the hardlinks a workload touches, bounded for memory.
const MAX_ALIASES: usize = 8;

#[derive(Debug, Default)]
struct Node {
    aliases: Vec<(u64, OsString)>,
    lookups: u64,
    /// For a directory: its branches (and held branch directories) and its merged path, valid
    /// while the union's layer generation is unchanged (every rename or removal of a
    /// directory changes it). The path is kept so that a request deep in the tree does not
    /// rebuild it name by name.
    view: Option<(u64, Arc<DirView>, Arc<PathBuf>)>,
    /// The file has no extended attributes (known from a listxattr; cleared by setxattr).
    no_xattrs: bool,
    /// The FUSE generation of this node id: bumped when the id comes back for a new file.
    generation: u64,
    /// Its file was removed (its last link, or the directory): the next lookup of this id is a
    /// new file that reuses the branch inode number, and gets the next generation.
    unlinked: bool,
}

#[derive(Debug, Default)]
struct Tables {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, OsString), u64>,
}

/// What [`InodeTable::lookup`] found on registering a lookup.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Registered {
    /// A directory is now known by another first name (moved behind the daemon's back):
    /// cached directory paths below it are then stale.
    pub moved_dir: bool,
    /// The node's FUSE generation, as the reply must carry it.
    pub generation: u64,
}

/// Nodes and the names that reach them. One lock, held only for map updates (never during
/// I/O), so the two maps stay consistent with each other.
#[derive(Debug)]
pub struct InodeTable {
    inner: Mutex<Tables>,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> InodeTable {
        let mut t = Tables::default();
        t.nodes.insert(
            ROOT_ID,
            Node {
                lookups: 1,
                ..Node::default()
            },
        );
        InodeTable {
            inner: Mutex::new(t),
        }
    }

    /// A node's first name: (parent id, name).
    pub fn first_name(&self, id: u64) -> Option<(u64, OsString)> {
        let t = self.inner.lock();
        t.nodes.get(&id)?.aliases.first().cloned()
    }

    /// The directory view cached for `id`, if made in generation `gen`.
    pub fn cached_view(&self, id: u64, gen: u64) -> Option<Arc<DirView>> {
        let t = self.inner.lock();
        match &t.nodes.get(&id)?.view {
            Some((g, v, _)) if *g == gen => Some(Arc::clone(v)),
            _ => None,
        }
    }

    /// The directory view and merged path cached for `id`, if made in generation `gen`.
    pub fn cached_dir(&self, id: u64, gen: u64) -> Option<(PathBuf, Arc<DirView>)> {
        let t = self.inner.lock();
        match &t.nodes.get(&id)?.view {
            Some((g, v, p)) if *g == gen => Some((PathBuf::clone(p), Arc::clone(v))),
            _ => None,
        }
    }

    /// The node the kernel knows as `name` in directory `parent`, if any.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        let t = self.inner.lock();
        t.by_name.get(&(parent, name.to_os_string())).copied()
    }

    /// Drops the view cached for `id`; returned so that its descriptors are closed after the
    /// table's lock is released.
    pub fn drop_view(&self, id: u64) -> Option<Arc<DirView>> {
        let mut t = self.inner.lock();
        t.nodes.get_mut(&id)?.view.take().map(|(_, v, _)| v)
    }

    pub fn has_no_xattrs(&self, id: u64) -> bool {
        self.inner
            .lock()
            .nodes
            .get(&id)
            .is_some_and(|n| n.no_xattrs)
    }

    pub fn set_no_xattrs(&self, id: u64, none: bool) {
        if let Some(n) = self.inner.lock().nodes.get_mut(&id) {
            n.no_xattrs = none;
        }
    }

    /// Caches `view` and `path` for directory `id` as made in generation `gen`; the view it
    /// replaces is returned so that its descriptors are closed after the table's lock is
    /// released.
    pub fn cache_view(
        &self,
        id: u64,
        gen: u64,
        view: &Arc<DirView>,
        path: &std::path::Path,
    ) -> Option<Arc<DirView>> {
        let mut t = self.inner.lock();
        let n = t.nodes.get_mut(&id)?;
        n.view
            .replace((gen, Arc::clone(view), Arc::new(path.to_path_buf())))
            .map(|(_, old, _)| old)
    }

    /// The merged path of a node (empty for the root), or None when it has no name left.
    pub fn path(&self, id: u64) -> Option<PathBuf> {
        let t = self.inner.lock();
        let mut parts: Vec<&OsStr> = Vec::new();
        let mut cur = id;
        while cur != ROOT_ID {
            let node = t.nodes.get(&cur)?;
            let (parent, name) = node.aliases.first()?;
            parts.push(name);
            cur = *parent;
            // A path has fewer components than there are nodes (a union may be far deeper
            // than PATH_MAX allows a path to be); more would be a cycle, a bug: refuse
            // rather than spin.
            if parts.len() > t.nodes.len() {
                return None;
            }
        }
        Some(parts.iter().rev().collect())
    }

    /// The node id of the directory holding `id`'s first name (the root for the root).
    pub fn parent_of(&self, id: u64) -> u64 {
        let t = self.inner.lock();
        t.nodes
            .get(&id)
            .and_then(|n| n.aliases.first())
            .map(|a| a.0)
            .unwrap_or(ROOT_ID)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.inner.lock().nodes.contains_key(&id)
    }

    /// Records one kernel lookup of `parent/name` that resolved to node `id`. The kernel will
    /// `forget` it once per lookup.
    pub fn lookup(&self, parent: u64, name: &OsStr, id: u64) -> Registered {
        let mut t = self.inner.lock();
        let key = (parent, name.to_os_string());
        // A name that reached another node now reaches this one.
        if let Some(old) = t.by_name.get(&key).copied() {
            if old != id {
                if let Some(n) = t.nodes.get_mut(&old) {
                    n.aliases.retain(|a| a != &key);
                }
            }
        }
        let node = t.nodes.entry(id).or_default();
        node.lookups += 1;
        if node.unlinked {
            node.unlinked = false;
            node.generation += 1;
        }
        let generation = node.generation;
        let mut dropped = None;
        let moved_dir = node.view.is_some() && node.aliases.first().is_some_and(|a| *a != key);
        if !node.aliases.contains(&key) {
            node.aliases.insert(0, key.clone());
            if node.aliases.len() > MAX_ALIASES {
                dropped = node.aliases.pop();
            }
        }
        if let Some(d) = dropped {
            t.by_name.remove(&d);
        }
        t.by_name.insert(key, id);
        Registered {
            moved_dir,
            generation,
        }
    }

    /// The kernel dropped `n` references; the node goes when none are left.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut t = self.inner.lock();
        let Some(node) = t.nodes.get_mut(&id) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return;
        }
        let mut node = t.nodes.remove(&id).expect("present above");
        // Its directory view (and the descriptors it holds) goes after the lock is released.
        let view = node.view.take().map(|(_, v, _)| v);
        for a in std::mem::take(&mut node.aliases) {
            if t.by_name.get(&a) == Some(&id) {
                t.by_name.remove(&a);
            }
        }
        // After the kernel let go of most of a big walk, give the tables' memory back.
        if t.nodes.capacity() > 4 * t.nodes.len() + 4096 {
            t.nodes.shrink_to_fit();
            t.by_name.shrink_to_fit();
            crate::sys::return_free_memory();
        }
        drop(t);
        drop(view);
    }

    /// Node `id`'s file is gone from its branch (its last link removed, or the directory).
    ///
    /// Node ids are branch inode numbers, and ext4 gives a freed number to the next new inode
    /// at once, while the kernel may still hold the old inode (a process that ran the file and
    /// whose last reference is being dropped, an open descriptor). The kernel finds an inode by
    /// node id and generation: with the same pair, the new file would get the old inode, and
    /// with it state that is not its own (`pjdfstest open::etxtbsy` saw the exec'd file's
    /// write denial undone by the old process's exit). So the next lookup of this id gets the
    /// next generation, and the kernel retires the old inode (`fuse_stale_inode`).
    pub fn mark_unlinked(&self, id: u64) {
        if let Some(n) = self.inner.lock().nodes.get_mut(&id) {
            n.unlinked = true;
        }
    }

    /// The generation node `id` is known by; for an entry about to be sent (readdirplus, before
    /// [`InodeTable::lookup`] registers it), the one that registration will give it.
    pub fn generation(&self, id: u64) -> u64 {
        self.inner
            .lock()
            .nodes
            .get(&id)
            .map_or(0, |n| n.generation + u64::from(n.unlinked))
    }

    /// `parent/name` no longer exists (unlink, rmdir, or the source of a rename).
    pub fn remove_name(&self, parent: u64, name: &OsStr) {
        let mut t = self.inner.lock();
        let key = (parent, name.to_os_string());
        if let Some(id) = t.by_name.remove(&key) {
            if let Some(n) = t.nodes.get_mut(&id) {
                n.aliases.retain(|a| a != &key);
            }
        }
    }

    /// A rename: the node at `from` is now reached by `to` (and whatever was at `to` is not).
    pub fn rename(&self, from: (u64, &OsStr), to: (u64, &OsStr)) {
        let mut t = self.inner.lock();
        let from = (from.0, from.1.to_os_string());
        let to = (to.0, to.1.to_os_string());
        if let Some(old) = t.by_name.remove(&to) {
            if let Some(n) = t.nodes.get_mut(&old) {
                n.aliases.retain(|a| a != &to);
            }
        }
        if let Some(id) = t.by_name.remove(&from) {
            if let Some(n) = t.nodes.get_mut(&id) {
                for a in n.aliases.iter_mut() {
                    if *a == from {
                        *a = to.clone();
                    }
                }
            }
            t.by_name.insert(to, id);
        }
    }

    /// Swap two names (RENAME_EXCHANGE).
    pub fn exchange(&self, a: (u64, &OsStr), b: (u64, &OsStr)) {
        let mut t = self.inner.lock();
        let a = (a.0, a.1.to_os_string());
        let b = (b.0, b.1.to_os_string());
        let ida = t.by_name.remove(&a);
        let idb = t.by_name.remove(&b);
        for (id, from, to) in [(ida, &a, &b), (idb, &b, &a)] {
            if let Some(id) = id {
                if let Some(n) = t.nodes.get_mut(&id) {
                    for al in n.aliases.iter_mut() {
                        if al == from {
                            *al = to.clone();
                        }
                    }
                }
                t.by_name.insert(to.clone(), id);
            }
        }
    }

    /// Number of live nodes (for tests and memory reports).
    pub fn len(&self) -> usize {
        self.inner.lock().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Stable inode numbers. A file's number comes from the branch file that shows it: its own
/// `st_ino` when the branch is on the first device seen, else the device's index in the top
/// byte. A file copied up keeps the number of its lower original (recorded in `origin`).
#[derive(Debug, Default)]
pub struct InoMap {
    devs: RwLock<Vec<u64>>,
    origin: DashMap<(u64, u64), u64>,
}

impl InoMap {
    pub fn ino(&self, dev: u64, ino: u64) -> u64 {
        if let Some(v) = self.origin.get(&(dev, ino)) {
            return *v;
        }
        let idx = self.dev_index(dev);
        let n = if idx == 0 {
            ino
        } else {
            (idx << 56) | (ino & ((1u64 << 56) - 1))
        };
        // Node id 1 is the union's root; a branch file numbered 1 gets another number.
        if n == ROOT_ID {
            1 << 63 | ROOT_ID
        } else {
            n
        }
    }

    fn dev_index(&self, dev: u64) -> u64 {
        if let Some(i) = self.devs.read().iter().position(|d| *d == dev) {
            return i as u64;
        }
        let mut devs = self.devs.write();
        if let Some(i) = devs.iter().position(|d| *d == dev) {
            return i as u64;
        }
        devs.push(dev);
        (devs.len() - 1) as u64
    }

    /// The branch file `(dev, ino)` is a copy of a file whose union inode number is `union_ino`.
    pub fn record_copy(&self, dev: u64, ino: u64, union_ino: u64) {
        self.origin.insert((dev, ino), union_ino);
    }

    /// The branch file `(dev, ino)` is gone: a new file given its inode number is no copy.
    pub fn forget_copy(&self, dev: u64, ino: u64) {
        self.origin.remove(&(dev, ino));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardlinks_share_a_node_and_paths_follow_renames() {
        let t = InodeTable::new();
        let _ = t.lookup(ROOT_ID, OsStr::new("d"), 10);
        let _ = t.lookup(10, OsStr::new("a"), 11);
        let _ = t.lookup(ROOT_ID, OsStr::new("b"), 11);
        assert_eq!(t.path(11), Some(PathBuf::from("b")));
        t.remove_name(ROOT_ID, OsStr::new("b"));
        assert_eq!(t.path(11), Some(PathBuf::from("d/a")));
        t.rename((ROOT_ID, OsStr::new("d")), (ROOT_ID, OsStr::new("e")));
        assert_eq!(t.path(11), Some(PathBuf::from("e/a")));
    }

    #[test]
    fn forget_drops_nodes_after_last_reference() {
        let t = InodeTable::new();
        let _ = t.lookup(ROOT_ID, OsStr::new("a"), 5);
        let _ = t.lookup(ROOT_ID, OsStr::new("a"), 5);
        t.forget(5, 1);
        assert!(t.path(5).is_some());
        t.forget(5, 1);
        assert!(t.path(5).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_node_id_back_for_a_new_file_gets_the_next_generation() {
        let t = InodeTable::new();
        let _ = t.lookup(ROOT_ID, OsStr::new("a"), 7);
        assert_eq!(t.generation(7), 0);
        t.remove_name(ROOT_ID, OsStr::new("a"));
        t.mark_unlinked(7);
        // The kernel still holds the old inode (no forget yet); a new file gets number 7.
        assert_eq!(
            t.generation(7),
            1,
            "what a listing of the new file must send"
        );
        let _ = t.lookup(ROOT_ID, OsStr::new("b"), 7);
        assert_eq!(t.generation(7), 1);
        let _ = t.lookup(ROOT_ID, OsStr::new("b"), 7);
        assert_eq!(t.generation(7), 1, "later lookups keep it");
    }

    #[test]
    fn inode_numbers_are_stable_and_survive_copy_up() {
        let m = InoMap::default();
        assert_eq!(m.ino(7, 100), 100);
        assert_eq!(m.ino(8, 100), (1 << 56) | 100);
        m.record_copy(7, 555, 100);
        assert_eq!(m.ino(7, 555), 100);
        assert_ne!(m.ino(7, 1), ROOT_ID);
    }
}
