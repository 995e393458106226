//! The end of a session, bounded. The kernel ends a FUSE session when the mount's last user is
//! gone (after `umount`, or after `umount -l` and the last close): every thread reading
//! `/dev/fuse` then gets ENODEV, fuser joins its threads, and the daemon cleans up and exits.
//! That join waits for every request thread to come back, so one thread stuck in a long
//! request (a copy-up of a big file, a slow branch disk, a bug) would keep a daemon whose
//! mount is gone alive for as long. A watcher notices the end of the session by itself,
//! asks long work to stop ([`closing`]), and if the threads have not come back within
//! [`GRACE`], ends the process: what the caller of any such request saw is already settled
//! (the kernel failed it when the session ended), and an interrupted copy-up leaves nothing
//! visible (it is built in the work directory, as after SIGKILL).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How often the watcher looks at the session: a poll that does not wait, so the watcher costs
/// nothing per request (a waiting poll on `/dev/fuse` would be woken by every request), and
/// ten wake-ups a second of an idle daemon.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long the request threads get to come back once the session is over.
pub const GRACE: Duration = Duration::from_secs(1);

static CLOSING: AtomicBool = AtomicBool::new(false);

/// True once the kernel has ended the session: long loops (copy-up data) stop early.
pub fn closing() -> bool {
    CLOSING.load(Ordering::Relaxed)
}

/// True when the FUSE connection behind `dev` (a duplicate of the session's `/dev/fuse`
/// descriptor) is gone: the kernel answers POLLERR from then on.
fn session_over(dev: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(dev.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        Err(_) => false,
    }
}

/// Starts the watcher of the session served on `dev`. When the session is over and the
/// process is still there [`GRACE`] later, `last_words` runs (clean up what the normal exit
/// would have) and the process exits with status 0.
pub fn watch(dev: OwnedFd, last_words: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("unionfs-watch".into())
        .spawn(move || {
            while !session_over(&dev) {
                std::thread::sleep(CHECK_EVERY);
            }
            CLOSING.store(true, Ordering::Relaxed);
            let over = Instant::now();
            // The normal way out (the session loop returns, `destroy`, exit) takes about a
            // millisecond; this thread only acts if that does not happen.
            std::thread::sleep(GRACE);
            tracing::warn!(
                after = ?over.elapsed(),
                "the FUSE session ended but request threads are still busy; exiting without them"
            );
            last_words();
            std::process::exit(0);
        })
        .map(drop)
}
