//! Signing in from the CLI: register, whoami, logout, login, and where the session is kept.

use std::os::unix::fs::PermissionsExt;

use taskflow_testkit::server::TestServer;

use crate::support::User;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_whoami_logout_and_login_again() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start(dir.path()).await;
    let ann = User::with_server("ann", &server.bare_url()).await;
    let with_password = |args: &[&str], password: &str| {
        let mut command = ann.command(args);
        command.env("TASKFLOW_PASSWORD", password);
        command
    };

    let out = with_password(
        &["register", "--email", "ann@example.com", "--name", "Ann"],
        "a long enough password",
    )
    .output()
    .await
    .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who = ann.json(&["whoami"]).await;
    assert_eq!(who["user"]["email"], "ann@example.com");

    // The session is readable by the user only.
    let file = ann.home.path().join("credentials/default.json");
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    ann.ok(&["logout"]).await;
    assert!(!file.exists());
    let err = ann.fails(5, &["whoami"]).await;
    assert!(err.contains("not signed in"), "{err}");

    let out = with_password(&["login", "--email", "ann@example.com"], "wrong password!!")
        .output()
        .await
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong email or password"));
    let out = with_password(
        &["login", "--email", "ann@example.com"],
        "a long enough password",
    )
    .output()
    .await
    .expect("runs");
    assert!(out.status.success());
    assert!(ann.ok(&["whoami"]).await.contains("Ann <ann@example.com>"));

    // Signed in, a new board is registered in her (new, personal) workspace and syncs.
    let board = ann.json(&["board", "create", "Mine"]).await;
    assert_eq!(board["status"]["state"], "in_sync");
    let err = ann
        .fails(3, &["board", "create", "Elsewhere", "--workspace", "Nope"])
        .await;
    assert!(err.contains("no workspace `Nope`"), "{err}");
    let again = ann
        .json(&[
            "board",
            "create",
            "Second",
            "--workspace",
            "Ann's workspace",
        ])
        .await;
    assert_eq!(again["status"]["state"], "in_sync");

    // Signed out, boards stay on this device, and naming a workspace makes no sense.
    ann.ok(&["logout"]).await;
    let err = ann
        .fails(
            5,
            &["board", "create", "Local", "--workspace", "Ann's workspace"],
        )
        .await;
    assert!(err.contains("signed-in"), "{err}");
}
