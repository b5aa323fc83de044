//! The schema-based fuzzer schemathesis (installed by scripts/services.sh) against the live
//! server, on both backends: every documented operation gets generated requests, valid and
//! not, with real ids in its path. No answer may be a server error, and every answer must
//! match its documented schema and content type.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use taskflow_testkit::Account;

use crate::support::{Backend, TestDb, TestServer, on_both_backends};

on_both_backends!(the_schema_fuzzer_finds_no_server_errors);

/// Generated requests per operation and phase: enough to reach every validation branch.
const EXAMPLES: &str = "40";

fn schemathesis() -> PathBuf {
    if let Ok(path) = std::env::var("TASKFLOW_SCHEMATHESIS") {
        return path.into();
    }
    crate::support::state_dir().join("venv/bin/schemathesis")
}

async fn the_schema_fuzzer_finds_no_server_errors(backend: Backend) {
    let binary = schemathesis();
    assert!(
        binary.exists(),
        "{} is missing: run scripts/services.sh",
        binary.display()
    );
    let db = TestDb::new(backend).await;
    // The fuzzer is one user at full speed: the REST limits would answer most of it 429.
    let mut config = db.config();
    config.api_rate_per_user = 1_000_000;
    config.api_burst_per_user = 1_000_000;
    config.api_rate_per_address = 1_000_000;
    config.api_burst_per_address = 1_000_000;
    let server = TestServer::start(config).await;
    let ann = &server.account;
    let bob = Account::register(server.addr, "Bob")
        .await
        .expect("register");
    ann.add_member(&bob, "member").await.expect("add bob");
    let invitation = ann
        .post(
            &format!("/api/v1/workspaces/{}/invitations", ann.workspace_id),
            json!({ "email": "carol@example.com", "role": "viewer" }),
        )
        .await
        .expect("invite");
    let webhook = ann
        .post(
            &format!("/api/v1/workspaces/{}/webhooks", ann.workspace_id),
            // Nothing listens there: deliveries fail quietly.
            json!({ "url": "http://127.0.0.1:9/hook", "eventTypes": ["task.created"] }),
        )
        .await
        .expect("webhook");
    let (project, _) = ann.project("Fuzzed").await.expect("project");
    let task = ann
        .post(
            "/api/v1/tasks",
            json!({ "projectId": project, "title": "Fuzzed task", "labels": ["x"] }),
        )
        .await
        .expect("task");

    // Real ids in the paths, so requests get past "not found" to the logic behind it.
    let config = format!(
        r#"
[[operations]]
include-path-regex = "^/api/v1/workspaces/"
parameters = {{ id = "{workspace}", user = "{bob}", invitation = "{invitation}", webhook = "{webhook}" }}

[[operations]]
include-path-regex = "^/api/v1/projects/"
parameters = {{ id = "{project}" }}

[[operations]]
include-path-regex = "^/api/v1/tasks/"
parameters = {{ id = "{task}" }}
"#,
        workspace = ann.workspace_id,
        bob = bob.user_id,
        invitation = invitation["id"].as_str().expect("invitation id"),
        webhook = webhook["id"].as_str().expect("webhook id"),
        project = project,
        task = task["id"].as_str().expect("task id"),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("schemathesis.toml");
    std::fs::write(&config_path, config).expect("config");

    let run = tokio::process::Command::new(&binary)
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(format!("http://{}/api/v1/openapi.json", server.addr))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", ann.access_token),
        ])
        // Signing out would leave the rest of the run unauthenticated; the sockets are no REST.
        .args(["--exclude-path", "/api/v1/auth/logout"])
        .args(["--exclude-path", "/api/v1/sync"])
        .args(["--exclude-path", "/api/v1/notifications/ws"])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
        ])
        .args(["--max-examples", EXAMPLES])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the fuzzer finishes in time")
        .expect("schemathesis runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "the fuzzer found problems:\n{report}"
    );
    assert!(
        report.contains("passed") && !report.contains("failed,"),
        "unexpected fuzzer report:\n{report}"
    );
    server.stop().await;
}
