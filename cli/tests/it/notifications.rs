//! `taskflow notifications`: listing (all or unread), marking one or all read, and refusals.

use std::time::Duration;

use serde_json::json;
use taskflow_testkit::server::TestServer;

use crate::support::User;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_unread_and_mark_read_from_the_command_line() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let ann = User::signed_up("ann", &server).await;
    let bob = User::signed_up("bob", &server).await;
    // Bob joins Ann's workspace (his first notification: the invitation), and she gives him a
    // task.
    ann.share_with(&bob, &server).await;
    let (anns, bobs) = (ann.account(&server).await, bob.account(&server).await);
    let project = anns
        .post(
            "/api/v1/projects",
            json!({ "workspaceId": anns.workspace_id, "name": "Launch" }),
        )
        .await
        .expect("project");
    let task = json!({ "projectId": project["id"], "title": "Write the notes", "assignees": [bobs.user_id] });
    anns.post("/api/v1/tasks", task).await.expect("task");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = bob.json(&["notifications"]).await;
        if listed["unreadCount"] == 2 {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = listed["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .map(|n| n["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        ["task.assigned", "invitation.received"],
        "newest first"
    );
    let newest = listed["notifications"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // For people: a table with the unread marked.
    let table = bob.ok(&["notifications"]).await;
    assert!(
        table.contains("ann assigned you to “Write the notes”"),
        "{table}"
    );
    assert!(table.contains(&newest), "{table}");
    assert!(table.contains("2 unread."), "{table}");

    let read = bob.ok(&["notifications", "--read", &newest]).await;
    assert_eq!(read.trim(), "Read: ann assigned you to “Write the notes”");
    let unread = bob.json(&["notifications", "--unread"]).await;
    assert_eq!(unread["unreadCount"], 1);
    assert_eq!(unread["notifications"][0]["kind"], "invitation.received");

    let all = bob.json(&["notifications", "--read-all"]).await;
    assert_eq!(all["marked"], 1);
    let unread = bob.json(&["notifications", "--unread"]).await;
    assert_eq!(unread["notifications"], json!([]));

    // Refusals: an unknown id (not found, 3), conflicting flags (usage, 2), signed out (5).
    let err = bob
        .fails(
            3,
            &[
                "notifications",
                "--read",
                "0b7c8a7e-0000-4000-8000-000000000000",
            ],
        )
        .await;
    assert!(err.contains("no such notification"), "{err}");
    bob.fails(2, &["notifications", "--read-all", "--unread"])
        .await;
    bob.fails(2, &["notifications", "--limit", "0"]).await;
    let outsider = User::with_server("cy", &server.bare_url()).await;
    let err = outsider.fails(5, &["notifications"]).await;
    assert!(err.contains("not signed in"), "{err}");
}
