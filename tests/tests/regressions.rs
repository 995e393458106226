//! Minimised failures found by the property tests, kept as named tests. Each one states what
//! it found; they stay enabled and fail until unionfs is fixed.

use std::path::PathBuf;

use union_tests::harness::{run_ops, Run};
use union_tests::mount::{can_mount, Mount};
use union_tests::ops::{Op, PathSel};
use union_tests::stackbuild::StackBuilder;

fn p(s: &str) -> String {
    s.to_string()
}

/// A name hidden by an upper branch still counted in `st_nlink`: B1 holds `b` and `c` as one
/// inode, B0 holds its own `b`; the union shows `c` alone but with nlink 2. A plain copy of
/// the merged view says 1, and after any copy-up of `c` unionfs itself would say 1.
#[test]
fn regression_nlink_counts_hidden_names() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .file(0, "b", "")
        .file(1, "b", "")
        .link(1, "c", "b")
        .build();
    Run::start(stack, true, true).finish();
}

/// The same with a whiteout instead of an upper file.
#[test]
fn regression_nlink_counts_whited_out_names() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .whiteout(0, "y")
        .file(1, "x", "")
        .link(1, "y", "x")
        .build();
    Run::start(stack, true, true).finish();
}

/// Two names of one lower inode; `chown y` then `chmod y` through the mount: both names show
/// nlink 3 (the `.wh..wh.plnk` pseudo-link is counted), and after `unlink y`, `x` shows 2.
#[test]
fn regression_nlink_counts_pseudo_link() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .file(1, "x", "oy")
        .link(1, "y", "x")
        .build();
    let ops = [
        Op::Chown {
            path: p("y"),
            uid: 0,
            gid: 0,
        },
        Op::Chmod {
            path: p("y"),
            mode: 0o640,
        },
        Op::Unlink { path: p("y") },
    ];
    run_ops(stack, &ops, false);
}

/// `unionfs umount MNT && unionfs mount ... MNT` in a loop: now and then the new mount is
/// gone a moment after `mount` returned success (the next umount says "not a mountpoint").
#[test]
fn regression_remount_same_mountpoint_keeps_the_mount() {
    if !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (b0, mnt) = (tmp.path().join("B0"), tmp.path().join("mnt"));
    std::fs::create_dir(&b0).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let branches: Vec<PathBuf> = vec![b0];
    let mut m = Mount::new(&branches, &mnt, &tmp.path().join("unionfs.log")).unwrap();
    for i in 0..60 {
        if let Err(e) = m.remount() {
            panic!(
                "remount {i} on the same mount point failed: {e}\n{}",
                m.post_mortem()
            );
        }
    }
}

/// Property 5. B1 holds `a` and `b` as one inode; `mv a c` through the mount. The mount shows
/// `b` and `c` as one inode, but the writable branch holds `c` as a separate file (the link
/// lives in `.wh..wh.plnk`), so a squash or commit of the branches splits them.
#[test]
fn regression_squash_keeps_hardlinks_made_through_the_mount() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(3)
        .file(1, "a", "")
        .link(1, "b", "a")
        .build();
    run_ops(
        stack,
        &[Op::Rename {
            from: p("a"),
            to: p("c"),
        }],
        false,
    );
}

/// Property 5, with data loss. B1 holds `a/a` and `a/b` as one inode; a write through `a/a`
/// is seen through `a/b` on the mount, but the branches keep the old `a/b` in B1 and nothing
/// in B0 covers it: a squash or commit shows `a/b` with the old content.
#[test]
fn regression_squash_sees_write_through_other_hardlink() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .dir(1, "a")
        .file(1, "a/a", "")
        .link(1, "a/b", "a/a")
        .build();
    run_ops(
        stack,
        &[Op::Write {
            path: p("a/a"),
            offset: 0,
            data: b"A".to_vec(),
        }],
        false,
    );
}

/// Two names of one symlink inode in B1 (`ln B1/a B1/b`, `a` a symlink); `chown -h 0:0 a`
/// through the mount. Right after, `a` shows nlink 1 and `b` nlink 2 with the same inode
/// number; after a remount `a` and `b` are separate inodes. Regular files keep the group
/// (through `.wh..wh.plnk`); symlinks do not.
#[test]
fn regression_hardlinked_symlink_copy_up_splits_the_link() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .symlink(1, "a", "a")
        .link(1, "b", "a")
        .build();
    run_ops(
        stack,
        &[
            Op::Chown {
                path: p("a"),
                uid: 0,
                gid: 0,
            },
            Op::Remount,
        ],
        false,
    );
}

/// layer-tool, not unionfs. A writable branch left by unionfs holds aufs bookkeeping
/// (`.wh..wh.plnk/...` pseudo-links, `.wh..wh.work`); `layer_tool::squash` copies it into the
/// squashed layer, where a squash of a whole stack should hold no `.wh.` name at all.
#[test]
fn regression_layer_tool_squash_drops_aufs_bookkeeping() {
    let stack = StackBuilder::new(2)
        .dir(0, ".wh..wh.plnk")
        .file(0, ".wh..wh.plnk/65024_1", "pseudo-link")
        .dir(0, ".wh..wh.work")
        .file(0, "a", "")
        .file(1, "b", "")
        .build();
    let fx = union_tests::harness::Fixture::new(&stack);
    let out = union_tests::lt_squash::squash(&fx.branches, &fx.scratch("lt")).unwrap();
    let v = union_tests::view::View::snapshot(&out).unwrap();
    let leaked: Vec<&str> = v
        .paths()
        .into_iter()
        .filter(|p| p.contains(".wh."))
        .collect();
    assert!(
        leaked.is_empty(),
        "squashed layer holds bookkeeping: {leaked:?}"
    );
}

/// B1 holds `a` and `b/a` as one inode; `unlink a` through the mount (a whiteout). `b/a`
/// should then show nlink 1; right after the unlink it shows 2.
#[test]
fn regression_nlink_after_whiteout_of_other_name() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .file(1, "a", "")
        .dir(1, "b")
        .link(1, "b/a", "a")
        .build();
    run_ops(stack, &[Op::Unlink { path: p("a") }], true);
}

/// FUSE passthrough? A read-only fd open on a lower file, then any copy-up of it (here
/// `chmod`): every new open of the file fails with EIO (`cat a`, `>> a`) until that fd is
/// closed; the old fd still reads the lower data.
/// Shell: `exec 5< a; chmod 600 a; cat a` -> "Input/output error".
#[test]
fn regression_open_after_copy_up_while_lower_fd_open() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2).file(1, "a", "hello").build();
    let ops = [
        Op::Open {
            slot: 0,
            path: p("a"),
            write: false,
        },
        Op::Chmod {
            path: p("a"),
            mode: 0o600,
        },
        Op::Open {
            slot: 1,
            path: p("a"),
            write: false,
        },
        Op::ReadBack { slot: 1 },
    ];
    run_ops(stack, &ops, true);
}

/// The case the property test found: `exec 5< c/a; mv -T c/a a; cat a` -> EIO, and reads
/// through fd 5 fail with EIO too (a plain filesystem reads "hello" both ways).
#[test]
fn regression_read_after_rename_of_open_lower_file() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .dir(1, "c")
        .file(1, "c/a", "hello")
        .build();
    let ops = [
        Op::Open {
            slot: 0,
            path: p("c/a"),
            write: false,
        },
        Op::Rename {
            from: p("c/a"),
            to: p("a"),
        },
        Op::ReadBack { slot: 0 },
    ];
    run_ops(stack, &ops, true);
}

/// chmod, chown and utimens of the union's root directory fail with ENOENT (setxattr works).
/// Shell: `chmod 700 "$MNT"` -> "No such file or directory"; also `chown 1000 "$MNT"`,
/// `touch "$MNT"`.
#[test]
fn regression_setattr_on_the_root() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2).file(1, "a", "").build();
    let ops = [
        Op::Chmod {
            path: p(""),
            mode: 0o700,
        },
        Op::Chown {
            path: p(""),
            uid: 1000,
            gid: 1000,
        },
        Op::Utimens {
            path: p(""),
            ns: 1_000_000_000_000_000_000,
        },
    ];
    run_ops(stack, &ops, true);
}

/// The fixed `regression_nlink_counts_whited_out_names`, with the lower branch writable:
/// `B0=rw:B1=ro:B2=rw`, B2 holds `a` and `c/a` as one inode and B0 holds `.wh.c`. The union
/// shows `a` alone, with nlink 2 (read-only lower branches give 1).
#[test]
fn regression_nlink_hidden_names_in_writable_lower_branch() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(3)
        .whiteout(0, "c")
        .file(2, "a", "")
        .dir(2, "c")
        .link(2, "c/a", "a")
        .build();
    let mut run = Run::start_with(stack, true, true, vec!["ro", "rw"]);
    run.step(&Op::Remount);
    run.finish();
}

/// Data vanishes: `B0=rw:B1=ro:B2=rw`, B1 holds `c/` and `.wh.c` (hiding lower `c`s), B2 holds
/// `d/f`. `mv -T d c/a` succeeds, but `c/a` is not in the union: unionfs renamed inside B2
/// (into `B2/c/a`, which B1's `.wh.c` hides) although `c` shows from B1.
/// Shell: `mkdir -p B0 B1/c B2/d; touch B1/.wh.c B2/d/f; unionfs mount
/// "$PWD/B0=rw:$PWD/B1=ro:$PWD/B2=rw" mnt; mv -T mnt/d mnt/c/a; ls mnt/c` -> empty.
#[test]
fn regression_rename_from_writable_lower_branch_into_hidden_dir() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(3)
        .dir(1, "c")
        .whiteout(1, "c")
        .dir(2, "d")
        .file(2, "d/f", "data")
        .build();
    let mut run = Run::start_with(stack, true, true, vec!["ro", "rw"]);
    run.step(&Op::Rename {
        from: PathSel::Fresh(p("d")),
        to: PathSel::Fresh(p("c/a")),
    });
    run.finish();
}

/// `renameat2(RENAME_EXCHANGE)` of merged directories: B0 holds an empty `c/`, B1 holds
/// `a/a`. After exchanging `a` and `c`, `c/a` shows (right), but so does `a/a`: the old `c`
/// now named `a` lets B1's `a` merge into it (it is not made opaque), and `a/a` and `c/a` show
/// one inode. Shell: `mkdir -p B0/c B1/a; touch B1/a/a; unionfs mount ...`, then
/// `renameat2(a, c, RENAME_EXCHANGE)` (python3 ctypes: coreutils here has no `mv --exchange`),
/// then `ls a` -> `a` (a plain filesystem: empty).
#[test]
fn regression_exchange_lets_lower_content_into_the_moved_dir() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .dir(0, "c")
        .dir(1, "a")
        .file(1, "a/a", "")
        .build();
    run_ops(
        stack,
        &[Op::Exchange {
            from: p("a"),
            to: p("c"),
        }],
        true,
    );
}

/// The simplest form of the vanishing rename: `B0=rw:B1=rw`, B0 holds `.wh.d`, B1 holds `a`.
/// `mv -T a d` succeeds and `d` is not in the union: the rename happened inside B1, where
/// B0's `.wh.d` hides it. Shell: `mkdir B0 B1; touch B0/.wh.d; echo x > B1/a; unionfs mount
/// "$PWD/B0=rw:$PWD/B1=rw" mnt; mv -T mnt/a mnt/d; ls mnt` -> empty.
#[test]
fn regression_rename_in_writable_lower_branch_under_upper_whiteout() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2)
        .whiteout(0, "d")
        .file(1, "a", "x")
        .build();
    let mut run = Run::start_with(stack, true, true, vec!["rw"]);
    run.step(&Op::Rename {
        from: PathSel::Fresh(p("a")),
        to: PathSel::Fresh(p("d")),
    });
    run.finish();
}

/// The same for link: `B0=rw:B1=ro:B2=rw`, B0 holds `.wh.b`, B2 holds `c`. `ln c b` succeeds,
/// `ls` does not show `b`, `stat b` works (the kernel's dentry from the link reply) but
/// `cat b` and `getfattr b` say ENOENT: the link was made inside B2, under B0's whiteout.
#[test]
fn regression_link_in_writable_lower_branch_under_upper_whiteout() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(3)
        .whiteout(0, "b")
        .file(2, "c", "x")
        .build();
    let mut run = Run::start_with(stack, true, true, vec!["ro", "rw"]);
    run.step(&Op::Link {
        from: PathSel::Fresh(p("c")),
        to: PathSel::Fresh(p("b")),
    });
    run.finish();
}

/// A read-only fd opened on a lower file before a copy-up read the lower file or the new one
/// depending on the page cache (`printf old > B1/e`; mount; `exec 5< e; printf A >> e; cat e;
/// cat <&5` gave `oldA`, without the `cat e` `old`). Now the fd follows the copy-up, as on
/// overlayfs since Linux 4.19: it reads `oldA` either way, as a plain directory's fd does.
#[test]
fn regression_old_read_fd_follows_the_copy_up() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2).file(1, "e", "old").build();
    let ops = [
        Op::Open {
            slot: 0,
            path: p("e"),
            write: false,
        },
        Op::Append {
            path: p("e"),
            data: b"A".to_vec(),
        },
        Op::ReadBack { slot: 0 },
    ];
    run_ops(stack, &ops, true);
}

/// A writer's fd in a writable lower branch, then the file is renamed into a directory of the
/// upper branch (so it is copied up): the fd was moved to the copy read-only and the next
/// write failed with EBADF. `B0=rw:B1=rw`, B0 holds `a/`, B1 holds `b`:
/// `exec 5<> b; mv b a/a` (RENAME_NOREPLACE); `printf L >&5`.
#[test]
fn regression_writer_fd_follows_rename_out_of_writable_lower_branch() {
    if !can_mount() {
        return;
    }
    let stack = StackBuilder::new(2).dir(0, "a").file(1, "b", "").build();
    let mut run = Run::start_with(stack, true, true, vec!["rw"]);
    for op in [
        Op::Open {
            slot: 0,
            path: PathSel::Fresh(p("b")),
            write: true,
        },
        Op::RenameNoReplace {
            from: PathSel::Fresh(p("b")),
            to: PathSel::Fresh(p("a/a")),
        },
        Op::WriteBack {
            slot: 0,
            data: b"L".to_vec(),
        },
    ] {
        run.step(&op);
    }
    run.finish();
}
