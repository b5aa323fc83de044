-- Settings of a workspace that differ from the server's defaults.
CREATE TABLE workspace_settings (
    workspace_id     TEXT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
    -- How long before a task's due date its assignees are reminded.
    remind_before_ms BIGINT NOT NULL
);

-- The embedded deadline scheduler's durable timers: one row per task that has (or had) a due
-- date. The event consumer records the facts and asks for a decision (`next_at` = now); the
-- scheduler decides, and writes what it fires (outbox events) with the progress that records
-- it, in one transaction, so each fires once.
CREATE TABLE deadlines (
    project_id    TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    due_at        BIGINT,
    -- In the done column, or archived.
    finished      BOOLEAN NOT NULL,
    -- The task as its latest event told it (what deadline events carry), JSON.
    task          TEXT NOT NULL,
    -- The due date a reminder / escalation was made for, and when.
    reminded_for  BIGINT,
    reminded_at   BIGINT,
    escalated_for BIGINT,
    escalated_at  BIGINT,
    -- When the scheduler looks at it next, and what it expects to do then; NULL: nothing.
    next_at       BIGINT,
    next_action   TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, task_id)
);
CREATE INDEX deadlines_next ON deadlines (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX deadlines_by_workspace ON deadlines (workspace_id);

-- On a server that already has events, deadlines are kept from now on (a task's next event
-- records it), rather than escalating every old overdue task at once.
INSERT INTO consumer_offsets (consumer, published_seq)
SELECT 'deadlines', COALESCE(MAX(published_seq), 0) FROM outbox WHERE TRUE
ON CONFLICT (consumer) DO NOTHING;
