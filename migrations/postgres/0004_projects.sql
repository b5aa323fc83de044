-- Projects: a workspace's boards. Each has exactly one board document (documents.id), which
-- is what clients open over the sync socket; access to it follows the workspace membership.

CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    document_id  TEXT NOT NULL UNIQUE,
    created_by   TEXT NOT NULL REFERENCES users(id),
    created_at   BIGINT NOT NULL,
    archived_at  BIGINT
);
CREATE INDEX projects_by_workspace ON projects(workspace_id, created_at);
