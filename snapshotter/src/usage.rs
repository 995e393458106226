//! Disk usage of a directory tree as containerd counts it (`continuity/fs.DiskUsage`): allocated
//! bytes (blocks of 512) and distinct inodes, without following symlinks or leaving the tree's
//! filesystem.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::meta::Usage;

pub fn disk_usage(root: &Path) -> Result<Usage> {
    let top = std::fs::symlink_metadata(root).map_err(Error::io("measuring", root))?;
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(Error::io("reading directory", &dir))? {
            let entry = entry.map_err(Error::io("reading directory", &dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(Error::io("measuring", &path))?;
            if meta.dev() != top.dev() {
                continue;
            }
            if seen.insert(meta.ino()) {
                usage.inodes += 1;
                usage.size += i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX);
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inodes_once_and_allocated_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 10_000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let u = disk_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 2, "one file (two links) and one directory");
        assert!(u.size >= 10_000, "{u:?}");
        let err = disk_usage(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
