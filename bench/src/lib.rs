//! Shared by the benchmark binaries: realistic boards and a process's CPU time and RSS from
//! `/proc`.

use automerge::AutoCommit;
use taskflow_proto::board::OrderKey;
use taskflow_proto::board::ops::{self, NewTask, Position};

/// A board with `tasks` tasks, built locally with precomputed order keys.
pub fn big_board(tasks: usize) -> AutoCommit {
    let mut doc = AutoCommit::new();
    ops::create_board(&mut doc, "Big board").expect("board");
    let mut key: Option<OrderKey> = None;
    for i in 0..tasks {
        let next = OrderKey::between(key.as_ref(), None).expect("open range");
        let mut task = NewTask::titled(format!("Task number {i} with a realistic title"), "bench");
        task.description = "Some description text for the task.".into();
        task.position = Position::AtKey(next.clone());
        ops::add_task(&mut doc, task, 1_764_000_000_000 + i as i64).expect("task");
        key = Some(next);
        if i % 100 == 99 {
            doc.commit();
        }
    }
    doc.commit();
    doc
}

/// CPU seconds (user + system) process `pid` has used so far (`"self"` for this process).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident set size of process `pid` in MiB.
pub fn rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
