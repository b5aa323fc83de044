//! What operators see: logs (text or JSON, through `tracing`), traces (exported over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set) and Prometheus metrics ([`metrics`], `GET /metrics`).
//!
//! Spans carry the ids that tie a line to its cause: `request_id`, `route` and `user` on an
//! HTTP request, `conn` and `user` on a sync connection, `document` on a document's work. A
//! socket message's span runs through the document actor's merge and the store's transaction;
//! the relay's publishing has a span of its own.

pub mod http;
pub mod metrics;

pub use metrics::{
    CIRCUIT_OPEN, CONNECTIONS, DEPENDENCY_ERRORS, EXPORTED, FANOUT_DELAY_SECONDS, FANOUT_MESSAGES,
    HTTP_REQUESTS, HTTP_SECONDS, MERGE_SECONDS, OPEN_DOCUMENTS, OUTBOX_BACKLOG, PERSIST_SECONDS,
    RELAY_LAG_SECONDS, SYNC_BYTES, SYNC_MESSAGES, dependency_error,
};

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span's fields (for log collectors).
    Json,
}

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
#[derive(Debug)]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the process's logging and, with `OTEL_EXPORTER_OTLP_ENDPOINT` set, trace export
/// over OTLP/gRPC (service name from `OTEL_SERVICE_NAME`, else `taskflow-server`). Logs go to
/// stderr: stdout carries only the "listening on" line scripts read. Call inside the runtime.
pub fn init(filter: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_new(filter).context("invalid --log filter")?;
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty());
    let (traces, provider) = match endpoint {
        Some(endpoint) => {
            let provider = tracer_provider(&endpoint)?;
            let tracer = provider.tracer("taskflow-server");
            // Taskflow's own spans: its dependencies' (automerge's, per column loaded) would
            // drown them and cost an export each.
            let ours =
                tracing_subscriber::filter::filter_fn(|meta| meta.target().starts_with("taskflow"));
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(ours);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .context("installing the log subscriber")?;
    Ok(Telemetry { traces: provider })
}

fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .with_context(|| format!("setting up trace export to {endpoint}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "taskflow-server".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
