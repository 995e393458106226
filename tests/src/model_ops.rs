//! How the model carries out an operation: the errno a plain filesystem would return, and on
//! success the change to the writable branch (branch 0) by the rules of DESIGN.md: copy-up
//! (with the parent chain and the whole hardlink group), `.wh.NAME` on removal of what a lower
//! branch still shows, the whiteout removed on creation, `.wh..wh..opq` on a directory that
//! would otherwise let lower content through.

use crate::model::{Body, Leaf, Meta, Node, Resolved, Stack, OPQ, WH};
use crate::ops::{Op, Outcome};
use crate::relpath::{ancestors, is_below, join, parent, split_name};
use crate::view::{VKind, View};

use libc::{EBADF, EEXIST, EINVAL, EISDIR, ELOOP, ENODATA, ENOENT, ENOTDIR, ENOTEMPTY, EPERM};

/// What the model knows of an open fd: the object (`None`: a directory), its access mode,
/// and for a read-only fd of a file that lived in a read-only branch, that file's bytes: such
/// an fd keeps reading the lower file after a copy-up (unionfs/SEMANTICS.md, as overlayfs),
/// and lower files never change.
#[derive(Debug, Clone)]
pub struct Slot {
    pub oid: Option<u64>,
    pub write: bool,
    /// The branch the file lived in and its bytes, when that branch is not the top one.
    pub lower_data: Option<(usize, Vec<u8>)>,
}

/// The model's fds, one per slot.
pub type ModelSlots = [Option<Slot>; 2];

/// The unprivileged identity some operations run as (`Op::AsUser`): fsuid and fsgid.
pub const USER: (u32, u32) = (1000, 1000);

fn kind<'v>(view: &'v View, path: &str) -> Option<&'v VKind> {
    view.get(path).map(|e| &e.kind)
}

/// Path resolution of the parent directories, as the kernel does it.
fn walk_parent(view: &View, path: &str) -> Outcome {
    for a in ancestors(path) {
        match kind(view, a) {
            None => return Err(ENOENT),
            Some(VKind::Dir) => {}
            Some(_) => return Err(ENOTDIR),
        }
    }
    Ok(())
}

/// False for operations the harness skips: those that would follow a symlink (through a
/// parent component, or chmod/truncate(2) of a symlink). Symlinks in layers are data; following
/// them is not what these tests are about.
pub fn applicable(view: &View, op: &Op<String>) -> bool {
    let follows_parent = op.paths().iter().any(|p| {
        ancestors(p)
            .into_iter()
            .any(|a| matches!(kind(view, a), Some(VKind::Symlink(_))))
    });
    let follows_last = match op {
        Op::Chmod { path, .. }
        | Op::Truncate {
            path,
            by_path: true,
            ..
        } => {
            matches!(kind(view, path), Some(VKind::Symlink(_)))
        }
        _ => false,
    };
    // The root only takes attribute changes and opens (rmdir or rename of a mount root is
    // EBUSY, of the plain directory's root something else).
    let on_root = op.paths().iter().any(|p| p.is_empty())
        && !matches!(
            op,
            Op::Chmod { .. }
                | Op::Chown { .. }
                | Op::Utimens { .. }
                | Op::Setxattr { .. }
                | Op::Removexattr { .. }
                | Op::Open { .. }
        );
    !follows_parent && !follows_last && !on_root
}

impl Stack {
    fn whiteout_path(path: &str) -> String {
        let (dir, name) = split_name(path);
        join(dir, &format!("{WH}{name}"))
    }

    /// Make sure the directory `path` and its parents exist in the writable branch, with the
    /// attributes the union shows for them. They keep merging with lower directories.
    fn copy_up_dirs(&mut self, path: &str) {
        let mut chain = ancestors(path);
        if !path.is_empty() {
            chain.push(path);
        }
        for d in chain {
            if self.branches[0].is_dir(d) {
                continue;
            }
            let Some(Resolved::Dir(bs)) = self.resolve(d) else {
                panic!("model: copy-up of non-dir {d:?}");
            };
            let meta = self.dir_meta(&bs, d).clone();
            self.branches[0].insert_dir(d, meta);
        }
    }

    /// Copy a non-directory up with every visible name of its hardlink group; its inode in
    /// the writable branch.
    fn copy_up_leaf(&mut self, path: &str) -> u64 {
        let Some(Resolved::Leaf(b, ino)) = self.resolve(path) else {
            panic!("model: copy-up of non-leaf {path:?}");
        };
        if b == 0 {
            return ino;
        }
        let leaf = self.branches[b].leaf(ino).clone();
        let group: Vec<String> = self
            .walk()
            .into_iter()
            .filter(|(_, r)| *r == Resolved::Leaf(b, ino))
            .map(|(p, _)| p)
            .collect();
        let mut new = None;
        for g in group {
            self.copy_up_dirs(parent(&g));
            match new {
                None => new = Some(self.branches[0].insert_leaf(&g, leaf.clone())),
                Some(i) => self.branches[0].insert_link(&g, i),
            }
        }
        new.expect("the path itself is in its group")
    }

    /// Copy a whole merged directory up, deep, and make it opaque: what a rename must move.
    fn copy_up_tree(&mut self, path: &str) {
        self.copy_up_dirs(path);
        for name in self.list(path) {
            let child = join(path, &name);
            match self.resolve(&child) {
                Some(Resolved::Dir(_)) => self.copy_up_tree(&child),
                Some(Resolved::Leaf(..)) => {
                    self.copy_up_leaf(&child);
                }
                None => unreachable!("listed"),
            }
        }
        let marker = join(path, OPQ);
        if !self.branches[0].has(&marker) {
            self.branches[0].insert_marker(&marker);
        }
    }

    /// After the writable branch lost `path`: hide what lower branches still show there.
    fn whiteout_if_visible(&mut self, path: &str) {
        if self.resolve(path).is_some() {
            self.branches[0].insert_marker(&Self::whiteout_path(path));
        }
    }

    /// Before creating `path` in the writable branch: its parents up, its whiteout gone.
    fn prepare_create(&mut self, path: &str) {
        self.copy_up_dirs(parent(path));
        let wh = Self::whiteout_path(path);
        if self.branches[0].has(&wh) {
            self.branches[0].remove_tree(&wh);
        }
    }

    /// A directory just created at `path` must not show lower content.
    fn opaque_if_leaking(&mut self, path: &str) {
        if !self.list(path).is_empty() {
            self.branches[0].insert_marker(&join(path, OPQ));
        }
    }

    fn meta_mut(&mut self, path: &str) -> &mut Meta {
        match self.resolve(path) {
            Some(Resolved::Dir(_)) => {
                self.copy_up_dirs(path);
                self.branches[0].dir_meta_mut(path)
            }
            Some(Resolved::Leaf(..)) => {
                let ino = self.copy_up_leaf(path);
                &mut self.branches[0].leaf_mut(ino).meta
            }
            None => unreachable!("checked"),
        }
    }

    fn file_mut(&mut self, path: &str) -> &mut Leaf {
        let ino = self.copy_up_leaf(path);
        self.branches[0].leaf_mut(ino)
    }

    /// Carry out `op` (which must be `applicable`).
    pub fn apply(&mut self, op: &Op<String>) -> Outcome {
        self.apply_as(op, (0, 0))
    }

    /// Carry out `op` for a caller with fsuid and fsgid `creds`, who owns what it creates.
    /// Permission checks are not modelled: the harness takes EACCES and EPERM of an
    /// unprivileged caller from the plain filesystem.
    pub fn apply_as(&mut self, op: &Op<String>, creds: (u32, u32)) -> Outcome {
        let owner = creds;
        let view = self.view();
        let get = |p: &str| kind(&view, p).cloned();
        match op {
            Op::Create { path, mode, data } => {
                walk_parent(&view, path)?;
                if get(path).is_some() {
                    return Err(EEXIST);
                }
                self.prepare_create(path);
                let leaf = Leaf::new(
                    Meta::new(mode & 0o7777, owner.0, owner.1),
                    Body::File(data.clone()),
                    None,
                );
                self.branches[0].insert_leaf(path, leaf);
            }
            Op::Write { path, .. } | Op::Append { path, .. } | Op::Truncate { path, .. } => {
                walk_parent(&view, path)?;
                match get(path) {
                    None => return Err(ENOENT),
                    Some(VKind::Dir) => return Err(EISDIR),
                    Some(VKind::Symlink(_)) => return Err(ELOOP),
                    Some(VKind::File(_)) => {}
                }
                let leaf = self.file_mut(path);
                leaf.mtime = None;
                let Body::File(c) = &mut leaf.body else {
                    unreachable!()
                };
                match op {
                    Op::Write { offset, data, .. } => {
                        let end = *offset as usize + data.len();
                        if c.len() < end {
                            c.resize(end, 0);
                        }
                        c[*offset as usize..end].copy_from_slice(data);
                    }
                    Op::Append { data, .. } => c.extend_from_slice(data),
                    Op::Truncate { len, .. } => c.resize(*len as usize, 0),
                    _ => unreachable!(),
                }
            }
            Op::Chmod { path, mode } => {
                walk_parent(&view, path)?;
                get(path).ok_or(ENOENT)?;
                self.meta_mut(path).mode = mode & 0o7777;
            }
            Op::Chown { path, uid, gid } => {
                walk_parent(&view, path)?;
                get(path).ok_or(ENOENT)?;
                let m = self.meta_mut(path);
                (m.uid, m.gid) = (*uid, *gid);
            }
            Op::Utimens { path, ns } => {
                walk_parent(&view, path)?;
                match get(path).ok_or(ENOENT)? {
                    VKind::File(_) => self.file_mut(path).mtime = Some(*ns),
                    // Times of directories and symlinks are not part of the view; the copy-up
                    // still happens.
                    _ => {
                        self.meta_mut(path);
                    }
                }
            }
            Op::Removexattr { path, name } => {
                walk_parent(&view, path)?;
                let e = view.get(path).ok_or(ENOENT)?;
                if matches!(e.kind, VKind::Symlink(_)) {
                    return Err(EPERM); // no user.* xattrs on symlinks
                }
                if !e.meta.xattrs.contains_key(name) {
                    return Err(ENODATA);
                }
                self.meta_mut(path).xattrs.remove(name);
            }
            Op::Setxattr { path, name, value } => {
                walk_parent(&view, path)?;
                match get(path).ok_or(ENOENT)? {
                    VKind::Symlink(_) => return Err(EPERM),
                    _ => {
                        self.meta_mut(path)
                            .xattrs
                            .insert(name.clone(), value.clone());
                    }
                }
            }
            Op::Mkdir { path, mode } => {
                walk_parent(&view, path)?;
                if get(path).is_some() {
                    return Err(EEXIST);
                }
                self.prepare_create(path);
                self.branches[0].insert_dir(path, Meta::new(mode & 0o7777, owner.0, owner.1));
                self.opaque_if_leaking(path);
            }
            Op::Rmdir { path } => {
                walk_parent(&view, path)?;
                match get(path) {
                    None => return Err(ENOENT),
                    Some(VKind::Dir) => {}
                    Some(_) => return Err(ENOTDIR),
                }
                if !self.list(path).is_empty() {
                    return Err(ENOTEMPTY);
                }
                self.remove(path);
            }
            Op::Unlink { path } => {
                walk_parent(&view, path)?;
                match get(path) {
                    None => return Err(ENOENT),
                    Some(VKind::Dir) => return Err(EISDIR),
                    Some(_) => {}
                }
                self.remove(path);
            }
            Op::Rename { from, to } => return self.rename(&view, from, to),
            Op::RenameNoReplace { from, to } => {
                walk_parent(&view, from)?;
                walk_parent(&view, to)?;
                view.get(from).ok_or(ENOENT)?;
                if view.get(to).is_some() {
                    return Err(EEXIST); // checked before the ancestor traps
                }
                return self.rename(&view, from, to);
            }
            Op::Exchange { from, to } => return self.exchange(&view, from, to),
            Op::Link { from, to } => {
                walk_parent(&view, from)?;
                let src = get(from).ok_or(ENOENT)?;
                walk_parent(&view, to)?;
                if get(to).is_some() {
                    return Err(EEXIST);
                }
                if src == VKind::Dir {
                    return Err(EPERM);
                }
                let ino = self.copy_up_leaf(from);
                self.prepare_create(to);
                self.branches[0].insert_link(to, ino);
            }
            Op::Symlink { target, path } => {
                walk_parent(&view, path)?;
                if get(path).is_some() {
                    return Err(EEXIST);
                }
                self.prepare_create(path);
                let leaf = Leaf::new(
                    Meta::new(0o777, owner.0, owner.1),
                    Body::Symlink(target.clone()),
                    None,
                );
                self.branches[0].insert_leaf(path, leaf);
            }
            Op::Remount => {}
            Op::Open { .. } | Op::ReadBack { .. } | Op::WriteBack { .. } => {
                unreachable!("handle operations go through apply_handle")
            }
            Op::AsUser(inner) => return self.apply_as(inner, USER),
        }
        Ok(())
    }

    /// Carry out a handle operation (`Open`, `ReadBack`, `WriteBack`) whose slot is open.
    /// The bytes a read returns are not predicted: the harness compares the mount's with the
    /// plain directory's.
    pub fn apply_handle(&mut self, slots: &mut ModelSlots, op: &Op<String>) -> Outcome {
        let view = self.view();
        match op {
            Op::Open { slot, path, write } => {
                walk_parent(&view, path)?;
                let mut lower_data = None;
                let oid = match view.get(path).map(|e| &e.kind).ok_or(ENOENT)? {
                    VKind::Symlink(_) => return Err(ELOOP),
                    VKind::Dir if *write => return Err(EISDIR),
                    VKind::Dir => None,
                    VKind::File(_) if *write => {
                        let ino = self.copy_up_leaf(path);
                        Some(self.branches[0].leaf(ino).oid)
                    }
                    VKind::File(c) => {
                        if let Some(Resolved::Leaf(b, _)) = self.resolve(path) {
                            if b > 0 {
                                lower_data = Some((b, c.clone()));
                            }
                        }
                        self.oids().get(path.as_str()).copied()
                    }
                };
                slots[*slot] = Some(Slot {
                    oid,
                    write: *write,
                    lower_data,
                });
            }
            Op::ReadBack { slot } => {
                if let Some(Slot { oid: None, .. }) = slots[*slot] {
                    return Err(EISDIR);
                }
            }
            Op::WriteBack { slot, data } => {
                let Some(Slot {
                    oid: Some(oid),
                    write: true,
                    ..
                }) = slots[*slot]
                else {
                    return Err(EBADF);
                };
                // The object, wherever it is named now in the writable branch (an fd opened
                // for writing copied it up); nothing visible if it lost all its names.
                let rw = &mut self.branches[0];
                if let Some(leaf) = rw.leaves.values_mut().find(|l| l.oid == oid) {
                    let Body::File(c) = &mut leaf.body else {
                        unreachable!()
                    };
                    if c.len() < data.len() {
                        c.resize(data.len(), 0);
                    }
                    c[..data.len()].copy_from_slice(data);
                    leaf.mtime = None;
                }
            }
            _ => unreachable!("not a handle operation"),
        }
        Ok(())
    }

    /// Remove a visible name: drop the writable copy, white out what lower branches still show.
    fn remove(&mut self, path: &str) {
        self.copy_up_dirs(parent(path));
        if self.branches[0].has(path) {
            self.branches[0].remove_tree(path);
        }
        self.whiteout_if_visible(path);
    }

    fn exchange(&mut self, view: &View, from: &str, to: &str) -> Outcome {
        walk_parent(view, from)?;
        walk_parent(view, to)?;
        let src = view.get(from).ok_or(ENOENT)?;
        let dst = view.get(to).ok_or(ENOENT)?;
        if is_below(to, from) || is_below(from, to) {
            return Err(EINVAL);
        }
        if from == to || src.kind != VKind::Dir && src.group.is_some() && src.group == dst.group {
            return Ok(());
        }
        for (p, e) in [(from, src), (to, dst)] {
            if e.kind == VKind::Dir {
                self.copy_up_tree(p);
            } else {
                self.copy_up_leaf(p);
            }
        }
        let tmp = join(parent(from), "\u{1}exchange");
        let rw = &mut self.branches[0];
        rw.move_tree(from, &tmp);
        rw.move_tree(to, from);
        rw.move_tree(&tmp, to);
        Ok(())
    }

    fn rename(&mut self, view: &View, from: &str, to: &str) -> Outcome {
        walk_parent(view, from)?;
        walk_parent(view, to)?;
        let src = view.get(from).ok_or(ENOENT)?;
        if is_below(to, from) {
            return Err(EINVAL);
        }
        if is_below(from, to) {
            return Err(ENOTEMPTY);
        }
        if from == to {
            return Ok(());
        }
        let src_dir = src.kind == VKind::Dir;
        if let Some(dst) = view.get(to) {
            let dst_dir = dst.kind == VKind::Dir;
            if !src_dir && src.group.is_some() && src.group == dst.group {
                return Ok(()); // two names of one inode: rename(2) does nothing
            }
            match (src_dir, dst_dir) {
                (true, false) => return Err(ENOTDIR),
                (false, true) => return Err(EISDIR),
                (true, true) if !self.list(to).is_empty() => return Err(ENOTEMPTY),
                _ => {}
            }
        }
        if src_dir {
            self.copy_up_tree(from);
        } else {
            self.copy_up_leaf(from);
        }
        self.prepare_create(to);
        if self.branches[0].has(to) {
            self.branches[0].remove_tree(to);
        }
        self.branches[0].move_tree(from, to);
        self.whiteout_if_visible(from);
        debug_assert!(matches!(
            self.branches[0].node(to),
            Some(Node::Dir(_) | Node::Leaf(_))
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stackbuild::StackBuilder;

    fn names(s: &Stack) -> Vec<String> {
        s.view().entries.into_keys().collect()
    }

    fn rw_has(s: &Stack, p: &str) -> bool {
        s.branches[0].has(p)
    }

    #[test]
    fn write_copies_up_the_whole_link_group() {
        let mut s = StackBuilder::new(2)
            .dir(1, "d")
            .file(1, "d/x", "old")
            .link(1, "y", "d/x")
            .build();
        let op = Op::Write {
            path: "y".to_string(),
            offset: 0,
            data: b"NEW".to_vec(),
        };
        assert_eq!(s.apply(&op), Ok(()));
        assert!(rw_has(&s, "d/x") && rw_has(&s, "y") && rw_has(&s, "d"));
        let v = s.view();
        assert_eq!(v.entries["d/x"].kind, VKind::File(b"NEW".to_vec()));
        assert_eq!(v.entries["d/x"].nlink, Some(2));
    }

    #[test]
    fn unlink_of_lower_name_leaves_a_whiteout() {
        let mut s = StackBuilder::new(2)
            .file(0, "x", "up")
            .file(1, "x", "low")
            .build();
        assert_eq!(s.apply(&Op::Unlink { path: "x".into() }), Ok(()));
        assert!(rw_has(&s, ".wh.x") && !rw_has(&s, "x"));
        assert_eq!(names(&s), [""]);
        assert_eq!(s.apply(&Op::Unlink { path: "x".into() }), Err(ENOENT));
    }

    #[test]
    fn mkdir_where_a_whiteout_stood_is_opaque() {
        let mut s = StackBuilder::new(2)
            .whiteout(0, "d")
            .dir(1, "d")
            .file(1, "d/old", "")
            .build();
        assert_eq!(
            s.apply(&Op::Mkdir {
                path: "d".into(),
                mode: 0o755
            }),
            Ok(())
        );
        assert!(rw_has(&s, "d/.wh..wh..opq") && !rw_has(&s, ".wh.d"));
        assert_eq!(names(&s), ["", "d"]);
    }

    #[test]
    fn rmdir_of_merged_dir_with_only_whiteouts_in_rw() {
        let mut s = StackBuilder::new(2)
            .dir(0, "d")
            .whiteout(0, "d/f")
            .dir(1, "d")
            .file(1, "d/f", "")
            .build();
        assert_eq!(s.apply(&Op::Rmdir { path: "d".into() }), Ok(()));
        assert!(rw_has(&s, ".wh.d") && !rw_has(&s, "d"));
        assert_eq!(names(&s), [""]);
    }

    #[test]
    fn rename_of_merged_dir_moves_everything() {
        let mut s = StackBuilder::new(3)
            .dir(0, "d")
            .file(0, "d/top", "t")
            .dir(1, "d")
            .file(1, "d/mid", "m")
            .dir(2, "d")
            .dir(2, "d/sub")
            .file(2, "d/sub/low", "l")
            .build();
        assert_eq!(
            s.apply(&Op::Rename {
                from: "d".into(),
                to: "e".into()
            }),
            Ok(())
        );
        assert_eq!(names(&s), ["", "e", "e/mid", "e/sub", "e/sub/low", "e/top"]);
        assert!(rw_has(&s, ".wh.d") && rw_has(&s, "e/.wh..wh..opq"));
    }

    #[test]
    fn errnos_of_a_plain_fs() {
        let mut s = StackBuilder::new(2)
            .dir(1, "d")
            .file(1, "d/f", "")
            .file(1, "x", "")
            .build();
        let r = |s: &mut Stack, op: Op<String>| s.apply(&op);
        assert_eq!(r(&mut s, Op::Rmdir { path: "d".into() }), Err(ENOTEMPTY));
        assert_eq!(r(&mut s, Op::Unlink { path: "d".into() }), Err(EISDIR));
        assert_eq!(
            r(
                &mut s,
                Op::Mkdir {
                    path: "x/y".into(),
                    mode: 0o755
                }
            ),
            Err(ENOTDIR)
        );
        assert_eq!(
            r(
                &mut s,
                Op::Rename {
                    from: "d".into(),
                    to: "d/f/g".into()
                }
            ),
            Err(ENOTDIR)
        );
        assert_eq!(
            r(
                &mut s,
                Op::Rename {
                    from: "d".into(),
                    to: "d/g".into()
                }
            ),
            Err(EINVAL)
        );
        assert_eq!(
            r(
                &mut s,
                Op::Link {
                    from: "d".into(),
                    to: "e".into()
                }
            ),
            Err(EPERM)
        );
        assert_eq!(
            r(
                &mut s,
                Op::Rename {
                    from: "x".into(),
                    to: "d".into()
                }
            ),
            Err(EISDIR)
        );
    }
}
