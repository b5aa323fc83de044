//! The consumer framework: every consumer sees every published event, in order, at least once.
//!
//! A [`Consumer`] handles one event at a time. [`handle`] retries a failing event with
//! exponential backoff, up to [`RetryPolicy::attempts`] tries; after that the event becomes a
//! dead letter (with the last failure's reason) and the consumer moves on. Progress is committed
//! only after an event is handled or dead-lettered, so a crash repeats events, never skips
//! them: consumers make handling an event twice harmless (they key what they do by event id).
//!
//! Two drivers feed consumers: [`run_local`] reads the outbox as the log (embedded mode: offsets
//! and dead letters in the database), and with Kafka each consumer is its own consumer group
//! on the events topic with a dead-letter topic (`crate::events::kafka`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use taskflow_proto::events::Envelope;
use tokio_util::sync::CancellationToken;

use super::Signals;
use super::relay::take_lease;
use crate::now_ms;
use crate::store::{DeadLetter, LoggedEvent, Store};

/// Something that acts on events.
pub trait Consumer: Send + Sync + std::fmt::Debug {
    /// Names its offsets and dead letters (and its Kafka consumer group): keep it stable.
    fn name(&self) -> &str;

    /// Acts on one event; an error (why) makes the framework try again later.
    fn handle(&self, event: Arc<Envelope>) -> BoxFuture<'static, Result<(), String>>;
}

/// How often a failing event is tried, and how long to wait between tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (after `attempt` failures).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.first_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// How handling one event ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    /// Given up: the last reason, after this many tries.
    Failed {
        reason: String,
        attempts: u32,
    },
}

/// Handles `payload` (a CloudEvents JSON object) with `consumer`, retrying as `policy` says.
/// An event that does not parse is given up at once: trying again cannot help.
pub async fn handle(
    consumer: &dyn Consumer,
    payload: &[u8],
    policy: &RetryPolicy,
    stop: &CancellationToken,
) -> Outcome {
    let event: Arc<Envelope> = match serde_json::from_slice(payload) {
        Ok(event) => Arc::new(event),
        Err(e) => {
            return Outcome::Failed {
                reason: format!("not a CloudEvents event of ours: {e}"),
                attempts: 1,
            };
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reason = match consumer.handle(event.clone()).await {
            Ok(()) => return Outcome::Handled,
            Err(reason) => reason,
        };
        if attempt >= policy.attempts || stop.is_cancelled() {
            return Outcome::Failed {
                reason,
                attempts: attempt,
            };
        }
        tracing::debug!(consumer = consumer.name(), event = %event.id, attempt, %reason, "retrying an event");
        tokio::select! {
            () = tokio::time::sleep(policy.backoff(attempt)) => {}
            // Not given up: the event is tried again after the restart.
            () = stop.cancelled() => return Outcome::Failed { reason, attempts: attempt },
        }
    }
}

/// Most events read per round.
const BATCH: usize = 200;
const POLL: Duration = Duration::from_millis(500);

/// Feeds `consumer` the events published to the outbox log, from its committed offset on,
/// until `stop` is cancelled. One node at a time runs each consumer.
pub async fn run_local(
    store: Store,
    consumer: Arc<dyn Consumer>,
    policy: RetryPolicy,
    signals: Signals,
    stop: CancellationToken,
) {
    let lease_name = format!("taskflow.consumer.{}", consumer.name());
    let Some(_lease) = take_lease(&store, &lease_name, &stop).await else {
        return;
    };
    let mut offset = loop {
        match store.consumer_offset(consumer.name()).await {
            Ok(offset) => break offset,
            Err(e) => {
                tracing::warn!(consumer = consumer.name(), error = %e, "reading an offset failed");
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    loop {
        // Registered before reading, so a publication between the read and the wait counts.
        let published = signals.published.notified();
        let events = match store.published_events(offset, BATCH).await {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(consumer = consumer.name(), error = %e, "reading events failed");
                Vec::new()
            }
        };
        if events.is_empty() {
            tokio::select! {
                () = published => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        for event in events {
            if stop.is_cancelled() {
                return;
            }
            match handle_logged(&store, consumer.as_ref(), &event, &policy, &stop).await {
                Some(()) => offset = event.seq,
                // The offset stays: the event is handled again after a restart.
                None => break,
            }
        }
    }
}

/// Handles one logged event and commits the consumer's progress past it; `None` when that
/// could not be committed (or the handling was cut short by `stop`).
async fn handle_logged(
    store: &Store,
    consumer: &dyn Consumer,
    event: &LoggedEvent,
    policy: &RetryPolicy,
    stop: &CancellationToken,
) -> Option<()> {
    let outcome = handle(consumer, event.event.payload.as_bytes(), policy, stop).await;
    let dead = match outcome {
        Outcome::Handled => None,
        Outcome::Failed { .. } if stop.is_cancelled() => return None,
        Outcome::Failed { reason, attempts } => {
            tracing::warn!(consumer = consumer.name(), event = %event.event.id, attempts, %reason, "an event is dead-lettered");
            Some(DeadLetter {
                consumer: consumer.name().to_owned(),
                event_id: event.event.id.clone(),
                payload: event.event.payload.clone(),
                reason,
                attempts,
                failed_at: now_ms(),
            })
        }
    };
    match store
        .commit_offset(consumer.name(), event.seq, dead.as_ref())
        .await
    {
        Ok(()) => Some(()),
        Err(e) => {
            tracing::warn!(consumer = consumer.name(), error = %e, "committing an offset failed");
            tokio::time::sleep(POLL).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let policy = RetryPolicy {
            attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        let waits: Vec<u128> = (1..=5).map(|a| policy.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }
}
