//! Runs the real `taskflow` binary with its own Taskflow home.

use std::process::{Output, Stdio};

use taskflow_testkit::Account;
use taskflow_testkit::account::PASSWORD;
use taskflow_testkit::server::TestServer;
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// One person's machine: a Taskflow home with profiles and their data directories.
pub struct User {
    pub home: TempDir,
}

impl User {
    /// A user whose default profile has no server.
    pub async fn offline(name: &str) -> User {
        let user = User {
            home: tempfile::tempdir().expect("home"),
        };
        user.ok(&["profile", "set", "default", "--user", name])
            .await;
        user
    }

    /// A user whose default profile syncs with `server`.
    pub async fn with_server(name: &str, server: &str) -> User {
        let user = User::offline(name).await;
        user.ok(&["profile", "set", "default", "--server", server])
            .await;
        user
    }

    /// A user who signed up on `server` with the CLI (`taskflow register`).
    pub async fn signed_up(name: &str, server: &TestServer) -> User {
        let user = User::with_server(name, &server.bare_url()).await;
        let email = format!("{name}@example.test");
        let out = user
            .command(&["register", "--email", &email, "--name", name])
            .env("TASKFLOW_PASSWORD", PASSWORD)
            .output()
            .await
            .expect("taskflow runs");
        assert!(
            out.status.success(),
            "register: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        user
    }

    /// This user's account on `server` as the CLI keeps it, with their (first) workspace.
    pub async fn account(&self, server: &TestServer) -> Account {
        let file = self.home.path().join("credentials/default.json");
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(file).expect("signed in"))
                .expect("credentials JSON");
        let text = |v: &serde_json::Value| v.as_str().expect("string").to_owned();
        Account::from_tokens(
            server.addr,
            &text(&saved["user"]["id"]),
            &text(&saved["user"]["email"]),
            &text(&saved["accessToken"]),
            &text(&saved["refreshToken"]),
        )
        .await
        .expect("account")
    }

    /// Makes `other` a member of this user's workspace, where their boards are made.
    pub async fn share_with(&self, other: &User, server: &TestServer) {
        let mine = self.account(server).await;
        let theirs = other.account(server).await;
        mine.add_member(&theirs, "member").await.expect("share");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow"));
        command
            .args(args)
            .env("TASKFLOW_HOME", self.home.path())
            .env_remove("TASKFLOW_PROFILE")
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("taskflow runs")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "taskflow {args:?} failed with {:?}\nstdout: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    /// Runs a `--json` command that must succeed; returns its last JSON line.
    pub async fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all).await;
        let line = out.lines().last().expect("a line of output");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    pub async fn fails(&self, code: i32, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert_eq!(
            output.status.code(),
            Some(code),
            "taskflow {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stderr).expect("utf-8")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stdin(Stdio::piped());
        command.spawn().expect("taskflow starts")
    }
}

/// Task titles per column of a `board show --json` output.
pub fn columns(board: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    board["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            let titles = c["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .map(|t| t["title"].as_str().expect("title").to_owned())
                .collect();
            (c["id"].as_str().expect("id").to_owned(), titles)
        })
        .collect()
}
