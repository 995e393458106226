//! The deterministic layer tar writer: a layer directory becomes an OCI layer tar.
//!
//! The same directory always gives the same bytes, so the sha256 of the output (the OCI diff id)
//! names the layer in the store, and `build`, `export` and `import` agree on it:
//! - entries are written depth first, each directory's names sorted bytewise, parents before
//!   children; the layer root itself is not an entry;
//! - headers are GNU format (long names through GNU long-name records), with mode
//!   (`& 0o7777`), numeric uid and gid, whole-second mtime and size; user and group names,
//!   atime and ctime are left empty;
//! - names that share an inode (files, symlinks, devices, fifos) are written once as themselves (the first name in that order) and then
//!   as hardlinks to it;
//! - `.wh.` whiteouts and `.wh..wh..opq` markers are ordinary empty files here, as in OCI layers.
//!   Sockets are skipped (tar cannot hold them);
//! - extended attributes ([`crate::fsmeta::layer_xattrs`]) go in a PAX header before the entry,
//!   as `SCHILY.xattr.NAME` records sorted by name.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tar::{EntryType, Header};

use crate::digest::HashWriter;
use crate::fsmeta::Meta;

/// Write `dir` as a layer tar to `out`; returns the writer, the diff id and the tar's size.
pub fn write_layer<W: Write>(dir: &Path, out: W) -> Result<(W, String, u64)> {
    let mut builder = tar::Builder::new(HashWriter::new(out));
    let mut links = HashMap::new();
    write_dir(&mut builder, dir, Path::new(""), &mut links)?;
    let hashing = builder
        .into_inner()
        .with_context(|| format!("finishing the tar of {}", dir.display()))?;
    Ok(hashing.finish())
}

/// The diff id of `dir`: the sha256 of its layer tar, computed without storing the tar.
pub fn layer_digest(dir: &Path) -> Result<String> {
    Ok(write_layer(dir, io::sink())?.1)
}

/// Sorted names of a directory.
pub fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for entry in
        fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?
    {
        names.push(
            entry
                .with_context(|| format!("reading directory {}", dir.display()))?
                .file_name(),
        );
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn is_whiteout_name(name: &std::ffi::OsStr) -> bool {
    name.as_bytes()
        .starts_with(unionfs::whiteout::WH_PREFIX.as_bytes())
}

fn write_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let dir = root.join(rel);
    for name in sorted_names(&dir)? {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let md =
            fs::symlink_metadata(&path).with_context(|| format!("lstat {}", path.display()))?;
        let ft = md.file_type();
        let meta = Meta::of_path(&path, &md);
        let mut header = Header::new_gnu();
        header.set_mode(meta.mode);
        header.set_uid(u64::from(meta.uid));
        header.set_gid(u64::from(meta.gid));
        header.set_mtime(meta.mtime.max(0) as u64);
        header.set_size(0);
        let ctx = || format!("writing tar entry for {}", path.display());
        // unionfs makes a branch's whiteouts hardlinks of one empty file (a link is much cheaper
        // than a new inode); in a layer each stays an empty file of its own, as OCI describes
        // whiteouts, so no tool has to resolve a link to learn that a name is deleted.
        let linked = md.nlink() > 1 && !is_whiteout_name(&name);
        let is_link = !ft.is_dir() && linked && links.contains_key(&(md.dev(), md.ino()));
        if !is_link && !ft.is_dir() && !ft.is_socket() && linked {
            // The first name of a link group (in this order) carries the data; the rest link to it.
            links.insert((md.dev(), md.ino()), rel_path.clone());
        }
        if !is_link {
            let xattrs = crate::fsmeta::layer_xattrs(&path)?;
            if !xattrs.is_empty() {
                append_pax_xattrs(builder, &xattrs).with_context(ctx)?;
            }
        }
        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            let mut name = rel_path.as_os_str().to_owned();
            name.push("/");
            builder
                .append_data(&mut header, Path::new(&name), io::empty())
                .with_context(ctx)?;
            write_dir(builder, root, &rel_path, links)?;
        } else if is_link {
            header.set_entry_type(EntryType::Link);
            let target = links[&(md.dev(), md.ino())].clone();
            builder
                .append_link(&mut header, &rel_path, &target)
                .with_context(ctx)?;
        } else if ft.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target =
                fs::read_link(&path).with_context(|| format!("readlink {}", path.display()))?;
            builder
                .append_link(&mut header, &rel_path, &target)
                .with_context(ctx)?;
        } else if ft.is_file() {
            header.set_entry_type(EntryType::Regular);
            header.set_size(md.len());
            let file = fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
            let reader = LengthChecked {
                inner: file,
                left: md.len(),
                path: &path,
            };
            builder
                .append_data(&mut header, &rel_path, reader)
                .with_context(ctx)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            header.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let rdev = md.rdev();
            header
                .set_device_major(nix::sys::stat::major(rdev) as u32)
                .with_context(ctx)?;
            header
                .set_device_minor(nix::sys::stat::minor(rdev) as u32)
                .with_context(ctx)?;
            builder
                .append_data(&mut header, &rel_path, io::empty())
                .with_context(ctx)?;
        } else if ft.is_fifo() {
            header.set_entry_type(EntryType::Fifo);
            builder
                .append_data(&mut header, &rel_path, io::empty())
                .with_context(ctx)?;
        } else if ft.is_socket() {
            continue;
        } else {
            bail!("{}: unsupported file type", path.display());
        }
    }
    Ok(())
}

/// A PAX extended header holding `SCHILY.xattr.NAME` records (the form GNU tar, Go and umoci
/// use), for the entry that follows.
fn append_pax_xattrs<W: Write>(
    builder: &mut tar::Builder<W>,
    xattrs: &[(String, Vec<u8>)],
) -> io::Result<()> {
    let mut data = Vec::new();
    for (name, value) in xattrs {
        let mut body = format!(" SCHILY.xattr.{name}=").into_bytes();
        body.extend_from_slice(value);
        body.push(b'\n');
        // The record's length counts its own digits.
        let mut len = body.len() + 1;
        while len.to_string().len() + body.len() != len {
            len = len.to_string().len() + body.len();
        }
        data.extend_from_slice(len.to_string().as_bytes());
        data.extend_from_slice(&body);
    }
    let mut header = Header::new_ustar();
    header.set_path("PaxHeaders/xattrs")?;
    header.set_entry_type(EntryType::XHeader);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, &data[..])
}

/// A file reader that fails if the file changed length while it was being written to the tar
/// (the header already promised a size).
struct LengthChecked<'a> {
    inner: fs::File,
    left: u64,
    path: &'a Path,
}

impl io::Read for LengthChecked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{} shrank while it was being archived",
                self.path.display()
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
