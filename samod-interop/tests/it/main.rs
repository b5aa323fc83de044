//! `samod` peers and our own protocol peer meet on one board through our server.

use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge};
use samod::{BackoffConfig, Repo, Url};
use taskflow_proto::board::Board;
use taskflow_proto::board::ops::{self, NewTask};
use taskflow_sync_server::{Config, Server};
use taskflow_testkit::{Account, Peer};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);

/// Our server on a loopback port, and an account signed up on it; the sync URL carries the
/// account's token.
async fn start_server(
    dir: &std::path::Path,
) -> (String, Account, tokio::sync::oneshot::Sender<()>) {
    let config = Config::for_data_dir(dir);
    let server = Server::open(&config).await.expect("server opens");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let account = Account::register(addr, "Alice").await.expect("sign up");
    (account.sync_url(), account, stop)
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
    let (url, account, _stop) = start_server(dir.path()).await;

    // Our peer makes the board (registered as a project, as every board on our server is).
    let mut ours = Peer::connect_as(&account, "taskflow-peer")
        .await
        .expect("join");
    let mut board = AutoCommit::new();
    ops::create_board(&mut board, "Interop").expect("board");
    ops::add_task(&mut board, NewTask::titled("from taskflow", "bo"), 1).expect("task");
    let id = ours.create(board).await.expect("create");
    ours.until_server_has(id).await.expect("stored");

    // samod finds it through the server, reads it as a board and edits it.
    let (alice, alice_conn) = samod_repo(&url).await;
    let samod_id: samod::DocumentId = id.to_string().parse().expect("same id format");
    let handle = tokio::time::timeout(WAIT, alice.find(samod_id))
        .await
        .expect("find in time")
        .expect("repo running")
        .expect("the server has the document");
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.with_document(|d| titles(d)) != ["from taskflow"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "samod reads the Taskflow board"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.with_document(|d| {
        let mut tx = d.transaction();
        ops::add_task(&mut tx, NewTask::titled("from samod", "alice"), 2).expect("task");
        tx.commit();
    });
    tokio::time::timeout(WAIT, handle.they_have_our_changes(alice_conn))
        .await
        .expect("the server acknowledges samod's edit");

    // Our peer sees samod's edit live.
    ours.until_doc(id, |d| titles(d) == ["from samod", "from taskflow"])
        .await
        .expect("our peer sees samod's edit");

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
