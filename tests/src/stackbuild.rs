//! A terse way to write a stack by hand, for regression tests.

use crate::model::{Body, Branch, Leaf, Meta, Node, Stack, OPQ, WH};
use crate::relpath::{join, split_name};

/// Branch 0 is the top (rw) one.
pub struct StackBuilder {
    branches: Vec<Branch>,
}

impl StackBuilder {
    pub fn new(branches: usize) -> StackBuilder {
        StackBuilder {
            branches: (0..branches).map(|_| Branch::default()).collect(),
        }
    }

    pub fn dir(mut self, b: usize, path: &str) -> Self {
        self.branches[b].insert_dir(path, Meta::new(0o755, 0, 0));
        self
    }

    pub fn file(mut self, b: usize, path: &str, content: &str) -> Self {
        let leaf = Leaf::new(
            Meta::new(0o644, 0, 0),
            Body::File(content.as_bytes().to_vec()),
            Some(1_000_000_000_000_000_000),
        );
        self.branches[b].insert_leaf(path, leaf);
        self
    }

    pub fn symlink(mut self, b: usize, path: &str, target: &str) -> Self {
        let leaf = Leaf::new(Meta::new(0o777, 0, 0), Body::Symlink(target.into()), None);
        self.branches[b].insert_leaf(path, leaf);
        self
    }

    /// `path` becomes another name of the non-directory at `existing` (same branch).
    pub fn link(mut self, b: usize, path: &str, existing: &str) -> Self {
        let Some(Node::Leaf(ino)) = self.branches[b].node(existing) else {
            panic!("no leaf at {existing:?} in branch {b}");
        };
        let ino = *ino;
        self.branches[b].insert_link(path, ino);
        self
    }

    /// `.wh.NAME` beside `path`.
    pub fn whiteout(mut self, b: usize, path: &str) -> Self {
        let (dir, name) = split_name(path);
        self.branches[b].insert_marker(&join(dir, &format!("{WH}{name}")));
        self
    }

    /// `.wh..wh..opq` inside directory `dir`.
    pub fn opaque(mut self, b: usize, dir: &str) -> Self {
        self.branches[b].insert_marker(&join(dir, OPQ));
        self
    }

    pub fn build(self) -> Stack {
        Stack {
            branches: self.branches,
        }
    }
}
