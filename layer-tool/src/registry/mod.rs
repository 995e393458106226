//! Images from and to registries (the OCI distribution API), as docker, podman and skopeo
//! speak it: [`pull`] into the store through the same import path as files, [`push`] from the
//! store, and the credentials `login` keeps ([`auth`]).
//!
//! Rooms: [`reference`] (names only), [`auth`] (credential files), [`tls`] (roots, certs.d),
//! [`client`] (HTTP and the authentication handshake), [`verify`] (digest and size while
//! streaming), [`error`] (what failed, named), [`local`] (which store image a reference is).

pub mod auth;
pub mod client;
pub mod error;
pub mod local;
pub mod login;
pub mod pull;
pub mod push;
pub mod reference;
pub mod tls;
pub mod verify;

pub use client::RegistryOptions;
pub use reference::ImageRef;
