//! One WebSocket peer: the handshake, decoding, routing to document actors, and limits.
//!
//! Each connection is one task owning its socket: it decodes incoming frames and hands document
//! messages to the [`Registry`], and drains the connection's bounded send queue into the
//! socket. (Not split into reader and writer tasks: tungstenite's reads also write, and the two
//! halves polled from two tasks lose each other's wake-ups, stalling a connection until some
//! other event.) Anything wrong with what a peer sends closes that peer's connection with an `error`
//! message saying what; other peers never notice.
//!
//! A connection acts for the user whose access token opened it. Each document it touches is
//! checked against that user's membership of the document's workspace (cached per connection,
//! and re-checked the moment a membership change for the user is announced on the
//! [`AccessFeed`](crate::access::AccessFeed)). A document the user may not see is answered
//! `doc-unavailable`, exactly as a document that does not exist. The connection ends with code
//! 4001 when the token expires and 4002 when its session ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use automerge::sync;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use taskflow_proto::wire::{Message, PROTOCOL_V1, PeerMetadata};
use taskflow_proto::{DocumentId, PeerId};

use tokio::sync::broadcast::error::RecvError;
use tracing::Instrument;

use crate::access::{AccessChange, Role};
use crate::auth::AuthUser;
use crate::doc::{DocCommand, Open};
use crate::link::{ConnId, PeerLink, close_code};
use crate::now_ms;
use crate::server::Shared;

pub async fn serve(socket: WebSocket, shared: Arc<Shared>, user: AuthUser) {
    let conn = shared.next_conn_id();
    let span = tracing::info_span!("sync_connection", conn, user = %user.user_id);
    connection(socket, shared, user, conn)
        .instrument(span)
        .await
}

async fn connection(mut socket: WebSocket, shared: Arc<Shared>, user: AuthUser, conn: ConnId) {
    tracing::debug!("sync connection opened");
    let (link, mut outbox) = PeerLink::new(conn, &user.user_id, shared.limits.send_queue_bytes);
    let mut access = shared.access.subscribe();
    let token_left = Duration::from_millis((user.expires_at * 1000 - now_ms()).max(0) as u64);
    let token_expiry = tokio::time::sleep(token_left);
    tokio::pin!(token_expiry);
    let keepalive = shared.limits.keepalive;
    // A peer that answers nothing (not even our pings) for two intervals is gone: its TCP
    // connection may never report it, and its documents would otherwise stay open for ever.
    let mut heard_from = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(keepalive);
    tick.tick().await;

    let mut session = Session {
        link,
        user,
        joined: None,
        docs: HashSet::new(),
        grants: HashMap::new(),
        shared: shared.clone(),
    };
    // Whether the socket can still be read after the loop: we are closing, not the peer.
    let readable = loop {
        tokio::select! {
            biased;
            _ = session.link.killed() => break true,
            _ = shared.shutdown.cancelled() => {
                // Give the reason before `end` gives its own (the first reason wins).
                session.link.close(close_code::GOING_AWAY, None);
                break true;
            }
            _ = &mut token_expiry => {
                session.link.close(
                    close_code::TOKEN_EXPIRED,
                    Some("the access token expired: refresh it and reconnect".into()),
                );
            }
            // Before the socket's frames: a frame sent after a role change is judged by it.
            change = access.recv() => session.on_access_change(change).await,
            _ = tick.tick() => {
                if heard_from.elapsed() > keepalive * 2 {
                    session.reject(close_code::GOING_AWAY, "no answer to keepalive pings".into());
                } else if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break false;
                }
            }
            frame = outbox.recv() => match frame {
                Some(frame) => {
                    count_frame("out", frame.len());
                    if socket.send(WsMessage::Binary(frame.into())).await.is_err() {
                        break false;
                    }
                }
                None => break true,
            },
            frame = socket.recv() => match frame {
                None | Some(Ok(WsMessage::Close(_))) => break false,
                Some(Ok(WsMessage::Binary(bytes))) => {
                    heard_from = tokio::time::Instant::now();
                    count_frame("in", bytes.len());
                    let span = tracing::info_span!("sync_message", bytes = bytes.len());
                    session.on_frame(&bytes).instrument(span).await;
                }
                Some(Ok(WsMessage::Text(_))) => session.reject(
                    close_code::UNSUPPORTED_DATA,
                    "text frames are not part of the protocol: send CBOR in binary frames".into(),
                ),
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => heard_from = tokio::time::Instant::now(),
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("too long") || text.contains("Space limit") {
                        session.reject(
                            close_code::TOO_BIG,
                            format!("message exceeds the {} byte limit", shared.limits.max_frame_bytes),
                        );
                    }
                    break false;
                }
            },
        }
    };
    let link = session.link.clone();
    tracing::debug!(readable, "sync connection closing");
    session.end().await;
    send_close(&mut socket, &link, shared.registry.server_peer()).await;
    if readable {
        // Finish the closing handshake: read until the peer answers our close frame. Closing
        // the socket with its frames unread would make TCP reset the connection, and a reset
        // throws away our `error` and close frames before the peer reads them.
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
            while let Some(Ok(frame)) = socket.recv().await {
                if matches!(frame, WsMessage::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Counts one protocol message (one binary frame) and its bytes.
fn count_frame(direction: &'static str, bytes: usize) {
    metrics::counter!(crate::telemetry::SYNC_MESSAGES, "direction" => direction).increment(1);
    metrics::counter!(crate::telemetry::SYNC_BYTES, "direction" => direction)
        .increment(bytes as u64);
}

/// How long a closing connection waits for the peer's close frame.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the `error` message (when the close has a reason to give) and the close frame. Either
/// may fail when the peer is already gone; there is nobody left to tell.
async fn send_close(socket: &mut WebSocket, link: &PeerLink, server_peer: &PeerId) {
    let reason = link.close_reason();
    let (code, text) = match &reason {
        Some(r) => (r.code, r.message.clone()),
        None => (close_code::NORMAL, None),
    };
    if let (Some(text), Some(r)) = (&text, &reason) {
        let error = Message::Error {
            sender_id: server_peer.clone(),
            target_id: (!r.peer_id.as_str().is_empty()).then(|| r.peer_id.clone()),
            message: text.clone(),
        };
        let _ = socket.send(WsMessage::Binary(error.encode().into())).await;
    }
    // Close reasons are limited to 123 bytes by the WebSocket protocol.
    let short: String = text.unwrap_or_default().chars().take(100).collect();
    let frame = CloseFrame {
        code,
        reason: short.into(),
    };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
}

struct Session {
    /// Carries the joined peer id once the handshake is done.
    link: PeerLink,
    user: AuthUser,
    joined: Option<PeerId>,
    /// Documents this connection is attached to.
    docs: HashSet<DocumentId>,
    /// What the user may do with each document it has touched (see [`Grant`]).
    grants: HashMap<DocumentId, Grant>,
    shared: Arc<Shared>,
}

/// A document's workspace and the user's role there, as last checked.
#[derive(Debug, Clone)]
struct Grant {
    workspace: String,
    role: Role,
}

impl Session {
    fn reject(&self, code: u16, message: String) {
        tracing::warn!(conn = self.link.conn, peer = %self.link.peer_id, %message, "closing peer");
        self.link.close(code, Some(message));
    }

    async fn on_frame(&mut self, bytes: &[u8]) {
        let message = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                return self.reject(
                    close_code::PROTOCOL_ERROR,
                    format!("undecodable message: {e}"),
                );
            }
        };
        let Some(peer) = self.joined.clone() else {
            return self.on_first_message(message);
        };
        match message {
            Message::Join { .. } => {
                self.reject(close_code::PROTOCOL_ERROR, "already joined".into())
            }
            Message::Request(p) | Message::Sync(p) if p.sender_id != peer => self.reject(
                close_code::PROTOCOL_ERROR,
                format!("senderId `{}` is not the joined peer `{peer}`", p.sender_id),
            ),
            Message::Request(p) => self.on_sync(p.document_id, true, &p.data).await,
            Message::Sync(p) => self.on_sync(p.document_id, false, &p.data).await,
            Message::Ephemeral {
                sender_id,
                document_id,
                session_id,
                count,
                data,
                ..
            } => {
                // JS clients hand every relayed ephemeral message back to the server under its
                // original sender; only the peer's own messages are relayed.
                if sender_id != peer {
                    return;
                }
                // Presence is reading, which every member may do; others are not told a thing.
                match self.grant(document_id).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(()) => return,
                }
                let command = DocCommand::Ephemeral {
                    from: self.link.clone(),
                    sender_id,
                    session_id,
                    count,
                    data,
                };
                self.shared
                    .registry
                    .send(document_id, command, Open::IfRunning)
                    .await;
            }
            Message::Leave { .. } => self.link.close(close_code::NORMAL, None),
            // Remote-heads gossip is not enabled on this server; peers only send it when it is.
            Message::RemoteSubscriptionChange { .. } | Message::RemoteHeadsChanged { .. } => {}
            // A peer that lacks a document we asked about, or says hello again: nothing to do.
            Message::DocUnavailable { .. } | Message::Peer { .. } => {}
            Message::Error { message, .. } => {
                tracing::info!(conn = self.link.conn, peer = %peer, %message, "peer reported an error");
            }
        }
    }

    fn on_first_message(&mut self, message: Message) {
        let Message::Join {
            sender_id,
            supported_protocol_versions,
            ..
        } = message
        else {
            return self.reject(
                close_code::PROTOCOL_ERROR,
                format!("expected `join` first, got `{}`", message.type_name()),
            );
        };
        self.link = self.link.with_peer(sender_id.clone());
        let supported =
            supported_protocol_versions.is_none_or(|v| v.iter().any(|v| v == PROTOCOL_V1));
        if !supported {
            return self.reject(
                close_code::PROTOCOL_ERROR,
                "unsupported protocol version".into(),
            );
        }
        self.shared.register_peer(&self.link);
        self.joined = Some(sender_id.clone());
        let reply = Message::Peer {
            sender_id: self.shared.registry.server_peer().clone(),
            target_id: sender_id,
            metadata: Some(PeerMetadata {
                storage_id: Some(self.shared.storage_id.clone()),
                is_ephemeral: false,
            }),
            selected_protocol_version: PROTOCOL_V1.to_owned(),
        };
        self.link.send(reply.encode());
    }

    async fn on_sync(&mut self, document_id: DocumentId, request: bool, data: &[u8]) {
        let message = match sync::Message::decode(data) {
            Ok(m) => m,
            Err(e) => {
                return self.reject(
                    close_code::PROTOCOL_ERROR,
                    format!("invalid automerge sync message for document {document_id}: {e}"),
                );
            }
        };
        let grant = match self.grant(document_id).await {
            Ok(Some(grant)) => grant,
            Ok(None) => return self.unavailable(document_id),
            Err(()) => return,
        };
        if !self.docs.contains(&document_id) {
            let limit = self.shared.limits.max_docs_per_connection;
            if self.docs.len() >= limit {
                return self.reject(
                    close_code::POLICY,
                    format!("too many open documents on one connection (limit {limit})"),
                );
            }
            self.docs.insert(document_id);
        }
        let command = DocCommand::Sync {
            link: self.link.clone(),
            request,
            may_write: grant.role.can_edit_boards(),
            message,
        };
        self.shared
            .registry
            .send(document_id, command, Open::Start)
            .await;
    }

    /// What the user may do with `document_id`; `None` when they may not see it (or it is no
    /// board at all). `Err` when the check itself failed (the connection is closing).
    async fn grant(&mut self, document_id: DocumentId) -> Result<Option<Grant>, ()> {
        if let Some(grant) = self.grants.get(&document_id) {
            return Ok(Some(grant.clone()));
        }
        let access = self
            .shared
            .identity
            .store()
            .document_access(&document_id.to_string(), &self.user.user_id)
            .await;
        match access {
            Ok(Some(access)) => Ok(access.role.map(|role| {
                let grant = Grant {
                    workspace: access.workspace_id,
                    role,
                };
                self.grants.insert(document_id, grant.clone());
                grant
            })),
            // Not cached: the document may become a board, or the user a member, later.
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(conn = self.link.conn, document = %document_id, error = %e, "checking document access failed");
                self.link.close(
                    close_code::SERVER_ERROR,
                    Some("checking access failed; try again".into()),
                );
                Err(())
            }
        }
    }

    fn unavailable(&self, document_id: DocumentId) {
        let Some(peer) = &self.joined else { return };
        let message = Message::DocUnavailable {
            sender_id: self.shared.registry.server_peer().clone(),
            target_id: peer.clone(),
            document_id,
        };
        self.link.send(message.encode());
    }

    /// Applies a membership or session change announced elsewhere on this node.
    async fn on_access_change(&mut self, change: Result<AccessChange, RecvError>) {
        let stale: Vec<DocumentId> = match change {
            Ok(AccessChange::SessionEnded { session }) => {
                if session == self.user.session_id {
                    self.link.close(
                        close_code::SESSION_ENDED,
                        Some("the session ended: sign in again".into()),
                    );
                }
                return;
            }
            Ok(AccessChange::Membership { workspace, user }) => {
                if user != self.user.user_id {
                    return;
                }
                self.grants
                    .iter()
                    .filter(|(_, g)| g.workspace == workspace)
                    .map(|(id, _)| *id)
                    .collect()
            }
            // Missed some changes: check everything again, the session included.
            Ok(AccessChange::Everything) | Err(RecvError::Lagged(_)) => {
                match self
                    .shared
                    .identity
                    .store()
                    .session_active(&self.user.session_id, now_ms())
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        return self.link.close(
                            close_code::SESSION_ENDED,
                            Some("the session ended: sign in again".into()),
                        );
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "re-checking a session failed");
                        return self.link.close(close_code::SERVER_ERROR, None);
                    }
                }
                self.grants.keys().copied().collect()
            }
            Err(RecvError::Closed) => return,
        };
        for document_id in stale {
            self.grants.remove(&document_id);
            if let Ok(None) = self.grant(document_id).await
                && self.docs.remove(&document_id)
            {
                // No longer theirs: stop sending them its changes, and say so.
                let detach = DocCommand::Detach {
                    conn: self.link.conn,
                };
                self.shared
                    .registry
                    .send(document_id, detach, Open::IfRunning)
                    .await;
                self.unavailable(document_id);
            }
        }
    }

    async fn end(self) {
        for document_id in &self.docs {
            let command = DocCommand::Detach {
                conn: self.link.conn,
            };
            self.shared
                .registry
                .send(*document_id, command, Open::IfRunning)
                .await;
        }
        self.shared.unregister_peer(&self.link);
        // Tells the connection task to close; a reason given earlier (an error) wins.
        self.link.close(close_code::NORMAL, None);
    }
}
