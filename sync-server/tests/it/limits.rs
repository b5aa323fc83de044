//! Limits answer with clear errors: frame size, documents per connection, slow readers.

use std::time::Duration;

use taskflow_proto::PeerId;
use taskflow_proto::wire::Message;
use taskflow_testkit::Event;

use crate::support::{Backend, TestDb, TestServer, board};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.max_frame_bytes = 4096;
    let server = TestServer::start(config).await;
    let mut peer = server.peer("big").await.expect("join");
    peer.send_raw(vec![0u8; 10_000]).await.expect("send");
    let (error, code) = peer
        .expect_error_and_close()
        .await
        .expect("error then close");
    assert!(error.contains("4096 byte limit"), "{error}");
    assert_eq!(code, Some(1009));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_opens_at_most_the_configured_documents() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.max_docs_per_connection = 2;
    let server = TestServer::start(config).await;
    let mut peer = server.peer("greedy").await.expect("join");
    for n in 0..2 {
        let id = peer
            .create(board(&format!("b{n}"), 0))
            .await
            .expect("create");
        peer.until_server_has(id).await.expect("within the limit");
    }
    peer.create(board("one too many", 0)).await.expect("send");
    let (error, code) = peer
        .expect_error_and_close()
        .await
        .expect("error then close");
    assert!(error.contains("too many open documents"), "{error}");
    assert_eq!(code, Some(1008));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_disconnected_not_buffered() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.send_queue_bytes = 1024 * 1024;
    let server = TestServer::start(config).await;

    let mut talker = server.peer("talker").await.expect("join");
    let id = talker.create(board("Chatty", 0)).await.expect("create");
    talker.until_server_has(id).await.expect("stored");
    let mut sleeper = server.peer("sleeper").await.expect("join");
    sleeper.request(id).await.expect("request");
    sleeper.until_server_has(id).await.expect("synced");

    // The sleeper stops reading; the talker floods presence updates at it.
    let payload = vec![7u8; 64 * 1024];
    for count in 1..=400u64 {
        let message = Message::Ephemeral {
            sender_id: PeerId::new("talker"),
            target_id: PeerId::new("server"),
            document_id: id,
            session_id: "flood".into(),
            count,
            data: payload.clone(),
        };
        talker.send(&message).await.expect("send");
    }
    talker
        .until_server_has(id)
        .await
        .expect("the talker is served throughout");

    // When the sleeper reads again it finds what fit in the queue, then the reason it was cut off.
    tokio::time::timeout(Duration::from_secs(30), async {
        while sleeper
            .next_message(Duration::from_secs(10))
            .await
            .expect("read")
            .is_some()
        {}
    })
    .await
    .expect("the sleeper's connection ends");
    let relayed = sleeper
        .events
        .iter()
        .filter(|e| matches!(e, Event::Ephemeral { .. }))
        .count();
    assert!(
        relayed < 400,
        "not everything was buffered for it ({relayed})"
    );
    assert!(
        sleeper.events.iter().any(|e| matches!(
            e,
            Event::Closed {
                code: Some(1013),
                ..
            }
        )),
        "closed with try-again-later: {:?}",
        sleeper.events.last()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_pings_is_disconnected_and_its_documents_released() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.keepalive = Duration::from_millis(100);
    config.evict_after = Duration::from_millis(100);
    let server = TestServer::start(config).await;

    let mut ghost = server.peer("ghost").await.expect("join");
    let id = ghost.create(board("Left open", 1)).await.expect("create");
    ghost.until_server_has(id).await.expect("stored");

    // The ghost stops reading (so it answers no pings), as a vanished client would. The server
    // lets it go and releases its document. (Whether the ghost can still read the `error` and
    // close frames depends on its TCP stack; a vanished client never does.)
    tokio::time::sleep(Duration::from_millis(600)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.shared.registry.open_documents() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "its document leaves memory"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection itself ends once the closing handshake gives up on the silent peer.
    while server.shared.connection_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection is gone"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_keeps_reading_stays_connected_through_pings() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.keepalive = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Alive", 1)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");
    // Reading answers the pings (tungstenite replies with pongs).
    ann.drain(Duration::from_millis(800)).await.expect("drain");
    assert!(!ann.is_closed(), "{:?}", ann.events);
    ann.edit(id, |d| crate::support::add_task(d, "still here"))
        .await
        .expect("edit");
    ann.until_server_has(id).await.expect("still served");
    server.stop().await;
}
