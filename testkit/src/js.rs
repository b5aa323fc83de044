//! The real automerge-repo JS peers (`testkit/js`, dependencies installed by
//! `scripts/js-deps.sh`): `peer.mjs` drives stock JS clients, `ref-server.mjs` is the stock
//! reference sync server.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::Account;

pub fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn require_deps() {
    assert!(
        js_dir().join("node_modules").exists(),
        "JS dependencies missing: run scripts/js-deps.sh (the test script does)"
    );
}

/// Runs `node peer.mjs <args>`, which must succeed.
pub async fn node(args: &[&str]) -> Output {
    node_with(None, args).await
}

/// Runs `node peer.mjs <args>` signed in as `account`: the boards it creates are registered
/// in the account's workspace (pass [`Account::sync_url`] as the URL).
pub async fn node_as(account: &Account, args: &[&str]) -> Output {
    node_with(Some(account), args).await
}

async fn node_with(account: Option<&Account>, args: &[&str]) -> Output {
    require_deps();
    let mut command = Command::new("node");
    if let Some(account) = account {
        let register = serde_json::json!({
            "base": account.base,
            "token": account.access_token,
            "workspaceId": account.workspace_id,
        });
        command.env("TASKFLOW_REGISTER", register.to_string());
    }
    let output = command
        .arg("peer.mjs")
        .args(args)
        .current_dir(js_dir())
        .output()
        .await
        .expect("node runs");
    assert!(
        output.status.success(),
        "node peer.mjs {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The JSON line `peer.mjs` printed last.
pub fn json(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).expect("valid JSON")
}

/// The stock automerge-repo sync server (`ws` + `NodeWSServerAdapter` + file storage).
#[derive(Debug)]
pub struct RefServer {
    pub port: u16,
    child: Child,
}

impl RefServer {
    pub async fn start(storage_dir: &Path) -> RefServer {
        require_deps();
        let mut child = Command::new("node")
            .arg("ref-server.mjs")
            .arg("0")
            .arg(storage_dir)
            .current_dir(js_dir())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(port) = line.strip_prefix("listening ") {
                    return port.trim().parse().expect("port");
                }
            }
            panic!("ref-server.mjs exited before listening");
        })
        .await
        .expect("ref-server.mjs listens in time");
        RefServer { port, child }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
