//! Open documents: a registry of document actors, one per open document (its single writer).
//!
//! Connections send [`DocCommand`]s to a document through the [`Registry`], which starts the
//! actor on first use. An actor that has had no peers for the configured idle time compacts,
//! removes itself from the registry and ends; the next command for that document starts a new
//! one, which loads it from the store again.
//!
//! REST edits ([`Registry::edit`]) reach the same actor as sync messages, so a document has one
//! writer whatever the path of a change, and every merged change updates the board's
//! projection in the transaction that stores it.

mod actor;
pub mod edit;
pub mod projection;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::{ActorId, sync};
use sha2::{Digest, Sha256};
use taskflow_proto::{DocumentId, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::cache::ProjectCache;
use crate::events::Signals;
use crate::fanout::{Fanout, Notice};
use crate::link::{ConnId, PeerLink};
use crate::store::Store;
use edit::{Applied, BoardEdit, EditError};

/// Commands queued to one document's actor.
#[derive(Debug)]
pub enum DocCommand {
    /// A `sync` or `request` from a peer (its Automerge sync message already decoded).
    Sync {
        link: PeerLink,
        request: bool,
        /// The peer's user may change the document (a viewer may not).
        may_write: bool,
        message: sync::Message,
    },
    /// An `ephemeral` message to relay to the document's other peers.
    Ephemeral {
        from: PeerLink,
        sender_id: PeerId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
    /// A change made by the server for `user` (REST), answered once it is stored.
    Edit {
        user: Arc<str>,
        edit: BoardEdit,
        /// `If-Match`: the task versions the edit is based on (`*`: any existing task).
        if_match: Option<Vec<String>>,
        reply: oneshot::Sender<Result<Applied, EditError>>,
    },
    /// What another node said about the document (through [`crate::fanout`]).
    Remote(Notice),
    /// Rebuild the board's projection from the whole document (it is on the backlog); `done`
    /// is told once that is stored.
    Reproject { done: oneshot::Sender<()> },
    /// The peer left or its connection closed.
    Detach { conn: ConnId },
    /// The server is stopping: finish what is queued and end.
    Shutdown,
}

/// A command as it waits in an actor's inbox, with the span it was sent from (a request's, a
/// socket message's): the batch that handles it follows from that span, so a trace leads from
/// the request to the merge and the commit.
#[derive(Debug)]
pub(crate) struct Queued {
    command: DocCommand,
    origin: tracing::Span,
}

/// Tunables of document actors.
#[derive(Debug, Clone)]
pub struct DocConfig {
    /// How long a document with no peers stays in memory.
    pub evict_after: Duration,
    /// How long a materialised document with peers but no traffic keeps its Automerge form
    /// (after which it is served from its stored bytes until someone edits it).
    pub unload_after: Duration,
    /// Compact once this many chunks sit beside the snapshot.
    pub compact_after_changes: usize,
    /// Commands an actor's inbox holds before senders wait (back-pressure on fast writers).
    pub inbox: usize,
}

impl Default for DocConfig {
    fn default() -> Self {
        Self {
            evict_after: Duration::from_secs(60),
            unload_after: Duration::from_secs(30),
            compact_after_changes: 256,
            inbox: 1024,
        }
    }
}

/// Whether a command may start an actor for a document that is not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Start the actor (loading the document) if needed.
    Start,
    /// Deliver only to an actor that is running; drop otherwise.
    IfRunning,
}

#[derive(Debug)]
struct Entry {
    tx: mpsc::Sender<Queued>,
    generation: u64,
}

/// Actor ids whose owner is remembered in memory before the table is read again (bindings
/// never change, so forgetting them all at once is only a cost, never a mistake).
const ACTORS_REMEMBERED: usize = 100_000;

#[derive(Debug)]
struct Inner {
    docs: Mutex<HashMap<DocumentId, Entry>>,
    /// Actor id → the user it is bound to (a cache of the `actors` table).
    actors: Mutex<HashMap<ActorId, Arc<str>>>,
    store: Store,
    /// Project views to invalidate when a board changes.
    cache: ProjectCache,
    /// Woken when a commit wrote events.
    signals: Signals,
    /// What this node's commits and presence tell other nodes, and they it.
    fanout: Fanout,
    config: DocConfig,
    server_peer: PeerId,
    /// Never leaves the process: server-side actor ids cannot be guessed (and claimed first).
    actor_salt: [u8; 32],
    tracker: TaskTracker,
    next_generation: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    pub fn new(
        store: Store,
        cache: ProjectCache,
        signals: Signals,
        fanout: Fanout,
        config: DocConfig,
        server_peer: PeerId,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                docs: Mutex::new(HashMap::new()),
                actors: Mutex::new(HashMap::new()),
                store,
                cache,
                signals,
                fanout,
                config,
                server_peer,
                actor_salt: rand::random(),
                tracker: TaskTracker::new(),
                next_generation: AtomicU64::new(0),
            }),
        }
    }

    pub fn server_peer(&self) -> &PeerId {
        &self.inner.server_peer
    }

    /// The actor id this process writes `user`'s REST changes under: one per user and server
    /// process, so two processes never write the same actor's sequence numbers, and bound to
    /// the user like any of theirs (that binding is the change's recorded author). Derived from
    /// a secret salt: an id anyone could compute, a client could bind to itself first and so
    /// block the user's REST writes.
    fn server_actor(&self, user: &str) -> ActorId {
        let digest = Sha256::new()
            .chain_update(self.inner.actor_salt)
            .chain_update(user.as_bytes())
            .finalize();
        ActorId::from(&digest[..16])
    }

    /// Makes `edit` on the document as `user`; answers once the change is stored (and sent
    /// to the document's peers). `if_match` lists the task versions the edit is based on.
    pub async fn edit(
        &self,
        id: DocumentId,
        user: Arc<str>,
        edit: BoardEdit,
        if_match: Option<Vec<String>>,
    ) -> Result<Applied, EditError> {
        let (reply, answer) = oneshot::channel();
        let command = DocCommand::Edit {
            user,
            edit,
            if_match,
            reply,
        };
        self.send(id, command, Open::Start).await;
        answer.await.unwrap_or(Err(EditError::Unavailable))
    }

    /// Has the document's actor rebuild its projection (for documents on the backlog), and
    /// waits until that is stored (or the actor gave up).
    pub async fn reproject(&self, id: DocumentId) {
        let (done, stored) = oneshot::channel();
        self.send(id, DocCommand::Reproject { done }, Open::Start)
            .await;
        let _ = stored.await;
    }

    /// The user `actor` belongs to, binding it to `user` if it belongs to nobody yet.
    /// The users the authors of `changes` are bound to (every stored change's author is).
    async fn authors(
        &self,
        changes: &[automerge::Change],
    ) -> Result<HashMap<ActorId, Arc<str>>, crate::store::StoreError> {
        let mut authors = HashMap::new();
        for change in changes {
            let actor = change.actor_id();
            if authors.contains_key(actor) {
                continue;
            }
            let cached = self
                .inner
                .actors
                .lock()
                .expect("actor cache lock")
                .get(actor)
                .cloned();
            let owner = match cached {
                Some(owner) => Some(owner),
                None => self
                    .inner
                    .store
                    .actor_user(&actor.to_hex_string())
                    .await?
                    .map(Arc::from),
            };
            if let Some(owner) = owner {
                authors.insert(actor.clone(), owner);
            }
        }
        Ok(authors)
    }

    async fn actor_owner(
        &self,
        actor: &ActorId,
        user: &Arc<str>,
    ) -> Result<Arc<str>, crate::store::StoreError> {
        if let Some(owner) = self
            .inner
            .actors
            .lock()
            .expect("actor cache lock")
            .get(actor)
        {
            return Ok(owner.clone());
        }
        let owner = self
            .inner
            .store
            .bind_actor(&actor.to_hex_string(), user, crate::now_ms())
            .await?;
        let owner: Arc<str> = if *owner == **user {
            user.clone()
        } else {
            Arc::from(owner)
        };
        let mut actors = self.inner.actors.lock().expect("actor cache lock");
        if actors.len() >= ACTORS_REMEMBERED {
            actors.clear();
        }
        actors.insert(actor.clone(), owner.clone());
        Ok(owner)
    }

    /// Number of documents open in memory.
    pub fn open_documents(&self) -> usize {
        self.inner.docs.lock().expect("registry lock").len()
    }

    /// Delivers a command to a document's actor. Waits while the actor's inbox is full.
    pub async fn send(&self, id: DocumentId, mut command: DocCommand, open: Open) {
        // An actor may end between our lookup and our send; the retry then starts a new one.
        for _ in 0..3 {
            let Some((tx, generation)) = self.lookup(id, open) else {
                return;
            };
            let queued = Queued {
                command,
                origin: tracing::Span::current(),
            };
            match tx.send(queued).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(returned)) => {
                    command = returned.command;
                    self.forget(id, generation);
                }
            }
        }
        tracing::error!(document = %id, "document actor keeps ending; command dropped");
    }

    fn lookup(&self, id: DocumentId, open: Open) -> Option<(mpsc::Sender<Queued>, u64)> {
        let mut docs = self.inner.docs.lock().expect("registry lock");
        if let Some(entry) = docs.get(&id) {
            return Some((entry.tx.clone(), entry.generation));
        }
        if open == Open::IfRunning || self.inner.tracker.is_closed() {
            return None;
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.config.inbox);
        docs.insert(
            id,
            Entry {
                tx: tx.clone(),
                generation,
            },
        );
        let actor = actor::Actor::new(id, generation, self.clone(), rx);
        let span = tracing::info_span!(parent: None, "document", document = %id);
        self.inner
            .tracker
            .spawn(tracing::Instrument::instrument(actor.run(), span));
        Some((tx, generation))
    }

    /// Removes a document's entry if it still belongs to the actor of `generation`.
    fn forget(&self, id: DocumentId, generation: u64) {
        let mut docs = self.inner.docs.lock().expect("registry lock");
        if docs.get(&id).is_some_and(|e| e.generation == generation) {
            docs.remove(&id);
        }
    }

    /// Called by an idle actor: removes its entry unless commands are waiting for it. Holding
    /// the registry lock while checking means no sender can pick up the entry in between.
    fn retire(&self, id: DocumentId, generation: u64, rx: &mpsc::Receiver<Queued>) -> bool {
        let mut docs = self.inner.docs.lock().expect("registry lock");
        if !rx.is_empty() {
            return false;
        }
        if docs.get(&id).is_some_and(|e| e.generation == generation) {
            docs.remove(&id);
        }
        true
    }

    /// Stops every actor after it has finished (and persisted) what it was doing.
    pub async fn shutdown(&self) {
        self.inner.tracker.close();
        let senders: Vec<mpsc::Sender<Queued>> = {
            let docs = self.inner.docs.lock().expect("registry lock");
            docs.values().map(|e| e.tx.clone()).collect()
        };
        for tx in senders {
            // An actor that already ended has nothing left to finish.
            let shutdown = Queued {
                command: DocCommand::Shutdown,
                origin: tracing::Span::none(),
            };
            let _ = tx.send(shutdown).await;
        }
        self.inner.tracker.wait().await;
    }
}
