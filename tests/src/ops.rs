//! The operations of a test sequence, and how they run on a real directory tree (the union
//! mount or the plain host copy). Each returns `Ok(())` or the errno, nothing else.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{lchown, symlink, DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use proptest::sample::Index;

use crate::relpath::join;
use crate::sys;
use crate::view::View;

/// The result of one operation: success or an errno.
pub type Outcome = Result<(), i32>;

/// How a generated operation names a path; resolved against the model's view at run time so
/// that a shrunk sequence still names something sensible.
#[derive(Debug, Clone)]
pub enum PathSel {
    /// The i-th visible path (modulo their number).
    Existing(Index),
    /// A name inside the i-th visible directory (the root included).
    Under(Index, &'static str),
    /// A literal path, which may or may not exist.
    Fresh(String),
    /// The root of the union.
    Root,
}

impl PathSel {
    pub fn resolve(&self, view: &View) -> String {
        match self {
            PathSel::Existing(i) => {
                let paths = view.paths();
                if paths.is_empty() {
                    "a".to_string()
                } else {
                    paths[i.index(paths.len())].to_string()
                }
            }
            PathSel::Under(i, name) => {
                let dirs: Vec<&str> = view
                    .entries
                    .keys()
                    .filter(|k| view.is_dir(k))
                    .map(String::as_str)
                    .collect();
                join(dirs[i.index(dirs.len())], name)
            }
            PathSel::Fresh(p) => p.clone(),
            PathSel::Root => String::new(),
        }
    }
}

/// One operation, generic over how it names paths (`PathSel` when generated, `String` to run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<P> {
    Create {
        path: P,
        mode: u32,
        data: Vec<u8>,
    },
    Write {
        path: P,
        offset: u64,
        data: Vec<u8>,
    },
    Append {
        path: P,
        data: Vec<u8>,
    },
    /// `by_path`: truncate(2); otherwise open + ftruncate(2).
    Truncate {
        path: P,
        len: u64,
        by_path: bool,
    },
    Chmod {
        path: P,
        mode: u32,
    },
    Chown {
        path: P,
        uid: u32,
        gid: u32,
    },
    Utimens {
        path: P,
        ns: i64,
    },
    Setxattr {
        path: P,
        name: String,
        value: Vec<u8>,
    },
    Removexattr {
        path: P,
        name: String,
    },
    Mkdir {
        path: P,
        mode: u32,
    },
    Rmdir {
        path: P,
    },
    Unlink {
        path: P,
    },
    Rename {
        from: P,
        to: P,
    },
    /// `renameat2(RENAME_NOREPLACE)`.
    RenameNoReplace {
        from: P,
        to: P,
    },
    /// `renameat2(RENAME_EXCHANGE)`.
    Exchange {
        from: P,
        to: P,
    },
    Link {
        from: P,
        to: P,
    },
    Symlink {
        target: String,
        path: P,
    },
    /// Open `path` (`O_NOFOLLOW`; `write`: `O_RDWR`, else `O_RDONLY`) and keep the fd in
    /// `slot`, replacing what was there.
    Open {
        slot: usize,
        path: P,
        write: bool,
    },
    /// Read the whole file through the fd in `slot` (the mount's bytes must equal the plain
    /// directory's).
    ReadBack {
        slot: usize,
    },
    /// `pwrite(data, 0)` through the fd in `slot`.
    WriteBack {
        slot: usize,
        data: Vec<u8>,
    },
    Remount,
    /// The operation run by an unprivileged caller (fsuid/fsgid `model_ops::USER`).
    AsUser(Box<Op<P>>),
}

impl<P> Op<P> {
    pub fn map<Q>(self, f: &mut dyn FnMut(P) -> Q) -> Op<Q> {
        match self {
            Op::Create { path, mode, data } => Op::Create {
                path: f(path),
                mode,
                data,
            },
            Op::Write { path, offset, data } => Op::Write {
                path: f(path),
                offset,
                data,
            },
            Op::Append { path, data } => Op::Append {
                path: f(path),
                data,
            },
            Op::Truncate { path, len, by_path } => Op::Truncate {
                path: f(path),
                len,
                by_path,
            },
            Op::Chmod { path, mode } => Op::Chmod {
                path: f(path),
                mode,
            },
            Op::Chown { path, uid, gid } => Op::Chown {
                path: f(path),
                uid,
                gid,
            },
            Op::Utimens { path, ns } => Op::Utimens { path: f(path), ns },
            Op::Setxattr { path, name, value } => Op::Setxattr {
                path: f(path),
                name,
                value,
            },
            Op::Removexattr { path, name } => Op::Removexattr {
                path: f(path),
                name,
            },
            Op::Mkdir { path, mode } => Op::Mkdir {
                path: f(path),
                mode,
            },
            Op::Rmdir { path } => Op::Rmdir { path: f(path) },
            Op::Unlink { path } => Op::Unlink { path: f(path) },
            Op::Rename { from, to } => {
                let from = f(from);
                Op::Rename { from, to: f(to) }
            }
            Op::Link { from, to } => {
                let from = f(from);
                Op::Link { from, to: f(to) }
            }
            Op::RenameNoReplace { from, to } => {
                let from = f(from);
                Op::RenameNoReplace { from, to: f(to) }
            }
            Op::Exchange { from, to } => {
                let from = f(from);
                Op::Exchange { from, to: f(to) }
            }
            Op::Symlink { target, path } => Op::Symlink {
                target,
                path: f(path),
            },
            Op::Open { slot, path, write } => Op::Open {
                slot,
                path: f(path),
                write,
            },
            Op::ReadBack { slot } => Op::ReadBack { slot },
            Op::WriteBack { slot, data } => Op::WriteBack { slot, data },
            Op::Remount => Op::Remount,
            Op::AsUser(inner) => Op::AsUser(Box::new(inner.map(f))),
        }
    }

    /// The paths the operation names.
    pub fn paths(&self) -> Vec<&P> {
        match self {
            Op::Rename { from, to }
            | Op::Link { from, to }
            | Op::RenameNoReplace { from, to }
            | Op::Exchange { from, to } => vec![from, to],
            Op::Remount | Op::ReadBack { .. } | Op::WriteBack { .. } => vec![],
            Op::AsUser(inner) => inner.paths(),
            Op::Open { path, .. } => vec![path],
            Op::Create { path, .. }
            | Op::Write { path, .. }
            | Op::Append { path, .. }
            | Op::Truncate { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Utimens { path, .. }
            | Op::Setxattr { path, .. }
            | Op::Removexattr { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Unlink { path }
            | Op::Symlink { path, .. } => vec![path],
        }
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error()
        .unwrap_or_else(|| panic!("error without errno: {e}"))
}

/// Run `op` on the tree under `root`. `Remount` is the harness's business and a no-op here.
pub fn apply_real(root: &Path, op: &Op<String>) -> Outcome {
    let p = |rel: &String| root.join(rel);
    let nofollow = libc::O_NOFOLLOW;
    let r: std::io::Result<()> = match op {
        Op::Create { path, mode, data } => OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .custom_flags(nofollow)
            .open(p(path))
            .and_then(|mut f| f.write_all(data)),
        Op::Write { path, offset, data } => OpenOptions::new()
            .write(true)
            .custom_flags(nofollow)
            .open(p(path))
            .and_then(|f| f.write_all_at(data, *offset)),
        Op::Append { path, data } => OpenOptions::new()
            .append(true)
            .custom_flags(nofollow)
            .open(p(path))
            .and_then(|mut f| f.write_all(data)),
        Op::Truncate {
            path,
            len,
            by_path: true,
        } => {
            // std has no path-based truncate; File::set_len would open first.
            sys::truncate(&p(path), *len)
        }
        Op::Truncate {
            path,
            len,
            by_path: false,
        } => OpenOptions::new()
            .write(true)
            .custom_flags(nofollow)
            .open(p(path))
            .and_then(|f| f.set_len(*len)),
        Op::Chmod { path, mode } => {
            std::fs::set_permissions(p(path), std::fs::Permissions::from_mode(*mode))
        }
        Op::Chown { path, uid, gid } => lchown(p(path), Some(*uid), Some(*gid)),
        Op::Utimens { path, ns } => sys::lutimens(&p(path), *ns),
        Op::Setxattr { path, name, value } => sys::lsetxattr(&p(path), name, value),
        Op::Removexattr { path, name } => sys::lremovexattr(&p(path), name),
        Op::Mkdir { path, mode } => std::fs::DirBuilder::new().mode(*mode).create(p(path)),
        Op::Rmdir { path } => std::fs::remove_dir(p(path)),
        Op::Unlink { path } => std::fs::remove_file(p(path)),
        Op::Rename { from, to } => std::fs::rename(p(from), p(to)),
        Op::RenameNoReplace { from, to } => {
            sys::renameat2(&p(from), &p(to), libc::RENAME_NOREPLACE)
        }
        Op::Exchange { from, to } => sys::renameat2(&p(from), &p(to), libc::RENAME_EXCHANGE),
        Op::Link { from, to } => std::fs::hard_link(p(from), p(to)),
        Op::Symlink { target, path } => symlink(target, p(path)),
        Op::Remount | Op::Open { .. } | Op::ReadBack { .. } | Op::WriteBack { .. } => Ok(()),
        Op::AsUser(inner) => {
            return sys::as_user(crate::model_ops::USER, || apply_real(root, inner))
        }
    };
    r.map_err(errno)
}

/// File descriptors held by a sequence (`Open`, `ReadBack`, `WriteBack`) on one tree.
#[derive(Default)]
pub struct Handles {
    slots: [Option<std::fs::File>; 2],
}

/// Result of a handle operation: the bytes read (empty for others), or the errno.
pub type HandleOutcome = Result<Vec<u8>, i32>;

impl Handles {
    pub fn is_open(&self, slot: usize) -> bool {
        self.slots[slot].is_some()
    }

    /// Close every fd (before an unmount).
    pub fn close_all(&mut self) {
        self.slots = Default::default();
    }

    /// Run a handle operation on the tree under `root`; `None` for any other operation.
    pub fn apply(&mut self, root: &Path, op: &Op<String>) -> Option<HandleOutcome> {
        let r = match op {
            Op::Open { slot, path, write } => OpenOptions::new()
                .read(true)
                .write(*write)
                .custom_flags(libc::O_NOFOLLOW)
                .open(root.join(path))
                .map(|f| {
                    self.slots[*slot] = Some(f);
                    Vec::new()
                }),
            Op::ReadBack { slot } => {
                let f = self.slots[*slot].as_ref().expect("applicable: slot open");
                let mut out = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    match f.read_at(&mut buf, out.len() as u64) {
                        Ok(0) => break Ok(out),
                        Ok(n) => out.extend_from_slice(&buf[..n]),
                        Err(e) => break Err(e),
                    }
                }
            }
            Op::WriteBack { slot, data } => {
                let f = self.slots[*slot].as_ref().expect("applicable: slot open");
                f.write_all_at(data, 0).map(|()| Vec::new())
            }
            _ => return None,
        };
        Some(r.map_err(errno))
    }
}

/// `renameat2(2)` from the shell (coreutils' `mv` cannot be trusted to make exactly that call):
/// flags 1 = `RENAME_NOREPLACE`, 2 = `RENAME_EXCHANGE`.
fn renameat2_shell(from: &str, to: &str, flags: u32) -> String {
    format!(
        "python3 -c \"import ctypes,os,sys; l=ctypes.CDLL(None,use_errno=True); \
         sys.exit(l.renameat2(-100,b'{from}',-100,b'{to}',{flags}) and os.strerror(ctypes.get_errno()))\""
    )
}

/// A shell command doing the same as `op` inside the current directory (for reproductions).
pub fn shell(op: &Op<String>) -> String {
    let q = |s: &str| {
        if s.is_empty() {
            "'.'".to_string()
        } else {
            format!("'{s}'")
        }
    };
    let data = |d: &[u8]| format!("'{}'", String::from_utf8_lossy(d));
    match op {
        Op::Create {
            path,
            mode,
            data: d,
        } => {
            format!(
                "(set -o noclobber; printf %s {} > {}) && chmod {mode:o} {}",
                data(d),
                q(path),
                q(path)
            )
        }
        Op::Write {
            path,
            offset,
            data: d,
        } => {
            format!(
                "printf %s {} | dd of={} bs=1 seek={offset} conv=notrunc,nocreat oflag=nofollow status=none",
                data(d),
                q(path)
            )
        }
        Op::Append { path, data: d } => format!(
            "printf %s {} | dd of={} conv=notrunc,nocreat oflag=append,nofollow status=none",
            data(d),
            q(path)
        ),
        Op::Truncate { path, len, .. } => format!("truncate -c -s {len} {}", q(path)),
        Op::Chmod { path, mode } => format!("chmod {mode:o} {}", q(path)),
        Op::Chown { path, uid, gid } => format!("chown -h {uid}:{gid} {}", q(path)),
        Op::Utimens { path, ns } => format!(
            "touch -h -d @{}.{:09} {}",
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000),
            q(path)
        ),
        Op::Removexattr { path, name } => format!("setfattr -h -x {name} {}", q(path)),
        Op::Setxattr { path, name, value } => {
            format!("setfattr -h -n {name} -v {} {}", data(value), q(path))
        }
        Op::Mkdir { path, mode } => format!("mkdir -m {mode:o} {}", q(path)),
        Op::Rmdir { path } => format!("rmdir {}", q(path)),
        Op::Unlink { path } => format!("unlink {}", q(path)),
        Op::Rename { from, to } => format!("mv -T {} {}", q(from), q(to)),
        Op::RenameNoReplace { from, to } => renameat2_shell(from, to, 1),
        Op::Exchange { from, to } => renameat2_shell(from, to, 2),
        Op::Link { from, to } => format!("ln {} {}", q(from), q(to)),
        Op::Symlink { target, path } => format!("ln -s {} {}", q(target), q(path)),
        Op::Open { slot, path, write } => {
            let mode = if *write { "<>" } else { "<" };
            format!("exec {}{mode} {}", slot + 5, q(path))
        }
        Op::ReadBack { slot } => format!("cat /proc/self/fd/{} 2>&1 | od -c | head -3", slot + 5),
        Op::WriteBack { slot, data: d } => {
            format!("printf %s {} | dd of=/proc/self/fd/{} conv=notrunc status=none", data(d), slot + 5)
        }
        Op::AsUser(inner) => format!(
            "setpriv --reuid={} --regid={} --keep-groups -- sh -c \"{}\"",
            crate::model_ops::USER.0,
            crate::model_ops::USER.1,
            shell(inner).replace('"', "\\\"")
        ),
        Op::Remount => {
            "cd / && unionfs umount \"$MNT\" && MNT=$MNT.x && mkdir \"$MNT\" && unionfs mount -o allow_other \"$BRANCHES\" \"$MNT\" && cd \"$MNT\""
                .to_string()
        }
    }
}
