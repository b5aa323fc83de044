//! The plain HTTP surface: health, and a clear problem+json answer to a non-WebSocket request
//! on the sync endpoint.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, TestDb, TestServer};

/// Sends one HTTP/1.1 request and returns (status, headers, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let (status, _, body) = get(server.addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_on_the_sync_endpoint_gets_problem_json() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let (status, head, body) = get(server.addr, "/api/v1/sync").await;
    assert!((400..500).contains(&status), "client error, got {status}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(body.contains("WebSocket"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_gets_a_404_problem() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let (status, head, body) = get(server.addr, "/nope").await;
    assert_eq!(status, 404);
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    assert!(body.contains("/api/v1/sync"), "{body}");
    server.stop().await;
}

/// Every operation in the OpenAPI document is routed: it answers anything but the fallback's
/// "no route" (a 405 would also mean the path is routed for another method only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let document: serde_json::Value = http
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().expect("ops").len())
            .sum::<usize>(),
        taskflow_sync_server::openapi::OPERATIONS.len()
    );
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let url = format!("{base}{}", path.replace('{', "x").replace('}', ""));
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let response = http
                .request(method.clone(), &url)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(
                !(status == 404 && body.contains("no route for")) && status != 405,
                "{method} {path} is documented but not routed ({status})"
            );
        }
    }
    server.stop().await;
}

/// And the other way round: every path the source routes is documented.
#[test]
fn every_routed_path_is_documented() {
    let documented: std::collections::BTreeSet<&str> = taskflow_sync_server::openapi::OPERATIONS
        .iter()
        .map(|op| op.path)
        .collect();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut routed = std::collections::BTreeSet::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).expect("src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            for piece in text.split(".route(").skip(1) {
                if let Some(literal) = piece.trim_start().strip_prefix('"') {
                    routed.insert(literal.split('"').next().expect("literal").to_owned());
                }
            }
        }
    }
    assert!(routed.len() >= 10, "found the routes: {routed:?}");
    for path in &routed {
        assert!(
            documented.contains(path.as_str()),
            "{path} is routed but not in the OpenAPI document"
        );
    }
}

/// A value that fits a property's JSON Schema (the first alternative of a union).
fn example(schema: &serde_json::Value) -> serde_json::Value {
    if let Some(first) = ["oneOf", "anyOf"]
        .iter()
        .find_map(|k| schema[k].as_array().and_then(|a| a.first()))
    {
        return example(first);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|a| a.first()) {
        return first.clone();
    }
    let kind = match &schema["type"] {
        serde_json::Value::Array(kinds) => kinds.first().cloned().unwrap_or_default(),
        kind => kind.clone(),
    };
    match kind.as_str() {
        Some("array") => serde_json::json!([]),
        Some("boolean") => true.into(),
        Some("integer") => 1.into(),
        _ => "x".into(),
    }
}

/// The documented request bodies are what the handlers take: each refuses a field its schema
/// does not list (`additionalProperties: false`), and its required fields are the schema's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_request_bodies_refuse_unknown_fields() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let http = reqwest::Client::new();
    let account = &server.account;
    let with_body = taskflow_sync_server::openapi::OPERATIONS
        .iter()
        .filter_map(|op| op.request.map(|schema| (op, schema())));
    let mut checked = 0;
    for (op, schema) in with_body {
        assert_eq!(schema["type"], "object", "{} {}", op.method, op.path);
        assert_eq!(
            schema["additionalProperties"], false,
            "{} {}: {schema}",
            op.method, op.path
        );
        // Only a PATCH (change what you name) has no required field.
        let required = schema["required"].as_array().map_or(0, Vec::len);
        assert!(
            required > 0 || op.method == "patch",
            "{} {}",
            op.method,
            op.path
        );
        // Every property present with a fitting value, plus one the schema does not know.
        let mut body = serde_json::Map::new();
        for (name, property) in schema["properties"].as_object().expect("properties") {
            body.insert(name.clone(), example(property));
        }
        body.insert("surprise".into(), true.into());
        let path = op
            .path
            .replace("{id}", &account.workspace_id)
            .replace("{user}", &account.user_id);
        let method = reqwest::Method::from_bytes(op.method.to_uppercase().as_bytes()).expect("m");
        let response = http
            .request(method, format!("{}{path}", account.base))
            .bearer_auth(&account.access_token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let problem: serde_json::Value = response.json().await.expect("problem JSON");
        assert_eq!(
            (status.as_u16(), problem["type"].as_str()),
            (422, Some("/problems/invalid-body")),
            "{} {}: {problem}",
            op.method,
            op.path
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("surprise")),
            "{problem}"
        );
        checked += 1;
    }
    assert!(checked >= 9, "{checked} bodies checked");
    server.stop().await;
}
