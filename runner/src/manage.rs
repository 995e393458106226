//! `runner ps`, `runner rm` and `runner commit`: the containers a store keeps.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use layer_tool::store::Store;

use crate::container::{now, pid_alive, Containers, State, Status};
use crate::initlayer::INIT_FILES;
use crate::union;

/// The status column: running, exited (code), created, or dead (its runner is gone).
pub fn status_text(s: &State, runner_alive: bool) -> String {
    match s.status {
        Status::Running | Status::Created if !runner_alive => "dead".to_string(),
        Status::Running => "running".to_string(),
        Status::Created => "created".to_string(),
        Status::Exited => format!("exited ({})", s.exit_code.unwrap_or(-1)),
    }
}

fn runner_alive(s: &State) -> bool {
    s.runner_pid.is_some_and(pid_alive)
}

/// The `ps` table.
pub fn ps_table(states: &[State], now_secs: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14}{:<20}{:<16}{:<24}{:<14}STATUS",
        "CONTAINER ID", "NAME", "IMAGE", "COMMAND", "CREATED"
    );
    for s in states {
        let mut cmd: String = s.command.join(" ");
        if cmd.chars().count() > 20 {
            cmd = cmd.chars().take(17).collect::<String>() + "...";
        }
        let age = now_secs.saturating_sub(s.created);
        let created = match age {
            0..=59 => format!("{age}s ago"),
            60..=3599 => format!("{}m ago", age / 60),
            3600..=86399 => format!("{}h ago", age / 3600),
            _ => format!("{}d ago", age / 86400),
        };
        let _ = writeln!(
            out,
            "{:<14}{:<20}{:<16}{:<24}{:<14}{}",
            &s.id[..12.min(s.id.len())],
            s.name,
            s.image,
            format!("\"{cmd}\""),
            created,
            status_text(s, runner_alive(s))
        );
    }
    out
}

pub fn ps() -> Result<()> {
    let containers = Containers::new(Store::from_env().root());
    let mut states = Vec::new();
    for id in containers.ids()? {
        let c = containers.dir(&id);
        match c.load() {
            Ok(s) => states.push(s),
            Err(e) => tracing::warn!("skipping {}: {e:#}", c.dir.display()),
        }
    }
    states.sort_by_key(|s| std::cmp::Reverse(s.created));
    print!("{}", ps_table(&states, now()));
    Ok(())
}

/// Remove a kept container: its writable layer, and whatever a runner that died left (its
/// processes, cgroup and mount).
pub fn rm(name: &str, force: bool) -> Result<()> {
    let containers = Containers::for_run(Store::from_env().root())?;
    let c = containers.find(name)?;
    let state = c.load().ok();
    if let Some(s) = &state {
        let alive = runner_alive(s);
        if alive && s.status != Status::Exited {
            if !force {
                bail!(
                    "container {} is running: stop it first, or use rm --force",
                    s.name
                );
            }
            if let Some(pid) = s.pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // The runner tears its container down once the process is gone; give it a moment.
            for _ in 0..500 {
                if !runner_alive(s) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        crate::cgroup::remove_dirs(&s.cgroups, Duration::from_secs(5))?;
    }
    let rootfs = c.rootfs();
    if union::is_mounted(&rootfs) {
        let bin = union::find_unionfs_bin()?;
        union::unmount_and_wait(&bin, &rootfs)?;
    }
    if union::is_mounted(&rootfs) {
        bail!(
            "{} is still mounted; not removing the container",
            rootfs.display()
        );
    }
    c.remove()?;
    if let Some(s) = &state {
        containers.release_name(&s.name);
    }
    println!("{name}");
    Ok(())
}

/// `runner commit NAME IMAGE`: the container's writable layer, without what the runner wrote into
/// the init layer (and any copy-up or whiteout of those files), becomes a new layer on top of the
/// container's image.
pub fn commit(name: &str, image: &str) -> Result<()> {
    let store = Store::from_env();
    let containers = Containers::new(store.root());
    let c = containers.find(name)?;
    let state = c.load()?;
    if state.status == Status::Running && runner_alive(&state) {
        tracing::warn!("committing a running container: its files may be changing");
    }
    let base = state
        .image_dir
        .to_str()
        .with_context(|| format!("image directory {} is not UTF-8", state.image_dir.display()))?;
    let exclude: Vec<&Path> = INIT_FILES.iter().map(Path::new).collect();
    let img = layer_tool::commit::commit_layer(&store, &c.upper(), base, image, &exclude)
        .with_context(|| format!("committing container {} as {image}", state.name))?;
    println!(
        "{}",
        img.layers.last().map(|l| l.digest.as_str()).unwrap_or("")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_shows_status_and_short_ids() {
        let s = State {
            id: "a".repeat(64),
            name: "web".into(),
            image: "demo".into(),
            image_dir: "/i".into(),
            layers: vec![],
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo a very long command line".into(),
            ],
            created: 1000,
            status: Status::Exited,
            runner_pid: None,
            pid: None,
            exit_code: Some(3),
            cgroups: vec![],
        };
        let t = ps_table(std::slice::from_ref(&s), 1120);
        assert!(
            t.contains(&"a".repeat(12)) && !t.contains(&"a".repeat(13)),
            "{t}"
        );
        assert!(
            t.contains("exited (3)") && t.contains("2m ago") && t.contains("..."),
            "{t}"
        );
        let running = State {
            status: Status::Running,
            ..s
        };
        assert_eq!(status_text(&running, true), "running");
        assert_eq!(status_text(&running, false), "dead");
    }
}
