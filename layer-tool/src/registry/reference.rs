//! Image references as docker writes them (`alpine`, `alpine:3.20`, `library/alpine`,
//! `host:5000/team/app@sha256:...`), parsed by oci-spec's grammar (distribution's own rules:
//! a first component with a `.` or `:`, or `localhost`, is a registry; otherwise docker.io, and
//! one-component names live under `library/`).

use std::fmt;
use std::net::IpAddr;

use anyhow::{Context, Result};
use oci_spec::distribution::Reference;

use crate::digest;

/// The registry docker's short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// Where docker.io's API is really served.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// As users write it: `docker.io`, `host:5000`.
    pub registry: String,
    /// `library/alpine`, `team/app`.
    pub repository: String,
    /// `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:<hex>`, checked.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef> {
        let r: Reference = text
            .parse()
            .with_context(|| format!("invalid image reference {text:?}"))?;
        if let Some(d) = r.digest() {
            digest::hex_part(d).with_context(|| format!("image reference {text:?}"))?;
        }
        Ok(ImageRef {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// The host (and port) whose `/v2/` API serves this registry.
    pub fn api_host(&self) -> &str {
        match self.registry.as_str() {
            DOCKER_HUB | "index.docker.io" => DOCKER_HUB_API,
            other => other,
        }
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// A registry on this machine (`localhost`, 127.0.0.0/8, `::1`): docker talks plain HTTP
    /// to it without being told to.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.registry)
    }

    /// The name in the local store (which has no `/`): the last path component and the tag,
    /// as `import` names `docker.io/library/busybox:latest` `busybox:latest`; a digest
    /// reference `app@sha256:HEX` is stored as `app:sha256-HEX`.
    pub fn store_name(&self) -> String {
        let last = self
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository);
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{last}:{}", d.replace(':', "-")),
            (None, Some(t)) => format!("{last}:{t}"),
            (None, None) => format!("{last}:latest"),
        }
    }

    /// The same repository with another tag or digest.
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `host`, `host:port`, `[::1]:port`: true for localhost and loopback addresses.
pub fn is_loopback_host(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> ImageRef {
        ImageRef::parse(text).unwrap()
    }

    #[test]
    fn short_names_resolve_to_docker_hub_library() {
        let a = r("alpine");
        assert_eq!(a.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(a.api_host(), DOCKER_HUB_API);
        assert_eq!(a.store_name(), "alpine:latest");
        assert_eq!(
            r("alpine:3.20").to_string(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(
            r("library/alpine").to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(r("team/app").to_string(), "docker.io/team/app:latest");
        assert_eq!(r("docker.io/team/app:1").api_host(), DOCKER_HUB_API);
    }

    #[test]
    fn registries_ports_and_digests() {
        let hex = "a".repeat(64);
        let d = r(&format!("registry.example:5000/team/app@sha256:{hex}"));
        assert_eq!(d.registry, "registry.example:5000");
        assert_eq!(d.repository, "team/app");
        assert_eq!(d.manifest_reference(), format!("sha256:{hex}"));
        assert_eq!(d.store_name(), format!("app:sha256-{hex}"));
        crate::store::validate_image_name(&d.store_name()).unwrap();
        let l = r("127.0.0.1:5000/x:t");
        assert!(l.is_loopback());
        assert_eq!(l.api_host(), "127.0.0.1:5000");
        assert!(r("localhost/x").is_loopback());
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!r("registry.example/x").is_loopback());
    }

    #[test]
    fn bad_references_are_refused() {
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("team/App").is_err());
        assert!(ImageRef::parse("a@sha256:abc").is_err());
        assert!(ImageRef::parse(&format!("a@sha512:{}", "a".repeat(128))).is_err());
    }
}
