//! The notification stream and inbox against our server: live pushes, the unread count, reads
//! on one device seen on another, and reconnecting after the server crashed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskflow_client_core::account::{AccountClient, AccountUser, Credentials, StaticToken};
use taskflow_client_core::{NotificationEvent, NotificationStream};
use taskflow_testkit::Account;
use taskflow_testkit::server::TestServer;

const WAIT: Duration = Duration::from_secs(20);

async fn next(stream: &mut NotificationStream) -> NotificationEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("an event in time")
        .expect("the stream goes on")
}

fn credentials(account: &Account) -> Credentials {
    Credentials {
        access_token: account.access_token.clone(),
        refresh_token: account.refresh_token.clone(),
        user: AccountUser {
            id: account.user_id.clone(),
            email: account.email.clone(),
            name: String::new(),
        },
    }
}

/// Ann (the server's account) gives Bob a task in her workspace.
async fn assign(ann: &Account, bob: &Account, title: &str) {
    let project = ann
        .post(
            "/api/v1/projects",
            json!({ "workspaceId": ann.workspace_id, "name": title }),
        )
        .await
        .expect("project");
    let body = json!({ "projectId": project["id"], "title": title, "assignees": [bob.user_id] });
    ann.post("/api/v1/tasks", body).await.expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_follows_new_notifications_reads_and_reconnects() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let ann = server.account.clone();
    let bob = Account::register(server.addr, "Bob")
        .await
        .expect("register");
    ann.add_member(&bob, "member").await.expect("join");
    let accounts = AccountClient::for_sync_url(&server.bare_url()).expect("url");
    let bobs = credentials(&bob);

    // The invitation Bob accepted is his first notification; read it over REST.
    let deadline = tokio::time::Instant::now() + WAIT;
    while accounts.unread_count(&bobs).await.expect("count") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no invitation notification"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(accounts.mark_all_read(&bobs).await.expect("read all"), 1);

    let tokens = Arc::new(StaticToken(bob.access_token.clone()));
    let mut laptop =
        NotificationStream::connect(&server.bare_url(), tokens.clone()).expect("laptop");
    let mut phone = NotificationStream::connect(&server.bare_url(), tokens.clone()).expect("phone");
    for stream in [&mut laptop, &mut phone] {
        assert_eq!(
            next(stream).await,
            NotificationEvent::Synced {
                unread_count: 0,
                items: vec![]
            }
        );
    }

    assign(&ann, &bob, "Plan the release").await;
    let NotificationEvent::Received(notification) = next(&mut laptop).await else {
        panic!("expected a notification");
    };
    assert_eq!(
        notification.title,
        "Tess Tester assigned you to “Plan the release”"
    );
    assert_eq!(laptop.unread_count(), 1);
    assert!(matches!(
        next(&mut phone).await,
        NotificationEvent::Received(_)
    ));

    // Read on the laptop: both streams hear of it and count down.
    laptop.mark_read(&notification.id).await;
    let read = NotificationEvent::Read {
        ids: vec![notification.id.clone()],
        all: false,
    };
    assert_eq!(next(&mut phone).await, read);
    assert_eq!(next(&mut laptop).await, read);
    assert_eq!((laptop.unread_count(), phone.unread_count()), (0, 0));
    let inbox = accounts
        .notifications(&bobs, false, None, 10)
        .await
        .expect("inbox");
    assert!(inbox.notifications[0].read);

    // The server crashes and comes back: the stream reconnects and syncs again.
    let server = server.restart().await;
    assert!(matches!(
        next(&mut laptop).await,
        NotificationEvent::Disconnected { .. }
    ));
    loop {
        match next(&mut laptop).await {
            NotificationEvent::Synced { unread_count, .. } => {
                assert_eq!(unread_count, 0);
                break;
            }
            NotificationEvent::Disconnected { .. } => continue,
            other => panic!("expected a new sync, got {other:?}"),
        }
    }
    assign(&ann.at(server.addr), &bob, "After the crash").await;
    let NotificationEvent::Received(after) = next(&mut laptop).await else {
        panic!("expected a notification");
    };
    assert_eq!(after.title, "Tess Tester assigned you to “After the crash”");
    assert_eq!(laptop.unread_count(), 1);

    // An unknown id is refused (404), whatever characters it has.
    for id in ["no-such-id", "../read-all", "a b?c"] {
        let refused = accounts.mark_read(&bobs, id).await;
        assert!(
            matches!(
                refused,
                Err(taskflow_client_core::account::AccountError::Rejected { status: 404, .. })
            ),
            "{id}: {refused:?}"
        );
    }
    let unread = accounts
        .notifications(&bobs, true, None, 10)
        .await
        .expect("unread");
    assert_eq!(unread.unread_count, 1);
    assert_eq!(unread.notifications[0].id, after.id);
}
