//! A node id that comes back for a new file gets a new generation, so the kernel never hands
//! the new file an inode it still holds for the old one (`InodeTable::mark_unlinked`).
//! pjdfstest's `open::etxtbsy` found it, in about one run in six: a copied `sleep` run, killed
//! and removed, then the next copy (given the same inode number by ext4) run; the old
//! process's late release of its executable undid the new one's write denial, and an open for
//! writing succeeded. That timing is pjdfstest's to reproduce (the conformance test runs it);
//! the test here shows the inode take-over itself, deterministically.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

#[test]
fn a_new_file_with_a_reused_inode_number_does_not_take_over_an_inode_the_kernel_holds() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("upper");
    fx.mkdir("lower");
    let spec = format!(
        "{}=rw:{}=rr",
        fx.path("upper").display(),
        fx.path("lower").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    for attempt in 0..50 {
        let old = m.path(&format!("old{attempt}"));
        fs::write(&old, "a").unwrap();
        let old_ino = fs::metadata(&old).unwrap().ino();
        // An O_PATH descriptor keeps the kernel's inode without an open in the daemon, so the
        // branch file is freed at the unlink and its number is free for the next file.
        let held = nix::fcntl::open(
            &old,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        fs::remove_file(&old).unwrap();
        let new = m.path(&format!("new{attempt}"));
        fs::write(&new, "bbbbb").unwrap();
        if fs::metadata(&new).unwrap().ino() != old_ino {
            continue;
        }
        // Same node id. With the same generation the kernel would have given the new file the
        // held inode: its attributes would be the new file's.
        let st = nix::sys::stat::fstat(&held);
        assert!(
            !matches!(st, Ok(s) if s.st_size == 5),
            "the removed file's inode became the new file's: {st:?}"
        );
        assert_eq!(fs::read_to_string(&new).unwrap(), "bbbbb");
        return;
    }
    panic!("the upper branch never reused an inode number in 50 tries: nothing was tested");
}
