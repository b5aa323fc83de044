//! Server configuration: command-line flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::doc::DocConfig;

/// Taskflow sync server: automerge-repo compatible WebSocket sync over durable storage, with
/// accounts, workspaces and per-board access control.
#[derive(Debug, Clone, Parser)]
#[command(name = "taskflow-server", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "TASKFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the embedded SQLite database (used when DATABASE_URL is not set).
    #[arg(long, env = "TASKFLOW_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// postgres://… for PostgreSQL, or sqlite:… for an explicit SQLite file.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Largest WebSocket message accepted, in bytes.
    #[arg(long, env = "TASKFLOW_MAX_FRAME_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_frame_bytes: usize,

    /// Most documents one connection may open.
    #[arg(
        long,
        env = "TASKFLOW_MAX_DOCS_PER_CONNECTION",
        default_value_t = 10_000
    )]
    pub max_docs_per_connection: usize,

    /// Outgoing bytes queued per connection before a slow reader is disconnected.
    #[arg(long, env = "TASKFLOW_SEND_QUEUE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub send_queue_bytes: usize,

    /// How often the server pings each peer; a peer silent for two intervals is disconnected.
    #[arg(long, env = "TASKFLOW_KEEPALIVE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub keepalive: Duration,

    /// How long a document nobody has open stays in memory (e.g. 60s, 5m).
    #[arg(long, env = "TASKFLOW_EVICT_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub evict_after: Duration,

    /// How long an open document with no edits keeps its in-memory Automerge form (e.g. 30s).
    #[arg(long, env = "TASKFLOW_UNLOAD_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub unload_after: Duration,

    /// Compact a document's storage once this many change chunks sit beside its snapshot.
    #[arg(long, env = "TASKFLOW_COMPACT_AFTER_CHANGES", default_value_t = 256)]
    pub compact_after_changes: usize,

    /// Secret that signs access tokens (at least 32 bytes). Without it the server generates one
    /// and keeps it in its database, so restarts keep sessions; set it when several server
    /// nodes share a database.
    #[arg(long, env = "TASKFLOW_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// redis://… shared by every server node: login rate limits, the access-token blacklist,
    /// session states and membership changes for live connections. Without it all of that is
    /// kept in this process (and SQL), which is right for one node.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Address of the internal gRPC services (identity for other services and workers), e.g.
    /// 127.0.0.1:50051. Off unless set; needs --internal-token.
    #[arg(long, env = "TASKFLOW_GRPC_LISTEN", requires = "internal_token")]
    pub grpc_listen: Option<SocketAddr>,

    /// The token internal callers present (`authorization: Bearer …`), at least 32 bytes.
    #[arg(long, env = "TASKFLOW_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<Secret>,

    /// How long an access token lives (e.g. 15m). Clients refresh it with their refresh token;
    /// a sync connection whose token expires is closed with code 4001.
    #[arg(long, env = "TASKFLOW_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// Kafka bootstrap servers (host:port,…) that events are published to; needs a server built
    /// with the `kafka` feature. Without it the outbox feeds this server's consumers directly.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// The Kafka topic events go to (dead letters go to `<topic>.dlq`).
    #[arg(long, env = "TASKFLOW_EVENTS_TOPIC", default_value = "taskflow.events")]
    pub events_topic: String,

    /// How many times a consumer tries an event before it becomes a dead letter.
    #[arg(long, env = "TASKFLOW_EVENT_ATTEMPTS", default_value_t = 5)]
    pub event_attempts: u32,

    /// The wait before a consumer's second try at an event; it doubles with each try (to 30 s).
    #[arg(long, env = "TASKFLOW_EVENT_BACKOFF", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub event_backoff: Duration,

    /// How many times a webhook delivery is tried before it is marked failed.
    #[arg(long, env = "TASKFLOW_WEBHOOK_ATTEMPTS", default_value_t = 8)]
    pub webhook_attempts: u32,

    /// The wait before a webhook delivery's second try; it doubles with each try (to 1 h).
    #[arg(long, env = "TASKFLOW_WEBHOOK_BACKOFF", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_backoff: Duration,

    /// A subscription is disabled after this many failed tries in a row.
    #[arg(long, env = "TASKFLOW_WEBHOOK_DISABLE_AFTER", default_value_t = 20)]
    pub webhook_disable_after: u32,

    /// How long published events stay in the outbox.
    #[arg(long, env = "TASKFLOW_OUTBOX_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,

    /// smtp://host:port (plain), smtp://…?tls=required (STARTTLS) or smtps://user:password@host
    /// (TLS) of the server that sends notification and invitation emails. Without it no email
    /// is sent (in-app notifications work the same).
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// The sender of emails.
    #[arg(
        long,
        env = "TASKFLOW_EMAIL_FROM",
        default_value = "Taskflow <taskflow@localhost>"
    )]
    pub email_from: String,

    /// How many times an email is tried before it is marked failed.
    #[arg(long, env = "TASKFLOW_EMAIL_ATTEMPTS", default_value_t = 8)]
    pub email_attempts: u32,

    /// The wait before an email's second try; it doubles with each try (to 1 h).
    #[arg(long, env = "TASKFLOW_EMAIL_BACKOFF", default_value = "10s", value_parser = humantime::parse_duration)]
    pub email_backoff: Duration,

    /// The address people reach this server at, as emails name it (default: http:// and the
    /// listen address).
    #[arg(long, env = "TASKFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How long a node's claim to a user's notification sockets lasts in Redis unless renewed
    /// (it is renewed every third of this while the sockets are open).
    #[arg(long, env = "TASKFLOW_NOTIFICATION_ROUTE_TTL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub notification_route_ttl: Duration,

    /// How long before a task's due date its assignees are reminded, in workspaces that set no
    /// offset of their own (PATCH /api/v1/workspaces/{id}/settings).
    #[arg(long, env = "TASKFLOW_REMINDER_OFFSET", default_value = "24h", value_parser = humantime::parse_duration)]
    pub reminder_offset: Duration,

    /// host:port of a Temporal frontend: deadlines then run as Temporal workflows and
    /// recurrence rules as Temporal Schedules (needs a server built with the `temporal`
    /// feature). Without it the embedded scheduler (durable timers in the database) does the
    /// same.
    #[arg(long, env = "TEMPORAL_ADDRESS")]
    pub temporal_address: Option<String>,

    /// The Temporal namespace.
    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    pub temporal_namespace: String,

    /// The task queue of Taskflow's workflows; it also prefixes their workflow and Schedule
    /// ids, so deployments may share a namespace.
    #[arg(long, env = "TEMPORAL_TASK_QUEUE", default_value = "taskflow")]
    pub temporal_task_queue: String,

    /// Whether this process runs a Temporal worker (false: workers run as `taskflow-worker`).
    /// It calls this server's internal gRPC: on --grpc-listen when set, otherwise on a
    /// loopback port of its own.
    #[arg(long, env = "TASKFLOW_TEMPORAL_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub temporal_worker: bool,

    /// Log filter (tracing-subscriber EnvFilter syntax), e.g. info or taskflow_sync_server=debug.
    #[arg(long, env = "TASKFLOW_LOG", default_value = "info")]
    pub log: String,

    /// REST requests a client address earns back per second (shared by every node via Redis).
    #[arg(long, env = "TASKFLOW_API_RATE_PER_ADDRESS", default_value_t = 100)]
    pub api_rate_per_address: u32,

    /// REST requests a client address may make at once.
    #[arg(long, env = "TASKFLOW_API_BURST_PER_ADDRESS", default_value_t = 1000)]
    pub api_burst_per_address: u32,

    /// REST requests a signed-in user earns back per second.
    #[arg(long, env = "TASKFLOW_API_RATE_PER_USER", default_value_t = 50)]
    pub api_rate_per_user: u32,

    /// REST requests a signed-in user may make at once.
    #[arg(long, env = "TASKFLOW_API_BURST_PER_USER", default_value_t = 500)]
    pub api_burst_per_user: u32,

    /// Behind a proxy: take the client's address from the last `X-Forwarded-For` entry (the
    /// one the proxy saw) rather than from the socket.
    #[arg(long, env = "TASKFLOW_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    pub trust_forwarded_for: bool,

    /// How long a stopping server waits for its sockets to close and the outbox to drain, each.
    #[arg(long, env = "TASKFLOW_DRAIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// How log lines are written: `text`, or `json` (one object per line, for collectors).
    #[arg(long, env = "TASKFLOW_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

impl Config {
    /// Defaults for tests and embedding: loopback on an ephemeral port, data in `data_dir`.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Config::parse_from(["taskflow-server"]);
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.data_dir = data_dir.into();
        config.database_url = None;
        config
    }

    pub fn doc_config(&self) -> DocConfig {
        DocConfig {
            evict_after: self.evict_after,
            unload_after: self.unload_after,
            compact_after_changes: self.compact_after_changes,
            ..DocConfig::default()
        }
    }

    pub fn events_config(&self) -> crate::events::EventsConfig {
        crate::events::EventsConfig {
            kafka_brokers: self.kafka_brokers.clone(),
            topic: self.events_topic.clone(),
            retry: crate::events::consume::RetryPolicy {
                attempts: self.event_attempts.max(1),
                first_backoff: self.event_backoff,
                ..Default::default()
            },
            webhooks: crate::events::webhooks::WebhookPolicy {
                attempts: self.webhook_attempts.max(1),
                first_backoff: self.webhook_backoff,
                disable_after: self.webhook_disable_after.max(1),
            },
            retention: self.outbox_retention,
        }
    }

    /// How emails are sent, when an SMTP server is configured.
    pub fn mail_config(&self) -> Option<crate::notifications::mailer::MailConfig> {
        let smtp_url = self.smtp_url.clone()?;
        Some(crate::notifications::mailer::MailConfig {
            smtp_url,
            from: self.email_from.clone(),
            retry: crate::events::consume::RetryPolicy {
                attempts: self.email_attempts.max(1),
                first_backoff: self.email_backoff,
                max_backoff: Duration::from_secs(3600),
            },
        })
    }

    /// This server's address as people reach it.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_docs_per_connection: self.max_docs_per_connection,
            send_queue_bytes: self.send_queue_bytes,
            keepalive: self.keepalive,
        }
    }
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_docs_per_connection: usize,
    pub send_queue_bytes: usize,
    pub keepalive: Duration,
}

/// A secret from the command line or environment; never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 32 {
            return Err("a token secret must be at least 32 bytes".into());
        }
        Ok(Secret(s.to_owned()))
    }
}
