//! Who am I, and what may I do: with [`crate::userns`] (which makes the user namespace), the one
//! place in layer-tool that asks whether it runs as root. The rest of the crate asks these,
//! never `geteuid()` itself.
//!
//! Without root, layer-tool:
//! - keeps its own store, `$XDG_DATA_HOME/unionfs` (default `~/.local/share/unionfs`), unless
//!   `$UNIONFS_STORE` or `--store` says otherwise ([`store_root`]);
//! - works in a user namespace of the user's own ([`crate::userns`]), where it may give files
//!   the ids of the user's subordinate range; an id beyond the mapping cannot be given: the
//!   owner, group and mode a layer records are then kept in the xattr [`OVERRIDE_STAT_XATTR`]
//!   (`UID:GID:0MODE`, as containers/storage's rootless drivers and fuse-overlayfs write it), and
//!   `export` puts them back in the tar ([`crate::fsmeta::Meta::apply`],
//!   [`crate::fsmeta::Meta::of_path`]);
//! - cannot make device nodes (only root of the initial namespace may): they are skipped with a
//!   warning naming each one, and the import or build goes on (the layer then lacks them, and its
//!   tar is no longer the one its digest names).

use std::path::PathBuf;

/// The xattr that records a file's owner and mode where an unprivileged process could not set
/// them (containers/storage `user.containers.override_stat`).
pub const OVERRIDE_STAT_XATTR: &str = "user.containers.override_stat";

/// True when running as root (of whatever user namespace: see [`crate::userns::initial_root`]
/// for who may make device nodes).
pub fn is_root() -> bool {
    crate::userns::is_root()
}

/// What [`store_root`] reads from the environment (passed in, so the choice is a pure function).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub root: bool,
    pub unionfs_store: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Env {
    pub fn current() -> Env {
        Env {
            root: is_root(),
            unionfs_store: std::env::var_os("UNIONFS_STORE").map(PathBuf::from),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }
}

/// The store root: `$UNIONFS_STORE`; else as root [`crate::store::DEFAULT_ROOT`]; else
/// `$XDG_DATA_HOME/unionfs`, `$HOME/.local/share/unionfs` (the XDG base directory rules: a
/// relative `$XDG_DATA_HOME` is ignored). A user with neither gets an error, never a shared
/// directory such as /tmp.
pub fn store_root(env: &Env) -> anyhow::Result<PathBuf> {
    if let Some(s) = env
        .unionfs_store
        .as_ref()
        .filter(|s| !s.as_os_str().is_empty())
    {
        return Ok(s.clone());
    }
    if env.root {
        return Ok(PathBuf::from(crate::store::DEFAULT_ROOT));
    }
    if let Some(d) = env.xdg_data_home.as_ref().filter(|d| d.is_absolute()) {
        return Ok(d.join("unionfs"));
    }
    if let Some(h) = env.home.as_ref().filter(|h| h.is_absolute()) {
        return Ok(h.join(".local/share/unionfs"));
    }
    anyhow::bail!(
        "no store for a user without root: set $UNIONFS_STORE, $XDG_DATA_HOME or $HOME, or pass --store"
    )
}

/// `UID:GID:0MODE` (mode: permission bits and, for what could not be made, the file type bits).
pub fn format_override_stat(uid: u32, gid: u32, mode: u32) -> String {
    format!("{uid}:{gid}:0{mode:o}")
}

/// Parses [`format_override_stat`]'s form; `None` when malformed.
pub fn parse_override_stat(value: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut f = s.trim().splitn(3, ':');
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let mode = u32::from_str_radix(f.next()?, 8).ok()?;
    Some((uid, gid, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_root_follows_unionfs_store_then_root_then_xdg() {
        let user = Env {
            root: false,
            unionfs_store: None,
            xdg_data_home: Some("/home/u/.data".into()),
            home: Some("/home/u".into()),
        };
        assert_eq!(
            store_root(&user).unwrap(),
            PathBuf::from("/home/u/.data/unionfs")
        );
        let no_xdg = Env {
            xdg_data_home: Some("relative".into()),
            ..user.clone()
        };
        assert_eq!(
            store_root(&no_xdg).unwrap(),
            PathBuf::from("/home/u/.local/share/unionfs")
        );
        let explicit = Env {
            unionfs_store: Some("/srv/s".into()),
            ..user.clone()
        };
        assert_eq!(store_root(&explicit).unwrap(), PathBuf::from("/srv/s"));
        let root = Env {
            root: true,
            ..user.clone()
        };
        assert_eq!(
            store_root(&root).unwrap(),
            PathBuf::from("/var/lib/unionfs")
        );
        let nothing = Env {
            root: false,
            ..Env::default()
        };
        let e = store_root(&nothing).unwrap_err().to_string();
        assert!(e.contains("UNIONFS_STORE"), "{e}");
    }

    #[test]
    fn override_stat_round_trips() {
        let v = format_override_stat(0, 42, 0o4755);
        assert_eq!(v, "0:42:04755");
        assert_eq!(parse_override_stat(v.as_bytes()), Some((0, 42, 0o4755)));
        assert_eq!(parse_override_stat(b"0:0"), None);
        assert_eq!(parse_override_stat(b"a:0:0644"), None);
    }
}
