//! The reference model: a stack of branches held in memory in their on-disk form (whiteouts
//! are plain empty files named `.wh.NAME`, the opaque marker is a file named `.wh..wh..opq`),
//! and a naive merge that applies the rules of DESIGN.md "Union semantics" by walking the
//! branches top down. Written from the design text alone, without the `unionfs` code.

use std::collections::{BTreeMap, BTreeSet};

use crate::relpath::{join, parent, split_name};
use crate::view::{VEntry, VKind, View};

/// Prefix of whiteout names.
pub const WH: &str = ".wh.";
/// Name of the opaque marker.
pub const OPQ: &str = ".wh..wh..opq";

/// True for every name the union never shows (whiteouts, the marker, `.wh..wh.*` bookkeeping).
pub fn is_hidden_name(name: &str) -> bool {
    name.starts_with(WH)
}

/// Attributes shared by every kind of object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    pub fn new(mode: u32, uid: u32, gid: u32) -> Meta {
        Meta {
            mode,
            uid,
            gid,
            xattrs: BTreeMap::new(),
        }
    }
}

/// What a non-directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    File(Vec<u8>),
    Symlink(String),
}

/// A non-directory inode; several paths of one branch may name it (hardlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub meta: Meta,
    pub body: Body,
    /// Modification time in nanoseconds, when the model knows it (set by the generator or by
    /// utimens; `None` after a write, whose time the model cannot predict).
    pub mtime: Option<i64>,
    /// Identity of the object, kept by copy-up and rename, new for every created object: the
    /// union must show one inode number for one identity while mounted.
    pub oid: u64,
}

impl Leaf {
    pub fn new(meta: Meta, body: Body, mtime: Option<i64>) -> Leaf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let oid = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Leaf {
            meta,
            body,
            mtime,
            oid,
        }
    }
}

/// One directory entry of a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir(Meta),
    Leaf(u64),
}

/// One branch: a directory tree in on-disk form. Paths are relative, `/`-separated, `""` is
/// the root. A `BTreeMap` keeps every parent before its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub nodes: BTreeMap<String, Node>,
    pub leaves: BTreeMap<u64, Leaf>,
    next_ino: u64,
}

impl Default for Branch {
    fn default() -> Self {
        Branch::new(Meta::new(0o755, 0, 0))
    }
}

impl Branch {
    pub fn new(root: Meta) -> Branch {
        let mut nodes = BTreeMap::new();
        nodes.insert(String::new(), Node::Dir(root));
        Branch {
            nodes,
            leaves: BTreeMap::new(),
            next_ino: 1,
        }
    }

    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        matches!(self.nodes.get(path), Some(Node::Dir(_)))
    }

    pub fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    pub fn leaf(&self, ino: u64) -> &Leaf {
        &self.leaves[&ino]
    }

    pub fn leaf_mut(&mut self, ino: u64) -> &mut Leaf {
        self.leaves.get_mut(&ino).expect("leaf of a live node")
    }

    pub fn dir_meta_mut(&mut self, path: &str) -> &mut Meta {
        match self.nodes.get_mut(path) {
            Some(Node::Dir(m)) => m,
            other => panic!("model: {path:?} is not a dir in this branch: {other:?}"),
        }
    }

    /// Names directly inside directory `dir` (all of them, whiteouts included).
    pub fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter_map(|(p, _)| {
                let rest = &p[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
            })
            .collect()
    }

    pub fn insert_dir(&mut self, path: &str, meta: Meta) {
        assert!(
            self.is_dir(parent(path)),
            "model: no parent dir for {path:?}"
        );
        self.nodes.insert(path.to_string(), Node::Dir(meta));
    }

    pub fn insert_leaf(&mut self, path: &str, leaf: Leaf) -> u64 {
        assert!(
            self.is_dir(parent(path)),
            "model: no parent dir for {path:?}"
        );
        let ino = self.next_ino;
        self.next_ino += 1;
        self.leaves.insert(ino, leaf);
        self.nodes.insert(path.to_string(), Node::Leaf(ino));
        ino
    }

    pub fn insert_link(&mut self, path: &str, ino: u64) {
        assert!(
            self.is_dir(parent(path)),
            "model: no parent dir for {path:?}"
        );
        assert!(self.leaves.contains_key(&ino));
        self.nodes.insert(path.to_string(), Node::Leaf(ino));
    }

    /// An empty regular file, as whiteouts and markers are written.
    pub fn insert_marker(&mut self, path: &str) {
        let leaf = Leaf::new(Meta::new(0o444, 0, 0), Body::File(Vec::new()), None);
        self.insert_leaf(path, leaf);
    }

    /// Remove `path` and everything below it; forget leaves nobody names any more.
    pub fn remove_tree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|p, _| p != path && !p.starts_with(&prefix));
        let live: BTreeSet<u64> = self
            .nodes
            .values()
            .filter_map(|n| match n {
                Node::Leaf(i) => Some(*i),
                Node::Dir(_) => None,
            })
            .collect();
        self.leaves.retain(|i, _| live.contains(i));
    }

    /// Move `from` (and its subtree) to `to`, which must not exist.
    pub fn move_tree(&mut self, from: &str, to: &str) {
        assert!(!self.has(to));
        let prefix = format!("{from}/");
        let moved: Vec<(String, Node)> = self
            .nodes
            .iter()
            .filter(|(p, _)| *p == from || p.starts_with(&prefix))
            .map(|(p, n)| (format!("{to}{}", &p[from.len()..]), n.clone()))
            .collect();
        self.nodes
            .retain(|p, _| p != from && !p.starts_with(&prefix));
        self.nodes.extend(moved);
    }
}

/// Where a visible name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A directory: the branches whose directories merge into it, top first.
    Dir(Vec<usize>),
    /// A non-directory: the branch and the inode in that branch.
    Leaf(usize, u64),
}

/// The branches, top first. Branch 0 is the writable one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub branches: Vec<Branch>,
}

impl Stack {
    /// Resolve a path of the merged view.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        if path.is_empty() {
            return Some(Resolved::Dir(self.root_dirs()));
        }
        let (dir, name) = split_name(path);
        match self.resolve(dir)? {
            Resolved::Dir(bs) => self.lookup_in(&bs, dir, name),
            Resolved::Leaf(..) => None,
        }
    }

    fn root_dirs(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, b) in self.branches.iter().enumerate() {
            out.push(i);
            if b.has(OPQ) {
                break;
            }
        }
        out
    }

    /// Walk the branches `bs` (those whose directory `dir` takes part) for `name`.
    fn lookup_in(&self, bs: &[usize], dir: &str, name: &str) -> Option<Resolved> {
        if is_hidden_name(name) {
            return None;
        }
        let path = join(dir, name);
        let whiteout = join(dir, &format!("{WH}{name}"));
        let mut dirs = Vec::new();
        for &b in bs {
            let br = &self.branches[b];
            match br.node(&path) {
                Some(Node::Leaf(ino)) if dirs.is_empty() => return Some(Resolved::Leaf(b, *ino)),
                Some(Node::Leaf(_)) => break,
                Some(Node::Dir(_)) => {
                    dirs.push(b);
                    if br.has(&join(&path, OPQ)) {
                        break;
                    }
                }
                None => {}
            }
            // A whiteout hides lower branches only, never a sibling in its own branch.
            if br.has(&whiteout) {
                break;
            }
        }
        (!dirs.is_empty()).then_some(Resolved::Dir(dirs))
    }

    /// Visible names in a merged directory (which must resolve to a directory).
    pub fn list(&self, dir: &str) -> Vec<String> {
        let Some(Resolved::Dir(bs)) = self.resolve(dir) else {
            panic!("model: list of non-dir {dir:?}");
        };
        let mut names = BTreeSet::new();
        for &b in &bs {
            names.extend(
                self.branches[b]
                    .children(dir)
                    .into_iter()
                    .filter(|n| !is_hidden_name(n)),
            );
        }
        names
            .into_iter()
            .filter(|n| self.lookup_in(&bs, dir, n).is_some())
            .collect()
    }

    /// Attributes of a resolved directory: those of its top branch.
    pub fn dir_meta(&self, bs: &[usize], path: &str) -> &Meta {
        match self.branches[bs[0]].node(path) {
            Some(Node::Dir(m)) => m,
            _ => unreachable!("resolved dir"),
        }
    }

    /// Every visible path with its resolution, parents first.
    pub fn walk(&self) -> BTreeMap<String, Resolved> {
        let mut out = BTreeMap::new();
        let mut todo = vec![String::new()];
        while let Some(dir) = todo.pop() {
            let res = self.resolve(&dir).expect("walked dirs resolve");
            out.insert(dir.clone(), res);
            for name in self.list(&dir) {
                let p = join(&dir, &name);
                match self.resolve(&p).expect("listed names resolve") {
                    Resolved::Dir(_) => todo.push(p),
                    leaf => {
                        out.insert(p, leaf);
                    }
                }
            }
        }
        out
    }

    /// The link count of the inode behind a visible non-directory in its own branch, hidden
    /// names included (what a union that passes `st_nlink` through would show).
    pub fn branch_nlink(&self, path: &str) -> Option<u64> {
        match self.resolve(path)? {
            Resolved::Leaf(b, ino) => {
                let n = self.branches[b]
                    .nodes
                    .values()
                    .filter(|n| **n == Node::Leaf(ino))
                    .count();
                Some(n as u64)
            }
            Resolved::Dir(_) => None,
        }
    }

    /// The identity of every visible non-directory.
    pub fn oids(&self) -> BTreeMap<String, u64> {
        self.walk()
            .into_iter()
            .filter_map(|(p, r)| match r {
                Resolved::Leaf(b, ino) => Some((p, self.branches[b].leaf(ino).oid)),
                Resolved::Dir(_) => None,
            })
            .collect()
    }

    /// The merged view: what a plain filesystem showing the union would hold.
    pub fn view(&self) -> View {
        let walked = self.walk();
        // Link groups: visible paths naming the same inode of the same branch.
        let mut groups: BTreeMap<(usize, u64), Vec<String>> = BTreeMap::new();
        for (p, r) in &walked {
            if let Resolved::Leaf(b, ino) = r {
                groups.entry((*b, *ino)).or_default().push(p.clone());
            }
        }
        let mut entries = BTreeMap::new();
        for (p, r) in walked {
            let e = match r {
                Resolved::Dir(bs) => VEntry::dir(self.dir_meta(&bs, &p).clone()),
                Resolved::Leaf(b, ino) => {
                    let leaf = self.branches[b].leaf(ino);
                    let group = &groups[&(b, ino)];
                    let kind = match &leaf.body {
                        Body::File(c) => VKind::File(c.clone()),
                        Body::Symlink(t) => VKind::Symlink(t.clone()),
                    };
                    VEntry {
                        kind,
                        meta: leaf.meta.clone(),
                        mtime: leaf.mtime,
                        nlink: Some(group.len() as u64),
                        group: Some(group[0].clone()),
                    }
                }
            };
            entries.insert(p, e);
        }
        View { entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(b: &mut Branch, p: &str, content: &str) -> u64 {
        let leaf = Leaf::new(
            Meta::new(0o644, 0, 0),
            Body::File(content.as_bytes().to_vec()),
            None,
        );
        b.insert_leaf(p, leaf)
    }

    fn dir(b: &mut Branch, p: &str) {
        b.insert_dir(p, Meta::new(0o755, 0, 0));
    }

    fn names(v: &View) -> Vec<&str> {
        v.entries.keys().map(String::as_str).collect()
    }

    #[test]
    fn top_wins_and_dirs_merge() {
        let (mut a, mut b) = (Branch::default(), Branch::default());
        file(&mut a, "x", "top");
        file(&mut b, "x", "low");
        dir(&mut a, "d");
        file(&mut a, "d/1", "");
        dir(&mut b, "d");
        file(&mut b, "d/2", "");
        let s = Stack {
            branches: vec![a, b],
        };
        let v = s.view();
        assert_eq!(names(&v), ["", "d", "d/1", "d/2", "x"]);
        assert_eq!(v.entries["x"].kind, VKind::File(b"top".to_vec()));
    }

    #[test]
    fn whiteout_hides_lower_only() {
        let (mut a, mut b) = (Branch::default(), Branch::default());
        a.insert_marker(".wh.x");
        file(&mut a, "y", "mine");
        a.insert_marker(".wh.y");
        file(&mut b, "x", "");
        file(&mut b, "y", "");
        let v = Stack {
            branches: vec![a, b],
        }
        .view();
        assert_eq!(names(&v), ["", "y"]);
        assert_eq!(v.entries["y"].kind, VKind::File(b"mine".to_vec()));
    }

    #[test]
    fn opaque_dir_hides_lower_dirs_not_siblings() {
        let (mut a, mut b, mut c) = (Branch::default(), Branch::default(), Branch::default());
        dir(&mut a, "d");
        file(&mut a, "d/top", "");
        dir(&mut b, "d");
        b.insert_marker("d/.wh..wh..opq");
        file(&mut b, "d/mid", "");
        dir(&mut c, "d");
        file(&mut c, "d/low", "");
        let v = Stack {
            branches: vec![a, b, c],
        }
        .view();
        assert_eq!(names(&v), ["", "d", "d/mid", "d/top"]);
    }

    #[test]
    fn non_dir_ends_the_walk_both_ways() {
        let (mut a, mut b, mut c) = (Branch::default(), Branch::default(), Branch::default());
        dir(&mut a, "d");
        file(&mut a, "d/1", "");
        file(&mut b, "d", "file in the middle");
        dir(&mut c, "d");
        file(&mut c, "d/3", "");
        file(&mut a, "f", "file over dir");
        dir(&mut b, "f");
        file(&mut b, "f/x", "");
        let v = Stack {
            branches: vec![a, b, c],
        }
        .view();
        assert_eq!(names(&v), ["", "d", "d/1", "f"]);
    }

    #[test]
    fn whiteout_in_lower_branch_stops_merge_below_it() {
        let (mut a, mut b, mut c) = (Branch::default(), Branch::default(), Branch::default());
        dir(&mut a, "d");
        b.insert_marker(".wh.d");
        dir(&mut c, "d");
        file(&mut c, "d/gone", "");
        let v = Stack {
            branches: vec![a, b, c],
        }
        .view();
        assert_eq!(names(&v), ["", "d"]);
    }

    #[test]
    fn hardlinks_count_visible_names() {
        let (mut a, mut b) = (Branch::default(), Branch::default());
        let ino = file(&mut b, "x", "shared");
        b.insert_link("y", ino);
        b.insert_link("z", ino);
        a.insert_marker(".wh.z");
        let v = Stack {
            branches: vec![a, b],
        }
        .view();
        assert_eq!(names(&v), ["", "x", "y"]);
        assert_eq!(v.entries["y"].nlink, Some(2));
        assert_eq!(v.entries["y"].group.as_deref(), Some("x"));
    }

    #[test]
    fn root_opaque_and_meta_names() {
        let (mut a, mut b) = (Branch::default(), Branch::default());
        a.insert_marker(OPQ);
        a.insert_marker(".wh..wh.plnk");
        file(&mut b, "x", "");
        let v = Stack {
            branches: vec![a, b],
        }
        .view();
        assert_eq!(names(&v), [""]);
    }
}
