//! The store is private to its owner: its root and `layers/` are 0700 when created and
//! tightened when wider, so a device node that an imported layer brought (kept with the image's
//! mode, 0644 here) cannot be opened by another host user through the store; the union still
//! shows the node with its image mode.
//!
//! The device test needs root and `useradd`; outside CI a missing requirement skips with a
//! message, with CI=true it fails.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{have, is_root, oci_layout, raw_tar, require, Ent};
use layer_tool::store::Store;

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn layer_tool(store: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", store)
        .env_remove("LAYER_TOOL_LOG")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "layer-tool {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_new_store_is_private_and_a_wider_one_is_tightened_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::at(&root);
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    layer_tool::build::build(&store, &src, "img", &Default::default()).unwrap();
    assert_eq!(mode_of(&root), 0o700, "a new store root");
    assert_eq!(
        mode_of(&root.join("layers")),
        0o700,
        "a new layers directory"
    );

    // A store made before (0755 everywhere): a reading command tightens it and says so, and so
    // does a changing one (through the store's lock).
    for command in [&["ls"][..], &["gc"][..]] {
        for dir in [root.clone(), root.join("layers")] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = layer_tool(&root, command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("was mode 0755") && stderr.contains("tightened to 0700"),
            "{command:?}: {stderr}"
        );
        assert_eq!(mode_of(&root), 0o700, "{command:?}");
        assert_eq!(mode_of(&root.join("layers")), 0o700, "{command:?}");
    }
    // Nothing to say when it is already private.
    let out = layer_tool(&root, &["ls"]);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A system user made for one test, removed when dropped.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        let name = format!("ltstore{}", std::process::id());
        let status = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .status()
            .unwrap();
        assert!(status.success(), "useradd {name}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        assert_ne!(uid, 0);
        TestUser { name, uid, gid }
    }

    /// Open `path` for reading as this user; Ok, or the shell's message.
    fn open(&self, path: &Path) -> Result<(), String> {
        let out = Command::new("sh")
            .args(["-c", "exec 3<\"$1\"", "sh"])
            .arg(path)
            .uid(self.uid)
            .gid(self.gid)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn unionfs_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("UNIONFS_BIN") {
        return Some(PathBuf::from(bin));
    }
    let next = Path::new(env!("CARGO_BIN_EXE_layer-tool")).with_file_name("unionfs");
    next.is_file().then_some(next)
}

#[test]
fn another_user_cannot_open_a_device_node_of_an_imported_layer_through_the_store() {
    if !require(is_root(), "needs root (device nodes, useradd)")
        || !require(have("useradd"), "useradd not installed (package passwd)")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Open the test's own directory to everyone: the store is the only barrier left.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("store");
    let layout = tmp.path().join("layout");
    // raw_tar gives every entry mode 0644: readable by others, as seen in real images.
    oci_layout(
        &layout,
        &[raw_tar(&[
            Ent::Dir("dev/"),
            Ent::Char("dev/mem-like", 1, 3),
        ])],
        None,
    );
    layer_tool(
        &root,
        &["import", layout.to_str().unwrap(), "--name", "dev"],
    );
    let (_, image) = Store::at(&root).find_image("dev").unwrap();
    let node = Store::at(&root)
        .layer_path(&image.layers[0].digest)
        .unwrap()
        .join("dev/mem-like");
    let md = fs::symlink_metadata(&node).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.mode() & 0o7777, 0o644, "stored with the image's mode");
    assert_eq!(md.rdev(), nix::sys::stat::makedev(1, 3));

    let user = TestUser::new();
    // The control: the same kind of node, reachable, opens for this user.
    let open_dir = tmp.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let control = open_dir.join("control");
    nix::sys::stat::mknod(
        &control,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    assert_eq!(user.open(&control), Ok(()), "the control node must open");
    // Through the store: EACCES ("Permission denied") on the way there.
    let err = user
        .open(&node)
        .expect_err("another user opened a device node in the store");
    assert!(err.contains("Permission denied"), "{err}");
    // Even with the root opened up again, layers/ stays a barrier of its own.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    let err = user
        .open(&node)
        .expect_err("another user opened a device node below layers/");
    assert!(err.contains("Permission denied"), "{err}");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();

    // The union (the daemon runs as root) still shows the node with the image's mode.
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
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mount = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", &root)
        .env("UNIONFS_BIN", &bin)
        .args(["mount", "dev", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(mount.success());
    let seen = fs::symlink_metadata(mnt.join("dev/mem-like"));
    let umount = Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_BIN", &bin)
        .args(["umount", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(umount.success());
    let seen = seen.unwrap();
    assert!(seen.file_type().is_char_device());
    assert_eq!(
        seen.mode() & 0o7777,
        0o644,
        "the union shows the image's mode"
    );
    assert_eq!(seen.rdev(), nix::sys::stat::makedev(1, 3));
}
