//! Tests that run as an ordinary user: the user is created here (`useradd`, with subordinate ids
//! in /etc/subuid and /etc/subgid), commands run as it through `setpriv` with a clean
//! environment, and `/dev/fuse` and `/dev/net/tun` are opened to users for the test's duration
//! (0666, Debian's default) and restored afterwards. The product never touches them; the test,
//! as root, stands in for the administrator.
//!
//! Shared by the rootless tests of unionfs, layer-tool and runner (`#[path]`): one user, and one
//! machine-wide lock so that two test processes never save and restore `/dev/fuse`'s mode over
//! each other.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The user the rootless tests run as.
pub const USER: &str = "ufs-rootless";
/// Subordinate ids given to [`USER`] (count), as rootless podman's default.
pub const SUBID_COUNT: u32 = 65536;

/// True when this process can set up an unprivileged user (it is root). Under CI=true a machine
/// that cannot is a failure, never a silent pass.
pub fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CI=true but this machine cannot run the rootless tests (they start as root to create \
             their user: root: {root}, /dev/fuse: {fuse})"
        );
    }
    eprintln!(
        "skipping: the rootless tests start as root (to create their user) and need /dev/fuse"
    );
    false
}

/// The unprivileged user, created on first use.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

fn lookup(name: &str) -> Option<User> {
    let u = nix::unistd::User::from_name(name).ok()??;
    Some(User {
        name: name.into(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        home: u.dir,
    })
}

/// A machine-wide lock (flock) held for the whole of one rootless test: the user's creation,
/// `/dev/fuse`'s mode, the user's mounts. Released (and the mode restored) on drop.
pub struct Session {
    /// Unlocked when dropped, after [`Drop`] has restored the mode.
    #[allow(unused)]
    lock: nix::fcntl::Flock<fs::File>,
    fuse_mode: u32,
    /// `/dev/net/tun`'s mode before (slirp4netns opens it as the user), if there is one.
    tun_mode: Option<u32>,
    pub user: User,
}

impl Session {
    /// Takes the lock, creates the user if needed, and opens `/dev/fuse` to users.
    pub fn start() -> Session {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open("/run/lock/unionfs-rootless-tests.lock")
            .expect("open the rootless tests' lock file");
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .expect("flock the rootless tests' lock");
        let user = ensure_user(USER, true);
        let fuse_mode = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        set_fuse_mode(0o666);
        let tun_mode = fs::metadata(TUN)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777);
        if tun_mode.is_some() {
            set_mode(TUN, 0o666);
        }
        Session {
            lock,
            fuse_mode,
            tun_mode,
            user,
        }
    }

    /// Sets `/dev/fuse`'s mode for a part of the test (restored to the original on drop).
    pub fn set_fuse_mode(&self, mode: u32) {
        set_fuse_mode(mode);
    }

    /// A fresh directory owned by the user, mode 0700, inside a root-made temp dir the user
    /// can traverse. Removed on drop of the returned guard.
    pub fn user_dir(&self, prefix: &str) -> UserDir {
        self.user_dir_for(&self.user, prefix)
    }

    /// [`Session::user_dir`] for another user.
    pub fn user_dir_for(&self, user: &User, prefix: &str) -> UserDir {
        let outer = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        fs::set_permissions(outer.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let dir = outer.path().join("u");
        fs::create_dir(&dir).unwrap();
        chown_r(&dir, user);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        UserDir { outer, dir }
    }

    /// A copy of a built binary the user can execute (target/ may be unreachable for it).
    pub fn reachable_binary(&self, dir: &Path, src: &str) -> PathBuf {
        let bin_dir = dir.join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        fs::set_permissions(&bin_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let dst = bin_dir.join(Path::new(src).file_name().unwrap());
        fs::copy(src, &dst).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
        dst
    }

    /// A second user, `name`, created if needed, with subordinate ids or explicitly without
    /// (its lines are removed from /etc/subuid and /etc/subgid).
    pub fn other_user(&self, name: &str, subids: bool) -> User {
        let user = ensure_user(name, subids);
        if !subids {
            for file in ["/etc/subuid", "/etc/subgid"] {
                let text = fs::read_to_string(file).unwrap_or_default();
                let kept: String = text
                    .lines()
                    .filter(|l| l.split(':').next() != Some(name))
                    .map(|l| format!("{l}\n"))
                    .collect();
                if kept != text {
                    fs::write(file, kept).unwrap();
                }
            }
        }
        user
    }

    /// A command that runs `program` as the user, with a clean environment (PATH, HOME, USER,
    /// LOGNAME, and `XDG_RUNTIME_DIR`/`XDG_DATA_HOME` when given by the caller through `env`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.command_as(&self.user, program)
    }

    /// [`Session::command`] as another user.
    pub fn command_as(&self, user: &User, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("/usr/bin/setpriv");
        c.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--init-groups")
            // A fresh set: nothing of root's capabilities survives (the kernel clears them on the
            // uid change; this makes it explicit).
            .arg("--inh-caps=-all")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .current_dir("/");
        c
    }

    /// Runs a shell script as the user.
    pub fn sh(&self, script: &str) -> Output {
        self.command("/bin/sh")
            .arg("-ec")
            .arg(script)
            .output()
            .unwrap()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        set_fuse_mode(self.fuse_mode);
        if let Some(m) = self.tun_mode {
            set_mode(TUN, m);
        }
    }
}

/// A directory for the user; the root-owned parent goes with it.
pub struct UserDir {
    outer: tempfile::TempDir,
    pub dir: PathBuf,
}

impl UserDir {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for UserDir {
    /// A test that failed half-way may leave the user's mounts (and their daemons) here: detach
    /// them, deepest first, so that the next test starts clean and the directory can go.
    fn drop(&mut self) {
        let base = self.outer.path().to_string_lossy().into_owned();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&base))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// The tun device slirp4netns opens.
const TUN: &str = "/dev/net/tun";

fn set_fuse_mode(mode: u32) {
    set_mode("/dev/fuse", mode);
}

fn set_mode(dev: &str, mode: u32) {
    fs::set_permissions(dev, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {dev} (the test stands in for the administrator): {e}"));
}

/// Changes ownership of `path` and everything below it to the user.
pub fn chown_r(path: &Path, user: &User) {
    let out = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chown -R {}: {:?}",
        path.display(),
        out
    );
}

/// Creates `name` (with a home, and subordinate ids when `subids`) unless it exists.
fn ensure_user(name: &str, subids: bool) -> User {
    if lookup(name).is_none() {
        let out = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", "--user-group", name])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success() || lookup(name).is_some(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let user = lookup(name).expect("the user exists after useradd");
    if subids {
        for file in ["/etc/subuid", "/etc/subgid"] {
            ensure_subids(file, name);
        }
    }
    user
}

/// Appends `name:START:COUNT` to a subid file unless `name` has a line, with START after every
/// range already given (never overlapping another user's).
fn ensure_subids(file: &str, name: &str) {
    let text = fs::read_to_string(file).unwrap_or_default();
    if text.lines().any(|l| l.split(':').next() == Some(name)) {
        return;
    }
    let end = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':').skip(1);
            let start: u64 = f.next()?.parse().ok()?;
            let count: u64 = f.next()?.parse().ok()?;
            Some(start + count)
        })
        .max()
        .unwrap_or(100_000)
        .max(100_000);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    use std::io::Write;
    writeln!(f, "{name}:{end}:{SUBID_COUNT}").unwrap();
}

/// Processes whose real uid is `uid` or in `[lo, hi)`, as `pid comm` lines.
pub fn processes_of(uid: u32, lo: u32, hi: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let ruid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(u32::MAX);
        if ruid == uid || (lo..hi).contains(&ruid) {
            let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            found.push(format!("{name} {}", comm.trim()));
        }
    }
    found
}

/// Waits (10 s at most) until no process of `uid` or its range `[lo, hi)` is left; panics
/// naming those that are.
pub fn assert_no_processes_left(uid: u32, lo: u32, hi: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let procs = processes_of(uid, lo, hi);
        if procs.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "processes left: {procs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
