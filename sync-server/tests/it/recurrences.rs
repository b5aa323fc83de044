//! Recurring tasks on the embedded scheduler, on both backends: rules over REST (checked,
//! refused when wrong), one task per tick and none twice, across a kill -9.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskflow_testkit::Account;

use crate::events::rest;
use crate::notifications::team;
use crate::support::{Backend, ServerProcess, TestDb, on_both_backends};

on_both_backends!(
    rules_are_checked_kept_and_refused_when_wrong,
    each_tick_makes_one_task_and_none_twice,
    a_server_killed_between_ticks_makes_none_twice,
);

const EVERY_TWO_SECONDS: &str = "*/2 * * * * *";

pub async fn project(account: &Account, name: &str) -> String {
    let body = json!({ "workspaceId": account.workspace_id, "name": name });
    let project = rest(account, Method::POST, "/api/v1/projects", body).await;
    project["id"].as_str().expect("id").to_owned()
}

async fn status(account: &Account, method: Method, path: &str, body: Value) -> StatusCode {
    account
        .request(method, path)
        .json(&body)
        .send()
        .await
        .expect("request")
        .status()
}

/// A rule making "Standup {date}" every two seconds, due an hour after each run.
pub fn standup(assignee: &str) -> Value {
    json!({
        "cron": EVERY_TWO_SECONDS,
        "timezone": "Europe/Paris",
        "template": { "title": "Standup {date}", "assignees": [assignee], "dueInMinutes": 60 }
    })
}

/// The project's tasks' due dates (milliseconds), each the scheduled time of its run + 1 h.
pub async fn runs(account: &Account, project: &str) -> Vec<i64> {
    let path = format!("/api/v1/projects/{project}/tasks?limit=200");
    let page = rest(account, Method::GET, &path, Value::Null).await;
    page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| {
            let due: jiff::Timestamp = t["due"].as_str().expect("due").parse().expect("time");
            due.as_millisecond() - 3_600_000
        })
        .collect()
}

/// Waits until the project has at least `n` tasks; answers their runs, sorted.
pub async fn until_runs(account: &Account, project: &str, n: usize) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut runs = runs(account, project).await;
        if runs.len() >= n {
            runs.sort();
            return runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} runs",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn assert_one_task_per_tick(runs: &[i64]) {
    let distinct: BTreeSet<&i64> = runs.iter().collect();
    assert_eq!(distinct.len(), runs.len(), "a run made two tasks: {runs:?}");
    assert!(
        runs.iter().all(|r| r % 2_000 == 0),
        "runs fall on ticks: {runs:?}"
    );
}

async fn rules_are_checked_kept_and_refused_when_wrong(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob", "Vi"]).await;
    let (ann, bob, vi) = (&server.account, &people[0], &people[1]);
    ann.set_role(vi, "viewer").await.expect("viewer");
    let project = project(ann, "Rules").await;
    let path = format!("/api/v1/projects/{project}/recurrences");

    let body = json!({
        "cron": "0 9 * * MON-FRI",
        "timezone": "Europe/Paris",
        "template": { "title": "Standup {date}", "assignees": [bob.email], "priority": "high" }
    });
    let rule = rest(bob, Method::POST, &path, body).await;
    assert_eq!(rule["cron"], "0 9 * * MON-FRI");
    assert_eq!(
        rule["template"]["assignees"],
        json!([bob.user_id]),
        "kept as ids"
    );
    assert_eq!(rule["enabled"], true);
    let next: jiff::Timestamp = rule["nextRunAt"]
        .as_str()
        .expect("next run")
        .parse()
        .expect("time");
    let local = next.to_zoned(jiff::tz::TimeZone::get("Europe/Paris").expect("zone"));
    assert_eq!((local.hour(), local.minute()), (9, 0));
    assert!(!matches!(
        local.weekday(),
        jiff::civil::Weekday::Saturday | jiff::civil::Weekday::Sunday
    ));

    let listed = rest(vi, Method::GET, &path, Value::Null).await;
    assert_eq!(listed["recurrences"][0]["id"], rule["id"]);
    let one = format!("{path}/{}", rule["id"].as_str().expect("id"));
    let off = rest(bob, Method::PATCH, &one, json!({ "enabled": false })).await;
    assert_eq!(
        (off["enabled"].clone(), off["nextRunAt"].clone()),
        (json!(false), Value::Null)
    );

    for (body, why) in [
        (
            json!({ "cron": "0 9 * *", "template": { "title": "x" } }),
            "four fields",
        ),
        (
            json!({ "cron": "0 9 * * 1-5", "template": { "title": "x" } }),
            "numbered days",
        ),
        (
            json!({ "cron": "0 25 * * *", "template": { "title": "x" } }),
            "hour 25",
        ),
        (
            json!({ "cron": "0 9 * * *", "timezone": "Mars/Olympus", "template": { "title": "x" } }),
            "zone",
        ),
        (
            json!({ "cron": "0 9 * * *", "template": { "title": "" } }),
            "empty title",
        ),
        (
            json!({ "cron": "0 9 * * *", "template": { "title": "x", "assignees": ["nobody@x.test"] } }),
            "stranger",
        ),
        (
            json!({ "cron": "0 9 * * *", "template": { "title": "x", "colour": "red" } }),
            "unknown field",
        ),
    ] {
        assert_eq!(
            status(bob, Method::POST, &path, body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{why}"
        );
    }
    let body = json!({ "cron": "0 9 * * *", "template": { "title": "x" } });
    assert_eq!(
        status(vi, Method::POST, &path, body.clone()).await,
        StatusCode::FORBIDDEN
    );
    let outsider = Account::register(server.addr, "Out")
        .await
        .expect("register");
    assert_eq!(
        status(&outsider, Method::GET, &path, Value::Null).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&outsider, Method::GET, &one, Value::Null).await,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        status(bob, Method::DELETE, &one, Value::Null).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        status(bob, Method::GET, &one, Value::Null).await,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

async fn each_tick_makes_one_task_and_none_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    let project = project(ann, "Standups").await;
    let path = format!("/api/v1/projects/{project}/recurrences");
    let rule = rest(ann, Method::POST, &path, standup(&bob.user_id)).await;
    let created: jiff::Timestamp = rule["createdAt"]
        .as_str()
        .expect("at")
        .parse()
        .expect("time");

    until_runs(ann, &project, 3).await;
    let one = format!("{path}/{}", rule["id"].as_str().expect("id"));
    rest(ann, Method::PATCH, &one, json!({ "enabled": false })).await;

    // One task per run, on the rule's ticks, the last run's among them. (A run in flight when
    // the rule was turned off may still land: read until they agree.)
    let first = (created.as_millisecond() / 2_000 + 1) * 2_000;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let made = loop {
        let stopped = rest(ann, Method::GET, &one, Value::Null).await;
        let last: jiff::Timestamp = stopped["lastRunAt"]
            .as_str()
            .expect("ran")
            .parse()
            .expect("time");
        let mut made = runs(ann, &project).await;
        made.sort();
        assert_one_task_per_tick(&made);
        if made.last() == Some(&last.as_millisecond()) {
            break made;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "made {made:?}, last {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(made.len() >= 3 && made[0] >= first, "{made:?}");
    let expected = made;

    // A run made again (as after a crash before it was recorded) finds its task there.
    let row = server
        .store
        .recurrence(rule["id"].as_str().expect("id"))
        .await
        .expect("rule")
        .expect("kept");
    let again = taskflow_sync_server::recurrences::make_task(&server.shared, &row, expected[0])
        .await
        .expect("made again");
    let id = taskflow_sync_server::recurrences::task_id(&row.id, expected[0]);
    assert_eq!(again, (id, false), "found, not made");
    assert_eq!(runs(ann, &project).await.len(), expected.len());
    // A timer that moved on since (the rule changed meanwhile) is left as it is.
    let moved = server
        .store
        .ran_recurrence(&row.id, expected[0], expected[0], None)
        .await
        .expect("store");
    assert!(!moved, "the rule's timer no longer says that run");

    let page = rest(
        bob,
        Method::GET,
        &format!("/api/v1/projects/{project}/tasks"),
        Value::Null,
    )
    .await;
    let task = &page["tasks"][0];
    assert!(
        task["title"]
            .as_str()
            .expect("title")
            .starts_with("Standup 20"),
        "{task}"
    );
    assert_eq!(task["assignees"], json!([bob.user_id]));
    server.stop().await;
}

async fn a_server_killed_between_ticks_makes_none_twice(backend: Backend) {
    let db = TestDb::new(backend).await;
    let first = ServerProcess::start(&db).await;
    let ann = first.account.clone();
    let project = project(&ann, "Standups").await;
    let path = format!("/api/v1/projects/{project}/recurrences");
    rest(&ann, Method::POST, &path, standup(&ann.user_id)).await;
    until_runs(&ann, &project, 2).await;

    first.kill9().await;
    let second = ServerProcess::start(&db).await;
    let ann = ann.at(second.addr);
    let before = runs(&ann, &project).await.len();
    let made = until_runs(&ann, &project, before + 2).await;
    assert_one_task_per_tick(&made);
    second.terminate().await;
}
