//! Thin wrappers over the `*at()` syscalls that nix does not cover safely: xattrs by name
//! inside a held directory, FICLONE, and the per-thread filesystem identity. The one module of
//! this crate with unsafe code.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Resolution flags for every path the daemon opens inside a branch: stay beneath the branch
/// root and follow no symlink at all, so a symlink in a layer is never a path for the host.
pub fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Longest relative path handed to one `openat2` call: below PATH_MAX (4096 with its NUL).
const PATH_CHUNK: usize = 4000;

/// `openat2(dir, rel, flags, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`. An empty `rel` opens `.`.
///
/// A path longer than PATH_MAX (a union can be deeper than that: the kernel hands the daemon
/// one name at a time) is walked in pieces of at most `PATH_CHUNK` bytes cut at a slash, each
/// opened beneath the directory the previous piece reached, with the same flags: still no
/// symlink followed anywhere, still never above `dir`.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &OsStr,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let mut rest = rel.as_bytes();
    let mut at: Option<OwnedFd> = None;
    while rest.len() > PATH_CHUNK {
        let cut = rest[..=PATH_CHUNK]
            .iter()
            .rposition(|b| *b == b'/')
            .ok_or(Errno::ENAMETOOLONG)?;
        let base = at.as_ref().map_or(dir, |fd| fd.as_fd());
        let next = open_one_beneath(
            base,
            OsStr::from_bytes(&rest[..cut]),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )?;
        at = Some(next);
        rest = &rest[cut + 1..];
    }
    let base = at.as_ref().map_or(dir, |fd| fd.as_fd());
    open_one_beneath(base, OsStr::from_bytes(rest), flags, mode)
}

fn open_one_beneath(
    dir: BorrowedFd<'_>,
    rel: &OsStr,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let rel = if rel.is_empty() { OsStr::new(".") } else { rel };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(beneath());
    nix::fcntl::openat2(dir, rel, how)
}

/// `/proc/self/fd/DIR/NAME`: names one entry of a held directory for the `l*xattr` calls, which
/// have no `*at()` form. `NAME` is one component (never a slash) and the `l` variants do not
/// follow a final symlink, so this stays inside the directory. An empty `NAME` means the
/// directory itself, reached by following its magic link (the non-`l` variants).
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<CString> {
    if name.as_bytes().contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| Errno::EINVAL)
}

fn c_name(name: &OsStr) -> nix::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Size-probing loop shared by getxattr and listxattr: ask for the size, then fetch, retrying
/// when the value grew in between (ERANGE).
fn read_sized(mut call: impl FnMut(&mut [u8]) -> isize) -> nix::Result<Vec<u8>> {
    loop {
        let size = call(&mut []);
        if size < 0 {
            return Err(Errno::last());
        }
        let mut buf = vec![0u8; size as usize];
        let got = call(&mut buf);
        if got < 0 {
            let e = Errno::last();
            if e == Errno::ERANGE {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

/// `getxattrat(2)` and `listxattrat(2)` (Linux 6.13; one number on every architecture): the
/// `*at()` forms that read an entry of a held directory without a `/proc` path walk.
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Set once the kernel answered ENOSYS to the `*xattrat` calls: use `/proc` paths from then on.
static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

/// `struct xattr_args` of `getxattrat(2)`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// Entry `name` of a directory for the `*xattrat` calls, which never follow a final symlink.
/// An empty name is the directory itself, as `.` (`AT_EMPTY_PATH` would refuse an `O_PATH`
/// descriptor with EBADF).
fn xattrat_path(name: &OsStr) -> nix::Result<CString> {
    c_name(if name.is_empty() {
        OsStr::new(".")
    } else {
        name
    })
}

const XATTRAT_FLAGS: libc::c_uint = libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;

/// getxattrat of entry `name` of `dir`; None when the kernel lacks the call.
fn getxattrat(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> Option<nix::Result<Vec<u8>>> {
    if NO_XATTRAT.load(Ordering::Relaxed) {
        return None;
    }
    if name.as_bytes().contains(&b'/') {
        return Some(Err(Errno::EINVAL));
    }
    let (path, attr) = match (xattrat_path(name), c_name(attr)) {
        (Ok(p), Ok(a)) => (p, a),
        _ => return Some(Err(Errno::EINVAL)),
    };
    let flags = XATTRAT_FLAGS;
    let r = read_sized(|buf| {
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len() as u32,
            flags: 0,
        };
        // SAFETY: path and attr are NUL-terminated CStrings alive for the call; args points
        // at a valid xattr_args whose value/size describe buf, a writable slice alive for the
        // call (size 0 asks for the size only).
        unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                flags,
                attr.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            ) as isize
        }
    });
    if r == Err(Errno::ENOSYS) {
        NO_XATTRAT.store(true, Ordering::Relaxed);
        return None;
    }
    Some(r)
}

/// listxattrat of entry `name` of `dir`; None when the kernel lacks the call.
fn listxattrat(dir: BorrowedFd<'_>, name: &OsStr) -> Option<nix::Result<Vec<u8>>> {
    if NO_XATTRAT.load(Ordering::Relaxed) {
        return None;
    }
    if name.as_bytes().contains(&b'/') {
        return Some(Err(Errno::EINVAL));
    }
    let Ok(path) = xattrat_path(name) else {
        return Some(Err(Errno::EINVAL));
    };
    let flags = XATTRAT_FLAGS;
    let r = read_sized(|buf| {
        // SAFETY: path is a NUL-terminated CString alive for the call; buf is a valid
        // writable slice of buf.len() bytes.
        unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                path.as_ptr(),
                flags,
                buf.as_mut_ptr(),
                buf.len(),
            ) as isize
        }
    });
    if r == Err(Errno::ENOSYS) {
        NO_XATTRAT.store(true, Ordering::Relaxed);
        return None;
    }
    Some(r)
}

/// `lgetxattr` of entry `name` (empty: the directory itself) of `dir`.
pub fn getxattr_at(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> nix::Result<Vec<u8>> {
    if let Some(r) = getxattrat(dir, name, attr) {
        return r;
    }
    let path = proc_path(dir, name)?;
    let attr = c_name(attr)?;
    // The directory itself is reached through its /proc magic link, which must be followed.
    let get = if name.is_empty() {
        libc::getxattr
    } else {
        libc::lgetxattr
    };
    read_sized(|buf| {
        // SAFETY: path and attr are NUL-terminated CStrings alive for the call; buf is a valid
        // writable slice of buf.len() bytes (a null pointer with size 0 asks for the size).
        unsafe {
            get(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// `llistxattr` of entry `name` of `dir`: the raw NUL-separated list.
pub fn listxattr_at(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Vec<u8>> {
    if let Some(r) = listxattrat(dir, name) {
        return r;
    }
    let path = proc_path(dir, name)?;
    let list = if name.is_empty() {
        libc::listxattr
    } else {
        libc::llistxattr
    };
    read_sized(|buf| {
        // SAFETY: path is a NUL-terminated CString alive for the call; buf is a valid writable
        // slice of buf.len() bytes.
        unsafe { list(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })
}

/// `lsetxattr` of entry `name` of `dir`.
pub fn setxattr_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
    flags: i32,
) -> nix::Result<()> {
    let path = proc_path(dir, name)?;
    let attr = c_name(attr)?;
    let set = if name.is_empty() {
        libc::setxattr
    } else {
        libc::lsetxattr
    };
    // SAFETY: path and attr are NUL-terminated CStrings alive for the call; value is a valid
    // readable slice of value.len() bytes.
    let r = unsafe {
        set(
            path.as_ptr(),
            attr.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    Errno::result(r).map(drop)
}

/// `lremovexattr` of entry `name` of `dir`.
pub fn removexattr_at(dir: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> nix::Result<()> {
    let path = proc_path(dir, name)?;
    let attr = c_name(attr)?;
    let remove = if name.is_empty() {
        libc::removexattr
    } else {
        libc::lremovexattr
    };
    // SAFETY: path and attr are NUL-terminated CStrings alive for the call.
    let r = unsafe { remove(path.as_ptr(), attr.as_ptr()) };
    Errno::result(r).map(drop)
}

/// `ioctl(dst, FICLONE, src)`: share the source's extents (btrfs, xfs); EOPNOTSUPP/EXDEV/EINVAL
/// elsewhere, and the caller falls back to copying.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> nix::Result<()> {
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open for the
    // duration of the call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    Errno::result(r).map(drop)
}

/// Runs `f` with this thread's filesystem uid/gid set to the caller's, so that objects it
/// creates get the caller's ownership and the kernel's own rules (setgid directories, mode
/// stripping) apply exactly as for the caller. Linux keeps fsuid per thread.
pub fn as_caller<T>(uid: u32, gid: u32, f: impl FnOnce() -> T) -> T {
    // The daemon's own identity, which each thread's fsuid/fsgid are outside this function:
    // a caller with that identity needs no switch (four syscalls fewer per create).
    static OWN: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let own = *OWN.get_or_init(|| {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    });
    if (uid, gid) == own {
        return f();
    }
    struct Restore(u32, u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            nix::unistd::setfsgid(nix::unistd::Gid::from_raw(self.1));
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(self.0));
        }
    }
    let old_gid = nix::unistd::setfsgid(nix::unistd::Gid::from_raw(gid));
    let old_uid = nix::unistd::setfsuid(nix::unistd::Uid::from_raw(uid));
    let _restore = Restore(old_uid.as_raw(), old_gid.as_raw());
    f()
}

/// Borrow helper so call sites read `sys::fd(&owned)`.
pub fn fd<F: AsFd>(f: &F) -> BorrowedFd<'_> {
    f.as_fd()
}

/// `fork()`, for daemonizing. Callers must have no other threads yet.
pub fn fork() -> anyhow::Result<nix::unistd::ForkResult> {
    // SAFETY: called from the single-threaded start of the process (before the FUSE session or
    // any logging thread exists), so the child has a consistent copy of every lock and buffer.
    Ok(unsafe { nix::unistd::fork() }?)
}

/// Hands memory the allocator keeps after large frees back to the system (glibc's
/// `malloc_trim`), so the daemon's resident size follows what the kernel still caches.
pub fn return_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `pidfd_open(pid, 0)`: a descriptor that polls readable once the process has exited, for
/// waiting on a process that is not our child.
pub fn pidfd_open(pid: nix::unistd::Pid) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; nothing is
    // borrowed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a non-negative return is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}
