//! The tasks API: REST writes are board changes that live clients receive at once, socket
//! edits show in REST reads, the projection always equals the document, idempotency keys,
//! versions with `If-Match`, validation, and the cached project view.

use std::collections::BTreeMap;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc, ScalarValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskflow_proto::DocumentId;
use taskflow_proto::board::ops::{self, NewTask, Position, TaskEdit};
use taskflow_proto::board::{Board, ColumnId, CommentId, Priority, TaskId};
use taskflow_testkit::{Account, Peer};

use crate::support::{Backend, TestDb, TestServer, on_both_backends};

on_both_backends!(
    the_task_api_round_trip,
    rest_and_socket_edits_meet_on_one_board,
    random_socket_edits_keep_the_projection_equal_to_the_document,
    an_idempotency_key_makes_one_task,
    versions_refuse_writes_based_on_stale_reads,
    vandalised_boards_never_break_the_projection,
);

/// One answer: status, headers and JSON body (`null` when empty).
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem type of an error answer.
    fn problem(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn call(account: &Account, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut request = account.request(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request).await
}

/// Creates a task over REST; its JSON.
async fn create(account: &Account, body: Value) -> Value {
    let answer = call(account, Method::POST, "/api/v1/tasks", Some(body)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body
}

/// Every task of a project, live and archived, through the paged listing (small pages, so
/// paging itself is exercised).
async fn all_tasks(account: &Account, project: &str) -> BTreeMap<String, Value> {
    let mut tasks = BTreeMap::new();
    for archived in [false, true] {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/projects/{project}/tasks?limit=7&archived={archived}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = account.get(&path).await.expect("list");
            for task in page["tasks"].as_array().expect("tasks") {
                let id = task["id"].as_str().expect("id").to_owned();
                assert!(tasks.insert(id, task.clone()).is_none(), "listed twice");
            }
            match page["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
    }
    tasks
}

/// A peer of `account` holding the board `id`.
async fn peer_on(account: &Account, name: &str, id: DocumentId) -> Peer {
    let mut peer = Peer::connect_as(account, name).await.expect("join");
    peer.request(id).await.expect("request");
    peer.until_doc(id, |d| Board::read(d).is_ok())
        .await
        .expect("the board arrives");
    peer
}

fn titles(doc: &automerge::Automerge) -> Vec<String> {
    Board::read(doc)
        .map(|b| b.tasks.values().map(|t| t.title.clone()).collect())
        .unwrap_or_default()
}

/// The board as the server stores it.
async fn stored_board(server: &TestServer, id: DocumentId) -> automerge::Automerge {
    let stored = server.store.load(&id).await.expect("load").expect("stored");
    automerge::Automerge::load(&stored.concatenated()).expect("loads")
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .expect("time")
        .to_string()
}

async fn the_task_api_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, _) = ann.project("Launch").await.expect("project");

    let task = create(
        ann,
        json!({
            "projectId": project, "title": "  Write the post ", "description": "800 words",
            "column": "doing", "assignees": [ann.email.to_uppercase()], "labels": ["blog", "blog", "q4"],
            "priority": "high", "due": "2026-12-24"
        }),
    )
    .await;
    let id = task["id"].as_str().expect("id").to_owned();
    assert_eq!(task["title"], "Write the post");
    assert_eq!(task["description"], "800 words");
    assert_eq!(task["column"], "doing");
    assert_eq!(task["assignees"], json!([ann.user_id]));
    assert_eq!(task["labels"], json!(["blog", "q4"]));
    assert_eq!(task["priority"], "high");
    assert_eq!(task["due"], "2026-12-24T23:59:59.999Z");
    assert_eq!(task["createdBy"], json!(ann.user_id));
    assert_eq!(
        (task["archived"].clone(), task["commentCount"].clone()),
        (json!(false), json!(0))
    );
    assert_eq!(task["projectId"], json!(project));

    // Read back, with its version as ETag.
    let read = call(ann, Method::GET, &format!("/api/v1/tasks/{id}"), None).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, task);
    let etag = read.header("etag").expect("etag").to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", task["version"].as_str().expect("version"))
    );

    // A second task, then placed above the first in its column.
    let second = create(
        ann,
        json!({ "projectId": project, "title": "Pick a picture" }),
    )
    .await;
    let second_id = second["id"].as_str().expect("id");
    assert_eq!(second["column"], "todo", "the first column by default");
    let moved = call(
        ann,
        Method::PATCH,
        &format!("/api/v1/tasks/{second_id}"),
        Some(json!({ "column": "doing", "position": { "before": id } })),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.body);
    assert_eq!(moved.body["column"], "doing");
    assert!(moved.body["position"].as_str() < task["position"].as_str());

    // Field edits; a null due date clears it; an unchanged field stays.
    let edited = call(
        ann,
        Method::PATCH,
        &format!("/api/v1/tasks/{id}"),
        Some(json!({ "title": "Write the launch post", "due": null, "labels": ["blog"], "priority": "urgent" })),
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    assert_eq!(edited.body["title"], "Write the launch post");
    assert_eq!(edited.body["due"], Value::Null);
    assert_eq!(edited.body["labels"], json!(["blog"]));
    assert_eq!(edited.body["priority"], "urgent");
    assert_eq!(edited.body["description"], "800 words");
    assert_ne!(edited.body["version"], task["version"]);

    // Comments, oldest first.
    for body in ["first!", "second"] {
        let answer = call(
            ann,
            Method::POST,
            &format!("/api/v1/tasks/{id}/comments"),
            Some(json!({ "body": body })),
        )
        .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["author"], json!(ann.user_id));
        assert_eq!(answer.body["taskId"], json!(id));
    }
    let comments = ann
        .get(&format!("/api/v1/tasks/{id}/comments"))
        .await
        .expect("comments");
    let bodies: Vec<&str> = comments["comments"]
        .as_array()
        .expect("comments")
        .iter()
        .filter_map(|c| c["body"].as_str())
        .collect();
    assert_eq!(bodies, ["first!", "second"]);
    let one = ann
        .get(&format!("/api/v1/tasks/{id}/comments?limit=1"))
        .await
        .expect("page");
    let next = one["nextCursor"].as_str().expect("a second page");
    let rest = ann
        .get(&format!("/api/v1/tasks/{id}/comments?cursor={next}"))
        .await
        .expect("page 2");
    assert_eq!(rest["comments"][0]["body"], "second");
    assert_eq!(rest["nextCursor"], Value::Null);

    // Filters.
    let list = |query: &str| {
        let path = format!("/api/v1/projects/{project}/tasks?{query}");
        async move {
            let page = ann.get(&path).await.expect("list");
            let mut titles: Vec<String> = page["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .map(|t| t["title"].as_str().expect("title").to_owned())
                .collect();
            titles.sort();
            titles
        }
    };
    let both = ["Pick a picture", "Write the launch post"];
    assert_eq!(list("").await, both);
    assert_eq!(list("column=doing").await, both);
    assert_eq!(list("status=in%20PROGRESS").await, both);
    assert_eq!(list("column=todo").await, Vec::<String>::new());
    assert_eq!(list("label=blog").await, ["Write the launch post"]);
    assert_eq!(list("assignee=me").await, ["Write the launch post"]);
    assert_eq!(
        list(&format!("assignee={}", ann.user_id)).await,
        ["Write the launch post"]
    );
    assert_eq!(list("q=PICT").await, ["Pick a picture"]);
    assert_eq!(list("q=100%25").await, Vec::<String>::new());
    let due = call(
        ann,
        Method::PATCH,
        &format!("/api/v1/tasks/{second_id}"),
        Some(json!({ "due": "2027-01-10T09:00:00+01:00" })),
    )
    .await;
    assert_eq!(due.body["due"], "2027-01-10T08:00:00Z");
    assert_eq!(list("dueBefore=2027-01-11").await, ["Pick a picture"]);
    assert_eq!(
        list("dueAfter=2027-01-10T08:00:00Z").await,
        ["Pick a picture"]
    );
    assert_eq!(
        list("dueAfter=2027-01-10T08:00:01Z").await,
        Vec::<String>::new()
    );

    // DELETE archives: gone from the board's listing, still readable, restorable.
    let deleted = call(ann, Method::DELETE, &format!("/api/v1/tasks/{id}"), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(list("").await, ["Pick a picture"]);
    assert_eq!(list("archived=true").await, ["Write the launch post"]);
    let archived = ann.get(&format!("/api/v1/tasks/{id}")).await.expect("read");
    assert_eq!(archived["archived"], true);
    let restored = call(
        ann,
        Method::PATCH,
        &format!("/api/v1/tasks/{id}"),
        Some(json!({ "archived": false })),
    )
    .await;
    assert_eq!(restored.body["archived"], false);
    assert_eq!(list("").await, both);

    // The project view counts live tasks per column.
    let view = ann
        .get(&format!("/api/v1/projects/{project}"))
        .await
        .expect("view");
    assert_eq!(view["taskCount"], 2);
    assert_eq!(view["columns"][1]["id"], "doing");
    assert_eq!(view["columns"][1]["taskCount"], 2);

    // Outsiders see nothing; viewers read but do not write.
    let outsider = Account::register(server.addr, "Olga")
        .await
        .expect("register");
    for path in [
        format!("/api/v1/tasks/{id}"),
        format!("/api/v1/tasks/{id}/comments"),
        format!("/api/v1/projects/{project}/tasks"),
    ] {
        let answer = call(&outsider, Method::GET, &path, None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }
    let answer = call(
        &outsider,
        Method::POST,
        "/api/v1/tasks",
        Some(json!({ "projectId": project, "title": "sneaky" })),
    )
    .await;
    assert_eq!(
        (answer.status, answer.problem()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/unknown-project"
        )
    );
    let viewer = Account::register(server.addr, "Vic")
        .await
        .expect("register");
    ann.add_member(&viewer, "viewer").await.expect("add viewer");
    assert_eq!(
        call(&viewer, Method::GET, &format!("/api/v1/tasks/{id}"), None)
            .await
            .status,
        StatusCode::OK
    );
    let writes = [
        (
            Method::PATCH,
            format!("/api/v1/tasks/{id}"),
            Some(json!({ "title": "mine" })),
        ),
        (Method::DELETE, format!("/api/v1/tasks/{id}"), None),
        (
            Method::POST,
            format!("/api/v1/tasks/{id}/comments"),
            Some(json!({ "body": "hi" })),
        ),
        (
            Method::POST,
            "/api/v1/tasks".to_owned(),
            Some(json!({ "projectId": project, "title": "t" })),
        ),
    ];
    for (method, path, body) in writes {
        let answer = call(&viewer, method.clone(), &path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {}",
            answer.body
        );
    }
    server.stop().await;
}

async fn rest_and_socket_edits_meet_on_one_board(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let bob = Account::register(server.addr, "Bob")
        .await
        .expect("register");
    ann.add_member(&bob, "member").await.expect("add bob");
    let (project, id) = ann.project("Live").await.expect("project");
    let mut watchers = Vec::new();
    for n in 0..3 {
        watchers.push(peer_on(ann, &format!("watcher-{n}"), id).await);
    }

    // A REST write reaches every connected client without them asking.
    let task = create(&bob, json!({ "projectId": project, "title": "From REST" })).await;
    for watcher in &mut watchers {
        watcher
            .until_doc(id, |d| titles(d) == ["From REST"])
            .await
            .expect("the REST task arrives");
    }

    // Its change is recorded as Bob's: its actor id is bound to him.
    let doc = stored_board(&server, id).await;
    let heads = doc.get_heads();
    assert_eq!(heads.len(), 1);
    let change = doc.get_change_by_hash(&heads[0]).expect("the REST change");
    let owner = server
        .store
        .bind_actor(&change.actor_id().to_hex_string(), &ann.user_id, 0)
        .await
        .expect("actor owner");
    assert_eq!(owner, bob.user_id);

    // A socket edit is in the REST view as soon as the server holds it.
    let task_id = TaskId::new(task["id"].as_str().expect("id"));
    let watcher = &mut watchers[0];
    watcher
        .edit(id, |tx| {
            let edit = TaskEdit {
                title: Some("Renamed live".into()),
                ..TaskEdit::default()
            };
            ops::edit_task(tx, &task_id, edit, 5).expect("edit");
            ops::move_task(tx, &task_id, &ColumnId::new("done"), Position::Top, 5).expect("move");
        })
        .await
        .expect("edit");
    watcher.until_server_has(id).await.expect("stored");
    let read = bob
        .get(&format!("/api/v1/tasks/{task_id}"))
        .await
        .expect("read");
    assert_eq!(
        (read["title"].as_str(), read["column"].as_str()),
        (Some("Renamed live"), Some("done"))
    );

    // And a REST comment shows on the clients' boards.
    let answer = call(
        &bob,
        Method::POST,
        &format!("/api/v1/tasks/{task_id}/comments"),
        Some(json!({ "body": "nice" })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    watchers[2]
        .until_doc(id, |d| {
            Board::read_task(d, &task_id)
                .ok()
                .flatten()
                .is_some_and(|t| t.comments.iter().any(|c| c.body == "nice"))
        })
        .await
        .expect("the comment arrives");
    server.stop().await;
}

/// Random concurrent edits by three clients over the socket; then every task and comment the
/// REST API answers must equal the board the server stores.
async fn random_socket_edits_keep_the_projection_equal_to_the_document(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let bob = Account::register(server.addr, "Bob")
        .await
        .expect("register");
    ann.add_member(&bob, "member").await.expect("add bob");
    let (project, id) = ann.project("Random").await.expect("project");
    let mut peers = [
        peer_on(ann, "ann-1", id).await,
        peer_on(ann, "ann-2", id).await,
        peer_on(&bob, "bob-1", id).await,
    ];
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let people = [ann.user_id.clone(), bob.user_id.clone()];
    for round in 0..40 {
        for peer in peers.iter_mut() {
            let board = Board::read(peer.doc(id)).expect("board");
            let ops_in_change = rng.random_range(1..=3);
            let choices: Vec<u32> = (0..ops_in_change)
                .map(|_| rng.random_range(0..100))
                .collect();
            let seeds: Vec<u64> = (0..ops_in_change).map(|_| rng.random()).collect();
            let people = people.clone();
            peer.edit(id, move |tx| {
                for (choice, seed) in choices.into_iter().zip(seeds) {
                    random_edit(tx, &board, choice, seed, &people, round);
                }
            })
            .await
            .expect("edit");
        }
        // Let some rounds interleave with what others sent, others run ahead.
        if rng.random_bool(0.5) {
            for peer in peers.iter_mut() {
                peer.drain(Duration::from_millis(20)).await.expect("drain");
            }
        }
    }
    for peer in peers.iter_mut() {
        peer.until_server_has(id).await.expect("stored");
    }

    let doc = stored_board(&server, id).await;
    let board = Board::read(&doc).expect("the stored board reads");
    let listed = all_tasks(ann, &project).await;
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        board.tasks.keys().map(TaskId::as_str).collect::<Vec<_>>(),
        "seed {seed}"
    );
    for task in board.tasks.values() {
        let row = &listed[task.id.as_str()];
        let expected = json!({
            "title": task.title, "description": task.description, "column": task.column.as_str(),
            "position": task.order.as_str(), "assignees": task.assignees, "labels": task.labels,
            "priority": task.priority.as_str(), "due": task.due.map(rfc3339),
            "archived": task.archived, "commentCount": task.comments.len(),
            "createdBy": task.created_by, "updatedAt": rfc3339(task.updated_at),
        });
        for (field, value) in expected.as_object().expect("fields") {
            assert_eq!(
                &row[field], value,
                "task {} field {field}, seed {seed}",
                task.id
            );
        }
        if !task.comments.is_empty() {
            let comments = ann
                .get(&format!("/api/v1/tasks/{}/comments?limit=200", task.id))
                .await
                .expect("comments");
            let got: Vec<(String, String)> = comments["comments"]
                .as_array()
                .expect("comments")
                .iter()
                .map(|c| {
                    (
                        c["id"].as_str().unwrap_or("").into(),
                        c["body"].as_str().unwrap_or("").into(),
                    )
                })
                .collect();
            let want: Vec<(String, String)> = task
                .comments
                .iter()
                .map(|c| (c.id.to_string(), c.body.clone()))
                .collect();
            assert_eq!(got, want, "comments of {}, seed {seed}", task.id);
        }
    }
    let view = ann
        .get(&format!("/api/v1/projects/{project}"))
        .await
        .expect("view");
    let live = board.tasks.values().filter(|t| !t.archived).count();
    assert_eq!(view["taskCount"], live, "seed {seed}");
    server.stop().await;
}

/// One random board edit (`choice` in 0..100 picks the kind).
fn random_edit(
    tx: &mut automerge::transaction::Transaction<'_>,
    board: &Board,
    choice: u32,
    seed: u64,
    people: &[String],
    round: u32,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let ids: Vec<&TaskId> = board.tasks.keys().collect();
    let column = ColumnId::new(["todo", "doing", "done"][rng.random_range(0..3)]);
    let pick = |rng: &mut StdRng| ids.get(rng.random_range(0..ids.len().max(1))).copied();
    let some_of = |rng: &mut StdRng, from: &[String]| -> std::collections::BTreeSet<String> {
        from.iter()
            .filter(|_| rng.random_bool(0.5))
            .cloned()
            .collect()
    };
    let labels = ["bug".to_owned(), "ui".to_owned(), "later".to_owned()];
    let now = 1_000_000 + i64::from(round);
    match (choice, pick(&mut rng)) {
        (0..30, _) | (_, None) => {
            let task = NewTask {
                column: Some(column),
                assignees: some_of(&mut rng, people),
                labels: some_of(&mut rng, &labels),
                priority: Priority::ALL[rng.random_range(0..5)],
                due: rng
                    .random_bool(0.5)
                    .then(|| rng.random_range(0..2_000_000_000_000)),
                ..NewTask::titled(format!("task {round}-{seed}"), "someone")
            };
            // A concurrent edit may have made the neighbourhood differ: ignore refusals.
            let _ = ops::add_task(tx, task, now);
        }
        (30..55, Some(id)) => {
            let edit = TaskEdit {
                title: rng.random_bool(0.5).then(|| format!("renamed {seed}")),
                description: rng.random_bool(0.3).then(|| format!("about {seed}")),
                assignees: rng.random_bool(0.3).then(|| some_of(&mut rng, people)),
                labels: rng.random_bool(0.3).then(|| some_of(&mut rng, &labels)),
                priority: rng
                    .random_bool(0.3)
                    .then(|| Priority::ALL[rng.random_range(0..5)]),
                due: rng
                    .random_bool(0.3)
                    .then(|| rng.random_bool(0.5).then_some(1_800_000_000_000)),
            };
            let _ = ops::edit_task(tx, id, edit, now);
        }
        (55..75, Some(id)) => {
            let position = match (rng.random_range(0..3), pick(&mut rng)) {
                (0, _) | (_, None) => Position::Top,
                (1, _) => Position::Bottom,
                (_, Some(other)) => Position::After(other.clone()),
            };
            let _ = ops::move_task(tx, id, &column, position, now);
        }
        (75..85, Some(id)) => {
            let _ = ops::set_archived(tx, id, rng.random_bool(0.7), now);
        }
        (_, Some(id)) => {
            let comment = CommentId::new(format!("c{seed:x}"));
            let _ = ops::add_comment(tx, id, comment, "someone", &format!("note {seed}"), now);
        }
    }
}

async fn an_idempotency_key_makes_one_task(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, _) = ann.project("Keys").await.expect("project");
    let body = json!({ "projectId": project, "title": "Exactly once" });
    let post = |key: &str, body: &Value| {
        send(
            ann.request(Method::POST, "/api/v1/tasks")
                .header("Idempotency-Key", key)
                .json(body),
        )
    };

    let first = post("key-1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = post("key-1", &body).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("location"), first.header("location"));

    // The same key for another request is refused; a new key makes a new task.
    let other = json!({ "projectId": project, "title": "Something else" });
    let reused = post("key-1", &other).await;
    assert_eq!(
        (reused.status, reused.problem()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/idempotency-key-reused"
        )
    );
    assert_eq!(post("key-2", &other).await.status, StatusCode::CREATED);

    // Concurrent retries of one request make one task.
    let burst = json!({ "projectId": project, "title": "Burst" });
    let answers = futures_util::future::join_all((0..8).map(|_| post("key-3", &burst))).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    assert!(
        created >= 1,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    for answer in &answers {
        assert!(
            answer.status == StatusCode::CREATED
                || (answer.status == StatusCode::CONFLICT
                    && answer.problem() == "/problems/idempotency-key-in-use"),
            "{} {}",
            answer.status,
            answer.body
        );
    }
    let retried = post("key-3", &burst).await;
    assert_eq!(retried.status, StatusCode::CREATED);

    // A failed request gives its key back: corrected, the same key works.
    let bad = json!({ "projectId": project, "title": "" });
    assert_eq!(
        post("key-4", &bad).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let fixed = json!({ "projectId": project, "title": "Fixed" });
    assert_eq!(post("key-4", &fixed).await.status, StatusCode::CREATED);

    // Keys are per user: Bob's key-1 is his own.
    let bob = Account::register(server.addr, "Bob")
        .await
        .expect("register");
    ann.add_member(&bob, "member").await.expect("add bob");
    let bobs = send(
        bob.request(Method::POST, "/api/v1/tasks")
            .header("Idempotency-Key", "key-1")
            .json(&body),
    )
    .await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_eq!(bobs.header("idempotent-replayed"), None);

    // Comments too.
    let task = first.body["id"].as_str().expect("id");
    let comment = |key: &'static str| {
        send(
            ann.request(Method::POST, &format!("/api/v1/tasks/{task}/comments"))
                .header("Idempotency-Key", key)
                .json(&json!({ "body": "once" })),
        )
    };
    assert_eq!(comment("c-1").await.status, StatusCode::CREATED);
    assert_eq!(
        comment("c-1").await.header("idempotent-replayed"),
        Some("true")
    );

    let titles: Vec<String> = all_tasks(ann, &project)
        .await
        .values()
        .map(|t| t["title"].as_str().expect("title").to_owned())
        .collect();
    let count = |title: &str| titles.iter().filter(|t| *t == title).count();
    assert_eq!(
        [
            count("Exactly once"),
            count("Something else"),
            count("Burst"),
            count("Fixed")
        ],
        [2, 1, 1, 1],
        "{titles:?} (one \"Exactly once\" is Bob's)"
    );
    let comments = ann
        .get(&format!("/api/v1/tasks/{task}/comments"))
        .await
        .expect("comments");
    assert_eq!(comments["comments"].as_array().map(Vec::len), Some(1));

    let malformed = send(
        ann.request(Method::POST, "/api/v1/tasks")
            .header("Idempotency-Key", "")
            .json(&body),
    )
    .await;
    assert_eq!(
        (malformed.status, malformed.problem()),
        (StatusCode::BAD_REQUEST, "/problems/invalid-idempotency-key")
    );
    server.stop().await;
}

/// Should the server stop after making the task but before keeping its answer, the retry
/// finds the task the first attempt made (its id comes from the key) instead of making a
/// second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_answer_finds_the_task_it_made() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, _) = ann.project("Lost").await.expect("project");
    let body = json!({ "projectId": project, "title": "Made once" });
    let post = || {
        send(
            ann.request(Method::POST, "/api/v1/tasks")
                .header("Idempotency-Key", "lost-answer")
                .json(&body),
        )
    };
    let first = post().await;
    assert_eq!(first.status, StatusCode::CREATED);
    // Forget the kept answer, as if the server had died before keeping it.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        db.data_dir().join("taskflow.sqlite3").display()
    ))
    .await
    .expect("open the database");
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(&pool)
        .await
        .expect("forget");
    let retry = post().await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(retry.body["id"], first.body["id"]);
    assert_eq!(all_tasks(ann, &project).await.len(), 1);

    // Once its answer is forgotten, the key used for another request makes another task.
    sqlx::query("DELETE FROM idempotency_keys")
        .execute(&pool)
        .await
        .expect("forget");
    let other = send(
        ann.request(Method::POST, "/api/v1/tasks")
            .header("Idempotency-Key", "lost-answer")
            .json(&json!({ "projectId": project, "title": "Made later" })),
    )
    .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
    assert_eq!(other.body["title"], "Made later");
    assert_eq!(all_tasks(ann, &project).await.len(), 2);
    server.stop().await;
}

async fn versions_refuse_writes_based_on_stale_reads(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, id) = ann.project("Versions").await.expect("project");
    let task = create(ann, json!({ "projectId": project, "title": "Guarded" })).await;
    let other = create(ann, json!({ "projectId": project, "title": "Bystander" })).await;
    let path = format!("/api/v1/tasks/{}", task["id"].as_str().expect("id"));
    let read = call(ann, Method::GET, &path, None).await;
    let etag = read.header("etag").expect("etag").to_owned();

    // Unchanged: 304 for a conditional read.
    let unchanged = send(
        ann.request(Method::GET, &path)
            .header("If-None-Match", &etag),
    )
    .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);

    // Someone else's change to another task leaves this one's version alone.
    let other_path = format!("/api/v1/tasks/{}", other["id"].as_str().expect("id"));
    let touched = call(
        ann,
        Method::PATCH,
        &other_path,
        Some(json!({ "title": "Moved on" })),
    )
    .await;
    assert_eq!(touched.status, StatusCode::OK);
    let patch = |etag: String, title: &'static str| {
        send(
            ann.request(Method::PATCH, &path)
                .header("If-Match", etag)
                .json(&json!({ "title": title })),
        )
    };
    let fresh = patch(etag.clone(), "First write").await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    let new_etag = fresh.header("etag").expect("etag").to_owned();
    assert_ne!(new_etag, etag);

    // A write based on the old read is refused, and told the current version.
    let stale = patch(etag.clone(), "Lost update").await;
    assert_eq!(
        (stale.status, stale.problem()),
        (
            StatusCode::PRECONDITION_FAILED,
            "/problems/precondition-failed"
        )
    );
    assert_eq!(stale.header("etag"), Some(new_etag.as_str()));

    // A change through the socket makes the version move too.
    let mut peer = peer_on(ann, "editor", id).await;
    let task_id = TaskId::new(task["id"].as_str().expect("id"));
    peer.edit(id, |tx| {
        ops::set_archived(tx, &task_id, true, 9).expect("archive");
    })
    .await
    .expect("edit");
    peer.until_server_has(id).await.expect("stored");
    let after_socket = patch(new_etag.clone(), "Also lost").await;
    assert_eq!(after_socket.status, StatusCode::PRECONDITION_FAILED);
    let current = after_socket.header("etag").expect("etag").to_owned();
    let deleted = send(
        ann.request(Method::DELETE, &path)
            .header("If-Match", &new_etag),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::PRECONDITION_FAILED);
    let ok = patch(current, "Third write").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["title"], "Third write");
    assert_eq!(
        patch("*".into(), "Any version").await.status,
        StatusCode::OK,
        "If-Match: * takes any version"
    );
    assert_eq!(
        ann.get(&path).await.expect("read")["title"],
        "Any version",
        "the refused writes changed nothing"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_problems_and_changes_nothing() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, _) = ann.project("Strict").await.expect("project");
    let task = create(ann, json!({ "projectId": project, "title": "Keep me" })).await;
    let id = task["id"].as_str().expect("id");
    let long = "x".repeat(501);
    let creates = [
        (
            json!({ "projectId": "nope", "title": "t" }),
            "/problems/unknown-project",
        ),
        (
            json!({ "projectId": project, "title": "t", "column": "nope" }),
            "/problems/unknown-column",
        ),
        (
            json!({ "projectId": project, "title": "   " }),
            "/problems/invalid-input",
        ),
        (
            json!({ "projectId": project, "title": long }),
            "/problems/invalid-input",
        ),
        (
            json!({ "projectId": project, "title": "t", "description": "d".repeat(20_001) }),
            "/problems/invalid-input",
        ),
        (
            json!({ "projectId": project, "title": "t", "labels": ["x".repeat(51)] }),
            "/problems/invalid-input",
        ),
        (
            json!({ "projectId": project, "title": "t", "due": "next tuesday" }),
            "/problems/invalid-input",
        ),
        (
            json!({ "projectId": project, "title": "t", "due": "2026-02-30" }),
            "/problems/invalid-input",
        ),
        (
            json!({ "projectId": project, "title": "t", "assignees": ["stranger@example.com"] }),
            "/problems/unknown-assignee",
        ),
        (
            json!({ "projectId": project, "title": "t", "priority": "whenever" }),
            "/problems/invalid-body",
        ),
        (
            json!({ "projectId": project, "title": "t", "position": { "after": "nope" } }),
            "/problems/unknown-task",
        ),
        (
            json!({ "projectId": project, "title": "t", "colour": "red" }),
            "/problems/invalid-body",
        ),
        (json!({ "title": "t" }), "/problems/invalid-body"),
    ];
    for (body, problem) in creates {
        let answer = call(ann, Method::POST, "/api/v1/tasks", Some(body.clone())).await;
        assert_eq!(
            (answer.status, answer.problem()),
            (StatusCode::UNPROCESSABLE_ENTITY, problem),
            "{body}: {}",
            answer.body
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
    }
    let path = format!("/api/v1/tasks/{id}");
    let patches = [
        (json!({}), "/problems/invalid-input"),
        (json!({ "column": "nope" }), "/problems/unknown-column"),
        (
            json!({ "position": { "before": "nope" } }),
            "/problems/unknown-task",
        ),
        (json!({ "title": "" }), "/problems/invalid-input"),
        (json!({ "due": "31/12/2026" }), "/problems/invalid-input"),
        (json!({ "archived": "yes" }), "/problems/invalid-body"),
        (json!({ "id": "other" }), "/problems/invalid-body"),
    ];
    for (body, problem) in patches {
        let answer = call(ann, Method::PATCH, &path, Some(body.clone())).await;
        assert_eq!(
            (answer.status, answer.problem()),
            (StatusCode::UNPROCESSABLE_ENTITY, problem),
            "{body}: {}",
            answer.body
        );
    }
    let comment = call(
        ann,
        Method::POST,
        &format!("{path}/comments"),
        Some(json!({ "body": " " })),
    )
    .await;
    assert_eq!(comment.problem(), "/problems/invalid-input");
    for query in [
        "limit=0",
        "limit=201",
        "limit=many",
        "cursor=forged",
        "dueBefore=soon",
        "status=Nope",
        "column=todo&status=Done",
        "assignee=stranger@example.com",
        "colour=red",
    ] {
        let answer = call(
            ann,
            Method::GET,
            &format!("/api/v1/projects/{project}/tasks?{query}"),
            None,
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            answer.body
        );
    }
    for missing in [
        call(ann, Method::GET, "/api/v1/tasks/nope", None).await,
        call(
            ann,
            Method::PATCH,
            "/api/v1/tasks/nope",
            Some(json!({ "title": "x" })),
        )
        .await,
        call(ann, Method::DELETE, "/api/v1/tasks/nope", None).await,
        call(ann, Method::GET, "/api/v1/projects/nope/tasks", None).await,
    ] {
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    }
    let unchanged = ann.get(&path).await.expect("read");
    assert_eq!(unchanged["title"], "Keep me");
    assert_eq!(unchanged["version"], task["version"]);
    assert_eq!(all_tasks(ann, &project).await.len(), 1);
    server.stop().await;
}

/// A board registered by a device but not uploaded yet has no board to write to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_not_uploaded_yet_says_so() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let document = DocumentId::random();
    ann.register_document(document, "On my laptop")
        .await
        .expect("register");
    let projects = ann
        .get(&format!("/api/v1/workspaces/{}/projects", ann.workspace_id))
        .await
        .expect("projects");
    let project = projects["projects"][0]["id"].as_str().expect("id");
    let answer = call(
        ann,
        Method::POST,
        "/api/v1/tasks",
        Some(json!({ "projectId": project, "title": "Too early" })),
    )
    .await;
    assert_eq!(
        (answer.status, answer.problem()),
        (StatusCode::CONFLICT, "/problems/board-not-uploaded")
    );
    let view = ann
        .get(&format!("/api/v1/projects/{project}"))
        .await
        .expect("view");
    assert_eq!(
        (view["columns"].clone(), view["taskCount"].clone()),
        (json!([]), json!(0))
    );
    server.stop().await;
}

/// The project view is cached, and every change to the board or the project shows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_project_view_follows_every_change() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, id) = ann.project("Cached").await.expect("project");
    let view = |ann: &Account| {
        let path = format!("/api/v1/projects/{project}");
        let ann = ann.clone();
        async move { ann.get(&path).await.expect("view") }
    };
    assert_eq!(view(ann).await["taskCount"], 0);
    assert_eq!(view(ann).await["taskCount"], 0, "served from the cache");

    create(ann, json!({ "projectId": project, "title": "one" })).await;
    assert_eq!(view(ann).await["taskCount"], 1, "a REST write invalidates");

    let mut peer = peer_on(ann, "peer", id).await;
    peer.edit(id, |tx| {
        ops::add_task(tx, NewTask::titled("two", "ann"), 3).expect("add");
    })
    .await
    .expect("edit");
    peer.until_server_has(id).await.expect("stored");
    assert_eq!(
        view(ann).await["taskCount"],
        2,
        "a socket write invalidates"
    );

    let archived = ann
        .post(&format!("/api/v1/projects/{project}/archive"), json!({}))
        .await
        .expect("archive");
    assert_eq!(archived["archived"], true);
    assert_eq!(view(ann).await["archived"], true, "archiving invalidates");

    // The cache never lets a non-member in.
    let outsider = Account::register(server.addr, "Olga")
        .await
        .expect("register");
    let answer = call(
        &outsider,
        Method::GET,
        &format!("/api/v1/projects/{project}"),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Boards stored before the projection existed (on the backlog) are projected at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_on_the_backlog_are_projected_at_start() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let ann = server.account.clone();
    let (project, _) = ann.project("Old").await.expect("project");
    for title in ["a", "b", "c"] {
        create(&ann, json!({ "projectId": project, "title": title })).await;
    }
    server.stop().await;

    // As an older version left it: the board without its rows, and on the backlog.
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        db.data_dir().join("taskflow.sqlite3").display()
    ))
    .await
    .expect("open the database");
    for statement in [
        "DELETE FROM tasks",
        "DELETE FROM board_columns",
        "INSERT INTO projection_backlog (document_id) SELECT id FROM documents",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    pool.close().await;

    let server = TestServer::start_as(db.config(), Some(ann.clone())).await;
    let ann = server.account.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = all_tasks(&ann, &project).await;
        if listed.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not projected: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server
            .store
            .projection_backlog()
            .await
            .expect("backlog")
            .is_empty(),
        "the backlog is done"
    );
    let view = ann
        .get(&format!("/api/v1/projects/{project}"))
        .await
        .expect("view");
    assert_eq!(view["columns"].as_array().map(Vec::len), Some(3));
    server.stop().await;
}

/// Whatever a client writes into a board, the projection's commit cannot fail (it would fail
/// the changes with it): NUL characters, which PostgreSQL cannot store as text, are refused over
/// REST and cleaned when they come over the socket; over-long keys stay out of the indexes;
/// keys that repeat (two comments claiming one id, columns that clean to one id) are written
/// once. The board keeps working throughout.
async fn vandalised_boards_never_break_the_projection(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = &server.account;
    let (project, id) = ann.project("Nul").await.expect("project");
    let answer = call(
        ann,
        Method::POST,
        "/api/v1/tasks",
        Some(json!({ "projectId": project, "title": "a\u{0}b" })),
    )
    .await;
    assert_eq!(
        (answer.status, answer.problem()),
        (StatusCode::UNPROCESSABLE_ENTITY, "/problems/invalid-input")
    );
    let answer = call(ann, Method::GET, "/api/v1/tasks/a%00b", None).await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);

    let mut peer = peer_on(ann, "vandal", id).await;
    peer.edit(id, |tx| {
        let mut task = NewTask::titled("nul\u{0}title", "x");
        task.id = TaskId::new("nul-task");
        task.labels = ["l\u{0}".to_owned(), "k".repeat(5_000)].into();
        ops::add_task(tx, task, 1).expect("add");
        let tasks = match tx.get(ROOT, "tasks").expect("tasks") {
            Some((_, tasks)) => tasks,
            None => panic!("no tasks"),
        };
        let task = match tx.get(&tasks, "nul-task").expect("task") {
            Some((_, task)) => task,
            None => panic!("no task"),
        };
        let comments = match tx.get(&task, "comments").expect("comments") {
            Some((_, comments)) => comments,
            None => panic!("no comments"),
        };
        for key in ["k1", "k2"] {
            let comment = tx
                .put_object(&comments, key, ObjType::Map)
                .expect("comment");
            tx.put(&comment, "id", "same").expect("id");
            tx.put(&comment, "author", "x").expect("author");
            tx.put(&comment, "body", key).expect("body");
            tx.put(&comment, "createdAt", ScalarValue::Timestamp(1))
                .expect("at");
        }
        let columns = match tx.get(ROOT, "columns").expect("columns") {
            Some((_, columns)) => columns,
            None => panic!("no columns"),
        };
        for id in ["c\u{0}", "c\u{FFFD}"] {
            let at = tx.length(&columns);
            let column = tx
                .insert_object(&columns, at, ObjType::Map)
                .expect("column");
            tx.put(&column, "id", id).expect("id");
            tx.put(&column, "name", "Twin").expect("name");
        }
    })
    .await
    .expect("edit");
    peer.until_server_has(id).await.expect("stored");
    let task = ann.get("/api/v1/tasks/nul-task").await.expect("read");
    assert_eq!(task["title"], "nul\u{FFFD}title");
    assert_eq!(task["labels"], json!(["l\u{FFFD}"]));
    assert_eq!(task["commentCount"], 2, "the document holds two");
    let comments = ann
        .get("/api/v1/tasks/nul-task/comments")
        .await
        .expect("comments");
    assert_eq!(comments["comments"].as_array().map(Vec::len), Some(1));
    let view = ann
        .get(&format!("/api/v1/projects/{project}"))
        .await
        .expect("view");
    let twins = view["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter(|c| c["name"] == "Twin")
        .count();
    assert_eq!(twins, 1);
    // The board still takes REST writes.
    create(ann, json!({ "projectId": project, "title": "after" })).await;

    // A task id copied onto another board the user sees: REST will not guess which is meant.
    let (_, other_board) = ann.project("Copycat").await.expect("project");
    let mut copier = peer_on(ann, "copier", other_board).await;
    copier
        .edit(other_board, |tx| {
            let mut task = NewTask::titled("impostor", "x");
            task.id = TaskId::new("nul-task");
            ops::add_task(tx, task, 0).expect("add");
        })
        .await
        .expect("edit");
    copier.until_server_has(other_board).await.expect("stored");
    for method in [Method::GET, Method::DELETE] {
        let answer = call(ann, method.clone(), "/api/v1/tasks/nul-task", None).await;
        assert_eq!(
            (answer.status, answer.problem()),
            (StatusCode::CONFLICT, "/problems/ambiguous-task"),
            "{method}"
        );
    }
    assert_eq!(
        all_tasks(ann, &project).await["nul-task"]["archived"],
        false,
        "the refused DELETE archived nothing"
    );
    server.stop().await;
}
