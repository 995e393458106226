//! Removing a directory whose upper copy holds whiteouts: the name goes at once, the whiteouts
//! are deleted in the background from the work directory (`unionfs::trash`), unmount waits for
//! that, and when the work directory takes no new names the whiteouts are deleted in place.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// `dirs` lower directories of `files` files each, under `lower/`.
fn lower_tree(fx: &Fixture, dirs: usize, files: usize) {
    for d in 0..dirs {
        for f in 0..files {
            fx.write(&format!("lower/d{d}/f{f}"), "lower");
        }
    }
}

/// Names in `dir` other than the shared whiteout file's `tmp.whiteout.*`.
fn leftovers(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("tmp.whiteout."))
        .collect()
}

#[test]
fn rm_rf_of_lower_directories_leaves_whiteouts_and_an_empty_work_directory() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    lower_tree(&fx, 10, 200);
    let before = snapshot(&fx.path("lower"));
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    for d in 0..10 {
        fs::remove_dir_all(m.path(&format!("d{d}"))).unwrap();
    }
    assert_eq!(names(&m.mnt), Vec::<String>::new());
    for d in 0..10 {
        assert!(
            fx.path(&format!("upper/.wh.d{d}")).exists(),
            "whiteout of d{d}"
        );
        assert!(!fx.path(&format!("upper/d{d}")).exists(), "upper d{d} gone");
    }
    // The same name again: a new, empty directory that hides the lower one.
    fs::create_dir(m.path("d3")).unwrap();
    fs::write(m.path("d3/new"), "new").unwrap();
    assert_eq!(names(&m.path("d3")), ["new"]);
    // Unmounting waits for the background deletion; nothing of it is left in the branch.
    drop(m);
    assert!(
        !fx.path("upper/.wh..wh.work").exists(),
        "the work directory is removed at unmount: {:?}",
        leftovers(&fx.path("upper/.wh..wh.work"))
    );
    assert_eq!(
        snapshot(&fx.path("lower")),
        before,
        "the lower branch is unchanged"
    );
}

#[test]
fn a_work_directory_that_takes_no_new_names_still_lets_directories_go() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    lower_tree(&fx, 2, 40);
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    // The first removal makes the shared whiteout file and copies d0 up (both through the
    // work directory). Then the work directory is made immutable, so that a rename into it
    // fails (EPERM) and the whiteouts go in place.
    fs::remove_file(m.path("d0/f0")).unwrap();
    let work = fx.path("upper/.wh..wh.work");
    let chattr = |flag: &str| {
        let out = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&work)
            .output()
            .expect("chattr (e2fsprogs)");
        assert!(
            out.status.success(),
            "chattr {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    chattr("+i");
    struct Mutable<F: Fn(&str)>(F);
    impl<F: Fn(&str)> Drop for Mutable<F> {
        fn drop(&mut self) {
            (self.0)("-i");
        }
    }
    let _mutable = Mutable(chattr);
    fs::remove_dir_all(m.path("d0")).unwrap();
    assert!(fx.path("upper/.wh.d0").exists());
    assert!(!fx.path("upper/d0").exists());
    assert_eq!(names(&m.mnt), ["d1"]);
    assert_eq!(leftovers(&work), Vec::<String>::new());
}

#[test]
fn what_a_crash_leaves_in_the_work_directory_goes_at_the_next_mount() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    lower_tree(&fx, 1, 3);
    // As a daemon killed in the middle of a background deletion leaves it.
    fx.write("upper/.wh..wh.work/tmp.1.0/.wh.f0", "");
    fx.write("upper/.wh..wh.work/tmp.1.0/.wh.f1", "");
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert_eq!(
        leftovers(&fx.path("upper/.wh..wh.work")),
        Vec::<String>::new()
    );
    assert_eq!(names(&m.path("d0")), ["f0", "f1", "f2"]);
}
