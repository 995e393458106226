//! cgroup v1: one hierarchy per controller (or per group of co-mounted controllers).
//!
//! The container's group is created under the runner's own group in each hierarchy it needs, as
//! `/proc/self/cgroup` and `/proc/self/mountinfo` place it. Only the hierarchies that carry a
//! limit are joined (plus `pids`, which counts the container's processes): each `cgroup.procs`
//! write can cost an RCU grace period, the largest part of a container's start time.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::Pid;

use super::{keyed_value, write_file, Limits};

/// The v1 controllers the runner writes.
pub const CONTROLLERS: [&str; 10] = [
    "cpu", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb", "net_cls",
    "net_prio",
];

/// For each controller in [`CONTROLLERS`] that is mounted, the directory of the caller's own
/// cgroup in that hierarchy, from the texts of `/proc/self/mountinfo` and `/proc/self/cgroup`.
pub fn own_cgroup_dirs(
    mountinfo: &str,
    proc_cgroup: &str,
) -> Result<BTreeMap<&'static str, PathBuf>> {
    let mut out = BTreeMap::new();
    for controller in CONTROLLERS {
        let Some(own_path) = proc_cgroup.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls.split(',').any(|c| c == controller).then_some(path)
        }) else {
            continue;
        };
        let Some((mount_root, mount_point)) = find_mount(mountinfo, controller) else {
            continue;
        };
        // Inside a cgroup namespace the mount's root may be our own group: strip it.
        let rel = Path::new(own_path).strip_prefix(mount_root).unwrap_or(
            Path::new(own_path)
                .strip_prefix("/")
                .unwrap_or(Path::new(own_path)),
        );
        out.insert(controller, Path::new(mount_point).join(rel));
    }
    if out.is_empty() {
        bail!(
            "no cgroup v1 controller ({}) is mounted",
            CONTROLLERS.join(", ")
        );
    }
    Ok(out)
}

/// For each controller in [`CONTROLLERS`] that is mounted, its mount point: the base of an
/// absolute OCI `cgroupsPath`.
pub fn hierarchy_roots(mountinfo: &str) -> Result<BTreeMap<&'static str, PathBuf>> {
    let out: BTreeMap<_, _> = CONTROLLERS
        .into_iter()
        .filter_map(|c| Some((c, PathBuf::from(find_mount(mountinfo, c)?.1))))
        .collect();
    if out.is_empty() {
        bail!(
            "no cgroup v1 controller ({}) is mounted",
            CONTROLLERS.join(", ")
        );
    }
    Ok(out)
}

/// The (root, mount point) of the cgroup v1 mount that carries `controller`.
fn find_mount<'a>(mountinfo: &'a str, controller: &str) -> Option<(&'a str, &'a str)> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let _source = post.next()?;
        let options = post.next()?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        let mut pre = pre.split_whitespace();
        let root = pre.nth(3)?;
        let mount_point = pre.next()?;
        Some((root, mount_point))
    })
}

/// A helper process that starts the RCU grace period of the first attach early.
///
/// Every `cgroup.procs` write takes the kernel's global `cgroup_threadgroup_rwsem` for writing,
/// a percpu rwsem: the first writer in a while waits for an RCU grace period (rcu_sync) before
/// it has it, 5-16 ms on the loaded 2-core test host; writers within about one grace period
/// after that find it passed and take 0.1 ms. So at the start of `runner run` a forked helper
/// moves itself into its own group (a no-op move, but a writer all the same) and exits: the
/// wait runs while the runner finds the image and mounts the union, and the container's attach
/// after the clone finds it passed (or shares it while in progress). Where the lock has no
/// such wait (a kernel with `favordynmods`), it costs a fork. It changes no group: the helper
/// writes `0` (itself) into the group it is already in, in one hierarchy.
#[derive(Debug)]
pub struct EarlyAttach {
    pid: Pid,
}

impl EarlyAttach {
    /// Fork the helper; `None` (nothing to do, or the fork failed: the attach then just waits)
    /// without a v1 hierarchy we join.
    pub fn start() -> Option<EarlyAttach> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").ok()?;
        let dirs = own_cgroup_dirs(&mountinfo, &proc_cgroup).ok()?;
        // pids: the hierarchy every container joins.
        let procs = dirs.get("pids")?.join("cgroup.procs");
        match crate::sys::fork_helper() {
            Ok(Some(pid)) => Some(EarlyAttach { pid }),
            Ok(None) => {
                let code = if fs::write(&procs, "0").is_ok() { 0 } else { 1 };
                crate::sys::exit_now(code)
            }
            Err(e) => {
                tracing::debug!("fork of the early attach helper: {e}");
                None
            }
        }
    }
}

impl Drop for EarlyAttach {
    fn drop(&mut self) {
        // Reap it: done by now, or just finishing its grace period.
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// The container's group: one directory per joined hierarchy.
#[derive(Debug)]
pub struct Cgroup {
    dirs: BTreeMap<&'static str, PathBuf>,
}

impl Cgroup {
    /// Create `name` under each needed parent directory of `parents` and write `limits`.
    /// On error, the directories made so far are removed again.
    pub fn create(
        parents: &BTreeMap<&'static str, PathBuf>,
        name: &str,
        limits: &Limits,
    ) -> Result<Cgroup> {
        let mut cg = Cgroup {
            dirs: BTreeMap::new(),
        };
        let result = cg.create_inner(parents, name, limits);
        if let Err(e) = result {
            let dirs: Vec<PathBuf> = cg.dirs.values().cloned().collect();
            let _ = super::remove_dirs(&dirs, std::time::Duration::from_millis(200));
            return Err(e);
        }
        Ok(cg)
    }

    fn create_inner(
        &mut self,
        parents: &BTreeMap<&'static str, PathBuf>,
        name: &str,
        limits: &Limits,
    ) -> Result<()> {
        let needed: Vec<&'static str> = needed_controllers(&Limits {
            join_all: false,
            ..limits.clone()
        });
        let joined = if limits.join_all {
            CONTROLLERS.to_vec()
        } else {
            needed.clone()
        };
        for controller in joined {
            let Some(parent) = parents.get(controller) else {
                if controller == "pids" || !needed.contains(&controller) {
                    continue; // counting only; a host without it still runs containers
                }
                bail!("the cgroup v1 {controller} controller is not mounted, but a limit needs it");
            };
            let dir = parent.join(name);
            // Co-mounted controllers (`net_cls,net_prio`) share one directory.
            if !self.dirs.values().any(|d| *d == dir) {
                make_parents(parent, name, controller == "cpuset")?;
                super::create_or_join(&dir)?;
            }
            self.dirs.insert(controller, dir.clone());
            let parent = dir.parent().unwrap_or(parent);
            match controller {
                "cpu" => {
                    if let Some(q) = limits.cpu {
                        // Period first: the kernel checks the quota against the current period.
                        write_file(&dir, "cpu.cfs_period_us", &q.period_us.to_string())?;
                        write_file(&dir, "cpu.cfs_quota_us", &q.quota_us.to_string())?;
                    }
                    if let Some(shares) = limits.cpu_shares {
                        write_file(&dir, "cpu.shares", &shares.to_string())?;
                    }
                }
                "memory" => {
                    if let Some(bytes) = limits.memory {
                        write_file(&dir, "memory.limit_in_bytes", &bytes.to_string())?;
                        // memory+swap equal to memory: no swap. The file is absent without
                        // swap accounting; then there is nothing to turn off.
                        if dir.join("memory.memsw.limit_in_bytes").exists() {
                            write_file(&dir, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
                        }
                        if dir.join("memory.swappiness").exists() {
                            write_file(&dir, "memory.swappiness", "0")?;
                        }
                    }
                }
                "pids" => {
                    if let Some(max) = limits.pids {
                        write_file(&dir, "pids.max", &max.to_string())?;
                    }
                }
                "cpuset" => {
                    // A new v1 cpuset starts empty and refuses tasks until both are set.
                    let mems = match &limits.cpuset_mems {
                        Some(m) => m.clone(),
                        None => read_trimmed(parent, "cpuset.mems")?,
                    };
                    write_file(&dir, "cpuset.mems", &mems)?;
                    let cpus = match &limits.cpuset_cpus {
                        Some(c) => c.clone(),
                        None => read_trimmed(parent, "cpuset.cpus")?,
                    };
                    write_file(&dir, "cpuset.cpus", &cpus)?;
                }
                "blkio" => {
                    if let Some(w) = limits.io_weight {
                        // CFQ's blkio.weight, or BFQ's blkio.bfq.weight on newer kernels.
                        let file = ["blkio.weight", "blkio.bfq.weight"]
                            .into_iter()
                            .find(|f| dir.join(f).exists());
                        let Some(file) = file else {
                            bail!(
                                "--io-weight: {} has neither blkio.weight nor blkio.bfq.weight \
                                 (no CFQ or BFQ I/O scheduler on this host)",
                                dir.display()
                            );
                        };
                        write_file(&dir, file, &w.to_string())?;
                    }
                }
                "devices" => {
                    for rule in &limits.devices {
                        let file = if rule.allow {
                            "devices.allow"
                        } else {
                            "devices.deny"
                        };
                        write_file(&dir, file, &rule.v1_line())?;
                    }
                }
                _ => {}
            }
            for w in limits
                .v1_files
                .iter()
                .filter(|w| w.controller == controller)
            {
                let path = dir.join(&w.file);
                if !path.exists() {
                    bail!(
                        "{}: this kernel's {controller} cgroup has no {}",
                        w.field,
                        w.file
                    );
                }
                write_file(&dir, &w.file, &w.value).with_context(|| w.field)?;
            }
        }
        Ok(())
    }

    /// Move `pid` into every hierarchy of the group.
    pub fn add(&self, pid: Pid) -> Result<()> {
        for dir in self.dirs.values() {
            write_file(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// The OOM killer's count (`oom_kill` in `memory.oom_control`), 0 without a memory group.
    pub fn oom_kills(&self) -> u64 {
        self.dirs
            .get("memory")
            .and_then(|d| fs::read_to_string(d.join("memory.oom_control")).ok())
            .and_then(|t| keyed_value(&t, "oom_kill"))
            .unwrap_or(0)
    }

    pub fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.dirs.values()
    }

    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(|p| p.as_path())
    }
}

/// The hierarchies a container with `limits` joins: `pids` always, the others when a limit
/// needs them.
pub fn needed_controllers(limits: &Limits) -> Vec<&'static str> {
    if limits.join_all {
        return CONTROLLERS.to_vec();
    }
    let mut out = vec!["pids"];
    if limits.cpu.is_some() {
        out.push("cpu");
    }
    if limits.memory.is_some() {
        out.push("memory");
    }
    if limits.cpuset_cpus.is_some() {
        out.push("cpuset");
    }
    if limits.io_weight.is_some() {
        out.push("blkio");
    }
    if limits.cpu_shares.is_some() && !out.contains(&"cpu") {
        out.push("cpu");
    }
    if limits.cpuset_mems.is_some() && !out.contains(&"cpuset") {
        out.push("cpuset");
    }
    if !limits.devices.is_empty() {
        out.push("devices");
    }
    for w in &limits.v1_files {
        if !out.contains(&w.controller) {
            out.push(w.controller);
        }
    }
    out
}

/// Create the missing intermediate groups of `name` (`a/b/c` makes `a` and `a/b`) under `base`;
/// a new cpuset group starts empty and refuses tasks, so each new one copies its parent's.
fn make_parents(base: &Path, name: &str, cpuset: bool) -> Result<()> {
    let mut dir = base.to_path_buf();
    let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        let parent = dir.clone();
        dir.push(part);
        match fs::create_dir(&dir) {
            Ok(()) if cpuset => {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    write_file(&dir, file, &read_trimmed(&parent, file)?)?;
                }
            }
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating cgroup {}", dir.display())),
        }
    }
    Ok(())
}

fn read_trimmed(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::super::CpuQuota;
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 /sub /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PROC_CGROUP: &str = "\
8:pids:/sub/me
7:blkio:/
4:memory:/process_api/42dc
3:cpuset:/
1:cpu:/
0::/
";

    #[test]
    fn finds_own_dirs_from_mountinfo_and_proc_cgroup() {
        let dirs = own_cgroup_dirs(MOUNTINFO, PROC_CGROUP).unwrap();
        assert_eq!(
            dirs["memory"],
            Path::new("/sys/fs/cgroup/memory/process_api/42dc")
        );
        assert_eq!(dirs["cpu"], Path::new("/sys/fs/cgroup/cpu"));
        // The pids mount's root is /sub, so only /me remains below the mount point.
        assert_eq!(dirs["pids"], Path::new("/sys/fs/cgroup/pids/me"));
        assert_eq!(dirs.len(), 5);
        assert!(own_cgroup_dirs("", PROC_CGROUP).is_err());
    }

    /// A temp dir laid out like the v1 hierarchies, with the files the kernel would provide.
    fn fake_hierarchies() -> (tempfile::TempDir, BTreeMap<&'static str, PathBuf>) {
        let tmp = tempfile::tempdir().unwrap();
        let mut parents = BTreeMap::new();
        for c in CONTROLLERS {
            let dir = tmp.path().join(c).join("parent");
            fs::create_dir_all(&dir).unwrap();
            parents.insert(c, dir);
        }
        fs::write(parents["cpuset"].join("cpuset.cpus"), "0-3\n").unwrap();
        fs::write(parents["cpuset"].join("cpuset.mems"), "0\n").unwrap();
        (tmp, parents)
    }

    fn read(dir: &Path, file: &str) -> String {
        fs::read_to_string(dir.join(file)).unwrap()
    }

    #[test]
    fn writes_every_limit_to_its_controller() {
        let (_tmp, parents) = fake_hierarchies();
        let limits = Limits {
            cpu: Some(CpuQuota {
                quota_us: 50_000,
                period_us: 100_000,
            }),
            memory: Some(64 << 20),
            pids: Some(20),
            cpuset_cpus: Some("1".into()),
            io_weight: Some(300),
            ..Default::default()
        };
        // A fake group has no blkio.weight file (the kernel makes those): a clear error.
        let parents_no_blkio: BTreeMap<_, _> = parents.clone();
        let err = Cgroup::create(&parents_no_blkio, "ctr", &limits).unwrap_err();
        assert!(format!("{err:#}").contains("blkio.weight"), "{err:#}");
        // (On a cgroupfs the failure also removes the groups it made; rmdir cannot remove this
        // temp dir's ordinary files, so that part is checked by the privileged tests.)
        for c in CONTROLLERS {
            let _ = fs::remove_dir_all(parents[c].join("ctr"));
        }

        let limits = Limits {
            io_weight: None,
            ..limits
        };
        let cg = Cgroup::create(&parents, "ctr", &limits).unwrap();
        let d = |c: &str| cg.dir(c).unwrap().to_path_buf();
        assert_eq!(read(&d("cpu"), "cpu.cfs_period_us"), "100000");
        assert_eq!(read(&d("cpu"), "cpu.cfs_quota_us"), "50000");
        assert_eq!(
            read(&d("memory"), "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert!(!d("memory").join("memory.memsw.limit_in_bytes").exists());
        assert_eq!(read(&d("pids"), "pids.max"), "20");
        assert_eq!(read(&d("cpuset"), "cpuset.cpus"), "1");
        assert_eq!(read(&d("cpuset"), "cpuset.mems"), "0");
        assert!(cg.dir("blkio").is_none());

        cg.add(Pid::from_raw(4242)).unwrap();
        for dir in cg.dirs() {
            assert_eq!(read(dir, "cgroup.procs"), "4242");
        }
        fs::write(
            d("memory").join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills(), 1);
    }

    #[test]
    fn without_limits_joins_only_pids() {
        let (_tmp, parents) = fake_hierarchies();
        let cg = Cgroup::create(&parents, "ctr", &Limits::default()).unwrap();
        assert_eq!(cg.dirs().count(), 1);
        assert!(cg.dir("pids").is_some());
        assert!(!cg.dir("pids").unwrap().join("pids.max").exists());
        assert_eq!(cg.oom_kills(), 0);
    }

    #[test]
    fn cpuset_gets_cpus_and_the_parents_mems() {
        let (_tmp, parents) = fake_hierarchies();
        let limits = Limits {
            cpuset_cpus: Some("0-1".into()),
            ..Default::default()
        };
        let cg = Cgroup::create(&parents, "a", &limits).unwrap();
        assert_eq!(read(cg.dir("cpuset").unwrap(), "cpuset.cpus"), "0-1");
        assert_eq!(read(cg.dir("cpuset").unwrap(), "cpuset.mems"), "0");
    }

    #[test]
    fn an_existing_empty_group_is_joined_and_a_busy_one_refused_by_name() {
        let (_tmp, parents) = fake_hierarchies();
        let dup = parents["pids"].join("dup");
        fs::create_dir(&dup).unwrap();
        fs::write(dup.join("cgroup.procs"), "").unwrap();
        let limits = Limits {
            pids: Some(7),
            ..Default::default()
        };
        let cg = Cgroup::create(&parents, "dup", &limits).unwrap();
        assert_eq!(cg.dir("pids").unwrap(), dup.as_path());
        assert_eq!(read(&dup, "pids.max"), "7");
        fs::write(dup.join("cgroup.procs"), "4242\n").unwrap();
        let err = Cgroup::create(&parents, "dup", &Limits::default()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("dup") && msg.contains("1 process"), "{msg}");
    }
}
