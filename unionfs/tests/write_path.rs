//! The write path on real mounts: copy-up, whiteouts, opaque directories, rename, links, and
//! the POSIX details. Each test checks the merged view, what landed in the writable branch, and
//! that every read-only branch is unchanged (content, mode, owner, times, xattrs).

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

/// A two-branch union: A (rw, empty) over B (ro), with B's snapshot taken before mounting.
struct Union2 {
    fx: Fixture,
    m: Option<Mounted>,
    lower_before: Snapshot,
}

impl Union2 {
    fn new(setup: impl FnOnce(&Fixture)) -> Union2 {
        let fx = Fixture::new();
        fx.mkdir("A");
        fx.mkdir("B");
        setup(&fx);
        let lower_before = snapshot(&fx.path("B"));
        let spec = format!(
            "{}=rw:{}=ro",
            fx.path("A").display(),
            fx.path("B").display()
        );
        let m = mount(&spec, &fx.path("mnt"), &["-o", "allow_other"]);
        Union2 {
            fx,
            m: Some(m),
            lower_before,
        }
    }

    fn u(&self, rel: &str) -> std::path::PathBuf {
        self.m.as_ref().unwrap().path(rel)
    }

    fn upper(&self, rel: &str) -> std::path::PathBuf {
        self.fx.path("A").join(rel)
    }

    fn remount(&mut self) {
        self.m = None;
        let spec = format!(
            "{}=rw:{}=ro",
            self.fx.path("A").display(),
            self.fx.path("B").display()
        );
        self.m = Some(mount(&spec, &self.fx.path("mnt"), &["-o", "allow_other"]));
    }

    /// The read-only branch is byte-for-byte what it was.
    fn assert_lower_unchanged(&self) {
        assert_eq!(
            snapshot(&self.fx.path("B")),
            self.lower_before,
            "read-only branch changed"
        );
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn set_times(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 123_000_000);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn setfattr(p: &Path, name: &str, value: &str) {
    assert!(Command::new("setfattr")
        .args(["-h", "-n", name, "-v", value])
        .arg(p)
        .status()
        .unwrap()
        .success());
}

fn getfattr(p: &Path, name: &str) -> Option<String> {
    let o = Command::new("getfattr")
        .args(["-h", "-n", name, "--only-values"])
        .arg(p)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs a shell command as another user (uid/gid 65534) against the mount.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

#[test]
fn copy_up_keeps_data_holes_owner_mode_xattrs_times_and_parent_attributes() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        let dir = fx.mkdir("B/dir/sub");
        let f = dir.join("sparse");
        let mut file = fs::File::create(&f).unwrap();
        file.write_all(b"head").unwrap();
        file.seek(SeekFrom::Start(64 << 20)).unwrap();
        file.write_all(b"tail").unwrap();
        drop(file);
        set_mode(&f, 0o4750);
        chown(&f, 1234, 5678);
        setfattr(&f, "user.note", "kept");
        set_times(&f, 1_000_000_000);
        set_mode(&fx.path("B/dir"), 0o750);
        chown(&fx.path("B/dir"), 42, 43);
        setfattr(&fx.path("B/dir"), "user.dir", "d");
        set_times(&fx.path("B/dir"), 1_100_000_000);
    });
    let before = fs::metadata(u.u("dir/sub/sparse")).unwrap();
    // chown to the same owner: a metadata-only change that must copy the file up.
    chown(&u.u("dir/sub/sparse"), 1234, 5678);
    let up = u.upper("dir/sub/sparse");
    let m = fs::metadata(&up).unwrap();
    assert_eq!(m.size(), (64 << 20) + 4);
    assert!(m.blocks() < 1024, "holes stay holes: {} blocks", m.blocks());
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(m.mtime_nsec(), 123_000_000);
    assert_eq!(getfattr(&up, "user.note").as_deref(), Some("kept"));
    let data = fs::read(&up).unwrap();
    assert_eq!(&data[..4], b"head");
    assert_eq!(&data[data.len() - 4..], b"tail");
    // chown clears setuid (as on ext4), the rest of the mode stays.
    assert_eq!(m.mode() & 0o7777, 0o750);
    // Parent directories came up with their own attributes.
    let d = fs::metadata(u.upper("dir")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 42, 43));
    assert_eq!(d.mtime(), 1_100_000_000);
    assert_eq!(getfattr(&u.upper("dir"), "user.dir").as_deref(), Some("d"));
    // The union shows the same inode number as before the copy-up.
    assert_eq!(
        fs::metadata(u.u("dir/sub/sparse")).unwrap().ino(),
        before.ino()
    );
    u.assert_lower_unchanged();
}

#[test]
fn reading_never_copies_up_and_each_change_does() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        for n in [
            "read",
            "write",
            "trunc",
            "chmod",
            "utime",
            "xattr",
            "link",
            "rename",
            "fallocate",
        ] {
            fx.write(&format!("B/{n}"), "lower data");
        }
    });
    assert_eq!(read(&u.u("read")), "lower data");
    OpenOptions::new().read(true).open(u.u("read")).unwrap();
    assert!(!u.upper("read").exists(), "open for reading copied up");

    OpenOptions::new()
        .append(true)
        .open(u.u("write"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(read(&u.upper("write")), "lower data+");
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(u.u("trunc"))
        .unwrap();
    assert_eq!(read(&u.upper("trunc")), "");
    set_mode(&u.u("chmod"), 0o600);
    assert_eq!(
        fs::metadata(u.upper("chmod")).unwrap().mode() & 0o777,
        0o600
    );
    set_times(&u.u("utime"), 1_234_567_890);
    assert_eq!(
        fs::metadata(u.upper("utime")).unwrap().mtime(),
        1_234_567_890
    );
    setfattr(&u.u("xattr"), "user.k", "v");
    assert_eq!(getfattr(&u.upper("xattr"), "user.k").as_deref(), Some("v"));
    fs::hard_link(u.u("link"), u.u("link2")).unwrap();
    assert_eq!(
        fs::metadata(u.upper("link")).unwrap().ino(),
        fs::metadata(u.upper("link2")).unwrap().ino()
    );
    fs::rename(u.u("rename"), u.u("renamed")).unwrap();
    assert_eq!(read(&u.upper("renamed")), "lower data");
    assert!(u.upper(".wh.rename").exists());
    let f = OpenOptions::new()
        .write(true)
        .open(u.u("fallocate"))
        .unwrap();
    nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, 1 << 20).unwrap();
    assert_eq!(fs::metadata(u.upper("fallocate")).unwrap().size(), 1 << 20);
    u.assert_lower_unchanged();
}

#[test]
fn removal_leaves_whiteouts_and_rmdir_needs_an_empty_merged_directory() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/lower_file", "x");
        fx.write("B/dir/inner", "x");
        fx.write("B/empty_lower/.keep_me_not", "");
        fs::remove_file(fx.path("B/empty_lower/.keep_me_not")).unwrap();
    });
    fs::write(u.u("upper_only"), "u").unwrap();
    fs::remove_file(u.u("upper_only")).unwrap();
    assert!(
        !u.upper(".wh.upper_only").exists(),
        "nothing lower: no whiteout needed"
    );
    fs::remove_file(u.u("lower_file")).unwrap();
    assert!(u.upper(".wh.lower_file").exists());
    assert_eq!(
        errno(fs::metadata(u.u("lower_file")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::remove_dir(u.u("dir")).unwrap_err()),
        libc::ENOTEMPTY
    );
    fs::remove_file(u.u("dir/inner")).unwrap();
    fs::remove_dir(u.u("dir")).unwrap();
    assert!(u.upper(".wh.dir").exists());
    assert!(
        !u.upper("dir").exists(),
        "the copied-up parent went with the rmdir"
    );
    fs::remove_dir(u.u("empty_lower")).unwrap();
    assert_eq!(names(&u.m.as_ref().unwrap().mnt), Vec::<String>::new());
    assert_eq!(
        errno(fs::remove_file(u.u("nope")).unwrap_err()),
        libc::ENOENT
    );
    u.assert_lower_unchanged();
}

/// Whiteouts are hardlinks of one empty file (as aufs and overlayfs make them): a deletion
/// costs the branch no inode. They hide what they should across a remount, the shared file
/// leaves the work directory at unmount, and a name made again, or its directory removed,
/// takes its whiteout away as before.
#[test]
fn whiteouts_share_one_inode_and_hide_across_a_remount() {
    if !can_mount() {
        return;
    }
    const N: usize = 20;
    let mut u = Union2::new(|fx| {
        for i in 0..N {
            fx.write(&format!("B/d/f{i}"), "x");
        }
        fx.write("B/top", "x");
    });
    for i in 0..N {
        fs::remove_file(u.u(&format!("d/f{i}"))).unwrap();
    }
    fs::remove_file(u.u("top")).unwrap();
    let wh: Vec<fs::Metadata> = (0..N)
        .map(|i| fs::symlink_metadata(u.upper(&format!("d/.wh.f{i}"))).unwrap())
        .chain([fs::symlink_metadata(u.upper(".wh.top")).unwrap()])
        .collect();
    for m in &wh {
        assert!(m.is_file() && m.len() == 0, "{m:?}");
        assert_eq!(m.ino(), wh[0].ino(), "one inode for every whiteout");
    }
    // Every whiteout, plus the shared file in the work directory.
    assert_eq!(wh[0].nlink(), N as u64 + 2);
    assert_eq!(names(&u.m.as_ref().unwrap().mnt), vec!["d".to_string()]);
    assert_eq!(names(&u.u("d")), Vec::<String>::new());

    u.remount();
    // The shared file went with the first daemon; the new one has not needed one yet.
    assert_eq!(
        fs::symlink_metadata(u.upper("d/.wh.f0")).unwrap().nlink(),
        N as u64 + 1
    );
    assert_eq!(names(&u.u("d")), Vec::<String>::new());
    assert!(fs::metadata(u.u("top")).is_err());
    // A name made again replaces its whiteout; the others still hide.
    fs::write(u.u("d/f3"), "new").unwrap();
    assert!(!u.upper("d/.wh.f3").exists());
    assert_eq!(names(&u.u("d")), vec!["f3".to_string()]);
    assert_eq!(read(&u.u("d/f3")), "new");
    fs::remove_file(u.u("d/f3")).unwrap();
    // The directory, empty as the union shows it, goes with its whiteouts.
    fs::remove_dir(u.u("d")).unwrap();
    assert!(!u.upper("d").exists());
    assert!(u.upper(".wh.d").exists());
    assert_eq!(names(&u.m.as_ref().unwrap().mnt), Vec::<String>::new());
    u.m = None;
    assert!(
        !u.upper(".wh..wh.work").exists(),
        "the work directory, shared whiteout file included, is gone after unmount"
    );
    u.assert_lower_unchanged();
}

#[test]
fn a_directory_made_where_a_whiteout_stood_is_opaque() {
    if !can_mount() {
        return;
    }
    let mut u = Union2::new(|fx| {
        fx.write("B/d/old", "old");
        fx.write("B/f", "lower f");
    });
    fs::remove_file(u.u("d/old")).unwrap();
    fs::remove_dir(u.u("d")).unwrap();
    fs::create_dir(u.u("d")).unwrap();
    assert!(u.upper("d/.wh..wh..opq").exists());
    assert!(
        !u.upper(".wh.d").exists(),
        "creating a name removes its whiteout"
    );
    assert_eq!(names(&u.u("d")), Vec::<String>::new());
    fs::remove_file(u.u("f")).unwrap();
    fs::write(u.u("f"), "new f").unwrap();
    assert!(!u.upper(".wh.f").exists());
    assert_eq!(read(&u.u("f")), "new f");
    u.remount();
    assert_eq!(names(&u.u("d")), Vec::<String>::new());
    assert_eq!(read(&u.u("f")), "new f");
    u.assert_lower_unchanged();
}

#[test]
fn whiteout_names_cannot_be_made_and_devices_0_0_hide_nothing() {
    if !can_mount() {
        return;
    }
    let mut u = Union2::new(|fx| {
        fx.write("B/x", "x");
    });
    for name in [".wh.x", ".wh..wh..opq", ".wh.new"] {
        assert_eq!(
            errno(fs::write(u.u(name), "").unwrap_err()),
            libc::EPERM,
            "create {name}"
        );
        assert_eq!(
            errno(fs::create_dir(u.u(name)).unwrap_err()),
            libc::EPERM,
            "mkdir {name}"
        );
        assert_eq!(
            errno(symlink("t", u.u(name)).unwrap_err()),
            libc::EPERM,
            "symlink {name}"
        );
        assert_eq!(
            errno(fs::rename(u.u("x"), u.u(name)).unwrap_err()),
            libc::EPERM,
            "rename {name}"
        );
        assert_eq!(
            errno(fs::hard_link(u.u("x"), u.u(name)).unwrap_err()),
            libc::EPERM,
            "link {name}"
        );
    }
    nix::sys::stat::mknod(
        &u.u("dev00"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    u.remount();
    let m = fs::symlink_metadata(u.u("dev00")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &m.file_type()
    ));
    assert_eq!(names(&u.m.as_ref().unwrap().mnt), ["dev00", "x"]);
    u.assert_lower_unchanged();
}

#[test]
fn rename_of_a_merged_directory_works_and_whiteouts_the_old_name() {
    if !can_mount() {
        return;
    }
    let mut u = Union2::new(|fx| {
        fx.write("B/d/low", "low");
        fx.write("B/d/sub/deep", "deep");
        fx.write("B/d/gone", "gone");
        symlink("low", fx.path("B/d/link")).unwrap();
    });
    fs::write(u.u("d/up"), "up").unwrap();
    fs::remove_file(u.u("d/gone")).unwrap();
    fs::rename(u.u("d"), u.u("e")).unwrap();
    assert_eq!(errno(fs::metadata(u.u("d")).unwrap_err()), libc::ENOENT);
    assert_eq!(names(&u.u("e")), ["link", "low", "sub", "up"]);
    assert_eq!(read(&u.u("e/sub/deep")), "deep");
    assert_eq!(fs::read_link(u.u("e/link")).unwrap().to_str(), Some("low"));
    assert!(u.upper(".wh.d").exists());
    u.remount();
    assert_eq!(names(&u.u("e")), ["link", "low", "sub", "up"]);
    assert_eq!(errno(fs::metadata(u.u("d")).unwrap_err()), libc::ENOENT);
    u.assert_lower_unchanged();
}

#[test]
fn rename_replace_noreplace_and_exchange() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/a", "A");
        fx.write("B/b", "B");
        fx.write("B/c", "C");
        fx.write("B/dir/x", "x");
        fx.mkdir("B/emptydir");
    });
    let cwd = nix::fcntl::AT_FDCWD;
    let r = nix::fcntl::renameat2(
        cwd,
        &u.u("a"),
        cwd,
        &u.u("b"),
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    assert_eq!(r, Err(nix::errno::Errno::EEXIST));
    nix::fcntl::renameat2(
        cwd,
        &u.u("a"),
        cwd,
        &u.u("c"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(read(&u.u("a")), "C");
    assert_eq!(read(&u.u("c")), "A");
    fs::rename(u.u("a"), u.u("b")).unwrap();
    assert_eq!(read(&u.u("b")), "C");
    assert_eq!(errno(fs::metadata(u.u("a")).unwrap_err()), libc::ENOENT);
    assert_eq!(
        errno(fs::rename(u.u("b"), u.u("dir")).unwrap_err()),
        libc::EISDIR
    );
    assert_eq!(
        errno(fs::rename(u.u("dir"), u.u("b")).unwrap_err()),
        libc::ENOTDIR
    );
    fs::create_dir(u.u("full")).unwrap();
    fs::write(u.u("full/f"), "").unwrap();
    assert_eq!(
        errno(fs::rename(u.u("dir"), u.u("full")).unwrap_err()),
        libc::ENOTEMPTY
    );
    fs::rename(u.u("dir"), u.u("emptydir")).unwrap();
    assert_eq!(names(&u.u("emptydir")), ["x"]);
    u.assert_lower_unchanged();
}

#[test]
fn several_writable_branches_change_files_where_they_live() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/a", "a");
    fx.write("B/b", "b");
    fx.write("B/sub/s", "s");
    fx.write("C/c", "c");
    let lower = snapshot(&fx.path("C"));
    let spec = format!(
        "{}=rw:{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display(),
        fx.path("C").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    OpenOptions::new()
        .append(true)
        .open(m.path("b"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(read(&fx.path("B/b")), "b+");
    assert!(!fx.path("A/b").exists(), "changed in place in B");
    // New names in a directory that only B holds go to B (create=tdp).
    fs::write(m.path("sub/new"), "n").unwrap();
    assert_eq!(read(&fx.path("B/sub/new")), "n");
    // What lives only in the read-only branch is copied up to the topmost writable branch.
    OpenOptions::new()
        .append(true)
        .open(m.path("c"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(read(&fx.path("A/c")), "c+");
    fs::remove_file(m.path("b")).unwrap();
    assert!(!fx.path("B/b").exists());
    assert_eq!(names(&m.mnt), ["a", "c", "sub"]);
    drop(m);
    assert_eq!(snapshot(&fx.path("C")), lower);
}

#[test]
fn hardlinks_made_through_the_mount_stay_one_inode() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/f", "lower");
    });
    fs::hard_link(u.u("f"), u.u("g")).unwrap();
    let (f, g) = (
        fs::metadata(u.u("f")).unwrap(),
        fs::metadata(u.u("g")).unwrap(),
    );
    assert_eq!(f.ino(), g.ino());
    assert_eq!((f.nlink(), g.nlink()), (2, 2));
    OpenOptions::new()
        .append(true)
        .open(u.u("g"))
        .unwrap()
        .write_all(b"+g")
        .unwrap();
    assert_eq!(read(&u.u("f")), "lower+g");
    assert_eq!(fs::metadata(u.u("f")).unwrap().ino(), f.ino());
    fs::remove_file(u.u("f")).unwrap();
    assert_eq!(fs::metadata(u.u("g")).unwrap().nlink(), 1);
    u.assert_lower_unchanged();
}

#[test]
fn lower_hardlinks_stay_one_file_when_one_is_written_even_after_remount() {
    if !can_mount() {
        return;
    }
    let mut u = Union2::new(|fx| {
        fx.write("B/one", "shared");
        fx.mkdir("B/sub");
        fs::hard_link(fx.path("B/one"), fx.path("B/sub/two")).unwrap();
        fs::hard_link(fx.path("B/one"), fx.path("B/three")).unwrap();
    });
    OpenOptions::new()
        .append(true)
        .open(u.u("one"))
        .unwrap()
        .write_all(b"+1")
        .unwrap();
    assert_eq!(read(&u.u("sub/two")), "shared+1");
    assert_eq!(read(&u.u("three")), "shared+1");
    u.remount();
    assert_eq!(read(&u.u("sub/two")), "shared+1");
    OpenOptions::new()
        .append(true)
        .open(u.u("sub/two"))
        .unwrap()
        .write_all(b"+2")
        .unwrap();
    assert_eq!(read(&u.u("one")), "shared+1+2");
    assert_eq!(read(&u.u("three")), "shared+1+2");
    assert_eq!(
        fs::metadata(u.u("one")).unwrap().ino(),
        fs::metadata(u.u("sub/two")).unwrap().ino()
    );
    u.assert_lower_unchanged();
}

#[test]
fn modes_follow_the_umask_and_special_bits_are_kept() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|_| {});
    let base = u.m.as_ref().unwrap().mnt.display().to_string();
    // umask applies to create, mkdir, mknod and mkfifo; setuid/setgid/sticky are kept.
    let script = format!(
        "umask 027 && cd {base} && : > plain && mkdir dir && mkfifo fifo && \
         mkdir -m 1777 sticky && touch suid && chmod 6755 suid"
    );
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    let mode = |n: &str| fs::symlink_metadata(u.u(n)).unwrap().mode() & 0o7777;
    assert_eq!(mode("plain"), 0o640);
    assert_eq!(mode("dir"), 0o750);
    assert_eq!(mode("fifo"), 0o640);
    assert_eq!(mode("sticky"), 0o1777);
    assert_eq!(mode("suid"), 0o6755);
    // The exact mode asked for by open(O_CREAT), setuid included, under this process's umask.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let umask_line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    let umask = u32::from_str_radix(umask_line.split_whitespace().nth(1).unwrap(), 8).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o4711)
        .open(u.u("exact"));
    drop(f.unwrap());
    assert_eq!(mode("exact"), 0o4711 & !umask);
    assert_eq!(
        fs::symlink_metadata(u.upper("dir")).unwrap().mode() & 0o7777,
        0o750
    );
}

#[test]
fn setuid_is_cleared_on_chown_and_on_write_by_another_user() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        let f = fx.write("B/suid_chown", "x");
        set_mode(&f, 0o4755);
        let g = fx.write("B/suid_write", "x");
        set_mode(&g, 0o4777);
    });
    chown(&u.u("suid_chown"), 0, 0);
    assert_eq!(
        fs::metadata(u.u("suid_chown")).unwrap().mode() & 0o7777,
        0o755
    );
    let out = as_nobody(&format!("echo more >> {}", u.u("suid_write").display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::metadata(u.u("suid_write")).unwrap().mode() & 0o7777,
        0o777
    );
    u.assert_lower_unchanged();
}

#[test]
fn other_users_get_ordinary_permission_checks() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        let f = fx.write("B/rootfile", "secret");
        set_mode(&f, 0o640);
        fx.write("B/public", "hello");
        let d = fx.mkdir("B/open");
        set_mode(&d, 0o777);
    });
    let m = u.m.as_ref().unwrap().mnt.display().to_string();
    let out = as_nobody(&format!("cat {m}/rootfile"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    assert!(as_nobody(&format!("cat {m}/public")).status.success());
    assert!(!as_nobody(&format!("echo x > {m}/public")).status.success());
    assert!(!as_nobody(&format!("touch {m}/newfile")).status.success());
    assert!(as_nobody(&format!("touch {m}/open/mine")).status.success());
    // A file made by another user is theirs.
    let md = fs::metadata(u.u("open/mine")).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 65534));
    assert_eq!(fs::metadata(u.upper("open/mine")).unwrap().uid(), 65534);
    u.assert_lower_unchanged();
}

#[test]
fn open_flags_append_trunc_excl() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/f", "12345");
    });
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(u.u("f"))
                .unwrap_err()
        ),
        libc::EEXIST
    );
    let mut a = OpenOptions::new().append(true).open(u.u("f")).unwrap();
    a.write_all(b"6").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"7").unwrap();
    assert_eq!(read(&u.u("f")), "1234567");
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(u.u("f"))
        .unwrap()
        .write_all(b"new")
        .unwrap();
    assert_eq!(read(&u.u("f")), "new");
    u.assert_lower_unchanged();
}

#[test]
fn long_names_and_paths_near_path_max() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|_| {});
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    fs::write(u.u(&n255), "ok").unwrap();
    assert_eq!(
        errno(fs::write(u.u(&n256), "").unwrap_err()),
        libc::ENAMETOOLONG
    );
    // Build a path whose length through the mount is just under PATH_MAX. The branch's own
    // prefix makes the same path longer on disk; the union must not refuse it for that.
    let mnt_len = u.m.as_ref().unwrap().mnt.as_os_str().len();
    let comp = "d".repeat(50);
    let mut rel = String::new();
    // mnt + "/" + rel + "/" + comp + "/leaf" stays within PATH_MAX - 1 = 4095 bytes.
    while mnt_len + 1 + rel.len() + 51 + 5 <= 4095 {
        rel.push('/');
        rel.push_str(&comp);
    }
    let rel = rel.trim_start_matches('/').to_string();
    // mkdir -p through a relative walk (one component at a time, as a shell would).
    let mut cur = u.m.as_ref().unwrap().mnt.clone();
    for c in rel.split('/') {
        cur.push(c);
        fs::create_dir(&cur).unwrap();
    }
    let file = format!("{rel}/leaf");
    assert!(u.u(&file).as_os_str().len() > 4030);
    fs::write(u.u(&file), "deep").unwrap();
    assert_eq!(read(&u.u(&file)), "deep");
}

#[test]
fn writes_and_times_land_as_on_ext4() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/d/f", "x");
        set_times(&fx.path("B/d"), 1_000_000_000);
    });
    let before = fs::metadata(u.u("d")).unwrap();
    assert_eq!(before.mtime(), 1_000_000_000);
    fs::write(u.u("d/new"), "n").unwrap();
    let after = fs::metadata(u.u("d")).unwrap();
    assert!(
        after.mtime() > 1_000_000_000,
        "creating a name updates the directory's mtime"
    );
    // UTIME_OMIT leaves a time alone; UTIME_NOW sets it.
    let t = nix::sys::time::TimeSpec::new(1_500_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &u.u("d/f"),
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let m = fs::metadata(u.u("d/f")).unwrap();
    assert_eq!(m.mtime(), 1_500_000_000);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &u.u("d/f"),
        &nix::sys::time::TimeSpec::UTIME_NOW,
        &nix::sys::time::TimeSpec::UTIME_OMIT,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let m2 = fs::metadata(u.u("d/f")).unwrap();
    assert_eq!(m2.mtime(), 1_500_000_000);
    assert!(m2.atime() > 1_500_000_000);
    u.assert_lower_unchanged();
}

#[test]
fn symlinks_fifos_and_sockets_through_the_mount() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        symlink("target", fx.path("B/lowlink")).unwrap();
    });
    symlink("/outside", u.u("l")).unwrap();
    assert_eq!(fs::read_link(u.u("l")).unwrap().to_str(), Some("/outside"));
    assert_eq!(
        fs::read_link(u.upper("l")).unwrap().to_str(),
        Some("/outside")
    );
    // chown of a lower symlink copies the link itself, not its target.
    std::os::unix::fs::lchown(u.u("lowlink"), Some(7), Some(7)).unwrap();
    let m = fs::symlink_metadata(u.upper("lowlink")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.uid(), 7);
    nix::unistd::mkfifo(
        &u.u("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(u.upper("fifo")).unwrap().file_type()
    ));
    let sock = std::os::unix::net::UnixListener::bind(u.u("sock")).unwrap();
    drop(sock);
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &fs::symlink_metadata(u.u("sock")).unwrap().file_type()
    ));
    u.assert_lower_unchanged();
}

#[test]
fn fsync_flock_and_posix_locks() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/f", "x");
    });
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(u.u("f"))
        .unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    let _held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .open(u.u("f"))
        .unwrap();
    let r = nix::fcntl::Flock::lock(g, nix::fcntl::FlockArg::LockExclusiveNonblock);
    assert!(r.is_err(), "a second exclusive flock must fail");
    let d = fs::File::open(u.m.as_ref().unwrap().mnt.clone()).unwrap();
    d.sync_all().unwrap();
}

#[test]
fn the_root_itself_can_be_chowned_chmodded_and_touched() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|_| {});
    let root = u.m.as_ref().unwrap().mnt.clone();
    chown(&root, 0, 0);
    set_mode(&root, 0o751);
    set_times(&root, 1_300_000_000);
    let m = fs::metadata(&root).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o751);
    assert_eq!(m.mtime(), 1_300_000_000);
    assert_eq!(fs::metadata(u.fx.path("A")).unwrap().mode() & 0o7777, 0o751);
    u.assert_lower_unchanged();
}

/// O_TMPFILE: fuser 0.18 does not decode the kernel's FUSE_TMPFILE request, so the daemon
/// cannot serve it; the kernel turns the ENOSYS reply into EOPNOTSUPP (and stops asking),
/// which is what applications test for before falling back to a named temporary file (glibc's
/// tmpfile, systemd, runc's exeseal). Exactly that errno, every time, and nothing left behind.
#[test]
fn o_tmpfile_is_refused_with_eopnotsupp_and_the_mount_goes_on() {
    if !can_mount() {
        return;
    }
    let u = Union2::new(|fx| {
        fx.write("B/d/lower", "x");
    });
    for dir in ["", "d"] {
        for _ in 0..2 {
            let e = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(u.u(dir))
                .expect_err("O_TMPFILE is not served");
            assert_eq!(errno(e), libc::EOPNOTSUPP, "O_TMPFILE in {dir:?}");
        }
    }
    fs::write(u.u("d/after"), "served").unwrap();
    assert_eq!(read(&u.u("d/after")), "served");
    assert_eq!(names(&u.upper("d")), ["after"]);
    u.assert_lower_unchanged();
}
