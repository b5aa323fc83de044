-- The relational projection of board documents: tasks, their assignees, labels and comments,
-- and each board's columns. Rows are derived from merged changes and written in the same
-- transaction that stores those changes, so they always match the stored document. REST reads
-- come from here; the documents stay the truth.

CREATE TABLE board_columns (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    position    BIGINT NOT NULL,           -- index in the board's column list
    wip_limit   BIGINT,
    PRIMARY KEY (document_id, id)
);

CREATE TABLE tasks (
    document_id   TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    id            TEXT NOT NULL,           -- the task's key in the board document
    title         TEXT NOT NULL,
    description   TEXT NOT NULL,
    column_id     TEXT NOT NULL,
    position      TEXT NOT NULL,           -- order key within the column
    priority      TEXT NOT NULL,
    due_at        BIGINT,                  -- ms since epoch
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    archived      BOOLEAN NOT NULL,
    assignees     TEXT NOT NULL,           -- JSON array, as answered; task_assignees filters
    labels        TEXT NOT NULL,           -- JSON array, as answered; task_labels filters
    comment_count BIGINT NOT NULL,
    version       TEXT NOT NULL,           -- from the document heads of the task's last change: the ETag
    PRIMARY KEY (document_id, id)
);
CREATE INDEX tasks_by_id ON tasks (id);
CREATE INDEX tasks_by_creation ON tasks (document_id, created_at, id);

CREATE TABLE task_assignees (
    document_id TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    PRIMARY KEY (document_id, task_id, user_id),
    FOREIGN KEY (document_id, task_id) REFERENCES tasks (document_id, id) ON DELETE CASCADE
);
CREATE INDEX task_assignees_by_user ON task_assignees (document_id, user_id);

CREATE TABLE task_labels (
    document_id TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    label       TEXT NOT NULL,
    PRIMARY KEY (document_id, task_id, label),
    FOREIGN KEY (document_id, task_id) REFERENCES tasks (document_id, id) ON DELETE CASCADE
);
CREATE INDEX task_labels_by_label ON task_labels (document_id, label);

CREATE TABLE task_comments (
    document_id TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    id          TEXT NOT NULL,
    author      TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (document_id, task_id, id),
    FOREIGN KEY (document_id, task_id) REFERENCES tasks (document_id, id) ON DELETE CASCADE
);

-- Documents whose projection must be rebuilt from the whole document: every board stored
-- before the projection existed. The server works through them at start; each document's
-- actor rebuilds its rows and removes its entry in one transaction.
CREATE TABLE projection_backlog (
    document_id TEXT PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE
);
INSERT INTO projection_backlog (document_id) SELECT id FROM documents;

-- Idempotency-Key: the answer to a user's POST, replayed when the same key comes again.
-- `status` is NULL while the first request is still being handled.
CREATE TABLE idempotency_keys (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,            -- SHA-256 of method, path and body
    status      INTEGER,
    body        BLOB,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
