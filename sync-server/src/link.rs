//! The way back to a connected peer: a bounded queue of outgoing frames plus a kill switch.
//!
//! Document actors hold a [`PeerLink`] per attached peer and never block on it: when a peer's
//! queue is full (it reads slower than we write) the link closes the connection instead of
//! buffering without bound.

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
    tx: mpsc::Sender<Vec<u8>>,
    kill: CancellationToken,
    reason: Arc<Mutex<Option<CloseReason>>>,
}

impl PeerLink {
    pub fn new(
        conn: ConnId,
        peer_id: PeerId,
        tx: mpsc::Sender<Vec<u8>>,
        kill: CancellationToken,
    ) -> Self {
        Self {
            conn,
            peer_id,
            tx,
            kill,
            reason: Arc::new(Mutex::new(None)),
        }
    }

    /// The same connection, known by the id the peer gave in its `join`.
    pub fn with_peer(&self, peer_id: PeerId) -> Self {
        Self {
            peer_id,
            ..self.clone()
        }
    }

    /// Queues a frame, waiting while the queue is full (for the connection's own replies).
    pub async fn send_wait(&self, frame: Vec<u8>) -> bool {
        self.tx.send(frame).await.is_ok()
    }

    /// Queues a frame without waiting. A full queue closes the connection; returns whether the
    /// frame was queued.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer = %self.peer_id, conn = self.conn, "send queue full; closing the slow peer");
                self.close(
                    close_code::TRY_AGAIN_LATER,
                    Some("send queue full: the peer reads too slowly".into()),
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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

    pub fn is_closed(&self) -> bool {
        self.kill.is_cancelled()
    }

    pub fn killed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kill.cancelled()
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.reason.lock().expect("close reason lock").clone()
    }
}
