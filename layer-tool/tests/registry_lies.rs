//! `layer-tool pull` against a registry that lies (tests/common/fake.rs): one test per lie,
//! each refused with an error naming it, before anything is used, and the store left as it
//! was. Loopback only; nothing to install.

mod common;
#[path = "common/fake.rs"]
mod fake;

use std::path::Path;
use std::process::Command;

use common::{gzip, raw_tar, sha256, snapshot, Ent};
use fake::{Answer, FakeRegistry};
use serde_json::{json, Value};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

struct Image {
    layer: Vec<u8>,
    config: Vec<u8>,
}

fn image() -> Image {
    let tar = raw_tar(&[Ent::Dir("etc"), Ent::File("etc/hello", b"hi\n")]);
    let layer = gzip(&tar);
    let config = serde_json::to_vec(&json!({
        "architecture": layer_tool::oci::host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
    }))
    .unwrap();
    Image { layer, config }
}

/// The manifest for `img`, with the layer descriptor changed by `edit`.
fn manifest(img: &Image, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut layer = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": sha256(&img.layer), "size": img.layer.len(),
    });
    edit(&mut layer);
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&img.config), "size": img.config.len()},
        "layers": [layer],
    }))
    .unwrap()
}

/// Serve `img`'s blobs and `manifest` as `x:t`.
fn serve(fake: &FakeRegistry, img: &Image, manifest: Vec<u8>) {
    fake.route(
        &format!("/v2/x/blobs/{}", sha256(&img.layer)),
        Answer::ok(img.layer.clone(), "application/octet-stream"),
    );
    fake.route(
        &format!("/v2/x/blobs/{}", sha256(&img.config)),
        Answer::ok(img.config.clone(), "application/octet-stream"),
    );
    fake.route("/v2/x/manifests/t", Answer::ok(manifest, MANIFEST));
}

/// Pull `x:t` into a fresh store; the error text, after checking the store stayed empty.
fn pull_fails(fake: &FakeRegistry, store: &Path, extra: &[&str]) -> String {
    let before = store.exists().then(|| snapshot(store, false));
    let out = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .arg("--store")
        .arg(store)
        .arg("pull")
        .arg(format!("{}/x:t", fake.host()))
        .args(extra)
        .env("REGISTRY_AUTH_FILE", store.with_extension("auth.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the pull should have failed: {err}");
    if let Some(before) = before {
        let after: std::collections::BTreeMap<_, _> = snapshot(store, false)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("tmp/"))
            .collect();
        let before: std::collections::BTreeMap<_, _> = before
            .into_iter()
            .filter(|(p, _)| !p.starts_with("tmp/"))
            .collect();
        assert_eq!(after, before, "the store is as it was");
    }
    if store.join("layers/sha256").exists() {
        assert_eq!(
            std::fs::read_dir(store.join("layers/sha256"))
                .unwrap()
                .count(),
            0
        );
    }
    assert!(
        !store.join("images").exists()
            || std::fs::read_dir(store.join("images")).unwrap().count() == 0
    );
    err
}

#[test]
fn an_honest_answer_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    serve(&fake, &img, manifest(&img, |_| {}));
    let store = tmp.path().join("store");
    let out = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .arg("--store")
        .arg(&store)
        .args(["pull", &format!("{}/x:t", fake.host())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(store.join("images/x:t/image.json").is_file());
}

#[test]
fn a_manifest_that_is_not_what_the_registry_announces_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    let m = manifest(&img, |_| {});
    let other = format!("sha256:{}", "0".repeat(64));
    fake.route(
        "/v2/x/manifests/t",
        Answer::ok(m, MANIFEST).header("Docker-Content-Digest", &other),
    );
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(
        err.contains("digest mismatch") && err.contains("manifest"),
        "{err}"
    );
    assert!(err.contains(&other), "{err}");
}

#[test]
fn a_blob_longer_than_declared_is_read_no_further_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    let short = img.layer.len() - 10;
    serve(&fake, &img, manifest(&img, |l| l["size"] = json!(short)));
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(err.contains(&format!("({short} bytes read)")), "{err}");
}

#[test]
fn a_digest_that_is_a_path_is_refused_before_it_names_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    serve(
        &fake,
        &img,
        manifest(&img, |l| {
            l["digest"] = json!("sha256:../../../../../../tmp/evil")
        }),
    );
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(err.contains("malformed digest"), "{err}");
    assert!(
        !fake.asked().iter().any(|a| a.contains("evil")),
        "{:?}",
        fake.asked()
    );
}

#[test]
fn a_declared_size_past_the_limit_is_refused_before_fetching() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    serve(
        &fake,
        &img,
        manifest(&img, |l| l["size"] = json!(1u64 << 40)),
    );
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(err.contains("more than the limit"), "{err}");
    let layer = sha256(&img.layer);
    assert!(
        !fake.asked().iter().any(|a| a.contains(&layer)),
        "{:?}",
        fake.asked()
    );
}

#[test]
fn a_huge_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    let mut big = manifest(&img, |l| {
        l["annotations"] = json!({"pad": "x".repeat(5 << 20)})
    });
    big.push(b'\n');
    serve(&fake, &img, big);
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(err.contains("at most"), "{err}");
}

#[test]
fn an_index_entry_that_does_not_match_its_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    let m = manifest(&img, |_| {});
    let listed = format!("sha256:{}", "1".repeat(64));
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": listed, "size": m.len(),
                       "platform": {"os": "linux", "architecture": layer_tool::oci::host_arch()}}],
    }))
    .unwrap();
    serve(&fake, &img, index);
    // The registry answers the listed digest with another manifest.
    fake.route(
        &format!("/v2/x/manifests/{listed}"),
        Answer::ok(m, MANIFEST),
    );
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(
        err.contains("digest mismatch") && err.contains(&listed),
        "{err}"
    );
}

#[test]
fn a_config_that_is_not_its_digest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRegistry::start();
    let img = image();
    serve(&fake, &img, manifest(&img, |_| {}));
    let mut wrong = img.config.clone();
    let last = wrong.len() - 2;
    wrong[last] = b' ';
    fake.route(
        &format!("/v2/x/blobs/{}", sha256(&img.config)),
        Answer::ok(wrong, "application/octet-stream"),
    );
    let err = pull_fails(&fake, &tmp.path().join("store"), &[]);
    assert!(
        err.contains("digest mismatch") && err.contains("the image config"),
        "{err}"
    );
}
