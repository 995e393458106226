//! unionfs: a userspace union filesystem on FUSE, with aufs/OCI whiteouts.

pub mod whiteout;
