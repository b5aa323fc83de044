//! `Idempotency-Key` records: a user's key, the fingerprint of the request that claimed it,
//! and once it succeeded, its answer to replay (either backend, SQL written once).

use sqlx::Row;

use super::{Store, StoreError};

/// What a request carrying an idempotency key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's (since `at`): handle it, then `finish` or `release` the key.
    Claimed { at: i64 },
    /// The key answered already: replay this.
    Replay { status: u16, body: Vec<u8> },
    /// A request with this key is being handled right now.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// How long claims and answers are kept.
#[derive(Debug, Clone, Copy)]
pub struct KeyTimes {
    pub now: i64,
    /// A claim without an answer older than this was abandoned (its server stopped).
    pub abandoned_after: i64,
    /// Answers older than this are forgotten; the key may be used afresh.
    pub kept_for: i64,
}

impl Store {
    /// Claims `key` for `user`'s request with this `fingerprint`, or says why not.
    pub async fn claim_idempotency_key(
        &self,
        user: &str,
        key: &str,
        fingerprint: &[u8],
        times: KeyTimes,
    ) -> Result<Claim, StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql("DELETE FROM idempotency_keys WHERE created_at < $1"))
                .bind(times.now - times.kept_for)
                .execute(pool)
                .await?;
            let inserted = sqlx::query(&sql(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, key) DO NOTHING",
            ))
            .bind(user)
            .bind(key)
            .bind(fingerprint)
            .bind(times.now)
            .execute(pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(Claim::Claimed { at: times.now });
            }
            let Some(row) = sqlx::query(&sql(
                "SELECT fingerprint, status, body, created_at FROM idempotency_keys
                 WHERE user_id = $1 AND key = $2",
            ))
            .bind(user)
            .bind(key)
            .fetch_optional(pool)
            .await?
            else {
                // Expired and purged between the two statements: a retry will find it free.
                return Ok(Claim::InProgress);
            };
            let (stored, status, body, created_at): (Vec<u8>, Option<i32>, Option<Vec<u8>>, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if stored != fingerprint {
                return Ok(Claim::Mismatch);
            }
            match status {
                Some(status) => Ok(Claim::Replay {
                    status: u16::try_from(status).unwrap_or(500),
                    body: body.unwrap_or_default(),
                }),
                None if created_at < times.now - times.abandoned_after => {
                    // Take the abandoned claim over, unless someone else just did.
                    let taken = sqlx::query(&sql("UPDATE idempotency_keys SET created_at = $3
                         WHERE user_id = $1 AND key = $2 AND created_at = $4 AND status IS NULL"))
                    .bind(user)
                    .bind(key)
                    .bind(times.now)
                    .bind(created_at)
                    .execute(pool)
                    .await?;
                    Ok(if taken.rows_affected() == 1 {
                        Claim::Claimed { at: times.now }
                    } else {
                        Claim::InProgress
                    })
                }
                None => Ok(Claim::InProgress),
            }
        })
    }

    /// Records the answer to the key claimed `at`, for replays (unless the claim was taken
    /// over meanwhile: then the answer belongs to the request that took it).
    pub async fn finish_idempotency_key(
        &self,
        user: &str,
        key: &str,
        at: i64,
        status: u16,
        body: &[u8],
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE idempotency_keys SET status = $4, body = $5
                 WHERE user_id = $1 AND key = $2 AND created_at = $3 AND status IS NULL",
            ))
            .bind(user)
            .bind(key)
            .bind(at)
            .bind(i32::from(status))
            .bind(body)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Gives back the key claimed `at` (its request failed or was abandoned, so a retry may
    /// run afresh).
    pub async fn release_idempotency_key(
        &self,
        user: &str,
        key: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "DELETE FROM idempotency_keys
                 WHERE user_id = $1 AND key = $2 AND created_at = $3 AND status IS NULL",
            ))
            .bind(user)
            .bind(key)
            .bind(at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}
