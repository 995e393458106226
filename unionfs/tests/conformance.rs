//! POSIX conformance of the union as a whole: the pjdfstest suite (the Rust port, crates.io
//! `pjdfstest`, installed by scripts/install-deps.sh) run on a real mount with a read-only
//! lower branch under it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn pjdfstest() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PJDFSTEST") {
        return Some(PathBuf::from(p));
    }
    let tools =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/bin/pjdfstest");
    tools.exists().then_some(tools)
}

#[test]
fn pjdfstest_passes_on_the_union() {
    if !can_mount() {
        return;
    }
    let Some(bin) = pjdfstest() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but pjdfstest is not installed (scripts/install-deps.sh builds it)"
        );
        eprintln!("skipping: pjdfstest not installed (bash scripts/install-deps.sh)");
        return;
    };
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.write("B/lower_file", "from the lower branch");
    fx.mkdir("B/lower_dir");
    let lower = snapshot(&fx.path("B"));
    // Two unprivileged users every Debian has; the suite switches to them for permission tests.
    let config = fx.write(
        "pjdfstest.toml",
        "[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\nrename_ctime = {}\n\n\
         [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"daemon\", \"daemon\"]]\n",
    );
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &["-o", "allow_other"]);
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(&m.mnt)
        .current_dir(&m.mnt)
        .output()
        .expect("run pjdfstest");
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .collect();
    let passed = text
        .lines()
        .filter(|l| l.trim_end().ends_with(" ok"))
        .count();
    eprintln!("pjdfstest: {passed} passed, {} failed", failed.len());
    assert!(
        passed > 300,
        "pjdfstest ran too few tests ({passed}):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failed.is_empty() && out.status.success(),
        "pjdfstest failures:\n{}\n{text}",
        failed.join("\n")
    );
    drop(m);
    assert_eq!(snapshot(&fx.path("B")), lower);
}
