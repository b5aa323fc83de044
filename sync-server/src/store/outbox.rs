//! The transactional outbox and what reads it, on either backend (SQL written once, see
//! `with_pool!`).
//!
//! Events are written by `write_outbox!` inside the transaction of what they describe. The relay
//! reads pending rows in `seq` order and, once its sink has them, numbers them in publication
//! order (`published_seq`); in-process consumers follow that number with an offset each, and
//! keep the events they give up on as dead letters.

use sqlx::Row;
use taskflow_proto::events::Envelope;

use super::{BeginWrite, Store, StoreError};

/// One event as the outbox stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: String,
    pub key: String,
    pub kind: String,
    /// The whole CloudEvents JSON object.
    pub payload: String,
    pub created_at: i64,
}

impl OutboxEvent {
    pub fn of(envelope: &Envelope, now_ms: i64) -> OutboxEvent {
        OutboxEvent {
            id: envelope.id.clone(),
            key: envelope.partitionkey.clone(),
            kind: envelope.kind.clone(),
            payload: serde_json::to_string(envelope).unwrap_or_default(),
            created_at: now_ms,
        }
    }
}

/// A pending (`seq`) or published (`published_seq`) event, as the relay and consumers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub seq: i64,
    pub event: OutboxEvent,
}

/// An event a consumer gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub consumer: String,
    pub event_id: String,
    pub payload: String,
    pub reason: String,
    pub attempts: u32,
    pub failed_at: i64,
}

/// Writes events through `$conn` (a `&mut` connection inside the caller's transaction);
/// `$sql` rewrites placeholders as in `with_pool!`. Evaluates to a future of
/// `Result<(), sqlx::Error>`. An event id already stored is skipped.
macro_rules! write_outbox {
    ($conn:expr, $sql:ident, $events:expr) => {{
        let conn = $conn;
        let events: &[$crate::store::OutboxEvent] = $events;
        async move {
            for event in events {
                sqlx::query(&$sql(
                    "INSERT INTO outbox (id, partition_key, type, payload, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                ))
                .bind(&event.id)
                .bind(&event.key)
                .bind(&event.kind)
                .bind(&event.payload)
                .bind(event.created_at)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
    }};
}

const EVENT_COLUMNS: &str = "id, partition_key, type, payload, created_at";

macro_rules! logged_event {
    ($r:expr) => {
        LoggedEvent {
            seq: $r.get(0),
            event: OutboxEvent {
                id: $r.get(1),
                key: $r.get(2),
                kind: $r.get(3),
                payload: $r.get(4),
                created_at: $r.get(5),
            },
        }
    };
}

impl Store {
    /// The oldest events not yet published, in the order they were written.
    pub async fn pending_events(&self, limit: usize) -> Result<Vec<LoggedEvent>, StoreError> {
        let text = format!(
            "SELECT seq, {EVENT_COLUMNS} FROM outbox WHERE published_seq IS NULL
             ORDER BY seq LIMIT $1"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| logged_event!(r)).collect())
        })
    }

    /// How many events wait for the relay.
    pub async fn pending_event_count(&self) -> Result<u64, StoreError> {
        with_pool!(self, |pool, sql| {
            let n: i64 = sqlx::query(&sql(
                "SELECT COUNT(*) FROM outbox WHERE published_seq IS NULL",
            ))
            .fetch_one(pool)
            .await?
            .get(0);
            Ok(n as u64)
        })
    }

    /// The events waiting for the relay and how long the oldest has waited (ms at `now_ms`).
    pub async fn outbox_backlog(&self, now_ms: i64) -> Result<(u64, i64), StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE published_seq IS NULL",
            ))
            .fetch_one(pool)
            .await?;
            let count: i64 = row.get(0);
            let oldest: Option<i64> = row.get(1);
            Ok((count as u64, oldest.map_or(0, |t| (now_ms - t).max(0))))
        })
    }

    /// Marks the events `seqs` published, numbering them in the order given after every event
    /// published before.
    pub async fn mark_published(&self, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let last: Option<i64> = sqlx::query(&sql("SELECT MAX(published_seq) FROM outbox"))
                .fetch_one(&mut *tx)
                .await?
                .get(0);
            let mut next = last.unwrap_or(0);
            for seq in seqs {
                next += 1;
                sqlx::query(&sql(
                    "UPDATE outbox SET published_seq = $2, published_at = $3
                     WHERE seq = $1 AND published_seq IS NULL",
                ))
                .bind(seq)
                .bind(next)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Published events after `after` (a `published_seq`), in publication order, each with its
    /// `published_seq`.
    pub async fn published_events(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let text = format!(
            "SELECT published_seq, {EVENT_COLUMNS} FROM outbox WHERE published_seq > $1
             ORDER BY published_seq LIMIT $2"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(after)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| logged_event!(r)).collect())
        })
    }

    /// Drops published events older than `before` that every in-process consumer has handled.
    pub async fn prune_published(&self, before: i64) -> Result<u64, StoreError> {
        with_pool!(self, |pool, sql| {
            let done = sqlx::query(&sql("DELETE FROM outbox WHERE published_at < $1
                   AND published_seq <= COALESCE(
                       (SELECT MIN(published_seq) FROM consumer_offsets), published_seq)"))
            .bind(before)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    /// The `published_seq` up to which `consumer` has handled events (0: none yet).
    pub async fn consumer_offset(&self, consumer: &str) -> Result<i64, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(
                "SELECT published_seq FROM consumer_offsets WHERE consumer = $1",
            ))
            .bind(consumer)
            .fetch_optional(pool)
            .await?;
            Ok(row.map_or(0, |r| r.get(0)))
        })
    }

    /// Records that `consumer` has handled everything up to `offset`; with `dead`, the event it
    /// gave up on, in the same transaction.
    pub async fn commit_offset(
        &self,
        consumer: &str,
        offset: i64,
        dead: Option<&DeadLetter>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            if let Some(dead) = dead {
                sqlx::query(&sql("INSERT INTO dead_letters
                       (consumer, event_id, payload, reason, attempts, failed_at)
                     VALUES ($1, $2, $3, $4, $5, $6)"))
                .bind(&dead.consumer)
                .bind(&dead.event_id)
                .bind(&dead.payload)
                .bind(&dead.reason)
                .bind(i64::from(dead.attempts))
                .bind(dead.failed_at)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(&sql(
                "INSERT INTO consumer_offsets (consumer, published_seq) VALUES ($1, $2)
                 ON CONFLICT (consumer) DO UPDATE SET published_seq = excluded.published_seq",
            ))
            .bind(consumer)
            .bind(offset)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The events `consumer` gave up on, oldest first.
    pub async fn dead_letters(&self, consumer: &str) -> Result<Vec<DeadLetter>, StoreError> {
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(
                "SELECT consumer, event_id, payload, reason, attempts, failed_at
                 FROM dead_letters WHERE consumer = $1 ORDER BY id",
            ))
            .bind(consumer)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| DeadLetter {
                    consumer: r.get(0),
                    event_id: r.get(1),
                    payload: r.get(2),
                    reason: r.get(3),
                    attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(0),
                    failed_at: r.get(5),
                })
                .collect())
        })
    }
}

/// The right to run one named job (the relay, an in-process consumer) alone among the server
/// nodes sharing a database, held while this value lives. On PostgreSQL it is a session
/// advisory lock on a connection taken out of the pool (closing it frees the lock); SQLite
/// serves one process.
#[derive(Debug)]
pub enum Lease {
    Sqlite,
    Postgres(sqlx::PgConnection),
}

impl Store {
    /// Takes the lease named `name`, or `None` while another node holds it.
    pub async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Some(Lease::Sqlite)),
            Store::Postgres(s) => {
                let mut conn = s.pool.acquire().await?;
                let taken: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                        .bind(name)
                        .fetch_one(&mut *conn)
                        .await?;
                Ok(taken.then(|| Lease::Postgres(conn.detach())))
            }
        }
    }
}

impl Lease {
    /// Whether the lease still holds (its connection is alive).
    pub async fn holds(&mut self) -> bool {
        match self {
            Lease::Sqlite => true,
            Lease::Postgres(conn) => sqlx::query("SELECT 1").execute(conn).await.is_ok(),
        }
    }
}
