//! Container directories in the store, their state file, and their names.
//!
//! ```text
//! STORE/containers/<id>/upper/        the writable layer (kept after exit unless --rm)
//! STORE/containers/<id>/state.json    what `ps`, `rm` and `commit` read
//! STORE/containers/names/<name>       symlink to ../<id>: names are unique by construction
//! RUN/<id>/init/                      the init layer: hostname, hosts, resolv.conf, mount points
//! RUN/<id>/rootfs/                    where the union is mounted while the container runs
//! RUN/<id>/unionfs.log                output of `unionfs mount` (unionfs-daemon.log: the daemon's)
//! ```
//!
//! RUN is `STORE/containers` for root, and a user's runtime directory in a run without root
//! ([`crate::runtime_dir`]).
#![forbid(unsafe_code)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Lifecycle of a container as recorded in its state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The image directory the container was started from.
    pub image_dir: PathBuf,
    /// The image's layer directories, bottom first (what `commit` stacks the new layer on).
    pub layers: Vec<PathBuf>,
    pub command: Vec<String>,
    /// Unix seconds.
    pub created: u64,
    pub status: Status,
    /// The `runner` process supervising it, while running.
    pub runner_pid: Option<i32>,
    /// The container's first process, as the host sees it.
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    /// The cgroup directories, so a crashed runner's group can be removed by `rm`.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

/// The containers directory of a store.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
    /// Where the runtime part of each container goes (`root` unless a user's run says else).
    run_root: PathBuf,
}

/// One container's directories: in the store, and its runtime part (the same for root).
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    pub dir: PathBuf,
    pub run: PathBuf,
}

impl Containers {
    pub fn new(store_root: &Path) -> Containers {
        let root = store_root.join("containers");
        Containers {
            run_root: root.clone(),
            root,
        }
    }

    /// The containers of a store, with their runtime part where this run keeps it (a user's
    /// runtime directory in a run without root; beside the rest for root).
    pub fn for_run(store_root: &Path) -> Result<Containers> {
        Ok(match crate::runtime_dir::containers_root()? {
            Some(run) => Containers::with_run_root(store_root, &run),
            None => Containers::new(store_root),
        })
    }

    /// The containers of a store whose runtime parts are in `run_root`.
    pub fn with_run_root(store_root: &Path, run_root: &Path) -> Containers {
        Containers {
            root: store_root.join("containers"),
            run_root: run_root.to_path_buf(),
        }
    }

    /// The directories of container `id`.
    pub fn dir(&self, id: &str) -> ContainerDir {
        ContainerDir {
            id: id.to_string(),
            dir: self.root.join(id),
            run: self.run_root.join(id),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn names_dir(&self) -> PathBuf {
        self.root.join("names")
    }

    /// Make a new container directory (with `upper`, `init` and `rootfs`) and claim its name.
    /// Returns the directory and the name (the short id when none was asked for).
    pub fn create(&self, name: Option<&str>) -> Result<(ContainerDir, String)> {
        let id = random_id()?;
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| id[..12].to_string());
        fs::create_dir_all(self.names_dir())
            .with_context(|| format!("creating {}", self.names_dir().display()))?;
        let link = self.names_dir().join(&name);
        // A name whose container directory is gone is free again.
        if fs::symlink_metadata(&link).is_ok() && !link.exists() {
            let _ = fs::remove_file(&link);
        }
        std::os::unix::fs::symlink(Path::new("..").join(&id), &link).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                let owner = fs::read_link(&link).unwrap_or_default();
                anyhow::anyhow!(
                    "the container name {name:?} is already in use by container {}: remove it with `runner rm {name}` or choose another --name",
                    owner.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
                )
            } else {
                anyhow::Error::new(e).context(format!("creating {}", link.display()))
            }
        })?;
        let c = self.dir(&id);
        let made = (|| -> Result<()> {
            fs::create_dir(&c.dir).with_context(|| format!("creating {}", c.dir.display()))?;
            if c.run != c.dir {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.run_root)
                    .with_context(|| format!("creating {}", self.run_root.display()))?;
                fs::create_dir(&c.run).with_context(|| format!("creating {}", c.run.display()))?;
            }
            for d in [c.upper(), c.init(), c.rootfs()] {
                fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = fs::remove_file(&link);
            let _ = c.remove();
            return Err(e);
        }
        Ok((c, name))
    }

    /// Find a container by name, or by id or a unique id prefix.
    pub fn find(&self, name_or_id: &str) -> Result<ContainerDir> {
        let link = self.names_dir().join(name_or_id);
        if !name_or_id.contains('/') && !name_or_id.is_empty() {
            if let Ok(target) = fs::read_link(&link) {
                if let Some(id) = target.file_name().and_then(|f| f.to_str()) {
                    let c = self.dir(id);
                    if c.dir.is_dir() {
                        return Ok(c);
                    }
                }
            }
        }
        let matches: Vec<ContainerDir> = self
            .ids()?
            .into_iter()
            .filter(|id| id.starts_with(name_or_id) && !name_or_id.is_empty())
            .map(|id| self.dir(&id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one match")),
            0 => bail!("no such container: {name_or_id}"),
            n => bail!("{n} containers have ids starting with {name_or_id:?}: give more of the id"),
        }
    }

    /// Ids of every container directory.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.root.display())),
        };
        for entry in rd {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Drop the name link of a container (when its directory is removed).
    pub fn release_name(&self, name: &str) {
        let _ = fs::remove_file(self.names_dir().join(name));
    }
}

impl ContainerDir {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn init(&self) -> PathBuf {
        self.run.join("init")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.run.join("rootfs")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// Output of the `unionfs mount` command.
    pub fn log_file(&self) -> PathBuf {
        self.run.join("unionfs.log")
    }
    /// The union daemon's log while it serves the container.
    pub fn daemon_log_file(&self) -> PathBuf {
        self.run.join("unionfs-daemon.log")
    }
    /// slirp4netns's output (`--net slirp4netns`).
    pub fn slirp_log_file(&self) -> PathBuf {
        self.run.join("slirp4netns.log")
    }

    /// Remove the runtime part, then the rest (the union must be unmounted).
    pub fn remove(&self) -> Result<()> {
        for d in [&self.run, &self.dir] {
            match fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", d.display())),
            }
        }
        Ok(())
    }

    pub fn load(&self) -> Result<State> {
        let f = self.state_file();
        let text = fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", f.display()))
    }

    /// Write the state atomically (temporary file, then rename).
    pub fn save(&self, state: &State) -> Result<()> {
        let tmp = self.dir.join(".state.json.tmp");
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
        fs::rename(&tmp, self.state_file()).with_context(|| format!("renaming {}", tmp.display()))
    }
}

/// 64 random hex digits, as docker's container ids.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a process with this pid runs (a zombie, dead but not yet reaped, does not).
pub fn pid_alive(pid: i32) -> bool {
    matches!(crate::oci::state::proc_start(pid), Some((_, false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(c: &ContainerDir, name: &str) -> State {
        State {
            id: c.id.clone(),
            name: name.into(),
            image: "demo".into(),
            image_dir: "/img".into(),
            layers: vec!["/l/1".into()],
            command: vec!["sh".into()],
            created: now(),
            status: Status::Created,
            runner_pid: None,
            pid: None,
            exit_code: None,
            cgroups: vec![],
        }
    }

    #[test]
    fn create_find_and_names_are_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let cs = Containers::new(tmp.path());
        let (c, name) = cs.create(Some("web")).unwrap();
        assert_eq!(name, "web");
        assert!(c.upper().is_dir() && c.init().is_dir() && c.rootfs().is_dir());
        let err = cs.create(Some("web")).unwrap_err().to_string();
        assert!(err.contains("already in use"), "{err}");
        assert_eq!(cs.ids().unwrap(), std::slice::from_ref(&c.id));

        let s = state(&c, &name);
        c.save(&s).unwrap();
        assert_eq!(cs.find("web").unwrap().load().unwrap(), s);
        assert_eq!(cs.find(&c.id[..6]).unwrap().id, c.id);
        assert!(cs
            .find("nope")
            .unwrap_err()
            .to_string()
            .contains("no such container"));

        // Without a name, the short id is the name.
        let (d, dname) = cs.create(None).unwrap();
        assert_eq!(dname, d.id[..12]);

        // A removed container's name is free again.
        c.remove().unwrap();
        assert!(!c.dir.exists());
        cs.create(Some("web")).unwrap();
        // Also when only the store's directory went.
        fs::remove_dir_all(cs.find("web").unwrap().dir).unwrap();
        cs.create(Some("web")).unwrap();
    }

    #[test]
    fn a_users_runtime_part_is_apart_from_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("xdg/runner/containers");
        let cs = Containers::with_run_root(&tmp.path().join("store"), &run);
        let (c, _) = cs.create(Some("web")).unwrap();
        assert_eq!(c.dir, tmp.path().join("store/containers").join(&c.id));
        assert_eq!(c.rootfs(), run.join(&c.id).join("rootfs"));
        assert!(c.upper().is_dir() && c.init().is_dir() && c.rootfs().is_dir());
        assert!(c.init().starts_with(&run) && c.log_file().starts_with(&run));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&run).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        c.save(&state(&c, "web")).unwrap();
        assert!(c.state_file().starts_with(tmp.path().join("store")));
        let found = cs.find("web").unwrap();
        assert_eq!(
            (found.dir.clone(), found.run.clone()),
            (c.dir.clone(), c.run.clone())
        );
        found.remove().unwrap();
        assert!(!c.dir.exists() && !c.run.exists());
    }
}
