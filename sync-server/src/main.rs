//! `taskflow-server`: runs the sync server until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use taskflow_sync_server::{Config, Server};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Kept to the end: dropping it flushes the traces not yet exported.
    let _telemetry = taskflow_sync_server::telemetry::init(&config.log, config.log_format)?;

    let server = Server::open(&config).await.context("opening storage")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        backend = server.store().backend(),
        "taskflow sync server ready"
    );
    if let Some(grpc) = server.grpc_addr() {
        tracing::info!(%grpc, "internal gRPC services ready");
    }
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("listening on {}", listener.local_addr()?);
    server.serve(listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
