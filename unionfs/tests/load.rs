//! Load: many processes on one mount at once, for a bounded time, each creating, writing,
//! reading, renaming, unlinking and listing files (its own, some copied up from the lower
//! branch, some in a directory all of them share). Each process checks every read against what
//! it wrote and records what it left; afterwards the union, and the same union mounted again,
//! must hold exactly what the processes recorded, and the lower branch must be untouched.
//!
//! The workers are this test binary run again (`UNIONFS_LOAD_WORKER` set), so they are real
//! processes with their own file tables, as a container's would be. `UNIONFS_LOAD_SECONDS` sets
//! the duration (default 4), `UNIONFS_LOAD_WORKERS` the number of processes (default 8).

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const TEST_NAME: &str = "many_processes_on_one_mount_leave_exactly_what_they_recorded";
/// Lower files per worker, copied up by the first write.
const LOWER_FILES: usize = 20;

/// A small deterministic generator (xorshift64*), so a failing worker replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What a worker believes: relative path (under the mount) -> content.
type Model = BTreeMap<String, String>;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn many_processes_on_one_mount_leave_exactly_what_they_recorded() {
    if let Ok(spec) = std::env::var("UNIONFS_LOAD_WORKER") {
        return worker(&spec);
    }
    if !can_mount() {
        return;
    }
    let seconds = env_num("UNIONFS_LOAD_SECONDS", 4);
    let workers = env_num("UNIONFS_LOAD_WORKERS", 8) as usize;
    let fx = Fixture::new();
    fx.mkdir("A");
    fx.mkdir("B/shared");
    for k in 0..workers {
        for i in 0..LOWER_FILES {
            fx.write(&format!("B/w{k}/l{i}"), &format!("lower w{k} l{i};"));
        }
    }
    let lower = snapshot(&fx.path("B"));
    let spec = format!(
        "{}=rw:{}=ro",
        fx.path("A").display(),
        fx.path("B").display()
    );
    let m = mount(&spec, &fx.path("mnt"), &[]);
    let results = fx.mkdir("results");
    let started = Instant::now();
    let children: Vec<_> = (0..workers)
        .map(|k| {
            let out = results.join(format!("w{k}"));
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(
                    "UNIONFS_LOAD_WORKER",
                    format!("{k}|{seconds}|{}|{}", m.mnt.display(), out.display()),
                )
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for (k, mut c) in children.into_iter().enumerate() {
        let st = c.wait().unwrap();
        assert!(st.success(), "worker {k} failed: {st:?}");
    }
    let took = started.elapsed();

    // Everything the workers recorded, and nothing else, with the contents they wrote.
    let mut expected = Model::new();
    let mut ops = 0u64;
    for k in 0..workers {
        let text = fs::read_to_string(results.join(format!("w{k}"))).unwrap();
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("ops\t") {
                ops += n.parse::<u64>().unwrap();
                continue;
            }
            let (path, content) = line.split_once('\t').unwrap();
            assert!(
                expected
                    .insert(path.to_string(), content.to_string())
                    .is_none(),
                "{path} recorded twice"
            );
        }
    }
    let check = |root: &Path, when: &str| {
        let mut found = Model::new();
        for k in 0..workers {
            collect(root, &format!("w{k}"), &mut found);
        }
        collect(root, "shared", &mut found);
        let missing: Vec<_> = expected
            .keys()
            .filter(|p| !found.contains_key(*p))
            .collect();
        let extra: Vec<_> = found
            .keys()
            .filter(|p| !expected.contains_key(*p))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{when}: missing {missing:?}, unexpected {extra:?}"
        );
        for (p, want) in &expected {
            assert_eq!(&found[p], want, "{when}: content of {p}");
        }
    };
    check(&m.mnt, "after the run");
    drop(m);
    let m = mount(&spec, &fx.path("mnt"), &[]);
    check(&m.mnt, "after a remount");
    drop(m);
    assert_eq!(
        snapshot(&fx.path("B")),
        lower,
        "the lower branch is untouched"
    );
    eprintln!(
        "load: {workers} processes, {ops} operations in {took:?} ({:.0}/s), {} files at the end",
        ops as f64 / took.as_secs_f64(),
        expected.len()
    );
    assert!(
        ops > workers as u64 * 100,
        "the workers did real work: {ops}"
    );
}

/// Every regular file below `root/rel`, with its content.
fn collect(root: &Path, rel: &str, out: &mut Model) {
    let dir = root.join(rel);
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = format!("{rel}/{}", e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() {
            collect(root, &name, out);
        } else {
            out.insert(name, fs::read_to_string(e.path()).unwrap());
        }
    }
}

/// One worker process: `k|seconds|mountpoint|result-file`.
fn worker(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let k: usize = parts[0].parse().unwrap();
    let seconds: u64 = parts[1].parse().unwrap();
    let mnt = PathBuf::from(parts[2]);
    let out = PathBuf::from(parts[3]);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((k as u64 + 1) * 0x1000_0001));
    let own = format!("w{k}");
    let mut model: Model = (0..LOWER_FILES)
        .map(|i| (format!("{own}/l{i}"), format!("lower {own} l{i};")))
        .collect();
    let mut seq = 0u64;
    let mut ops = 0u64;
    let path = |rel: &str| mnt.join(rel);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        ops += 1;
        seq += 1;
        let names: Vec<String> = model.keys().cloned().collect();
        let pick = |rng: &mut Rng| names.get(rng.below(names.len())).cloned();
        match rng.below(10) {
            // Create a new file, in its own directory or (with a unique name) the shared one.
            0 | 1 => {
                let rel = if rng.below(4) == 0 {
                    format!("shared/{own}-n{seq}")
                } else {
                    format!("{own}/n{seq}")
                };
                let content = format!("{rel} created;");
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path(&rel))
                    .unwrap_or_else(|e| panic!("create {rel}: {e}"));
                f.write_all(content.as_bytes()).unwrap();
                model.insert(rel, content);
            }
            // Append (a lower file is copied up by the first one).
            2 | 3 => {
                if let Some(rel) = pick(&mut rng) {
                    let add = format!("+{seq};");
                    let mut f = OpenOptions::new()
                        .append(true)
                        .open(path(&rel))
                        .unwrap_or_else(|e| panic!("append {rel}: {e}"));
                    f.write_all(add.as_bytes()).unwrap();
                    model.get_mut(&rel).unwrap().push_str(&add);
                }
            }
            // Read and compare.
            4 | 5 => {
                if let Some(rel) = pick(&mut rng) {
                    let got = fs::read_to_string(path(&rel))
                        .unwrap_or_else(|e| panic!("read {rel}: {e}"));
                    assert_eq!(got, model[&rel], "worker {k} read {rel}");
                }
            }
            // Rename within its directory, or between its directory and the shared one.
            6 => {
                if let Some(rel) = pick(&mut rng) {
                    let to = if rng.below(2) == 0 {
                        format!("shared/{own}-r{seq}")
                    } else {
                        format!("{own}/r{seq}")
                    };
                    fs::rename(path(&rel), path(&to))
                        .unwrap_or_else(|e| panic!("rename {rel} {to}: {e}"));
                    let content = model.remove(&rel).unwrap();
                    model.insert(to, content);
                }
            }
            // Unlink (a lower file leaves a whiteout).
            7 => {
                if model.len() > 5 {
                    if let Some(rel) = pick(&mut rng) {
                        fs::remove_file(path(&rel)).unwrap_or_else(|e| panic!("unlink {rel}: {e}"));
                        model.remove(&rel);
                    }
                }
            }
            // List its own directory: exactly its files. List the shared one: its own names
            // there are all present (others come and go).
            8 => {
                let mut listed: Vec<String> = fs::read_dir(path(&own))
                    .unwrap()
                    .map(|e| format!("{own}/{}", e.unwrap().file_name().to_string_lossy()))
                    .collect();
                listed.sort();
                let mine: Vec<String> = model
                    .keys()
                    .filter(|p| p.starts_with(&format!("{own}/")))
                    .cloned()
                    .collect();
                assert_eq!(listed, mine, "worker {k} readdir of its directory");
            }
            _ => {
                let listed: Vec<String> = fs::read_dir(path("shared"))
                    .unwrap()
                    .map(|e| format!("shared/{}", e.unwrap().file_name().to_string_lossy()))
                    .collect();
                for p in model.keys().filter(|p| p.starts_with("shared/")) {
                    assert!(listed.contains(p), "worker {k}: {p} missing from shared");
                }
            }
        }
    }
    let mut text = format!("ops\t{ops}\n");
    for (p, c) in &model {
        text.push_str(&format!("{p}\t{c}\n"));
    }
    fs::write(&out, text).unwrap();
}
