//! cgroup v2: one unified hierarchy; the child is placed in the group by
//! `clone3(CLONE_INTO_CGROUP)` where the kernel has it, else by one `cgroup.procs` write.
//! Device rules are an eBPF program attached to the group ([`devices`]), before any process
//! enters it.
#![forbid(unsafe_code)]

pub mod devices;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

use super::{keyed_value, write_file, Limits};

/// The caller's own group directory under `root`, from the `0::PATH` line of `/proc/self/cgroup`.
pub fn own_cgroup_dir(root: &Path, proc_cgroup: &str) -> Result<PathBuf> {
    let Some(path) = super::delegated::own_path(proc_cgroup) else {
        bail!("no cgroup2 (0::) line in /proc/self/cgroup");
    };
    Ok(root.join(path.strip_prefix("/").unwrap_or(&path)))
}

/// Convert a blkio weight (10..=1000) to an `io.weight` (1..=10000) as runc does.
pub fn blkio_to_io_weight(w: u16) -> u64 {
    1 + (u64::from(w).saturating_sub(10)) * 9999 / 990
}

/// The container's group in the unified hierarchy.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    /// Whether a device program is attached (the rules were not empty).
    devices: bool,
}

impl Cgroup {
    /// Enable the controllers `limits` needs in `parent`, create `parent/name` and write `limits`.
    ///
    /// A `name` of several components (containerd's `cgroupsPath` is `/NAMESPACE/ID`) has
    /// groups in between: each of them passes the controllers on too, since a controller's
    /// files exist in a group only when its parent enables it (runc does the same).
    pub fn create(parent: &Path, name: &str, limits: &Limits) -> Result<Cgroup> {
        let wanted = needed_controllers(limits);
        enable_controllers(parent, &wanted)?;
        let dir = parent.join(name);
        let mut level = parent.to_path_buf();
        for c in Path::new(name)
            .parent()
            .into_iter()
            .flat_map(Path::components)
        {
            level.push(c);
            match fs::create_dir(&level) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating cgroup {}", level.display()))
                }
            }
            enable_controllers(&level, &wanted)?;
        }
        super::create_or_join(&dir)?;
        let cg = Cgroup {
            dir,
            devices: !limits.devices.is_empty(),
        };
        let done = cg.write_limits(limits).and_then(|()| {
            if cg.devices {
                devices::attach(&cg.dir, &limits.devices).context("linux.resources.devices")?;
            }
            Ok(())
        });
        if let Err(e) = done {
            let _ = fs::remove_dir(&cg.dir);
            return Err(e);
        }
        Ok(cg)
    }

    /// Whether device rules are enforced (a device program is attached).
    pub fn has_device_rules(&self) -> bool {
        self.devices
    }

    fn write_limits(&self, limits: &Limits) -> Result<()> {
        let dir = &self.dir;
        if let Some(q) = limits.cpu {
            write_file(dir, "cpu.max", &format!("{} {}", q.quota_us, q.period_us))?;
        }
        if let Some(bytes) = limits.memory {
            write_file(dir, "memory.max", &bytes.to_string())?;
            // No swap for the container; the file is absent without swap accounting.
            if dir.join("memory.swap.max").exists() {
                write_file(dir, "memory.swap.max", "0")?;
            }
        }
        if let Some(max) = limits.pids {
            write_file(dir, "pids.max", &max.to_string())?;
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            write_file(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &limits.cpuset_mems {
            write_file(dir, "cpuset.mems", mems)?;
        }
        for (file, value) in &limits.v2_files {
            if file.contains('/') || file.starts_with('.') {
                bail!("linux.resources.unified: {file:?} is not a file of the group");
            }
            write_file(dir, file, value).context("linux.resources.unified")?;
        }
        if let Some(shares) = limits.cpu_shares {
            // runc's conversion of shares (2..262144) to weight (1..10000).
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write_file(dir, "cpu.weight", &weight.to_string())?;
        }
        if let Some(w) = limits.io_weight {
            write_file(
                dir,
                "io.weight",
                &format!("default {}", blkio_to_io_weight(w)),
            )?;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Move `pid` into the group (when `CLONE_INTO_CGROUP` was not available).
    pub fn add(&self, pid: Pid) -> Result<()> {
        write_file(&self.dir, "cgroup.procs", &pid.to_string())
    }

    /// `oom_kill` from `memory.events`.
    pub fn oom_kills(&self) -> u64 {
        fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|t| keyed_value(&t, "oom_kill"))
            .unwrap_or(0)
    }
}

/// Enable the controllers of `wanted` that `dir` does not yet pass on to its children, naming
/// one that `dir` itself does not have.
fn enable_controllers(dir: &Path, wanted: &[&'static str]) -> Result<()> {
    let missing = missing_in_subtree(dir, wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let mut enable = Vec::new();
    for c in &missing {
        if !available.split_whitespace().any(|a| a == *c) {
            bail!(
                "the cgroup2 {c} controller is not available in {} (cgroup.controllers: {:?})",
                dir.display(),
                available.trim()
            );
        }
        enable.push(format!("+{c}"));
    }
    // EBUSY here would mean the group has processes of its own (the "no internal processes"
    // rule); `choose_parent` avoids such a parent.
    write_file(dir, "cgroup.subtree_control", &enable.join(" "))
}

/// The controllers of `wanted` not yet in `dir/cgroup.subtree_control`.
fn missing_in_subtree(dir: &Path, wanted: &[&'static str]) -> Vec<&'static str> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    wanted
        .iter()
        .filter(|c| !lists(&enabled, c))
        .copied()
        .collect()
}

/// Whether a `cgroup.subtree_control` text lists `controller` (the kernel writes `pids`; a
/// file of a test written as the kernel is written to, `+pids`).
pub(crate) fn lists(subtree_control: &str, controller: &str) -> bool {
    subtree_control
        .split_whitespace()
        .any(|e| e.trim_start_matches('+') == controller)
}

/// Where to create the container's group: the runner's own group `own` (under `root`) when the
/// controllers `limits` needs are enabled there or can be. cgroup2 cannot enable controllers for
/// the children of a group that has processes of its own (the runner's, e.g. a login session's
/// scope): then the nearest ancestor that already enables them all is used, as a warning says.
pub fn choose_parent(root: &Path, own: &Path, limits: &Limits) -> Result<PathBuf> {
    let wanted = needed_controllers(limits);
    let missing = missing_in_subtree(own, &wanted);
    let has_procs = !super::procs(own).is_empty();
    if missing.is_empty() || !has_procs || own == root {
        return Ok(own.to_path_buf());
    }
    for anc in own.ancestors().skip(1).take_while(|a| a.starts_with(root)) {
        if missing_in_subtree(anc, &wanted).is_empty() {
            tracing::warn!(
                own = %own.display(),
                "{} has processes, so it cannot enable {} for a child; creating the container's cgroup under {}",
                own.display(),
                missing.join(" "),
                anc.display()
            );
            return Ok(anc.to_path_buf());
        }
    }
    bail!(
        "cannot enable the cgroup2 controllers {} under {}: it has processes of its own and no \
         ancestor enables them; start the runner from a leaf of a delegated subtree",
        missing.join(" "),
        own.display()
    )
}

/// The controllers `limits` needs enabled in the parent's `cgroup.subtree_control`.
pub fn needed_controllers(limits: &Limits) -> Vec<&'static str> {
    let mut out = Vec::new();
    if limits.cpu.is_some() || limits.cpu_shares.is_some() {
        out.push("cpu");
    }
    if limits.cpuset_cpus.is_some() || limits.cpuset_mems.is_some() {
        out.push("cpuset");
    }
    if limits.io_weight.is_some() {
        out.push("io");
    }
    if limits.memory.is_some() {
        out.push("memory");
    }
    if limits.pids.is_some() {
        out.push("pids");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::CpuQuota;
    use super::*;

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn own_dir_from_proc_cgroup() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            own_cgroup_dir(root, "0::/user.slice/session-1.scope\n").unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/session-1.scope")
        );
        assert_eq!(own_cgroup_dir(root, "0::/\n").unwrap(), root);
        assert!(own_cgroup_dir(root, "4:memory:/x\n").is_err());
    }

    #[test]
    fn io_weight_conversion_matches_runc() {
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10000);
        assert_eq!(blkio_to_io_weight(500), 1 + 490 * 9999 / 990);
    }

    #[test]
    fn writes_limits_and_enables_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path();
        fs::write(
            parent.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma\n",
        )
        .unwrap();
        let limits = Limits {
            cpu: Some(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000,
            }),
            memory: Some(1 << 30),
            pids: Some(64),
            cpuset_cpus: Some("0,2".into()),
            io_weight: Some(1000),
            ..Default::default()
        };
        let cg = Cgroup::create(parent, "ctr", &limits).unwrap();
        assert_eq!(
            read(parent, "cgroup.subtree_control"),
            "+cpu +cpuset +io +memory +pids"
        );
        let d = cg.dir();
        assert_eq!(d, parent.join("ctr"));
        assert_eq!(read(d, "cpu.max"), "150000 100000");
        assert_eq!(read(d, "memory.max"), (1u64 << 30).to_string());
        // memory.swap.max is written only where the kernel made the file (not in a temp dir).
        assert!(!d.join("memory.swap.max").exists());
        assert_eq!(read(d, "pids.max"), "64");
        assert_eq!(read(d, "cpuset.cpus"), "0,2");
        assert_eq!(read(d, "io.weight"), "default 10000");
        cg.add(Pid::from_raw(7)).unwrap();
        assert_eq!(read(d, "cgroup.procs"), "7");
        fs::write(
            d.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 1);
    }

    #[test]
    fn a_nested_name_passes_the_controllers_down_every_level() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        // The kernel fills a new group's cgroup.controllers; here the test does.
        let ns = root.join("ns");
        fs::create_dir(&ns).unwrap();
        fs::write(ns.join("cgroup.controllers"), "cpu memory\n").unwrap();
        let limits = Limits {
            memory: Some(64 << 20),
            cpu_shares: Some(1024),
            ..Default::default()
        };
        let cg = Cgroup::create(root, "ns/ctr", &limits).unwrap();
        assert_eq!(cg.dir(), ns.join("ctr"));
        assert_eq!(read(root, "cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(read(&ns, "cgroup.subtree_control"), "+cpu +memory");
        assert_eq!(read(cg.dir(), "memory.max"), (64u64 << 20).to_string());
        // A level that lacks a controller is named.
        let pids = Limits {
            pids: Some(5),
            ..Default::default()
        };
        let err = format!("{:#}", Cgroup::create(root, "ns/other", &pids).unwrap_err());
        assert!(
            err.contains("pids controller") && err.contains(&ns.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn no_limits_touches_no_subtree_control() {
        let tmp = tempfile::tempdir().unwrap();
        let cg = Cgroup::create(tmp.path(), "ctr", &Limits::default()).unwrap();
        assert!(!tmp.path().join("cgroup.subtree_control").exists());
        assert!(cg.dir().is_dir());
        assert_eq!(cg.oom_kills(), 0);
    }

    #[test]
    fn device_rules_on_a_directory_that_is_no_cgroup_fail_and_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = Limits {
            devices: crate::cgroup::docker_device_rules(),
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            Cgroup::create(tmp.path(), "ctr", &limits).unwrap_err()
        );
        // Loading needs privilege; attaching needs a cgroup: either step names itself.
        assert!(
            err.contains("linux.resources.devices") && err.contains("bpf(BPF_PROG_"),
            "{err}"
        );
        assert!(!tmp.path().join("ctr").exists());
    }

    #[test]
    fn a_missing_controller_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let limits = Limits {
            pids: Some(5),
            ..Default::default()
        };
        let err = Cgroup::create(tmp.path(), "ctr", &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pids controller"), "{err}");
        assert!(!tmp.path().join("ctr").exists());
    }

    #[test]
    fn a_parent_with_processes_gives_way_to_an_ancestor_that_enables_the_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let slice = root.join("user.slice");
        let scope = slice.join("session-1.scope");
        fs::create_dir_all(&scope).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        fs::write(slice.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        fs::write(scope.join("cgroup.procs"), "1234\n").unwrap();
        let memory = Limits {
            memory: Some(64 << 20),
            ..Default::default()
        };
        assert_eq!(choose_parent(root, &scope, &memory).unwrap(), slice);
        let cpu = Limits {
            cpu: Some(CpuQuota {
                quota_us: 1000,
                period_us: 100_000,
            }),
            ..Default::default()
        };
        assert_eq!(choose_parent(root, &scope, &cpu).unwrap(), root);
        // Nothing to enable, or no processes in the way: the runner's own group.
        assert_eq!(
            choose_parent(root, &scope, &Limits::default()).unwrap(),
            scope
        );
        fs::write(scope.join("cgroup.procs"), "").unwrap();
        assert_eq!(choose_parent(root, &scope, &cpu).unwrap(), scope);
        // No ancestor enables io: a clear error.
        fs::write(scope.join("cgroup.procs"), "1\n").unwrap();
        let io = Limits {
            io_weight: Some(100),
            ..Default::default()
        };
        let err = choose_parent(root, &scope, &io).unwrap_err().to_string();
        assert!(err.contains("io") && err.contains("delegated"), "{err}");
    }
}
