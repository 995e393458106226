//! A union far deeper than PATH_MAX. The kernel hands the daemon one name at a time, so nothing
//! limits how deep a tree gets through the mount; the daemon must never need a whole path to fit
//! in PATH_MAX (4096), and an operation deep down must cost what it costs near the root.
//!
//! The client here works as a program must at such depths: with directory descriptors and the
//! `*at()` calls, one name at a time (a path that long is refused by the client's own kernel).

mod common;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use common::*;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fchmodat, fstatat, mkdirat, FchmodatFlags, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// `d/` × 3000 = 6000 bytes: half again beyond PATH_MAX.
const DEEP: usize = 3000;

fn open_dir(p: &Path) -> OwnedFd {
    open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// Walks `levels` directories named `d` down from `top` (making them when `make`), returning
/// the deepest one.
fn descend(top: &OwnedFd, levels: usize, make: bool) -> OwnedFd {
    let mut cur = top.try_clone().unwrap();
    for depth in 1..=levels {
        if make {
            mkdirat(cur.as_fd(), "d", Mode::from_bits_truncate(0o755))
                .unwrap_or_else(|e| panic!("mkdir at depth {depth}: {e}"));
        }
        cur = openat(
            cur.as_fd(),
            "d",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("open d at depth {depth}: {e}"));
    }
    cur
}

fn write_at(dir: &OwnedFd, name: &str, flags: OFlag, data: &str) {
    let fd = openat(
        dir.as_fd(),
        name,
        flags | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap_or_else(|e| panic!("open {name} ({flags:?}): {e}"));
    assert_eq!(
        nix::unistd::write(&fd, data.as_bytes()).unwrap(),
        data.len()
    );
}

fn read_at(dir: &OwnedFd, name: &str) -> String {
    let fd = openat(dir.as_fd(), name, OFlag::O_RDONLY, Mode::empty())
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    let mut f = fs::File::from(fd);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    s
}

fn exists_at(dir: &OwnedFd, name: &str) -> bool {
    fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok()
}

/// A short path to `name` in an open directory: through the directory's `/proc` link, so that
/// path-taking calls (truncate(2)) reach it.
fn proc_path(dir: &OwnedFd, name: &str) -> String {
    format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())
}

#[test]
fn every_operation_works_beyond_path_max() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("B/L");
    // A lower tree as deep, built on the branch itself, with a file at the bottom.
    let lower_bottom = descend(&open_dir(&fx.path("B/L")), DEEP, true);
    write_at(&lower_bottom, "lower.txt", OFlag::O_CREAT, "lower\n");
    // A second name of it: the hardlink group is found by a walk of the whole branch.
    nix::unistd::linkat(
        lower_bottom.as_fd(),
        "lower.txt",
        lower_bottom.as_fd(),
        "lower.link",
        nix::fcntl::AtFlags::empty(),
    )
    .unwrap();
    drop(lower_bottom);
    // `ro`: its directories are opened by path at each use, the long way.
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let mnt = open_dir(&m.mnt);

    // A new tree through the mount: create, append, truncate by path and by descriptor,
    // chmod, rename, mkdir/rmdir, unlink, all at depth DEEP.
    mkdirat(mnt.as_fd(), "U", Mode::from_bits_truncate(0o755)).unwrap();
    let u = open_dir(&m.path("U"));
    let above = descend(&u, DEEP - 1, true);
    let bottom = descend(&above, 1, true);
    write_at(&bottom, "f", OFlag::O_CREAT | OFlag::O_EXCL, "one\n");
    write_at(&bottom, "f", OFlag::O_APPEND, "two\n");
    assert_eq!(read_at(&bottom, "f"), "one\ntwo\n");
    nix::unistd::truncate(proc_path(&bottom, "f").as_str(), 4).expect("truncate(path) deep");
    assert_eq!(read_at(&bottom, "f"), "one\n");
    {
        let fd = openat(bottom.as_fd(), "f", OFlag::O_RDWR, Mode::empty()).unwrap();
        nix::unistd::ftruncate(&fd, 2).expect("ftruncate deep");
    }
    assert_eq!(read_at(&bottom, "f"), "on");
    fchmodat(
        bottom.as_fd(),
        "f",
        Mode::from_bits_truncate(0o600),
        FchmodatFlags::FollowSymlink,
    )
    .unwrap();
    let st = fstatat(bottom.as_fd(), "f", nix::fcntl::AtFlags::empty()).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o600);
    renameat(bottom.as_fd(), "f", bottom.as_fd(), "g").expect("rename deep");
    assert!(!exists_at(&bottom, "f"));
    assert_eq!(read_at(&bottom, "g"), "on");
    mkdirat(bottom.as_fd(), "e", Mode::from_bits_truncate(0o755)).unwrap();
    unlinkat(bottom.as_fd(), "e", UnlinkatFlags::RemoveDir).expect("rmdir deep");
    assert!(!exists_at(&bottom, "e"));
    // The upper branch holds what was made, as deep.
    let a_bottom = descend(&open_dir(&fx.path("A/U")), DEEP, false);
    assert_eq!(read_at(&a_bottom, "g"), "on");
    unlinkat(bottom.as_fd(), "g", UnlinkatFlags::NoRemoveDir).expect("unlink deep");
    assert!(!exists_at(&a_bottom, "g"));
    drop(bottom);
    // rmdir of the deepest directory, by name in its parent.
    unlinkat(above.as_fd(), "d", UnlinkatFlags::RemoveDir).expect("rmdir of the deepest");
    assert!(!exists_at(&above, "d"));

    // Copy-up of a lower file at the bottom of a lower chain: every directory on the way is
    // copied to A, the file with it; B keeps its own.
    let l_bottom = descend(&open_dir(&m.path("L")), DEEP, false);
    assert_eq!(read_at(&l_bottom, "lower.txt"), "lower\n");
    write_at(&l_bottom, "lower.txt", OFlag::O_APPEND, "more\n");
    assert_eq!(read_at(&l_bottom, "lower.txt"), "lower\nmore\n");
    assert_eq!(
        read_at(&l_bottom, "lower.link"),
        "lower\nmore\n",
        "the hardlink, deep down, stays one file with it"
    );
    let a_l = descend(&open_dir(&fx.path("A/L")), DEEP, false);
    assert_eq!(read_at(&a_l, "lower.txt"), "lower\nmore\n");
    let b_l = descend(&open_dir(&fx.path("B/L")), DEEP, false);
    assert_eq!(read_at(&b_l, "lower.txt"), "lower\n");
    // Removing it leaves a whiteout deep in A; the lower file stays, hidden.
    unlinkat(l_bottom.as_fd(), "lower.txt", UnlinkatFlags::NoRemoveDir).unwrap();
    assert!(!exists_at(&l_bottom, "lower.txt"));
    assert!(exists_at(&a_l, ".wh.lower.txt"));
    assert_eq!(read_at(&b_l, "lower.txt"), "lower\n");
    drop((l_bottom, a_l, b_l, a_bottom, above, u, mnt));
    drop(m);
    for chain in ["A/U", "A/L", "B/L"] {
        remove_chain(&fx.path(chain));
    }
}

/// Removes a chain of `d` directories under `top` one level at a time from the top (the
/// tempdir's own recursive removal takes seconds per thousand levels): the second level is
/// moved up beside the first, the first, now shallow, removed, the second renamed into its
/// place.
fn remove_chain(top: &Path) {
    let fd = open_dir(top);
    while exists_at(&fd, "d") {
        let moved = renameat(fd.as_fd(), "d/d", fd.as_fd(), "next").is_ok();
        fs::remove_dir_all(proc_path(&fd, "d")).unwrap();
        if moved {
            renameat(fd.as_fd(), "next", fd.as_fd(), "d").unwrap();
        }
    }
}

/// CPU time the daemon serving `mnt` has used so far, all its threads, in nanoseconds
/// (`/proc/PID/task/*/schedstat`, first field: time on a CPU, user and kernel).
fn daemon_cpu_ns(pid: nix::unistd::Pid) -> u64 {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// One round of the operations a program does on files and directories, in directory `dir`.
fn round(dir: &OwnedFd) {
    write_at(dir, "f", OFlag::O_CREAT | OFlag::O_EXCL, "one\n");
    write_at(dir, "f", OFlag::O_APPEND, "two\n");
    nix::unistd::truncate(proc_path(dir, "f").as_str(), 2).unwrap();
    fstatat(dir.as_fd(), "f", nix::fcntl::AtFlags::empty()).unwrap();
    renameat(dir.as_fd(), "f", dir.as_fd(), "g").unwrap();
    unlinkat(dir.as_fd(), "g", UnlinkatFlags::NoRemoveDir).unwrap();
    mkdirat(dir.as_fd(), "e", Mode::from_bits_truncate(0o755)).unwrap();
    unlinkat(dir.as_fd(), "e", UnlinkatFlags::RemoveDir).unwrap();
}

/// The same operations 30 times deeper cost the daemon about the same: each resolves only its
/// last name, in directories it holds, and never rebuilds or walks the whole path.
///
/// Measured as the daemon's own CPU time (user and kernel: a path walked per request would
/// show as kernel time) for a batch of rounds at depth 100 and at depth 3000, each batch taken
/// three times interleaved and the least kept (the least disturbed by other work on the
/// machine). Work that grew with depth would make the deep batch about 30 times (linear) or
/// 900 times (quadratic) the shallow one; the bound of 4 leaves room for noise and for what
/// does grow a little (a 6 KB path copied and hashed once per request).
#[test]
fn work_per_operation_does_not_grow_with_depth() {
    if !can_mount() {
        return;
    }
    const SHALLOW: usize = 100;
    const ROUNDS: usize = 150;
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("B");
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let pid = unionfs::mount::daemon_pid(&m.mnt).expect("the daemon's pid is recorded");
    let shallow = descend(&open_dir(&m.mnt), SHALLOW, true);
    let deep = descend(&shallow, DEEP - SHALLOW, true);
    let mut best = [u64::MAX; 2];
    for _ in 0..3 {
        for (i, dir) in [&shallow, &deep].into_iter().enumerate() {
            round(dir); // warm: the kernel's dentries, the daemon's views
            let before = daemon_cpu_ns(pid);
            for _ in 0..ROUNDS {
                round(dir);
            }
            best[i] = best[i].min(daemon_cpu_ns(pid) - before);
        }
    }
    let ratio = best[1] as f64 / best[0] as f64;
    eprintln!(
        "daemon CPU per round: depth {SHALLOW}: {} us, depth {DEEP}: {} us, ratio {ratio:.2}",
        best[0] / 1000 / ROUNDS as u64,
        best[1] / 1000 / ROUNDS as u64
    );
    assert!(
        ratio < 4.0,
        "the daemon worked {ratio:.1} times as hard at depth {DEEP} as at depth {SHALLOW}"
    );
    drop((shallow, deep));
    drop(m);
    remove_chain(&fx.path("A"));
}
