//! The validated description of one container run, and the parsers of its option values.
//!
//! Everything that can be checked before touching the system is checked here, so that bad input
//! fails with a clear message and leaves nothing behind.
#![forbid(unsafe_code)]

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cgroup::{CpuQuota, Limits};
use crate::cli::RunArgs;

/// The cfs period docker uses.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Docker's lower bound for `--memory`.
pub const MIN_MEMORY: u64 = 6 << 20;

/// Which network namespace the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// A new namespace with only `lo`, brought up.
    None,
    /// The host's namespace.
    Host,
    /// A new namespace with `lo` and a user-mode network through `slirp4netns` (without root
    /// only: see [`crate::slirp`]).
    Slirp4netns { allow_host_loopback: bool },
}

/// One `-v HOST:CTR[:ro]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Canonical host path (it must exist).
    pub host: PathBuf,
    /// Absolute path in the container, normalised, never `/`.
    pub container: PathBuf,
    pub read_only: bool,
}

/// Everything `runner run` was asked to do, validated.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub image: String,
    /// Whether to pull `image` from its registry first.
    pub pull: layer_tool::registry::pull::PullPolicy,
    pub command: Vec<String>,
    pub name: Option<String>,
    pub remove: bool,
    pub hostname: Option<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub volumes: Vec<Volume>,
    pub limits: Limits,
    pub net: Net,
    pub read_only: bool,
    pub tty: bool,
    pub init: bool,
    pub no_pivot: bool,
    pub userns: bool,
}

impl RunSpec {
    pub fn from_args(a: RunArgs) -> Result<RunSpec> {
        if let Some(n) = &a.name {
            validate_name(n)?;
        }
        if let Some(h) = &a.hostname {
            validate_hostname(h)?;
        }
        let env = a
            .env
            .iter()
            .map(|e| parse_env(e))
            .collect::<Result<Vec<_>>>()?;
        let volumes = a
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<Vec<_>>>()?;
        if let Some(w) = &a.workdir {
            if !w.starts_with('/') {
                bail!("--workdir {w:?}: must be an absolute path");
            }
        }
        if let Some(u) = &a.user {
            if u.is_empty() {
                bail!("--user: empty user");
            }
        }
        let limits = Limits {
            cpu: a.cpus.as_deref().map(parse_cpus).transpose()?,
            memory: a.memory.as_deref().map(parse_memory).transpose()?,
            pids: match a.pids_limit {
                None | Some(-1) | Some(0) => None,
                Some(n) if n > 0 => Some(n as u64),
                Some(n) => bail!("--pids-limit {n}: must be a positive number, or -1 for no limit"),
            },
            cpuset_cpus: a.cpuset_cpus.as_deref().map(parse_cpuset).transpose()?,
            io_weight: match a.io_weight {
                None => None,
                Some(w) if (10..=1000).contains(&w) => Some(w),
                Some(w) => bail!("--io-weight {w}: out of range 10..=1000"),
            },
            ..Default::default()
        };
        let net = match a.net.as_str() {
            "none" | "" => Net::None,
            "host" => Net::Host,
            "slirp4netns" => Net::Slirp4netns {
                allow_host_loopback: false,
            },
            "slirp4netns:allow_host_loopback=true" => Net::Slirp4netns {
                allow_host_loopback: true,
            },
            other => {
                bail!("--net {other:?}: use none, host or slirp4netns[:allow_host_loopback=true]")
            }
        };
        let pull = match a.pull {
            crate::cli::PullArg::Missing => layer_tool::registry::pull::PullPolicy::Missing,
            crate::cli::PullArg::Always => layer_tool::registry::pull::PullPolicy::Always,
            crate::cli::PullArg::Never => layer_tool::registry::pull::PullPolicy::Never,
        };
        Ok(RunSpec {
            image: a.image,
            pull,
            command: a.command,
            name: a.name,
            remove: a.rm,
            hostname: a.hostname,
            env,
            workdir: a.workdir,
            user: a.user,
            volumes,
            limits,
            net,
            read_only: a.read_only,
            tty: a.tty,
            init: a.init,
            no_pivot: a.no_pivot,
            userns: a.userns,
        })
    }
}

/// Container names as docker accepts them.
pub fn validate_name(name: &str) -> Result<()> {
    let mut bytes = name.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name.len() <= 128;
    if !ok {
        bail!("invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*");
    }
    Ok(())
}

/// A hostname of up to 64 letters, digits, '-' and '.', as sethostname(2) and RFC 1123 allow.
pub fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with('-');
    if !ok {
        bail!("invalid hostname {h:?}: 1 to 64 letters, digits, '-' and '.'");
    }
    Ok(())
}

/// `KEY=VALUE`, or `KEY` alone to copy the runner's own value (dropped when unset, as docker does).
pub fn parse_env(e: &str) -> Result<String> {
    let key = e.split('=').next().unwrap_or("");
    if key.is_empty() || key.contains('\0') || e.contains('\0') {
        bail!("invalid environment variable {e:?}: use KEY=VALUE");
    }
    if e.contains('=') {
        return Ok(e.to_string());
    }
    Ok(match std::env::var(key) {
        Ok(v) => format!("{key}={v}"),
        Err(_) => String::new(),
    })
}

/// `HOST:CTR[:ro|rw]`: the host path must exist; the container path must be absolute.
pub fn parse_volume(v: &str) -> Result<Volume> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, ctr, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, "rw"),
        [h, c, m] => (*h, *c, *m),
        _ => bail!("invalid volume {v:?}: use HOST:CONTAINER[:ro]"),
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        m => bail!("invalid volume mode {m:?} in {v:?}: use ro or rw"),
    };
    if !host.starts_with('/') {
        bail!("volume source {host:?} must be an absolute path");
    }
    let host = std::fs::canonicalize(host)
        .with_context(|| format!("volume source {host:?} does not exist"))?;
    let container = normalise_container_path(ctr).with_context(|| format!("volume {v:?}"))?;
    if container == Path::new("/") {
        bail!("volume {v:?}: cannot mount over the container's root");
    }
    Ok(Volume {
        host,
        container,
        read_only,
    })
}

/// An absolute path without `..` or `.` components.
pub fn normalise_container_path(p: &str) -> Result<PathBuf> {
    if !p.starts_with('/') {
        bail!("container path {p:?} must be absolute");
    }
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("container path {p:?} must not contain '..'")
            }
        }
    }
    Ok(out)
}

/// `--cpus 1.5` into a cfs quota of 150 ms per 100 ms period (at least 1 ms, as the kernel wants).
pub fn parse_cpus(s: &str) -> Result<CpuQuota> {
    let cpus: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("--cpus {s:?}: not a number"))?;
    let max = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if !(cpus.is_finite() && cpus >= 0.01 && cpus <= max) {
        bail!("--cpus {s}: out of range 0.01..={max} (the CPUs of this host)");
    }
    let quota_us = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
    Ok(CpuQuota {
        quota_us,
        period_us: CPU_PERIOD_US,
    })
}

/// `512m`, `1g`, `1048576`, `64KiB`…: bytes. At least [`MIN_MEMORY`].
pub fn parse_memory(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("--memory {s:?}: not a size"))?;
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => bail!("--memory {s:?}: unknown unit (use b, k, m, g)"),
    };
    let bytes = n
        .checked_mul(mult)
        .with_context(|| format!("--memory {s:?}: too large"))?;
    if bytes < MIN_MEMORY {
        bail!("--memory {s}: the minimum is 6m");
    }
    Ok(bytes)
}

/// A cpu list (`0-1,3`): each CPU must exist on this host.
pub fn parse_cpuset(s: &str) -> Result<String> {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let bad = || anyhow::anyhow!("--cpuset-cpus {s:?}: use a list like 0-1,3 of CPUs below {n}");
    if s.is_empty() {
        return Err(bad());
    }
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.parse().map_err(|_| bad())?;
        let b: usize = b.parse().map_err(|_| bad())?;
        if a > b || b >= n.max(cpu_count_online()) {
            return Err(bad());
        }
    }
    Ok(s.to_string())
}

/// Online CPUs of the host (`/sys/devices/system/cpu/online`), which may exceed our affinity.
fn cpu_count_online() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| {
            t.trim()
                .split(',')
                .filter_map(|p| p.rsplit('-').next()?.parse::<usize>().ok())
                .max()
        })
        .map(|m| m + 1)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64m").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1G").unwrap(), 1 << 30);
        assert_eq!(parse_memory("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1k")
            .unwrap_err()
            .to_string()
            .contains("minimum"));
        assert!(parse_memory("12q").is_err());
        assert!(parse_memory("m").is_err());
        assert!(parse_memory("99999999999t").is_err());
    }

    #[test]
    fn cpus_to_quota() {
        let q = parse_cpus("0.5").unwrap();
        assert_eq!((q.quota_us, q.period_us), (50_000, 100_000));
        assert_eq!(parse_cpus("0.01").unwrap().quota_us, 1000);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("100000").is_err());
        assert!(parse_cpus("x").is_err());
    }

    #[test]
    fn cpusets() {
        assert_eq!(parse_cpuset("0").unwrap(), "0");
        assert!(parse_cpuset("1-0").is_err());
        assert!(parse_cpuset("a").is_err());
        assert!(parse_cpuset("").is_err());
        assert!(parse_cpuset("100000").is_err());
    }

    #[test]
    fn volumes() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().to_str().unwrap();
        let v = parse_volume(&format!("{host}:/data/./x:ro")).unwrap();
        assert_eq!(v.container, Path::new("/data/x"));
        assert!(v.read_only);
        assert!(!parse_volume(&format!("{host}:/data")).unwrap().read_only);
        let err = parse_volume("/does/not/exist:/x").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(parse_volume(&format!("{host}:rel")).is_err());
        assert!(parse_volume(&format!("{host}:/a/../b")).is_err());
        assert!(parse_volume(&format!("{host}:/")).is_err());
        assert!(parse_volume(&format!("{host}:/x:rx")).is_err());
        assert!(parse_volume("relative:/x").is_err());
    }

    #[test]
    fn names_hostnames_env() {
        assert!(validate_name("web_1.a-b").is_ok());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_hostname("box-1.local").is_ok());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
        assert!(validate_hostname("a b").is_err());
        assert_eq!(parse_env("A=b=c").unwrap(), "A=b=c");
        assert!(parse_env("=x").is_err());
        assert_eq!(parse_env("SURELY_UNSET_VARIABLE_42").unwrap(), "");
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let args = |f: fn(&mut RunArgs)| {
            let mut a = RunArgs {
                image: "demo".into(),
                net: "none".into(),
                ..Default::default()
            };
            f(&mut a);
            RunSpec::from_args(a)
        };
        assert!(args(|_| {}).is_ok());
        assert!(args(|a| a.pids_limit = Some(-5)).is_err());
        assert_eq!(args(|a| a.pids_limit = Some(-1)).unwrap().limits.pids, None);
        assert!(args(|a| a.io_weight = Some(5)).is_err());
        assert!(args(|a| a.net = "bridge".into()).is_err());
        assert!(args(|a| a.workdir = Some("rel".into())).is_err());
        assert_eq!(args(|a| a.net = "host".into()).unwrap().net, Net::Host);
        assert_eq!(
            args(|a| a.net = "slirp4netns".into()).unwrap().net,
            Net::Slirp4netns {
                allow_host_loopback: false
            }
        );
        assert_eq!(
            args(|a| a.net = "slirp4netns:allow_host_loopback=true".into())
                .unwrap()
                .net,
            Net::Slirp4netns {
                allow_host_loopback: true
            }
        );
        assert!(args(|a| a.net = "slirp4netns:port_handler=rootlesskit".into()).is_err());
    }
}
