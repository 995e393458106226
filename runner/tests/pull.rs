//! `runner run REF CMD` with REF on a registry: the image is pulled (through layer-tool's
//! library) when the store lacks it, and not again. The registry is Debian's docker-registry
//! on 127.0.0.1, started by the test (layer-tool's helper); the image goes there with skopeo.

mod common;
#[path = "../../layer-tool/tests/common/registry.rs"]
mod registry;

use std::fs;
use std::path::Path;

use common::{can_run, Env, BUSYBOX};
use layer_tool::store::Store;
use registry::{Registry, Setup};

/// A busybox image built by layer-tool and pushed by skopeo to `reg` as `team/bb:v1`.
fn push_busybox(reg: &Registry, tmp: &Path) -> String {
    let root = tmp.join("rootfs");
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/greeting"), "hello from the registry\n").unwrap();
    let store = Store::at(tmp.join("build-store"));
    let opts = layer_tool::build::BuildOptions {
        config: layer_tool::config::ConfigChanges {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    layer_tool::build::build(&store, &root, "bb", &opts).unwrap();
    let layout = tmp.join("layout");
    let export = layer_tool::export::ExportOptions {
        gzip: true,
        reference: Some("t".into()),
        progress: false,
    };
    layer_tool::export::export_image(&store, "bb", &layout, &export).unwrap();
    let remote = format!("{}/team/bb:v1", reg.host());
    registry::skopeo(
        tmp,
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:t", layout.display()),
            &format!("docker://{remote}"),
        ],
    );
    remote
}

fn manifest_gets(reg: &Registry) -> usize {
    reg.requests()
        .iter()
        .filter(|(m, u)| m == "GET" && u.contains("/manifests/"))
        .count()
}

#[test]
fn runner_run_pulls_a_missing_image_once_and_runs_it() {
    if !can_run("runner_run_pulls_a_missing_image_once_and_runs_it") {
        return;
    }
    if let Some(why) = registry::registry_missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but: {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(Setup::default());
    let remote = push_busybox(&reg, tmp.path());
    let env = Env::new();

    // --pull never: not in the store, so an error, and no request to the registry.
    let before = reg.requests().len();
    let out = env.runner(&["run", "--rm", "--pull", "never", &remote, "true"]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(
        out.stderr.contains("unknown image") && out.stderr.contains("--pull never"),
        "{out:#?}"
    );
    assert_eq!(reg.requests().len(), before);

    // The first run pulls, then runs.
    let out = env.runner(&["run", "--rm", &remote, "cat", "/etc/greeting"]);
    assert_eq!(out.ok(), "hello from the registry\n");
    assert!(
        out.stderr.contains(&format!("pulling {remote}")),
        "{out:#?}"
    );
    let pulls = manifest_gets(&reg);
    assert!(pulls >= 1);

    // The second does not: no message, no manifest asked for.
    let out = env.runner(&["run", "--rm", &remote, "sh", "-c", "echo again"]);
    assert_eq!(out.ok(), "again\n");
    assert!(!out.stderr.contains("pulling"), "{out:#?}");
    assert_eq!(manifest_gets(&reg), pulls, "no request for the manifest");

    // --pull always asks the registry again, but fetches no layer it has.
    let layer_gets = |reg: &Registry| {
        reg.requests()
            .iter()
            .filter(|(m, u)| m == "GET" && u.contains("/blobs/"))
            .count()
    };
    let blobs = layer_gets(&reg);
    let out = env.runner(&["run", "--rm", "--pull", "always", &remote, "echo", "always"]);
    assert_eq!(out.ok(), "always\n");
    assert!(out.stderr.contains("pulling"), "{out:#?}");
    assert!(manifest_gets(&reg) > pulls);
    assert_eq!(layer_gets(&reg) - blobs, 1, "the config blob only");

    // A tag the registry does not have is named.
    let missing = remote.replace(":v1", ":v2");
    let out = env.runner(&["run", "--rm", &missing, "true"]);
    assert_eq!(out.code, 125, "{out:#?}");
    assert!(
        out.stderr.contains("no such tag") && out.stderr.contains("v2"),
        "{out:#?}"
    );
}
