//! The document actor: the single task that owns one open document.
//!
//! Its loop takes a batch of queued commands, applies every received sync message, stores the
//! new changes in one transaction, and only after the commit sends each peer its next sync
//! message — one per peer per batch, however many changes the batch held. A storage failure
//! closes the document's peers and ends the actor without ever offering the unstored heads.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use automerge::sync;
use taskflow_proto::DocumentId;
use taskflow_proto::wire::{Message, SyncPayload};
use tokio::sync::mpsc;

use super::state::{DocState, is_fresh_v2_request, whole_doc_message};
use super::{DocCommand, Registry};
use crate::link::{ConnId, PeerLink, close_code};

/// Most commands applied before the batch is persisted and answered.
const MAX_BATCH: usize = 256;

pub(super) struct Actor {
    id: DocumentId,
    generation: u64,
    registry: Registry,
    rx: mpsc::Receiver<DocCommand>,
    /// `None` while nothing is known of the document (not stored, not announced).
    state: Option<DocState>,
    /// Peers answered with the stored bytes before the document was materialised; their
    /// sync states are seeded once it is.
    answered_early: HashSet<ConnId>,
    stopping: bool,
}

/// Why the actor must end now.
struct Fatal;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Actor {
    pub(super) fn new(
        id: DocumentId,
        generation: u64,
        registry: Registry,
        rx: mpsc::Receiver<DocCommand>,
    ) -> Self {
        Self {
            id,
            generation,
            registry,
            rx,
            state: None,
            answered_early: HashSet::new(),
            stopping: false,
        }
    }

    pub(super) async fn run(mut self) {
        let result = self.run_inner().await;
        if result.is_err() {
            self.fail_everyone();
        }
        self.registry.forget(self.id, self.generation);
        // Commands that raced with our ending: after a failure their peers are told; after an
        // eviction they go to the document's next actor.
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            match command {
                DocCommand::Sync { link, .. } if result.is_err() => {
                    link.close(
                        close_code::SERVER_ERROR,
                        Some(format!("document {} is unavailable", self.id)),
                    );
                }
                DocCommand::Shutdown => {}
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
        let mut deferred = self.open().await?;
        loop {
            let mut batch = std::mem::take(&mut deferred);
            if batch.is_empty() {
                match self.next_command().await {
                    Some(command) => batch.push(command),
                    None => return Ok(()),
                }
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let mut touched = HashSet::new();
            for command in batch {
                self.handle(command, &mut touched);
            }
            self.flush(&touched).await?;
            self.compact_if_due().await?;
            if self.stopping {
                return Ok(());
            }
        }
    }

    /// Loads the stored document. While it is being materialised, peers that ask for it from
    /// scratch are answered with the stored bytes straight away; other commands wait.
    async fn open(&mut self) -> Result<Vec<DocCommand>, Fatal> {
        let store = self.registry.inner.store.clone();
        let stored = match store.load(&self.id).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(document = %self.id, error = %e, "loading document failed");
                return Err(Fatal);
            }
        };
        let Some(stored) = stored else {
            return Ok(Vec::new());
        };
        let early_reply = whole_doc_message(&stored);
        let mut materialise = tokio::task::spawn_blocking(move || DocState::load(stored));
        let mut deferred = Vec::new();
        let state = loop {
            tokio::select! {
                biased;
                loaded = &mut materialise => break loaded,
                command = self.rx.recv() => match command {
                    Some(command) => {
                        if let DocCommand::Sync { link, message, .. } = &command
                            && is_fresh_v2_request(message)
                            && !self.answered_early.contains(&link.conn)
                        {
                            self.send_sync(link, early_reply.clone());
                            self.answered_early.insert(link.conn);
                        }
                        deferred.push(command);
                    }
                    None => return Ok(deferred),
                },
            }
        };
        match state {
            Ok(Ok(state)) => {
                self.state = Some(state);
                Ok(deferred)
            }
            Ok(Err(e)) => {
                tracing::error!(document = %self.id, error = %e, "stored document does not load");
                Err(Fatal)
            }
            Err(e) => {
                tracing::error!(document = %self.id, error = %e, "materialising the document panicked");
                Err(Fatal)
            }
        }
    }

    /// Waits for the next command; with no peers, retires after the idle time.
    async fn next_command(&mut self) -> Option<DocCommand> {
        loop {
            let idle = self.state.as_ref().is_none_or(|s| !s.has_peers());
            if !idle {
                return self.rx.recv().await;
            }
            let evict_after = self.registry.inner.config.evict_after;
            tokio::select! {
                command = self.rx.recv() => return command,
                _ = tokio::time::sleep(evict_after) => {
                    if self.compact(true).await.is_err() {
                        return None;
                    }
                    if self.registry.retire(self.id, self.generation, &self.rx) {
                        tracing::debug!(document = %self.id, "evicted idle document");
                        return None;
                    }
                }
            }
        }
    }

    fn handle(&mut self, command: DocCommand, touched: &mut HashSet<ConnId>) {
        match command {
            DocCommand::Sync {
                link,
                request,
                message,
            } => self.handle_sync(link, request, message, touched),
            DocCommand::Ephemeral {
                from,
                sender_id,
                session_id,
                count,
                data,
            } => {
                let Some(state) = self.state.as_mut() else {
                    return;
                };
                if !state.first_sighting(&sender_id, &session_id, count) {
                    return;
                }
                for link in state.links().filter(|l| l.conn != from.conn) {
                    let relay = Message::Ephemeral {
                        sender_id: sender_id.clone(),
                        target_id: link.peer_id.clone(),
                        document_id: self.id,
                        session_id: session_id.clone(),
                        count,
                        data: data.clone(),
                    };
                    link.send(relay.encode());
                }
            }
            DocCommand::Detach { conn } => {
                if let Some(state) = self.state.as_mut() {
                    state.detach(conn);
                }
                self.answered_early.remove(&conn);
            }
            DocCommand::Shutdown => self.stopping = true,
        }
    }

    fn handle_sync(
        &mut self,
        link: PeerLink,
        request: bool,
        message: sync::Message,
        touched: &mut HashSet<ConnId>,
    ) {
        let known = self.state.as_ref().is_some_and(|s| !s.is_empty());
        if request && !known {
            let unavailable = Message::DocUnavailable {
                sender_id: self.registry.server_peer().clone(),
                target_id: link.peer_id.clone(),
                document_id: self.id,
            };
            link.send(unavailable.encode());
            return;
        }
        let state = self.state.get_or_insert_with(DocState::new_empty);
        let conn = link.conn;
        state.attach(link.clone());
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
            return;
        }
        if self.answered_early.remove(&conn) {
            state.mark_whole_doc_sent(conn);
        }
        touched.insert(conn);
    }

    /// Persists what the batch changed, then answers: the durability rule's one place.
    async fn flush(&mut self, touched: &HashSet<ConnId>) -> Result<(), Fatal> {
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        let changes = state.unpersisted();
        let changed = !changes.is_empty();
        if changed {
            let heads = state.heads();
            if let Err(e) = self
                .registry
                .inner
                .store
                .append(&self.id, &changes, &heads, now_ms())
                .await
            {
                tracing::error!(document = %self.id, error = %e, "storing changes failed");
                return Err(Fatal);
            }
            state.mark_persisted(changes, heads);
        }
        let only = if changed { None } else { Some(touched) };
        let messages = state.outgoing(only);
        for (link, message) in messages {
            self.send_sync(&link, message);
        }
        Ok(())
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

    async fn compact_if_due(&mut self) -> Result<(), Fatal> {
        self.compact(false).await
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
        let saved = tokio::task::spawn_blocking(move || {
            let snapshot = state.doc().save();
            (state, snapshot)
        })
        .await;
        let Ok((mut state, snapshot)) = saved else {
            tracing::error!(document = %self.id, "compaction panicked");
            return Err(Fatal);
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
            Ok(()) => {
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
