//! The way back to a connected peer: a queue of outgoing frames bounded in bytes, plus a kill
//! switch.
//!
//! Document actors hold a [`PeerLink`] per attached peer and never block on it: when a peer's
//! queued bytes pass the limit (it reads slower than we write) the link closes the connection
//! instead of buffering without bound. Bytes, not messages, are counted so that a peer fetching
//! thousands of small documents at once is served, while one that stops reading is not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use taskflow_proto::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A connection's id, unique within this process.
pub type ConnId = u64;

/// WebSocket close codes used by the server.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const SERVER_ERROR: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The access token expired: refresh it and reconnect.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// The session ended (signed out, or its refresh token was reused): sign in again.
    pub const SESSION_ENDED: u16 = 4002;
}

/// Why a connection is being closed: sent to the peer as an `error` message (when `message`
/// is set) followed by a close frame with `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub message: Option<String>,
    /// The peer as known when the reason was given (for the `error` message's `targetId`).
    pub peer_id: PeerId,
}

#[derive(Debug, Clone)]
pub struct PeerLink {
    pub conn: ConnId,
    pub peer_id: PeerId,
    /// The authenticated user the connection acts for.
    pub user: Arc<str>,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
    kill: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

/// The connection task's end of its queue: frames plus the byte count to give back.
#[derive(Debug)]
pub struct Outbox {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Outbox {
    /// The next frame to write; its bytes leave the queue's budget.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }
}

impl PeerLink {
    /// A link for connection `conn` of `user` and the outbox its connection task drains.
    pub fn new(conn: ConnId, user: &str, max_queued_bytes: usize) -> (Self, Outbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let link = Self {
            conn,
            peer_id: PeerId::new(""),
            user: Arc::from(user),
            tx,
            queued_bytes: queued_bytes.clone(),
            max_queued_bytes,
            kill: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
        };
        (link, Outbox { rx, queued_bytes })
    }

    /// The same connection, known by the id the peer gave in its `join`.
    pub fn with_peer(&self, peer_id: PeerId) -> Self {
        Self {
            peer_id,
            ..self.clone()
        }
    }

    /// Queues a frame. When the queued bytes would pass the limit the connection is closed
    /// instead; returns whether the frame was queued.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        let len = frame.len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        if queued > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            tracing::warn!(peer = %self.peer_id, conn = self.conn, queued, "send queue full; closing the slow peer");
            self.close(
                close_code::TRY_AGAIN_LATER,
                Some("send queue full: the peer reads too slowly".into()),
            );
            return false;
        }
        if self.tx.send(frame).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn close(&self, code: u16, message: Option<String>) {
        {
            let mut reason = self.reason.lock().expect("close reason lock");
            if reason.is_none() {
                *reason = Some(CloseReason {
                    code,
                    message,
                    peer_id: self.peer_id.clone(),
                });
            }
        }
        self.kill.cancel();
    }

    pub fn killed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kill.cancelled()
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason.lock().expect("close reason lock").clone()
    }
}
