//! Shell reproductions of a failing case: the branches as commands, the mount, the ops.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Body, Meta, Node, Stack};
use crate::ops::{shell, Op};

fn attrs(out: &mut String, path: &str, m: &Meta, symlink: bool) {
    let _ = writeln!(out, "chown -h {}:{} '{path}'", m.uid, m.gid);
    if !symlink {
        let _ = writeln!(out, "chmod {:o} '{path}'", m.mode);
        for (k, v) in &m.xattrs {
            let _ = writeln!(
                out,
                "setfattr -n {k} -v '{}' '{path}'",
                String::from_utf8_lossy(v)
            );
        }
    }
}

/// Commands that build the stack (lower branches mounted with permissions `lower`) in directories `B0` (top, rw), `B1`, ... of the current
/// directory, mount it on `$MNT` and run `ops` there.
pub fn script(stack: &Stack, ops: &[Op<String>], lower: &[&str]) -> String {
    let mut s = String::from("set -e; cd \"$(mktemp -d)\"; MNT=$PWD/mnt; mkdir mnt\n");
    for (i, b) in stack.branches.iter().enumerate() {
        let _ = writeln!(s, "mkdir B{i}");
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        let mut later = String::new();
        for (p, n) in &b.nodes {
            let path = if p.is_empty() {
                format!("B{i}")
            } else {
                format!("B{i}/{p}")
            };
            match n {
                Node::Dir(m) => {
                    if !p.is_empty() {
                        let _ = writeln!(s, "mkdir '{path}'");
                    }
                    attrs(&mut later, &path, m, false);
                }
                Node::Leaf(ino) => {
                    if let Some(f) = first.get(ino) {
                        let _ = writeln!(s, "ln '{f}' '{path}'");
                        continue;
                    }
                    first.insert(*ino, path.clone());
                    let leaf = b.leaf(*ino);
                    match &leaf.body {
                        Body::File(c) => {
                            let _ = writeln!(
                                s,
                                "printf %s '{}' > '{path}'",
                                String::from_utf8_lossy(c)
                            );
                        }
                        Body::Symlink(t) => {
                            let _ = writeln!(s, "ln -s '{t}' '{path}'");
                        }
                    }
                    let symlink = matches!(leaf.body, Body::Symlink(_));
                    attrs(&mut later, &path, &leaf.meta, symlink);
                    if let (Some(t), false) = (leaf.mtime, symlink) {
                        let (sec, ns) = (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000));
                        let _ = writeln!(later, "touch -d @{sec}.{ns:09} '{path}'");
                    }
                }
            }
        }
        s.push_str(&later);
    }
    let spec: Vec<String> = (0..stack.branches.len())
        .map(|i| format!("$PWD/B{i}={}", if i == 0 { "rw" } else { lower[i - 1] }))
        .collect();
    let _ = writeln!(s, "BRANCHES=\"{}\"", spec.join(":"));
    s.push_str("unionfs mount -o allow_other \"$BRANCHES\" \"$MNT\" && cd \"$MNT\"\n");
    for op in ops {
        let _ = writeln!(s, "{}", shell(op));
    }
    s
}
