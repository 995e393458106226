//! Names: create-family helpers, unlink/rmdir with whiteouts, symlink, mknod, link, rename.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

use crate::branch::stat_at;
use crate::error::{Context, Error, Result};
use crate::fs::{child_path, split, Caller, DirView, Entry, Found, Union};
use crate::sys;
use crate::whiteout::{self, EntryKind, OPAQUE_MARKER};

/// Longest name a branch filesystem takes (NAME_MAX).
const NAME_MAX: usize = 255;

impl Union {
    /// Checks shared by every call that makes a new name: not reserved, not too long, the parent
    /// is a directory, the name is free, the union is writable.
    pub(crate) fn prepare_create(
        &self,
        parent: u64,
        name: &OsStr,
    ) -> Result<(PathBuf, Arc<DirView>)> {
        check_new_name(name)?;
        let (ppath, pview) = self.dir_view(parent)?;
        if self.resolve_child_raw(&ppath, &pview, name)?.is_some() {
            return Err(Error::errno(libc::EEXIST));
        }
        self.ensure_writable()?;
        Ok((ppath, pview))
    }

    /// Everything a new name needs before it is made: the checks of `prepare_create`, the
    /// branch it goes to (its directories copied up there) and that directory, held open.
    pub(crate) fn place_new_name(&self, parent: u64, name: &OsStr) -> Result<NewName> {
        let (ppath, mut view) = self.prepare_create(parent, name)?;
        let t = self.create_target(&ppath, &view, name)?;
        if !view.has(t) {
            self.ensure_dirs(t, &ppath)?;
            view = self.dir_view(parent)?.1;
        }
        let dir = self
            .branch_dir(&view, &ppath, t)
            .ctx(|| format!("open {ppath:?}"))?;
        Ok(NewName { ppath, t, dir })
    }

    /// After a new name was made in branch `t`: drop its whiteout there, and make a new
    /// directory opaque when lower branches still hold that name (so old content stays gone).
    pub(crate) fn after_create(
        &self,
        parent: u64,
        n: &NewName,
        name: &OsStr,
        is_dir: bool,
    ) -> Result<()> {
        remove_whiteout(&n.dir, name)?;
        self.names_changed();
        if is_dir {
            // The parent's branches as they are now (its copy-up may have just added `t`).
            let (_, pview) = self.dir_view(parent)?;
            if pview.below(n.t).next().is_some() {
                if let Some(f) = self.resolve_child_raw(&n.ppath, &pview, name)? {
                    if f.layers.branches.len() > 1 {
                        self.make_opaque(n.t, &child_path(&n.ppath, name))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The mode a new object in `dir` gets: the caller's umask applies, unless the directory
    /// has a default ACL, which the branch filesystem then applies instead (POSIX ACL rules;
    /// with POSIX ACLs on, the kernel leaves the umask to the filesystem).
    pub(crate) fn creation_mode(&self, dir: &OwnedFd, mode: u32, umask: u32) -> u32 {
        if umask & 0o777 == 0 {
            return mode;
        }
        let acl = OsStr::new("system.posix_acl_default");
        match sys::getxattr_at(dir.as_fd(), OsStr::new(""), acl) {
            Ok(_) => mode,
            Err(_) => mode & !(umask & 0o777),
        }
    }

    /// Writes `.wh.NAME` into directory `ppath` of branch `t` (its parents copied up first).
    pub(crate) fn make_whiteout(&self, t: usize, ppath: &Path, name: &OsStr) -> Result<()> {
        self.ensure_dirs(t, ppath)?;
        let dir = self
            .branches
            .get(t)
            .dir(ppath)
            .ctx(|| format!("open {ppath:?}"))?;
        self.write_whiteout(t, &dir, ppath, name)
    }

    /// Writes `.wh.NAME` into `dir` (directory `ppath` of branch `t`, where the removal
    /// happened), as a hardlink of the branch's shared whiteout file (see
    /// [`Union::link_whiteout`]); as a file of its own where no link can be made.
    pub(crate) fn write_whiteout(
        &self,
        t: usize,
        dir: &OwnedFd,
        ppath: &Path,
        name: &OsStr,
    ) -> Result<()> {
        let wh = whiteout::whiteout_name(name);
        if self.link_whiteout(t, dir, &wh) {
            return Ok(());
        }
        create_marker(dir, &wh).ctx(|| format!("create whiteout {:?}", child_path(ppath, &wh)))
    }

    /// Writes `.wh..wh..opq` into directory `rel` of branch `t`.
    pub(crate) fn make_opaque(&self, t: usize, rel: &Path) -> Result<()> {
        self.layers_changed();
        let dir = self
            .branches
            .get(t)
            .dir(rel)
            .ctx(|| format!("open {rel:?}"))?;
        create_marker(&dir, OsStr::new(OPAQUE_MARKER)).ctx(|| format!("make {rel:?} opaque"))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, false)
    }

    /// unlink and rmdir: remove the name from the writable branch holding it, then whiteout the
    /// name when a lower branch still shows it.
    pub(crate) fn remove(&self, parent: u64, name: &OsStr, want_dir: bool) -> Result<()> {
        let (ppath, mut view) = self.dir_view(parent)?;
        let found = self
            .resolve_child_raw(&ppath, &view, name)?
            .ok_or_else(|| Error::errno(libc::ENOENT))?;
        match (want_dir, found.is_dir()) {
            (true, false) => return Err(Error::errno(libc::ENOTDIR)),
            (false, true) => return Err(Error::errno(libc::EISDIR)),
            _ => {}
        }
        self.ensure_writable()?;
        let rel = child_path(&ppath, name);
        if want_dir
            && !self
                .merged_listing(&rel, &self.walk_view(&ppath, &view, name, &found.layers))?
                .is_empty()
        {
            return Err(Error::errno(libc::ENOTEMPTY));
        }
        let t = self.change_target(&found)?;
        // The whiteout's directory first, then the name's lock (see copy_up_to on lock order).
        if !view.has(t) {
            self.ensure_dirs(t, &ppath)?;
            view = self.dir_view(parent)?.1;
        }
        let _guard = self.path_locks.lock(&rel);
        let dir = self
            .branch_dir(&view, &ppath, t)
            .ctx(|| format!("open {ppath:?}"))?;
        let flag = if want_dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        let whiteout = if found.top() == t {
            // A name already in `t` is not copied anywhere, and the kernel holds the
            // directory's lock against other changes of it.
            if want_dir {
                self.remove_branch_dir(t, &dir, name, &rel)?;
            } else {
                nix::unistd::unlinkat(&dir, name, flag).ctx(|| format!("remove {rel:?}"))?;
            }
            self.file_goes(&found);
            if want_dir {
                self.dir_changed(self.inodes.child(parent, name));
            }
            self.shown_below(&ppath, &view, t, name)?
        } else {
            // It shows from a branch below `t`, which keeps it. A copy-up into `t` may have
            // finished while we waited for the lock: then that copy goes too.
            if stat_at(&dir, name)?.is_some() {
                if want_dir {
                    self.remove_branch_dir(t, &dir, name, &rel)?;
                } else {
                    nix::unistd::unlinkat(&dir, name, flag).ctx(|| format!("remove {rel:?}"))?;
                }
            }
            if want_dir {
                self.dir_changed(self.inodes.child(parent, name));
            }
            true
        };
        if whiteout {
            self.write_whiteout(t, &dir, &ppath, name)?;
        }
        // After every change: a count cached in between would be stale.
        self.names_changed();
        self.inodes.remove_name(parent, name);
        Ok(())
    }

    /// `found`, about to be removed from its top branch (unlink, rmdir, replaced by a rename):
    /// when that frees its branch inode (a directory, or a file's last link), a new file may
    /// get the same inode number and so the same node id. See [`InodeTable::mark_unlinked`].
    ///
    /// [`InodeTable::mark_unlinked`]: crate::inode::InodeTable::mark_unlinked
    fn file_goes(&self, found: &Found) {
        if found.is_dir() || found.st.st_nlink <= 1 {
            self.inodes.mark_unlinked(self.attr_of(&found.st).ino);
            self.inos.forget_copy(found.st.st_dev, found.st.st_ino);
        }
    }

    /// Removes directory `name` of `dir` in branch `t`, which the union shows empty: it holds
    /// nothing or only whiteouts and markers. One that holds some is moved into the branch's
    /// work directory and emptied there in the background (`crate::trash`), so the caller does
    /// not wait for an unlink per whiteout; without a work directory on the same file system,
    /// the whiteouts are removed here.
    fn remove_branch_dir(&self, t: usize, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<()> {
        match nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
            Err(nix::errno::Errno::ENOTEMPTY | nix::errno::Errno::EEXIST) => {}
            r => return r.ctx(|| format!("remove {rel:?}")),
        }
        if let Ok(work) = self.work_dir(t) {
            let tmp = self.tmp_name().into_os_string();
            if nix::fcntl::renameat(dir, name, work.as_ref(), tmp.as_os_str()).is_ok() {
                self.trash.discard(Arc::clone(work), tmp);
                return Ok(());
            }
        }
        clear_markers(dir, name).ctx(|| format!("clear whiteouts in {rel:?}"))?;
        nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir).ctx(|| format!("remove {rel:?}"))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        caller: Caller,
    ) -> Result<Entry> {
        let n = self.place_new_name(parent, name)?;
        sys::as_caller(caller.uid, caller.gid, || {
            nix::unistd::symlinkat(target, n.dir.as_fd(), name)
        })
        .ctx(|| format!("symlink {:?}", child_path(&n.ppath, name)))?;
        self.after_create(parent, &n, name, false)?;
        self.entry_in(parent, n.t, &n.dir, name)
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Entry> {
        let n = self.place_new_name(parent, name)?;
        let kind = SFlag::from_bits_truncate(mode & libc::S_IFMT);
        let perm =
            Mode::from_bits_truncate(self.creation_mode(&n.dir, mode, caller.umask) & 0o7777);
        sys::as_caller(caller.uid, caller.gid, || {
            nix::sys::stat::mknodat(n.dir.as_fd(), name, kind, perm, rdev)
        })
        .ctx(|| format!("mknod {:?}", child_path(&n.ppath, name)))?;
        self.after_create(parent, &n, name, false)?;
        self.entry_in(parent, n.t, &n.dir, name)
    }

    /// A hard link: the source is copied up (if needed), then linked inside its writable branch,
    /// so both names are one file there.
    pub fn link(&self, node: u64, newparent: u64, newname: &OsStr) -> Result<Entry> {
        let (path, found) = self.node(node)?;
        if found.is_dir() {
            return Err(Error::errno(libc::EPERM));
        }
        let (ppath, pview) = self.prepare_create(newparent, newname)?;
        // Both names in one writable branch, at or above the new name's directory (a lower
        // branch could hide the new name under a whiteout).
        let t = self
            .branches
            .topmost_rw_at_or_above(self.change_target(&found)?.min(pview.top()))
            .ok_or_else(|| Error::errno(libc::EROFS))?;
        self.copy_up_to(&path, &found, t, crate::copyup::Contents::All)?;
        self.ensure_dirs(t, &ppath)?;
        let (spath, sname) = split(&path);
        let branch = self.branches.get(t);
        let sdir = branch.dir(spath).ctx(|| format!("open {spath:?}"))?;
        // The copy-ups may have changed the directory's branches: its view as it is now.
        let (_, view) = self.dir_view(newparent)?;
        let ddir = self
            .branch_dir(&view, &ppath, t)
            .ctx(|| format!("open {ppath:?}"))?;
        nix::unistd::linkat(&sdir, sname, ddir.as_fd(), newname, AtFlags::empty())
            .ctx(|| format!("link {path:?} to {:?}", child_path(&ppath, newname)))?;
        let n = NewName {
            ppath,
            t,
            dir: ddir,
        };
        self.after_create(newparent, &n, newname, false)?;
        self.entry_in(newparent, t, &n.dir, newname)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        check_new_name(newname)?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 || (noreplace && exchange)
        {
            return Err(Error::errno(libc::EINVAL));
        }
        let (sp, spl) = self.dir_view(parent)?;
        let src = self
            .resolve_child(&sp, &spl, name)?
            .ok_or_else(|| Error::errno(libc::ENOENT))?;
        let (dp, dpl) = self.dir_view(newparent)?;
        let dst = self.resolve_child(&dp, &dpl, newname)?;
        let src_rel = child_path(&sp, name);
        let dst_rel = child_path(&dp, newname);
        if parent == newparent && name == newname {
            return Ok(());
        }
        if is_below(&dst_rel, &src_rel) {
            return Err(Error::errno(libc::EINVAL));
        }
        if exchange && dst.is_none() {
            return Err(Error::errno(libc::ENOENT));
        }
        if let Some(d) = &dst {
            if noreplace {
                return Err(Error::errno(libc::EEXIST));
            }
            if !exchange {
                match (src.is_dir(), d.is_dir()) {
                    (true, false) => return Err(Error::errno(libc::ENOTDIR)),
                    (false, true) => return Err(Error::errno(libc::EISDIR)),
                    (true, true)
                        if !self
                            .merged_listing(
                                &dst_rel,
                                &self.walk_view(&dp, &dpl, newname, &d.layers),
                            )?
                            .is_empty() =>
                    {
                        return Err(Error::errno(libc::ENOTEMPTY))
                    }
                    _ => {}
                }
                // Two names of one file: POSIX says do nothing.
                if !src.is_dir() && self.attr_of(&src.st).ino == self.attr_of(&d.st).ino {
                    return Ok(());
                }
            }
        }
        self.ensure_writable()?;
        // Both names must end in one writable branch, at or above wherever they show now.
        // And at or above the top branch of the target directory: a branch below it may hold a
        // whiteout or an opaque marker that would hide the new name.
        let mut t = self.change_target(&src)?;
        let limit = dst.as_ref().map_or(dpl.top(), |d| d.top()).min(dpl.top());
        if limit < t {
            t = self
                .branches
                .topmost_rw_at_or_above(limit)
                .ok_or_else(|| Error::errno(libc::EROFS))?;
        }
        self.materialize(&src_rel, &src, t)?;
        if exchange {
            if let Some(d) = &dst {
                self.materialize(&dst_rel, d, t)?;
            }
        }
        // (A directory that has `t` among its layers exists there: no walk to find out.)
        if !dpl.has(t) {
            self.ensure_dirs(t, &dp)?;
        }
        if !spl.has(t) {
            self.ensure_dirs(t, &sp)?;
        }
        // Copy-ups done, holding nothing; now the two names, in one sorted order.
        let _guards = self.path_locks.lock_all(&[&src_rel, &dst_rel]);
        let branch = self.branches.get(t);
        // The two directories as they are now (the copy-ups may have added `t` to them).
        let sdir = self
            .branch_dir(&self.dir_view(parent)?.1, &sp, t)
            .ctx(|| format!("open {sp:?}"))?;
        let ddir = self
            .branch_dir(&self.dir_view(newparent)?.1, &dp, t)
            .ctx(|| format!("open {dp:?}"))?;
        if !exchange {
            if let Some(d) = &dst {
                if d.is_dir() && d.top() == t {
                    // The target directory is empty in the union, but may hold whiteouts here.
                    clear_markers(&ddir, newname)
                        .ctx(|| format!("clear whiteouts in {dst_rel:?}"))?;
                }
            }
        }
        let rflags = if noreplace {
            RenameFlags::RENAME_NOREPLACE
        } else if exchange {
            RenameFlags::RENAME_EXCHANGE
        } else {
            RenameFlags::empty()
        };
        nix::fcntl::renameat2(&sdir, name, &ddir, newname, rflags).ctx(|| {
            format!(
                "rename {src_rel:?} to {dst_rel:?} in branch {}",
                branch.path.display()
            )
        })?;
        if src.is_dir() || dst.as_ref().is_some_and(|d| d.is_dir()) {
            self.layers_changed();
        }
        if let Some(d) = dst.as_ref().filter(|d| !exchange && d.top() == t) {
            self.file_goes(d);
        }
        if !exchange {
            remove_whiteout(&ddir, newname)?;
            // Both parents' branches as they are now (their copy-ups may have added `t`).
            let (_, dpl) = self.dir_view(newparent)?;
            let (_, spl) = self.dir_view(parent)?;
            if src.is_dir() {
                if let Some(f) = self.resolve_child(&dp, &dpl, newname)? {
                    if f.layers.branches.len() > 1 {
                        self.make_opaque(t, &dst_rel)?;
                    }
                }
            }
            if self.resolve_child(&sp, &spl, name)?.is_some() {
                self.make_whiteout(t, &sp, name)?;
            }
            self.inodes.rename((parent, name), (newparent, newname));
        } else {
            // Each directory now stands where the other was: where a lower branch has a
            // directory of that name, it must not merge in.
            for (p, pl_parent, nm, rel) in [
                (&dp, newparent, newname, &dst_rel),
                (&sp, parent, name, &src_rel),
            ] {
                let (_, pl) = self.dir_view(pl_parent)?;
                if let Some(f) = self.resolve_child(p, &pl, nm)? {
                    if f.is_dir() && f.layers.branches.len() > 1 {
                        self.make_opaque(t, rel)?;
                    }
                }
            }
            self.inodes.exchange((parent, name), (newparent, newname));
        }
        if src.is_dir() || dst.as_ref().is_some_and(|d| d.is_dir()) {
            // Again, now that the names moved: a directory view cached in between (with its
            // path) was made under the old names.
            self.layers_changed();
        }
        self.names_changed();
        Ok(())
    }

    /// Makes `rel` live wholly in branch `t`: a non-directory is copied up; a directory merged
    /// from several branches has its whole visible tree copied up and is then made opaque, so it
    /// can move as one directory of one branch (our answer to overlayfs' EXDEV).
    fn materialize(&self, rel: &Path, found: &Found, t: usize) -> Result<()> {
        let found = if found.top() == t {
            found.clone()
        } else {
            self.copy_up_to(rel, found, t, crate::copyup::Contents::All)?
        };
        if !found.is_dir() || found.layers.branches == [t] {
            return Ok(());
        }
        for e in self.merged_listing(rel, &DirView::bare(found.layers.clone()))? {
            let child_rel = rel.join(&e.name);
            let Some(child) = self.resolve(&child_rel)? else {
                continue;
            };
            if child.is_dir() || child.top() != t {
                self.materialize(&child_rel, &child, t)?;
            }
        }
        self.make_opaque(t, rel)
    }
}

/// True when `path` is `dir` or lies below it (compared as bytes: a deep path has thousands
/// of components).
fn is_below(path: &Path, dir: &Path) -> bool {
    let (p, d) = (path.as_os_str().as_bytes(), dir.as_os_str().as_bytes());
    p.starts_with(d) && (p.len() == d.len() || p[d.len()] == b'/')
}

/// Where a new name goes: its directory's merged path, the branch `t` and `t`'s directory.
pub(crate) struct NewName {
    pub ppath: PathBuf,
    pub t: usize,
    pub dir: Arc<OwnedFd>,
}

/// Names that may not be made through the mount: `.wh.*` (EPERM, as aufs), and over-long ones.
fn check_new_name(name: &OsStr) -> Result<()> {
    if whiteout::is_reserved(name) {
        return Err(Error::new(
            libc::EPERM,
            format!("{name:?}: names starting with .wh. are reserved"),
        ));
    }
    if name.as_bytes().len() > NAME_MAX {
        return Err(Error::errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

/// Creates an empty marker file (whiteout or opaque marker), owned by the daemon.
fn create_marker(dir: &OwnedFd, name: &OsStr) -> nix::Result<()> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
    )
    .map(drop)
}

/// Drops `.wh.NAME` from a branch directory, if there.
fn remove_whiteout(dir: &OwnedFd, name: &OsStr) -> Result<bool> {
    let wh = whiteout::whiteout_name(name);
    match nix::unistd::unlinkat(dir, wh.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) | Err(Errno::ENAMETOOLONG) => Ok(false),
        Err(e) => Err(e).ctx(|| format!("remove whiteout {wh:?}")),
    }
}

/// Empties a directory that the union shows as empty: only whiteouts and markers remain in it.
fn clear_markers(parent: &OwnedFd, name: &OsStr) -> Result<()> {
    let fd = sys::open_beneath(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let names: Vec<std::ffi::OsString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| !matches!(whiteout::classify(n), EntryKind::Plain))
        .collect();
    for n in names {
        crate::copyup::remove_path_at(d.as_fd(), Path::new(&n))?;
    }
    Ok(())
}
