//! Cross-node fan-out: tells the other nodes that hold a document open what happened to it here.
//!
//! Alone (embedded mode, no `REDIS_URL`) a node needs none of this. With Redis, every node
//! subscribes to the channel `<prefix>doc:<document id>` of each document it holds open, and
//! publishes two kinds of notice there:
//! - `changed`: this node committed changes; the notice carries the new heads only. A node
//!   that does not know them reads what it lacks from the store (`Store::catch_up`), which is
//!   the truth, so a notice never carries a change that is not committed, nor needs to be
//!   complete or in order: a lost notice costs latency until the next one, never data.
//! - `ephemeral`: a peer's presence message, relayed to the other nodes' peers of the document.
//!
//! After losing Redis the subscriber subscribes again and has every open document catch up
//! (`Notice::Resync`), so changes made elsewhere meanwhile arrive. Publishing goes through a
//! bounded queue to a task of its own, so a slow or dead Redis never holds up a document.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use automerge::ChangeHash;
use base64::Engine;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use taskflow_proto::{DocumentId, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::now_ms;
use crate::resilience::Breaker;

/// Notices waiting to be published before new ones are dropped (Redis is not keeping up).
const PUBLISH_QUEUE: usize = 16_384;
/// Most notices published in one pipeline.
const PUBLISH_BATCH: usize = 256;
/// How long a Redis command may take before the connection is deemed lost.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a document's actor waits for its subscription before loading anyway (a later
/// `Resync` covers what it might miss).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Channels named in one SUBSCRIBE when subscribing again after a reconnect.
const RESUBSCRIBE_CHUNK: usize = 1_000;

/// What a node hears about a document from another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Another node committed changes; the document's heads there are now `heads`.
    Changed {
        heads: Vec<ChangeHash>,
        /// When it was committed (milliseconds since the epoch), for the propagation metric.
        at_ms: i64,
    },
    /// Notices may have been missed (Redis was unreachable): catch up with the store.
    Resync,
    /// A peer's ephemeral (presence) message for the document's peers here.
    Ephemeral {
        sender_id: PeerId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
}

/// A notice as it crosses Redis (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    /// The publishing node: a node ignores its own notices.
    node: String,
    #[serde(flatten)]
    body: WireBody,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireBody {
    Changed {
        heads: Vec<String>,
        at_ms: i64,
    },
    Ephemeral {
        sender_id: String,
        session_id: String,
        count: u64,
        /// Base64 (standard).
        data: String,
    },
}

impl WireBody {
    fn of(notice: &Notice) -> Option<WireBody> {
        match notice {
            Notice::Changed { heads, at_ms } => Some(WireBody::Changed {
                heads: heads.iter().map(ToString::to_string).collect(),
                at_ms: *at_ms,
            }),
            Notice::Ephemeral {
                sender_id,
                session_id,
                count,
                data,
            } => Some(WireBody::Ephemeral {
                sender_id: sender_id.to_string(),
                session_id: session_id.clone(),
                count: *count,
                data: base64::engine::general_purpose::STANDARD.encode(data),
            }),
            Notice::Resync => None,
        }
    }

    fn into_notice(self) -> Result<Notice, String> {
        match self {
            WireBody::Changed { heads, at_ms } => Ok(Notice::Changed {
                heads: heads
                    .iter()
                    .map(|h| h.parse().map_err(|e| format!("head {h}: {e}")))
                    .collect::<Result<_, _>>()?,
                at_ms,
            }),
            WireBody::Ephemeral {
                sender_id,
                session_id,
                count,
                data,
            } => Ok(Notice::Ephemeral {
                sender_id: PeerId::new(sender_id),
                session_id,
                count,
                data: base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| format!("data: {e}"))?,
            }),
        }
    }
}

/// This node's end of the fan-out. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    /// `None` on a node alone.
    remote: Option<Remote>,
}

#[derive(Debug, Clone)]
struct Remote {
    node: String,
    prefix: String,
    publish: mpsc::Sender<(DocumentId, Notice)>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
}

#[derive(Debug)]
enum Subscription {
    /// A document was opened: subscribe to its channel (if no actor of it holds one), then
    /// answer.
    Open(DocumentId, oneshot::Sender<()>),
    /// A document's actor ended.
    Close(DocumentId),
}

impl Fanout {
    /// A node alone: nothing crosses to other nodes.
    pub fn local() -> Fanout {
        Fanout::default()
    }

    /// Fan-out through the Redis at `url`, on channels named with `prefix`. Notices from other
    /// nodes come out of the returned receiver, for the caller to hand to the documents.
    pub async fn shared(
        url: &str,
        conn: ConnectionManager,
        prefix: &str,
        breaker: Arc<Breaker>,
    ) -> redis::RedisResult<(Fanout, mpsc::Receiver<(DocumentId, Notice)>)> {
        let client = redis::Client::open(url)?;
        let node = uuid::Uuid::new_v4().to_string();
        let (publish, outgoing) = mpsc::channel(PUBLISH_QUEUE);
        let (subscriptions, commands) = mpsc::unbounded_channel();
        let (deliver, incoming) = mpsc::channel(PUBLISH_QUEUE);
        let remote = Remote {
            node: node.clone(),
            prefix: prefix.to_owned(),
            publish,
            subscriptions,
        };
        tokio::spawn(publisher(conn, breaker, remote.clone(), outgoing));
        let subscriber = Subscriber {
            client,
            node,
            prefix: prefix.to_owned(),
            open: HashMap::new(),
            deliver,
        };
        tokio::spawn(subscriber.run(commands));
        Ok((
            Fanout {
                remote: Some(remote),
            },
            incoming,
        ))
    }

    /// Subscribes to the document's notices before its actor reads the store, so no commit
    /// elsewhere falls between the read and the subscription.
    pub async fn open(&self, id: DocumentId) {
        let Some(remote) = &self.remote else {
            return;
        };
        let (done, subscribed) = oneshot::channel();
        if remote
            .subscriptions
            .send(Subscription::Open(id, done))
            .is_ok()
        {
            let _ = tokio::time::timeout(SUBSCRIBE_WAIT, subscribed).await;
        }
    }

    /// The document's actor ended.
    pub fn close(&self, id: DocumentId) {
        if let Some(remote) = &self.remote {
            let _ = remote.subscriptions.send(Subscription::Close(id));
        }
    }

    /// Tells the other nodes about `notice` (never waits; dropped if Redis is not keeping up).
    pub fn publish(&self, id: DocumentId, notice: Notice) {
        let Some(remote) = &self.remote else {
            return;
        };
        if remote.publish.try_send((id, notice)).is_err() {
            // Redis is not keeping up. The document's next notice (or a reconnecting peer)
            // brings the other nodes everything stored, this change included.
            crate::telemetry::dependency_error("redis");
        }
    }
}

impl Remote {
    fn channel(&self, id: &DocumentId) -> String {
        channel(&self.prefix, id)
    }
}

fn channel(prefix: &str, id: &DocumentId) -> String {
    format!("{prefix}doc:{id}")
}

/// Publishes queued notices, a pipeline at a time.
async fn publisher(
    conn: ConnectionManager,
    breaker: Arc<Breaker>,
    remote: Remote,
    mut outgoing: mpsc::Receiver<(DocumentId, Notice)>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while outgoing.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut count = 0;
        for (id, notice) in batch.drain(..) {
            let Some(body) = WireBody::of(&notice) else {
                continue;
            };
            let wire = Wire {
                node: remote.node.clone(),
                body,
            };
            let text = serde_json::to_string(&wire).expect("plain JSON");
            pipe.publish(remote.channel(&id), text).ignore();
            count += 1;
        }
        // Lost notices cost latency only: the subscribers resync when they get Redis back.
        match breaker
            .call(pipe.query_async::<()>(&mut conn.clone()))
            .await
        {
            Ok(()) => {
                metrics::counter!(crate::telemetry::FANOUT_MESSAGES, "direction" => "out")
                    .increment(count);
            }
            Err(e) => tracing::warn!(error = %e, "publishing document notices failed"),
        }
    }
}

/// Owns the subscription connection: the documents open here, their channels, and what
/// arrives on them.
struct Subscriber {
    client: redis::Client,
    node: String,
    prefix: String,
    /// Document → actors of it open here (one, or two while one ends as the next starts).
    open: HashMap<DocumentId, usize>,
    deliver: mpsc::Sender<(DocumentId, Notice)>,
}

impl Subscriber {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Subscription>) {
        use futures_util::StreamExt;
        let mut backoff = Duration::from_millis(100);
        loop {
            // Documents keep opening (and are answered at once) while this connects: a hung
            // Redis must not hold up their actors.
            let client = self.client.clone();
            let connect =
                tokio::time::timeout(
                    REDIS_TIMEOUT,
                    async move { client.get_async_pubsub().await },
                );
            let Some(connected) = self.answering(&mut commands, connect).await else {
                return;
            };
            let pubsub = match connected {
                Ok(Ok(pubsub)) => pubsub,
                failed => {
                    if let Ok(Err(e)) = failed {
                        tracing::warn!(error = %e, "Redis unreachable for document notices");
                    }
                    crate::telemetry::dependency_error("redis");
                    let retry = tokio::time::sleep(backoff);
                    if self.answering(&mut commands, retry).await.is_none() {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            // Commands wait meanwhile (at most REDIS_TIMEOUT): one answered now would miss
            // its subscription.
            if self.subscribe_all(&mut sink).await.is_err() {
                tokio::time::sleep(backoff).await;
                continue;
            }
            backoff = Duration::from_millis(100);
            // Documents opened while Redis was unreachable (or before this connection was lost)
            // may have missed notices.
            if !self.open.is_empty() {
                tracing::info!(documents = self.open.len(), "document notices resumed");
                self.resync_all().await;
            }
            loop {
                tokio::select! {
                    command = commands.recv() => {
                        let Some(command) = command else { return };
                        if self.apply(&mut sink, command).await.is_err() {
                            break;
                        }
                    }
                    message = stream.next() => {
                        let Some(message) = message else { break };
                        self.receive(&message).await;
                    }
                }
            }
            crate::telemetry::dependency_error("redis");
            tracing::warn!("lost the Redis subscription for document notices; subscribing again");
        }
    }

    /// Runs `until` while counting and answering commands (not subscribing: there is no
    /// connection); `None` when the fan-out is gone.
    async fn answering<T>(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Subscription>,
        until: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(until);
        loop {
            tokio::select! {
                done = &mut until => return Some(done),
                command = commands.recv() => match command? {
                    Subscription::Open(id, done) => {
                        self.count(id, true);
                        let _ = done.send(());
                    }
                    Subscription::Close(id) => {
                        self.count(id, false);
                    }
                },
            }
        }
    }

    /// Counts an open (`opening`) or a close of the document; true when that changes whether
    /// its channel is wanted.
    fn count(&mut self, id: DocumentId, opening: bool) -> bool {
        if opening {
            let n = self.open.entry(id).or_default();
            *n += 1;
            return *n == 1;
        }
        let Some(n) = self.open.get_mut(&id) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.open.remove(&id);
            return true;
        }
        false
    }

    /// Applies one command on a live connection; an error means the connection is lost.
    async fn apply(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
        command: Subscription,
    ) -> Result<(), ()> {
        let (id, opening, done) = match command {
            Subscription::Open(id, done) => (id, true, Some(done)),
            Subscription::Close(id) => (id, false, None),
        };
        let result = if !self.count(id, opening) {
            Ok(Ok(()))
        } else if opening {
            tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(channel(&self.prefix, &id))).await
        } else {
            tokio::time::timeout(REDIS_TIMEOUT, sink.unsubscribe(channel(&self.prefix, &id))).await
        };
        // Answered after subscribing: the actor reads the store only then. An actor that gave
        // up waiting read it before: it catches up now that notices reach it.
        if let Some(done) = done
            && done.send(()).is_err()
        {
            let _ = self.deliver.send((id, Notice::Resync)).await;
        }
        match result {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn subscribe_all(&self, sink: &mut redis::aio::PubSubSink) -> Result<(), ()> {
        let channels: Vec<String> = self
            .open
            .keys()
            .map(|id| channel(&self.prefix, id))
            .collect();
        for chunk in channels.chunks(RESUBSCRIBE_CHUNK) {
            match tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(chunk)).await {
                Ok(Ok(())) => {}
                _ => return Err(()),
            }
        }
        Ok(())
    }

    /// Has every open document catch up with the store.
    async fn resync_all(&self) {
        for id in self.open.keys() {
            let _ = self.deliver.send((*id, Notice::Resync)).await;
        }
    }

    async fn receive(&self, message: &redis::Msg) {
        let Some(id) = message
            .get_channel_name()
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix("doc:"))
            .and_then(|id| id.parse::<DocumentId>().ok())
        else {
            return;
        };
        let wire: Wire = match serde_json::from_slice(message.get_payload_bytes()) {
            Ok(wire) => wire,
            Err(e) => {
                tracing::warn!(error = %e, document = %id, "an unreadable document notice on Redis");
                return;
            }
        };
        if wire.node == self.node {
            return;
        }
        match wire.body.into_notice() {
            Ok(notice) => {
                metrics::counter!(crate::telemetry::FANOUT_MESSAGES, "direction" => "in")
                    .increment(1);
                if let Notice::Changed { at_ms, .. } = &notice {
                    let delay = (now_ms() - at_ms).max(0) as f64 / 1000.0;
                    metrics::histogram!(crate::telemetry::FANOUT_DELAY_SECONDS).record(delay);
                }
                let _ = self.deliver.send((id, notice)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, document = %id, "an unreadable document notice on Redis")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_cross_as_json_and_back() {
        let heads = vec![ChangeHash([7; 32]), ChangeHash([9; 32])];
        for notice in [
            Notice::Changed {
                heads: heads.clone(),
                at_ms: 1_700_000_000_000,
            },
            Notice::Ephemeral {
                sender_id: PeerId::new("peer-1".to_owned()),
                session_id: "s".into(),
                count: 3,
                data: vec![0, 1, 255],
            },
        ] {
            let wire = Wire {
                node: "n".into(),
                body: WireBody::of(&notice).expect("crosses"),
            };
            let text = serde_json::to_string(&wire).expect("json");
            let back: Wire = serde_json::from_str(&text).expect("parse");
            assert_eq!(back.body.into_notice().expect("valid"), notice);
        }
    }

    #[test]
    fn a_resync_is_never_published() {
        assert!(WireBody::of(&Notice::Resync).is_none());
    }
}
