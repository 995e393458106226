//! `layer-tool mount IMAGE DIR` / `umount DIR`: an image's merged view, read-only, through the
//! `unionfs` binary (found as `$UNIONFS_BIN`, next to this executable, or on `PATH`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::store::Store;

/// Where the `unionfs` binary is.
pub fn find_unionfs() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("UNIONFS_BIN") {
        return Ok(PathBuf::from(bin));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        for candidate in [dir.join("unionfs"), dir.join("../unionfs")] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("unionfs");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!("no unionfs binary: set $UNIONFS_BIN, or put it next to layer-tool or on PATH")
}

/// The branch spec for an image: its layers top first, all read-only.
pub fn branch_spec(store: &Store, name_or_path: &str) -> Result<String> {
    let (dir, image) = store.find_image(name_or_path)?;
    let mut parts = Vec::new();
    for path in image.layer_dirs(&dir).iter().rev() {
        let abs = path
            .canonicalize()
            .with_context(|| format!("layer directory {}", path.display()))?;
        let text = abs
            .to_str()
            .with_context(|| format!("layer path {} is not UTF-8", abs.display()))?;
        if text.contains([':', '=']) {
            bail!("layer path {text} contains ':' or '=', which a branch spec cannot hold");
        }
        parts.push(format!("{text}=ro"));
    }
    if parts.is_empty() {
        bail!("image {name_or_path} has no layers");
    }
    Ok(parts.join(":"))
}

/// Mount the merged view of an image at `mnt` (returns once it serves).
pub fn mount(store: &Store, name_or_path: &str, mnt: &Path) -> Result<()> {
    let spec = branch_spec(store, name_or_path)?;
    let bin = find_unionfs()?;
    // An inspection view: device nodes and setuid bits of the image do nothing through it.
    run(Command::new(&bin)
        .args(["mount", "-o", "nodev,nosuid"])
        .arg(&spec)
        .arg(mnt))
    .with_context(|| format!("mounting image {name_or_path} at {}", mnt.display()))
}

pub fn umount(mnt: &Path) -> Result<()> {
    let bin = find_unionfs()?;
    run(Command::new(&bin).arg("umount").arg(mnt))
        .with_context(|| format!("unmounting {}", mnt.display()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed: {status}", cmd.get_program());
    }
    Ok(())
}
