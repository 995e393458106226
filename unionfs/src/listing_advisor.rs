//! Whether a directory's first READDIRPLUS should carry attributes, learnt from what callers do
//! with the names they were given.
//!
//! With readdirplus the kernel asks for the first chunk of every directory it lists with each
//! entry's attributes, so the daemon stats every entry. A `find` or `du`-less walk never uses
//! them: on a cold cache those stats are most of its time (50,000 inode reads from disk for a
//! 50,000-file tree, which overlayfs's `find` never makes). An `ls -l` uses every one of them,
//! and without them it would send a LOOKUP per entry. So the first chunk goes out with names
//! only (node id 0: the kernel makes no dentry, as for a plain READDIR) while the names given
//! that way are rarely looked up afterwards, and with attributes while they mostly are. One in
//! [`SAMPLE_EVERY`] first chunks goes out names-only whatever the recent answer, so that a
//! change of workload is noticed.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

/// Directories listed names-only whose later lookups are still counted.
const TRACKED_DIRS: usize = 64;
/// When this many names were given out, the counts are halved: recent behaviour weighs most
/// (about ten directories' worth: after a switch of workload, the answer follows within about
/// a hundred directories).
const WINDOW: u32 = 512;
/// Before this many names were given out, the first chunks go out names-only (learning).
const MIN_SAMPLE: u32 = 64;
/// A quarter of the names given out looked up: the callers want attributes.
const LOOKED_UP_SHARE_FOR_PLUS: u32 = 4;
/// While attributes are sent, one first chunk in this many still goes out names-only (an
/// `ls -lR` pays a LOOKUP per entry of those: about 8% more requests on a cold tree).
const SAMPLE_EVERY: u64 = 16;

#[derive(Debug, Default)]
pub struct ListingAdvisor {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Non-directory names given out names-only (decayed).
    given: u32,
    /// How many of them were looked up afterwards (decayed).
    looked_up: u32,
    /// Per tracked directory, how many more of its lookups may still count.
    allowance: HashMap<u64, u32>,
    order: VecDeque<u64>,
    first_reads: u64,
}

impl ListingAdvisor {
    /// Whether the first chunk of a listing of a directory should carry attributes.
    pub fn attributes_for_first_chunk(&self) -> bool {
        let mut s = self.state.lock();
        s.first_reads += 1;
        if s.given < MIN_SAMPLE || s.first_reads % SAMPLE_EVERY == 0 {
            return false;
        }
        s.looked_up * LOOKED_UP_SHARE_FOR_PLUS >= s.given
    }

    /// Directory `dir`'s first chunk went out names-only, naming `non_dirs` non-directories
    /// (subdirectories are looked up by any walk that descends, so they say nothing).
    pub fn gave_names_only(&self, dir: u64, non_dirs: usize) {
        let non_dirs = u32::try_from(non_dirs).unwrap_or(u32::MAX);
        if non_dirs == 0 {
            return;
        }
        let mut s = self.state.lock();
        s.given = s.given.saturating_add(non_dirs);
        if s.given >= WINDOW {
            s.given /= 2;
            s.looked_up /= 2;
        }
        if s.allowance.insert(dir, non_dirs).is_none() {
            s.order.push_back(dir);
            if s.order.len() > TRACKED_DIRS {
                if let Some(old) = s.order.pop_front() {
                    s.allowance.remove(&old);
                }
            }
        }
    }

    /// A lookup of a non-directory in `parent` succeeded.
    pub fn looked_up(&self, parent: u64) {
        let mut s = self.state.lock();
        if let Some(left) = s.allowance.get_mut(&parent) {
            if *left > 0 {
                *left -= 1;
                s.looked_up += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` directories of `files` files each listed names-only, of which `stat` are looked up.
    fn walk(a: &ListingAdvisor, dirs: std::ops::Range<u64>, files: usize, stat: usize) -> usize {
        let mut with_attributes = 0;
        for d in dirs {
            if a.attributes_for_first_chunk() {
                with_attributes += 1;
                continue;
            }
            a.gave_names_only(d, files);
            for _ in 0..stat {
                a.looked_up(d);
            }
        }
        with_attributes
    }

    #[test]
    fn a_walk_that_never_stats_gets_names_only() {
        let a = ListingAdvisor::default();
        assert_eq!(walk(&a, 0..1000, 50, 0), 0);
    }

    #[test]
    fn a_walk_that_stats_everything_gets_attributes_but_for_samples() {
        let a = ListingAdvisor::default();
        let plus = walk(&a, 0..1000, 50, 50);
        // The first two directories teach it; then all but one in SAMPLE_EVERY carry them.
        let expected = 1000 - 1000 / SAMPLE_EVERY as usize;
        assert!((expected - 3..=expected).contains(&plus), "{plus}");
    }

    #[test]
    fn it_follows_a_change_of_workload() {
        let a = ListingAdvisor::default();
        walk(&a, 0..500, 50, 50);
        // `find` after `ls -lR`: the samples show no lookups, and names-only takes over.
        walk(&a, 500..1500, 50, 0);
        assert_eq!(walk(&a, 1500..1600, 50, 0), 0);
        // And back.
        walk(&a, 1600..2600, 50, 50);
        assert!(walk(&a, 2600..2700, 50, 50) >= 90);
    }

    #[test]
    fn lookups_in_untracked_directories_and_beyond_the_names_given_do_not_count() {
        let a = ListingAdvisor::default();
        a.gave_names_only(1, 100);
        for _ in 0..1000 {
            a.looked_up(1);
            a.looked_up(2);
        }
        let s = a.state.lock();
        assert_eq!((s.given, s.looked_up), (100, 100));
    }
}
