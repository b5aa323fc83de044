//! Notifications on one node, on both backends: who is told what (from REST edits through the
//! events), the inbox over REST, the notification socket, idempotence and privacy.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskflow_proto::events::{Envelope, EventData, EventType, TaskState};
use taskflow_proto::notifications::{ClientMessage, ServerMessage};
use taskflow_sync_server::Config;
use taskflow_testkit::Account;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::events::rest;
use crate::support::{Backend, ServerProcess, TestDb, TestServer, on_both_backends};

on_both_backends!(
    each_rule_tells_the_right_people_and_nobody_else,
    a_repeated_event_makes_no_second_notification,
    the_inbox_pages_newest_first_and_filters_unread,
    nobody_reaches_another_users_notifications,
    the_socket_syncs_unread_then_pushes_new_ones_and_reads,
);

const WAIT: Duration = Duration::from_secs(20);

/// What each member of a [`team`] was told first: the invitation they accepted.
pub const INVITED: &str = "invitation.received";

/// A server configured so, with the test account (Ann, owner) and `names` as members of her
/// workspace. Each member was invited (and so notified, see [`INVITED`]); that notification is
/// read, so unread counts start at 0.
pub async fn team(config: Config, names: &[&str]) -> (TestServer, Vec<Account>) {
    let server = TestServer::start(config).await;
    let mut members = Vec::new();
    for name in names {
        let member = Account::register(server.addr, name)
            .await
            .expect("register");
        server
            .account
            .add_member(&member, "member")
            .await
            .expect("join");
        assert_eq!(kinds_once(&member, 1).await, [INVITED]);
        rest(
            &member,
            Method::POST,
            "/api/v1/notifications/read-all",
            json!({}),
        )
        .await;
        members.push(member);
    }
    (server, members)
}

/// The user's inbox, newest first, as `(kind, title)`.
pub async fn inbox(account: &Account) -> Vec<(String, String)> {
    let page = account
        .get("/api/v1/notifications?limit=200")
        .await
        .expect("inbox");
    page["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            let text = |k: &str| n[k].as_str().unwrap_or_default().to_owned();
            (text("kind"), text("title"))
        })
        .collect()
}

/// Waits until the user's inbox holds `n` notifications; answers their kinds, oldest first.
pub async fn kinds_once(account: &Account, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let items = inbox(account).await;
        if items.len() >= n {
            assert_eq!(
                items.len(),
                n,
                "more notifications than expected: {items:?}"
            );
            return items.into_iter().rev().map(|(kind, _)| kind).collect();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} notifications never arrived; the inbox holds {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a task in a new project of `workspace`; answers (project, task) ids.
pub async fn task_in(
    account: &Account,
    workspace: &str,
    title: &str,
    assignees: &[&str],
) -> (String, String) {
    let body = json!({ "workspaceId": workspace, "name": title });
    let project = rest(account, Method::POST, "/api/v1/projects", body).await;
    let project = project["id"].as_str().expect("project id").to_owned();
    let task = rest(
        account,
        Method::POST,
        "/api/v1/tasks",
        json!({ "projectId": project, "title": title, "assignees": assignees }),
    )
    .await;
    (project, task["id"].as_str().expect("id").to_owned())
}

/// [`task_in`] the account's own workspace.
pub async fn task_for(account: &Account, title: &str, assignees: &[&str]) -> (String, String) {
    task_in(account, &account.workspace_id, title, assignees).await
}

async fn patch_task(account: &Account, task: &str, body: Value) {
    rest(
        account,
        Method::PATCH,
        &format!("/api/v1/tasks/{task}"),
        body,
    )
    .await;
}

async fn comment(account: &Account, task: &str, text: &str) {
    let path = format!("/api/v1/tasks/{task}/comments");
    rest(account, Method::POST, &path, json!({ "body": text })).await;
}

/// An open notification socket.
pub struct Inbox {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Inbox {
    pub async fn open(account: &Account) -> Inbox {
        let url = format!(
            "{}/api/v1/notifications/ws?token={}",
            account.base.replacen("http", "ws", 1),
            account.access_token
        );
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Inbox { ws }
    }

    /// The next message from the server.
    pub async fn next(&mut self) -> ServerMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the socket stays open")
                .expect("a frame");
            match frame {
                WsMessage::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("a server message");
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn send(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).expect("json");
        self.ws
            .send(WsMessage::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(WsMessage::Text(text.into()))
            .await
            .expect("send");
    }
}

/// The notification a `notification_received` carries, and the unread count with it.
pub fn received(message: ServerMessage) -> (taskflow_proto::notifications::Notification, u64) {
    match message {
        ServerMessage::NotificationReceived {
            notification,
            unread_count,
        } => (*notification, unread_count),
        other => panic!("expected notification_received, got {other:?}"),
    }
}

async fn each_rule_tells_the_right_people_and_nobody_else(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob", "Cy", "Dee"]).await;
    let ann = &server.account;
    let [bob, cy, dee] = &people[..] else {
        unreachable!()
    };

    // Ann creates a task for Bob: Bob is told; Ann (the actor, and its creator) is not.
    let (project, task) = task_for(ann, "Fix the login", &[&bob.user_id]).await;
    assert_eq!(kinds_once(bob, 2).await, [INVITED, "task.assigned"]);
    let (_, title) = &inbox(bob).await[0];
    assert_eq!(title, "Tess Tester assigned you to “Fix the login”");

    // Cy watches it on purpose; Bob moves it: its creator Ann and watcher Cy are told.
    let watch = format!("/api/v1/tasks/{task}/watch");
    let answer = rest(cy, Method::PUT, &watch, Value::Null).await;
    assert_eq!(answer["watching"], true);
    patch_task(bob, &task, json!({ "column": "done" })).await;
    assert_eq!(kinds_once(ann, 1).await, ["task.status_changed"]);
    assert_eq!(kinds_once(cy, 2).await, [INVITED, "task.status_changed"]);
    assert_eq!(
        inbox(cy).await[0].1,
        "Bob moved “Fix the login” from To do to Done"
    );

    // Dee comments, mentioning Bob by name and Ann by email: both are told as mentioned, Cy
    // (watching) as a comment; Dee now watches the task as a commenter.
    let text = format!("@bob and @{} have a look", ann.email.to_uppercase());
    comment(dee, &task, &text).await;
    assert_eq!(
        kinds_once(bob, 3).await,
        [INVITED, "task.assigned", "comment.mentioned"]
    );
    assert_eq!(
        kinds_once(ann, 2).await,
        ["task.status_changed", "comment.mentioned"]
    );
    assert_eq!(
        kinds_once(cy, 3).await,
        [INVITED, "task.status_changed", "comment.added"]
    );
    let dees = rest(dee, Method::GET, &watch, Value::Null).await;
    assert_eq!(
        (dees["watching"].clone(), dees["reason"].clone()),
        (json!(true), json!("commenter"))
    );

    // Cy stops watching; Ann comments: assignee Bob and commenter Dee are told, Cy is not.
    rest(cy, Method::DELETE, &watch, Value::Null).await;
    comment(ann, &task, "done?").await;
    assert_eq!(kinds_once(dee, 2).await, [INVITED, "comment.added"]);
    assert_eq!(kinds_once(bob, 4).await[3..], ["comment.added"]);

    // Deadlines (events of the deadline engine): the assignee; when overdue also the admins.
    server.account.set_role(cy, "admin").await.expect("admin");
    let task_state = |assignees: Vec<String>| TaskState {
        assignees,
        ..task_state_of(&task)
    };
    let deadline = |kind: EventType| {
        let data = EventData {
            workspace_id: Some(ann.workspace_id.clone()),
            task_id: Some(task.clone()),
            task: Some(task_state(vec![bob.user_id.clone()])),
            ..EventData::default()
        };
        Envelope::new(uuid::Uuid::new_v4().to_string(), kind, 0, data)
    };
    let notifier = &server.shared.notifier;
    notifier
        .on_event(&deadline(EventType::TaskDueSoon))
        .await
        .expect("due soon");
    notifier
        .on_event(&deadline(EventType::TaskOverdue))
        .await
        .expect("overdue");
    assert_eq!(
        kinds_once(bob, 6).await[4..],
        ["task.due_soon", "task.overdue"]
    );
    assert_eq!(kinds_once(cy, 4).await[3..], ["task.overdue"]);
    assert_eq!(kinds_once(ann, 3).await[2..], ["task.overdue"]);
    assert_eq!(kinds_once(dee, 2).await, [INVITED, "comment.added"]);

    // A name that is no account (a client may write anything into a board) is passed over:
    // it watches nothing, and the real assignee is still told.
    let ghostly = EventData {
        actor: Some(ann.user_id.clone()),
        workspace_id: Some(ann.workspace_id.clone()),
        project_id: Some(project.clone()),
        task_id: Some(task.clone()),
        task: Some(task_state(vec!["ghost".into(), bob.user_id.clone()])),
        added: vec!["ghost".into(), bob.user_id.clone()],
        ..EventData::default()
    };
    let id = uuid::Uuid::new_v4().to_string();
    let ghostly = Envelope::new(id, EventType::TaskAssigned, 0, ghostly);
    notifier.on_event(&ghostly).await.expect("a ghost assignee");
    assert_eq!(kinds_once(bob, 7).await[6..], ["task.assigned"]);

    // An invitation to someone with an account tells them in the app (email: tests/it/email.rs).
    let eve = Account::register(server.addr, "Eve")
        .await
        .expect("register");
    let path = format!("/api/v1/workspaces/{}/invitations", ann.workspace_id);
    rest(
        ann,
        Method::POST,
        &path,
        json!({ "email": eve.email, "role": "viewer" }),
    )
    .await;
    assert_eq!(kinds_once(&eve, 1).await, ["invitation.received"]);
    assert_eq!(
        inbox(&eve).await[0].1,
        "Tess Tester invited you to Tess Tester's workspace as viewer"
    );
    server.stop().await;
}

/// A task's state as deadline events carry it (what the rules read is the assignees).
fn task_state_of(task: &str) -> TaskState {
    TaskState {
        id: task.to_owned(),
        title: "Fix the login".into(),
        description: String::new(),
        column: taskflow_proto::events::ColumnRef {
            id: "done".into(),
            name: Some("Done".into()),
        },
        position: "80".into(),
        assignees: Vec::new(),
        labels: Vec::new(),
        priority: "none".into(),
        due: Some("2027-01-01T09:00:00Z".into()),
        archived: false,
        created_by: String::new(),
        created_at: "2026-12-01T00:00:00Z".into(),
        updated_at: "2026-12-01T00:00:00Z".into(),
        comment_count: 0,
    }
}

async fn a_repeated_event_makes_no_second_notification(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob"]).await;
    let bob = &people[0];
    let mut socket = Inbox::open(bob).await;
    assert!(matches!(
        socket.next().await,
        ServerMessage::UnreadSync {
            unread_count: 0,
            ..
        }
    ));

    task_for(&server.account, "Once", &[&bob.user_id]).await;
    let (first, unread) = received(socket.next().await);
    assert_eq!((first.kind.as_str(), unread), ("task.assigned", 1));

    // The same event again (as after a crash before the consumer's offset was committed).
    let events = server
        .store
        .published_events(0, 1000)
        .await
        .expect("events");
    let assigned = events
        .iter()
        .map(|e| serde_json::from_str::<Envelope>(&e.event.payload).expect("envelope"))
        .find(|e| e.id == first.event_id)
        .expect("the assignment event is in the outbox");
    server
        .shared
        .notifier
        .on_event(&assigned)
        .await
        .expect("again");
    server
        .shared
        .notifier
        .on_event(&assigned)
        .await
        .expect("and again");
    assert_eq!(kinds_once(bob, 2).await, [INVITED, "task.assigned"]);

    // Nothing was pushed for the repeats: the next message is the next notification.
    task_for(&server.account, "Twice", &[&bob.user_id]).await;
    let (second, unread) = received(socket.next().await);
    assert_eq!(unread, 2);
    assert_ne!(second.event_id, first.event_id);
    server.stop().await;
}

async fn the_inbox_pages_newest_first_and_filters_unread(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob"]).await;
    let bob = &people[0];
    let (_, task) = task_for(&server.account, "Paging", &[]).await;
    // Five notifications for Bob: assigned, then four comments (he watches as an assignee).
    patch_task(
        &server.account,
        &task,
        json!({ "assignees": [bob.user_id] }),
    )
    .await;
    for i in 1..=4 {
        comment(&server.account, &task, &format!("comment {i}")).await;
    }
    kinds_once(bob, 6).await;

    let mut seen = Vec::new();
    let mut path = "/api/v1/notifications?limit=2".to_owned();
    loop {
        let page = bob.get(&path).await.expect("page");
        assert_eq!(page["unreadCount"], 5);
        for n in page["notifications"].as_array().expect("list") {
            seen.push((
                n["kind"].as_str().expect("kind").to_owned(),
                n["body"].as_str().expect("body").to_owned(),
            ));
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/notifications?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<(String, String)> = [
        ("comment.added", "comment 4"),
        ("comment.added", "comment 3"),
        ("comment.added", "comment 2"),
        ("comment.added", "comment 1"),
        ("task.assigned", ""),
        (INVITED, ""),
    ]
    .iter()
    .map(|(k, b)| (k.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, expected, "newest first, each once across pages");

    // Reading one: it leaves the unread filter and the count.
    let all = bob.get("/api/v1/notifications").await.expect("list");
    let newest = all["notifications"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let read = rest(
        bob,
        Method::PATCH,
        &format!("/api/v1/notifications/{newest}/read"),
        Value::Null,
    )
    .await;
    assert_eq!(read["read"], true);
    assert!(read["readAt"].is_string());
    let unread = bob
        .get("/api/v1/notifications?unread=true")
        .await
        .expect("unread");
    let ids: Vec<&str> = unread["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(!ids.contains(&newest.as_str()));
    let count = bob
        .get("/api/v1/notifications/unread-count")
        .await
        .expect("count");
    assert_eq!(count["unreadCount"], 4);

    let marked = rest(
        bob,
        Method::POST,
        "/api/v1/notifications/read-all",
        json!({}),
    )
    .await;
    assert_eq!(
        (marked["marked"].clone(), marked["unreadCount"].clone()),
        (json!(4), json!(0))
    );
    let unread = bob
        .get("/api/v1/notifications?unread=true")
        .await
        .expect("unread");
    assert_eq!(unread["notifications"], json!([]));

    for bad in [
        "limit=0",
        "limit=201",
        "cursor=abc",
        "unread=maybe",
        "sort=asc",
    ] {
        let response = bob
            .request(Method::GET, &format!("/api/v1/notifications?{bad}"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{bad}"
        );
    }
    server.stop().await;
}

async fn nobody_reaches_another_users_notifications(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    let mut bobs = Inbox::open(bob).await;
    bobs.next().await;

    // Bob assigns Ann, then Ann assigns Bob: Bob's socket carries only the second.
    task_in(bob, &ann.workspace_id, "For Ann", &[&ann.user_id]).await;
    kinds_once(ann, 1).await;
    task_for(ann, "For Bob", &[&bob.user_id]).await;
    let (mine, _) = received(bobs.next().await);
    assert_eq!(mine.title, "Tess Tester assigned you to “For Bob”");

    let anns = ann.get("/api/v1/notifications").await.expect("list");
    let hers = anns["notifications"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(inbox(bob).await.len(), 2, "Bob lists only his own");
    let path = format!("/api/v1/notifications/{hers}/read");
    let response = bob
        .request(Method::PATCH, &path)
        .send()
        .await
        .expect("request");
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "Ann's is not Bob's to read"
    );
    bobs.send(&ClientMessage::MarkRead { id: hers.clone() })
        .await;
    assert!(matches!(bobs.next().await, ServerMessage::Error { .. }));
    let anns = ann
        .get("/api/v1/notifications/unread-count")
        .await
        .expect("count");
    assert_eq!(anns["unreadCount"], 1, "Ann's stays unread");

    // Without a token, or with a bad one, there is no socket.
    for query in ["", "?token=nonsense"] {
        let url = format!("ws://{}/api/v1/notifications/ws{query}", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{query}");
            }
            other => panic!("expected 401 for {query:?}, got {other:?}"),
        }
    }
    server.stop().await;
}

async fn the_socket_syncs_unread_then_pushes_new_ones_and_reads(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, people) = team(db.config(), &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    let (_, task) = task_for(ann, "Sockets", &[&bob.user_id]).await;
    kinds_once(bob, 2).await;

    // Both of Bob's sockets start with what is unread.
    let mut laptop = Inbox::open(bob).await;
    let mut phone = Inbox::open(bob).await;
    for socket in [&mut laptop, &mut phone] {
        match socket.next().await {
            ServerMessage::UnreadSync {
                unread_count,
                items,
            } => {
                assert_eq!(unread_count, 1);
                assert_eq!(items.len(), 1);
                assert_eq!(items[0].kind, "task.assigned");
                assert_eq!(items[0].task_id.as_deref(), Some(task.as_str()));
            }
            other => panic!("expected unread_sync, got {other:?}"),
        }
    }

    // A new notification reaches both.
    comment(ann, &task, "news").await;
    let (on_laptop, unread) = received(laptop.next().await);
    assert_eq!(
        (on_laptop.kind.as_str(), on_laptop.body.as_str(), unread),
        ("comment.added", "news", 2)
    );
    let (on_phone, _) = received(phone.next().await);
    assert_eq!(on_phone.id, on_laptop.id);

    // Read on the laptop: the phone is told, and the laptop learns the new count.
    laptop
        .send(&ClientMessage::MarkRead {
            id: on_laptop.id.clone(),
        })
        .await;
    for socket in [&mut phone, &mut laptop] {
        assert_eq!(
            socket.next().await,
            ServerMessage::Read {
                ids: vec![on_laptop.id.clone()],
                all: false,
                unread_count: 1
            }
        );
    }

    // Read over REST: every socket is told.
    rest(
        bob,
        Method::POST,
        "/api/v1/notifications/read-all",
        json!({}),
    )
    .await;
    for socket in [&mut laptop, &mut phone] {
        assert_eq!(
            socket.next().await,
            ServerMessage::Read {
                ids: vec![],
                all: true,
                unread_count: 0
            }
        );
    }

    // A message the server does not understand is refused; the socket goes on.
    laptop.send_text("{\"type\":\"delete_everything\"}").await;
    assert!(matches!(laptop.next().await, ServerMessage::Error { .. }));
    comment(ann, &task, "still here").await;
    assert_eq!(received(laptop.next().await).0.body, "still here");
    server.stop().await;
}

/// Two server processes on one PostgreSQL database and one Redis: a notification made on one
/// node reaches the socket held by the other, through that node's own channel, and a node's
/// claim on a user's sockets runs out when the node dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_reaches_the_socket_held_by_another_node() {
    let db = TestDb::new(Backend::Postgres).await;
    let redis_url = crate::redis::redis_url();
    let flags = ["--redis-url", &redis_url, "--notification-route-ttl", "2s"];
    let a = ServerProcess::start_with(&db, &flags).await;
    let b = ServerProcess::start_with(&db, &flags).await;
    let ann = &a.account;
    let bob = Account::register(a.addr, "Bob").await.expect("register");
    ann.add_member(&bob, "member").await.expect("join");
    assert_eq!(kinds_once(&bob, 1).await, [INVITED]);

    // Bob's socket is on node B; Ann works on node A.
    let mut socket = Inbox::open(&bob.at(b.addr)).await;
    socket.next().await;
    task_for(ann, "Across nodes", &[&bob.user_id]).await;
    let (notification, unread) = received(socket.next().await);
    let title = "Tess Tester assigned you to “Across nodes”";
    assert_eq!((notification.title.as_str(), unread), (title, 2));

    // Read on node A (REST): the socket on node B is told.
    let read = format!("/api/v1/notifications/{}/read", notification.id);
    rest(&bob, Method::PATCH, &read, Value::Null).await;
    assert_eq!(
        socket.next().await,
        ServerMessage::Read {
            ids: vec![notification.id.clone()],
            all: false,
            unread_count: 1
        }
    );

    // In Redis: Bob's route names node B alone, with a TTL; each node listens on its own
    // channel.
    let client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("taskflow:*:notify:user:{}", bob.user_id))
        .query_async(&mut conn)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let route: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("route");
    assert_eq!(route.len(), 1, "only node B holds Bob's socket: {route:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("ttl");
    assert!(ttl > 0 && ttl <= 2000, "{ttl}");
    let prefix = keys[0].split("notify:").next().expect("prefix").to_owned();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg(format!("{prefix}notify:node:*"))
        .query_async(&mut conn)
        .await
        .expect("channels");
    assert_eq!(channels.len(), 2, "one channel per node: {channels:?}");
    let node_b = format!(
        "{prefix}notify:node:{}",
        route.keys().next().expect("node B")
    );
    assert!(channels.contains(&node_b), "{channels:?}");

    // Node B dies with the socket open: its claim expires on its own.
    b.kill9().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .expect("exists");
        if !exists {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead node's route never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(a);
}
