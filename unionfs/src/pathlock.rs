//! Per-path locks for changes that must not interleave on one merged path: a copy-up and an
//! unlink or rename of the same name, or two first writers of one file. Unrelated paths never
//! wait for each other (a long copy-up blocks only its own path). A thread may take a path it
//! already holds (rename copies up the source it has locked).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::thread::{self, ThreadId};

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub struct PathLocks {
    held: Mutex<HashMap<PathBuf, (ThreadId, usize)>>,
    released: Condvar,
}

/// Holds one path until dropped.
#[must_use]
pub struct PathGuard<'a> {
    locks: &'a PathLocks,
    path: PathBuf,
}

impl PathLocks {
    /// Waits until no other thread holds `path`, then holds it.
    pub fn lock(&self, path: &Path) -> PathGuard<'_> {
        let me = thread::current().id();
        let mut held = self.held.lock();
        loop {
            match held.get_mut(path) {
                None => {
                    held.insert(path.to_path_buf(), (me, 1));
                    break;
                }
                Some((owner, depth)) if *owner == me => {
                    *depth += 1;
                    break;
                }
                Some(_) => self.released.wait(&mut held),
            }
        }
        PathGuard {
            locks: self,
            path: path.to_path_buf(),
        }
    }

    /// Holds several paths, taken in sorted order so two callers never wait on each other.
    pub fn lock_all<'a>(&'a self, paths: &[&Path]) -> Vec<PathGuard<'a>> {
        let mut sorted: Vec<&Path> = paths.to_vec();
        sorted.sort();
        sorted.dedup();
        sorted.into_iter().map(|p| self.lock(p)).collect()
    }
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock();
        if let Some((_, depth)) = held.get_mut(&self.path) {
            *depth -= 1;
            if *depth == 0 {
                held.remove(&self.path);
                self.locks.released.notify_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn one_holder_per_path_reentrant_for_its_thread() {
        let locks = Arc::new(PathLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let g = locks.lock(Path::new("a"));
        let _again = locks.lock(Path::new("a"));
        let _other = locks.lock(Path::new("b"));
        let (l2, i2) = (Arc::clone(&locks), Arc::clone(&inside));
        let t = thread::spawn(move || {
            let _g = l2.lock(Path::new("a"));
            i2.fetch_add(1, Ordering::SeqCst);
        });
        thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(inside.load(Ordering::SeqCst), 0, "a is still held");
        drop(g);
        drop(_again);
        t.join().unwrap();
        assert_eq!(inside.load(Ordering::SeqCst), 1);
    }
}
