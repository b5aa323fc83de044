//! Syncing with our server: edits flow both ways live, offline edits merge on reconnect, a crash
//! mid-sync is survived, and a reconnect sends only what changed.

use std::collections::BTreeSet;

use taskflow_client_core::board::ops::{Position, TaskEdit};
use taskflow_client_core::board::{Board, ColumnId};
use taskflow_client_core::store::ReplicaStore;
use taskflow_client_core::{ClientEvent, ConnectionState, Edit, Origin, SyncStatus};
use taskflow_proto::StorageId;
use taskflow_testkit::Peer;
use taskflow_testkit::server::TestServer;

use crate::support::{
    SharedBoard, add_task, client, next_event, shared_board, synced, titles, until_board,
};

/// What the server holds of a board, read by a fresh raw peer.
async fn server_board(server: &TestServer, id: taskflow_client_core::DocumentId) -> Board {
    let mut peer = Peer::connect(&server.url(), "inspector")
        .await
        .expect("join");
    peer.request(id).await.expect("request");
    peer.until_doc(id, |d| Board::read(d).is_ok())
        .await
        .expect("the server has the board");
    Board::read(peer.doc(id)).expect("a board")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reach_the_other_client_live_with_a_notice_of_what_changed() {
    let SharedBoard {
        server,
        server_dir: _server_dir,
        ann: a,
        bob: b,
        board,
        task,
        client_dirs: _dirs,
    } = shared_board("Launch", "write the announcement").await;
    assert_eq!(b.board(board).await.expect("board").name, "Launch");

    let mut a_events = a.subscribe();
    let edit = TaskEdit {
        title: Some("write the launch post".into()),
        ..TaskEdit::default()
    };
    b.edit(
        board,
        Edit::EditTask {
            task: task.clone(),
            edit,
        },
    )
    .await
    .expect("edit");
    b.edit(
        board,
        Edit::MoveTask {
            task: task.clone(),
            column: ColumnId::new("doing"),
            position: Position::Top,
        },
    )
    .await
    .expect("move");
    let seen = until_board(&a, board, |b| {
        b.tasks[&task].title == "write the launch post" && b.tasks[&task].column.as_str() == "doing"
    })
    .await;
    assert_eq!(seen.tasks.len(), 1);

    // The notices A got say it was a remote change to that task's title and column.
    let mut fields = BTreeSet::new();
    while fields.len() < 2 {
        let ClientEvent::Board(change) =
            next_event(&mut a_events, |e| matches!(e, ClientEvent::Board(_))).await
        else {
            unreachable!()
        };
        assert_eq!(change.origin, Origin::Remote);
        assert_eq!(change.tasks.keys().collect::<Vec<_>>(), [&task]);
        fields.extend(
            change.tasks[&task]
                .fields
                .iter()
                .filter(|f| *f == "title" || *f == "column")
                .cloned(),
        );
    }
    synced(&a, board).await;
    synced(&b, board).await;
    assert_eq!(server_board(&server, board).await, seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_offline_edits_converge_once_the_server_is_back() {
    let SharedBoard {
        server,
        server_dir,
        ann: a,
        bob: b,
        board,
        task,
        client_dirs: _dirs,
    } = shared_board("Sprint", "fix login").await;

    // The server goes down; both keep working.
    let addr = server.addr;
    server.crash();
    let mut a_events = a.subscribe();
    next_event(&mut a_events, |e| {
        matches!(e, ClientEvent::Connection(ConnectionState::Offline { .. }))
    })
    .await;

    // Both move the same card to different columns; A renames it, B comments on it.
    a.edit(
        board,
        Edit::MoveTask {
            task: task.clone(),
            column: ColumnId::new("doing"),
            position: Position::Top,
        },
    )
    .await
    .expect("a moves");
    a.edit(
        board,
        Edit::EditTask {
            task: task.clone(),
            edit: TaskEdit {
                title: Some("fix login on Safari".into()),
                ..TaskEdit::default()
            },
        },
    )
    .await
    .expect("a renames");
    b.edit(
        board,
        Edit::MoveTask {
            task: task.clone(),
            column: ColumnId::new("done"),
            position: Position::Bottom,
        },
    )
    .await
    .expect("b moves");
    b.edit(
        board,
        Edit::AddComment {
            task: task.clone(),
            body: "works for me".into(),
        },
    )
    .await
    .expect("b comments");
    add_task(&a, board, "from ann offline").await;
    add_task(&b, board, "from bob offline").await;
    assert!(matches!(
        a.status(board).await.expect("status"),
        SyncStatus::Offline { pending: 3 }
    ));
    assert!(matches!(
        b.status(board).await.expect("status"),
        SyncStatus::Offline { pending: 3 }
    ));

    let server = TestServer::start_on(server_dir.path(), addr).await;
    // Each client reconnects by itself; both end with everything.
    let want = |b: &Board| {
        b.tasks.len() == 3
            && b.tasks.values().any(|t| !t.comments.is_empty())
            && b.tasks.values().any(|t| t.title == "fix login on Safari")
    };
    let a_board = until_board(&a, board, want).await;
    let b_board = until_board(&b, board, |x| *x == a_board).await;
    synced(&a, board).await;
    synced(&b, board).await;
    assert_eq!(a_board, b_board);
    assert_eq!(server_board(&server, board).await, a_board);

    // The card is in exactly one column: one of the two moves won, on every replica.
    let card = &a_board.tasks[&task];
    assert!(
        ["doing", "done"].contains(&card.column.as_str()),
        "{card:?}"
    );
    for column in &a_board.columns {
        let here = a_board
            .column_tasks(&column.id)
            .iter()
            .filter(|t| t.id == task)
            .count();
        assert_eq!(
            here,
            usize::from(column.id == card.column),
            "column {}",
            column.id
        );
    }
    assert_eq!(card.title, "fix login on Safari");
    assert_eq!(card.comments[0].body, "works for me");
    assert_eq!(card.comments[0].author, "bob");
    assert_eq!(
        titles(&a_board),
        [
            "fix login on Safari",
            "from ann offline",
            "from bob offline"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_crash_mid_sync_is_retried_and_nothing_is_lost() {
    let server_dir = tempfile::tempdir().expect("dir");
    let client_dir = tempfile::tempdir().expect("dir");
    // A big board made entirely offline.
    let offline = client(client_dir.path(), "ann", None).await;
    let board = offline.create_board("Backlog").await.expect("create");
    for i in 0..1500 {
        add_task(&offline, board, &format!("item {i}")).await;
    }
    offline.shutdown().await;

    let server = TestServer::start(server_dir.path()).await;
    // Registered once online, as a board made offline is.
    server
        .account
        .register_document(board, "Backlog")
        .await
        .expect("register");
    let a = client(client_dir.path(), "ann", Some(&server.url())).await;
    let mut events = a.subscribe();
    a.board(board).await.expect("opens"); // opening starts the sync
    next_event(&mut events, |e| {
        matches!(
            e,
            ClientEvent::Status {
                status: SyncStatus::Syncing { .. },
                ..
            }
        )
    })
    .await;
    let server = server.restart().await;

    synced(&a, board).await;
    let held = server_board(&server, board).await;
    assert_eq!(held.tasks.len(), 1500);
    assert_eq!(held, a.board(board).await.expect("board"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_sends_only_what_changed() {
    let server_dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(server_dir.path()).await;
    let client_dir = tempfile::tempdir().expect("dir");
    let a = client(client_dir.path(), "ann", Some(&server.url())).await;
    let board = a
        .create_board_as(server.register_board("Big").await, "Big")
        .await
        .expect("create");
    for i in 0..1000 {
        add_task(&a, board, &format!("card {i}")).await;
    }
    synced(&a, board).await;
    let ConnectionState::Online {
        storage_id: Some(storage),
    } = a.connection().await.expect("state")
    else {
        panic!("online with a storage id");
    };
    a.shutdown().await;

    // What the server holds is remembered, keyed by the server's storage id.
    let store = ReplicaStore::open(client_dir.path()).await.expect("store");
    assert!(
        store
            .sync_state(&board, &storage)
            .await
            .expect("read")
            .is_some()
    );
    assert!(
        store
            .sync_state(&board, &StorageId::new("another-server"))
            .await
            .expect("read")
            .is_none()
    );
    drop(store);

    // A fresh fetch of this board is ~100 KB; coming back with one new card is a few hundred bytes.
    let b_dir = tempfile::tempdir().expect("dir");
    let b = client(b_dir.path(), "bob", Some(&server.url())).await;
    b.fetch(board).await.expect("fetch");
    synced(&b, board).await;
    add_task(&b, board, "one more").await;
    synced(&b, board).await;

    let a = client(client_dir.path(), "ann", Some(&server.url())).await;
    let mut events = a.subscribe();
    a.board(board).await.expect("opens");
    synced(&a, board).await;
    let mut received = 0;
    while let Ok(event) = events.try_recv() {
        if let ClientEvent::Received { bytes, .. } = event {
            received += bytes;
        }
    }
    assert!(
        received > 0 && received < 5_000,
        "received {received} bytes"
    );
    assert_eq!(a.board(board).await.expect("board").tasks.len(), 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_the_server_does_not_have_is_unavailable_and_can_be_forgotten() {
    let server_dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(server_dir.path()).await;
    let dir = tempfile::tempdir().expect("dir");
    let a = client(dir.path(), "ann", Some(&server.url())).await;
    let missing = taskflow_client_core::DocumentId::random();
    a.fetch(missing).await.expect("asked");
    let statuses = a
        .wait_synced(&[missing], crate::support::TIMEOUT)
        .await
        .expect("runs");
    assert_eq!(statuses, [SyncStatus::Unavailable]);
    assert!(matches!(
        a.board(missing).await,
        Err(taskflow_client_core::ClientError::Unavailable(_))
    ));
    a.forget(missing).await.expect("forget");
    assert!(a.boards().await.expect("list").is_empty());
}

/// Three people make random edits to one board at once (adding, moving, renaming, commenting,
/// archiving, often the same card); everyone ends with the same board, the server holds it, and
/// every card sits in exactly one column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_concurrent_edits_from_three_clients_converge() {
    use rand::{Rng, SeedableRng};

    let server_dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(server_dir.path()).await;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let first = client(dirs[0].path(), "ann", Some(&server.url())).await;
    let board = first
        .create_board_as(server.register_board("Random").await, "Random")
        .await
        .expect("create");
    for i in 0..5 {
        add_task(&first, board, &format!("seed {i}")).await;
    }
    synced(&first, board).await;
    let mut clients = vec![first];
    for (dir, user) in dirs[1..].iter().zip(["bob", "cat"]) {
        let c = client(dir.path(), user, Some(&server.url())).await;
        c.fetch(board).await.expect("fetch");
        synced(&c, board).await;
        clients.push(c);
    }
    let columns = ["todo", "doing", "done"];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        let who = &clients[rng.random_range(0..clients.len())];
        let current = who.board(board).await.expect("board");
        let ids: Vec<_> = current.tasks.keys().cloned().collect();
        let task = ids[rng.random_range(0..ids.len())].clone();
        let edit = match rng.random_range(0..5) {
            0 => Edit::AddTask(taskflow_client_core::board::ops::NewTask::titled(
                format!("r{round}"),
                "x",
            )),
            1 => Edit::MoveTask {
                task,
                column: ColumnId::new(columns[rng.random_range(0..3)]),
                position: if rng.random_bool(0.5) {
                    Position::Top
                } else {
                    Position::Bottom
                },
            },
            2 => Edit::EditTask {
                task,
                edit: TaskEdit {
                    title: Some(format!("renamed {round}")),
                    ..TaskEdit::default()
                },
            },
            3 => Edit::AddComment {
                task,
                body: format!("comment {round}"),
            },
            _ => Edit::SetArchived {
                task,
                archived: rng.random_bool(0.3),
            },
        };
        who.edit(board, edit).await.expect("edit");
        if rng.random_bool(0.2) {
            tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(0..20))).await;
        }
    }
    // Settled: each is in sync with the server and all three hold the same board. (One can be
    // in sync a moment before the others' last edits reach it, so check until all agree.)
    let deadline = tokio::time::Instant::now() + crate::support::TIMEOUT;
    let reference = loop {
        for c in &clients {
            synced(c, board).await;
        }
        let mut boards = Vec::new();
        for c in &clients {
            boards.push(c.board(board).await.expect("board"));
        }
        if boards.windows(2).all(|w| w[0] == w[1]) {
            break boards.remove(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas never agreed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(server_board(&server, board).await, reference);
    for task in reference.tasks.values().filter(|t| !t.archived) {
        let homes = reference
            .columns
            .iter()
            .filter(|c| {
                reference
                    .column_tasks(&c.id)
                    .iter()
                    .any(|t| t.id == task.id)
            })
            .count();
        assert_eq!(homes, 1, "{task:?}");
    }
}
