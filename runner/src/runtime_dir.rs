//! Where `runner run` keeps a user's runtime state: what podman keeps in its runroot
//! (`/run/user/UID/containers`) rather than in its storage. For runner that is, per container,
//! the union's mount point, the init layer (the generated hostname, hosts and resolv.conf, as
//! podman's `userdata`) and the logs of unionfs and slirp4netns. The writable layer and the
//! container's record (`state.json`, which `ps` and `commit` read, as podman's database in its
//! graphroot) stay in the store, so a kept container outlives a logout or a reboot.
//!
//! The directory is chosen as podman chooses its runroot, by the user's own process (outside
//! the user namespace, where owners are the host's): `$XDG_RUNTIME_DIR/runner` when
//! `$XDG_RUNTIME_DIR` is an absolute directory the user owns; else `/run/user/UID/runner` when
//! that directory is the user's; else `$TMPDIR/runner-run-UID` (`/tmp` without `$TMPDIR`).
//! The directory is made 0700 and refused when it exists but is not a directory of the user's
//! with mode 0700: in a shared `/tmp` another user could have made it first.
//!
//! Root keeps its layout (everything in `STORE/containers/ID`).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Passed from the outer runner to the inner one (root in its namespace, which cannot tell the
/// user's directories from others').
pub const ENV: &str = "RUNNER_RUNTIME_DIR";

/// What the choice depends on.
#[derive(Debug, Clone)]
pub struct Env {
    pub xdg_runtime_dir: Option<OsString>,
    pub tmpdir: Option<OsString>,
    /// `/run/user` on a real system.
    pub run_user: PathBuf,
    pub uid: u32,
}

impl Env {
    pub fn current() -> Env {
        Env {
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            tmpdir: std::env::var_os("TMPDIR"),
            run_user: PathBuf::from("/run/user"),
            uid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// A directory `uid` owns (not a symlink).
fn owned_dir(p: &Path, uid: u32) -> bool {
    p.is_absolute() && fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.uid() == uid)
}

/// The user's runtime directory for runner, made 0700 if absent, checked if present.
pub fn choose(env: &Env) -> Result<PathBuf> {
    let xdg = match env.xdg_runtime_dir.as_ref().map(PathBuf::from) {
        Some(d) if owned_dir(&d, env.uid) => Some(d),
        Some(d) => {
            // As after `su`: the variable names another user's directory.
            tracing::warn!(
                "XDG_RUNTIME_DIR {} is not a directory of yours (uid {}); not using it",
                d.display(),
                env.uid
            );
            None
        }
        None => None,
    };
    let run_user = Some(env.run_user.join(env.uid.to_string())).filter(|d| owned_dir(d, env.uid));
    let dir = match xdg.or(run_user) {
        Some(base) => base.join("runner"),
        None => {
            let tmp = env
                .tmpdir
                .as_ref()
                .map(PathBuf::from)
                .filter(|t| t.is_absolute())
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            tmp.join(format!("runner-run-{}", env.uid))
        }
    };
    private_dir(&dir, env.uid)?;
    Ok(dir)
}

/// Make `dir` 0700, or check that it is a directory `uid` owns that no one else may enter.
fn private_dir(dir: &Path, uid: u32) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("creating the runtime directory {}", dir.display()))
        }
    }
    let md = fs::symlink_metadata(dir)
        .with_context(|| format!("checking the runtime directory {}", dir.display()))?;
    if !md.is_dir() {
        bail!(
            "the runtime directory {} is not a directory (a symlink or a file is refused)",
            dir.display()
        );
    }
    if md.uid() != uid {
        bail!(
            "the runtime directory {} is owned by uid {}, not by you (uid {uid}): remove it or set \
             XDG_RUNTIME_DIR to a directory of yours",
            dir.display(),
            md.uid()
        );
    }
    if md.mode() & 0o077 != 0 {
        bail!(
            "the runtime directory {} has mode {:o}; it must be 0700 (chmod 700 it)",
            dir.display(),
            md.mode() & 0o7777
        );
    }
    Ok(())
}

/// The containers' runtime directories in the inner runner of a rootless run (`None` as root:
/// everything stays in the store).
pub fn containers_root() -> Result<Option<PathBuf>> {
    if !crate::rootless::inside() {
        return Ok(None);
    }
    match std::env::var_os(ENV) {
        Some(d) if Path::new(&d).is_absolute() => Ok(Some(PathBuf::from(d).join("containers"))),
        _ => bail!("{ENV} is not set to an absolute path by the outer runner"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env(tmp: &Path, xdg: Option<&Path>, uid: u32) -> Env {
        Env {
            xdg_runtime_dir: xdg.map(|p| p.as_os_str().to_owned()),
            tmpdir: Some(tmp.join("tmp").into_os_string()),
            run_user: tmp.join("run-user"),
            uid,
        }
    }

    #[test]
    fn xdg_runtime_dir_when_it_is_the_users() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let xdg = tmp.path().join("xdg");
        fs::create_dir(&xdg).unwrap();
        let got = choose(&env(tmp.path(), Some(&xdg), me)).unwrap();
        assert_eq!(got, xdg.join("runner"));
        assert_eq!(fs::metadata(&got).unwrap().mode() & 0o7777, 0o700);
        // Again: the existing directory is accepted.
        assert_eq!(choose(&env(tmp.path(), Some(&xdg), me)).unwrap(), got);
    }

    #[test]
    fn run_user_then_tmpdir_when_xdg_is_unset_or_not_the_users() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        fs::create_dir(tmp.path().join("tmp")).unwrap();
        // XDG_RUNTIME_DIR of another uid, no /run/user/UID: $TMPDIR/runner-run-UID.
        let xdg = tmp.path().join("xdg");
        fs::create_dir(&xdg).unwrap();
        let other = me + 4242;
        let got = choose(&env(tmp.path(), Some(&xdg), other));
        // The test's process cannot make a directory of another uid, so the fallback exists
        // only when made for it; made by this process, it is refused as not that uid's.
        let err = format!("{:#}", got.unwrap_err());
        assert!(
            err.contains(&format!("runner-run-{other}")) && err.contains("not by you"),
            "{err}"
        );
        // Unset: /run/user/UID when it is the user's.
        let ru = tmp.path().join("run-user").join(me.to_string());
        fs::create_dir_all(&ru).unwrap();
        assert_eq!(
            choose(&env(tmp.path(), None, me)).unwrap(),
            ru.join("runner")
        );
        fs::remove_dir_all(tmp.path().join("run-user")).unwrap();
        let fallback = tmp.path().join(format!("tmp/runner-run-{me}"));
        assert_eq!(choose(&env(tmp.path(), None, me)).unwrap(), fallback);
        assert_eq!(fs::metadata(&fallback).unwrap().mode() & 0o7777, 0o700);
    }

    #[test]
    fn a_runtime_dir_others_may_enter_or_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        fs::create_dir(tmp.path().join("tmp")).unwrap();
        let fallback = tmp.path().join(format!("tmp/runner-run-{me}"));
        fs::create_dir(&fallback).unwrap();
        fs::set_permissions(&fallback, fs::Permissions::from_mode(0o755)).unwrap();
        let err = format!("{:#}", choose(&env(tmp.path(), None, me)).unwrap_err());
        assert!(err.contains("mode 755") && err.contains("0700"), "{err}");
        fs::remove_dir(&fallback).unwrap();
        std::os::unix::fs::symlink(tmp.path(), &fallback).unwrap();
        let err = format!("{:#}", choose(&env(tmp.path(), None, me)).unwrap_err());
        assert!(err.contains("not a directory"), "{err}");
    }
}
