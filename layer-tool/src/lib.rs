//! Layers and images: the local image store, and the tools that fill and empty it.
#![forbid(unsafe_code)]

pub mod build;
pub mod cli;
pub mod commit;
pub mod compression;
pub mod config;
pub mod convert;
pub mod copy;
pub mod diffids;
pub mod digest;
pub mod export;
pub mod extract;
pub mod fsmeta;
pub mod gc;
pub mod import;
pub mod inspect;
pub mod mount;
pub mod oci;
pub mod progress;
pub mod provenance;
pub mod registry;
pub mod rootless;
pub mod source;
pub mod squash;
pub mod store;
pub mod tarball;
pub mod userns;
