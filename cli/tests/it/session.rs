//! What a person (or a script) does with `taskflow`: boards and tasks, sharing through a server,
//! working offline, watching live, and clear errors with meaningful exit codes.

use std::time::Duration;

use taskflow_testkit::server::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{User, columns};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_share_a_board_through_the_server() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let ann = User::signed_up("ann", &server).await;
    let bob = User::signed_up("bob", &server).await;
    ann.share_with(&bob, &server).await;

    let created = ann.json(&["board", "create", "Launch"]).await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"]["state"], "in_sync", "{created}");

    let post = ann
        .json(&[
            "task",
            "add",
            "Launch",
            "Write the post",
            "--assignee",
            "ann",
            "--priority",
            "high",
            "--due",
            "2026-12-24",
            "--label",
            "docs",
        ])
        .await;
    assert_eq!(post["due"], "2026-12-24T23:59:59Z");
    assert_eq!(post["createdBy"], "ann");
    assert_eq!(post["status"]["state"], "in_sync");
    ann.ok(&[
        "task",
        "add",
        "Launch",
        "Ship it",
        "--column",
        "In progress",
    ])
    .await;
    ann.ok(&["task", "add", "Launch", "Old idea"]).await;
    let post_id = post["id"].as_str().expect("id");
    ann.ok(&["task", "move", "Launch", &post_id[..6], "doing", "--top"])
        .await;
    ann.ok(&["task", "archive", "Launch", "Old idea"]).await;

    // A board the server does not have is a clear error, and leaves nothing behind.
    let stranger = taskflow_client_core::DocumentId::random().to_string();
    let err = bob.fails(3, &["board", "fetch", &stranger]).await;
    assert!(err.contains("the server has no board"), "{err}");
    assert!(bob.ok(&["board", "list"]).await.contains("No boards yet"));

    // Bob adds the board by id and sees it as Ann left it.
    let fetched = bob.json(&["board", "fetch", &id]).await;
    assert_eq!(
        columns(&fetched),
        [
            ("todo".into(), vec![]),
            ("doing".into(), strings(&["Write the post", "Ship it"])),
            ("done".into(), vec![]),
        ]
    );
    assert_eq!(fetched["archived"][0]["title"], "Old idea");
    let comment = bob
        .json(&["task", "comment", "Launch", "Ship it", "ready when you are"])
        .await;
    assert_eq!(comment["comments"][0]["author"], "bob");
    bob.ok(&["task", "done", "Launch", "Ship it"]).await;
    bob.ok(&[
        "task",
        "edit",
        "Launch",
        "Write the post",
        "--title",
        "Write the launch post",
        "--no-due",
    ])
    .await;

    // Ann's `board show` syncs first, so she sees Bob's edits.
    let shown = ann.json(&["board", "show", "Launch"]).await;
    assert_eq!(
        columns(&shown),
        [
            ("todo".into(), vec![]),
            ("doing".into(), strings(&["Write the launch post"])),
            ("done".into(), strings(&["Ship it"])),
        ]
    );
    assert_eq!(
        shown["columns"][1]["tasks"][0]["due"],
        serde_json::Value::Null
    );

    // The table a person reads: one column per board column, cards with their short ids.
    let table = ann.ok(&["board", "show", "Launch"]).await;
    for needle in [
        "Launch  (in sync)",
        "To do (0)",
        "In progress (1)",
        "Done (1)",
        "Write the launch post",
        &format!("#{}", &post_id[..8]),
        "@ann",
        "!high",
        "1 comments",
        "1 archived",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    assert_eq!(ann.json(&["board", "show", &id]).await["name"], "Launch");
    let listed = ann.ok(&["board", "list"]).await;
    assert!(
        listed.contains("Launch") && listed.contains("in sync"),
        "{listed}"
    );
    let detail = ann
        .ok(&["board", "show", "Launch", "--task", "Ship it"])
        .await;
    assert!(detail.contains("bob: ready when you are"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_message_and_exit_code() {
    let ann = User::offline("ann").await;
    ann.ok(&["board", "create", "Home"]).await;
    ann.ok(&["task", "add", "Home", "Buy milk"]).await;

    let err = ann.fails(3, &["board", "show", "Work"]).await;
    assert!(err.contains("no board named `Work`"), "{err}");
    let stranger = taskflow_client_core::DocumentId::random().to_string();
    let err = ann.fails(3, &["task", "add", &stranger, "x"]).await;
    assert!(err.contains("not in this profile's store"), "{err}");
    let err = ann
        .fails(3, &["task", "add", "Home", "x", "--column", "someday"])
        .await;
    assert!(
        err.contains("no column `someday`") && err.contains("todo, doing, done"),
        "{err}"
    );
    let err = ann
        .fails(2, &["task", "add", "Home", "x", "--due", "next friday"])
        .await;
    assert!(err.contains("malformed due date `next friday`"), "{err}");
    let err = ann.fails(3, &["task", "done", "Home", "Buy bread"]).await;
    assert!(err.contains("no task `Buy bread`"), "{err}");
    ann.fails(2, &["task", "add", "Home", "x", "--priority", "asap"])
        .await;
    ann.fails(2, &["task", "add", "Home", "  "]).await;
    ann.fails(2, &["task", "edit", "Home", "Buy milk"]).await;
    ann.fails(2, &["board", "fetch", "not-an-id"]).await;
    let err = ann.fails(2, &["sync"]).await;
    assert!(err.contains("has no server"), "{err}");
    ann.fails(3, &["--profile", "work", "board", "list"]).await;
    ann.fails(
        2,
        &["profile", "set", "work", "--server", "http://example.com"],
    )
    .await;

    // Scripts get the error as JSON too.
    let err = ann.fails(3, &["--json", "board", "show", "Work"]).await;
    let err: serde_json::Value = serde_json::from_str(err.trim()).expect("JSON error");
    assert_eq!(err["error"]["kind"], "not_found");

    // Nothing was damaged: the board is as it was.
    let board = ann.json(&["board", "show", "Home"]).await;
    assert_eq!(columns(&board)[0].1, ["Buy milk"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_made_while_the_server_is_down_sync_when_it_returns() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let ann = User::signed_up("ann", &server).await;
    let board = ann.json(&["board", "create", "Trip"]).await;
    let id = board["id"].as_str().expect("id").to_owned();
    let addr = server.addr;
    server.crash();

    let added = ann.json(&["task", "add", "Trip", "Book flights"]).await;
    assert_eq!(added["status"]["state"], "offline");
    assert_eq!(added["status"]["pending"], 1);
    let err = ann.fails(4, &["sync", "--timeout", "1s"]).await;
    assert!(err.contains("not in sync"), "{err}");
    // --offline never tries.
    let offline = ann
        .json(&["--offline", "task", "add", "Trip", "Pack"])
        .await;
    assert_eq!(offline["status"]["pending"], 2);

    let server = TestServer::start_on(dir.path(), addr).await;
    ann.ok(&["sync"]).await;
    let bob = User::signed_up("bob", &server).await;
    ann.share_with(&bob, &server).await;
    let seen = bob.json(&["board", "fetch", &id]).await;
    assert_eq!(columns(&seen)[0].1, ["Book flights", "Pack"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_remote_changes_as_they_arrive() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let ann = User::signed_up("ann", &server).await;
    let bob = User::signed_up("bob", &server).await;
    ann.share_with(&bob, &server).await;
    let id = ann.json(&["board", "create", "Live"]).await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    bob.ok(&["board", "fetch", &id]).await;

    let mut watch = ann.spawn(&["--json", "watch", "Live"]);
    let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
    let mut next = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("watch prints in time")
            .expect("read")
            .expect("watch still running");
        serde_json::from_str(&line).expect("JSON line")
    };
    assert_eq!(next().await["event"], "watching");
    // A person's watch prints lines.
    let mut text_watch = ann.spawn(&["watch", "Live"]);
    let mut text_lines = BufReader::new(text_watch.stdout.take().expect("stdout")).lines();
    let mut next_text = async || -> String {
        tokio::time::timeout(Duration::from_secs(30), text_lines.next_line())
            .await
            .expect("watch prints in time")
            .expect("read")
            .expect("watch still running")
    };
    assert!(next_text().await.starts_with("Watching 1 board"));

    let added = bob.json(&["task", "add", "Live", "Fix the bug"]).await;
    let task = added["id"].as_str().expect("id");
    let change = loop {
        let event = next().await;
        if event["event"] == "board_changed" {
            break event;
        }
    };
    assert_eq!(change["origin"], "remote");
    assert_eq!(change["tasks"][0]["id"], task);
    assert_eq!(change["tasks"][0]["created"], true);
    let line = loop {
        let line = next_text().await;
        if line.contains("added") {
            break line;
        }
    };
    assert_eq!(
        line,
        format!("Live: task #{} \"Fix the bug\" added", &task[..8])
    );
    text_watch.start_kill().expect("stop watch");

    bob.ok(&["task", "move", "Live", task, "doing"]).await;
    let change = loop {
        let event = next().await;
        if event["event"] == "board_changed" {
            break event;
        }
    };
    let fields: Vec<&str> = change["tasks"][0]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(fields.contains(&"column"), "{change}");
    watch.start_kill().expect("stop watch");
}
