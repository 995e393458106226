//! Per-CPU request pollers (vendor/README.md): one worker pinned to each CPU in front of the
//! `threads` workers, which stand by until every poller is busy.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// One of the daemon's request workers (a `fuser-N` thread).
#[derive(Debug)]
struct Worker {
    /// The CPUs it may run on (`Cpus_allowed_list`).
    cpus: String,
    /// Its scheduler state: `D` while it waits, unkillable, in the kernel (a frozen file system).
    state: char,
}

/// The daemon's request workers, from /proc.
fn workers(mnt: &Path) -> Vec<Worker> {
    let pid = unionfs::mount::daemon_pid(mnt).expect("the daemon serving the mount");
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let name = fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("fuser-") {
            continue;
        }
        let status = fs::read_to_string(task.join("status")).unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{key} in {}/status", task.display()))
                .trim()
                .to_string()
        };
        out.push(Worker {
            cpus: field("Cpus_allowed_list:"),
            state: field("State:").chars().next().unwrap_or('?'),
        });
    }
    out
}

/// The workers once `want` holds of them (they start and pin themselves after `mount`
/// returns), or as they are after 5 s.
fn workers_when(mnt: &Path, want: impl Fn(&[Worker]) -> bool) -> Vec<Worker> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let w = workers(mnt);
        if want(&w) || std::time::Instant::now() > deadline {
            return w;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many workers are pinned to one CPU each, distinct CPUs.
fn pinned_cpus(w: &[Worker]) -> usize {
    let mut pinned: Vec<&str> = w
        .iter()
        .filter(|w| is_one_cpu(&w.cpus))
        .map(|w| w.cpus.as_str())
        .collect();
    pinned.sort();
    pinned.dedup();
    pinned.len()
}

/// CPUs this test may run on, as the daemon (its child) sees them.
fn allowed_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A single CPU number, as a pinned worker's Cpus_allowed_list shows it.
fn is_one_cpu(list: &str) -> bool {
    !list.is_empty() && list.bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn one_poller_is_pinned_to_each_cpu_and_nocpu_affine_leaves_them_out() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let spec = format!(
        "{}=rw:{}=ro",
        fx.mkdir("A").display(),
        fx.mkdir("B").display()
    );
    let expected_pollers = if allowed_cpus() > 1 {
        allowed_cpus().min(8)
    } else {
        0
    };

    let m = mount(&spec, &fx.path("mnt"), &["-o", "threads=3"]);
    let w = workers_when(&m.mnt, |w| {
        w.len() == expected_pollers + 3 && pinned_cpus(w) == expected_pollers
    });
    assert_eq!(
        pinned_cpus(&w),
        expected_pollers,
        "one poller per CPU: {w:?}"
    );
    assert_eq!(
        w.len(),
        expected_pollers + 3,
        "the pollers and the 3 standby workers: {w:?}"
    );
    // The union serves as before.
    fs::write(m.path("f"), "through the pollers").unwrap();
    assert_eq!(read(&m.path("f")), "through the pollers");
    drop(m);

    let m = mount(&spec, &fx.path("mnt"), &["-o", "threads=3,nocpu_affine"]);
    // Give any pinning time to happen before checking that none did.
    std::thread::sleep(Duration::from_millis(200));
    let w = workers_when(&m.mnt, |w| w.len() == 3);
    assert_eq!(w.len(), 3, "nocpu_affine: the 3 workers alone: {w:?}");
    if allowed_cpus() > 1 {
        assert!(
            w.iter().all(|w| !is_one_cpu(&w.cpus)),
            "nocpu_affine pins nothing: {w:?}"
        );
    }
    assert_eq!(read(&m.path("f")), "through the pollers");
}

// FIFREEZE / FITHAW (`_IOWR('X', 119/120, int)`): what fsfreeze(8) does.
nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);

/// An ext4 filesystem on a loop device, frozen until dropped (then thawed and unmounted), so a
/// failed assertion never leaves a frozen filesystem or a hung daemon behind.
struct FrozenExt4 {
    dir: std::path::PathBuf,
    frozen: bool,
}

impl FrozenExt4 {
    fn mount(img: &Path, dir: &Path) -> FrozenExt4 {
        fs::File::create(img).unwrap().set_len(32 << 20).unwrap();
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(img)
            .output()
            .expect("mkfs.ext4 (e2fsprogs)");
        assert!(mkfs.status.success(), "{mkfs:?}");
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(img)
            .arg(dir)
            .output()
            .expect("mount (util-linux)");
        assert!(out.status.success(), "mount -o loop: {out:?}");
        FrozenExt4 {
            dir: dir.to_path_buf(),
            frozen: false,
        }
    }

    fn ioctl(&self, thaw: bool) {
        let d = fs::File::open(&self.dir).unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&d);
        let mut arg: libc::c_int = 0;
        // SAFETY: FIFREEZE/FITHAW take an int pointer, valid for the call.
        let r = unsafe {
            if thaw {
                fithaw(fd, &mut arg)
            } else {
                fifreeze(fd, &mut arg)
            }
        };
        r.unwrap_or_else(|e| panic!("freeze/thaw {}: {e}", self.dir.display()));
    }

    fn freeze(&mut self) {
        self.ioctl(false);
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if std::mem::take(&mut self.frozen) {
            self.ioctl(true);
        }
    }
}

impl Drop for FrozenExt4 {
    fn drop(&mut self) {
        self.thaw();
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Every poller held up by a request that cannot finish (a create on a frozen upper branch):
/// a standby worker still answers the next request.
#[test]
fn requests_are_answered_while_every_poller_is_held_up() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    let mut upper = FrozenExt4::mount(&fx.path("upper.img"), &fx.path("A"));
    fx.write("B/probe/lower-file", "lower");
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &["-o", "threads=4"]);
    let expected_pollers = if allowed_cpus() > 1 {
        allowed_cpus().min(8)
    } else {
        0
    };
    let pollers = pinned_cpus(&workers_when(&m.mnt, |w| {
        pinned_cpus(w) == expected_pollers
    }));
    // One blocked create more than there are pollers, each in a directory of its own so no
    // request waits for another's directory lock instead of for the frozen filesystem.
    // Creates that block in the frozen file system, one more at a time, each in a directory of
    // its own (so none waits for another's directory lock instead), until every poller holds
    // one. A standby worker once called in may take a request before a free poller does, so
    // how many that takes is not fixed; `threads=4` leaves at least one standby worker free.
    let most = pollers + 3;
    for i in 0..most {
        fs::create_dir(m.path(&format!("d{i}"))).unwrap();
    }
    upper.freeze();
    let stuck = |w: &[Worker]| w.iter().filter(|w| w.state == 'D').count();
    let mut creators = Vec::new();
    loop {
        let w = workers(&m.mnt);
        if w.iter()
            .filter(|w| is_one_cpu(&w.cpus))
            .all(|w| w.state == 'D')
        {
            break;
        }
        assert!(
            creators.len() < most,
            "{most} creates held and a poller still free: {w:?}"
        );
        let p = m.path(&format!("d{}/blocked", creators.len()));
        creators.push(std::thread::spawn(move || {
            fs::write(p, "written after the thaw")
        }));
        let held = creators.len();
        let w = workers_when(&m.mnt, |w| stuck(w) == held);
        assert_eq!(stuck(&w), held, "each create held by one worker: {w:?}");
    }
    let blocked = creators.len();

    let (tx, rx) = mpsc::channel();
    let probe = m.path("probe/lower-file");
    std::thread::spawn(move || tx.send(fs::read_to_string(probe)).ok());
    let answer = rx.recv_timeout(Duration::from_secs(20));
    upper.thaw();
    for c in creators {
        c.join()
            .unwrap()
            .expect("the create finishes after the thaw");
    }
    assert_eq!(
        answer
            .expect("a lookup and a read answered while every poller was held up")
            .unwrap(),
        "lower"
    );
    for i in 0..blocked {
        assert_eq!(
            read(&fx.path(&format!("A/d{i}/blocked"))),
            "written after the thaw"
        );
    }
}
