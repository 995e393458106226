//! The runner's command line as a user meets it: `--help`, docker's `-i`, and a `unionfs` on
//! `PATH` that is not this project's (Debian's `unionfs-fuse` installs one as /usr/bin/unionfs).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{can_run, image, unionfs_bin, Env, Run};

#[test]
fn help_names_the_oci_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_runner"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "create --bundle", "kill", "delete", "exec", "--root"] {
        assert!(help.contains(word), "--help lacks {word:?}: {help}");
    }
}

#[test]
fn interactive_keeps_stdin_attached() {
    if !can_run("run -i") {
        return;
    }
    let env = Env::new();
    let mut child = env
        .command(&["run", "--rm", "-i", image().to_str().unwrap(), "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = Run::from(child.wait_with_output().unwrap());
    assert_eq!(out.ok(), "through stdin\n");
}

/// A runner that finds only a foreign `unionfs` says so, naming it, and starts nothing.
#[test]
fn a_foreign_unionfs_on_path_is_refused_by_name() {
    if !can_run("foreign unionfs") {
        return;
    }
    let env = Env::new();
    // A copy of runner with no unionfs beside it, and a look-alike first on PATH.
    let dir = tempfile::tempdir().unwrap();
    let runner = dir.path().join("bin/runner");
    fs::create_dir_all(runner.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_runner"), &runner).unwrap();
    let fake_dir = dir.path().join("fake");
    fs::create_dir_all(&fake_dir).unwrap();
    let fake = fake_dir.join("unionfs");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'unionfs-fuse version: 1.0'\necho ran >> \"$0.ran\"\n",
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/bin:/bin", fake_dir.display());
    let out = Run::from(
        Command::new(&runner)
            .args(["run", "--rm", image().to_str().unwrap(), "true"])
            .env_remove("UNIONFS_BIN")
            .env("PATH", &path)
            .env("UNIONFS_STORE", env.store.path())
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(out.code, 125, "{out:?}");
    assert!(
        out.stderr.contains(fake.to_str().unwrap())
            && out.stderr.contains("another program")
            && out.stderr.contains("unionfs-fuse version: 1.0"),
        "{out:?}"
    );
    // Asked only its version, never to mount.
    assert_eq!(
        fs::read_to_string(fake_dir.join("unionfs.ran")).unwrap(),
        "ran\n"
    );
    assert!(env.container_ids().is_empty());

    // The project's unionfs later on PATH is found past the foreign one.
    let ours = dir.path().join("ours");
    fs::create_dir_all(&ours).unwrap();
    fs::copy(unionfs_bin().unwrap(), ours.join("unionfs")).unwrap();
    let path = format!("{}:{}:/usr/bin:/bin", fake_dir.display(), ours.display());
    let out = Run::from(
        Command::new(&runner)
            .args(["run", "--rm", image().to_str().unwrap(), "echo", "ok"])
            .env_remove("UNIONFS_BIN")
            .env("PATH", &path)
            .env("UNIONFS_STORE", env.store.path())
            .stdin(Stdio::null())
            .output()
            .unwrap(),
    );
    assert_eq!(out.ok(), "ok\n");
}
