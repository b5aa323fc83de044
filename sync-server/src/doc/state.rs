//! One open document and its peers' sync states: the sans-IO core of a document actor.
//!
//! Nothing here touches the network, the database or a clock. The actor feeds it received sync
//! messages, asks for the changes still to persist, reports them persisted, and only then asks
//! for the messages to send — which is how the durability rule holds: heads are never offered
//! before the changes behind them are committed.
//!
//! The Automerge document is materialised only when needed. An open document starts as its
//! stored bytes: a peer with no heads gets those bytes as one v2 sync message (no `save()`, no
//! load), and peers that are in sync exchange heads-only messages, which are answered from the
//! stored heads. The document is loaded when a peer brings changes or heads we must compare,
//! and can be dropped again ([`DocState::unload`]) once everyone is in sync. An Automerge board
//! of 10,000 tasks takes tens of MiB in memory; its stored form under one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use automerge::sync::{self, BloomFilter, ChunkList, Have, MessageFlags, MessageVersion, SyncDoc};
use automerge::transaction::Transaction;
use automerge::{ActorId, Automerge, AutomergeError, Change, ChangeHash, ReadDoc};
use sha2::{Digest, Sha256};
use taskflow_proto::PeerId;
use taskflow_proto::board::OrderIndex;

use super::projection::Touched;
use crate::link::{ConnId, PeerLink};
use crate::store::{CatchUp, StoredChange, StoredDoc};

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
    /// The heads of the last message we actually sent this peer: what it knows we hold.
    confirmed: Vec<ChangeHash>,
}

impl PeerSync {
    fn their_heads_empty(&self) -> bool {
        self.state.their_heads.as_ref().is_some_and(Vec::is_empty)
    }

    /// Whether this peer has exactly `heads` and asks for nothing.
    fn in_sync_at(&self, heads: &[ChangeHash]) -> bool {
        self.state.their_heads.as_deref() == Some(heads)
            && self.state.their_need.as_ref().is_none_or(Vec::is_empty)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Nothing,
    /// The stored bytes, to a peer with no heads.
    WholeDocument,
    /// Our heads, answered without the document, to a peer in sync.
    HeadsOnly,
    /// Automerge's own answer (needs the document).
    Generate,
}

pub struct DocState {
    /// `None` while dormant: everything is in `stored`.
    doc: Option<Automerge>,
    stored: StoredDoc,
    peers: BTreeMap<ConnId, PeerSync>,
    ephemeral_seen: HashMap<(PeerId, String), u64>,
    /// Every column's cards in order, for placing cards without scanning the board, and the
    /// heads it reflects; built on the first server-side edit, brought up to date from the
    /// changes since before each, dropped with the document.
    order_index: Option<(OrderIndex, Vec<ChangeHash>)>,
}

impl std::fmt::Debug for DocState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocState")
            .field("heads", &self.stored.heads)
            .field("materialised", &self.doc.is_some())
            .field("peers", &self.peers.len())
            .finish()
    }
}

fn flags() -> MessageFlags {
    let mut flags = MessageFlags::new();
    flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
    flags
}

/// The actors of the changes in `chunks` that `doc` does not have yet (all of them when there
/// is no document yet): whose changes a sync message would add. A message chunk holds one or
/// more storage chunks: changes (v1 sends one per message chunk, v2 concatenates them) or a
/// whole document. A bundle, or anything unreadable, is refused: its authors could not be told.
pub fn new_change_actors(
    doc: Option<&Automerge>,
    chunks: &ChunkList,
) -> Result<BTreeSet<ActorId>, String> {
    let known = |hash: &ChangeHash| doc.is_some_and(|d| d.get_change_by_hash(hash).is_some());
    let mut actors = BTreeSet::new();
    for chunk in chunks.iter() {
        for (kind, bytes) in storage_chunks(chunk)? {
            match kind {
                // Read from the chunk itself: no allocation per change (a board upload is
                // thousands of them).
                CHUNK_CHANGE => {
                    let (hash, actor) = change_hash_and_actor(bytes)?;
                    if !known(&hash) {
                        actors.insert(ActorId::from(actor));
                    }
                }
                CHUNK_COMPRESSED_CHANGE => {
                    let change = Change::try_from(bytes)
                        .map_err(|e| format!("an unreadable change: {e}"))?;
                    if !known(&change.hash()) {
                        actors.insert(change.actor_id().clone());
                    }
                }
                // To a document we have nothing of (a board's first upload), every change is
                // new: its actor table names their authors, with no need to load it.
                CHUNK_DOCUMENT if doc.is_none_or(|d| d.get_heads().is_empty()) => {
                    actors.extend(document_actors(bytes)?.into_iter().map(ActorId::from));
                }
                CHUNK_DOCUMENT => {
                    let whole = Automerge::load(bytes)
                        .map_err(|e| format!("an unreadable document: {e}"))?;
                    for change in whole.get_changes(&[]) {
                        if !known(&change.hash()) {
                            actors.insert(change.actor_id().clone());
                        }
                    }
                }
                other => return Err(format!("storage chunks of type {other} are not accepted")),
            }
        }
    }
    Ok(actors)
}

/// Automerge storage chunk types (the byte after the magic and checksum).
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED_CHANGE: u8 = 2;

/// Splits bytes into automerge storage chunks, `(type, the whole chunk)`: each is the magic
/// bytes, a 4-byte checksum, a type byte, a uLEB128 length and that many bytes.
fn storage_chunks(mut bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
    let mut chunks = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 10 || bytes[..4] != MAGIC {
            return Err("a sync message chunk is not automerge storage".into());
        }
        let kind = bytes[8];
        let (length, length_bytes) = uleb128(&bytes[9..])?;
        let total = 9usize
            .checked_add(length_bytes)
            .and_then(|n| n.checked_add(length))
            .filter(|&n| n <= bytes.len())
            .ok_or("a truncated storage chunk")?;
        chunks.push((kind, &bytes[..total]));
        bytes = &bytes[total..];
    }
    Ok(chunks)
}

/// The hash and actor of an uncompressed change chunk. The hash is SHA-256 of the chunk from
/// its type byte on; the data starts with the dependencies (a count, then 32-byte hashes) and
/// then the actor (a length, then its bytes).
fn change_hash_and_actor(chunk: &[u8]) -> Result<(ChangeHash, &[u8]), String> {
    let hash = ChangeHash(Sha256::digest(&chunk[8..]).into());
    let (_, length_bytes) = uleb128(&chunk[9..])?;
    let data = &chunk[9 + length_bytes..];
    let (deps, n) = uleb128(data)?;
    let after_deps = deps
        .checked_mul(32)
        .and_then(|d| d.checked_add(n))
        .and_then(|start| data.get(start..))
        .ok_or("a truncated change")?;
    let (actor_length, n) = uleb128(after_deps)?;
    let actor = n
        .checked_add(actor_length)
        .and_then(|end| after_deps.get(n..end))
        .ok_or("a truncated change")?;
    Ok((hash, actor))
}

/// The actor table that opens a document chunk's data: a count, then each actor as a length
/// and its bytes. Every actor in it wrote changes of the document.
fn document_actors(chunk: &[u8]) -> Result<Vec<&[u8]>, String> {
    let (_, length_bytes) = uleb128(&chunk[9..])?;
    let mut data = &chunk[9 + length_bytes..];
    let (count, n) = uleb128(data)?;
    data = &data[n..];
    let mut actors = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let (length, n) = uleb128(data)?;
        let actor = n
            .checked_add(length)
            .and_then(|end| data.get(n..end))
            .ok_or("a truncated document")?;
        actors.push(actor);
        data = &data[n + length..];
    }
    Ok(actors)
}

/// An unsigned LEB128 number and how many bytes it took.
fn uleb128(bytes: &[u8]) -> Result<(usize, usize), String> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().take(10).enumerate() {
        let bits = u64::from(byte & 0x7f);
        value |= bits
            .checked_shl(7 * i as u32)
            .filter(|shifted| shifted >> (7 * i as u32) == bits)
            .ok_or("a chunk length overflows")?;
        if byte & 0x80 == 0 {
            let value = usize::try_from(value).map_err(|_| "a chunk length overflows")?;
            return Ok((value, i + 1));
        }
    }
    Err("a chunk length is not a valid LEB128 number".into())
}

/// Builds the v2 sync message that hands a peer with no heads the whole document.
pub fn whole_doc_message(stored: &StoredDoc) -> sync::Message {
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
        flags: Some(flags()),
        version: MessageVersion::V2,
    }
}

impl DocState {
    /// A document that exists only in memory so far (announced by a peer, nothing stored).
    pub fn new_empty() -> Self {
        Self::from_parts(Some(Automerge::new()), StoredDoc::default())
    }

    /// A stored document, not materialised until a peer needs it to be.
    pub fn dormant(stored: StoredDoc) -> Self {
        Self::from_parts(None, stored)
    }

    fn from_parts(doc: Option<Automerge>, stored: StoredDoc) -> Self {
        Self {
            doc,
            stored,
            peers: BTreeMap::new(),
            ephemeral_seen: HashMap::new(),
            order_index: None,
        }
    }

    pub fn is_materialised(&self) -> bool {
        self.doc.is_some()
    }

    /// Takes the stored bytes to materialise elsewhere (off the async threads) with
    /// [`load_document`]; hand the result to [`Self::materialise`].
    pub fn stored(&self) -> &StoredDoc {
        &self.stored
    }

    pub fn materialise(&mut self, doc: Automerge) {
        self.doc = Some(doc);
        self.order_index = None;
    }

    /// Drops the in-memory document when nothing depends on it: every change stored and every
    /// peer in sync at the stored heads (or waiting on the whole document we sent).
    pub fn unload(&mut self) -> bool {
        let heads = &self.stored.heads;
        let quiet = self.is_persisted()
            && self
                .peers
                .values()
                .all(|p| p.in_sync_at(heads) || (p.sent_whole_doc && p.their_heads_empty()));
        if quiet && self.doc.is_some() && !heads.is_empty() {
            self.doc = None;
            self.order_index = None;
            return true;
        }
        false
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        match &self.doc {
            Some(doc) => doc.get_heads(),
            None => self.stored.heads.clone(),
        }
    }

    /// The materialised document; callers check [`Self::is_materialised`] first.
    pub fn doc(&self) -> Option<&Automerge> {
        self.doc.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.heads().is_empty()
    }

    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
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
            confirmed: Vec::new(),
        });
    }

    /// Whether the peer on `conn` may change the document. A read-only peer's changes are
    /// ignored by the sync protocol itself (never applied, stored or relayed), and our messages
    /// tell it so, so that it stops offering them.
    pub fn set_read_only(&mut self, conn: ConnId, read_only: bool) {
        if let Some(peer) = self.peers.get_mut(&conn) {
            peer.state.set_read_only(read_only);
        }
    }

    pub fn detach(&mut self, conn: ConnId) -> Option<PeerLink> {
        self.peers.remove(&conn).map(|p| p.link)
    }

    /// Whether handling `message` needs the materialised document: it carries changes, asks
    /// for specific changes, or names heads other than none or ours.
    pub fn needs_document_for(&self, message: &sync::Message) -> bool {
        self.doc.is_none()
            && (!message.changes.is_empty()
                || !message.need.is_empty()
                || !(message.heads.is_empty() || message.heads == self.stored.heads))
    }

    /// Applies a peer's sync message. On error the caller should drop the peer. A dormant
    /// document must not be given a message [`Self::needs_document_for`] says needs it.
    pub fn receive(&mut self, conn: ConnId, message: sync::Message) -> Result<(), AutomergeError> {
        debug_assert!(!self.needs_document_for(&message), "materialise first");
        let Some(peer) = self.peers.get_mut(&conn) else {
            return Ok(());
        };
        match self.doc.as_mut() {
            Some(doc) => doc.receive_sync_message(&mut peer.state, message)?,
            None => receive_heads_only(&mut peer.state, message, &self.stored.heads),
        }
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

    /// Runs `edit` as one change by `actor` (a user's server-side actor id), with the order
    /// index brought up to date. Nothing changes when `edit` fails. Needs the materialised
    /// document.
    pub fn edit<O, E>(
        &mut self,
        actor: ActorId,
        edit: impl FnOnce(&mut Transaction<'_>, &OrderIndex) -> Result<O, E>,
    ) -> Option<Result<O, E>> {
        let doc = self.doc.as_mut()?;
        let heads = doc.get_heads();
        let index = match self.order_index.take() {
            Some((index, at)) if at == heads => index,
            Some((mut index, at)) => {
                let touched = Touched::of_changes(doc, &doc.get_changes(&at));
                if touched.everything {
                    OrderIndex::build(&*doc)
                } else {
                    for id in touched.tasks.keys() {
                        index.refresh(&*doc, id);
                    }
                    index
                }
            }
            None => OrderIndex::build(&*doc),
        };
        doc.set_actor(actor);
        let result = doc
            .transact(|tx| edit(tx, &index))
            .map(|success| success.result)
            .map_err(|failure| failure.error);
        self.order_index = Some((index, heads));
        Some(result)
    }

    /// Changes in memory that the store does not hold yet (what to store, and what the
    /// projection derives its rows from).
    pub fn new_changes(&self) -> Vec<Change> {
        match &self.doc {
            Some(doc) if doc.get_heads() != self.stored.heads => {
                doc.get_changes(&self.stored.heads)
            }
            _ => Vec::new(),
        }
    }

    /// [`Self::new_changes`] as the store keeps them.
    pub fn unpersisted(&self) -> Vec<StoredChange> {
        self.new_changes()
            .into_iter()
            .map(StoredChange::from)
            .collect()
    }

    /// The store committed `changes` (from [`Self::unpersisted`]) with heads `heads`, giving
    /// them `seq` numbers up to `last_seq`.
    pub fn mark_persisted(
        &mut self,
        changes: Vec<StoredChange>,
        heads: Vec<ChangeHash>,
        last_seq: Option<i64>,
    ) {
        self.stored.changes.extend(changes);
        self.stored.heads = heads;
        if let Some(seq) = last_seq {
            self.stored.last_seq = self.stored.last_seq.max(seq);
        }
    }

    /// Whether every one of `heads` is in the document (or, unmaterialised, among the stored
    /// heads): a notice naming them brings nothing new.
    pub fn knows(&self, heads: &[ChangeHash]) -> bool {
        match &self.doc {
            Some(doc) => heads.iter().all(|h| doc.get_change_by_hash(h).is_some()),
            None => heads.iter().all(|h| self.stored.heads.contains(h)),
        }
    }

    /// Takes in what other nodes stored since this state's last read: their chunks join the
    /// stored ones (and the document, when materialised) and the stored heads become theirs.
    /// False when the chunks do not reach those heads (another node folded some into a new
    /// snapshot meanwhile): then the caller reloads the whole document with [`Self::reload`].
    pub fn catch_up(&mut self, caught: CatchUp) -> Result<bool, AutomergeError> {
        // Changes of ours not stored yet (by us): if the store turns out to hold them already,
        // they must have arrived among the chunks, or another node folded them into a
        // snapshot we have not read.
        let unstored: Vec<ChangeHash> = self.new_changes().iter().map(Change::hash).collect();
        if let Some(doc) = self.doc.as_mut() {
            for change in &caught.changes {
                doc.load_incremental(&change.data)?;
            }
            if !caught
                .heads
                .iter()
                .all(|h| doc.get_change_by_hash(h).is_some())
            {
                return Ok(false);
            }
            let beyond: HashSet<ChangeHash> = doc
                .get_changes(&caught.heads)
                .iter()
                .map(Change::hash)
                .collect();
            let arrived: HashSet<ChangeHash> = caught.changes.iter().map(|c| c.hash).collect();
            let folded_elsewhere = unstored
                .iter()
                .any(|h| !beyond.contains(h) && !arrived.contains(h));
            if folded_elsewhere {
                return Ok(false);
            }
        } else if !caught.changes.is_empty() || caught.heads != self.stored.heads {
            // Unmaterialised, the stored bytes are all there is: read them whole.
            return Ok(false);
        }
        self.stored.changes.extend(caught.changes);
        self.stored.heads = caught.heads;
        self.stored.last_seq = caught.last_seq;
        Ok(true)
    }

    /// Replaces the stored bytes with `stored`, read whole from the store; a materialised
    /// document takes in whatever of them it lacks, keeping its own unstored changes.
    pub fn reload(&mut self, stored: StoredDoc) -> Result<(), AutomergeError> {
        if let Some(doc) = self.doc.as_mut() {
            doc.load_incremental(&stored.concatenated())?;
        }
        self.stored = stored;
        self.order_index = None;
        Ok(())
    }

    /// Whether every change in memory is in the store.
    pub fn is_persisted(&self) -> bool {
        self.heads() == self.stored.heads
    }

    /// How to answer one peer now.
    fn reply_to(&self, peer: &PeerSync) -> Reply {
        if peer.their_heads_empty() {
            if peer.sent_whole_doc {
                return Reply::Nothing;
            }
            if peer.supports_v2 && !self.stored.heads.is_empty() {
                return Reply::WholeDocument;
            }
        } else if self.doc.is_none() && peer.in_sync_at(&self.stored.heads) {
            return Reply::HeadsOnly;
        }
        Reply::Generate
    }

    /// Whether [`Self::outgoing`] for these peers needs the materialised document.
    pub fn outgoing_needs_document(&self, only: Option<&HashSet<ConnId>>) -> bool {
        self.doc.is_none()
            && self
                .peers
                .iter()
                .filter(|(conn, _)| only.is_none_or(|set| set.contains(*conn)))
                .any(|(_, p)| self.reply_to(p) == Reply::Generate)
    }

    /// The sync messages to send now, for the peers in `only` (or all peers). Call only when
    /// [`Self::is_persisted`], and with the document materialised if
    /// [`Self::outgoing_needs_document`] says so.
    pub fn outgoing(&mut self, only: Option<&HashSet<ConnId>>) -> Vec<(PeerLink, sync::Message)> {
        debug_assert!(
            self.is_persisted(),
            "durability rule: no heads before they are stored"
        );
        debug_assert!(!self.outgoing_needs_document(only), "materialise first");
        let replies: Vec<(ConnId, Reply)> = self
            .peers
            .iter()
            .filter(|(conn, _)| only.is_none_or(|set| set.contains(*conn)))
            .map(|(conn, p)| (*conn, self.reply_to(p)))
            .collect();
        let mut out = Vec::new();
        for (conn, reply) in replies {
            let peer = self.peers.get_mut(&conn).expect("listed above");
            let message = match reply {
                Reply::Nothing => None,
                Reply::WholeDocument => {
                    peer.sent_whole_doc = true;
                    peer.state.last_sent_heads = self.stored.heads.clone();
                    peer.state.have_responded = true;
                    peer.state.in_flight = true;
                    Some(whole_doc_message(&self.stored))
                }
                Reply::HeadsOnly => heads_only_reply(&mut peer.state, &self.stored.heads),
                Reply::Generate => self
                    .doc
                    .as_ref()
                    .and_then(|doc| doc.generate_sync_message(&mut peer.state)),
            };
            // Automerge stays silent when a peer announces exactly our heads, as if that peer
            // knew we hold them. It may not: after a burst it last heard intermediate heads
            // from us. Confirm once, so it learns its changes are stored.
            let message = message.or_else(|| {
                let heads = &self.stored.heads;
                let unconfirmed = peer.state.their_heads.as_ref() == Some(heads)
                    && peer.confirmed != *heads
                    && !heads.is_empty();
                unconfirmed.then(|| heads_message(&mut peer.state, heads))
            });
            if let Some(message) = message {
                peer.confirmed = message.heads.clone();
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

    /// The store now holds `snapshot` (the whole document at `heads`) in place of the chunks
    /// `folded`.
    pub fn mark_compacted(&mut self, snapshot: Vec<u8>, folded: &[ChangeHash]) {
        let folded: HashSet<&ChangeHash> = folded.iter().collect();
        self.stored.changes.retain(|c| !folded.contains(&c.hash));
        self.stored.snapshot = Some(snapshot);
    }
}

/// Materialises stored bytes. CPU-heavy for big documents: run it off the async threads.
pub fn load_document(stored: &StoredDoc) -> Result<Automerge, AutomergeError> {
    Automerge::load(&stored.concatenated())
}

/// What `receive_sync_message` does with a message that carries no changes and names heads we
/// have (or none), done without the document.
fn receive_heads_only(state: &mut sync::State, message: sync::Message, ours: &[ChangeHash]) {
    state.in_flight = false;
    if let Some(flags) = message.flags {
        let mut capabilities = vec![sync::Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(sync::Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }
    if message.heads == ours {
        // They have everything we have: nothing we sent is still owed to them.
        state.sent_hashes.clear();
        state.last_sent_heads = message.heads.clone();
    }
    state.shared_heads = message.heads.clone();
    if message.heads.is_empty() {
        state.last_sent_heads = Vec::new();
        state.sent_hashes.clear();
    }
    state.their_have = Some(message.have);
    state.their_heads = Some(message.heads);
    state.their_need = Some(message.need);
}

/// What `generate_sync_message` answers a peer that is in sync at `ours`, done without the
/// document: our heads once, then nothing until something changes.
fn heads_only_reply(state: &mut sync::State, ours: &[ChangeHash]) -> Option<sync::Message> {
    if state.last_sent_heads == ours && state.have_responded {
        return None;
    }
    Some(heads_message(state, ours))
}

/// A message carrying our heads and no changes, recorded in `state` as sent.
fn heads_message(state: &mut sync::State, ours: &[ChangeHash]) -> sync::Message {
    state.have_responded = true;
    state.last_sent_heads = ours.to_vec();
    state.in_flight = true;
    let mut flags = flags();
    if state.read_only {
        flags.set(MessageFlags::READ_ONLY);
    }
    sync::Message {
        heads: ours.to_vec(),
        need: Vec::new(),
        have: vec![Have {
            last_sync: state.shared_heads.clone(),
            bloom: BloomFilter::from_hashes(Vec::<ChangeHash>::new().into_iter()),
        }],
        changes: ChunkList::empty(),
        flags: Some(flags),
        version: MessageVersion::V1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Outbox;
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;
    use taskflow_proto::board::ops::{self, NewTask};

    fn link(conn: ConnId) -> (PeerLink, Outbox) {
        let (link, outbox) = PeerLink::new(conn, "user", 1 << 20);
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

    /// The server's state of `base` as stored, holding in memory one more change it has not
    /// stored (as when a peer's change is applied and another node stores the same first).
    fn with_unstored_change(base: &Automerge) -> (DocState, StoredChange, Vec<ChangeHash>) {
        let stored = StoredDoc {
            snapshot: Some(base.save()),
            changes: Vec::new(),
            heads: base.get_heads(),
            last_seq: 0,
        };
        let mut ahead = automerge::AutoCommit::load(&base.save()).expect("load");
        ops::add_task(&mut ahead, NewTask::titled("one more", "ann"), 0).expect("task");
        ahead.commit();
        let change = ahead.get_last_local_change().expect("change").clone();
        let mut state = DocState::dormant(stored);
        state.materialise(ahead.document().clone());
        (state, StoredChange::from(change), ahead.get_heads())
    }

    #[test]
    fn a_catch_up_naming_our_unstored_change_without_its_chunk_asks_for_a_reload() {
        let base = board_with_tasks(1);
        let (mut state, change, heads) = with_unstored_change(&base);
        // Another node stored it and folded it into a snapshot: only the heads say so.
        let folded = CatchUp {
            changes: Vec::new(),
            heads: heads.clone(),
            last_seq: 7,
        };
        assert!(!state.catch_up(folded).expect("applies"), "reload instead");
        assert_eq!(
            state.stored().heads,
            base.get_heads(),
            "nothing taken as stored"
        );

        let (mut state, _, _) = with_unstored_change(&base);
        let arrived = CatchUp {
            changes: vec![change],
            heads: heads.clone(),
            last_seq: 7,
        };
        assert!(state.catch_up(arrived).expect("applies"));
        assert_eq!(state.stored().heads, heads);
        assert_eq!(state.stored().last_seq, 7);
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
            let (l, _) = link(conn);
            server.attach(l);
            Self {
                conn,
                doc,
                state: sync::State::new(),
                received: Vec::new(),
            }
        }
    }

    fn materialise(server: &mut DocState) {
        let doc = load_document(server.stored()).expect("stored document loads");
        server.materialise(doc);
    }

    /// Runs every client against the server to a fixpoint, persisting as the actor does
    /// before anything is sent.
    fn settle(server: &mut DocState, clients: &mut [Client]) {
        for _ in 0..20 {
            let mut progressed = false;
            for c in clients.iter_mut() {
                if let Some(m) = c.doc.generate_sync_message(&mut c.state) {
                    if server.needs_document_for(&m) {
                        materialise(server);
                    }
                    server.receive(c.conn, m).expect("server receives");
                    progressed = true;
                }
            }
            let changes = server.unpersisted();
            let heads = server.heads();
            server.mark_persisted(changes, heads, None);
            if server.outgoing_needs_document(None) {
                materialise(server);
            }
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
            last_seq: 0,
        };
        let mut server = DocState::dormant(stored);
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
        assert!(
            !server.is_materialised(),
            "a fetch is served from the stored bytes alone"
        );

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

    /// A peer in the model: its replica, and the frames in flight each way.
    struct ModelPeer {
        doc: Automerge,
        state: sync::State,
        to_server: std::collections::VecDeque<Vec<u8>>,
        to_peer: std::collections::VecDeque<Vec<u8>>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Edit(usize),
        Send(usize),
        DeliverToServer(usize),
        DeliverToPeer(usize),
        Unload,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            2 => (0..3usize).prop_map(Step::Edit),
            1 => (0..3usize).prop_map(Step::Send),
            3 => (0..3usize).prop_map(Step::DeliverToServer),
            3 => (0..3usize).prop_map(Step::DeliverToPeer),
            1 => Just(Step::Unload),
        ]
    }

    /// The server side of one delivery, as the actor does it: materialise if needed, apply,
    /// persist, then answer.
    fn server_receives(server: &mut DocState, peers: &mut [ModelPeer], conn: usize, frame: &[u8]) {
        let message = sync::Message::decode(frame).expect("valid frame");
        if server.needs_document_for(&message) {
            materialise(server);
        }
        server
            .receive(conn as ConnId, message)
            .expect("server receives");
        let changes = server.unpersisted();
        let changed = !changes.is_empty();
        let heads = server.heads();
        server.mark_persisted(changes, heads, None);
        let touched = HashSet::from([conn as ConnId]);
        let only = if changed { None } else { Some(&touched) };
        if server.outgoing_needs_document(only) {
            materialise(server);
        }
        for (link, m) in server.outgoing(only) {
            // Durability: everything advertised is in the stored form.
            assert!(m.heads.iter().all(|h| {
                server.stored().heads.contains(h)
                    || load_document(server.stored())
                        .expect("loads")
                        .get_change_by_hash(h)
                        .is_some()
            }));
            peers[link.conn as usize].to_peer.push_back(m.encode());
        }
    }

    fn peer_sends(peer: &mut ModelPeer) {
        if let Some(m) = peer.doc.generate_sync_message(&mut peer.state) {
            peer.to_server.push_back(m.encode());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Peers fetching, editing and acknowledging in any interleaving, with the server
        /// document loaded and unloaded as it goes, all end with the same document, and the
        /// server never advertises heads it has not stored.
        #[test]
        fn any_interleaving_converges(steps in proptest::collection::vec(step(), 0..80)) {
            let base = board_with_tasks(5);
            let stored = StoredDoc { snapshot: Some(base.save()), changes: Vec::new(), heads: base.get_heads(), last_seq: 0 };
            let mut server = DocState::dormant(stored);
            let mut peers: Vec<ModelPeer> = (0..3)
                .map(|n| ModelPeer {
                    doc: if n == 0 { base.clone() } else { Automerge::new() },
                    state: sync::State::new(),
                    to_server: Default::default(),
                    to_peer: Default::default(),
                })
                .collect();
            for (n, peer) in peers.iter_mut().enumerate() {
                // The model delivers sync messages itself; the link's outbox goes unused.
                let (l, _) = link(n as ConnId);
                server.attach(l);
                peer_sends(peer);
            }
            let mut edits = 0;
            for step in steps {
                match step {
                    Step::Edit(n) => {
                        let peer = &mut peers[n];
                        if peer.doc.get(automerge::ROOT, "tasks").ok().flatten().is_some() {
                            let mut tx = peer.doc.transaction();
                            ops::add_task(&mut tx, NewTask::titled(format!("edit {edits}"), "m"), 0).expect("task");
                            tx.commit();
                            edits += 1;
                        }
                        peer_sends(peer);
                    }
                    Step::Send(n) => peer_sends(&mut peers[n]),
                    Step::DeliverToServer(n) => {
                        if let Some(frame) = peers[n].to_server.pop_front() {
                            server_receives(&mut server, &mut peers, n, &frame);
                        }
                    }
                    Step::DeliverToPeer(n) => {
                        let peer = &mut peers[n];
                        if let Some(frame) = peer.to_peer.pop_front() {
                            let m = sync::Message::decode(&frame).expect("valid frame");
                            peer.doc.receive_sync_message(&mut peer.state, m).expect("peer receives");
                            peer_sends(peer);
                        }
                    }
                    Step::Unload => {
                        server.unload();
                    }
                }
            }
            // Let everything settle: deliver until nothing is in flight and nobody has more to say.
            for _ in 0..200 {
                let mut moved = false;
                for n in 0..3 {
                    peer_sends(&mut peers[n]);
                    while let Some(frame) = peers[n].to_server.pop_front() {
                        server_receives(&mut server, &mut peers, n, &frame);
                        moved = true;
                    }
                }
                for peer in peers.iter_mut() {
                    while let Some(frame) = peer.to_peer.pop_front() {
                        let m = sync::Message::decode(&frame).expect("valid frame");
                        peer.doc.receive_sync_message(&mut peer.state, m).expect("peer receives");
                        peer_sends(peer);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
            let heads = server.heads();
            for peer in &peers {
                proptest::prop_assert_eq!(peer.doc.get_heads(), heads.clone());
            }
            proptest::prop_assert!(server.is_persisted());
            let stored = load_document(server.stored()).expect("stored form loads");
            proptest::prop_assert_eq!(stored.get_heads(), heads);
        }
    }

    #[test]
    fn the_authors_of_new_changes_are_read_from_every_chunk_form() {
        // The server has Ann's board; Bo adds two tasks on a copy.
        let mut ann = automerge::AutoCommit::new().with_actor(ActorId::from(b"ann".as_slice()));
        ops::create_board(&mut ann, "Shared").expect("board");
        ann.commit();
        let server = ann.document().clone();
        let mut bo = ann.fork().with_actor(ActorId::from(b"bo".as_slice()));
        for title in ["one", "two"] {
            ops::add_task(&mut bo, NewTask::titled(title, "bo"), 1).expect("task");
            bo.commit();
        }
        let new: Vec<Vec<u8>> = bo
            .get_changes(&server.get_heads())
            .into_iter()
            .map(|c| c.raw_bytes().to_vec())
            .collect();
        let bo_only = BTreeSet::from([ActorId::from(b"bo".as_slice())]);
        let both = BTreeSet::from([
            ActorId::from(b"ann".as_slice()),
            ActorId::from(b"bo".as_slice()),
        ]);
        let actors = |doc: Option<&Automerge>, chunks: Vec<Vec<u8>>| {
            new_change_actors(doc, &ChunkList::from(chunks))
        };

        // v1: one change per chunk; v2: the changes concatenated in one chunk.
        assert_eq!(actors(Some(&server), new.clone()), Ok(bo_only.clone()));
        assert_eq!(
            actors(Some(&server), vec![new.concat()]),
            Ok(bo_only.clone())
        );
        // A whole document: only the changes the server lacks count; to an empty server, all.
        let whole = bo.save();
        assert_eq!(actors(Some(&server), vec![whole.clone()]), Ok(bo_only));
        assert_eq!(actors(None, vec![whole.clone()]), Ok(both));
        // The hash and actor read off a change chunk are automerge's own.
        for change in bo.get_changes(&[]) {
            let (hash, actor) = change_hash_and_actor(change.raw_bytes()).expect("readable");
            assert_eq!(hash, change.hash());
            assert_eq!(actor, change.actor_id().to_bytes());
        }
        // What cannot be read is refused.
        assert!(actors(Some(&server), vec![vec![1, 2, 3]]).is_err());
        assert!(actors(Some(&server), vec![whole[..whole.len() / 2].to_vec()]).is_err());
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
