//! A client killed with SIGKILL in the middle of a burst of edits loses none it reported saved.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::support::User;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_keeps_every_reported_edit() {
    let ann = User::offline("ann").await;
    ann.ok(&["board", "create", "Burst"]).await;

    let mut import = ann.spawn(&["--json", "task", "import", "Burst"]);
    let mut stdin = import.stdin.take().expect("stdin");
    let feeder = tokio::spawn(async move {
        for i in 0..100_000 {
            if stdin
                .write_all(format!("task {i}\n").as_bytes())
                .await
                .is_err()
            {
                break; // the process is gone
            }
        }
    });
    let mut lines = BufReader::new(import.stdout.take().expect("stdout")).lines();
    let mut saved = BTreeSet::new();
    while saved.len() < 150 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("import reports in time")
            .expect("read")
            .expect("import still running");
        let report: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        saved.insert(report["saved"].as_str().expect("id").to_owned());
    }
    import.start_kill().expect("SIGKILL");
    import.wait().await.expect("reaped");
    // Lines already written before the kill count as reported too.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(report) = serde_json::from_str::<serde_json::Value>(&line) {
            saved.insert(report["saved"].as_str().expect("id").to_owned());
        }
    }
    feeder.abort();

    // The store opens, and every reported task is on the board.
    let board = ann.json(&["board", "show", "Burst"]).await;
    let present: BTreeSet<String> = board["columns"][0]["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    let missing: Vec<&String> = saved.difference(&present).collect();
    assert!(
        missing.is_empty(),
        "{} reported tasks lost: {missing:?}",
        missing.len()
    );
    assert!(present.len() >= saved.len());
}
