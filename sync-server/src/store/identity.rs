//! Users, sessions and tokens, on either backend. The SQL is written once with `$n`
//! placeholders (PostgreSQL's); SQLite runs the same text with `?n`, which it numbers the same.

use sqlx::Row;

use super::{BeginWrite, Store, StoreError};

/// One stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: i64,
}

/// The outcome of presenting a refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Exchanged: the new token is stored in the same session.
    Rotated { session_id: String, user_id: String },
    /// Already spent: the session (every token of the family) is now revoked.
    Reused { session_id: String },
    /// Unknown, or its session is revoked or expired.
    Invalid,
}

const USER_COLUMNS: &str = "id, email, name, password_hash, created_at";

impl Store {
    /// Stores a new user; `false` when the email is taken.
    pub async fn create_user(&self, user: &UserRow) -> Result<bool, StoreError> {
        let event = crate::events::domain::user_registered(user);
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(&sql(
                "INSERT INTO users (id, email, name, password_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING",
            ))
            .bind(&user.id)
            .bind(&user.email)
            .bind(&user.name)
            .bind(&user.password_hash)
            .bind(user.created_at)
            .execute(&mut *tx)
            .await?;
            let created = done.rows_affected() == 1;
            if created {
                write_outbox!(&mut *tx, sql, std::slice::from_ref(&event)).await?;
            }
            tx.commit().await?;
            Ok(created)
        })
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where("email", email).await
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.user_where("id", id).await
    }

    async fn user_where(&self, column: &str, value: &str) -> Result<Option<UserRow>, StoreError> {
        let text = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(value)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| UserRow {
                id: r.get(0),
                email: r.get(1),
                name: r.get(2),
                password_hash: r.get(3),
                created_at: r.get(4),
            }))
        })
    }

    /// Starts a session with its first refresh token, in one transaction.
    pub async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        refresh_hash: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql(
                "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            ))
            .bind(session_id)
            .bind(user_id)
            .bind(now_ms)
            .bind(expires_at_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&sql(
                "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
            ))
            .bind(refresh_hash)
            .bind(session_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Exchanges a refresh token for `new_hash`, in one transaction. Of two concurrent
    /// exchanges of the same token exactly one wins; the other counts as reuse.
    pub async fn rotate_refresh(
        &self,
        old_hash: &str,
        new_hash: &str,
        now_ms: i64,
    ) -> Result<Rotation, StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let spent = sqlx::query(&sql("UPDATE refresh_tokens SET spent_at = $2
                 WHERE token_hash = $1 AND spent_at IS NULL
                 RETURNING session_id"))
            .bind(old_hash)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(spent) = spent else {
                let known = sqlx::query(&sql(
                    "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
                ))
                .bind(old_hash)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(known) = known else {
                    return Ok(Rotation::Invalid);
                };
                let session: String = known.get(0);
                sqlx::query(&sql(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = 'refresh token reused'
                     WHERE id = $1 AND revoked_at IS NULL",
                ))
                .bind(&session)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Rotation::Reused {
                    session_id: session,
                });
            };
            let session_id: String = spent.get(0);
            let live = sqlx::query(&sql(
                "SELECT user_id FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
            ))
            .bind(&session_id)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(live) = live else {
                tx.commit().await?;
                return Ok(Rotation::Invalid);
            };
            sqlx::query(&sql(
                "INSERT INTO refresh_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
            ))
            .bind(new_hash)
            .bind(&session_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Rotation::Rotated {
                session_id,
                user_id: live.get(0),
            })
        })
    }

    /// Ends a session (and so every refresh and access token of it).
    pub async fn revoke_session(
        &self,
        session_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = $3
                 WHERE id = $1 AND revoked_at IS NULL",
            ))
            .bind(session_id)
            .bind(now_ms)
            .bind(reason)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Whether a session is neither revoked nor expired.
    pub async fn session_active(&self, session_id: &str, now_ms: i64) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(
                "SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
            ))
            .bind(session_id)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?;
            Ok(row.is_some())
        })
    }

    /// Blacklists an access token until it would have expired (old entries are purged here).
    pub async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql(
                "DELETE FROM revoked_access_tokens WHERE expires_at <= $1",
            ))
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&sql(
                "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2)
                 ON CONFLICT (jti) DO NOTHING",
            ))
            .bind(jti)
            .bind(expires_at_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn access_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql("SELECT 1 FROM revoked_access_tokens WHERE jti = $1"))
                .bind(jti)
                .fetch_optional(pool)
                .await?;
            Ok(row.is_some())
        })
    }

    /// The server's token-signing secret: generated on first use and kept, so restarts keep
    /// sessions valid (`TASKFLOW_JWT_SECRET` overrides it).
    pub async fn token_secret(&self) -> Result<String, StoreError> {
        let fresh = crate::auth::tokens::new_refresh_token();
        match self {
            Store::Sqlite(s) => s.meta_get_or_insert("token_secret", &fresh).await,
            Store::Postgres(s) => s.meta_get_or_insert("token_secret", &fresh).await,
        }
    }
}
