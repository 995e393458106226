//! Thin wrappers over the system calls that `nix` does not cover safely.
//!
//! This is the one module of the crate with `unsafe` code; every block says why it is sound.
//! Everything else calls these wrappers (or `nix`'s safe ones).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::Pid;

/// What a fork-like clone returns in each of the two processes.
#[derive(Debug)]
pub enum Forked {
    /// In the new process.
    Child,
    /// In the caller: the new process's pid (as the caller sees it) and a pidfd for it.
    Parent {
        pid: Pid,
        pidfd: OwnedFd,
        /// Whether the kernel already placed the child in the requested cgroup
        /// (`CLONE_INTO_CGROUP`); when false the caller must join it by writing `cgroup.procs`.
        joined_cgroup: bool,
    },
}

/// `struct clone_args` of `clone3(2)`, as far as `CLONE_ARGS_SIZE_VER2` (88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork-like clone into new namespaces (`flags` are `CLONE_NEW*` bits), returning in both
/// processes like `fork(2)`.
///
/// Uses `clone3` with `CLONE_PIDFD` (the pidfd exists from the first instant, so an early exit of
/// the child can never be missed) and, when `cgroup` is a cgroup2 directory, `CLONE_INTO_CGROUP`,
/// which saves the `cgroup.procs` write. Falls back to `clone` + `pidfd_open` where `clone3` is
/// missing (ENOSYS, also what seccomp filters usually answer).
///
/// The caller must be single-threaded: the child is a copy of this one thread, and any lock another
/// thread held would stay locked forever in it. `run` checks that before calling.
pub fn clone_process(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: `args` is a valid, initialised clone_args of the size we pass; `pidfd` outlives the
    // call. With no CLONE_VM and a null stack the child gets a copy-on-write copy of our address
    // space and continues on its own copy of this stack, exactly like fork(2); the process is
    // single-threaded (documented precondition), so no lock is held by a thread that is missing
    // in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        return Ok(Forked::Child);
    }
    if ret > 0 {
        // SAFETY: with CLONE_PIDFD the kernel stored a new, owned file descriptor in `pidfd`.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        return Ok(Forked::Parent {
            pid: Pid::from_raw(ret as i32),
            pidfd,
            joined_cgroup: cgroup.is_some(),
        });
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // SAFETY: raw clone(2) without CLONE_VM and with a null stack behaves like fork(2) (the
    // x86_64/aarch64 argument order is flags, stack, parent_tid, child_tid, tls; the pointers are
    // unused without the matching flags). Same single-thread precondition as above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        0 => Ok(Forked::Child),
        r if r > 0 => {
            let pid = Pid::from_raw(r as i32);
            Ok(Forked::Parent {
                pid,
                pidfd: pidfd_open(pid)?,
                joined_cgroup: false,
            })
        }
        _ => Err(io::Error::last_os_error()),
    }
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success it returns a new fd we own.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ret` is a freshly opened file descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `pidfd_send_signal(2)`: signal the process the pidfd refers to (never a recycled pid).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo, which the kernel accepts.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fork(2)`, for the `--init` reaper (which is single-threaded: it is the cloned child).
pub fn fork() -> io::Result<Option<Pid>> {
    // SAFETY: called only in the container's first process, which is single-threaded; the
    // child only execs (or reports an error and calls `exit_now`).
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => Ok(None),
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
    }
}

/// `fork(2)` for a short-lived helper of the runner (see `cgroup::v1::EarlyAttach`).
pub fn fork_helper() -> io::Result<Option<Pid>> {
    if thread_count()? != 1 {
        return Err(io::Error::other(
            "fork of a helper with more than one thread",
        ));
    }
    // SAFETY: checked just above that this process has one thread, so the child has a
    // consistent copy of every lock (allocator included); the child makes one write and calls
    // `exit_now`.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => Ok(None),
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
    }
}

/// `_exit(2)`: leave a forked child without running the parent's exit handlers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    prctl3(option, arg, 0)
}

/// `prctl` with two integer arguments (the rest zero).
fn prctl3(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; the options we use take no pointers.
    let ret = unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove one capability from the bounding set (`PR_CAPBSET_DROP`).
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong)
}

/// Clear the ambient capability set.
pub fn clear_ambient_caps() -> io::Result<()> {
    prctl3(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    )
}

/// Raise one capability in the ambient set (`PR_CAP_AMBIENT_RAISE`).
pub fn raise_ambient_cap(cap: u32) -> io::Result<()> {
    prctl3(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
        cap as libc::c_ulong,
    )
}

/// `PR_SET_KEEPCAPS`: keep the permitted capabilities across a setuid away from uid 0.
pub fn set_keep_caps(keep: bool) -> io::Result<()> {
    prctl(libc::PR_SET_KEEPCAPS, keep as libc::c_ulong)
}

/// `setdomainname(2)` (in the container's own UTS namespace).
pub fn set_domainname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: execve can never grant privileges again (setuid bits, file caps).
pub fn set_no_new_privs() -> io::Result<()> {
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// `PR_SET_PDEATHSIG`: get `sig` when the parent (the runner) dies.
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong)
}

/// `PR_SET_DUMPABLE 0`: other processes of the container cannot ptrace this one or open its
/// `/proc/PID/exe` (our own binary, which the container must not reach: CVE-2019-5736).
pub fn set_not_dumpable() -> io::Result<()> {
    prctl(libc::PR_SET_DUMPABLE, 0)
}

/// The highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// `capset(2)` for the calling thread, with 64-bit masks (`_LINUX_CAPABILITY_VERSION_3`).
pub fn capset(effective: u64, permitted: u64, inheritable: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let split = |m: u64| (m as u32, (m >> 32) as u32);
    let (e0, e1) = split(effective);
    let (p0, p1) = split(permitted);
    let (i0, i1) = split(inheritable);
    let data = [
        Data {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        Data {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: `header` and `data` are valid for the duration of the call and laid out as the
    // kernel's __user_cap_header_struct and two __user_cap_data_struct (version 3).
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set `IFF_UP` on a network interface (used for `lo` in a new network namespace).
pub fn interface_up(name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    // SAFETY: plain socket(2) call; the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new socket descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags in `req`, which lives across the
    // call; the socket is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_flags just above, so reading that union field is valid.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make `fd` (a terminal) the controlling terminal of the calling session (`TIOCSCTTY`).
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument; the fd is valid for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of a terminal (`TIOCGWINSZ`).
pub fn get_winsize(fd: BorrowedFd<'_>) -> io::Result<libc::winsize> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ws)
}

/// Set the window size of a terminal (`TIOCSWINSZ`).
pub fn set_winsize(fd: BorrowedFd<'_>, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from `ws`, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws as *const libc::winsize) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The number of threads of this process (from `/proc/self/status`).
pub fn thread_count() -> io::Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no Threads: line in /proc/self/status"))
}

/// Send one file descriptor over a unix socket (`SCM_RIGHTS`), with a one-byte message.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [io::IoSlice::new(b"f")];
    sendmsg::<()>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Receive one file descriptor sent by [`send_fd`]; `None` when the peer closed without sending.
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r?,
        }
    };
    let mut out = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel installed this descriptor in our table for this message;
                // nothing else refers to it, so we take ownership (extra ones are closed on drop).
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                if out.is_none() {
                    out = Some(fd);
                }
            }
        }
    }
    Ok(out)
}

/// Mark every descriptor from `first` up close-on-exec (`close_range(first, ~0,
/// CLOSE_RANGE_CLOEXEC)`), so the command inherits only stdin, stdout, stderr (and what
/// `--preserve-fds` passes), whatever the runner was given. Where `close_range` is refused (a
/// kernel before 5.11, or a runner itself confined by a seccomp profile that lacks it), each
/// descriptor listed in `/proc/self/fd` is marked instead, as runc does.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: integer arguments only; marking descriptors close-on-exec affects no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let range_err = io::Error::last_os_error();
    let listing = std::fs::read_dir("/proc/self/fd").map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("close_range(CLOSE_RANGE_CLOEXEC): {range_err}; reading /proc/self/fd: {e}"),
        )
    })?;
    // Collected first: the listing's own descriptor is in it (and closed when it is dropped).
    let fds: Vec<libc::c_int> = listing
        .filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd: &libc::c_int| fd >= first as libc::c_int)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number touches no memory; one that is closed by now
        // (the listing's) answers EBADF, which is ignored.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Give every signal its default action before exec: what the runner ignores (Rust's runtime
/// ignores SIGPIPE; its own parent may have ignored more, even glibc's reserved 32 and 33) stays
/// ignored across execve otherwise, and `yes | head` in the container would see EPIPE errors
/// instead of dying quietly. Uses the raw `rt_sigaction`, which, unlike glibc's wrapper, also
/// accepts the signals glibc reserves.
pub fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` (x86_64 and aarch64 both define SA_RESTORER).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `dfl` is a valid kernel sigaction for the duration of the call, the old-action
        // pointer is null, and 8 is the kernel's sigset size; SIG_DFL runs no code of ours.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
}

/// The signals pending for this process (`sigpending(2)`), as a set to test with `contains`.
pub fn pending_signals() -> io::Result<nix::sys::signal::SigSet> {
    let mut raw = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending fills the sigset_t we pass, which is valid for writes.
    if unsafe { libc::sigpending(raw.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let raw = unsafe { raw.assume_init() };
    // SAFETY: `raw` is a valid sigset_t obtained from the kernel via libc.
    Ok(unsafe { nix::sys::signal::SigSet::from_sigset_t_unchecked(raw) })
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`: attach a classic-BPF filter to the calling
/// thread (and its future children). The kernel refuses with EACCES unless no_new_privs is set or
/// the caller has CAP_SYS_ADMIN in its user namespace. `flags` are `SECCOMP_FILTER_FLAG_*` bits.
pub fn seccomp_set_mode_filter(
    program: &[seccompiler::sock_filter],
    flags: libc::c_ulong,
) -> io::Result<()> {
    /// The kernel's `struct sock_fprog`.
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const seccompiler::sock_filter,
    }
    let len = libc::c_ushort::try_from(program.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points to `len` instructions that live across the call; seccompiler's
    // `sock_filter` is `#[repr(C)]` {u16, u8, u8, u32}, the layout of the kernel's
    // `struct sock_filter`. The kernel copies the program and keeps no pointer to our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const SockFprog,
        )
    };
    match ret {
        0 => Ok(()),
        // With SECCOMP_FILTER_FLAG_TSYNC, a positive result names a thread that could not sync.
        tid if tid > 0 => Err(io::Error::other(format!(
            "thread {tid} could not be synchronised to the new filter (TSYNC)"
        ))),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Fork for a test that must run code in a separate process (to install a seccomp filter, say),
/// returning the child's pid to the parent. The child runs `child` and leaves with `_exit` and its
/// result as the exit code (125 if it panicked), never returning into the test harness.
///
/// The test harness is multi-threaded, so `child` must keep to what is safe after fork(2) in a
/// multi-threaded process: system calls, no allocation, no locks (another thread may have held
/// the allocator's lock at the instant of the fork; the child would wait forever).
#[cfg(test)]
pub fn fork_for_test(child: impl FnOnce() -> i32) -> io::Result<Pid> {
    // SAFETY: the child does only what `child` does and then `_exit`s; by the contract above that
    // is async-signal-safe work, which is sound in the child of a multi-threaded process (it can
    // never observe another thread's half-done update, since it takes no locks).
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(125);
            exit_now(code)
        }
        nix::unistd::ForkResult::Parent { child } => Ok(child),
    }
}

/// One eBPF instruction, the kernel's `struct bpf_insn`: an opcode, the destination register in
/// the low nibble of `regs` and the source register in the high one, a jump offset and an
/// immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// `bpf(2)` commands and the constants of the cgroup device hook (`include/uapi/linux/bpf.h`).
pub const BPF_PROG_LOAD: libc::c_int = 5;
pub const BPF_PROG_ATTACH: libc::c_int = 8;
pub const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
pub const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs may be attached to the same cgroup and its ancestors; all of them must allow.
pub const BPF_F_ALLOW_MULTI: u32 = 2;

/// `bpf(BPF_PROG_LOAD)`: load `insns` as a program of type `prog_type` and return its fd.
/// With `log`, the verifier writes its findings there (level 1), which is how a refused
/// program explains itself.
pub fn bpf_prog_load(
    prog_type: u32,
    insns: &[BpfInsn],
    license: &CStr,
    name: &str,
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    /// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type` (72 bytes,
    /// no padding). The kernel takes a shorter attr and treats the missing fields as zero.
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    let insn_cnt =
        u32::try_from(insns.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
    // The kernel's name: up to 15 bytes of [A-Za-z0-9_.], NUL-terminated.
    let mut prog_name = [0u8; 16];
    for (dst, b) in prog_name[..15].iter_mut().zip(name.bytes()) {
        *dst = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            b
        } else {
            b'_'
        };
    }
    let (log_level, log_size, log_buf) = match log {
        Some(buf) if !buf.is_empty() => (
            1,
            u32::try_from(buf.len()).unwrap_or(u32::MAX),
            buf.as_mut_ptr() as u64,
        ),
        _ => (0, 0, 0),
    };
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `attr` is a fully initialised `#[repr(C)]` struct without padding, laid out as the
    // kernel's attr for this command; its pointers refer to `insns` (`insn_cnt` instructions of
    // the kernel's `struct bpf_insn` layout), the NUL-terminated `license` and the log buffer of
    // `log_size` bytes, all borrowed for the whole call. The kernel copies what it needs and
    // keeps no pointer into our memory after it returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the kernel returns a new file descriptor for the program, owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `bpf(BPF_PROG_ATTACH)`: attach the program `prog` to `target` (for cgroup hooks, an fd of
/// the cgroup's directory) at `attach_type`. The attachment holds its own reference to the
/// program, so `prog` may be closed afterwards; it lasts as long as the cgroup.
pub fn bpf_prog_attach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> io::Result<()> {
    /// The `BPF_PROG_ATTACH` member of `union bpf_attr` (20 bytes, no padding).
    #[repr(C)]
    struct ProgAttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }
    let attr = ProgAttachAttr {
        target_fd: target.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
    };
    // SAFETY: `attr` is a fully initialised `#[repr(C)]` struct without padding, the kernel's
    // attr for this command, borrowed for the call; both descriptors are open (borrowed).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
