//! The branch-spec parser (`A=rw:B=ro`, `\:` escapes) and the `-o` option parser, on any text.
//! Neither may panic; a spec that parses must come back the same after it is written out again
//! with explicit permissions and escapes; options that name branches must give non-empty paths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unionfs::config::{parse_branches, split_escaped, BranchSpec, MountOptions};

/// A branch list written so that `parse_branches` reads exactly `branches` back.
fn unparse(branches: &[BranchSpec]) -> String {
    branches
        .iter()
        .map(|b| {
            let mut s = String::new();
            for c in b.path.to_str().expect("parsed from a str").chars() {
                if c == ':' || c == '\\' {
                    s.push('\\');
                }
                s.push(c);
            }
            format!("{s}={}", b.perm)
        })
        .collect::<Vec<_>>()
        .join(":")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(branches) = parse_branches(text) {
        assert!(!branches.is_empty());
        for b in &branches {
            assert!(
                !b.path.as_os_str().is_empty(),
                "{text:?} gave an empty path"
            );
        }
        let again = parse_branches(&unparse(&branches)).unwrap_or_else(|e| {
            panic!(
                "{text:?} -> {:?} does not parse again: {e}",
                unparse(&branches)
            )
        });
        assert_eq!(again, branches, "{text:?}");
    }
    let opts: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let Ok(o) = MountOptions::parse(&opts) {
        if let Ok(Some(branches)) = o.branches() {
            assert!(!branches.is_empty());
            for b in &branches {
                assert!(
                    !b.path.as_os_str().is_empty(),
                    "{text:?} gave an empty path"
                );
            }
            let writable = branches.iter().filter(|b| b.perm.is_writable()).count();
            if o.br.is_none() {
                assert!(writable <= 1, "{text:?}: the overlay form has one upper");
                // The one upper is one directory: `upperdir=a\:b` names "a:b", never two
                // directories glued together.
                if let Some(upper) = &o.upperdir {
                    let parts = split_escaped(upper, ':');
                    assert_eq!(parts.len(), 1, "{text:?}: upperdir names {parts:?}");
                    assert_eq!(branches[0].path.to_str(), Some(parts[0].as_str()));
                }
                // Each lower entry is one branch, in order.
                let lower = o.lowerdir.as_deref().unwrap_or_default();
                let lowers: Vec<&BranchSpec> =
                    branches.iter().filter(|b| !b.perm.is_writable()).collect();
                let parts = split_escaped(lower, ':');
                assert_eq!(lowers.len(), parts.len(), "{text:?}");
                for (b, p) in lowers.iter().zip(&parts) {
                    assert_eq!(b.path.to_str(), Some(p.as_str()), "{text:?}");
                }
            }
        }
    }
});
