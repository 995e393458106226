//! Squash a stack of branches into one plain tree, the way an OCI image applier does it:
//! apply the layers bottom to top, each layer's whiteouts and opaque markers first (they hide
//! only what lies below), then its entries (a directory merges, anything else replaces).
//! Written here because `layer-tool` has no squash yet; a different algorithm from the model's
//! top-down walk, so the two check each other.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn copy_attrs(src: &Path, dst: &Path, md: &std::fs::Metadata) -> io::Result<()> {
    lchown(dst, Some(md.uid()), Some(md.gid()))?;
    if !md.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        // An upper directory's metadata replaces the lower one's, xattrs included.
        let want = sys::user_xattrs(src)?;
        for k in sys::user_xattrs(dst)?
            .keys()
            .filter(|k| !want.contains_key(*k))
        {
            sys::lremovexattr(dst, k)?;
        }
        for (k, v) in want {
            sys::lsetxattr(dst, &k, &v)?;
        }
        if !md.is_dir() {
            sys::lutimens(dst, md.mtime() * 1_000_000_000 + md.mtime_nsec())?;
        }
    }
    Ok(())
}

/// Apply the directory `src` of one layer onto `dst` of the output. `links` maps inodes of this
/// layer to the output path first written for them, so hardlinks stay hardlinks.
fn apply_dir(src: &Path, dst: &Path, links: &mut BTreeMap<u64, PathBuf>) -> io::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(src)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in &names {
        if name == ".wh..wh..opq" {
            for e in std::fs::read_dir(dst)? {
                remove_any(&e?.path())?;
            }
        }
    }
    for name in &names {
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if !hidden.starts_with(".wh.") && !hidden.is_empty() {
                remove_any(&dst.join(hidden))?;
            }
        }
    }
    for name in names.iter().filter(|n| !n.starts_with(".wh.")) {
        let (s, d) = (src.join(name), dst.join(name));
        let md = std::fs::symlink_metadata(&s)?;
        if md.is_dir() {
            if !std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) {
                remove_any(&d)?;
                std::fs::create_dir(&d)?;
            }
            apply_dir(&s, &d, links)?;
            copy_attrs(&s, &d, &md)?;
            continue;
        }
        remove_any(&d)?;
        if let Some(first) = links.get(&md.ino()) {
            std::fs::hard_link(first, &d)?;
            continue;
        }
        if md.file_type().is_symlink() {
            symlink(std::fs::read_link(&s)?, &d)?;
        } else {
            std::fs::copy(&s, &d)?;
        }
        copy_attrs(&s, &d, &md)?;
        links.insert(md.ino(), d);
    }
    Ok(())
}

/// Squash `branches` (top first) into the empty directory `out`.
pub fn squash(branches: &[PathBuf], out: &Path) -> io::Result<()> {
    for b in branches.iter().rev() {
        apply_dir(b, out, &mut BTreeMap::new())?;
        copy_attrs(b, out, &std::fs::symlink_metadata(b)?)?;
    }
    Ok(())
}
