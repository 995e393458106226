//! Copy-up: before the first change to something that lives only in a lower branch, copy it
//! (data, holes, owner, mode, xattrs, times) and its parent directories to the writable branch.
//! Each object is built under the branch's work directory and renamed into place, so a crash,
//! a kill or ENOSPC never leaves a half-copied file visible.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FileStat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, Whence};

use crate::error::{Context, Error, Result};
use crate::fs::{split, Found, Union};
use crate::sys;

impl Union {
    /// Makes sure `rel` lives in a writable branch (its own when it is already writable) and
    /// returns its new resolution.
    pub(crate) fn copy_up(&self, rel: &Path, found: &Found) -> Result<Found> {
        let target = self.change_target(found)?;
        self.copy_up_to(rel, found, target, Contents::All)
    }

    /// Copy-up for an open with O_TRUNC: everything but the data, which is about to go.
    pub(crate) fn copy_up_truncated(&self, rel: &Path, found: &Found) -> Result<Found> {
        let target = self.change_target(found)?;
        self.copy_up_to(rel, found, target, Contents::Empty)
    }

    /// Copies `rel` up into writable branch `target` (at or above where it shows now).
    ///
    /// Lock order: the parent chain is made first, holding no lock; then only `rel` itself is
    /// held while its copy is built. No caller holds a path lock when it gets here (rename and
    /// unlink take theirs after their copy-ups), so no thread holding a deeper path waits for a
    /// shallower one or the reverse.
    pub(crate) fn copy_up_to(
        &self,
        rel: &Path,
        found: &Found,
        target: usize,
        contents: Contents,
    ) -> Result<Found> {
        if found.top() == target {
            return Ok(found.clone());
        }
        let (parent, _) = split(rel);
        self.ensure_dirs(target, parent)?;
        let _guard = self.path_locks.lock(rel);
        // Another thread may have copied it while we waited.
        let cur = self
            .resolve(rel)?
            .ok_or_else(|| Error::new(libc::ENOENT, format!("{rel:?} vanished before copy-up")))?;
        if cur.top() == target {
            return Ok(cur);
        }
        if cur.is_dir() {
            self.ensure_dirs(target, rel)?;
        } else if self.in_lower_link_group(&cur) {
            let _group = self.path_locks.lock(&Self::group_lock_key(&cur));
            // Another name of the group may have brought this one up while we waited.
            let cur = self
                .resolve(rel)?
                .ok_or_else(|| Error::errno(libc::ENOENT))?;
            if cur.top() != target {
                let others = self.visible_group_names(rel, &cur)?;
                self.copy_object(target, rel, &cur, contents)?;
                self.link_group_up(target, rel, &others)?;
                self.names_changed();
            }
        } else {
            self.copy_object(target, rel, &cur, contents)?;
        }
        if !cur.is_dir() {
            self.redirect_open_readers(rel, &cur, target);
        }
        self.resolve(rel)?
            .ok_or_else(|| Error::new(libc::EIO, format!("{rel:?} lost in copy-up")))
    }

    /// Points the open handles of the file just copied up at the copy (opened the way each
    /// handle was), so they see what writers now write and write where readers read. Best
    /// effort: a handle that cannot be moved keeps the old file.
    fn redirect_open_readers(&self, rel: &Path, old: &Found, target: usize) {
        let node = self.inos.ino(old.st.st_dev, old.st.st_ino);
        let handles = self.handles.files_of(node);
        if handles.is_empty() {
            return;
        }
        let branch = self.branches.get(target);
        for h in handles {
            if let crate::handle::Handle::File(f) = &*h {
                if f.branch() == target {
                    continue;
                }
                let flags = f.flags & !(OFlag::O_TRUNC | OFlag::O_CREAT | OFlag::O_EXCL);
                if let Ok(fd) = branch.open_file(rel, flags, Mode::empty()) {
                    f.redirect(std::fs::File::from(fd), target);
                }
            }
        }
    }

    /// Makes directory `dir_rel` and its parents exist in branch `target`, each copied from the
    /// merged view with its own owner, mode, xattrs and times. Each missing directory is copied
    /// under its own path lock, held only while that one directory is made.
    ///
    /// One walk from the root, the union's directories and `target`'s side by side, each level
    /// opened beneath the one above: a chain thousands of levels deep is copied with work that
    /// grows with its depth, and no path longer than one name is ever opened.
    pub(crate) fn ensure_dirs(&self, target: usize, dir_rel: &Path) -> Result<()> {
        let branch = self.branches.get(target);
        if branch.dir(dir_rel).is_ok() {
            return Ok(());
        }
        let open_in = |dir: &OwnedFd, name: &OsStr| {
            sys::open_beneath(
                dir.as_fd(),
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
        };
        let mut view = self.root_view();
        let mut tdir = branch.root.try_clone().map_err(Error::from)?;
        let mut path = PathBuf::new();
        // The node the kernel knows for each level, as far down as it knows one.
        let mut node = Some(crate::inode::ROOT_ID);
        for comp in dir_rel.iter() {
            let child = path.join(comp);
            node = node.and_then(|n| self.inodes.child(n, comp));
            let mut found = self.resolve_child_raw(&path, &view, comp)?.ok_or_else(|| {
                Error::new(libc::ENOENT, format!("{child:?} vanished during copy-up"))
            })?;
            if !found.is_dir() {
                return Err(Error::new(
                    libc::ENOTDIR,
                    format!("{child:?} is not a directory"),
                ));
            }
            let next =
                match open_in(&tdir, comp) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => {
                        let _guard = self.path_locks.lock(&child);
                        match open_in(&tdir, comp) {
                            Ok(fd) => fd,
                            Err(Errno::ENOENT) => {
                                // Under the lock, as the union shows it now.
                                found = self.resolve_child_raw(&path, &view, comp)?.ok_or_else(
                                    || Error::new(libc::ENOENT, format!("{child:?} vanished")),
                                )?;
                                let src = self
                                    .branch_dir(&view, &path, found.top())
                                    .ctx(|| format!("open {path:?}"))?;
                                self.copy_object_at(
                                    target,
                                    &child,
                                    &found,
                                    &src,
                                    &tdir,
                                    Contents::All,
                                )?;
                                self.dir_changed(node);
                                found = self.resolve_child_raw(&path, &view, comp)?.ok_or_else(
                                    || Error::new(libc::ENOENT, format!("{child:?} vanished")),
                                )?;
                                open_in(&tdir, comp).ctx(|| {
                                    format!("open {child:?} in branch {}", branch.path.display())
                                })?
                            }
                            Err(e) => {
                                return Err(e).ctx(|| {
                                    format!("open {child:?} in branch {}", branch.path.display())
                                })
                            }
                        }
                    }
                    Err(e) => {
                        return Err(e)
                            .ctx(|| format!("open {child:?} in branch {}", branch.path.display()))
                    }
                };
            view = Arc::new(self.walk_view(&path, &view, comp, &found.layers));
            tdir = next;
            path = child;
        }
        Ok(())
    }

    /// Copies one object (file, symlink, special file, or a directory without its contents) of
    /// `found` into branch `target` at `rel`, through the work directory.
    fn copy_object(
        &self,
        target: usize,
        rel: &Path,
        found: &Found,
        contents: Contents,
    ) -> Result<()> {
        let dst_branch = self.branches.get(target);
        let (parent, _) = split(rel);
        let dst_dir = dst_branch
            .dir(parent)
            .ctx(|| format!("open {parent:?} in branch {}", dst_branch.path.display()))?;
        let src_branch = self.branches.get(found.top());
        let src_dir = src_branch
            .dir(parent)
            .ctx(|| format!("open {parent:?} in branch {}", src_branch.path.display()))?;
        self.copy_object_at(target, rel, found, &src_dir, &dst_dir, contents)
    }

    /// `copy_object` with the parent directory already open in the source branch
    /// (`src_dir`) and in `target` (`dst_dir`).
    fn copy_object_at(
        &self,
        target: usize,
        rel: &Path,
        found: &Found,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        contents: Contents,
    ) -> Result<()> {
        let dst_branch = self.branches.get(target);
        let (parent, name) = split(rel);
        let src_branch = self.branches.get(found.top());
        let work = self.work_dir(target)?;
        let tmp = self.tmp_name();
        let result = (|| -> Result<()> {
            build_copy(work, &tmp, src_dir, name, &found.st, contents).ctx(|| {
                format!(
                    "copy {rel:?} from branch {} up to branch {}",
                    src_branch.path.display(),
                    dst_branch.path.display()
                )
            })?;
            // A copy-up is not a change the user made: the parent keeps its times (as overlayfs).
            let parent_st = nix::sys::stat::fstat(dst_dir).ctx(|| format!("stat {parent:?}"))?;
            nix::fcntl::renameat2(work, &tmp, dst_dir, name, RenameFlags::RENAME_NOREPLACE)
                .ctx(|| format!("rename copy of {rel:?} into place"))?;
            restore_times(dst_dir, &parent_st).ctx(|| format!("restore times of {parent:?}"))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = remove_path_at(work.as_fd(), &tmp);
            return Err(e);
        }
        if let Some(st) = crate::branch::stat_at(dst_dir, name)? {
            let ino = self.inos.ino(found.st.st_dev, found.st.st_ino);
            self.inos.record_copy(st.st_dev, st.st_ino, ino);
        }
        Ok(())
    }
}

/// What of a regular file a copy-up copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contents {
    All,
    /// Metadata only: the file is being truncated to zero anyway.
    Empty,
}

/// Builds the copy of `src_dir/name` as `work/tmp`: the object, then owner, mode, xattrs and
/// times (in that order: chown clears setuid bits and file capabilities).
fn build_copy(
    work: &OwnedFd,
    tmp: &Path,
    src_dir: &OwnedFd,
    name: &OsStr,
    st: &FileStat,
    contents: Contents,
) -> Result<()> {
    let fmt = st.st_mode & libc::S_IFMT;
    match fmt {
        libc::S_IFREG => {
            let src = sys::open_beneath(
                src_dir.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .ctx(|| "open source")?;
            let dst = nix::fcntl::openat(
                work,
                tmp,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .ctx(|| "create copy")?;
            if contents == Contents::All {
                copy_data(&src, &dst, st.st_size as u64)?;
            }
        }
        libc::S_IFDIR => {
            nix::sys::stat::mkdirat(work, tmp, Mode::from_bits_truncate(0o700))
                .ctx(|| "mkdir copy")?;
        }
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(src_dir, name).ctx(|| "readlink source")?;
            nix::unistd::symlinkat(target.as_os_str(), work, tmp).ctx(|| "symlink copy")?;
        }
        _ => {
            let kind = SFlag::from_bits_truncate(fmt);
            nix::sys::stat::mknodat(work, tmp, kind, Mode::from_bits_truncate(0o600), st.st_rdev)
                .ctx(|| "mknod copy")?;
        }
    }
    copy_metadata(work, tmp, src_dir, name, st)
}

/// Owner, mode, xattrs and times of `src_dir/name` onto `dir/dst`.
pub(crate) fn copy_metadata(
    dir: &OwnedFd,
    dst: &Path,
    src_dir: &OwnedFd,
    name: &OsStr,
    st: &FileStat,
) -> Result<()> {
    let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    nix::unistd::fchownat(
        dir,
        dst,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(|| "chown copy")?;
    if !is_link {
        nix::sys::stat::fchmodat(
            dir,
            dst,
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .ctx(|| "chmod copy")?;
    }
    copy_xattrs(src_dir.as_fd(), name, dir.as_fd(), dst.as_os_str())?;
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    nix::sys::stat::utimensat(dir, dst, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .ctx(|| "set times of copy")?;
    Ok(())
}

/// Sets a directory's atime and mtime back to what `st` recorded.
fn restore_times(dir: &OwnedFd, st: &FileStat) -> Result<()> {
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    let fd = sys::open_beneath(
        dir.as_fd(),
        OsStr::new(""),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    nix::sys::stat::futimens(&fd, &atime, &mtime)?;
    Ok(())
}

/// xattrs that describe a lower layer to overlayfs, not the file: never copied.
fn is_layer_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

fn copy_xattrs(
    src_dir: BorrowedFd<'_>,
    name: &OsStr,
    dst_dir: BorrowedFd<'_>,
    dst: &OsStr,
) -> Result<()> {
    let list = match sys::listxattr_at(src_dir, name) {
        Ok(l) => l,
        Err(Errno::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e).ctx(|| "list xattrs of source"),
    };
    for attr in list.split(|b| *b == 0).filter(|a| !a.is_empty()) {
        if is_layer_xattr(attr) {
            continue;
        }
        let attr = OsStr::from_bytes(attr);
        let value = match sys::getxattr_at(src_dir, name, attr) {
            Ok(v) => v,
            Err(Errno::ENODATA) => continue,
            Err(e) => return Err(e).ctx(|| format!("read xattr {attr:?}")),
        };
        match sys::setxattr_at(dst_dir, dst, attr, &value, 0) {
            Ok(()) => {}
            // The upper filesystem cannot hold this xattr (or not on this file type): the copy
            // is still the best the branch can store.
            Err(Errno::ENOTSUP | Errno::EPERM) => {}
            Err(e) => return Err(e).ctx(|| format!("write xattr {attr:?}")),
        }
    }
    Ok(())
}

/// Copies `size` bytes, keeping holes: FICLONE when the filesystem shares extents, else
/// `copy_file_range` over the data segments that SEEK_DATA/SEEK_HOLE report, else read/write.
pub(crate) fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64) -> Result<()> {
    if size == 0 {
        return Ok(());
    }
    if sys::ficlone(dst.as_fd(), src.as_fd()).is_ok() {
        return Ok(());
    }
    let size = size as i64;
    let mut pos: i64 = 0;
    while pos < size {
        let data = match nix::unistd::lseek(src, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => break, // only a hole remains
            Err(Errno::EINVAL) => pos,  // no SEEK_DATA here: everything is data
            Err(e) => return Err(e).ctx(|| "seek data"),
        };
        let hole = match nix::unistd::lseek(src, data, Whence::SeekHole) {
            Ok(h) => h.min(size),
            Err(_) => size,
        };
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    nix::unistd::ftruncate(dst, size).ctx(|| "set size of copy")?;
    Ok(())
}

fn copy_range(src: &OwnedFd, dst: &OwnedFd, start: i64, len: i64) -> Result<()> {
    let mut off_in = start;
    let mut off_out = start;
    let end = start + len;
    while off_in < end {
        stop_if_closing()?;
        // In steps that take well under a second, so that an unmount stops a big copy soon.
        let want = (end - off_in).min(64 << 20) as usize;
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break, // source shrank under us
            Ok(_) => {}
            Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                return copy_range_rw(src, dst, off_in, end - off_in);
            }
            Err(e) => return Err(e).ctx(|| "copy_file_range"),
        }
    }
    Ok(())
}

fn copy_range_rw(src: &OwnedFd, dst: &OwnedFd, start: i64, len: i64) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = start;
    let end = start + len;
    while off < end {
        stop_if_closing()?;
        let want = ((end - off) as usize).min(buf.len());
        let n = nix::sys::uio::pread(src, &mut buf[..want], off).ctx(|| "read source")?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += nix::sys::uio::pwrite(dst, &buf[done..n], off + done as i64)
                .ctx(|| "write copy")?;
        }
        off += n as i64;
    }
    Ok(())
}

/// A copy cut short because the session ended (the mount is gone: nobody waits for it).
fn stop_if_closing() -> Result<()> {
    if crate::shutdown::closing() {
        return Err(Error::new(
            libc::ECONNABORTED,
            "copy-up stopped: the FUSE session ended",
        ));
    }
    Ok(())
}

/// Removes `path` (a file or a whole tree) below `dir`, never following symlinks.
pub(crate) fn remove_path_at(dir: BorrowedFd<'_>, path: &Path) -> Result<()> {
    match nix::unistd::unlinkat(dir, path, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e).ctx(|| format!("unlink {path:?}")),
    }
    let sub = sys::open_beneath(
        dir,
        path.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .ctx(|| format!("open {path:?}"))?;
    let mut d = nix::dir::Dir::from_fd(sub).ctx(|| format!("read {path:?}"))?;
    let names: Vec<OsString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    for n in names {
        remove_path_at(d.as_fd(), Path::new(&n))?;
    }
    match nix::unistd::unlinkat(dir, path, nix::unistd::UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).ctx(|| format!("rmdir {path:?}")),
    }
}

/// `remove_path_at` for an entry of an open `Dir`.
pub(crate) fn remove_tree_at(dir: &nix::dir::Dir, name: &OsStr) -> Result<()> {
    remove_path_at(dir.as_fd(), Path::new(name))
}

// Hardlink groups. Names that are hardlinks of each other in a read-only branch must stay one
// file once one of them is changed (aufs keeps this with pseudo-links, overlayfs with
// `index=on`). Here the first copy-up of such a file copies the whole group: the data once, then
// a hardlink in the writable branch for every other name of the group that the union still
// shows there. The writable branch then holds the group as real hardlinks, so it stays one file
// after a remount, and a commit or squash of the branch keeps the links.
impl Union {
    /// True when `found` is a non-directory with several links in a branch below the top one
    /// (where a name of its group may be hidden, and from where it may be copied up).
    fn in_lower_link_group(&self, found: &Found) -> bool {
        found.st.st_mode & libc::S_IFMT != libc::S_IFDIR && found.st.st_nlink > 1 && found.top() > 0
    }

    /// True when `found`'s link count can be given without walking its branch: it is not in a
    /// lower link group, or its count or its branch's groups are known already.
    pub(crate) fn link_count_known(&self, found: &Found) -> bool {
        if !self.in_lower_link_group(found) {
            return true;
        }
        let gen = self.names_gen.load(std::sync::atomic::Ordering::Acquire);
        if self
            .link_groups
            .cached_count((found.top(), found.st.st_ino), gen)
            .is_some()
        {
            return true;
        }
        let branch = self.branches.get(found.top());
        self.link_groups
            .is_walked(found.top(), branch.writable().then_some(gen))
    }

    /// The names of `found`'s link group in its branch. A writable branch changes through the
    /// union, so its groups are walked again after names changed.
    fn group_names(&self, found: &Found) -> Vec<PathBuf> {
        let branch = self.branches.get(found.top());
        let gen = branch
            .writable()
            .then(|| self.names_gen.load(std::sync::atomic::Ordering::Acquire));
        self.link_groups
            .names(found.top(), &branch.root, found.st.st_ino, gen)
    }

    /// The other names of `found`'s link group that the union shows from the same branch file.
    fn visible_group_names(&self, rel: &Path, found: &Found) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for name in self.group_names(found) {
            if name == rel {
                continue;
            }
            if let Some(f) = self.resolve_if_shown(&name)? {
                if f.top() == found.top()
                    && f.st.st_ino == found.st.st_ino
                    && f.st.st_dev == found.st.st_dev
                {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    /// Sets the link count of a lower hardlinked file to the number of its names the union
    /// shows (a name hidden by an upper file, a whiteout or an opaque directory is not one).
    pub(crate) fn count_visible_links(&self, found: &mut Found) -> Result<()> {
        if !self.in_lower_link_group(found) {
            return Ok(());
        }
        let key = (found.top(), found.st.st_ino);
        let gen = self.names_gen.load(std::sync::atomic::Ordering::Acquire);
        if let Some(n) = self.link_groups.cached_count(key, gen) {
            found.st.st_nlink = n as _;
            return Ok(());
        }
        let names = self.group_names(found);
        // Linked only outside this branch (a `cp -al` layer store, an ostree checkout, a
        // deduplicating pull): the one name here is the one being asked about, shown. No
        // resolution of it, and nothing to cache (it holds whatever the names do).
        if names.len() <= 1 {
            found.st.st_nlink = 1;
            return Ok(());
        }
        let mut visible = 0u64;
        for name in names {
            if let Some(f) = self.resolve_if_shown(&name)? {
                if f.top() == found.top()
                    && f.st.st_ino == found.st.st_ino
                    && f.st.st_dev == found.st.st_dev
                {
                    visible += 1;
                }
            }
        }
        let visible = visible.max(1);
        self.link_groups.cache_count(key, gen, visible);
        found.st.st_nlink = visible as _;
        Ok(())
    }

    /// After `rel` was copied into `target`: links the other visible names of its lower link
    /// group to the copy. Called holding the group's lock.
    fn link_group_up(&self, target: usize, rel: &Path, others: &[PathBuf]) -> Result<()> {
        let branch = self.branches.get(target);
        let (parent, name) = split(rel);
        let src_dir = branch.dir(parent).ctx(|| format!("open {parent:?}"))?;
        for other in others {
            let (oparent, oname) = split(other);
            self.ensure_dirs(target, oparent)?;
            let dir = branch.dir(oparent).ctx(|| format!("open {oparent:?}"))?;
            let parent_st = nix::sys::stat::fstat(&dir).ctx(|| format!("stat {oparent:?}"))?;
            match nix::unistd::linkat(&src_dir, name, &dir, oname, AtFlags::empty()) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e).ctx(|| format!("link {other:?} to the copy of {rel:?}")),
            }
            restore_times(&dir, &parent_st).ctx(|| format!("restore times of {oparent:?}"))?;
        }
        Ok(())
    }

    /// Resolves a name of a link group; a name below something that is no longer a directory
    /// is simply not shown.
    fn resolve_if_shown(&self, rel: &Path) -> Result<Option<Found>> {
        match self.resolve(rel) {
            Err(e) if e.is(libc::ENOTDIR) => Ok(None),
            other => other,
        }
    }

    /// The lock that serialises copy-ups of one lower link group (a name no merged path has).
    fn group_lock_key(found: &Found) -> PathBuf {
        PathBuf::from(format!(
            "/link-group/{}/{}",
            found.st.st_dev, found.st.st_ino
        ))
    }
}
