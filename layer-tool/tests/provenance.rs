//! An image's `created` time and `history` survive layer-tool: what `build` records, `export`
//! writes, podman reads back (`image inspect`, `history`); what podman saves (OCI archive and
//! docker archive), `import` keeps and `export` writes again.
//!
//! Needs root and podman (run with its own `--root`/`--runroot` in a temporary directory, vfs
//! storage, no containers). Outside CI a missing requirement skips; with CI=true it fails.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{have, is_root, require};
use layer_tool::store::{Provenance, Store};

fn check(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn layer_tool(store: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", store)
        .args(args)
        .output()
        .unwrap();
    check(&format!("layer-tool {args:?}"), out)
}

/// podman with storage of its own, so it meets no other test's images or containers.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            dir: tempfile::Builder::new()
                .prefix("layer-tool-podman")
                .tempdir()
                .unwrap(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let d = self.dir.path();
        let out = Command::new("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "file"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        check(&format!("podman {args:?}"), out)
    }
}

/// `created` and `history` of the image config in the OCI layout `dir` (one image).
fn exported_config(dir: &Path) -> serde_json::Value {
    let read = |rel: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(dir.join(rel)).unwrap()).unwrap()
    };
    let blob = |digest: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            digest.as_str().unwrap().trim_start_matches("sha256:")
        )
    };
    let index = read("index.json");
    let manifest = read(&blob(&index["manifests"][0]["digest"]));
    let config = read(&blob(&manifest["config"]["digest"]));
    serde_json::json!({"created": config["created"], "history": config["history"]})
}

fn provenance(store: &Path, name: &str) -> Provenance {
    Store::at(store).find_image(name).unwrap().1.provenance
}

#[test]
fn created_and_history_survive_export_podman_and_import() {
    if !require(is_root(), "needs root (podman with its own --root)")
        || !require(
            have("podman"),
            "podman not installed (apt-get install podman)",
        )
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let store = tmp.join("store");
    let (a, b) = (tmp.join("a"), tmp.join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), "base").unwrap();
    fs::write(b.join("g"), "top").unwrap();
    let path = |p: &PathBuf| p.to_str().unwrap().to_string();
    layer_tool(
        &store,
        &[
            "build",
            &path(&a),
            "--name",
            "base",
            "--mtime",
            "1600000000",
        ],
    );
    layer_tool(
        &store,
        &[
            "build",
            &path(&b),
            "--base",
            "base",
            "--name",
            "top",
            "--mtime",
            "1600000100",
        ],
    );
    let built = provenance(&store, "top");
    assert_eq!(built.created.as_deref(), Some("2020-09-13T12:28:20Z"));
    assert_eq!(built.history.len(), 2, "{built:?}");
    let shown: serde_json::Value =
        serde_json::from_str(&layer_tool(&store, &["inspect", "top"])).unwrap();
    assert_eq!(shown["created"], "2020-09-13T12:28:20Z");
    assert_eq!(shown["history"][1]["created_by"], "layer-tool build");

    // podman reads what export writes.
    let exported = tmp.join("top.tar");
    layer_tool(&store, &["export", "top", "-o", &path(&exported)]);
    let podman = Podman::new();
    podman.ok(&["load", "-i", &path(&exported)]);
    let created = podman.ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Created}}",
        "localhost/top",
    ]);
    assert_eq!(created, "2020-09-13 12:28:20 +0000 UTC");
    let history: serde_json::Value =
        serde_json::from_str(&podman.ok(&["history", "--format", "json", "localhost/top"]))
            .unwrap();
    let steps: Vec<(String, String)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["created"].as_str().unwrap().to_string(),
                h["CreatedBy"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("2020-09-13T12:28:20Z".into(), "layer-tool build".into()),
            ("2020-09-13T12:26:40Z".into(), "layer-tool build".into()),
        ],
        "podman history (newest first)"
    );

    // What podman saves comes back in, and goes out again, with the same created and history.
    let layout = tmp.join("layout");
    layer_tool(&store, &["export", "top", "-o", &path(&layout)]);
    let want = exported_config(&layout);
    assert_eq!(want["created"], "2020-09-13T12:28:20Z");
    for format in ["oci-archive", "docker-archive"] {
        let saved = tmp.join(format!("{format}.tar"));
        podman.ok(&[
            "save",
            "--format",
            format,
            "-o",
            &path(&saved),
            "localhost/top:latest",
        ]);
        let name = format!("again-{format}");
        layer_tool(&store, &["import", &path(&saved), "--name", &name]);
        assert_eq!(provenance(&store, &name), built, "{format} import");
        let again = tmp.join(format!("layout-{format}"));
        layer_tool(&store, &["export", &name, "-o", &path(&again)]);
        assert_eq!(exported_config(&again), want, "{format} re-export");
    }
}
