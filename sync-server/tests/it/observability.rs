//! What operators get: Prometheus metrics under the names the Grafana dashboard queries,
//! request ids, JSON logs carrying the request's and connection's ids, traces exported over
//! OTLP to a real OTLP/gRPC collector endpoint, and the REST API's rate limits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use reqwest::StatusCode;
use serde_json::{Value, json};
use taskflow_sync_server::telemetry;

use crate::support::{
    Backend, ServerProcess, TestDb, TestServer, add_task, board, eventually, free_addr,
};

async fn scrape(addr: SocketAddr) -> String {
    let answer = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/plain")
    );
    answer.text().await.expect("body")
}

/// The value of the series `name{labels…}` (labels in any order, others ignored).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_server_does_under_the_dashboards_names() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, _) = ann.project("Watched").await.expect("project");
    ann.post(
        "/api/v1/tasks",
        json!({ "projectId": project, "title": "Counted" }),
    )
    .await
    .expect("task");
    let mut peer = server.peer("ann").await.expect("join");
    let id = peer.create(board("Synced", 1)).await.expect("create");
    peer.until_server_has(id).await.expect("stored");
    peer.edit(id, |d| add_task(d, "one more"))
        .await
        .expect("edit");
    peer.until_server_has(id).await.expect("stored");

    let text = scrape(server.addr).await;
    // Every name but the two that need Redis (fan-out) or a breaker of a whole dependency.
    for name in telemetry::EXPORTED {
        if [telemetry::FANOUT_DELAY_SECONDS, telemetry::CIRCUIT_OPEN].contains(name) {
            continue;
        }
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} is not exported:\n{text}"
        );
    }
    assert!(sample(&text, telemetry::CONNECTIONS, &[]).expect("connections") >= 1.0);
    assert!(sample(&text, telemetry::OPEN_DOCUMENTS, &[]).expect("documents") >= 1.0);
    for direction in ["in", "out"] {
        let messages = sample(&text, telemetry::SYNC_MESSAGES, &[("direction", direction)]);
        assert!(messages.expect("messages") >= 1.0, "{direction}");
        let bytes = sample(&text, telemetry::SYNC_BYTES, &[("direction", direction)]);
        assert!(bytes.expect("bytes") > 0.0, "{direction}");
    }
    let created = sample(
        &text,
        telemetry::HTTP_REQUESTS,
        &[
            ("route", "/api/v1/tasks"),
            ("method", "POST"),
            ("status", "201"),
        ],
    );
    assert!(created.expect("the task's POST, by route") >= 1.0);
    for histogram in [telemetry::PERSIST_SECONDS, telemetry::MERGE_SECONDS] {
        let count = sample(&text, &format!("{histogram}_count"), &[]);
        assert!(count.expect("observed") >= 2.0, "{histogram}");
        assert!(text.contains(&format!("{histogram}_bucket{{le=\"0.005\"}}")));
    }
    assert_eq!(
        sample(
            &text,
            telemetry::DEPENDENCY_ERRORS,
            &[("dependency", "kafka")]
        ),
        Some(0.0),
        "series start at zero"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id_the_callers_own_when_given() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let mine = http
        .get(format!("http://{}/healthz", server.addr))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("healthz");
    assert_eq!(mine.headers()["x-request-id"], "trace-me-42");
    let fresh = http
        .get(format!("http://{}/no/such/route", server.addr))
        .send()
        .await
        .expect("404");
    assert_eq!(fresh.status(), StatusCode::NOT_FOUND);
    let id = fresh.headers()["x-request-id"].to_str().expect("id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_user_and_connection() {
    let db = TestDb::new(Backend::Sqlite).await;
    let node = ServerProcess::start_with_env(
        &db,
        &["--log-format", "json"],
        &[("TASKFLOW_LOG", "info,taskflow_sync_server=debug")],
    )
    .await;
    let account = &node.account;
    account
        .request(reqwest::Method::GET, "/api/v1/auth/me")
        .header("x-request-id", "logged-request")
        .send()
        .await
        .expect("me");
    let mut peer = node.peer("ann").await.expect("join");
    let id = peer.create(board("Logged", 1)).await.expect("create");
    peer.until_server_has(id).await.expect("stored");

    let lines = eventually(
        "the request's log line",
        Duration::from_millis(100),
        async || node.log(),
        |log| log.contains("logged-request"),
    )
    .await;
    let records: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = records
        .iter()
        .find(|r| r["span"]["request_id"] == "logged-request")
        .expect("a line in the request's span");
    assert_eq!(request["span"]["route"], "/api/v1/auth/me");
    assert_eq!(request["span"]["user"], json!(account.user_id));
    assert!(request["level"].is_string() && request["timestamp"].is_string());
    assert!(
        records
            .iter()
            .any(|r| r["span"]["name"] == "sync_connection"
                && r["span"]["user"] == json!(account.user_id)
                && r["span"]["conn"].is_number()),
        "a line in the socket's span"
    );
    node.kill9().await;
}

/// The spans an OTLP collector received: name → attributes (string values).
type Received = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

#[derive(Default)]
struct Collector {
    spans: Received,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .filter_map(|kv| {
                            let value = match kv.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => s.clone(),
                                AnyValue::IntValue(i) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            Some((kv.key.clone(), value))
                        })
                        .collect();
                    spans.push((span.name, attributes));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_reach_an_otlp_collector_from_request_to_transaction_and_relay() {
    let addr = free_addr();
    let collector = Collector::default();
    let received = collector.spans.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve(addr),
    );
    let db = TestDb::new(Backend::Sqlite).await;
    let endpoint = format!("http://{addr}");
    let node = ServerProcess::start_with_env(
        &db,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("TASKFLOW_LOG", "info"),
        ],
    )
    .await;
    let account = &node.account;
    let (project, _) = account.project("Traced").await.expect("project");
    account
        .post(
            "/api/v1/tasks",
            json!({ "projectId": project, "title": "Followed" }),
        )
        .await
        .expect("task");

    let names = eventually(
        "the spans of a REST write",
        Duration::from_millis(100),
        async || {
            received
                .lock()
                .expect("lock")
                .iter()
                .map(|(name, _)| name.clone())
                .collect::<BTreeSet<_>>()
        },
        |names| {
            ["http", "batch", "persist", "relay"]
                .iter()
                .all(|n| names.contains(*n))
        },
    )
    .await;
    assert!(
        names.iter().all(|n| !n.starts_with("load")),
        "only Taskflow's spans are exported: {names:?}"
    );
    let spans = received.lock().expect("lock").clone();
    let write = spans
        .iter()
        .find(|(name, attrs)| {
            name == "http" && attrs.get("route").map(String::as_str) == Some("/api/v1/tasks")
        })
        .expect("the POST's span");
    assert_eq!(write.1.get("method").map(String::as_str), Some("POST"));
    assert_eq!(write.1.get("user"), Some(&account.user_id));
    assert!(write.1.contains_key("request_id"));
    node.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_limits_each_user_and_address() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.api_rate_per_user = 1;
    config.api_burst_per_user = 5;
    let server = TestServer::start(config).await;
    let ann = &server.account;
    let me = || ann.request(reqwest::Method::GET, "/api/v1/auth/me").send();
    // The account's set-up spent some of the burst; the rest goes, then 429.
    let mut refused = None;
    for _ in 0..10 {
        let answer = me().await.expect("me");
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let refused = refused.expect("over the limit");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // Another user is not held back, nor are health probes.
    let bob = taskflow_testkit::Account::register(server.addr, "Bob")
        .await
        .expect("register");
    assert_eq!(
        bob.request(reqwest::Method::GET, "/api/v1/auth/me")
            .send()
            .await
            .expect("me")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", server.addr))
            .await
            .expect("healthz")
            .status(),
        StatusCode::OK
    );
    server.stop().await;
}
