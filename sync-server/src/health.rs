//! Health for the deployment's probes: `GET /healthz` (the process answers) and `GET /readyz`
//! (it can do its work: the database answers with every migration applied, and each configured
//! dependency answers).
//!
//! Readiness takes a node out of the load balancer, never restarts it, so a dependency that
//! only degrades a feature (Kafka delays events, Temporal delays deadlines) still counts: an
//! operator wants to see it here. Each check is bounded by [`CHECK_TIMEOUT`], so a hung
//! dependency makes `/readyz` answer 503 rather than hang the probe.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::server::Shared;
use crate::store::Store;

/// Longest a readiness check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The outbound dependencies a node was configured with, to be checked by `/readyz`.
#[derive(Clone, Default)]
pub struct Dependencies {
    pub redis: Option<ConnectionManager>,
    /// `host:port` list (`KAFKA_BROKERS`): ready when one of them accepts a connection.
    pub kafka: Option<String>,
    /// `host:port` of Temporal's frontend.
    pub temporal: Option<String>,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies")
            .field("redis", &self.redis.is_some())
            .field("kafka", &self.kafka)
            .field("temporal", &self.temporal)
            .finish()
    }
}

/// One check's outcome, as `/readyz` reports it.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
}

/// `GET /healthz`: answers while the process serves requests.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 when every check passes, else 503 as a problem; either lists each check.
pub async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let mut checks = check_all(shared.identity.store(), &shared.dependencies).await;
    if shared.shutdown.is_cancelled() {
        checks.push(Check {
            name: "serving",
            ok: false,
            error: Some("stopping: draining sockets and the outbox".into()),
        });
    }
    if checks.iter().all(|c| c.ok) {
        let body = Readiness {
            status: "ready",
            checks,
        };
        return (StatusCode::OK, Json(body)).into_response();
    }
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    let body = NotReady {
        r#type: "/problems/not-ready",
        title: "Not ready",
        status: 503,
        detail: format!("failing: {}", failing.join(", ")),
        checks,
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(body),
    )
        .into_response()
}

/// A failed readiness check as a problem (RFC 9457) with the checks as an extension member.
#[derive(Debug, Serialize)]
struct NotReady {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    checks: Vec<Check>,
}

/// Runs every check, concurrently.
pub async fn check_all(store: &Store, dependencies: &Dependencies) -> Vec<Check> {
    let database = check("database", database(store));
    let redis = async {
        match &dependencies.redis {
            Some(conn) => Some(check("redis", redis_ping(conn.clone())).await),
            None => None,
        }
    };
    let kafka = async {
        match &dependencies.kafka {
            Some(brokers) => Some(check("kafka", reachable(brokers.clone())).await),
            None => None,
        }
    };
    let temporal = async {
        match &dependencies.temporal {
            Some(address) => Some(check("temporal", reachable(address.clone())).await),
            None => None,
        }
    };
    let (database, redis, kafka, temporal) = tokio::join!(database, redis, kafka, temporal);
    std::iter::once(database)
        .chain(redis)
        .chain(kafka)
        .chain(temporal)
        .collect()
}

async fn check(name: &'static str, probe: impl Future<Output = Result<(), String>>) -> Check {
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    if outcome.is_err() {
        tracing::warn!(dependency = name, error = ?outcome, "readiness check failed");
    }
    Check {
        name,
        ok: outcome.is_ok(),
        error: outcome.err(),
    }
}

async fn database(store: &Store) -> Result<(), String> {
    match store.pending_migrations().await {
        Ok(0) => Ok(()),
        Ok(n) => Err(format!("{n} migrations not applied")),
        Err(e) => Err(e.to_string()),
    }
}

async fn redis_ping(mut conn: ConnectionManager) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether one of the comma-separated `host:port` addresses accepts a TCP connection.
async fn reachable(addresses: String) -> Result<(), String> {
    let mut last = String::from("no address given");
    for address in addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let address = address
            .strip_prefix("http://")
            .or_else(|| address.strip_prefix("https://"))
            .unwrap_or(address);
        match tokio::net::TcpStream::connect(address).await {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}
