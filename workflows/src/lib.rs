//! Taskflow on Temporal: what must happen at a given time, kept by durable workflows so that
//! crashes of the server or of the worker never lose or repeat it.
//!
//! - [`deadline`]: `TaskManagementWorkflow`, one per task with a due date. It sleeps until
//!   what [`taskflow_proto::deadlines`] (the same pure decisions as the server's embedded
//!   scheduler) says is next — the reminder, then the escalation — and is signalled when the
//!   task changes.
//! - [`recurrence`]: `RecurringTaskWorkflow`, started by a recurrence rule's Temporal Schedule
//!   once per run.
//! - [`activities`]: what the workflows do outside themselves, each a call to the sync
//!   server's internal gRPC (`Tasks.AdvanceDeadline`, `Tasks.CreateTask`). The server decides
//!   and writes, idempotently, so a retried activity or a replayed workflow changes nothing.
//! - [`client`]: [`Workflows`], what the server uses to start and signal deadline workflows
//!   and to keep one Schedule per recurrence rule.
//! - [`worker`]: runs the workflows and activities on a thread of its own, inside the server
//!   process or in `taskflow-worker`.

pub mod activities;
pub mod client;
pub mod deadline;
pub mod recurrence;
pub mod worker;

pub use client::Workflows;
pub use worker::WorkerHandle;

use anyhow::Context;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

/// Where Temporal is, and which part of it is ours.
#[derive(Debug, Clone)]
pub struct TemporalConfig {
    /// `host:port` of the Temporal frontend (as the `temporal` CLI takes it), or a URL.
    pub address: String,
    pub namespace: String,
    /// The task queue the worker polls. It also starts every workflow and schedule id, so
    /// deployments sharing a namespace never touch each other's.
    pub task_queue: String,
}

impl TemporalConfig {
    fn url(&self) -> anyhow::Result<Url> {
        let address = if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        };
        Url::parse(&address)
            .with_context(|| format!("`{}` is not a Temporal address", self.address))
    }

    /// A client of the configured namespace.
    pub async fn connect(&self, identity: &str) -> anyhow::Result<Client> {
        let options = ConnectionOptions::new(self.url()?)
            .identity(identity.to_owned())
            .build();
        let connection = Connection::connect(options)
            .await
            .with_context(|| format!("connecting to Temporal at {}", self.address))?;
        Ok(Client::new(
            connection,
            ClientOptions::new(self.namespace.clone()).build(),
        )?)
    }
}

/// The sync server's internal gRPC address and the token its callers present.
#[derive(Clone)]
pub struct ServerAddress {
    /// e.g. `http://127.0.0.1:50051`.
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAddress")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}
