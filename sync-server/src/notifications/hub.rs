//! Routes messages for a user to that user's open notification sockets, wherever they are.
//!
//! Each node keeps its own sockets by user. Alone (embedded mode) that is all there is. With
//! Redis, a node also records, per user it holds sockets for, "this node, until T" in the hash
//! `<prefix>notify:user:<user id>`, refreshing T while the sockets stay open (so a node that
//! died drops out within [`HubConfig::route_ttl`]), and listens on its own channel
//! `<prefix>notify:node:<node id>` only. A message for a user goes to this node's sockets
//! directly and to each other node holding one through that node's channel: no node hears
//! about users it holds no socket for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use taskflow_proto::notifications::ServerMessage;
use tokio::sync::mpsc;

use crate::now_ms;

/// Messages queued per socket before a socket that does not keep up is dropped (its client
/// reconnects and gets a fresh `unread_sync`).
const SOCKET_QUEUE: usize = 256;

/// One message for one user, as it crosses to another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Routed {
    user: String,
    message: ServerMessage,
}

/// A socket's end of the hub: what to send it, until it is dropped.
#[derive(Debug)]
pub struct Listener {
    id: String,
    pub messages: mpsc::Receiver<Arc<ServerMessage>>,
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
    queue: mpsc::Sender<Arc<ServerMessage>>,
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
    async fn announce(&self, node: &str, users: &[String]) -> redis::RedisResult<()> {
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
        pipe.query_async(&mut self.conn.clone()).await
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
    ) -> redis::RedisResult<Arc<Hub>> {
        let node = uuid::Uuid::new_v4().to_string();
        let remote = Remote {
            conn,
            prefix: prefix.to_owned(),
            ttl: config.route_ttl,
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
        let (queue, messages) = mpsc::channel(SOCKET_QUEUE);
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
            // The refresh tries again; until then other nodes' messages miss this socket.
            tracing::warn!(error = %e, "recording a notification route in Redis failed");
        }
        Listener {
            id,
            messages,
            user: user.to_owned(),
            hub: self.clone(),
        }
    }

    fn leave(&self, user: &str, socket: &str) {
        let last = {
            let mut sockets = self.sockets.lock().expect("hub lock");
            let Some(mine) = sockets.get_mut(user) else {
                return;
            };
            mine.retain(|s| s.id != socket);
            let last = mine.is_empty();
            if last {
                sockets.remove(user);
            }
            last
        };
        if last && let Some(remote) = self.redis.clone() {
            let (key, node) = (remote.route_key(user), self.node.clone());
            tokio::spawn(async move {
                let mut conn = remote.conn.clone();
                let gone: redis::RedisResult<()> = conn.hdel(&key, &node).await;
                if let Err(e) = gone {
                    tracing::debug!(error = %e, "removing a notification route failed; it expires");
                }
            });
        }
    }

    /// How many users have a socket on this node.
    pub fn users(&self) -> usize {
        self.sockets.lock().expect("hub lock").len()
    }

    /// Sends `message` to every open socket of `user`, on every node.
    pub async fn send(&self, user: &str, message: ServerMessage) {
        let message = Arc::new(message);
        self.deliver(user, &message);
        let Some(remote) = &self.redis else {
            return;
        };
        let routes: redis::RedisResult<HashMap<String, i64>> =
            remote.conn.clone().hgetall(remote.route_key(user)).await;
        let routes = match routes {
            Ok(routes) => routes,
            Err(e) => {
                tracing::warn!(error = %e, "reading notification routes failed");
                return;
            }
        };
        let now = now_ms();
        let nodes: Vec<&String> = routes
            .iter()
            .filter(|(node, until)| **node != self.node && **until > now)
            .map(|(node, _)| node)
            .collect();
        if nodes.is_empty() {
            return;
        }
        let routed = Routed {
            user: user.to_owned(),
            message: (*message).clone(),
        };
        let text = serde_json::to_string(&routed).expect("plain JSON");
        for node in nodes {
            let sent: redis::RedisResult<()> = remote
                .conn
                .clone()
                .publish(remote.channel(node), &text)
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, %node, "sending a notification to another node failed");
            }
        }
    }

    /// Queues `message` for this node's sockets of `user`.
    fn deliver(&self, user: &str, message: &Arc<ServerMessage>) {
        let mut sockets = self.sockets.lock().expect("hub lock");
        let Some(mine) = sockets.get_mut(user) else {
            return;
        };
        // A full queue: the socket is not keeping up. Dropping its queue closes it.
        mine.retain(|socket| socket.queue.try_send(message.clone()).is_ok());
    }
}

/// Hands the messages on this node's channel to its sockets; after losing the subscription it
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
                    Ok(routed) => hub.deliver(&routed.user, &Arc::new(routed.message)),
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
