//! What the sync socket asks before it lets a user at a document: whose workspace the document
//! is in and the user's role there, and which user an Automerge actor id belongs to.

use sqlx::Row;

use super::workspaces::role;
use super::{Store, StoreError};
use crate::access::Role;

/// A document's workspace and the asking user's role in it (`None`: not a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentAccess {
    pub workspace_id: String,
    pub role: Option<Role>,
}

impl Store {
    /// Where `document_id` belongs and what `user` may do there; `None` when the document is no
    /// project's board.
    pub async fn document_access(
        &self,
        document_id: &str,
        user: &str,
    ) -> Result<Option<DocumentAccess>, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql("SELECT p.workspace_id, m.role FROM projects p
                 LEFT JOIN workspace_members m ON m.workspace_id = p.workspace_id AND m.user_id = $2
                 WHERE p.document_id = $1"))
            .bind(document_id)
            .bind(user)
            .fetch_optional(pool)
            .await?;
            row.map(|r| {
                let role_text: Option<String> = r.get(1);
                Ok(DocumentAccess {
                    workspace_id: r.get(0),
                    role: role_text.as_deref().map(role).transpose()?,
                })
            })
            .transpose()
        })
    }

    /// Binds `actor` (hex) to `user` unless it is bound already; returns the user it is bound
    /// to, which is someone else when another user's changes carried it first.
    pub async fn bind_actor(
        &self,
        actor: &str,
        user: &str,
        now_ms: i64,
    ) -> Result<String, StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "INSERT INTO actors (actor_id, user_id, first_seen) VALUES ($1, $2, $3)
                 ON CONFLICT (actor_id) DO NOTHING",
            ))
            .bind(actor)
            .bind(user)
            .bind(now_ms)
            .execute(pool)
            .await?;
            let owner = sqlx::query(&sql("SELECT user_id FROM actors WHERE actor_id = $1"))
                .bind(actor)
                .fetch_one(pool)
                .await?;
            Ok(owner.get(0))
        })
    }

    /// The user `actor` is bound to, if any.
    pub async fn actor_user(&self, actor: &str) -> Result<Option<String>, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql("SELECT user_id FROM actors WHERE actor_id = $1"))
                .bind(actor)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }
}
