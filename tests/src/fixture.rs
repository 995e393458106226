//! The temp directories of one case: the branches written from the model, the mount point,
//! the plain copy of the merged view, and scratch space.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tempfile::TempDir;

use crate::disk::{self, RawEntry};
use crate::model::Stack;
use crate::sys;

/// Temp directories of one case: `B0` (rw) .. `Bn`, `mnt`, `host`, and scratch space.
pub struct Fixture {
    pub branches: Vec<PathBuf>,
    pub mnt: PathBuf,
    pub host: PathBuf,
    tmp: TempDir,
}

impl Fixture {
    pub fn new(stack: &Stack) -> Fixture {
        sys::set_umask(0);
        let tmp = tempfile::Builder::new()
            .prefix("union-tests.")
            .tempdir()
            .expect("tempdir");
        // Searchable by the unprivileged user of `Op::AsUser`.
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod tempdir");
        let branches: Vec<PathBuf> = (0..stack.branches.len())
            .map(|i| tmp.path().join(format!("B{i}")))
            .collect();
        for (b, dir) in stack.branches.iter().zip(&branches) {
            std::fs::create_dir(dir).expect("mkdir branch");
            disk::write_branch(b, dir).expect("write branch");
        }
        let (mnt, host) = (tmp.path().join("mnt"), tmp.path().join("host"));
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        std::fs::create_dir(&host).expect("mkdir host");
        disk::write_view(&stack.view(), &host).expect("write host copy");
        Fixture {
            branches,
            mnt,
            host,
            tmp,
        }
    }

    /// A path (not created) in the case's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A fresh empty directory for scratch work.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir(&p).expect("mkdir scratch");
        p
    }

    pub fn ro_snapshots(&self) -> Vec<BTreeMap<String, RawEntry>> {
        self.branches[1..]
            .iter()
            .map(|b| disk::raw_snapshot(b).expect("snapshot ro branch"))
            .collect()
    }
}
