//! One WebSocket peer: the handshake, decoding, routing to document actors, and limits.
//!
//! Each connection is one task owning its socket: it decodes incoming frames and hands document
//! messages to the [`Registry`], and drains the connection's bounded send queue into the
//! socket. (Not split into reader and writer tasks: tungstenite's reads also write, and the two
//! halves polled from two tasks lose each other's wake-ups, stalling a connection until some
//! other event.) Anything wrong with what a peer sends closes that peer's connection with an `error`
//! message saying what; other peers never notice.

use std::collections::HashSet;
use std::sync::Arc;

use automerge::sync;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use taskflow_proto::wire::{Message, PROTOCOL_V1, PeerMetadata};
use taskflow_proto::{DocumentId, PeerId};

use crate::doc::{DocCommand, Open};
use crate::link::{PeerLink, close_code};
use crate::server::Shared;

pub async fn serve(mut socket: WebSocket, shared: Arc<Shared>) {
    let conn = shared.next_conn_id();
    let (link, mut outbox) = PeerLink::new(conn, shared.limits.send_queue_bytes);
    let keepalive = shared.limits.keepalive;
    // A peer that answers nothing (not even our pings) for two intervals is gone: its TCP
    // connection may never report it, and its documents would otherwise stay open for ever.
    let mut heard_from = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(keepalive);
    tick.tick().await;

    let mut session = Session {
        link,
        joined: None,
        docs: HashSet::new(),
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
            _ = tick.tick() => {
                if heard_from.elapsed() > keepalive * 2 {
                    session.reject(close_code::GOING_AWAY, "no answer to keepalive pings".into());
                } else if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    break false;
                }
            }
            frame = outbox.recv() => match frame {
                Some(frame) => {
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
                    session.on_frame(&bytes).await;
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
    joined: Option<PeerId>,
    docs: HashSet<DocumentId>,
    shared: Arc<Shared>,
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
            message,
        };
        self.shared
            .registry
            .send(document_id, command, Open::Start)
            .await;
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
