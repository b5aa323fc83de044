//! The `cluster` scenario: several server processes on one PostgreSQL database and one Redis.
//!
//! - Propagation: a writer on node 0 sets a counter every 20 ms (`--cluster-edits` times);
//!   readers on node 0 and on the other nodes time each value from the writer's send to its
//!   arrival (p50 / p99): the same-node delay against the cross-node one (a Redis notice, then
//!   a catch-up read from the store).
//! - Throughput: `--cluster-writers` sync clients, spread over the nodes, each edit as fast as
//!   the server acknowledges (at most 8 changes in flight each) for `--cluster-seconds`: once
//!   with a board each, once all on one shared board (whose writers also receive each other's
//!   changes, and whose nodes race for the document's heads). Reported as changes stored per
//!   second with one node and with `--cluster-nodes`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use automerge::{ROOT, ReadDoc, ScalarValue, transaction::Transactable};
use taskflow_bench::big_board;
use taskflow_proto::DocumentId;
use taskflow_testkit::Peer;
use tokio::sync::mpsc;

use super::{Args, ServerUnderTest, Target, connect, ms, report};

const WAIT: Duration = Duration::from_secs(60);
/// Changes a throughput writer sends before waiting for the server to acknowledge them.
const IN_FLIGHT: usize = 8;

pub async fn scenario(args: &Args, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let database_url = args
        .database_url
        .as_deref()
        .ok_or_else(|| anyhow!("the cluster scenario needs --database-url (PostgreSQL)"))?;
    let nodes = start_nodes(args.cluster_nodes, dir, bin, database_url, &args.redis_url).await?;
    propagation(&nodes, args.cluster_edits).await?;
    for shared in [false, true] {
        let many = throughput(&nodes, args, shared).await?;
        let one = throughput(&nodes[..1], args, shared).await?;
        let board = if shared {
            "one shared board"
        } else {
            "a board each"
        };
        report(
            Target::Ours,
            &format!(
                "cluster: sync throughput, {} writers on {board} (1 node / {} nodes)",
                args.cluster_writers,
                nodes.len()
            ),
            format!("{one:.0} / {many:.0} changes/s"),
        );
    }
    Ok(())
}

async fn start_nodes(
    n: usize,
    dir: &Path,
    bin: &Path,
    database_url: &str,
    redis_url: &str,
) -> anyhow::Result<Vec<ServerUnderTest>> {
    let mut nodes: Vec<ServerUnderTest> = Vec::new();
    for i in 0..n {
        let account = nodes.first().and_then(|n| n.account.clone());
        let node = ServerUnderTest::start_with_env(
            Target::Ours,
            &dir.join(format!("node-{i}")),
            bin,
            account,
            Some(database_url),
            &[("REDIS_URL", redis_url)],
        )
        .await?;
        nodes.push(node);
    }
    Ok(nodes)
}

fn counter(peer: &Peer, id: DocumentId) -> i64 {
    match peer.doc(id).get(ROOT, "counter") {
        Ok(Some((automerge::Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Int(v) => *v,
            _ => 0,
        },
        _ => 0,
    }
}

/// A reader on its own task: reports each counter value as it arrives.
fn spawn_reader(
    mut peer: Peer,
    id: DocumentId,
    until: i64,
    seen: mpsc::UnboundedSender<(i64, Instant)>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let mut last = 0;
        while last < until {
            let Some(message) = peer.next_message(WAIT).await? else {
                bail!("a reader's socket closed");
            };
            peer.absorb(message).await?;
            let now = counter(&peer, id);
            if now > last {
                let at = Instant::now();
                for v in last + 1..=now {
                    let _ = seen.send((v, at));
                }
                last = now;
            }
        }
        peer.close().await
    })
}

async fn propagation(nodes: &[ServerUnderTest], edits: usize) -> anyhow::Result<()> {
    let mut writer = connect(&nodes[0], "writer").await?;
    let id = writer.create(big_board(20)).await?;
    writer.until_server_has_all(&[id], WAIT).await?;
    // Reader 0 shares the writer's node; the others are on the other nodes.
    let mut readers = Vec::new();
    let mut channels = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut reader = connect(node, &format!("reader-{i}")).await?;
        reader.request(id).await?;
        reader.until_server_has_all(&[id], WAIT).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        readers.push(spawn_reader(reader, id, edits as i64, tx));
        channels.push(rx);
    }
    let mut same = Vec::new();
    let mut cross = Vec::new();
    for value in 1..=edits as i64 {
        let sent = Instant::now();
        writer
            .edit(id, |tx| {
                tx.put(ROOT, "counter", value).expect("put");
            })
            .await?;
        for (i, rx) in channels.iter_mut().enumerate() {
            loop {
                let (v, at) = tokio::time::timeout(WAIT, rx.recv())
                    .await?
                    .ok_or_else(|| anyhow!("reader {i} stopped"))?;
                if v == value {
                    let delay = at.duration_since(sent);
                    if i == 0 { &mut same } else { &mut cross }.push(delay);
                    break;
                }
            }
        }
        writer.until_server_has(id).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for reader in readers {
        reader.await??;
    }
    writer.close().await?;
    for (label, delays) in [("same node", &mut same), ("cross node", &mut cross)] {
        if delays.is_empty() {
            continue;
        }
        delays.sort();
        let pct = |q: f64| delays[((delays.len() as f64 - 1.0) * q) as usize];
        report(
            Target::Ours,
            &format!("cluster: propagation, {label} (p50 / p99)"),
            format!(
                "{:.1} / {:.1} ms ({} samples, {} nodes)",
                ms(pct(0.5)),
                ms(pct(0.99)),
                delays.len(),
                nodes.len()
            ),
        );
    }
    Ok(())
}

/// Changes stored per second by `--cluster-writers` writers spread over `nodes`.
async fn throughput(nodes: &[ServerUnderTest], args: &Args, shared: bool) -> anyhow::Result<f64> {
    let shared_board = if shared {
        let mut owner = connect(&nodes[0], "owner").await?;
        let id = owner.create(big_board(20)).await?;
        owner.until_server_has_all(&[id], WAIT).await?;
        owner.close().await?;
        Some(id)
    } else {
        None
    };
    let mut writers = Vec::new();
    for w in 0..args.cluster_writers {
        let node = &nodes[w % nodes.len()];
        let mut peer = connect(node, &format!("writer-{w}")).await?;
        let id = match shared_board {
            Some(id) => {
                peer.request(id).await?;
                id
            }
            None => peer.create(big_board(20)).await?,
        };
        peer.until_server_has_all(&[id], WAIT).await?;
        writers.push((peer, id));
    }
    let duration = Duration::from_secs(args.cluster_seconds);
    let started = Instant::now();
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, (mut peer, id))| {
            tokio::spawn(async move {
                let mut made = 0usize;
                while started.elapsed() < duration {
                    for _ in 0..IN_FLIGHT {
                        made += 1;
                        let value = (w * 1_000_000 + made) as i64;
                        peer.edit(id, |tx| {
                            tx.put(ROOT, format!("writer-{w}"), value).expect("put");
                        })
                        .await?;
                    }
                    peer.until_server_has(id).await?;
                }
                peer.close().await?;
                Ok::<_, anyhow::Error>(made)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
