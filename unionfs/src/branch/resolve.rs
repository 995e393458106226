//! The pure lookup rule: which branches show a name. No syscalls here; the caller probes each
//! branch (top first) and this decides when to stop.

/// What one branch's directory says about one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    /// The name exists in this branch, and what it is.
    pub entry: Option<Presence>,
    /// `.wh.NAME` (or an overlay whiteout for NAME) exists in this branch's directory:
    /// lower branches do not have NAME.
    pub whiteout: bool,
    /// The entry is a directory marked opaque in this branch: lower directories do not merge.
    pub opaque: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Dir,
    NonDir,
}

/// The branches that make up a name, top first: one for a non-directory, one or more merged
/// directories for a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    pub kind: Presence,
    pub branches: Vec<usize>,
}

impl Layers {
    pub fn top(&self) -> usize {
        self.branches[0]
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Presence::Dir
    }
}

/// Applies the aufs/OCI rules to the branches of the parent directory (top first):
/// the first branch holding the name wins; a non-directory ends the walk; a directory merges
/// with lower directories of the same name until an opaque one, a non-directory, or a whiteout.
/// A whiteout or opaque marker hides only lower branches, never its own branch's entry.
pub fn resolve_child(
    parent_branches: &[usize],
    mut probe: impl FnMut(usize) -> Probe,
) -> Option<Layers> {
    let mut found: Option<Layers> = None;
    for &b in parent_branches {
        let p = probe(b);
        match (p.entry, found.as_mut()) {
            (Some(kind), None) => {
                found = Some(Layers {
                    kind,
                    branches: vec![b],
                });
                if kind == Presence::NonDir {
                    break;
                }
            }
            (Some(Presence::Dir), Some(layers)) => layers.branches.push(b),
            // A non-directory under a directory ends the merge.
            (Some(Presence::NonDir), Some(_)) => break,
            (None, _) => {}
        }
        if p.whiteout || (p.entry == Some(Presence::Dir) && p.opaque) {
            break;
        }
    }
    found
}

/// The branches of the union's root: every branch, down to the first whose root is opaque.
pub fn root_layers(n: usize, mut opaque: impl FnMut(usize) -> bool) -> Layers {
    let mut branches = Vec::new();
    for b in 0..n {
        branches.push(b);
        if opaque(b) {
            break;
        }
    }
    Layers {
        kind: Presence::Dir,
        branches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Presence::*;

    fn probes(list: Vec<Probe>) -> impl FnMut(usize) -> Probe {
        move |b| list[b]
    }

    fn entry(kind: Presence) -> Probe {
        Probe {
            entry: Some(kind),
            ..Probe::default()
        }
    }

    const NONE: Probe = Probe {
        entry: None,
        whiteout: false,
        opaque: false,
    };
    const WHITEOUT: Probe = Probe {
        entry: None,
        whiteout: true,
        opaque: false,
    };

    #[test]
    fn top_branch_wins_a_file() {
        let l = resolve_child(&[0, 1], probes(vec![entry(NonDir), entry(NonDir)])).unwrap();
        assert_eq!(l.branches, vec![0]);
    }

    #[test]
    fn lower_file_shows_through_when_upper_lacks_it() {
        let l = resolve_child(&[0, 1, 2], probes(vec![NONE, NONE, entry(NonDir)])).unwrap();
        assert_eq!(l.branches, vec![2]);
    }

    #[test]
    fn whiteout_hides_lower_only() {
        assert_eq!(
            resolve_child(&[0, 1], probes(vec![WHITEOUT, entry(NonDir)])),
            None
        );
        // A whiteout next to the name in its own branch hides nothing of that branch.
        let both = Probe {
            entry: Some(NonDir),
            whiteout: true,
            opaque: false,
        };
        let l = resolve_child(&[0, 1], probes(vec![both, entry(NonDir)])).unwrap();
        assert_eq!(l.branches, vec![0]);
        // A whiteout in a lower branch does not hide an upper entry.
        let l = resolve_child(&[0, 1], probes(vec![entry(NonDir), WHITEOUT])).unwrap();
        assert_eq!(l.branches, vec![0]);
    }

    #[test]
    fn directories_merge_until_opaque() {
        let opaque_dir = Probe {
            entry: Some(Dir),
            whiteout: false,
            opaque: true,
        };
        let l = resolve_child(
            &[0, 1, 2, 3],
            probes(vec![entry(Dir), opaque_dir, entry(Dir), entry(Dir)]),
        )
        .unwrap();
        assert_eq!(l.branches, vec![0, 1]);
    }

    #[test]
    fn non_directory_ends_a_merge_and_hides_lower_dirs() {
        let l = resolve_child(
            &[0, 1, 2],
            probes(vec![entry(Dir), entry(NonDir), entry(Dir)]),
        )
        .unwrap();
        assert_eq!(l.branches, vec![0]);
        let l = resolve_child(&[0, 1], probes(vec![entry(NonDir), entry(Dir)])).unwrap();
        assert_eq!((l.kind, l.branches), (NonDir, vec![0]));
    }

    #[test]
    fn whiteout_below_a_directory_stops_the_merge() {
        let l = resolve_child(&[0, 1, 2], probes(vec![entry(Dir), WHITEOUT, entry(Dir)])).unwrap();
        assert_eq!(l.branches, vec![0]);
    }

    #[test]
    fn only_parent_branches_are_probed() {
        let mut seen = Vec::new();
        let _ = resolve_child(&[1, 3], |b| {
            seen.push(b);
            NONE
        });
        assert_eq!(seen, vec![1, 3]);
    }

    #[test]
    fn root_stops_at_opaque_branch() {
        assert_eq!(root_layers(4, |b| b == 1).branches, vec![0, 1]);
        assert_eq!(root_layers(2, |_| false).branches, vec![0, 1]);
    }
}
