//! The pure readdir rule: the union of the branches' entries, upper winning a name, without
//! whiteout and marker names and without the names they hide.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};

use crate::whiteout::{classify, EntryKind};

/// One raw entry of one branch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: OsString,
    /// `libc::DT_*` type.
    pub dtype: u8,
    pub ino: u64,
    /// An overlayfs whiteout (char device 0/0) in a read-only branch.
    pub overlay_whiteout: bool,
}

/// One entry of the merged directory, with the branch it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEntry {
    pub name: OsString,
    pub dtype: u8,
    pub ino: u64,
    pub branch: usize,
}

/// Merges the listings of a directory's branches, given top first. `.` and `..` are left out
/// (the caller adds them once).
pub fn merge_entries(branches: &[(usize, Vec<RawEntry>)]) -> Vec<MergedEntry> {
    let mut seen: HashSet<OsString> = HashSet::new();
    let mut hidden: HashSet<OsString> = HashSet::new();
    let mut out = Vec::new();
    for (branch, entries) in branches {
        // Whiteouts of this branch hide names of lower branches only.
        let mut hides_below: Vec<OsString> = Vec::new();
        for e in entries {
            if e.name == OsStr::new(".") || e.name == OsStr::new("..") {
                continue;
            }
            match classify(&e.name) {
                EntryKind::Whiteout(target) => hides_below.push(target),
                EntryKind::Opaque | EntryKind::Meta => {}
                EntryKind::Plain if e.overlay_whiteout => hides_below.push(e.name.clone()),
                EntryKind::Plain => {
                    if hidden.contains(&e.name) || !seen.insert(e.name.clone()) {
                        continue;
                    }
                    out.push(MergedEntry {
                        name: e.name.clone(),
                        dtype: e.dtype,
                        ino: e.ino,
                        branch: *branch,
                    });
                }
            }
        }
        hidden.extend(hides_below);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(name: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            dtype: libc::DT_REG,
            ino: 1,
            overlay_whiteout: false,
        }
    }

    fn names(v: &[MergedEntry]) -> Vec<(String, usize)> {
        v.iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.branch))
            .collect()
    }

    #[test]
    fn seed_example_merges_with_upper_winning() {
        let m = merge_entries(&[(0, vec![raw("a"), raw("x")]), (1, vec![raw("b"), raw("x")])]);
        assert_eq!(
            names(&m),
            vec![("a".into(), 0), ("x".into(), 0), ("b".into(), 1)]
        );
    }

    #[test]
    fn whiteouts_hide_lower_names_and_are_not_shown() {
        let m = merge_entries(&[
            (
                0,
                vec![
                    raw(".wh.b"),
                    raw(".wh..wh..opq"),
                    raw(".wh..wh.work"),
                    raw("c"),
                ],
            ),
            (1, vec![raw("b"), raw("d")]),
        ]);
        assert_eq!(names(&m), vec![("c".into(), 0), ("d".into(), 1)]);
    }

    #[test]
    fn whiteout_does_not_hide_its_own_branch() {
        let m = merge_entries(&[(0, vec![raw(".wh.b"), raw("b")]), (1, vec![raw("b")])]);
        assert_eq!(names(&m), vec![("b".into(), 0)]);
    }

    #[test]
    fn overlay_whiteouts_hide_and_vanish() {
        let mut wh = raw("gone");
        wh.overlay_whiteout = true;
        let m = merge_entries(&[(0, vec![wh]), (1, vec![raw("gone"), raw("kept")])]);
        assert_eq!(names(&m), vec![("kept".into(), 1)]);
    }

    #[test]
    fn dot_entries_are_left_to_the_caller() {
        let m = merge_entries(&[(0, vec![raw("."), raw("..")]), (1, vec![raw(".")])]);
        assert!(m.is_empty());
    }
}
