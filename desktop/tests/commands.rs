//! The app's commands as the window calls them, through Tauri's mock runtime (IPC included),
//! against a real server: signing in and staying signed in, boards and cards, working offline,
//! notifications. What the app tells the window is recorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use taskflow_desktop::{App, Ui};
use taskflow_testkit::Account;
use taskflow_testkit::account::PASSWORD;
use taskflow_testkit::server::TestServer;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{WebviewWindow, WebviewWindowBuilder};

/// What the app told the window: events, and desktop notifications.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(String, Value)>>,
    notified: Mutex<Vec<String>>,
}

impl Ui for Recorder {
    fn emit(&self, event: &str, payload: Value) {
        self.events
            .lock()
            .expect("events")
            .push((event.to_owned(), payload));
    }

    fn notify(&self, title: &str, _body: &str) {
        self.notified
            .lock()
            .expect("notified")
            .push(title.to_owned());
    }
}

impl Recorder {
    fn saw(&self, event: &str, matches: impl Fn(&Value) -> bool) -> bool {
        let events = self.events.lock().expect("events");
        events
            .iter()
            .any(|(name, payload)| name == event && matches(payload))
    }
}

/// The app on `data_dir`, its window, and what it tells the window.
struct Desktop {
    _app: tauri::App<MockRuntime>,
    window: WebviewWindow<MockRuntime>,
    ui: Arc<Recorder>,
}

impl Desktop {
    fn open(data_dir: &std::path::Path) -> Desktop {
        let ui = Arc::new(Recorder::default());
        let app = taskflow_desktop::with_commands(mock_builder())
            .manage(App::new(data_dir.to_owned(), ui.clone()))
            .build(mock_context(noop_assets()))
            .expect("the app builds");
        let window = WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("the window opens");
        Desktop {
            _app: app,
            window,
            ui,
        }
    }

    /// Calls `command` as the window does; a failure answers the `{kind, message}` it sent.
    fn call<T: DeserializeOwned>(&self, command: &str, args: Value) -> Result<T, Value> {
        let request = InvokeRequest {
            cmd: command.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            // The app's own origin on Linux (a remote one may call nothing).
            url: "tauri://localhost".parse().expect("url"),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_owned(),
        };
        match get_ipc_response(&self.window, request) {
            Ok(body) => Ok(body.deserialize().expect("the answer's type")),
            Err(error) => Err(error),
        }
    }

    fn ok<T: DeserializeOwned>(&self, command: &str, args: Value) -> T {
        self.call(command, args)
            .unwrap_or_else(|e| panic!("{command} failed: {e}"))
    }

    fn sign_in(&self, server: &TestServer, email: &str) -> Value {
        self.ok(
            "sign_in",
            json!({ "server": format!("http://{}", server.addr), "email": email, "password": PASSWORD }),
        )
    }
}

/// Polls `check` for up to 20 s.
fn eventually<T: std::fmt::Debug>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(done) = check() {
            return done;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never happened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// A server whose test account (Ann) has Bob as a member of her workspace.
fn ann_and_bob(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (TestServer, Account, Account) {
    let server = rt.block_on(TestServer::start(dir));
    let ann = server.account.clone();
    let bob = rt
        .block_on(Account::register(server.addr, "Bob"))
        .expect("bob");
    rt.block_on(ann.add_member(&bob, "member")).expect("joined");
    (server, ann, bob)
}

#[test]
fn signing_in_stays_signed_in_until_signing_out() {
    let rt = runtime();
    let server_dir = tempfile::tempdir().expect("dir");
    let server = rt.block_on(TestServer::start(server_dir.path()));
    let data = tempfile::tempdir().expect("dir");
    let desktop = Desktop::open(data.path());
    assert_eq!(desktop.ok::<Value>("session", json!({})), Value::Null);

    // What was typed wrong, said as such.
    let email = server.account.email.clone();
    let http = format!("http://{}", server.addr);
    let refused = |server: &str, email: &str, password: &str| {
        desktop
            .call::<Value>(
                "sign_in",
                json!({ "server": server, "email": email, "password": password }),
            )
            .expect_err("refused")
    };
    assert_eq!(refused("", &email, PASSWORD)["kind"], "badInput");
    assert_eq!(
        refused("ftp://example.test", &email, PASSWORD)["kind"],
        "badInput"
    );
    assert_eq!(refused(&http, &email, "")["kind"], "badInput");
    let wrong = refused(&http, &email, "not the password");
    assert_eq!(wrong["kind"], "rejected", "{wrong}");
    assert_eq!(desktop.ok::<Value>("session", json!({})), Value::Null);

    let session = desktop.sign_in(&server, &email);
    assert_eq!(session["userId"], server.account.user_id.as_str());
    assert_eq!(
        session["serverUrl"],
        format!("ws://{}/api/v1/sync", server.addr)
    );
    drop(desktop);

    // The app started again: still signed in, as the same user.
    let again = Desktop::open(data.path());
    let kept: Value = again.ok("session", json!({}));
    assert_eq!(kept["userId"], server.account.user_id.as_str());
    let workspaces: Value = again.ok("workspaces", json!({}));
    assert_eq!(workspaces[0]["id"], server.account.workspace_id.as_str());

    again.ok::<()>("sign_out", json!({}));
    assert_eq!(again.ok::<Value>("session", json!({})), Value::Null);
    let signed_out = again
        .call::<Value>("workspaces", json!({}))
        .expect_err("signed out");
    assert_eq!(signed_out["kind"], "signedOut");
    drop(again);
    let after = Desktop::open(data.path());
    assert_eq!(after.ok::<Value>("session", json!({})), Value::Null);
    server.crash();
}

/// The board's card titles per column.
fn columns(board: &Value) -> Vec<(String, Vec<String>)> {
    board["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            let titles = c["cards"].as_array().expect("cards").iter();
            (
                c["id"].as_str().expect("id").to_owned(),
                titles
                    .map(|t| t["title"].as_str().expect("title").to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn card_in<'a>(board: &'a Value, title: &str) -> &'a Value {
    board["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .flat_map(|c| c["cards"].as_array().expect("cards"))
        .find(|card| card["title"] == title)
        .unwrap_or_else(|| panic!("no card {title}: {board}"))
}

#[test]
fn cards_are_made_moved_and_edited_and_reach_the_server() {
    let rt = runtime();
    let server_dir = tempfile::tempdir().expect("dir");
    let server = rt.block_on(TestServer::start(server_dir.path()));
    let ann = server.account.clone();
    let (project, document) = rt.block_on(ann.project("Launch")).expect("project");
    let data = tempfile::tempdir().expect("dir");
    let desktop = Desktop::open(data.path());
    desktop.sign_in(&server, &ann.email);

    let boards: Value = desktop.ok("boards", json!({ "workspace": ann.workspace_id }));
    assert_eq!(boards[0]["documentId"], document.to_string());
    let board = document.to_string();
    let opened: Value = desktop.ok("open_board", json!({ "board": board }));
    assert_eq!(opened["name"], "Launch");
    assert_eq!(
        columns(&opened),
        [
            ("todo".to_owned(), vec![]),
            ("doing".to_owned(), vec![]),
            ("done".to_owned(), vec![])
        ]
    );

    for title in ["Write the post", "Record the demo"] {
        let args = json!({ "board": board, "column": "todo", "title": title });
        desktop.ok::<Value>("add_card", args);
    }
    let post = card_in(
        &desktop.ok("board", json!({ "board": board })),
        "Write the post",
    )["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patch = json!({
        "description": "For the launch", "priority": "high", "labels": ["blog", " ", "launch"],
        "assignees": [ann.user_id], "due": 1_800_000_000_000_i64
    });
    let edited: Value = desktop.ok(
        "update_card",
        json!({ "board": board, "task": post, "patch": patch }),
    );
    assert_eq!(
        (&edited["priority"], &edited["labels"], &edited["due"]),
        (
            &json!("high"),
            &json!(["blog", "launch"]),
            &json!(1_800_000_000_000_i64)
        )
    );
    let commented: Value = desktop.ok(
        "add_comment",
        json!({ "board": board, "task": post, "body": "Draft is up" }),
    );
    assert_eq!(commented["comments"][0]["body"], "Draft is up");
    // Dragged into "doing", then the demo dragged above it.
    let record = card_in(
        &desktop.ok("board", json!({ "board": board })),
        "Record the demo",
    )["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let drag = |task: &str, column: &str, before: Option<&str>| {
        let args = json!({ "board": board, "task": task, "column": column, "before": before });
        desktop.ok::<()>("move_card", args);
    };
    drag(&post, "doing", None);
    drag(&record, "doing", Some(&post));
    let moved: Value = desktop.ok("board", json!({ "board": board }));
    assert_eq!(
        columns(&moved)[1],
        (
            "doing".to_owned(),
            vec!["Record the demo".to_owned(), "Write the post".to_owned()]
        )
    );

    // Bad input is refused and says why.
    let empty = desktop
        .call::<Value>(
            "add_card",
            json!({ "board": board, "column": "todo", "title": "  " }),
        )
        .expect_err("refused");
    assert_eq!(empty["kind"], "badInput");
    let bad_priority = desktop
        .call::<Value>(
            "update_card",
            json!({ "board": board, "task": post, "patch": { "priority": "asap" } }),
        )
        .expect_err("refused");
    assert_eq!(bad_priority["kind"], "badInput");
    let not_a_board = desktop
        .call::<Value>("open_board", json!({ "board": "not-a-board" }))
        .expect_err("refused");
    assert_eq!(not_a_board["kind"], "badInput");

    // The server has it all; the window was told as it happened.
    let tasks = eventually("the server having both cards in doing", || {
        let page = rt
            .block_on(ann.get(&format!("/api/v1/projects/{project}/tasks")))
            .expect("tasks");
        let doing: Vec<&Value> = page["tasks"]
            .as_array()?
            .iter()
            .filter(|t| t["column"] == "doing")
            .collect();
        (doing.len() == 2).then(|| page.clone())
    });
    let post_on_server = tasks["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["title"] == "Write the post")
        .expect("post");
    assert_eq!(post_on_server["priority"], "high");
    assert_eq!(post_on_server["commentCount"], 1);
    eventually("the synced status", || {
        let status: Value = desktop.ok("status", json!({ "board": board }));
        (status["state"] == "synced").then_some(())
    });
    assert!(
        desktop
            .ui
            .saw("board-changed", |p| p["documentId"] == board)
    );
    assert!(desktop.ui.saw("sync-status", |p| p["documentId"] == board));
    server.crash();
}

#[test]
fn edits_made_offline_wait_and_merge_when_the_server_is_back() {
    let rt = runtime();
    let server_dir = tempfile::tempdir().expect("dir");
    let server = rt.block_on(TestServer::start(server_dir.path()));
    let ann = server.account.clone();
    let (project, document) = rt.block_on(ann.project("Offline")).expect("project");
    let board = document.to_string();
    let data = tempfile::tempdir().expect("dir");
    let desktop = Desktop::open(data.path());
    desktop.sign_in(&server, &ann.email);
    desktop.ok::<Value>("open_board", json!({ "board": board }));

    // The server goes away: the card is made here, and waits.
    let addr = server.addr;
    server.crash();
    let args = json!({ "board": board, "column": "todo", "title": "Made on the train" });
    desktop.ok::<Value>("add_card", args);
    let waiting = eventually("an offline status with the change pending", || {
        let status: Value = desktop.ok("status", json!({ "board": board }));
        (status["state"] == "offline" && status["pending"].as_u64() >= Some(1)).then_some(status)
    });
    assert!(waiting["pending"].as_u64() >= Some(1));
    let reopened: Value = desktop.ok("open_board", json!({ "board": board }));
    assert_eq!(
        columns(&reopened)[0].1,
        ["Made on the train"],
        "offline, from the device"
    );

    // Back: the card reaches the server, and someone else's change reaches the window.
    let server = rt.block_on(TestServer::start_on(server_dir.path(), addr));
    let ann = ann.at(server.addr);
    eventually("the card on the server", || {
        let page = rt
            .block_on(ann.get(&format!("/api/v1/projects/{project}/tasks")))
            .ok()?;
        let titles: Vec<&str> = page["tasks"]
            .as_array()?
            .iter()
            .filter_map(|t| t["title"].as_str())
            .collect();
        (titles == ["Made on the train"]).then_some(())
    });
    rt.block_on(ann.post(
        "/api/v1/tasks",
        json!({ "projectId": project, "title": "Added over REST", "column": "doing" }),
    ))
    .expect("a task over REST");
    eventually("the REST task on the open board", || {
        let view: Value = desktop.ok("board", json!({ "board": board }));
        (columns(&view)[1].1 == ["Added over REST"]).then_some(())
    });
    assert!(
        desktop
            .ui
            .saw("sync-status", |p| p["status"]["state"] == "offline")
    );
    assert!(desktop.ui.saw("connection", |p| p["state"] == "online"));
    server.crash();
}

#[test]
fn notifications_arrive_live_and_on_the_desktop() {
    let rt = runtime();
    let server_dir = tempfile::tempdir().expect("dir");
    let (server, ann, bob) = ann_and_bob(&rt, server_dir.path());
    let (project, _) = rt.block_on(ann.project("Work")).expect("project");
    let data = tempfile::tempdir().expect("dir");
    let desktop = Desktop::open(data.path());
    desktop.sign_in(&server, &bob.email);
    eventually("the notification socket", || {
        desktop
            .ui
            .saw("notifications-synced", |_| true)
            .then_some(())
    });

    rt.block_on(ann.post(
        "/api/v1/tasks",
        json!({ "projectId": project, "title": "Review the budget", "assignees": [bob.user_id] }),
    ))
    .expect("assigned");
    // (The invitation may come live too, when the socket was quicker than the server.)
    let title = eventually("a desktop notification of the assignment", || {
        let notified = desktop.ui.notified.lock().expect("notified");
        notified
            .iter()
            .find(|t| t.contains("Review the budget"))
            .cloned()
    });
    assert!(title.contains("assigned you"), "{title}");
    assert!(desktop.ui.saw("notification", |p| p["notification"]["kind"]
        == "task.assigned"));
    let inbox: Value = desktop.ok("notifications", json!({}));
    let assigned = inbox["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .find(|n| n["kind"] == "task.assigned")
        .expect("in the inbox")
        .clone();
    assert_eq!(assigned["read"], false);

    desktop.ok::<()>("mark_read", json!({ "notification": assigned["id"] }));
    eventually("the read mark", || {
        desktop
            .ui
            .saw("notifications-read", |p| p["ids"][0] == assigned["id"])
            .then_some(())
    });
    server.crash();
}

#[test]
fn others_viewing_the_board_are_shown() {
    let rt = runtime();
    let server_dir = tempfile::tempdir().expect("dir");
    let (server, ann, bob) = ann_and_bob(&rt, server_dir.path());
    let (_, document) = rt.block_on(ann.project("Together")).expect("project");
    let board = document.to_string();
    let (ann_data, bob_data) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let ann_app = Desktop::open(ann_data.path());
    let bob_app = Desktop::open(bob_data.path());
    ann_app.sign_in(&server, &ann.email);
    bob_app.sign_in(&server, &bob.email);
    ann_app.ok::<Value>("open_board", json!({ "board": board }));
    bob_app.ok::<Value>("open_board", json!({ "board": board }));

    // Bob opens a card: Ann sees him on the board, on that card.
    let card: Value = bob_app.ok(
        "add_card",
        json!({ "board": board, "column": "todo", "title": "Plan" }),
    );
    bob_app.ok::<()>("set_viewing", json!({ "board": board, "task": card["id"] }));
    let viewers = eventually("Bob among Ann's viewers", || {
        let viewers: Value = ann_app.ok("viewers", json!({ "board": board }));
        let bob_there = viewers
            .as_array()?
            .iter()
            .any(|v| v["userId"] == bob.user_id.as_str() && v["taskId"] == card["id"]);
        bob_there.then_some(viewers)
    });
    assert!(!viewers.as_array().expect("viewers").is_empty());
    assert!(ann_app.ui.saw("presence", |p| {
        p["documentId"] == board.as_str()
            && p["viewers"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["userId"] == bob.user_id.as_str()))
    }));
    server.crash();
}
