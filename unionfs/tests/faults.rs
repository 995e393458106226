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

/// The pid of the daemon serving `mnt`, which must be alive.
#[track_caller]
fn live_daemon(mnt: &Path) -> nix::unistd::Pid {
    unionfs::mount::daemon_pid(mnt).expect("the daemon serving the mount is alive")
}

/// A filesystem mounted by the test (here: ext4 on a loop device); unmounted on drop, and the
/// loop device with it (`mount -o loop` sets autoclear).
struct HostMount(std::path::PathBuf);

impl Drop for HostMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

// FS_IOC_SHUTDOWN (`_IOR('X', 125, __u32)`), what xfstests' `godown` uses: from then on every
// I/O of the filesystem fails with EIO, as after a disk error.
nix::ioctl_read!(fs_ioc_shutdown, b'X', 125, u32);
/// Shut down without flushing the log: the harshest form.
const FS_GOING_DOWN_NOLOGFLUSH: u32 = 2;

/// EIO from the writable branch. A device-mapper `error` target would be the classic way, but
/// a kernel without device-mapper (as some CI VMs) cannot do it; ext4's shutdown ioctl gives the
/// same result on any kernel with ext4 and loop devices: the branch's filesystem answers EIO.
#[test]
fn eio_from_the_writable_branch_reaches_the_caller_and_the_daemon_survives() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let img = fx.path("upper.img");
    fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .output()
        .expect("mkfs.ext4 (e2fsprogs)");
    assert!(mkfs.status.success(), "{mkfs:?}");
    let upper = fx.mkdir("A");
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&upper)
        .output()
        .expect("mount (util-linux)");
    assert!(out.status.success(), "mount -o loop: {out:?}");
    let _ext4 = HostMount(upper.clone());
    fx.write("B/lower", "lower data");
    fx.write("B/d/deep", "deep");
    let lower = snapshot(&fx.path("B"));
    let spec = format!("{}=rw:{}=ro", upper.display(), fx.path("B").display());
    let m = mount(&spec, &fx.path("mnt"), &[]);
    fs::write(m.path("before"), "written before the fault").unwrap();
    let mut open_writer = OpenOptions::new()
        .append(true)
        .open(m.path("before"))
        .unwrap();
    let daemon = live_daemon(&m.mnt);

    let dir = fs::File::open(&upper).unwrap();
    let flags = FS_GOING_DOWN_NOLOGFLUSH;
    // SAFETY: FS_IOC_SHUTDOWN reads one u32 from the pointer, which is valid for the call.
    unsafe {
        fs_ioc_shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            &flags as *const u32 as *mut u32,
        )
    }
    .expect("FS_IOC_SHUTDOWN on the ext4 upper branch");
    drop(dir);

    // Every change that needs the upper branch fails with EIO: a write through an open handle,
    // a new file, a copy-up, a mkdir.
    let e = open_writer
        .write_all(b"more")
        .and_then(|_| open_writer.sync_all())
        .unwrap_err();
    assert_eq!(errno(e), libc::EIO, "write through an open handle");
    let e = fs::write(m.path("new"), "x").unwrap_err();
    assert_eq!(errno(e), libc::EIO, "create");
    let e = OpenOptions::new()
        .append(true)
        .open(m.path("lower"))
        .unwrap_err();
    assert_eq!(errno(e), libc::EIO, "copy-up");
    let e = fs::create_dir(m.path("newdir")).unwrap_err();
    assert_eq!(errno(e), libc::EIO, "mkdir");
    // The daemon is alive and still serves what the lower branch has.
    assert_eq!(live_daemon(&m.mnt), daemon);
    assert_eq!(read(&m.path("lower")), "lower data");
    assert_eq!(read(&m.path("d/deep")), "deep");
    assert!(is_mounted(&m.mnt));
    drop(open_writer);
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), lower);
}

/// A branch changed or removed under a running mount: errors (ENOENT, ESTALE), never a crash;
/// the daemon keeps serving, and serves the branch again once it is back.
#[test]
fn branches_removed_or_changed_under_the_mount_give_errors_never_a_crash() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/up", "upper");
    fx.write("B/d/f", "lower f");
    fx.write("B/d/g", "lower g");
    fx.write("B/keep", "keep");
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let daemon = live_daemon(&m.mnt);
    assert_eq!(names(&m.path("d")), ["f", "g"]);
    let mut held = fs::File::open(m.path("d/f")).unwrap();
    let dir_handle = fs::File::open(m.path("d")).unwrap();

    // 1. A lower directory swapped for another behind the mount's back.
    fs::rename(fx.path("B/d"), fx.path("B/d.moved")).unwrap();
    fx.write("B/d/h", "replacement");
    let allowed = [libc::ENOENT, libc::ESTALE];
    // Within the 1 s attribute TTL of a `ro` branch the union may still show the old names;
    // reading one of them now fails cleanly or shows the new directory, never crashes.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match fs::read_to_string(m.path("d/g")) {
            Err(e) if e.raw_os_error().is_some_and(|n| allowed.contains(&n)) => break,
            Err(e) => panic!("unexpected error reading a removed lower file: {e}"),
            Ok(_) => {
                assert!(
                    Instant::now() < deadline,
                    "d/g is still served 3 s after its removal"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // The handle opened before keeps its file (as on any filesystem).
    let mut s = String::new();
    std::io::Read::read_to_string(&mut held, &mut s).unwrap();
    assert_eq!(s, "lower f");
    let deadline = Instant::now() + Duration::from_secs(3);
    while names(&m.path("d")) != ["h"] {
        assert!(Instant::now() < deadline, "{:?}", names(&m.path("d")));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(read(&m.path("d/h")), "replacement");
    drop(dir_handle);

    // 2. The whole writable branch removed: changes fail with an errno, reads of the lower
    //    branch go on.
    fs::remove_dir_all(fx.path("A")).unwrap();
    let e = fs::write(m.path("new"), "x").unwrap_err();
    assert!(
        [libc::ENOENT, libc::ESTALE, libc::EIO].contains(&errno(e)),
        "create in a removed upper branch"
    );
    let e = OpenOptions::new()
        .append(true)
        .open(m.path("keep"))
        .unwrap_err();
    assert!(
        [libc::ENOENT, libc::ESTALE, libc::EIO].contains(&errno(e)),
        "copy-up into a removed upper branch"
    );
    assert_eq!(read(&m.path("keep")), "keep");

    // 3. The lower branch's root itself removed.
    fs::rename(fx.path("B"), fx.path("B.gone")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match fs::read_to_string(m.path("keep")) {
            Ok(_) => {
                // The daemon holds the branch root open: a renamed branch is still that
                // directory. Either answer is fine; what matters is that it answers.
                break;
            }
            Err(e) if e.raw_os_error().is_some_and(|n| allowed.contains(&n)) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let _ = fs::read_dir(&m.mnt).map(|rd| rd.count());
    // Through all of it: the same daemon, still mounted, still answering.
    assert_eq!(live_daemon(&m.mnt), daemon);
    assert!(is_mounted(&m.mnt));
    fs::metadata(&m.mnt).unwrap();
    drop(m);
}

/// Unmounting while a file is open: a plain umount is refused as busy (the mount goes on
/// serving), `umount -l` detaches at once while the open file keeps working, and the daemon
/// exits when the last file is closed.
#[test]
fn umount_of_a_busy_mount_is_refused_and_lazy_umount_waits_for_the_last_close() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.write("A/f", "data");
    let spec = format!("{}", fx.path("A").display());
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let daemon = live_daemon(&m.mnt);
    let mut open = OpenOptions::new()
        .read(true)
        .append(true)
        .open(m.path("f"))
        .unwrap();
    let out = run(&["umount", m.mnt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("is busy") && msg.contains("umount -l"),
        "the message says why and what to do: {msg}"
    );
    assert!(is_mounted(&m.mnt));
    assert_eq!(read(&m.path("f")), "data");

    let out = run(&["umount", "-l", m.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(!is_mounted(&m.mnt), "detached at once");
    // The open file still works, through the same daemon.
    open.write_all(b"+more").unwrap();
    let mut s = String::new();
    std::io::Seek::seek(&mut open, std::io::SeekFrom::Start(0)).unwrap();
    std::io::Read::read_to_string(&mut open, &mut s).unwrap();
    assert_eq!(s, "data+more");
    assert!(
        Path::new(&format!("/proc/{daemon}")).exists(),
        "the daemon serves until the last close"
    );
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    while unionfs_daemon_running(daemon) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not exit after the last close"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read(&fx.path("A/f")), "data+more");
    // Its work directory is gone too: the branch holds only the user's files.
    assert_eq!(names(&fx.path("A")), ["f"]);
    drop(m);
}

/// True while `pid` exists and is not a zombie.
fn unionfs_daemon_running(pid: nix::unistd::Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}
