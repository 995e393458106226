//! Shared helpers for the integration tests: real FUSE mounts of the `unionfs` binary in
//! temporary directories, unmounted by a guard, and snapshots that prove branches unchanged.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_unionfs");

/// True when this machine can mount FUSE (root and /dev/fuse). Under CI=true a machine that
/// cannot is a failure, never a silent pass.
pub fn can_mount() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but this machine cannot mount FUSE (root: {root}, /dev/fuse: {fuse})");
    }
    eprintln!("skipping: needs root and /dev/fuse");
    false
}

/// Is `path` a mountpoint now? (Read from /proc/self/mountinfo, never guessed from timing.)
pub fn is_mounted(path: &Path) -> bool {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    unionfs::config::is_mountpoint(&path)
}

/// A temporary directory holding branches and a mountpoint.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::Builder::new()
                .prefix("unionfs-test")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Creates directory `rel` (and parents) and returns its path.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes a file (parents created).
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }
}

/// A mounted union; unmounts when dropped.
pub struct Mounted {
    pub mnt: PathBuf,
}

impl Mounted {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let out = run(&["umount", self.mnt.to_str().unwrap()]);
            if !out.status.success() {
                let _ = run(&["umount", "-l", self.mnt.to_str().unwrap()]);
            }
        }
    }
}

/// Runs the unionfs binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run unionfs")
}

/// `unionfs mount SPEC MNT [extra...]`, asserting success and that the mount is there when the
/// command returns.
pub fn mount(spec: &str, mnt: &Path, extra: &[&str]) -> Mounted {
    fs::create_dir_all(mnt).unwrap();
    let mut args = vec!["mount", spec, mnt.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "unionfs mount {spec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mountinfo is read in pieces, so a read that races other tests' mounts can miss a line:
    // poll it briefly rather than trust one read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !is_mounted(mnt) {
        assert!(
            std::time::Instant::now() < deadline,
            "unionfs returned but {} is not mounted",
            mnt.display()
        );
        std::thread::yield_now();
    }
    Mounted {
        mnt: mnt.to_path_buf(),
    }
}

/// Sorted names in a directory.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The errno of an io::Error.
pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("no errno in {e}"))
}

/// Everything about a tree that must not change in a read-only branch: per path, type, mode,
/// owner, size, mtime, content or link target, and xattrs.
pub type Snapshot = BTreeMap<PathBuf, String>;

pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, p: &Path, out: &mut Snapshot) {
    let m = fs::symlink_metadata(p).unwrap();
    let rel = p.strip_prefix(root).unwrap().to_path_buf();
    let content = if m.file_type().is_file() {
        content_digest(p, m.len())
    } else if m.file_type().is_symlink() {
        fs::read_link(p).unwrap().display().to_string()
    } else {
        String::new()
    };
    let xattrs = xattr_list(p);
    out.insert(
        rel,
        format!(
            "mode={:o} uid={} gid={} size={} mtime={}.{} ctime={}.{} rdev={} nlink={} content={content} xattrs={xattrs:?}",
            m.mode(),
            m.uid(),
            m.gid(),
            if m.is_dir() { 0 } else { m.size() },
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.rdev(),
            m.nlink(),
        ),
    );
    if m.is_dir() {
        let mut entries: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            walk(root, &e, out);
        }
    }
}

/// The content of a file, or for a large one a hash of it (any write would also move its ctime,
/// which the snapshot records too).
fn content_digest(p: &Path, len: u64) -> String {
    use std::hash::{Hash, Hasher};
    let data = fs::read(p).unwrap();
    if len <= 4096 {
        return format!("{data:?}");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for chunk in data
        .chunks(1 << 16)
        .step_by(if len > (64 << 20) { 16 } else { 1 })
    {
        chunk.hash(&mut h);
    }
    format!("len {} hash {:x}", data.len(), h.finish())
}

fn xattr_list(p: &Path) -> Vec<(String, String)> {
    let out = Command::new("getfattr")
        .args(["-h", "-d", "-m", "-", "--absolute-names"])
        .arg(p)
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains('='))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn osstr(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// Copies a fixture tree (files and directories only) into `dst`.
pub fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The repository's fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}
