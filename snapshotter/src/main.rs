//! `unionfs-snapshotter SOCKET ROOT`: serves containerd's snapshots API on SOCKET, keeping
//! snapshots under ROOT. See snapshotter/README.md for containerd's configuration.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use containerd_snapshots::tonic::transport::Server;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use snapshotter::{service::Service, Store};

/// A containerd proxy snapshotter whose snapshots are unionfs mounts (fuse3.unionfs)
#[derive(Parser, Debug)]
#[command(name = "unionfs-snapshotter", version)]
struct Cli {
    /// The unix socket to serve containerd's snapshots API on (replaced if it exists)
    socket: PathBuf,
    /// The directory that holds the snapshots and their metadata
    root: PathBuf,
    /// Do not try a union mount before serving
    #[arg(long)]
    no_check: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let store = Store::open(&cli.root)
        .with_context(|| format!("opening the snapshotter root {}", cli.root.display()))?;
    if !cli.no_check {
        snapshotter::check::union_mount_works(store.root())
            .map_err(|e| anyhow::anyhow!("unionfs mounts cannot be made here: {e}"))?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(cli.socket, Arc::new(store)))
}

async fn serve(socket: PathBuf, store: Arc<Store>) -> anyhow::Result<()> {
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing the old socket {}", socket.display()))
        }
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), root = %store.root().display(), "serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    let result = Server::builder()
        .add_service(containerd_snapshots::server(Arc::new(Service::new(store))))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving the snapshots API");
    let _ = std::fs::remove_file(&socket);
    result
}
