//! proptest strategies: stacks of 1 to 5 branches over a small pool of names (so names collide
//! across branches, files land over directories and the reverse), with hardlinks, symlinks,
//! whiteouts and opaque markers; and sequences of operations.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::{select, Index};

use crate::model::{Body, Branch, Leaf, Meta, Stack, OPQ, WH};
use crate::ops::{Op, PathSel};
use crate::relpath::join;

/// Every name the generators use; few, so that they collide.
pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const FILE_MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o640, 0o444, 0o666];
const DIR_MODES: [u32; 6] = [0o755, 0o700, 0o750, 0o555, 0o777, 0o775];
const IDS: [u32; 3] = [0, 1000, 65534];
const XATTR_NAMES: [&str; 2] = ["user.a", "user.b"];
const TARGETS: [&str; 5] = ["a", "b", "d/c", "nowhere", "."];

#[derive(Debug, Clone)]
pub struct GenMeta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattr: Option<(&'static str, String)>,
}

#[derive(Debug, Clone)]
pub enum GenEntry {
    /// `link`: become a hardlink to an earlier non-directory of the same branch, if any.
    File {
        meta: GenMeta,
        content: String,
        mtime: i64,
        link: Option<Index>,
    },
    Symlink {
        target: &'static str,
        uid: u32,
        gid: u32,
        link: Option<Index>,
    },
    Dir(GenDir),
}

#[derive(Debug, Clone)]
pub struct GenDir {
    pub meta: GenMeta,
    pub opaque: bool,
    pub whiteouts: BTreeSet<&'static str>,
    pub entries: BTreeMap<&'static str, GenEntry>,
}

/// Branches top first; the first is the writable one.
#[derive(Debug, Clone)]
pub struct GenStack {
    pub branches: Vec<GenDir>,
    /// Permissions of the lower branches, in order (the first n-1 are used): `ro`, `rr`
    /// (nobody changes them: cacheable) or `rw` (changed in place, see DESIGN.md).
    pub perms: Vec<&'static str>,
}

fn id() -> impl Strategy<Value = u32> {
    prop_oneof![2 => Just(0u32), 2 => Just(1000u32), 1 => select(IDS.to_vec())]
}

fn meta(modes: &'static [u32]) -> impl Strategy<Value = GenMeta> {
    let xattr = proptest::option::weighted(0.2, (select(XATTR_NAMES.to_vec()), "[a-z]{1,3}"));
    (select(modes.to_vec()), id(), id(), xattr).prop_map(|(mode, uid, gid, xattr)| GenMeta {
        mode,
        uid,
        gid,
        xattr,
    })
}

fn mtime() -> impl Strategy<Value = i64> {
    (
        1_000_000_000i64..1_000_100_000,
        select(vec![0i64, 123_456_789]),
    )
        .prop_map(|(s, ns)| s * 1_000_000_000 + ns)
}

fn link() -> impl Strategy<Value = Option<Index>> {
    proptest::option::weighted(0.25, any::<Index>())
}

fn leaf_entry() -> BoxedStrategy<GenEntry> {
    prop_oneof![
        4 => (meta(&FILE_MODES), "[a-z]{0,6}", mtime(), link())
            .prop_map(|(meta, content, mtime, link)| GenEntry::File { meta, content, mtime, link }),
        1 => (select(TARGETS.to_vec()), id(), id(), link())
            .prop_map(|(target, uid, gid, link)| GenEntry::Symlink { target, uid, gid, link }),
    ]
    .boxed()
}

fn entry(depth: u32) -> BoxedStrategy<GenEntry> {
    if depth == 0 {
        return leaf_entry();
    }
    prop_oneof![3 => leaf_entry(), 2 => dir(depth - 1).prop_map(GenEntry::Dir)].boxed()
}

/// A directory whose subdirectories nest at most `depth` more levels.
pub fn dir(depth: u32) -> BoxedStrategy<GenDir> {
    (
        meta(&DIR_MODES),
        proptest::bool::weighted(0.15),
        proptest::collection::btree_set(select(NAMES.to_vec()), 0..=1),
        proptest::collection::btree_map(select(NAMES.to_vec()), entry(depth), 0..=3),
    )
        .prop_map(|(meta, opaque, whiteouts, entries)| GenDir {
            meta,
            opaque,
            whiteouts,
            entries,
        })
        .boxed()
}

/// 1 to 5 branches, trees at most three levels deep; lower branches `ro`, `rr` or `rw`.
pub fn stack() -> impl Strategy<Value = GenStack> {
    let perm = prop_oneof![5 => Just("ro"), 2 => Just("rr"), 2 => Just("rw")];
    (
        proptest::collection::vec(dir(2), 1..=5),
        proptest::collection::vec(perm, 4),
    )
        .prop_map(|(branches, perms)| GenStack { branches, perms })
}

fn to_meta(g: &GenMeta) -> Meta {
    let mut m = Meta::new(g.mode, g.uid, g.gid);
    if let Some((k, v)) = &g.xattr {
        m.xattrs.insert(k.to_string(), v.as_bytes().to_vec());
    }
    m
}

fn fill(b: &mut Branch, path: &str, d: &GenDir, leaves: &mut Vec<u64>) {
    if d.opaque {
        b.insert_marker(&join(path, OPQ));
    }
    for w in &d.whiteouts {
        b.insert_marker(&join(path, &format!("{WH}{w}")));
    }
    for (name, e) in &d.entries {
        let p = join(path, name);
        let (leaf, link) = match e {
            GenEntry::Dir(sub) => {
                b.insert_dir(&p, to_meta(&sub.meta));
                fill(b, &p, sub, leaves);
                continue;
            }
            GenEntry::File {
                meta,
                content,
                mtime,
                link,
            } => {
                let body = Body::File(content.as_bytes().to_vec());
                (Leaf::new(to_meta(meta), body, Some(*mtime)), link)
            }
            GenEntry::Symlink {
                target,
                uid,
                gid,
                link,
            } => {
                let body = Body::Symlink(target.to_string());
                (Leaf::new(Meta::new(0o777, *uid, *gid), body, None), link)
            }
        };
        let linkable = !(matches!(leaf.body, Body::Symlink(_)) && crate::knobs::no_symlink_links());
        match link {
            Some(i) if !leaves.is_empty() && linkable => {
                b.insert_link(&p, leaves[i.index(leaves.len())])
            }
            _ => {
                let ino = b.insert_leaf(&p, leaf);
                if linkable {
                    leaves.push(ino);
                }
            }
        }
    }
}

impl GenStack {
    /// The permission of each branch below the first.
    /// (`UNION_TESTS_LOWER_RW=off` turns `rw` into `ro`.)
    pub fn lower_perms(&self) -> Vec<&'static str> {
        let no_rw = crate::knobs::no_lower_rw();
        self.perms[..self.branches.len() - 1]
            .iter()
            .map(|p| if no_rw && *p == "rw" { "ro" } else { *p })
            .collect()
    }

    pub fn to_stack(&self) -> Stack {
        let branches = self
            .branches
            .iter()
            .map(|d| {
                let mut b = Branch::new(to_meta(&d.meta));
                fill(&mut b, "", d, &mut Vec::new());
                b
            })
            .collect();
        Stack { branches }
    }
}

fn path_sel() -> impl Strategy<Value = PathSel> {
    prop_oneof![
        4 => any::<Index>().prop_map(PathSel::Existing),
        3 => (any::<Index>(), select(NAMES.to_vec())).prop_map(|(i, n)| PathSel::Under(i, n)),
        1 => "[abcd](/[abcd]){0,2}".prop_map(PathSel::Fresh),
        1 => Just(PathSel::Root),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    "[A-Z]{1,5}".prop_map(String::into_bytes)
}

/// Offsets and lengths: mostly small, sometimes across a page or far out (a hole).
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..12, 1 => Just(4095u64), 1 => Just(70_003u64)]
}

/// One generated operation, run by root or (30%) by an unprivileged user.
pub fn op() -> impl Strategy<Value = Op<PathSel>> {
    prop_oneof![7 => root_op(), 3 => root_op().prop_map(|o| Op::AsUser(Box::new(o)))]
}

fn root_op() -> impl Strategy<Value = Op<PathSel>> {
    let p = path_sel;
    prop_oneof![
        3 => (p(), select(FILE_MODES.to_vec()), data())
            .prop_map(|(path, mode, data)| Op::Create { path, mode, data }),
        3 => (p(), offset(), data()).prop_map(|(path, offset, data)| Op::Write { path, offset, data }),
        2 => (p(), data()).prop_map(|(path, data)| Op::Append { path, data }),
        2 => (p(), offset(), any::<bool>())
            .prop_map(|(path, len, by_path)| Op::Truncate { path, len, by_path }),
        2 => (p(), select(FILE_MODES.to_vec())).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        2 => (p(), id(), id()).prop_map(|(path, uid, gid)| Op::Chown { path, uid, gid }),
        1 => (p(), mtime()).prop_map(|(path, ns)| Op::Utimens { path, ns }),
        2 => (p(), select(XATTR_NAMES.to_vec()), "[a-z]{1,3}").prop_map(|(path, n, v)| {
            Op::Setxattr { path, name: n.to_string(), value: v.into_bytes() }
        }),
        1 => (p(), select(XATTR_NAMES.to_vec()))
            .prop_map(|(path, n)| Op::Removexattr { path, name: n.to_string() }),
        3 => (p(), select(DIR_MODES.to_vec())).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        3 => p().prop_map(|path| Op::Rmdir { path }),
        3 => p().prop_map(|path| Op::Unlink { path }),
        4 => (p(), p()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => (p(), p()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (p(), p()).prop_map(|(from, to)| Op::RenameNoReplace { from, to }),
        2 => (p(), p()).prop_map(|(from, to)| Op::Exchange { from, to }),
        1 => (select(TARGETS.to_vec()), p())
            .prop_map(|(t, path)| Op::Symlink { target: t.to_string(), path }),
        5 => (0usize..2, p(), any::<bool>())
            .prop_map(|(slot, path, write)| Op::Open { slot, path, write }),
        3 => (0usize..2).prop_map(|slot| Op::ReadBack { slot }),
        2 => (0usize..2, data()).prop_map(|(slot, data)| Op::WriteBack { slot, data }),
        1 => Just(Op::Remount),
    ]
}

/// A sequence of up to `max` operations.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op<PathSel>>> {
    proptest::collection::vec(op(), 1..=max)
}
