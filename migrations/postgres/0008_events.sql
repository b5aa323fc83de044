-- Domain events (CloudEvents JSON), written in the transaction of what they describe: the
-- transactional outbox. The relay publishes pending rows in `seq` order and numbers them in
-- the order it published them (`published_seq`), which in-process consumers follow.
CREATE TABLE outbox (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    partition_key TEXT NOT NULL,
    type          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    published_seq BIGINT UNIQUE,
    published_at  BIGINT
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE published_seq IS NULL;

-- How far each in-process consumer has handled the published events.
CREATE TABLE consumer_offsets (
    consumer      TEXT PRIMARY KEY,
    published_seq BIGINT NOT NULL
);

-- Events an in-process consumer gave up on, and why.
CREATE TABLE dead_letters (
    id        BIGSERIAL PRIMARY KEY,
    consumer  TEXT NOT NULL,
    event_id  TEXT NOT NULL,
    payload   TEXT NOT NULL,
    reason    TEXT NOT NULL,
    attempts  BIGINT NOT NULL,
    failed_at BIGINT NOT NULL
);
CREATE INDEX dead_letters_consumer ON dead_letters (consumer, id);

-- Outgoing webhook subscriptions, per workspace.
CREATE TABLE webhooks (
    id                   TEXT PRIMARY KEY,
    workspace_id         TEXT NOT NULL REFERENCES workspaces(id),
    url                  TEXT NOT NULL,
    -- JSON array of event types; empty means every type.
    event_types          TEXT NOT NULL,
    secret               TEXT NOT NULL,
    enabled              BOOLEAN NOT NULL,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    disabled_reason      TEXT,
    created_by           TEXT NOT NULL REFERENCES users(id),
    created_at           BIGINT NOT NULL
);
CREATE INDEX webhooks_workspace ON webhooks (workspace_id);

-- One event for one subscription: pending until delivered or given up (the delivery log).
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at);
