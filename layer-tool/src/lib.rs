//! Layers and images: the local image store, and the tools that fill and empty it.
#![forbid(unsafe_code)]

pub mod store;
