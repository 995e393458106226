//! Dispatch of the OCI command line, the small read-only commands (`state`, `list`, `ps`,
//! `features`, `spec`), and the error log engines read (`--log FILE --log-format json`: one
//! `{"level","msg","time"}` object per line, as runc writes it).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::oci::bundle::{LAYERS_ANNOTATION, OCI_VERSION};
use crate::oci::cli::{OciCli, OciCommand};
use crate::oci::exec::{self, ExecOpts};
use crate::oci::lifecycle::{self, CreateOpts};
use crate::oci::state::{self, Root};

/// Run an OCI command line; the process exit code.
pub fn main(cli: OciCli) -> i32 {
    let log = Log {
        file: cli.log.clone(),
        json: cli.log_format == "json",
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            log.error(&format!("{e:#}"));
            1
        }
    }
}

/// Where errors go: stderr always, and the `--log` file when given.
struct Log {
    file: Option<std::path::PathBuf>,
    json: bool,
}

impl Log {
    fn error(&self, msg: &str) {
        let _ = writeln!(std::io::stderr(), "runner: {msg}");
        let Some(path) = &self.file else {
            return;
        };
        let line = if self.json {
            json!({"level": "error", "msg": msg, "time": state::rfc3339_now()}).to_string()
        } else {
            format!("{} error: {msg}", state::rfc3339_now())
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn dispatch(cli: OciCli) -> Result<i32> {
    if matches!(
        cli.command,
        OciCommand::Create(_) | OciCommand::Run { .. } | OciCommand::Exec { .. }
    ) {
        // These start processes that a container can see: never from the host's file.
        crate::exeseal::ensure_sealed()?;
    }
    if cli.systemd_cgroup {
        bail!("--systemd-cgroup: systemd cgroup paths are not supported; use the cgroupfs manager");
    }
    if let Some(r) = cli.rootless.as_deref() {
        crate::rootless::set_oci_rootless(r)?;
    }
    let root = Root::new(cli.root.as_deref());
    let create_opts = |a: &crate::oci::cli::CreateArgs| CreateOpts {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        preserve_fds: a.preserve_fds,
    };
    match cli.command {
        OciCommand::Create(a) => lifecycle::create(&root, &a.id, &create_opts(&a)).map(|()| 0),
        OciCommand::Start { id } => lifecycle::start(&root, &id).map(|()| 0),
        OciCommand::State { id } => {
            let saved = root.load(&id)?;
            let s = state::state_json(&root, &saved);
            println!("{}", serde_json::to_string_pretty(&s)?);
            Ok(0)
        }
        OciCommand::Kill { all, id, signal } => {
            let sig = lifecycle::parse_signal(signal.as_deref().unwrap_or("TERM"))?;
            lifecycle::kill(&root, &id, sig, all).map(|()| 0)
        }
        OciCommand::Delete { force, id } => lifecycle::delete(&root, &id, force).map(|()| 0),
        OciCommand::Run {
            create,
            detach,
            keep,
        } => lifecycle::run(&root, &create.id, &create_opts(&create), detach, keep),
        OciCommand::Exec {
            process,
            console_socket,
            pid_file,
            detach,
            tty,
            cwd,
            env,
            user,
            additional_gids,
            no_new_privs,
            preserve_fds,
            id,
            command,
        } => exec::exec(
            &root,
            &id,
            &ExecOpts {
                process_file: process,
                args: command,
                env,
                cwd,
                user,
                additional_gids,
                tty,
                console_socket,
                pid_file,
                detach,
                no_new_privs,
                preserve_fds,
            },
        ),
        OciCommand::Ps { format, id, .. } => ps(&root, &id, &format).map(|()| 0),
        OciCommand::List { format, quiet } => list(&root, &format, quiet).map(|()| 0),
        OciCommand::Features => {
            println!("{}", serde_json::to_string_pretty(&features())?);
            Ok(0)
        }
        OciCommand::Spec { bundle } => write_default_spec(&bundle).map(|()| 0),
        OciCommand::Pause { id } => lifecycle::freeze(&root, &id, true).map(|()| 0),
        OciCommand::Resume { id } => lifecycle::freeze(&root, &id, false).map(|()| 0),
    }
}

fn ps(root: &Root, id: &str, format: &str) -> Result<()> {
    let saved = root.load(id)?;
    let mut pids: Vec<i32> = saved
        .cgroup_dirs
        .iter()
        .flat_map(|d| crate::cgroup::procs(d))
        .map(|p| p.as_raw())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    match format {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            println!("PID\tCMD");
            for p in pids {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd: Vec<String> = cmd
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                println!("{p}\t{}", cmd.join(" "));
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

fn list(root: &Root, format: &str, quiet: bool) -> Result<()> {
    let mut states = Vec::new();
    for id in root.ids()? {
        if let Ok(saved) = root.load(&id) {
            states.push(state::state_json(root, &saved));
        }
    }
    if quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
            for s in &states {
                println!(
                    "{}\t{}\t{}\t{}\t{}\troot",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created
                );
            }
        }
        other => bail!("--format {other:?}: use table or json"),
    }
    Ok(())
}

/// runtime-spec `features.md`.
pub fn features() -> serde_json::Value {
    let caps: Vec<&str> = crate::caps::ALL_CAPS.to_vec();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": [
            "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "mand",
            "noatime", "nodev", "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime",
            "nosuid", "nosymfollow", "private", "rbind", "relatime", "ro", "rprivate", "rshared",
            "rslave", "runbindable", "rw", "shared", "slave", "strictatime", "suid", "sync",
            "tmpcopyup", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            },
            "apparmor": {"enabled": true},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {
            LAYERS_ANNOTATION: "top-first list of layer directories: the root is a unionfs mount of them under a fresh writable layer",
            "run.unionfs.image-root": "a root.path holding an image.json of the runner's store is mounted the same way"
        }
    })
}

/// `spec`: a default config.json (oci-spec's default: runc's) running `sh`.
fn write_default_spec(bundle: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    if path.exists() {
        bail!("{} already exists", path.display());
    }
    let spec = oci_spec::runtime::Spec::default();
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
