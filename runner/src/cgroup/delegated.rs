//! A cgroup v2 subtree delegated to a user, for runs without root (`runner run` as a user, and
//! the OCI interface when rootless).
//!
//! systemd's `Delegate=yes` gives a user a group whose directory, `cgroup.procs`,
//! `cgroup.subtree_control` and `cgroup.threads` the user owns. Whether we may use a group is
//! decided as crun's and podman's cgroupfs managers decide it: `access(W_OK)` on the directory
//! and on its `cgroup.procs` ([`writable`]). The container's group is made beneath, with only
//! the limits whose controllers the group offers (`cgroup.controllers`); every other limit is
//! reported as [`NotApplied`], naming the controller, the group and what it does offer.
//!
//! The caller's own group is the `0::` line of `/proc/self/cgroup`. The inner runner of a
//! rootless run has a user and a mount namespace of its own but not a cgroup namespace, so the
//! line it reads is the host's path, the same its outer runner would read.
//!
//! cgroup v2's "no internal processes" rule: a group that has processes of its own cannot
//! enable controllers for its children (EBUSY). When controllers must be enabled in such a
//! group, its processes are first moved into a leaf child, [`LEAF`], as podman does
//! (`MoveUnderCgroupSubtree`); the leaf stays, since the user's other processes may live there.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::unistd::{AccessFlags, Pid};

use super::{v2, Limits};

/// The leaf that a delegated group's own processes move into before controllers are enabled.
pub const LEAF: &str = "runner-leaf";

/// A limit that was asked for and is not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotApplied {
    /// The option and its value as asked (`--memory 64m`).
    pub what: String,
    pub why: String,
}

impl std::fmt::Display for NotApplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} not applied: {}", self.what, self.why)
    }
}

/// What a run without root gets: a group in a delegated subtree (or none), and the limits
/// left out.
#[derive(Debug)]
pub struct Delegation {
    pub cgroup: Option<v2::Cgroup>,
    /// Why there is no group, when there is none.
    pub no_cgroup: Option<String>,
    pub not_applied: Vec<NotApplied>,
}

/// The cgroup2 mount: its mount point and the hierarchy path mounted there (`/` unless the
/// mount shows only a subtree), from `/proc/self/mountinfo`'s text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let f: Vec<&str> = pre.split_whitespace().collect();
        Some((PathBuf::from(f.get(4)?), PathBuf::from(f.get(3)?)))
    })
}

/// The directory of hierarchy path `path` (absolute, as `/proc/self/cgroup` writes it) under a
/// cgroup2 mount of hierarchy path `mount_root` at `mount_point`; `None` when the mount does
/// not show it.
pub fn group_dir(mount_point: &Path, mount_root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(mount_root).ok()?;
    Some(mount_point.join(rel))
}

/// The caller's own v2 group path (`/user.slice/...`), from `/proc/self/cgroup`'s text.
pub fn own_path(proc_cgroup: &str) -> Option<PathBuf> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim()))
}

/// Whether this process may create groups in `dir` and move processes into them: write access
/// (with the effective ids) to the directory and to its `cgroup.procs`.
pub fn writable(dir: &Path) -> bool {
    let w = |p: &Path| {
        nix::unistd::faccessat(
            nix::fcntl::AT_FDCWD,
            p,
            AccessFlags::W_OK,
            nix::fcntl::AtFlags::AT_EACCESS,
        )
        .is_ok()
    };
    w(dir) && w(&dir.join("cgroup.procs"))
}

/// The controllers `dir` offers its children (`cgroup.controllers`).
fn available(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// One asked limit: how it is named to the user, and the controller it needs.
struct Asked {
    what: String,
    controller: &'static str,
}

/// Every limit of `l` that needs a controller, named as `runner run`'s options name them.
fn asked(l: &Limits) -> Vec<Asked> {
    let mut v = Vec::new();
    let mut push = |what: String, controller| v.push(Asked { what, controller });
    if let Some(m) = l.memory {
        push(format!("--memory {}", human_bytes(m)), "memory");
    }
    if let Some(q) = l.cpu {
        push(format!("--cpus {}", cpus(q.quota_us, q.period_us)), "cpu");
    }
    if let Some(p) = l.pids {
        push(format!("--pids-limit {p}"), "pids");
    }
    if let Some(c) = &l.cpuset_cpus {
        push(format!("--cpuset-cpus {c}"), "cpuset");
    }
    if let Some(m) = &l.cpuset_mems {
        push(format!("cpuset mems {m}"), "cpuset");
    }
    if let Some(s) = l.cpu_shares {
        push(format!("cpu shares {s}"), "cpu");
    }
    if let Some(w) = l.io_weight {
        push(format!("--io-weight {w}"), "io");
    }
    v
}

/// `67108864` as `64m`, as the options take it; bytes that are no whole unit stay bytes.
fn human_bytes(b: u64) -> String {
    for (shift, unit) in [(30, "g"), (20, "m"), (10, "k")] {
        if b != 0 && b % (1 << shift) == 0 {
            return format!("{}{unit}", b >> shift);
        }
    }
    b.to_string()
}

/// A CPU quota as `--cpus` takes it (`1.5`).
fn cpus(quota: u64, period: u64) -> String {
    let s = format!("{:.3}", quota as f64 / period.max(1) as f64);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Every limit asked, as not applied for `why` (no delegated group to write).
pub fn none_applied(limits: &Limits, why: &str) -> Vec<NotApplied> {
    let mut out: Vec<NotApplied> = asked(limits)
        .into_iter()
        .map(|a| NotApplied {
            what: a.what,
            why: why.to_string(),
        })
        .collect();
    for w in &limits.v1_files {
        out.push(NotApplied {
            what: w.field.to_string(),
            why: why.to_string(),
        });
    }
    for (file, _) in &limits.v2_files {
        out.push(NotApplied {
            what: format!("linux.resources.unified {file}"),
            why: why.to_string(),
        });
    }
    out
}

/// Split `limits` into what a group under `parent` can apply (its controllers are offered in
/// `parent`'s `cgroup.controllers`) and what it cannot, with the reason. Device rules are left
/// out without a word: without root no device program may be loaded, and the devices of a
/// rootless container are the host's own nodes, bound (it gets no CAP_MKNOD).
pub fn split(parent: &Path, limits: &Limits) -> (Limits, Vec<NotApplied>) {
    let offered = available(parent);
    let has = |c: &str| offered.iter().any(|o| o == c);
    let missing = |what: String, controller: &str| NotApplied {
        what,
        why: format!(
            "the {controller} controller is not delegated to {} (available: {})",
            parent.display(),
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(" ")
            }
        ),
    };
    let mut applied = Limits::default();
    let mut not = Vec::new();
    for a in asked(limits) {
        if !has(a.controller) {
            not.push(missing(a.what, a.controller));
        }
    }
    if has("memory") {
        applied.memory = limits.memory;
    }
    if has("cpu") {
        applied.cpu = limits.cpu;
        applied.cpu_shares = limits.cpu_shares;
    }
    if has("pids") {
        applied.pids = limits.pids;
    }
    if has("cpuset") {
        applied.cpuset_cpus = limits.cpuset_cpus.clone();
        applied.cpuset_mems = limits.cpuset_mems.clone();
    }
    if has("io") {
        applied.io_weight = limits.io_weight;
    }
    // The OCI interface's v1 writes: hugetlb has a v2 file of its own; the others are v1's.
    for w in &limits.v1_files {
        let v2_file = (w.controller == "hugetlb")
            .then(|| w.file.strip_suffix(".limit_in_bytes"))
            .flatten()
            .map(|f| format!("{f}.max"));
        match v2_file {
            Some(f) if has("hugetlb") => applied.v2_files.push((f, w.value.clone())),
            Some(_) => not.push(missing(w.field.to_string(), "hugetlb")),
            None => not.push(NotApplied {
                what: w.field.to_string(),
                why: format!(
                    "a cgroup v1 setting, and the delegated subtree {} is cgroup v2",
                    parent.display()
                ),
            }),
        }
    }
    for (file, value) in &limits.v2_files {
        let controller = file.split('.').next().unwrap_or_default();
        if controller == "cgroup" || has(controller) {
            applied.v2_files.push((file.clone(), value.clone()));
        } else {
            not.push(missing(
                format!("linux.resources.unified {file}"),
                controller,
            ));
        }
    }
    (applied, not)
}

/// The controllers a group needs enabled in its parent for `applied` (the v2 writer's list,
/// and the controllers of the v2 files, such as `hugetlb`).
fn controllers_for(applied: &Limits) -> Vec<String> {
    let mut out: Vec<String> = v2::needed_controllers(applied)
        .into_iter()
        .map(str::to_string)
        .collect();
    for (file, _) in &applied.v2_files {
        let c = file.split('.').next().unwrap_or_default().to_string();
        if c != "cgroup" && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Enable `controllers` in `dir`'s `cgroup.subtree_control`. A group with processes of its own
/// cannot (EBUSY): its processes move into [`LEAF`] first.
fn enable(dir: &Path, controllers: &[String]) -> Result<()> {
    let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let to_enable: Vec<String> = controllers
        .iter()
        .filter(|c| !v2::lists(&enabled, c))
        .map(|c| format!("+{c}"))
        .collect();
    if to_enable.is_empty() {
        return Ok(());
    }
    let own = super::procs(dir);
    if !own.is_empty() {
        move_to_leaf(dir, &own)?;
    }
    super::write_file(dir, "cgroup.subtree_control", &to_enable.join(" "))
}

/// Move `pids` of `dir` into `dir/LEAF` (made if absent). A process that exited meanwhile is
/// no error.
fn move_to_leaf(dir: &Path, pids: &[Pid]) -> Result<()> {
    let leaf = dir.join(LEAF);
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating cgroup {}", leaf.display())),
    }
    tracing::info!(
        "moving {} process(es) of {} into {} (a group with processes cannot enable controllers)",
        pids.len(),
        dir.display(),
        leaf.display()
    );
    for pid in pids {
        match super::write_procs(&leaf, *pid) {
            Ok(()) => {}
            Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Create the group `name` (relative, one or more components) under the delegated group
/// `parent` with the limits it can apply, and say which it cannot.
pub fn create_under(parent: &Path, name: &Path, limits: &Limits) -> Result<Delegation> {
    if name.as_os_str().is_empty()
        || name
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        bail!(
            "invalid cgroup path {}: it must name a group below {} without '..'",
            name.display(),
            parent.display()
        );
    }
    let name_str = name.to_str().context("the cgroup path is not UTF-8")?;
    let (applied, not_applied) = split(parent, limits);
    enable(parent, &controllers_for(&applied))?;
    let cgroup = v2::Cgroup::create(parent, name_str, &applied)?;
    Ok(Delegation {
        cgroup: Some(cgroup),
        no_cgroup: None,
        not_applied,
    })
}

/// Where a run without root may make its group `path` (relative: under the caller's own group;
/// absolute: from the root of the cgroup2 hierarchy, as OCI `cgroupsPath`), given the texts of
/// `/proc/self/mountinfo` and `/proc/self/cgroup`: the nearest existing group at or above the
/// target if this process may write it, with the rest of the path to create; otherwise why not.
pub fn locate(
    mountinfo: &str,
    proc_cgroup: &str,
    path: &Path,
) -> std::result::Result<(PathBuf, PathBuf), String> {
    let Some((mount_point, mount_root)) = cgroup2_mount(mountinfo) else {
        return Err("no cgroup2 filesystem is mounted".to_string());
    };
    let target_path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let Some(mut own) = own_path(proc_cgroup) else {
            return Err("no cgroup2 (0::) line in /proc/self/cgroup".to_string());
        };
        // A leaf that an earlier run moved the user's processes into: the delegated group is
        // its parent (else every run would nest one level deeper).
        if own.file_name().is_some_and(|n| n == LEAF) {
            own.pop();
        }
        own.join(path)
    };
    let Some(target) = group_dir(&mount_point, &mount_root, &target_path) else {
        return Err(format!(
            "{} is outside the cgroup2 mount {}",
            target_path.display(),
            mount_point.display()
        ));
    };
    let Some(base) = target
        .ancestors()
        .skip(1)
        .take_while(|a| a.starts_with(&mount_point))
        .find(|a| a.is_dir())
    else {
        return Err(format!("{} has no existing parent group", target.display()));
    };
    if !writable(base) {
        return Err(format!(
            "{} is not delegated to this user (no write access to it and its cgroup.procs)",
            base.display()
        ));
    }
    let rest = target
        .strip_prefix(base)
        .expect("an ancestor")
        .to_path_buf();
    Ok((base.to_path_buf(), rest))
}

/// A group for a run without root: under the delegated subtree that holds `path` when this
/// process may write it (see [`locate`]); else none, every asked limit named as not applied.
pub fn create(path: &Path, limits: &Limits) -> Result<Delegation> {
    // `..` would climb out of the cgroup2 mount (to any directory of the user's that has a
    // `cgroup.procs` file), and "." names nothing.
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::RootDir))
        || path.components().all(|c| c == Component::RootDir)
    {
        bail!(
            "invalid cgroup path {}: it must name a group without '..'",
            path.display()
        );
    }
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let own = fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    match locate(&mountinfo, &own, path) {
        Ok((base, rest)) => create_under(&base, &rest, limits),
        Err(why) => {
            tracing::info!("no delegated cgroup: {why}");
            Ok(Delegation {
                cgroup: None,
                not_applied: none_applied(limits, &format!("no cgroup to write: {why}")),
                no_cgroup: Some(why),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CpuQuota, V1Write};
    use super::*;

    const HYBRID: &str = "\
35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
41 35 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn finds_the_cgroup2_mount_and_the_own_group() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(("/sys/fs/cgroup/unified".into(), "/".into()))
        );
        assert_eq!(
            cgroup2_mount("42 35 0:39 / /x rw - cgroup cgroup rw\n"),
            None
        );
        assert_eq!(
            own_path("4:memory:/a\n0::/user.slice/u.scope\n"),
            Some("/user.slice/u.scope".into())
        );
        assert_eq!(
            group_dir(Path::new("/m"), Path::new("/"), Path::new("/a/b")),
            Some("/m/a/b".into())
        );
        // A mount of a subtree shows only what is below it.
        assert_eq!(
            group_dir(Path::new("/m"), Path::new("/a"), Path::new("/a/b")),
            Some("/m/b".into())
        );
        assert_eq!(
            group_dir(Path::new("/m"), Path::new("/a"), Path::new("/c")),
            None
        );
    }

    #[test]
    fn a_group_this_process_cannot_write_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let mountinfo = format!(
            "41 35 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let deleg = tmp.path().join("deleg");
        fs::create_dir(&deleg).unwrap();
        fs::write(deleg.join("cgroup.procs"), "").unwrap();
        // Writable (the tests run as root, or as the temp dir's owner): the group is found,
        // with the rest of the path to create.
        assert_eq!(
            locate(&mountinfo, "0::/deleg\n", Path::new("runner-1")),
            Ok((deleg.clone(), "runner-1".into()))
        );
        assert_eq!(
            locate(&mountinfo, "0::/deleg/runner-leaf\n", Path::new("runner-1")),
            Ok((deleg.clone(), "runner-1".into())),
            "from the leaf an earlier run made, beside it"
        );
        assert_eq!(
            locate(&mountinfo, "0::/\n", Path::new("/deleg/pod/ctr")),
            Ok((deleg.clone(), "pod/ctr".into()))
        );
        // No cgroup.procs to write: not a group this process may use.
        fs::remove_file(deleg.join("cgroup.procs")).unwrap();
        let err = locate(&mountinfo, "0::/deleg\n", Path::new("runner-1")).unwrap_err();
        assert!(
            err.contains("not delegated") && err.contains("deleg"),
            "{err}"
        );
        assert!(locate("", "0::/\n", Path::new("x"))
            .unwrap_err()
            .contains("no cgroup2"));
        assert!(locate(&mountinfo, "", Path::new("x"))
            .unwrap_err()
            .contains("0::"));
    }

    fn limits() -> Limits {
        Limits {
            memory: Some(64 << 20),
            cpu: Some(CpuQuota {
                quota_us: 150_000,
                period_us: 100_000,
            }),
            pids: Some(32),
            devices: crate::cgroup::docker_device_rules(),
            v1_files: vec![
                V1Write {
                    controller: "hugetlb",
                    file: "hugetlb.2MB.limit_in_bytes".into(),
                    value: "4194304".into(),
                    field: "linux.resources.hugepageLimits",
                },
                V1Write {
                    controller: "memory",
                    file: "memory.swappiness".into(),
                    value: "0".into(),
                    field: "linux.resources.memory.swappiness",
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn only_the_offered_controllers_limits_are_applied_and_the_rest_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("cgroup.controllers"), "hugetlb pids\n").unwrap();
        let (applied, not) = split(d, &limits());
        assert_eq!(applied.pids, Some(32));
        assert_eq!(applied.memory, None);
        assert!(applied.devices.is_empty(), "no device program without root");
        assert_eq!(
            applied.v2_files,
            [("hugetlb.2MB.max".to_string(), "4194304".to_string())]
        );
        let text: Vec<String> = not.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[0],
            format!(
                "--memory 64m not applied: the memory controller is not delegated to {} \
                 (available: hugetlb pids)",
                d.display()
            )
        );
        assert!(text[1].starts_with("--cpus 1.5 not applied: the cpu controller"));
        assert!(
            text[2].starts_with("linux.resources.memory.swappiness not applied: a cgroup v1"),
            "{text:?}"
        );
        assert_eq!(text.len(), 3, "{text:?}");
    }

    #[test]
    fn a_group_with_processes_moves_them_to_a_leaf_before_enabling_controllers() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        fs::write(d.join("cgroup.controllers"), "hugetlb pids\n").unwrap();
        // Our own pid: a temp dir is no cgroup, so the "move" is a plain write of the file.
        let me = std::process::id().to_string();
        fs::write(d.join("cgroup.procs"), format!("{me}\n")).unwrap();
        let got = create_under(d, Path::new("runner-x"), &limits()).unwrap();
        let cg = got.cgroup.unwrap();
        assert_eq!(cg.dir(), d.join("runner-x"));
        assert_eq!(
            fs::read_to_string(d.join(LEAF).join("cgroup.procs")).unwrap(),
            me
        );
        assert_eq!(
            fs::read_to_string(d.join("cgroup.subtree_control")).unwrap(),
            "+pids +hugetlb"
        );
        assert_eq!(
            fs::read_to_string(cg.dir().join("hugetlb.2MB.max")).unwrap(),
            "4194304"
        );
        assert_eq!(fs::read_to_string(cg.dir().join("pids.max")).unwrap(), "32");
        assert!(!cg.dir().join("memory.max").exists());
        assert_eq!(got.not_applied.len(), 3);
        // Nothing to enable: nobody moves.
        let tmp2 = tempfile::tempdir().unwrap();
        fs::write(tmp2.path().join("cgroup.procs"), format!("{me}\n")).unwrap();
        let l = Limits {
            memory: Some(1 << 30),
            ..Default::default()
        };
        let got = create_under(tmp2.path(), Path::new("c"), &l).unwrap();
        assert!(!tmp2.path().join(LEAF).exists());
        assert_eq!(got.not_applied[0].what, "--memory 1g");
        assert!(got.not_applied[0].why.contains("available: none"));
        // A name that climbs out is refused.
        assert!(create_under(tmp2.path(), Path::new("../x"), &l).is_err());
    }

    #[test]
    fn a_path_that_climbs_is_refused_before_anything_is_looked_up() {
        for bad in ["/deleg/../../../tmp/x", "../x", "/", "./x"] {
            let err = format!(
                "{:#}",
                create(Path::new(bad), &Limits::default()).unwrap_err()
            );
            assert!(err.contains("invalid cgroup path"), "{bad}: {err}");
        }
    }

    #[test]
    fn nothing_writable_names_every_limit() {
        let not = none_applied(&limits(), "no cgroup to write: X");
        let what: Vec<&str> = not.iter().map(|n| n.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "--memory 64m",
                "--cpus 1.5",
                "--pids-limit 32",
                "linux.resources.hugepageLimits",
                "linux.resources.memory.swappiness"
            ]
        );
        assert_eq!(human_bytes(1000), "1000");
        assert_eq!(cpus(50_000, 100_000), "0.5");
        assert_eq!(cpus(200_000, 100_000), "2");
    }
}
