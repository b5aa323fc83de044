//! The SQLite backend: the embedded default, one file in the data directory.
//!
//! WAL mode with `synchronous = FULL`, so a commit has reached the disk before `append` returns
//! (the durability rule depends on it). SQLite runs one write transaction at a time, so appends
//! go through a single writer task that commits whatever is waiting — across documents — in one
//! transaction and one fsync (group commit), answering each caller after the commit. A handful
//! of pooled connections lets reads proceed beside it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use automerge::ChangeHash;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use taskflow_proto::DocumentId;
use tokio::sync::{mpsc, oneshot};

use super::{
    Batch, BeginWrite, ChangeRow, DocumentRow, OutboxEvent, ProjectionDelta, StoreError,
    StoredChange, StoredDoc, assemble, encode_heads,
};

/// How long a writer waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: u32 = 4;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    appends: mpsc::Sender<Append>,
}

/// Most appends committed in one transaction.
const MAX_GROUP: usize = 512;
/// Appends waiting for the writer before callers wait too.
const APPEND_QUEUE: usize = 4096;

/// One document's append, waiting for the group commit that includes it.
#[derive(Debug)]
struct Append {
    id: DocumentId,
    base: Vec<ChangeHash>,
    changes: Vec<StoredChange>,
    heads: Vec<ChangeHash>,
    projection: ProjectionDelta,
    events: Vec<OutboxEvent>,
    now_ms: i64,
    done: oneshot::Sender<Result<Appended, String>>,
}

/// One append's outcome inside a committed group.
#[derive(Debug, Clone, Copy)]
enum Appended {
    /// Written; the highest `seq` it gave a chunk.
    Stored(Option<i64>),
    /// Its base was not the stored heads: nothing of it was written.
    Stale,
}

impl SqliteStore {
    pub async fn connect_file(path: &Path) -> Result<Self, StoreError> {
        Self::connect(SqliteConnectOptions::new().filename(path)).await
    }

    pub async fn connect_url(url: &str) -> Result<Self, StoreError> {
        Self::connect(SqliteConnectOptions::from_str(url)?).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        let (appends, queue) = mpsc::channel(APPEND_QUEUE);
        tokio::spawn(group_writer(pool.clone(), queue));
        Ok(Self { pool, appends })
    }

    pub async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM server_meta WHERE key = ?1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn load(&self, id: &DocumentId) -> Result<Option<StoredDoc>, StoreError> {
        let key = id.to_string();
        let mut tx = self.pool.begin().await?;
        let Some(document) =
            sqlx::query_as::<_, DocumentRow>("SELECT snapshot, heads FROM documents WHERE id = ?1")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let changes = sqlx::query_as::<_, ChangeRow>(
            "SELECT hash, data, seq FROM changes WHERE document_id = ?1 ORDER BY seq",
        )
        .bind(&key)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        assemble(id, document, changes).map(Some)
    }

    pub async fn append(
        &self,
        id: &DocumentId,
        batch: Batch<'_>,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let (done, committed) = oneshot::channel();
        let append = Append {
            id: *id,
            base: batch.base.to_vec(),
            changes: batch.changes.to_vec(),
            heads: batch.heads.to_vec(),
            projection: batch.projection.clone(),
            events: batch.events.to_vec(),
            now_ms,
            done,
        };
        let stopped = || StoreError::Write("the SQLite writer has stopped".into());
        self.appends.send(append).await.map_err(|_| stopped())?;
        match committed.await.map_err(|_| stopped())? {
            Ok(Appended::Stored(seq)) => Ok(seq),
            Ok(Appended::Stale) => Err(StoreError::Stale(*id)),
            Err(e) => Err(StoreError::Write(e)),
        }
    }

    pub async fn compact(
        &self,
        id: &DocumentId,
        snapshot: &[u8],
        heads: &[ChangeHash],
        folded: &[ChangeHash],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let key = id.to_string();
        let mut tx = self.pool.begin_write().await?;
        let current = sqlx::query(
            "UPDATE documents SET snapshot = ?2, updated_at = ?3 WHERE id = ?1 AND heads = ?4",
        )
        .bind(&key)
        .bind(snapshot)
        .bind(now_ms)
        .bind(encode_heads(heads))
        .execute(&mut *tx)
        .await?;
        if current.rows_affected() == 0 {
            return Ok(false);
        }
        for hash in folded {
            sqlx::query("DELETE FROM changes WHERE document_id = ?1 AND hash = ?2")
                .bind(&key)
                .bind(&hash.0[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn document_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn change_count(&self, id: &DocumentId) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM changes WHERE document_id = ?1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Commits queued appends in groups until every store handle is gone.
async fn group_writer(pool: SqlitePool, mut queue: mpsc::Receiver<Append>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(append) => group.push(append),
                Err(_) => break,
            }
        }
        match write_group(&pool, &group).await {
            Ok(outcomes) => {
                for (append, outcome) in group.into_iter().zip(outcomes) {
                    // A caller that gave up waiting needs no answer.
                    let _ = append.done.send(Ok(outcome));
                }
            }
            Err(e) => {
                for append in group {
                    let _ = append.done.send(Err(e.to_string()));
                }
            }
        }
    }
}

async fn write_group(pool: &SqlitePool, group: &[Append]) -> Result<Vec<Appended>, sqlx::Error> {
    let mut tx = pool.begin_write().await?;
    let mut outcomes = Vec::with_capacity(group.len());
    for append in group {
        let key = append.id.to_string();
        // Checked first, so a stale append writes nothing and the group's others still commit.
        let moved = sqlx::query(
            "INSERT INTO documents (id, heads, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET heads = excluded.heads, updated_at = excluded.updated_at
             WHERE documents.heads = ?4",
        )
        .bind(&key)
        .bind(encode_heads(&append.heads))
        .bind(append.now_ms)
        .bind(encode_heads(&append.base))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            outcomes.push(Appended::Stale);
            continue;
        }
        let mut last_seq = None;
        for change in &append.changes {
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO changes (document_id, hash, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT (document_id, hash) DO NOTHING
                 RETURNING seq",
            )
            .bind(&key)
            .bind(&change.hash.0[..])
            .bind(&change.data)
            .fetch_optional(&mut *tx)
            .await?;
            last_seq = last_seq.max(seq);
        }
        let sql = |text: &str| text.replace('$', "?");
        write_projection!(&mut *tx, sql, &key, &append.projection).await?;
        write_outbox!(&mut *tx, sql, &append.events).await?;
        outcomes.push(Appended::Stored(last_seq));
    }
    tx.commit().await?;
    Ok(outcomes)
}
