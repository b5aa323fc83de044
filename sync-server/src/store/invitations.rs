//! Workspace invitations, on either backend (SQL written once, see `with_pool!`).

use sqlx::Row;

use super::{BeginWrite, Store, StoreError};
use crate::access::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRow {
    pub id: String,
    pub workspace_id: String,
    pub email: String,
    pub role: Role,
    pub invited_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    /// `accepted`, `declined` or `revoked` once closed.
    pub outcome: Option<String>,
}

const SELECT: &str = "SELECT id, workspace_id, email, role, invited_by, created_at, expires_at, \
                      outcome FROM invitations";

macro_rules! invitation_row {
    ($r:expr) => {{
        let role_text: String = $r.get(3);
        InvitationRow {
            id: $r.get(0),
            workspace_id: $r.get(1),
            email: $r.get(2),
            role: Role::parse(&role_text).ok_or_else(|| {
                StoreError::Write(format!("stored role `{role_text}` is unknown"))
            })?,
            invited_by: $r.get(4),
            created_at: $r.get(5),
            expires_at: $r.get(6),
            outcome: $r.get(7),
        }
    }};
}

impl Store {
    pub async fn create_invitation(
        &self,
        invitation: &InvitationRow,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        let event = crate::events::domain::user_invited(invitation);
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql("INSERT INTO invitations
                   (id, workspace_id, email, role, token_hash, invited_by, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
            .bind(&invitation.id)
            .bind(&invitation.workspace_id)
            .bind(&invitation.email)
            .bind(invitation.role.as_str())
            .bind(token_hash)
            .bind(&invitation.invited_by)
            .bind(invitation.created_at)
            .bind(invitation.expires_at)
            .execute(&mut *tx)
            .await?;
            write_outbox!(&mut *tx, sql, std::slice::from_ref(&event)).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// The invitation with this token: the one its inviter was given, or the one mailed to
    /// the invitee.
    pub async fn invitation_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<InvitationRow>, StoreError> {
        let text = format!("{SELECT} WHERE token_hash = $1 OR mail_token_hash = $1");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(token_hash)
                .fetch_optional(pool)
                .await?;
            Ok(match row {
                Some(r) => Some(invitation_row!(r)),
                None => None,
            })
        })
    }

    /// A workspace's open invitations, oldest first.
    pub async fn open_invitations(
        &self,
        workspace: &str,
    ) -> Result<Vec<InvitationRow>, StoreError> {
        let text = format!(
            "{SELECT} WHERE workspace_id = $1 AND closed_at IS NULL ORDER BY created_at, id"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(workspace)
                .fetch_all(pool)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(invitation_row!(r));
            }
            Ok(out)
        })
    }

    /// Closes an open invitation with `outcome`; on `accepted`, adds `user` as a member with
    /// the invited role in the same transaction. `false` when it was not open any more.
    pub async fn close_invitation(
        &self,
        id: &str,
        outcome: &str,
        user: Option<(&str, Role)>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let closed = sqlx::query(&sql("UPDATE invitations SET closed_at = $2, outcome = $3
                 WHERE id = $1 AND closed_at IS NULL RETURNING workspace_id"))
            .bind(id)
            .bind(now_ms)
            .bind(outcome)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(closed) = closed else {
                return Ok(false);
            };
            if let Some((user, role)) = user {
                let workspace: String = closed.get(0);
                let joined = sqlx::query(&sql(
                    "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, user_id) DO NOTHING",
                ))
                .bind(&workspace)
                .bind(user)
                .bind(role.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                if joined.rows_affected() == 1 {
                    let event = crate::events::domain::member_changed(
                        &workspace,
                        user,
                        user,
                        None,
                        Some(role),
                        now_ms,
                    );
                    write_outbox!(&mut *tx, sql, std::slice::from_ref(&event)).await?;
                }
            }
            tx.commit().await?;
            Ok(true)
        })
    }
}
