//! `layer-tool pull`, `push`, `login` and `logout` against a real registry (Debian's
//! docker-registry, distribution 2.8) that each test starts on 127.0.0.1, with skopeo as the
//! independent client on the other side. Offline: nothing leaves the machine.
//!
//! Needs docker-registry, skopeo, htpasswd (apache2-utils) and openssl: without them a test
//! skips with a message, and fails when `CI=true`.

mod common;
#[path = "common/registry.rs"]
mod registry;
#[path = "common/token.rs"]
mod token;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{require, snapshot};
use registry::{skopeo, Registry, Setup};
use serde_json::{json, Value};

fn can_run() -> bool {
    require(
        registry::registry_missing().is_none(),
        &registry::registry_missing().unwrap_or_default(),
    )
}

fn lt(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .arg("--store")
        .arg(store)
        .args(args)
        // Credentials only from the files a test names.
        .env("REGISTRY_AUTH_FILE", store.with_extension("auth.json"))
        .env("HOME", store.with_extension("home"))
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

fn ok(store: &Path, args: &[&str]) -> (String, String) {
    let out = lt(store, args);
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "layer-tool {args:?} failed:\n{e}");
    (o, e)
}

fn fails(store: &Path, args: &[&str]) -> String {
    let out = lt(store, args);
    assert!(
        !out.status.success(),
        "layer-tool {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image_json(store: &Path, name: &str) -> Value {
    let text = fs::read_to_string(store.join("images").join(name).join("image.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn layer_digests(store: &Path, name: &str) -> Vec<String> {
    image_json(store, name)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Each layer of `name` as a tree snapshot, bottom first.
fn layer_trees(store: &Path, name: &str) -> Vec<BTreeMap<PathBuf, String>> {
    layer_digests(store, name)
        .iter()
        .map(|d| {
            let dir = store
                .join("layers/sha256")
                .join(d.trim_start_matches("sha256:"));
            snapshot(&dir, true)
        })
        .collect()
}

/// The architecture that is not this machine's, for the second platform of an index.
fn other_arch() -> &'static str {
    if layer_tool::oci::host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// Two images sharing a base layer, one per platform, as an OCI layout `DIR` (ref `t`) whose
/// index points to an image index of both. Returns the single-platform layouts too.
fn multi_platform_layout(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let store = tmp.join("build-store");
    let base = tmp.join("base");
    fs::create_dir_all(base.join("etc")).unwrap();
    fs::write(base.join("etc/os-release"), "ID=test\n").unwrap();
    fs::create_dir_all(base.join("usr/share")).unwrap();
    fs::write(base.join("usr/share/big"), vec![7u8; 300_000]).unwrap();
    ok(
        &store,
        &["build", s(&base), "--name", "base", "--mtime", "1700000000"],
    );
    let mut layouts = Vec::new();
    for arch in [layer_tool::oci::host_arch(), other_arch()] {
        let dir = tmp.join(format!("src-{arch}"));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/platform"), arch).unwrap();
        let name = format!("img-{arch}");
        ok(
            &store,
            &[
                "build",
                s(&dir),
                "--name",
                &name,
                "--base",
                "base",
                "--mtime",
                "1700000000",
                "--cmd",
                "/bin/sh",
                "--env",
                &format!("ARCH={arch}"),
            ],
        );
        let out = tmp.join(format!("layout-{arch}"));
        ok(
            &store,
            &["export", &name, "-o", s(&out), "--gzip", "--ref", "t"],
        );
        layouts.push((arch, out));
    }
    let multi = tmp.join("layout-multi");
    fs::create_dir_all(multi.join("blobs/sha256")).unwrap();
    let mut manifests = Vec::new();
    for (arch, dir) in &layouts {
        for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), multi.join("blobs/sha256").join(e.file_name())).unwrap();
        }
        let index: Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let mut desc = index["manifests"][0].clone();
        desc.as_object_mut().unwrap().remove("annotations");
        desc["platform"] = json!({"os": "linux", "architecture": arch});
        manifests.push(desc);
    }
    let inner = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let inner_digest = common::sha256(&inner);
    fs::write(
        multi
            .join("blobs/sha256")
            .join(inner_digest.trim_start_matches("sha256:")),
        &inner,
    )
    .unwrap();
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": inner_digest, "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "t"},
        }],
    });
    fs::write(multi.join("index.json"), top.to_string()).unwrap();
    fs::write(
        multi.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let (a, b) = (layouts.remove(0).1, layouts.remove(0).1);
    (multi, a, b)
}

fn blob_gets(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|(m, u)| m == "GET" && u.contains("/blobs/sha256:"))
        .count()
}

#[test]
fn an_index_of_two_platforms_pushed_by_skopeo_pulls_as_skopeo_copy_and_import_give_it() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    let (multi, host_layout, _) = multi_platform_layout(t);
    let remote = format!("{host}/team/multi:v1");
    skopeo(
        t,
        &[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", s(&multi)),
            &format!("docker://{remote}"),
        ],
    );

    // layer-tool pull: plain HTTP to the loopback registry without being told.
    let store = t.join("store");
    let (out, err) = ok(&store, &["pull", &remote]);
    assert!(out.starts_with("multi:v1\n"), "{out}");
    assert!(err.contains("2 layers fetched, 0 already"), "{err}");

    // The reference: skopeo copies the host's platform to an OCI layout, layer-tool imports it.
    let copied = t.join("skopeo-copy");
    skopeo(
        t,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:t", s(&copied)),
        ],
    );
    let ref_store = t.join("ref-store");
    ok(&ref_store, &["import", s(&copied), "--name", "ref"]);
    assert_eq!(
        layer_digests(&store, "multi:v1"),
        layer_digests(&ref_store, "ref")
    );
    assert_eq!(
        layer_trees(&store, "multi:v1"),
        layer_trees(&ref_store, "ref")
    );
    assert_eq!(
        image_json(&store, "multi:v1")["config"],
        image_json(&ref_store, "ref")["config"]
    );
    let top = layer_digests(&store, "multi:v1").pop().unwrap();
    let platform_file = store
        .join("layers/sha256")
        .join(top.trim_start_matches("sha256:"))
        .join("etc/platform");
    assert_eq!(
        fs::read_to_string(platform_file).unwrap(),
        layer_tool::oci::host_arch()
    );
    // And the same as importing the single-platform layout that went in.
    ok(&ref_store, &["import", s(&host_layout), "--name", "orig"]);
    assert_eq!(
        layer_digests(&store, "multi:v1"),
        layer_digests(&ref_store, "orig")
    );

    // By digest (the index's): the same image, under a name that says the digest.
    let raw = skopeo(
        t,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    );
    let index_digest = common::sha256(raw.as_bytes());
    let (out, err) = ok(
        &store,
        &["pull", &format!("{host}/team/multi@{index_digest}")],
    );
    let by_digest = format!("multi:{}", index_digest.replace(':', "-"));
    assert!(out.starts_with(&format!("{by_digest}\n")), "{out}");
    assert!(err.contains("0 layers fetched, 2 already"), "{err}");
    assert_eq!(
        layer_digests(&store, &by_digest),
        layer_digests(&store, "multi:v1")
    );

    // The other platform, on request: its own top layer, the base layer shared and not fetched.
    let before = blob_gets(&reg);
    let (_, err) = ok(
        &store,
        &[
            "pull",
            &remote,
            "--platform",
            &format!("linux/{}", other_arch()),
            "--name",
            "other",
        ],
    );
    assert!(err.contains("1 layers fetched, 1 already"), "{err}");
    assert_eq!(blob_gets(&reg) - before, 2, "the config and one layer");
    let other = layer_digests(&store, "other");
    let dir = store
        .join("layers/sha256")
        .join(other[1].trim_start_matches("sha256:"));
    assert_eq!(
        fs::read_to_string(dir.join("etc/platform")).unwrap(),
        other_arch()
    );

    // A second pull fetches no layer.
    let before = blob_gets(&reg);
    let (_, err) = ok(&store, &["pull", &remote]);
    assert!(err.contains("0 layers fetched, 2 already"), "{err}");
    assert_eq!(blob_gets(&reg) - before, 1, "only the config blob");

    // A platform the index does not have, a tag and a repository that do not exist, a port
    // nobody listens on: each named.
    let err = fails(&store, &["pull", &remote, "--platform", "linux/s390x"]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    assert!(
        err.contains(&format!("linux/{}", other_arch())),
        "lists what there is: {err}"
    );
    let err = fails(&store, &["pull", &format!("{host}/team/multi:nope")]);
    assert!(err.contains("no such tag") && err.contains("nope"), "{err}");
    let err = fails(&store, &["pull", &format!("{host}/team/absent:v1")]);
    assert!(
        err.contains("unknown image") && err.contains("team/absent"),
        "{err}"
    );
    let dead = format!("127.0.0.1:{}/x:v1", registry::free_port());
    let err = fails(&store, &["pull", &dead]);
    assert!(err.contains("network unreachable"), "{err}");
}

#[test]
fn docker_schema_2_and_zstd_layers_pull_to_the_same_layers() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    let (_, layout, _) = multi_platform_layout(t);
    // Uncompressed, so that skopeo compresses it the way it is told to (zstd).
    let plain = t.join("plain");
    let name = format!("img-{}", layer_tool::oci::host_arch());
    ok(
        &t.join("build-store"),
        &["export", &name, "-o", s(&plain), "--ref", "t"],
    );
    let src = format!("oci:{}:t", s(&plain));
    skopeo(
        t,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-compress-format",
            "zstd",
            "--dest-compress",
            &src,
            &format!("docker://{host}/zstd:v1"),
        ],
    );
    // A registry of its own: skopeo would substitute the zstd blobs it just pushed, which a
    // docker manifest cannot name.
    let reg2 = Registry::start(Setup::default());
    let host2 = reg2.host();
    skopeo(
        t,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &format!("oci:{}:t", s(&layout)),
            &format!("docker://{host2}/docker:v1"),
        ],
    );
    let raw = |name: &str| -> Value {
        serde_json::from_str(&skopeo(
            t,
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{name}"),
            ],
        ))
        .unwrap()
    };
    let docker = raw(&format!("{host2}/docker:v1"));
    assert_eq!(
        docker["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let zstd = raw(&format!("{host}/zstd:v1"));
    assert_eq!(
        zstd["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );

    let store = t.join("store");
    ok(&store, &["import", s(&layout), "--name", "orig"]);
    ok(&store, &["pull", &format!("{host2}/docker:v1")]);
    let (_, err) = ok(&t.join("store2"), &["pull", &format!("{host}/zstd:v1")]);
    assert!(err.contains("2 layers fetched"), "{err}");
    assert_eq!(
        layer_digests(&store, "docker:v1"),
        layer_digests(&store, "orig")
    );
    assert_eq!(
        layer_digests(&t.join("store2"), "zstd:v1"),
        layer_digests(&store, "orig")
    );
}

#[test]
fn a_corrupted_blob_is_refused_with_a_digest_error_and_the_store_is_unchanged() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    let (_, layout, other_layout) = multi_platform_layout(t);
    let remote = format!("{host}/corrupt:v1");
    skopeo(
        t,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", s(&layout)),
            &format!("docker://{remote}"),
        ],
    );
    let manifest: Value = serde_json::from_str(&skopeo(
        t,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    ))
    .unwrap();
    // The top layer, same size, other bytes: only the digest can tell.
    let layer = manifest["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = reg.blob_path(&layer);
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();

    let store = t.join("store");
    // A store with the other platform's image: the base layer is there, the top one is not.
    ok(&store, &["import", s(&other_layout), "--name", "before"]);
    // Directory mtimes aside (a pull's staging comes and goes in ROOT/tmp).
    let before = snapshot(&store, false);
    let err = fails(&store, &["pull", &remote]);
    assert!(
        err.contains("digest mismatch") && err.contains(&layer),
        "{err}"
    );
    assert_eq!(snapshot(&store, false), before, "the store is as it was");

    // A blob the registry sends short is refused too.
    bytes.truncate(mid);
    fs::write(&blob, &bytes).unwrap();
    let err = fails(&store, &["pull", &remote]);
    assert!(err.contains(&layer), "{err}");
    assert_eq!(snapshot(&store, false), before, "the store is as it was");
}

fn uploads(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|(m, u)| (m == "PUT" || m == "PATCH") && u.contains("/blobs/uploads/"))
        .count()
}

#[test]
fn an_image_pushed_by_layer_tool_is_pulled_back_by_skopeo_and_is_never_sent_twice() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    multi_platform_layout(t);
    let store = t.join("build-store");
    let name = format!("img-{}", layer_tool::oci::host_arch());
    let remote = format!("{host}/team/pushed:v1");
    let (digest, err) = ok(&store, &["push", &name, &remote]);
    assert!(
        err.contains("3 blobs sent, 0 mounted, 0 already there"),
        "{err}"
    );
    assert_eq!(uploads(&reg), 3, "two layers and the config");

    // skopeo checks every blob's digest as it copies; the copy imports to the same layers.
    let raw = skopeo(
        t,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ],
    );
    assert_eq!(
        common::sha256(raw.as_bytes()),
        digest.trim(),
        "the manifest is what was pushed"
    );
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);
    let copied = t.join("skopeo-copy");
    skopeo(
        t,
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("oci:{}:t", s(&copied)),
        ],
    );
    let ref_store = t.join("ref-store");
    ok(&ref_store, &["import", s(&copied), "--name", "back"]);
    assert_eq!(
        layer_digests(&ref_store, "back"),
        layer_digests(&store, &name)
    );
    assert_eq!(
        image_json(&ref_store, "back")["config"],
        image_json(&store, &name)["config"]
    );

    // A second push asks (HEAD) and sends no blob; the manifest goes again.
    let heads = |reg: &Registry| reg.requests().iter().filter(|(m, _)| m == "HEAD").count();
    let before_heads = heads(&reg);
    let (digest2, err) = ok(&store, &["push", &name, &remote]);
    assert_eq!(digest2, digest, "the same image pushes the same manifest");
    assert!(
        err.contains("0 blobs sent, 0 mounted, 3 already there"),
        "{err}"
    );
    assert_eq!(uploads(&reg), 3, "no upload");
    assert_eq!(heads(&reg) - before_heads, 3);

    // Pulled from team/pushed and pushed to team/copy: the registry mounts, nothing is sent.
    let store2 = t.join("store2");
    ok(&store2, &["pull", &remote, "--name", "pulled"]);
    let (_, err) = ok(
        &store2,
        &["push", "pulled", &format!("{host}/team/copy:v1")],
    );
    assert!(err.contains("0 blobs sent, 3 mounted"), "{err}");
    assert_eq!(uploads(&reg), 3, "no upload");
    let mounts = reg
        .requests()
        .iter()
        .filter(|(m, u)| {
            m == "POST" && u.contains("mount=sha256:") && u.contains("from=team/pushed")
        })
        .count();
    assert_eq!(mounts, 3);
}

#[test]
fn basic_auth_and_a_private_ca_login_logout_and_tls_verify_only_where_asked() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start(Setup {
        user: Some(("tester".into(), "s3cret".into())),
        tls: true,
        ..Default::default()
    });
    let host = reg.host();
    let ca = reg.cert_dir();
    multi_platform_layout(t);
    let store = t.join("build-store");
    let name = format!("img-{}", layer_tool::oci::host_arch());
    let remote = format!("{host}/secure/app:v1");
    let auth_file = store.with_extension("auth.json");

    let err = fails(
        &store,
        &["login", &host, "-u", "tester", "--password-stdin"],
    );
    assert!(err.contains("empty password"), "{err}");
    // The CA is not trusted until asked: a TLS error, never a silent fall to plain HTTP.
    let err = fails(&store, &["login", &host, "-u", "tester", "-p", "s3cret"]);
    assert!(
        err.contains("TLS failed") && err.contains("certificate"),
        "{err}"
    );
    assert!(!auth_file.exists());

    // A wrong password: a clear error and nothing saved.
    let err = fails(
        &store,
        &[
            "login",
            &host,
            "-u",
            "tester",
            "-p",
            "wrong",
            "--cert-dir",
            s(&ca),
        ],
    );
    assert!(
        err.contains("unauthorized") && err.contains("user name and password"),
        "{err}"
    );
    assert!(!auth_file.exists());

    // Without credentials: unauthorized, named.
    let err = fails(&store, &["push", &name, &remote, "--cert-dir", s(&ca)]);
    assert!(err.contains("unauthorized"), "{err}");

    // The right one is saved (0600) and used by push and pull.
    let (out, _) = ok(
        &store,
        &[
            "login",
            &host,
            "-u",
            "tester",
            "-p",
            "s3cret",
            "--cert-dir",
            s(&ca),
        ],
    );
    assert!(out.contains("Login Succeeded"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let saved: Value = serde_json::from_slice(&fs::read(&auth_file).unwrap()).unwrap();
    assert!(saved["auths"][&host]["auth"].is_string(), "{saved}");
    ok(&store, &["push", &name, &remote, "--cert-dir", s(&ca)]);
    let store2 = t.join("store2");
    fs::copy(&auth_file, store2.with_extension("auth.json")).unwrap();
    ok(&store2, &["pull", &remote, "--cert-dir", s(&ca)]);
    assert_eq!(
        layer_digests(&store2, "app:v1"),
        layer_digests(&store, &name)
    );
    // skopeo takes the same credentials file and CA.
    let out = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--authfile",
            s(&auth_file),
            "--cert-dir",
            s(&ca),
        ])
        .arg(format!("docker://{remote}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // --tls-verify=false accepts the certificate it was asked to, and only then.
    let store3 = t.join("store3");
    fs::copy(&auth_file, store3.with_extension("auth.json")).unwrap();
    let err = fails(&store3, &["pull", &remote]);
    assert!(err.contains("TLS failed"), "{err}");
    ok(&store3, &["pull", &remote, "--tls-verify=false"]);
    // --creds instead of the file.
    let store4 = t.join("store4");
    ok(
        &store4,
        &[
            "pull",
            &remote,
            "--cert-dir",
            s(&ca),
            "--creds",
            "tester:s3cret",
        ],
    );
    let err = fails(
        &store4,
        &[
            "pull",
            &remote,
            "--cert-dir",
            s(&ca),
            "--creds",
            "tester:nope",
            "--name",
            "x",
        ],
    );
    assert!(err.contains("unauthorized"), "{err}");

    // logout forgets them.
    ok(&store, &["logout", &host]);
    let err = fails(&store, &["logout", &host]);
    assert!(err.contains("not logged in"), "{err}");
    let err = fails(
        &store,
        &["pull", &remote, "--cert-dir", s(&ca), "--name", "y"],
    );
    assert!(err.contains("unauthorized"), "{err}");
}

#[test]
fn an_interrupted_pull_leaves_the_store_as_it_was_and_the_next_one_starts_over() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let reg = Registry::start(Setup::default());
    // One layer of 8 MiB that gzip cannot shrink.
    let dir = t.join("big");
    fs::create_dir_all(&dir).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(dir.join("blob"), &data).unwrap();
    let build = t.join("build-store");
    ok(&build, &["build", s(&dir), "--name", "big"]);
    let layout = t.join("layout");
    ok(
        &build,
        &["export", "big", "-o", s(&layout), "--gzip", "--ref", "t"],
    );
    skopeo(
        t,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", s(&layout)),
            &format!("docker://{}/big:v1", reg.host()),
        ],
    );

    let store = t.join("store");
    let (_, small, _) = multi_platform_layout(t);
    ok(&store, &["import", s(&small), "--name", "before"]);
    let outside_tmp = |snap: BTreeMap<PathBuf, String>| -> BTreeMap<PathBuf, String> {
        snap.into_iter()
            .filter(|(p, _)| !p.starts_with("tmp"))
            .collect()
    };
    let before = outside_tmp(snapshot(&store, false));

    // The pull through a proxy that stalls after 1 MiB, killed once part of the blob is on disk.
    let proxy = registry::StallingProxy::start(reg.port, 1 << 20);
    let mut child = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .arg("--store")
        .arg(&store)
        .args(["pull", &format!("127.0.0.1:{}/big:v1", proxy.port)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let partial = || -> bool {
        let Ok(rd) = fs::read_dir(store.join("tmp")) else {
            return false;
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| fs::read_dir(e.path().join("blobs/sha256")).ok())
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .any(|m| m.len() > 0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !partial() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the pull ended before it was interrupted"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no partial blob appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        outside_tmp(snapshot(&store, false)),
        before,
        "layers and images as they were"
    );

    // gc clears the staging; the next pull starts over and succeeds.
    let (out, _) = ok(&store, &["gc"]);
    assert!(out.contains("leftover staging"), "{out}");
    let (_, err) = ok(&store, &["pull", &format!("{}/big:v1", reg.host())]);
    assert!(err.contains("1 layers fetched"), "{err}");
    let layer = layer_digests(&store, "big:v1").pop().unwrap();
    let file = store
        .join("layers/sha256")
        .join(layer.trim_start_matches("sha256:"))
        .join("blob");
    assert!(fs::read(file).unwrap() == data);
}

#[test]
fn bearer_tokens_anonymous_for_pull_with_credentials_for_push() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let certs = registry::make_certs(&t.join("token-certs"));
    let tokens = token::TokenServer::start(&certs.ca_key, &certs.ca_cert);
    let reg = Registry::start(Setup {
        token: Some((tokens.realm(), certs.ca_cert.clone())),
        ..Default::default()
    });
    let host = reg.host();
    multi_platform_layout(t);
    let store = t.join("build-store");
    let name = format!("img-{}", layer_tool::oci::host_arch());
    let remote = format!("{host}/team/app:v1");

    // Anonymous callers get pull only: the push is refused, named.
    let err = fails(&store, &["push", &name, &remote]);
    assert!(err.contains("unauthorized"), "{err}");
    let asked = tokens.asked();
    assert!(asked.iter().all(|a| a.user.is_none()), "{asked:?}");
    assert!(
        asked
            .iter()
            .any(|a| a.scope == "repository:team/app:pull,push"),
        "{asked:?}"
    );

    // A wrong password: the token service says no, login saves nothing.
    let err = fails(&store, &["login", &host, "-u", token::USER, "-p", "wrong"]);
    assert!(err.contains("unauthorized"), "{err}");
    assert!(!store.with_extension("auth.json").exists());

    // Logged in: a token for pull,push with the credentials, and the push goes through.
    ok(
        &store,
        &["login", &host, "-u", token::USER, "-p", token::PASSWORD],
    );
    ok(&store, &["push", &name, &remote]);
    let asked = tokens.asked();
    assert!(
        asked.iter().any(|a| a.user.as_deref() == Some(token::USER)
            && a.scope == "repository:team/app:pull,push"
            && a.granted == ["pull", "push"]),
        "{asked:?}"
    );

    // An anonymous pull: an anonymous token for pull, no credentials anywhere.
    let before = tokens.asked().len();
    let store2 = t.join("store2");
    ok(&store2, &["pull", &remote]);
    assert_eq!(
        layer_digests(&store2, "app:v1"),
        layer_digests(&store, &name)
    );
    let asked = tokens.asked()[before..].to_vec();
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|a| a.user.is_none() && a.scope == "repository:team/app:pull"),
        "{asked:?}"
    );

    // Pushed elsewhere on the registry, the blobs are mounted from team/app: the registry
    // challenges for both repositories, and the token asked for next names both.
    fs::copy(
        store.with_extension("auth.json"),
        store2.with_extension("auth.json"),
    )
    .unwrap();
    let (_, err) = ok(
        &store2,
        &["push", "app:v1", &format!("{host}/team/copy:v1")],
    );
    assert!(err.contains("0 blobs sent, 3 mounted"), "{err}");
    assert!(
        tokens
            .asked()
            .iter()
            .any(|a| a.scope.contains("repository:team/copy:")
                && a.scope.contains("repository:team/app:pull")),
        "{:?}",
        tokens.asked()
    );
}
