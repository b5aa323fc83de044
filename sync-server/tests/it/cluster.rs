//! Three server processes on one PostgreSQL database and one Redis, as behind a load balancer:
//! people on one board connected to different nodes see each other's edits and presence live,
//! writes from every node land once each, and a node killed with kill -9 costs its clients
//! nothing but a reconnect to another node.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use taskflow_client_core::board::Board;
use taskflow_client_core::{Client, DocumentId, SyncStatus};
use taskflow_testkit::Account;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};

use crate::redis::redis_url;
use crate::support::{Backend, ServerProcess, TestDb, add_titled_task, sync_client};

/// Bound on every wait.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `n` server processes on one fresh PostgreSQL database and the tests' Redis.
pub(crate) async fn cluster(n: usize) -> (TestDb, Vec<ServerProcess>) {
    let db = TestDb::new(Backend::Postgres).await;
    let redis = redis_url();
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(ServerProcess::start_with(&db, &["--redis-url", &redis]).await);
    }
    (db, nodes)
}

/// A TCP load balancer on loopback: each new connection goes to the first of `backends` (in
/// this balancer's order of preference) that accepts it, as a proxy retries the next upstream.
pub(crate) struct Balancer {
    pub addr: SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub(crate) async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let backends = Arc::new(backends);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for backend in backends.iter() {
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Balancer { addr, _task: task }
    }
}

fn titles(board: &Board) -> BTreeSet<String> {
    board.tasks.values().map(|t| t.title.clone()).collect()
}

/// Waits until the client's copy of `board` has every title in `expected` (and no other).
async fn until_titles(client: &Client, board: DocumentId, expected: &BTreeSet<String>) {
    let mut events = client.subscribe();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let current = client.board(board).await.map(|b| titles(&b));
        if current.as_ref().is_ok_and(|t| t == expected) {
            return;
        }
        if tokio::time::timeout_at(deadline, events.recv())
            .await
            .is_err()
        {
            panic!(
                "board never converged: expected {} tasks, have {:?}",
                expected.len(),
                current.map(|t| t.len())
            );
        }
    }
}

async fn synced(client: &Client, board: DocumentId) {
    let statuses = client.wait_synced(&[board], TIMEOUT).await.expect("runs");
    assert_eq!(statuses, [SyncStatus::InSync], "board {board} did not sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_on_different_nodes_see_each_others_edits_and_presence_live() {
    let (_db, nodes) = cluster(3).await;
    let account = &nodes[0].account;
    let (_, board) = account.project("Across nodes").await.expect("project");
    let dirs: Vec<TempDir> = (0..6).map(|_| tempfile::tempdir().expect("dir")).collect();
    // Two clients per node.
    let mut clients = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let client = sync_client(dir, account, nodes[i % 3].addr).await;
        client.fetch(board).await.expect("fetch");
        synced(&client, board).await;
        clients.push(client);
    }

    let mut expected = BTreeSet::new();
    let edits = clients.iter().enumerate().map(|(i, client)| async move {
        for j in 0..5 {
            add_titled_task(client, board, &format!("client {i} task {j}")).await;
        }
    });
    futures_util::future::join_all(edits).await;
    for i in 0..clients.len() {
        for j in 0..5 {
            expected.insert(format!("client {i} task {j}"));
        }
    }
    for client in &clients {
        until_titles(client, board, &expected).await;
    }

    // The cross-node delay is measured where notices arrive.
    let metrics = reqwest::get(format!("http://{}/metrics", nodes[1].addr))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("taskflow_fanout_delay_seconds_count"),
        "{metrics}"
    );
    assert!(metrics.contains("taskflow_circuit_open{dependency=\"redis\"} 0"));

    // Presence crosses nodes too: a viewer on node 0 is seen by a client on node 2.
    clients[0].set_viewing(board, None).await.expect("view");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while clients[2].viewers(board).await.expect("viewers").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the viewer on node 0 never showed on node 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for client in &clients {
        client.shutdown().await;
    }
    for node in nodes {
        node.kill9().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_kill_9_costs_its_clients_a_reconnect_and_nothing_else() {
    let (_db, mut nodes) = cluster(3).await;
    let account = nodes[0].account.clone();
    let (project, board) = account.project("Survivors").await.expect("project");
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    // Client i prefers node i, then the others, as a balancer's upstreams.
    let mut balancers = Vec::new();
    for i in 0..3 {
        let order = (0..3).map(|k| addrs[(i + k) % 3]).collect();
        balancers.push(Balancer::start(order).await);
    }
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut clients = Vec::new();
    for (dir, balancer) in dirs.iter().zip(&balancers) {
        let client = sync_client(dir, &account, balancer.addr).await;
        client.fetch(board).await.expect("fetch");
        synced(&client, board).await;
        clients.push(client);
    }

    // Node 0's client edits on while node 0 dies under it; the others edit too.
    let mut expected = BTreeSet::new();
    for j in 0..10 {
        add_titled_task(&clients[0], board, &format!("before {j}")).await;
        expected.insert(format!("before {j}"));
    }
    nodes.remove(0).kill9().await;
    for j in 0..10 {
        add_titled_task(&clients[0], board, &format!("after {j}")).await;
        add_titled_task(&clients[1], board, &format!("other {j}")).await;
        expected.insert(format!("after {j}"));
        expected.insert(format!("other {j}"));
    }
    for client in &clients {
        until_titles(client, board, &expected).await;
    }
    synced(&clients[0], board).await;

    // And the store has it all: a new client on a surviving node fetches every task.
    let late_dir = tempfile::tempdir().expect("dir");
    let late = sync_client(&late_dir, &account, nodes[1].addr).await;
    late.fetch(board).await.expect("fetch");
    until_titles(&late, board, &expected).await;
    assert_eq!(
        listed_titles(&account, nodes[0].addr, &project).await,
        expected
    );
    for client in clients.iter().chain([&late]) {
        client.shutdown().await;
    }
    for node in nodes {
        node.kill9().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_writes_to_one_board_from_three_nodes_each_land_once() {
    let (db, nodes) = cluster(3).await;
    let account = nodes[0].account.clone();
    let (project, _) = account.project("Busy").await.expect("project");
    let writes = (0..45).map(|i| {
        let on = account.at(nodes[i % 3].addr);
        let project = project.clone();
        async move {
            on.post(
                "/api/v1/tasks",
                json!({ "projectId": project, "title": format!("rest {i}") }),
            )
            .await
            .unwrap_or_else(|e| panic!("task {i} on node {}: {e}", i % 3))
        }
    });
    let created = futures_util::future::join_all(writes).await;
    let ids: BTreeSet<String> = created
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 45);

    // Every node's projection and the document agree: 45 tasks.
    let expected: BTreeSet<String> = (0..45).map(|i| format!("rest {i}")).collect();
    for node in &nodes {
        assert_eq!(listed_titles(&account, node.addr, &project).await, expected);
    }
    // One `task.created` per task in the outbox: no merge was derived twice.
    let created_events = events_of_type(&db, "task.created").await;
    let mut per_task = std::collections::BTreeMap::<String, usize>::new();
    for event in &created_events {
        let task = event["data"]["taskId"].as_str().expect("taskId").to_owned();
        *per_task.entry(task).or_default() += 1;
    }
    assert_eq!(per_task.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(per_task.values().all(|n| *n == 1), "{per_task:?}");
    for node in nodes {
        node.kill9().await;
    }
}

/// The titles of the project's tasks as the REST API (the projection) lists them through the
/// node at `addr`.
async fn listed_titles(account: &Account, addr: SocketAddr, project: &str) -> BTreeSet<String> {
    let on = account.at(addr);
    let mut titles = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/projects/{project}/tasks?limit=100");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = on.get(&path).await.expect("tasks");
        for task in page["tasks"].as_array().expect("tasks") {
            titles.insert(task["title"].as_str().expect("title").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    titles
}

/// The outbox's events of one type, as their CloudEvents JSON.
pub(crate) async fn events_of_type(db: &TestDb, kind: &str) -> Vec<Value> {
    use sqlx::Connection;
    let url = db.database_url.as_deref().expect("a PostgreSQL database");
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE type = $1 ORDER BY seq")
            .bind(kind)
            .fetch_all(&mut conn)
            .await
            .expect("outbox");
    payloads
        .iter()
        .map(|p| serde_json::from_str(p).expect("event JSON"))
        .collect()
}
