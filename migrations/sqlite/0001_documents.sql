-- Board documents as a compacted snapshot plus the change chunks appended since.
-- Loading a document = snapshot (if any) + every row of `changes` for it, in any order.

CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,           -- base58check document id
    snapshot    BLOB,                       -- Automerge::save() output, NULL until first compaction
    heads       BLOB NOT NULL,              -- concatenated 32-byte change hashes of the stored state
    created_at  INTEGER NOT NULL,           -- ms since epoch
    updated_at  INTEGER NOT NULL
);

CREATE TABLE changes (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    hash        BLOB NOT NULL,              -- 32-byte change hash: appends are idempotent
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    data        BLOB NOT NULL,              -- raw change chunk
    UNIQUE (document_id, hash)
);
