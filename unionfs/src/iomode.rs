//! How each open file is served: FUSE passthrough (the kernel reads and writes the branch file
//! itself) or through the daemon with the page cache.
//!
//! The kernel keeps one I/O mode per inode: all open handles of a node must either share one
//! passthrough backing file or all be cached (it refuses a passthrough open next to a cached
//! one, and a second backing file). A node's file can change under open handles: a reader
//! keeps the lower file while a writer's open copies it up. So the mode is chosen per node:
//! - files of the topmost writable branch go passthrough (writes, appends, the copy of a
//!   copy-up): nothing ever copies them elsewhere, so their node keeps that file;
//! - files of other branches are served cached (the page cache makes repeated reads and mmap
//!   of binaries fast), so a copy-up while they are open never needs a second backing;
//! - a new handle joins the mode its node is already in.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

/// The mode of one node while it has open handles. `B` is the backing handle (fuser's
/// `BackingId`), kept alive until the node's last passthrough handle is released.
enum Mode<B> {
    Passthrough { backing: Arc<B>, file: (u64, u64) },
    Cached,
}

struct NodeIo<B> {
    mode: Mode<B>,
    handles: Vec<u64>,
}

/// What an open should reply.
pub enum Choice<B> {
    Passthrough(Arc<B>),
    Cached,
}

pub struct IoModes<B> {
    nodes: Mutex<HashMap<u64, NodeIo<B>>>,
}

impl<B> Default for IoModes<B> {
    fn default() -> Self {
        IoModes {
            nodes: Mutex::new(HashMap::new()),
        }
    }
}

impl<B> IoModes<B> {
    /// Chooses the mode of handle `fh` of `node`, whose branch file is `file` (dev, ino);
    /// `stable` says that file stays the node's file (see above). `open_backing` registers the
    /// file with the kernel.
    pub fn open(
        &self,
        node: u64,
        fh: u64,
        file: (u64, u64),
        stable: bool,
        open_backing: impl FnOnce() -> Option<B>,
    ) -> Choice<B> {
        let mut nodes = self.nodes.lock();
        if let Some(io) = nodes.get_mut(&node) {
            io.handles.push(fh);
            return match &io.mode {
                Mode::Passthrough { backing, file: f } if *f == file => {
                    Choice::Passthrough(Arc::clone(backing))
                }
                // Another file behind a passthrough node cannot be served next to it; the
                // kernel will refuse this open (rare: a writable-branch file replaced while open).
                Mode::Passthrough { .. } | Mode::Cached => Choice::Cached,
            };
        }
        let mode = match stable.then(open_backing).flatten() {
            Some(b) => Mode::Passthrough {
                backing: Arc::new(b),
                file,
            },
            None => Mode::Cached,
        };
        let choice = match &mode {
            Mode::Passthrough { backing, .. } => Choice::Passthrough(Arc::clone(backing)),
            Mode::Cached => Choice::Cached,
        };
        nodes.insert(
            node,
            NodeIo {
                mode,
                handles: vec![fh],
            },
        );
        choice
    }

    /// Handle `fh` closed; the node's mode (and backing) goes with its last handle.
    pub fn release(&self, node: u64, fh: u64) {
        let mut nodes = self.nodes.lock();
        if let Some(io) = nodes.get_mut(&node) {
            io.handles.retain(|h| *h != fh);
            if io.handles.is_empty() {
                nodes.remove(&node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_pt<B>(c: &Choice<B>) -> bool {
        matches!(c, Choice::Passthrough(_))
    }

    #[test]
    fn lower_files_are_cached_and_later_opens_join_the_mode() {
        let io: IoModes<u32> = IoModes::default();
        // A reader of a read-only branch file: cached.
        assert!(!is_pt(&io.open(5, 1, (1, 10), false, || Some(7))));
        // A writer after copy-up (another file) joins the cached mode.
        assert!(!is_pt(&io.open(5, 2, (2, 20), true, || Some(7))));
        io.release(5, 1);
        io.release(5, 2);
        // With nothing open, a writable file goes passthrough, and readers share it.
        assert!(is_pt(&io.open(5, 3, (2, 20), true, || Some(7))));
        assert!(is_pt(&io.open(5, 4, (2, 20), false, || None)));
    }

    #[test]
    fn refused_backing_falls_back_to_cached() {
        let io: IoModes<u32> = IoModes::default();
        assert!(!is_pt(&io.open(1, 1, (1, 1), true, || None)));
    }
}
