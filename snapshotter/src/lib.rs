//! A containerd proxy snapshotter that puts unionfs under containers' roots.
//!
//! containerd asks a snapshotter for snapshots (`prepare`, `view`, `commit`, `remove`, ...) over
//! its snapshots gRPC API and gets back, for each, a list of mounts it performs itself. This one
//! answers an active snapshot with parents by a `fuse3.unionfs` mount (`lowerdir=` the parents'
//! directories top first, `upperdir=` and `workdir=` its own), which containerd performs by
//! running `mount.fuse3`, which runs `unionfs` from `PATH`. The snapshotter itself mounts
//! nothing and keeps no daemon per snapshot (the design of fuse-overlayfs-snapshotter).
//!
//! Rooms: [`store`] is the synchronous core (metadata in [`meta`], directories, the rules of
//! the snapshot lifecycle); [`mounts`] turns a snapshot into the mounts containerd performs;
//! [`filter`] parses `Walk` filters; [`usage`] measures a directory; [`service`] is the gRPC edge
//! (containerd-snapshots' trait, each call one `spawn_blocking` into the core); [`check`] tries a
//! real mount before serving.
#![forbid(unsafe_code)]

pub mod check;
pub mod error;
pub mod filter;
pub mod meta;
pub mod mounts;
pub mod service;
pub mod store;
pub mod usage;

pub use error::Error;
pub use store::Store;
