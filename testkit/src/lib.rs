//! Test support: a raw automerge-repo protocol peer over WebSocket ([`Peer`], for tests and
//! benchmarks), our server in-process with a crash switch ([`server`]), and the real JS peers
//! ([`js`]).
//!
//! [`Peer`] speaks the wire protocol directly (join, sync, request, ephemeral) and keeps one
//! Automerge replica plus sync state per document, so a test can drive exactly the frames it
//! wants and observe exactly what the server answers. It also records the heads the server
//! advertised for each document: what the server has told this peer it holds.

pub mod account;
pub mod js;
pub mod server;

pub use account::Account;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transaction;
use automerge::{AutoCommit, Automerge, ChangeHash};
use futures_util::{SinkExt, StreamExt};
use taskflow_proto::wire::{Message, PeerMetadata, SyncPayload};
use taskflow_proto::{DocumentId, PeerId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Default bound on every wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One document as this peer sees it.
#[derive(Debug)]
pub struct Replica {
    pub doc: Automerge,
    pub state: sync::State,
    /// The heads the server last said it has.
    pub server_heads: Vec<ChangeHash>,
    pub unavailable: bool,
}

/// What the server sent that was not a sync message.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Ephemeral {
        sender: PeerId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
    Error(String),
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

#[derive(Debug)]
pub struct Peer {
    socket: Socket,
    pub peer_id: PeerId,
    pub server_peer: PeerId,
    pub server_storage_id: Option<String>,
    pub replicas: HashMap<DocumentId, Replica>,
    pub events: Vec<Event>,
    /// Bytes of every sync payload received, in order, per document.
    pub received_sizes: HashMap<DocumentId, Vec<usize>>,
    /// Who this peer signed in as ([`Peer::connect_as`]): documents it creates are registered
    /// as boards of that account's workspace first.
    pub account: Option<Account>,
    closed: bool,
}

impl Peer {
    /// Connects as `account` and completes the handshake.
    pub async fn connect_as(account: &Account, peer_id: &str) -> anyhow::Result<Peer> {
        let mut peer = Self::connect(&account.sync_url(), peer_id).await?;
        peer.account = Some(account.clone());
        Ok(peer)
    }

    /// Connects to `ws://…/api/v1/sync?token=…` and completes the handshake.
    pub async fn connect(url: &str, peer_id: &str) -> anyhow::Result<Peer> {
        let mut peer = Self::connect_raw(url, peer_id).await?;
        let join = Message::Join {
            sender_id: peer.peer_id.clone(),
            metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
            supported_protocol_versions: Some(vec!["1".into()]),
        };
        peer.send(&join).await?;
        match peer.next_message(DEFAULT_TIMEOUT).await? {
            Some(Message::Peer {
                sender_id,
                metadata,
                ..
            }) => {
                peer.server_peer = sender_id;
                peer.server_storage_id = metadata.and_then(|m| m.storage_id).map(|s| s.to_string());
                Ok(peer)
            }
            other => bail!("expected `peer`, got {other:?}"),
        }
    }

    /// Opens the socket without any handshake (for tests that send raw frames).
    pub async fn connect_raw(url: &str, peer_id: &str) -> anyhow::Result<Peer> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Peer {
            socket,
            peer_id: PeerId::new(peer_id),
            server_peer: PeerId::new(""),
            server_storage_id: None,
            replicas: HashMap::new(),
            events: Vec::new(),
            received_sizes: HashMap::new(),
            account: None,
            closed: false,
        })
    }

    pub async fn send(&mut self, message: &Message) -> anyhow::Result<()> {
        self.send_raw(message.encode()).await
    }

    pub async fn send_raw(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        self.socket.send(WsMessage::Binary(frame.into())).await?;
        Ok(())
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.socket.send(WsMessage::Text(text.into())).await?;
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next protocol message, `None` once the socket closed (recorded as an event).
    pub async fn next_message(&mut self, timeout: Duration) -> anyhow::Result<Option<Message>> {
        loop {
            if self.closed {
                return Ok(None);
            }
            let frame = tokio::time::timeout(timeout, self.socket.next())
                .await
                .map_err(|_| anyhow!("no message from the server within {timeout:?}"))?;
            match frame {
                None | Some(Err(_)) => {
                    self.closed = true;
                    self.events.push(Event::Closed {
                        code: None,
                        reason: String::new(),
                    });
                    return Ok(None);
                }
                Some(Ok(WsMessage::Binary(bytes))) => return Ok(Some(Message::decode(&bytes)?)),
                Some(Ok(WsMessage::Close(frame))) => {
                    self.closed = true;
                    let (code, reason) = frame.map_or((None, String::new()), |f: CloseFrame| {
                        (Some(u16::from(f.code)), f.reason.to_string())
                    });
                    self.events.push(Event::Closed { code, reason });
                    return Ok(None);
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads messages until the socket closes; returns the `error` text and close code seen.
    pub async fn expect_error_and_close(&mut self) -> anyhow::Result<(String, Option<u16>)> {
        let mut error = None;
        while let Some(message) = self.next_message(DEFAULT_TIMEOUT).await? {
            self.absorb(message).await?;
            if let Some(Event::Error(text)) = self.events.last() {
                error = Some(text.clone());
            }
        }
        let code = match self.events.last() {
            Some(Event::Closed { code, .. }) => *code,
            _ => None,
        };
        Ok((
            error.ok_or_else(|| anyhow!("closed without an error message"))?,
            code,
        ))
    }

    /// Adds a document this peer created locally and announces it to the server (registering
    /// it as a board first when the peer is signed in).
    pub async fn create(&mut self, mut doc: AutoCommit) -> anyhow::Result<DocumentId> {
        let id = DocumentId::random();
        if let Some(account) = &self.account {
            account.register_document(id, "board").await?;
        }
        self.replicas
            .insert(id, Replica::new(doc.document().clone()));
        self.push(id, false).await?;
        Ok(id)
    }

    /// Starts fetching a document this peer does not have.
    pub async fn request(&mut self, id: DocumentId) -> anyhow::Result<()> {
        self.replicas.insert(id, Replica::new(Automerge::new()));
        self.push(id, true).await
    }

    /// Edits a replica and offers the change to the server.
    pub async fn edit(
        &mut self,
        id: DocumentId,
        edit: impl FnOnce(&mut Transaction<'_>),
    ) -> anyhow::Result<()> {
        let replica = self
            .replicas
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no replica of {id}"))?;
        let mut tx = replica.doc.transaction();
        edit(&mut tx);
        tx.commit();
        self.push(id, false).await
    }

    /// Sends this document's next sync message, if the sync protocol has one.
    pub async fn push(&mut self, id: DocumentId, request: bool) -> anyhow::Result<()> {
        let replica = self
            .replicas
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no replica of {id}"))?;
        let Some(message) = replica.doc.generate_sync_message(&mut replica.state) else {
            return Ok(());
        };
        let payload = SyncPayload {
            sender_id: self.peer_id.clone(),
            target_id: self.server_peer.clone(),
            document_id: id,
            data: message.encode(),
        };
        let frame = if request {
            Message::Request(payload)
        } else {
            Message::Sync(payload)
        };
        // A reply to a server that is gone is not an error of the test: the close is recorded.
        if self.send(&frame).await.is_err() {
            self.closed = true;
        }
        Ok(())
    }

    /// Handles one message from the server: applies sync messages and answers them.
    pub async fn absorb(&mut self, message: Message) -> anyhow::Result<()> {
        match message {
            Message::Sync(p) => {
                let replica = self
                    .replicas
                    .entry(p.document_id)
                    .or_insert_with(|| Replica::new(Automerge::new()));
                self.received_sizes
                    .entry(p.document_id)
                    .or_default()
                    .push(p.data.len());
                let message = sync::Message::decode(&p.data)?;
                replica.server_heads = message.heads.clone();
                replica
                    .doc
                    .receive_sync_message(&mut replica.state, message)?;
                self.push(p.document_id, false).await?;
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(r) = self.replicas.get_mut(&document_id) {
                    r.unavailable = true;
                }
            }
            Message::Ephemeral {
                sender_id,
                session_id,
                count,
                data,
                ..
            } => self.events.push(Event::Ephemeral {
                sender: sender_id,
                session_id,
                count,
                data,
            }),
            Message::Error { message, .. } => self.events.push(Event::Error(message)),
            _ => {}
        }
        Ok(())
    }

    /// Processes server messages until `done` holds for this peer, or fails after `timeout`.
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Peer) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("condition not reached within {timeout:?}");
            }
            match self.next_message(left).await? {
                Some(message) => self.absorb(message).await?,
                None => bail!("the server closed the connection: {:?}", self.events.last()),
            }
        }
        Ok(())
    }

    /// Processes messages until the server says it has every change of this replica.
    pub async fn until_server_has(&mut self, id: DocumentId) -> anyhow::Result<()> {
        self.run_until(DEFAULT_TIMEOUT, |p| {
            p.replicas.get(&id).is_some_and(|r| {
                let mut ours = r.doc.get_heads();
                ours.sort();
                !ours.is_empty() && r.server_heads == ours
            })
        })
        .await
    }

    /// Processes messages until the server has every change of each of `ids` (checking only the
    /// document each message is about, so it scales to thousands of documents).
    pub async fn until_server_has_all(
        &mut self,
        ids: &[DocumentId],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut pending: std::collections::HashSet<DocumentId> = ids.iter().copied().collect();
        let in_sync = |r: &Replica| {
            let mut ours = r.doc.get_heads();
            ours.sort();
            !ours.is_empty() && r.server_heads == ours
        };
        pending.retain(|id| !self.replicas.get(id).is_some_and(in_sync));
        let deadline = tokio::time::Instant::now() + timeout;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("{} documents not in sync within {timeout:?}", pending.len());
            }
            let Some(message) = self.next_message(left).await? else {
                bail!("the server closed the connection");
            };
            let about = match &message {
                Message::Sync(p) => Some(p.document_id),
                _ => None,
            };
            self.absorb(message).await?;
            if let Some(id) = about
                && self.replicas.get(&id).is_some_and(in_sync)
            {
                pending.remove(&id);
            }
        }
        Ok(())
    }

    /// Processes messages until `id`'s replica satisfies `done`.
    pub async fn until_doc(
        &mut self,
        id: DocumentId,
        mut done: impl FnMut(&Automerge) -> bool,
    ) -> anyhow::Result<()> {
        self.run_until(DEFAULT_TIMEOUT, |p| {
            p.replicas.get(&id).is_some_and(|r| done(&r.doc))
        })
        .await
    }

    /// Processes whatever arrives until nothing has for `quiet`, or the socket closes.
    pub async fn drain(&mut self, quiet: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
        loop {
            if tokio::time::Instant::now() > deadline {
                bail!("the server never went quiet for {quiet:?} within {DEFAULT_TIMEOUT:?}");
            }
            match tokio::time::timeout(quiet, self.next_message(DEFAULT_TIMEOUT)).await {
                Err(_) | Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(message))) => self.absorb(message).await?,
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    pub fn doc(&self, id: DocumentId) -> &Automerge {
        &self.replicas[&id].doc
    }

    pub async fn close(mut self) -> anyhow::Result<()> {
        if !self.closed {
            self.socket
                .close(Some(CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                }))
                .await?;
        }
        Ok(())
    }
}

impl Replica {
    fn new(doc: Automerge) -> Self {
        Self {
            doc,
            state: sync::State::new(),
            server_heads: Vec::new(),
            unavailable: false,
        }
    }
}
