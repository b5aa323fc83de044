//! The engine: one task that owns the local store, every open replica and the server link.
//!
//! Everything happens in one place, in order, so two rules are easy to keep:
//! a local edit is committed to the store before any sync message can carry it, and a change
//! received from the server is committed (with the sync state that says the server has it)
//! before this client answers. Connecting runs in its own task so the engine keeps serving edits
//! while a server is slow to answer; once connected, the engine reads and writes the socket
//! itself (one owner, no split halves).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use automerge::sync;
use futures_util::{SinkExt, StreamExt};
use taskflow_proto::board::ops;
use taskflow_proto::board::{Board, CommentId, Task, TaskId};
use taskflow_proto::presence::Presence;
use taskflow_proto::wire::{Message, PeerMetadata, SyncPayload};
use taskflow_proto::{DocumentId, PeerId, StorageId};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::backoff;
use crate::changes::{BoardChange, Origin};
use crate::client::{
    BoardSummary, ClientConfig, ClientError, ClientEvent, ConnectionState, Edit, Edited,
    ServerConfig, SyncStatus,
};
use crate::presence::{PRESENCE_HEARTBEAT, PresenceTable, Viewer};
use crate::replica::Replica;
use crate::store::{ReplicaStore, SyncRecord};

/// How long the server may take to answer `join` with `peer`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Boards can be large; a whole-document sync message of a 10,000-task board is about 1 MB.
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// The close code the server ends a connection with when its access token expires.
const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// The store remembers the storage id of the server it last synced with under this key.
const META_SERVER_STORAGE: &str = "server_storage_id";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) enum Command {
    CreateBoard {
        id: DocumentId,
        name: String,
        reply: oneshot::Sender<Result<DocumentId, ClientError>>,
    },
    Fetch {
        id: DocumentId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    ReadTask {
        id: DocumentId,
        task: TaskId,
        reply: oneshot::Sender<Result<Option<Task>, ClientError>>,
    },
    Forget {
        id: DocumentId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Read {
        id: DocumentId,
        reply: oneshot::Sender<Result<Board, ClientError>>,
    },
    Edit {
        id: DocumentId,
        edit: Edit,
        reply: oneshot::Sender<Result<Edited, ClientError>>,
    },
    List {
        reply: oneshot::Sender<Result<Vec<BoardSummary>, ClientError>>,
    },
    Status {
        id: DocumentId,
        reply: oneshot::Sender<Result<SyncStatus, ClientError>>,
    },
    Heads {
        id: DocumentId,
        reply: oneshot::Sender<Result<Vec<automerge::ChangeHash>, ClientError>>,
    },
    Connection {
        reply: oneshot::Sender<ConnectionState>,
    },
    View {
        id: DocumentId,
        task: Option<TaskId>,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    StopViewing {
        id: DocumentId,
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    Viewers {
        id: DocumentId,
        reply: oneshot::Sender<Vec<Viewer>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A connected, handshaken server.
struct Online {
    socket: Socket,
    server_peer: PeerId,
    storage_id: Option<StorageId>,
}

enum Link {
    Disabled,
    Connecting {
        attempt: u32,
        task: JoinHandle<Result<Box<Online>, String>>,
    },
    Online {
        online: Box<Online>,
        /// Reset the backoff only once the server has actually synced something with us, so a
        /// server that accepts and then drops every connection is not hammered.
        attempt: u32,
    },
    Waiting {
        attempt: u32,
        until: tokio::time::Instant,
    },
}

/// What woke the engine.
enum Wake {
    Command(Option<Command>),
    Connected(Result<Box<Online>, String>),
    Frame(Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>),
    Retry,
    Heartbeat,
}

pub(crate) async fn start(
    config: ClientConfig,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<ClientEvent>,
) -> Result<(), ClientError> {
    let store = ReplicaStore::open(&config.data_dir).await?;
    let last_storage = store.meta(META_SERVER_STORAGE).await?.map(StorageId::new);
    let mut engine = Engine {
        peer_id: PeerId::new(format!("taskflow-{:016x}", rand::random::<u64>())),
        session: format!("{:032x}", rand::random::<u128>()),
        ephemeral_count: 0,
        config,
        store,
        docs: HashMap::new(),
        link: Link::Disabled,
        events,
        presence: PresenceTable::default(),
        viewing: BTreeMap::new(),
        last_storage,
        statuses: HashMap::new(),
    };
    if engine.config.server.is_some() {
        engine.connect(0);
    }
    tokio::spawn(engine.run(commands));
    Ok(())
}

struct Engine {
    config: ClientConfig,
    store: ReplicaStore,
    docs: HashMap<DocumentId, Replica>,
    link: Link,
    events: broadcast::Sender<ClientEvent>,
    presence: PresenceTable,
    /// The boards this user views, and the task open on each.
    viewing: BTreeMap<DocumentId, Option<TaskId>>,
    peer_id: PeerId,
    /// This run's presence session id, and the count that orders its ephemeral messages.
    session: String,
    ephemeral_count: u64,
    /// The storage id of the server last synced with: whose sync state tells what is pending.
    last_storage: Option<StorageId>,
    /// The status last announced per board.
    statuses: HashMap<DocumentId, SyncStatus>,
}

impl Engine {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut heartbeat = tokio::time::interval(PRESENCE_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                command = commands.recv() => Wake::Command(command),
                wake = next_link_event(&mut self.link) => wake,
                _ = heartbeat.tick() => Wake::Heartbeat,
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(Command::Shutdown { reply })) => {
                    self.close().await;
                    let _ = reply.send(());
                    break;
                }
                Wake::Command(Some(command)) => self.command(command).await,
                Wake::Connected(Ok(online)) => self.on_online(online).await,
                Wake::Connected(Err(error)) => self.on_offline(error),
                Wake::Frame(frame) => self.on_frame(frame).await,
                Wake::Retry => {
                    let attempt = match self.link {
                        Link::Waiting { attempt, .. } => attempt,
                        _ => 0,
                    };
                    self.connect(attempt);
                }
                Wake::Heartbeat => self.heartbeat().await,
            }
        }
    }

    // ---------------------------------------------------------------- commands

    async fn command(&mut self, command: Command) {
        match command {
            Command::CreateBoard { id, name, reply } => {
                let _ = reply.send(self.create_board(id, &name).await);
            }
            Command::Fetch { id, reply } => {
                let _ = reply.send(self.fetch(id).await);
            }
            Command::ReadTask { id, task, reply } => {
                let result = match self.open(id).await {
                    Ok(()) => {
                        Board::read_task(&self.docs[&id].doc, &task).map_err(ClientError::from)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Forget { id, reply } => {
                self.docs.remove(&id);
                self.statuses.remove(&id);
                self.viewing.remove(&id);
                let _ = reply.send(self.store.delete(&id).await.map_err(ClientError::from));
            }
            Command::Read { id, reply } => {
                let result = match self.open(id).await {
                    Ok(()) => self.read(id),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Edit { id, edit, reply } => {
                let _ = reply.send(self.edit(id, edit).await);
            }
            Command::List { reply } => {
                let _ = reply.send(self.list().await);
            }
            Command::Status { id, reply } => {
                let result = match self.open(id).await {
                    Ok(()) => Ok(self.status_of(id)),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Heads { id, reply } => {
                let result = match self.open(id).await {
                    Ok(()) => Ok(self.docs[&id].doc.get_heads()),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Connection { reply } => {
                let _ = reply.send(self.connection_state());
            }
            Command::View { id, task, reply } => {
                let result = self.open(id).await;
                if result.is_ok() {
                    self.viewing.insert(id, task.clone());
                    self.send_presence(id, task, false).await;
                }
                let _ = reply.send(result);
            }
            Command::StopViewing { id, reply } => {
                if self.viewing.remove(&id).is_some() {
                    self.send_presence(id, None, true).await;
                }
                let _ = reply.send(Ok(()));
            }
            Command::Viewers { id, reply } => {
                let _ = reply.send(self.presence.viewers(&id));
            }
            Command::Shutdown { .. } => unreachable!("handled by the run loop"),
        }
    }

    async fn create_board(
        &mut self,
        id: DocumentId,
        name: &str,
    ) -> Result<DocumentId, ClientError> {
        let mut doc = automerge::AutoCommit::new();
        ops::create_board(&mut doc, name)?;
        let doc = doc.document().clone();
        if !self.store.create(&id, &doc.save(), now_ms()).await? {
            return Err(ClientError::AlreadyExists(id));
        }
        let mut replica = Replica::from_doc(id, doc, Default::default());
        self.attach(&mut replica).await;
        self.docs.insert(id, replica);
        self.announce_status(id);
        self.send_sync(id).await;
        Ok(id)
    }

    async fn fetch(&mut self, id: DocumentId) -> Result<(), ClientError> {
        self.store.create(&id, &[], now_ms()).await?;
        self.open(id).await?;
        if let Some(replica) = self.docs.get_mut(&id) {
            replica.unavailable = false;
        }
        self.send_sync(id).await;
        Ok(())
    }

    fn read(&self, id: DocumentId) -> Result<Board, ClientError> {
        let replica = &self.docs[&id];
        if replica.is_empty() {
            return Err(if replica.unavailable {
                ClientError::Unavailable(id)
            } else {
                ClientError::NotYetReceived(id)
            });
        }
        Ok(Board::read(&replica.doc)?)
    }

    /// Loads a board from the store into memory (once) and starts syncing it.
    async fn open(&mut self, id: DocumentId) -> Result<(), ClientError> {
        if self.docs.contains_key(&id) {
            return Ok(());
        }
        let stored = self
            .store
            .load(&id)
            .await?
            .ok_or(ClientError::UnknownBoard(id))?;
        let mut replica = tokio::task::spawn_blocking(move || Replica::load(id, stored))
            .await
            .map_err(|e| ClientError::Corrupt {
                id,
                reason: e.to_string(),
            })?
            .map_err(|e| ClientError::Corrupt {
                id,
                reason: e.to_string(),
            })?;
        self.attach(&mut replica).await;
        self.docs.insert(id, replica);
        self.announce_status(id);
        self.send_sync(id).await;
        Ok(())
    }

    /// Gives a freshly opened replica what is known of the server: the saved sync state of the
    /// connected server, or of the last one for the pending count while offline.
    async fn attach(&mut self, replica: &mut Replica) {
        let storage = match &self.link {
            Link::Online { online, .. } => online.storage_id.clone(),
            _ => self.last_storage.clone(),
        };
        let saved = match &storage {
            Some(storage) => self
                .store
                .sync_state(&replica.id, storage)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(document = %replica.id, "reading sync state: {e}");
                    None
                }),
            None => None,
        };
        replica.resume_sync(saved.as_deref());
        if !matches!(self.link, Link::Online { .. }) {
            replica.sync = None;
        }
    }

    async fn edit(&mut self, id: DocumentId, edit: Edit) -> Result<Edited, ClientError> {
        self.open(id).await?;
        let user = self.config.user.clone();
        let now = now_ms();
        let replica = self.docs.get_mut(&id).expect("opened above");
        if replica.is_empty() {
            return Err(ClientError::NotYetReceived(id));
        }
        let done = replica
            .doc
            .transact_and_log_patches(|tx| -> Result<Edited, ClientError> {
                Ok(match edit {
                    Edit::AddTask(task) => Edited::Task(ops::add_task(tx, task, now)?),
                    Edit::EditTask { task, edit } => {
                        ops::edit_task(tx, &task, edit, now)?;
                        Edited::Updated
                    }
                    Edit::MoveTask {
                        task,
                        column,
                        position,
                    } => {
                        ops::move_task(tx, &task, &column, position, now)?;
                        Edited::Updated
                    }
                    Edit::SetArchived { task, archived } => {
                        ops::set_archived(tx, &task, archived, now)?;
                        Edited::Updated
                    }
                    Edit::AddComment { task, body } => {
                        let comment = CommentId::random();
                        ops::add_comment(tx, &task, comment.clone(), &user, &body, now)?;
                        Edited::Comment(comment)
                    }
                })
            })
            .map_err(|failure| failure.error)?;
        let mut log = done.patch_log;
        let patches = replica.doc.make_patches(&mut log);
        self.persist(id, None).await?;
        self.emit_change(BoardChange::describe(id, Origin::Local, &patches));
        self.announce_status(id);
        self.send_sync(id).await;
        Ok(done.result)
    }

    /// Writes a replica's unsaved changes (and optionally its sync state) in one transaction.
    /// On failure the replica is reloaded from the store, so nothing unstored is ever offered.
    async fn persist(
        &mut self,
        id: DocumentId,
        with_sync: Option<&StorageId>,
    ) -> Result<(), ClientError> {
        let replica = self.docs.get_mut(&id).expect("persisting an open replica");
        let Some(chunk) = replica.unsaved() else {
            return Ok(());
        };
        let state = replica.encoded_sync_state();
        let sync = match (with_sync, &state) {
            (Some(storage_id), Some(state)) => Some(SyncRecord { storage_id, state }),
            _ => None,
        };
        match self.store.append(&id, &chunk, sync, now_ms()).await {
            Ok(seq) => {
                replica.mark_saved(seq);
                if replica.needs_compaction() {
                    self.compact(id).await;
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(document = %id, "saving changes failed: {e}");
                self.docs.remove(&id);
                let _ = self.open(id).await;
                Err(e.into())
            }
        }
    }

    async fn compact(&mut self, id: DocumentId) {
        let replica = self.docs.get_mut(&id).expect("compacting an open replica");
        let known = replica.chunks.clone();
        let doc = &mut replica.doc;
        let result = self
            .store
            .compact(
                &id,
                &known,
                |foreign| {
                    for chunk in foreign {
                        if let Err(e) = doc.load_incremental(&chunk) {
                            tracing::warn!(document = %id, "a stored chunk does not load: {e}");
                        }
                    }
                    doc.save()
                },
                now_ms(),
            )
            .await;
        match result {
            Ok(_) => replica.mark_compacted(),
            Err(e) => tracing::warn!(document = %id, "compaction failed (will retry): {e}"),
        }
    }

    async fn list(&mut self) -> Result<Vec<BoardSummary>, ClientError> {
        let mut boards = Vec::new();
        for id in self.store.document_ids().await? {
            if let Err(e) = self.open(id).await {
                tracing::warn!(document = %id, "cannot open: {e}");
                continue;
            }
            let board = self.read(id).ok();
            boards.push(BoardSummary {
                id,
                name: board.as_ref().map(|b| b.name.clone()),
                tasks: board.as_ref().map_or(0, |b| b.tasks.len()),
                status: self.status_of(id),
            });
        }
        Ok(boards)
    }

    // ---------------------------------------------------------------- the link

    fn connect(&mut self, attempt: u32) {
        let Some(server) = self.config.server.clone() else {
            return;
        };
        let peer_id = self.peer_id.clone();
        self.link = Link::Connecting {
            attempt,
            task: tokio::spawn(async move { handshake(&server, peer_id).await }),
        };
        self.emit(ClientEvent::Connection(ConnectionState::Connecting));
    }

    fn connection_state(&self) -> ConnectionState {
        match &self.link {
            Link::Disabled => ConnectionState::Disabled,
            Link::Connecting { .. } => ConnectionState::Connecting,
            Link::Online { online, .. } => ConnectionState::Online {
                storage_id: online.storage_id.clone(),
            },
            Link::Waiting { until, .. } => ConnectionState::Offline {
                error: "waiting to reconnect".into(),
                retry_in: until.saturating_duration_since(tokio::time::Instant::now()),
            },
        }
    }

    async fn on_online(&mut self, online: Box<Online>) {
        let attempt = match self.link {
            Link::Connecting { attempt, .. } => attempt,
            _ => 0,
        };
        tracing::info!(server = %online.server_peer, "connected");
        if let Some(storage) = &online.storage_id
            && self.last_storage.as_ref() != Some(storage)
        {
            if let Err(e) = self
                .store
                .set_meta(META_SERVER_STORAGE, storage.as_str())
                .await
            {
                tracing::warn!("remembering the server's storage id: {e}");
            }
            self.last_storage = Some(storage.clone());
        }
        let storage_id = online.storage_id.clone();
        self.link = Link::Online { online, attempt };
        self.emit(ClientEvent::Connection(ConnectionState::Online {
            storage_id,
        }));
        let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
        for id in ids {
            let mut replica = self.docs.remove(&id).expect("listed");
            self.attach(&mut replica).await;
            self.docs.insert(id, replica);
            self.announce_status(id);
            self.send_sync(id).await;
        }
        let viewing: Vec<(DocumentId, Option<TaskId>)> =
            self.viewing.iter().map(|(d, t)| (*d, t.clone())).collect();
        for (id, task) in viewing {
            self.send_presence(id, task, false).await;
        }
    }

    fn on_offline(&mut self, error: String) {
        self.on_offline_retrying(error, None);
    }

    /// Goes offline and schedules the next attempt after `retry_in`, or after the backoff delay.
    fn on_offline_retrying(&mut self, error: String, retry_in: Option<Duration>) {
        let attempt = match &self.link {
            Link::Connecting { attempt, .. } | Link::Online { attempt, .. } => *attempt,
            Link::Waiting { attempt, .. } => *attempt,
            Link::Disabled => return,
        };
        let retry_in = retry_in.unwrap_or_else(|| backoff::delay(attempt, rand::random::<f64>()));
        tracing::info!("offline ({error}); retrying in {retry_in:?}");
        self.link = Link::Waiting {
            attempt: attempt.saturating_add(1),
            until: tokio::time::Instant::now() + retry_in,
        };
        for replica in self.docs.values_mut() {
            replica.sync = None;
        }
        let ids: Vec<DocumentId> = self.docs.keys().copied().collect();
        for id in ids {
            self.announce_status(id);
        }
        for id in self.presence.clear() {
            self.emit(ClientEvent::Presence {
                document_id: id,
                viewers: Vec::new(),
            });
        }
        self.emit(ClientEvent::Connection(ConnectionState::Offline {
            error,
            retry_in,
        }));
    }

    async fn close(&mut self) {
        if let Link::Online { online, .. } = &mut self.link {
            for (id, _) in std::mem::take(&mut self.viewing) {
                let _ = send_ephemeral(
                    online,
                    &self.peer_id,
                    &self.session,
                    &mut self.ephemeral_count,
                    id,
                    &self.config.user,
                    None,
                    true,
                )
                .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), online.socket.close(None)).await;
        }
        if let Link::Connecting { task, .. } = &self.link {
            task.abort();
        }
        self.link = Link::Disabled;
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let bytes = match frame {
            Some(Ok(WsMessage::Binary(bytes))) => bytes,
            Some(Ok(WsMessage::Close(frame))) => {
                let expired = frame
                    .as_ref()
                    .is_some_and(|f| u16::from(f.code) == CLOSE_TOKEN_EXPIRED);
                let why = frame.map_or("closed".to_owned(), |f| {
                    format!("closed ({}) {}", u16::from(f.code), f.reason)
                });
                // An expired token is no trouble at the server: come back at once with a new one.
                let retry_in = expired.then_some(Duration::ZERO);
                return self.on_offline_retrying(format!("the server {why}"), retry_in);
            }
            Some(Ok(_)) => return, // pings are answered by tungstenite; text is not protocol
            Some(Err(e)) => return self.on_offline(format!("connection lost: {e}")),
            None => return self.on_offline("connection closed".into()),
        };
        let message = match Message::decode(&bytes) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("ignoring an undecodable frame from the server: {e}");
                return;
            }
        };
        match message {
            Message::Sync(payload) | Message::Request(payload) => {
                self.on_sync(payload, bytes.len()).await;
            }
            Message::DocUnavailable { document_id, .. } => {
                if let Some(replica) = self.docs.get_mut(&document_id)
                    && replica.is_empty()
                {
                    replica.unavailable = true;
                    self.announce_status(document_id);
                }
            }
            Message::Ephemeral {
                document_id,
                session_id,
                data,
                ..
            } => {
                if session_id == self.session {
                    return;
                }
                if let Some(presence) = Presence::decode(&data)
                    && self
                        .presence
                        .receive(document_id, session_id, presence, Instant::now())
                {
                    self.emit_presence(document_id);
                }
            }
            // When the server ends the connection over it, the close frame follows.
            Message::Error { message, .. } => {
                tracing::warn!("the server refused: {message}");
                self.emit(ClientEvent::Refused(message));
            }
            Message::Join { .. }
            | Message::Peer { .. }
            | Message::Leave { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged { .. } => {}
        }
    }

    async fn on_sync(&mut self, payload: SyncPayload, frame_bytes: usize) {
        let id = payload.document_id;
        let storage = match &mut self.link {
            Link::Online { online, attempt } => {
                *attempt = 0;
                online.storage_id.clone()
            }
            _ => return,
        };
        if !self.docs.contains_key(&id) {
            return; // not a board this client opened
        }
        self.emit(ClientEvent::Received {
            document_id: id,
            bytes: frame_bytes,
        });
        let replica = self.docs.get_mut(&id).expect("checked above");
        let message = match sync::Message::decode(&payload.data) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(document = %id, "ignoring an undecodable sync message: {e}");
                return;
            }
        };
        let (mut log, shared_moved) = match replica.receive(message) {
            Ok(received) => received,
            Err(e) => {
                tracing::warn!(document = %id, "rejecting a sync message: {e}");
                return;
            }
        };
        let patches = replica.doc.make_patches(&mut log);
        let had_changes = replica.unsaved().is_some();
        let state = replica.encoded_sync_state();
        if had_changes {
            if self.persist(id, storage.as_ref()).await.is_err() {
                // Not stored, so not acknowledged: drop the link and let the server resend.
                self.close_link().await;
                self.on_offline("the local store failed".into());
                return;
            }
        } else if shared_moved && let (Some(storage_id), Some(state)) = (&storage, state) {
            let record = SyncRecord {
                storage_id,
                state: &state,
            };
            if let Err(e) = self.store.save_sync_state(&id, record).await {
                tracing::warn!(document = %id, "saving sync state: {e}");
            }
        }
        let change = BoardChange::describe(id, Origin::Remote, &patches);
        if !change.is_empty() {
            self.emit_change(change);
        }
        self.announce_status(id);
        self.send_sync(id).await;
    }

    async fn close_link(&mut self) {
        if let Link::Online { online, .. } = &mut self.link {
            let _ = online.socket.close(None).await;
        }
    }

    /// Sends the server whatever it needs of a board, if connected.
    async fn send_sync(&mut self, id: DocumentId) {
        let Link::Online { online, .. } = &mut self.link else {
            return;
        };
        let Some(replica) = self.docs.get_mut(&id) else {
            return;
        };
        let Some(message) = replica.generate() else {
            return;
        };
        let payload = SyncPayload {
            sender_id: self.peer_id.clone(),
            target_id: online.server_peer.clone(),
            document_id: id,
            data: message.encode(),
        };
        // A peer holding nothing of a document asks with `request` (the server may then answer
        // `doc-unavailable`); everything else is `sync`.
        let frame = if replica.is_empty() {
            Message::Request(payload)
        } else {
            Message::Sync(payload)
        };
        if let Err(e) = online
            .socket
            .send(WsMessage::Binary(frame.encode().into()))
            .await
        {
            self.on_offline(format!("sending failed: {e}"));
        }
    }

    async fn send_presence(&mut self, id: DocumentId, task: Option<TaskId>, left: bool) {
        let Link::Online { online, .. } = &mut self.link else {
            return;
        };
        let sent = send_ephemeral(
            online,
            &self.peer_id,
            &self.session,
            &mut self.ephemeral_count,
            id,
            &self.config.user,
            task,
            left,
        )
        .await;
        if let Err(e) = sent {
            self.on_offline(format!("sending failed: {e}"));
        }
    }

    async fn heartbeat(&mut self) {
        for id in self.presence.expire(Instant::now()) {
            self.emit_presence(id);
        }
        let viewing: Vec<(DocumentId, Option<TaskId>)> =
            self.viewing.iter().map(|(d, t)| (*d, t.clone())).collect();
        for (id, task) in viewing {
            self.send_presence(id, task, false).await;
        }
    }

    // ---------------------------------------------------------------- status and events

    fn status_of(&self, id: DocumentId) -> SyncStatus {
        let Some(replica) = self.docs.get(&id) else {
            return SyncStatus::Offline { pending: 0 };
        };
        if replica.unavailable {
            return SyncStatus::Unavailable;
        }
        let online = matches!(self.link, Link::Online { .. }) && replica.sync.is_some();
        if online && replica.in_sync() {
            return SyncStatus::InSync;
        }
        let pending = replica.pending();
        if online {
            SyncStatus::Syncing { pending }
        } else {
            SyncStatus::Offline { pending }
        }
    }

    fn announce_status(&mut self, id: DocumentId) {
        let status = self.status_of(id);
        if self.statuses.insert(id, status) != Some(status) {
            self.emit(ClientEvent::Status {
                document_id: id,
                status,
            });
        }
    }

    fn emit_change(&self, change: BoardChange) {
        self.emit(ClientEvent::Board(change));
    }

    fn emit_presence(&self, id: DocumentId) {
        self.emit(ClientEvent::Presence {
            document_id: id,
            viewers: self.presence.viewers(&id),
        });
    }

    fn emit(&self, event: ClientEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(event);
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_ephemeral(
    online: &mut Online,
    peer_id: &PeerId,
    session: &str,
    count: &mut u64,
    id: DocumentId,
    user: &str,
    task: Option<TaskId>,
    left: bool,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    *count += 1;
    let presence = Presence {
        user: user.to_owned(),
        task,
        left,
    };
    let frame = Message::Ephemeral {
        sender_id: peer_id.clone(),
        target_id: online.server_peer.clone(),
        document_id: id,
        session_id: session.to_owned(),
        count: *count,
        data: presence.encode(),
    };
    online
        .socket
        .send(WsMessage::Binary(frame.encode().into()))
        .await
}

/// Waits for whatever the link has next: a handshake result, a frame, or the retry time.
async fn next_link_event(link: &mut Link) -> Wake {
    match link {
        Link::Disabled => std::future::pending().await,
        Link::Connecting { task, .. } => match task.await {
            Ok(result) => Wake::Connected(result),
            Err(e) => Wake::Connected(Err(format!("connecting failed: {e}"))),
        },
        Link::Online { online, .. } => Wake::Frame(online.socket.next().await),
        Link::Waiting { until, .. } => {
            tokio::time::sleep_until(*until).await;
            Wake::Retry
        }
    }
}

/// Opens the socket and completes `join` → `peer`.
async fn handshake(server: &ServerConfig, peer_id: PeerId) -> Result<Box<Online>, String> {
    let token = match &server.tokens {
        Some(tokens) => Some(tokens.access_token().await?),
        None => None,
    };
    let url = server.connect_url(token.as_deref());
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let connector = tls_connector(server)?;
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url.as_str(),
        Some(ws_config),
        true,
        Some(connector),
    );
    let (mut socket, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .map_err(|_| format!("{} did not answer within {HANDSHAKE_TIMEOUT:?}", server.url))?
        .map_err(|e| format!("cannot connect to {}: {e}", server.url))?;
    let join = Message::Join {
        sender_id: peer_id.clone(),
        // This client stores documents, but has no storage id of its own to share yet.
        metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: false,
        }),
        supported_protocol_versions: Some(vec![taskflow_proto::wire::PROTOCOL_V1.into()]),
    };
    socket
        .send(WsMessage::Binary(join.encode().into()))
        .await
        .map_err(|e| format!("sending join: {e}"))?;
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(WsMessage::Binary(bytes))) => return Ok(Message::decode(&bytes)),
                Some(Ok(WsMessage::Close(frame))) => {
                    return Err(
                        frame.map_or("the server closed the connection".into(), |f| {
                            format!("the server closed the connection: {}", f.reason)
                        }),
                    );
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("connection lost: {e}")),
                None => return Err("the server closed the connection".into()),
            }
        }
    })
    .await
    .map_err(|_| format!("{} did not complete the handshake", server.url))??;
    match answer {
        Ok(Message::Peer {
            sender_id,
            metadata,
            ..
        }) => Ok(Box::new(Online {
            socket,
            server_peer: sender_id,
            storage_id: metadata.and_then(|m| m.storage_id),
        })),
        Ok(Message::Error { message, .. }) => Err(format!("the server refused: {message}")),
        Ok(other) => Err(format!(
            "expected `peer`, the server sent `{}`",
            other.type_name()
        )),
        Err(e) => Err(format!("the server sent an undecodable frame: {e}")),
    }
}

fn tls_connector(server: &ServerConfig) -> Result<Connector, String> {
    if !server.url.starts_with("wss:") {
        return Ok(Connector::Plain);
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in &server.extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| format!("an extra root certificate is invalid: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
