//! Prometheus metrics: the recorder, the names the server exports, and `GET /metrics`.
//!
//! Code records through the `metrics` crate's macros where things happen; this module installs
//! one process-wide Prometheus recorder (several servers in one process, as in tests, share it)
//! and renders it. Gauges that are a reading of state (connections, open documents, the
//! outbox backlog) are set when `/metrics` is scraped, so they cost nothing in between.
//! `deploy/grafana/dashboards/taskflow.json` queries these names; a test checks it names no
//! other.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::server::Shared;

/// Open sync sockets.
pub const CONNECTIONS: &str = "taskflow_connections";
/// Documents held in memory by their actors.
pub const OPEN_DOCUMENTS: &str = "taskflow_open_documents";
/// Sync protocol messages, `direction` = `in` | `out`.
pub const SYNC_MESSAGES: &str = "taskflow_sync_messages_total";
/// Bytes of sync protocol frames, `direction` = `in` | `out`.
pub const SYNC_BYTES: &str = "taskflow_sync_bytes_total";
/// Applying one batch of commands to a document.
pub const MERGE_SECONDS: &str = "taskflow_merge_duration_seconds";
/// The store transaction of one batch (changes, projection, outbox).
pub const PERSIST_SECONDS: &str = "taskflow_persist_duration_seconds";
/// Events in the outbox not yet published.
pub const OUTBOX_BACKLOG: &str = "taskflow_outbox_backlog";
/// Age of the oldest unpublished event.
pub const RELAY_LAG_SECONDS: &str = "taskflow_relay_lag_seconds";
/// Failed calls to an outbound dependency, `dependency` = `database` | `redis` | `kafka` |
/// `temporal` | `smtp` | `webhook`.
pub const DEPENDENCY_ERRORS: &str = "taskflow_dependency_errors_total";
/// 1 while a dependency's circuit breaker is open (calls fail fast), else 0.
pub const CIRCUIT_OPEN: &str = "taskflow_circuit_open";
/// HTTP requests by `method`, `route` (the route pattern, not the path) and `status`.
pub const HTTP_REQUESTS: &str = "taskflow_http_requests_total";
/// HTTP request durations by `method` and `route`.
pub const HTTP_SECONDS: &str = "taskflow_http_request_duration_seconds";
/// Cross-node document notices over Redis, `direction` = `in` | `out`.
pub const FANOUT_MESSAGES: &str = "taskflow_fanout_messages_total";
/// From a commit on one node to its notice arriving on another.
pub const FANOUT_DELAY_SECONDS: &str = "taskflow_fanout_delay_seconds";

/// Every name above, as exported (histograms add `_bucket`, `_sum` and `_count`).
pub const EXPORTED: &[&str] = &[
    CONNECTIONS,
    OPEN_DOCUMENTS,
    SYNC_MESSAGES,
    SYNC_BYTES,
    MERGE_SECONDS,
    PERSIST_SECONDS,
    OUTBOX_BACKLOG,
    RELAY_LAG_SECONDS,
    DEPENDENCY_ERRORS,
    CIRCUIT_OPEN,
    HTTP_REQUESTS,
    HTTP_SECONDS,
    FANOUT_MESSAGES,
    FANOUT_DELAY_SECONDS,
];

/// Buckets for latencies from a fraction of a millisecond to tens of seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder installed first (an embedding program's) keeps the macros; this
        // one then renders only what is set here directly.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows less");
        }
        describe();
        zero();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open sync sockets");
    describe_gauge!(OPEN_DOCUMENTS, "Documents held in memory");
    describe_counter!(SYNC_MESSAGES, "Sync protocol messages");
    describe_counter!(SYNC_BYTES, Unit::Bytes, "Bytes of sync protocol frames");
    describe_histogram!(
        MERGE_SECONDS,
        Unit::Seconds,
        "Applying one batch to a document"
    );
    describe_histogram!(
        PERSIST_SECONDS,
        Unit::Seconds,
        "Storing one batch (changes, projection, outbox) in one transaction"
    );
    describe_gauge!(OUTBOX_BACKLOG, "Events not yet published");
    describe_gauge!(
        RELAY_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest unpublished event"
    );
    describe_counter!(DEPENDENCY_ERRORS, "Failed calls to an outbound dependency");
    describe_gauge!(CIRCUIT_OPEN, "1 while a dependency's circuit is open");
    describe_counter!(HTTP_REQUESTS, "HTTP requests");
    describe_histogram!(HTTP_SECONDS, Unit::Seconds, "HTTP request durations");
    describe_counter!(FANOUT_MESSAGES, "Cross-node document notices");
    describe_histogram!(
        FANOUT_DELAY_SECONDS,
        Unit::Seconds,
        "From a commit on one node to its notice on another"
    );
}

/// Every labelled series starts at zero, so a dashboard shows 0 rather than "no data" until
/// the first error, and `rate()` sees the first increment.
fn zero() {
    for dependency in DEPENDENCIES {
        metrics::counter!(DEPENDENCY_ERRORS, "dependency" => *dependency).absolute(0);
    }
    for direction in ["in", "out"] {
        metrics::counter!(SYNC_MESSAGES, "direction" => direction).absolute(0);
        metrics::counter!(SYNC_BYTES, "direction" => direction).absolute(0);
        metrics::counter!(FANOUT_MESSAGES, "direction" => direction).absolute(0);
    }
}

/// The outbound dependencies errors are counted for.
pub const DEPENDENCIES: &[&str] = &["database", "redis", "kafka", "temporal", "smtp", "webhook"];

/// Counts a failed call to `dependency`.
pub fn dependency_error(dependency: &'static str) {
    metrics::counter!(DEPENDENCY_ERRORS, "dependency" => dependency).increment(1);
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(shared): State<std::sync::Arc<Shared>>) -> Response {
    let handle = handle();
    metrics::gauge!(CONNECTIONS).set(shared.connection_count() as f64);
    metrics::gauge!(OPEN_DOCUMENTS).set(shared.registry.open_documents() as f64);
    match shared
        .identity
        .store()
        .outbox_backlog(crate::now_ms())
        .await
    {
        Ok((backlog, lag_ms)) => {
            metrics::gauge!(OUTBOX_BACKLOG).set(backlog as f64);
            metrics::gauge!(RELAY_LAG_SECONDS).set(lag_ms as f64 / 1000.0);
        }
        Err(e) => {
            dependency_error("database");
            tracing::warn!(error = %e, "reading the outbox backlog for /metrics failed");
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
