//! Per-request statistics: how many requests of each FUSE type the daemon served, how many it
//! answered with an error, and how long it took to answer them (from the callback's start to
//! its reply). Counted in the FUSE adapter, read out through a Unix socket beside the pid file
//! (`unionfs stats MNT`), so a benchmark row can be explained by the requests it made.
//!
//! Counting costs two relaxed atomic adds and one clock read pair per request; nothing is
//! allocated and nothing is locked.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

macro_rules! ops {
    ($($op:ident => $name:literal,)*) => {
        /// A FUSE request type, as the daemon serves it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Op { $($op,)* }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$op,)*];

            /// The kernel's name for it (`FUSE_LOOKUP` without the prefix).
            pub fn name(self) -> &'static str {
                match self { $(Op::$op => $name,)* }
            }
        }
    };
}

ops! {
    Lookup => "LOOKUP",
    Forget => "FORGET",
    Getattr => "GETATTR",
    Setattr => "SETATTR",
    Readlink => "READLINK",
    Symlink => "SYMLINK",
    Mknod => "MKNOD",
    Mkdir => "MKDIR",
    Unlink => "UNLINK",
    Rmdir => "RMDIR",
    Rename => "RENAME",
    Link => "LINK",
    Open => "OPEN",
    Read => "READ",
    Write => "WRITE",
    Statfs => "STATFS",
    Release => "RELEASE",
    Fsync => "FSYNC",
    Setxattr => "SETXATTR",
    Getxattr => "GETXATTR",
    Listxattr => "LISTXATTR",
    Removexattr => "REMOVEXATTR",
    Flush => "FLUSH",
    Opendir => "OPENDIR",
    Readdir => "READDIR",
    Releasedir => "RELEASEDIR",
    Fsyncdir => "FSYNCDIR",
    Access => "ACCESS",
    Create => "CREATE",
    Readdirplus => "READDIRPLUS",
    Fallocate => "FALLOCATE",
    Lseek => "LSEEK",
}

const N: usize = Op::ALL.len();

#[derive(Default)]
struct Counter {
    count: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
}

/// The counters of one mount.
pub struct Stats {
    ops: [Counter; N],
    since: parking_lot::Mutex<Instant>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            ops: std::array::from_fn(|_| Counter::default()),
            since: parking_lot::Mutex::new(Instant::now()),
        }
    }
}

/// One request being served: its time is added when it is dropped (after the reply).
pub struct Timer<'a> {
    counter: &'a Counter,
    start: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        // Up to the reply, when this thread sent one: what follows it (the woken caller
        // running first on this CPU) is not the daemon's time.
        let end = fuser::reply_sent_at()
            .filter(|sent| *sent >= self.start)
            .unwrap_or_else(Instant::now);
        let ns = end
            .saturating_duration_since(self.start)
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        self.counter.nanos.fetch_add(ns, Ordering::Relaxed);
    }
}

/// One line of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub op: Op,
    pub count: u64,
    pub errors: u64,
    pub nanos: u64,
}

impl Stats {
    /// Counts a request of type `op`; its time runs until this thread replies (or, with no
    /// reply from this thread, until the returned timer is dropped).
    pub fn start(&self, op: Op) -> Timer<'_> {
        let counter = &self.ops[op as usize];
        counter.count.fetch_add(1, Ordering::Relaxed);
        Timer {
            counter,
            start: Instant::now(),
        }
    }

    /// Counts an error reply to a request of type `op`.
    pub fn error(&self, op: Op) {
        self.ops[op as usize].errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, of the request types seen at least once.
    pub fn snapshot(&self) -> Vec<Row> {
        Op::ALL
            .iter()
            .map(|&op| {
                let c = &self.ops[op as usize];
                Row {
                    op,
                    count: c.count.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    nanos: c.nanos.load(Ordering::Relaxed),
                }
            })
            .filter(|r| r.count > 0)
            .collect()
    }

    /// Sets every counter to zero (requests in flight may land on either side).
    pub fn reset(&self) {
        for c in &self.ops {
            c.count.store(0, Ordering::Relaxed);
            c.errors.store(0, Ordering::Relaxed);
            c.nanos.store(0, Ordering::Relaxed);
        }
        *self.since.lock() = Instant::now();
    }

    /// The table `unionfs stats` prints: one line per request type, then the total.
    pub fn render(&self) -> String {
        let rows = self.snapshot();
        let secs = self.since.lock().elapsed().as_secs_f64();
        let mut out = format!(
            "# unionfs requests over the last {secs:.3} s\n{:<13} {:>10} {:>8} {:>12} {:>9}\n",
            "request", "count", "errors", "total_ms", "mean_us"
        );
        let mut total = Row {
            op: Op::Lookup,
            count: 0,
            errors: 0,
            nanos: 0,
        };
        for r in &rows {
            out.push_str(&line(r.op.name(), r));
            total.count += r.count;
            total.errors += r.errors;
            total.nanos += r.nanos;
        }
        out.push_str(&line("TOTAL", &total));
        out
    }
}

fn line(name: &str, r: &Row) -> String {
    let mean_us = if r.count > 0 {
        r.nanos as f64 / r.count as f64 / 1000.0
    } else {
        0.0
    };
    format!(
        "{:<13} {:>10} {:>8} {:>12.3} {:>9.2}\n",
        name,
        r.count,
        r.errors,
        r.nanos as f64 / 1e6,
        mean_us
    )
}

/// Parses what [`Stats::render`] printed back into (request, count, errors) triples.
pub fn parse(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("request"))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_string();
            let count = f.next()?.parse().ok()?;
            let errors = f.next()?.parse().ok()?;
            Some((name, count, errors))
        })
        .collect()
}

/// Where the daemon of `mountpoint` (canonical) listens for `unionfs stats`. Named by a hash
/// of the path: a socket path must fit 108 bytes, a mountpoint need not.
pub fn socket_path(mountpoint: &Path) -> Option<PathBuf> {
    // FNV-1a: stable across builds and processes (std's hasher is seeded per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mountpoint.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The daemon's run directory: /run/unionfs as root, $XDG_RUNTIME_DIR/unionfs otherwise.
    Some(run_dir()?.join(format!("stats-{h:016x}.sock")))
}

fn run_dir() -> Option<PathBuf> {
    crate::privilege::Host::current().run_dir()
}

/// Serves `stats` on a socket for `mountpoint` in a thread of its own. Each connection sends one
/// line, `show` or `reset` (show, then zero the counters), and reads the table back. Best
/// effort: without a writable /run the mount works, only without statistics.
pub fn serve(stats: Arc<Stats>, mountpoint: &Path) -> Option<Socket> {
    let path = socket_path(mountpoint)?;
    let listener = (|| -> std::io::Result<UnixListener> {
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
        // A daemon killed with SIGKILL leaves its socket: a new mount takes the name over.
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path)?;
        // Only the daemon's own user may read what its users do.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        Ok(l)
    })();
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no statistics socket");
            return None;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("unionfs-stats".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Err(e) = answer(&stats, conn) {
                    tracing::debug!(error = %e, "statistics request");
                }
            }
        });
    let ino = std::fs::symlink_metadata(&path).ok()?.ino();
    match spawned {
        Ok(_) => Some(Socket { path, ino }),
        Err(e) => {
            tracing::debug!(error = %e, "no statistics thread");
            None
        }
    }
}

/// The socket a daemon listens on, to remove at exit.
#[derive(Debug, Clone)]
pub struct Socket {
    path: PathBuf,
    ino: u64,
}

impl Socket {
    /// Removes the socket if it is still ours (a new daemon on the same mountpoint may have
    /// replaced it).
    pub fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn answer(stats: &Stats, conn: UnixStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    let mut cmd = String::new();
    BufReader::new(&conn).read_line(&mut cmd)?;
    let table = stats.render();
    if cmd.trim() == "reset" {
        stats.reset();
    }
    (&conn).write_all(table.as_bytes())
}

/// Asks the daemon of `mountpoint` for its table (`reset`: and zero its counters).
pub fn query(mountpoint: &Path, reset: bool) -> anyhow::Result<String> {
    use std::io::Read;
    let canonical = std::fs::canonicalize(mountpoint)
        .map_err(|e| anyhow::anyhow!("{}: {e}", mountpoint.display()))?;
    let path = socket_path(&canonical).ok_or_else(|| {
        anyhow::anyhow!("no run directory for statistics ($XDG_RUNTIME_DIR unset)")
    })?;
    let mut conn = UnixStream::connect(&path).map_err(|e| {
        anyhow::anyhow!(
            "no statistics for {} ({}: {e}); is it a unionfs mount, served by a daemon of this user?",
            mountpoint.display(),
            path.display(),
        )
    })?;
    conn.write_all(if reset { b"reset\n" } else { b"show\n" })?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_renders_what_it_counted() {
        let s = Stats::default();
        for _ in 0..3 {
            drop(s.start(Op::Create));
        }
        drop(s.start(Op::Lookup));
        s.error(Op::Lookup);
        let rows = parse(&s.render());
        assert_eq!(
            rows,
            vec![
                ("LOOKUP".to_string(), 1, 1),
                ("CREATE".to_string(), 3, 0),
                ("TOTAL".to_string(), 4, 1)
            ]
        );
        s.reset();
        assert_eq!(parse(&s.render()), vec![("TOTAL".to_string(), 0, 0)]);
    }

    #[test]
    fn socket_names_fit_and_differ() {
        // Root's run directory here; a user's is under $XDG_RUNTIME_DIR, as short.
        let a = socket_path(Path::new(&format!("/{}", "x".repeat(4000)))).unwrap();
        let b = socket_path(Path::new("/mnt/b")).unwrap();
        assert!(a.as_os_str().len() < 108);
        assert_ne!(a, b);
    }
}
