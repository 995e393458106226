//! What went wrong talking to a registry, in words that name it: the registry's own error body
//! (`{"errors":[{"code":..., "message":...}]}`) turned into one of a few kinds.

use serde::Deserialize;

/// The failures a user must be able to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("unknown image {reference}: the registry has no repository {repository:?}{detail}")]
    UnknownRepository {
        reference: String,
        repository: String,
        detail: String,
    },
    #[error("no such tag or digest {what:?} in {repository} ({reference}){detail}")]
    NoSuchManifest {
        reference: String,
        repository: String,
        what: String,
        detail: String,
    },
    #[error("no manifest for platform {want} in {reference} (it has: {have})")]
    NoPlatform {
        reference: String,
        want: String,
        have: String,
    },
    #[error("unauthorized: {registry} refused {what}{detail} (log in with `layer-tool login {registry}`)")]
    Unauthorized {
        registry: String,
        what: String,
        detail: String,
    },
    #[error("digest mismatch: {what}: expected {want} ({want_size} bytes), the registry sent {got} ({got_size} bytes read)")]
    DigestMismatch {
        what: String,
        want: String,
        got: String,
        want_size: u64,
        got_size: u64,
    },
    #[error(
        "TLS failed with {host}: {cause} (a registry with its own CA: put the CA in \
         /etc/containers/certs.d/HOST:PORT/ca.crt or give --cert-dir; --tls-verify=false skips \
         the check)"
    )]
    Tls { host: String, cause: ureq::Error },
    #[error("network unreachable: cannot connect to {host}: {cause}")]
    Unreachable { host: String, cause: ureq::Error },
}

/// The registry's error body (distribution spec, "Error Codes").
#[derive(Debug, Deserialize, Default)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// Parse a body; anything that is not the registry's JSON gives an empty list.
    pub fn parse(bytes: &[u8]) -> ErrorBody {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn has(&self, code: &str) -> bool {
        self.errors.iter().any(|e| e.code == code)
    }

    /// `: CODE: message; ...`, or nothing.
    pub fn detail(&self) -> String {
        if self.errors.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        format!(" ({})", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let b = ErrorBody::parse(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert!(b.has("MANIFEST_UNKNOWN"));
        assert_eq!(b.detail(), " (MANIFEST_UNKNOWN: manifest unknown)");
        assert!(ErrorBody::parse(b"<html>").errors.is_empty());
    }
}
