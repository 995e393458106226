//! The one place that knows the on-disk names of deletions: aufs/OCI `.wh.` whiteouts and
//! `.wh..wh..opq` opaque markers, plus recognising overlayfs' forms (a 0/0 character device and
//! the `overlay.opaque` xattr) in layers unpacked by other tools.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Prefix of every whiteout-family name (aufs, OCI image spec).
pub const WH_PREFIX: &str = ".wh.";
/// Marker file: the directory holding it hides every lower directory of the same path.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Prefix of names that aufs reserves for its own bookkeeping (`.wh..wh.plnk`, ...).
pub const META_PREFIX: &str = ".wh..wh.";
/// xattrs that kernel overlayfs uses to mark a directory opaque.
pub const OVERLAY_OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// What a directory entry's name means under the whiteout rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// An ordinary name, shown in the union.
    Plain,
    /// `.wh.NAME`: hides NAME in lower branches.
    Whiteout(OsString),
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// Any other `.wh..wh.*` name: bookkeeping, never shown, hides nothing.
    Meta,
}

/// Classify a directory entry name.
pub fn classify(name: &OsStr) -> EntryKind {
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER.as_bytes() {
        EntryKind::Opaque
    } else if bytes.starts_with(META_PREFIX.as_bytes()) {
        EntryKind::Meta
    } else if let Some(rest) = bytes.strip_prefix(WH_PREFIX.as_bytes()) {
        if rest.is_empty() {
            EntryKind::Meta
        } else {
            EntryKind::Whiteout(OsString::from_vec(rest.to_vec()))
        }
    } else {
        EntryKind::Plain
    }
}

/// True for names that may not be created, renamed to or linked to through the mount.
pub fn is_reserved(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX.as_bytes())
}

/// The whiteout name that hides `name`: `.wh.NAME`.
pub fn whiteout_name(name: &OsStr) -> OsString {
    let mut out = OsString::from(WH_PREFIX);
    out.push(name);
    out
}

/// True when `(mode, rdev)` describe an overlayfs whiteout: a character device 0/0.
pub fn is_overlay_whiteout(mode: u32, rdev: u64) -> bool {
    (mode & libc::S_IFMT) == libc::S_IFCHR && rdev == 0
}

/// True when an overlayfs opaque xattr value means "opaque" (`y`).
pub fn is_overlay_opaque_value(value: &[u8]) -> bool {
    value == b"y"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_names() {
        assert_eq!(classify(OsStr::new("a")), EntryKind::Plain);
        assert_eq!(
            classify(OsStr::new(".wh.a")),
            EntryKind::Whiteout(OsString::from("a"))
        );
        assert_eq!(classify(OsStr::new(".wh..wh..opq")), EntryKind::Opaque);
        assert_eq!(classify(OsStr::new(".wh..wh.plnk")), EntryKind::Meta);
        assert_eq!(classify(OsStr::new(".wh.")), EntryKind::Meta);
        assert_eq!(classify(OsStr::new(".whx")), EntryKind::Plain);
        assert_eq!(
            classify(OsStr::new(".wh..hidden")),
            EntryKind::Whiteout(OsString::from(".hidden"))
        );
    }

    #[test]
    fn whiteout_name_round_trips() {
        let wh = whiteout_name(OsStr::new("etc"));
        assert_eq!(wh, OsString::from(".wh.etc"));
        assert_eq!(classify(&wh), EntryKind::Whiteout(OsString::from("etc")));
        assert!(is_reserved(&wh));
        assert!(!is_reserved(OsStr::new("etc")));
    }

    #[test]
    fn overlay_whiteout_is_char_0_0() {
        assert!(is_overlay_whiteout(libc::S_IFCHR | 0o644, 0));
        assert!(!is_overlay_whiteout(libc::S_IFCHR | 0o644, 0x0103));
        assert!(!is_overlay_whiteout(libc::S_IFREG | 0o644, 0));
    }
}
