//! Copy a directory tree with its metadata (mode, owner, mtime, hardlinks, devices, fifos), and
//! optionally rewrite its whiteouts between the aufs/OCI form and the overlayfs form.
//!
//! `build`, `commit` and `convert` all copy trees; they differ only in [`CopyOptions`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::stat::{mknod, Mode, SFlag};
use unionfs::whiteout::{self, EntryKind};

use crate::fsmeta::{layer_xattrs, set_xattrs, Meta};
use crate::tarball::sorted_names;

/// Which whiteout form the copy should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutForm {
    /// aufs/OCI: `.wh.NAME` files and `.wh..wh..opq` markers. Overlayfs whiteouts found in the
    /// source (character devices 0/0, the opaque xattr) are turned into this form.
    Aufs,
    /// overlayfs: character device 0/0 named NAME, `trusted.overlay.opaque=y` (or `user.` with
    /// `userxattr`) on opaque directories. `.wh.` names found in the source are turned into it.
    Overlay { userxattr: bool },
}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub form: WhiteoutForm,
    /// Paths relative to the source root that are left out, with everything under them and their
    /// `.wh.` whiteouts.
    pub exclude: Vec<PathBuf>,
    /// Leave out aufs bookkeeping names (`.wh..wh.*` other than the opaque marker).
    pub drop_meta: bool,
    /// Clamp mtimes to at most this value (reproducible builds: `SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<i64>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            form: WhiteoutForm::Aufs,
            exclude: Vec::new(),
            drop_meta: true,
            clamp_mtime: None,
        }
    }
}

/// Set a layer root's mode to 0755 (owner and mtime kept). The root's mode is what `/` shows
/// in a container, and a directory made with `mktemp -d` is 0700.
pub fn normalize_root_mode(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", root.display()))
}

/// Copy the tree under `src` into the existing, empty directory `dst`.
pub fn copy_tree(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<()> {
    let src_md = fs::metadata(src).with_context(|| format!("stat {}", src.display()))?;
    if !src_md.is_dir() {
        bail!("{} is not a directory", src.display());
    }
    let mut copier = Copier {
        src,
        dst,
        opts,
        links: HashMap::new(),
    };
    copier.dir(Path::new(""))?;
    copier.finish_dir(Path::new(""), &src_md)
}

struct Copier<'a> {
    src: &'a Path,
    dst: &'a Path,
    opts: &'a CopyOptions,
    /// (dev, ino) of multiply linked source files -> their first copy's relative path.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Copier<'_> {
    fn excluded(&self, rel: &Path) -> bool {
        let unwhited = match rel.file_name().map(whiteout::classify) {
            Some(EntryKind::Whiteout(name)) => rel.with_file_name(name),
            _ => rel.to_path_buf(),
        };
        self.opts
            .exclude
            .iter()
            .any(|ex| rel.starts_with(ex) || unwhited.starts_with(ex))
    }

    fn meta(&self, md: &fs::Metadata) -> Meta {
        let mut meta = Meta::of(md);
        if let Some(max) = self.opts.clamp_mtime {
            meta.mtime = meta.mtime.min(max);
        }
        meta
    }

    fn dir(&mut self, rel: &Path) -> Result<()> {
        let src_dir = self.src.join(rel);
        for name in sorted_names(&src_dir)? {
            let rel_path = rel.join(&name);
            if self.excluded(&rel_path) {
                continue;
            }
            let from = self.src.join(&rel_path);
            let md =
                fs::symlink_metadata(&from).with_context(|| format!("lstat {}", from.display()))?;
            match whiteout::classify(&name) {
                EntryKind::Meta if self.opts.drop_meta => continue,
                EntryKind::Opaque => {
                    if let WhiteoutForm::Overlay { userxattr } = self.opts.form {
                        set_opaque_xattr(&self.dst.join(rel), userxattr)?;
                        continue;
                    }
                }
                EntryKind::Whiteout(hidden) => {
                    if let WhiteoutForm::Overlay { .. } = self.opts.form {
                        let to = self.dst.join(rel).join(hidden);
                        make_overlay_whiteout(&to)?;
                        self.meta(&md).apply(&to, false)?;
                        continue;
                    }
                }
                _ => {}
            }
            if self.opts.form == WhiteoutForm::Aufs
                && md.file_type().is_char_device()
                && whiteout::is_overlay_whiteout(md.mode(), md.rdev())
            {
                let to = self.dst.join(rel).join(whiteout::whiteout_name(&name));
                fs::File::create(&to).with_context(|| format!("creating {}", to.display()))?;
                self.meta(&md).apply(&to, false)?;
                continue;
            }
            self.entry(&rel_path, &md)?;
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, md: &fs::Metadata) -> Result<()> {
        let from = self.src.join(rel);
        let to = self.dst.join(rel);
        let ft = md.file_type();
        if ft.is_dir() {
            fs::create_dir(&to).with_context(|| format!("mkdir {}", to.display()))?;
            set_xattrs(&to, &layer_xattrs(&from)?)?;
            if self.opts.form == WhiteoutForm::Aufs && has_overlay_opaque_xattr(&from) {
                let marker = to.join(whiteout::OPAQUE_MARKER);
                fs::File::create(&marker)
                    .with_context(|| format!("creating {}", marker.display()))?;
                // The xattr kept no metadata of its own: an empty 0644 file owned as its directory.
                let meta = Meta {
                    mode: 0o644,
                    ..self.meta(md)
                };
                meta.apply(&marker, false)?;
            }
            self.dir(rel)?;
            return self.finish_dir(rel, md);
        }
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                let first = self.dst.join(first);
                fs::hard_link(&first, &to)
                    .with_context(|| format!("link {} to {}", to.display(), first.display()))?;
                return Ok(());
            }
            self.links.insert((md.dev(), md.ino()), rel.to_path_buf());
        }
        if ft.is_symlink() {
            let target =
                fs::read_link(&from).with_context(|| format!("readlink {}", from.display()))?;
            symlink(&target, &to).with_context(|| format!("symlink {}", to.display()))?;
            self.meta(md).apply(&to, true)?;
            return set_xattrs(&to, &layer_xattrs(&from)?);
        }
        if ft.is_file() {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFIFO
            };
            match mknod(&to, kind, Mode::from_bits_truncate(0o600), md.rdev()) {
                Err(nix::errno::Errno::EPERM)
                    if kind != SFlag::S_IFIFO && !crate::fsmeta::may_make_devices() =>
                {
                    tracing::warn!(
                        "skipped device node {}: only root may make device nodes",
                        from.display()
                    );
                    return Ok(());
                }
                r => r.with_context(|| format!("mknod {}", to.display()))?,
            }
        } else {
            // Sockets: nothing a layer can carry.
            return Ok(());
        }
        self.meta(md).apply(&to, false)?;
        set_xattrs(&to, &layer_xattrs(&from)?)
    }

    fn finish_dir(&self, rel: &Path, md: &fs::Metadata) -> Result<()> {
        self.meta(md).apply(&self.dst.join(rel), false)
    }
}

/// A character device 0/0 at `path`: overlayfs' whiteout.
pub fn make_overlay_whiteout(path: &Path) -> Result<()> {
    mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o600), 0).with_context(|| {
        format!(
            "mknod {} (an overlayfs whiteout is a 0/0 character device; that needs root)",
            path.display()
        )
    })
}

fn set_opaque_xattr(dir: &Path, userxattr: bool) -> Result<()> {
    let name = if userxattr {
        whiteout::OVERLAY_OPAQUE_XATTRS[1]
    } else {
        whiteout::OVERLAY_OPAQUE_XATTRS[0]
    };
    xattr::set(dir, name, b"y").with_context(|| format!("setxattr {name} on {}", dir.display()))
}

/// True when `dir` carries an overlayfs opaque xattr set to `y`.
pub fn has_overlay_opaque_xattr(dir: &Path) -> bool {
    whiteout::OVERLAY_OPAQUE_XATTRS.iter().any(|name| {
        matches!(xattr::get(dir, OsStr::new(name)), Ok(Some(v)) if whiteout::is_overlay_opaque_value(&v))
    })
}

/// `io::ErrorKind::NotFound` as a bool, for optional removals.
pub fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}
