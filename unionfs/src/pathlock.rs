//! Per-path locks for changes that must not interleave on one merged path: a copy-up and an
//! unlink or rename of the same name, or two first writers of one file. Unrelated paths never
//! wait for each other (a long copy-up blocks only its own path). A thread may take a path it
//! already holds (rename copies up the source it has locked).

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::thread::{self, ThreadId};

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub struct PathLocks {
    held: Mutex<HashMap<Key, (ThreadId, usize)>>,
    released: Condvar,
}

/// Holds one path until dropped.
#[must_use]
pub struct PathGuard<'a> {
    locks: &'a PathLocks,
    path: Key,
}

/// A locked path, by its bytes. Hashed by its length and its last bytes only: a path deep in a
/// union is thousands of components long, and paths that share their tail and length are rare
/// (they merely share a bucket; equality still compares every byte).
#[derive(Debug, PartialEq, Eq)]
struct Key(OsString);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let b = self.0.as_bytes();
        state.write_usize(b.len());
        state.write(&b[b.len().saturating_sub(128)..]);
    }
}

impl PathLocks {
    /// Waits until no other thread holds `path`, then holds it.
    pub fn lock(&self, path: &Path) -> PathGuard<'_> {
        let me = thread::current().id();
        let key = Key(path.as_os_str().to_os_string());
        let mut held = self.held.lock();
        loop {
            match held.get_mut(&key) {
                None => {
                    held.insert(Key(key.0.clone()), (me, 1));
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
            path: key,
        }
    }

    /// Holds several paths, taken in sorted order so two callers never wait on each other.
    pub fn lock_all<'a>(&'a self, paths: &[&Path]) -> Vec<PathGuard<'a>> {
        let mut sorted: Vec<&Path> = paths.to_vec();
        // Any one total order will do; bytes compare fastest.
        sorted.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
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
