//! From unmount to exit. The kernel ends a FUSE session when the mount's last user is gone;
//! the daemon must then be gone promptly, however busy it was, so that whoever unmounted (a
//! container runner) never has to wait for it or kill it.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use nix::unistd::Pid;

/// True while `pid` exists and is not a zombie (the daemon's parent, long gone, is not the
/// one to reap it).
fn running(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// How long after `since` the process `pid` was gone, waiting at most `limit`.
fn gone_after(pid: Pid, since: Instant, limit: Duration) -> Option<Duration> {
    while running(pid) {
        if since.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(since.elapsed())
}

/// Eight request threads busy with lookups, listings, creates, writes and copy-ups of lower
/// files, from eight client threads; the mount is detached under them (as a runner does when
/// `umount` says busy). Once the clients' in-flight requests are answered the kernel ends the
/// session, and the daemon is gone a moment later.
#[test]
fn the_daemon_exits_promptly_after_umount_with_every_thread_busy() {
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    for i in 0..64 {
        fx.write(&format!("B/d{}/f{i}", i % 8), &"lower ".repeat(1000));
    }
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &["-o", "threads=8"]);
    let pid = unionfs::mount::daemon_pid(&m.mnt).expect("the daemon's pid is recorded");
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (stop, mnt) = (Arc::clone(&stop), m.mnt.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let d = mnt.join(format!("d{}", (c + i) % 8));
                    // Errors are expected once the mount is detached under us.
                    let _ = fs::read_dir(&d).map(|r| r.count());
                    let _ = fs::metadata(d.join(format!("f{}", i % 64)));
                    let _ = fs::write(d.join(format!("c{c}-{i}")), "x".repeat(4096));
                    let _ = fs::OpenOptions::new()
                        .append(true)
                        .open(d.join(format!("f{}", (c * 8 + i) % 64)))
                        .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"));
                    let _ = fs::remove_file(d.join(format!("c{c}-{i}")));
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let out = run(&["umount", "-l", m.mnt.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let detached = Instant::now();
    let took = gone_after(pid, detached, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let took = took.expect("the daemon was still running 10 s after the unmount");
    eprintln!("daemon gone {took:?} after the detach");
    assert!(
        took < Duration::from_secs(2),
        "the daemon took {took:?} to exit after the unmount"
    );
    drop(m);
}

/// A request thread stuck inside a request (here: a copy-up whose open of the lower file is
/// held by a fanotify permission event that nobody answers) when the session ends
/// (`umount -f` aborts it) must not keep the daemon alive: it exits within its grace second,
/// leaves no half-made copy, and the branches mount again as they were.
#[test]
fn a_request_stuck_when_the_session_ends_does_not_keep_the_daemon_alive() {
    use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};
    if !can_mount() {
        return;
    }
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.write("B/big", "lower\n");
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let pid = unionfs::mount::daemon_pid(&m.mnt).expect("the daemon's pid is recorded");
    let fan = Fanotify::init(InitFlags::FAN_CLASS_CONTENT, EventFFlags::O_RDONLY)
        .expect("fanotify with permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS)");
    fan.mark(
        MarkFlags::FAN_MARK_ADD,
        MaskFlags::FAN_OPEN_PERM,
        nix::fcntl::AT_FDCWD,
        Some(&fx.path("B/big")),
    )
    .unwrap();
    let target = m.path("big");
    let client = std::thread::spawn(move || {
        fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .map(drop)
            .map_err(errno)
    });
    // The daemon opens the lower file to copy it up, and waits for our answer.
    let events = fan.read_events().unwrap();
    assert!(
        events.iter().any(|e| e.pid() == pid.as_raw()),
        "the daemon opened the lower file"
    );
    // `umount -f` aborts the FUSE connection: the client's request fails, the session is over.
    let _ = nix::mount::umount2(&m.mnt, nix::mount::MntFlags::MNT_FORCE);
    let aborted = Instant::now();
    let r = client.join().unwrap();
    assert!(
        r.is_err(),
        "the client's open cannot succeed on an aborted session"
    );
    let _ = nix::mount::umount2(&m.mnt, nix::mount::MntFlags::MNT_DETACH);
    let took = gone_after(pid, aborted, Duration::from_secs(10));
    // Only now is the daemon's open let through (closing the group allows it).
    drop(events);
    drop(fan);
    let took = took.expect("the daemon was still running 10 s after its session ended");
    eprintln!("daemon gone {took:?} after the abort");
    assert!(
        took < unionfs::shutdown::GRACE + Duration::from_secs(1),
        "the daemon took {took:?} to exit after its session ended"
    );
    assert!(!fx.path("A/big").exists(), "no copy was made");
    assert_eq!(read(&fx.path("B/big")), "lower\n");
    drop(m);
    let m = mount(&spec, &fx.path("mnt"), &[]);
    assert_eq!(read(&m.path("big")), "lower\n");
    assert!(
        !Path::new(&fx.path("A/.wh..wh.work")).exists()
            || fs::read_dir(fx.path("A/.wh..wh.work"))
                .unwrap()
                .next()
                .is_none(),
        "nothing left in the work directory"
    );
}
