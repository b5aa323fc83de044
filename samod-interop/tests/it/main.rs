//! `samod` peers and our own protocol peer meet on one board through our server.

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge};
use samod::{BackoffConfig, Repo, Url};
use taskflow_proto::DocumentId;
use taskflow_proto::board::Board;
use taskflow_proto::board::ops::{self, NewTask};
use taskflow_sync_server::{Config, Server};
use taskflow_testkit::Peer;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);

async fn start_server(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    let config = Config::for_data_dir(dir);
    let server = Server::open(&config).await.expect("server opens");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/api/v1/sync", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (url, stop)
}

async fn samod_repo(url: &str) -> (Repo, samod::ConnectionId) {
    let repo = Repo::build_tokio().load().await;
    let dialer = repo
        .dial_websocket(Url::parse(url).expect("url"), BackoffConfig::default())
        .expect("dial");
    tokio::time::timeout(WAIT, dialer.established())
        .await
        .expect("connects in time")
        .expect("handshake");
    let conn = dialer.connection_id().expect("connected");
    (repo, conn)
}

fn titles(doc: &Automerge) -> Vec<String> {
    let mut titles: Vec<String> = Board::read(doc)
        .map(|b| b.tasks.values().map(|t| t.title.clone()).collect())
        .unwrap_or_default();
    titles.sort();
    titles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samod_and_taskflow_peers_share_a_board_through_our_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, _stop) = start_server(dir.path()).await;

    // samod creates the board and waits until our server has all of it.
    let (alice, alice_conn) = samod_repo(&url).await;
    let mut board = AutoCommit::new();
    ops::create_board(&mut board, "Interop").expect("board");
    ops::add_task(&mut board, NewTask::titled("from samod", "alice"), 1).expect("task");
    let handle = alice
        .create(board.document().clone())
        .await
        .expect("create");
    tokio::time::timeout(WAIT, handle.they_have_our_changes(alice_conn))
        .await
        .expect("the server acknowledges samod's board");
    let id = DocumentId::parse(&handle.document_id().to_string()).expect("same id format");

    // Our own peer fetches it, reads it as a board, and edits it.
    let mut ours = Peer::connect(&url, "taskflow-peer").await.expect("join");
    ours.request(id).await.expect("request");
    ours.until_doc(id, |d| titles(d) == ["from samod"])
        .await
        .expect("our peer reads samod's board");
    ours.edit(id, |tx| {
        ops::add_task(tx, NewTask::titled("from taskflow", "bo"), 2).expect("task");
    })
    .await
    .expect("edit");
    ours.until_server_has(id).await.expect("stored");

    // samod sees our edit live.
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.with_document(|d| titles(d)) != ["from samod", "from taskflow"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "samod sees the Taskflow edit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A second samod repo, starting empty, finds the board through the server.
    let (carol, _) = samod_repo(&url).await;
    let found = tokio::time::timeout(WAIT, carol.find(handle.document_id().clone()))
        .await
        .expect("find in time")
        .expect("repo running")
        .expect("the server has the document");
    let deadline = tokio::time::Instant::now() + WAIT;
    while found.with_document(|d| titles(d)).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol gets the whole board"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And carol's edit reaches alice.
    found.with_document(|d| {
        let mut tx = d.transaction();
        tx.put(automerge::ROOT, "name", "Renamed by carol")
            .expect("put");
        tx.commit();
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.with_document(|d| Board::read(d).map(|b| b.name).unwrap_or_default())
        != "Renamed by carol"
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice sees carol's rename"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.stop().await;
    carol.stop().await;
}
