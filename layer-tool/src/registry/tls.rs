//! TLS for one registry: the system's CA roots plus the registry's own CA certificates from a
//! containers `certs.d` directory (`/etc/containers/certs.d/HOST:PORT/*.crt`, docker's
//! `/etc/docker/certs.d/HOST:PORT/*.crt`, or `--cert-dir DIR`), or no verification at all
//! when the user says `--tls-verify=false`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// Where per-registry CA directories are looked for, in order (containers/image, docker).
pub const CERTS_D: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// The TLS settings for talking to `host` (`host:port`).
pub fn config(host: &str, verify: bool, cert_dir: Option<&Path>) -> Result<TlsConfig> {
    if !verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let mut roots: Vec<Certificate<'static>> = rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    let dir = match cert_dir {
        Some(d) => Some(d.to_path_buf()),
        None => CERTS_D
            .iter()
            .map(|d| Path::new(d).join(host))
            .find(|d| d.is_dir()),
    };
    if let Some(dir) = dir {
        roots.extend(ca_certs(&dir)?);
    }
    let root_certs = if roots.is_empty() {
        // No system roots (no ca-certificates package): the crate's built-in Mozilla set.
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(roots))
    };
    Ok(TlsConfig::builder().root_certs(root_certs).build())
}

/// Every certificate in `DIR/*.crt` (PEM), as containers' certs.d has CAs.
fn ca_certs(dir: &Path) -> Result<Vec<Certificate<'static>>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading the CA directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let pem = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        for item in ureq::tls::parse_pem(&pem) {
            if let PemItem::Certificate(c) =
                item.with_context(|| format!("parsing {}", file.display()))?
            {
                out.push(c.to_owned());
            }
        }
    }
    Ok(out)
}
