-- Invitations to a workspace, by email, with a role and an expiry. The token sent to the
-- invitee is kept only as its SHA-256. A row is the record of the invitation (`user.invited`)
-- until the events outbox exists.

CREATE TABLE invitations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    email        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash   TEXT NOT NULL UNIQUE,
    invited_by   TEXT NOT NULL REFERENCES users(id),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    closed_at    BIGINT,                    -- accepted, declined or revoked
    outcome      TEXT CHECK (outcome IN ('accepted', 'declined', 'revoked'))
);
CREATE INDEX invitations_by_workspace ON invitations(workspace_id, created_at);
