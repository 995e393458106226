//! The OCI runtime interface: runtime-spec bundles and runc's command line (`create`, `start`,
//! `state`, `kill`, `delete`, `run`, `exec`, `ps`, `list`, `features`), on the same container
//! start code as `runner run`.
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod exec;
pub mod hooks;
pub mod lifecycle;
pub mod mounts;
pub mod seccomp;
pub mod state;
