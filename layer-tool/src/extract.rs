//! The safe layer unpacker: a tar stream becomes a directory tree, and nothing is written
//! outside that directory whatever the archive holds.
//!
//! Refused, with an error naming the entry:
//! - `..` components and absolute paths, in entry names and in hardlink targets;
//! - entries whose parent path goes through a symlink (one planted earlier in the same archive,
//!   or in a lower layer when applying), or through a non-directory;
//! - symlinks whose relative target climbs above the root (`../../etc`); absolute targets are
//!   kept, because inside the container they resolve under its root, not the host's;
//! - hardlinks to a directory or to a name that is not already in the tree;
//! - more than [`Limits::max_bytes`] of file data or [`Limits::max_entries`] entries;
//! - anything the tar reader finds corrupt or truncated.
//!
//! Skipped, not refused: device nodes unless [`ExtractOptions::allow_devices`] (default: when
//! root), each named in a warning and counted in [`Stats::skipped_devices`]; a whiteout or opaque marker beneath a non-directory that the same
//! archive wrote (umoci writes `a` as a file, then `a/.wh.x`): it hides nothing and writes
//! nothing.
//!
//! Safety rests on the destination being private (a fresh staging directory that only this
//! process writes), so a path checked with `lstat` cannot change before it is used. Every
//! component is checked, the final name is removed before it is created (`O_EXCL`), and metadata
//! is set with `lchown`/`utimensat(AT_SYMLINK_NOFOLLOW)`, so no symlink is ever followed.
//!
//! Two modes: storing a layer as it is (`.wh.` entries become ordinary files: the store keeps
//! layers in aufs form), or applying a layer on top of a tree (`apply_whiteouts`: `.wh.NAME`
//! deletes NAME, `.wh..wh..opq` empties the directory of what lower layers put there), which is
//! what `squash` and an OCI unpacker do.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tar::EntryType;
use unionfs::whiteout::{self, EntryKind};

use crate::fsmeta::{may_make_devices, set_xattrs, Meta};

/// Size limits against tar bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of the uncompressed stream (and so of file data).
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// 64 GiB and 4 million entries: far above real images, far below a full disk.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    pub limits: Limits,
    pub allow_devices: bool,
    pub apply_whiteouts: bool,
    /// The layers below this one (top first), already unpacked. A directory the archive implies
    /// without an entry of its own (`etc/motd` with no `etc/`), and the root when the archive has
    /// no `./`, take their metadata from the topmost of these that has them: in OCI such a
    /// directory is unchanged, and the union shows the top layer's copy. Without one, an implied
    /// directory is 0755 root:root with the mtime of the entry that implied it.
    pub lower: Vec<PathBuf>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            limits: Limits::default(),
            allow_devices: may_make_devices(),
            apply_whiteouts: false,
            lower: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    /// Whiteouts and opaque markers beneath a non-directory of this layer (they hide nothing).
    pub skipped_markers: u64,
    /// Device nodes left out because [`ExtractOptions::allow_devices`] was false (each named
    /// in a warning).
    pub skipped_devices: u64,
}

/// Unpack the tar stream `reader` into the existing directory `dest`.
pub fn extract<R: Read>(reader: R, dest: &Path, opts: &ExtractOptions) -> Result<Stats> {
    let mut archive = tar::Archive::new(reader);
    let mut state = State {
        dest,
        opts,
        stats: Stats::default(),
        created: HashSet::new(),
        opaque: Vec::new(),
        dirs: Vec::new(),
        recorded: HashSet::new(),
        root_seen: false,
    };
    for entry in archive.entries().context("reading the archive")? {
        let mut entry = entry.context("reading the archive (corrupt or truncated?)")?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        state
            .entry(&mut entry)
            .with_context(|| format!("archive entry {shown:?}"))?;
    }
    state.finish()?;
    Ok(state.stats)
}

/// One archive entry, checked, about to be created.
struct Item {
    kind: EntryType,
    rel: PathBuf,
    meta: Meta,
    xattrs: Vec<(String, Vec<u8>)>,
    size: u64,
}

struct State<'a> {
    dest: &'a Path,
    opts: &'a ExtractOptions,
    stats: Stats,
    /// Relative paths this archive created (apply mode: what opaque markers must not remove).
    created: HashSet<PathBuf>,
    /// Directories marked opaque in this archive (apply mode).
    opaque: Vec<PathBuf>,
    /// Directory metadata, applied at the end (after their contents changed their mtimes).
    dirs: Vec<(PathBuf, Meta)>,
    /// Directories whose metadata is in `dirs`.
    recorded: HashSet<PathBuf>,
    /// The archive had a `./` entry.
    root_seen: bool,
}

impl State<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        self.stats.entries += 1;
        if self.stats.entries > self.opts.limits.max_entries {
            bail!(
                "more than {} entries in the archive (the limit)",
                self.opts.limits.max_entries
            );
        }
        let size = entry
            .header()
            .entry_size()
            .context("reading the entry size")?;
        self.stats.bytes = self.stats.bytes.saturating_add(size);
        if self.stats.bytes > self.opts.limits.max_bytes {
            bail!(
                "the archive holds more than {} bytes of data (the limit; raise it with --max-size)",
                self.opts.limits.max_bytes
            );
        }
        let rel = match clean_path(&entry.path().context("reading the entry path")?)? {
            Some(rel) => rel,
            None => {
                // The root itself (`./`): only a directory makes sense. Its metadata goes on the
                // layer root (not in apply mode: the tree's root is not this layer's).
                if kind != EntryType::Directory {
                    bail!("the archive root is not a directory");
                }
                if !self.opts.apply_whiteouts {
                    self.root_seen = true;
                    let meta = entry_meta(entry)?;
                    self.record_dir(PathBuf::new(), meta);
                }
                return Ok(());
            }
        };
        let meta = entry_meta(entry)?;
        let xattrs = entry_xattrs(entry)?;
        let name = rel.file_name().context("entry without a name")?.to_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if let EntryKind::Whiteout(hidden) = whiteout::classify(&name) {
            // `.wh..` would delete the parent directory itself when applied.
            if hidden == "." || hidden == ".." {
                bail!("whiteout of {hidden:?} refused");
            }
        }
        let marker = matches!(
            whiteout::classify(&name),
            EntryKind::Whiteout(_) | EntryKind::Opaque
        );
        if marker && self.beneath_own_non_dir(&parent_rel)? {
            // umoci (0.4.7) replaces a directory by a file and then writes whiteouts for the
            // directory's old contents beneath the file (`a` then `a/.wh.x`). Such a marker can
            // hide nothing (the non-directory already hides the lower directory), so it is
            // skipped; it is never written through the non-directory.
            self.stats.skipped_markers += 1;
            return Ok(());
        }

        if self.opts.apply_whiteouts {
            // aufs bookkeeping (`.wh..wh.plnk/…`, `.wh..wh.work/…`) is no part of the view.
            let under_reserved = parent_rel
                .components()
                .any(|c| whiteout::is_reserved(c.as_os_str()));
            if under_reserved {
                return Ok(());
            }
            match whiteout::classify(&name) {
                EntryKind::Plain => {}
                EntryKind::Whiteout(hidden) => {
                    self.check_parents(&parent_rel, Some(meta.mtime))?;
                    let target = parent_rel.join(hidden);
                    if !self.created.contains(&target) {
                        self.keep_dir_meta(&parent_rel)?;
                        remove_any(&self.dest.join(&target))?;
                    }
                    return Ok(());
                }
                EntryKind::Opaque => {
                    self.check_parents(&parent_rel, Some(meta.mtime))?;
                    self.opaque.push(parent_rel);
                    return Ok(());
                }
                EntryKind::Meta => return Ok(()),
            }
        }

        self.check_parents(&parent_rel, Some(meta.mtime))?;
        self.keep_dir_meta(&parent_rel)?;
        let path = self.dest.join(&rel);
        let is_dir = kind == EntryType::Directory;
        match fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() && is_dir => {}
            Ok(md) if md.is_dir() => fs::remove_dir_all(&path)
                .with_context(|| format!("removing directory {} to replace it", path.display()))?,
            Ok(_) => fs::remove_file(&path)
                .with_context(|| format!("removing {} to replace it", path.display()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("lstat {}", path.display())),
        }
        if self.opts.apply_whiteouts {
            self.created.insert(rel.clone());
        }
        let item = Item {
            kind,
            rel,
            meta,
            xattrs,
            size,
        };
        self.create(entry, item, &path)
    }

    /// Make the new object at `path` (nothing is there now) and set its metadata.
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        item: Item,
        path: &Path,
    ) -> Result<()> {
        let Item {
            kind,
            rel,
            meta,
            xattrs,
            size,
        } = item;
        let xattrs = &xattrs[..];
        match kind {
            EntryType::Directory => {
                if !path.is_dir() {
                    fs::create_dir(path).with_context(|| format!("mkdir {}", path.display()))?;
                }
                set_xattrs(path, xattrs)?;
                self.record_dir(rel, meta);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let copied = io::copy(entry, &mut file)
                    .with_context(|| format!("writing {} (archive truncated?)", path.display()))?;
                if copied != size {
                    bail!("archive truncated: {copied} of {size} bytes of data");
                }
                drop(file);
                meta.apply(path, false)?;
                set_xattrs(path, xattrs)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .context("reading the symlink target")?
                    .ok_or_else(|| anyhow!("symlink without a target"))?;
                check_symlink_target(&rel, &target)?;
                symlink(&target, path).with_context(|| format!("symlink {}", path.display()))?;
                meta.apply(path, true)?;
                set_xattrs(path, xattrs)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .context("reading the hardlink target")?
                    .ok_or_else(|| anyhow!("hardlink without a target"))?;
                let target_rel = clean_path(&target)
                    .with_context(|| format!("hardlink target {}", target.display()))?
                    .ok_or_else(|| anyhow!("hardlink to the archive root"))?;
                self.check_parents(target_rel.parent().unwrap_or(Path::new("")), None)
                    .with_context(|| format!("hardlink target {}", target.display()))?;
                let target_path = self.dest.join(&target_rel);
                let md = fs::symlink_metadata(&target_path).with_context(|| {
                    format!(
                        "hardlink target {} is not in the archive before it",
                        target.display()
                    )
                })?;
                if md.is_dir() {
                    bail!("hardlink to directory {}", target.display());
                }
                fs::hard_link(&target_path, path).with_context(|| {
                    format!("link {} to {}", path.display(), target_path.display())
                })?;
            }
            EntryType::Char | EntryType::Block => {
                let major = entry.header().device_major()?.unwrap_or(0);
                let minor = entry.header().device_minor()?.unwrap_or(0);
                if !self.opts.allow_devices {
                    // A user cannot make device nodes; the rest of the layer is still usable
                    // (a container gets its /dev from the runner, not from the image).
                    tracing::warn!(
                        "skipped device node /{} ({} {major}:{minor}): only root may make device nodes",
                        rel.display(),
                        if kind == EntryType::Char { "char" } else { "block" },
                    );
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                let sflag = if kind == EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                mknod(
                    path,
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    makedev(major.into(), minor.into()),
                )
                .with_context(|| format!("mknod {}", path.display()))?;
                meta.apply(path, false)?;
                set_xattrs(path, xattrs)?;
            }
            EntryType::Fifo => {
                nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600))
                    .with_context(|| format!("mkfifo {}", path.display()))?;
                meta.apply(path, false)?;
                set_xattrs(path, xattrs)?;
            }
            other => bail!("unsupported entry type {other:?}"),
        }
        Ok(())
    }

    /// Check that every directory on the way to `rel_dir` is a real directory; create missing
    /// ones (mode 0755) when `create`.
    fn check_parents(&mut self, rel_dir: &Path, create: Option<i64>) -> Result<()> {
        let mut cur = PathBuf::new();
        for comp in rel_dir.components() {
            cur.push(comp);
            let path = self.dest.join(&cur);
            match fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => bail!(
                    "path goes through the symlink {} (planted earlier); refusing to follow it",
                    cur.display()
                ),
                Ok(_) => bail!(
                    "path goes through {}, which is not a directory",
                    cur.display()
                ),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                    fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
                    let meta = self.inherited_meta(&cur).unwrap_or(Meta {
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: create.unwrap_or(0),
                    });
                    self.record_dir(cur.clone(), meta);
                    if self.opts.apply_whiteouts {
                        self.created.insert(cur.clone());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    bail!("{} is not in the archive before this entry", cur.display())
                }
                Err(e) => return Err(e).with_context(|| format!("lstat {}", path.display())),
            }
        }
        Ok(())
    }

    /// True when a component of `rel_dir` is a non-directory (file, symlink, device) that this
    /// archive put there. Missing components are not (they become implied directories); in apply
    /// mode a non-directory from a lower layer is not either (`check_parents` refuses it).
    fn beneath_own_non_dir(&self, rel_dir: &Path) -> Result<bool> {
        let mut cur = PathBuf::new();
        for comp in rel_dir.components() {
            cur.push(comp);
            let path = self.dest.join(&cur);
            match fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {}
                Ok(_) => return Ok(!self.opts.apply_whiteouts || self.created.contains(&cur)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e).with_context(|| format!("lstat {}", path.display())),
            }
        }
        Ok(false)
    }

    fn record_dir(&mut self, rel: PathBuf, meta: Meta) {
        self.recorded.insert(rel.clone());
        self.dirs.push((rel, meta));
    }

    /// Apply mode: before changing the contents of a directory that lower layers made and this
    /// archive does not describe, remember its metadata, so adding or deleting a name does not
    /// leave it with a new mtime (an unchanged directory keeps its lower attributes).
    fn keep_dir_meta(&mut self, rel_dir: &Path) -> Result<()> {
        if !self.opts.apply_whiteouts || self.recorded.contains(rel_dir) {
            return Ok(());
        }
        let path = self.dest.join(rel_dir);
        match fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() => {
                self.record_dir(rel_dir.to_path_buf(), Meta::of(&md));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("lstat {}", path.display())),
        }
    }

    /// Metadata of `rel` as a directory in the topmost lower layer that has it, unless a
    /// layer in between deletes it or has a non-directory there.
    ///
    /// Each layer is walked one component at a time with `lstat`: a lower layer may hold a
    /// symlink (an absolute one is kept: in a container it resolves under the container's root),
    /// and a path through it would read the host's directory (`etc -> /etc` made `etc/ssl` take
    /// the host's `/etc/ssl` attributes). A non-directory at any component hides what lies below
    /// it, as in the union; a whiteout of a component, or an opaque directory above it, ends the
    /// search.
    fn inherited_meta(&self, rel: &Path) -> Option<Meta> {
        let comps: Vec<&std::ffi::OsStr> = rel.components().map(|c| c.as_os_str()).collect();
        'layers: for lower in &self.opts.lower {
            let mut path = lower.clone();
            match fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {}
                _ => continue,
            }
            if comps.is_empty() {
                return fs::symlink_metadata(&path).ok().map(|md| Meta::of(&md));
            }
            for (i, name) in comps.iter().enumerate() {
                let parent = path.clone();
                path.push(name);
                match fs::symlink_metadata(&path) {
                    Ok(md) if md.is_dir() => {
                        if i + 1 == comps.len() {
                            return Some(Meta::of(&md));
                        }
                    }
                    // A file, symlink or device here hides every lower layer at this path.
                    Ok(_) => return None,
                    Err(_) => {
                        let deleted =
                            fs::symlink_metadata(parent.join(whiteout::whiteout_name(name)))
                                .is_ok()
                                || fs::symlink_metadata(parent.join(whiteout::OPAQUE_MARKER))
                                    .is_ok();
                        if deleted {
                            return None;
                        }
                        continue 'layers;
                    }
                }
            }
        }
        None
    }

    fn finish(&mut self) -> Result<()> {
        if !self.root_seen && !self.opts.apply_whiteouts {
            if let Some(meta) = self.inherited_meta(Path::new("")) {
                self.dirs.push((PathBuf::new(), meta));
            }
        }
        for dir in std::mem::take(&mut self.opaque) {
            self.clear_lower(&dir)?;
        }
        // Deepest first, so setting a directory's mtime is not undone by its children.
        self.dirs
            .sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, meta) in &self.dirs {
            let path = self.dest.join(rel);
            if fs::symlink_metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                meta.apply(&path, false)?;
            }
        }
        Ok(())
    }

    /// Remove from `rel_dir` everything this archive did not create (an opaque marker's effect).
    fn clear_lower(&mut self, rel_dir: &Path) -> Result<()> {
        self.keep_dir_meta(rel_dir)?;
        let dir = self.dest.join(rel_dir);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let rel = rel_dir.join(entry.file_name());
            if !self.created.contains(&rel) {
                remove_any(&entry.path())?;
            } else if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                self.clear_lower(&rel)?;
            }
        }
        Ok(())
    }
}

/// An entry name made relative and checked: `./a/b` -> `a/b`; `None` for the root.
pub fn clean_path(raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for comp in raw.components() {
        match comp {
            Component::CurDir => {}
            Component::Normal(c) => out.push(c),
            Component::ParentDir => bail!("path {} contains `..`", raw.display()),
            Component::RootDir | Component::Prefix(_) => {
                bail!("absolute path {} refused", raw.display())
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// A relative symlink target may not climb above the root, read lexically from the link's
/// directory. Absolute targets stay: they resolve under the container's root.
pub fn check_symlink_target(link_rel: &Path, target: &Path) -> Result<()> {
    if target.as_os_str().is_empty() {
        bail!("symlink with an empty target");
    }
    if target.is_absolute() {
        return Ok(());
    }
    let mut depth: i64 = link_rel.components().count() as i64 - 1;
    for comp in target.components() {
        match comp {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    bail!(
                        "symlink target {} points outside the layer",
                        target.display()
                    );
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Extended attributes from the entry's PAX records (`SCHILY.xattr.NAME`), those a layer keeps.
fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().context("reading PAX records")? {
        for ext in exts {
            let ext = ext.context("reading a PAX record")?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if crate::fsmeta::carried_xattr(name) {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

fn entry_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        mode: header.mode().context("reading the mode")? & 0o7777,
        uid: u32::try_from(header.uid().context("reading the uid")?).context("uid out of range")?,
        gid: u32::try_from(header.gid().context("reading the gid")?).context("gid out of range")?,
        mtime: i64::try_from(header.mtime().context("reading the mtime")?).unwrap_or(i64::MAX),
    };
    // PAX records override the header fields (Go and others write them for large values).
    if let Some(exts) = entry.pax_extensions().context("reading PAX records")? {
        for ext in exts {
            let ext = ext.context("reading a PAX record")?;
            let (Ok(key), Ok(value)) = (ext.key(), ext.value()) else {
                continue;
            };
            match key {
                "uid" => {
                    meta.uid = value
                        .parse()
                        .with_context(|| format!("PAX uid {value:?}"))?
                }
                "gid" => {
                    meta.gid = value
                        .parse()
                        .with_context(|| format!("PAX gid {value:?}"))?
                }
                "mtime" => {
                    let secs = value.split('.').next().unwrap_or("0");
                    meta.mtime = secs
                        .parse()
                        .with_context(|| format!("PAX mtime {value:?}"))?;
                }
                _ => {}
            }
        }
    }
    Ok(meta)
}

/// Remove a file, symlink or directory tree; absent is fine.
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("lstat {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(
            clean_path(Path::new("./a/b/")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_path(Path::new("./")).unwrap(), None);
        assert!(clean_path(Path::new("a/../../b")).is_err());
        assert!(clean_path(Path::new("/etc/passwd")).is_err());
    }

    /// Found while fuzzing the unpacker with lower layers (fuzz/fuzz_targets/tar_import.rs,
    /// seed `implied-through-lower-symlink`): a lower layer's absolute symlink `etc -> /DIR`
    /// made the implied directory `etc/sub` of the next layer take the attributes of the host's
    /// `/DIR/sub`.
    #[test]
    fn regression_implied_dirs_never_inherit_through_a_lower_symlink() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let scratch = tempfile::tempdir().unwrap();
        let outside = scratch.path().join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o701)).unwrap();
        let lower = scratch.path().join("lower");
        fs::create_dir_all(lower.join("real/sub")).unwrap();
        fs::set_permissions(lower.join("real/sub"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink(&outside, lower.join("etc")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        for name in ["etc/sub/file", "real/sub/file"] {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_mtime(1000);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, name, &b"x"[..]).unwrap();
        }
        let archive = b.into_inner().unwrap();
        let dest = scratch.path().join("layer");
        fs::create_dir(&dest).unwrap();
        let opts = ExtractOptions {
            lower: vec![lower],
            allow_devices: false,
            ..ExtractOptions::default()
        };
        extract(&archive[..], &dest, &opts).unwrap();
        // Not the outside directory's 0701: the default of a directory no layer describes.
        let mode = fs::metadata(dest.join("etc/sub")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // A real lower directory still lends its attributes.
        let mode = fs::metadata(dest.join("real/sub")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn symlink_targets() {
        assert!(
            check_symlink_target(Path::new("usr/bin/awk"), Path::new("../../bin/busybox")).is_ok()
        );
        assert!(check_symlink_target(Path::new("usr/bin/awk"), Path::new("../../../etc")).is_err());
        assert!(check_symlink_target(Path::new("a"), Path::new("..")).is_err());
        assert!(check_symlink_target(Path::new("a"), Path::new("/etc/alternatives/x")).is_ok());
        assert!(check_symlink_target(Path::new("a/b"), Path::new("c/../../d")).is_ok());
    }
}
