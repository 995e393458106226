//! A corpus of layers made by real tools, against an independent unpacker.
//!
//! The same three steps (a base; every type change in every direction, deletions and a directory
//! emptied and refilled, at three depths; then changes back and a directory where a whiteout
//! stood) are made into images by umoci (`unpack`/`repack`) and by buildah (`from scratch`,
//! `mount`, `commit` on overlay storage, which writes opaque markers), then carried by
//! `buildah push oci:`, `podman save` (OCI and docker archives) and `skopeo copy` (to docker
//! archives). For each: `layer-tool import`, seen through `layer-tool mount` (unionfs) and
//! through `squash`, must equal `umoci unpack` of the same image: names, types, modes, owners,
//! mtimes, contents, symlink targets and hardlink groups.
//!
//! Fully offline: the content is written by the test. Needs root, umoci, buildah, podman and
//! skopeo (buildah and podman with their own `--root`/`--runroot` in a temporary directory), and
//! for the mount part the unionfs binary and /dev/fuse. Outside CI a missing requirement skips;
//! with CI=true it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{chown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{have, is_root, require, snapshot};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- the three steps, as plain file system changes on a root directory ----

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn ln_s(root: &Path, target: &str, rel: &str) {
    symlink(target, root.join(rel)).unwrap();
}

fn ln(root: &Path, existing: &str, rel: &str) {
    fs::hard_link(root.join(existing), root.join(rel)).unwrap();
}

/// Remove whatever is at `rel` (file, symlink or directory tree).
fn rm(root: &Path, rel: &str) {
    let p = root.join(rel);
    let md = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if md.is_dir() {
        fs::remove_dir_all(&p).unwrap();
    } else {
        fs::remove_file(&p).unwrap();
    }
}

/// The same changes at the root, one level down and three levels down.
const DEPTHS: [&str; 3] = ["", "d1/", "d1/d2/d3/"];

fn base(r: &Path) {
    for p in DEPTHS {
        let at = |rel: &str| format!("{p}{rel}");
        write(r, &at("target"), "the link target\n");
        for name in ["f2d", "f2s", "f2h"] {
            write(r, &at(name), &format!("{name} is a file\n"));
        }
        for name in ["d2f", "d2s", "d2h"] {
            write(r, &at(&format!("{name}/x")), "in a directory\n");
            write(r, &at(&format!("{name}/y/z")), "deeper\n");
        }
        for name in ["s2f", "s2d", "s2h"] {
            ln_s(r, "target", &at(name));
        }
        for name in ["h2f", "h2d", "h2s"] {
            write(r, &at(name), &format!("{name} is linked\n"));
            ln(r, &at(name), &at(&format!("{name}-peer")));
        }
        write(r, &at("del-file"), "deleted later\n");
        write(r, &at("del-dir/a"), "deleted later\n");
        write(r, &at("del-dir/b/c"), "deleted later\n");
        ln_s(r, "target", &at("del-link"));
        write(r, &at("del-hl"), "one name deleted later\n");
        ln(r, &at("del-hl"), &at("del-hl-peer"));
        write(r, &at("opq/old"), "hidden later\n");
        write(r, &at("opq/sub/old"), "hidden later\n");
        write(r, &at("mode"), "mode changes\n");
        write(r, &at("owned/f"), "owner changes\n");
    }
    write(r, "usr/bin/tool", "#!/bin/sh\n");
    fs::set_permissions(r.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    write(r, "home/user/file", "user's\n");
    chown(r.join("home/user/file"), Some(1000), Some(1000)).unwrap();
    chown(r.join("home/user"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(r.join("home/user"), fs::Permissions::from_mode(0o700)).unwrap();
}

/// Every type change in every direction, deletions, a directory emptied and refilled.
fn change(r: &Path) {
    for p in DEPTHS {
        let at = |rel: &str| format!("{p}{rel}");
        rm(r, &at("f2d"));
        write(r, &at("f2d/inner"), "f2d is a directory now\n");
        rm(r, &at("f2s"));
        ln_s(r, "target", &at("f2s"));
        rm(r, &at("f2h"));
        ln(r, &at("target"), &at("f2h"));
        rm(r, &at("d2f"));
        write(r, &at("d2f"), "d2f is a file now\n");
        rm(r, &at("d2s"));
        ln_s(r, "target", &at("d2s"));
        rm(r, &at("d2h"));
        ln(r, &at("target"), &at("d2h"));
        rm(r, &at("s2f"));
        write(r, &at("s2f"), "s2f is a file now\n");
        rm(r, &at("s2d"));
        write(r, &at("s2d/inner"), "s2d is a directory now\n");
        rm(r, &at("s2h"));
        ln(r, &at("target"), &at("s2h"));
        rm(r, &at("h2f"));
        write(r, &at("h2f"), "h2f stands alone now\n");
        rm(r, &at("h2d"));
        write(r, &at("h2d/inner"), "h2d is a directory now\n");
        rm(r, &at("h2s"));
        ln_s(r, "target", &at("h2s"));
        for name in ["del-file", "del-dir", "del-link", "del-hl"] {
            rm(r, &at(name));
        }
        rm(r, &at("opq"));
        write(r, &at("opq/new"), "the only content now\n");
        fs::set_permissions(r.join(at("mode")), fs::Permissions::from_mode(0o600)).unwrap();
        chown(r.join(at("owned")), Some(1000), Some(1000)).unwrap();
        chown(r.join(at("owned/f")), Some(1000), Some(1000)).unwrap();
    }
}

/// Changes back, and new names where whiteouts stood.
fn change_again(r: &Path) {
    for p in DEPTHS {
        let at = |rel: &str| format!("{p}{rel}");
        rm(r, &at("f2d"));
        write(r, &at("f2d"), "f2d is a file again\n");
        rm(r, &at("d2f"));
        write(r, &at("d2f/again"), "d2f is a directory again\n");
        rm(r, &at("s2d"));
        ln_s(r, "opq/new", &at("s2d"));
        write(
            r,
            &at("del-dir/new"),
            "a directory where a whiteout stood\n",
        );
        write(r, &at("del-file"), "a file where a whiteout stood\n");
        rm(r, &at("h2f-peer"));
    }
}

const STEPS: [fn(&Path); 3] = [base, change, change_again];

// ---- the tools ----

/// Unpack `layout:tag` with umoci into `bundle`; returns the rootfs.
fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", s(layout));
    run(Command::new("umoci").args(["unpack", "--image", &image, s(bundle)]));
    bundle.join("rootfs")
}

/// The steps as an umoci image at `dir`, tag `t`.
fn build_with_umoci(tmp: &Path, dir: &Path) {
    let image = format!("{}:t", s(dir));
    run(Command::new("umoci").args(["init", "--layout", s(dir)]));
    run(Command::new("umoci").args(["new", "--image", &image]));
    for (i, step) in STEPS.iter().enumerate() {
        let bundle = tmp.join(format!("umoci-work{i}"));
        step(&umoci_unpack(dir, "t", &bundle));
        run(Command::new("umoci").args(["repack", "--image", &image, s(&bundle)]));
        fs::remove_dir_all(&bundle).unwrap();
    }
}

/// buildah and podman on one private containers/storage (overlay, so buildah writes opaque
/// markers), and skopeo, with a signature policy that accepts everything (all local).
struct Tools {
    dir: PathBuf,
}

impl Tools {
    fn storage(&self) -> Vec<String> {
        let d = &self.dir;
        vec![
            "--root".into(),
            d.join("root").to_str().unwrap().into(),
            "--runroot".into(),
            d.join("runroot").to_str().unwrap().into(),
            "--storage-driver".into(),
            "overlay".into(),
        ]
    }

    fn policy(&self) -> String {
        self.dir.join("policy.json").to_str().unwrap().into()
    }

    fn buildah(&self, args: &[&str]) -> String {
        run(Command::new("buildah").args(self.storage()).args(args))
    }

    fn podman(&self, args: &[&str]) -> String {
        run(Command::new("podman")
            .args(self.storage())
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--events-backend", "file", "--cgroup-manager", "cgroupfs"])
            .args(args))
    }

    fn skopeo(&self, args: &[&str]) -> String {
        run(Command::new("skopeo")
            .args(["--policy", &self.policy()])
            .args(args))
    }

    /// The steps as buildah image `corpus`: one commit per step, no `buildah run`.
    fn build(&self) {
        let policy = self.policy();
        let mut from = "scratch".to_string();
        for (i, step) in STEPS.iter().enumerate() {
            let ctr = self.buildah(&["from", "--signature-policy", &policy, &from]);
            let root = PathBuf::from(self.buildah(&["mount", &ctr]));
            step(&root);
            let name = format!("corpus{i}");
            self.buildah(&["commit", "--signature-policy", &policy, &ctr, &name]);
            self.buildah(&["rm", &ctr]);
            from = name;
        }
        self.buildah(&["tag", &from, "corpus"]);
    }
}

impl Drop for Tools {
    fn drop(&mut self) {
        // Containers (and so their overlay mounts) go first; then anything still mounted below
        // the directory (a failed test), lazily, so the temporary directory can be removed.
        let _ = Command::new("buildah")
            .args(self.storage())
            .args(["rm", "--all"])
            .output();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let base = self.dir.to_string_lossy().into_owned();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| m.starts_with(&base))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

// ---- comparing trees ----

/// Names, types, modes, owners, mtimes, contents, symlink targets, link counts (the common
/// snapshot), and which names share an inode.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = snapshot(root, true);
    let mut groups: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
    for rel in out.keys() {
        let md = fs::symlink_metadata(root.join(rel)).unwrap();
        if !md.is_dir() && md.nlink() > 1 {
            groups
                .entry((md.dev(), md.ino()))
                .or_default()
                .insert(rel.clone());
        }
    }
    for group in groups.values() {
        let names: Vec<String> = group.iter().map(|p| p.display().to_string()).collect();
        for rel in group {
            out.get_mut(rel)
                .unwrap()
                .push_str(&format!(" links[{}]", names.join(",")));
        }
    }
    out
}

fn assert_same_tree(want: &BTreeMap<PathBuf, String>, got: &BTreeMap<PathBuf, String>, what: &str) {
    let keys: BTreeSet<&PathBuf> = want.keys().chain(got.keys()).collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| want.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "  {}\n    umoci:      {}\n    layer-tool: {}",
                k.display(),
                want.get(k).map_or("(absent)", String::as_str),
                got.get(k).map_or("(absent)", String::as_str)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} paths differ from umoci unpack:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

fn unionfs_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("UNIONFS_BIN") {
        return Some(PathBuf::from(bin));
    }
    let next = Path::new(env!("CARGO_BIN_EXE_layer-tool")).with_file_name("unionfs");
    next.is_file().then_some(next)
}

fn layer_tool(store: &Path, args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", store)
        .args(args))
}

/// Import `source` as `name`, and compare its union (squash, and the mount when `unionfs` is
/// given) with `want`.
fn check_import(
    tmp: &Path,
    store: &Path,
    source: &Path,
    name: &str,
    want: &BTreeMap<PathBuf, String>,
    unionfs: Option<&Path>,
) {
    layer_tool(store, &["import", s(source), "--name", name]);
    let flat = format!("{name}-flat");
    layer_tool(store, &["squash", name, "--name", &flat]);
    let st = layer_tool::store::Store::at(store);
    let (flat_dir, flat_image) = st.find_image(&flat).unwrap();
    let flat_root = flat_image.layer_dirs(&flat_dir)[0].clone();
    assert_same_tree(want, &tree(&flat_root), &format!("{name}: squash"));
    let Some(bin) = unionfs else { return };
    let mnt = tmp.join(format!("mnt-{name}"));
    fs::create_dir(&mnt).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_STORE", store)
        .env("UNIONFS_BIN", bin)
        .args(["mount", name, s(&mnt)]));
    let seen = std::panic::catch_unwind(|| tree(&mnt));
    run(Command::new(env!("CARGO_BIN_EXE_layer-tool"))
        .env("UNIONFS_BIN", bin)
        .args(["umount", s(&mnt)]));
    assert_same_tree(
        want,
        &seen.expect("reading the mounted union"),
        &format!("{name}: layer-tool mount"),
    );
}

#[test]
fn layers_of_umoci_buildah_podman_and_skopeo_import_as_umoci_unpacks_them() {
    if !require(is_root(), "needs root (owners, buildah and podman storage)") {
        return;
    }
    for tool in ["umoci", "buildah", "podman", "skopeo"] {
        if !require(
            have(tool),
            &format!("{tool} not installed (scripts/install-deps.sh)"),
        ) {
            return;
        }
    }
    let unionfs = unionfs_bin().filter(|_| Path::new("/dev/fuse").exists());
    if unionfs.is_none() {
        // Outside CI the squash comparisons still run; in CI this fails.
        require(
            false,
            "no unionfs binary next to layer-tool (cargo build -p unionfs) or no /dev/fuse",
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path();
    let store = tmp.join("store");
    let tools = Tools {
        dir: tmp.join("containers"),
    };
    fs::create_dir_all(&tools.dir).unwrap();
    fs::write(
        tools.policy(),
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();

    // umoci's own layers.
    let umoci_oci = tmp.join("umoci-oci");
    build_with_umoci(tmp, &umoci_oci);
    let umoci_want = tree(&umoci_unpack(&umoci_oci, "t", &tmp.join("ref-umoci")));
    assert!(umoci_want.contains_key(Path::new("d1/d2/d3/opq/new")));
    assert!(!umoci_want.contains_key(Path::new("d1/d2/d3/opq/old")));
    check_import(
        tmp,
        &store,
        &umoci_oci,
        "umoci",
        &umoci_want,
        unionfs.as_deref(),
    );
    let skopeo_umoci = tmp.join("skopeo-umoci.tar");
    tools.skopeo(&[
        "copy",
        &format!("oci:{}:t", s(&umoci_oci)),
        &format!("docker-archive:{}:umoci:t", s(&skopeo_umoci)),
    ]);
    check_import(
        tmp,
        &store,
        &skopeo_umoci,
        "skopeo-umoci",
        &umoci_want,
        unionfs.as_deref(),
    );

    // buildah's layers (overlay diffs, with opaque markers), carried by each tool.
    tools.build();
    let buildah_oci = tmp.join("buildah-oci");
    tools.buildah(&[
        "push",
        "--signature-policy",
        &tools.policy(),
        "corpus",
        &format!("oci:{}:t", s(&buildah_oci)),
    ]);
    let want = tree(&umoci_unpack(&buildah_oci, "t", &tmp.join("ref-buildah")));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        umoci_want.keys().collect::<Vec<_>>(),
        "buildah and umoci images hold the same names"
    );
    check_import(
        tmp,
        &store,
        &buildah_oci,
        "buildah",
        &want,
        unionfs.as_deref(),
    );

    for format in ["oci-archive", "docker-archive"] {
        let saved = tmp.join(format!("podman-{format}.tar"));
        tools.podman(&["save", "--format", format, "-o", s(&saved), "corpus"]);
        // The reference: umoci unpack of the same archive, brought to an OCI layout by skopeo.
        let layout = tmp.join(format!("ref-podman-{format}-oci"));
        tools.skopeo(&[
            "copy",
            &format!("{format}:{}", s(&saved)),
            &format!("oci:{}:t", s(&layout)),
        ]);
        let want = tree(&umoci_unpack(
            &layout,
            "t",
            &tmp.join(format!("ref-podman-{format}")),
        ));
        check_import(
            tmp,
            &store,
            &saved,
            &format!("podman-{format}"),
            &want,
            unionfs.as_deref(),
        );
    }

    let skopeo_docker = tmp.join("skopeo-buildah.tar");
    tools.skopeo(&[
        "copy",
        &format!("oci:{}:t", s(&buildah_oci)),
        &format!("docker-archive:{}:corpus:t", s(&skopeo_docker)),
    ]);
    check_import(
        tmp,
        &store,
        &skopeo_docker,
        "skopeo-buildah",
        &want,
        unionfs.as_deref(),
    );
}
