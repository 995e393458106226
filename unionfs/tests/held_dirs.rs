//! The daemon holds each looked-up directory of `rw` and `rr` branches open and works on those
//! descriptors. A renamed, removed, replaced or copied-up directory must never be reached
//! through a descriptor taken under its old name: each test warms the descriptors (lookups,
//! creates, listings), changes the tree, and checks that new names land where the union shows
//! them, in the branch directory that now has that name.

mod common;

use std::fs;

use common::*;

/// `A=rw:B=rr`: both branches' directories are held by the daemon.
struct Held {
    fx: Fixture,
    m: Option<Mounted>,
}

impl Held {
    fn new(setup: impl FnOnce(&Fixture)) -> Held {
        let fx = Fixture::new();
        fx.mkdir("A");
        fx.mkdir("B");
        setup(&fx);
        let spec = format!(
            "{}=rw:{}=rr",
            fx.path("A").display(),
            fx.path("B").display()
        );
        let m = mount(&spec, &fx.path("mnt"), &[]);
        Held { fx, m: Some(m) }
    }

    fn u(&self, rel: &str) -> std::path::PathBuf {
        self.m.as_ref().unwrap().path(rel)
    }

    fn upper(&self, rel: &str) -> std::path::PathBuf {
        self.fx.path("A").join(rel)
    }
}

#[test]
fn a_renamed_directory_is_not_reached_under_its_old_name() {
    if !can_mount() {
        return;
    }
    let u = Held::new(|_| {});
    fs::create_dir(u.u("a")).unwrap();
    fs::write(u.u("a/x"), "x").unwrap();
    fs::rename(u.u("a"), u.u("b")).unwrap();
    // A new `a` where the old one stood: new names go into it, not into `b`.
    fs::create_dir(u.u("a")).unwrap();
    fs::write(u.u("a/y"), "y").unwrap();
    assert_eq!(names(&u.u("a")), ["y"]);
    assert_eq!(names(&u.u("b")), ["x"]);
    assert!(u.upper("a/y").exists());
    assert!(!u.upper("b/y").exists());
    // And the moved directory keeps working under its new name.
    fs::write(u.u("b/z"), "z").unwrap();
    assert!(u.upper("b/z").exists());
    fs::remove_file(u.u("b/x")).unwrap();
    assert_eq!(names(&u.u("b")), ["z"]);
    assert_eq!(names(&u.upper("b")), ["z"]);
}

#[test]
fn a_removed_and_remade_directory_gets_the_new_names() {
    if !can_mount() {
        return;
    }
    let u = Held::new(|fx| {
        fx.write("B/d/low", "low");
    });
    fs::write(u.u("d/up"), "up").unwrap();
    fs::remove_file(u.u("d/up")).unwrap();
    fs::remove_file(u.u("d/low")).unwrap();
    fs::remove_dir(u.u("d")).unwrap();
    assert!(u.upper(".wh.d").exists());
    fs::create_dir(u.u("d")).unwrap();
    // The lower `d` stays hidden: the new directory is opaque and holds only new names.
    assert_eq!(names(&u.u("d")), Vec::<String>::new());
    fs::write(u.u("d/new"), "new").unwrap();
    assert_eq!(names(&u.u("d")), ["new"]);
    assert!(u.upper("d/new").exists());
    assert!(u.upper("d/.wh..wh..opq").exists());
    assert!(!u.fx.path("B/d/new").exists());
}

#[test]
fn a_merged_directory_renamed_away_leaves_no_path_into_its_lower_half() {
    if !can_mount() {
        return;
    }
    let u = Held::new(|fx| {
        fx.write("B/m/low", "low");
        fx.write("B/m/sub/deep", "deep");
    });
    // Warm the merged directory's descriptors in both branches.
    fs::write(u.u("m/up"), "up").unwrap();
    assert_eq!(names(&u.u("m")), ["low", "sub", "up"]);
    assert_eq!(read(&u.u("m/sub/deep")), "deep");
    fs::rename(u.u("m"), u.u("n")).unwrap();
    assert_eq!(names(&u.u("n")), ["low", "sub", "up"]);
    assert_eq!(errno(fs::metadata(u.u("m")).unwrap_err()), libc::ENOENT);
    // A new `m` must not merge with the lower `m`, nor reach `n` through an old descriptor.
    fs::create_dir(u.u("m")).unwrap();
    assert_eq!(names(&u.u("m")), Vec::<String>::new());
    fs::write(u.u("m/fresh"), "fresh").unwrap();
    assert_eq!(names(&u.u("m")), ["fresh"]);
    assert_eq!(names(&u.u("n")), ["low", "sub", "up"]);
    assert!(u.upper("m/fresh").exists());
    assert!(!u.upper("n/fresh").exists());
    // The moved tree lives in the upper branch now: changes land there.
    fs::write(u.u("n/sub/more"), "more").unwrap();
    assert!(u.upper("n/sub/more").exists());
    assert!(!u.fx.path("B/m/sub/more").exists());
}

#[test]
fn a_lower_directory_copied_up_by_a_create_takes_the_next_names_in_the_upper_copy() {
    if !can_mount() {
        return;
    }
    let u = Held::new(|fx| {
        fx.write("B/l/a", "a");
        fx.write("B/l/deep/b", "b");
    });
    assert_eq!(names(&u.u("l")), ["a", "deep"]);
    assert_eq!(names(&u.u("l/deep")), ["b"]);
    // `l` and `l/deep` exist only in the read-only branch: the first create copies them up.
    fs::write(u.u("l/deep/c"), "c").unwrap();
    fs::write(u.u("l/d"), "d").unwrap();
    assert!(u.upper("l/deep/c").exists());
    assert!(u.upper("l/d").exists());
    assert_eq!(names(&u.u("l")), ["a", "d", "deep"]);
    assert_eq!(names(&u.u("l/deep")), ["b", "c"]);
    // Removing a lower name whites it out in the upper copy.
    fs::remove_file(u.u("l/a")).unwrap();
    assert!(u.upper("l/.wh.a").exists());
    assert!(u.fx.path("B/l/a").exists());
    assert_eq!(names(&u.u("l")), ["d", "deep"]);
}

#[test]
fn exchanged_directories_each_get_their_own_new_names() {
    if !can_mount() {
        return;
    }
    let u = Held::new(|_| {});
    fs::create_dir(u.u("p")).unwrap();
    fs::create_dir(u.u("q")).unwrap();
    fs::write(u.u("p/in_p"), "").unwrap();
    fs::write(u.u("q/in_q"), "").unwrap();
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &u.u("p"),
        nix::fcntl::AT_FDCWD,
        &u.u("q"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    fs::write(u.u("p/new_p"), "").unwrap();
    fs::write(u.u("q/new_q"), "").unwrap();
    assert_eq!(names(&u.u("p")), ["in_q", "new_p"]);
    assert_eq!(names(&u.u("q")), ["in_p", "new_q"]);
    assert_eq!(names(&u.upper("p")), ["in_q", "new_p"]);
    assert_eq!(names(&u.upper("q")), ["in_p", "new_q"]);
}

#[test]
fn directories_moved_between_parents_take_their_subtree_along() {
    if !can_mount() {
        return;
    }
    let u = Held::new(|_| {});
    fs::create_dir_all(u.u("s/t/v")).unwrap();
    fs::create_dir(u.u("w")).unwrap();
    fs::write(u.u("s/t/v/f"), "").unwrap();
    fs::rename(u.u("s/t"), u.u("w/t")).unwrap();
    fs::create_dir(u.u("s/t")).unwrap();
    fs::write(u.u("s/t/g"), "").unwrap();
    fs::write(u.u("w/t/v/h"), "").unwrap();
    assert_eq!(names(&u.u("s/t")), ["g"]);
    assert_eq!(names(&u.u("w/t/v")), ["f", "h"]);
    assert!(u.upper("w/t/v/h").exists());
    assert!(u.upper("s/t/g").exists());
    assert!(!u.upper("s/t/v").exists());
}
