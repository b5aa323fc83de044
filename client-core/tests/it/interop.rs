//! client-core with the stock automerge-repo JS world: syncing through the reference JS sync
//! server (`ws` + `NodeWSServerAdapter`), and with JS clients through either server.

use std::process::Output;
use taskflow_client_core::AutomergeUrl;

use taskflow_testkit::js::{RefServer, json, node, node_as};
use taskflow_testkit::server::TestServer;

use crate::support::{add_task, client, synced, titles, until_board};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_sync_through_the_reference_js_server() {
    let storage = tempfile::tempdir().expect("dir");
    let server = RefServer::start(storage.path()).await;
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = client(a_dir.path(), "ann", Some(&server.url())).await;
    let b = client(b_dir.path(), "bob", Some(&server.url())).await;

    let board = a.create_board("Via JS").await.expect("create");
    add_task(&a, board, "from ann").await;
    synced(&a, board).await;
    b.fetch(board).await.expect("fetch");
    until_board(&b, board, |x| titles(x) == ["from ann"]).await;
    add_task(&b, board, "from bob").await;
    until_board(&a, board, |x| titles(x) == ["from ann", "from bob"]).await;
    synced(&a, board).await;
    synced(&b, board).await;

    // A stock JS client on the same server sees both.
    let url = board.url().to_string();
    let seen = json(&node(&["wait-task", &server.url(), &url, "from bob"]).await);
    assert!(seen.to_string().contains("from ann"), "{seen}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_js_client_and_client_core_edit_one_board_both_ways() {
    for server_kind in ["ours", "reference JS"] {
        let storage = tempfile::tempdir().expect("dir");
        let (ours, reference) = match server_kind {
            "ours" => (Some(TestServer::start(storage.path()).await), None),
            _ => (None, Some(RefServer::start(storage.path()).await)),
        };
        let url = ours
            .as_ref()
            .map_or_else(|| reference.as_ref().expect("one").url(), TestServer::url);

        // JS creates the board; client-core fetches it and adds a card; JS sees the card.
        let created = json(&node_on(ours.as_ref(), &["create-board", &url, "Made in JS"]).await);
        let doc_url = created["url"].as_str().expect("url").to_owned();
        let board = AutomergeUrl::parse(&doc_url)
            .expect("automerge url")
            .document_id;
        let dir = tempfile::tempdir().expect("dir");
        let a = client(dir.path(), "ann", Some(&url)).await;
        a.fetch(board).await.expect("fetch");
        let read = until_board(&a, board, |b| b.name == "Made in JS").await;
        assert!(read.tasks.is_empty(), "{server_kind}: {read:?}");
        add_task(&a, board, "from rust").await;
        synced(&a, board).await;
        node_on(ours.as_ref(), &["wait-task", &url, &doc_url, "from rust"]).await;

        // JS adds a card; client-core sees it live.
        node_on(
            ours.as_ref(),
            &["add-task", &url, &doc_url, "js-task", "from js"],
        )
        .await;
        until_board(&a, board, |b| titles(b) == ["from js", "from rust"]).await;
        a.shutdown().await;
        if let Some(reference) = reference {
            reference.stop().await;
        }
    }
}

/// `peer.mjs` against our server (as its test account) or the reference one.
async fn node_on(ours: Option<&TestServer>, args: &[&str]) -> Output {
    match ours {
        Some(server) => node_as(&server.account, args).await,
        None => node(args).await,
    }
}
