//! `taskflow-bench`: measures a sync server from the outside, over loopback, with Rust peers.
//!
//! It starts the server under test as a child process — ours (`taskflow-server`) or the
//! automerge-repo 2.5.6 reference server (`testkit/js/ref-server.mjs`) — so CPU time
//! and RSS are the server's own (read from `/proc`), then runs bounded scenarios against it and
//! prints one line per measurement. Every scenario has a fixed size and a timeout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc, ScalarValue};
use clap::{Parser, ValueEnum};
use taskflow_bench::{big_board, cpu_seconds, rss_mib};
use taskflow_proto::DocumentId;
use taskflow_testkit::{Account, Peer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod cluster;
mod events;
mod notifications;
mod rest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Our server (the release binary next to this one, or --server-bin).
    Ours,
    /// The automerge-repo JS reference server (node + tests/js/ref-server.mjs).
    Js,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    All,
    BigBoard,
    ManyBoards,
    Editing,
    ManyDocs,
    /// The tasks REST API: POST and GET throughput with clients syncing the board.
    Rest,
    /// Domain events from merge to Kafka (needs --kafka-brokers and a server built with the
    /// `kafka` feature): throughput and edit-to-readable delay.
    Events,
    /// Notifications: assignment to `notification_received` with many sockets open.
    Notifications,
    /// Several nodes on PostgreSQL and Redis (needs --database-url): cross-node propagation,
    /// and sync throughput with one node against several.
    Cluster,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum, default_value = "ours")]
    target: Target,
    #[arg(long, value_enum, default_value = "all")]
    scenario: Scenario,
    /// Tasks in the big board.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Boards loaded at once for the memory measurement.
    #[arg(long, default_value_t = 100)]
    boards: usize,
    /// Documents created then fetched.
    #[arg(long, default_value_t = 10_000)]
    docs: usize,
    /// Path of taskflow-server (default: beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Our server's DATABASE_URL (default: its embedded SQLite in a fresh directory).
    #[arg(long)]
    database_url: Option<String>,
    /// `rest`: tasks created over REST, then reads of them.
    #[arg(long, default_value_t = 2_000)]
    rest_creates: usize,
    #[arg(long, default_value_t = 20_000)]
    rest_reads: usize,
    /// `rest`: concurrent HTTP clients.
    #[arg(long, default_value_t = 16)]
    rest_clients: usize,
    /// `rest`: sync clients connected to the board, receiving every change.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
    /// `events`: the Kafka broker(s) the server publishes to and the bench reads from.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// `events`: tasks created in each throughput phase.
    #[arg(long, default_value_t = 2_000)]
    event_tasks: usize,
    /// `events`: edits timed one at a time from a sync client to the readable event.
    #[arg(long, default_value_t = 100)]
    event_edits: usize,
    /// `notifications`: members, each with a notification socket open.
    #[arg(long, default_value_t = 1_000)]
    notify_users: usize,
    /// `notifications`: assignments timed one at a time.
    #[arg(long, default_value_t = 200)]
    notify_assignments: usize,
    /// `cluster`: the Redis the nodes share.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// `cluster`: server processes.
    #[arg(long, default_value_t = 3)]
    cluster_nodes: usize,
    /// `cluster`: counter edits timed from the writer to each reader.
    #[arg(long, default_value_t = 200)]
    cluster_edits: usize,
    /// `cluster`: sync clients writing as fast as they are acknowledged.
    #[arg(long, default_value_t = 30)]
    cluster_writers: usize,
    /// `cluster`: seconds each throughput phase runs.
    #[arg(long, default_value_t = 10)]
    cluster_seconds: u64,
}

/// The server under test, in its own process.
struct ServerUnderTest {
    target: Target,
    child: Child,
    url: String,
    /// Ours only: the account the bench signs in as (kept across restarts).
    account: Option<Account>,
    dir: PathBuf,
    server_bin: PathBuf,
}

impl ServerUnderTest {
    async fn start(target: Target, dir: &Path, server_bin: &Path) -> anyhow::Result<Self> {
        Self::start_as(target, dir, server_bin, None, None).await
    }

    async fn start_as(
        target: Target,
        dir: &Path,
        server_bin: &Path,
        account: Option<Account>,
        database_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(target, dir, server_bin, account, database_url, &[]).await
    }

    /// Ours with extra environment (e.g. `KAFKA_BROKERS`).
    async fn start_with_env(
        target: Target,
        dir: &Path,
        server_bin: &Path,
        account: Option<Account>,
        database_url: Option<&str>,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut command = match target {
            Target::Ours => {
                let mut c = Command::new(server_bin);
                c.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(dir);
                c.env("TASKFLOW_LOG", "warn").env_remove("DATABASE_URL");
                // One load generator is one user at one address: measure the server, not its
                // REST limits.
                for limit in [
                    "TASKFLOW_API_RATE_PER_ADDRESS",
                    "TASKFLOW_API_BURST_PER_ADDRESS",
                    "TASKFLOW_API_RATE_PER_USER",
                    "TASKFLOW_API_BURST_PER_USER",
                ] {
                    c.env(limit, "1000000000");
                }
                c.envs(env.iter().copied());
                if let Some(url) = database_url {
                    c.arg("--database-url").arg(url);
                }
                c
            }
            Target::Js => {
                let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testkit/js");
                let mut c = Command::new("node");
                c.current_dir(js).arg("ref-server.mjs").arg("0").arg(dir);
                c
            }
        };
        let mut child = command.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                // ours: "listening on 127.0.0.1:PORT"; JS: "listening PORT"
                if let Some(rest) = line.strip_prefix("listening") {
                    let port = rest
                        .trim()
                        .rsplit(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    return Ok::<_, anyhow::Error>(port);
                }
            }
            bail!("server exited before listening")
        })
        .await
        .context("server start timed out")??;
        // Keep reading the server's stdout so it never writes into a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let path = if target == Target::Ours {
            "/api/v1/sync"
        } else {
            ""
        };
        let addr = format!("127.0.0.1:{port}");
        let account = match (target, account) {
            (Target::Js, _) => None,
            (Target::Ours, Some(account)) => Some(account.at(&addr)),
            (Target::Ours, None) => Some(register(&addr).await?),
        };
        Ok(Self {
            target,
            child,
            account,
            url: format!("ws://{addr}{path}"),
            dir: dir.to_owned(),
            server_bin: server_bin.to_owned(),
        })
    }

    /// Graceful stop (SIGTERM); waits for the process to end.
    async fn terminate(&mut self) -> anyhow::Result<()> {
        let pid = self.child.id().ok_or_else(|| anyhow!("not running"))?;
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
        tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await??;
        Ok(())
    }

    /// Graceful stop (SIGTERM), then a fresh process on the same storage.
    async fn restart(mut self) -> anyhow::Result<Self> {
        self.terminate().await?;
        Self::start_as(
            self.target,
            &self.dir,
            &self.server_bin,
            self.account.take(),
            None,
        )
        .await
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Server CPU seconds (user + system) so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }

    /// Resident set size in MiB.
    fn rss_mib(&self) -> f64 {
        rss_mib(&self.pid().to_string())
    }
}

fn report(target: Target, metric: &str, value: String) {
    println!("{target:?}\t{metric}\t{value}");
}

/// Time from sending a `request` to the first sync reply arriving, and to holding the whole
/// document (which includes this client applying it).
async fn fetch(
    server: &ServerUnderTest,
    id: DocumentId,
    name: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let mut peer = connect(server, name).await?;
    let start = Instant::now();
    peer.request(id).await?;
    let first = loop {
        let message = peer
            .next_message(Duration::from_secs(120))
            .await?
            .ok_or_else(|| anyhow!("closed"))?;
        let is_sync = matches!(&message, taskflow_proto::Message::Sync(_));
        let at = start.elapsed();
        peer.absorb(message).await?;
        if is_sync {
            break at;
        }
    };
    peer.until_server_has_all(&[id], Duration::from_secs(120))
        .await?;
    let total = start.elapsed();
    peer.close().await?;
    Ok((first, total))
}

async fn big_board_scenario(args: &Args, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let t = args.target;
    let mut server = ServerUnderTest::start(t, dir, bin).await?;
    let mut board = big_board(args.tasks);
    let size = board.save().len();
    report(
        t,
        "big board size",
        format!("{} tasks, {size} bytes", args.tasks),
    );
    let mut owner = connect(&server, "owner").await?;
    let id = owner.create(board).await?;
    owner
        .until_server_has_all(&[id], Duration::from_secs(300))
        .await?;
    owner.close().await?;
    // Let the server finish digesting the upload (its first compaction) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (first, total) = fetch(&server, id, "fresh-mem").await?;
    report_fetch(t, "in memory", first, total);
    report(
        t,
        "RSS with the board loaded",
        format!("{:.1} MiB", server.rss_mib()),
    );

    server = server.restart().await?;
    let (first, total) = fetch(&server, id, "fresh-disk").await?;
    report_fetch(t, "from storage after restart", first, total);
    Ok(())
}

async fn many_boards_scenario(args: &Args, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let t = args.target;
    let mut server = ServerUnderTest::start(t, dir, bin).await?;
    let board = big_board(args.tasks);
    let mut owner = connect(&server, "owner").await?;
    let mut ids = Vec::new();
    for _ in 0..args.boards {
        ids.push(owner.create(board.clone()).await?);
        owner
            .until_server_has_all(&ids[ids.len() - 1..], Duration::from_secs(300))
            .await?;
    }
    owner.close().await?;
    server = server.restart().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    report(
        t,
        "RSS idle after restart",
        format!("{:.1} MiB", server.rss_mib()),
    );
    let mut reader = connect(&server, "reader").await?;
    reader.request(ids[0]).await?;
    reader
        .until_server_has_all(&ids[..1], Duration::from_secs(300))
        .await?;
    report(
        t,
        "RSS with 1 board loaded",
        format!("{:.1} MiB", server.rss_mib()),
    );
    for &id in &ids[1..] {
        reader.request(id).await?;
    }
    reader
        .until_server_has_all(&ids, Duration::from_secs(600))
        .await?;
    report(
        t,
        &format!("RSS with {} boards loaded", ids.len()),
        format!("{:.1} MiB", server.rss_mib()),
    );
    Ok(())
}

/// `peers` peers on one board; each in turn sets a counter; everyone waits to see it.
async fn editing_scenario(args: &Args, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let t = args.target;
    for peers in [2usize, 10, 50] {
        let dir = dir.join(format!("{peers}-peers"));
        let server = ServerUnderTest::start(t, &dir, bin).await?;
        let mut owner = connect(&server, "owner").await?;
        let id = owner.create(big_board(20)).await?;
        owner
            .until_server_has_all(&[id], Duration::from_secs(60))
            .await?;
        owner.close().await?;

        let mut all = Vec::new();
        for n in 0..peers {
            let mut p = connect(&server, &format!("peer-{n}")).await?;
            p.request(id).await?;
            p.until_server_has_all(&[id], Duration::from_secs(60))
                .await?;
            all.push(p);
        }
        // One edit every 200 ms per peer in rotation (5 edits/s overall), for a fixed count.
        let edits = 100usize;
        let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; edits + 1]));
        let latencies: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::new()));
        let cpu_before = server.cpu_seconds();
        let mut tasks = Vec::new();
        for (n, mut p) in all.into_iter().enumerate() {
            let sent = sent.clone();
            let latencies = latencies.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = 0i64;
                let deadline = Instant::now() + Duration::from_secs(120);
                let tick = tokio::time::interval(Duration::from_millis(200));
                tokio::pin!(tick);
                let mut round = 0usize;
                while (seen as usize) < edits && Instant::now() < deadline {
                    tokio::select! {
                        _ = tick.tick() => {
                            round += 1;
                            let counter = round;
                            // Peer n edits on its turn; the counter names the edit.
                            if counter <= edits && (counter - 1) % peers == n && seen as usize == counter - 1 {
                                sent.lock().expect("lock")[counter] = Some(Instant::now());
                                p.edit(id, |tx| { tx.put(ROOT, "counter", counter as i64).expect("put"); }).await?;
                            }
                        }
                        message = p.next_message(Duration::from_secs(30)) => {
                            let Some(message) = message? else { bail!("closed") };
                            p.absorb(message).await?;
                            let value = match p.doc(id).get(ROOT, "counter")? {
                                Some((automerge::Value::Scalar(s), _)) => match s.as_ref() {
                                    ScalarValue::Int(v) => *v,
                                    _ => 0,
                                },
                                _ => 0,
                            };
                            while seen < value {
                                seen += 1;
                                let own_edit = (seen as usize - 1) % peers == n;
                                if let (false, Some(at)) = (own_edit, sent.lock().expect("lock")[seen as usize]) {
                                    latencies.lock().expect("lock").push(at.elapsed());
                                }
                            }
                        }
                    }
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let cpu = server.cpu_seconds() - cpu_before;
        let mut l = latencies.lock().expect("lock").clone();
        l.sort();
        let pct = |q: f64| {
            l.get(((l.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        report(
            t,
            &format!("propagation latency, {peers} peers (p50 / p99)"),
            format!(
                "{:.1} / {:.1} ms ({} samples)",
                ms(pct(0.5)),
                ms(pct(0.99)),
                l.len()
            ),
        );
        report(
            t,
            &format!("server CPU per inbound change, {peers} peers"),
            format!(
                "{:.2} ms ({edits} changes, {:.2} s CPU)",
                cpu * 1000.0 / edits as f64,
                cpu
            ),
        );
    }
    Ok(())
}

async fn many_docs_scenario(args: &Args, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let t = args.target;
    let server = ServerUnderTest::start(t, dir, bin).await?;
    let mut template = big_board(1);
    let mut creator = connect(&server, "creator").await?;
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..args.docs {
        let mut doc = template.fork();
        doc.put(ROOT, "name", "Small board").expect("put");
        ids.push(creator.create(doc).await?);
    }
    creator
        .until_server_has_all(&ids, Duration::from_secs(900))
        .await?;
    report(
        t,
        &format!("{} documents created", args.docs),
        format!("{:.2} s", start.elapsed().as_secs_f64()),
    );
    creator.close().await?;

    let mut reader = connect(&server, "reader").await?;
    let start = Instant::now();
    for &id in &ids {
        reader.request(id).await?;
    }
    reader
        .until_server_has_all(&ids, Duration::from_secs(900))
        .await?;
    report(
        t,
        &format!("{} documents fetched by a fresh peer", args.docs),
        format!(
            "{:.2} s, server RSS {:.1} MiB",
            start.elapsed().as_secs_f64(),
            server.rss_mib()
        ),
    );
    Ok(())
}

/// Signs up the bench's account, retrying briefly: a server that just printed its port may not
/// accept yet.
async fn register(addr: &str) -> anyhow::Result<Account> {
    let mut last = None;
    for _ in 0..20 {
        match Account::register(addr, "Bench").await {
            Ok(account) => return Ok(account),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
}

/// Joins the server under test (as the bench's account on ours).
async fn connect(server: &ServerUnderTest, name: &str) -> anyhow::Result<Peer> {
    match &server.account {
        Some(account) => Peer::connect_as(account, name).await,
        None => Peer::connect(&server.url, name).await,
    }
}

fn report_fetch(t: Target, from: &str, first: Duration, total: Duration) {
    report(
        t,
        &format!("fresh fetch, {from}: first reply"),
        format!("{:.1} ms", ms(first)),
    );
    report(
        t,
        &format!("fresh fetch, {from}: complete"),
        format!("{:.1} ms", ms(total)),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("taskflow-server"),
    };
    let run = |s: Scenario| args.scenario == Scenario::All || args.scenario == s;
    let fresh_dir = || tempfile_dir(args.target);
    if run(Scenario::BigBoard) {
        big_board_scenario(&args, &fresh_dir()?, &bin).await?;
    }
    if run(Scenario::Editing) {
        editing_scenario(&args, &fresh_dir()?, &bin).await?;
    }
    if run(Scenario::ManyBoards) {
        many_boards_scenario(&args, &fresh_dir()?, &bin).await?;
    }
    if run(Scenario::ManyDocs) {
        many_docs_scenario(&args, &fresh_dir()?, &bin).await?;
    }
    if run(Scenario::Rest) && args.target == Target::Ours {
        rest::scenario(&args, &fresh_dir()?, &bin).await?;
    }
    // Only when asked for: it needs a broker.
    if args.scenario == Scenario::Events && args.target == Target::Ours {
        events::scenario(&args, &fresh_dir()?, &fresh_dir()?, &bin).await?;
    }
    if args.scenario == Scenario::Notifications && args.target == Target::Ours {
        notifications::scenario(&args, &fresh_dir()?, &bin).await?;
    }
    if args.scenario == Scenario::Cluster && args.target == Target::Ours {
        cluster::scenario(&args, &fresh_dir()?, &bin).await?;
    }
    Ok(())
}

fn tempfile_dir(target: Target) -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("taskflow-bench-{target:?}-{}", std::process::id()));
    let dir = dir.join(format!(
        "{}",
        Instant::now().elapsed().as_nanos() ^ rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u128 {
    DocumentId::random()
        .as_bytes()
        .iter()
        .fold(0u128, |a, b| (a << 8) | u128::from(*b))
}
