//! The init layer: what the runner writes for one container, between its writable layer and the
//! image (docker's `-init` layer). It holds `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, and
//! the mount points the container's setup needs (`/proc`, `/sys`, `/dev`, volume targets and the
//! working directory), so setting up the root never writes through the union (and works with
//! `--read-only`). `commit` leaves these paths out.
#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::spec::Net;

/// The files the runner writes in every init layer (relative paths).
pub const INIT_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// What goes into an init layer.
#[derive(Debug, Clone)]
pub struct InitLayer<'a> {
    pub hostname: &'a str,
    pub net: Net,
    /// Directories to exist in the container (absolute container paths).
    pub dirs: Vec<PathBuf>,
    /// Empty files to exist (mount points for file volumes).
    pub files: Vec<PathBuf>,
}

/// Write `layer` into `init`; `layers_top_first` are the image layers, whose directory modes and
/// owners are copied for the directories made here (so `/tmp` stays 1777).
pub fn write(init: &Path, layer: &InitLayer<'_>, layers_top_first: &[PathBuf]) -> Result<()> {
    mkdir_like(init, Path::new("etc"), layers_top_first)?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        layer.hostname
    );
    let resolv = match layer.net {
        // The host's resolvers are reachable only from the host's network.
        Net::Host => fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        Net::None => "# no network: the container has only lo\n".to_string(),
        Net::Slirp4netns { .. } => format!("nameserver {}\n", crate::slirp::DNS),
    };
    for (rel, text) in INIT_FILES
        .iter()
        .zip([format!("{}\n", layer.hostname), hosts, resolv])
    {
        let path = init.join(rel);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    for d in ["proc", "sys", "dev"]
        .iter()
        .map(PathBuf::from)
        .chain(layer.dirs.iter().map(|d| rel(d)))
    {
        mkdir_like(init, &d, layers_top_first)?;
    }
    for f in &layer.files {
        let rel = rel(f);
        if let Some(parent) = rel.parent() {
            mkdir_like(init, parent, layers_top_first)?;
        }
        let path = init.join(&rel);
        if !path.exists() {
            fs::write(&path, b"").with_context(|| format!("creating {}", path.display()))?;
        }
    }
    Ok(())
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

/// `mkdir -p init/rel`, each new directory taking the mode and owner of the same path in the
/// topmost image layer that has it (0755 root otherwise).
fn mkdir_like(init: &Path, rel: &Path, layers_top_first: &[PathBuf]) -> Result<()> {
    let mut cur = PathBuf::new();
    for comp in rel.components() {
        cur.push(comp);
        let target = init.join(&cur);
        if target.is_dir() {
            continue;
        }
        let like = layers_top_first.iter().find_map(|l| {
            fs::symlink_metadata(l.join(&cur))
                .ok()
                .filter(|m| m.is_dir())
        });
        let mode = like.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o755);
        fs::DirBuilder::new()
            .mode(mode)
            .create(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        // The umask may have cut the mode; set it exactly, then the owner.
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", target.display()))?;
        if let Some(m) = like {
            std::os::unix::fs::lchown(&target, Some(m.uid()), Some(m.gid()))
                .with_context(|| format!("chown {}", target.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_and_mount_points_with_image_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let (init, image) = (tmp.path().join("init"), tmp.path().join("layer"));
        fs::create_dir_all(image.join("tmp")).unwrap();
        fs::set_permissions(image.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir(&init).unwrap();
        let layer = InitLayer {
            hostname: "box",
            net: Net::None,
            dirs: vec!["/tmp/work".into(), "/data".into()],
            files: vec!["/etc/app.conf".into()],
        };
        write(&init, &layer, &[image]).unwrap();
        assert_eq!(
            fs::read_to_string(init.join("etc/hostname")).unwrap(),
            "box\n"
        );
        assert!(fs::read_to_string(init.join("etc/hosts"))
            .unwrap()
            .contains("127.0.1.1\tbox"));
        assert!(init.join("etc/resolv.conf").is_file());
        for d in ["proc", "sys", "dev", "tmp/work", "data"] {
            assert!(init.join(d).is_dir(), "{d}");
        }
        assert_eq!(
            fs::metadata(init.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(
            fs::metadata(init.join("data")).unwrap().mode() & 0o7777,
            0o755
        );
        assert!(init.join("etc/app.conf").is_file());
    }
}
