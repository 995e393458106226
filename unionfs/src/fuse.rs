//! The `fuser::Filesystem` adapter: each callback is one call into the union core and one
//! reply. The only file that knows `Reply*`.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fuser::BackingId;
use nix::sys::stat::FileStat;

use crate::error::Error;
use crate::fs::attr::{SetAttr, SetTime};
use crate::fs::{Attr, Caller, Entry, Union};
use crate::iomode::{Choice, IoModes};
use crate::listing_advisor::ListingAdvisor;
use crate::stats::{Op, Stats};

/// How long the kernel may cache entries and attributes when a read-only branch may change
/// behind the mount's back (`ro`): this bounds how stale the view can get.
const SHORT_TTL: Duration = Duration::from_secs(1);
/// ... and when every change goes through this daemon (branches `rw` or `rr` only): the daemon
/// answers each change with fresh attributes, so the kernel may keep what it has.
const LONG_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct UnionFuse {
    core: Union,
    ttl: Duration,
    /// The kernel agreed to FUSE passthrough at init.
    passthrough: AtomicBool,
    /// Per node with open handles: passthrough (and its backing file) or cached.
    io: IoModes<BackingId>,
    /// Requests served, per type (read out by `unionfs stats`).
    stats: Arc<Stats>,
    /// Whether a listing's first chunk carries attributes.
    listing: ListingAdvisor,
}

impl UnionFuse {
    pub fn new(core: Union, stats: Arc<Stats>) -> UnionFuse {
        let ttl = if core.changes_only_through_us() {
            LONG_TTL
        } else {
            SHORT_TTL
        };
        UnionFuse {
            core,
            ttl,
            passthrough: AtomicBool::new(false),
            io: IoModes::default(),
            stats,
            listing: ListingAdvisor::default(),
        }
    }

    /// A listing's first chunk without attributes (see [`crate::listing_advisor`]): what a
    /// plain READDIR would send, in READDIRPLUS's format. Nothing is stat'ed or registered;
    /// the kernel looks up what it needs.
    fn names_only(
        &self,
        dir: u64,
        entries: &[crate::handle::DirEntry],
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut non_dirs = 0;
        for (i, e) in entries.iter().enumerate() {
            if reply.add_name_only(
                INodeNo(e.ino),
                (i + 1) as u64,
                kind_of_dtype(e.dtype),
                &e.name,
            ) {
                break;
            }
            if e.dtype != libc::DT_DIR {
                non_dirs += 1;
            }
        }
        self.listing.gave_names_only(dir, non_dirs);
        reply.ok();
    }

    /// Chooses how handle `fh` is served (see [`crate::iomode`]): None means through the
    /// daemon, with the flags of `cached_flags`.
    fn backing_for(
        &self,
        node: u64,
        fh: u64,
        open_backing: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let (file, writable) = self.core.handle_file(node, fh)?;
        let st = nix::sys::stat::fstat(&file).ok()?;
        let choice = self.io.open(node, fh, (st.st_dev, st.st_ino), writable, || {
            open_backing(&file)
                .map_err(|e| tracing::debug!(error = %e, "passthrough refused; serving through the daemon"))
                .ok()
        });
        match choice {
            Choice::Passthrough(id) => Some(id),
            Choice::Cached => None,
        }
    }

    /// Open flags of a handle served through the daemon: keep the page cache across opens when
    /// nobody else changes the branches (every write goes through this mount's inodes).
    fn cached_flags(&self) -> FopenFlags {
        if self.ttl == LONG_TTL {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        umask: 0,
    }
}

/// The caller of a call that creates, with its umask.
fn creator(req: &Request, umask: u32) -> Caller {
    Caller {
        umask,
        ..caller(req)
    }
}

fn errno(stats: &Stats, op: Op, e: &Error) -> Errno {
    stats.error(op);
    let op = op.name();
    match e.code() {
        libc::ENOENT
        | libc::EEXIST
        | libc::ENOTEMPTY
        | libc::ENODATA
        | libc::ENOTDIR
        | libc::EISDIR => {
            tracing::trace!(op, error = %e)
        }
        libc::EIO => tracing::warn!(op, error = %e),
        _ => tracing::debug!(op, error = %e),
    }
    Errno::from_i32(e.code())
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH - Duration::new((-secs) as u64, 0) + Duration::from_nanos(nsecs as u64)
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dtype(d: u8) -> FileType {
    match d {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    let st: &FileStat = &a.st;
    FileAttr {
        ino: INodeNo(a.ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The SELinux label's name: see [`UnionFuse::getxattr`].
const SELINUX_XATTR: &str = "security.selinux";

/// The attributes of a negative entry: node id 0 is what makes it one.
fn absent() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn reply_entry(
    stats: &Stats,
    reply: ReplyEntry,
    ttl: &Duration,
    op: Op,
    r: crate::error::Result<Entry>,
) {
    match r {
        Ok(e) => {
            // fuser sends attr.ino as the node id too: the union inode number is both.
            reply.entry(ttl, &file_attr(&e.attr), Generation(e.generation));
        }
        Err(e) => reply.error(errno(stats, op, &e)),
    }
}

fn reply_empty(stats: &Stats, reply: ReplyEmpty, op: Op, r: crate::error::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(stats, op, &e)),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    })
}

impl Filesystem for UnionFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Lookups and readdirs in one directory may run in parallel: the core takes no
        // directory-wide state for them.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // open(O_TRUNC) arrives as one request, so a copy-up for it skips the doomed data.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Listing a directory also returns each entry's attributes (one request, not one per
        // entry); the kernel decides when that pays (`ls -l` yes, `find` no).
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
        );
        // The kernel enforces and caches POSIX ACLs (of lower files too); the umask is then
        // ours to apply (see `Union::creation_mode`).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_POSIX_ACL);
        // The kernel keeps a symlink's target in the page cache: one READLINK per symlink, not
        // one per path walk through it (a compiler's include path, `/lib64` and the `.so`
        // links a loader follows: 22,000 READLINKs in a `make -j4` of 300 files). A target
        // never changes in place and a copy-up keeps it; a node id that a new symlink reuses
        // comes with another generation (`Union::generation_of`), so the kernel drops the old
        // inode and its cache. Only when every change goes through us: a symlink of a `ro`
        // branch replaced from outside must be seen within SHORT_TTL, and nothing would drop
        // a cached target of an inode the kernel keeps.
        if self.ttl == LONG_TTL {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        }
        // Data moves between the application and the branch file without the daemon (kernel
        // 6.9+, CAP_SYS_ADMIN). Stack depth 1: our branches are plain filesystems.
        if config
            .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
            .is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.core.cleanup();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.stats.start(Op::Lookup);
        match self.core.lookup(parent.0, name) {
            // An absent name is answered as an entry with node id 0 and our entry timeout: the
            // kernel keeps a negative dentry for that long, so the next open, stat or create of
            // the name (a compiler's include path, Python's import path, a create after its
            // O_EXCL probe) skips the round trip. Creating the name through the mount replaces
            // that dentry; a `ro` branch that gains it behind our back is seen within SHORT_TTL.
            Err(e) if e.code() == libc::ENOENT => {
                self.stats.error(Op::Lookup);
                reply.entry_with_ttls(&Duration::ZERO, &self.ttl, &absent(), Generation(0));
            }
            r => {
                if matches!(&r, Ok(e) if e.attr.st.st_mode & libc::S_IFMT != libc::S_IFDIR) {
                    self.listing.looked_up(parent.0);
                }
                reply_entry(&self.stats, reply, &self.ttl, Op::Lookup, r)
            }
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // Counted per node: fuser 0.18 keeps BATCH_FORGET's type private and splits it.
        let _t = self.stats.start(Op::Forget);
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.stats.start(Op::Getattr);
        match self.core.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&self.stats, Op::Getattr, &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _t = self.stats.start(Op::Setattr);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        match self.core.setattr(ino.0, fh.map(|f| f.0), set) {
            Ok(a) => reply.attr(&self.ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&self.stats, Op::Setattr, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.stats.start(Op::Readlink);
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(errno(&self.stats, Op::Readlink, &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.stats.start(Op::Mknod);
        let who = creator(req, umask);
        reply_entry(
            &self.stats,
            reply,
            &self.ttl,
            Op::Mknod,
            self.core.mknod(parent.0, name, mode, rdev as u64, who),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.stats.start(Op::Mkdir);
        let who = creator(req, umask);
        reply_entry(
            &self.stats,
            reply,
            &self.ttl,
            Op::Mkdir,
            self.core.mkdir(parent.0, name, mode, who),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.stats.start(Op::Unlink);
        reply_empty(
            &self.stats,
            reply,
            Op::Unlink,
            self.core.unlink(parent.0, name),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.stats.start(Op::Rmdir);
        reply_empty(
            &self.stats,
            reply,
            Op::Rmdir,
            self.core.rmdir(parent.0, name),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _t = self.stats.start(Op::Symlink);
        reply_entry(
            &self.stats,
            reply,
            &self.ttl,
            Op::Symlink,
            self.core.symlink(parent.0, link_name, target, caller(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Rename);
        match self
            .core
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&self.stats, Op::Rename, &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.stats.start(Op::Link);
        reply_entry(
            &self.stats,
            reply,
            &self.ttl,
            Op::Link,
            self.core.link(ino.0, newparent.0, newname),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.stats.start(Op::Open);
        match self.core.open(ino.0, flags.0) {
            Ok(fh) => match self.backing_for(ino.0, fh, |f| reply.open_backing(f)) {
                Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id),
                None => reply.opened(FileHandle(fh), self.cached_flags()),
            },
            Err(e) => reply.error(errno(&self.stats, Op::Open, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _t = self.stats.start(Op::Read);
        match self.core.read(ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&self.stats, Op::Read, &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.stats.start(Op::Write);
        match self.core.write(ino.0, fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&self.stats, Op::Write, &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Flush);
        // Nothing to do at close (data goes straight to the branch file, and the kernel keeps
        // POSIX locks itself). ENOSYS tells the kernel so once: it then stops sending FLUSH,
        // one round trip fewer for every close.
        self.stats.error(Op::Flush);
        reply.error(Errno::from_i32(libc::ENOSYS));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Release);
        self.io.release(ino.0, fh.0);
        self.core.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Fsync);
        reply_empty(
            &self.stats,
            reply,
            Op::Fsync,
            self.core.fsync(ino.0, fh.0, datasync),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.stats.start(Op::Opendir);
        // When nothing changes the branches behind our back, the kernel may keep a directory's
        // listing across opens; it drops it when the directory changes through the mount.
        let flags = if self.ttl == LONG_TTL {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(errno(&self.stats, Op::Opendir, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _t = self.stats.start(Op::Readdir);
        match self.core.readdir(ino.0, fh.0, offset) {
            Ok(entries) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(
                        INodeNo(e.ino),
                        (i + 1) as u64,
                        kind_of_dtype(e.dtype),
                        &e.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(&self.stats, Op::Readdir, &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _t = self.stats.start(Op::Readdirplus);
        let entries = match self.core.readdir(ino.0, fh.0, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(errno(&self.stats, Op::Readdirplus, &e)),
        };
        // A branch that does not report entry types (DT_UNKNOWN) needs the stats to tell a
        // directory from a file.
        if offset == 0
            && !entries.iter().any(|e| e.dtype == libc::DT_UNKNOWN)
            && !self.listing.attributes_for_first_chunk()
        {
            return self.names_only(ino.0, &entries, reply);
        }
        // A reply holds what fits the kernel's buffer (a getdents-sized one: about 50 entries
        // with their attributes in 8 KiB). Stat in batches, so that few stats are made for
        // entries that no longer fit (the next request, at their offset, stats them again).
        const BATCH: usize = 32;
        let start = (offset as usize).min(entries.len());
        'batches: for chunk_start in (start..entries.len()).step_by(BATCH) {
            let chunk = &entries[chunk_start..(chunk_start + BATCH).min(entries.len())];
            let attrs = match self.core.listed_attrs(ino.0, chunk) {
                Ok(a) => a,
                Err(e) => return reply.error(errno(&self.stats, Op::Readdirplus, &e)),
            };
            for (j, (e, listed)) in chunk.iter().zip(attrs).enumerate() {
                // Gone since the listing was taken: leave it out.
                let Some(listed) = listed else { continue };
                let attr = listed.attr;
                // An unsettled link count is sent with no validity at all: the kernel learns
                // the name and node, and asks again (LOOKUP) before anyone reads the count.
                let ttl = if listed.settled {
                    &self.ttl
                } else {
                    &Duration::ZERO
                };
                // `.` and `..` are not lookups; the kernel ignores their attributes.
                let node = if e.branch.is_some() { attr.ino } else { e.ino };
                let next_offset = (chunk_start + j + 1) as u64;
                if reply.add(
                    INodeNo(node),
                    next_offset,
                    &e.name,
                    ttl,
                    &file_attr(&attr),
                    Generation(listed.generation),
                ) {
                    break 'batches;
                }
                if e.branch.is_some() {
                    self.core.remember(ino.0, &e.name, attr.ino);
                }
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Releasedir);
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Fsyncdir);
        reply_empty(&self.stats, reply, Op::Fsyncdir, self.core.fsyncdir(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.stats.start(Op::Statfs);
        match self.core.statfs() {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                255,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(errno(&self.stats, Op::Statfs, &e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Setxattr);
        reply_empty(
            &self.stats,
            reply,
            Op::Setxattr,
            self.core.setxattr(ino.0, name, value, flags),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.stats.start(Op::Getxattr);
        match self.core.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(reply, size, &v),
            // `ls -l` asks every file for its SELinux label, and the kernel caches no xattr
            // answer: one round trip per file, every time (the whole gap to overlayfs on a
            // warm `ls -lR`). A request reaches us only when no LSM owns the name (an SELinux
            // kernel answers `security.selinux` itself, from the inode's in-core label), so
            // labels are not supported here: saying so (EOPNOTSUPP, not ENODATA) for a file
            // that has none lets ls (`getfilecon_cache`), cp and tar stop asking for the rest
            // of the mount. A label a branch file does carry is still returned, and setting
            // one works. ENOSYS would stop the kernel from sending any getxattr at all, file
            // capabilities included, so it is not an option.
            Err(e) if e.code() == libc::ENODATA && name == SELINUX_XATTR => {
                self.stats.error(Op::Getxattr);
                reply.error(Errno::from_i32(libc::EOPNOTSUPP));
            }
            Err(e) => reply.error(errno(&self.stats, Op::Getxattr, &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.stats.start(Op::Listxattr);
        match self.core.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(errno(&self.stats, Op::Listxattr, &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.stats.start(Op::Removexattr);
        reply_empty(
            &self.stats,
            reply,
            Op::Removexattr,
            self.core.removexattr(ino.0, name),
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _t = self.stats.start(Op::Access);
        reply_empty(
            &self.stats,
            reply,
            Op::Access,
            self.core.access(ino.0, mask.bits(), caller(req)),
        );
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.stats.start(Op::Create);
        let who = creator(req, umask);
        match self.core.create(parent.0, name, mode, flags, who) {
            Ok((e, fh)) => {
                let attr = file_attr(&e.attr);
                match self.backing_for(e.node, fh, |f| reply.open_backing(f)) {
                    Some(id) => reply.created_passthrough(
                        &self.ttl,
                        &attr,
                        Generation(e.generation),
                        FileHandle(fh),
                        FopenFlags::empty(),
                        &id,
                    ),
                    None => reply.created(
                        &self.ttl,
                        &attr,
                        Generation(e.generation),
                        FileHandle(fh),
                        self.cached_flags(),
                    ),
                }
            }
            Err(e) => reply.error(errno(&self.stats, Op::Create, &e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.stats.start(Op::Fallocate);
        reply_empty(
            &self.stats,
            reply,
            Op::Fallocate,
            self.core.fallocate(ino.0, fh.0, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _t = self.stats.start(Op::Lseek);
        match self.core.lseek(ino.0, fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(&self.stats, Op::Lseek, &e)),
        }
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; a too-small buffer is ERANGE.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    /// SEMANTICS.md must say what every implemented operation does.
    #[test]
    fn semantics_doc_covers_every_operation() {
        let doc = include_str!("../SEMANTICS.md");
        let src = include_str!("fuse.rs");
        let impl_start = src
            .find("impl Filesystem for UnionFuse")
            .expect("impl block");
        let impl_len = src[impl_start..].find("\n}\n").expect("end of impl block");
        let mut missing = Vec::new();
        for line in src[impl_start..impl_start + impl_len].lines() {
            let line = line.trim_start();
            if let Some(rest) = line.strip_prefix("fn ") {
                let op = rest.split('(').next().unwrap_or("");
                if op == "init" {
                    continue;
                }
                let in_table = doc.lines().any(|l| {
                    l.starts_with('|')
                        && l.split('|')
                            .nth(1)
                            .is_some_and(|cell| cell.split(',').any(|c| c.trim() == op))
                });
                if !in_table {
                    missing.push(op.to_string());
                }
            }
        }
        assert!(
            missing.is_empty(),
            "SEMANTICS.md lacks rows for {missing:?}"
        );
    }
}
