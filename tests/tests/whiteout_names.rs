//! Names beginning with `.wh.` through the mount: never shown, never found by lookup, and
//! refused for create, mkdir, symlink, rename and link, all with one errno; the writable branch
//! gains nothing.

use union_tests::harness::Fixture;
use union_tests::mount::{can_mount, Mount};
use union_tests::ops::{apply_real, Op};
use union_tests::stackbuild::StackBuilder;

#[test]
fn whiteout_names_are_hidden_and_refused() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .whiteout(0, "gone")
        .file(0, "a", "x")
        .dir(0, "d")
        .file(1, "gone", "")
        .build();
    let fx = Fixture::new(&stack);
    let m = Mount::new(
        &fx.branches,
        &fx.mnt,
        &fx.scratch("log").join("unionfs.log"),
    )
    .unwrap();
    let root = m.path();
    for name in [".wh.gone", ".wh..wh..opq", ".wh..wh.plnk", ".wh..wh.work"] {
        let e = std::fs::symlink_metadata(root.join(name))
            .map(|_| ())
            .map_err(|e| e.raw_os_error());
        assert_eq!(e, Err(Some(libc::ENOENT)), "lookup of {name}");
    }
    let s = |p: &str| p.to_string();
    let refused = [
        Op::Create {
            path: s(".wh.new"),
            mode: 0o644,
            data: b"x".to_vec(),
        },
        Op::Mkdir {
            path: s(".wh.new"),
            mode: 0o755,
        },
        Op::Mkdir {
            path: s("d/.wh..wh..opq"),
            mode: 0o755,
        },
        Op::Symlink {
            target: s("a"),
            path: s(".wh.new"),
        },
        Op::Rename {
            from: s("a"),
            to: s(".wh.new"),
        },
        Op::Rename {
            from: s("a"),
            to: s("d/.wh..wh..opq"),
        },
        Op::Link {
            from: s("a"),
            to: s(".wh.new"),
        },
    ];
    let results: Vec<_> = refused
        .iter()
        .map(|op| (op, apply_real(root, op)))
        .collect();
    let first = results[0].1;
    assert!(first.is_err(), "creating .wh.new succeeded");
    for (op, r) in &results {
        assert_eq!(
            *r, first,
            "{op:?}: every refusal should give the same errno"
        );
    }
    let before = fx.branches[0].join(".wh.new");
    assert!(!before.exists(), "the writable branch gained .wh.new");
    assert!(
        !fx.branches[0].join("d/.wh..wh..opq").exists(),
        "the writable branch gained d/.wh..wh..opq"
    );
    assert!(
        fx.branches[0].join("a").exists(),
        "rename to a reserved name moved a"
    );
}
