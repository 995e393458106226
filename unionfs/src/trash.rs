//! Directories removed from a writable branch, emptied in the background.
//!
//! Removing a directory that shows lower files means removing, first, the whiteouts that hid
//! them one by one: an `rm -rf` of a 50-file lower directory made its RMDIR wait for 52
//! unlinks (bench/README.md, session 6). Instead the directory is renamed into the branch's work directory
//! under a `tmp.*` name, which takes one rename, and a thread of its own deletes it there. The
//! name is gone from the branch at once; what is left in the work directory is removed at
//! unmount (which waits for the thread) or, after a crash, at the next mount (which empties the
//! work directory of `tmp.*` names).

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

/// One directory to delete: the work directory holding it, and its name there.
type Job = (Arc<OwnedFd>, OsString);

#[derive(Debug, Default)]
pub struct Trash {
    worker: Mutex<Option<(Sender<Job>, JoinHandle<()>)>>,
}

impl Trash {
    /// Deletes `name` (a tree) from `work` in the background.
    pub fn discard(&self, work: Arc<OwnedFd>, name: OsString) {
        let mut worker = self.worker.lock();
        let (tx, _) = worker.get_or_insert_with(|| {
            let (tx, rx) = channel::<Job>();
            let handle = std::thread::Builder::new()
                .name("unionfs-trash".into())
                .spawn(move || {
                    for (work, name) in rx {
                        if let Err(e) = crate::copyup::remove_path_at(work.as_fd(), Path::new(&name))
                        {
                            tracing::warn!(?name, error = %e, "cannot delete a removed directory from the work directory (the next mount does)");
                        }
                    }
                })
                .expect("spawning the trash thread");
            (tx, handle)
        });
        if let Err(e) = tx.send((work, name)) {
            // The thread is gone (it never ends while the sender lives): delete here.
            let (work, name) = e.0;
            let _ = crate::copyup::remove_path_at(work.as_fd(), Path::new(&name));
        }
    }

    /// Waits until everything discarded so far is deleted (at unmount).
    pub fn drain(&self) {
        let worker = self.worker.lock().take();
        if let Some((tx, handle)) = worker {
            drop(tx);
            let _ = handle.join();
        }
    }
}
