//! Projects (a workspace's boards), on either backend (SQL written once, see `with_pool!`).

use sqlx::Row;

use super::{BeginWrite, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    /// The board document's id (base58check): what clients open over the sync socket.
    pub document_id: String,
    pub created_by: String,
    pub created_at: i64,
    pub archived_at: Option<i64>,
}

const SELECT: &str = "SELECT id, workspace_id, name, document_id, created_by, created_at, \
                      archived_at FROM projects";

/// Reads one `SELECT` row (same column order on both backends).
macro_rules! project_row {
    ($r:expr) => {
        ProjectRow {
            id: $r.get(0),
            workspace_id: $r.get(1),
            name: $r.get(2),
            document_id: $r.get(3),
            created_by: $r.get(4),
            created_at: $r.get(5),
            archived_at: $r.get(6),
        }
    };
}

impl Store {
    /// Stores a new project (and its `project.created` event); `false` when another project
    /// already has its document.
    pub async fn create_project(&self, p: &ProjectRow) -> Result<bool, StoreError> {
        let event = crate::events::domain::project_created(p);
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(&sql(
                "INSERT INTO projects (id, workspace_id, name, document_id, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (document_id) DO NOTHING",
            ))
            .bind(&p.id)
            .bind(&p.workspace_id)
            .bind(&p.name)
            .bind(&p.document_id)
            .bind(&p.created_by)
            .bind(p.created_at)
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

    pub async fn project(&self, id: &str) -> Result<Option<ProjectRow>, StoreError> {
        let text = format!("{SELECT} WHERE id = $1");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| project_row!(r)))
        })
    }

    /// The project whose board is `document_id` (how the sync socket finds a document's
    /// workspace).
    pub async fn project_of_document(
        &self,
        document_id: &str,
    ) -> Result<Option<ProjectRow>, StoreError> {
        let text = format!("{SELECT} WHERE document_id = $1");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(document_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| project_row!(r)))
        })
    }

    /// Whether anything is stored under `document_id` (without reading it).
    pub async fn has_document(&self, document_id: &str) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql("SELECT 1 FROM documents WHERE id = $1"))
                .bind(document_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.is_some())
        })
    }

    /// A workspace's projects, oldest first; archived ones only when asked.
    pub async fn projects_of(
        &self,
        workspace: &str,
        include_archived: bool,
    ) -> Result<Vec<ProjectRow>, StoreError> {
        let text = format!(
            "{SELECT} WHERE workspace_id = $1 {} ORDER BY created_at, id",
            if include_archived {
                ""
            } else {
                "AND archived_at IS NULL"
            }
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(workspace)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| project_row!(r)).collect())
        })
    }

    /// Archives a project (once; archiving again keeps the first time).
    pub async fn archive_project(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE projects SET archived_at = $2 WHERE id = $1 AND archived_at IS NULL",
            ))
            .bind(id)
            .bind(now_ms)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}
