//! Containers on a unionfs root: namespaces, cgroups (v1 and v2), pivot_root.
//!
//! `runner run` finds an image in the store `layer-tool` writes, mounts its layers under a fresh
//! writable layer and an init layer with the `unionfs` binary, and starts the command in new
//! pid, mount, uts, ipc and net namespaces, inside a cgroup with the requested limits. The only
//! `unsafe` code is in [`sys`].
#![deny(unsafe_code)]

pub mod caps;
pub mod cgroup;
pub mod child;
pub mod cli;
pub mod container;
pub mod default_seccomp;
pub mod exeseal;
pub mod init;
pub mod initlayer;
pub mod manage;
pub mod oci;
pub mod process;
pub mod rootfs;
pub mod rootless;
pub mod run;
pub mod runtime_dir;
pub mod slirp;
pub mod spawn;
pub mod spec;
pub mod supervise;
pub mod sys;
pub mod tty;
pub mod union;
