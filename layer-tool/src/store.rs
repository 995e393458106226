//! The local image store that `layer-tool` writes and `runner` reads.
//!
//! Layout (the root is `$UNIONFS_STORE`, default [`DEFAULT_ROOT`] as root and
//! `~/.local/share/unionfs` for a user, see [`crate::rootless::store_root`]):
//!
//! ```text
//! ROOT/layers/sha256/<hex>/        one layer: a directory tree in aufs/OCI `.wh.` form,
//!                                  keyed by the sha256 of its uncompressed tar (the OCI diff id)
//! ROOT/images/<name>/image.json    one image: its layers bottom first, and its config
//! ROOT/tmp/                        staging: work is done here and renamed into place
//! ```
//!
//! The tar that names a layer is the deterministic one [`crate::tarball`] writes, so a layer
//! directory's name always equals the digest of its current contents as `export` writes them.
//!
//! The store root and `layers/` are mode 0700 (see [`Store::secure`]): layers hold device nodes
//! with the mode their image gave them, and no other user may reach them through the store.
//!
//! An image directory can also live outside the store: `image.json` names each layer by digest
//! and by a path relative to the image directory, so a directory with `image.json` and
//! `layers/…` beside it is a complete image.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Where the store lives when `$UNIONFS_STORE` is unset.
pub const DEFAULT_ROOT: &str = "/var/lib/unionfs";
/// The file that describes an image inside its directory.
pub const IMAGE_FILE: &str = "image.json";
/// The mode of the store root and of `layers/`: the owner only (docker keeps its root 0710,
/// containers/storage 0700).
pub const PRIVATE_MODE: u32 = 0o700;

/// The image config a container starts from (the parts of the OCI image config we use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
}

/// When an image was made and the steps that made it: the OCI image config's `created` and
/// `history`, carried from import (or build, commit, squash) to export.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Bottom first; the entries without `empty_layer` match the layers one to one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// One step of an image's history (OCI image spec, `history`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The step changed only the config, no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// `sha256:<hex>` of the layer's uncompressed tar (OCI diff id).
    pub digest: String,
    /// The layer directory, relative to the image directory (or absolute).
    pub path: PathBuf,
}

/// `image.json`: an ordered list of layers (bottom first, as in OCI) and a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub layers: Vec<LayerRef>,
    #[serde(default)]
    pub config: ImageConfig,
    /// `created` and `history`, at the top level of `image.json` as in an OCI config.
    #[serde(flatten, default)]
    pub provenance: Provenance,
}

/// The store rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store at `$UNIONFS_STORE`; else [`DEFAULT_ROOT`] as root, and a user's own
    /// (`$XDG_DATA_HOME/unionfs`, default `~/.local/share/unionfs`) without root: see
    /// [`crate::rootless::store_root`]. A user with no home gets [`DEFAULT_ROOT`], whose
    /// errors then name it.
    pub fn from_env() -> Store {
        let root = crate::rootless::store_root(&crate::rootless::Env::current())
            .unwrap_or_else(|_| PathBuf::from(DEFAULT_ROOT));
        Store { root }
    }

    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The directory of the layer with this digest (`sha256:<hex>` or `<hex>`).
    pub fn layer_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("not a sha256 digest: {digest:?}");
        }
        Ok(self.layers_dir().join(hex))
    }

    /// The directory of the image called `name`.
    pub fn image_dir(&self, name: &str) -> Result<PathBuf> {
        validate_image_name(name)?;
        Ok(self.images_dir().join(name))
    }

    /// Find an image by store name, or by path to an image directory.
    pub fn find_image(&self, name_or_path: &str) -> Result<(PathBuf, Image)> {
        let as_path = Path::new(name_or_path);
        let dir = if as_path.join(IMAGE_FILE).is_file() {
            as_path.to_path_buf()
        } else {
            let dir = self.image_dir(name_or_path)?;
            if !dir.join(IMAGE_FILE).is_file() {
                bail!(
                    "unknown image {name_or_path:?}: no {} in {} and no image directory at that path",
                    IMAGE_FILE,
                    dir.display()
                );
            }
            dir
        };
        let image = Image::load(&dir)?;
        Ok((dir, image))
    }

    /// Every image in the store, sorted by name.
    pub fn list_images(&self) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        let dir = self.images_dir();
        if !dir.exists() {
            return Ok(out);
        }
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            if entry.path().join(IMAGE_FILE).is_file() {
                out.push(Image::load(&entry.path())?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

impl Image {
    /// Read `DIR/image.json`.
    pub fn load(dir: &Path) -> Result<Image> {
        let file = dir.join(IMAGE_FILE);
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
    }

    /// Write `DIR/image.json` atomically (a uniquely named temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{IMAGE_FILE}."))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        // tempfile makes it 0600; image.json is as readable as the layers it names.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .and_then(|()| tmp.write_all(serde_json::to_string_pretty(self)?.as_bytes()))
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        let file = dir.join(IMAGE_FILE);
        tmp.persist(&file)
            .with_context(|| format!("renaming into place as {}", file.display()))?;
        Ok(())
    }

    /// Absolute layer directories, bottom first.
    pub fn layer_dirs(&self, image_dir: &Path) -> Vec<PathBuf> {
        self.layers
            .iter()
            .map(|l| image_dir.join(&l.path))
            .collect()
    }
}

/// A staging directory (see [`Store::staging_dir`]), removed on drop, holding the store's
/// shared lock while it lives.
pub struct Staging {
    dir: tempfile::TempDir,
    _lock: Flock<fs::File>,
}

impl Staging {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A layer that [`Store::install_layer`] put in place (or found already there).
#[derive(Debug, Clone)]
pub struct InstalledLayer {
    pub digest: String,
    pub path: PathBuf,
    /// False when the store already held a layer with this digest (the staged copy was dropped).
    pub new: bool,
}

impl Store {
    /// `ROOT/tmp`: staging area on the store's filesystem, so finished work is renamed into place.
    pub fn tmp_root(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh private staging directory under `ROOT/tmp`, removed when dropped. It holds the
    /// store's shared lock, so `gc` waits until the work is saved (or dropped).
    pub fn staging_dir(&self, what: &str) -> Result<Staging> {
        let lock = self.lock(false)?;
        let tmp = self.tmp_root();
        fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{what}-"))
            .tempdir_in(&tmp)
            .with_context(|| format!("creating a staging directory in {}", tmp.display()))?;
        Ok(Staging { dir, _lock: lock })
    }

    /// Make the store root and `ROOT/layers` private: created mode 0700, or tightened to 0700
    /// (with a warning) when another user could traverse them. Layers keep device nodes with
    /// their image's mode (a `/dev/mem`-like node of mode 0644 is possible); two 0700
    /// directories above them keep every other user from reaching one.
    pub fn secure(&self) -> Result<()> {
        if let Ok(md) = fs::metadata(&self.root) {
            // `--store /tmp` must not make /tmp private to root.
            let mode = md.permissions().mode() & 0o7777;
            if md.is_dir() && mode & 0o1002 != 0 {
                bail!(
                    "{} (mode {mode:04o}) is a directory shared by all users: give the store a \
                     directory of its own",
                    self.root.display()
                );
            }
        }
        private_dir(&self.root)?;
        private_dir(&self.root.join("layers"))
    }

    /// `ROOT/lock`, shared (work that adds to the store) or exclusive (`gc`).
    pub fn lock(&self, exclusive: bool) -> Result<Flock<fs::File>> {
        self.secure()?;
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let how = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, how)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("flock {}", path.display()))
    }

    /// Move the finished layer tree at `staged` (inside [`Store::staging_dir`]) into
    /// `layers/sha256/<hex>`, keyed by the digest of its deterministic tar. When the store already
    /// has that digest, the staged tree is left where it is (its staging dir removes it).
    ///
    /// The layer root's own metadata is not part of the digest (the tar has no root entry), so
    /// layers that differ only there share a directory: the first one installed.
    pub fn install_layer(&self, staged: &Path) -> Result<InstalledLayer> {
        let digest = crate::tarball::layer_digest(staged)?;
        let path = self.layer_path(&digest)?;
        if path.is_dir() {
            return Ok(InstalledLayer {
                digest,
                path,
                new: false,
            });
        }
        // The layer's name promises its content: get the content on disk before the name.
        let dir =
            fs::File::open(staged).with_context(|| format!("opening {}", staged.display()))?;
        nix::unistd::syncfs(&dir).with_context(|| format!("syncfs {}", staged.display()))?;
        self.secure()?;
        let parent = self.layers_dir();
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        match fs::rename(staged, &path) {
            Ok(()) => Ok(InstalledLayer {
                digest,
                path,
                new: true,
            }),
            // Another process installed the same layer between our check and the rename.
            Err(_) if path.is_dir() => Ok(InstalledLayer {
                digest,
                path,
                new: false,
            }),
            Err(e) => Err(e)
                .with_context(|| format!("renaming {} to {}", staged.display(), path.display())),
        }
    }

    /// The reference an image in this store uses for a layer in this store.
    pub fn layer_ref(&self, digest: &str) -> Result<LayerRef> {
        let hex = self
            .layer_path(digest)?
            .file_name()
            .map(PathBuf::from)
            .context("layer path has no name")?;
        Ok(LayerRef {
            digest: format!("sha256:{}", hex.display()),
            path: Path::new("../../layers/sha256").join(hex),
        })
    }

    /// The layers of `image` (whose directory is `image_dir`) as references valid from an image
    /// directory of this store: store layers by their store path, others by absolute path.
    pub fn rebase_layers(&self, image_dir: &Path, image: &Image) -> Result<Vec<LayerRef>> {
        let mut out = Vec::new();
        for layer in &image.layers {
            if self
                .layer_path(&layer.digest)
                .map(|p| p.is_dir())
                .unwrap_or(false)
            {
                out.push(self.layer_ref(&layer.digest)?);
            } else {
                let abs = image_dir.join(&layer.path);
                let abs = abs.canonicalize().with_context(|| {
                    format!(
                        "layer {} of image {}: {}",
                        layer.digest,
                        image.name,
                        abs.display()
                    )
                })?;
                out.push(LayerRef {
                    digest: layer.digest.clone(),
                    path: abs,
                });
            }
        }
        Ok(out)
    }

    /// Write `image` as `images/<name>/image.json` (atomically); returns the image directory.
    pub fn save_image(&self, image: &Image) -> Result<PathBuf> {
        let dir = self.image_dir(&image.name)?;
        image.save(&dir)?;
        Ok(dir)
    }

    /// Every layer directory in the store: digest and path, sorted by digest.
    pub fn list_layers(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        let dir = self.layers_dir();
        if !dir.exists() {
            return Ok(out);
        }
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(path) = self.layer_path(&name) {
                out.push((format!("sha256:{name}"), path));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Create `dir` mode [`PRIVATE_MODE`] (its parents as usual), or tighten it to that mode when
/// group or others have any permission on it. A symlinked store root is followed.
fn private_dir(dir: &Path) -> Result<()> {
    let md = match fs::metadata(dir) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            match fs::DirBuilder::new().mode(PRIVATE_MODE).create(dir) {
                Ok(()) => {}
                // Another process made it first: check what it made.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("mkdir {}", dir.display())),
            }
            fs::metadata(dir).with_context(|| format!("stat {}", dir.display()))?
        }
        Err(e) => return Err(e).with_context(|| format!("stat {}", dir.display())),
    };
    if !md.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mode = md.permissions().mode() & 0o7777;
    if mode != PRIVATE_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_MODE))
            .with_context(|| format!("chmod {:o} {}", PRIVATE_MODE, dir.display()))?;
        // A new directory's umask-reduced mode is not worth a warning; a wider one is.
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the store directory {} was mode {mode:04o}: other users could reach the layers \
                 in it (device nodes included); tightened to {PRIVATE_MODE:04o}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Image names: what docker accepts for a repository name, plus an optional `:tag`.
pub fn validate_image_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
        && !name.starts_with('.')
        && !name.starts_with('-');
    if !ok {
        bail!("invalid image name {name:?}: use letters, digits, '.', '_', '-', ':'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_round_trips_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let image = Image {
            name: "demo".into(),
            layers: vec![LayerRef {
                digest: format!("sha256:{}", "a".repeat(64)),
                path: PathBuf::from("../../layers/sha256").join("a".repeat(64)),
            }],
            config: ImageConfig {
                cmd: vec!["/bin/sh".into()],
                ..Default::default()
            },
            provenance: Provenance {
                created: Some("2020-09-13T12:26:40Z".into()),
                history: vec![History {
                    created_by: Some("test".into()),
                    ..Default::default()
                }],
            },
        };
        image.save(dir.path()).unwrap();
        assert_eq!(Image::load(dir.path()).unwrap(), image);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(IMAGE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        image.save(dir.path()).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary files left"
        );
    }

    #[test]
    fn a_shared_directory_is_never_made_a_private_store_root() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let err = Store::at(dir.path()).secure().unwrap_err().to_string();
        assert!(err.contains("shared by all users"), "{err}");
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "left as it was");
        assert!(!dir.path().join("layers").exists());
        // A directory of its own below it is fine.
        let store = Store::at(dir.path().join("store"));
        store.secure().unwrap();
        let mode = fs::metadata(store.root()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, PRIVATE_MODE);
    }

    #[test]
    fn rejects_bad_names_and_digests() {
        assert!(validate_image_name("../etc").is_err());
        assert!(validate_image_name("demo:latest").is_ok());
        let store = Store::at("/nonexistent");
        assert!(store.layer_path("sha256:zz").is_err());
        let err = store.find_image("nope").unwrap_err().to_string();
        assert!(err.contains("unknown image"), "{err}");
    }
}
