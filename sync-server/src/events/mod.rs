//! Domain events, from the merge that makes them to whoever consumes them.
//!
//! - [`derive`]: board events from a merge (the document actor writes them to the outbox in
//!   the transaction that stores the merged changes); other events are written beside the rows
//!   they describe (projects, users, invitations, memberships).
//! - [`relay`]: publishes the outbox, in order, to a [`relay::Sink`]: Kafka when
//!   `KAFKA_BROKERS` is set (feature `kafka`), otherwise the outbox itself is the log.
//! - [`consume`]: the consumer framework: each consumer handles every event at least once,
//!   with retries and backoff, and events it gives up on become dead letters.
//! - [`webhooks`]: the consumer that delivers events to integrations' URLs.

pub mod consume;
pub mod derive;
pub mod domain;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod relay;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Wakes the relay when events were written, and local consumers when events were published,
/// so neither waits for its next poll.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    pub written: Arc<Notify>,
    pub published: Arc<Notify>,
}

impl Signals {
    pub fn events_written(&self) {
        self.written.notify_one();
    }
}

/// How events leave the outbox and how consumers retry.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// Kafka bootstrap servers (`host:port,…`); `None` keeps events in process.
    pub kafka_brokers: Option<String>,
    pub topic: String,
    pub retry: consume::RetryPolicy,
    pub webhooks: webhooks::WebhookPolicy,
    /// How long published events stay in the outbox.
    pub retention: Duration,
}

impl EventsConfig {
    /// The dead-letter topic of the events topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
}
