//! Faults and load: the daemon killed in the middle of a copy-up, a writable branch that fills
//! up, and many threads changing one lower directory at once.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Writes `mib` MiB of a position-dependent pattern (real data, no holes).
fn write_pattern(p: &Path, mib: usize) {
    let mut f = fs::File::create(p).unwrap();
    let mut chunk: Vec<u8> = (0..1usize << 20).map(|j| (j * 7 % 251) as u8).collect();
    for i in 0..mib {
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&chunk).unwrap();
    }
}

fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
        Err(_) => Vec::new(),
    }
}

#[test]
fn sigkill_during_copy_up_leaves_old_content_and_no_partial_file() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("B");
    fx.mkdir("mnt");
    write_pattern(&fx.path("B/big"), 512);
    let lower = snapshot(&fx.path("B"));
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let mut daemon = Command::new(BIN)
        .args(["mount", "-f", &spec, fx.path("mnt").to_str().unwrap()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_mounted(&fx.path("mnt")) {
        assert!(Instant::now() < deadline, "mount never appeared");
        std::thread::yield_now();
    }
    let guard = Mounted {
        mnt: fx.path("mnt"),
    };
    let target = guard.path("big");
    let writer = std::thread::spawn(move || OpenOptions::new().append(true).open(target).map(drop));
    // Wait until the copy is under way in the work directory, then kill the daemon.
    let work = fx.path("A/.wh..wh.work");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy = entries(&work).iter().any(|n| {
            fs::metadata(work.join(n))
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        });
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "copy-up never started");
        assert!(
            !fx.path("A/big").exists(),
            "copy-up finished before it could be interrupted"
        );
        std::thread::yield_now();
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(
        writer.join().unwrap().is_err(),
        "the writer sees the dead daemon"
    );
    drop(guard); // lazily unmounts the dead mount
    assert!(!fx.path("A/big").exists(), "no half-copied file in place");
    // Mount again: the old content, no temporary name anywhere, the work directory emptied.
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert_eq!(names(&m.mnt), ["big"]);
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), 512 << 20);
    assert_eq!(
        fs::read(m.path("big")).unwrap(),
        fs::read(fx.path("B/big")).unwrap()
    );
    assert_eq!(entries(&work), Vec::<String>::new());
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), lower);
}

/// Unmounts a tmpfs when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn enospc_during_copy_up_fails_cleanly() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let upper = fx.mkdir("A");
    fx.mkdir("B");
    nix::mount::mount(
        Some("tmpfs"),
        &upper,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .unwrap();
    let _tmpfs = Tmpfs(upper.clone());
    write_pattern(&fx.path("B/big"), 8);
    fx.write("B/small", "small");
    let lower = snapshot(&fx.path("B"));
    let spec = format!("{}=rw:{}=ro", upper.display(), fx.path("B").display());
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let err = OpenOptions::new()
        .append(true)
        .open(m.path("big"))
        .unwrap_err();
    assert_eq!(errno(err), libc::ENOSPC);
    // Nothing visible changed, nothing half-copied stayed.
    assert_eq!(
        fs::read(m.path("big")).unwrap(),
        fs::read(fx.path("B/big")).unwrap()
    );
    assert!(!upper.join("big").exists());
    assert_eq!(entries(&upper.join(".wh..wh.work")), Vec::<String>::new());
    // Small changes still work.
    OpenOptions::new()
        .append(true)
        .open(m.path("small"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    assert_eq!(read(&m.path("small")), "small+");
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), lower);
}

#[test]
fn concurrent_appends_renames_and_deletes_in_one_lower_directory() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    for i in 0..60 {
        fx.write(&format!("B/d/f{i}"), &format!("file {i}\n"));
    }
    let lower = snapshot(&fx.path("B"));
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let d = m.path("d");
    let mut threads = Vec::new();
    // Appenders: two threads appending to the same 10 files at once (copy-up races).
    for t in 0..2 {
        let d = d.clone();
        threads.push(std::thread::spawn(move || {
            for round in 0..5 {
                for i in 0..10 {
                    let mut f = OpenOptions::new()
                        .append(true)
                        .open(d.join(format!("f{i}")))
                        .unwrap();
                    writeln!(f, "t{t} r{round}").unwrap();
                }
            }
        }));
    }
    let d2 = d.clone();
    threads.push(std::thread::spawn(move || {
        for i in 10..25 {
            fs::rename(d2.join(format!("f{i}")), d2.join(format!("r{i}"))).unwrap();
        }
    }));
    let d3 = d.clone();
    threads.push(std::thread::spawn(move || {
        for i in 25..40 {
            fs::remove_file(d3.join(format!("f{i}"))).unwrap();
        }
    }));
    let d4 = d.clone();
    threads.push(std::thread::spawn(move || {
        for i in 0..20 {
            fs::write(d4.join(format!("n{i}")), format!("new {i}")).unwrap();
            let listed = fs::read_dir(&d4).unwrap().count();
            assert!(listed >= 40, "listing while others change it: {listed}");
        }
    }));
    for t in threads {
        t.join().unwrap();
    }
    let mut expected: Vec<String> = (0..10).chain(40..60).map(|i| format!("f{i}")).collect();
    expected.extend((10..25).map(|i| format!("r{i}")));
    expected.extend((0..20).map(|i| format!("n{i}")));
    expected.sort();
    assert_eq!(names(&d), expected);
    for i in 0..10 {
        let text = read(&d.join(format!("f{i}")));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("file {i}"));
        assert_eq!(
            lines.len(),
            11,
            "every append landed once in f{i}: {text:?}"
        );
    }
    for i in 10..25 {
        assert_eq!(read(&d.join(format!("r{i}"))), format!("file {i}\n"));
    }
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), lower);
}
