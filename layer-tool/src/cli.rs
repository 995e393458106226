//! Command-line arguments into calls of the library; nothing else.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{parse_argv, ConfigChanges};
use crate::store::Store;

#[derive(Parser, Debug)]
#[command(
    name = "layer-tool",
    version,
    about = "Build, import, inspect, commit, export and squash image layers"
)]
pub struct Cli {
    /// The image store (default: $UNIONFS_STORE, else /var/lib/unionfs as root, $XDG_DATA_HOME/unionfs (~/.local/share/unionfs) as a user).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a layer of a directory and an image of it (on top of --base).
    Build {
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        base: Option<String>,
        /// Clamp mtimes to this epoch second (default: $SOURCE_DATE_EPOCH if set).
        #[arg(long)]
        mtime: Option<i64>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Make a layer of a container's writable directory, on top of its image.
    Commit {
        upper: PathBuf,
        #[arg(long)]
        base: String,
        #[arg(long)]
        name: String,
        /// A path (relative to the upper directory) to leave out; repeatable.
        #[arg(long, value_name = "PATH")]
        exclude: Vec<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import {
        path: PathBuf,
        /// The name in the store (default: the name the source gives).
        #[arg(long)]
        name: Option<String>,
        /// Which image of a source that holds several (OCI ref name or docker tag).
        #[arg(long = "ref")]
        reference: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Pull an image from a registry into the store (docker-style REF: alpine, host:5000/app:v1).
    Pull {
        reference: String,
        /// The name in the store (default: the last path component and tag, `app:v1`).
        #[arg(long)]
        name: Option<String>,
        /// OS/ARCH[/VARIANT] of a multi-platform image (default: this machine's).
        #[arg(long)]
        platform: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Push an image of the store to a registry (blobs it has are not sent again).
    Push {
        image: String,
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check credentials for a registry and save them in the auth file.
    Login {
        /// The registry (`host:port`, `docker.io`).
        registry: String,
        #[arg(short, long)]
        username: Option<String>,
        /// The password (prefer --password-stdin: command lines are visible to other users).
        #[arg(short, long)]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        registry_args: RegistryArgs,
    },
    /// Remove a registry's credentials from the auth file.
    Logout {
        registry: String,
        #[arg(long, value_name = "FILE")]
        authfile: Option<PathBuf>,
    },
    /// Export an image as an OCI image layout (OUT.tar: as a tar), or a layer as a layer tarball.
    Export {
        /// An image name or directory, or a layer digest (sha256:... or 64 hex digits).
        what: String,
        #[arg(short, long)]
        output: PathBuf,
        /// gzip the layers.
        #[arg(long)]
        gzip: bool,
        /// The ref name in index.json (default: the image name).
        #[arg(long = "ref")]
        reference: Option<String>,
    },
    /// Flatten an image's layers into one layer with the same view.
    Squash {
        image: String,
        #[arg(long)]
        name: String,
    },
    /// List images (or layers with --layers).
    Ls {
        #[arg(long)]
        layers: bool,
    },
    /// Show an image or a layer as JSON: layers, sizes, digests, whiteouts.
    Inspect { what: String },
    /// Remove an image from the store (its layers stay until gc).
    Rm { image: String },
    /// Delete layers no image in the store uses, and staging left by interrupted work.
    Gc,
    /// Mount an image's merged view read-only at DIR (through unionfs).
    Mount { image: String, dir: PathBuf },
    /// Unmount what `mount` mounted.
    Umount { dir: PathBuf },
    /// Copy a layer tree, rewriting whiteouts between aufs/OCI and overlayfs form.
    Convert {
        #[arg(long = "to", value_enum)]
        to: Form,
        /// With --to overlay: mark opaque directories with user.overlay.opaque (userxattr mounts).
        #[arg(long)]
        userxattr: bool,
        src: PathBuf,
        dst: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Form {
    Overlay,
    Aufs,
}

/// How to reach a registry (the options skopeo and podman use).
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Require HTTPS and verify certificates; `--tls-verify=false` allows plain HTTP and
    /// self-signed certificates (plain HTTP to a loopback registry is allowed anyway).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// A directory of CA certificates (`*.crt`) for the registry, instead of
    /// /etc/containers/certs.d/HOST:PORT.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The credentials file (default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json; ~/.docker/config.json is read too).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// USER:PASSWORD for this command, instead of the stored credentials.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub creds: Option<String>,
}

impl RegistryArgs {
    fn options(&self) -> Result<crate::registry::RegistryOptions> {
        let credentials = match &self.creds {
            None => None,
            Some(c) => {
                let (u, p) = c.split_once(':').context("--creds: want USER:PASSWORD")?;
                Some(crate::registry::auth::Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                })
            }
        };
        Ok(crate::registry::RegistryOptions {
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            auth: crate::registry::auth::AuthFiles::from_env(self.authfile.clone()),
            credentials,
        })
    }
}

/// Limits against hostile archives.
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Refuse archives whose uncompressed content exceeds this many bytes (suffixes K, M, G, T).
    #[arg(long, value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Refuse archives with more entries than this.
    #[arg(long)]
    pub max_entries: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> crate::extract::Limits {
        let mut l = crate::extract::Limits::default();
        if let Some(b) = self.max_size {
            l.max_bytes = b;
        }
        if let Some(e) = self.max_entries {
            l.max_entries = e;
        }
        l
    }
}

/// `10G` -> 10 * 2^30.
fn parse_size(text: &str) -> Result<u64, String> {
    let (num, shift) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix in {text:?}")),
            };
            (&text[..i], shift)
        }
        _ => (text, 0),
    };
    let n: u64 = num.parse().map_err(|e| format!("{text:?}: {e}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Image config changes shared by build, commit and import.
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// KEY=VALUE; repeatable.
    #[arg(long)]
    pub env: Vec<String>,
    /// The command: a JSON array or whitespace-separated words.
    #[arg(long)]
    pub cmd: Option<String>,
    /// The entrypoint: a JSON array or whitespace-separated words.
    #[arg(long)]
    pub entrypoint: Option<String>,
    #[arg(long)]
    pub workdir: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
}

impl ConfigArgs {
    fn changes(&self) -> Result<ConfigChanges> {
        Ok(ConfigChanges {
            env: self.env.clone(),
            entrypoint: self.entrypoint.as_deref().map(parse_argv).transpose()?,
            cmd: self.cmd.as_deref().map(parse_argv).transpose()?,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
        })
    }
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    let store = match &cli.store {
        Some(root) => Store::at(root),
        None => Store::from_env(),
    };
    // A user: the commands that write or read the store run in a user namespace of the user's
    // own, where a layer's owners can be given (as ids of its mapping) and the store's files,
    // owned by those ids, can be removed (crate::userns). Not `mount`/`umount`/`convert`: their
    // mounts and files belong to the user outside.
    if !matches!(
        cli.command,
        Command::Mount { .. } | Command::Umount { .. } | Command::Convert { .. }
    ) {
        let root = std::path::absolute(store.root())
            .with_context(|| format!("the store path {}", store.root().display()))?;
        match crate::userns::preflight() {
            Ok(()) => {
                if let Some(code) =
                    crate::userns::enter(&[("UNIONFS_STORE", root.into_os_string())])?
                {
                    std::process::exit(code);
                }
            }
            // Still usable: owners it cannot give are recorded (crate::rootless).
            Err(why) if !crate::userns::is_root() => tracing::warn!(
                "{why}: working without a user namespace; owners other than yours are recorded \
                 in {} instead of given",
                crate::rootless::OVERRIDE_STAT_XATTR
            ),
            Err(_) => {}
        }
    }
    // Commands that change the store secure it when they take its lock; the others tighten an
    // existing store too, where they may (a user who does not own the store only reads it).
    if !matches!(
        cli.command,
        Command::Convert { .. } | Command::Umount { .. }
    ) && store.root().is_dir()
    {
        if let Err(e) = store.secure() {
            tracing::warn!("{e:#}");
        }
    }
    match cli.command {
        Command::Build {
            dir,
            name,
            base,
            mtime,
            config,
        } => {
            let clamp_mtime = match mtime {
                Some(m) => Some(m),
                None => match std::env::var("SOURCE_DATE_EPOCH") {
                    Ok(v) => Some(
                        v.parse()
                            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?}"))?,
                    ),
                    Err(_) => None,
                },
            };
            let opts = crate::build::BuildOptions {
                base,
                config: config.changes()?,
                clamp_mtime,
            };
            let image = crate::build::build(&store, &dir, &name, &opts)?;
            print_image_summary(&image);
        }
        Command::Commit {
            upper,
            base,
            name,
            exclude,
            config,
        } => {
            let opts = crate::commit::CommitOptions {
                exclude,
                config: config.changes()?,
            };
            let image = crate::commit::commit_layer_with(&store, &upper, &base, &name, &opts)?;
            print_image_summary(&image);
        }
        Command::Import {
            path,
            name,
            reference,
            limits,
        } => {
            let opts = crate::import::ImportOptions {
                name,
                reference,
                limits: limits.limits(),
                allow_devices: None,
                progress: crate::progress::wanted(),
            };
            let image = crate::import::import(&store, &path, &opts)?;
            print_image_summary(&image);
        }
        Command::Pull {
            reference,
            name,
            platform,
            registry,
            limits,
        } => {
            let image = crate::registry::ImageRef::parse(&reference)?;
            let opts = crate::registry::pull::PullOptions {
                name,
                platform: platform
                    .as_deref()
                    .map(crate::registry::pull::Platform::parse)
                    .transpose()?,
                registry: registry.options()?,
                progress: crate::progress::wanted(),
                limits: limits.limits(),
            };
            let pulled = crate::registry::pull::pull(&store, &image, &opts)
                .with_context(|| format!("pulling {image}"))?;
            eprintln!(
                "pulled {image} ({}): {} layers fetched, {} already in the store",
                pulled.manifest, pulled.fetched, pulled.reused
            );
            print_image_summary(&pulled.image);
        }
        Command::Push {
            image,
            reference,
            registry,
        } => {
            let target = crate::registry::ImageRef::parse(&reference)?;
            let opts = crate::registry::push::PushOptions {
                registry: registry.options()?,
                progress: crate::progress::wanted(),
            };
            let pushed = crate::registry::push::push(&store, &image, &target, &opts)
                .with_context(|| format!("pushing {image} to {target}"))?;
            eprintln!(
                "pushed {target}: {} blobs sent, {} mounted, {} already there",
                pushed.sent, pushed.mounted, pushed.present
            );
            println!("{}", pushed.manifest);
        }
        Command::Login {
            registry,
            username,
            password,
            password_stdin,
            registry_args,
        } => {
            let username = match username {
                Some(u) => u,
                None => bail!("login: give the user name with --username"),
            };
            let password = match (password, password_stdin) {
                (Some(_), true) => bail!("login: --password and --password-stdin together"),
                (Some(p), false) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\n', '\r']).to_string()
                }
                (None, false) => bail!("login: give the password with --password-stdin"),
            };
            if password.is_empty() {
                bail!("login: empty password");
            }
            let creds = crate::registry::auth::Credentials { username, password };
            let opts = registry_args.options()?;
            crate::registry::login::login(&registry, &creds, &opts)?;
            println!("Login Succeeded");
        }
        Command::Logout { registry, authfile } => {
            let files = crate::registry::auth::AuthFiles::from_env(authfile);
            if !files.remove(&registry)? {
                bail!(
                    "not logged in to {registry} (no credentials in {})",
                    files.auth_json.display()
                );
            }
            println!("Removed login credentials for {registry}");
        }
        Command::Export {
            what,
            output,
            gzip,
            reference,
        } => {
            let opts = crate::export::ExportOptions {
                gzip,
                reference,
                progress: crate::progress::wanted(),
            };
            match crate::digest::normalize(&what) {
                Some(digest) => {
                    let blob = crate::export::export_layer(&store, &digest, &output, &opts)?;
                    println!("{}", blob.digest);
                }
                None => {
                    let desc = crate::export::export_image(&store, &what, &output, &opts)?;
                    println!("{}", desc.digest);
                }
            }
        }
        Command::Squash { image, name } => {
            let image = crate::squash::squash(&store, &image, &name, crate::progress::wanted())?;
            print_image_summary(&image);
        }
        Command::Ls { layers } => print!("{}", crate::inspect::list(&store, layers)?),
        Command::Inspect { what } => {
            let value = crate::inspect::inspect(&store, &what)?;
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Command::Rm { image } => crate::gc::remove_image(&store, &image)?,
        Command::Gc => {
            let report = crate::gc::gc(&store)?;
            for digest in &report.layers {
                println!("removed {digest}");
            }
            if report.staging > 0 {
                println!("removed {} leftover staging entries", report.staging);
            }
        }
        Command::Mount { image, dir } => crate::mount::mount(&store, &image, &dir)?,
        Command::Umount { dir } => crate::mount::umount(&dir)?,
        Command::Convert {
            to,
            userxattr,
            src,
            dst,
        } => {
            let form = match to {
                Form::Overlay => crate::copy::WhiteoutForm::Overlay { userxattr },
                Form::Aufs => crate::copy::WhiteoutForm::Aufs,
            };
            crate::convert::convert(&src, &dst, form)?;
        }
    }
    Ok(())
}

fn print_image_summary(image: &crate::store::Image) {
    println!("{}", image.name);
    for layer in &image.layers {
        println!("  {}", layer.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
