//! The protocol-free union core: one `Union` value serving every operation, one file per family
//! of operations. Nothing here knows FUSE; `crate::fuse` adapts requests to these calls.

pub mod attr;
mod dir;
mod file;
mod lookup;
mod namespace;
pub mod view;
mod xattr;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode};

use crate::branch::resolve::{self, Layers, Presence};

use crate::branch::{stat_at, BranchSet, WORK_DIR};
use crate::config::Config;
use crate::error::{Context, Error, Result};
use crate::handle::HandleTable;
use crate::inode::{InoMap, InodeTable, ROOT_ID};

pub use dir::{Listed, ReaddirEntry};
pub use view::DirView;

/// Who asks: the FUSE request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// For calls that create: the caller's umask (0 when the kernel applied it already).
    pub umask: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
        umask: 0,
    };
}

/// A resolved name: the branches that make it up and the stat of the top one.
#[derive(Debug, Clone)]
pub struct Found {
    pub layers: Layers,
    pub st: FileStat,
}

impl Found {
    pub fn top(&self) -> usize {
        self.layers.top()
    }

    pub fn is_dir(&self) -> bool {
        self.layers.is_dir()
    }
}

/// True for a symlink's stat.
pub(crate) fn is_symlink(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// A node found by its id: its merged path, its resolution, and the view of the directory
/// holding it (None for the root).
#[derive(Debug)]
pub(crate) struct Located {
    pub path: PathBuf,
    pub found: Found,
    pub parent: Option<Arc<DirView>>,
}

/// Attributes as the union shows them: the top branch's stat with the union's inode number.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub st: FileStat,
}

/// A name the kernel now knows: its node id, attributes and generation (see
/// [`Union::generation_of`]).
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub node: u64,
    pub attr: Attr,
    pub generation: u64,
}

/// The union filesystem.
#[derive(Debug)]
pub struct Union {
    pub(crate) branches: BranchSet,
    pub(crate) inodes: InodeTable,
    pub(crate) handles: HandleTable,
    pub(crate) inos: InoMap,
    /// The root directory: every branch down to the first opaque root, each root held.
    root_view: Arc<DirView>,
    read_only: bool,
    /// Per branch: the copy-up work directory of a writable branch.
    pub(crate) work: Vec<Option<Arc<OwnedFd>>>,
    /// `workdir=` was given (it serves the first writable branch).
    workdir_given: bool,
    /// Bumped whenever a name appears or goes anywhere in the union; cached link counts of
    /// lower hardlink groups are valid only within one generation.
    pub(crate) names_gen: AtomicU64,
    /// Names of hardlinked files in read-only branches (for group copy-up and link counts).
    pub(crate) link_groups: crate::linkgroup::LinkGroups,
    /// Bumped whenever directory layers change; see `layers_changed`.
    layer_gen: AtomicU64,
    /// Per-path locks: concurrent first writers copy a file once, and a copy-up never
    /// interleaves with an unlink or rename of the same name.
    pub(crate) path_locks: crate::pathlock::PathLocks,
    tmp_seq: AtomicU64,
    /// Serialises making a branch's shared whiteout file (see `link_whiteout`).
    whiteout_lock: parking_lot::Mutex<()>,
    /// Removed directories still being emptied (see `crate::trash`).
    pub(crate) trash: Arc<crate::trash::Trash>,
}

impl Union {
    pub fn new(cfg: &Config) -> Result<Union> {
        let branches = BranchSet::open(&cfg.branches)?;
        let root_layers = resolve::root_layers(branches.len(), |b| {
            branches
                .get(b)
                .is_opaque(&branches.get(b).root)
                .unwrap_or(false)
        });
        let root_fds = root_layers
            .branches
            .iter()
            .map(|&b| branches.get(b).root.try_clone().ok().map(Arc::new))
            .collect();
        // The roots are held by the branch set anyway: not counted against the cap.
        let root_view = Arc::new(DirView::holding(root_layers, root_fds, 0));
        let read_only = cfg.read_only || !branches.any_writable();
        let mut work = Vec::new();
        for b in &branches.list {
            if b.writable() && !read_only {
                let fd = match (&cfg.workdir, b.index == first_rw(&branches)) {
                    (Some(w), true) => open_workdir_at(w)?,
                    _ => open_work_in_branch(b)?,
                };
                work.push(Some(Arc::new(fd)));
            } else {
                work.push(None);
            }
        }
        let top = &branches.get(0).root;
        let st = nix::sys::stat::fstat(top).ctx(|| "stat top branch root")?;
        let inos = InoMap::default();
        // The first device seen keeps its own inode numbers: the top branch's.
        inos.ino(st.st_dev, st.st_ino);
        Ok(Union {
            branches,
            inodes: InodeTable::new(),
            handles: HandleTable::default(),
            inos,
            root_view,
            read_only,
            work,
            workdir_given: cfg.workdir.is_some(),
            path_locks: Default::default(),
            layer_gen: AtomicU64::new(0),
            link_groups: Default::default(),
            names_gen: AtomicU64::new(0),
            tmp_seq: AtomicU64::new(0),
            whiteout_lock: Default::default(),
            trash: Default::default(),
        })
    }

    /// At unmount: removes the `.wh..wh.work` directories this union made in its branches when
    /// they are empty, so a branch left behind holds only the user's changes.
    pub fn cleanup(&self) {
        self.trash.drain();
        for work in self.work.iter().flatten() {
            remove_whiteout_base(work);
        }
        for root in self.own_work_roots() {
            remove_work_dir(root);
        }
    }

    /// [`Union::cleanup`] as a value of its own, for the end of a process that can no longer
    /// reach the union (see `crate::shutdown`).
    pub fn cleanup_later(&self) -> impl FnOnce() + Send + 'static {
        let roots: Vec<OwnedFd> = self
            .own_work_roots()
            .into_iter()
            .filter_map(|r| r.try_clone().ok())
            .collect();
        let works: Vec<Arc<OwnedFd>> = self.work.iter().flatten().cloned().collect();
        let trash = Arc::clone(&self.trash);
        move || {
            trash.drain();
            works.iter().for_each(|w| remove_whiteout_base(w));
            roots.iter().for_each(remove_work_dir)
        }
    }

    /// The roots of the writable branches whose work directory is their own `.wh..wh.work`.
    fn own_work_roots(&self) -> Vec<&OwnedFd> {
        self.branches
            .list
            .iter()
            .zip(&self.work)
            .filter(|(b, work)| work.is_some() && self.own_work_dir(b.index))
            .map(|(b, _)| &b.root)
            .collect()
    }

    /// True when branch `b`'s work directory is the `.wh..wh.work` inside it (not `workdir=`).
    fn own_work_dir(&self, b: usize) -> bool {
        !(self.workdir_given && b == first_rw(&self.branches))
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// True when no branch is `ro` (which another program may change): every change to the
    /// union's files then goes through this daemon, and the kernel may cache for long.
    pub fn changes_only_through_us(&self) -> bool {
        self.branches
            .list
            .iter()
            .all(|b| b.perm != crate::config::Perm::Ro)
    }

    /// Resolves a merged path (relative, empty for the root) through every branch (for callers
    /// that have no node: copy-up, link groups). Each level's branch directories are opened
    /// beneath the previous level's, so the cost grows with the depth once, never with the
    /// square of it, and no path is ever longer than one name.
    pub fn resolve(&self, rel: &Path) -> Result<Option<Found>> {
        let mut cur = self.root_found()?;
        let mut view = Arc::clone(&self.root_view);
        let mut cur_path = PathBuf::new();
        let mut comps = rel.iter().peekable();
        while let Some(comp) = comps.next() {
            if !cur.is_dir() {
                return Err(Error::errno(libc::ENOTDIR));
            }
            match self.resolve_child_raw(&cur_path, &view, comp)? {
                Some(f) => cur = f,
                None => return Ok(None),
            }
            if comps.peek().is_some() && cur.is_dir() {
                view = Arc::new(self.walk_view(&cur_path, &view, comp, &cur.layers));
            }
            cur_path.push(comp);
        }
        Ok(Some(cur))
    }

    /// The view of directory `name` of `parent` (at `ppath`) made of `layers`, each branch's
    /// directory opened beneath the parent's, for one walk: held in every branch (also `ro`
    /// ones, which may change behind us: the view is dropped when the walk ends) and not
    /// counted against the cap of cached views. A directory that cannot be opened is left
    /// to be opened by path at use.
    pub(crate) fn walk_view(
        &self,
        ppath: &Path,
        parent: &DirView,
        name: &OsStr,
        layers: &Layers,
    ) -> DirView {
        let fds = layers
            .branches
            .iter()
            .map(|&b| self.open_child_dir(parent, ppath, b, name))
            .collect();
        DirView::holding(layers.clone(), fds, 0)
    }

    /// Branch `b`'s directory `name` in the union directory `parent` (at `ppath`), opened
    /// beneath the parent's branch directory (`O_PATH`, no symlink followed).
    fn open_child_dir(
        &self,
        parent: &DirView,
        ppath: &Path,
        b: usize,
        name: &OsStr,
    ) -> Option<Arc<OwnedFd>> {
        let pfd = self.branch_dir(parent, ppath, b).ok()?;
        crate::sys::open_beneath(
            pfd.as_fd(),
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .ok()
        .map(Arc::new)
    }

    /// The root directory's view (every root branch held).
    pub(crate) fn root_view(&self) -> Arc<DirView> {
        Arc::clone(&self.root_view)
    }

    fn root_found(&self) -> Result<Found> {
        let top = self.root_view.top();
        let st = nix::sys::stat::fstat(&self.branches.get(top).root).ctx(|| "stat branch root")?;
        Ok(Found {
            layers: self.root_view.layers.clone(),
            st,
        })
    }

    /// Branch `b`'s directory of the union directory `view` at `path`: the held descriptor, or
    /// else opened by path beneath the branch root.
    pub(crate) fn branch_dir(
        &self,
        view: &DirView,
        path: &Path,
        b: usize,
    ) -> nix::Result<Arc<OwnedFd>> {
        match view.held(b) {
            Some(fd) => Ok(Arc::clone(fd)),
            None => self.branches.get(b).dir(path).map(Arc::new),
        }
    }

    /// Resolves `name` in the directory `parent_rel` (seen as `parent`), with the link count
    /// the union shows (see [`Union::count_visible_links`]).
    pub fn resolve_child(
        &self,
        parent_rel: &Path,
        parent: &DirView,
        name: &OsStr,
    ) -> Result<Option<Found>> {
        let mut found = self.resolve_child_raw(parent_rel, parent, name)?;
        if let Some(f) = found.as_mut() {
            self.count_visible_links(f)?;
        }
        Ok(found)
    }

    /// Resolves `name` in the directory `parent_rel` (seen as `parent`), with the top branch's
    /// own stat.
    pub fn resolve_child_raw(
        &self,
        parent_rel: &Path,
        parent: &DirView,
        name: &OsStr,
    ) -> Result<Option<Found>> {
        self.resolve_among(parent_rel, parent, &parent.branches, name)
    }

    /// Resolves `name` among `branches` (some of `parent`'s, top first). A branch is asked only
    /// what can change the answer: whiteouts and opaque markers only when a branch below it
    /// is still to be probed.
    fn resolve_among(
        &self,
        parent_rel: &Path,
        parent: &DirView,
        branches: &[usize],
        name: &OsStr,
    ) -> Result<Option<Found>> {
        if crate::whiteout::is_reserved(name) {
            return Ok(None);
        }
        let mut stats: Vec<(usize, FileStat)> = Vec::new();
        let mut failure: Option<Error> = None;
        let last = branches.last().copied();
        let layers = resolve::resolve_child(branches, |b| {
            if failure.is_some() {
                return resolve::Probe {
                    whiteout: true,
                    ..Default::default()
                };
            }
            let branch = self.branches.get(b);
            let dir = match self.branch_dir(parent, parent_rel, b) {
                Ok(d) => d,
                // The parent is not a plain directory in this branch (raced away): nothing here.
                Err(
                    nix::errno::Errno::ENOENT
                    | nix::errno::Errno::ENOTDIR
                    | nix::errno::Errno::ELOOP,
                ) => return resolve::Probe::default(),
                Err(e) => {
                    failure = Some(Error::new(
                        e as i32,
                        format!("open {parent_rel:?} in branch {}", branch.path.display()),
                    ));
                    return resolve::Probe::default();
                }
            };
            match branch.probe(&dir, name, Some(b) != last) {
                Ok((p, st)) => {
                    if let Some(st) = st {
                        stats.push((b, st));
                    }
                    p
                }
                Err(e) => {
                    failure = Some(e);
                    resolve::Probe::default()
                }
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let Some(layers) = layers else {
            return Ok(None);
        };
        let top = layers.top();
        let st = stats
            .into_iter()
            .find(|(b, _)| *b == top)
            .map(|(_, st)| st)
            .expect("a branch with the entry was probed with its stat");
        Ok(Some(Found { layers, st }))
    }

    /// Whether a branch below `b` (among the directory's layers) shows `name`: after the name
    /// was removed from `b`, a whiteout is then needed.
    pub(crate) fn shown_below(
        &self,
        parent_rel: &Path,
        parent: &DirView,
        b: usize,
        name: &OsStr,
    ) -> Result<bool> {
        let below: Vec<usize> = parent.below(b).collect();
        if below.is_empty() {
            return Ok(false);
        }
        Ok(self
            .resolve_among(parent_rel, parent, &below, name)?
            .is_some())
    }

    /// The path and resolution of a node; ENOENT when it no longer has a name in the union.
    /// Only the last component is resolved: the parent's branches come from its cache.
    pub fn node(&self, id: u64) -> Result<(PathBuf, Found)> {
        let n = self.locate(id)?;
        Ok((n.path, n.found))
    }

    /// A node's path, resolution and parent directory view (None for the root). A directory's
    /// view is cached on the way.
    pub(crate) fn locate(&self, id: u64) -> Result<Located> {
        if id == ROOT_ID {
            return Ok(Located {
                path: PathBuf::new(),
                found: self.root_found()?,
                parent: None,
            });
        }
        let (parent, name) = self
            .inodes
            .first_name(id)
            .ok_or_else(|| Error::new(libc::ENOENT, format!("node {id} has no name")))?;
        let gen = self.layer_gen.load(Ordering::Acquire);
        let (ppath, pview) = self.dir_view(parent)?;
        let path = ppath.join(&name);
        // A directory whose view is current has the same branches as when the view was made
        // (anything that changes them bumps the generation): only its top needs a fresh stat,
        // through the held descriptor.
        if let Some(view) = self.inodes.cached_view(id, gen) {
            if let Some(fd) = view.held(view.top()) {
                let st = nix::sys::stat::fstat(fd).ctx(|| format!("stat {path:?}"))?;
                return Ok(Located {
                    path,
                    found: Found {
                        layers: view.layers.clone(),
                        st,
                    },
                    parent: Some(pview),
                });
            }
        }
        let found = self
            .resolve_child(&ppath, &pview, &name)?
            .ok_or_else(|| Error::new(libc::ENOENT, format!("{path:?} is gone")))?;
        if found.is_dir() {
            let fresh = self
                .inodes
                .cached_view(id, gen)
                .is_some_and(|v| v.layers == found.layers);
            if !fresh {
                let view = Arc::new(self.open_view(&ppath, &pview, &name, &found.layers));
                drop(self.inodes.cache_view(id, gen, &view, &path));
            }
        }
        Ok(Located {
            path,
            found,
            parent: Some(pview),
        })
    }

    /// `n` after a copy-up (a no-op when it lives in a writable branch already). A copy lives
    /// in another branch, whose directory is then opened by path.
    pub(crate) fn copied_up(&self, n: Located) -> Result<Located> {
        let found = self.copy_up(&n.path, &n.found)?;
        if found.top() == n.found.top() {
            return Ok(n);
        }
        Ok(Located {
            path: n.path,
            found,
            parent: None,
        })
    }

    /// Opens the branch directories of `parent/name` (made of `layers`) that may be held.
    fn open_view(&self, ppath: &Path, parent: &DirView, name: &OsStr, layers: &Layers) -> DirView {
        let holdable: Vec<bool> = layers
            .branches
            .iter()
            .map(|&b| self.branches.get(b).perm != crate::config::Perm::Ro)
            .collect();
        let n = holdable.iter().filter(|h| **h).count();
        if n == 0 || !view::reserve(n) {
            return DirView::bare(layers.clone());
        }
        let fds = layers
            .branches
            .iter()
            .zip(&holdable)
            .map(|(&b, &hold)| {
                hold.then(|| self.open_child_dir(parent, ppath, b, name))
                    .flatten()
            })
            .collect();
        DirView::holding(layers.clone(), fds, n)
    }

    /// A directory node's path and view (cached until the layers change).
    pub fn dir_view(&self, id: u64) -> Result<(PathBuf, Arc<DirView>)> {
        if id == ROOT_ID {
            return Ok((PathBuf::new(), Arc::clone(&self.root_view)));
        }
        let gen = self.layer_gen.load(Ordering::Acquire);
        if let Some(cached) = self.inodes.cached_dir(id, gen) {
            return Ok(cached);
        }
        // Up to the nearest directory whose view is current (or the root), then down again one
        // level at a time, each resolved in the view just made: a directory whose ancestors'
        // views all went stale (any directory copied up, renamed or removed) costs one
        // resolution per level, in a loop, not a recursion per level, which would overflow a
        // serving thread's stack thousands of levels down.
        let mut chain: Vec<(u64, std::ffi::OsString)> = Vec::new();
        let mut cur = id;
        let (mut path, mut view) = loop {
            if cur == ROOT_ID {
                break (PathBuf::new(), Arc::clone(&self.root_view));
            }
            if let Some(cached) = self.inodes.cached_dir(cur, gen) {
                break cached;
            }
            let (parent, name) = self
                .inodes
                .first_name(cur)
                .ok_or_else(|| Error::new(libc::ENOENT, format!("node {cur} has no name")))?;
            chain.push((cur, name));
            cur = parent;
            // More ancestors than nodes is a cycle (a bug): refuse rather than spin.
            if chain.len() % 4096 == 0 && chain.len() > self.inodes.len() {
                return Err(Error::new(libc::EIO, format!("node {id}: cycle in names")));
            }
        };
        for (node, name) in chain.into_iter().rev() {
            let found = self.resolve_child(&path, &view, &name)?.ok_or_else(|| {
                Error::new(libc::ENOENT, format!("{:?} is gone", path.join(&name)))
            })?;
            if !found.is_dir() {
                return Err(Error::errno(libc::ENOTDIR));
            }
            let next = match self.inodes.cached_view(node, gen) {
                Some(v) if v.layers == found.layers => v,
                _ => Arc::new(self.open_view(&path, &view, &name, &found.layers)),
            };
            path.push(&name);
            drop(self.inodes.cache_view(node, gen, &next, &path));
            view = next;
        }
        Ok((path, view))
    }

    /// A directory node's path and branches (cached until the layers change).
    pub fn dir_layers(&self, id: u64) -> Result<(PathBuf, Layers)> {
        let (path, view) = self.dir_view(id)?;
        Ok((path, view.layers.clone()))
    }

    /// Something changed which branches make up some directory (a directory was copied up, made
    /// opaque, renamed or removed): every cached directory resolution is stale.
    pub(crate) fn layers_changed(&self) {
        self.layer_gen.fetch_add(1, Ordering::AcqRel);
        self.names_changed();
    }

    /// The branches of one directory changed (it was copied up, or removed), nothing below it
    /// moved: only its own view is stale. Its children's views stay right: a directory copied
    /// up is empty in its new branch (a child shows there only once copied up itself), and a
    /// removed one had no children. `node` is None when the kernel does not know the directory
    /// (then nothing of it is cached).
    pub(crate) fn dir_changed(&self, node: Option<u64>) {
        if let Some(id) = node {
            drop(self.inodes.drop_view(id));
        }
        self.names_changed();
    }

    /// A name appeared or went somewhere in the union.
    pub(crate) fn names_changed(&self) {
        self.names_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The directory that holds a node's entry in its top branch, open, and the entry's name
    /// in it (the one place the per-node operations get at their branch entry).
    pub(crate) fn top_entry<'p>(&self, n: &'p Located) -> Result<(Arc<OwnedFd>, &'p OsStr)> {
        let (parent, name) = split(&n.path);
        let dir = match &n.parent {
            Some(view) => self.branch_dir(view, parent, n.found.top()),
            None => self.branches.get(n.found.top()).dir(parent).map(Arc::new),
        }
        .ctx(|| format!("open {parent:?}"))?;
        Ok((dir, name))
    }

    pub fn attr_of(&self, st: &FileStat) -> Attr {
        Attr {
            ino: self.inos.ino(st.st_dev, st.st_ino),
            st: *st,
        }
    }

    /// Registers a kernel lookup of `parent/name` and returns its entry.
    pub fn entry_for(&self, parent: u64, name: &OsStr, found: &Found) -> Entry {
        let attr = self.attr_of(&found.st);
        let target = if is_symlink(&found.st) && self.changes_only_through_us() {
            self.dir_view(parent)
                .and_then(|(ppath, view)| {
                    self.branch_dir(&view, &ppath, found.top())
                        .ctx(|| format!("open {ppath:?}"))
                })
                .map_or(0, |dir| self.generation_of(&dir, name, &found.st))
        } else {
            0
        };
        let registered = self.inodes.lookup(parent, name, attr.ino);
        if registered.moved_dir {
            self.layers_changed();
        }
        Entry {
            node: attr.ino,
            attr,
            generation: target.wrapping_add(registered.generation),
        }
    }

    /// The FUSE generation of branch entry `dir/name` (stat `st`): 0, but for a symlink a hash
    /// of its target, when the kernel caches symlink targets (`FUSE_CACHE_SYMLINKS`, asked for
    /// in `fuse.rs` only when every change goes through us).
    ///
    /// Why: the kernel keeps a symlink's target in its inode's page cache until the inode is
    /// evicted, and nothing in an entry or attribute reply invalidates it. A target never
    /// changes in place (a new target is a new symlink: a new branch inode), and a copy-up
    /// keeps it. But node ids are branch inode numbers, and ext4 hands a freed inode number to
    /// the next new inode at once: a symlink removed through the mount while the kernel still
    /// holds its inode (an `O_PATH` descriptor on it, a lookup racing the unlink) could leave
    /// that inode, with the old target cached, to be found again under the same node id for
    /// a new symlink. The kernel compares the generation of every entry with its inode's
    /// (`fuse_stale_inode`) and, when they differ, retires the old inode and makes a new one,
    /// with an empty cache. A different target always gives a different generation (up to a
    /// 64-bit hash collision); the same target may keep the cached page, which is then right.
    /// Hardlinks of one symlink share their target, so they share the generation too.
    /// An unreadable link gives 0, which differs from any target's hash (never 0).
    pub(crate) fn generation_of(&self, dir: &OwnedFd, name: &OsStr, st: &FileStat) -> u64 {
        if !is_symlink(st) {
            return 0;
        }
        match nix::fcntl::readlinkat(dir.as_fd(), name) {
            Ok(target) => {
                use std::hash::{Hash, Hasher};
                // SipHash with fixed keys: the same target gives the same number for the
                // daemon's lifetime (the kernel's inodes do not outlive the mount).
                let mut h = std::hash::DefaultHasher::new();
                target.hash(&mut h);
                h.finish().max(1)
            }
            Err(_) => 0,
        }
    }

    /// Stats entry `name` of branch `branch`'s directory `dir` and registers it (after a
    /// create).
    pub(crate) fn entry_in(
        &self,
        parent: u64,
        branch: usize,
        dir: &OwnedFd,
        name: &OsStr,
    ) -> Result<Entry> {
        let st = stat_at(dir, name)?
            .ok_or_else(|| Error::new(libc::ENOENT, format!("{name:?} vanished")))?;
        Ok(self.entry_of(parent, branch, name, st))
    }

    /// Registers `name` of `parent` as the branch entry `st` of `branch` (just made there).
    pub(crate) fn entry_of(&self, parent: u64, branch: usize, name: &OsStr, st: FileStat) -> Entry {
        let kind = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            Presence::Dir
        } else {
            Presence::NonDir
        };
        let found = Found {
            layers: Layers {
                kind,
                branches: vec![branch],
            },
            st,
        };
        self.entry_for(parent, name, &found)
    }

    pub(crate) fn ensure_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::errno(libc::EROFS));
        }
        Ok(())
    }

    /// The branch where a change to `found` happens: its own branch when writable, else the
    /// topmost writable branch above it (where it will be copied up).
    pub(crate) fn change_target(&self, found: &Found) -> Result<usize> {
        self.ensure_writable()?;
        let top = found.top();
        if self.branches.get(top).writable() {
            return Ok(top);
        }
        self.branches
            .topmost_rw_at_or_above(top)
            .ok_or_else(|| Error::errno(libc::EROFS))
    }

    /// The branch where a new name in directory `ppath` goes (aufs `create=tdp`): the topmost
    /// writable branch holding the directory, when no branch above it (in the directory) has a
    /// whiteout that would hide the name there; else the topmost writable branch above the
    /// directory's top (its directories are copied up there).
    pub(crate) fn create_target(
        &self,
        ppath: &Path,
        parent: &DirView,
        name: &OsStr,
    ) -> Result<usize> {
        self.ensure_writable()?;
        let tdp = parent
            .branches
            .iter()
            .position(|b| self.branches.get(*b).writable());
        if let Some(i) = tdp {
            let hidden = parent.branches[..i].iter().any(|&above| {
                self.branch_dir(parent, ppath, above)
                    .ok()
                    .and_then(|d| {
                        stat_at(&d, &crate::whiteout::whiteout_name(name))
                            .ok()
                            .flatten()
                    })
                    .is_some()
            });
            if !hidden {
                return Ok(parent.branches[i]);
            }
        }
        self.branches
            .topmost_rw_at_or_above(parent.top())
            .ok_or_else(|| Error::errno(libc::EROFS))
    }

    pub(crate) fn work_dir(&self, branch: usize) -> Result<&Arc<OwnedFd>> {
        self.work[branch].as_ref().ok_or_else(|| {
            Error::new(
                libc::EROFS,
                format!("branch {branch} has no work directory"),
            )
        })
    }

    /// Makes `wh` in branch `t`'s directory `dir` a hardlink of the branch's shared whiteout
    /// file, an empty 0600 file in its work directory, made on first use (as aufs links its
    /// whiteouts to one file, and overlayfs to one inode). A whiteout's content and inode
    /// mean nothing (only its name counts), and a link costs the branch filesystem no inode:
    /// on ext4 a new inode took 150-330 us here against 8-17 us for a link, and the links
    /// are as cheap to remove again (rmdir of a whited-out directory empties it first).
    /// Atomic as the create it replaces: the whiteout is there or not. The shared file is
    /// named `tmp.*`, so a crash leaves nothing a mount does not clean, and is removed at
    /// unmount; the whiteouts linked to it stay, as plain empty files with a link count.
    /// False when no link could be made (no work directory, a filesystem without hardlinks):
    /// the caller then creates the whiteout as a file of its own.
    pub(crate) fn link_whiteout(&self, t: usize, dir: &OwnedFd, wh: &OsStr) -> bool {
        let Ok(work) = self.work_dir(t) else {
            return false;
        };
        let base = whiteout_base_name();
        let link = || nix::unistd::linkat(work, base, dir, wh, nix::fcntl::AtFlags::empty());
        for _ in 0..3 {
            match link() {
                // An existing whiteout is fine, as it was for the create.
                Ok(()) | Err(nix::errno::Errno::EEXIST) => return true,
                // Not made yet, or full (ext4: 65,000 links): a new shared file. A link made
                // to the old one stays valid.
                Err(e @ (nix::errno::Errno::ENOENT | nix::errno::Errno::EMLINK)) => {
                    let _g = self.whiteout_lock.lock();
                    if e == nix::errno::Errno::EMLINK {
                        match link() {
                            Err(nix::errno::Errno::EMLINK) => {}
                            // Another thread renewed it meanwhile.
                            _ => continue,
                        }
                        let _ = nix::unistd::unlinkat(
                            work,
                            base,
                            nix::unistd::UnlinkatFlags::NoRemoveDir,
                        );
                    }
                    match nix::fcntl::openat(
                        work,
                        base,
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_CLOEXEC
                            | OFlag::O_NOFOLLOW,
                        Mode::from_bits_truncate(0o600),
                    ) {
                        Ok(_) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(_) => return false,
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// A fresh temporary name inside a work directory.
    pub(crate) fn tmp_name(&self) -> PathBuf {
        let n = self
            .tmp_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PathBuf::from(format!("tmp.{}.{n}", std::process::id()))
    }
}

/// The name of a branch's shared whiteout file in its work directory: `tmp.*`, so that a mount
/// removes one an earlier daemon left behind. Made once: every removal of a lower name uses it.
fn whiteout_base_name() -> &'static OsStr {
    static NAME: std::sync::LazyLock<std::ffi::OsString> =
        std::sync::LazyLock::new(|| format!("tmp.whiteout.{}", std::process::id()).into());
    NAME.as_os_str()
}

/// Removes the shared whiteout file from a work directory (the whiteouts linked to it stay).
fn remove_whiteout_base(work: &OwnedFd) {
    let _ = nix::unistd::unlinkat(
        work.as_fd(),
        whiteout_base_name(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
}

/// Removes a branch's `.wh..wh.work` if it is empty (a copy-up cut short leaves it to the next
/// mount, which cleans it).
fn remove_work_dir(root: &OwnedFd) {
    let _ = nix::unistd::unlinkat(
        root.as_fd(),
        WORK_DIR,
        nix::unistd::UnlinkatFlags::RemoveDir,
    );
}

fn first_rw(b: &BranchSet) -> usize {
    b.list
        .iter()
        .position(|b| b.writable())
        .unwrap_or(usize::MAX)
}

/// Opens (creating if needed) `.wh..wh.work` in a writable branch, emptied of what an earlier,
/// interrupted daemon left there.
fn open_work_in_branch(b: &crate::branch::Branch) -> Result<OwnedFd> {
    match nix::sys::stat::mkdirat(b.root.as_fd(), WORK_DIR, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => {
            return Err(e).ctx(|| format!("create {WORK_DIR} in branch {}", b.path.display()))
        }
    }
    let fd = b
        .dir(Path::new(WORK_DIR))
        .ctx(|| format!("open {WORK_DIR} in branch {}", b.path.display()))?;
    let full = crate::sys::open_beneath(
        b.root.as_fd(),
        OsStr::new(WORK_DIR),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .ctx(|| format!("open {WORK_DIR} in branch {}", b.path.display()))?;
    clean_dir(full)?;
    Ok(fd)
}

fn open_workdir_at(w: &Path) -> Result<OwnedFd> {
    let fd = nix::fcntl::open(
        w,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open workdir {}", w.display()))?;
    let path = nix::fcntl::open(
        w,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("open workdir {}", w.display()))?;
    clean_dir(fd)?;
    Ok(path)
}

/// Removes leftovers (`tmp.*`) of interrupted copy-ups; they were never visible.
fn clean_dir(dir: OwnedFd) -> Result<()> {
    let mut d = nix::dir::Dir::from_fd(dir).ctx(|| "read work directory")?;
    let names: Vec<std::ffi::CString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.to_bytes().starts_with(b"tmp."))
        .collect();
    for n in names {
        let name = OsStr::new(std::str::from_utf8(n.to_bytes()).unwrap_or(""));
        if name.is_empty() {
            continue;
        }
        crate::copyup::remove_tree_at(&d, name)
            .ctx(|| format!("clean work directory entry {name:?}"))?;
    }
    Ok(())
}

/// Splits a merged path into (parent, name); the root has an empty name.
pub(crate) fn split(rel: &Path) -> (&Path, &OsStr) {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => (Path::new(""), OsStr::new("")),
    }
}

/// `parent_path/name`, refusing names the union reserves for itself.
pub(crate) fn child_path(parent: &Path, name: &OsStr) -> PathBuf {
    parent.join(name)
}
