//! The mounts containerd performs for a snapshot: a pure function of its kind and directories.
//!
//! - an active snapshot without parents is a writable bind mount of its own directory (the
//!   first layer of an image is unpacked there);
//! - an active snapshot with parents is `fuse3.unionfs` with `lowerdir=` the parents' directories
//!   (nearest first, which is the union's top first), `upperdir=` and `workdir=` its own;
//! - a view with one parent is a read-only bind of that parent; a view with more parents is a
//!   read-only union (`lowerdir=` only); a view without parents is a read-only bind of its own
//!   empty directory.
//!
//! containerd 1.6 (`mount/mount_linux.go`) performs a `fuse3.*` mount by running
//! `mount.fuse3 SOURCE TARGET -o OPTIONS -t unionfs` (the type without its `fuse3.` prefix);
//! mount.fuse3 runs `/bin/sh -c 'unionfs SOURCE TARGET -o OPTIONS'`, so `unionfs` is looked up on
//! the `PATH` of whoever mounts: containerd (unpacking layers) and its runc shim (container
//! roots), which inherit containerd's environment.

use std::path::{Path, PathBuf};

/// The type containerd is told for a union mount.
pub const UNION_TYPE: &str = "fuse3.unionfs";

/// One mount, in containerd's terms (`containerd.types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

impl From<MountSpec> for containerd_snapshots::api::types::Mount {
    fn from(m: MountSpec) -> Self {
        containerd_snapshots::api::types::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        }
    }
}

/// Whether a snapshot is writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

/// The directories of one snapshot.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Its own tree (the union's upper directory).
    pub fs: PathBuf,
    /// unionfs's work directory (copy-ups are built there), on the same filesystem as `fs`.
    pub work: PathBuf,
}

/// The mounts of a snapshot with directories `own`, writable or not, whose parents' trees are
/// `parents` (nearest first).
pub fn for_snapshot(access: Access, own: &Dirs, parents: &[PathBuf]) -> Vec<MountSpec> {
    let bind = |source: &Path, ro: bool| MountSpec {
        kind: "bind".into(),
        source: source.display().to_string(),
        options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
    };
    match (access, parents) {
        (Access::ReadWrite, []) => vec![bind(&own.fs, false)],
        (Access::ReadOnly, []) => vec![bind(&own.fs, true)],
        (Access::ReadOnly, [only]) => vec![bind(only, true)],
        (Access::ReadOnly, _) => vec![MountSpec {
            kind: UNION_TYPE.into(),
            source: "unionfs".into(),
            options: vec![lowerdir(parents), "allow_other".into()],
        }],
        (Access::ReadWrite, _) => vec![MountSpec {
            kind: UNION_TYPE.into(),
            source: "unionfs".into(),
            options: vec![
                lowerdir(parents),
                format!("upperdir={}", own.fs.display()),
                format!("workdir={}", own.work.display()),
                // Containers run processes as other users; without allow_other only the
                // mounting user may enter a FUSE mount.
                "allow_other".into(),
            ],
        }],
    }
}

fn lowerdir(parents: &[PathBuf]) -> String {
    let dirs: Vec<String> = parents.iter().map(|p| p.display().to_string()).collect();
    format!("lowerdir={}", dirs.join(":"))
}

/// Why `root` cannot hold snapshot directories whose paths go into mount options unescaped
/// (`,` separates options, `:` separates lower directories), if it cannot.
pub fn unusable_root(root: &Path) -> Option<String> {
    let s = root.to_str()?;
    s.contains([',', ':']).then(|| {
        format!("{s:?} contains ',' or ':', which separate mount options and lower directories")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(id: u32) -> Dirs {
        Dirs {
            fs: PathBuf::from(format!("/r/snapshots/{id}/fs")),
            work: PathBuf::from(format!("/r/snapshots/{id}/work")),
        }
    }

    #[test]
    fn an_active_snapshot_without_parents_is_a_writable_bind() {
        let m = for_snapshot(Access::ReadWrite, &dirs(1), &[]);
        assert_eq!(
            m,
            vec![MountSpec {
                kind: "bind".into(),
                source: "/r/snapshots/1/fs".into(),
                options: vec!["rw".into(), "rbind".into()],
            }]
        );
    }

    #[test]
    fn an_active_snapshot_with_parents_is_a_union_top_first() {
        let parents = [dirs(3).fs, dirs(2).fs, dirs(1).fs];
        let m = for_snapshot(Access::ReadWrite, &dirs(4), &parents);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, "fuse3.unionfs");
        assert_eq!(
            m[0].options,
            vec![
                "lowerdir=/r/snapshots/3/fs:/r/snapshots/2/fs:/r/snapshots/1/fs".to_string(),
                "upperdir=/r/snapshots/4/fs".into(),
                "workdir=/r/snapshots/4/work".into(),
                "allow_other".into(),
            ]
        );
    }

    #[test]
    fn views_are_read_only() {
        let one = for_snapshot(Access::ReadOnly, &dirs(5), &[dirs(1).fs]);
        assert_eq!(one[0].kind, "bind");
        assert_eq!(one[0].source, "/r/snapshots/1/fs");
        assert_eq!(one[0].options[0], "ro");
        let two = for_snapshot(Access::ReadOnly, &dirs(5), &[dirs(2).fs, dirs(1).fs]);
        assert_eq!(two[0].kind, "fuse3.unionfs");
        assert!(two[0].options.iter().all(|o| !o.starts_with("upperdir=")));
        let none = for_snapshot(Access::ReadOnly, &dirs(5), &[]);
        assert_eq!(
            (none[0].source.as_str(), none[0].options[0].as_str()),
            ("/r/snapshots/5/fs", "ro")
        );
    }

    #[test]
    fn roots_with_option_separators_are_refused() {
        assert!(unusable_root(Path::new("/var/lib/a,b")).is_some());
        assert!(unusable_root(Path::new("/var/lib/a:b")).is_some());
        assert!(unusable_root(Path::new("/var/lib/unionfs-snapshotter")).is_none());
    }
}
