//! The layer importer's unpacker (`layer_tool::extract::extract`, after the compression
//! detection `import` does) on any bytes: it may refuse, never panic, and whatever it unpacks
//! stays inside the destination: nothing appears beside it, and no symlink it made climbs out.
#![no_main]

use std::io::{BufReader, Cursor};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use layer_tool::compression::Compression;
use layer_tool::extract::{extract, ExtractOptions, Limits};
use libfuzzer_sys::fuzz_target;

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

/// Whether a relative symlink at `link` (relative to the layer root) with `target` stays inside.
fn stays_inside(link_rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true; // resolved under the container's root, by design
    }
    let mut depth = link_rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Marked attributes: mode 0701 and mtime 1234567 (no archive sets both by chance).
fn mark(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o701)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_234_567);
    std::fs::File::open(dir).unwrap().set_modified(t).unwrap();
}

fn is_marked(md: &std::fs::Metadata) -> bool {
    md.permissions().mode() & 0o7777 == 0o701 && md.mtime() == 1_234_567
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, archive)) = data.split_first() else {
        return;
    };
    // In memory where there is a tmpfs: thousands of small trees a second.
    let shm = Path::new("/dev/shm");
    let scratch = if shm.is_dir() {
        tempfile::Builder::new().prefix("fuzz-tar").tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("fuzz-tar").tempdir()
    }
    .expect("a scratch directory");
    let dest = scratch.path().join("layer");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(scratch.path().join("sentinel"), "outside").unwrap();
    // With bit 1 of the mode byte: a lower layer (as `import` passes the layers below) whose
    // `etc` is an absolute symlink, which a layer may hold, to a directory outside with marked
    // attributes. Nothing may be read through it: no directory of the new layer may get them.
    let mut lower = Vec::new();
    if mode & 2 == 2 {
        let outside = scratch.path().join("outside");
        std::fs::create_dir_all(outside.join("sub/deeper")).unwrap();
        let l = scratch.path().join("lower");
        std::fs::create_dir_all(l.join("d")).unwrap();
        std::os::unix::fs::symlink(&outside, l.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, l.join("d/link")).unwrap();
        for d in [
            outside.clone(),
            outside.join("sub"),
            outside.join("sub/deeper"),
        ] {
            mark(&d);
        }
        lower.push(l);
    }
    let opts = ExtractOptions {
        limits: Limits {
            max_bytes: 8 << 20,
            max_entries: 4096,
        },
        allow_devices: false,
        apply_whiteouts: mode & 1 == 1,
        lower,
    };
    let mut reader = BufReader::new(Cursor::new(archive));
    let Ok(compression) = Compression::detect(&mut reader) else {
        return;
    };
    let Ok(decoded) = compression.decoder(reader) else {
        return;
    };
    let _ = extract(decoded, &dest, &opts);
    // Nothing beside the destination changed.
    let mut beside: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.retain(|n| n != "lower" && n != "outside");
    beside.sort();
    assert_eq!(beside, ["layer", "sentinel"]);
    assert_eq!(
        std::fs::metadata(scratch.path().join("sentinel"))
            .unwrap()
            .nlink(),
        1,
        "a hardlink to a file outside"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("sentinel")).unwrap(),
        "outside"
    );
    let mut all = Vec::new();
    walk(&dest, &mut all);
    for p in all {
        let rel = p.strip_prefix(&dest).unwrap();
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            !(md.is_dir() && is_marked(&md)),
            "{} took the attributes of a directory outside the layers",
            rel.display()
        );
        if let Ok(target) = std::fs::read_link(&p) {
            assert!(
                stays_inside(rel, &target),
                "symlink {} -> {} climbs out of the layer",
                rel.display(),
                target.display()
            );
        }
    }
});
