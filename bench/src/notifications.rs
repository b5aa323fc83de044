//! The `notifications` scenario: `--notify-users` members of one workspace each hold a
//! notification socket open while a sync client assigns a task to one of them at a time
//! (`--notify-assignments` times). Each assignment is timed from sending the change to the
//! assignee's socket receiving `notification_received` (p50 / p99); also reported are the
//! server's memory with every socket open and its CPU time per assignment.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use taskflow_proto::DocumentId;
use taskflow_proto::board::ops::{self, TaskEdit};
use taskflow_proto::board::{Board, TaskId};
use taskflow_testkit::account::PASSWORD;
use taskflow_testkit::{Account, Peer};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{Args, ServerUnderTest, Target, connect, ms, report};

const WAIT: Duration = Duration::from_secs(30);
/// Concurrent sign-ups and socket openings.
const SETUP_CLIENTS: usize = 16;

pub async fn scenario(args: &Args, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let t = Target::Ours;
    let server =
        ServerUnderTest::start_with_env(t, dir, bin, None, args.database_url.as_deref(), &[])
            .await?;
    let owner = server
        .account
        .clone()
        .ok_or_else(|| anyhow!("an account"))?;

    // Members, each with a socket open.
    let began = Instant::now();
    let members: Vec<Account> = futures_util::stream::iter(0..args.notify_users)
        .map(|n| join(&owner, n))
        .buffered(SETUP_CLIENTS)
        .try_collect()
        .await?;
    let joined = began.elapsed();
    let rss_joined = server.rss_mib();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel::<(usize, Instant)>();
    let began = Instant::now();
    let sockets: Vec<()> = futures_util::stream::iter(members.iter().enumerate())
        .map(|(n, member)| listen(n, member, arrived_tx.clone()))
        .buffered(SETUP_CLIENTS)
        .try_collect()
        .await?;
    let opened = began.elapsed();
    report(
        t,
        &format!(
            "notifications: {} members signed up and joined, then their sockets opened",
            sockets.len()
        ),
        format!(
            "{:.1} s to join (argon2 sign-ups), {:.2} s to open the sockets; server RSS {:.1} MiB after the joins, {:.1} MiB with the sockets open",
            joined.as_secs_f64(),
            opened.as_secs_f64(),
            rss_joined,
            server.rss_mib()
        ),
    );

    // The assigner: a sync client on the board.
    let (project, doc) = owner.project("Notifications bench").await?;
    let task = owner
        .post(
            "/api/v1/tasks",
            json!({ "projectId": project, "title": "Hot potato" }),
        )
        .await?;
    let task = TaskId::new(task["id"].as_str().ok_or_else(|| anyhow!("task id"))?);
    let mut peer = connect(&server, "notifications-bench").await?;
    peer.request(doc).await?;
    peer.until_doc(doc, |d| {
        Board::read_task(d, &task).is_ok_and(|t| t.is_some())
    })
    .await?;

    // Untimed: the events of every join are handled before it (in order), and the board is
    // loaded.
    assign(&mut peer, doc, &task, &members[0].user_id).await?;
    notified(&mut arrived, 0).await?;

    let cpu_before = server.cpu_seconds();
    let mut delays = Vec::new();
    for n in 1..=args.notify_assignments {
        // Spread over the members, never the same one twice in a row.
        let target = (n * 7919) % members.len();
        let sent = Instant::now();
        assign(&mut peer, doc, &task, &members[target].user_id).await?;
        delays.push(notified(&mut arrived, target).await? - sent);
        peer.until_server_has(doc).await?;
    }
    let cpu = server.cpu_seconds() - cpu_before;
    delays.sort();
    let pct = |q: f64| delays[((delays.len() as f64 - 1.0) * q) as usize];
    report(
        t,
        &format!(
            "notifications: a sync client's assignment to notification_received on the assignee's socket ({} assignments, one at a time, {} sockets open)",
            delays.len(),
            members.len()
        ),
        format!(
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {:.2} ms per assignment; RSS {:.1} MiB",
            ms(pct(0.5)),
            ms(pct(0.99)),
            ms(pct(1.0)),
            cpu * 1000.0 / delays.len() as f64,
            server.rss_mib()
        ),
    );
    peer.close().await?;
    let mut server = server;
    server.terminate().await?;
    Ok(())
}

/// Makes `assignee` the task's one assignee, from the sync client.
async fn assign(
    peer: &mut Peer,
    doc: DocumentId,
    task: &TaskId,
    assignee: &str,
) -> anyhow::Result<()> {
    peer.edit(doc, |tx| {
        let assign = TaskEdit {
            assignees: Some(BTreeSet::from([assignee.to_owned()])),
            ..TaskEdit::default()
        };
        ops::edit_task(tx, task, assign, 1).expect("assign");
    })
    .await
}

/// When member `target`'s socket received its assignment; anyone else's is an error.
async fn notified(
    arrived: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    target: usize,
) -> anyhow::Result<Instant> {
    let (who, at) = tokio::time::timeout(WAIT, arrived.recv())
        .await
        .map_err(|_| anyhow!("member {target} was never notified"))?
        .ok_or_else(|| anyhow!("the sockets stopped"))?;
    if who != target {
        bail!("member {who} was notified of an assignment to member {target}");
    }
    Ok(at)
}

/// Sign-ups from one client address before the server's per-address limit (a burst of 20)
/// would slow them down.
const SIGN_UPS_PER_ADDRESS: usize = 16;

/// Signs up member `n` and has them join `owner`'s workspace. Members sign up from different
/// loopback addresses (127.0.0.2, …), as people on their own machines would.
async fn join(owner: &Account, n: usize) -> anyhow::Result<Account> {
    let host = u8::try_from(2 + n / SIGN_UPS_PER_ADDRESS)
        .map_err(|_| anyhow!("at most {} members", 250 * SIGN_UPS_PER_ADDRESS))?;
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, host]))
        .build()?;
    let email = format!("member-{n}-{}@bench.test", std::process::id());
    let body = json!({ "email": email, "name": format!("Member {n}"), "password": PASSWORD });
    let response = http
        .post(format!("{}/api/v1/auth/register", owner.base))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("signing up member {n}: {}", response.text().await?);
    }
    let tokens: Value = response.json().await?;
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{tokens}"))
    };
    let member = Account::from_tokens(
        owner.base.trim_start_matches("http://"),
        &text(&tokens["user"]["id"])?,
        &email,
        &text(&tokens["accessToken"])?,
        &text(&tokens["refreshToken"])?,
    )
    .await?;
    owner.add_member(&member, "member").await?;
    Ok(member)
}

/// Opens member `n`'s notification socket; once its `unread_sync` is in, a task reports
/// each `notification_received` on it as `(n, when)`.
async fn listen(
    n: usize,
    member: &Account,
    arrived: mpsc::UnboundedSender<(usize, Instant)>,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/api/v1/notifications/ws?token={}",
        member.base.replacen("http", "ws", 1),
        member.access_token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    loop {
        match tokio::time::timeout(WAIT, socket.next()).await? {
            Some(Ok(WsMessage::Text(text))) => {
                let message: Value = serde_json::from_str(text.as_str())?;
                if message["type"] == "unread_sync" {
                    break;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("socket {n} closed before unread_sync"),
        }
    }
    tokio::spawn(async move {
        while let Some(Ok(frame)) = socket.next().await {
            let WsMessage::Text(text) = frame else {
                continue;
            };
            let at = Instant::now();
            let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            // The invitation each member accepted may still be on its way.
            if message["type"] == "notification_received"
                && message["notification"]["kind"] == "task.assigned"
            {
                let _ = arrived.send((n, at));
            }
        }
    });
    Ok(())
}
