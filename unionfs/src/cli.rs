//! The command line: three ways to ask for a mount, turned into one validated [`Config`].
//!
//! - `unionfs mount A=rw:B=ro MNT [-o OPTS] [-f]`: the aufs-style form.
//! - `unionfs -o lowerdir=L1:L2,upperdir=U,workdir=W MNT`: the fuse-overlayfs form that
//!   containers/storage uses for its `mount_program`.
//! - `unionfs SOURCE MNT -o OPTS`: what `mount -t fuse.unionfs SOURCE MNT -o OPTS` runs; the
//!   branches come from `br=` or `lowerdir=` in OPTS, else SOURCE is the branch list.
//! - `unionfs umount MNT`.
//! - `unionfs stats [--reset] MNT`: the daemon's request counters.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{build_config, parse_branches, Config, ConfigError, MountOptions};

#[derive(Debug, Parser)]
#[command(
    name = "unionfs",
    version,
    about = "A userspace union filesystem: aufs-style branches and .wh. whiteouts, over FUSE",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Mount options, comma-separated (br=, lowerdir=, upperdir=, workdir=, allow_other, noallow_other, ro, ...)
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Stay in the foreground and log to stderr
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// [SOURCE] MOUNTPOINT, as mount(8) and fuse-overlayfs callers pass them
    #[arg(value_name = "ARGS")]
    pub args: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount BRANCHES (top first: A=rw:B=ro:C=rr) on MOUNTPOINT
    Mount {
        /// Branches, top first, `:`-separated, each DIR or DIR=rw|ro|rr (`\:` escapes a colon)
        branches: String,
        mountpoint: PathBuf,
        /// Mount options, comma-separated (allow_other (default as root), noallow_other, allow_root, ro, nodev, nosuid, threads=N, nocpu_affine, ...)
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Stay in the foreground and log to stderr
        #[arg(short = 'f', long)]
        foreground: bool,
        /// Where the background daemon logs (default: nowhere)
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
    },
    /// Unmount a union
    Umount {
        mountpoint: PathBuf,
        /// Detach now even if busy; finish when the last user leaves
        #[arg(short = 'l', long)]
        lazy: bool,
    },
    /// Print the requests a union's daemon has served, per type: count, errors, time
    Stats {
        mountpoint: PathBuf,
        /// Zero the counters after printing them
        #[arg(long)]
        reset: bool,
    },
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Mount {
        config: Config,
        log_file: Option<PathBuf>,
    },
    Umount {
        mountpoint: PathBuf,
        lazy: bool,
    },
    Stats {
        mountpoint: PathBuf,
        reset: bool,
    },
}

impl Cli {
    pub fn into_action(self) -> Result<Action, ConfigError> {
        match self.command {
            Some(Command::Mount {
                branches,
                mountpoint,
                options,
                foreground,
                log_file,
            }) => {
                let opts = MountOptions::parse(&options)?;
                if opts.br.is_some() || opts.lowerdir.is_some() {
                    return Err(ConfigError::BadOption(
                        "br/lowerdir".into(),
                        "branches are given as the first argument of `mount`".into(),
                    ));
                }
                let config =
                    build_config(parse_branches(&branches)?, &mountpoint, &opts, foreground)?;
                Ok(Action::Mount { config, log_file })
            }
            Some(Command::Umount { mountpoint, lazy }) => Ok(Action::Umount { mountpoint, lazy }),
            Some(Command::Stats { mountpoint, reset }) => Ok(Action::Stats { mountpoint, reset }),
            None => {
                let opts = MountOptions::parse(&self.options)?;
                let (source, mountpoint) = match self.args.as_slice() {
                    [m] => (None, m.clone()),
                    [s, m] => (Some(s.clone()), m.clone()),
                    _ => {
                        return Err(ConfigError::BadOption(
                            "arguments".into(),
                            "expected `unionfs mount BRANCHES MOUNTPOINT`, `unionfs -o lowerdir=...,upperdir=... MOUNTPOINT` or `unionfs SOURCE MOUNTPOINT -o OPTIONS`".into(),
                        ))
                    }
                };
                let branches = match (opts.branches()?, source) {
                    (Some(b), _) => b,
                    (None, Some(s)) => parse_branches(&s.to_string_lossy())?,
                    (None, None) => return Err(ConfigError::NoBranches),
                };
                let config = build_config(branches, &mountpoint, &opts, self.foreground)?;
                let log_file = std::env::var_os("UNIONFS_LOG_FILE").map(PathBuf::from);
                Ok(Action::Mount { config, log_file })
            }
        }
    }
}
