//! Deadlines on the embedded scheduler (durable timers in the database), on both backends, with
//! reminder offsets and due dates of seconds: reminder then escalation, none for a task done in
//! time, due dates moved, and a server killed between scheduling and firing. The scenarios take
//! the server's configuration, so `temporal.rs` runs them on Temporal as well.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testkit::Account;

use crate::events::rest;
use crate::notifications::{INVITED, kinds_once, team};
use crate::support::{Backend, ServerProcess, TestDb, eventually, on_both_backends};
use taskflow_sync_server::Config;

on_both_backends!(
    a_reminder_then_an_escalation_for_an_overdue_task,
    no_escalation_for_a_task_done_in_time,
    moving_the_due_date_reschedules_both,
    a_server_killed_before_the_reminder_still_reminds_once,
    a_handed_over_mark_stays_when_newer_facts_came,
);

/// An RFC 3339 time `seconds` from now.
pub fn in_seconds(seconds: f64) -> String {
    let at = jiff::Timestamp::now() + Duration::from_secs_f64(seconds);
    at.round(jiff::Unit::Millisecond)
        .expect("rounds")
        .to_string()
}

pub async fn remind_before(ann: &Account, seconds: u64) {
    let path = format!("/api/v1/workspaces/{}/settings", ann.workspace_id);
    let body = json!({ "reminderOffsetSeconds": seconds });
    let settings = rest(ann, Method::PATCH, &path, body).await;
    assert_eq!(settings["reminderOffsetSeconds"], seconds);
}

/// A task in a new project of Ann's workspace, for `assignee`, due at `due`.
pub async fn task_due(ann: &Account, assignee: &Account, due: &str) -> String {
    let body = json!({ "workspaceId": ann.workspace_id, "name": "Deadlines" });
    let project = rest(ann, Method::POST, "/api/v1/projects", body).await;
    let body = json!({
        "projectId": project["id"], "title": "Ship it", "assignees": [assignee.user_id], "due": due
    });
    let task = rest(ann, Method::POST, "/api/v1/tasks", body).await;
    task["id"].as_str().expect("id").to_owned()
}

pub async fn sla(account: &Account, task: &str) -> Value {
    rest(
        account,
        Method::GET,
        &format!("/api/v1/tasks/{task}/sla"),
        Value::Null,
    )
    .await
}

/// The task's SLA once `ready` holds for it (the scheduler learns of edits from their events).
pub async fn sla_until(account: &Account, task: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let every = Duration::from_millis(50);
    eventually("the SLA", every, async || sla(account, task).await, ready).await
}

/// The deadline events published about `task`: one reminder, one escalation with its alert.
pub async fn assert_fired_once(store: &taskflow_sync_server::store::Store, task: &str) {
    let events = store.published_events(0, 10_000).await.expect("events");
    let mut fired: Vec<&str> = events
        .iter()
        .filter(|e| e.event.key == task)
        .map(|e| e.event.kind.as_str())
        .filter(|kind| !matches!(*kind, "task.created" | "task.assigned"))
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        ["notification.system.alert", "task.due_soon", "task.overdue"]
    );
}

pub fn next_is(action: &'static str) -> impl Fn(&Value) -> bool {
    move |sla| sla["next"]["action"] == action
}

pub async fn patch(account: &Account, task: &str, body: Value) {
    rest(
        account,
        Method::PATCH,
        &format!("/api/v1/tasks/{task}"),
        body,
    )
    .await;
}

/// Waits until `at` (RFC 3339) has passed by `margin` seconds.
pub async fn past(at: &str, margin: f64) {
    let at: jiff::Timestamp = at.parse().expect("a time");
    let left = at.duration_since(jiff::Timestamp::now()).as_secs_f64() + margin;
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

async fn a_reminder_then_an_escalation_for_an_overdue_task(backend: Backend) {
    let db = TestDb::new(backend).await;
    reminder_then_escalation(db.config()).await;
}

pub async fn reminder_then_escalation(config: Config) {
    let (server, people) = team(config, &["Bob", "Cy"]).await;
    let (ann, bob, cy) = (&server.account, &people[0], &people[1]);
    ann.set_role(cy, "admin").await.expect("admin");
    remind_before(ann, 3).await;
    let due = in_seconds(8.0);
    let task = task_due(ann, bob, &due).await;

    let pending = sla_until(bob, &task, next_is("remind")).await;
    assert_eq!(pending["remindBeforeSeconds"], 3);
    let remind_at: jiff::Timestamp = pending["next"]["at"]
        .as_str()
        .expect("at")
        .parse()
        .expect("time");
    let due_at: jiff::Timestamp = due.parse().expect("due");
    assert_eq!(due_at.duration_since(remind_at).as_secs(), 3);

    // The assignee is reminded, then told it is overdue; so are the admins and owners.
    assert_eq!(
        kinds_once(bob, 4).await,
        [INVITED, "task.assigned", "task.due_soon", "task.overdue"]
    );
    assert_eq!(kinds_once(cy, 2).await, [INVITED, "task.overdue"]);
    assert_eq!(kinds_once(ann, 1).await, ["task.overdue"]);

    let done = sla(bob, &task).await;
    assert!(
        done["remindedAt"].is_string() && done["escalatedAt"].is_string(),
        "{done}"
    );
    assert_eq!(done["next"], Value::Null);

    // The workspace's offset goes back to the server's default (24 h); members may read it,
    // only admins and owners change it.
    let settings = format!("/api/v1/workspaces/{}/settings", ann.workspace_id);
    let body = json!({ "reminderOffsetSeconds": null });
    let reset = rest(ann, Method::PATCH, &settings, body).await;
    assert_eq!(reset["reminderOffsetSeconds"], 86_400);
    let read = rest(bob, Method::GET, &settings, Value::Null).await;
    assert_eq!(read["reminderOffsetSeconds"], 86_400);
    let refused = bob
        .request(Method::PATCH, &settings)
        .json(&json!({ "reminderOffsetSeconds": 60 }))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);
    assert_fired_once(&server.store, &task).await;
    server.stop().await;
}

async fn no_escalation_for_a_task_done_in_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    no_escalation_when_done_in_time(db.config()).await;
}

pub async fn no_escalation_when_done_in_time(config: Config) {
    let (server, people) = team(config, &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    remind_before(ann, 4).await;
    let due = in_seconds(8.0);
    let task = task_due(ann, bob, &due).await;
    assert_eq!(kinds_once(bob, 3).await[2..], ["task.due_soon"]);

    // Done before the due date: past it, nothing more happens.
    patch(bob, &task, json!({ "column": "done" })).await;
    sla_until(bob, &task, |sla| sla["finished"] == true).await;
    past(&due, 1.5).await;
    let after = sla(bob, &task).await;
    assert_eq!(after["escalatedAt"], Value::Null);
    assert_eq!(after["next"], Value::Null);
    assert_eq!(kinds_once(bob, 3).await[2..], ["task.due_soon"]);
    let events = server
        .store
        .published_events(0, 10_000)
        .await
        .expect("events");
    assert!(!events.iter().any(|e| e.event.kind == "task.overdue"));

    // A task of a project archived before its reminder: nothing at all.
    let due = in_seconds(8.0);
    let shelved = task_due(ann, bob, &due).await;
    let pending = sla_until(bob, &shelved, next_is("remind")).await;
    let project = pending["projectId"].as_str().expect("project").to_owned();
    let archive = format!("/api/v1/projects/{project}/archive");
    rest(ann, Method::POST, &archive, json!({})).await;
    past(&due, 1.5).await;
    let events = server
        .store
        .published_events(0, 10_000)
        .await
        .expect("events");
    let about_it: Vec<&str> = events
        .iter()
        .filter(|e| e.event.key == shelved)
        .map(|e| e.event.kind.as_str())
        .collect();
    assert_eq!(
        about_it,
        ["task.created", "task.assigned"],
        "nothing for a shelved board"
    );
    server.stop().await;
}

async fn moving_the_due_date_reschedules_both(backend: Backend) {
    let db = TestDb::new(backend).await;
    moved_due_dates(db.config()).await;
}

pub async fn moved_due_dates(config: Config) {
    let (server, people) = team(config, &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    remind_before(ann, 3).await;
    let far = in_seconds(60.0);
    let task = task_due(ann, bob, &far).await;
    sla_until(bob, &task, next_is("remind")).await;

    // Earlier: reminded three seconds before the new date, escalation at it.
    let soon = in_seconds(7.0);
    patch(ann, &task, json!({ "due": soon })).await;
    assert_eq!(kinds_once(bob, 3).await[2..], ["task.due_soon"]);
    let pending = sla_until(bob, &task, next_is("escalate")).await;
    assert_eq!(pending["due"].as_str(), Some(soon.as_str()));

    // Later again, before that escalation: a new reminder before the new date, and nothing at
    // the old one.
    let later = in_seconds(60.0);
    patch(ann, &task, json!({ "due": later })).await;
    let pending = sla_until(bob, &task, next_is("remind")).await;
    assert_eq!(pending["due"].as_str(), Some(later.as_str()));
    assert_eq!(
        pending["remindedAt"],
        Value::Null,
        "the reminder was for the old date"
    );
    past(&soon, 1.5).await;
    assert_eq!(kinds_once(bob, 3).await[2..], ["task.due_soon"]);
    assert_eq!(sla(bob, &task).await["escalatedAt"], Value::Null);

    // Removing the due date ends it.
    patch(ann, &task, json!({ "due": null })).await;
    let none = sla_until(bob, &task, |sla| sla["due"].is_null()).await;
    assert_eq!(none["next"], Value::Null);
    server.stop().await;
}

async fn a_server_killed_before_the_reminder_still_reminds_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    killed_before_the_reminder(&db, &[]).await;
}

/// With the servers started with `flags`.
pub async fn killed_before_the_reminder(db: &TestDb, flags: &[&str]) {
    let first = ServerProcess::start_with(db, flags).await;
    let ann = first.account.clone();
    let bob = Account::register(first.addr, "Bob")
        .await
        .expect("register");
    ann.add_member(&bob, "member").await.expect("join");
    remind_before(&ann, 3).await;
    let due = in_seconds(10.0);
    let task = task_due(&ann, &bob, &due).await;
    sla_until(&bob, &task, next_is("remind")).await;

    // Killed well before the reminder; started again before it is due.
    first.kill9().await;
    let second = ServerProcess::start_with(db, flags).await;
    let bob = bob.at(second.addr);
    assert_eq!(
        kinds_once(&bob, 4).await,
        [INVITED, "task.assigned", "task.due_soon", "task.overdue"]
    );
    let done = sla(&bob, &task).await;
    assert!(
        done["remindedAt"].is_string() && done["escalatedAt"].is_string(),
        "{done}"
    );
    second.terminate().await;
}

/// The Temporal hand-over clears a deadline's mark only for the facts it handed over.
async fn a_handed_over_mark_stays_when_newer_facts_came(backend: Backend) {
    let db = TestDb::new(backend).await;
    // A server makes the workspace, then leaves the store to this test alone.
    let server = crate::support::TestServer::start(db.config()).await;
    let workspace = server.account.workspace_id.clone();
    server.stop().await;
    let config = db.config();
    let store =
        taskflow_sync_server::store::Store::open(config.database_url.as_deref(), &config.data_dir)
            .await
            .expect("store");
    let default = 86_400_000;
    let marked = |row: Option<taskflow_sync_server::store::DeadlineRow>| {
        row.expect("recorded").next_at.is_some()
    };
    store
        .note_deadline(
            "p",
            "t",
            &workspace,
            Some(5_000),
            false,
            r#"{"v":1}"#,
            1_000,
        )
        .await
        .expect("noted");
    let handed = store.deadline("p", "t", default).await.expect("read");
    let handed = handed.expect("recorded");

    // Another due date meanwhile (in the same millisecond, even): still marked.
    store
        .note_deadline(
            "p",
            "t",
            &workspace,
            Some(6_000),
            false,
            r#"{"v":2}"#,
            1_000,
        )
        .await
        .expect("noted");
    store
        .deadline_handed_over(&handed, default, None)
        .await
        .expect("cleared");
    assert!(marked(
        store.deadline("p", "t", default).await.expect("read")
    ));

    // A new reminder offset for the workspace meanwhile: still marked.
    let newer = store.deadline("p", "t", default).await.expect("read");
    let newer = newer.expect("recorded");
    store
        .set_remind_before(&workspace, Some(60_000), 1_000)
        .await
        .expect("set");
    store
        .deadline_handed_over(&newer, default, None)
        .await
        .expect("cleared");
    assert!(marked(
        store.deadline("p", "t", default).await.expect("read")
    ));

    // The facts as they are now, handed over: the mark moves to the next action's time.
    let current = store.deadline("p", "t", default).await.expect("read");
    let current = current.expect("recorded");
    store
        .deadline_handed_over(&current, default, Some(5_000))
        .await
        .expect("cleared");
    let row = store.deadline("p", "t", default).await.expect("read");
    assert_eq!(
        row.expect("recorded").next_at,
        Some(5_000),
        "looked at again then"
    );

    // An event that changes neither the due date nor finishing asks nothing new.
    let same_facts = r#"{"v":3}"#;
    store
        .note_deadline("p", "t", &workspace, Some(6_000), false, same_facts, 2_000)
        .await
        .expect("noted");
    let row = store.deadline("p", "t", default).await.expect("read");
    assert_eq!(row.expect("recorded").next_at, Some(5_000));
    store.close().await;
}
