//! Registry credentials: the file podman, buildah and skopeo keep them in
//! (`$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`, else
//! `/run/containers/UID/auth.json`), written by `login` and `logout`, and docker's
//! `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`), read too.
//!
//! Both files have the same shape: `{"auths": {"KEY": {"auth": base64("user:password")}}}`,
//! where KEY is a registry (`host:port`, docker's `https://index.docker.io/v1/`) or a
//! registry and repository path; the most specific key wins, as in containers/image. Credential
//! helpers (`credsStore`, `credHelpers`) are not run.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::reference::{DOCKER_HUB, DOCKER_HUB_API};

/// A user name and password (or token). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// `Basic base64(user:password)`.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Where the credential files are; taken from the environment once, then passed around (tests
/// give their own).
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    /// The file `login` writes (containers' auth.json).
    pub auth_json: PathBuf,
    /// Docker's config.json, read only.
    pub docker_config: Option<PathBuf>,
}

impl AuthFiles {
    /// `authfile` (a `--authfile` option) or the environment's files.
    pub fn from_env(authfile: Option<PathBuf>) -> AuthFiles {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let auth_json = authfile
            .or_else(|| var("REGISTRY_AUTH_FILE"))
            .or_else(|| var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")))
            .unwrap_or_else(|| {
                PathBuf::from(format!(
                    "/run/containers/{}/auth.json",
                    nix::unistd::geteuid()
                ))
            });
        let docker_config = var("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| var("HOME").map(|h| h.join(".docker/config.json")));
        AuthFiles {
            auth_json,
            docker_config,
        }
    }

    /// The credentials for `repository` on `registry`, if either file has some.
    pub fn lookup(&self, registry: &str, repository: &str) -> Result<Option<Credentials>> {
        for file in std::iter::once(&self.auth_json).chain(&self.docker_config) {
            let Some(auths) = read_auths(file)? else {
                continue;
            };
            if let Some(c) = find(&auths, registry, repository)
                .with_context(|| format!("reading credentials from {}", file.display()))?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Save credentials for `registry` in the auth file (mode 0600), keeping what else it holds.
    pub fn store(&self, registry: &str, creds: &Credentials) -> Result<()> {
        let mut doc = read_doc(&self.auth_json)?.unwrap_or_else(|| json!({}));
        let obj = doc
            .as_object_mut()
            .with_context(|| format!("{} is not a JSON object", self.auth_json.display()))?;
        let auths = obj
            .entry("auths")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .with_context(|| format!("{}: \"auths\" is not an object", self.auth_json.display()))?;
        let raw = format!("{}:{}", creds.username, creds.password);
        auths.insert(
            normalize_key(registry),
            json!({"auth": base64::engine::general_purpose::STANDARD.encode(raw)}),
        );
        write_private(&self.auth_json, &doc)
    }

    /// Remove `registry`'s credentials from the auth file; false when it had none.
    pub fn remove(&self, registry: &str) -> Result<bool> {
        let Some(mut doc) = read_doc(&self.auth_json)? else {
            return Ok(false);
        };
        let want = normalize_key(registry);
        let Some(auths) = doc.get_mut("auths").and_then(Value::as_object_mut) else {
            return Ok(false);
        };
        let before = auths.len();
        auths.retain(|k, _| normalize_key(k) != want);
        if auths.len() == before {
            return Ok(false);
        }
        write_private(&self.auth_json, &doc)?;
        Ok(true)
    }
}

/// `https://index.docker.io/v1/`, `registry-1.docker.io` -> `docker.io`; scheme and trailing
/// API paths dropped, so keys written by docker, podman and by hand compare equal.
pub fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, path) = match k.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (k, None),
    };
    let host = match host {
        "index.docker.io" | DOCKER_HUB_API => DOCKER_HUB,
        h => h,
    };
    match path {
        Some(p) => format!("{host}/{p}"),
        None => host.to_string(),
    }
}

/// The most specific key first: `host/a/b/c`, `host/a/b`, `host/a`, `host`.
fn find(
    auths: &Map<String, Value>,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let host = normalize_key(registry);
    let mut wanted = Vec::new();
    let mut path = repository.to_string();
    while !path.is_empty() {
        wanted.push(format!("{host}/{path}"));
        path = path
            .rsplit_once('/')
            .map(|(p, _)| p.to_string())
            .unwrap_or_default();
    }
    wanted.push(host);
    for want in &wanted {
        for (key, entry) in auths {
            if normalize_key(key) == *want {
                if let Some(c) = decode_entry(entry).with_context(|| format!("entry {key:?}"))? {
                    return Ok(Some(c));
                }
            }
        }
    }
    Ok(None)
}

fn decode_entry(entry: &Value) -> Result<Option<Credentials>> {
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .context("\"auth\" is not base64")?;
        let text = String::from_utf8(raw).context("\"auth\" is not UTF-8")?;
        let Some((u, p)) = text.split_once(':') else {
            bail!("\"auth\" is not user:password");
        };
        return Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        }));
    }
    let field = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(match (field("username"), field("password")) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        _ => None,
    })
}

fn read_doc(file: &Path) -> Result<Option<Value>> {
    match fs::read(file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parsing {}", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

fn read_auths(file: &Path) -> Result<Option<Map<String, Value>>> {
    Ok(read_doc(file)?.and_then(|d| d.get("auths").and_then(Value::as_object).cloned()))
}

/// Write `doc` to `file` atomically, mode 0600, its directory 0700 when created.
fn write_private(file: &Path, doc: &Value) -> Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".auth.json.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| tmp.write_all(serde_json::to_string_pretty(doc)?.as_bytes()))
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(file)
        .with_context(|| format!("renaming into place as {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> AuthFiles {
        AuthFiles {
            auth_json: dir.join("containers/auth.json"),
            docker_config: Some(dir.join("docker/config.json")),
        }
    }

    fn creds(u: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: "p:w".into(),
        }
    }

    #[test]
    fn login_logout_round_trip_with_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert_eq!(f.lookup("h:5000", "a/b").unwrap(), None);
        f.store("h:5000", &creds("u")).unwrap();
        assert_eq!(f.lookup("h:5000", "a/b").unwrap(), Some(creds("u")));
        let mode = fs::metadata(&f.auth_json).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(f.remove("h:5000").unwrap());
        assert!(!f.remove("h:5000").unwrap());
        assert_eq!(f.lookup("h:5000", "a/b").unwrap(), None);
    }

    #[test]
    fn docker_config_is_read_and_the_most_specific_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        fs::create_dir_all(dir.path().join("docker")).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let doc = json!({"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:p:w")},
            "h:5000/team": {"auth": b64("team:p:w")},
            "h:5000": {"username": "host", "password": "p:w"},
        }});
        fs::write(f.docker_config.as_ref().unwrap(), doc.to_string()).unwrap();
        assert_eq!(
            f.lookup("docker.io", "library/alpine").unwrap(),
            Some(creds("hub"))
        );
        assert_eq!(f.lookup("h:5000", "team/app").unwrap(), Some(creds("team")));
        assert_eq!(
            f.lookup("h:5000", "other/app").unwrap(),
            Some(creds("host"))
        );
        // auth.json comes first.
        f.store("h:5000", &creds("mine")).unwrap();
        assert_eq!(
            f.lookup("h:5000", "other/app").unwrap(),
            Some(creds("mine"))
        );
        assert!(!format!("{:?}", creds("u")).contains("p:w"));
    }
}
