//! Environment knobs. All default to the strictest setting; tests/README.md lists them. They
//! exist to look past a known finding while searching for the next one.

use crate::ops::Op;

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).as_deref() == Ok(value)
}

/// Case count: `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// With `UNION_TESTS_TRACE` set, print every operation and its result.
pub fn trace(what: std::fmt::Arguments) {
    if std::env::var_os("UNION_TESTS_TRACE").is_some() {
        eprintln!("  {what}");
    }
}

/// How link counts are checked, from `UNION_TESTS_NLINK`: `strict` (the default: the count
/// of visible names); `lax` (a count that includes names hidden by upper branches passes, as
/// a union passing `st_nlink` through would show); `off` (not checked, nor link groups in a
/// squash).
pub fn nlink_mode() -> String {
    std::env::var("UNION_TESTS_NLINK").unwrap_or_else(|_| "strict".into())
}

pub fn lax_nlink() -> bool {
    nlink_mode() != "strict"
}

/// Property 5 from `UNION_TESTS_SQUASH`: `on` (the default), `nolinks` (objects that ever
/// had several names are not checked), `off`.
pub fn squash_mode() -> String {
    std::env::var("UNION_TESTS_SQUASH").unwrap_or_else(|_| "on".into())
}

/// `UNION_TESTS_SYMLINK_LINKS=off`: generate no hardlinks to symlinks.
pub fn no_symlink_links() -> bool {
    env_is("UNION_TESTS_SYMLINK_LINKS", "off")
}

/// `UNION_TESTS_LOWER_RW=off`: lower branches `ro` or `rr` only.
pub fn no_lower_rw() -> bool {
    env_is("UNION_TESTS_LOWER_RW", "off")
}

/// False for an operation (run as the unprivileged user when `user`) that the knobs leave
/// out: `UNION_TESTS_FDS=off|rw`, `UNION_TESTS_ROOT=off`, `UNION_TESTS_USER=off`,
/// `UNION_TESTS_EXCHANGE=off`, `UNION_TESTS_RENAME=off` (renames and links).
pub fn wanted(op: &Op<String>, user: bool) -> bool {
    let fd_op = matches!(
        op,
        Op::Open { .. } | Op::ReadBack { .. } | Op::WriteBack { .. }
    );
    let read_open = matches!(op, Op::Open { write: false, .. });
    let on_root = op.paths().iter().any(|p| p.is_empty());
    let exchange = matches!(op, Op::Exchange { .. });
    let rename_or_link = matches!(
        op,
        Op::Rename { .. } | Op::RenameNoReplace { .. } | Op::Exchange { .. } | Op::Link { .. }
    );
    !(fd_op && env_is("UNION_TESTS_FDS", "off")
        || read_open && env_is("UNION_TESTS_FDS", "rw")
        || on_root && env_is("UNION_TESTS_ROOT", "off")
        || user && env_is("UNION_TESTS_USER", "off")
        || exchange && env_is("UNION_TESTS_EXCHANGE", "off")
        || rename_or_link && env_is("UNION_TESTS_RENAME", "off"))
}
