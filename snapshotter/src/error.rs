//! The core's errors and the one place they become gRPC statuses.
//!
//! containerd turns the status code back into its error kinds (`errdefs.FromGRPC`), and relies
//! on them: its unpacker treats `AlreadyExists` from `Prepare`/`Commit` as "this layer is already
//! there", and `NotFound` as "unpack it". So the codes are part of the protocol, not decoration.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    /// The request is well formed but the snapshot is in the wrong state for it (committing a
    /// view, removing a snapshot that has children, mounts of a committed snapshot).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata {path}: {message}")]
    Metadata { path: PathBuf, message: String },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// An I/O error that says what was being done to which path.
    pub fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

impl From<Error> for containerd_snapshots::tonic::Status {
    fn from(e: Error) -> Self {
        use containerd_snapshots::tonic::Status;
        let msg = e.to_string();
        match e {
            Error::NotFound(_) => Status::not_found(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::Io { .. } | Error::Metadata { .. } | Error::Internal(_) => Status::internal(msg),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
