//! Changes to an image config given on the command line (`--env`, `--cmd`, ...).

use anyhow::{bail, Context, Result};

use crate::store::ImageConfig;

/// Fields to set on an image config; `None` keeps what the base image has.
#[derive(Debug, Clone, Default)]
pub struct ConfigChanges {
    /// `KEY=VALUE`; replaces an existing `KEY=`.
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

impl ConfigChanges {
    pub fn apply(&self, config: &mut ImageConfig) -> Result<()> {
        for var in &self.env {
            let Some((key, _)) = var.split_once('=') else {
                bail!("--env {var:?}: want KEY=VALUE");
            };
            let prefix = format!("{key}=");
            config.env.retain(|e| !e.starts_with(&prefix));
            config.env.push(var.clone());
        }
        if let Some(ep) = &self.entrypoint {
            config.entrypoint = ep.clone();
        }
        if let Some(cmd) = &self.cmd {
            config.cmd = cmd.clone();
        }
        if let Some(w) = &self.workdir {
            config.workdir = w.clone();
        }
        if let Some(u) = &self.user {
            config.user = u.clone();
        }
        Ok(())
    }
}

/// A command line from the user: a JSON array (`["/bin/sh","-c","echo hi"]`), or words split on
/// whitespace (`/bin/sh -l`).
pub fn parse_argv(text: &str) -> Result<Vec<String>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)
            .with_context(|| format!("parsing {text:?} as a JSON array of strings"))
    } else {
        Ok(text.split_whitespace().map(str::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_replaces_same_key() {
        let mut c = ImageConfig {
            env: vec!["PATH=/bin".into(), "A=1".into()],
            ..Default::default()
        };
        ConfigChanges {
            env: vec!["PATH=/usr/bin:/bin".into()],
            cmd: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        }
        .apply(&mut c)
        .unwrap();
        assert_eq!(c.env, vec!["A=1", "PATH=/usr/bin:/bin"]);
        assert_eq!(c.cmd, vec!["/bin/sh"]);
    }

    #[test]
    fn parses_argv_forms() {
        assert_eq!(parse_argv("/bin/sh -l").unwrap(), vec!["/bin/sh", "-l"]);
        assert_eq!(parse_argv(r#"["a b","c"]"#).unwrap(), vec!["a b", "c"]);
        assert!(parse_argv("[nope").is_err());
    }
}
