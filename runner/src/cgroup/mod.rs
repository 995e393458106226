//! The container's cgroup: detect the host's mode, create the group under the runner's own,
//! write the limits, join the child, report out-of-memory kills, and remove the group.
//!
//! The mode is detected as runc does: `statfs("/sys/fs/cgroup")` says `cgroup2` on a unified host;
//! `tmpfs` means cgroup v1, or hybrid when `/sys/fs/cgroup/unified` is a cgroup2 mount. In hybrid
//! mode the v2 tree holds no controller we use (here only `hugetlb`), so the v1 controllers are
//! driven. Both writers take plain directory paths, so their tests run on a temporary directory.
#![forbid(unsafe_code)]

pub mod delegated;
pub mod v1;
pub mod v2;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where cgroup filesystems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// v1 controllers, one hierarchy each (also hybrid hosts).
    V1 { hybrid: bool },
    /// The unified hierarchy.
    V2,
}

/// Detect the mode from the filesystem type of `root` (normally [`CGROUP_ROOT`]).
pub fn detect(root: &Path) -> Result<Mode> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
    let st = statfs(root).with_context(|| format!("statfs {}", root.display()))?;
    let ty = st.filesystem_type();
    if ty == CGROUP2_SUPER_MAGIC {
        return Ok(Mode::V2);
    }
    if ty == TMPFS_MAGIC {
        let unified = root.join("unified");
        let hybrid = statfs(&unified)
            .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
            .unwrap_or(false);
        return Ok(Mode::V1 { hybrid });
    }
    bail!(
        "{} is neither cgroup2 nor a tmpfs of cgroup v1 mounts (filesystem type {:#x})",
        root.display(),
        ty.0
    )
}

/// CPU bandwidth: `quota_us` of CPU time per `period_us` of wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

/// Resource limits of a container; `None` leaves the parent's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpu: Option<CpuQuota>,
    /// Bytes of memory; swap is turned off for the container.
    pub memory: Option<u64>,
    pub pids: Option<u64>,
    /// A cpu list as the kernel writes it (`0-1,3`).
    pub cpuset_cpus: Option<String>,
    /// Block I/O weight on the blkio scale (10..=1000); v2 converts it to `io.weight`.
    pub io_weight: Option<u16>,
    /// CPU shares (v1 `cpu.shares`; v2 converts them to `cpu.weight`).
    pub cpu_shares: Option<u64>,
    /// Memory nodes as the kernel writes them (`0-1`).
    pub cpuset_mems: Option<String>,
    /// Device access rules (OCI `linux.resources.devices`), in order: v1 `devices.allow`/`deny`
    /// writes, or on v2 an eBPF program (the last matching rule wins).
    pub devices: Vec<DeviceRule>,
    /// Join every hierarchy the runner knows, not only those a limit needs (OCI containers:
    /// engines read statistics from all of them).
    pub join_all: bool,
    /// Further v1 files to write after the limits above, in order: the finer OCI resources
    /// (soft memory limit, swappiness, OOM killer, real-time CPU, per-device block I/O, hugetlb,
    /// net_cls/net_prio). Refused on cgroup v2.
    pub v1_files: Vec<V1Write>,
    /// Files to write on cgroup v2 (`linux.resources.unified`). Refused on cgroup v1.
    pub v2_files: Vec<(String, String)>,
}

/// One write to a v1 controller's file, and the OCI field it comes from (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Write {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
    pub field: &'static str,
}

/// One device cgroup rule: allow or deny `access` (`rwm`) to a type (`a`, `c`, `b`) and numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// `a`, `c` or `b`.
    pub kind: char,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: String,
}

/// The device rules runc and docker add after a container's own: mknod of any node (what may be
/// opened is what counts), read/write of the default devices (`/dev/null`, `zero`, `full`,
/// `random`, `urandom`, `tty`), the ptys and `/dev/ptmx`.
pub fn default_device_rules() -> Vec<DeviceRule> {
    let rule = |kind, major, minor, access: &str| DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access: access.to_string(),
    };
    let mut out = vec![rule('c', None, None, "m"), rule('b', None, None, "m")];
    for (_, major, minor) in crate::rootfs::DEVICES {
        out.push(rule('c', Some(major as i64), Some(minor as i64), "rwm"));
    }
    out.push(rule('c', Some(136), None, "rwm"));
    out.push(rule('c', Some(5), Some(2), "rwm"));
    out
}

/// docker's device policy for `runner run`: everything denied, then [`default_device_rules`].
pub fn docker_device_rules() -> Vec<DeviceRule> {
    let mut rules = vec![DeviceRule {
        allow: false,
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".to_string(),
    }];
    rules.extend(default_device_rules());
    rules
}

/// Whether device rules can be enforced here: cgroup v1 with the `devices` controller mounted,
/// or cgroup v2 where the kernel loads cgroup device programs (eBPF).
pub fn device_rules_supported() -> bool {
    let root = std::env::var_os("RUNNER_CGROUP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT));
    match detect(&root) {
        Ok(Mode::V2) => return v2::devices::supported(),
        Ok(Mode::V1 { .. }) => {}
        Err(_) => return false,
    }
    fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
        m.lines().any(|l| {
            l.split_once(" - ").is_some_and(|(_, post)| {
                let mut f = post.split_whitespace();
                f.next() == Some("cgroup")
                    && f.nth(1)
                        .is_some_and(|o| o.split(',').any(|o| o == "devices"))
            })
        })
    })
}

impl DeviceRule {
    /// The line v1's `devices.allow`/`devices.deny` take: `c 1:3 rwm`, `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let num = |n: Option<i64>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            num(self.major),
            num(self.minor),
            self.access
        )
    }
}

/// A container's cgroup in either mode.
#[derive(Debug)]
pub enum Cgroup {
    V1(v1::Cgroup),
    V2(v2::Cgroup),
}

impl Cgroup {
    /// Create the cgroup `name` under the runner's own cgroup and write `limits` to it.
    ///
    /// `$RUNNER_CGROUP_ROOT` replaces [`CGROUP_ROOT`]: on a hybrid host, pointing it at the
    /// cgroup2 mount (`/sys/fs/cgroup/unified`) exercises the v2 path (without controllers).
    pub fn create(name: &str, limits: &Limits) -> Result<Cgroup> {
        Cgroup::create_at(Path::new(name), limits)
    }

    /// Create the cgroup at `path` (OCI `cgroupsPath`): an absolute path is taken from the root
    /// of each hierarchy, a relative one from the runner's own cgroup, as runc does.
    pub fn create_at(path: &Path, limits: &Limits) -> Result<Cgroup> {
        let absolute = path.is_absolute();
        let name = path
            .strip_prefix("/")
            .unwrap_or(path)
            .to_str()
            .context("the cgroup path is not UTF-8")?;
        if name.is_empty()
            || Path::new(name)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "invalid cgroup path {}: it must name a group below the root without '..'",
                path.display()
            );
        }
        let root = std::env::var_os("RUNNER_CGROUP_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CGROUP_ROOT));
        let root = root.as_path();
        match detect(root)? {
            Mode::V2 => {
                let own =
                    fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
                let parent = if absolute {
                    root.to_path_buf()
                } else {
                    let own = v2::own_cgroup_dir(root, &own)?;
                    v2::choose_parent(root, &own, limits)?
                };
                if let Some(w) = limits.v1_files.first() {
                    bail!(
                        "{}: a cgroup v1 setting, and this host has cgroup v2",
                        w.field
                    );
                }
                Ok(Cgroup::V2(v2::Cgroup::create(&parent, name, limits)?))
            }
            Mode::V1 { hybrid } => {
                tracing::debug!(hybrid, "cgroup v1 controllers");
                if !limits.v2_files.is_empty() {
                    bail!("linux.resources.unified: cgroup v2 files, and this host has cgroup v1");
                }
                let mountinfo = fs::read_to_string("/proc/self/mountinfo")
                    .context("reading /proc/self/mountinfo")?;
                let own =
                    fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
                let parents = if absolute {
                    v1::hierarchy_roots(&mountinfo)?
                } else {
                    v1::own_cgroup_dirs(&mountinfo, &own)?
                };
                Ok(Cgroup::V1(v1::Cgroup::create(&parents, name, limits)?))
            }
        }
    }

    /// The directory to pass to `clone3(CLONE_INTO_CGROUP)`, on v2.
    pub fn clone_into_dir(&self) -> Option<&Path> {
        match self {
            Cgroup::V1(_) => None,
            Cgroup::V2(c) => Some(c.dir()),
        }
    }

    /// Move `pid` into the cgroup (one `cgroup.procs` write per hierarchy).
    pub fn add(&self, pid: Pid) -> Result<()> {
        match self {
            Cgroup::V1(c) => c.add(pid),
            Cgroup::V2(c) => c.add(pid),
        }
    }

    /// Whether the group enforces device rules (v1: a `devices` hierarchy was joined, which
    /// happens only for rules, or for everything with `join_all`; v2: a device program is
    /// attached).
    pub fn has_device_rules(&self) -> bool {
        match self {
            Cgroup::V1(c) => c.dir("devices").is_some(),
            Cgroup::V2(c) => c.has_device_rules(),
        }
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        match self {
            Cgroup::V1(c) => c.oom_kills() > 0,
            Cgroup::V2(c) => c.oom_kills() > 0,
        }
    }

    /// Every directory of this cgroup (one per v1 hierarchy).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Cgroup::V1(c) => c.dirs().cloned().collect(),
            Cgroup::V2(c) => vec![c.dir().to_path_buf()],
        }
    }

    /// Kill what is left in the cgroup and remove its directories.
    pub fn remove(&self) -> Result<()> {
        remove_dirs(&self.dirs(), Duration::from_secs(5))
    }
}

/// Move `pid` into the group at `dir` (one hierarchy).
pub fn write_procs(dir: &Path, pid: Pid) -> Result<()> {
    write_file(dir, "cgroup.procs", &pid.to_string())
}

/// Create the group `dir`, or join it when it exists already (an OCI `cgroupsPath` that an
/// engine or a pod made beforehand, which runc joins). A group that has processes in it or is
/// frozen is refused, as runc 1.2 does: the container would share its limits and its
/// `delete` would kill what is not its own.
pub fn create_or_join(dir: &Path) -> Result<()> {
    let e = match fs::create_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if e.kind() != std::io::ErrorKind::AlreadyExists || !dir.join("cgroup.procs").is_file() {
        return Err(e).with_context(|| format!("creating cgroup {}", dir.display()));
    }
    let n = procs(dir).len();
    if n > 0 {
        bail!(
            "cgroup {} exists and has {n} process(es) in it; the container needs a group \
             without other processes",
            dir.display()
        );
    }
    let frozen = fs::read_to_string(dir.join("cgroup.freeze")).is_ok_and(|v| v.trim() == "1")
        || fs::read_to_string(dir.join("freezer.state")).is_ok_and(|v| v.trim() == "FROZEN");
    if frozen {
        bail!("cgroup {} exists and is frozen", dir.display());
    }
    tracing::info!("joining the existing empty cgroup {}", dir.display());
    Ok(())
}

/// Pids listed in `DIR/cgroup.procs` (an absent file lists none).
pub fn procs(dir: &Path) -> Vec<Pid> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .map(Pid::from_raw)
        .collect()
}

/// SIGKILL every process in each directory, then rmdir them (deepest first), retrying while the
/// kernel still reports the dying processes (rmdir answers EBUSY until they are gone).
pub fn remove_dirs(dirs: &[PathBuf], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for dir in dirs {
        loop {
            if !dir.exists() {
                break;
            }
            for pid in procs(dir) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::trace!(dir = %dir.display(), error = %e, "cgroup not empty yet");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("removing cgroup {}", dir.display()));
                }
            }
        }
    }
    Ok(())
}

/// Write `value` to `dir/file`, naming both in the error.
pub(crate) fn write_file(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// The number after `key ` in a flat keyed file such as `memory.events` or `memory.oom_control`.
pub(crate) fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_this_hosts_mode() {
        // Whatever the host is, the answer must be one of the two modes, never an error.
        if Path::new(CGROUP_ROOT).exists() {
            detect(Path::new(CGROUP_ROOT)).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        // A temp dir on a non-tmpfs, non-cgroup filesystem is refused with its type in the message,
        // or is a tmpfs (then it reads as v1 without the unified mount).
        match detect(tmp.path()) {
            Ok(mode) => assert_eq!(mode, Mode::V1 { hybrid: false }),
            Err(e) => assert!(e.to_string().contains("filesystem type"), "{e}"),
        }
    }

    #[test]
    fn keyed_values() {
        let text = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(text, "oom_kill"), Some(3));
        assert_eq!(keyed_value(text, "oom"), None);
    }

    #[test]
    fn remove_dirs_removes_empty_dirs_and_tolerates_missing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        fs::create_dir(&a).unwrap();
        remove_dirs(
            &[a.clone(), tmp.path().join("missing")],
            Duration::from_millis(50),
        )
        .unwrap();
        assert!(!a.exists());
    }
}
