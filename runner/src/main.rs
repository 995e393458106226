//! `runner`: run containers on a unionfs root.
#![forbid(unsafe_code)]

use clap::Parser as _;
use runner::cli::{Cli, Command};

fn main() {
    // Single-threaded on purpose (the clone copies one thread): no logging thread, plain stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUNNER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    // The inner runner of a rootless run makes its user namespace before anything else.
    layer_tool::userns::child_setup();
    runner::exeseal::init();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if runner::oci::cli::is_oci_command_line(&args) {
        let cli = match runner::oci::cli::OciCli::try_parse_from(&args) {
            Ok(cli) => cli,
            Err(e) if !e.use_stderr() => e.exit(),
            Err(e) => {
                let _ = e.print();
                std::process::exit(2);
            }
        };
        std::process::exit(runner::oci::commands::main(cli));
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let _ = e.print();
            // docker's code for a usage error of the runtime itself.
            std::process::exit(125);
        }
    };
    // A user without root: `run`, `rm` and `commit` run again inside a user namespace of the
    // user's own (where the container's files, owned by subordinate ids, are reachable).
    let in_userns = || runner::rootless::enter();
    let result = match cli.command {
        Command::Run(args) => match in_userns() {
            Ok(Some(code)) => Ok(code),
            Ok(None) => runner::spec::RunSpec::from_args(*args)
                .and_then(|spec| runner::exeseal::ensure_sealed().map(|()| spec))
                .and_then(runner::run::run),
            Err(e) => Err(e),
        },
        Command::Ps => runner::manage::ps().map(|()| 0),
        Command::Rm { names, force } => match in_userns() {
            Ok(Some(code)) => Ok(code),
            Ok(None) => names
                .iter()
                .try_for_each(|n| runner::manage::rm(n, force))
                .map(|()| 0),
            Err(e) => Err(e),
        },
        Command::Commit { container, image } => match in_userns() {
            Ok(Some(code)) => Ok(code),
            Ok(None) => runner::manage::commit(&container, &image).map(|()| 0),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("runner: {e:#}");
            // docker's code for an error of the runtime itself, before the command ran.
            std::process::exit(125);
        }
    }
}
