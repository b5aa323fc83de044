-- The client's local replica store: every board this client holds, as a compacted snapshot plus
-- the incremental chunks saved since, and what each server is known to hold of it.

CREATE TABLE documents (
    id         TEXT PRIMARY KEY,           -- base58check document id
    snapshot   BLOB NOT NULL,              -- Automerge::save() output; empty until first received
    created_at INTEGER NOT NULL,           -- ms since the epoch
    updated_at INTEGER NOT NULL
);

-- Changes saved since the snapshot, in order (Automerge::save_after output).
CREATE TABLE chunks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    data        BLOB NOT NULL
);
CREATE INDEX chunks_by_document ON chunks(document_id, seq);

-- automerge sync::State::encode() per server storage: the heads both sides are known to share,
-- so a reconnect sends only what changed since.
CREATE TABLE sync_states (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    storage_id  TEXT NOT NULL,
    state       BLOB NOT NULL,
    PRIMARY KEY (document_id, storage_id)
);

-- Small facts about this store, e.g. the storage id of the server it last synced with.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
