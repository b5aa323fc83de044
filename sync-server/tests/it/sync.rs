//! Peers sync boards through the server; documents survive restarts, compaction and eviction.

use std::time::Duration;

use taskflow_proto::DocumentId;
use taskflow_proto::board::Board;
use taskflow_proto::wire::Message;
use taskflow_testkit::Event;

use crate::support::{Backend, TestDb, TestServer, add_task, board, on_both_backends, task_titles};

on_both_backends!(
    two_peers_sync_a_board,
    a_restart_reloads_every_document,
    compaction_and_eviction_leave_the_document_identical,
);

async fn two_peers_sync_a_board(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("ann joins");
    let mut bo = server.peer("bo").await.expect("bo joins");

    let id = ann.create(board("Launch", 1)).await.expect("create");
    ann.until_server_has(id)
        .await
        .expect("server stores ann's board");

    bo.request(id).await.expect("request");
    bo.until_doc(id, |d| task_titles(d) == ["task 0"])
        .await
        .expect("bo sees the board");

    bo.edit(id, |d| add_task(d, "from bo"))
        .await
        .expect("bo edits");
    ann.until_doc(id, |d| task_titles(d).contains(&"from bo".to_owned()))
        .await
        .expect("ann sees bo's task");
    ann.edit(id, |d| add_task(d, "from ann"))
        .await
        .expect("ann edits");
    bo.until_doc(id, |d| task_titles(d).contains(&"from ann".to_owned()))
        .await
        .expect("bo sees ann's task");

    ann.until_server_has(id).await.expect("settled");
    bo.until_server_has(id).await.expect("settled");
    assert_eq!(Board::read(ann.doc(id)), Board::read(bo.doc(id)));
    server.stop().await;
}

async fn a_restart_reloads_every_document(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("join");
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = ann
            .create(board(&format!("board {n}"), n + 1))
            .await
            .expect("create");
        ids.push(id);
    }
    for &id in &ids {
        ann.until_server_has(id).await.expect("stored");
    }
    ann.close().await.expect("close");
    let account = server.account.clone();
    server.stop().await;

    let server = TestServer::start_as(db.config(), Some(account)).await;
    assert_eq!(server.store.document_count().await.expect("count"), 5);
    let mut fresh = server.peer("fresh").await.expect("join");
    for (n, &id) in ids.iter().enumerate() {
        fresh.request(id).await.expect("request");
        fresh
            .until_doc(id, |d| task_titles(d).len() == n + 1)
            .await
            .expect("every document comes back");
        let board = Board::read(fresh.doc(id)).expect("a board");
        assert_eq!(board.name, format!("board {n}"));
    }
    server.stop().await;
}

async fn compaction_and_eviction_leave_the_document_identical(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.compact_after_changes = 5;
    config.evict_after = Duration::from_millis(200);
    let server = TestServer::start(config).await;

    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Busy", 0)).await.expect("create");
    for i in 0..20 {
        ann.edit(id, |d| add_task(d, &format!("edit {i}")))
            .await
            .expect("edit");
        ann.until_server_has(id).await.expect("stored");
    }
    let chunks = server.store.change_count(&id).await.expect("count");
    assert!(chunks < 5, "compacted as it went ({chunks} chunks left)");
    let heads = ann.doc(id).get_heads();
    ann.close().await.expect("close");

    // With nobody on it the document leaves memory (compacting what is left first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.shared.registry.open_documents() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "document evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.store.change_count(&id).await.expect("count"), 0);

    let mut fresh = server.peer("fresh").await.expect("join");
    fresh.request(id).await.expect("request");
    fresh
        .until_doc(id, |d| d.get_heads() == heads)
        .await
        .expect("reloaded identical");
    assert_eq!(task_titles(fresh.doc(id)).len(), 20);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_document_is_unavailable_and_the_peer_stays_connected() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("join");
    let ghost = DocumentId::random();
    ann.request(ghost).await.expect("request");
    ann.run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
        p.replicas[&ghost].unavailable
    })
    .await
    .expect("doc-unavailable");
    assert_eq!(
        server.store.document_count().await.expect("count"),
        0,
        "nothing stored"
    );

    let id = ann.create(board("Still here", 1)).await.expect("create");
    ann.until_server_has(id)
        .await
        .expect("the connection still works");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_fetch_is_one_whole_document_then_increments() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Big", 300)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");
    let whole = ann.doc(id).save().len();

    let mut bo = server.peer("bo").await.expect("join");
    bo.request(id).await.expect("request");
    bo.until_doc(id, |d| task_titles(d).len() == 300)
        .await
        .expect("fetched");
    for i in 0..3 {
        ann.edit(id, |d| add_task(d, &format!("later {i}")))
            .await
            .expect("edit");
        bo.until_doc(id, |d| task_titles(d).len() == 301 + i)
            .await
            .expect("increment arrives");
    }
    let sizes = &bo.received_sizes[&id];
    let large = sizes.iter().filter(|&&n| n >= whole / 2).count();
    assert_eq!(
        large, 1,
        "the whole document is sent once: {sizes:?} (document {whole} bytes)"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_messages_reach_the_other_peers_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Live", 0)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");
    let mut bo = server.peer("bo").await.expect("join");
    let mut cy = server.peer("cy").await.expect("join");
    for p in [&mut bo, &mut cy] {
        p.request(id).await.expect("request");
        p.until_server_has(id).await.expect("synced");
    }

    let ephemeral = |sender: &str, count: u64| Message::Ephemeral {
        sender_id: taskflow_proto::PeerId::new(sender),
        target_id: taskflow_proto::PeerId::new("server"),
        document_id: id,
        session_id: "s-ann".into(),
        count,
        data: vec![0xa1, 0x61, 0x78, 0x01],
    };
    ann.send(&ephemeral("ann", 1)).await.expect("send");
    ann.send(&ephemeral("ann", 1)).await.expect("send a repeat");
    ann.send(&ephemeral("ann", 2)).await.expect("send");
    // bo hands a relayed message back, as JS clients do: it must not echo to anyone.
    bo.send(&ephemeral("ann", 2)).await.expect("bounce");

    for p in [&mut bo, &mut cy] {
        p.drain(Duration::from_millis(500)).await.expect("drain");
        let counts: Vec<u64> = p
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Ephemeral { sender, count, .. } if sender.as_str() == "ann" => Some(*count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, [1, 2], "{} got each message once", p.peer_id);
    }
    ann.drain(Duration::from_millis(200)).await.expect("drain");
    assert!(
        !ann.events
            .iter()
            .any(|e| matches!(e, Event::Ephemeral { .. })),
        "the sender gets nothing back"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_heads_gossip_is_ignored_and_leave_closes_normally() {
    use std::collections::BTreeMap;
    use taskflow_proto::wire::RemoteHeads;
    use taskflow_proto::{PeerId, StorageId};

    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Gossip", 1)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");

    let me = PeerId::new("ann");
    let them = ann.server_peer.clone();
    ann.send(&Message::RemoteSubscriptionChange {
        sender_id: me.clone(),
        target_id: them.clone(),
        add: vec![StorageId::new("some-storage")],
        remove: Vec::new(),
    })
    .await
    .expect("send");
    ann.send(&Message::RemoteHeadsChanged {
        sender_id: me.clone(),
        target_id: them,
        document_id: id,
        new_heads: BTreeMap::from([(
            StorageId::new("some-storage"),
            RemoteHeads {
                heads: vec!["not-even-a-hash".into()],
                timestamp: 1.7e12,
            },
        )]),
    })
    .await
    .expect("send");
    ann.edit(id, |d| add_task(d, "after gossip"))
        .await
        .expect("edit");
    ann.until_server_has(id)
        .await
        .expect("the peer is still served");

    ann.send(&Message::Leave { sender_id: me })
        .await
        .expect("leave");
    ann.drain(Duration::from_secs(2)).await.expect("drain");
    assert!(
        ann.events.iter().any(|e| matches!(
            e,
            Event::Closed {
                code: Some(1000),
                ..
            }
        )),
        "leave ends the connection normally: {:?}",
        ann.events
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_open_document_unloads_and_still_syncs_the_next_edit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.unload_after = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Quiet", 3)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");
    let mut bo = server.peer("bo").await.expect("join");
    bo.request(id).await.expect("request");
    bo.until_server_has(id).await.expect("fetched");

    // Both stay connected while the document goes quiet (and back to its stored form).
    for p in [&mut ann, &mut bo] {
        p.drain(Duration::from_millis(300)).await.expect("drain");
    }
    for round in 0..3 {
        let title = format!("after quiet {round}");
        ann.edit(id, |d| add_task(d, &title)).await.expect("edit");
        bo.until_doc(id, |d| task_titles(d).contains(&title))
            .await
            .expect("bo sees it");
        bo.drain(Duration::from_millis(300))
            .await
            .expect("quiet again");
        ann.drain(Duration::from_millis(10)).await.expect("drain");
    }
    bo.edit(id, |d| add_task(d, "from bo")).await.expect("edit");
    ann.until_doc(id, |d| task_titles(d).contains(&"from bo".to_owned()))
        .await
        .expect("ann sees it");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_edits_from_a_peer_that_is_not_reading_still_lands() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut writer = server.peer("writer").await.expect("join");
    let id = writer.create(board("Burst", 100)).await.expect("create");
    writer.until_server_has(id).await.expect("stored");
    let mut reader = server.peer("reader").await.expect("join");
    reader.request(id).await.expect("request");
    reader.until_server_has(id).await.expect("fetched");

    // The writer edits without reading what the server sent meanwhile.
    for i in 0..30 {
        writer
            .edit(id, |d| add_task(d, &format!("burst {i}")))
            .await
            .expect("edit");
    }
    writer.until_server_has(id).await.expect("the burst lands");
    reader
        .until_doc(id, |d| task_titles(d).len() == 130)
        .await
        .expect("and reaches the reader");
    server.stop().await;
}
