//! The snapshots' metadata: one JSON file under the root, replaced atomically on every change.
//!
//! Snapshots are few (one per layer and one per container) and change a few times a second at
//! most, so a whole-file rewrite (write a temporary file, fsync, rename over, fsync the
//! directory) is simpler than an embedded database and just as crash-safe: a reader sees the
//! old file or the new one, never a mix.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const FILE: &str = "metadata.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// Disk usage of a snapshot's own directory (not its parents').
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// One snapshot. Its directory is `snapshots/<id>` under the root; `key` (active, view) or
/// `name` (committed) is the map key in [`Meta::snapshots`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    /// The parent's name (a committed snapshot), if any.
    pub parent: Option<String>,
    pub labels: HashMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// Measured when the snapshot is committed (a committed snapshot never changes).
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub version: u32,
    pub next_id: u64,
    pub snapshots: BTreeMap<String, Record>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            version: VERSION,
            next_id: 1,
            snapshots: BTreeMap::new(),
        }
    }
}

impl Meta {
    /// The metadata in `root`, or an empty set when there is no file yet.
    pub fn load(root: &Path) -> Result<Meta> {
        let path = root.join(FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Meta::default()),
            Err(e) => return Err(Error::io("reading", &path)(e)),
        };
        let meta: Meta = serde_json::from_slice(&text).map_err(|e| Error::Metadata {
            path: path.clone(),
            message: format!("not valid metadata: {e}"),
        })?;
        if meta.version != VERSION {
            return Err(Error::Metadata {
                path,
                message: format!(
                    "version {} (this snapshotter reads {VERSION})",
                    meta.version
                ),
            });
        }
        Ok(meta)
    }

    /// Replaces the file in `root` with this metadata, atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = root.join(FILE);
        let tmp: PathBuf = root.join(format!("{FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Metadata {
            path: path.clone(),
            message: format!("cannot serialise: {e}"),
        })?;
        let mut f = fs::File::create(&tmp).map_err(Error::io("creating", &tmp))?;
        f.write_all(&text).map_err(Error::io("writing", &tmp))?;
        f.sync_all().map_err(Error::io("syncing", &tmp))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(Error::io("renaming into place", &path))?;
        fs::File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("syncing directory", root))?;
        Ok(())
    }

    /// Names of the snapshots whose parent is `name`.
    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.snapshots
            .iter()
            .filter(move |(_, r)| r.parent.as_deref() == Some(name))
            .map(|(k, _)| k.as_str())
    }

    /// The chain of parents of `record`, nearest first.
    pub fn ancestors(&self, record: &Record) -> Result<Vec<&Record>> {
        let mut out = Vec::new();
        let mut next = record.parent.as_deref();
        while let Some(name) = next {
            let parent = self.snapshots.get(name).ok_or_else(|| {
                Error::Internal(format!(
                    "metadata names a parent {name:?} that does not exist"
                ))
            })?;
            out.push(parent);
            next = parent.parent.as_deref();
            if out.len() > self.snapshots.len() {
                return Err(Error::Internal(format!(
                    "a cycle of parents through {name:?}"
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_the_same_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = Meta::default();
        let now = SystemTime::now();
        meta.snapshots.insert(
            "default/1/a".into(),
            Record {
                id: 7,
                kind: Kind::Committed,
                parent: None,
                labels: HashMap::from([("k".into(), "v".into())]),
                created: now,
                updated: now,
                usage: Some(Usage {
                    size: 4096,
                    inodes: 2,
                }),
            },
        );
        meta.next_id = 8;
        meta.save(dir.path()).unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), meta);
        assert!(!dir.path().join("metadata.json.tmp").exists());
    }

    #[test]
    fn a_missing_file_is_an_empty_set_and_a_corrupt_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), Meta::default());
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = Meta::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("metadata.json") && err.contains("not valid"),
            "{err}"
        );
    }
}
