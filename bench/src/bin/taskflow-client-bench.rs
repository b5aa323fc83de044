//! `taskflow-client-bench`: client-core's own costs, measured in-process.
//!
//! - `open`: a 10,000-task board in the local store (one snapshot) opened by a fresh client:
//!   store open, document load and the typed board read, until `Client::board` returns.
//! - `fetch`: the same board fetched from our server (in this process) into an empty store.
//! - `burst`: another peer makes 1,000 changes as fast as it can; the time until this client
//!   has every one merged and stored. Once batched (the peer sends as fast as the sync protocol
//!   lets it), once one by one (the peer waits for the server's ack after each change, so the
//!   client receives them as separate messages).
//!
//! Every timed wait is bounded. Results are printed one per line.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use taskflow_bench::{big_board, cpu_seconds, rss_mib};
use taskflow_client_core::board::OrderKey;
use taskflow_client_core::board::ops::{self, NewTask, Position};
use taskflow_client_core::store::ReplicaStore;
use taskflow_client_core::{Client, ClientConfig, DocumentId, ServerConfig, SyncStatus};
use taskflow_testkit::Peer;
use taskflow_testkit::server::TestServer;

#[derive(Debug, Parser)]
struct Args {
    /// Tasks on the board.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Changes in the remote burst.
    #[arg(long, default_value_t = 1_000)]
    changes: usize,
    /// Repetitions of the open measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const WAIT: Duration = Duration::from_secs(300);

fn report(metric: &str, value: String) {
    println!("client\t{metric}\t{value}");
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Ok(filter) = std::env::var("TASKFLOW_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let work = tempfile::tempdir()?;

    // The board, saved into a client store as one snapshot.
    let mut doc = big_board(args.tasks);
    let snapshot = doc.save();
    report(
        "board",
        format!("{} tasks, {} KB saved", args.tasks, snapshot.len() / 1024),
    );
    let store_dir = work.path().join("client-open");
    let id = DocumentId::random();
    let store = ReplicaStore::open(&store_dir).await?;
    store.create(&id, &snapshot, 0).await?;
    drop(store);

    let rss_before = rss_mib("self");
    let mut times = Vec::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        let client = Client::open(offline(&store_dir)).await?;
        let board = client.board(id).await?;
        times.push(start.elapsed());
        if board.tasks.len() != args.tasks {
            bail!("opened {} tasks", board.tasks.len());
        }
        client.shutdown().await;
    }
    times.sort();
    report(
        "open 10k-task board from the local store (median, min-max)",
        format!(
            "{} ({}-{}) over {} runs",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            times.len()
        ),
    );
    let client = Client::open(offline(&store_dir)).await?;
    client.board(id).await?;
    let start = Instant::now();
    for i in 0..20 {
        let task = NewTask::titled(format!("local {i}"), "bench");
        client
            .edit(id, taskflow_client_core::Edit::AddTask(task))
            .await?;
    }
    report(
        "local edit on that board: add a task at the bottom, stored (mean of 20)",
        ms(start.elapsed() / 20),
    );
    report(
        "process RSS with the board open",
        format!(
            "{:.1} MiB (+{:.1} MiB)",
            rss_mib("self"),
            rss_mib("self") - rss_before
        ),
    );
    client.shutdown().await;

    // Fetch from our server into an empty store.
    let server = TestServer::start(&work.path().join("server")).await;
    let mut uploader = Peer::connect_as(&server.account, "uploader").await?;
    let id = uploader.create(doc.clone()).await?;
    uploader.until_server_has(id).await?;
    let client_dir = work.path().join("client-sync");
    let client = Client::open(online(&client_dir, &server.url())?).await?;
    let start = Instant::now();
    client.fetch(id).await?;
    expect_synced(&client, id).await?;
    report(
        "fetch 10k-task board from our server into an empty store",
        ms(start.elapsed()),
    );

    // Burst, batched.
    let cpu = cpu_seconds("self");
    let start = Instant::now();
    for i in 0..args.changes {
        uploader.edit(id, |tx| add(tx, i)).await?;
    }
    uploader.until_server_has(id).await?;
    until_heads(&client, id, &uploader.doc(id).get_heads()).await?;
    report(
        "1,000 remote changes, batched: until merged and stored",
        format!(
            "{} (process CPU {:.2} s, incl. server and sender)",
            ms(start.elapsed()),
            cpu_seconds("self") - cpu
        ),
    );

    // Burst, one message per change.
    let cpu = cpu_seconds("self");
    let start = Instant::now();
    for i in 0..args.changes {
        uploader.edit(id, |tx| add(tx, args.changes + i)).await?;
        uploader.until_server_has(id).await?;
    }
    until_heads(&client, id, &uploader.doc(id).get_heads()).await?;
    report(
        "1,000 remote changes, one by one: until merged and stored",
        format!(
            "{} (process CPU {:.2} s, incl. server and sender)",
            ms(start.elapsed()),
            cpu_seconds("self") - cpu
        ),
    );
    client.shutdown().await;
    drop(uploader);
    server.crash();

    // What the store holds after the bursts opens as fast as a snapshot would.
    let start = Instant::now();
    let client = Client::open(offline(&client_dir)).await?;
    let board = client.board(id).await?;
    report(
        "reopen that board (snapshot + chunks) from the local store",
        format!("{} ({} tasks)", ms(start.elapsed()), board.tasks.len()),
    );
    client.shutdown().await;
    Ok(())
}

/// The sender's change: a new task, placed with a precomputed key so the sender's own cost
/// stays out of the measurement (placing at `Bottom` scans the column).
fn add(tx: &mut automerge::transaction::Transaction<'_>, i: usize) {
    let mut task = NewTask::titled(format!("remote change {i}"), "peer");
    task.position = Position::AtKey(OrderKey::parse(&format!("{:x}1", i + 1)).expect("key"));
    ops::add_task(tx, task, 1_764_000_000_000).expect("add task");
}

fn offline(dir: &std::path::Path) -> ClientConfig {
    ClientConfig {
        data_dir: dir.to_owned(),
        user: "bench".into(),
        server: None,
    }
}

fn online(dir: &std::path::Path, url: &str) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig {
        server: Some(ServerConfig::new(url)?),
        ..offline(dir)
    })
}

async fn expect_synced(client: &Client, id: DocumentId) -> anyhow::Result<()> {
    let status = client.wait_synced(&[id], WAIT).await?;
    if status != [SyncStatus::InSync] {
        bail!("not in sync: {status:?}");
    }
    Ok(())
}

/// Waits until the client holds exactly `heads` (it announces a change only once stored).
async fn until_heads(
    client: &Client,
    id: DocumentId,
    heads: &[automerge::ChangeHash],
) -> anyhow::Result<()> {
    let mut events = client.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut want = heads.to_vec();
    want.sort();
    loop {
        let mut have = client.heads(id).await?;
        have.sort();
        if have == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the burst did not arrive in time");
        }
        // Any event may mean progress; the tick covers events this reader lagged behind on.
        let _ = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
    }
}
