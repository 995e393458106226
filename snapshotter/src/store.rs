//! The synchronous core: snapshots on disk and the rules of their lifecycle, as containerd's
//! `snapshots.Snapshotter` states them (`snapshots/snapshotter.go`):
//!
//! - `prepare(key, parent)` makes an active (writable) snapshot on top of a committed `parent`
//!   (or of nothing); `view(key, parent)` the same, read-only;
//! - `commit(name, key)` turns the active snapshot `key` into the committed snapshot `name`,
//!   which can then be a parent; `key` is gone afterwards;
//! - `remove(key)` removes a snapshot that is nobody's parent.
//!
//! Layout under the root: `metadata.json` (see [`crate::meta`]) and `snapshots/<id>/fs` (the
//! snapshot's own tree, a union's upper directory or lower branch) beside `snapshots/<id>/work`
//! (unionfs's work directory). A snapshot's directories are built under `snapshots/new-<id>` and
//! renamed into place before the metadata names it; the metadata forgets a snapshot before its
//! directory goes (renamed to `removed-<id>`, then deleted). Whatever a crash leaves that the
//! metadata does not name is deleted when the store is opened again.
//!
//! Every change writes a new metadata file first and only then replaces the in-memory copy, so a
//! failed write leaves both as they were.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::filter::{Fields, Filters};
use crate::meta::{Kind, Meta, Record, Usage};
use crate::mounts::{self, Access, Dirs, MountSpec};
use crate::usage::disk_usage;

const SNAPSHOTS: &str = "snapshots";

/// What `stat` and `walk` tell about a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    /// The parent's name, empty when there is none.
    pub parent: String,
    pub kind: Kind,
    pub labels: HashMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

fn info(name: &str, r: &Record) -> Info {
    Info {
        name: name.to_string(),
        parent: r.parent.clone().unwrap_or_default(),
        kind: r.kind,
        labels: r.labels.clone(),
        created: r.created,
        updated: r.updated,
    }
}

pub struct Store {
    root: PathBuf,
    meta: Mutex<Meta>,
}

impl Store {
    /// Opens (creating it if needed) the store in `root`, and deletes what an interrupted
    /// operation left behind.
    pub fn open(root: &Path) -> Result<Store> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(SNAPSHOTS))
            .map_err(Error::io("creating", root.join(SNAPSHOTS)))?;
        let root = fs::canonicalize(root).map_err(Error::io("resolving", root))?;
        if let Some(why) = mounts::unusable_root(&root) {
            return Err(Error::InvalidArgument(format!("snapshotter root {why}")));
        }
        let meta = Meta::load(&root)?;
        let store = Store {
            root,
            meta: Mutex::new(meta),
        };
        store.remove_orphans(true)?;
        Ok(store)
    }

    /// containerd's `Cleanup`: deletes directories no snapshot owns (what a crash or a failed
    /// delete left), as opening the store does.
    pub fn cleanup(&self) -> Result<()> {
        self.remove_orphans(false)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, Meta> {
        // The in-memory metadata is replaced only after a successful save, never half-changed,
        // so a panic elsewhere while the lock was held leaves it consistent.
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `snapshots/NAME` under the root: a snapshot's directory (NAME its id), or a staging
    /// (`new-ID`) or doomed (`removed-ID`) one.
    fn entry(&self, name: impl std::fmt::Display) -> PathBuf {
        self.root.join(SNAPSHOTS).join(name.to_string())
    }

    fn dirs(&self, id: u64) -> Dirs {
        let base = self.entry(id);
        Dirs {
            fs: base.join("fs"),
            work: base.join("work"),
        }
    }

    /// Deletes what the metadata does not name; `at_open` also the `removed-ID` directories
    /// (while serving, a `remove` may still be deleting its own).
    fn remove_orphans(&self, at_open: bool) -> Result<()> {
        let meta = self.lock();
        let known: std::collections::HashSet<String> =
            meta.snapshots.values().map(|r| r.id.to_string()).collect();
        let dir = self.root.join(SNAPSHOTS);
        for entry in fs::read_dir(&dir).map_err(Error::io("reading directory", &dir))? {
            let entry = entry.map_err(Error::io("reading directory", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) && (at_open || !name.starts_with("removed-")) {
                tracing::info!(path = %entry.path().display(), "removing what an interrupted operation left");
                fs::remove_dir_all(entry.path()).map_err(Error::io("removing", entry.path()))?;
            }
        }
        let _ = fs::remove_file(self.root.join(format!("{}.tmp", crate::meta::FILE)));
        for (key, r) in &meta.snapshots {
            if !self.dirs(r.id).fs.is_dir() {
                tracing::warn!(%key, id = r.id, "the metadata names a snapshot whose directory is missing");
            }
        }
        Ok(())
    }

    /// Saves `next` and makes it the current metadata.
    fn install(&self, current: &mut Meta, next: Meta) -> Result<()> {
        next.save(&self.root)?;
        *current = next;
        Ok(())
    }

    pub fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        self.create(Kind::Active, key, parent, labels)
    }

    pub fn view(
        &self,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<MountSpec>> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("an empty snapshot key".into()));
        }
        let mut meta = self.lock();
        if meta.snapshots.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let parent = (!parent.is_empty()).then(|| parent.to_string());
        if let Some(p) = &parent {
            match meta.snapshots.get(p) {
                None => return Err(Error::NotFound(p.clone())),
                Some(r) if r.kind != Kind::Committed => {
                    return Err(Error::InvalidArgument(format!(
                        "parent {p:?} is {}, not committed",
                        r.kind.as_str()
                    )))
                }
                Some(_) => {}
            }
        }
        let id = meta.next_id;
        let base = self.entry(id);
        let staging = self.entry(format!("new-{id}"));
        let built = self.build_dirs(
            &staging,
            parent.as_deref().and_then(|p| meta.snapshots.get(p)),
        );
        if let Err(e) = built.and_then(|()| {
            fs::rename(&staging, &base).map_err(Error::io("renaming into place", &base))
        }) {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        let now = SystemTime::now();
        let mut next = meta.clone();
        next.next_id = id + 1;
        next.snapshots.insert(
            key.to_string(),
            Record {
                id,
                kind,
                parent,
                labels,
                created: now,
                updated: now,
                usage: None,
            },
        );
        if let Err(e) = self.install(&mut meta, next) {
            let _ = fs::remove_dir_all(&base);
            return Err(e);
        }
        tracing::debug!(%key, id, kind = kind.as_str(), "created");
        self.mounts_locked(&meta, key)
    }

    /// `staging/fs` and `staging/work`; `fs` owned as the parent's tree is (so a layer unpacked
    /// for another user namespace keeps its root's owner).
    fn build_dirs(&self, staging: &Path, parent: Option<&Record>) -> Result<()> {
        let fs_dir = staging.join("fs");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&fs_dir)
            .map_err(Error::io("creating", &fs_dir))?;
        let work = staging.join("work");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .map_err(Error::io("creating", &work))?;
        if let Some(p) = parent {
            let pfs = self.dirs(p.id).fs;
            let st = fs::metadata(&pfs).map_err(Error::io("reading", &pfs))?;
            std::os::unix::fs::lchown(&fs_dir, Some(st.uid()), Some(st.gid()))
                .map_err(Error::io("changing owner of", &fs_dir))?;
        }
        Ok(())
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<MountSpec>> {
        let meta = self.lock();
        self.mounts_locked(&meta, key)
    }

    fn mounts_locked(&self, meta: &Meta, key: &str) -> Result<Vec<MountSpec>> {
        let r = meta
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        let access = match r.kind {
            Kind::Active => Access::ReadWrite,
            Kind::View => Access::ReadOnly,
            Kind::Committed => {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is committed: only active snapshots and views have mounts"
                )))
            }
        };
        let parents: Vec<PathBuf> = meta
            .ancestors(r)?
            .iter()
            .map(|p| self.dirs(p.id).fs)
            .collect();
        Ok(mounts::for_snapshot(access, &self.dirs(r.id), &parents))
    }

    pub fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("an empty snapshot name".into()));
        }
        let mut meta = self.lock();
        let r = meta
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        if r.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is {}: only an active snapshot can be committed",
                r.kind.as_str()
            )));
        }
        if meta.snapshots.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let usage = disk_usage(&self.dirs(r.id).fs)?;
        let mut next = meta.clone();
        let mut r = next
            .snapshots
            .remove(key)
            .ok_or_else(|| Error::Internal("lost a snapshot".into()))?;
        r.kind = Kind::Committed;
        r.labels = labels;
        r.updated = SystemTime::now();
        r.usage = Some(usage);
        // The work directory only matters while a union writes into this tree.
        let work = self.dirs(r.id).work;
        next.snapshots.insert(name.to_string(), r);
        self.install(&mut meta, next)?;
        if let Err(e) = fs::remove_dir_all(&work) {
            tracing::warn!(path = %work.display(), error = %e, "cannot empty a committed snapshot's work directory");
        }
        tracing::debug!(%key, %name, "committed");
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        let mut meta = self.lock();
        let r = meta
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        let id = r.id;
        if let Some(child) = meta.children(key).next() {
            return Err(Error::FailedPrecondition(format!(
                "cannot remove snapshot {key:?}: {child:?} is its child"
            )));
        }
        let mut next = meta.clone();
        next.snapshots.remove(key);
        self.install(&mut meta, next)?;
        drop(meta);
        let base = self.entry(id);
        let doomed = self.entry(format!("removed-{id}"));
        // The metadata no longer names it: whatever fails here is deleted at the next start.
        if let Err(e) = fs::rename(&base, &doomed).and_then(|()| fs::remove_dir_all(&doomed)) {
            tracing::warn!(path = %base.display(), error = %e, "cannot delete a removed snapshot's directory");
        }
        tracing::debug!(%key, id, "removed");
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        let meta = self.lock();
        let r = meta
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        Ok(info(key, r))
    }

    /// Changes the labels of `new.name` (the only field that may change): all of them when
    /// `fieldpaths` is empty or names `labels`, else the ones named `labels.KEY` (removed when
    /// `new` lacks them).
    pub fn update(&self, new: Info, fieldpaths: &[String]) -> Result<Info> {
        let mut meta = self.lock();
        let mut next = meta.clone();
        let r = next
            .snapshots
            .get_mut(&new.name)
            .ok_or_else(|| Error::NotFound(new.name.clone()))?;
        if fieldpaths.is_empty() {
            r.labels = new.labels;
        } else {
            for path in fieldpaths {
                if path == "labels" {
                    r.labels = new.labels.clone();
                } else if let Some(k) = path.strip_prefix("labels.") {
                    match new.labels.get(k) {
                        Some(v) => r.labels.insert(k.to_string(), v.clone()),
                        None => r.labels.remove(k),
                    };
                } else {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update field {path:?} of snapshot {:?}: only labels change",
                        new.name
                    )));
                }
            }
        }
        r.updated = SystemTime::now();
        let out = info(&new.name, r);
        self.install(&mut meta, next)?;
        Ok(out)
    }

    /// The disk usage of the snapshot's own tree: measured at commit for a committed one, now
    /// for an active one.
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let (id, stored) = {
            let meta = self.lock();
            let r = meta
                .snapshots
                .get(key)
                .ok_or_else(|| Error::NotFound(key.to_string()))?;
            (r.id, r.usage)
        };
        match stored {
            Some(u) => Ok(u),
            None => disk_usage(&self.dirs(id).fs),
        }
    }

    pub fn walk(&self, filters: &[String]) -> Result<Vec<Info>> {
        let filters = Filters::parse(filters)?;
        let meta = self.lock();
        Ok(meta
            .snapshots
            .iter()
            .filter(|(name, r)| {
                filters.matches(&Fields {
                    name,
                    parent: r.parent.as_deref().unwrap_or(""),
                    kind: r.kind.as_str(),
                    labels: &r.labels,
                })
            })
            .map(|(name, r)| info(name, r))
            .collect())
    }

    /// The directory holding the snapshot's own tree (tests look at what landed in it).
    pub fn tree_of(&self, key: &str) -> Result<PathBuf> {
        let meta = self.lock();
        let r = meta
            .snapshots
            .get(key)
            .ok_or_else(|| Error::NotFound(key.to_string()))?;
        Ok(self.dirs(r.id).fs)
    }
}
