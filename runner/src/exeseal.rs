//! Run the runtime from a sealed view of itself before it goes near a container
//! (CVE-2019-5736).
//!
//! A process of ours that a container can see (the clone that becomes its first process, an
//! `exec`'d process before its `execve`, the `--init` reaper) has `/proc/PID/exe` pointing at our
//! binary. Had that been the file on the host, a root process in the container could open it
//! through `/proc/PID/exe` and, once we exit, write the host's `runner` through
//! `/proc/self/fd/N`: the next invocation would run the container's code as root on the host.
//! Two defences, each enough on its own against that path:
//! - the commands that start processes in a container re-execute first from a view of the
//!   binary that cannot be written: a read-only, detached overlayfs over its directory
//!   ([`overlay`], zero-copy, as root), else a `memfd` copy sealed against writing, shrinking
//!   and growing (`pentacle`; users without root, kernels without overlayfs), so the `exe` a
//!   container could reach is never the host file;
//! - every process we clone is non-dumpable from birth until its `execve`
//!   ([`crate::spawn::spawn`]), so the container cannot open its `exe` (or ptrace it) at all.
//!
//! Only `run` (both forms), `create` and `exec` seal; the other commands never share a namespace
//! with a container.
#![forbid(unsafe_code)]

mod overlay;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// Where the sealed copy remembers the file it was copied from (to find `unionfs` beside it).
const SEALED_FROM: &str = "_RUNNER_SEALED_FROM";

static ORIGINAL_EXE: OnceLock<Option<PathBuf>> = OnceLock::new();

/// How this process is sealed, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealed {
    /// A read-only detached overlayfs view of the host's file.
    Overlayfs,
    /// A sealed memfd copy.
    Memfd,
}

impl std::fmt::Display for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sealed::Overlayfs => "read-only overlayfs view",
            Sealed::Memfd => "memfd copy",
        })
    }
}

/// How this process is sealed (`None`: it runs from the host's file).
pub fn sealed() -> Option<Sealed> {
    if pentacle::is_sealed() {
        Some(Sealed::Memfd)
    } else if overlay::runs_from_sealed_view() {
        Some(Sealed::Overlayfs)
    } else {
        None
    }
}

/// Re-execute from a sealed view of this binary unless this process already is one. Returns
/// only in the sealed process (or with the error that prevented the re-execution).
pub fn ensure_sealed() -> Result<()> {
    if let Some(how) = sealed() {
        tracing::debug!("runner exeseal: running from a sealed {how}");
        return Ok(());
    }
    let exe = std::fs::read_link("/proc/self/exe").context("readlink /proc/self/exe")?;
    std::env::set_var(SEALED_FROM, &exe);
    match overlay::open_sealed_view(&exe) {
        Ok(view) => {
            let mut args = std::env::args_os();
            let mut cmd = Command::new(format!("/proc/self/fd/{}", view.as_raw_fd()));
            if let Some(arg0) = args.next() {
                cmd.arg0(arg0);
            }
            let err = cmd.args(args).exec();
            tracing::debug!(
                "runner exeseal: executing the overlayfs view failed ({err}); copying to a memfd"
            );
        }
        Err(e) => tracing::debug!("runner exeseal: no overlayfs view ({e:#}); copying to a memfd"),
    }
    // Only returns when the exec failed.
    let err = pentacle::ensure_sealed();
    std::env::remove_var(SEALED_FROM);
    err.with_context(|| {
        format!(
            "re-executing {} from a sealed memfd copy (memfd_create, F_ADD_SEALS)",
            exe.display()
        )
    })
}

/// Read (and take out of the environment, so that nothing we start inherits it) the path the
/// sealed copy was made from. Call once, first thing in `main`, while single-threaded.
pub fn init() {
    let from = std::env::var_os(SEALED_FROM).map(PathBuf::from);
    if from.is_some() {
        std::env::remove_var(SEALED_FROM);
    }
    let _ = ORIGINAL_EXE.set(from.filter(|_| is_sealed()));
}

/// This program's file on the host: the one a sealed copy was made from, else `/proc/self/exe`.
pub fn original_exe() -> Option<PathBuf> {
    if let Some(Some(p)) = ORIGINAL_EXE.get() {
        return Some(p.clone());
    }
    std::env::current_exe().ok()
}

/// Whether this process runs from a sealed view (for tests and logs).
pub fn is_sealed() -> bool {
    sealed().is_some()
}
