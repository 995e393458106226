//! A directory of the union as one generation of its layers sees it: which branches make it up
//! and, for branches that change only through this daemon (`rw`, `rr`), that branch's directory
//! held open (`O_PATH`). Lookups, creates and removals then work with `*at()` calls on the held
//! descriptor instead of walking the path from the branch root for every probe.
//!
//! Why a held descriptor stays right: it names a directory inode, not a path, and it is only
//! used while the union's layer generation is the one it was opened in. Everything that could
//! make it name the wrong thing bumps that generation: a directory renamed (the node moves with
//! its inode, but the whole tree's views, which carry their paths, are dropped anyway) or made
//! opaque (its descendants stop merging lower directories). A directory removed or copied up
//! drops only its own view (`Union::dir_changed`): nothing below it changes. So a renamed or
//! removed directory is never reached through a stale descriptor under its old name. `ro` branches may change behind the daemon's back, so for them nothing is
//! held: their directories are opened by path (beneath the root, no symlinks) at each use.
//!
//! Descriptors are counted against a cap (a quarter of `RLIMIT_NOFILE`): past it a view holds
//! nothing and every use opens by path, as before.

use std::ops::Deref;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::branch::resolve::Layers;

/// Directory descriptors held by views in this process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// How many directory descriptors views may hold: a quarter of the soft `RLIMIT_NOFILE` (open
/// files and the kernel's passthrough need the rest), at least 64.
pub(crate) fn cap() -> usize {
    static CAP: OnceLock<usize> = OnceLock::new();
    *CAP.get_or_init(|| {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        (soft / 4).clamp(64, 1 << 20) as usize
    })
}

/// Reserves room for `n` more held descriptors; false when the cap is reached.
pub(crate) fn reserve(n: usize) -> bool {
    let cap = cap();
    let mut cur = HELD.load(Ordering::Relaxed);
    loop {
        if cur + n > cap {
            return false;
        }
        match HELD.compare_exchange_weak(cur, cur + n, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Directory descriptors held by views now (for tests and memory reports).
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// A directory's branches, and the held descriptor of each where one is held.
#[derive(Debug)]
pub struct DirView {
    pub layers: Layers,
    /// Parallel to `layers.branches`; empty when nothing is held.
    fds: Vec<Option<Arc<OwnedFd>>>,
    /// How many of `fds` count against the cap (released on drop).
    counted: usize,
}

impl DirView {
    /// A view that holds nothing: every branch directory is opened by path.
    pub fn bare(layers: Layers) -> DirView {
        DirView {
            layers,
            fds: Vec::new(),
            counted: 0,
        }
    }

    /// A view holding `fds` (parallel to `layers.branches`); `counted` of them were reserved.
    pub(crate) fn holding(layers: Layers, fds: Vec<Option<Arc<OwnedFd>>>, counted: usize) -> Self {
        DirView {
            layers,
            fds,
            counted,
        }
    }

    /// The held descriptor of branch `b`'s directory, if one is held.
    pub fn held(&self, b: usize) -> Option<&Arc<OwnedFd>> {
        let i = self.layers.branches.iter().position(|x| *x == b)?;
        self.fds.get(i)?.as_ref()
    }

    /// True when branch `b` holds this directory (it is one of its layers).
    pub fn has(&self, b: usize) -> bool {
        self.layers.branches.contains(&b)
    }

    /// The branches below `b` among this directory's layers.
    pub fn below(&self, b: usize) -> impl Iterator<Item = usize> + '_ {
        self.layers.branches.iter().copied().filter(move |x| *x > b)
    }
}

impl Deref for DirView {
    type Target = Layers;
    fn deref(&self) -> &Layers {
        &self.layers
    }
}

impl Drop for DirView {
    fn drop(&mut self) {
        if self.counted > 0 {
            HELD.fetch_sub(self.counted, Ordering::AcqRel);
        }
    }
}
