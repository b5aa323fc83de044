-- Per-user notifications: the inbox. One per event and recipient, so an event handled twice
-- adds nothing; `seq` is the inbox order (newest last).
CREATE TABLE notifications (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users(id),
    kind         TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    actor_id     TEXT,
    actor_name   TEXT,
    workspace_id TEXT,
    project_id   TEXT,
    task_id      TEXT,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    read_at      BIGINT,
    UNIQUE (event_id, user_id)
);
CREATE INDEX notifications_inbox ON notifications (user_id, seq);
CREATE INDEX notifications_unread ON notifications (user_id, seq) WHERE read_at IS NULL;

-- Who watches which task. `watching = false` records that the user stopped watching, so that
-- implicit reasons (creating, being assigned, commenting) do not bring them back.
CREATE TABLE task_watchers (
    project_id TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id),
    watching   BOOLEAN NOT NULL,
    -- explicit, creator, assignee or commenter
    reason     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, task_id, user_id)
);

-- Choices that differ from a kind's defaults, per user, kind and channel (in_app, email).
CREATE TABLE notification_preferences (
    user_id TEXT NOT NULL REFERENCES users(id),
    kind    TEXT NOT NULL,
    channel TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, kind, channel)
);

-- Emails to send, and how sending went. `dedupe_key` (event and address) keeps an event
-- handled twice from mailing twice.
CREATE TABLE emails (
    id              TEXT PRIMARY KEY,
    dedupe_key      TEXT NOT NULL UNIQUE,
    to_address      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT NOT NULL,
    html_body       TEXT NOT NULL,
    -- pending, sent or failed (given up)
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE state = 'pending';

-- The second token of an invitation: the one mailed to the invitee (the first is given to
-- whoever invited).
ALTER TABLE invitations ADD COLUMN mail_token_hash TEXT;
CREATE UNIQUE INDEX invitations_by_mail_token ON invitations (mail_token_hash);

-- On a server that already has events, notifications start from now: old events are not news.
INSERT INTO consumer_offsets (consumer, published_seq)
SELECT 'notifications', COALESCE(MAX(published_seq), 0) FROM outbox WHERE TRUE
ON CONFLICT (consumer) DO NOTHING;
