//! The signed-in user's notifications: the inbox over REST (methods on [`AccountClient`]) and
//! [`NotificationStream`], the live feed from the server's notification socket, which keeps
//! the unread count and reconnects by itself (for the desktop app's badge and panel).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use taskflow_proto::notifications::{ClientMessage, ServerMessage};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub use taskflow_proto::notifications::Notification;

use crate::account::{AccountClient, AccountError, Credentials, TokenSource};
use crate::backoff;

/// One page of the inbox, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxPage {
    pub notifications: Vec<Notification>,
    /// Pass to [`AccountClient::notifications`] for older ones; `None` on the last page.
    pub next_cursor: Option<String>,
    pub unread_count: u64,
}

fn unexpected<T>(value: Result<T, serde_json::Error>) -> Result<T, AccountError> {
    value.map_err(|e| AccountError::Network(format!("unexpected answer: {e}")))
}

impl AccountClient {
    /// Up to `limit` (1 to 200) notifications, newest first, older than `cursor`; only unread
    /// ones when `unread_only`.
    pub async fn notifications(
        &self,
        credentials: &Credentials,
        unread_only: bool,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<InboxPage, AccountError> {
        let mut path = format!("notifications?limit={limit}");
        if unread_only {
            path.push_str("&unread=true");
        }
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let value = self
            .call(
                reqwest::Method::GET,
                &path,
                Some(&credentials.access_token),
                None,
            )
            .await?;
        unexpected(serde_json::from_value(value))
    }

    pub async fn unread_count(&self, credentials: &Credentials) -> Result<u64, AccountError> {
        let value = self
            .call(
                reqwest::Method::GET,
                "notifications/unread-count",
                Some(&credentials.access_token),
                None,
            )
            .await?;
        value["unreadCount"]
            .as_u64()
            .ok_or_else(|| AccountError::Network("unexpected answer: no unreadCount".into()))
    }

    /// Marks one notification read; answers it.
    pub async fn mark_read(
        &self,
        credentials: &Credentials,
        id: &str,
    ) -> Result<Notification, AccountError> {
        let id = percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC);
        let value = self
            .call(
                reqwest::Method::PATCH,
                &format!("notifications/{id}/read"),
                Some(&credentials.access_token),
                None,
            )
            .await?;
        unexpected(serde_json::from_value(value))
    }

    /// Marks every notification read; answers how many were unread.
    pub async fn mark_all_read(&self, credentials: &Credentials) -> Result<u64, AccountError> {
        let value = self
            .call(
                reqwest::Method::POST,
                "notifications/read-all",
                Some(&credentials.access_token),
                Some(json!({})),
            )
            .await?;
        value["marked"]
            .as_u64()
            .ok_or_else(|| AccountError::Network("unexpected answer: no marked".into()))
    }
}

/// What the notification stream reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationEvent {
    /// Connected (again): the unread count and the latest unread notifications, newest first.
    /// What was shown before may be stale: replace it.
    Synced {
        unread_count: u64,
        items: Vec<Notification>,
    },
    /// A new notification.
    Received(Box<Notification>),
    /// Notifications were marked read (here or on another device): these, or all.
    Read { ids: Vec<String>, all: bool },
    /// The connection dropped (or could not be made); the stream tries again by itself.
    Disconnected { reason: String },
}

/// The live feed of one user's notifications from the server's notification socket.
///
/// It connects at once and stays connected, reconnecting with backoff (and a fresh access
/// token from its [`TokenSource`]) whenever the connection drops; each connection starts with
/// a [`NotificationEvent::Synced`]. Dropping it closes the connection.
#[derive(Debug)]
pub struct NotificationStream {
    events: mpsc::Receiver<NotificationEvent>,
    unread: watch::Receiver<u64>,
    commands: mpsc::Sender<ClientMessage>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NotificationStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events waiting for the application before the stream stops reading the socket.
const EVENT_QUEUE: usize = 1024;

impl NotificationStream {
    /// Connects to the notification socket of the server whose sync endpoint is `sync_url`
    /// (`ws://host/api/v1/sync` or `wss://…`).
    pub fn connect(
        sync_url: &str,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<NotificationStream, AccountError> {
        let url = socket_url(sync_url)?;
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (unread_tx, unread) = watch::channel(0);
        let (commands, commands_rx) = mpsc::channel(64);
        let task = tokio::spawn(run(url, tokens, events_tx, unread_tx, commands_rx));
        Ok(NotificationStream {
            events,
            unread,
            commands,
            task,
        })
    }

    /// The next event; `None` once the stream has stopped.
    pub async fn next(&mut self) -> Option<NotificationEvent> {
        self.events.recv().await
    }

    /// The unread count as last reported by the server.
    pub fn unread_count(&self) -> u64 {
        *self.unread.borrow()
    }

    /// Follows the unread count (for a badge).
    pub fn watch_unread(&self) -> watch::Receiver<u64> {
        self.unread.clone()
    }

    /// Marks a notification read over the socket; a [`NotificationEvent::Read`] follows. When
    /// not connected, it is sent once connected again.
    pub async fn mark_read(&self, id: &str) {
        self.marker().mark_read(id).await;
    }

    pub async fn mark_all_read(&self) {
        self.marker().mark_all_read().await;
    }

    /// A handle that marks notifications read over this stream, for code that does not read
    /// the stream's events itself (cheap to clone; it does nothing once the stream is gone).
    pub fn marker(&self) -> NotificationMarker {
        NotificationMarker {
            commands: self.commands.clone(),
        }
    }
}

/// Marks notifications read over a [`NotificationStream`]'s connection.
#[derive(Debug, Clone)]
pub struct NotificationMarker {
    commands: mpsc::Sender<ClientMessage>,
}

impl NotificationMarker {
    /// As [`NotificationStream::mark_read`].
    pub async fn mark_read(&self, id: &str) {
        let _ = self
            .commands
            .send(ClientMessage::MarkRead { id: id.to_owned() })
            .await;
    }

    pub async fn mark_all_read(&self) {
        let _ = self.commands.send(ClientMessage::MarkAllRead).await;
    }
}

/// `ws[s]://host/api/v1/notifications/ws` for the sync URL `ws[s]://host/…`.
fn socket_url(sync_url: &str) -> Result<String, AccountError> {
    let bad = || AccountError::BadUrl(sync_url.to_owned());
    let (scheme, rest) = sync_url.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "ws" | "wss") {
        return Err(bad());
    }
    let host = rest
        .split(['/', '?'])
        .next()
        .filter(|h| !h.is_empty())
        .ok_or_else(bad)?;
    Ok(format!("{scheme}://{host}/api/v1/notifications/ws"))
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Keeps a connection up until the stream is dropped.
async fn run(
    url: String,
    tokens: Arc<dyn TokenSource>,
    events: mpsc::Sender<NotificationEvent>,
    unread: watch::Sender<u64>,
    mut commands: mpsc::Receiver<ClientMessage>,
) {
    let mut failures = 0u32;
    // A command taken from the queue but not sent before the connection dropped.
    let mut unsent = None;
    loop {
        let reason = match connect(&url, tokens.as_ref()).await {
            Ok(socket) => {
                failures = 0;
                match serve(socket, &events, &unread, &mut commands, &mut unsent).await {
                    Some(reason) => reason,
                    // The application dropped its end.
                    None => return,
                }
            }
            Err(reason) => reason,
        };
        if events
            .send(NotificationEvent::Disconnected { reason })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(backoff::delay(failures, rand::random())).await;
        failures = failures.saturating_add(1);
    }
}

async fn connect(url: &str, tokens: &dyn TokenSource) -> Result<Socket, String> {
    let token = tokens.access_token().await?;
    let connecting = tokio_tungstenite::connect_async(format!("{url}?token={token}"));
    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| format!("{url} did not answer in time"))?
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    Ok(socket)
}

/// Relays one connection; answers why it ended, or `None` when the application is gone. A
/// command it could not send is left in `unsent`, and sent first on the next connection.
async fn serve(
    mut socket: Socket,
    events: &mpsc::Sender<NotificationEvent>,
    unread: &watch::Sender<u64>,
    commands: &mut mpsc::Receiver<ClientMessage>,
    unsent: &mut Option<ClientMessage>,
) -> Option<String> {
    loop {
        if let Some(command) = unsent.take() {
            let text = serde_json::to_string(&command).expect("plain JSON");
            if let Err(e) = socket.send(WsMessage::Text(text.into())).await {
                *unsent = Some(command);
                return Some(format!("connection lost: {e}"));
            }
        }
        tokio::select! {
            command = commands.recv() => {
                *unsent = Some(command?);
            }
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Close(frame))) => {
                        return Some(frame.map_or("the server closed the connection".into(), |f| {
                            format!("the server closed the connection: {}", f.reason)
                        }));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Some(format!("connection lost: {e}")),
                    None => return Some("the server closed the connection".into()),
                };
                let event = match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(ServerMessage::UnreadSync { unread_count, items }) => {
                        unread.send_replace(unread_count);
                        NotificationEvent::Synced { unread_count, items }
                    }
                    Ok(ServerMessage::NotificationReceived { notification, unread_count }) => {
                        unread.send_replace(unread_count);
                        NotificationEvent::Received(notification)
                    }
                    Ok(ServerMessage::Read { ids, all, unread_count }) => {
                        unread.send_replace(unread_count);
                        NotificationEvent::Read { ids, all }
                    }
                    Ok(ServerMessage::Error { message }) => {
                        tracing::warn!(%message, "the server refused a notification message");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "an unreadable notification message");
                        continue;
                    }
                };
                events.send(event).await.ok()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_lives_beside_the_sync_endpoint() {
        assert_eq!(
            socket_url("wss://tasks.example/api/v1/sync").unwrap(),
            "wss://tasks.example/api/v1/notifications/ws"
        );
        assert_eq!(
            socket_url("ws://127.0.0.1:8080/api/v1/sync?x=1").unwrap(),
            "ws://127.0.0.1:8080/api/v1/notifications/ws"
        );
        assert!(socket_url("http://tasks.example/api/v1/sync").is_err());
        assert!(socket_url("ws:///api/v1/sync").is_err());
    }
}
