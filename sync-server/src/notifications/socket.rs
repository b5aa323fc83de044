//! The notification WebSocket, `GET /api/v1/notifications/ws?token=<access token>`: JSON text
//! frames in the shapes of `taskflow_proto::notifications`.
//!
//! On connect the socket joins the hub (so nothing created meanwhile is missed) and then sends
//! `unread_sync`; after that, whatever the hub routes to it. Clients may mark notifications
//! read on it; every socket of the user is told (`read`), the one that asked included, so each
//! learns the new unread count. Like the sync socket it closes with 4001 when
//! the token expires, 4002 when its session ends, and 1001 on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{
    CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade,
    rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::response::Response;
use taskflow_proto::notifications::{ClientMessage, ServerMessage};

use crate::access::AccessChange;
use crate::auth::AuthUser;
use crate::link::close_code;
use crate::now_ms;
use crate::server::{Shared, SocketQuery, socket_user};

/// Largest client message: they are tiny.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<SocketQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let path = "/api/v1/notifications/ws";
    let speaks = "JSON notification messages";
    let (upgrade, user) = match socket_user(&shared, path, speaks, query, upgrade).await {
        Ok(found) => found,
        Err(problem) => return problem,
    };
    let tracker = shared.connections.clone();
    // Messages are small; the default 128 KiB buffers would cost more than the rest of a
    // socket (thousands of them stay open).
    upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| tracker.track_future(serve(socket, shared, user)))
}

/// Why a socket is closed by the server.
struct Close(u16, &'static str);

async fn serve(mut socket: WebSocket, shared: Arc<Shared>, user: AuthUser) {
    let close = talk(&mut socket, &shared, &user).await;
    if let Some(Close(code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = socket.send(WsMessage::Close(Some(frame))).await;
    }
}

/// Serves the socket until one side ends it; answers the close the server gives, if any.
async fn talk(socket: &mut WebSocket, shared: &Shared, user: &AuthUser) -> Option<Close> {
    let notifier = &shared.notifier;
    let mut listener = notifier.hub.join(&user.user_id).await;
    let mut access = shared.access.subscribe();
    match notifier.unread_sync(&user.user_id).await {
        Ok(sync) => {
            if send(socket, &sync).await.is_err() {
                return None;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading unread notifications failed");
            return Some(Close(
                close_code::SERVER_ERROR,
                "the server could not read your notifications",
            ));
        }
    }
    let token_left = Duration::from_millis((user.expires_at * 1000 - now_ms()).max(0) as u64);
    let token_expiry = tokio::time::sleep(token_left);
    tokio::pin!(token_expiry);
    let keepalive = shared.limits.keepalive;
    let mut heard_from = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(keepalive);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => {
                return Some(Close(close_code::GOING_AWAY, "the server is shutting down"));
            }
            () = &mut token_expiry => {
                return Some(Close(
                    close_code::TOKEN_EXPIRED,
                    "the access token expired: refresh it and reconnect",
                ));
            }
            change = access.recv() => {
                if let Ok(AccessChange::SessionEnded { session }) = change
                    && session == user.session_id
                {
                    return Some(Close(close_code::SESSION_ENDED, "the session ended: sign in again"));
                }
            }
            push = listener.pushes.recv() => match push {
                Some(push) => {
                    let message = match notifier.message(&user.user_id, &push).await {
                        Ok(message) => message,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the unread count failed");
                            return Some(Close(close_code::SERVER_ERROR, "the server could not read your notifications"));
                        }
                    };
                    if send(socket, &message).await.is_err() {
                        return None;
                    }
                }
                // The hub let go of a socket that fell behind.
                None => {
                    return Some(Close(
                        close_code::TRY_AGAIN_LATER,
                        "too many notifications waiting: reconnect",
                    ));
                }
            },
            _ = tick.tick() => {
                if heard_from.elapsed() > keepalive * 2 {
                    return Some(Close(close_code::GOING_AWAY, "no answer to keepalive pings"));
                }
                if socket.send(WsMessage::Ping(Vec::new().into())).await.is_err() {
                    return None;
                }
            }
            frame = socket.recv() => {
                heard_from = tokio::time::Instant::now();
                match frame {
                    None | Some(Ok(WsMessage::Close(_))) => return None,
                    Some(Ok(WsMessage::Text(text))) => {
                        let answer = on_message(shared, user, text.as_str()).await;
                        if let Some(answer) = answer
                            && send(socket, &answer).await.is_err()
                        {
                            return None;
                        }
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        let refusal = error("send JSON text frames, not binary ones");
                        if send(socket, &refusal).await.is_err() {
                            return None;
                        }
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                    Some(Err(e)) => {
                        if e.to_string().contains("too long") || e.to_string().contains("Space limit") {
                            return Some(Close(close_code::TOO_BIG, "a client message is at most 16 KiB"));
                        }
                        return None;
                    }
                }
            }
        }
    }
}

/// Acts on one client message; answers only a refusal.
async fn on_message(shared: &Shared, user: &AuthUser, text: &str) -> Option<ServerMessage> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(message) => message,
        Err(e) => {
            return Some(error(&format!(
                "not a notification message ({e}); send {{\"type\":\"mark_read\",\"id\":…}} or {{\"type\":\"mark_all_read\"}}"
            )));
        }
    };
    let notifier = &shared.notifier;
    let done = match message {
        ClientMessage::MarkRead { id } => match notifier.mark_read(&user.user_id, &id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => return Some(error("you have no notification with that id")),
            Err(e) => Err(e),
        },
        ClientMessage::MarkAllRead => notifier.mark_all_read(&user.user_id).await.map(|_| ()),
    };
    match done {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(error = %e, "marking notifications read failed");
            Some(error("the server could not mark that read; try again"))
        }
    }
}

fn error(message: &str) -> ServerMessage {
    ServerMessage::Error {
        message: message.to_owned(),
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).expect("plain JSON");
    socket.send(WsMessage::Text(text.into())).await
}
