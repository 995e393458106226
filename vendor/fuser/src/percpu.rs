//! Per-CPU workers (`Config::cpu_affine_workers`), a patch of this project's vendored copy.
//!
//! A blocking `read(2)` on `/dev/fuse` waits exclusively: each request wakes the worker that
//! has waited longest, and the scheduler sends it to an idle CPU, so a request and its reply
//! each cross CPUs (an inter-processor interrupt each, dear in a VM: 15 us a round trip
//! against 6 us on one CPU, measured on a 2-vCPU guest). Here one worker per CPU is pinned
//! there and waits in `poll(2)`, which wakes every poller: the one on the caller's CPU runs
//! the moment the caller sleeps waiting for its answer, takes the request, and wakes the
//! caller again on the same CPU. The others find nothing (`EAGAIN`) and poll again.
//!
//! The `n_threads` workers stand by behind the pollers and read only while every poller is
//! busy (a slow `fsync`, a long copy-up), so concurrency stays what it was. They poll too,
//! and leave a request to a poller that is free again rather than take it on another CPU. A poller serving a
//! release or a forget does not count as busy: those are over in a moment, and calling a
//! standby worker in for them cost a futex wake-up each and let it take the next request on
//! another CPU.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use crate::channel::Channel;

/// At most this many pollers: each request wakes them all.
pub(crate) const MAX_POLLERS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Pinned to this CPU, waits in `poll(2)`.
    Poller(usize),
    /// Reads only while every poller is busy.
    Standby,
    /// No pollers: a plain blocking reader, as unpatched fuser.
    Plain,
}

/// How many pollers are free; standby workers wait here until none is.
#[derive(Debug)]
pub(crate) struct Gate {
    idle_pollers: AtomicUsize,
    closed: AtomicBool,
    lock: Mutex<()>,
    needed: Condvar,
}

/// A poller's busy spell: it is free again when this drops.
pub(crate) struct Busy<'a>(&'a Gate);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.idle_pollers.fetch_add(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub(crate) fn new(pollers: usize) -> Self {
        Gate {
            idle_pollers: AtomicUsize::new(pollers),
            closed: AtomicBool::new(false),
            lock: Mutex::new(()),
            needed: Condvar::new(),
        }
    }

    /// A poller took a request; the last free one calls a standby worker in.
    pub(crate) fn busy(&self) -> Busy<'_> {
        if self.idle_pollers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.call_standby();
        }
        Busy(self)
    }

    /// A standby worker took a request: while every poller is still busy, the next standby
    /// worker takes its place at the descriptor, so one is always reading.
    pub(crate) fn standby_took_request(&self) {
        if self.idle_pollers.load(Ordering::Acquire) == 0 {
            self.call_standby();
        }
    }

    fn call_standby(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.needed.notify_one();
    }

    /// True while no poller is free.
    pub(crate) fn all_pollers_busy(&self) -> bool {
        self.idle_pollers.load(Ordering::Acquire) == 0
    }

    /// Waits until every poller is busy; false once the session has ended.
    pub(crate) fn wait_until_needed(&self) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while !self.all_pollers_busy() && !self.closed.load(Ordering::Acquire) {
            guard = self.needed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        !self.closed.load(Ordering::Acquire)
    }

    /// The session is over (a worker saw the connection end).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.needed.notify_all();
    }
}

/// Requests that never wait on anything (the kernel does not wait for their answer either):
/// a poller serving one does not count as busy.
pub(crate) fn is_quick(op: &crate::ll::Operation<'_>) -> bool {
    use crate::ll::Operation::*;
    matches!(
        op,
        Forget(_) | BatchForget(_) | Release(_) | ReleaseDir(_) | Interrupt(_)
    )
}

/// The CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled in by the kernel.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to `cpu` (a poller; standby workers are not pinned) and makes `ch`
/// non-blocking. False on any failure: the worker then reads as a plain blocking worker.
pub(crate) fn pin_nonblocking(ch: &Channel, cpu: Option<usize>) -> bool {
    if let Some(cpu) = cpu {
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` comes from allowed_cpus, below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is this thread.
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
            return false;
        }
    }
    let fd = ch.as_fd().as_raw_fd();
    // SAFETY: fcntl on a descriptor the channel owns (this worker's own clone).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    flags >= 0 && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn standby_waits_until_every_poller_is_busy() {
        let gate = Arc::new(Gate::new(2));
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.wait_until_needed())
        };
        let first = gate.busy();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "one poller is still free");
        let _second = gate.busy();
        assert!(waiter.join().unwrap(), "both busy: the standby worker is needed");
        drop(first);
        assert_eq!(gate.idle_pollers.load(Ordering::Acquire), 1);
    }

    #[test]
    fn a_standby_worker_that_takes_a_request_calls_the_next() {
        let gate = Arc::new(Gate::new(1));
        let spawn_waiter = || {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.wait_until_needed())
        };
        let (first, second) = (spawn_waiter(), spawn_waiter());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let _busy = gate.busy();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let done = [first.is_finished(), second.is_finished()];
        assert_eq!(done.iter().filter(|d| **d).count(), 1, "one called in: {done:?}");
        gate.standby_took_request();
        assert!(first.join().unwrap() && second.join().unwrap());
    }

    #[test]
    fn close_releases_standby_workers() {
        let gate = Arc::new(Gate::new(1));
        let waiter = {
            let gate = Arc::clone(&gate);
            std::thread::spawn(move || gate.wait_until_needed())
        };
        gate.close();
        assert!(!waiter.join().unwrap());
    }
}
