//! Outgoing webhooks against a real HTTP receiver on loopback that checks each signature.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use taskflow_testkit::Account;

use crate::support::{Backend, ServerProcess, TestDb, TestServer, on_both_backends};

on_both_backends!(
    deliveries_are_signed_retried_and_logged,
    a_subscription_that_keeps_failing_is_disabled,
    a_server_killed_mid_delivery_loses_no_event,
);

const SECRET: &str = "a-receivers-secret-0123";

/// What the receiver got with a valid signature: (event type, event id, body).
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

#[derive(Clone)]
struct Receiver {
    received: Received,
    /// Answers 500 to this many tries of each event of this type before accepting it.
    refuse: Arc<Mutex<HashMap<String, u32>>>,
    bad_signatures: Arc<Mutex<u32>>,
}

/// Checks `t=…,v1=…` against HMAC-SHA256 of "t.body" under [`SECRET`].
fn signed(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers
        .get("taskflow-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = header.split(',');
    let (Some(t), Some(v1)) = (
        parts.next().and_then(|p| p.strip_prefix("t=")),
        parts.next().and_then(|p| p.strip_prefix("v1=")),
    ) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !signed(&headers, &body) {
        *r.bad_signatures.lock().expect("lock") += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).expect("JSON");
    let kind = event["type"].as_str().expect("type").to_owned();
    if let Some(left) = r.refuse.lock().expect("lock").get_mut(&kind)
        && *left > 0
    {
        *left -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = event["id"].as_str().expect("id").to_owned();
    assert_eq!(
        headers
            .get("taskflow-event-id")
            .and_then(|v| v.to_str().ok()),
        Some(id.as_str())
    );
    r.received.lock().expect("lock").push((kind, id, event));
    StatusCode::NO_CONTENT
}

async fn start_receiver(refuse: HashMap<String, u32>) -> (SocketAddr, Receiver) {
    let receiver = Receiver {
        received: Received::default(),
        refuse: Arc::new(Mutex::new(refuse)),
        bad_signatures: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, receiver)
}

async fn call(
    account: &Account,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = account.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deliveries_are_signed_retried_and_logged(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.webhook_backoff = Duration::from_millis(50);
    let server = TestServer::start(config).await;
    let ann = &server.account;
    let (addr, receiver) = start_receiver(HashMap::from([("task.created".into(), 2)])).await;
    let hooks = format!("/api/v1/workspaces/{}/webhooks", ann.workspace_id);

    // Bad subscriptions are refused, and only managers may subscribe.
    let url = format!("http://{addr}/hook");
    for (body, problem) in [
        (json!({ "url": "ftp://example.com/x" }), "url must be"),
        (
            json!({ "url": url, "eventTypes": ["task.exploded"] }),
            "unknown event type",
        ),
        (json!({ "url": url, "secret": "short" }), "16 to 200"),
    ] {
        let (status, answer) = call(ann, Method::POST, &hooks, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            answer["detail"].as_str().unwrap_or("").contains(problem),
            "{answer}"
        );
    }
    let bob = Account::register(server.addr, "Bob").await.expect("bob");
    ann.add_member(&bob, "member").await.expect("add bob");
    let (status, _) = call(&bob, Method::POST, &hooks, Some(json!({ "url": url }))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, hook) = call(
        ann,
        Method::POST,
        &hooks,
        Some(json!({ "url": url, "eventTypes": ["task.created", "comment.added"], "secret": SECRET })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert_eq!(hook["secret"], SECRET, "shown once, at creation");
    let hook_id = hook["id"].as_str().expect("id").to_owned();
    let (_, listed) = call(ann, Method::GET, &hooks, None).await;
    assert!(listed["webhooks"][0].get("secret").is_none());

    let (project, _) = ann.project("Hooked").await.expect("project");
    let (_, task) = call(
        ann,
        Method::POST,
        "/api/v1/tasks",
        Some(json!({ "projectId": project, "title": "Ship it", "assignees": ["me"] })),
    )
    .await;
    let task_id = task["id"].as_str().expect("id").to_owned();
    call(
        ann,
        Method::POST,
        &format!("/api/v1/tasks/{task_id}/comments"),
        Some(json!({ "body": "shipped" })),
    )
    .await;

    until("both deliveries", async || {
        receiver.received.lock().expect("lock").len() >= 2
    })
    .await;
    let received = receiver.received.lock().expect("lock").clone();
    let kinds: Vec<&str> = received.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds.len(), 2, "only the subscribed types: {kinds:?}");
    assert!(kinds.contains(&"task.created") && kinds.contains(&"comment.added"));
    let created = &received
        .iter()
        .find(|(k, _, _)| k == "task.created")
        .expect("created")
        .2;
    assert_eq!(created["data"]["taskId"], json!(task_id));
    assert_eq!(created["specversion"], "1.0");
    assert_eq!(*receiver.bad_signatures.lock().expect("lock"), 0);

    // The log: the refused delivery took three tries.
    let log_path = format!("{hooks}/{hook_id}/deliveries");
    let mut log = Value::Null;
    until("the log to settle", async || {
        log = call(ann, Method::GET, &log_path, None).await.1;
        log["deliveries"]
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["state"] == "delivered"))
    })
    .await;
    let by_type: HashMap<&str, &Value> = log["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| (d["eventType"].as_str().expect("type"), d))
        .collect();
    assert_eq!(by_type["task.created"]["attempts"], 3);
    assert_eq!(by_type["task.created"]["lastStatus"], 204);
    assert_eq!(by_type["comment.added"]["attempts"], 1);
    let (_, after) = call(ann, Method::GET, &format!("{hooks}/{hook_id}"), None).await;
    assert_eq!(
        after["consecutiveFailures"], 0,
        "a success ends the run of failures"
    );
    server.stop().await;
}

async fn a_subscription_that_keeps_failing_is_disabled(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.webhook_backoff = Duration::from_millis(20);
    config.webhook_attempts = 2;
    config.webhook_disable_after = 3;
    let server = TestServer::start(config).await;
    let ann = &server.account;
    let (addr, _receiver) =
        start_receiver(HashMap::from([("task.created".into(), u32::MAX)])).await;
    let hooks = format!("/api/v1/workspaces/{}/webhooks", ann.workspace_id);
    let (_, hook) = call(
        ann,
        Method::POST,
        &hooks,
        Some(json!({ "url": format!("http://{addr}/hook"), "eventTypes": ["task.created"], "secret": SECRET })),
    )
    .await;
    let hook_path = format!("{hooks}/{}", hook["id"].as_str().expect("id"));
    let (project, _) = ann.project("Broken").await.expect("project");
    for title in ["one", "two"] {
        call(
            ann,
            Method::POST,
            "/api/v1/tasks",
            Some(json!({ "projectId": project, "title": title })),
        )
        .await;
    }
    let mut state = Value::Null;
    until("the subscription to be disabled", async || {
        state = call(ann, Method::GET, &hook_path, None).await.1;
        state["enabled"] == false
    })
    .await;
    assert!(
        state["disabledReason"]
            .as_str()
            .is_some_and(|r| r.contains("3 delivery attempts failed in a row")),
        "{state}"
    );
    let (_, log) = call(ann, Method::GET, &format!("{hook_path}/deliveries"), None).await;
    let deliveries = log["deliveries"].as_array().expect("deliveries");
    assert!(deliveries.iter().all(|d| d["lastStatus"] == 500));
    assert!(
        deliveries
            .iter()
            .any(|d| d["state"] == "failed" && d["attempts"] == 2)
    );

    let (status, again) = call(
        ann,
        Method::PATCH,
        &hook_path,
        Some(json!({ "enabled": true })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            again["enabled"].clone(),
            again["consecutiveFailures"].clone()
        ),
        (json!(true), json!(0))
    );
    server.stop().await;
}

/// The embedded path end to end across a crash: events in the outbox, the in-process consumer
/// that queues deliveries and the sender all pick up where they were after `kill -9`.
async fn a_server_killed_mid_delivery_loses_no_event(backend: Backend) {
    let db = TestDb::new(backend).await;
    let flags = ["--webhook-backoff", "50ms"];
    let server = ServerProcess::start_with(&db, &flags).await;
    let ann = server.account.clone();
    // The first tries fail, so deliveries are still pending (and retried) when the server dies.
    let (addr, receiver) = start_receiver(HashMap::from([("task.created".into(), 10)])).await;
    let hooks = format!("/api/v1/workspaces/{}/webhooks", ann.workspace_id);
    let (status, _) = call(
        &ann,
        Method::POST,
        &hooks,
        Some(json!({ "url": format!("http://{addr}/hook"), "eventTypes": ["task.created"], "secret": SECRET })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (project, _) = ann.project("Crash").await.expect("project");
    let mut made = Vec::new();
    for i in 0..30 {
        let (status, task) = call(
            &ann,
            Method::POST,
            "/api/v1/tasks",
            Some(json!({ "projectId": project, "title": format!("task {i}") })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        made.push(task["id"].as_str().expect("id").to_owned());
    }
    server.kill9().await;
    let server = ServerProcess::start_with(&db, &flags).await;
    until("every task.created delivered", async || {
        let received = receiver.received.lock().expect("lock");
        made.iter().all(|id| {
            received
                .iter()
                .any(|(_, _, e)| e["data"]["taskId"] == id.as_str())
        })
    })
    .await;
    let received = receiver.received.lock().expect("lock").clone();
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for (_, id, event) in &received {
        if let Some(first) = by_id.insert(id, event) {
            assert_eq!(first, event, "a repeated delivery is the same event");
        }
    }
    assert_eq!(by_id.len(), made.len());
    server.terminate().await;
}
