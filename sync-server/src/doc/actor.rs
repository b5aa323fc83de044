//! The document actor: the single task that owns one open document.
//!
//! Its loop takes a batch of queued commands, applies every received sync message, stores the
//! new changes in one transaction, and only after the commit sends each peer its next sync
//! message — one per peer per batch, however many changes the batch held. A storage failure
//! closes the document's peers and ends the actor without ever offering the unstored heads.
//!
//! REST edits are applied in the same batches, as changes by the user's server-side actor id;
//! each is answered after the commit that stores it. The changes of a batch and the projection
//! rows they alter (`projection::delta`, from the operations of exactly those changes) are stored
//! in one transaction, with the events derived from them (`events::derive`, the outbox).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use automerge::{ChangeHash, sync};
use taskflow_proto::DocumentId;
use taskflow_proto::board::{CommentId, TaskId};
use taskflow_proto::wire::{Message, SyncPayload};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::edit::{self, Applied, BoardEdit, EditError};
use super::projection;
use super::state::{DocState, load_document, new_change_actors};
use super::{DocCommand, Queued, Registry};
use crate::events::derive::{self, BoardRef, Merge};
use crate::fanout::Notice;
use crate::link::{ConnId, PeerLink, close_code};
use crate::now_ms;
use crate::store::{Batch, OutboxEvent, ProjectionDelta, StoreError, StoredChange};
use crate::telemetry;

/// Most commands applied before the batch is persisted and answered.
const MAX_BATCH: usize = 256;
/// Appends in a row refused because other nodes kept writing the document before ours could:
/// past this the document is failed rather than retried for ever.
const MAX_STALE_APPENDS: usize = 16;

/// What storing a batch came to.
enum Stored {
    /// Nothing needed storing.
    Nothing,
    /// The batch's changes (or rebuilt projection) are committed.
    Committed { changes: bool },
    /// Another node stored changes of the document first: catch up and try again.
    Stale,
}

pub(super) struct Actor {
    id: DocumentId,
    generation: u64,
    registry: Registry,
    rx: mpsc::Receiver<Queued>,
    /// `None` while nothing is known of the document (not stored, not announced).
    state: Option<DocState>,
    stopping: bool,
    /// REST edits applied but not yet stored: answered after the next commit.
    edits_done: Vec<EditDone>,
    /// The projection is to be rebuilt from the whole document at the next flush; these wait
    /// for it to be stored.
    reproject: bool,
    reprojected: Vec<oneshot::Sender<()>>,
    /// The project whose board this is, once found: where its events come from, and whose
    /// cached view to drop.
    board: Option<BoardRef>,
    /// Other nodes' changes were taken in since the last flush: every peer is answered.
    caught_up: bool,
}

struct EditDone {
    reply: oneshot::Sender<Result<Applied, EditError>>,
    task: TaskId,
    comment: Option<CommentId>,
}

/// Why the actor must end now.
struct Fatal;

impl Actor {
    pub(super) fn new(
        id: DocumentId,
        generation: u64,
        registry: Registry,
        rx: mpsc::Receiver<Queued>,
    ) -> Self {
        Self {
            id,
            generation,
            registry,
            rx,
            state: None,
            stopping: false,
            edits_done: Vec::new(),
            reproject: false,
            reprojected: Vec::new(),
            board: None,
            caught_up: false,
        }
    }

    pub(super) async fn run(mut self) {
        // Subscribed before the first read of the store, so no other node's commit falls
        // between the two unheard.
        self.registry.inner.fanout.open(self.id).await;
        let result = self.run_inner().await;
        if result.is_err() {
            self.fail_everyone();
        }
        self.registry.forget(self.id, self.generation);
        self.registry.inner.fanout.close(self.id);
        // Commands that raced with our ending: after a failure their peers are told; after an
        // eviction they go to the document's next actor.
        self.rx.close();
        while let Ok(Queued { command, .. }) = self.rx.try_recv() {
            match command {
                DocCommand::Sync { link, .. } if result.is_err() => {
                    link.close(
                        close_code::SERVER_ERROR,
                        Some(format!("document {} is unavailable", self.id)),
                    );
                }
                // Notices concern open documents only; a new actor reads the store anyway.
                DocCommand::Shutdown | DocCommand::Remote(_) => {}
                command if !self.stopping && result.is_ok() => {
                    let registry = self.registry.clone();
                    let id = self.id;
                    tokio::spawn(
                        async move { registry.send(id, command, super::Open::Start).await },
                    );
                }
                _ => {}
            }
        }
    }

    async fn run_inner(&mut self) -> Result<(), Fatal> {
        self.open().await?;
        loop {
            let mut batch = match self.next_command().await? {
                Some(command) => vec![command],
                None => return Ok(()),
            };
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let span = tracing::info_span!("batch", commands = batch.len());
            for queued in &batch {
                span.follows_from(&queued.origin);
            }
            let commands = batch.into_iter().map(|q| q.command).collect();
            self.process(commands).instrument(span).await?;
            self.compact(false).await?;
            if self.stopping {
                return Ok(());
            }
        }
    }

    /// Applies a batch of commands, then stores what it changed and answers.
    async fn process(&mut self, batch: Vec<DocCommand>) -> Result<(), Fatal> {
        let mut touched = HashSet::new();
        let merging = std::time::Instant::now();
        for command in batch {
            // A precondition is judged against stored versions: store what came before.
            let conditional = matches!(
                &command,
                DocCommand::Edit {
                    if_match: Some(_),
                    ..
                }
            );
            if conditional && self.has_unstored() {
                self.flush(&touched).await?;
                touched.clear();
            }
            self.handle(command, &mut touched).await?;
        }
        metrics::histogram!(telemetry::MERGE_SECONDS).record(merging.elapsed().as_secs_f64());
        self.flush(&touched).await
    }

    /// Reads the stored document (not materialised: see `DocState`).
    async fn open(&mut self) -> Result<(), Fatal> {
        match self.registry.inner.store.load(&self.id).await {
            Ok(stored) => {
                self.state = stored.map(DocState::dormant);
                Ok(())
            }
            Err(e) => {
                tracing::error!(document = %self.id, error = %e, "loading document failed");
                Err(Fatal)
            }
        }
    }

    /// Loads the Automerge document from the stored bytes, off the async threads.
    async fn materialise(&mut self) -> Result<(), Fatal> {
        let Some(state) = self.state.take() else {
            return Ok(());
        };
        if state.is_materialised() {
            self.state = Some(state);
            return Ok(());
        }
        let loaded = tokio::task::spawn_blocking(move || {
            let doc = load_document(state.stored());
            (state, doc)
        })
        .await;
        match loaded {
            Ok((mut state, Ok(doc))) => {
                state.materialise(doc);
                self.state = Some(state);
                Ok(())
            }
            Ok((state, Err(e))) => {
                self.state = Some(state);
                tracing::error!(document = %self.id, error = %e, "stored document does not load");
                Err(Fatal)
            }
            Err(e) => {
                tracing::error!(document = %self.id, error = %e, "loading the document panicked");
                Err(Fatal)
            }
        }
    }

    /// Waits for the next command. With peers but no traffic, unloads the document after a
    /// while; with no peers, retires after the idle time (`Ok(None)`).
    async fn next_command(&mut self) -> Result<Option<Queued>, Fatal> {
        let config = &self.registry.inner.config;
        let (unload_after, evict_after) = (config.unload_after, config.evict_after);
        loop {
            let has_peers = self.state.as_ref().is_some_and(DocState::has_peers);
            let materialised = self.state.as_ref().is_some_and(DocState::is_materialised);
            if has_peers && !materialised {
                return Ok(self.rx.recv().await);
            }
            let wait = if has_peers { unload_after } else { evict_after };
            tokio::select! {
                command = self.rx.recv() => return Ok(command),
                _ = tokio::time::sleep(wait) => {
                    if has_peers {
                        if let Some(state) = self.state.as_mut()
                            && state.unload()
                        {
                            tracing::debug!(document = %self.id, "unloaded quiet document");
                        }
                        continue;
                    }
                    self.compact(true).await?;
                    if self.registry.retire(self.id, self.generation, &self.rx) {
                        tracing::debug!(document = %self.id, "evicted idle document");
                        return Ok(None);
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        command: DocCommand,
        touched: &mut HashSet<ConnId>,
    ) -> Result<(), Fatal> {
        match command {
            DocCommand::Sync {
                link,
                request,
                may_write,
                message,
            } => {
                return self
                    .handle_sync(link, request, may_write, message, touched)
                    .await;
            }
            DocCommand::Ephemeral {
                from,
                sender_id,
                session_id,
                count,
                data,
            } => {
                if self.relay_ephemeral(Some(from.conn), &sender_id, &session_id, count, &data) {
                    let notice = Notice::Ephemeral {
                        sender_id,
                        session_id,
                        count,
                        data,
                    };
                    self.registry.inner.fanout.publish(self.id, notice);
                }
            }
            DocCommand::Remote(notice) => match notice {
                Notice::Changed { heads, .. } => {
                    if !self.state.as_ref().is_some_and(|s| s.knows(&heads)) {
                        self.catch_up().await?;
                    }
                }
                Notice::Resync => self.catch_up().await?,
                Notice::Ephemeral {
                    sender_id,
                    session_id,
                    count,
                    data,
                } => {
                    self.relay_ephemeral(None, &sender_id, &session_id, count, &data);
                }
            },
            DocCommand::Edit {
                user,
                edit,
                if_match,
                reply,
            } => return self.handle_edit(user, edit, if_match, reply).await,
            DocCommand::Reproject { done } => {
                if self.state.as_ref().is_some_and(|s| !s.is_empty()) {
                    self.materialise().await?;
                    self.reproject = true;
                    self.reprojected.push(done);
                } else {
                    let _ = done.send(());
                }
            }
            DocCommand::Detach { conn } => {
                if let Some(state) = self.state.as_mut() {
                    state.detach(conn);
                }
            }
            DocCommand::Shutdown => self.stopping = true,
        }
        Ok(())
    }

    /// Relays an ephemeral message to this node's peers of the document but its sender's
    /// (`from`, none when it came from another node); false if it was seen already.
    fn relay_ephemeral(
        &mut self,
        from: Option<ConnId>,
        sender_id: &taskflow_proto::PeerId,
        session_id: &str,
        count: u64,
        data: &[u8],
    ) -> bool {
        let Some(state) = self.state.as_mut() else {
            return false;
        };
        if !state.first_sighting(sender_id, session_id, count) {
            return false;
        }
        for link in state.links().filter(|l| Some(l.conn) != from) {
            let relay = Message::Ephemeral {
                sender_id: sender_id.clone(),
                target_id: link.peer_id.clone(),
                document_id: self.id,
                session_id: session_id.to_owned(),
                count,
                data: data.to_vec(),
            };
            link.send(relay.encode());
        }
        true
    }

    /// Takes in what other nodes stored since this actor last read or wrote the document.
    async fn catch_up(&mut self) -> Result<(), Fatal> {
        let store = self.registry.inner.store.clone();
        let Some(state) = self.state.as_mut() else {
            // Nothing was known here: read it as a new actor does.
            self.open().await?;
            self.caught_up = self.state.is_some();
            return Ok(());
        };
        let failed = |id: DocumentId, e: &dyn std::fmt::Display| {
            telemetry::dependency_error("database");
            tracing::error!(document = %id, error = %e, "catching up with other nodes failed");
            Fatal
        };
        let Some(caught) = store
            .catch_up(&self.id, state.stored().last_seq)
            .await
            .map_err(|e| failed(self.id, &e))?
        else {
            return Ok(());
        };
        let before = state.stored().heads.clone();
        if !state.catch_up(caught).map_err(|e| failed(self.id, &e))? {
            let stored = store
                .load(&self.id)
                .await
                .map_err(|e| failed(self.id, &e))?;
            if let Some(stored) = stored {
                state.reload(stored).map_err(|e| failed(self.id, &e))?;
            }
        }
        if state.stored().heads != before {
            tracing::debug!(document = %self.id, "took in changes from other nodes");
            self.caught_up = true;
        }
        Ok(())
    }

    /// Whether anything applied has yet to be stored.
    fn has_unstored(&self) -> bool {
        !self.edits_done.is_empty() || self.state.as_ref().is_some_and(|s| !s.is_persisted())
    }

    /// Applies a REST edit; its answer waits for the commit (see `flush`) unless it fails.
    async fn handle_edit(
        &mut self,
        user: Arc<str>,
        edit: BoardEdit,
        if_match: Option<Vec<String>>,
        reply: oneshot::Sender<Result<Applied, EditError>>,
    ) -> Result<(), Fatal> {
        if self.state.as_ref().is_none_or(|s| s.is_empty()) {
            let _ = reply.send(Err(EditError::NoBoard));
            return Ok(());
        }
        if let Some(tags) = if_match
            && let Err(refusal) = self.check_version(edit.task(), &tags).await
        {
            let _ = reply.send(Err(refusal));
            return Ok(());
        }
        self.materialise().await?;
        let actor = self.registry.server_actor(&user);
        match self.registry.actor_owner(&actor, &user).await {
            Ok(owner) if owner == user => {}
            Ok(owner) => {
                tracing::error!(document = %self.id, %user, %owner, "a server-side actor id is bound to another user");
                let _ = reply.send(Err(EditError::Unavailable));
                return Ok(());
            }
            Err(e) => {
                tracing::error!(document = %self.id, error = %e, "binding a server-side actor id failed");
                let _ = reply.send(Err(EditError::Unavailable));
                return Ok(());
            }
        }
        let Some(state) = self.state.as_mut() else {
            let _ = reply.send(Err(EditError::NoBoard));
            return Ok(());
        };
        let now = now_ms();
        match state.edit(actor, |tx, index| edit::apply(tx, edit, &user, now, index)) {
            Some(Ok((task, comment))) => self.edits_done.push(EditDone {
                reply,
                task,
                comment,
            }),
            Some(Err(refusal)) => {
                let _ = reply.send(Err(refusal));
            }
            None => {
                let _ = reply.send(Err(EditError::Unavailable));
            }
        }
        Ok(())
    }

    /// `If-Match`: the task's stored version must be one of `tags` (`*`: any).
    async fn check_version(&self, task: &TaskId, tags: &[String]) -> Result<(), EditError> {
        let stored = self
            .registry
            .inner
            .store
            .task_in(&self.id.to_string(), task.as_str())
            .await
            .map_err(|e| {
                tracing::warn!(document = %self.id, error = %e, "reading a task version failed");
                EditError::Unavailable
            })?;
        let current = stored
            .ok_or_else(|| EditError::NoTask(task.clone()))?
            .version;
        if tags.iter().any(|t| t == "*" || *t == current) {
            Ok(())
        } else {
            Err(EditError::Stale { current })
        }
    }

    async fn handle_sync(
        &mut self,
        link: PeerLink,
        request: bool,
        may_write: bool,
        message: sync::Message,
        touched: &mut HashSet<ConnId>,
    ) -> Result<(), Fatal> {
        let known = self.state.as_ref().is_some_and(|s| !s.is_empty());
        if request && !known {
            let unavailable = Message::DocUnavailable {
                sender_id: self.registry.server_peer().clone(),
                target_id: link.peer_id.clone(),
                document_id: self.id,
            };
            link.send(unavailable.encode());
            return Ok(());
        }
        if self
            .state
            .as_ref()
            .is_some_and(|s| s.needs_document_for(&message))
        {
            self.materialise().await?;
        }
        if !message.changes.is_empty() {
            if !may_write {
                self.tell(
                    &link,
                    format!(
                        "document {}: viewers cannot change this board; your changes were not accepted",
                        self.id
                    ),
                );
            } else if let Err((code, refusal)) = self.check_authors(&link, &message).await {
                tracing::warn!(document = %self.id, peer = %link.peer_id, user = %link.user, %refusal, "refused changes");
                link.close(code, Some(refusal));
                return Ok(());
            }
        }
        let state = self.state.get_or_insert_with(DocState::new_empty);
        let conn = link.conn;
        state.attach(link.clone());
        state.set_read_only(conn, !may_write);
        if let Err(e) = state.receive(conn, message) {
            tracing::warn!(document = %self.id, peer = %link.peer_id, error = %e, "invalid sync message");
            state.detach(conn);
            link.close(
                close_code::PROTOCOL_ERROR,
                Some(format!(
                    "invalid sync message for document {}: {e}",
                    self.id
                )),
            );
            return Ok(());
        }
        touched.insert(conn);
        Ok(())
    }

    /// Checks that every change `message` would add is by an actor of `link`'s user (binding
    /// actors seen for the first time to them); otherwise the close code and why.
    async fn check_authors(
        &self,
        link: &PeerLink,
        message: &sync::Message,
    ) -> Result<(), (u16, String)> {
        let doc = self.state.as_ref().and_then(DocState::doc);
        let actors = new_change_actors(doc, &message.changes).map_err(|e| {
            (
                close_code::PROTOCOL_ERROR,
                format!("invalid sync message for document {}: {e}", self.id),
            )
        })?;
        for actor in actors {
            let owner = self
                .registry
                .actor_owner(&actor, &link.user)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "binding an actor id failed");
                    (
                        close_code::SERVER_ERROR,
                        "checking the changes' authors failed; try again".to_owned(),
                    )
                })?;
            if owner != link.user {
                return Err((
                    close_code::POLICY,
                    format!(
                        "document {}: actor id {actor} belongs to another user; use an actor id of your own",
                        self.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sends the peer an `error` message that does not end its connection.
    fn tell(&self, link: &PeerLink, message: String) {
        let error = Message::Error {
            sender_id: self.registry.server_peer().clone(),
            target_id: Some(link.peer_id.clone()),
            message,
        };
        link.send(error.encode());
    }

    /// Persists what the batch changed, with its projection rows and events, then answers:
    /// the durability rule's one place.
    async fn flush(&mut self, touched: &HashSet<ConnId>) -> Result<(), Fatal> {
        let mut stale = 0;
        let changed = loop {
            match self.store_batch().await? {
                Stored::Nothing => break false,
                Stored::Committed { changes } => break changes,
                Stored::Stale if stale < MAX_STALE_APPENDS => {
                    stale += 1;
                    self.catch_up().await?;
                }
                Stored::Stale => {
                    tracing::error!(document = %self.id, "other nodes kept writing the document first");
                    return Err(Fatal);
                }
            }
        };
        let everyone = changed || std::mem::take(&mut self.caught_up);
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        let only = if everyone { None } else { Some(touched) };
        if state.outgoing_needs_document(only) {
            self.materialise().await?;
        }
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        let messages = state.outgoing(only);
        let heads = state.heads();
        for (link, message) in messages {
            self.send_sync(&link, message);
        }
        self.answer_edits(&heads);
        Ok(())
    }

    /// Stores the changes applied since the last flush (and a rebuilt projection), on top of
    /// the heads the store held when this actor last read or wrote it; then tells other nodes.
    async fn store_batch(&mut self) -> Result<Stored, Fatal> {
        let Some(state) = self.state.as_ref() else {
            return Ok(Stored::Nothing);
        };
        let new = state.new_changes();
        let heads = state.heads();
        let base = state.stored().heads.clone();
        let changed = !new.is_empty();
        if !changed && !self.reproject {
            return Ok(Stored::Nothing);
        }
        let now = now_ms();
        let board = if changed { self.board().await? } else { None };
        let authors = match &board {
            Some(_) => self.registry.authors(&new).await.map_err(|e| {
                tracing::error!(document = %self.id, error = %e, "finding the changes' authors failed");
                Fatal
            })?,
            None => Default::default(),
        };
        let (projection, events) =
            self.derive(&heads, &new, board.as_ref().map(|b| (b, &authors)), now);
        let changes: Vec<StoredChange> = new.into_iter().map(StoredChange::from).collect();
        let batch = Batch {
            base: &base,
            changes: &changes,
            heads: &heads,
            projection: &projection,
            events: &events,
        };
        let persisting = std::time::Instant::now();
        let append = self.registry.inner.store.append(&self.id, batch, now);
        let span = tracing::info_span!("persist", changes = changes.len(), events = events.len());
        let last_seq = match append.instrument(span).await {
            Ok(last_seq) => last_seq,
            Err(StoreError::Stale(_)) => {
                tracing::debug!(document = %self.id, "another node stored changes first");
                return Ok(Stored::Stale);
            }
            Err(e) => {
                telemetry::dependency_error("database");
                tracing::error!(document = %self.id, error = %e, "storing changes failed");
                return Err(Fatal);
            }
        };
        metrics::histogram!(telemetry::PERSIST_SECONDS).record(persisting.elapsed().as_secs_f64());
        if !events.is_empty() {
            self.registry.inner.signals.events_written();
        }
        if changed {
            let notice = Notice::Changed {
                heads: heads.clone(),
                at_ms: now,
            };
            self.registry.inner.fanout.publish(self.id, notice);
        }
        if let Some(state) = self.state.as_mut() {
            state.mark_persisted(changes, heads, last_seq);
            // A board rebuilt at start-up with nobody on it goes back to its stored bytes:
            // the backlog may hold many boards.
            if self.reproject && !state.has_peers() {
                state.unload();
            }
        }
        self.reproject = false;
        for done in self.reprojected.drain(..) {
            let _ = done.send(());
        }
        if !projection.is_empty() {
            self.invalidate_project().await;
        }
        Ok(Stored::Committed { changes: changed })
    }

    /// The projection rows and (for a project's board, with its changes' authors) the events
    /// for `new`, the changes applied since the last flush.
    fn derive(
        &self,
        heads: &[ChangeHash],
        new: &[automerge::Change],
        board: Option<(&BoardRef, &HashMap<automerge::ActorId, Arc<str>>)>,
        now: i64,
    ) -> (ProjectionDelta, Vec<OutboxEvent>) {
        let Some(state) = self.state.as_ref() else {
            return Default::default();
        };
        let Some(doc) = state.doc() else {
            return Default::default();
        };
        // A board's first upload is all new: its projection is read whole rather than change
        // by change, and what the changes touched is needed only for events.
        let whole = self.reproject || state.stored().heads.is_empty();
        let touched = if whole && board.is_none() {
            projection::Touched::default()
        } else {
            projection::Touched::of_changes(doc, new)
        };
        let projection = if whole {
            projection::rebuild(doc, heads)
        } else {
            projection::delta(doc, &touched, heads)
        };
        let events = match board {
            Some((board, authors)) if !new.is_empty() => {
                let merge = Merge {
                    doc,
                    before: &state.stored().heads,
                    heads,
                    changes: new,
                    touched: &touched,
                    authors,
                };
                derive::board_events(board, &merge, now)
                    .iter()
                    .map(|event| OutboxEvent::of(event, now))
                    .collect()
            }
            _ => Vec::new(),
        };
        (projection, events)
    }

    /// The project whose board this document is, looked up until found (a project can be
    /// made for a document that already exists).
    async fn board(&mut self) -> Result<Option<BoardRef>, Fatal> {
        if let Some(board) = &self.board {
            return Ok(Some(board.clone()));
        }
        let found = self
            .registry
            .inner
            .store
            .project_of_document(&self.id.to_string())
            .await
            .map_err(|e| {
                // Without it the merge's events could not be written: nothing is stored.
                tracing::error!(document = %self.id, error = %e, "finding the board's project failed");
                Fatal
            })?;
        let board = found.map(|p| BoardRef {
            workspace_id: p.workspace_id,
            project_id: p.id,
        });
        self.board.clone_from(&board);
        Ok(board)
    }

    /// Answers the REST edits whose changes are now stored.
    fn answer_edits(&mut self, heads: &[ChangeHash]) {
        for done in self.edits_done.drain(..) {
            let applied = Applied {
                task: done.task,
                comment: done.comment,
                heads: heads.to_vec(),
            };
            // A caller that gave up needs no answer; its change stands.
            let _ = done.reply.send(Ok(applied));
        }
    }

    /// Drops the cached view of this board's project (it shows the board's columns and counts).
    async fn invalidate_project(&mut self) {
        match self.board().await {
            Ok(Some(board)) => {
                self.registry
                    .inner
                    .cache
                    .invalidate(&board.project_id)
                    .await
            }
            Ok(None) => {}
            Err(Fatal) => {}
        }
    }

    fn send_sync(&self, link: &PeerLink, message: sync::Message) {
        let frame = Message::Sync(SyncPayload {
            sender_id: self.registry.server_peer().clone(),
            target_id: link.peer_id.clone(),
            document_id: self.id,
            data: message.encode(),
        });
        link.send(frame.encode());
    }

    /// Folds the stored chunks into a new snapshot when there are enough of them, or whenever
    /// there are any if `any` (before the document leaves memory).
    async fn compact(&mut self, any: bool) -> Result<(), Fatal> {
        let threshold = self.registry.inner.config.compact_after_changes;
        let Some(state) = self.state.take() else {
            return Ok(());
        };
        let due = if any {
            state.stored_chunks() > 0
        } else {
            state.compaction_due(threshold)
        };
        if !due || !state.is_persisted() {
            self.state = Some(state);
            return Ok(());
        }
        // A dormant document is loaded just for the save and dropped again.
        let saved = tokio::task::spawn_blocking(move || {
            let snapshot = match state.doc() {
                Some(doc) => Ok(doc.save()),
                None => load_document(state.stored()).map(|doc| doc.save()),
            };
            (state, snapshot)
        })
        .await;
        let (mut state, snapshot) = match saved {
            Ok((state, Ok(snapshot))) => (state, snapshot),
            Ok((state, Err(e))) => {
                self.state = Some(state);
                tracing::error!(document = %self.id, error = %e, "stored document does not load");
                return Err(Fatal);
            }
            Err(_) => {
                tracing::error!(document = %self.id, "compaction panicked");
                return Err(Fatal);
            }
        };
        let folded: Vec<_> = state.stored().changes.iter().map(|c| c.hash).collect();
        let heads = state.heads();
        let result = self
            .registry
            .inner
            .store
            .compact(&self.id, &snapshot, &heads, &folded, now_ms())
            .await;
        match result {
            Ok(false) => {
                // Another node stored changes meanwhile: take them in (a later compaction
                // folds them too) rather than wait for a notice that may be lost.
                self.state = Some(state);
                self.catch_up().await
            }
            Ok(true) => {
                tracing::debug!(document = %self.id, folded = folded.len(), bytes = snapshot.len(), "compacted");
                state.mark_compacted(snapshot, &folded);
                self.state = Some(state);
                Ok(())
            }
            Err(e) => {
                // The old rows are intact; keep serving from memory and try again later.
                tracing::warn!(document = %self.id, error = %e, "compaction failed");
                self.state = Some(state);
                Ok(())
            }
        }
    }

    fn fail_everyone(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        for link in state.links() {
            link.close(
                close_code::SERVER_ERROR,
                Some(format!(
                    "document {} is unavailable: storage failed",
                    self.id
                )),
            );
        }
    }
}
