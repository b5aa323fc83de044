//! The local replica store: one SQLite file in the client's data directory.
//!
//! A document is a snapshot plus the incremental chunks saved since (see
//! `migrations/client/0001_replica.sql`). Every write is one transaction with
//! `synchronous=FULL`, so a write that returned is on disk and survives a kill -9 or a power cut.
//! Several processes may share one store (a `watch` running while another command edits): chunks
//! only ever accumulate, and [`ReplicaStore::compact`] folds in chunks written by others before it
//! deletes anything, so no process can drop another's changes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};
use taskflow_proto::{DocumentId, StorageId};

/// The store's file name inside the data directory.
pub const STORE_FILE: &str = "replicas.sqlite3";

/// How long a write waits for another process holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("local store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("local store schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("local store holds an invalid document id `{0}`")]
    BadId(String),
}

/// One document as stored: its snapshot and the chunks after it, oldest first.
#[derive(Debug, Clone, Default)]
pub struct StoredReplica {
    pub snapshot: Vec<u8>,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub seq: i64,
    pub data: Vec<u8>,
}

/// What a server is known to hold of a document, saved with the changes it concerns.
#[derive(Debug, Clone, Copy)]
pub struct SyncRecord<'a> {
    pub storage_id: &'a StorageId,
    /// `automerge::sync::State::encode()`.
    pub state: &'a [u8],
}

#[derive(Debug, Clone)]
pub struct ReplicaStore {
    pool: SqlitePool,
}

impl ReplicaStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub async fn open(data_dir: &Path) -> Result<ReplicaStore, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join(STORE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection: the client's engine is the only writer in this process, and one
        // connection keeps its writes in order.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/client").run(&pool).await?;
        Ok(ReplicaStore { pool })
    }

    /// Every document in the store, oldest first.
    pub async fn document_ids(&self) -> Result<Vec<DocumentId>, StoreError> {
        let rows = sqlx::query("SELECT id FROM documents ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.get(0);
                DocumentId::parse(&id).map_err(|_| StoreError::BadId(id))
            })
            .collect()
    }

    pub async fn load(&self, id: &DocumentId) -> Result<Option<StoredReplica>, StoreError> {
        let key = id.to_string();
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query("SELECT snapshot FROM documents WHERE id = ?1")
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let chunks =
            sqlx::query("SELECT seq, data FROM chunks WHERE document_id = ?1 ORDER BY seq")
                .bind(&key)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Chunk {
                    seq: r.get(0),
                    data: r.get(1),
                })
                .collect();
        tx.commit().await?;
        Ok(Some(StoredReplica {
            snapshot: row.get(0),
            chunks,
        }))
    }

    /// Records a document; `false` when it was there already (its contents are left alone).
    pub async fn create(
        &self,
        id: &DocumentId,
        snapshot: &[u8],
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO documents (id, snapshot, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(snapshot)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Saves new changes of a document (and, in the same transaction, what the server is known to
    /// hold); returns the chunk's sequence number.
    pub async fn append(
        &self,
        id: &DocumentId,
        chunk: &[u8],
        sync: Option<SyncRecord<'_>>,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let key = id.to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE documents SET updated_at = ?2 WHERE id = ?1")
            .bind(&key)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO chunks (document_id, data) VALUES (?1, ?2) RETURNING seq",
        )
        .bind(&key)
        .bind(chunk)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(sync) = sync {
            put_sync_state(&mut tx, &key, sync).await?;
        }
        tx.commit().await?;
        Ok(seq)
    }

    /// Removes a document, its chunks and sync states.
    pub async fn delete(&self, id: &DocumentId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM documents WHERE id = ?1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn save_sync_state(
        &self,
        id: &DocumentId,
        sync: SyncRecord<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        put_sync_state(&mut tx, &id.to_string(), sync).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn sync_state(
        &self,
        id: &DocumentId,
        storage_id: &StorageId,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT state FROM sync_states WHERE document_id = ?1 AND storage_id = ?2",
        )
        .bind(id.to_string())
        .bind(storage_id.as_str())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Replaces a document's snapshot and chunks with one new snapshot.
    ///
    /// `known` are the chunks the caller's replica already contains. Chunks another process
    /// wrote meanwhile are handed to `fold` (oldest first), which must merge them into the
    /// replica and return the replica's full snapshot; then every chunk folded in is deleted.
    /// Returns the sequence numbers that were folded in from others.
    pub async fn compact(
        &self,
        id: &DocumentId,
        known: &BTreeSet<i64>,
        fold: impl FnOnce(Vec<Vec<u8>>) -> Vec<u8>,
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let key = id.to_string();
        let mut tx = self.pool.begin().await?;
        // Write first: it takes the database's write lock, so no chunk can land between the
        // read below and the delete.
        sqlx::query("UPDATE documents SET updated_at = ?2 WHERE id = ?1")
            .bind(&key)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT seq, data FROM chunks WHERE document_id = ?1 ORDER BY seq")
            .bind(&key)
            .fetch_all(&mut *tx)
            .await?;
        let mut foreign = Vec::new();
        let mut foreign_data = Vec::new();
        for row in &rows {
            let seq: i64 = row.get(0);
            if !known.contains(&seq) {
                foreign.push(seq);
                foreign_data.push(row.get::<Vec<u8>, _>(1));
            }
        }
        let snapshot = fold(foreign_data);
        sqlx::query("UPDATE documents SET snapshot = ?2 WHERE id = ?1")
            .bind(&key)
            .bind(&snapshot)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM chunks WHERE document_id = ?1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(foreign)
    }
}

async fn put_sync_state(
    tx: &mut sqlx::SqliteConnection,
    key: &str,
    sync: SyncRecord<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sync_states (document_id, storage_id, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (document_id, storage_id) DO UPDATE SET state = excluded.state",
    )
    .bind(key)
    .bind(sync.storage_id.as_str())
    .bind(sync.state)
    .execute(tx)
    .await?;
    Ok(())
}
