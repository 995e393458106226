//! The `layer-tool` binary and `scripts/build-demo-image.sh`, end to end.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{is_root, require};
use layer_tool::store::Store;

fn tool(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", store)
        .args(args)
        .output()
        .unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = tool(store, args);
    assert!(
        out.status.success(),
        "layer-tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn build_commit_export_inspect_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/motd"), "hi\n").unwrap();
    let s = src.to_str().unwrap();
    ok(
        &store,
        &[
            "build",
            s,
            "--name",
            "base",
            "--cmd",
            r#"["/bin/sh","-c","echo hi"]"#,
            "--env",
            "A=1",
        ],
    );
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/.wh.motd"), "").unwrap();
    fs::write(upper.join("etc/hostname"), "box").unwrap();
    let out = ok(
        &store,
        &[
            "commit",
            upper.to_str().unwrap(),
            "--base",
            "base",
            "--name",
            "next",
            "--exclude",
            "etc/hostname",
            "--env",
            "B=2",
        ],
    );
    assert!(out.starts_with("next\n"), "{out}");

    let (_, image) = Store::at(&store).find_image("next").unwrap();
    assert_eq!(image.config.cmd, vec!["/bin/sh", "-c", "echo hi"]);
    assert_eq!(image.config.env, vec!["A=1", "B=2"]);
    let info: serde_json::Value = serde_json::from_str(&ok(&store, &["inspect", "next"])).unwrap();
    assert_eq!(
        info["layers"][1]["whiteouts"],
        serde_json::json!(["etc/motd"])
    );
    let top = &image.layers[1].digest;
    let layer_info: serde_json::Value =
        serde_json::from_str(&ok(&store, &["inspect", top])).unwrap();
    assert_eq!(layer_info["files"], 0);

    let listing = ok(&store, &["ls"]);
    assert!(
        listing.contains("base") && listing.contains("next"),
        "{listing}"
    );
    let layers = ok(&store, &["ls", "--layers"]);
    assert!(layers.contains(top.as_str()), "{layers}");

    let out_tar = tmp.path().join("top.tar");
    let printed = ok(&store, &["export", top, "-o", out_tar.to_str().unwrap()]);
    assert_eq!(printed.trim(), top.as_str());
    assert_eq!(common::sha256(&fs::read(&out_tar).unwrap()), *top);

    // Off a terminal there is no progress output: stderr stays empty.
    let layout = tmp.path().join("layout.tar");
    let out = tool(&store, &["export", "next", "-o", layout.to_str().unwrap()]);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let out = tool(
        &store,
        &["import", layout.to_str().unwrap(), "--name", "again"],
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        Store::at(&store).find_image("again").unwrap().1.layers,
        image.layers
    );

    // Errors name what failed and exit non-zero.
    let out = tool(&store, &["inspect", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown image \"nope\""));
    let out = tool(&store, &["build", s, "--name", "../escape"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid image name"));
}

#[test]
fn demo_script_builds_a_two_layer_busybox_image() {
    if !require(is_root(), "the demo script needs root") {
        return;
    }
    if !require(
        Path::new("/bin/busybox").exists() || common::have("apt-get"),
        "neither busybox nor apt-get to install it",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let out = Command::new(repo_root().join("scripts/build-demo-image.sh"))
        .env("UNIONFS_STORE", &store)
        .env("LAYER_TOOL", env!("CARGO_BIN_EXE_layer-tool"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (dir, image) = Store::at(&store).find_image("demo").unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);
    assert_eq!(image.config.env, vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    let dirs = image.layer_dirs(&dir);
    let (base, top) = (&dirs[0], &dirs[1]);
    assert!(base.join("bin/busybox").is_file());
    assert_eq!(
        fs::read_link(base.join("bin/sh")).unwrap(),
        Path::new("../bin/busybox")
    );
    assert!(base.join("etc/demo/hello.txt").is_file());
    for d in ["proc", "sys", "dev", "tmp", "root"] {
        assert!(base.join(d).is_dir(), "missing /{d}");
    }
    assert!(fs::read_to_string(base.join("etc/passwd"))
        .unwrap()
        .contains("nobody:x:65534"));
    assert!(top.join("etc/demo/.wh.goodbye.txt").is_file());

    // Rebuilding gives the same digests (mtimes are clamped).
    let again = Command::new(repo_root().join("scripts/build-demo-image.sh"))
        .env("UNIONFS_STORE", &store)
        .env("LAYER_TOOL", env!("CARGO_BIN_EXE_layer-tool"))
        .output()
        .unwrap();
    assert!(again.status.success());
    assert_eq!(Store::at(&store).find_image("demo").unwrap().1, image);

    // The flattened image runs: busybox in a chroot sees the union.
    ok(&store, &["squash", "demo", "--name", "flat"]);
    let (fdir, flat) = Store::at(&store).find_image("flat").unwrap();
    let root = &flat.layer_dirs(&fdir)[0];
    let chroot = if Path::new("/usr/sbin/chroot").exists() {
        "/usr/sbin/chroot"
    } else {
        "chroot"
    };
    let out = Command::new(chroot)
        .arg(root)
        .args(["/bin/sh", "-c", "ls /etc/demo; cat /etc/motd"])
        .env("PATH", "/bin")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("hello.txt") && text.contains("layer2.txt"),
        "{text}"
    );
    assert!(!text.contains("goodbye"), "{text}");
    assert!(text.contains("second layer"), "{text}");
}
