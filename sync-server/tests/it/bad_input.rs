//! Bad input gets an `error` message and a close for that peer only; nothing is stored from it.

use automerge::sync;
use minicbor_free::cbor_map;
use taskflow_proto::wire::{Message, SyncPayload};
use taskflow_proto::{DocumentId, PeerId};
use taskflow_testkit::Peer;

use crate::support::{Backend, TestDb, TestServer, add_task, board, task_titles};

/// Tiny hand-rolled CBOR for frames our own encoder would never write.
mod minicbor_free {
    /// A definite map of text keys to text values.
    pub fn cbor_map(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut out = vec![0xa0 | entries.len() as u8];
        for (k, v) in entries {
            text(&mut out, k);
            text(&mut out, v);
        }
        out
    }

    fn text(out: &mut Vec<u8>, s: &str) {
        assert!(s.len() < 24);
        out.push(0x60 | s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

fn sync_frame(document_id: DocumentId, data: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncPayload {
        sender_id: PeerId::new("mallory"),
        target_id: PeerId::new("server"),
        document_id,
        data,
    })
    .encode()
}

/// A joined peer sends `frame`; it must get an error naming `expect` and a close, while a
/// bystander editing a board keeps working and nothing new is stored.
async fn rejected(frame: Vec<u8>, expect: &str) {
    rejected_on_board(|_| frame, expect).await;
}

/// [`rejected`] for a frame about a board the sender may edit (`frame` gets its id).
async fn rejected_on_board(frame: impl FnOnce(DocumentId) -> Vec<u8>, expect: &str) {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut bystander = server.peer("bystander").await.expect("join");
    let id = bystander.create(board("Safe", 1)).await.expect("create");
    bystander.until_server_has(id).await.expect("stored");
    let stored_before = server.store.document_count().await.expect("count");

    let mut mallory = server.peer("mallory").await.expect("join");
    mallory.send_raw(frame(id)).await.expect("send");
    let (error, code) = mallory
        .expect_error_and_close()
        .await
        .expect("error then close");
    assert!(
        error.contains(expect),
        "error {error:?} should mention {expect:?}"
    );
    assert_eq!(code, Some(1002), "protocol error close code");

    bystander
        .edit(id, |d| add_task(d, "unaffected"))
        .await
        .expect("edit");
    bystander
        .until_server_has(id)
        .await
        .expect("the bystander still syncs");
    assert!(task_titles(bystander.doc(id)).contains(&"unaffected".to_owned()));
    assert_eq!(
        server.store.document_count().await.expect("count"),
        stored_before,
        "nothing stored"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_is_not_cbor() {
    rejected(vec![0xff, 0xfe, 0xfd], "undecodable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_message_type() {
    rejected(
        cbor_map(&[("type", "gossip"), ("senderId", "mallory")]),
        "unknown message type",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_of_the_wrong_type() {
    let id = DocumentId::random().to_string();
    let frame = cbor_map(&[
        ("type", "sync"),
        ("senderId", "mallory"),
        ("targetId", "server"),
        ("documentId", &id[..20]),
        ("data", "not bytes"),
    ]);
    rejected(frame, "undecodable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_document_id() {
    let frame = cbor_map(&[
        ("type", "request"),
        ("senderId", "mallory"),
        ("documentId", "nope!"),
        ("targetId", "s"),
    ]);
    rejected(frame, "documentId").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_bytes_that_are_not_an_automerge_sync_message() {
    rejected(
        sync_frame(DocumentId::random(), vec![0x42, 0xff, 0xff, 0xff]),
        "invalid automerge sync message",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_message_carrying_corrupt_changes() {
    let message = sync::Message {
        heads: Vec::new(),
        need: Vec::new(),
        have: Vec::new(),
        changes: sync::ChunkList::from(vec![0x85, 0x6f, 0x4a, 0x83, 1, 2, 3, 4, 5]),
        flags: None,
        version: sync::MessageVersion::V1,
    };
    rejected_on_board(
        |id| sync_frame(id, message.encode()),
        "invalid sync message",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let mut peer = server.peer("texter").await.expect("join");
    peer.send_text("{\"type\":\"join\"}").await.expect("send");
    let (error, code) = peer
        .expect_error_and_close()
        .await
        .expect("error then close");
    assert!(error.contains("binary"), "{error}");
    assert_eq!(code, Some(1003));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_before_join_and_unsupported_versions() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;

    let mut early = Peer::connect_raw(&server.url(), "early")
        .await
        .expect("connect");
    early
        .send_raw(sync_frame(DocumentId::random(), vec![0x42, 0, 0, 0, 0]))
        .await
        .expect("send");
    let (error, _) = early
        .expect_error_and_close()
        .await
        .expect("error then close");
    assert!(error.contains("expected `join`"), "{error}");

    let mut future = Peer::connect_raw(&server.url(), "future")
        .await
        .expect("connect");
    let join = Message::Join {
        sender_id: PeerId::new("future"),
        metadata: None,
        supported_protocol_versions: Some(vec!["2".into()]),
    };
    future.send(&join).await.expect("send");
    let (error, _) = future
        .expect_error_and_close()
        .await
        .expect("error then close");
    assert_eq!(error, "unsupported protocol version");
    server.stop().await;
}
