-- Which user each Automerge actor id belongs to. An actor id is bound to the first user whose
-- changes carry it; changes under an actor id bound to someone else are refused, so a change's
-- author is always known.

CREATE TABLE actors (
    actor_id   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    first_seen BIGINT NOT NULL
);
