//! `unionfs stats MNT`: the daemon counts the requests it serves, per type, and the counts
//! match a known workload.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;

/// `unionfs stats [--reset] MNT`, parsed into request -> (count, errors).
fn stats(mnt: &Path, reset: bool) -> BTreeMap<String, (u64, u64)> {
    let mut args = vec!["stats"];
    if reset {
        args.push("--reset");
    }
    args.push(mnt.to_str().unwrap());
    let out = run(&args);
    assert!(
        out.status.success(),
        "unionfs stats failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    unionfs::stats::parse(&text)
        .into_iter()
        .map(|(op, count, errors)| (op, (count, errors)))
        .collect()
}

fn count(s: &BTreeMap<String, (u64, u64)>, op: &str) -> u64 {
    s.get(op).map_or(0, |c| c.0)
}

#[test]
fn create_stat_unlink_of_n_files_counts_n_creates_and_n_unlinks() {
    if !can_mount() {
        return;
    }
    const N: u64 = 200;
    let fx = Fixture::new();
    fx.mkdir("upper");
    fx.write("lower/keep", "lower");
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    // Whatever mounting and the test harness asked before this point is not the workload's.
    stats(&m.mnt, true);

    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    for i in 0..N {
        let p = dir.join(format!("f{i}"));
        fs::File::create_new(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
        fs::remove_file(&p).unwrap();
    }
    let s = stats(&m.mnt, true);
    assert_eq!(count(&s, "MKDIR"), 1, "{s:?}");
    assert_eq!(count(&s, "CREATE"), N, "{s:?}");
    assert_eq!(count(&s, "UNLINK"), N, "{s:?}");
    assert_eq!(count(&s, "RELEASE"), N, "{s:?}");
    // Every request is in the total, and no create or unlink failed.
    let total: u64 = s
        .iter()
        .filter(|(op, _)| op.as_str() != "TOTAL")
        .map(|(_, c)| c.0)
        .sum();
    assert_eq!(count(&s, "TOTAL"), total);
    assert_eq!(s["CREATE"].1, 0);
    assert_eq!(s["UNLINK"].1, 0);

    // A name that is not there: the lookup is answered "absent" and counted as such.
    assert!(fs::metadata(m.path("absent")).is_err());
    let s = stats(&m.mnt, false);
    assert_eq!(s.get("LOOKUP"), Some(&(1, 1)), "{s:?}");
    // --reset zeroed the counters after the previous table: only the lookup is left.
    assert_eq!(count(&s, "CREATE"), 0, "{s:?}");

    // The socket goes with the daemon (`unionfs umount` returns once the daemon has exited).
    let socket = unionfs::stats::socket_path(&fs::canonicalize(&m.mnt).unwrap())
        .expect("root has a run directory");
    assert!(socket.exists(), "{}", socket.display());
    drop(m);
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn stats_of_a_path_that_is_no_union_says_so() {
    let fx = Fixture::new();
    let out = run(&["stats", fx.path("").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no statistics for"), "{err}");
}

#[test]
fn an_absent_name_is_asked_for_once() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    fx.write("lower/keep", "lower");
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    stats(&m.mnt, true);
    for _ in 0..5 {
        assert_eq!(
            errno(fs::metadata(m.path("absent")).unwrap_err()),
            libc::ENOENT
        );
    }
    // The kernel kept the first answer (a negative entry): one LOOKUP, not five.
    let s = stats(&m.mnt, true);
    assert_eq!(s.get("LOOKUP"), Some(&(1, 1)), "{s:?}");
    // And the name, created through the mount, is there at once.
    fs::write(m.path("absent"), "now").unwrap();
    assert_eq!(read(&m.path("absent")), "now");
    fs::remove_file(m.path("absent")).unwrap();
    assert_eq!(
        errno(fs::metadata(m.path("absent")).unwrap_err()),
        libc::ENOENT
    );
}

#[test]
fn a_name_added_to_a_ro_branch_behind_the_mount_shows_up() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    fx.write("lower/keep", "lower");
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert_eq!(
        errno(fs::metadata(m.path("late")).unwrap_err()),
        libc::ENOENT
    );
    fx.write("lower/late", "late");
    // SEMANTICS.md: a `ro` branch changed behind the union is seen within about a second; the
    // absent answer the kernel cached must not outlive that. Polled, with a generous bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while fs::metadata(m.path("late")).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "a name added to a ro branch stayed absent through the mount"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(read(&m.path("late")), "late");
}

/// `ls -l` asks each file for `security.selinux`; absent, the answer is EOPNOTSUPP, after
/// which ls stops asking on this mount: a warm `ls -l` of N files is not N GETXATTRs.
#[test]
fn ls_l_asks_for_selinux_labels_once_per_mount() {
    if !can_mount() {
        return;
    }
    const N: usize = 100;
    let fx = Fixture::new();
    fx.mkdir("upper");
    for i in 0..N {
        fx.write(&format!("lower/f{i}"), "x");
    }
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let f0 = m.path("f0");
    let label = xattr_get(&f0, "security.selinux");
    assert_eq!(label, Err(libc::EOPNOTSUPP));
    // Other absent names stay ENODATA.
    assert_eq!(xattr_get(&f0, "user.absent"), Err(libc::ENODATA));
    // A label a file does carry is returned.
    fs::write(m.path("labelled"), "y").unwrap();
    xattr_set(
        &m.path("labelled"),
        "security.selinux",
        b"system_u:object_r:etc_t:s0",
    );
    assert_eq!(
        xattr_get(&m.path("labelled"), "security.selinux"),
        Ok(b"system_u:object_r:etc_t:s0".to_vec())
    );

    let ls = || {
        let out = std::process::Command::new("ls")
            .arg("-l")
            .arg(&m.mnt)
            .output()
            .expect("run ls");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ls();
    stats(&m.mnt, true);
    ls();
    let s = stats(&m.mnt, true);
    assert!(
        count(&s, "GETXATTR") < 5,
        "a warm ls -l of {N} files sent {} GETXATTRs: {s:?}",
        count(&s, "GETXATTR")
    );
}

/// getxattr of `p` (not following a symlink), through the library's own `*at` wrapper.
fn xattr_get(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let dir = parent_dir(p);
    unionfs::sys::getxattr_at(
        std::os::fd::AsFd::as_fd(&dir),
        p.file_name().unwrap(),
        std::ffi::OsStr::new(name),
    )
    .map_err(|e| e as i32)
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let dir = parent_dir(p);
    unionfs::sys::setxattr_at(
        std::os::fd::AsFd::as_fd(&dir),
        p.file_name().unwrap(),
        std::ffi::OsStr::new(name),
        value,
        0,
    )
    .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", p.display()));
}

fn parent_dir(p: &Path) -> std::os::fd::OwnedFd {
    nix::fcntl::open(
        p.parent().unwrap(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap()
}

/// With every change going through the daemon (`rw`/`rr`), the kernel caches symlink targets
/// (`FUSE_CACHE_SYMLINKS`): a link followed or read again sends no READLINK. A symlink replaced
/// through the mount (renamed over, or removed and made again, which on ext4 reuses the freed
/// inode number, so the node id, at once) reads its new target.
#[test]
fn a_symlink_is_read_once_and_a_replaced_one_shows_its_new_target() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    fx.write("lower/a", "a");
    fx.write("lower/b", "b");
    std::os::unix::fs::symlink("a", fx.path("lower/link")).unwrap();
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let link = m.path("link");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("a"));
    stats(&m.mnt, true);
    for _ in 0..5 {
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("a"));
        assert_eq!(read(&link), "a");
    }
    let s = stats(&m.mnt, true);
    assert_eq!(count(&s, "READLINK"), 0, "{s:?}");

    // Renamed over: the name now reaches another inode, with its own target.
    std::os::unix::fs::symlink("b", m.path("new")).unwrap();
    fs::rename(m.path("new"), &link).unwrap();
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("b"));
    assert_eq!(read(&link), "b");

    // Removed and made again while the kernel still holds the old inode (an O_PATH descriptor
    // on it): the new symlink may get the old one's inode number, hence its node id; the
    // kernel must not show the target it cached for the old one.
    for i in 0..20 {
        let old = format!("t{i}-old");
        let new = format!("t{i}-new");
        std::os::unix::fs::symlink(&old, &link).unwrap_or_else(|_| {
            fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(&old, &link).unwrap()
        });
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(&old));
        let held = nix::fcntl::open(
            &link,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&new, &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(&new), "round {i}");
        fs::remove_file(&link).unwrap();
        drop(held);
    }
}

/// A `ro` branch may change behind the mount: its symlink targets are not cached, so a link
/// replaced there is seen within the SEMANTICS bound (the 1 s entry timeout).
#[test]
fn a_symlink_replaced_in_a_ro_branch_behind_the_mount_shows_its_new_target() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    fx.write("lower/a", "a");
    std::os::unix::fs::symlink("a", fx.path("lower/link")).unwrap();
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let link = m.path("link");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("a"));
    // Replaced in place, as `ln -sfn` does it, and removed then made again (ext4 reuses the
    // inode number: same node id, new target).
    std::os::unix::fs::symlink("b", fx.path("lower/tmp")).unwrap();
    fs::rename(fx.path("lower/tmp"), fx.path("lower/link")).unwrap();
    let seen = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_link(&link).ok().as_deref() != Some(Path::new(want)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{want}: a symlink replaced in a ro branch kept its old target"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    seen("b");
    fs::remove_file(fx.path("lower/link")).unwrap();
    std::os::unix::fs::symlink("c", fx.path("lower/link")).unwrap();
    seen("c");
}
