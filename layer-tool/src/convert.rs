//! `layer-tool convert --to overlay|aufs SRC DST`: a layer tree between the aufs/OCI whiteout
//! form (`.wh.NAME`, `.wh..wh..opq`) and kernel overlayfs' (character device 0/0 named NAME,
//! `trusted.overlay.opaque=y`, or `user.overlay.opaque` for `userxattr` mounts).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::copy::{copy_tree, CopyOptions, WhiteoutForm};

/// Copy `src` to the new directory `dst`, rewriting whiteouts into `form`.
pub fn convert(src: &Path, dst: &Path, form: WhiteoutForm) -> Result<()> {
    if dst.exists() {
        let empty = fs::read_dir(dst)
            .with_context(|| format!("reading {}", dst.display()))?
            .next()
            .is_none();
        if !empty {
            bail!("{} exists and is not empty", dst.display());
        }
    } else {
        fs::create_dir(dst).with_context(|| format!("mkdir {}", dst.display()))?;
    }
    let opts = CopyOptions {
        form,
        drop_meta: false,
        ..CopyOptions::default()
    };
    copy_tree(src, dst, &opts)
        .with_context(|| format!("converting {} into {}", src.display(), dst.display()))
}
