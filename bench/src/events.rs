//! The `events` scenario: domain events from merge to a Kafka broker (`--kafka-brokers`; the
//! server must be built with the `kafka` feature), read back by a consumer of the bench's own
//! (`taskflow_kafka::consume`, its own consumer group) on a topic fresh for the run.
//!
//! 1. Live: `--rest-clients` HTTP clients create `--event-tasks` tasks; reported is the time
//!    from the first POST until the reader has every `task.created`, as events per second.
//! 2. Delay: a sync client renames one task `--event-edits` times, one at a time; each is timed
//!    from sending the change to the reader holding its `task.updated` (p50 / p99).
//! 3. Backlog: a second server, whose broker address leads nowhere, takes `--event-tasks` more
//!    tasks (their events wait in its outbox); restarted with the broker, it is timed until the
//!    reader has them all: the relay's own throughput, outbox to readable.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde_json::Value;
use taskflow_kafka::{Subscription, Verdict};
use taskflow_proto::board::ops::{self, TaskEdit};
use taskflow_proto::board::{Board, TaskId};
use taskflow_testkit::Account;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rest::drive;
use super::{Args, ServerUnderTest, Target, connect, ms, report};

/// Nothing listens there (the discard port): a broker that is down.
const NO_BROKER: &str = "127.0.0.1:9";
const WAIT: Duration = Duration::from_secs(300);

pub async fn scenario(
    args: &Args,
    dir: &Path,
    backlog_dir: &Path,
    bin: &Path,
) -> anyhow::Result<()> {
    let t = Target::Ours;
    let brokers = args
        .kafka_brokers
        .clone()
        .ok_or_else(|| anyhow!("--scenario events needs --kafka-brokers"))?;
    let topic = format!("bench.events.{}", std::process::id());
    let dlq = format!("{topic}.dlq");
    taskflow_kafka::ensure_topics(&brokers, &[&topic, &dlq]).await?;
    let (reader, stop) = start_reader(&brokers, &topic, &dlq);
    let mut reader = Reader { rx: reader };
    let env = [
        ("KAFKA_BROKERS", brokers.as_str()),
        ("TASKFLOW_EVENTS_TOPIC", topic.as_str()),
    ];
    let db = args.database_url.as_deref();

    // 1. Live.
    let server = ServerUnderTest::start_with_env(t, dir, bin, None, db, &env).await?;
    let account = server
        .account
        .clone()
        .ok_or_else(|| anyhow!("an account"))?;
    let (project, doc) = account.project("Events bench").await?;
    // The reader is subscribed once the project's event reaches it.
    reader.until(|e| e["type"] == "project.created").await?;
    let began = Instant::now();
    let (_, _, posted) = drive(
        args.rest_clients,
        args.event_tasks,
        poster(&account, &project),
    )
    .await?;
    let mut created = 0;
    reader
        .until(|e| {
            created += usize::from(e["type"] == "task.created");
            created == args.event_tasks
        })
        .await?;
    let live = began.elapsed();
    report(
        t,
        &format!(
            "events: {} tasks over REST ({} clients) to readable on Kafka",
            args.event_tasks, args.rest_clients
        ),
        format!(
            "{:.0} events/s ({:.2} s; the POSTs alone took {:.2} s)",
            args.event_tasks as f64 / live.as_secs_f64(),
            live.as_secs_f64(),
            posted.as_secs_f64()
        ),
    );

    // 2. Delay, from a sync client's edit.
    let mut peer = connect(&server, "events-bench").await?;
    peer.request(doc).await?;
    peer.until_doc(doc, |d| Board::read(d).is_ok_and(|b| !b.tasks.is_empty()))
        .await?;
    let task = Board::read(peer.doc(doc))?
        .tasks
        .keys()
        .next()
        .cloned()
        .ok_or_else(|| anyhow!("a task"))?;
    let mut delays = Vec::new();
    for n in 0..args.event_edits {
        let title = format!("renamed {n}");
        let sent = Instant::now();
        peer.edit(doc, |tx| {
            let rename = TaskEdit {
                title: Some(title.clone()),
                ..TaskEdit::default()
            };
            ops::edit_task(tx, &TaskId::new(task.as_str()), rename, 1).expect("rename");
        })
        .await?;
        reader
            .until(|e| e["type"] == "task.updated" && e["data"]["task"]["title"] == title.as_str())
            .await?;
        delays.push(sent.elapsed());
        peer.until_server_has(doc).await?;
    }
    delays.sort();
    let pct = |q: f64| delays[((delays.len() as f64 - 1.0) * q) as usize];
    report(
        t,
        &format!(
            "events: a sync client's edit to its event readable on Kafka ({} edits, one at a time)",
            delays.len()
        ),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(pct(1.0))
        ),
    );
    peer.close().await?;
    let mut server = server;
    server.terminate().await?;

    // 3. Backlog.
    let down = [
        ("KAFKA_BROKERS", NO_BROKER),
        ("TASKFLOW_EVENTS_TOPIC", topic.as_str()),
    ];
    let mut server = ServerUnderTest::start_with_env(t, backlog_dir, bin, None, db, &down).await?;
    let account = server
        .account
        .clone()
        .ok_or_else(|| anyhow!("an account"))?;
    let (project, _) = account.project("Backlog bench").await?;
    drive(
        args.rest_clients,
        args.event_tasks,
        poster(&account, &project),
    )
    .await?;
    server.terminate().await?;
    let began = Instant::now();
    let server =
        ServerUnderTest::start_with_env(t, backlog_dir, bin, Some(account), db, &env).await?;
    let cpu_before = server.cpu_seconds();
    let mut created = 0;
    reader
        .until(|e| {
            created += usize::from(
                e["type"] == "task.created" && e["data"]["projectId"] == project.as_str(),
            );
            created == args.event_tasks
        })
        .await?;
    let drained = began.elapsed();
    report(
        t,
        &format!(
            "events: a backlog of {} events, server start to all readable on Kafka",
            args.event_tasks + 2
        ),
        format!(
            "{:.0} events/s ({:.2} s, server CPU {:.2} s)",
            args.event_tasks as f64 / drained.as_secs_f64(),
            drained.as_secs_f64(),
            server.cpu_seconds() - cpu_before
        ),
    );
    stop.cancel();
    Ok(())
}

/// Events as the bench's consumer reads them, in order.
struct Reader {
    rx: mpsc::UnboundedReceiver<Value>,
}

impl Reader {
    /// Reads events until one satisfies `done`.
    async fn until(&mut self, mut done: impl FnMut(&Value) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| anyhow!("the events did not arrive in time"))?
                .ok_or_else(|| anyhow!("the reader stopped"))?;
            if done(&event) {
                return Ok(());
            }
        }
    }
}

fn start_reader(
    brokers: &str,
    topic: &str,
    dlq: &str,
) -> (mpsc::UnboundedReceiver<Value>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let subscription = Subscription {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        group: format!("bench-reader-{}", std::process::id()),
        dead_letter_topic: dlq.to_owned(),
        consumer: "bench-reader".to_owned(),
    };
    let handle = move |payload: Vec<u8>| {
        let tx = tx.clone();
        async move {
            if let Ok(event) = serde_json::from_slice::<Value>(&payload) {
                let _ = tx.send(event);
            }
            Verdict::Handled
        }
    };
    tokio::spawn(taskflow_kafka::consume(subscription, handle, stop.clone()));
    (rx, stop)
}

/// A request maker for `drive`: POSTs task number `n` to `project`.
fn poster(
    account: &Account,
    project: &str,
) -> impl Fn(usize) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
+ Clone
+ Send
+ 'static {
    let http = reqwest::Client::new();
    let (base, token, project) = (
        account.base.clone(),
        account.access_token.clone(),
        project.to_owned(),
    );
    move |n: usize| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let body = serde_json::json!({ "projectId": project, "title": format!("Event task {n}") });
        Box::pin(async move {
            let response = http
                .post(format!("{base}/api/v1/tasks"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await?;
            if response.status() != reqwest::StatusCode::CREATED {
                bail!("POST answered {}", response.status());
            }
            Ok(())
        })
    }
}
