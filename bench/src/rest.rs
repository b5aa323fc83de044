//! The `rest` scenario: the tasks REST API under load while sync clients hold the board.
//!
//! `--watchers` protocol peers sync one board and absorb every change the server pushes.
//! `--rest-clients` HTTP clients then create `--rest-creates` tasks with `POST /api/v1/tasks`
//! (each a board change, stored and pushed to the watchers before it is answered), then read
//! them back `--rest-reads` times with `GET /api/v1/tasks/{id}`. Reported per phase:
//! throughput, latency p50 / p99 and the server's CPU; and when every watcher held every task.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use automerge::ReadDoc;
use taskflow_proto::board::Board;

use super::{Args, ServerUnderTest, Target, connect, ms, report};

pub async fn scenario(
    args: &Args,
    dir: &std::path::Path,
    bin: &std::path::Path,
) -> anyhow::Result<()> {
    let t = Target::Ours;
    let server = ServerUnderTest::start_as(t, dir, bin, None, args.database_url.as_deref()).await?;
    let account = server
        .account
        .clone()
        .ok_or_else(|| anyhow!("our server has an account"))?;
    let backend = if args.database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let (project, id) = account.project("REST bench").await?;

    let mut watchers = Vec::new();
    for n in 0..args.watchers {
        let mut peer = connect(&server, &format!("watcher-{n}")).await?;
        peer.request(id).await?;
        peer.until_doc(id, |d| Board::read(d).is_ok()).await?;
        watchers.push(peer);
    }
    let creates = args.rest_creates;
    let start = Instant::now();
    let watching: Vec<_> = watchers
        .into_iter()
        .map(|mut peer| {
            tokio::spawn(async move {
                // Count the tasks (reading them all would cost the load generator more than the
                // server's work per change), at most every 50 ms.
                let mut looked = Instant::now();
                let every = Duration::from_millis(50);
                loop {
                    let next = peer.next_message(Duration::from_secs(600));
                    if let Ok(message) = tokio::time::timeout(every, next).await {
                        let Some(message) = message? else {
                            bail!("a watcher was disconnected");
                        };
                        peer.absorb(message).await?;
                    }
                    if looked.elapsed() >= every {
                        looked = Instant::now();
                        if task_count(peer.doc(id)) >= creates {
                            return Ok::<_, anyhow::Error>(start.elapsed());
                        }
                    }
                }
            })
        })
        .collect();

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.rest_clients)
        .build()?;
    let base = account.base.clone();
    let token = account.access_token.clone();

    let post = {
        let (http, base, token, project) = (http.clone(), base.clone(), token.clone(), project);
        move |n: usize| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            let body = serde_json::json!({
                "projectId": project, "title": format!("Task {n} made over REST"),
                "labels": ["bench"], "priority": "medium"
            });
            async move {
                let response = http
                    .post(format!("{base}/api/v1/tasks"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await?;
                if response.status() != reqwest::StatusCode::CREATED {
                    bail!(
                        "POST answered {}: {}",
                        response.status(),
                        response.text().await?
                    );
                }
                let task: serde_json::Value = response.json().await?;
                task["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("no id"))
            }
        }
    };
    let cpu_before = server.cpu_seconds();
    let (latencies, ids, elapsed) = drive(args.rest_clients, creates, post).await?;
    let cpu = server.cpu_seconds() - cpu_before;
    report_phase(
        t,
        backend,
        "POST /api/v1/tasks",
        args,
        latencies,
        elapsed,
        cpu,
    );

    let mut all_held = Duration::ZERO;
    for watcher in watching {
        all_held = all_held.max(watcher.await??);
    }
    report(
        t,
        &format!(
            "REST ({backend}): every one of {} watchers holds all {creates} tasks",
            args.watchers
        ),
        format!("{:.2} s after the first POST", all_held.as_secs_f64()),
    );

    // GET: reads spread over the created tasks.
    let ids = Arc::new(ids);
    let get = move |n: usize| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let id = ids[n * 7919 % ids.len()].clone();
        async move {
            let response = http
                .get(format!("{base}/api/v1/tasks/{id}"))
                .bearer_auth(&token)
                .send()
                .await?;
            if response.status() != reqwest::StatusCode::OK {
                bail!("GET answered {}", response.status());
            }
            response.bytes().await?;
            Ok(())
        }
    };
    let cpu_before = server.cpu_seconds();
    let (latencies, _, elapsed) = drive(args.rest_clients, args.rest_reads, get).await?;
    let cpu = server.cpu_seconds() - cpu_before;
    report_phase(
        t,
        backend,
        "GET /api/v1/tasks/{id}",
        args,
        latencies,
        elapsed,
        cpu,
    );
    Ok(())
}

/// Makes requests 1 to `count` from `clients` concurrent workers, each taking the next number
/// when its last request is answered; each request's latency, what each answered, and the
/// time it all took.
pub(crate) async fn drive<T, Fut>(
    clients: usize,
    count: usize,
    request: impl Fn(usize) -> Fut + Clone + Send + 'static,
) -> anyhow::Result<(Vec<Duration>, Vec<T>, Duration)>
where
    T: Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send,
{
    let next = Arc::new(AtomicUsize::new(1));
    let began = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, request) = (next.clone(), request.clone());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n > count {
                        return Ok::<_, anyhow::Error>(done);
                    }
                    let sent = Instant::now();
                    let answer = request(n).await?;
                    done.push((sent.elapsed(), answer));
                }
            })
        })
        .collect();
    let (mut latencies, mut answers) = (Vec::new(), Vec::new());
    for worker in workers {
        for (latency, answer) in worker.await?? {
            latencies.push(latency);
            answers.push(answer);
        }
    }
    Ok((latencies, answers, began.elapsed()))
}

fn task_count(doc: &automerge::Automerge) -> usize {
    match doc.get(automerge::ROOT, "tasks") {
        Ok(Some((automerge::Value::Object(automerge::ObjType::Map), tasks))) => doc.length(&tasks),
        _ => 0,
    }
}

fn report_phase(
    t: Target,
    backend: &str,
    what: &str,
    args: &Args,
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    cpu: f64,
) {
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    report(
        t,
        &format!(
            "REST ({backend}): {what}, {} clients, {} watchers",
            args.rest_clients, args.watchers
        ),
        format!(
            "{:.0} req/s, p50 {:.1} ms, p99 {:.1} ms ({} requests in {:.2} s, server CPU {:.2} s = {:.2} ms/request)",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            ms(pct(0.5)),
            ms(pct(0.99)),
            latencies.len(),
            elapsed.as_secs_f64(),
            cpu,
            cpu * 1000.0 / latencies.len().max(1) as f64,
        ),
    );
}
