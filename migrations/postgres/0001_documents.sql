-- Board documents as a compacted snapshot plus the change chunks appended since.
-- Loading a document = snapshot (if any) + every row of `changes` for it, in any order.

CREATE TABLE server_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE documents (
    id           TEXT PRIMARY KEY,          -- base58check document id
    snapshot     BYTEA,                     -- Automerge::save() output, NULL until first compaction
    heads        BYTEA NOT NULL,            -- concatenated 32-byte change hashes of the stored state
    created_at   BIGINT NOT NULL,           -- ms since epoch
    updated_at   BIGINT NOT NULL
);

CREATE TABLE changes (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    hash        BYTEA NOT NULL,             -- 32-byte change hash: appends are idempotent
    seq         BIGSERIAL PRIMARY KEY,
    data        BYTEA NOT NULL,             -- raw change chunk
    UNIQUE (document_id, hash)
);
