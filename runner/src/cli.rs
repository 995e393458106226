//! Command-line arguments (clap), turned into a validated [`RunSpec`](crate::spec::RunSpec).
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "runner",
    version = concat!(env!("CARGO_PKG_VERSION"), "\nspec: 1.2.0"),
    about = "Run containers on a unionfs root",
    after_help = OCI_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `runner --help` names the OCI runtime interface too (parsed by `oci::cli`).
const OCI_HELP: &str = "\
OCI runtime commands (runc's command line, on runtime-spec bundles, for engines such as podman,
containerd and CRI-O):
  create --bundle DIR ID   set a container up; its process waits for `start`
  start ID | state ID | kill [--all] ID [SIGNAL] | delete [--force] ID | pause ID | resume ID
  run --bundle DIR ID      create, start and wait (--detach: return once started)
  exec ID CMD... | exec --process FILE ID | ps ID | list | features | spec
Global options: --root DIR (default /run/runner), --log FILE, --log-format text|json.
`runner COMMAND --help` shows each command's options.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new container.
    Run(Box<RunArgs>),
    /// List containers (running and kept).
    Ps,
    /// Remove a kept container and its writable layer.
    Rm {
        /// Container names or ids.
        #[arg(required = true)]
        names: Vec<String>,
        /// Kill the container first if it is running.
        #[arg(short, long)]
        force: bool,
    },
    /// Turn a container's writable layer into a new image layer on top of its image.
    Commit {
        /// Container name or id.
        container: String,
        /// Name of the new image.
        image: String,
    },
}

#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// Container name (default: the first 12 characters of its id).
    #[arg(long)]
    pub name: Option<String>,
    /// Remove the container's writable layer when it exits (default: keep it for `commit`).
    #[arg(long)]
    pub rm: bool,
    /// Hostname in the container (default: the short id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Set an environment variable (`KEY=VALUE`, or `KEY` to copy the runner's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory in the container (created when missing).
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User to run as: `UID[:GID]` or a name from the image's /etc/passwd.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Bind mount `HOST:CONTAINER[:ro|rw]`.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// CPU limit in CPUs (for example 0.5): a cfs quota per 100 ms period.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Memory limit (bytes, or with a b/k/m/g suffix); swap is off.
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Maximum number of processes (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// CPUs the container may run on (`0-1,3`).
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Block I/O weight, 10..=1000 (blkio.weight; converted for io.weight on cgroup2).
    #[arg(long = "io-weight", alias = "blkio-weight")]
    pub io_weight: Option<u16>,
    /// Network: `none` (a new namespace with only `lo`, the default), `host`, or (without root)
    /// `slirp4netns[:allow_host_loopback=true]`, a user-mode network.
    #[arg(long, default_value = "none")]
    pub net: String,
    /// Mount the container's root read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Give the command a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Keep stdin attached (docker's -i, as in `-it`). The container always has the runner's
    /// stdin, so this changes nothing; it is accepted for docker's command lines.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run a small init as pid 1 that forwards signals and reaps orphans. Without it the command
    /// is pid 1, and a pid 1 without a handler ignores SIGTERM and SIGINT (as in docker).
    #[arg(long)]
    pub init: bool,
    /// Enter the root with chroot instead of pivot_root (what runc calls --no-pivot); used
    /// automatically when pivot_root is refused.
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Start the container in a new user namespace. Its uids and gids map to the same host ids
    /// (the layers' owners stay right under unionfs's permission checks), but its capabilities
    /// then hold only inside its own namespaces, never on host-owned objects.
    #[arg(long)]
    pub userns: bool,
    /// When to pull the image from its registry: `missing` (the default, as docker), `always`,
    /// or `never`.
    #[arg(long, value_enum, default_value = "missing")]
    pub pull: PullArg,
    /// Image name in the store, a path to an image directory, or a registry reference
    /// (`alpine`, `127.0.0.1:5000/team/app:v1`), pulled when missing.
    pub image: String,
    /// Command and arguments (default: the image's entrypoint and cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `--pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PullArg {
    #[default]
    Missing,
    Always,
    Never,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_interactive_flags_are_accepted() {
        for flags in [
            &["-it"][..],
            &["-i", "-t"],
            &["--interactive", "--tty"],
            &["-i"],
        ] {
            let mut argv = vec!["runner", "run", "--rm"];
            argv.extend_from_slice(flags);
            argv.extend_from_slice(&["demo", "sh"]);
            let cli = Cli::try_parse_from(&argv).unwrap();
            let Command::Run(args) = cli.command else {
                panic!()
            };
            assert!(args.interactive, "{flags:?}");
            assert_eq!(args.tty, flags.len() > 1 || flags[0] == "-it", "{flags:?}");
            assert_eq!(args.image, "demo");
        }
    }

    #[test]
    fn run_options_stop_at_the_image() {
        let cli = Cli::try_parse_from([
            "runner",
            "run",
            "--rm",
            "-e",
            "A=1",
            "-v",
            "/tmp:/mnt:ro",
            "--pids-limit",
            "-1",
            "demo",
            "sh",
            "-c",
            "echo -e hi",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        let args = *args;
        assert!(args.rm);
        assert_eq!(args.env, ["A=1"]);
        assert_eq!(args.volumes, ["/tmp:/mnt:ro"]);
        assert_eq!(args.pids_limit, Some(-1));
        assert_eq!(args.image, "demo");
        assert_eq!(args.command, ["sh", "-c", "echo -e hi"]);
        assert_eq!(args.net, "none");
    }
}
