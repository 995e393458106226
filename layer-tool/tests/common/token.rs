//! A docker token service for the test registry (distribution's `auth: token`): anonymous
//! callers get `pull`, `tester:s3cret` gets `pull,push`, a wrong password gets 401. Tokens are
//! JWTs signed RS256 by the test CA's key (openssl), with the CA certificate as `x5c`, which
//! the registry trusts through its `rootcertbundle`. Test code: a minimal HTTP/1.1 responder.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret";

/// One token request: the scope asked for, the user (None: anonymous), what was granted.
#[derive(Debug, Clone)]
pub struct Asked {
    pub scope: String,
    pub user: Option<String>,
    pub granted: Vec<String>,
}

pub struct TokenServer {
    pub port: u16,
    pub asked: Arc<Mutex<Vec<Asked>>>,
}

impl TokenServer {
    pub fn start(ca_key: &Path, ca_cert: &Path) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (key, cert, log) = (ca_key.to_path_buf(), ca_cert.to_path_buf(), asked.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (key, cert, log) = (key.clone(), cert.clone(), log.clone());
                std::thread::spawn(move || serve(conn, &key, &cert, &log));
            }
        });
        TokenServer { port, asked }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

fn serve(conn: std::net::TcpStream, key: &Path, cert: &Path, log: &Mutex<Vec<Asked>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim().to_string());
                }
            }
        }
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        // Each `scope` parameter (a mount asks for the target and the source).
        let scopes: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "scope")
            .map(|(_, v)| percent_decode(v))
            .collect();
        let scope = scopes.join(" ");
        let user = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
            .map(|b| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default();
                String::from_utf8_lossy(&raw).into_owned()
            });
        let (status, body, granted, who) = match user.as_deref() {
            Some(u) if u != format!("{USER}:{PASSWORD}") => (
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong password"}]}"#.to_string(),
                vec![],
                u.split(':').next().map(str::to_string),
            ),
            _ => {
                let allowed: &[&str] = if user.is_some() {
                    &["pull", "push"]
                } else {
                    &["pull"]
                };
                let access: Vec<(String, Vec<String>)> =
                    scopes.iter().map(|s| grant(s, allowed)).collect();
                let granted = access.iter().flat_map(|(_, g)| g.clone()).collect();
                let token = sign(key, cert, &access, user.is_some());
                (
                    200,
                    serde_json::json!({"token": token, "expires_in": 300}).to_string(),
                    granted,
                    user.as_ref().map(|_| USER.to_string()),
                )
            }
        };
        log.lock().unwrap().push(Asked {
            scope,
            user: who,
            granted,
        });
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// `repository:NAME:ACTIONS` -> (NAME, the actions asked for that are allowed).
fn grant(scope: &str, allowed: &[&str]) -> (String, Vec<String>) {
    let parts: Vec<&str> = scope.split(':').collect();
    match parts.as_slice() {
        ["repository", name, actions] => (
            name.to_string(),
            actions
                .split(',')
                .filter(|a| allowed.contains(a))
                .map(str::to_string)
                .collect(),
        ),
        _ => (String::new(), vec![]),
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RS256 JWT granting `access` (repository, actions), signed by the CA key, the CA
/// certificate as x5c.
fn sign(key: &Path, cert: &Path, access: &[(String, Vec<String>)], user: bool) -> String {
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(cert)
        .output()
        .unwrap()
        .stdout;
    let header = serde_json::json!({
        "typ": "JWT", "alg": "RS256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(der)],
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<serde_json::Value> = access
        .iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|(name, actions)| {
            serde_json::json!({"type": "repository", "name": name, "actions": actions})
        })
        .collect();
    let claims = serde_json::json!({
        "iss": "test-issuer", "sub": if user { USER } else { "" }, "aud": "test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", rand_id()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let sig = child.wait_with_output().unwrap().stdout;
    format!("{signing_input}.{}", b64url(&sig))
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
