//! Cross-crate tests of the union filesystem: a reference model of the aufs/OCI merge rules
//! written from DESIGN.md alone, proptest strategies, and a harness that runs the same
//! operations on a real `unionfs` mount, on a plain copy of the merged view and on the model.
//! Unsafe code lives in `sys` only.
#![deny(unsafe_code)]

pub mod disk;
pub mod fixture;
pub mod harness;
pub mod knobs;
pub mod lt_squash;
pub mod model;
pub mod model_ops;
pub mod mount;
pub mod ops;
pub mod relpath;
pub mod repro;
pub mod squash;
pub mod stackbuild;
pub mod strategy;
#[allow(unsafe_code)]
pub mod sys;
pub mod view;
