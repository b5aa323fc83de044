//! One open document and its peers' sync states: the sans-IO core of a document actor.
//!
//! Nothing here touches the network, the database or a clock. The actor feeds it received sync
//! messages, asks for the changes still to persist, reports them persisted, and only then asks
//! for the messages to send — which is how the durability rule holds: heads are never offered
//! before the changes behind them are committed.
//!
//! A peer that arrives with no heads gets the whole document as the stored bytes themselves
//! (snapshot + chunks in one v2 sync message), not a fresh `save()`: the store's form is kept
//! here for that. Its sync state is then seeded so that later messages to it are incremental.

use std::collections::{BTreeMap, HashMap, HashSet};

use automerge::sync::{self, BloomFilter, ChunkList, Have, MessageFlags, MessageVersion, SyncDoc};
use automerge::{Automerge, AutomergeError, ChangeHash};
use taskflow_proto::PeerId;

use crate::link::{ConnId, PeerLink};
use crate::store::{StoredChange, StoredDoc};

/// Chunk bytes below which size alone never triggers a compaction (small documents compact by
/// chunk count only, keeping writes per edit low).
const COMPACT_MIN_CHUNK_BYTES: usize = 64 * 1024;

/// How many `(sender, session)` pairs of ephemeral counters a document remembers.
const EPHEMERAL_SESSIONS_REMEMBERED: usize = 4096;

struct PeerSync {
    link: PeerLink,
    state: sync::State,
    /// We answered this peer's empty heads with the whole document; until it says it has
    /// heads, its messages predate that answer and need no reply.
    sent_whole_doc: bool,
    /// The peer reads v2 sync messages (the whole-document form).
    supports_v2: bool,
}

pub struct DocState {
    doc: Automerge,
    stored: StoredDoc,
    peers: BTreeMap<ConnId, PeerSync>,
    ephemeral_seen: HashMap<(PeerId, String), u64>,
}

impl std::fmt::Debug for DocState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocState")
            .field("heads", &self.stored.heads)
            .field("peers", &self.peers.len())
            .finish()
    }
}

/// Builds the v2 sync message that hands a peer with no heads the whole document.
pub fn whole_doc_message(stored: &StoredDoc) -> sync::Message {
    let mut flags = MessageFlags::new();
    flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
    sync::Message {
        heads: stored.heads.clone(),
        need: Vec::new(),
        // "Everything up to these heads": the peer will have exactly that once it applies
        // this message, so its next message to us carries only its own new changes.
        have: vec![Have {
            last_sync: stored.heads.clone(),
            bloom: BloomFilter::default(),
        }],
        changes: ChunkList::from(stored.concatenated()),
        flags: Some(flags),
        version: MessageVersion::V2,
    }
}

/// Whether a sync message comes from a peer with no heads that understands v2 messages,
/// i.e. one we may answer with the whole document.
pub fn is_fresh_v2_request(message: &sync::Message) -> bool {
    message.heads.is_empty() && message.flags.is_some()
}

impl DocState {
    /// A document that exists only in memory so far (announced by a peer, nothing stored).
    pub fn new_empty() -> Self {
        Self::from_parts(Automerge::new(), StoredDoc::default())
    }

    /// Materialises a stored document. CPU-heavy for big documents: run it off the async threads.
    pub fn load(stored: StoredDoc) -> Result<Self, AutomergeError> {
        let doc = Automerge::load(&stored.concatenated())?;
        Ok(Self::from_parts(doc, stored))
    }

    fn from_parts(doc: Automerge, stored: StoredDoc) -> Self {
        Self {
            doc,
            stored,
            peers: BTreeMap::new(),
            ephemeral_seen: HashMap::new(),
        }
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    pub fn doc(&self) -> &Automerge {
        &self.doc
    }

    pub fn is_empty(&self) -> bool {
        self.stored.heads.is_empty() && self.doc.get_heads().is_empty()
    }

    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn links(&self) -> impl Iterator<Item = &PeerLink> {
        self.peers.values().map(|p| &p.link)
    }

    pub fn attach(&mut self, link: PeerLink) {
        self.peers.entry(link.conn).or_insert_with(|| PeerSync {
            link,
            state: sync::State::new(),
            sent_whole_doc: false,
            supports_v2: false,
        });
    }

    pub fn detach(&mut self, conn: ConnId) -> Option<PeerLink> {
        self.peers.remove(&conn).map(|p| p.link)
    }

    /// Applies a peer's sync message. On error nothing from it is kept in the sync state and
    /// the caller should drop the peer.
    pub fn receive(&mut self, conn: ConnId, message: sync::Message) -> Result<(), AutomergeError> {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        self.doc.receive_sync_message(&mut peer.state, message)?;
        // Automerge re-sends the whole document whenever the changes due exceed a third of the
        // document's change count — often right after a fresh fetch of a board made of few
        // large changes. We send whole documents ourselves (from the stored bytes, once), so
        // automerge is told the peer speaks v1 only and always sends increments.
        if let Some(capabilities) = peer.state.their_capabilities.as_mut()
            && capabilities.contains(&sync::Capability::MessageV2)
        {
            peer.supports_v2 = true;
            capabilities.retain(|c| c != &sync::Capability::MessageV2);
        }
        Ok(())
    }

    /// Records that this peer was sent [`whole_doc_message`] of the current stored form.
    pub fn mark_whole_doc_sent(&mut self, conn: ConnId) {
        let heads = self.stored.heads.clone();
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.sent_whole_doc = true;
            peer.state.last_sent_heads = heads;
            peer.state.have_responded = true;
            peer.state.in_flight = true;
        }
    }

    /// Changes in memory that the store does not hold yet.
    pub fn unpersisted(&self) -> Vec<StoredChange> {
        let heads = self.doc.get_heads();
        if heads == self.stored.heads {
            return Vec::new();
        }
        self.doc
            .get_changes(&self.stored.heads)
            .into_iter()
            .map(|mut c| StoredChange {
                hash: c.hash(),
                data: c.bytes().into_owned(),
            })
            .collect()
    }

    /// The store committed `changes` (from [`Self::unpersisted`]) with heads `heads`.
    pub fn mark_persisted(&mut self, changes: Vec<StoredChange>, heads: Vec<ChangeHash>) {
        self.stored.changes.extend(changes);
        self.stored.heads = heads;
    }

    /// Whether every change in memory is in the store.
    pub fn is_persisted(&self) -> bool {
        self.doc.get_heads() == self.stored.heads
    }

    /// The sync messages to send now, for the peers in `only` (or all peers). Call only when
    /// [`Self::is_persisted`].
    pub fn outgoing(&mut self, only: Option<&HashSet<ConnId>>) -> Vec<(PeerLink, sync::Message)> {
        debug_assert!(
            self.is_persisted(),
            "durability rule: no heads before they are stored"
        );
        let mut out = Vec::new();
        for (conn, peer) in &mut self.peers {
            if only.is_some_and(|set| !set.contains(conn)) {
                continue;
            }
            let their_heads_empty = peer.state.their_heads.as_ref().is_some_and(Vec::is_empty);
            if their_heads_empty && peer.sent_whole_doc {
                continue;
            }
            if their_heads_empty && peer.supports_v2 && !self.stored.heads.is_empty() {
                out.push((peer.link.clone(), whole_doc_message(&self.stored)));
                peer.sent_whole_doc = true;
                peer.state.last_sent_heads = self.stored.heads.clone();
                peer.state.have_responded = true;
                peer.state.in_flight = true;
                continue;
            }
            if let Some(message) = self.doc.generate_sync_message(&mut peer.state) {
                out.push((peer.link.clone(), message));
            }
        }
        out
    }

    /// Remembers an ephemeral message's counter; false when it was seen already.
    pub fn first_sighting(&mut self, sender: &PeerId, session: &str, count: u64) -> bool {
        let key = (sender.clone(), session.to_owned());
        if let Some(seen) = self.ephemeral_seen.get(&key) {
            if *seen >= count {
                return false;
            }
        } else if self.ephemeral_seen.len() >= EPHEMERAL_SESSIONS_REMEMBERED {
            self.ephemeral_seen.clear();
        }
        self.ephemeral_seen.insert(key, count);
        true
    }

    /// Whether the stored chunks should be folded into a new snapshot: there are many of them,
    /// or they outweigh the snapshot (so fresh peers would mostly get raw changes to replay).
    pub fn compaction_due(&self, max_chunks: usize) -> bool {
        let chunks = self.stored.changes.len();
        let chunk_bytes: usize = self.stored.changes.iter().map(|c| c.data.len()).sum();
        let snapshot_bytes = self.stored.snapshot.as_ref().map_or(0, Vec::len);
        chunks > 0
            && (chunks >= max_chunks || chunk_bytes >= snapshot_bytes.max(COMPACT_MIN_CHUNK_BYTES))
    }

    /// Number of chunks stored beside the snapshot.
    pub fn stored_chunks(&self) -> usize {
        self.stored.changes.len()
    }

    pub fn stored(&self) -> &StoredDoc {
        &self.stored
    }

    /// The store now holds `snapshot` (the whole document at `heads`) in place of the chunks
    /// `folded`.
    pub fn mark_compacted(&mut self, snapshot: Vec<u8>, folded: &[ChangeHash]) {
        let folded: HashSet<&ChangeHash> = folded.iter().collect();
        self.stored.changes.retain(|c| !folded.contains(&c.hash));
        self.stored.snapshot = Some(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use taskflow_proto::board::ops::{self, NewTask};
    use crate::link::Outbox;

    fn link(conn: ConnId) -> (PeerLink, Outbox) {
        let (link, outbox) = PeerLink::new(conn, 1 << 20);
        (link.with_peer(PeerId::new(format!("p{conn}"))), outbox)
    }

    fn board_with_tasks(n: usize) -> Automerge {
        let mut doc = automerge::AutoCommit::new();
        ops::create_board(&mut doc, "B").expect("board");
        doc.commit();
        for i in 0..n {
            ops::add_task(&mut doc, NewTask::titled(format!("task {i}"), "ann"), 0).expect("task");
            doc.commit();
        }
        doc.document().clone()
    }

    /// A client replica connected to the server state as connection `conn`.
    struct Client {
        conn: ConnId,
        doc: Automerge,
        state: sync::State,
        /// Sizes of the sync messages this client received from the server.
        received: Vec<usize>,
    }

    impl Client {
        fn new(conn: ConnId, doc: Automerge, server: &mut DocState) -> Self {
            let (l, rx) = link(conn);
            std::mem::forget(rx);
            server.attach(l);
            Self {
                conn,
                doc,
                state: sync::State::new(),
                received: Vec::new(),
            }
        }
    }

    /// Runs every client against the server to a fixpoint, persisting as the actor does
    /// before anything is sent.
    fn settle(server: &mut DocState, clients: &mut [Client]) {
        for _ in 0..20 {
            let mut progressed = false;
            for c in clients.iter_mut() {
                if let Some(m) = c.doc.generate_sync_message(&mut c.state) {
                    server.receive(c.conn, m).expect("server receives");
                    progressed = true;
                }
            }
            let changes = server.unpersisted();
            let heads = server.heads();
            server.mark_persisted(changes, heads);
            for (link, m) in server.outgoing(None) {
                let bytes = m.encode();
                let c = clients
                    .iter_mut()
                    .find(|c| c.conn == link.conn)
                    .expect("known client");
                c.received.push(bytes.len());
                let m = sync::Message::decode(&bytes).expect("decode");
                c.doc
                    .receive_sync_message(&mut c.state, m)
                    .expect("client receives");
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
        panic!("sync did not settle");
    }

    #[test]
    fn a_fresh_peer_gets_the_whole_doc_once_and_then_only_increments() {
        let source = board_with_tasks(300);
        let bytes = source.save();
        let stored = StoredDoc {
            snapshot: Some(bytes.clone()),
            changes: Vec::new(),
            heads: source.get_heads(),
        };
        let mut server = DocState::load(stored).expect("load");
        let mut clients = vec![Client::new(1, Automerge::new(), &mut server)];
        settle(&mut server, &mut clients);
        assert_eq!(
            clients[0].doc.get_heads(),
            source.get_heads(),
            "client has the document"
        );
        assert!(
            clients[0].received[0] >= bytes.len(),
            "first reply carries the stored document"
        );
        let whole_doc_replies = clients[0]
            .received
            .iter()
            .filter(|&&n| n >= bytes.len())
            .count();
        assert_eq!(whole_doc_replies, 1, "{:?}", clients[0].received);

        // A second peer (which has the document) edits; the first gets a small increment.
        clients[0].received.clear();
        let mut other = source.clone();
        let mut tx = other.transaction();
        tx.put(automerge::ROOT, "name", "Renamed").expect("put");
        tx.commit();
        clients.push(Client::new(2, other, &mut server));
        settle(&mut server, &mut clients);
        assert_eq!(clients[0].doc.get_heads(), clients[1].doc.get_heads());
        let largest = clients[0].received.iter().copied().max().unwrap_or(0);
        assert!(
            largest < 1_000,
            "incremental after the whole document, got {:?}",
            clients[0].received
        );
    }

    #[test]
    fn nothing_unpersisted_means_no_chunks_to_store() {
        let mut server = DocState::new_empty();
        assert!(server.unpersisted().is_empty());
        assert!(server.is_persisted());
        let (l, _rx) = link(1);
        server.attach(l);
        let client = board_with_tasks(1);
        let mut state = sync::State::new();
        let m = client.generate_sync_message(&mut state).expect("announce");
        server.receive(1, m).expect("receive");
        // Heads announced, changes not yet sent: still nothing new in memory.
        assert!(server.unpersisted().is_empty());
    }

    #[test]
    fn ephemeral_counters_drop_repeats() {
        let mut state = DocState::new_empty();
        let p = PeerId::new("a");
        assert!(state.first_sighting(&p, "s", 1));
        assert!(!state.first_sighting(&p, "s", 1));
        assert!(state.first_sighting(&p, "s", 2));
        assert!(state.first_sighting(&p, "t", 1));
        assert!(!state.first_sighting(&p, "s", 2));
    }
}
