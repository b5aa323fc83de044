//! Real dependencies failing under a running server: the sync path carries on, the features
//! that need the dependency wait, and everything catches up once it is back. PostgreSQL and
//! Redis here are the tests' own instances, stopped and started for real; Kafka's and
//! Temporal's outages are in `kafka` and `temporal`.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use taskflow_client_core::{Client, DocumentId, SyncStatus};
use taskflow_testkit::Account;

use crate::support::{OwnPostgres, OwnRedis, ServerProcess, TestDb, add_titled_task, sync_client};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches the board and waits until the client holds it.
async fn fetched(client: &Client, board: DocumentId) {
    client.fetch(board).await.expect("fetch");
    let statuses = client.wait_synced(&[board], TIMEOUT).await.expect("runs");
    assert_eq!(
        statuses,
        [SyncStatus::InSync],
        "board {board} was not fetched"
    );
}

async fn titles(client: &Client, board: DocumentId) -> BTreeSet<String> {
    client
        .board(board)
        .await
        .map(|b| b.tasks.values().map(|t| t.title.clone()).collect())
        .unwrap_or_default()
}

/// Waits until the client holds exactly `expected` and the server has all of it.
async fn until_synced_with(client: &Client, board: DocumentId, expected: &BTreeSet<String>) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let have = titles(client, board).await;
        let status = client.status(board).await.expect("status");
        if have == *expected && status == SyncStatus::InSync {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never synced: {} of {} tasks, {status:?}",
            have.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(url: String) -> StatusCode {
    reqwest::get(url)
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

async fn readyz(node: &ServerProcess) -> (StatusCode, Value) {
    let answer = reqwest::get(format!("http://{}/readyz", node.addr))
        .await
        .expect("the node answers");
    let status = answer.status();
    (status, answer.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_loses_no_edit() {
    let pg = OwnPostgres::start().await;
    let db = TestDb::at(pg.database().await);
    let node = ServerProcess::start(&db).await;
    let account = node.account.clone();
    let (_, board) = account.project("Through a restart").await.expect("project");
    let dir = tempfile::tempdir().expect("dir");
    let ann = sync_client(&dir, &account, node.addr).await;
    fetched(&ann, board).await;

    // Edits keep coming while the database goes down and comes back.
    let mut expected = BTreeSet::new();
    for i in 0..10 {
        add_titled_task(&ann, board, &format!("before {i}")).await;
        expected.insert(format!("before {i}"));
    }
    pg.crash().await;
    for i in 0..10 {
        add_titled_task(&ann, board, &format!("during {i}")).await;
        expected.insert(format!("during {i}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Meanwhile the node says it is not ready, and why, but is alive.
    let (status, body) = readyz(&node).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "/problems/not-ready");
    assert_eq!(body["checks"][0]["name"], "database");
    assert_eq!(body["checks"][0]["ok"], false);
    assert_eq!(
        status_of(format!("http://{}/healthz", node.addr)).await,
        StatusCode::OK
    );
    assert_ne!(
        ann.status(board).await.expect("status"),
        SyncStatus::InSync,
        "nothing can be stored: the client keeps its edits pending"
    );

    pg.resume().await;
    for i in 0..10 {
        add_titled_task(&ann, board, &format!("after {i}")).await;
        expected.insert(format!("after {i}"));
    }
    until_synced_with(&ann, board, &expected).await;
    assert_eq!(readyz(&node).await.0, StatusCode::OK);

    // The store has every edit: a fresh client fetches them all.
    let fresh_dir = tempfile::tempdir().expect("dir");
    let fresh = sync_client(&fresh_dir, &account, node.addr).await;
    fetched(&fresh, board).await;
    until_synced_with(&fresh, board, &expected).await;
    ann.shutdown().await;
    fresh.shutdown().await;
    node.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_leaves_each_node_working_and_fan_out_resumes_after() {
    let mut redis = OwnRedis::start().await;
    let db = TestDb::new(crate::support::Backend::Postgres).await;
    let url = redis.url();
    let one = ServerProcess::start_with(&db, &["--redis-url", &url]).await;
    let two = ServerProcess::start_with(&db, &["--redis-url", &url]).await;
    let account = one.account.clone();
    let (project, board) = account.project("Redis outage").await.expect("project");
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let ann = sync_client(&dirs.0, &account, one.addr).await;
    let bob = sync_client(&dirs.1, &account, two.addr).await;
    for c in [&ann, &bob] {
        fetched(c, board).await;
    }
    let mut expected = BTreeSet::new();
    add_titled_task(&ann, board, "with Redis").await;
    expected.insert("with Redis".to_owned());
    until_synced_with(&bob, board, &expected).await;

    redis.kill().await;
    // Each node alone keeps working: sync, REST, sign-in, rate limits in process.
    for i in 0..5 {
        add_titled_task(&ann, board, &format!("without Redis {i}")).await;
        expected.insert(format!("without Redis {i}"));
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while ann.status(board).await.expect("status") != SyncStatus::InSync {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node one stored nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_one = account.at(one.addr);
    let created = on_one
        .post(
            "/api/v1/tasks",
            json!({ "projectId": project, "title": "over REST without Redis" }),
        )
        .await
        .expect("REST works without Redis");
    assert_eq!(created["title"], "over REST without Redis");
    expected.insert("over REST without Redis".to_owned());
    let again = Account::register(one.addr, "Newcomer").await;
    assert!(again.is_ok(), "sign-up works without Redis: {again:?}");
    let (status, body) = readyz(&one).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let redis_check = body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "redis")
        .expect("a redis check")
        .clone();
    assert_eq!(redis_check["ok"], false, "{body}");

    // Redis back: node two catches up with what it missed, and live fan-out resumes.
    redis.resume().await;
    until_synced_with(&bob, board, &expected).await;
    add_titled_task(&bob, board, "back again").await;
    expected.insert("back again".to_owned());
    until_synced_with(&ann, board, &expected).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (status, body) = readyz(&one).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ann.shutdown().await;
    bob.shutdown().await;
    one.kill9().await;
    two.kill9().await;
}
