//! `unionfs`: mount and unmount union filesystems.

use std::process::ExitCode;

use clap::Parser;
use unionfs::cli::{Action, Cli};
use unionfs::mount;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let action = match cli.into_action() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("unionfs: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match action {
        Action::Umount { mountpoint, lazy } => mount::unmount(&mountpoint, lazy),
        Action::Stats { mountpoint, reset } => {
            unionfs::stats::query(&mountpoint, reset).map(|table| print!("{table}"))
        }
        Action::Mount { config, log_file } => (|| {
            mount::check_fuse_device()?;
            // Modes asked for by create/mkdir arrive already masked by the caller's umask.
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            if config.foreground {
                unionfs::init_logging(true);
                let session = mount::mount(&config)?;
                mount::serve(session, &config.mountpoint)
            } else {
                mount::daemonize(&config, log_file.as_deref())
            }
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unionfs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
