//! The error type of the union core: an errno (what the caller sees) plus context (what the log
//! shows: which syscall, which path, which branch).

use std::fmt;

/// An operation's failure: the errno returned through FUSE and a description for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    errno: i32,
    context: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(errno: i32, context: impl Into<String>) -> Error {
        Error {
            errno,
            context: context.into(),
        }
    }

    /// An error with a bare errno, for rule violations that need no context (ENOENT, EEXIST...).
    pub fn errno(errno: i32) -> Error {
        Error {
            errno,
            context: String::new(),
        }
    }

    pub fn code(&self) -> i32 {
        self.errno
    }

    pub fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = nix::errno::Errno::from_raw(self.errno);
        if self.context.is_empty() {
            write!(f, "{name}")
        } else {
            write!(f, "{}: {name}", self.context)
        }
    }
}

impl std::error::Error for Error {}

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Error {
        Error::errno(e as i32)
    }
}

impl From<std::io::Error> for Error {
    /// Keeps the OS errno; an io::Error without one (a bug, not a syscall) becomes EIO.
    fn from(e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(code) => Error::errno(code),
            None => Error::new(libc::EIO, e.to_string()),
        }
    }
}

/// Adds context to a syscall result: `sys::mkdirat(..).ctx(|| format!("mkdir {path:?}"))`.
/// The closure runs only on failure, so the hot path formats nothing.
pub trait Context<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::errno::Errno> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::new(e as i32, what()))
    }
}

impl<T> Context<T> for Result<T> {
    fn ctx<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| {
            let inner = what().into();
            if e.context.is_empty() {
                Error::new(e.errno, inner)
            } else {
                Error::new(e.errno, format!("{inner}: {}", e.context))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_errno_and_context() {
        let r: std::result::Result<(), _> = Err(nix::errno::Errno::ENOSPC);
        let e = r.ctx(|| "copy up a/b to branch 0").unwrap_err();
        assert_eq!(e.code(), libc::ENOSPC);
        assert!(e.to_string().contains("copy up a/b"));
        let io = std::io::Error::other("no os code");
        assert_eq!(Error::from(io).code(), libc::EIO);
    }
}
