//! Against an independent implementation: umoci builds an OCI image with several layers
//! (deletions of files and directories, an opaque directory, a file turned into a directory);
//! `layer-tool import` of it gives the same tree as `umoci unpack` -- through `layer-tool mount`
//! (unionfs), and through `squash` -- and an image exported by layer-tool unpacks with umoci to
//! the same tree again.
//!
//! Needs root, umoci, and for the mount part the unionfs binary and /dev/fuse. Outside CI a
//! missing requirement skips with a message; with CI=true it fails.

mod common;

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{have, is_root, require, snapshot};

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args));
}

fn layer_tool(store: &Path, args: &[&str]) {
    run(Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", store)
        .args(args));
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// Unpack `image:tag` from `layout` with umoci into `bundle`; returns the rootfs.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:{tag}", layout.display()),
        bundle.to_str().unwrap(),
    ]);
    bundle.join("rootfs")
}

/// The umoci-built image: four layers at `tmp/img`, tag `t`.
fn build_with_umoci(tmp: &Path) -> PathBuf {
    let img = tmp.join("img");
    let image = format!("{}:t", img.display());
    umoci(&["init", "--layout", img.to_str().unwrap()]);
    umoci(&["new", "--image", &image]);
    let mut step = 0;
    let mut layer = |change: &dyn Fn(&Path)| {
        step += 1;
        let bundle = tmp.join(format!("work{step}"));
        let rootfs = umoci_unpack(&img, "t", &bundle);
        change(&rootfs);
        umoci(&["repack", "--image", &image, bundle.to_str().unwrap()]);
        fs::remove_dir_all(&bundle).unwrap();
    };
    // 1: a base with the usual variety.
    layer(&|r: &Path| {
        write(r, "etc/motd", "base motd\n");
        write(r, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
        write(r, "x/a", "a");
        write(r, "x/b", "b");
        write(r, "y/sub/deep", "deep");
        write(r, "opq/old", "old");
        write(r, "opq/inner/f", "inner");
        write(r, "z", "z is a file");
        write(r, "usr/bin/tool", "#!/bin/sh\n");
        fs::set_permissions(r.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(r.join("usr/bin/tool"), r.join("usr/bin/tool-link")).unwrap();
        symlink("tool", r.join("usr/bin/alias")).unwrap();
        // File capabilities (cap_net_raw+ep, VFS_CAP_REVISION_2) and a trusted xattr travel
        // as PAX SCHILY.xattr records.
        let cap = [
            1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        xattr::set(r.join("usr/bin/ping"), "security.capability", &cap)
            .or_else(|_| {
                fs::write(r.join("usr/bin/ping"), "ping").unwrap();
                xattr::set(r.join("usr/bin/ping"), "security.capability", &cap)
            })
            .unwrap();
        xattr::set(r.join("etc/passwd"), "trusted.note", b"from umoci").unwrap();
        symlink("/etc/motd", r.join("motd-link")).unwrap();
        write(r, "home/user/file", "user's");
        chown(r.join("home/user/file"), Some(1000), Some(1000)).unwrap();
        chown(r.join("home/user"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(r.join("home/user"), fs::Permissions::from_mode(0o700)).unwrap();
    });
    // 2: delete a file and a directory, change a file, add into an unchanged directory.
    layer(&|r: &Path| {
        fs::remove_file(r.join("x/a")).unwrap();
        fs::remove_dir_all(r.join("y/sub")).unwrap();
        write(r, "etc/motd", "changed motd\n");
        write(r, "usr/bin/new", "new");
    });
    // 3: a file becomes a directory, a directory's mode changes.
    layer(&|r: &Path| {
        fs::remove_file(r.join("z")).unwrap();
        write(r, "z/e", "z is a directory now");
        fs::set_permissions(r.join("x"), fs::Permissions::from_mode(0o711)).unwrap();
    });
    // 4: an opaque directory, added verbatim (umoci repack writes whiteouts, not markers).
    let l4 = tmp.join("l4");
    write(&l4, "opq/.wh..wh..opq", "");
    write(&l4, "opq/fresh", "fresh");
    let tar = tmp.join("l4.tar");
    run(Command::new("tar").args([
        "-C",
        l4.to_str().unwrap(),
        "--numeric-owner",
        "-cf",
        tar.to_str().unwrap(),
        "opq",
    ]));
    umoci(&["raw", "add-layer", "--image", &image, tar.to_str().unwrap()]);
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        "PATH=/bin",
    ]);
    img
}

fn unionfs_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("UNIONFS_BIN") {
        return Some(PathBuf::from(bin));
    }
    let next = Path::new(env!("CARGO_BIN_EXE_layer-tool")).with_file_name("unionfs");
    next.is_file().then_some(next)
}

#[test]
fn umoci_image_imports_to_the_same_tree_and_exports_back() {
    if !require(is_root(), "needs root (umoci unpack keeps owners)")
        || !require(have("umoci"), "umoci not installed (apt-get install umoci)")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tmp = tmp.path();
    let store = tmp.join("store");
    let img = build_with_umoci(tmp);
    let reference = snapshot(&umoci_unpack(&img, "t", &tmp.join("ref")), true);
    assert!(reference.contains_key(Path::new("opq/fresh")));
    assert!(!reference.contains_key(Path::new("opq/old")));
    assert!(!reference.contains_key(Path::new("x/a")));
    assert!(
        reference[Path::new("usr/bin/ping")].contains("security.capability="),
        "umoci kept the capability"
    );

    layer_tool(
        &store,
        &["import", img.to_str().unwrap(), "--ref", "t", "--name", "u"],
    );
    let (_, image) = layer_tool::store::Store::at(&store)
        .find_image("u")
        .unwrap();
    assert_eq!(image.layers.len(), 4);
    assert_eq!(image.config.cmd, vec!["/bin/sh"]);

    // squash: the union by the extractor's rules.
    layer_tool(&store, &["squash", "u", "--name", "flat"]);
    let (flat_dir, flat) = layer_tool::store::Store::at(&store)
        .find_image("flat")
        .unwrap();
    let flat_root = flat.layer_dirs(&flat_dir)[0].clone();
    assert_eq!(
        snapshot(&flat_root, true),
        reference,
        "squash differs from umoci unpack"
    );

    // export: umoci reads what we write, and sees the same tree.
    let out = tmp.join("exported");
    layer_tool(&store, &["export", "u", "-o", out.to_str().unwrap()]);
    let back = snapshot(&umoci_unpack(&out, "u", &tmp.join("back")), true);
    assert_eq!(back, reference, "umoci unpack of our export differs");
    let out_gz = tmp.join("exported-gz");
    layer_tool(
        &store,
        &["export", "u", "--gzip", "-o", out_gz.to_str().unwrap()],
    );
    let back_gz = snapshot(&umoci_unpack(&out_gz, "u", &tmp.join("back-gz")), true);
    assert_eq!(
        back_gz, reference,
        "umoci unpack of our gzip export differs"
    );

    // mount: the union through unionfs.
    let Some(bin) = unionfs_bin() else {
        require(
            false,
            "no unionfs binary next to layer-tool (cargo build -p unionfs) or in $UNIONFS_BIN",
        );
        return;
    };
    if !require(Path::new("/dev/fuse").exists(), "no /dev/fuse") {
        return;
    }
    let mnt = tmp.join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", &store)
        .env("UNIONFS_BIN", &bin)
        .args(["mount", "u", mnt.to_str().unwrap()]));
    let seen = std::panic::catch_unwind(|| snapshot(&mnt, true));
    run(Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_BIN", &bin)
        .args(["umount", mnt.to_str().unwrap()]));
    let seen = seen.expect("reading the mounted union");
    assert_eq!(seen, reference, "the union mount differs from umoci unpack");
}
