//! `layer-tool login REGISTRY`: credentials checked against the registry, then saved in the
//! auth file (only when the registry took them).

use anyhow::{Context, Result};

use super::auth::Credentials;
use super::client::{Access, Client, RegistryOptions};
use super::reference::ImageRef;

/// Check `creds` with `registry` and save them.
pub fn login(registry: &str, creds: &Credentials, opts: &RegistryOptions) -> Result<()> {
    let registry = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = super::auth::normalize_key(registry);
    if host.contains('/') || host.is_empty() {
        anyhow::bail!("login: {registry:?} is not a registry host (HOST or HOST:PORT)");
    }
    let target = ImageRef {
        registry: host.clone(),
        repository: String::new(),
        tag: None,
        digest: None,
    };
    let opts = RegistryOptions {
        credentials: Some(creds.clone()),
        ..opts.clone()
    };
    let client = Client::connect(&target, Access::Pull, &opts)?;
    client
        .check_credentials()
        .with_context(|| format!("logging in to {host}"))?;
    opts.auth.store(&host, creds)
}
