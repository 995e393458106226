//! Where an OCI container's state lives (`ROOT/ID/`), and its status as the runtime-spec
//! defines it: `created` (the process waits on the exec fifo), `running`, `stopped`.
//!
//! The status is not stored but observed: the process (pid plus its start time, so a recycled
//! pid is never taken for it) and the exec fifo, which `start` removes.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::oci::bundle::{Hook, OCI_VERSION};

/// The default `--root`, as runc's is `/run/runc`.
pub const DEFAULT_ROOT: &str = "/run/runner";

/// The runtime-spec statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    /// Frozen by `pause` (runc's status; not one of the runtime-spec's four).
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// A union root this runtime mounted (and unmounts at `delete`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnionRoot {
    pub mountpoint: PathBuf,
    pub upper: PathBuf,
}

/// What `create` records for the later commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The container's first process, as the host sees it; 0 before it exists.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`), to tell it from a recycled pid.
    pub pid_start: u64,
    /// RFC 3339.
    pub created: String,
    pub annotations: HashMap<String, String>,
    pub cgroup_dirs: Vec<PathBuf>,
    pub union: Option<UnionRoot>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
    /// Whether the seccomp filter and no_new_privs of the bundle apply to `exec` processes.
    pub config_path: PathBuf,
}

/// The `state` output (runtime-spec "State", plus runc's `created` and `owner`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateJson {
    pub oci_version: String,
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub bundle: PathBuf,
    #[serde(skip_serializing_if = "HashMap::is_empty", default)]
    pub annotations: HashMap<String, String>,
    pub created: String,
    pub owner: String,
}

/// The state directory root.
#[derive(Debug, Clone)]
pub struct Root {
    pub dir: PathBuf,
}

/// Container ids as runc accepts them: letters, digits, `_+-.`, not starting with `.`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if !ok {
        bail!("invalid container id {id:?}: use letters, digits and _+-. (not starting with '.')");
    }
    Ok(())
}

impl Root {
    pub fn new(dir: Option<&Path>) -> Root {
        Root {
            dir: dir
                .map(Path::to_path_buf)
                .or_else(crate::rootless::oci_state_root)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        }
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Make `ROOT/ID` (it must not exist: the id is taken otherwise).
    pub fn create(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("creating the state root {}", self.dir.display()))?;
        let dir = self.container_dir(id);
        // 0700 as runc's: the state names the bundle, the pid and the exec fifo.
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("container {id:?} already exists")
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        Ok(dir)
    }

    /// The saved state of `id`; "does not exist" (the wording engines look for) when missing.
    pub fn load(&self, id: &str) -> Result<Saved> {
        validate_id(id)?;
        let path = self.container_dir(id).join("state.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("container {id:?} does not exist")
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Save atomically (write a temporary file, rename it over).
    pub fn save(&self, s: &Saved) -> Result<()> {
        let dir = self.container_dir(&s.id);
        let tmp = dir.join("state.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(s)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, dir.join("state.json"))
            .with_context(|| format!("saving {}", dir.display()))
    }

    /// Every container id under the root.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.dir.display())),
        };
        for e in rd {
            let e = e?;
            if e.path().join("state.json").is_file() {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    /// An exclusive lock on one container, so that concurrent commands take turns.
    pub fn lock(&self, id: &str) -> Result<Flock<fs::File>> {
        let path = self.container_dir(id).join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", path.display()))
    }
}

/// The exec fifo of a container directory.
pub fn fifo_path(dir: &Path) -> PathBuf {
    dir.join("exec.fifo")
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`) and whether it is a zombie.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// Whether the saved process still lives (not a zombie, not a recycled pid).
pub fn process_alive(s: &Saved) -> bool {
    s.pid > 0 && matches!(proc_start(s.pid), Some((start, false)) if start == s.pid_start)
}

/// The status of a saved container.
pub fn status(root: &Root, s: &Saved) -> Status {
    if s.pid <= 0 {
        return Status::Creating;
    }
    if !process_alive(s) {
        return Status::Stopped;
    }
    if fifo_path(&root.container_dir(&s.id)).exists() {
        Status::Created
    } else if is_frozen(s) {
        Status::Paused
    } else {
        Status::Running
    }
}

/// The file that freezes the container's cgroup and its (frozen, thawed) values: v1's
/// `freezer.state`, or v2's `cgroup.freeze`.
pub fn freezer(s: &Saved) -> Option<(PathBuf, &'static str, &'static str)> {
    s.cgroup_dirs.iter().find_map(|d| {
        if d.join("freezer.state").exists() {
            Some((d.join("freezer.state"), "FROZEN", "THAWED"))
        } else if d.join("cgroup.freeze").exists() {
            Some((d.join("cgroup.freeze"), "1", "0"))
        } else {
            None
        }
    })
}

fn is_frozen(s: &Saved) -> bool {
    freezer(s).is_some_and(|(file, frozen, _)| {
        fs::read_to_string(file).is_ok_and(|t| t.trim() == frozen || t.trim() == "FREEZING")
    })
}

/// The `state` JSON of a saved container.
pub fn state_json(root: &Root, s: &Saved) -> StateJson {
    let status = status(root, s);
    StateJson {
        oci_version: OCI_VERSION.to_string(),
        id: s.id.clone(),
        status,
        pid: if status == Status::Stopped { 0 } else { s.pid },
        bundle: s.bundle.clone(),
        annotations: s.annotations.clone(),
        created: s.created.clone(),
        owner: String::new(),
    }
}

/// Now, in RFC 3339 with nanoseconds (UTC), as runc writes `created`.
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2+3.4").is_ok());
        assert!(validate_id(".hidden").is_err());
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("..").is_err());
        assert!(validate_id("").is_err());
    }

    #[test]
    fn created_is_rfc3339_utc_with_nanoseconds() {
        let t = rfc3339_now();
        assert_eq!(t.len(), "2026-11-30T23:59:59.000000000Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(humantime::parse_rfc3339(&t).is_ok(), "{t}");
    }

    #[test]
    fn own_process_start_time_is_read() {
        let (start, zombie) = proc_start(std::process::id() as i32).unwrap();
        assert!(start > 0 && !zombie);
    }

    #[test]
    fn state_json_has_the_spec_fields() {
        let root = Root::new(Some(Path::new("/nonexistent-root")));
        let s = Saved {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            pid: 0,
            pid_start: 0,
            created: rfc3339_now(),
            annotations: HashMap::new(),
            cgroup_dirs: vec![],
            union: None,
            poststart: vec![],
            poststop: vec![],
            config_path: "/b/config.json".into(),
        };
        let v = serde_json::to_value(state_json(&root, &s)).unwrap();
        assert_eq!(v["ociVersion"], OCI_VERSION);
        assert_eq!(v["status"], "creating");
        assert_eq!(v["bundle"], "/b");
        assert!(v.get("annotations").is_none());
    }
}
