-- Identity: users, their sessions (one per login, the family of its refresh tokens), the
-- refresh tokens themselves (only their SHA-256 is kept) and revoked access tokens.
-- Times are milliseconds since the epoch.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,     -- normalised: trimmed, lowercase
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,            -- argon2id, PHC string
    created_at    BIGINT NOT NULL
);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,                  -- logout, or a spent refresh token presented again
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    spent_at   BIGINT                       -- exchanged for a new one; presenting it again is reuse
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

-- Access tokens ended before their expiry (logout). Kept until they would have expired.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
