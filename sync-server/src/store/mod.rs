//! Durable document storage: one interface, two backends (SQLite embedded, PostgreSQL).
//!
//! A document is stored as an optional compacted snapshot plus the change chunks appended since
//! it. Appends are idempotent (keyed by change hash) and happen in one transaction with the
//! document's new heads; compaction replaces the snapshot and deletes the chunks it folded in,
//! also in one transaction. Every intermediate state loads: a crash between or inside any of
//! these leaves either the old rows or the new ones, and snapshot + chunks may overlap freely.
//!
//! Only this module writes SQL.

/// Runs `$body` with `$pool` bound to the backend's pool and `$sql` to its placeholder
/// rewrite: statements are written once with PostgreSQL's `$n`, SQLite runs them with `?n`.
macro_rules! with_pool {
    ($store:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $store {
            Store::Sqlite(s) => {
                let $pool = &s.pool;
                let $sql = |text: &str| text.replace('$', "?");
                $body
            }
            Store::Postgres(s) => {
                let $pool = &s.pool;
                let $sql = |text: &str| text.to_owned();
                $body
            }
        }
    };
}

/// A write transaction, once begun.
type WriteTransaction<'a, Db> =
    futures_util::future::BoxFuture<'a, Result<sqlx::Transaction<'static, Db>, sqlx::Error>>;

/// Begins a transaction that writes. On SQLite it takes the write lock at once (`BEGIN
/// IMMEDIATE`), waiting its turn behind other writers: a deferred transaction that reads
/// before it writes would instead fail outright (`SQLITE_BUSY_SNAPSHOT`) whenever another
/// writer commits in between.
trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(&self) -> WriteTransaction<'_, Self::Db>;
}

impl BeginWrite for sqlx::SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(&self) -> WriteTransaction<'_, Self::Db> {
        Box::pin(self.begin_with("BEGIN IMMEDIATE"))
    }
}

impl BeginWrite for sqlx::PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(&self) -> WriteTransaction<'_, Self::Db> {
        Box::pin(self.begin())
    }
}

// Before the modules that use its macro.
#[macro_use]
mod outbox;
mod access;
mod deadlines;
mod idempotency;
mod identity;
mod invitations;
mod notifications;
#[macro_use]
mod projection;
mod postgres;
mod projects;
mod recurrences;
mod sqlite;
mod webhooks;
mod workspaces;

pub use access::DocumentAccess;
pub use deadlines::{Advance, DeadlineRow};
pub use idempotency::{Claim, KeyTimes};
pub use identity::{Rotation, UserRow};
pub use invitations::InvitationRow;
pub use notifications::{EmailAttempt, EmailRow, NotificationRow, Watch};
pub use outbox::{DeadLetter, Lease, LoggedEvent, OutboxEvent};
pub use projection::{
    ColumnSummary, CommentRecord, ProjectionDelta, TaskFilter, TaskRecord, TaskUpdate,
};
pub use projects::ProjectRow;
pub use recurrences::RecurrenceRow;
pub use webhooks::{Attempt, DeliveryRow, DueDelivery, WebhookRow};
pub use workspaces::{MemberChange, MemberFacts, MemberRow, WorkspaceRow};

use std::path::Path;

use automerge::ChangeHash;
use taskflow_proto::DocumentId;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("data directory: {0}")]
    DataDir(#[from] std::io::Error),
    #[error("unsupported DATABASE_URL scheme (expected postgres://, postgresql:// or sqlite:)")]
    UnsupportedUrl,
    #[error("writing to the database: {0}")]
    Write(String),
    #[error("stored heads of document {0} are corrupt")]
    CorruptHeads(DocumentId),
    /// Another node stored changes of the document since the write's base: catch up, retry.
    #[error("document {0} was changed by another node meanwhile")]
    Stale(DocumentId),
}

/// What the store holds for one document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDoc {
    pub snapshot: Option<Vec<u8>>,
    /// Change chunks appended since the snapshot, in append order.
    pub changes: Vec<StoredChange>,
    pub heads: Vec<ChangeHash>,
    /// The highest `changes.seq` read or written: a catch-up reads the chunks after it.
    pub last_seq: i64,
}

/// What a node finds stored after its last read of a document ([`Store::catch_up`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatchUp {
    /// Chunks appended since, in append order. Chunks another node folded into a new snapshot
    /// meanwhile are gone: the caller checks that `heads` are all known after applying these.
    pub changes: Vec<StoredChange>,
    pub heads: Vec<ChangeHash>,
    pub last_seq: i64,
}

/// A document's new changes and what they alter, written by [`Store::append`] in one
/// transaction.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The heads the batch was made on top of, which the store must still hold: when another
    /// node stored changes of the document since, the append fails with [`StoreError::Stale`]
    /// and writes nothing. Empty for a document not stored yet.
    pub base: &'a [ChangeHash],
    pub changes: &'a [StoredChange],
    pub heads: &'a [ChangeHash],
    pub projection: &'a ProjectionDelta,
    pub events: &'a [OutboxEvent],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    pub hash: ChangeHash,
    pub data: Vec<u8>,
}

impl From<automerge::Change> for StoredChange {
    fn from(mut change: automerge::Change) -> StoredChange {
        StoredChange {
            hash: change.hash(),
            data: change.bytes().into_owned(),
        }
    }
}

impl StoredDoc {
    /// Snapshot and chunks as one byte string that `Automerge::load` (and the `load_incremental`
    /// of any peer) accepts.
    pub fn concatenated(&self) -> Vec<u8> {
        let len = self.snapshot.as_ref().map_or(0, Vec::len)
            + self.changes.iter().map(|c| c.data.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        if let Some(s) = &self.snapshot {
            out.extend_from_slice(s);
        }
        for c in &self.changes {
            out.extend_from_slice(&c.data);
        }
        out
    }
}

/// The storage backend, chosen by configuration.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl Store {
    /// `database_url` selects PostgreSQL (`postgres://…`) or an explicit SQLite file
    /// (`sqlite:…`); without one the store is `taskflow.sqlite3` in `data_dir`. Runs migrations.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Store::Postgres(postgres::PgStore::connect(url).await?))
            }
            Some(url) if url.starts_with("sqlite:") => {
                Ok(Store::Sqlite(sqlite::SqliteStore::connect_url(url).await?))
            }
            Some(_) => Err(StoreError::UnsupportedUrl),
            None => {
                tokio::fs::create_dir_all(data_dir).await?;
                let path = data_dir.join("taskflow.sqlite3");
                Ok(Store::Sqlite(
                    sqlite::SqliteStore::connect_file(&path).await?,
                ))
            }
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// This server's storage id, created on first use. Clients key the sync state they keep
    /// for this server by it, so it must survive restarts.
    pub async fn storage_id(&self) -> Result<String, StoreError> {
        let fresh = uuid::Uuid::new_v4().to_string();
        match self {
            Store::Sqlite(s) => s.meta_get_or_insert("storage_id", &fresh).await,
            Store::Postgres(s) => s.meta_get_or_insert("storage_id", &fresh).await,
        }
    }

    pub async fn load(&self, id: &DocumentId) -> Result<Option<StoredDoc>, StoreError> {
        match self {
            Store::Sqlite(s) => s.load(id).await,
            Store::Postgres(s) => s.load(id).await,
        }
    }

    /// Appends change chunks (those already stored are skipped), records the document's heads,
    /// writes the board projection's rows those changes alter and the events derived from them
    /// (the outbox), in one transaction, creating the document on its first append. Returns
    /// once committed.
    /// Fails with [`StoreError::Stale`] when the stored heads are no longer `batch.base`, so two
    /// nodes writing one document never overwrite each other's heads nor derive one change's
    /// events twice. Returns the highest `seq` it gave a chunk (`None`: every chunk was there).
    pub async fn append(
        &self,
        id: &DocumentId,
        batch: Batch<'_>,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        match self {
            Store::Sqlite(s) => s.append(id, batch, now_ms).await,
            Store::Postgres(s) => s.append(id, batch, now_ms).await,
        }
    }

    /// The document's chunks appended after `after_seq` and its heads now, read together.
    /// `None` if the document is not stored.
    pub async fn catch_up(
        &self,
        id: &DocumentId,
        after_seq: i64,
    ) -> Result<Option<CatchUp>, StoreError> {
        let key = id.to_string();
        let postgres = matches!(self, Store::Postgres(_));
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin().await?;
            if postgres {
                // One snapshot for both reads (SQLite's read transaction is one already).
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await?;
            }
            let heads: Option<Vec<u8>> =
                sqlx::query_scalar(&sql("SELECT heads FROM documents WHERE id = $1"))
                    .bind(&key)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(heads) = heads else {
                return Ok(None);
            };
            let changes: Vec<ChangeRow> = sqlx::query_as(&sql(
                "SELECT hash, data, seq FROM changes WHERE document_id = $1 AND seq > $2 ORDER BY seq",
            ))
            .bind(&key)
            .bind(after_seq)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            catch_up_of(id, &heads, changes, after_seq).map(Some)
        })
    }

    /// Replaces the snapshot with `snapshot` (which holds every change up to `heads`) and deletes
    /// the chunks named in `folded`, atomically. Does nothing and answers `false` when the stored
    /// heads are no longer `heads` (another node stored changes the snapshot lacks).
    pub async fn compact(
        &self,
        id: &DocumentId,
        snapshot: &[u8],
        heads: &[ChangeHash],
        folded: &[ChangeHash],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(s) => s.compact(id, snapshot, heads, folded, now_ms).await,
            Store::Postgres(s) => s.compact(id, snapshot, heads, folded, now_ms).await,
        }
    }

    /// How many of this build's migrations the database lacks (0 when its schema is current).
    /// Also shows that the database answers.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let (migrator, applied): (sqlx::migrate::Migrator, Vec<i64>) = match self {
            Store::Sqlite(s) => (
                sqlx::migrate!("../migrations/sqlite"),
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&s.pool)
                    .await?,
            ),
            Store::Postgres(s) => (
                sqlx::migrate!("../migrations/postgres"),
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&s.pool)
                    .await?,
            ),
        };
        Ok(migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    pub async fn document_count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.document_count().await,
            Store::Postgres(s) => s.document_count().await,
        }
    }

    /// Number of change chunks stored for a document (not yet folded into its snapshot).
    pub async fn change_count(&self, id: &DocumentId) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.change_count(id).await,
            Store::Postgres(s) => s.change_count(id).await,
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// `documents.snapshot, documents.heads` as both backends return them.
type DocumentRow = (Option<Vec<u8>>, Vec<u8>);
/// `changes.hash, changes.data, changes.seq`.
type ChangeRow = (Vec<u8>, Vec<u8>, i64);

/// Builds a [`StoredDoc`] from its rows, checking the stored hashes.
fn assemble(
    id: &DocumentId,
    (snapshot, heads): DocumentRow,
    changes: Vec<ChangeRow>,
) -> Result<StoredDoc, StoreError> {
    let (changes, last_seq) = change_rows(id, changes, 0)?;
    Ok(StoredDoc {
        snapshot,
        heads: decode_heads(id, &heads)?,
        changes,
        last_seq,
    })
}

/// Chunks from their rows, checking the stored hashes, and the highest `seq` among them (or
/// `last_seq` if there are none).
fn change_rows(
    id: &DocumentId,
    rows: Vec<ChangeRow>,
    last_seq: i64,
) -> Result<(Vec<StoredChange>, i64), StoreError> {
    let last_seq = rows.iter().map(|r| r.2).fold(last_seq, i64::max);
    let changes = rows
        .into_iter()
        .map(|(hash, data, _)| {
            Ok(StoredChange {
                hash: decode_hash(id, &hash)?,
                data,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok((changes, last_seq))
}

/// The catch-up answer from a document's heads row and the chunks after `after_seq`.
fn catch_up_of(
    id: &DocumentId,
    heads: &[u8],
    rows: Vec<ChangeRow>,
    after_seq: i64,
) -> Result<CatchUp, StoreError> {
    let (changes, last_seq) = change_rows(id, rows, after_seq)?;
    Ok(CatchUp {
        changes,
        heads: decode_heads(id, heads)?,
        last_seq,
    })
}

/// Heads as stored, in sorted order: an append's base is compared byte for byte.
fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    let mut sorted = heads.to_vec();
    sorted.sort_unstable();
    sorted.iter().flat_map(|h| h.0).collect()
}

fn decode_heads(id: &DocumentId, bytes: &[u8]) -> Result<Vec<ChangeHash>, StoreError> {
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::CorruptHeads(*id));
    }
    bytes
        .chunks_exact(32)
        .map(|c| ChangeHash::try_from(c).map_err(|_| StoreError::CorruptHeads(*id)))
        .collect()
}

fn decode_hash(id: &DocumentId, bytes: &[u8]) -> Result<ChangeHash, StoreError> {
    ChangeHash::try_from(bytes).map_err(|_| StoreError::CorruptHeads(*id))
}
