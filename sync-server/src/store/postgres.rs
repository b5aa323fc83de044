//! The PostgreSQL backend (`DATABASE_URL=postgres://…`), for servers that share one database.
//!
//! Appends insert every chunk with one `UNNEST` statement; compaction deletes the folded chunks
//! by hash, so chunks appended meanwhile by anyone else are never lost.

use std::time::Duration;

use automerge::ChangeHash;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use taskflow_proto::DocumentId;

use super::{Batch, ChangeRow, DocumentRow, StoreError, StoredDoc, assemble, encode_heads};

const MAX_CONNECTIONS: u32 = 16;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    pub async fn meta_get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM server_meta WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get(0))
    }

    pub async fn load(&self, id: &DocumentId) -> Result<Option<StoredDoc>, StoreError> {
        let key = id.to_string();
        // One snapshot of the database for both reads, so a concurrent compaction cannot make
        // us miss chunks (deleted) that our snapshot read predates.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let Some(document) =
            sqlx::query_as::<_, DocumentRow>("SELECT snapshot, heads FROM documents WHERE id = $1")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let changes = sqlx::query_as::<_, ChangeRow>(
            "SELECT hash, data, seq FROM changes WHERE document_id = $1 ORDER BY seq",
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
        let key = id.to_string();
        let mut tx = self.pool.begin().await?;
        // First, so the row lock orders every append of one document: chunks are then numbered
        // (`seq`) in commit order, which catch-ups rely on.
        let moved = sqlx::query(
            "INSERT INTO documents (id, heads, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET heads = excluded.heads, updated_at = excluded.updated_at
             WHERE documents.heads = $4",
        )
        .bind(&key)
        .bind(encode_heads(batch.heads))
        .bind(now_ms)
        .bind(encode_heads(batch.base))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            return Err(StoreError::Stale(*id));
        }
        let hashes: Vec<Vec<u8>> = batch.changes.iter().map(|c| c.hash.0.to_vec()).collect();
        let data: Vec<&[u8]> = batch.changes.iter().map(|c| c.data.as_slice()).collect();
        let seqs: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO changes (document_id, hash, data)
             SELECT $1, h, d FROM UNNEST($2::bytea[], $3::bytea[]) WITH ORDINALITY AS t (h, d, n)
             ORDER BY n
             ON CONFLICT (document_id, hash) DO NOTHING
             RETURNING seq",
        )
        .bind(&key)
        .bind(&hashes)
        .bind(&data)
        .fetch_all(&mut *tx)
        .await?;
        let sql = |text: &str| text.to_owned();
        write_projection!(&mut *tx, sql, &key, batch.projection).await?;
        write_outbox!(&mut *tx, sql, batch.events).await?;
        tx.commit().await?;
        Ok(seqs.into_iter().max())
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
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query(
            "UPDATE documents SET snapshot = $2, updated_at = $3 WHERE id = $1 AND heads = $4",
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
        let hashes: Vec<Vec<u8>> = folded.iter().map(|h| h.0.to_vec()).collect();
        sqlx::query("DELETE FROM changes WHERE document_id = $1 AND hash = ANY($2::bytea[])")
            .bind(&key)
            .bind(&hashes)
            .execute(&mut *tx)
            .await?;
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
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM changes WHERE document_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
