//! Running an OCI hook: its program with its args and env, the container's state JSON on its
//! stdin, killed when its timeout passes.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::oci::bundle::Hook;

/// Run `hook`, feeding it `state_json`; an error when it fails, times out or cannot start.
pub fn run(hook: &Hook, state_json: &str) -> Result<()> {
    let mut cmd = Command::new(&hook.path);
    if let Some((arg0, rest)) = hook.args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear();
    for kv in &hook.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting hook {}", hook.path.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin closes it early: not an error.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = hook
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(t));
    loop {
        if let Some(status) = child.try_wait().context("waiting for a hook")? {
            if !status.success() {
                bail!("hook {} failed: {status}", hook.path.display());
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "hook {} timed out after {} s",
                hook.path.display(),
                hook.timeout.unwrap_or(0)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(path: &str, args: &[&str], timeout: Option<u64>) -> Hook {
        Hook {
            path: path.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["X=1".into()],
            timeout,
        }
    }

    #[test]
    fn hooks_get_state_on_stdin_and_fail_loudly() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let script = format!("cat > {}; test \"$X\" = 1", out.display());
        run(
            &hook("/bin/sh", &["sh", "-c", &script], None),
            "{\"id\":\"x\"}",
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"id\":\"x\"}");
        assert!(run(&hook("/bin/false", &["false"], None), "{}").is_err());
        let e = run(&hook("/bin/sleep", &["sleep", "5"], Some(1)), "{}").unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert!(run(&hook("/nonexistent/hook", &[], None), "{}").is_err());
    }
}
