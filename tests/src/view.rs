//! A merged view as a plain filesystem would show it, read from a real directory (a mount, a
//! plain copy, a squashed layer) or computed by the model, and the comparison of two views.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::model::Meta;
use crate::relpath::join;
use crate::sys;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One visible object. Directories carry no link count, group or time: those depend on the
/// filesystem underneath, not on the union rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VEntry {
    pub kind: VKind,
    /// `mode` holds permission bits only (`& 0o7777`).
    pub meta: Meta,
    /// Modification time (ns); `None` in an expected view means "not checked".
    pub mtime: Option<i64>,
    pub nlink: Option<u64>,
    /// First path (in sorted order) of the hardlink group this object belongs to.
    pub group: Option<String>,
}

impl VEntry {
    pub fn dir(meta: Meta) -> VEntry {
        VEntry {
            kind: VKind::Dir,
            meta,
            mtime: None,
            nlink: None,
            group: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    pub entries: BTreeMap<String, VEntry>,
}

impl View {
    /// Read the tree under `root` with `lstat`, `readdir`, `readlink`, `read` and user xattrs.
    pub fn snapshot(root: &Path) -> io::Result<View> {
        let mut raw: BTreeMap<String, (VEntry, (u64, u64))> = BTreeMap::new();
        let mut todo = vec![String::new()];
        while let Some(rel) = todo.pop() {
            let full = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(&rel)
            };
            let md =
                std::fs::symlink_metadata(&full).map_err(|e| crate::disk::at("lstat", &rel, e))?;
            let meta = Meta {
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                xattrs: sys::user_xattrs(&full)?,
            };
            let ft = md.file_type();
            let entry = if ft.is_dir() {
                let mut names: Vec<String> = std::fs::read_dir(&full)
                    .map_err(|e| crate::disk::at("readdir", &rel, e))?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<io::Result<_>>()?;
                names.sort();
                todo.extend(names.iter().map(|n| join(&rel, n)));
                VEntry::dir(meta)
            } else {
                let kind = if ft.is_symlink() {
                    VKind::Symlink(std::fs::read_link(&full)?.to_string_lossy().into_owned())
                } else if ft.is_file() {
                    VKind::File(std::fs::read(&full).map_err(|e| crate::disk::at("read", &rel, e))?)
                } else {
                    return Err(io::Error::other(format!(
                        "unexpected file type at {full:?}"
                    )));
                };
                VEntry {
                    kind,
                    meta,
                    mtime: Some(md.mtime() * 1_000_000_000 + md.mtime_nsec()),
                    nlink: Some(md.nlink()),
                    group: None,
                }
            };
            raw.insert(rel, (entry, (md.dev(), md.ino())));
        }
        let mut first: BTreeMap<(u64, u64), String> = BTreeMap::new();
        let mut entries = BTreeMap::new();
        for (p, (mut e, id)) in raw {
            if e.kind != VKind::Dir {
                e.group = Some(first.entry(id).or_insert_with(|| p.clone()).clone());
            }
            entries.insert(p, e);
        }
        Ok(View { entries })
    }

    /// Differences between `self` (expected) and `actual`, one line each; empty when equal.
    /// An expected `mtime` of `None` is not checked.
    pub fn diff(&self, actual: &View) -> Vec<String> {
        let mut out = Vec::new();
        let keys: std::collections::BTreeSet<&String> =
            self.entries.keys().chain(actual.entries.keys()).collect();
        for k in keys {
            match (self.entries.get(k), actual.entries.get(k)) {
                (Some(e), None) => out.push(format!("missing {k:?}: expected {}", show(e))),
                (None, Some(a)) => out.push(format!("unexpected {k:?}: {}", show(a))),
                (Some(e), Some(a)) => {
                    let mut a = a.clone();
                    if e.mtime.is_none() {
                        a.mtime = None;
                    }
                    if *e != a {
                        out.push(format!(
                            "differs {k:?}:\n    expected {}\n    actual   {}",
                            show(e),
                            show(&a)
                        ));
                    }
                }
                (None, None) => unreachable!(),
            }
        }
        out
    }

    /// Panic with a readable diff when the views differ.
    pub fn assert_matches(&self, actual: &View, what: &str) {
        let d = self.diff(actual);
        assert!(d.is_empty(), "{what}: views differ:\n  {}", d.join("\n  "));
    }

    /// Paths of all visible objects except the root, sorted.
    pub fn paths(&self) -> Vec<&str> {
        self.entries
            .keys()
            .filter(|k| !k.is_empty())
            .map(String::as_str)
            .collect()
    }

    pub fn get(&self, path: &str) -> Option<&VEntry> {
        self.entries.get(path)
    }

    pub fn is_dir(&self, path: &str) -> bool {
        matches!(
            self.get(path),
            Some(VEntry {
                kind: VKind::Dir,
                ..
            })
        )
    }
}

/// One line per entry, compact.
pub fn show(e: &VEntry) -> String {
    let mut s = match &e.kind {
        VKind::Dir => "dir".to_string(),
        VKind::File(c) if c.len() > 48 => {
            let nonzero: Vec<(usize, u8)> = c
                .iter()
                .copied()
                .enumerate()
                .filter(|(_, b)| *b != 0)
                .collect();
            format!("file of {} bytes, non-zero bytes at {nonzero:?}", c.len())
        }
        VKind::File(c) => format!("file {:?}", String::from_utf8_lossy(c)),
        VKind::Symlink(t) => format!("symlink -> {t:?}"),
    };
    let _ = write!(
        s,
        " mode {:o} owner {}:{}",
        e.meta.mode, e.meta.uid, e.meta.gid
    );
    if !e.meta.xattrs.is_empty() {
        let x: Vec<String> = e
            .meta
            .xattrs
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        let _ = write!(s, " xattrs [{}]", x.join(","));
    }
    if let Some(m) = e.mtime {
        let _ = write!(
            s,
            " mtime {}.{:09}",
            m.div_euclid(1_000_000_000),
            m.rem_euclid(1_000_000_000)
        );
    }
    if let Some(n) = e.nlink {
        let _ = write!(s, " nlink {n}");
    }
    if let Some(g) = &e.group {
        let _ = write!(s, " group {g:?}");
    }
    s
}
