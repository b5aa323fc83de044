//! Interop with the real `@automerge/automerge-repo` 2.5.6 JS client through our server.
//! The Node side is `testkit/js/peer.mjs` (dependencies installed by `scripts/js-deps.sh`).

use taskflow_proto::AutomergeUrl;
use taskflow_proto::board::Board;
use taskflow_testkit::js::{json, node_as};

use crate::support::{Backend, TestDb, TestServer, add_task, task_titles};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_js_clients_sync_and_relay_ephemeral_messages_through_our_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let out = json(&node_as(&server.account, &["two-clients", &server.url()]).await);
    assert_eq!(out["ok"], true, "{out}");

    let created = json(&node_as(&server.account, &["create-board", &server.url(), "Relay"]).await);
    let url = created["url"].as_str().expect("url");
    node_as(&server.account, &["ephemeral-relay", &server.url(), url]).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_and_rust_peers_see_each_others_edits() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;

    let created = json(&node_as(&server.account, &["create-board", &server.url(), "Shared"]).await);
    let url = created["url"].as_str().expect("url").to_owned();
    let id = AutomergeUrl::parse(&url)
        .expect("automerge url")
        .document_id;

    let mut rust = server.peer("rust-peer").await.expect("join");
    rust.request(id).await.expect("request");
    rust.until_doc(id, |d| Board::read(d).is_ok_and(|b| b.name == "Shared"))
        .await
        .expect("the Rust peer reads the JS-made board");

    rust.edit(id, |d| add_task(d, "from rust"))
        .await
        .expect("edit");
    rust.until_server_has(id).await.expect("stored");
    let seen = json(
        &node_as(
            &server.account,
            &["wait-task", &server.url(), &url, "from rust"],
        )
        .await,
    );
    assert!(seen.to_string().contains("from rust"));

    node_as(
        &server.account,
        &["add-task", &server.url(), &url, "js-task", "from js"],
    )
    .await;
    rust.until_doc(id, |d| task_titles(d).contains(&"from js".to_owned()))
        .await
        .expect("the Rust peer sees the JS edit live");
    let board = Board::read(rust.doc(id)).expect("still a valid board");
    assert_eq!(board.tasks.len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_client_learns_promptly_that_a_document_is_unavailable() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let out = json(&node_as(&server.account, &["find-missing", &server.url()]).await);
    assert_eq!(out["unavailable"], true, "{out}");
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|e| e.contains("unavailable")),
        "{out}"
    );
    server.stop().await;
}
