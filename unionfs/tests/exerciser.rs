//! A file exerciser (in the spirit of fsx): thousands of random reads, writes, truncates,
//! fallocates, mmap reads and reopens on one file through the mount, each checked against an
//! in-memory copy. Run on a file created in the union (passthrough on the upper branch) and on
//! a lower file that the first write copies up (cached, then moved to the copy).

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::path::Path;

use common::*;

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const MAX_SIZE: u64 = 256 * 1024;

fn open(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

fn check_range(file: &File, model: &[u8], off: u64, len: u64, step: usize, what: &str) {
    let mut buf = vec![0u8; len as usize];
    let n = nix::sys::uio::pread(file, &mut buf, off as i64).unwrap();
    let end = (off as usize + len as usize).min(model.len());
    let want = if (off as usize) < model.len() {
        &model[off as usize..end]
    } else {
        &[][..]
    };
    assert_eq!(
        n,
        want.len(),
        "step {step} {what}: short read at {off}+{len}"
    );
    assert!(
        buf[..n] == *want,
        "step {step} {what}: data differs at {off}+{len}"
    );
}

fn check_mmap(file: &File, model: &[u8], step: usize) {
    if model.is_empty() {
        return;
    }
    let len = std::num::NonZeroUsize::new(model.len()).unwrap();
    // SAFETY: a fresh private read-only mapping of `len` bytes of an open file; it is only
    // read while `file` is open and unmapped before this function returns.
    let map = unsafe {
        nix::sys::mman::mmap(
            None,
            len,
            nix::sys::mman::ProtFlags::PROT_READ,
            nix::sys::mman::MapFlags::MAP_SHARED,
            file.as_fd(),
            0,
        )
    }
    .unwrap();
    // SAFETY: the mapping is `len` bytes long and readable (PROT_READ) until munmap below.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr() as *const u8, model.len()) };
    let same = bytes == model;
    // SAFETY: unmapping exactly the mapping made above, no longer used.
    unsafe { nix::sys::mman::munmap(map, model.len()) }.unwrap();
    assert!(same, "step {step}: mmap view differs from the model");
}

fn exercise(path: &Path, mut model: Vec<u8>, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let mut file = open(path);
    for step in 0..steps {
        match rng.below(10) {
            0..=2 => {
                let off = rng.below(MAX_SIZE);
                let len = 1 + rng.below(16 * 1024);
                let len = len.min(MAX_SIZE - off);
                let byte = (rng.next() & 0xff) as u8;
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                nix::sys::uio::pwrite(&file, &data, off as i64).unwrap();
                let end = (off + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            3..=4 => {
                let off = rng.below(MAX_SIZE);
                let len = 1 + rng.below(32 * 1024);
                check_range(&file, &model, off, len, step, "read");
            }
            5 => {
                let size = rng.below(MAX_SIZE);
                file.set_len(size).unwrap();
                model.resize(size as usize, 0);
            }
            6 => {
                // Allocate without changing the size (KEEP_SIZE), or punch a hole.
                let off = rng.below(MAX_SIZE);
                let len = 1 + rng.below(32 * 1024);
                let punch = rng.below(2) == 0;
                let mode = if punch {
                    nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                        | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE
                } else {
                    nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE
                };
                nix::fcntl::fallocate(&file, mode, off as i64, len as i64).unwrap();
                if punch {
                    let end = ((off + len) as usize).min(model.len());
                    if (off as usize) < end {
                        model[off as usize..end].fill(0);
                    }
                }
            }
            7 => check_mmap(&file, &model, step),
            8 => {
                // Close and reopen: the kernel may serve the new open from its page cache.
                drop(file);
                file = open(path);
            }
            _ => {
                let m = fs::metadata(path).unwrap();
                assert_eq!(m.len(), model.len() as u64, "step {step}: size");
            }
        }
    }
    check_range(&file, &model, 0, MAX_SIZE, steps, "final read");
    drop(file);
    assert_eq!(
        fs::read(path).unwrap(),
        model,
        "final content through a new open"
    );
}

#[test]
fn exerciser_on_a_file_made_in_the_union_and_on_a_copied_up_lower_file() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("U");
    fx.mkdir("W");
    let lower_data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    fs::create_dir_all(fx.path("L")).unwrap();
    fs::write(fx.path("L/lower"), &lower_data).unwrap();
    let lower = snapshot(&fx.path("L"));
    fx.mkdir("mnt");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        fx.path("L").display(),
        fx.path("U").display(),
        fx.path("W").display()
    );
    let out = run(&["-o", &opts, fx.path("mnt").to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted {
        mnt: fx.path("mnt"),
    };
    // EXERCISER_STEPS=100000 for a long run.
    let steps = std::env::var("EXERCISER_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    fs::write(m.path("upper"), b"").unwrap();
    exercise(&m.path("upper"), Vec::new(), 0x9E37_79B9_7F4A_7C15, steps);
    // A reader holds the lower file open while the first write copies it up.
    let reader = File::open(m.path("lower")).unwrap();
    exercise(&m.path("lower"), lower_data, 0xD1B5_4A32_D192_ED03, steps);
    let copied = fs::read(fx.path("U/lower")).unwrap();
    let mut through_old = vec![0u8; copied.len()];
    let n = nix::sys::uio::pread(&reader, &mut through_old, 0).unwrap();
    assert_eq!(
        &through_old[..n],
        &copied[..],
        "the old read-only fd follows the copy-up"
    );
    drop(reader);
    drop(m);
    assert_eq!(snapshot(&fx.path("L")), lower);
}
