//! The durability rule under fire: kill -9 during a burst of changes, then restart; every change
//! the server had told the peer it holds is there. And SIGTERM closes sockets with 1001.

use std::time::Duration;

use automerge::ReadDoc;

use taskflow_testkit::Event;

use crate::support::{
    Backend, ServerProcess, TestDb, add_task, board, on_both_backends, task_titles,
};

on_both_backends!(kill_nine_during_a_burst_loses_nothing_acknowledged);

async fn kill_nine_during_a_burst_loses_nothing_acknowledged(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Compacting every few changes puts compactions, not just appends, under the kill.
    let server = ServerProcess::start_with(&db, &["--compact-after-changes", "4"]).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Burst", 0)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");

    // Fire edits without waiting, reading acknowledgements as they come.
    for i in 0..300 {
        ann.edit(id, |d| add_task(d, &format!("burst {i}")))
            .await
            .expect("edit");
        if i % 10 == 0 {
            ann.drain(Duration::from_millis(1)).await.expect("read");
        }
    }
    // Kill as soon as the server has acknowledged part of the burst.
    ann.run_until(Duration::from_secs(20), |p| {
        p.replicas[&id]
            .server_heads
            .iter()
            .any(|h| p.doc(id).get_change_by_hash(h).is_some())
            && p.received_sizes[&id].len() > 3
    })
    .await
    .expect("some acknowledgements");
    server.kill9().await;
    ann.drain(Duration::from_millis(100))
        .await
        .expect("read what was in flight");
    let acknowledged = ann.replicas[&id].server_heads.clone();
    assert!(!acknowledged.is_empty());

    let server = ServerProcess::start(&db).await;
    let mut fresh = server.peer("fresh").await.expect("join");
    fresh.request(id).await.expect("request");
    fresh
        .until_doc(id, |d| {
            !task_titles(d).is_empty() || d.get_heads().len() > 1
        })
        .await
        .expect("fetched");
    fresh.until_server_has(id).await.expect("settled");
    let reloaded = fresh.doc(id);
    for head in &acknowledged {
        assert!(
            reloaded.get_change_by_hash(head).is_some(),
            "acknowledged change {head} survived the crash"
        );
    }
    server.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_with_going_away_and_keeps_the_data() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = ServerProcess::start(&db).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Graceful", 2)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");

    let status = server.terminate().await;
    assert!(status.success(), "clean exit: {status}");
    ann.drain(Duration::from_secs(2)).await.expect("read");
    assert!(
        ann.events.iter().any(|e| matches!(
            e,
            Event::Closed {
                code: Some(1001),
                ..
            }
        )),
        "closed with 1001: {:?}",
        ann.events
    );

    let server = ServerProcess::start(&db).await;
    let mut fresh = server.peer("fresh").await.expect("join");
    fresh.request(id).await.expect("request");
    fresh
        .until_doc(id, |d| task_titles(d).len() == 2)
        .await
        .expect("data kept");
    server.kill9().await;
}
