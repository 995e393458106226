//! The few calls std lacks: xattrs without following symlinks, utimensat, umask, umount2.
//! The only module with unsafe code.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The `user.*` xattrs of `p` (not following a symlink), name to value.
pub fn user_xattrs(p: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `c` is a NUL-terminated path; `buf` is writable for `buf.len()` bytes.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(BTreeMap::new()),
            _ => Err(e),
        };
    }
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let cname = CString::new(name).map_err(io::Error::other)?;
        let mut val = vec![0u8; 4096];
        // SAFETY: both strings are NUL-terminated; `val` is writable for `val.len()` bytes.
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                val.as_mut_ptr().cast(),
                val.len(),
            )
        };
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        val.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), val);
    }
    Ok(out)
}

/// `lsetxattr(p, name, value, 0)`.
pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: NUL-terminated strings; `value` is readable for `value.len()` bytes.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Set atime and mtime of `p` (not following a symlink) to `ns` nanoseconds.
pub fn lutimens(p: &Path, ns: i64) -> io::Result<()> {
    let c = cpath(p)?;
    let t = libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    };
    let times = [t, t];
    // SAFETY: NUL-terminated path; `times` points to two timespecs.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Set the process umask (process-wide: every test of this crate uses 0).
pub fn set_umask(mask: u32) {
    // SAFETY: umask cannot fail and touches no memory.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Lazy unmount, the last resort of a guard whose `unionfs umount` failed.
pub fn umount_detach(p: &Path) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) })
}

/// Effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// `truncate(2)`: by path, following symlinks.
pub fn truncate(p: &Path, len: u64) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: NUL-terminated path.
    check(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })
}

/// Wait up to `timeout_ms` for the mount table to change: `/proc/self/mountinfo` reports
/// `POLLPRI` on every mount or unmount in this namespace (proc(5)).
pub fn wait_mount_change(mountinfo: &std::fs::File, timeout_ms: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: mountinfo.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    check(rc)
}

/// `lremovexattr(p, name)`.
pub fn lremovexattr(p: &Path, name: &str) -> io::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
}

/// Run `f` with this thread's fsuid and fsgid set to `creds` (Linux keeps them per thread;
/// a change from 0 also drops the filesystem capabilities), then back to root.
pub fn as_user<T>(creds: (u32, u32), f: impl FnOnce() -> T) -> T {
    // SAFETY: setfsgid/setfsuid only change this thread's filesystem credentials.
    unsafe {
        libc::setfsgid(creds.1);
        libc::setfsuid(creds.0);
    }
    let r = f();
    // SAFETY: as above; back to root, which this process is.
    unsafe {
        libc::setfsuid(0);
        libc::setfsgid(0);
    }
    r
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`.
pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (f, t) = (cpath(from)?, cpath(to)?);
    // SAFETY: two NUL-terminated paths.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
}
