//! Mounting the union with the `unionfs` binary: find or build it, mount, wait for the mount
//! by watching `/proc/self/mountinfo`, and unmount in `Drop` whatever happens.

use std::io::{self, Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sys;

const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `unionfs` binary: `$UNIONFS_BIN`, else `target/debug/unionfs`, built and copied once per
/// process.
pub fn unionfs_bin() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("UNIONFS_BIN") {
            return Ok(PathBuf::from(p));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-q", "-p", "unionfs", "--bin", "unionfs"])
            .current_dir(root)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build -p unionfs failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        // A private copy: others rebuild target/debug/unionfs while tests run. One copy per
        // build (named by size and mtime), shared by test processes, written atomically.
        let built = target.join("debug/unionfs");
        let md = std::fs::metadata(&built).map_err(|e| format!("{}: {e}", built.display()))?;
        let stamp = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let key = format!("{}-{}", md.len(), stamp.map_or(0, |d| d.as_nanos()));
        let dir = std::env::temp_dir().join("union-tests-bin");
        let copy = dir.join(format!("unionfs-{key}"));
        if !copy.exists() {
            let tmp = dir.join(format!(".unionfs-{key}.{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::copy(&built, &tmp))
                .and_then(|_| std::fs::rename(&tmp, &copy))
                .map_err(|e| format!("copying {} to {}: {e}", built.display(), copy.display()))?;
        }
        Ok(copy)
    })
    .clone()
}

/// Why this machine cannot mount, if it cannot.
fn cannot_mount() -> Option<String> {
    if sys::euid() != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    match unionfs_bin() {
        Err(e) => Some(e),
        Ok(bin) => match Command::new(&bin).arg("--help").output() {
            Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("mount") => {
                None
            }
            Ok(o) => Some(format!(
                "{} --help does not offer `mount`: {}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => Some(format!("cannot run {}: {e}", bin.display())),
        },
    }
}

/// True when mounts can be tested. Otherwise a test returns early, except under `CI=true`,
/// where it fails: CI must never pass without having mounted.
pub fn can_mount() -> bool {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    let why = WHY.get_or_init(|| {
        let why = cannot_mount();
        if let Some(w) = &why {
            eprintln!("cannot mount the union: {w}");
        }
        why
    });
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but cannot mount the union: {why}")
        }
        Some(_) => {
            eprintln!("SKIPPED: no mount (set CI=true to make this a failure)");
            false
        }
    }
}

/// Mount points listed in `/proc/self/mountinfo` (field 5, octal escapes undone).
fn mount_points(f: &mut std::fs::File) -> io::Result<Vec<String>> {
    let mut s = String::new();
    f.rewind()?;
    f.read_to_string(&mut s)?;
    Ok(s.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            m.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\134", "\\")
        })
        .collect())
}

/// Wait until `mnt` is (or is no longer) a mount point.
fn wait_for(mnt: &Path, mounted: bool) -> io::Result<()> {
    let mut f = std::fs::File::open("/proc/self/mountinfo")?;
    let want = mnt.to_string_lossy().into_owned();
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        if mount_points(&mut f)?.contains(&want) == mounted {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::other(format!(
                "{mnt:?} mounted={} not reached",
                mounted
            )));
        }
        sys::wait_mount_change(&f, left.as_millis().min(1000) as i32)?;
    }
}

/// A mounted union; unmounted on drop.
pub struct Mount {
    branches: Vec<PathBuf>,
    /// Permission of every branch but the first (`ro`, `rr` or `rw`), in order.
    lower: Vec<&'static str>,
    log: PathBuf,
    mnt: PathBuf,
    mounted: bool,
    generation: u32,
}

impl Mount {
    /// Mount `branches` (top first; the first rw, the others ro) on `mnt`.
    pub fn new(branches: &[PathBuf], mnt: &Path, log: &Path) -> io::Result<Mount> {
        Mount::with_lower(
            branches,
            mnt,
            log,
            &vec!["ro"; branches.len().saturating_sub(1)],
        )
    }

    /// Like [`Mount::new`], the lower branches with permissions `lower` (`ro`, `rr`, `rw`).
    pub fn with_lower(
        branches: &[PathBuf],
        mnt: &Path,
        log: &Path,
        lower: &[&'static str],
    ) -> io::Result<Mount> {
        let mut m = Mount {
            branches: branches.to_vec(),
            lower: lower.to_vec(),
            log: log.to_path_buf(),
            mnt: mnt.to_path_buf(),
            mounted: false,
            generation: 0,
        };
        m.mount()?;
        Ok(m)
    }

    /// The end of the daemon's log, and whether the mount is still in the mount table.
    pub fn post_mortem(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        let listed = std::fs::File::open("/proc/self/mountinfo")
            .and_then(|mut f| mount_points(&mut f))
            .map(|m| m.contains(&self.mnt.to_string_lossy().into_owned()));
        format!(
            "mount still listed in mountinfo: {listed:?}\n--- daemon log tail ({}):\n{tail}",
            self.log.display()
        )
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// The branch argument: `A=rw:B=ro:...`.
    pub fn spec(&self) -> String {
        let parts: Vec<String> = self
            .branches
            .iter()
            .enumerate()
            .map(|(i, b)| {
                format!(
                    "{}={}",
                    b.display(),
                    if i == 0 { "rw" } else { self.lower[i - 1] }
                )
            })
            .collect();
        parts.join(":")
    }

    fn unionfs(&self, args: &[&str]) -> io::Result<()> {
        let bin = unionfs_bin().map_err(io::Error::other)?;
        let out = Command::new(&bin).args(args).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "unionfs {args:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    fn mount(&mut self) -> io::Result<()> {
        let spec = self.spec();
        let mnt = self.mnt.to_string_lossy().into_owned();
        let log = self.log.to_string_lossy().into_owned();
        // allow_other: some operations run as an unprivileged user (`Op::AsUser`), whom FUSE
        // refuses (EACCES on everything) on a mount without it.
        self.unionfs(&[
            "mount",
            "-o",
            "allow_other",
            "--log-file",
            &log,
            &spec,
            &mnt,
        ])?;
        self.mounted = true;
        let t = Instant::now();
        let r = wait_for(&self.mnt, true);
        crate::knobs::trace(format_args!("mounted in {:?}", t.elapsed()));
        r
    }

    pub fn unmount(&mut self) -> io::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mnt = self.mnt.to_string_lossy().into_owned();
        // EBUSY can be transient: another test thread's fork (before its exec) briefly holds
        // copies of this thread's fds into the mount. Retry a few times before giving up.
        let mut r = self.unionfs(&["umount", &mnt]);
        for _ in 0..20 {
            match &r {
                Err(e) if e.to_string().contains("busy") => {
                    std::thread::sleep(Duration::from_millis(50));
                    r = self.unionfs(&["umount", &mnt]);
                }
                _ => break,
            }
        }
        let r = r.and_then(|()| wait_for(&self.mnt, false));
        crate::knobs::trace(format_args!("unmounted: {r:?}"));
        if r.is_err() {
            let _ = sys::umount_detach(&self.mnt);
        }
        self.mounted = false;
        r
    }

    /// Unmount, and mount the same branches again on the same mount point.
    pub fn remount(&mut self) -> io::Result<()> {
        self.unmount()?;
        self.mount()
    }

    /// Unmount, and mount the same branches on a fresh mount point beside the old one. The
    /// property tests use this: a quick remount on the same path can lose the new mount
    /// (`regression_remount_same_mountpoint_keeps_the_mount`), which would hide every other
    /// finding.
    pub fn remount_elsewhere(&mut self) -> io::Result<()> {
        self.unmount()?;
        self.generation += 1;
        let name = format!("mnt.{}", self.generation);
        let fresh = self.mnt.with_file_name(name);
        std::fs::create_dir(&fresh)?;
        self.mnt = fresh;
        self.mount()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("unmount of {:?} failed: {e}", self.mnt);
        }
    }
}
