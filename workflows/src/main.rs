//! `taskflow-worker`: Taskflow's Temporal worker as a process of its own, for deployments that
//! run workers apart from the sync servers (start the servers with
//! `TASKFLOW_TEMPORAL_WORKER=false`).

use clap::Parser;
use taskflow_workflows::{ServerAddress, TemporalConfig, worker};

#[derive(Debug, Parser)]
#[command(name = "taskflow-worker", version, about)]
struct Args {
    /// host:port of the Temporal frontend.
    #[arg(long, env = "TEMPORAL_ADDRESS")]
    temporal_address: String,

    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    temporal_namespace: String,

    /// The task queue, the same as the servers'.
    #[arg(long, env = "TEMPORAL_TASK_QUEUE", default_value = "taskflow")]
    temporal_task_queue: String,

    /// The sync server's internal gRPC URL, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "TASKFLOW_GRPC_URL")]
    server_grpc: String,

    /// The deployment's internal token.
    #[arg(long, env = "TASKFLOW_INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: String,

    /// Log filter (tracing-subscriber EnvFilter syntax).
    #[arg(long, env = "TASKFLOW_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .init();
    let temporal = TemporalConfig {
        address: args.temporal_address,
        namespace: args.temporal_namespace,
        task_queue: args.temporal_task_queue,
    };
    let server = ServerAddress {
        url: args.server_grpc,
        token: args.internal_token,
    };
    let task_queue = temporal.task_queue.clone();
    let worker = worker::start(temporal, server).await?;
    tracing::info!(%task_queue, "polling");
    tokio::signal::ctrl_c().await?;
    tracing::info!("stopping");
    worker.stop().await
}
