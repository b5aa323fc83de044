//! One board held by this client: the Automerge document, what of it is in the local store, and
//! what the server is known to hold. Sans-IO; the engine does the storing and sending.

use std::collections::BTreeSet;

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, AutomergeError, ChangeHash, PatchLog, ReadDoc};
use taskflow_proto::DocumentId;

use crate::store::StoredReplica;

/// Fold the chunks into one snapshot once there are this many (keeps opening a board fast).
pub const COMPACT_AFTER_CHUNKS: usize = 256;

#[derive(Debug)]
pub struct Replica {
    pub id: DocumentId,
    pub doc: Automerge,
    /// The heads the local store holds.
    saved_heads: Vec<ChangeHash>,
    /// The store chunks this replica contains.
    pub chunks: BTreeSet<i64>,
    /// Sync state with the connected server; `None` while offline.
    pub sync: Option<sync::State>,
    /// What the server last agreed it holds (kept across connections for the pending count).
    pub server_shared: Vec<ChangeHash>,
    /// The server said it has no such document (and we have nothing of it either).
    pub unavailable: bool,
}

impl Replica {
    pub fn from_doc(id: DocumentId, doc: Automerge, chunks: BTreeSet<i64>) -> Replica {
        Replica {
            id,
            saved_heads: doc.get_heads(),
            doc,
            chunks,
            sync: None,
            server_shared: Vec::new(),
            unavailable: false,
        }
    }

    pub fn load(id: DocumentId, stored: StoredReplica) -> Result<Replica, AutomergeError> {
        let mut doc = if stored.snapshot.is_empty() {
            Automerge::new()
        } else {
            Automerge::load(&stored.snapshot)?
        };
        let mut chunks = BTreeSet::new();
        for chunk in stored.chunks {
            doc.load_incremental(&chunk.data)?;
            chunks.insert(chunk.seq);
        }
        Ok(Replica::from_doc(id, doc, chunks))
    }

    /// The changes not yet in the local store, as one chunk.
    pub fn unsaved(&self) -> Option<Vec<u8>> {
        (self.doc.get_heads() != self.saved_heads).then(|| self.doc.save_after(&self.saved_heads))
    }

    pub fn mark_saved(&mut self, seq: i64) {
        self.saved_heads = self.doc.get_heads();
        self.chunks.insert(seq);
    }

    /// After a compaction: the store holds exactly the doc as one snapshot.
    pub fn mark_compacted(&mut self) {
        self.saved_heads = self.doc.get_heads();
        self.chunks.clear();
    }

    pub fn needs_compaction(&self) -> bool {
        self.chunks.len() >= COMPACT_AFTER_CHUNKS
    }

    pub fn is_empty(&self) -> bool {
        self.doc.get_heads().is_empty()
    }

    /// Adopts a sync state saved from an earlier connection, unless it names changes this
    /// replica lacks (another process's store write we have not loaded): then starting afresh
    /// is the safe choice, it only costs a fuller first exchange.
    pub fn resume_sync(&mut self, saved: Option<&[u8]>) {
        let state = saved
            .and_then(|bytes| sync::State::decode(bytes).ok())
            .filter(|s| {
                s.shared_heads
                    .iter()
                    .all(|h| self.doc.get_change_by_hash(h).is_some())
            })
            .unwrap_or_default();
        self.server_shared = state.shared_heads.clone();
        self.sync = Some(state);
    }

    /// Applies a sync message from the server. Returns the patches of what changed and whether
    /// the heads both sides share moved (so the sync state is worth saving).
    pub fn receive(&mut self, message: sync::Message) -> Result<(PatchLog, bool), AutomergeError> {
        let state = self.sync.get_or_insert_with(sync::State::new);
        let before = state.shared_heads.clone();
        let mut log = PatchLog::active();
        self.doc
            .receive_sync_message_log_patches(state, message, &mut log)?;
        let moved = state.shared_heads != before;
        self.server_shared = state.shared_heads.clone();
        if !self.is_empty() {
            self.unavailable = false;
        }
        Ok((log, moved))
    }

    /// The next sync message for the server, if there is anything to say.
    pub fn generate(&mut self) -> Option<sync::Message> {
        let state = self.sync.as_mut()?;
        self.doc.generate_sync_message(state)
    }

    pub fn encoded_sync_state(&self) -> Option<Vec<u8>> {
        self.sync.as_ref().map(sync::State::encode)
    }

    /// Changes this replica has that the server is not known to hold.
    pub fn pending(&self) -> usize {
        if self.server_shared == self.doc.get_heads() {
            return 0;
        }
        // Metadata only: building the changes themselves would cost their operations too.
        self.doc.get_changes_meta(&self.server_shared).len()
    }

    /// The server has said its heads are exactly ours.
    pub fn in_sync(&self) -> bool {
        let Some(state) = &self.sync else {
            return false;
        };
        let mut ours = self.doc.get_heads();
        ours.sort();
        state.their_heads.as_ref().is_some_and(|theirs| {
            let mut theirs = theirs.clone();
            theirs.sort();
            theirs == ours
        })
    }
}
