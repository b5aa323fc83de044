//! Taskflow's sync server: automerge-repo compatible WebSocket sync over durable storage.
//!
//! - [`server`]: routes (`/healthz`, `/api/v1/sync`), shared state, graceful shutdown.
//! - [`connection`]: one WebSocket peer — handshake, decoding, limits, routing to documents.
//! - [`doc`]: the registry of document actors (one single writer per open document) and the
//!   sans-IO document state they drive.
//! - [`fanout`]: what one node's commits and presence tell the other nodes (Redis).
//! - [`link`]: the bounded way back from a document to a peer.
//! - [`store`]: durable storage, SQLite or PostgreSQL; the only module that writes SQL.
//! - [`access`]: workspace roles and the permission matrix (pure functions).
//! - [`auth`]: password hashing and access/refresh tokens (the identity issue builds on it).
//! - [`workspaces`]: the `/api/v1/workspaces` routes (workspaces and members).
//! - [`projects`]: the `/api/v1/projects` routes (boards of a workspace, with their documents).
//! - [`tasks`]: the `/api/v1/tasks` routes: tasks and comments for integrations, written
//!   through the board documents and read from their relational projection.
//! - [`events`]: domain events from merges and other writes: the outbox, its relay (to Kafka or
//!   in process), the consumer framework and outgoing webhooks.
//! - [`notifications`]: per-user notifications from the events: the inbox over REST, live
//!   pushes on the notification socket (routed across nodes through Redis), and email.
//! - [`deadlines`]: reminders before tasks are due and escalations when they are overdue
//!   (pure decisions; the embedded scheduler's durable timers in the database).
//! - [`recurrences`]: recurring tasks from cron rules per project (the embedded scheduler).
//! - `temporal` (feature `temporal`): deadlines and recurrences on Temporal instead, when
//!   `TEMPORAL_ADDRESS` is set; the workflows are in `taskflow-workflows`.
//! - [`grpc`]: the internal gRPC services (identity; tasks for the workflow workers).
//! - [`ratelimit`]: the REST API's limits per client address and per user (Redis-shared).
//! - [`resilience`]: circuit breakers around outbound dependencies.
//! - [`idempotency`]: `Idempotency-Key` on POSTs.
//! - [`cache`]: the project view cache (Redis or in process).
//! - [`nul_guard`]: requests carrying NUL characters are refused at the door.
//! - [`openapi`]: the OpenAPI document of the REST routes.
//! - [`timer`]: the embedded schedulers' wait for their next timer row.
//! - [`health`]: `/healthz` (alive) and `/readyz` (database, migrations, dependencies).
//! - [`telemetry`]: logs, OTLP traces and Prometheus metrics (`/metrics`).
//! - [`config`]: flags and environment.

pub mod access;
pub mod auth;
pub mod cache;
pub mod config;
pub mod connection;
pub mod deadlines;
pub mod doc;
pub mod events;
pub mod fanout;
pub mod grpc;
pub mod health;
pub mod idempotency;
pub mod link;
pub mod notifications;
pub mod nul_guard;
pub mod openapi;
pub mod projects;
pub mod ratelimit;
pub mod recurrences;
pub mod resilience;
pub mod server;
pub mod store;
pub mod tasks;
pub mod telemetry;
#[cfg(feature = "temporal")]
pub mod temporal;
pub mod timer;
pub mod workspaces;

pub use config::Config;
pub use server::Server;

/// Milliseconds since the Unix epoch: the server's one wall clock (stored times, expiries).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
