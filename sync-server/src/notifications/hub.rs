//! Routes pushes for a user to that user's open notification sockets, wherever they are.
//!
//! Each node keeps its own sockets by user. Alone (embedded mode) that is all there is. With
//! Redis, a node also records, per user it holds sockets for, "this node, until T" in the hash
//! `<prefix>notify:user:<user id>`, refreshing T every third of [`HubConfig::route_ttl`] while
//! the sockets stay open, and listens on its own channel `<prefix>notify:node:<node id>` only.
//! A push for a user goes to this node's sockets directly and to each other node whose
//! claim has not run out through that node's channel: no node hears about users it has held no
//! socket for lately. Claims are never deleted, only left to run out (a node that died, or
//! whose user left, drops out within the TTL; senders remove what has run out), so a quick
//! reconnect never races a deletion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use taskflow_proto::notifications::Notification;
use tokio::sync::mpsc;

use crate::auth::redis_state::RedisFailure;
use crate::now_ms;
use crate::resilience::Breaker;

/// Pushes queued per socket before a socket that does not keep up is dropped (its client
/// reconnects and gets a fresh `unread_sync`).
const SOCKET_QUEUE: usize = 256;

/// What the hub carries to a user's sockets; each socket turns it into its
/// [`taskflow_proto::notifications::ServerMessage`] with the unread count as it is when sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Push {
    Received(Box<Notification>),
    Read { ids: Vec<String>, all: bool },
}

/// One push for one user, as it crosses to another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Routed {
    user: String,
    push: Push,
}

/// A socket's end of the hub: what to send it, until it is dropped.
#[derive(Debug)]
pub struct Listener {
    id: String,
    pub pushes: mpsc::Receiver<Arc<Push>>,
    user: String,
    hub: Arc<Hub>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.hub.leave(&self.user, &self.id);
    }
}

#[derive(Debug)]
struct Socket {
    id: String,
    queue: mpsc::Sender<Arc<Push>>,
}

/// How long a route lives unless refreshed.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    pub route_ttl: Duration,
}

#[derive(Debug)]
pub struct Hub {
    /// This node's name in routes and channels.
    node: String,
    sockets: Mutex<HashMap<String, Vec<Socket>>>,
    redis: Option<Remote>,
}

#[derive(Clone)]
struct Remote {
    conn: ConnectionManager,
    prefix: String,
    ttl: Duration,
    breaker: Arc<Breaker>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Remote {
    fn route_key(&self, user: &str) -> String {
        format!("{}notify:user:{user}", self.prefix)
    }

    fn channel(&self, node: &str) -> String {
        format!("{}notify:node:{node}", self.prefix)
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Records that `node` holds sockets of each of `users`, for one more TTL.
    async fn announce(&self, node: &str, users: &[String]) -> Result<(), RedisFailure> {
        if users.is_empty() {
            return Ok(());
        }
        let until = now_ms() + self.ttl_ms();
        let mut pipe = redis::pipe();
        for user in users {
            let key = self.route_key(user);
            pipe.hset(&key, node, until)
                .ignore()
                .pexpire(&key, self.ttl_ms())
                .ignore();
        }
        self.breaker
            .call(pipe.query_async(&mut self.conn.clone()))
            .await
    }
}

impl Hub {
    /// A hub for this process alone.
    pub fn local() -> Arc<Hub> {
        Arc::new(Hub {
            node: uuid::Uuid::new_v4().to_string(),
            sockets: Mutex::new(HashMap::new()),
            redis: None,
        })
    }

    /// A hub that routes through the Redis at `url` to the other nodes using `prefix`.
    pub async fn shared(
        url: &str,
        conn: ConnectionManager,
        prefix: &str,
        config: HubConfig,
        breaker: Arc<Breaker>,
    ) -> redis::RedisResult<Arc<Hub>> {
        let node = uuid::Uuid::new_v4().to_string();
        let remote = Remote {
            conn,
            prefix: prefix.to_owned(),
            ttl: config.route_ttl,
            breaker,
        };
        let client = redis::Client::open(url)?;
        let mut pubsub = client.get_async_pubsub().await?;
        let channel = remote.channel(&node);
        pubsub.subscribe(&channel).await?;
        let hub = Arc::new(Hub {
            node,
            sockets: Mutex::new(HashMap::new()),
            redis: Some(remote),
        });
        tokio::spawn(receive(client, pubsub, channel, Arc::downgrade(&hub)));
        tokio::spawn(refresh(Arc::downgrade(&hub), config.route_ttl / 3));
        Ok(hub)
    }

    /// Opens a socket's place in the hub: what is sent to `user` from now on reaches it.
    pub async fn join(self: &Arc<Self>, user: &str) -> Listener {
        let (queue, pushes) = mpsc::channel(SOCKET_QUEUE);
        let id = format!("{}/{}", self.node, uuid::Uuid::new_v4());
        let first = {
            let mut sockets = self.sockets.lock().expect("hub lock");
            let mine = sockets.entry(user.to_owned()).or_default();
            mine.push(Socket {
                id: id.clone(),
                queue,
            });
            mine.len() == 1
        };
        if first
            && let Some(remote) = &self.redis
            && let Err(e) = remote.announce(&self.node, &[user.to_owned()]).await
        {
            // The refresh tries again; until then other nodes' pushes miss this socket.
            tracing::warn!(error = %e, "recording a notification route in Redis failed");
        }
        Listener {
            id,
            pushes,
            user: user.to_owned(),
            hub: self.clone(),
        }
    }

    fn leave(&self, user: &str, socket: &str) {
        let mut sockets = self.sockets.lock().expect("hub lock");
        if let Some(mine) = sockets.get_mut(user) {
            mine.retain(|s| s.id != socket);
            if mine.is_empty() {
                sockets.remove(user);
            }
        }
    }

    /// How many users have a socket on this node.
    pub fn users(&self) -> usize {
        self.sockets.lock().expect("hub lock").len()
    }

    /// Sends `push` to every open socket of `user`, on every node.
    pub async fn send(&self, user: &str, push: Push) {
        let push = Arc::new(push);
        self.deliver(user, &push);
        let Some(remote) = &self.redis else {
            return;
        };
        let key = remote.route_key(user);
        let mut conn = remote.conn.clone();
        let routes: Result<HashMap<String, i64>, _> = remote.breaker.call(conn.hgetall(&key)).await;
        let routes = match routes {
            Ok(routes) => routes,
            Err(e) => {
                tracing::warn!(error = %e, "reading notification routes failed");
                return;
            }
        };
        let now = now_ms();
        let (live, expired): (Vec<_>, Vec<_>) =
            routes.into_iter().partition(|(_, until)| *until > now);
        if !expired.is_empty() {
            let nodes: Vec<String> = expired.into_iter().map(|(node, _)| node).collect();
            let pruned: Result<(), _> = remote.breaker.call(conn.hdel(&key, nodes)).await;
            if let Err(e) = pruned {
                tracing::debug!(error = %e, "removing run-out notification routes failed");
            }
        }
        let nodes: Vec<String> = live
            .into_iter()
            .map(|(node, _)| node)
            .filter(|node| *node != self.node)
            .collect();
        if nodes.is_empty() {
            return;
        }
        let routed = Routed {
            user: user.to_owned(),
            push: (*push).clone(),
        };
        let text = serde_json::to_string(&routed).expect("plain JSON");
        for node in nodes {
            let sent: Result<(), _> = remote
                .breaker
                .call(conn.publish(remote.channel(&node), &text))
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, %node, "sending a notification to another node failed");
            }
        }
    }

    /// Queues `push` for this node's sockets of `user`.
    fn deliver(&self, user: &str, push: &Arc<Push>) {
        let mut sockets = self.sockets.lock().expect("hub lock");
        let Some(mine) = sockets.get_mut(user) else {
            return;
        };
        // A full queue: the socket is not keeping up. Dropping its queue closes it.
        mine.retain(|socket| socket.queue.try_send(push.clone()).is_ok());
    }
}

/// Hands the pushes on this node's channel to its sockets; after losing the subscription it
/// subscribes again.
async fn receive(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    channel: String,
    hub: std::sync::Weak<Hub>,
) {
    use futures_util::StreamExt;
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Some(hub) = hub.upgrade() else {
                    return;
                };
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Routed>(&text) {
                    Ok(routed) => hub.deliver(&routed.user, &Arc::new(routed.push)),
                    Err(e) => tracing::warn!(error = %e, "an unreadable notification on Redis"),
                }
            }
        }
        tracing::warn!("lost the Redis subscription for notifications; subscribing again");
        pubsub = loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if hub.strong_count() == 0 {
                return;
            }
            match client.get_async_pubsub().await {
                Ok(mut fresh) => {
                    if fresh.subscribe(&channel).await.is_ok() {
                        break fresh;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Redis unreachable"),
            }
        };
    }
}

/// Keeps this node's routes alive while its sockets are open.
async fn refresh(hub: std::sync::Weak<Hub>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let Some(remote) = &hub.redis else {
            return;
        };
        let users: Vec<String> = hub
            .sockets
            .lock()
            .expect("hub lock")
            .keys()
            .cloned()
            .collect();
        if let Err(e) = remote.announce(&hub.node, &users).await {
            tracing::warn!(error = %e, "refreshing notification routes in Redis failed");
        }
    }
}
