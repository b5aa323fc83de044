//! The outbox relay: publishes pending events, oldest first, and marks what its sink took.
//!
//! One relay runs at a time among the nodes sharing a database (a [`Lease`]). It sends a batch
//! to the sink and marks published only the leading events the sink confirmed; whatever
//! followed a failure is sent again on the next round, so delivery is at-least-once and events
//! with one key never overtake each other. While the sink is down the outbox grows and
//! everything else carries on; the relay retries with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Signals;
use crate::now_ms;
use crate::store::{Lease, LoggedEvent, Store};

/// Most events read and sent per round.
const BATCH: usize = 500;
/// How often the relay looks for events when nothing woke it (writes by other nodes).
const POLL: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often published events past their retention are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Where the relay publishes.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Publishes `events` in order. Answers how many leading events are durably published
    /// (all of them on success), and why the rest are not.
    fn publish<'a>(&'a self, events: &'a [LoggedEvent]) -> BoxFuture<'a, (usize, Option<String>)>;
}

/// In-process delivery: the outbox is the log local consumers read, so publishing an event is
/// numbering it.
#[derive(Debug)]
pub struct LocalLog;

impl Sink for LocalLog {
    fn publish<'a>(&'a self, events: &'a [LoggedEvent]) -> BoxFuture<'a, (usize, Option<String>)> {
        Box::pin(async move { (events.len(), None) })
    }
}

/// Runs the relay until `stop` is cancelled, then drains: publishes what the outbox still
/// holds, for at most `drain`.
pub async fn run(
    store: Store,
    sink: Arc<dyn Sink>,
    signals: Signals,
    retention: Duration,
    drain: Duration,
    stop: CancellationToken,
) {
    let Some(mut lease) = take_lease(&store, "taskflow.relay", &stop).await else {
        return;
    };
    let mut backoff = FIRST_BACKOFF;
    let mut last_prune = tokio::time::Instant::now();
    let mut drain_until = None;
    loop {
        if stop.is_cancelled() {
            let until = *drain_until.get_or_insert_with(|| tokio::time::Instant::now() + drain);
            if tokio::time::Instant::now() >= until {
                tracing::warn!(
                    "stopping with events left in the outbox; they go out after a restart"
                );
                return;
            }
        }
        let pending = match store.pending_events(BATCH).await {
            Ok(pending) => pending,
            Err(e) => {
                crate::telemetry::dependency_error("database");
                tracing::warn!(error = %e, "reading the outbox failed");
                if drain_until.is_some() {
                    return;
                }
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if pending.is_empty() {
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                prune(&store, retention).await;
                if !lease.holds().await {
                    tracing::warn!("the relay lost its lease; taking it again");
                    match take_lease(&store, "taskflow.relay", &stop).await {
                        Some(again) => lease = again,
                        None => return,
                    }
                }
            }
            tokio::select! {
                () = signals.written.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        let publishing = sink
            .publish(&pending)
            .instrument(tracing::info_span!("relay", events = pending.len()));
        tokio::pin!(publishing);
        let published = match drain_until {
            Some(_) => None,
            None => tokio::select! {
                published = &mut publishing => Some(published),
                () = stop.cancelled() => {
                    // Stopping mid-send: the send goes on (dropping it would send its events
                    // again) within the drain's bound.
                    drain_until = Some(tokio::time::Instant::now() + drain);
                    None
                }
            },
        };
        let (sent, failure) = match published {
            Some(published) => published,
            None => {
                let until = drain_until.unwrap_or_else(tokio::time::Instant::now);
                match tokio::time::timeout_at(until, &mut publishing).await {
                    Ok(published) => published,
                    Err(_) => {
                        tracing::warn!(
                            "stopping with events left in the outbox; they go out after a restart"
                        );
                        return;
                    }
                }
            }
        };
        if sent > 0 {
            let seqs: Vec<i64> = pending[..sent].iter().map(|e| e.seq).collect();
            if let Err(e) = store.mark_published(&seqs, now_ms()).await {
                // They are published; the next round publishes them again (same ids).
                tracing::warn!(error = %e, "marking events published failed");
            } else {
                signals.published.notify_waiters();
            }
        }
        match failure {
            None => backoff = FIRST_BACKOFF,
            Some(why) => {
                if drain_until.is_some() {
                    tracing::warn!(error = %why, "stopping with events left in the outbox");
                    return;
                }
                tracing::warn!(
                    published = sent,
                    waiting = pending.len() - sent,
                    error = %why,
                    "publishing events failed; retrying"
                );
                pause(&stop, backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits for the lease named `name` (another node may hold it), or `None` once stopped.
pub(crate) async fn take_lease(
    store: &Store,
    name: &str,
    stop: &CancellationToken,
) -> Option<Lease> {
    loop {
        match store.try_lease(name).await {
            Ok(Some(lease)) => return Some(lease),
            Ok(None) => {}
            Err(e) => tracing::warn!(lease = name, error = %e, "taking a lease failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return None,
        }
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
}

async fn prune(store: &Store, retention: Duration) {
    let before = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    match store.prune_published(before).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(events = n, "pruned published events"),
        Err(e) => tracing::warn!(error = %e, "pruning the outbox failed"),
    }
}
