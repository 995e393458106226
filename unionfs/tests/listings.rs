//! A directory's first READDIRPLUS goes out with names only while the names listed are rarely
//! looked up afterwards (a `find`), and with attributes while they mostly are (an `ls -l`):
//! `unionfs::listing_advisor`. Either way a listing names each entry with the inode number and
//! type that `lstat` gives it.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirEntryExt, FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;

/// `unionfs stats --reset MNT`: request -> count.
fn take_counts(mnt: &Path) -> BTreeMap<String, u64> {
    let out = run(&["stats", "--reset", mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    unionfs::stats::parse(&String::from_utf8(out.stdout).unwrap())
        .into_iter()
        .map(|(op, count, _)| (op, count))
        .collect()
}

fn lookups(c: &BTreeMap<String, u64>) -> u64 {
    c.get("LOOKUP").copied().unwrap_or(0)
}

/// `dirs` directories of `files` files each under `root`.
fn tree(fx: &Fixture, root: &str, dirs: usize, files: usize) {
    for d in 0..dirs {
        for f in 0..files {
            fx.write(&format!("{root}/d{d}/f{f}"), "x");
        }
    }
}

/// Lists each of `root`'s directories; with `stat`, also lstat's every entry (as `ls -l`).
fn walk(root: &Path, stat: bool) -> usize {
    let mut listed = 0;
    for dir in fs::read_dir(root).unwrap() {
        let dir = dir.unwrap().path();
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        listed += entries.len();
        if stat {
            for e in entries {
                fs::symlink_metadata(e.path()).unwrap();
            }
        }
    }
    listed
}

#[test]
fn a_walk_that_never_stats_gets_names_only_and_one_that_stats_gets_attributes() {
    if !can_mount() {
        return;
    }
    const DIRS: usize = 48;
    const FILES: usize = 12;
    let fx = Fixture::new();
    fx.mkdir("upper");
    tree(&fx, "lower/find", DIRS, FILES);
    tree(&fx, "lower/ls", DIRS, FILES);
    tree(&fx, "lower/later", DIRS, FILES);
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    take_counts(&m.mnt);

    // `find`: names only, so the kernel holds no entry and a later stat of each file looks it
    // up. (Those few stats do not make the walk look like `ls -l`: one file of twelve.)
    assert_eq!(walk(&m.path("find"), false), DIRS * FILES);
    let c = take_counts(&m.mnt);
    assert!(
        c.get("READDIRPLUS").copied().unwrap_or(0) >= DIRS as u64,
        "{c:?}"
    );
    for d in 0..DIRS {
        fs::symlink_metadata(m.path(&format!("find/d{d}/f0"))).unwrap();
    }
    assert_eq!(lookups(&take_counts(&m.mnt)), DIRS as u64);

    // `ls -l`: once it has seen the listed names looked up, listings carry attributes, and
    // stats of listed entries need no lookup, but in the sampled directories.
    walk(&m.path("ls"), true);
    take_counts(&m.mnt);
    walk(&m.path("later"), true);
    let c = take_counts(&m.mnt);
    let at_most_sampled = (DIRS / 16 + 1) * FILES;
    assert!(
        lookups(&c) <= at_most_sampled as u64,
        "an ls -l over 48 directories after another sent {} lookups: {c:?}",
        lookups(&c)
    );
}

#[test]
fn every_listing_gives_the_inode_number_and_type_that_lstat_gives() {
    if !can_mount() {
        return;
    }
    const COPIES: usize = 4;
    let fx = Fixture::new();
    for c in 0..COPIES {
        fx.write(&format!("lower/d{c}/file"), "lower");
        fx.write(&format!("lower/d{c}/copied"), "lower");
        fx.write(&format!("lower/d{c}/gone"), "lower");
        fx.mkdir(&format!("lower/d{c}/sub"));
        std::os::unix::fs::symlink("file", fx.path(&format!("lower/d{c}/link"))).unwrap();
        nix::unistd::mkfifo(
            &fx.path(&format!("lower/d{c}/fifo")),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        fx.write(&format!("upper/d{c}/new"), "upper");
    }
    tree(&fx, "lower/teach", 8, 12);
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    for c in 0..COPIES {
        // A copy-up keeps the lower file's inode number; a deletion leaves a whiteout.
        fs::write(m.path(&format!("d{c}/copied")), "changed").unwrap();
        fs::remove_file(m.path(&format!("d{c}/gone"))).unwrap();
    }
    // Lists `dir`, checks each entry against its lstat, and says how many lookups that took
    // (none when the listing carried attributes; one per entry the kernel did not know).
    let check = |dir: &Path| -> u64 {
        take_counts(&m.mnt);
        let mut seen = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let st = fs::symlink_metadata(e.path()).unwrap();
            assert_eq!(e.ino(), st.ino(), "d_ino of {name}");
            let t = e.file_type().unwrap();
            let lt = st.file_type();
            assert_eq!(
                (t.is_dir(), t.is_file(), t.is_symlink(), t.is_fifo()),
                (lt.is_dir(), lt.is_file(), lt.is_symlink(), lt.is_fifo()),
                "d_type of {name}"
            );
            seen.push(name);
        }
        seen.sort();
        assert_eq!(seen, ["copied", "fifo", "file", "link", "new", "sub"]);
        lookups(&take_counts(&m.mnt))
    };
    // Nothing learnt yet: names only, so each lstat is a lookup (but of the entries the
    // copy-up and the removal made known to the kernel).
    assert!(check(&m.path("d0")) >= 4);
    // Taught `ls -l`, the next listings carry attributes (one in sixteen is a sample without).
    walk(&m.path("teach"), true);
    let lookups: Vec<u64> = (1..COPIES)
        .map(|c| check(&m.path(&format!("d{c}"))))
        .collect();
    assert!(
        lookups.contains(&0),
        "no listing carried attributes: {lookups:?}"
    );
}
