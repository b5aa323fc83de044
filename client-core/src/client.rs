//! The public face of client-core: [`Client`], a cloneable handle to one running engine, and the
//! types its callers see (configuration, edits, sync status, events).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use taskflow_proto::board::ops::{NewTask, Position, TaskEdit};
use taskflow_proto::board::{Board, ColumnId, CommentId, SchemaError, Task, TaskId};
use taskflow_proto::{DocumentId, StorageId};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::http::Uri;

use crate::account::{StaticToken, TokenSource};
use crate::changes::BoardChange;
use crate::engine::{self, Command};
use crate::presence::Viewer;
use crate::store::StoreError;

/// How many unread events a slow subscriber may fall behind before it misses some (it is told).
const EVENT_BUFFER: usize = 1024;
/// Commands queued for the engine before callers wait.
const COMMAND_QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where the local replica store lives.
    pub data_dir: PathBuf,
    /// The user this client acts for: recorded as author of tasks and comments, shown in presence.
    pub user: String,
    /// The sync server; `None` works fully offline.
    pub server: Option<ServerConfig>,
}

/// Where and how to reach the sync server.
#[derive(Clone)]
pub struct ServerConfig {
    /// `ws://` or `wss://` URL of the sync endpoint, e.g. `wss://taskflow.example/api/v1/sync`.
    pub url: String,
    /// Where each connection attempt gets its access token, sent as the `token` query
    /// parameter (browsers cannot set headers on a WebSocket). `None` connects without one.
    pub tokens: Option<Arc<dyn TokenSource>>,
    /// Extra trusted roots (DER) for `wss://` servers with a private CA; the web PKI is trusted
    /// as well.
    pub extra_roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("url", &self.url)
            .field("tokens", &self.tokens.as_ref().map(|_| "…"))
            .field("extra_roots", &self.extra_roots.len())
            .finish()
    }
}

impl ServerConfig {
    /// Checks the URL: it must be `ws://` or `wss://` with a host.
    pub fn new(url: &str) -> Result<ServerConfig, ClientError> {
        let bad = |why: &str| ClientError::BadServerUrl {
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("ws" | "wss") => {}
            _ => return Err(bad("the scheme must be ws:// or wss://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        Ok(ServerConfig {
            url: url.to_owned(),
            tokens: None,
            extra_roots: Vec::new(),
        })
    }

    /// Connects with one fixed token.
    pub fn with_token(self, token: impl Into<String>) -> ServerConfig {
        self.with_tokens(Arc::new(StaticToken(token.into())))
    }

    /// Connects with a token from `tokens` each time (e.g. a refreshing [`Session`]).
    ///
    /// [`Session`]: crate::account::Session
    pub fn with_tokens(mut self, tokens: Arc<dyn TokenSource>) -> ServerConfig {
        self.tokens = Some(tokens);
        self
    }

    /// The URL dialled with `token`: the configured one with `token=…` added to its query.
    pub fn connect_url(&self, token: Option<&str>) -> String {
        let Some(token) = token else {
            return self.url.clone();
        };
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}token={}", self.url, percent_encode(token))
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One change to a board, in the board's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    AddTask(NewTask),
    EditTask {
        task: TaskId,
        edit: TaskEdit,
    },
    MoveTask {
        task: TaskId,
        column: ColumnId,
        position: Position,
    },
    SetArchived {
        task: TaskId,
        archived: bool,
    },
    /// A comment by the client's user.
    AddComment {
        task: TaskId,
        body: String,
    },
}

/// What an edit created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edited {
    Task(TaskId),
    Comment(CommentId),
    /// The edit changed fields of an existing task (or nothing, if it set what was there).
    Updated,
}

/// Where one board stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStatus {
    /// Not connected; `pending` changes wait for the server.
    Offline { pending: usize },
    /// Connected and exchanging changes; `pending` of ours are not on the server yet.
    Syncing { pending: usize },
    /// The server holds exactly what this replica holds.
    InSync,
    /// The server has no such board (and this client holds nothing of it).
    Unavailable,
}

impl SyncStatus {
    pub fn pending(self) -> usize {
        match self {
            SyncStatus::Offline { pending } | SyncStatus::Syncing { pending } => pending,
            SyncStatus::InSync | SyncStatus::Unavailable => 0,
        }
    }
}

/// The link to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// No server configured.
    Disabled,
    Connecting,
    Online {
        storage_id: Option<StorageId>,
    },
    /// The last attempt failed (or the link dropped); the next one is in `retry_in`.
    Offline {
        error: String,
        retry_in: Duration,
    },
}

/// What the engine tells subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A board's contents changed, by a local edit or a remote merge.
    Board(BoardChange),
    Status {
        document_id: DocumentId,
        status: SyncStatus,
    },
    Presence {
        document_id: DocumentId,
        viewers: Vec<Viewer>,
    },
    Connection(ConnectionState),
    /// A sync message of `bytes` arrived for a board (for progress displays).
    Received {
        document_id: DocumentId,
        bytes: usize,
    },
    /// The server refused something without ending the connection (e.g. a viewer's edits).
    Refused(String),
}

/// A board in the local store, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardSummary {
    pub id: DocumentId,
    /// `None` while nothing of the board has arrived yet (or it is not a board).
    pub name: Option<String>,
    pub tasks: usize,
    pub status: SyncStatus,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("board {0} is not in the local store")]
    UnknownBoard(DocumentId),
    #[error("the local store already has a board {0}")]
    AlreadyExists(DocumentId),
    #[error("board {0} has not arrived from the server yet")]
    NotYetReceived(DocumentId),
    #[error("the server has no board {0}")]
    Unavailable(DocumentId),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("the stored document {id} is damaged: {reason}")]
    Corrupt { id: DocumentId, reason: String },
    #[error("invalid server URL `{url}`: {why}")]
    BadServerUrl { url: String, why: String },
    #[error("the client has shut down")]
    Closed,
}

/// A handle to a running client engine. Cheap to clone; the engine stops when
/// [`Client::shutdown`] is called or the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<ClientEvent>,
}

impl Client {
    /// Opens the local store and starts the engine (which connects if a server is configured).
    pub async fn open(config: ClientConfig) -> Result<Client, ClientError> {
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        engine::start(config, queue, events.clone()).await?;
        Ok(Client { commands, events })
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.events.subscribe()
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)
    }

    /// Creates a board (stored locally at once, offered to the server when connected).
    pub async fn create_board(&self, name: &str) -> Result<DocumentId, ClientError> {
        self.create_board_as(DocumentId::random(), name).await
    }

    /// Creates a board under a chosen new document id: one registered with the server first
    /// (see [`AccountClient::register_board`]), so that the server accepts it.
    ///
    /// [`AccountClient::register_board`]: crate::account::AccountClient::register_board
    pub async fn create_board_as(
        &self,
        id: DocumentId,
        name: &str,
    ) -> Result<DocumentId, ClientError> {
        let name = name.to_owned();
        self.call(|reply| Command::CreateBoard { id, name, reply })
            .await?
    }

    /// Adds a board someone shared to the local store and asks the server for it.
    pub async fn fetch(&self, id: DocumentId) -> Result<(), ClientError> {
        self.call(|reply| Command::Fetch { id, reply }).await?
    }

    /// Removes a board from the local store (and stops syncing it). Local changes the server
    /// does not hold yet are lost with it; callers check [`SyncStatus::pending`] first.
    pub async fn forget(&self, id: DocumentId) -> Result<(), ClientError> {
        self.call(|reply| Command::Forget { id, reply }).await?
    }

    /// The board as this replica holds it (opening it from the store if needed; no network).
    pub async fn board(&self, id: DocumentId) -> Result<Board, ClientError> {
        self.call(|reply| Command::Read { id, reply }).await?
    }

    /// One task as this replica holds it, without reading the whole board: what a UI re-reads
    /// when a [`BoardChange`] names it. `None` when the board has no such task.
    pub async fn task(&self, id: DocumentId, task: TaskId) -> Result<Option<Task>, ClientError> {
        self.call(|reply| Command::ReadTask { id, task, reply })
            .await?
    }

    /// Applies an edit; when this returns `Ok` the edit is in the local store.
    pub async fn edit(&self, id: DocumentId, edit: Edit) -> Result<Edited, ClientError> {
        self.call(|reply| Command::Edit { id, edit, reply }).await?
    }

    /// Every board in the local store. Opens them all, so they all sync.
    pub async fn boards(&self) -> Result<Vec<BoardSummary>, ClientError> {
        self.call(|reply| Command::List { reply }).await?
    }

    /// The heads of this replica of a board: which version of it this client holds.
    pub async fn heads(&self, id: DocumentId) -> Result<Vec<automerge::ChangeHash>, ClientError> {
        self.call(|reply| Command::Heads { id, reply }).await?
    }

    pub async fn status(&self, id: DocumentId) -> Result<SyncStatus, ClientError> {
        self.call(|reply| Command::Status { id, reply }).await?
    }

    pub async fn connection(&self) -> Result<ConnectionState, ClientError> {
        self.call(|reply| Command::Connection { reply }).await
    }

    /// Tells other viewers of the board that this user looks at it (and at `task`, if any),
    /// repeated until [`Client::stop_viewing`].
    pub async fn set_viewing(
        &self,
        id: DocumentId,
        task: Option<TaskId>,
    ) -> Result<(), ClientError> {
        self.call(|reply| Command::View { id, task, reply }).await?
    }

    pub async fn stop_viewing(&self, id: DocumentId) -> Result<(), ClientError> {
        self.call(|reply| Command::StopViewing { id, reply })
            .await?
    }

    /// The other people viewing a board now.
    pub async fn viewers(&self, id: DocumentId) -> Result<Vec<Viewer>, ClientError> {
        self.call(|reply| Command::Viewers { id, reply }).await
    }

    /// Says goodbye to the server and stops the engine. Everything is already stored.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }

    /// Waits until every given board is [`SyncStatus::InSync`] (or unavailable), or until
    /// `timeout`. Returns the statuses at that point.
    pub async fn wait_synced(
        &self,
        ids: &[DocumentId],
        timeout: Duration,
    ) -> Result<Vec<SyncStatus>, ClientError> {
        let mut events = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut statuses = Vec::with_capacity(ids.len());
            for id in ids {
                statuses.push(self.status(*id).await?);
            }
            let settled = statuses
                .iter()
                .all(|s| matches!(s, SyncStatus::InSync | SyncStatus::Unavailable));
            if settled {
                return Ok(statuses);
            }
            // Any event may have changed a status; re-check after each.
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Ok(statuses),
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(ClientError::Closed),
                Ok(_) => {}
            }
        }
    }
}
