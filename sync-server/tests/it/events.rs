//! Domain events on the embedded path: derived from socket and REST edits, written to the
//! outbox with the changes, fed in process to consumers (retries, dead letters), and delivered
//! to webhooks signed and retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::Method;
use serde_json::{Value, json};
use taskflow_proto::board::ops::{self, Position, TaskEdit};
use taskflow_proto::board::{Board, ColumnId, TaskId};
use taskflow_proto::events::Envelope;
use taskflow_sync_server::events::consume::Consumer;
use taskflow_testkit::{Account, Peer};
use tokio::sync::Notify;

use crate::support::{Backend, TestDb, TestServer, on_both_backends};

on_both_backends!(
    socket_and_rest_edits_make_exactly_the_expected_events,
    concurrent_edits_are_reported_as_the_merged_outcome,
    a_poison_event_ends_as_a_dead_letter_after_its_tries,
);

const WAIT: Duration = Duration::from_secs(20);

/// A consumer that keeps what it handles; it fails (every try) on events `poison` picks.
#[derive(Default)]
pub struct Recorder {
    name: String,
    events: Mutex<Vec<Envelope>>,
    tries: Mutex<HashMap<String, u32>>,
    arrived: Notify,
    poison: Option<fn(&Envelope) -> bool>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("name", &self.name)
            .finish()
    }
}

impl Recorder {
    pub fn new(name: &str) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_owned(),
            ..Recorder::default()
        })
    }

    pub fn poisoned(name: &str, poison: fn(&Envelope) -> bool) -> Arc<Recorder> {
        Arc::new(Recorder {
            name: name.to_owned(),
            poison: Some(poison),
            ..Recorder::default()
        })
    }

    /// How many times the event `id` was tried.
    pub fn tries(&self, id: &str) -> u32 {
        self.tries
            .lock()
            .expect("lock")
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    pub fn events(&self) -> Vec<Envelope> {
        self.events.lock().expect("lock").clone()
    }

    /// Waits until `done` holds for the events handled so far; they are returned.
    pub async fn until(&self, done: impl Fn(&[Envelope]) -> bool) -> Vec<Envelope> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            let events = self.events();
            if done(&events) {
                return events;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let kinds: Vec<_> = events.iter().map(|e| e.kind.clone()).collect();
                panic!("the events never got there; handled: {kinds:?}");
            }
        }
    }
}

impl Consumer for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self, event: Arc<Envelope>) -> BoxFuture<'static, Result<(), String>> {
        *self
            .tries
            .lock()
            .expect("lock")
            .entry(event.id.clone())
            .or_default() += 1;
        let result = if self.poison.is_some_and(|p| p(&event)) {
            Err(format!("refusing {}", event.kind))
        } else {
            self.events.lock().expect("lock").push((*event).clone());
            self.arrived.notify_waiters();
            Ok(())
        };
        Box::pin(async move { result })
    }
}

/// The events about `task`, in the order handled.
pub fn about<'e>(events: &'e [Envelope], task: &str) -> Vec<&'e Envelope> {
    events.iter().filter(|e| e.partitionkey == task).collect()
}

pub fn kinds(events: &[&Envelope]) -> Vec<String> {
    events.iter().map(|e| e.kind.clone()).collect()
}

/// A successful REST call's JSON answer.
pub async fn rest(account: &Account, method: Method, path: &str, body: Value) -> Value {
    let response = account
        .request(method, path)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A peer of `account` holding the board `id`.
async fn peer_on(account: &Account, name: &str, id: taskflow_proto::DocumentId) -> Peer {
    let mut peer = Peer::connect_as(account, name).await.expect("join");
    peer.request(id).await.expect("request");
    peer.until_doc(id, |d| Board::read(d).is_ok())
        .await
        .expect("the board arrives");
    peer
}

/// The edits of one task's life, through REST and the socket; the events each makes.
pub async fn edit_a_task(account: &Account) -> (String, String) {
    let (project, doc) = account.project("Events").await.expect("project");
    let task = rest(
        account,
        Method::POST,
        "/api/v1/tasks",
        json!({ "projectId": project, "title": "Write", "assignees": ["me"] }),
    )
    .await;
    let id = task["id"].as_str().expect("id").to_owned();

    // Over the socket: moved to Done and renamed, in one change.
    let mut peer = peer_on(account, "events-peer", doc).await;
    let task_id = TaskId::new(&id);
    peer.until_doc(doc, |d| {
        Board::read_task(d, &task_id).is_ok_and(|t| t.is_some())
    })
    .await
    .expect("the task arrives");
    peer.edit(doc, |tx| {
        ops::move_task(tx, &task_id, &ColumnId::new("done"), Position::Top, 2).expect("move");
        let rename = TaskEdit {
            title: Some("Write more".into()),
            ..TaskEdit::default()
        };
        ops::edit_task(tx, &task_id, rename, 2).expect("rename");
    })
    .await
    .expect("edit");
    peer.until_server_has(doc).await.expect("stored");

    let path = format!("/api/v1/tasks/{id}");
    rest(
        account,
        Method::PATCH,
        &path,
        json!({ "due": "2027-03-01" }),
    )
    .await;
    rest(
        account,
        Method::POST,
        &format!("{path}/comments"),
        json!({ "body": "on it" }),
    )
    .await;
    let archived = account
        .request(Method::DELETE, &path)
        .send()
        .await
        .expect("archive");
    assert!(archived.status().is_success());
    peer.close().await.expect("close");
    (project, id)
}

pub const TASK_LIFE: [&str; 7] = [
    "task.created",
    "task.assigned",
    "task.status.updated",
    "task.updated",
    "task.due_changed",
    "comment.added",
    "task.archived",
];

/// What every event of [`edit_a_task`] must say.
pub fn check_task_life(events: &[&Envelope], account: &Account, project: &str, task: &str) {
    assert_eq!(kinds(events), TASK_LIFE);
    for event in events {
        let data = &event.data;
        assert_eq!(
            data.actor.as_deref(),
            Some(account.user_id.as_str()),
            "{}",
            event.kind
        );
        assert_eq!(data.project_id.as_deref(), Some(project));
        assert_eq!(data.task_id.as_deref(), Some(task));
        assert!(data.workspace_id.is_some());
        assert!(
            !data.changes.is_empty() && !data.heads.is_empty(),
            "{}",
            event.kind
        );
        assert_eq!(
            event.subject.as_deref(),
            Some(format!("tasks/{task}").as_str())
        );
        assert_eq!(event.specversion, "1.0");
    }
    assert_eq!(events[1].data.added, vec![account.user_id.clone()]);
    assert_eq!(
        events[2].data.from,
        Some(json!({"id": "todo", "name": "To do"}))
    );
    assert_eq!(
        events[2].data.to,
        Some(json!({"id": "done", "name": "Done"}))
    );
    assert_eq!(
        serde_json::to_value(&events[3].data.fields).expect("json"),
        json!({"title": {"from": "Write", "to": "Write more"}}),
        "only the title: the column change is task.status.updated's"
    );
    assert_eq!(events[4].data.from, Some(Value::Null));
    assert_eq!(events[4].data.to, Some(json!("2027-03-01T23:59:59.999Z")));
    assert_eq!(
        events[5].data.comment.as_ref().map(|c| c.body.as_str()),
        Some("on it")
    );
    let last = events[6].data.task.as_ref().expect("the task");
    assert!(last.archived && last.title == "Write more" && last.column.id == "done");
    // The status change and the rename came in one change.
    assert_eq!(events[2].data.changes, events[3].data.changes);
}

async fn socket_and_rest_edits_make_exactly_the_expected_events(backend: Backend) {
    let db = TestDb::new(backend).await;
    let recorder = Recorder::new("recorder");
    let server = TestServer::start_with(db.config(), None, vec![recorder.clone()]).await;
    let account = &server.account;
    let (project, task) = edit_a_task(account).await;

    let events = recorder
        .until(|events| about(events, &task).len() >= TASK_LIFE.len())
        .await;
    check_task_life(&about(&events, &task), account, &project, &task);

    let registered = events
        .iter()
        .find(|e| e.kind == "user.registered")
        .expect("user.registered");
    assert_eq!(
        registered.data.user.as_ref().map(|u| u.email.as_str()),
        Some(account.email.as_str())
    );
    let created = events
        .iter()
        .find(|e| e.kind == "project.created")
        .expect("project.created");
    assert_eq!(created.data.project_id.as_deref(), Some(project.as_str()));
    assert_eq!(created.partitionkey, project);

    // Nothing else: a little later, still exactly these.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = recorder.events();
    assert_eq!(about(&events, &task).len(), TASK_LIFE.len());
    let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "each event handled once");
    server.stop().await;
}

async fn concurrent_edits_are_reported_as_the_merged_outcome(backend: Backend) {
    let db = TestDb::new(backend).await;
    let recorder = Recorder::new("recorder");
    let server = TestServer::start_with(db.config(), None, vec![recorder.clone()]).await;
    let account = &server.account;
    let (project, doc) = account.project("Race").await.expect("project");
    let task = rest(
        account,
        Method::POST,
        "/api/v1/tasks",
        json!({ "projectId": project, "title": "Start" }),
    )
    .await;
    let id = TaskId::new(task["id"].as_str().expect("id"));

    // Two replicas rename the task without seeing each other's edit.
    let mut peers = Vec::new();
    for name in ["left", "right"] {
        let mut peer = peer_on(account, name, doc).await;
        peer.until_doc(doc, |d| Board::read_task(d, &id).is_ok_and(|t| t.is_some()))
            .await
            .expect("the task arrives");
        peers.push(peer);
    }
    for (peer, title) in peers.iter_mut().zip(["From the left", "From the right"]) {
        let rename = TaskEdit {
            title: Some(title.into()),
            ..TaskEdit::default()
        };
        peer.edit(doc, |tx| {
            ops::edit_task(tx, &id, rename, 3).expect("rename")
        })
        .await
        .expect("edit");
    }
    for peer in &mut peers {
        peer.until_server_has(doc).await.expect("stored");
    }
    let stored = server
        .store
        .load(&doc)
        .await
        .expect("load")
        .expect("stored");
    let merged = automerge::Automerge::load(&stored.concatenated()).expect("loads");
    let winner = Board::read_task(&merged, &id)
        .expect("reads")
        .expect("task")
        .title;
    assert!(merged.get_heads().len() <= 2);

    let events = recorder
        .until(|events| {
            about(events, id.as_str())
                .last()
                .and_then(|e| e.data.task.as_ref())
                .is_some_and(|t| t.title == winner)
        })
        .await;
    let renames: Vec<&Envelope> = about(&events, id.as_str())
        .into_iter()
        .filter(|e| e.kind == "task.updated")
        .collect();
    assert!(!renames.is_empty());
    let last = renames.last().expect("a rename");
    assert_eq!(
        last.data.fields["title"].to,
        json!(winner),
        "the merged title"
    );
    for peer in peers {
        peer.close().await.expect("close");
    }
    server.stop().await;
}

/// A server (on `config`, with 3 tries per event) whose consumer `poisoned` refuses the
/// `task.created` of a task titled "poison"; that task and a healthy one are made after it, and
/// the consumer has moved on to the healthy one. Returns the two tasks' ids by title.
pub async fn poison_and_move_on(
    mut config: taskflow_sync_server::Config,
) -> (TestServer, Arc<Recorder>, BTreeMap<&'static str, String>) {
    config.event_attempts = 3;
    config.event_backoff = Duration::from_millis(20);
    let poisoned = Recorder::poisoned("poisoned", |e| {
        e.kind == "task.created" && e.data.task.as_ref().is_some_and(|t| t.title == "poison")
    });
    let server = TestServer::start_with(config, None, vec![poisoned.clone()]).await;
    let account = &server.account;
    let (project, _) = account.project("Poison").await.expect("project");
    let mut ids = BTreeMap::new();
    for title in ["poison", "healthy"] {
        let task = rest(
            account,
            Method::POST,
            "/api/v1/tasks",
            json!({ "projectId": project, "title": title }),
        )
        .await;
        ids.insert(title, task["id"].as_str().expect("id").to_owned());
    }
    poisoned
        .until(|events| !about(events, &ids["healthy"]).is_empty())
        .await;
    assert!(
        about(&poisoned.events(), &ids["poison"]).is_empty(),
        "the poison event was never handled"
    );
    (server, poisoned, ids)
}

async fn a_poison_event_ends_as_a_dead_letter_after_its_tries(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, poisoned, ids) = poison_and_move_on(db.config()).await;
    let dead = server.store.dead_letters("poisoned").await.expect("read");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.attempts, 3);
    assert_eq!(letter.reason, "refusing task.created");
    let event: Envelope = serde_json::from_str(&letter.payload).expect("the event is kept");
    assert_eq!(event.partitionkey, ids["poison"]);
    assert_eq!(poisoned.tries(&letter.event_id), 3);
    server.stop().await;
}
