//! Two server nodes on one PostgreSQL database and one Redis (`REDIS_URL`): login rate limits,
//! signed-out tokens and membership changes hold across nodes. (The same rules in one process
//! without Redis are the rest of `auth` and `access`.)

use reqwest::StatusCode;
use serde_json::json;
use taskflow_testkit::{Account, Event, Peer};

use crate::support::{Backend, TestDb, TestServer, board};

/// Where the tests find Redis (scripts/services.sh makes sure one answers here).
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("TASKFLOW_TEST_REDIS").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// Nodes A and B on one database and Redis; B uses A's test account.
async fn two_nodes() -> (TestDb, TestServer, TestServer) {
    let db = TestDb::new(Backend::Postgres).await;
    let redis = redis_url();
    let config = || {
        let mut config = db.config();
        config.redis_url = Some(redis.clone());
        config
    };
    let a = TestServer::start(config()).await;
    let b = TestServer::start_as(config(), Some(a.account.clone())).await;
    (db, a, b)
}

async fn login(node: &TestServer, email: &str, password: &str) -> StatusCode {
    reqwest::Client::new()
        .post(format!("http://{}/api/v1/auth/login", node.addr))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("request")
        .status()
}

async fn me(node: &TestServer, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("http://{}/api/v1/auth/me", node.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_login_attempts_are_counted_across_nodes() {
    let (_db, a, b) = two_nodes().await;
    let email = &a.account.email;
    // Five attempts per account, wherever they land; each node alone would allow five.
    for node in [&a, &b, &a, &b, &a] {
        assert_eq!(
            login(node, email, "wrong password!!").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&b, email, "wrong password!!").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_on_one_node_ends_the_token_and_sockets_on_the_other() {
    let (_db, a, b) = two_nodes().await;
    let account = Account::register(a.addr, "Roamer").await.expect("register");
    let on_b = account.at(b.addr);
    // Node B has seen the session live (and cached that).
    assert_eq!(me(&b, &account.access_token).await, StatusCode::OK);
    let mut socket = Peer::connect_as(&on_b, "roamer").await.expect("join");

    account.logout().await.expect("logout on A");
    assert_eq!(
        me(&b, &account.access_token).await,
        StatusCode::UNAUTHORIZED
    );
    while socket
        .next_message(taskflow_testkit::DEFAULT_TIMEOUT)
        .await
        .expect("closes in time")
        .is_some()
    {}
    assert!(
        socket.events.iter().any(|e| matches!(
            e,
            Event::Closed {
                code: Some(4002),
                ..
            }
        )),
        "{:?}",
        socket.events
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_on_one_node_loses_the_board_on_the_other() {
    let (_db, a, b) = two_nodes().await;
    let owner = &a.account;
    let bo = Account::register(a.addr, "Bo").await.expect("register");
    owner.add_member(&bo, "member").await.expect("invite");
    let mut ann = a.peer("ann").await.expect("join A");
    let id = ann.create(board("Across", 1)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");

    let mut bo_on_b = Peer::connect_as(&bo.at(b.addr), "bo")
        .await
        .expect("join B");
    bo_on_b.request(id).await.expect("request");
    bo_on_b
        .until_doc(id, |d| taskflow_proto::board::Board::read(d).is_ok())
        .await
        .expect("bo reads through B");

    owner.remove_member(&bo).await.expect("remove on A");
    bo_on_b
        .run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
            p.replicas[&id].unavailable
        })
        .await
        .expect("node B withdraws the board from bo's live connection");
    a.stop().await;
    b.stop().await;
}

/// The project view cache lives in Redis: node B caches what A's changes then invalidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_view_cached_on_one_node_follows_changes_made_on_the_other() {
    let (_db, a, b) = two_nodes().await;
    let on_a = &a.account;
    let on_b = a.account.at(b.addr);
    let (project, id) = on_a.project("Shared view").await.expect("project");
    let path = format!("/api/v1/projects/{project}");
    let key = format!(
        "taskflow:{}:project:{project}",
        a.shared.storage_id.as_str()
    );
    let redis = std::env::var("TASKFLOW_TEST_REDIS").unwrap_or_else(|_| DEFAULT_REDIS_URL.into());
    let mut redis = redis::Client::open(redis)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let cached = |redis: &mut redis::aio::MultiplexedConnection| {
        let key = key.clone();
        let mut redis = redis.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(&key)
                .query_async::<bool>(&mut redis)
                .await
                .expect("EXISTS")
        }
    };

    assert_eq!(on_b.get(&path).await.expect("view")["taskCount"], 0);
    assert!(cached(&mut redis).await, "node B cached the view in Redis");

    on_a.post(
        "/api/v1/tasks",
        json!({ "projectId": project, "title": "made on A" }),
    )
    .await
    .expect("create on A");
    assert!(!cached(&mut redis).await, "the write on A invalidated it");
    assert_eq!(on_b.get(&path).await.expect("view")["taskCount"], 1);

    let mut peer = a.peer("editor").await.expect("join A");
    peer.request(id).await.expect("request");
    peer.until_doc(id, |d| taskflow_proto::board::Board::read(d).is_ok())
        .await
        .expect("board");
    assert_eq!(on_b.get(&path).await.expect("view")["taskCount"], 1);
    peer.edit(id, |tx| {
        taskflow_proto::board::ops::add_task(
            tx,
            taskflow_proto::board::ops::NewTask::titled("synced to A", "x"),
            1,
        )
        .expect("add");
    })
    .await
    .expect("edit");
    peer.until_server_has(id).await.expect("stored");
    assert_eq!(on_b.get(&path).await.expect("view")["taskCount"], 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_rest_requests_are_limited_across_nodes() {
    let db = TestDb::new(Backend::Postgres).await;
    let redis = redis_url();
    let config = || {
        let mut config = db.config();
        config.redis_url = Some(redis.clone());
        config.api_rate_per_user = 1;
        config.api_burst_per_user = 6;
        config
    };
    let a = TestServer::start(config()).await;
    let b = TestServer::start_as(config(), Some(a.account.clone())).await;
    let user = Account::register(a.addr, "Busy").await.expect("register");
    // Six at once in all, wherever they land; each node alone would allow six.
    let mut answers = Vec::new();
    for node in [&a, &b, &a, &b, &a, &b, &a, &b] {
        answers.push(me(node, &user.access_token).await);
    }
    let refused = answers
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        (1..=3).contains(&refused),
        "the burst is shared by both nodes: {answers:?}"
    );
    a.stop().await;
    b.stop().await;
}
