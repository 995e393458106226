//! One repository on one registry, spoken to over the distribution API with authentication
//! already taken care of: pull and push call [`Client::request`] and never see a token.
//!
//! The handshake (as docker and go-containerregistry's transport do it):
//! 1. `GET /v2/` over HTTPS. When that cannot connect or is not TLS, and the registry is on a
//!    loopback address or the user said `--tls-verify=false`, the same over plain HTTP.
//! 2. `200`: no authentication. `401` with `WWW-Authenticate: Basic`: the user's credentials
//!    on every request. `401` with `WWW-Authenticate: Bearer realm=...,service=...`: a token
//!    from the realm for `repository:NAME:pull` (or `pull,push`), asked for with the user's
//!    credentials when there are some and anonymously otherwise.
//! 3. A request answered `401` with a fresh Bearer challenge (another scope, an expired token)
//!    gets a new token for that challenge and is sent once more.

use std::fs;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ureq::http::{Method, Response};
use ureq::{Agent, Body};

use super::auth::{AuthFiles, Credentials};
use super::error::{ErrorBody, RegistryError};
use super::reference::ImageRef;
use super::tls;

/// How to reach registries: TLS settings and where credentials come from.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Verify TLS certificates and require HTTPS (except on loopback addresses).
    pub tls_verify: bool,
    /// A directory of `*.crt` CA certificates for the registry, instead of certs.d.
    pub cert_dir: Option<std::path::PathBuf>,
    pub auth: AuthFiles,
    /// Credentials given on the command line, used instead of the files'.
    pub credentials: Option<Credentials>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            tls_verify: true,
            cert_dir: None,
            auth: AuthFiles::from_env(None),
            credentials: None,
        }
    }
}

/// What the client may do in the repository (the token scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Pull,
    Push,
}

#[derive(Debug, Clone)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A request body: nothing, bytes, or a file (re-opened when the request is sent again).
pub enum Payload<'a> {
    Empty,
    Bytes(&'a [u8], &'a str),
    File(&'a Path),
}

pub struct Client {
    agent: Agent,
    /// `https://host:port` or `http://host:port`.
    base: String,
    /// The registry as the user named it (messages, credential keys).
    registry: String,
    pub repository: String,
    creds: Option<Credentials>,
    scheme: Scheme,
    scope: String,
    token: Mutex<Option<String>>,
    /// Plain HTTP is acceptable (a loopback registry, or `--tls-verify=false`).
    plain_ok: bool,
}

impl Client {
    /// Connect to the registry of `image` for its repository: the handshake's steps 1 and 2.
    pub fn connect(image: &ImageRef, access: Access, opts: &RegistryOptions) -> Result<Client> {
        let host = image.api_host().to_string();
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => opts.auth.lookup(&image.registry, &image.repository)?,
        };
        let tls = tls::config(&host, opts.tls_verify, opts.cert_dir.as_deref())?;
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_resolve(Some(Duration::from_secs(30)))
            .timeout_connect(Some(Duration::from_secs(30)))
            .user_agent(concat!("layer-tool/", env!("CARGO_PKG_VERSION")));
        if image.is_loopback() {
            // A proxy from the environment cannot reach this machine's loopback.
            config = config.proxy(None);
        }
        let agent: Agent = config.build().into();
        let plain_ok = image.is_loopback() || !opts.tls_verify;
        let https = format!("https://{host}");
        let (base, ping) = match agent.get(format!("{https}/v2/")).call() {
            Ok(resp) => (https, resp),
            Err(tls_err) if plain_ok => {
                let http = format!("http://{host}");
                match agent.get(format!("{http}/v2/")).call() {
                    // Only a registry's answer counts: a TLS server answers plain HTTP with 400,
                    // and then the TLS failure is the one to report.
                    Ok(resp) if matches!(resp.status().as_u16(), 200..=299 | 401) => (http, resp),
                    _ => return Err(unreachable(&host, tls_err)),
                }
            }
            Err(e) => return Err(unreachable(&host, e)),
        };
        let scheme = match ping.status().as_u16() {
            200..=299 => Scheme::Anonymous,
            401 => parse_challenge(&ping)
                .with_context(|| format!("{base}/v2/ asked for authentication"))?,
            status => bail!("{base}/v2/ answered {status}: is {host} a registry?"),
        };
        let actions = match access {
            Access::Pull => "pull",
            Access::Push => "pull,push",
        };
        Ok(Client {
            agent,
            base,
            registry: image.registry.clone(),
            repository: image.repository.clone(),
            creds,
            scheme,
            scope: format!("repository:{}:{actions}", image.repository),
            token: Mutex::new(None),
            plain_ok,
        })
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `BASE/v2/REPOSITORY/SUFFIX`.
    pub fn url(&self, suffix: &str) -> String {
        format!("{}/v2/{}/{suffix}", self.base, self.repository)
    }

    /// A `Location` header of the registry made absolute.
    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    /// Send a request with authentication; a `401` with a new challenge is answered once.
    pub fn request(
        &self,
        method: Method,
        url: &str,
        accept: &[&str],
        payload: &Payload,
    ) -> Result<Response<Body>> {
        let mut retried = false;
        loop {
            let resp = self.send(&method, url, accept, payload)?;
            if resp.status() != 401 || retried {
                return Ok(resp);
            }
            retried = true;
            match parse_challenge(&resp) {
                Ok(Scheme::Bearer { realm, service }) => {
                    let scope = challenge_scope(&resp).unwrap_or_else(|| self.scope.clone());
                    let token = self.fetch_token(&realm, service.as_deref(), &scope)?;
                    *self.lock_token() = Some(token);
                }
                _ => return Ok(resp),
            }
        }
    }

    fn send(
        &self,
        method: &Method,
        url: &str,
        accept: &[&str],
        payload: &Payload,
    ) -> Result<Response<Body>> {
        let mut req = ureq::http::Request::builder()
            .method(method.clone())
            .uri(url);
        if !accept.is_empty() {
            req = req.header("Accept", accept.join(", "));
        }
        if let Some(auth) = self.authorization()? {
            req = req.header("Authorization", auth);
        }
        let result = match payload {
            Payload::Empty => {
                let req = req.body(()).context("building a request")?;
                self.agent.run(req)
            }
            Payload::Bytes(bytes, content_type) => {
                let req = req
                    .header("Content-Type", *content_type)
                    .body(bytes.to_vec())
                    .context("building a request")?;
                self.agent.run(req)
            }
            Payload::File(path) => {
                let file =
                    fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let req = req
                    .header("Content-Type", "application/octet-stream")
                    .body(file)
                    .context("building a request")?;
                self.agent.run(req)
            }
        };
        result.map_err(|e| match e {
            ureq::Error::Io(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Timeout(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_) => unreachable(&self.base, e),
            e => anyhow!(e).context(format!("{method} {url}")),
        })
    }

    /// Check that the registry takes the credentials (`login`): a token for them (Bearer),
    /// or `GET /v2/` with them (Basic). A registry that wants none takes any.
    pub fn check_credentials(&self) -> Result<()> {
        let denied = |detail: String| -> anyhow::Error {
            RegistryError::Unauthorized {
                registry: self.registry.clone(),
                what: "the user name and password".to_string(),
                detail,
            }
            .into()
        };
        match &self.scheme {
            Scheme::Anonymous => Ok(()),
            Scheme::Bearer { realm, service } => {
                self.fetch_token(realm, service.as_deref(), "").map(|_| ())
            }
            Scheme::Basic => {
                let url = format!("{}/v2/", self.base);
                let mut resp = self.send(&Method::GET, &url, &[], &Payload::Empty)?;
                match resp.status().as_u16() {
                    200..=299 => Ok(()),
                    401 | 403 => {
                        let body = resp
                            .body_mut()
                            .with_config()
                            .limit(64 << 10)
                            .read_to_vec()
                            .unwrap_or_default();
                        Err(denied(ErrorBody::parse(&body).detail()))
                    }
                    status => bail!("{url} answered {status}"),
                }
            }
        }
    }

    /// The `Authorization` header for the next request, fetching a token when none is held.
    fn authorization(&self) -> Result<Option<String>> {
        match &self.scheme {
            Scheme::Anonymous => Ok(self.lock_token().as_ref().map(|t| format!("Bearer {t}"))),
            Scheme::Basic => Ok(self.creds.as_ref().map(Credentials::basic_header)),
            Scheme::Bearer { realm, service } => {
                let mut held = self.lock_token();
                if held.is_none() {
                    *held = Some(self.fetch_token(realm, service.as_deref(), &self.scope)?);
                }
                Ok(held.as_ref().map(|t| format!("Bearer {t}")))
            }
        }
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // A thread that panicked holding the lock left a token or none: either is usable.
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A token from the realm (docker's token protocol, GET form).
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        if let Some(c) = &self.creds {
            // A password never crosses the network in the clear unless the user allowed plain
            // HTTP (or it stays on this machine).
            let host = realm
                .strip_prefix("http://")
                .map(|r| r.split('/').next().unwrap_or(r));
            if let Some(host) = host {
                if !self.plain_ok && !super::reference::is_loopback_host(host) {
                    bail!(
                        "the token service {realm} is plain HTTP: not sending {}'s password \
                         there (--tls-verify=false allows it)",
                        c.username
                    );
                }
            }
        }
        let mut req = self.agent.get(realm);
        // A challenge may name several scopes (a mount: this repository and the source);
        // the token protocol takes each as its own `scope` parameter.
        for one in scope.split_whitespace() {
            req = req.query("scope", one);
        }
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", c.basic_header());
        }
        let mut resp = req.call().map_err(|e| unreachable(realm, e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .with_context(|| format!("reading the token from {realm}"))?;
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                what: if self.creds.is_some() {
                    "the user name and password".to_string()
                } else {
                    "an anonymous token".to_string()
                },
                detail: ErrorBody::parse(&body).detail(),
            }
            .into());
        }
        if !(200..300).contains(&status) {
            bail!("the token service {realm} answered {status}");
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .with_context(|| format!("parsing the token from {realm}"))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .with_context(|| format!("the token service {realm} sent no token"))
    }

    /// The error for a response that was not a success: what failed, in the registry's words.
    pub fn status_error(
        &self,
        resp: &mut Response<Body>,
        image: &ImageRef,
        what: &str,
    ) -> anyhow::Error {
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        let errors = ErrorBody::parse(&body);
        let detail = errors.detail();
        match status {
            401 | 403 => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                what: format!(
                    "{what} of {image}{}",
                    if self.creds.is_some() {
                        " with the stored credentials"
                    } else {
                        " without credentials"
                    }
                ),
                detail,
            }
            .into(),
            404 if errors.has("NAME_UNKNOWN") => RegistryError::UnknownRepository {
                reference: image.to_string(),
                repository: image.repository.clone(),
                detail,
            }
            .into(),
            404 if what == "manifest" => RegistryError::NoSuchManifest {
                reference: image.to_string(),
                repository: image.repository.clone(),
                what: image.manifest_reference().to_string(),
                detail,
            }
            .into(),
            _ => anyhow!(
                "{} answered {status} for the {what} of {image}{detail}",
                self.registry
            ),
        }
    }
}

fn unreachable(host: &str, cause: ureq::Error) -> anyhow::Error {
    // rustls' handshake failures (an unknown CA) reach us wrapped in an I/O error.
    let tls_io = matches!(&cause, ureq::Error::Io(e)
        if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()));
    if tls_io || matches!(cause, ureq::Error::Tls(_) | ureq::Error::Rustls(_)) {
        return RegistryError::Tls {
            host: host.to_string(),
            cause,
        }
        .into();
    }
    RegistryError::Unreachable {
        host: host.to_string(),
        cause,
    }
    .into()
}

/// The scheme a `401` asks for.
fn parse_challenge(resp: &Response<Body>) -> Result<Scheme> {
    let header = www_authenticate(resp)?;
    let challenges = http_auth::parse_challenges(&header)
        .map_err(|e| anyhow!("unparsable WWW-Authenticate {header:?}: {e}"))?;
    for c in &challenges {
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if c.scheme.eq_ignore_ascii_case("bearer") {
            let realm = param("realm").context("a Bearer challenge without a realm")?;
            if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                bail!("the Bearer realm {realm:?} is not an http(s) URL");
            }
            return Ok(Scheme::Bearer {
                realm,
                service: param("service"),
            });
        }
        if c.scheme.eq_ignore_ascii_case("basic") {
            return Ok(Scheme::Basic);
        }
    }
    bail!("no Basic or Bearer challenge in WWW-Authenticate {header:?}")
}

/// The `scope` a Bearer challenge names (a push that mounts from another repository).
fn challenge_scope(resp: &Response<Body>) -> Option<String> {
    let header = www_authenticate(resp).ok()?;
    let challenges = http_auth::parse_challenges(&header).ok()?;
    challenges
        .iter()
        .flat_map(|c| &c.params)
        .find(|(k, _)| k.eq_ignore_ascii_case("scope"))
        .map(|(_, v)| v.to_unescaped())
}

fn www_authenticate(resp: &Response<Body>) -> Result<String> {
    let values: Vec<&str> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        bail!("401 without a WWW-Authenticate header");
    }
    Ok(values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unauthorized(header: &str) -> Response<Body> {
        Response::builder()
            .status(401)
            .header("WWW-Authenticate", header)
            .body(Body::builder().data(""))
            .unwrap()
    }

    #[test]
    fn challenges() {
        let r = unauthorized(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope""#,
        );
        match parse_challenge(&r).unwrap() {
            Scheme::Bearer { realm, service } => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(service.as_deref(), Some("registry.example"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            challenge_scope(&r).as_deref(),
            Some("repository:a/b:pull,push")
        );
        assert!(matches!(
            parse_challenge(&unauthorized(r#"Basic realm="test""#)).unwrap(),
            Scheme::Basic
        ));
        // A realm that is not a URL, and schemes we do not speak, are refused.
        assert!(parse_challenge(&unauthorized(r#"Bearer realm="/etc/passwd""#)).is_err());
        assert!(parse_challenge(&unauthorized(r#"Negotiate abc="x""#)).is_err());
    }
}
