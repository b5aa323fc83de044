//! The store's guard for nodes sharing a document: an append or a compaction made on top of
//! heads the store no longer holds is refused and writes nothing, and a catch-up reads exactly
//! what was appended since. On both backends.

use automerge::{AutoCommit, ChangeHash, transaction::Transactable};
use taskflow_proto::DocumentId;
use taskflow_sync_server::store::{Batch, ProjectionDelta, Store, StoreError, StoredChange};

use crate::support::{Backend, TestDb, on_both_backends};

on_both_backends!(
    an_append_on_heads_another_node_moved_is_refused_and_writes_nothing,
    a_compaction_that_would_drop_newer_changes_is_refused,
);

/// A document and a function making one more change to it.
fn change(doc: &mut AutoCommit, value: i64) -> (StoredChange, Vec<ChangeHash>) {
    doc.put(automerge::ROOT, "n", value).expect("put");
    let change = doc.get_last_local_change().expect("a change").clone();
    (StoredChange::from(change), doc.get_heads())
}

async fn append(
    store: &Store,
    id: &DocumentId,
    base: &[ChangeHash],
    changes: &[StoredChange],
    heads: &[ChangeHash],
) -> Result<Option<i64>, StoreError> {
    let batch = Batch {
        base,
        changes,
        heads,
        projection: &ProjectionDelta::default(),
        events: &[],
    };
    store.append(id, batch, 1).await
}

/// A store on a fresh database (kept as long as the returned `TestDb`).
async fn fresh_store(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::new(backend).await;
    let store = Store::open(db.database_url.as_deref(), &db.data_dir())
        .await
        .expect("store");
    (db, store)
}

async fn an_append_on_heads_another_node_moved_is_refused_and_writes_nothing(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let id = DocumentId::random();
    let mut doc = AutoCommit::new();
    let (first, after_first) = change(&mut doc, 1);
    let seq = append(&store, &id, &[], &[first], &after_first)
        .await
        .expect("the first append")
        .expect("a chunk written");

    // Another node wrote `second`; this one, still on the empty base, is refused.
    let (second, after_second) = change(&mut doc, 2);
    let mut elsewhere = AutoCommit::new();
    let (stale, stale_heads) = change(&mut elsewhere, 9);
    let refused = append(&store, &id, &[], &[stale], &stale_heads).await;
    assert!(matches!(refused, Err(StoreError::Stale(_))), "{refused:?}");
    let stored = store.load(&id).await.expect("load").expect("stored");
    assert_eq!(
        stored.heads, after_first,
        "the refused append wrote nothing"
    );
    assert_eq!(stored.changes.len(), 1);
    assert_eq!(stored.last_seq, seq);

    // On the right base it goes through, and a catch-up from `seq` reads exactly it.
    let later = append(
        &store,
        &id,
        &after_first,
        std::slice::from_ref(&second),
        &after_second,
    )
    .await
    .expect("on the stored heads")
    .expect("a chunk written");
    assert!(later > seq);
    let caught = store
        .catch_up(&id, seq)
        .await
        .expect("catch up")
        .expect("stored");
    assert_eq!(caught.changes, [second]);
    assert_eq!(caught.heads, after_second);
    assert_eq!(caught.last_seq, later);
    let nothing = store
        .catch_up(&id, later)
        .await
        .expect("catch up")
        .expect("stored");
    assert!(nothing.changes.is_empty());
    assert!(
        store
            .catch_up(&DocumentId::random(), 0)
            .await
            .expect("read")
            .is_none()
    );
    store.close().await;
}

async fn a_compaction_that_would_drop_newer_changes_is_refused(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let id = DocumentId::random();
    let mut doc = AutoCommit::new();
    let (first, after_first) = change(&mut doc, 1);
    append(&store, &id, &[], std::slice::from_ref(&first), &after_first)
        .await
        .expect("append");
    let snapshot_at_first = doc.save();
    let (second, after_second) = change(&mut doc, 2);
    append(&store, &id, &after_first, &[second], &after_second)
        .await
        .expect("append");

    // A node that has not seen `second` would fold only `first` and set the heads back.
    let compacted = store
        .compact(&id, &snapshot_at_first, &after_first, &[first.hash], 2)
        .await
        .expect("compact");
    assert!(!compacted, "refused: the store moved on");
    let stored = store.load(&id).await.expect("load").expect("stored");
    assert_eq!(stored.heads, after_second);
    assert_eq!(stored.changes.len(), 2);
    assert!(stored.snapshot.is_none());

    let compacted = store
        .compact(&id, &doc.save(), &after_second, &[first.hash], 3)
        .await
        .expect("compact");
    assert!(compacted, "on the current heads it goes through");
    store.close().await;
}
