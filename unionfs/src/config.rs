//! Branch specs (`A=rw:B=ro`), mount options and their validation. Everything the command line
//! says ends up in one [`Config`]; nothing here touches FUSE.

use std::fmt;
use std::path::{Path, PathBuf};

/// What may be done to a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// Writable: changes land here.
    Rw,
    /// Read-only through the union (another program may still change it).
    Ro,
    /// Read-only and nobody changes it: its contents may be cached for good.
    Rr,
}

impl Perm {
    pub fn is_writable(self) -> bool {
        self == Perm::Rw
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Perm::Rw => "rw",
            Perm::Ro => "ro",
            Perm::Rr => "rr",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchSpec {
    pub path: PathBuf,
    pub perm: Perm,
}

/// A validated mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Branches, top first.
    pub branches: Vec<BranchSpec>,
    pub mountpoint: PathBuf,
    /// Work directory for copy-up (overlay form); by default `.wh..wh.work` inside each rw branch.
    pub workdir: Option<PathBuf>,
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    pub foreground: bool,
    pub threads: usize,
    /// One request poller pinned to each CPU in front of the `threads` workers, so a request
    /// is usually served on its caller's CPU (`cpu_affine`, the default; `nocpu_affine`).
    pub cpu_affine: bool,
    pub fsname: String,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
}

/// Why a mount request was refused. Each names the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("bad branch spec {0:?}: {1}")]
    BadBranch(String, String),
    #[error("no branches given")]
    NoBranches,
    #[error("branch {0}: {1}")]
    BranchDir(PathBuf, String),
    #[error("branch {0} is given twice")]
    DuplicateBranch(PathBuf),
    #[error("mountpoint {0}: {1}")]
    Mountpoint(PathBuf, String),
    #[error("mountpoint {0} is inside branch {1}: the union would contain itself")]
    MountpointInBranch(PathBuf, PathBuf),
    #[error("{0}")]
    TooManyWritable(String),
    #[error("unknown mount option {0:?}")]
    UnknownOption(String),
    #[error("bad mount option {0:?}: {1}")]
    BadOption(String, String),
    #[error("workdir {0}: {1}")]
    Workdir(PathBuf, String),
}

/// Splits on `sep` not preceded by a backslash; `\x` stands for `x` (so `\:` is a colon).
pub fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                parts.last_mut().expect("parts is never empty").push(next);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("parts is never empty").push(c);
        }
    }
    parts
}

/// Splits `-o` option strings on unescaped commas (a `\,` stays in the value).
fn split_options(s: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&',') {
            parts.last_mut().expect("nonempty").push(',');
            chars.next();
        } else if c == ',' {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("nonempty").push(c);
        }
    }
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Parses an aufs branch list: `A:B`, `A=rw:B=ro:C=rr`. Without a permission the first branch is
/// `rw` and the others `ro`. `\:` escapes a colon inside a path.
pub fn parse_branches(spec: &str) -> Result<Vec<BranchSpec>, ConfigError> {
    let mut out = Vec::new();
    for (i, part) in split_escaped(spec, ':').into_iter().enumerate() {
        if part.is_empty() {
            return Err(ConfigError::BadBranch(spec.into(), "empty branch".into()));
        }
        let (path, perm) = match part.rsplit_once('=') {
            Some((p, perm)) => {
                let perm = match perm {
                    "rw" => Perm::Rw,
                    "ro" => Perm::Ro,
                    "rr" => Perm::Rr,
                    other => {
                        return Err(ConfigError::BadBranch(
                            part.clone(),
                            format!("unknown permission {other:?} (use rw, ro or rr)"),
                        ))
                    }
                };
                (p.to_string(), perm)
            }
            None => (part.clone(), if i == 0 { Perm::Rw } else { Perm::Ro }),
        };
        if path.is_empty() {
            return Err(ConfigError::BadBranch(part, "empty path".into()));
        }
        out.push(BranchSpec {
            path: PathBuf::from(path),
            perm,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::NoBranches);
    }
    Ok(out)
}

/// Options mount.fuse or the kernel understand and that need nothing from us, and options of
/// fuse-overlayfs that containers/storage passes and that do not change our behaviour.
const IGNORED_OPTIONS: &[&str] = &[
    "rw",
    "dev",
    "suid",
    "exec",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nodiratime",
    "diratime",
    "sync",
    "async",
    "dirsync",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "defaults",
    "default_permissions",
    "auto_unmount",
    "nonempty",
    "lazytime",
    "silent",
    "loud",
    "volatile",
    "userxattr",
    "noacl",
    "squash_to_root",
    "static_nlink",
    "debug",
];
const IGNORED_KEYS: &[&str] = &[
    "fsname",
    "subtype",
    "max_read",
    "blksize",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "comment",
    "fsync",
    "metacopy",
    "redirect_dir",
    "index",
    "xino",
    "timeout",
    "threaded",
    "writeback",
    "uidmapping",
    "gidmapping",
    "plugins",
    "uid",
    "gid",
    "umask",
];

/// What the `-o` options said, before they are combined with the positional arguments.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub br: Option<String>,
    pub lowerdir: Option<String>,
    pub upperdir: Option<String>,
    pub workdir: Option<String>,
    /// `allow_other` (Some(true)) or `noallow_other` (Some(false)); None: the default, see
    /// [`default_allow_other`].
    pub allow_other: Option<bool>,
    pub allow_root: bool,
    pub read_only: bool,
    pub threads: Option<usize>,
    pub nocpu_affine: bool,
    pub fsname: Option<String>,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
}

impl MountOptions {
    /// Parses every `-o` argument (each a comma-separated list).
    pub fn parse(args: &[String]) -> Result<MountOptions, ConfigError> {
        let mut o = MountOptions::default();
        for opt in args.iter().flat_map(|a| split_options(a)) {
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (opt.clone(), None),
            };
            let need = |v: Option<String>| {
                v.filter(|v| !v.is_empty())
                    .ok_or_else(|| ConfigError::BadOption(opt.clone(), "needs a value".into()))
            };
            match key.as_str() {
                "br" | "dirs" => o.br = Some(need(value)?),
                "lowerdir" => o.lowerdir = Some(need(value)?),
                "upperdir" => o.upperdir = Some(need(value)?),
                "workdir" => o.workdir = Some(need(value)?),
                "allow_other" => o.allow_other = Some(true),
                "noallow_other" => o.allow_other = Some(false),
                "allow_root" => o.allow_root = true,
                "ro" => o.read_only = true,
                "nodev" => o.nodev = true,
                "nosuid" => o.nosuid = true,
                "noexec" => o.noexec = true,
                "threads" => {
                    let v = need(value)?;
                    let n: usize = v
                        .parse()
                        .map_err(|_| ConfigError::BadOption(opt.clone(), "not a number".into()))?;
                    if n == 0 || n > 64 {
                        return Err(ConfigError::BadOption(opt.clone(), "use 1 to 64".into()));
                    }
                    o.threads = Some(n);
                }
                "cpu_affine" => o.nocpu_affine = false,
                "nocpu_affine" => o.nocpu_affine = true,
                "fsname" => o.fsname = value,
                k if value.is_none() && IGNORED_OPTIONS.contains(&k) => {}
                k if value.is_some() && IGNORED_KEYS.contains(&k) => {}
                k if k.starts_with("x-") => {}
                _ => return Err(ConfigError::UnknownOption(opt.clone())),
            }
        }
        Ok(o)
    }

    /// The branches these options describe, if any: `br=` (aufs form) or
    /// `lowerdir=`/`upperdir=` (overlay form, exactly one writable branch).
    pub fn branches(&self) -> Result<Option<Vec<BranchSpec>>, ConfigError> {
        if let Some(br) = &self.br {
            if self.lowerdir.is_some() || self.upperdir.is_some() {
                return Err(ConfigError::BadOption(
                    "br".into(),
                    "use either br= or lowerdir=/upperdir=, not both".into(),
                ));
            }
            return parse_branches(br).map(Some);
        }
        let Some(lower) = &self.lowerdir else {
            if self.upperdir.is_some() {
                return Err(ConfigError::BadOption(
                    "upperdir".into(),
                    "needs lowerdir=".into(),
                ));
            }
            return Ok(None);
        };
        let mut out = Vec::new();
        if let Some(upper) = &self.upperdir {
            // Split as lowerdir is: `\:` is a colon of the one directory, any other `:` starts
            // a second one (which the overlay form has no room for).
            let mut parts = split_escaped(upper, ':');
            if parts.len() > 1 {
                return Err(ConfigError::TooManyWritable(format!(
                    "upperdir={upper:?} names more than one directory: the overlay form has exactly one writable branch"
                )));
            }
            let path = parts.pop().unwrap_or_default();
            if path.is_empty() {
                return Err(ConfigError::BadBranch(
                    upper.clone(),
                    "empty upperdir".into(),
                ));
            }
            out.push(BranchSpec {
                path: PathBuf::from(path),
                perm: Perm::Rw,
            });
        }
        for l in split_escaped(lower, ':') {
            if l.is_empty() {
                return Err(ConfigError::BadBranch(
                    lower.clone(),
                    "empty lowerdir entry".into(),
                ));
            }
            // Lower layers of a mounted overlay never change (overlayfs leaves it undefined).
            out.push(BranchSpec {
                path: PathBuf::from(l),
                perm: Perm::Rr,
            });
        }
        Ok(Some(out))
    }
}

/// Makes the final [`Config`] and checks it against the filesystem: branches exist and are
/// directories, none twice, the mountpoint is a directory outside every branch and not already
/// a mountpoint.
pub fn build_config(
    branches: Vec<BranchSpec>,
    mountpoint: &Path,
    opts: &MountOptions,
    foreground: bool,
) -> Result<Config, ConfigError> {
    if branches.is_empty() {
        return Err(ConfigError::NoBranches);
    }
    let mut canon: Vec<PathBuf> = Vec::new();
    let mut resolved = Vec::new();
    for b in branches {
        let meta = std::fs::metadata(&b.path)
            .map_err(|e| ConfigError::BranchDir(b.path.clone(), describe_io(&e)))?;
        if !meta.is_dir() {
            return Err(ConfigError::BranchDir(
                b.path.clone(),
                "not a directory".into(),
            ));
        }
        let c = std::fs::canonicalize(&b.path)
            .map_err(|e| ConfigError::BranchDir(b.path.clone(), describe_io(&e)))?;
        if canon.contains(&c) {
            return Err(ConfigError::DuplicateBranch(b.path.clone()));
        }
        canon.push(c.clone());
        resolved.push(BranchSpec {
            path: c,
            perm: b.perm,
        });
    }
    let meta = std::fs::metadata(mountpoint)
        .map_err(|e| ConfigError::Mountpoint(mountpoint.into(), describe_io(&e)))?;
    if !meta.is_dir() {
        return Err(ConfigError::Mountpoint(
            mountpoint.into(),
            "not a directory".into(),
        ));
    }
    let mnt = std::fs::canonicalize(mountpoint)
        .map_err(|e| ConfigError::Mountpoint(mountpoint.into(), describe_io(&e)))?;
    for b in &resolved {
        if mnt.starts_with(&b.path) {
            return Err(ConfigError::MountpointInBranch(mnt, b.path.clone()));
        }
    }
    if is_mountpoint(&mnt) {
        return Err(ConfigError::Mountpoint(
            mnt,
            "busy: something is already mounted there (unmount it first)".into(),
        ));
    }
    let workdir = match &opts.workdir {
        Some(w) => {
            let w = PathBuf::from(w);
            let meta = std::fs::metadata(&w)
                .map_err(|e| ConfigError::Workdir(w.clone(), describe_io(&e)))?;
            if !meta.is_dir() {
                return Err(ConfigError::Workdir(w, "not a directory".into()));
            }
            let upper = resolved
                .iter()
                .find(|b| b.perm.is_writable())
                .ok_or_else(|| {
                    ConfigError::Workdir(w.clone(), "given without a writable upperdir".into())
                })?;
            let upper_dev =
                std::fs::metadata(&upper.path).map(|m| std::os::unix::fs::MetadataExt::dev(&m));
            if upper_dev.ok() != Some(std::os::unix::fs::MetadataExt::dev(&meta)) {
                return Err(ConfigError::Workdir(
                    w,
                    "must be on the same filesystem as the upperdir".into(),
                ));
            }
            Some(
                std::fs::canonicalize(&w)
                    .map_err(|e| ConfigError::Workdir(w.clone(), describe_io(&e)))?,
            )
        }
        None => None,
    };
    let read_only = opts.read_only || !resolved.iter().any(|b| b.perm.is_writable());
    Ok(Config {
        fsname: opts.fsname.clone().unwrap_or_else(|| "unionfs".into()),
        branches: resolved,
        mountpoint: mnt,
        workdir,
        allow_other: opts
            .allow_other
            .unwrap_or_else(|| crate::privilege::Host::current().default_allow_other()),
        allow_root: opts.allow_root,
        read_only,
        foreground,
        threads: opts.threads.unwrap_or(4),
        cpu_affine: !opts.nocpu_affine,
        nodev: opts.nodev,
        nosuid: opts.nosuid,
        noexec: opts.noexec,
    })
}

/// Whether a mount lets other users in when the options say neither `allow_other` nor
/// `noallow_other`: yes when the daemon runs as root, as fuse-overlayfs does. Callers that
/// mount container roots (containers/storage's `mount_program`) rely on it and never pass the
/// option, and a container process that is not root must reach its own root filesystem. The
/// kernel still checks every access (`default_permissions`, always on), so this opens the
/// mount to the permission bits, not past them. An unprivileged daemon keeps FUSE's default
/// (only its own user), which is all `fusermount3` allows without `user_allow_other`.
pub fn default_allow_other(root: bool) -> bool {
    root
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// True when `path` (canonical) is a mountpoint in this mount namespace.
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| unescape_mountinfo(m) == path.as_os_str().to_string_lossy())
            .unwrap_or(false)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
pub fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_permissions_follow_aufs() {
        let b = parse_branches("A:B:C").unwrap();
        assert_eq!(
            b.iter().map(|b| b.perm).collect::<Vec<_>>(),
            [Perm::Rw, Perm::Ro, Perm::Ro]
        );
        let b = parse_branches("A=ro:B=rw:C=rr").unwrap();
        assert_eq!(
            b.iter().map(|b| b.perm).collect::<Vec<_>>(),
            [Perm::Ro, Perm::Rw, Perm::Rr]
        );
    }

    #[test]
    fn escaped_colons_stay_in_paths() {
        let b = parse_branches("a\\:b=rw:c").unwrap();
        assert_eq!(b[0].path, PathBuf::from("a:b"));
        assert_eq!(b[1].path, PathBuf::from("c"));
    }

    #[test]
    fn bad_specs_are_named() {
        assert!(matches!(
            parse_branches("A::B"),
            Err(ConfigError::BadBranch(..))
        ));
        assert!(matches!(
            parse_branches("A=xx"),
            Err(ConfigError::BadBranch(..))
        ));
        assert!(matches!(
            parse_branches("=rw"),
            Err(ConfigError::BadBranch(..))
        ));
    }

    #[test]
    fn overlay_form_has_one_writable_branch() {
        let o = MountOptions::parse(&["lowerdir=L1:L2,upperdir=U,workdir=W".into()]).unwrap();
        let b = o.branches().unwrap().unwrap();
        assert_eq!(
            b[0],
            BranchSpec {
                path: "U".into(),
                perm: Perm::Rw
            }
        );
        assert_eq!(b[1].path, PathBuf::from("L1"));
        assert_eq!(b[2].perm, Perm::Rr);
        let o = MountOptions::parse(&["lowerdir=L1,upperdir=U1:U2".into()]).unwrap();
        assert!(matches!(o.branches(), Err(ConfigError::TooManyWritable(_))));
        let o = MountOptions::parse(&["lowerdir=L1,upperdir=U\\:1".into()]).unwrap();
        assert_eq!(o.branches().unwrap().unwrap()[0].path, PathBuf::from("U:1"));
    }

    /// Found by the branch_spec fuzz target (fuzz/fuzz_targets/branch_spec.rs): `upperdir=\`
    /// unescaped to an empty path, which was taken as the writable branch.
    #[test]
    fn regression_fuzz_upperdir_of_a_lone_backslash_is_refused() {
        let o = MountOptions::parse(&["lowerdir=L,upperdir=\\".into()]).unwrap();
        assert!(matches!(o.branches(), Err(ConfigError::BadBranch(..))));
    }

    /// Found while writing the branch_spec fuzz target's invariants (which now check it): an
    /// escaped colon anywhere let unescaped ones through, and the pieces were glued into one
    /// path (`a\:b:c` became `a:bc`).
    #[test]
    fn regression_fuzz_upperdir_with_escaped_and_plain_colons_is_two_directories() {
        let o = MountOptions::parse(&["lowerdir=L,upperdir=a\\:b:c".into()]).unwrap();
        assert!(matches!(o.branches(), Err(ConfigError::TooManyWritable(_))));
    }

    #[test]
    fn generic_options_are_ignored_unknown_refused() {
        let o = MountOptions::parse(&["rw,dev,suid,allow_other,x-systemd.foo=1".into()]).unwrap();
        assert_eq!(o.allow_other, Some(true));
        assert_eq!(
            MountOptions::parse(&["frobnicate".into()]),
            Err(ConfigError::UnknownOption("frobnicate".into()))
        );
    }

    #[test]
    fn allow_other_is_the_default_as_root_and_noallow_other_turns_it_off() {
        assert!(default_allow_other(true));
        assert!(!default_allow_other(false));
        assert_eq!(MountOptions::parse(&[]).unwrap().allow_other, None);
        let o = MountOptions::parse(&["allow_other,noallow_other".into()]).unwrap();
        assert_eq!(
            o.allow_other,
            Some(false),
            "the last one wins, as mount(8) options do"
        );
    }

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }
}
