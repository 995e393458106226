//! Real directories from model objects, and exact snapshots of directories.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::model::{Body, Branch, Meta, Node};
use crate::sys;
use crate::view::{VKind, View};

fn set_meta(full: &Path, meta: &Meta, is_symlink: bool) -> io::Result<()> {
    lchown(full, Some(meta.uid), Some(meta.gid))?;
    if !is_symlink {
        std::fs::set_permissions(full, std::fs::Permissions::from_mode(meta.mode))?;
        for (k, v) in &meta.xattrs {
            sys::lsetxattr(full, k, v)?;
        }
    }
    Ok(())
}

fn full(root: &Path, rel: &str) -> std::path::PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

/// Write `branch` under the existing empty directory `root`.
pub fn write_branch(branch: &Branch, root: &Path) -> io::Result<()> {
    let mut first: BTreeMap<u64, &str> = BTreeMap::new();
    for (p, n) in &branch.nodes {
        let f = full(root, p);
        match n {
            Node::Dir(_) if p.is_empty() => {}
            Node::Dir(_) => std::fs::create_dir(&f)?,
            Node::Leaf(ino) => {
                if let Some(src) = first.get(ino) {
                    std::fs::hard_link(full(root, src), &f)?;
                    continue;
                }
                first.insert(*ino, p);
                match &branch.leaf(*ino).body {
                    Body::File(c) => std::fs::write(&f, c)?,
                    Body::Symlink(t) => symlink(t, &f)?,
                }
            }
        }
    }
    // Attributes after all entries exist, times last, so that nothing touches them again.
    for (p, n) in &branch.nodes {
        match n {
            Node::Dir(m) => set_meta(&full(root, p), m, false)?,
            Node::Leaf(ino) if first[ino] == p.as_str() => {
                let leaf = branch.leaf(*ino);
                let f = full(root, p);
                set_meta(&f, &leaf.meta, matches!(leaf.body, Body::Symlink(_)))?;
                if let Some(t) = leaf.mtime {
                    sys::lutimens(&f, t)?;
                }
            }
            Node::Leaf(_) => {}
        }
    }
    Ok(())
}

/// Write a view as a plain tree (hardlink groups as hardlinks) under the empty dir `root`.
pub fn write_view(view: &View, root: &Path) -> io::Result<()> {
    for (p, e) in &view.entries {
        let f = full(root, p);
        match (&e.kind, &e.group) {
            (VKind::Dir, _) if p.is_empty() => {}
            (VKind::Dir, _) => std::fs::create_dir(&f)?,
            (_, Some(g)) if g != p => std::fs::hard_link(full(root, g), &f)?,
            (VKind::File(c), _) => std::fs::write(&f, c)?,
            (VKind::Symlink(t), _) => symlink(t, &f)?,
        }
    }
    for (p, e) in &view.entries {
        let f = full(root, p);
        let is_link = matches!(e.kind, VKind::Symlink(_));
        if e.group.as_deref().is_none_or(|g| g == p) {
            set_meta(&f, &e.meta, is_link)?;
            if let Some(t) = e.mtime {
                sys::lutimens(&f, t)?;
            }
        }
    }
    Ok(())
}

/// Everything `lstat` and friends say about one entry, except the access time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub ino: u64,
    pub nlink: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// An exact record of a tree, to prove a read-only branch was not touched.
pub fn raw_snapshot(root: &Path) -> io::Result<BTreeMap<String, RawEntry>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let f = full(root, &rel);
        let md = std::fs::symlink_metadata(&f)?;
        let data = if md.is_dir() {
            for e in std::fs::read_dir(&f)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                todo.push(crate::relpath::join(&rel, &name));
            }
            Vec::new()
        } else if md.file_type().is_symlink() {
            std::fs::read_link(&f)?
                .to_string_lossy()
                .into_owned()
                .into_bytes()
        } else {
            std::fs::read(&f)?
        };
        let e = RawEntry {
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            ino: md.ino(),
            nlink: md.nlink(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            data,
            xattrs: sys::user_xattrs(&f)?,
        };
        out.insert(rel, e);
    }
    Ok(out)
}

/// Panic naming the first differing entries when two raw snapshots differ.
pub fn assert_raw_unchanged(
    before: &BTreeMap<String, RawEntry>,
    after: &BTreeMap<String, RawEntry>,
    what: &str,
) {
    if before == after {
        return;
    }
    let mut lines = Vec::new();
    for k in before.keys().chain(after.keys()) {
        let (b, a) = (before.get(k), after.get(k));
        if b != a
            && !lines
                .iter()
                .any(|l: &String| l.starts_with(&format!("{k:?}")))
        {
            lines.push(format!("{k:?}:\n    before {b:?}\n    after  {a:?}"));
        }
    }
    panic!("{what} changed:\n  {}", lines.join("\n  "));
}

/// `e` with the operation and the path it failed on.
pub fn at(what: &str, rel: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {rel:?}: {e}"))
}

/// Inode numbers of the non-directories under `root`.
pub fn inode_numbers(root: &Path) -> io::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let f = full(root, &rel);
        let md = std::fs::symlink_metadata(&f).map_err(|e| at("lstat", &rel, e))?;
        if md.is_dir() {
            for e in std::fs::read_dir(&f).map_err(|e| at("readdir", &rel, e))? {
                let name = e?.file_name().to_string_lossy().into_owned();
                todo.push(crate::relpath::join(&rel, &name));
            }
        } else {
            out.insert(rel, md.ino());
        }
    }
    Ok(out)
}
