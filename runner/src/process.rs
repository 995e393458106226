//! What the container executes: argv, environment, user and working directory, from the image
//! config and the run options; and how a user spec and a command name are resolved inside the
//! container's root.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use layer_tool::store::ImageConfig;

/// docker's default `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The process to start, before its user is resolved in the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// `UID[:GID]` or `NAME[:GROUP]`; empty is root.
    pub user: String,
    /// Absolute; `/` when neither the image nor the options set one.
    pub workdir: String,
}

/// Merge the image config with the options, as docker does: the command replaces the image's
/// cmd (the entrypoint stays), `-e` overrides image variables, and PATH, HOSTNAME (and TERM with a
/// tty) are set when missing.
pub fn process_spec(
    config: &ImageConfig,
    command: &[String],
    env: &[String],
    user: Option<&str>,
    workdir: Option<&str>,
    hostname: &str,
    tty: bool,
) -> Result<ProcessSpec> {
    let mut argv = config.entrypoint.clone();
    argv.extend(if command.is_empty() {
        config.cmd.clone()
    } else {
        command.to_vec()
    });
    if argv.is_empty() {
        bail!("no command given and the image configures none");
    }
    let mut out_env: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or("");
        out_env.retain(|e| e.split('=').next() != Some(key));
        out_env.push(kv.to_string());
    };
    set(&format!("PATH={DEFAULT_PATH}"));
    set(&format!("HOSTNAME={hostname}"));
    if tty {
        set("TERM=xterm");
    }
    for kv in config.env.iter().chain(env).filter(|e| !e.is_empty()) {
        set(kv);
    }
    let workdir = workdir
        .map(str::to_string)
        .or_else(|| Some(config.workdir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    Ok(ProcessSpec {
        argv,
        env: out_env,
        user: user
            .map(str::to_string)
            .unwrap_or_else(|| config.user.clone()),
        workdir,
    })
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Resolve `user` (`UID[:GID]`, `NAME[:GROUP]`, or empty for root) against the texts of the
/// container's `/etc/passwd` and `/etc/group` (either may be empty).
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<User> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let by_uid = |uid: u32| entries.iter().find(|f| f[2].parse() == Ok(uid));
    let (uid, mut gid, home) = if let Ok(uid) = u.parse::<u32>() {
        match by_uid(uid) {
            Some(f) => (uid, f[3].parse().unwrap_or(uid), f[5].to_string()),
            // A numeric uid needs no passwd entry; its group is then 0, as with docker.
            None => (uid, 0, "/".to_string()),
        }
    } else {
        let Some(f) = entries.iter().find(|f| f[0] == u) else {
            bail!("unable to find user {u}: no matching entries in passwd file");
        };
        (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
        )
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    }
    Ok(User {
        uid,
        gid,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

/// Why a command cannot be executed, with docker's wording and exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    pub code: i32,
    pub message: String,
}

/// Find `cmd` as execvp would with `path` (the container's PATH), looking under `root` (the
/// container's root, `/` once inside it). `exists` tells whether a candidate is an executable
/// file; the seam keeps this testable.
pub fn find_command(
    cmd: &str,
    path: &str,
    root: &Path,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, ExecError> {
    if cmd.is_empty() {
        return Err(ExecError {
            code: 127,
            message: "exec: \"\": executable file not found in $PATH".into(),
        });
    }
    if cmd.contains('/') {
        return Ok(PathBuf::from(cmd));
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = Path::new(dir).join(cmd);
        let on_disk = root.join(cand.strip_prefix("/").unwrap_or(&cand));
        if exists(&on_disk) {
            return Ok(cand);
        }
    }
    Err(ExecError {
        code: 127,
        message: format!("exec: \"{cmd}\": executable file not found in $PATH"),
    })
}

/// The exit code and message for an `execve` failure (126 for found but not executable).
pub fn exec_failure(cmd: &str, errno: nix::errno::Errno) -> ExecError {
    let code = match errno {
        nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR => 127,
        _ => 126,
    };
    ExecError {
        code,
        message: format!("exec: \"{cmd}\": {}", errno.desc().to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn command_env_workdir_and_user_merge_like_docker() {
        let config = ImageConfig {
            env: s(&["PATH=/bin", "A=image"]),
            entrypoint: s(&["/bin/ep"]),
            cmd: s(&["default"]),
            workdir: "/srv".into(),
            user: "1000".into(),
        };
        let p = process_spec(
            &config,
            &[],
            &s(&["A=cli", "B=2"]),
            None,
            None,
            "box",
            false,
        )
        .unwrap();
        assert_eq!(p.argv, ["/bin/ep", "default"]);
        assert_eq!(p.env, ["HOSTNAME=box", "PATH=/bin", "A=cli", "B=2"]);
        assert_eq!(p.workdir, "/srv");
        assert_eq!(p.user, "1000");
        let p = process_spec(&config, &s(&["x"]), &[], Some("0"), Some("/tmp"), "h", true).unwrap();
        assert_eq!(p.argv, ["/bin/ep", "x"]);
        assert!(p.env.contains(&"TERM=xterm".to_string()));
        assert_eq!((p.user.as_str(), p.workdir.as_str()), ("0", "/tmp"));
        let empty = ImageConfig::default();
        assert!(process_spec(&empty, &[], &[], None, None, "h", false).is_err());
        let p = process_spec(&empty, &s(&["sh"]), &[], None, None, "h", false).unwrap();
        assert_eq!(p.workdir, "/");
        assert!(p.env[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn users_resolve_by_number_and_name() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        assert_eq!(
            resolve_user("", passwd, group).unwrap(),
            User {
                uid: 0,
                gid: 0,
                home: "/root".into()
            }
        );
        let u = resolve_user("nobody", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid), (65534, 65534));
        let u = resolve_user("1000:1000", passwd, group).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/"));
        let u = resolve_user("nobody:staff", passwd, group).unwrap();
        assert_eq!(u.gid, 50);
        assert!(resolve_user("alice", passwd, group)
            .unwrap_err()
            .to_string()
            .contains("unable to find user"));
        assert!(resolve_user("0:nogroup", passwd, group).is_err());
    }

    #[test]
    fn commands_are_found_on_path_with_dockers_messages() {
        let root = Path::new("/r");
        let exists = |p: &Path| p == Path::new("/r/bin/sh");
        assert_eq!(
            find_command("sh", "/usr/bin:/bin", root, exists).unwrap(),
            Path::new("/bin/sh")
        );
        assert_eq!(
            find_command("/x/y", "", root, exists).unwrap(),
            Path::new("/x/y")
        );
        let e = find_command("nope", "/bin", root, exists).unwrap_err();
        assert_eq!(e.code, 127);
        assert_eq!(
            e.message,
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(exec_failure("/etc", nix::errno::Errno::EACCES).code, 126);
        assert_eq!(exec_failure("/nope", nix::errno::Errno::ENOENT).code, 127);
    }
}
