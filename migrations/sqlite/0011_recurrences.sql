-- Recurring tasks: a cron schedule in a time zone, and the task each run makes.
CREATE TABLE recurrences (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    -- Minute, hour, day of month, month, day of week (names); an optional seconds field first.
    cron        TEXT NOT NULL,
    -- IANA time zone the schedule is read in.
    timezone    TEXT NOT NULL,
    -- The task each run makes (JSON: title, description, column, assignees, labels, priority,
    -- dueInMinutes).
    template    TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    -- Why the server turned it off (its author may no longer add tasks).
    disabled_reason TEXT,
    created_by  TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    -- The next scheduled time whose task is not made yet (the embedded scheduler's timer).
    next_at     BIGINT,
    -- The scheduled time of the last task made.
    last_run_at BIGINT
);
CREATE INDEX recurrences_by_project ON recurrences (project_id, created_at);
CREATE INDEX recurrences_next ON recurrences (next_at) WHERE next_at IS NOT NULL;
