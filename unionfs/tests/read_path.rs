//! The read path on real mounts: each merge rule of DESIGN.md, symlinks that point outside the
//! branch, hardlinks, inode numbers, xattrs. Every test also checks the read-only branches did
//! not change.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::process::Command;

use common::*;

#[test]
fn seed_example_shows_a_b_and_x_from_a() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    copy_tree(&fixtures().join("seed"), fx.dir.path());
    let before = snapshot(&fx.path("B"));
    let spec = format!("{}:{}", fx.path("A").display(), fx.path("B").display());
    let m = mount(&spec, &fx.path("C"), &[]);
    assert_eq!(names(&m.mnt), ["a", "b", "x"]);
    assert_eq!(read(&m.path("x")), "x from A\n");
    assert_eq!(read(&m.path("b")), "b from B\n");
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), before);
}

#[test]
fn whiteouts_and_opaque_markers_hide_only_lower_branches() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    // Top branch: whiteouts for "gone" and "dir/old", an opaque directory, and a whiteout that
    // sits next to a real file of its own branch (which must stay visible).
    fx.write("A/.wh.gone", "");
    fx.write("A/dir/new", "new");
    fx.write("A/dir/.wh.old", "");
    fx.write("A/opq/.wh..wh..opq", "");
    fx.write("A/opq/top", "top");
    fx.write("A/both", "A's own");
    fx.write("A/.wh.both", "");
    fx.write("B/gone", "lower");
    fx.write("B/dir/old", "old");
    fx.write("B/dir/kept", "kept");
    fx.write("B/opq/hidden", "hidden");
    fx.write("B/both", "B's");
    let before = snapshot(&fx.path("B"));
    let spec = format!(
        "{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("C"), &[]);
    assert_eq!(names(&m.mnt), ["both", "dir", "opq"]);
    assert_eq!(names(&m.path("dir")), ["kept", "new"]);
    assert_eq!(names(&m.path("opq")), ["top"]);
    assert_eq!(read(&m.path("both")), "A's own");
    assert_eq!(
        errno(fs::metadata(m.path("gone")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::metadata(m.path("opq/hidden")).unwrap_err()),
        libc::ENOENT
    );
    // Whiteout names are never visible, not even by exact lookup.
    assert_eq!(
        errno(fs::metadata(m.path(".wh.gone")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::metadata(m.path("opq/.wh..wh..opq")).unwrap_err()),
        libc::ENOENT
    );
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), before);
}

#[test]
fn non_directory_ends_the_walk_and_directories_merge() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/f_over_d", "file");
    fx.write("B/f_over_d/inner", "hidden by the file");
    fx.write("A/d_over_f/inner", "dir");
    fx.write("B/d_over_f", "hidden by the dir");
    fx.write("A/m/one", "1");
    fx.write("B/m/two", "2");
    fx.write("C/m/three", "3");
    fx.write("B/m/one", "shadowed");
    let spec = format!(
        "{}=ro:{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display(),
        fx.path("C").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert!(fs::metadata(m.path("f_over_d")).unwrap().is_file());
    assert_eq!(read(&m.path("f_over_d")), "file");
    assert!(fs::metadata(m.path("d_over_f")).unwrap().is_dir());
    assert_eq!(names(&m.path("d_over_f")), ["inner"]);
    assert_eq!(names(&m.path("m")), ["one", "three", "two"]);
    assert_eq!(read(&m.path("m/one")), "1");
    // readdir shows each name once, with . and .. once.
    let out = Command::new("ls")
        .arg("-a1")
        .arg(m.path("m"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        ".\n..\none\nthree\ntwo\n"
    );
}

#[test]
fn overlayfs_whiteouts_and_opaque_xattrs_in_lower_branches_are_honoured() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    nix::sys::stat::mknod(
        &fx.path("A/gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        0,
    )
    .unwrap();
    fx.write("A/opq/top", "top");
    let st = Command::new("setfattr")
        .args(["-n", "trusted.overlay.opaque", "-v", "y"])
        .arg(fx.path("A/opq"))
        .status()
        .expect("setfattr (package attr) is needed");
    assert!(st.success());
    fx.write("B/gone", "lower");
    fx.write("B/opq/hidden", "hidden");
    fx.write("B/kept", "kept");
    let spec = format!(
        "{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert_eq!(names(&m.mnt), ["kept", "opq"]);
    assert_eq!(names(&m.path("opq")), ["top"]);
    // The layer-describing xattr itself is not shown.
    let out = Command::new("getfattr")
        .args(["-d", "-m", "-"])
        .arg(m.path("opq"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("overlay"));
}

#[test]
fn symlinks_pointing_outside_are_data_never_followed_by_the_daemon() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    // Upper has a real directory `d`; the lower branch has `d` as a symlink to /etc. If the
    // daemon followed it, d/passwd would show the host's file.
    fx.write("A/d/mine", "mine");
    fx.mkdir("B");
    symlink("/etc", fx.path("B/d")).unwrap();
    symlink("../../../../../../etc/passwd", fx.path("B/rel")).unwrap();
    symlink("/etc/shadow", fx.path("B/abs")).unwrap();
    fx.mkdir("B/sub");
    symlink("/etc", fx.path("B/sub/esc")).unwrap();
    let spec = format!(
        "{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert_eq!(names(&m.path("d")), ["mine"]);
    assert_eq!(
        errno(fs::symlink_metadata(m.path("d/passwd")).unwrap_err()),
        libc::ENOENT
    );
    assert_eq!(
        fs::read_link(m.path("rel")).unwrap().to_str().unwrap(),
        "../../../../../../etc/passwd"
    );
    assert_eq!(
        fs::read_link(m.path("abs")).unwrap().to_str().unwrap(),
        "/etc/shadow"
    );
    assert!(fs::symlink_metadata(m.path("abs"))
        .unwrap()
        .file_type()
        .is_symlink());
    // A lookup through a symlinked directory of a branch is the kernel's business (it follows
    // the link on the client side); the daemon itself never resolves `sub/esc/passwd` in the
    // branch.
    assert!(fs::symlink_metadata(m.path("sub/esc"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn hardlinks_show_one_inode_and_their_link_count() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("B/one", "shared");
    fs::create_dir_all(fx.path("B/sub")).unwrap();
    fs::hard_link(fx.path("B/one"), fx.path("B/sub/two")).unwrap();
    fx.mkdir("A");
    let spec = format!(
        "{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let a = fs::metadata(m.path("one")).unwrap();
    let b = fs::metadata(m.path("sub/two")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    assert_eq!(b.nlink(), 2);
}

/// Files whose other links lie outside the branch (a `cp -al` layer store, an ostree checkout)
/// show one link: the union shows one name of them. Through a lookup and through a listing.
#[test]
fn files_linked_only_outside_the_branch_show_one_link() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("B/d/solo", "x");
    fx.write("B/d/pair1", "y");
    fs::hard_link(fx.path("B/d/pair1"), fx.path("B/d/pair2")).unwrap();
    fs::create_dir_all(fx.path("store")).unwrap();
    fs::hard_link(fx.path("B/d/solo"), fx.path("store/solo")).unwrap();
    fs::hard_link(fx.path("B/d/pair1"), fx.path("store/pair")).unwrap();
    fx.mkdir("A");
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    // A listing first (readdirplus answers with attributes), then each name again.
    let listed: Vec<(String, u64)> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                e.metadata().unwrap().nlink(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for (name, nlink) in listed {
        let want = if name == "solo" { 1 } else { 2 };
        assert_eq!(nlink, want, "{name} listed");
        assert_eq!(
            fs::metadata(m.path("d").join(&name)).unwrap().nlink(),
            want,
            "{name}"
        );
    }
}

#[test]
fn inode_numbers_are_stable_while_mounted() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/top", "t");
    fx.write("B/d/low", "l");
    let spec = format!(
        "{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let first: Vec<u64> = ["top", "d", "d/low"]
        .iter()
        .map(|p| fs::metadata(m.path(p)).unwrap().ino())
        .collect();
    // Make the kernel forget its cached inodes, then look again.
    let _ = fs::write("/proc/sys/vm/drop_caches", "2");
    let again: Vec<u64> = ["top", "d", "d/low"]
        .iter()
        .map(|p| fs::metadata(m.path(p)).unwrap().ino())
        .collect();
    assert_eq!(first, again);
    let mut uniq = first.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "distinct files have distinct inode numbers");
}

#[test]
fn xattrs_statfs_and_access_read_through() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let f = fx.write("B/f", "data");
    assert!(Command::new("setfattr")
        .args(["-n", "user.color", "-v", "blue"])
        .arg(&f)
        .status()
        .unwrap()
        .success());
    fx.mkdir("A");
    let spec = format!(
        "{}=ro:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let out = Command::new("getfattr")
        .args(["-n", "user.color", "--only-values"])
        .arg(m.path("f"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "blue");
    let vfs = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
    assert!(vfs.blocks() > 0);
    assert!(nix::unistd::access(&m.path("f"), nix::unistd::AccessFlags::R_OK).is_ok());
    // An all-read-only union refuses writes with EROFS.
    assert_eq!(errno(fs::write(m.path("f"), "x").unwrap_err()), libc::EROFS);
    assert_eq!(
        errno(fs::write(m.path("new"), "x").unwrap_err()),
        libc::EROFS
    );
}
