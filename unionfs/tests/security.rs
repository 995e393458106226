//! Hostile layers and hostile users of the mount: nothing may make the daemon read or write
//! outside its branches.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

use common::*;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// A process inside the union swaps a directory for a symlink to a host directory, again and
/// again, while another writes below it. The writer never follows symlinks itself, so whatever
/// lands in the host directory could only come from the daemon following one.
#[test]
fn symlink_swap_during_copy_up_never_leads_the_daemon_outside() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let outside = fx.mkdir("outside");
    fs::write(outside.join("sentinel"), "host data").unwrap();
    let outside_before = snapshot(&outside);
    fx.mkdir("A");
    fx.write("B/d/f", "lower");
    fx.write("B/d/sub/g", "lower");
    let lower = snapshot(&fx.path("B"));
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let mnt = m.mnt.clone();
    let stop = Instant::now() + Duration::from_secs(3);
    let target = outside.clone();
    let swapper = std::thread::spawn(move || {
        let d = mnt.join("d");
        let mut swaps = 0;
        while Instant::now() < stop {
            let _ = fs::remove_dir_all(&d);
            let _ = fs::remove_file(&d);
            let _ = symlink(&target, &d);
            let _ = fs::remove_file(&d);
            let _ = fs::create_dir(&d);
            let _ = fs::create_dir(d.join("sub"));
            swaps += 1;
        }
        swaps
    });
    let root = fs::File::open(&m.mnt).unwrap();
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT)
        .mode(Mode::from_bits_truncate(0o644))
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH);
    let mut writes = 0;
    while Instant::now() < stop {
        for rel in ["d/f", "d/sub/g", "d/new", "d/sub/new"] {
            if let Ok(fd) = nix::fcntl::openat2(root.as_fd(), rel, how) {
                let mut f = fs::File::from(fd);
                if f.write_all(b"pwn").is_ok() {
                    writes += 1;
                }
            }
        }
    }
    let swaps = swapper.join().unwrap();
    assert!(
        swaps > 10 && writes > 10,
        "the race ran ({swaps} swaps, {writes} writes)"
    );
    drop(m);
    assert_eq!(
        snapshot(&outside),
        outside_before,
        "the host directory was touched"
    );
    assert_eq!(
        snapshot(&fx.path("B")),
        lower,
        "the read-only branch was touched"
    );
}

/// A layer whose file is a hardlink of a host file: changing it through the union copies it up;
/// the host file (the same inode) is never written.
#[test]
fn hardlink_to_a_host_file_is_copied_never_written() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let secret = fx.write("host/secret", "host secret");
    fx.mkdir("A");
    fx.mkdir("B");
    fs::hard_link(&secret, fx.path("B/link")).unwrap();
    let before = fs::metadata(&secret).unwrap();
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    OpenOptions::new()
        .append(true)
        .open(m.path("link"))
        .unwrap()
        .write_all(b"+changed")
        .unwrap();
    assert_eq!(read(&m.path("link")), "host secret+changed");
    drop(m);
    assert_eq!(read(&secret), "host secret");
    let after = fs::metadata(&secret).unwrap();
    assert_eq!(
        (after.mtime(), after.mtime_nsec(), after.ctime()),
        (before.mtime(), before.mtime_nsec(), before.ctime())
    );
}

/// Device nodes in a layer are data: the daemon never opens them; a change copies the node
/// itself (mknod), not what it points at.
#[test]
fn device_nodes_in_layers_are_copied_as_nodes() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("B");
    // 1:3 is /dev/null; 8:0 a disk. The daemon must not read either.
    for (name, dev) in [
        ("null", nix::sys::stat::makedev(1, 3)),
        ("disk", nix::sys::stat::makedev(8, 0)),
    ] {
        nix::sys::stat::mknod(
            &fx.path(&format!("B/{name}")),
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            dev,
        )
        .unwrap();
    }
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &["-o", "nodev"]);
    set_mode(&m.path("disk"), 0o640);
    let up = fs::symlink_metadata(fx.path("A/disk")).unwrap();
    assert!(up.file_type().is_char_device());
    assert_eq!(up.rdev(), nix::sys::stat::makedev(8, 0));
    assert_eq!(up.mode() & 0o777, 0o640);
    // With nodev the union refuses to open device nodes at all.
    assert_eq!(
        errno(fs::File::open(m.path("null")).unwrap_err()),
        libc::EACCES
    );
}

/// Names of the whiteout family cannot be made through the mount, at the top or deeper.
#[test]
fn a_user_cannot_plant_whiteouts_or_opaque_markers() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.write("B/etc/passwd", "root");
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    for name in [
        "/.wh.etc",
        "/etc/.wh.passwd",
        "/etc/.wh..wh..opq",
        "/.wh..wh.plnk",
        "/.wh..wh.work/x",
    ] {
        let p = m.mnt.join(name.trim_start_matches('/'));
        let e = fs::write(&p, "").unwrap_err();
        assert!(matches!(errno(e), libc::EPERM | libc::ENOENT), "{name}");
    }
    assert_eq!(read(&m.path("etc/passwd")), "root");
    assert_eq!(names(&m.mnt), ["etc"]);
    // The daemon's own bookkeeping directories are invisible.
    assert_eq!(
        errno(fs::read_dir(m.path(".wh..wh.work")).unwrap_err()),
        libc::ENOENT
    );
}
