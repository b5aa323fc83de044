//! Deadlines on the embedded scheduler (durable timers in the database), on both backends, with
//! reminder offsets and due dates of seconds: reminder then escalation, none for a task done in
//! time, due dates moved, and a server killed between scheduling and firing.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_testkit::Account;

use crate::events::rest;
use crate::notifications::{INVITED, kinds_once, team};
use crate::support::{Backend, ServerProcess, TestDb, on_both_backends};

on_both_backends!(
    a_reminder_then_an_escalation_for_an_overdue_task,
    no_escalation_for_a_task_done_in_time,
    moving_the_due_date_reschedules_both,
    a_server_killed_before_the_reminder_still_reminds_once,
);

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: f64) -> String {
    let at = jiff::Timestamp::now() + Duration::from_secs_f64(seconds);
    at.round(jiff::Unit::Millisecond)
        .expect("rounds")
        .to_string()
}

async fn remind_before(ann: &Account, seconds: u64) {
    let path = format!("/api/v1/workspaces/{}/settings", ann.workspace_id);
    let body = json!({ "reminderOffsetSeconds": seconds });
    let settings = rest(ann, Method::PATCH, &path, body).await;
    assert_eq!(settings["reminderOffsetSeconds"], seconds);
}

/// A task in a new project of Ann's workspace, for `assignee`, due at `due`.
async fn task_due(ann: &Account, assignee: &Account, due: &str) -> String {
    let body = json!({ "workspaceId": ann.workspace_id, "name": "Deadlines" });
    let project = rest(ann, Method::POST, "/api/v1/projects", body).await;
    let body = json!({
        "projectId": project["id"], "title": "Ship it", "assignees": [assignee.user_id], "due": due
    });
    let task = rest(ann, Method::POST, "/api/v1/tasks", body).await;
    task["id"].as_str().expect("id").to_owned()
}

async fn sla(account: &Account, task: &str) -> Value {
    rest(
        account,
        Method::GET,
        &format!("/api/v1/tasks/{task}/sla"),
        Value::Null,
    )
    .await
}

/// The task's SLA once `ready` holds for it (the scheduler learns of edits from their events).
async fn sla_until(account: &Account, task: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sla = sla(account, task).await;
        if ready(&sla) {
            return sla;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SLA never got there: {sla}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn next_is(action: &'static str) -> impl Fn(&Value) -> bool {
    move |sla| sla["next"]["action"] == action
}

async fn patch(account: &Account, task: &str, body: Value) {
    rest(
        account,
        Method::PATCH,
        &format!("/api/v1/tasks/{task}"),
        body,
    )
    .await;
}

/// Waits until `at` (RFC 3339) has passed by `margin` seconds.
async fn past(at: &str, margin: f64) {
    let at: jiff::Timestamp = at.parse().expect("a time");
    let left = at.duration_since(jiff::Timestamp::now()).as_secs_f64() + margin;
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

async fn a_reminder_then_an_escalation_for_an_overdue_task(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob", "Cy"]).await;
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
    let events = server
        .store
        .published_events(0, 10_000)
        .await
        .expect("events");
    let mut fired: Vec<&str> = events
        .iter()
        .filter(|e| {
            e.event.key == task && e.event.kind != "task.created" && e.event.kind != "task.assigned"
        })
        .map(|e| e.event.kind.as_str())
        .collect();
    fired.sort();
    assert_eq!(
        fired,
        ["notification.system.alert", "task.due_soon", "task.overdue"]
    );
    server.stop().await;
}

async fn no_escalation_for_a_task_done_in_time(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob"]).await;
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
    let (server, people) = team(db.config(), &["Bob"]).await;
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
    let first = ServerProcess::start(&db).await;
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
    let second = ServerProcess::start(&db).await;
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
