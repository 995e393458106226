//! An OCI runtime driven as an engine drives runc: a state root of its own, bundles made with
//! `runner spec` and edited, every `state` checked against the runtime-spec's state schema
//! (fixtures/oci/state.schema.json).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{unionfs_bin, Run};

/// A state root of its own and bundles in a scratch directory.
pub struct Oci {
    pub scratch: tempfile::TempDir,
    /// The runtime binary (the built one, or a private copy).
    pub bin: PathBuf,
}

impl Oci {
    pub fn new() -> Oci {
        Oci {
            scratch: tempfile::Builder::new()
                .prefix("runner-oci-test")
                .tempdir()
                .unwrap(),
            bin: PathBuf::from(env!("CARGO_BIN_EXE_runner")),
        }
    }

    /// The same, running a private copy of the runtime (to check that nothing changed it).
    pub fn with_runtime_copy() -> Oci {
        let mut oci = Oci::new();
        oci.bin = oci.scratch.path().join("runner");
        fs::copy(env!("CARGO_BIN_EXE_runner"), &oci.bin).unwrap();
        oci
    }

    pub fn root(&self) -> PathBuf {
        self.scratch.path().join("state")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(self.root())
            .args(args)
            .env("UNIONFS_BIN", unionfs_bin().expect("checked by can_run"))
            .stdin(Stdio::null());
        cmd
    }

    /// Run the runtime to completion, its output in files ([`Run::to_files`]).
    pub fn runtime(&self, args: &[&str]) -> Run {
        Run::to_files(self.cmd(args))
    }

    /// A bundle: `runner spec`'s default config with `process.args` = `args`, edited by `edit`,
    /// and a private copy of the test image's base layer as its root (the runtime makes mount
    /// points in it; the shared image must stay untouched).
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let dir = self.scratch.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_runner"))
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "runner spec: {out:?}");
        super::copy_base_layer(&dir.join("rootfs"));
        let path = dir.join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        edit(&mut config);
        fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        dir
    }

    /// `state ID`, checked against the schema.
    pub fn state(&self, id: &str) -> Value {
        let out = self.runtime(&["state", id]);
        let v: Value = serde_json::from_str(out.ok())
            .unwrap_or_else(|e| panic!("state is not JSON ({e}): {out:?}"));
        let schema: Value = serde_json::from_str(
            &fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/oci/state.schema.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "state {v} breaks the schema: {errors:?}");
        assert_eq!(v["id"], id);
        v
    }

    pub fn wait_status(&self, id: &str, want: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.state(id);
            if v["status"] == want {
                return v;
            }
            assert!(Instant::now() < deadline, "{id} never became {want}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        // Whatever a failed test left: force-delete every container of this root.
        if let Ok(rd) = fs::read_dir(self.root()) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = self.runtime(&["delete", "--force", &id]);
            }
        }
    }
}
