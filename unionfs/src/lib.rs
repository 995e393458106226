//! unionfs: a userspace union filesystem on FUSE, with aufs/OCI whiteouts.
//!
//! Data flows one way: [`cli`] -> [`config`] -> [`mount`] -> [`fuse`] (the FUSE adapter) ->
//! [`fs`] (the protocol-free core) -> [`branch`] (resolution rules) and [`copyup`] -> the
//! branches on disk, reached only through [`sys`] and `*at()` calls beneath each branch root.

pub mod branch;
pub mod cli;
pub mod config;
pub mod copyup;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod handle;
pub mod inode;
pub mod iomode;
pub mod linkgroup;
pub mod listing_advisor;
pub mod mount;
pub mod pathlock;
pub mod privilege;
pub mod shutdown;
pub mod stats;
pub mod sys;
pub mod trash;
pub mod whiteout;

/// Logs through `tracing`, filtered by `RUST_LOG` (default: warnings), to stderr.
pub fn init_logging(with_ansi: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // fuser warns when the mount it made was already unmounted by our signal handler.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fuser=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(with_ansi)
        .try_init();
}
