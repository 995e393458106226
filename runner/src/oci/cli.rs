//! The OCI runtime command line, with runc's commands and flags, so that engines (podman,
//! containerd shims, conmon) can drive `runner` as they drive runc.
//!
//! `runner run IMAGE CMD` (docker-style) and `runner ps` (the container list) predate it: a
//! command line is taken as an OCI one when it carries a runtime global flag (`--root`, `--log`,
//! …), names a command only the OCI interface has, or uses `run`/`ps` with OCI arguments
//! ([`is_oci_command_line`]).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The runtime's global flags and command.
#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0"),
    about = "OCI runtime interface of runner (runc-compatible commands)"
)]
pub struct OciCli {
    /// Directory for the containers' state.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write errors and warnings to this file (default: stderr).
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// `text` or `json` (one object per line: level, msg, time).
    #[arg(long = "log-format", global = true, default_value = "text")]
    pub log_format: String,
    /// Log debug messages too.
    #[arg(long, global = true)]
    pub debug: bool,
    /// cgroupsPath as systemd slices: not supported (use cgroupfs).
    #[arg(long = "systemd-cgroup", global = true)]
    pub systemd_cgroup: bool,
    /// Accepted for compatibility; only `false` (or `auto` as root) is supported.
    #[arg(long, global = true, value_name = "BOOL")]
    pub rootless: Option<String>,
    #[command(subcommand)]
    pub command: OciCommand,
}

/// Flags shared by `create` and `run`.
#[derive(Debug, clap::Args, Clone)]
pub struct CreateArgs {
    /// The bundle directory (config.json and the root).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Write the container process's pid here.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket to send the terminal's master end to (process.terminal).
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Use chroot instead of pivot_root.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for compatibility (no session keyring is made).
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// Pass descriptors 3..3+N to the container process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id.
    pub id: String,
}

#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Start a created container's process.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container's process.
    Kill {
        /// Signal every process of the container.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a stopped container (--force: kill it first).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container, wait for it, delete it.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once started.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run a new process in a running container.
    Exec {
        /// A process.json giving the process (instead of COMMAND).
        #[arg(short, long, value_name = "FILE")]
        process: Option<PathBuf>,
        #[arg(long = "console-socket", value_name = "PATH")]
        console_socket: Option<PathBuf>,
        #[arg(long = "pid-file", value_name = "FILE")]
        pid_file: Option<PathBuf>,
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        tty: bool,
        #[arg(long)]
        cwd: Option<String>,
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// UID[:GID].
        #[arg(short, long)]
        user: Option<String>,
        /// Supplementary group ids.
        #[arg(short = 'g', long = "additional-gids")]
        additional_gids: Vec<u32>,
        #[arg(long = "no-new-privs")]
        no_new_privs: bool,
        #[arg(long = "preserve-fds", default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the processes of a container.
    Ps {
        /// `table` or `json` (a list of pids).
        #[arg(short, long, default_value = "table")]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// List the containers under --root.
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print what this runtime supports (runtime-spec features.md) as JSON.
    Features,
    /// Write a default config.json into the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Freeze every process of a running container (its cgroup's freezer).
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
}

/// Global flags of the OCI interface that take a value.
const GLOBAL_WITH_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--rootless", "--criu"];
const GLOBAL_FLAGS: [&str; 2] = ["--debug", "--systemd-cgroup"];
const OCI_ONLY: [&str; 11] = [
    "create", "start", "state", "kill", "delete", "exec", "list", "features", "spec", "pause",
    "resume",
];

/// Whether this command line is for the OCI interface (see the module doc).
pub fn is_oci_command_line(args: &[OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let name = a.split('=').next().unwrap_or(a);
        if GLOBAL_WITH_VALUE.contains(&name) || GLOBAL_FLAGS.contains(&name) {
            return true;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        let rest = &args[i + 1..];
        return match a {
            c if OCI_ONLY.contains(&c) => true,
            "run" => rest.iter().any(|r| {
                let n = r.split('=').next().unwrap_or(r);
                matches!(
                    n,
                    "-b" | "--bundle"
                        | "-d"
                        | "--detach"
                        | "--pid-file"
                        | "--console-socket"
                        | "--keep"
                        | "--preserve-fds"
                        | "--no-new-keyring"
                )
            }),
            "ps" => !rest.is_empty(),
            _ => false,
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(line: &str) -> bool {
        let args: Vec<OsString> = std::iter::once("runner")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect();
        is_oci_command_line(&args)
    }

    #[test]
    fn oci_lines_are_told_from_docker_style_ones() {
        assert!(oci("create --bundle /b c1"));
        assert!(oci("--root /run/x state c1"));
        assert!(oci("--log=/tmp/l --log-format json kill c1 KILL"));
        assert!(oci("run -b /b c1"));
        assert!(oci("run --detach c1"));
        assert!(oci("ps c1"));
        assert!(!oci("run demo true"));
        assert!(!oci("run --rm -e A=b demo sh -c x"));
        assert!(!oci("ps"));
        assert!(!oci("rm c1"));
        assert!(!oci("commit c1 img"));
    }

    #[test]
    fn runc_style_flags_parse() {
        let c = OciCli::try_parse_from([
            "runner",
            "--root",
            "/r",
            "--log",
            "/l",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "--no-new-keyring",
            "c1",
        ])
        .unwrap();
        assert_eq!(c.root.as_deref(), Some(std::path::Path::new("/r")));
        assert!(
            matches!(c.command, OciCommand::Create(ref a) if a.id == "c1" && a.bundle == std::path::Path::new("/b"))
        );
        let c = OciCli::try_parse_from(["runner", "kill", "--all", "c1", "9"]).unwrap();
        assert!(
            matches!(c.command, OciCommand::Kill { all: true, ref signal, .. } if signal.as_deref() == Some("9"))
        );
        let c = OciCli::try_parse_from(["runner", "exec", "-d", "c1", "sh", "-c", "x"]).unwrap();
        assert!(matches!(c.command, OciCommand::Exec { ref command, .. } if command.len() == 3));
    }
}
