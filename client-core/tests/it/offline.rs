//! The local store on its own: boards open with no network, survive restarts and compaction,
//! and two processes sharing a store never lose each other's edits.

use taskflow_client_core::board::ops::{Position, TaskEdit};
use taskflow_client_core::board::{ColumnId, TaskId};
use taskflow_client_core::store::ReplicaStore;
use taskflow_client_core::{ClientError, ClientEvent, DocumentId, Edit, Origin, SyncStatus};

use crate::support::{add_task, client, next_event, titles};

#[tokio::test]
async fn a_board_made_offline_opens_again_from_the_store() {
    let dir = tempfile::tempdir().expect("dir");
    let a = client(dir.path(), "ann", None).await;
    let board = a.create_board("Home").await.expect("create");
    let task = add_task(&a, board, "buy milk").await;
    a.edit(
        board,
        Edit::AddComment {
            task: task.clone(),
            body: "oat".into(),
        },
    )
    .await
    .expect("comment");
    assert_eq!(
        a.status(board).await.expect("status"),
        SyncStatus::Offline { pending: 3 }
    );
    a.shutdown().await;

    let again = client(dir.path(), "ann", None).await;
    let boards = again.boards().await.expect("list");
    assert_eq!(boards.len(), 1);
    assert_eq!(boards[0].name.as_deref(), Some("Home"));
    assert_eq!(boards[0].tasks, 1);
    let read = again.board(board).await.expect("board");
    assert_eq!(read.tasks[&task].comments[0].body, "oat");
    assert_eq!(read.tasks[&task].comments[0].author, "ann");
}

#[tokio::test]
async fn local_edits_are_announced_with_what_they_touched() {
    let dir = tempfile::tempdir().expect("dir");
    let a = client(dir.path(), "ann", None).await;
    let board = a.create_board("Home").await.expect("create");
    let mut events = a.subscribe();
    let task = add_task(&a, board, "buy milk").await;
    let ClientEvent::Board(created) =
        next_event(&mut events, |e| matches!(e, ClientEvent::Board(_))).await
    else {
        unreachable!()
    };
    assert_eq!(created.origin, Origin::Local);
    assert!(created.tasks[&task].created);

    a.edit(
        board,
        Edit::SetArchived {
            task: task.clone(),
            archived: true,
        },
    )
    .await
    .expect("archive");
    let ClientEvent::Board(archived) =
        next_event(&mut events, |e| matches!(e, ClientEvent::Board(_))).await
    else {
        unreachable!()
    };
    assert!(archived.tasks[&task].fields.contains("archived"));
}

#[tokio::test]
async fn bad_edits_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let a = client(dir.path(), "ann", None).await;
    let board = a.create_board("Home").await.expect("create");
    let task = add_task(&a, board, "buy milk").await;
    let before = a.board(board).await.expect("board");

    let unknown_column = a
        .edit(
            board,
            Edit::MoveTask {
                task: task.clone(),
                column: ColumnId::new("nope"),
                position: Position::Top,
            },
        )
        .await;
    assert!(
        matches!(unknown_column, Err(ClientError::Schema(_))),
        "{unknown_column:?}"
    );
    let unknown_task = a
        .edit(
            board,
            Edit::EditTask {
                task: TaskId::new("missing"),
                edit: TaskEdit::default(),
            },
        )
        .await;
    assert!(
        matches!(unknown_task, Err(ClientError::Schema(_))),
        "{unknown_task:?}"
    );
    let unknown_board = a.board(DocumentId::random()).await;
    assert!(
        matches!(unknown_board, Err(ClientError::UnknownBoard(_))),
        "{unknown_board:?}"
    );

    assert_eq!(a.board(board).await.expect("board"), before);
    assert_eq!(
        a.status(board).await.expect("status"),
        SyncStatus::Offline { pending: 2 }
    );
}

#[tokio::test]
async fn many_edits_are_compacted_and_still_all_there() {
    let dir = tempfile::tempdir().expect("dir");
    let a = client(dir.path(), "ann", None).await;
    let board = a.create_board("Many").await.expect("create");
    for i in 0..600 {
        add_task(&a, board, &format!("t{i:03}")).await;
    }
    a.shutdown().await;
    let store = ReplicaStore::open(dir.path()).await.expect("store");
    let stored = store.load(&board).await.expect("load").expect("there");
    assert!(
        stored.chunks.len() < 256,
        "{} chunks: compaction ran",
        stored.chunks.len()
    );
    drop(store);

    let again = client(dir.path(), "ann", None).await;
    let read = again.board(board).await.expect("board");
    assert_eq!(read.tasks.len(), 600);
}

#[tokio::test]
async fn two_clients_sharing_a_store_keep_each_others_edits_through_compaction() {
    let dir = tempfile::tempdir().expect("dir");
    let a = client(dir.path(), "ann", None).await;
    let board = a.create_board("Shared").await.expect("create");
    add_task(&a, board, "first").await;

    // A second process on the same data directory (a `watch` beside an edit, say).
    let b = client(dir.path(), "ann", None).await;
    add_task(&b, board, "from the other process").await;
    // A now writes enough to compact; B's chunk must be folded in, not deleted.
    for i in 0..300 {
        add_task(&a, board, &format!("a{i}")).await;
    }
    a.shutdown().await;
    b.shutdown().await;

    let reader = client(dir.path(), "ann", None).await;
    let read = reader.board(board).await.expect("board");
    assert_eq!(read.tasks.len(), 302);
    assert!(titles(&read).contains(&"from the other process".to_owned()));
}
