//! Shared helpers: clients on temp data directories, waits on events and boards.

use std::path::Path;
use std::time::Duration;

use taskflow_client_core::board::Board;
use taskflow_client_core::board::TaskId;
use taskflow_client_core::board::ops::NewTask;
use taskflow_client_core::{
    Client, ClientConfig, ClientEvent, DocumentId, Edit, Edited, ServerConfig, SyncStatus,
};
use taskflow_testkit::server::TestServer;
use tempfile::TempDir;

/// Bound on every wait.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn config(dir: &Path, user: &str, server: Option<&str>) -> ClientConfig {
    ClientConfig {
        data_dir: dir.to_owned(),
        user: user.to_owned(),
        server: server.map(|url| ServerConfig::new(url).expect("server url")),
    }
}

pub async fn client(dir: &Path, user: &str, server: Option<&str>) -> Client {
    Client::open(config(dir, user, server))
        .await
        .expect("client opens")
}

/// Ann and Bob on one board through our (in-process) server: Ann made it with one task, Bob
/// fetched it, both in sync. The temp directories live as long as this.
pub struct SharedBoard {
    pub server: TestServer,
    pub server_dir: TempDir,
    pub ann: Client,
    pub bob: Client,
    pub board: DocumentId,
    pub task: TaskId,
    pub client_dirs: (TempDir, TempDir),
}

pub async fn shared_board(name: &str, task: &str) -> SharedBoard {
    let server_dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(server_dir.path()).await;
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let ann = client(dirs.0.path(), "ann", Some(&server.url())).await;
    let bob = client(dirs.1.path(), "bob", Some(&server.url())).await;
    let board = ann
        .create_board_as(server.register_board(name).await, name)
        .await
        .expect("create");
    let task = add_task(&ann, board, task).await;
    synced(&ann, board).await;
    bob.fetch(board).await.expect("fetch");
    synced(&bob, board).await;
    SharedBoard {
        server,
        server_dir,
        ann,
        bob,
        board,
        task,
        client_dirs: dirs,
    }
}

pub async fn add_task(client: &Client, board: DocumentId, title: &str) -> TaskId {
    match client
        .edit(board, Edit::AddTask(NewTask::titled(title, "test")))
        .await
        .expect("add task")
    {
        Edited::Task(id) => id,
        other => panic!("expected a task, got {other:?}"),
    }
}

pub async fn synced(client: &Client, board: DocumentId) {
    let statuses = client
        .wait_synced(&[board], TIMEOUT)
        .await
        .expect("client runs");
    assert_eq!(statuses, [SyncStatus::InSync], "board {board} did not sync");
}

/// Waits until the client's copy of `board` satisfies `pred`.
pub async fn until_board(
    client: &Client,
    board: DocumentId,
    pred: impl Fn(&Board) -> bool,
) -> Board {
    let mut events = client.subscribe();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Ok(current) = client.board(board).await
            && pred(&current)
        {
            return current;
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(_) => {}
            Err(_) => panic!(
                "board {board} never reached the expected state; it is {:?}",
                client.board(board).await
            ),
        }
    }
}

/// Waits for the next event matching `pred`.
pub async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    pred: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.recv().await.expect("events flow");
            if pred(&event) {
                return event;
            }
        }
    })
    .await
    .expect("the expected event arrives")
}

pub fn titles(board: &Board) -> Vec<String> {
    let mut titles: Vec<String> = board.tasks.values().map(|t| t.title.clone()).collect();
    titles.sort();
    titles
}
