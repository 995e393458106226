//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) serving on a free
//! 127.0.0.1 port with filesystem storage in a temporary directory, optionally behind htpasswd
//! basic auth and TLS (a CA and a server certificate made with openssl). Its log is kept so
//! tests can count the requests it answered. Self-contained: runner's tests include it too.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Why a registry cannot be started here, if it cannot.
pub fn registry_missing() -> Option<String> {
    for (bin, pkg) in [
        (REGISTRY_BIN, "docker-registry"),
        ("/usr/bin/htpasswd", "apache2-utils"),
        ("/usr/bin/openssl", "openssl"),
        ("/usr/bin/skopeo", "skopeo"),
    ] {
        if !Path::new(bin).is_file() {
            return Some(format!("no {bin} (apt-get install {pkg})"));
        }
    }
    None
}

#[derive(Default)]
pub struct Setup {
    /// htpasswd basic auth with this user and password.
    pub user: Option<(String, String)>,
    /// TLS with a certificate from a CA of the test's own (`ca.crt` in [`Registry::cert_dir`]).
    pub tls: bool,
    /// Token auth: (realm URL, the certificate bundle that signs the tokens).
    pub token: Option<(String, PathBuf)>,
}

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Registry {
    pub fn start(setup: Setup) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: test-secret\n",
            storage.display()
        );
        if setup.tls {
            let certs = make_certs(&dir.path().join("certs"));
            let (cert, key) = (certs.server_cert, certs.server_key);
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, pass)) = &setup.user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd: {out:?}");
            let file = dir.path().join("htpasswd");
            fs::write(&file, out.stdout).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                file.display()
            );
        }
        if let Some((realm, bundle)) = &setup.token {
            config += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: test-registry\n    \
                 issuer: test-issuer\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        let config_file = dir.path().join("config.yml");
        fs::write(&config_file, config).unwrap();
        let log = dir.path().join("registry.log");
        let log_file = fs::File::create(&log).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("starting docker-registry");
        let mut reg = Registry {
            child,
            port,
            dir,
            log,
        };
        reg.wait_listening();
        reg
    }

    /// Poll until the port accepts connections (never a fixed sleep).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory holding `ca.crt` (TLS registries).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs/ca")
    }

    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the blob `sha256:<hex>`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The requests answered so far: (method, uri), in order.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log_text()
            .lines()
            .filter(|l| {
                l.contains("msg=\"response completed\"")
                    || l.contains("msg=\"response completed with error\"")
            })
            .filter_map(|l| {
                Some((
                    field(l, "http.request.method=")?,
                    field(l, "http.request.uri=")?,
                ))
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let value = match rest.strip_prefix('"') {
        Some(q) => q.split('"').next()?,
        None => rest.split(' ').next()?,
    };
    Some(value.to_string())
}

/// A port nobody listens on now (the kernel's pick, released at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Certs {
    pub ca_key: PathBuf,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A CA (`DIR/ca/ca.crt`) and a server certificate for 127.0.0.1 signed by it.
pub fn make_certs(dir: &Path) -> Certs {
    fs::create_dir_all(dir.join("ca")).unwrap();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca/ca.crt"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca/ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("server.crt"),
    ]);
    Certs {
        ca_key: dir.join("ca.key"),
        ca_cert: dir.join("ca/ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

/// skopeo with a policy that accepts everything (all local) and no system registries config.
pub fn skopeo(dir: &Path, args: &[&str]) -> String {
    let policy = dir.join("policy.json");
    if !policy.exists() {
        fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
    }
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(args)
        .env("REGISTRY_AUTH_FILE", dir.join("skopeo-auth.json"))
        .env("TMPDIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP proxy to a local port that stops forwarding answers once `after` bytes went back on
/// one connection: the client hangs mid-blob, to be interrupted by the test.
pub struct StallingProxy {
    pub port: u16,
}

impl StallingProxy {
    pub fn start(target: u16, after: u64) -> StallingProxy {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c2, &mut u2);
                });
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    let mut buf = [0u8; 16 << 10];
                    loop {
                        let n = match upstream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if client.write_all(&buf[..n]).is_err() {
                            return;
                        }
                        sent += n as u64;
                        if sent >= after {
                            // Hold the connection open, sending nothing more.
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                });
            }
        });
        StallingProxy { port }
    }
}
