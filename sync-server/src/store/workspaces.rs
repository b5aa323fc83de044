//! Workspaces and memberships, on either backend (SQL written once, see `with_pool!`).

use sqlx::Row;

use super::{BeginWrite, Store, StoreError};
use crate::access::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// What a membership change is decided on, read inside the change's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberFacts {
    pub actor: Option<Role>,
    pub target: Option<Role>,
    pub owners: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    SetRole(Role),
    Remove,
}

pub(super) fn role(text: &str) -> Result<Role, StoreError> {
    Role::parse(text).ok_or_else(|| StoreError::Write(format!("stored role `{text}` is unknown")))
}

/// A `w.id, w.name, w.created_at, m.role` row: the workspace and a member's role in it.
macro_rules! workspace_and_role {
    ($r:expr) => {{
        let workspace = WorkspaceRow {
            id: $r.get(0),
            name: $r.get(1),
            created_at: $r.get(2),
        };
        (workspace, role(&$r.get::<String, _>(3))?)
    }};
}

impl Store {
    /// Creates a workspace with `owner` as its owner, in one transaction.
    pub async fn create_workspace(
        &self,
        workspace: &WorkspaceRow,
        owner: &str,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql(
                "INSERT INTO workspaces (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
            ))
            .bind(&workspace.id)
            .bind(&workspace.name)
            .bind(owner)
            .bind(workspace.created_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&sql(
                "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)
                 VALUES ($1, $2, 'owner', $3)",
            ))
            .bind(&workspace.id)
            .bind(owner)
            .bind(workspace.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn workspace(&self, id: &str) -> Result<Option<WorkspaceRow>, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(
                "SELECT id, name, created_at FROM workspaces WHERE id = $1",
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| WorkspaceRow {
                id: r.get(0),
                name: r.get(1),
                created_at: r.get(2),
            }))
        })
    }

    /// The workspaces `user` belongs to, with their role in each, oldest first.
    pub async fn workspaces_of(&self, user: &str) -> Result<Vec<(WorkspaceRow, Role)>, StoreError> {
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(
                "SELECT w.id, w.name, w.created_at, m.role FROM workspaces w
                 JOIN workspace_members m ON m.workspace_id = w.id
                 WHERE m.user_id = $1 ORDER BY w.created_at, w.id",
            ))
            .bind(user)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| Ok(workspace_and_role!(r))).collect()
        })
    }

    /// The workspace and `user`'s role in it; `None` unless `user` is a member.
    pub async fn membership(
        &self,
        workspace: &str,
        user: &str,
    ) -> Result<Option<(WorkspaceRow, Role)>, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(
                "SELECT w.id, w.name, w.created_at, m.role FROM workspaces w
                 JOIN workspace_members m ON m.workspace_id = w.id
                 WHERE w.id = $1 AND m.user_id = $2",
            ))
            .bind(workspace)
            .bind(user)
            .fetch_optional(pool)
            .await?;
            row.map(|r| Ok(workspace_and_role!(r))).transpose()
        })
    }

    pub async fn members(&self, workspace: &str) -> Result<Vec<MemberRow>, StoreError> {
        self.members_where(workspace, None).await
    }

    /// Those of `users` who are members of `workspace`.
    pub async fn members_among(
        &self,
        workspace: &str,
        users: &[String],
    ) -> Result<Vec<MemberRow>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.members_where(workspace, Some(users)).await
    }

    /// A workspace's members (only those of `users`, when given), in the order they joined.
    async fn members_where(
        &self,
        workspace: &str,
        users: Option<&[String]>,
    ) -> Result<Vec<MemberRow>, StoreError> {
        let among = users.map_or(String::new(), |users| {
            let slots: Vec<String> = (0..users.len()).map(|i| format!("${}", i + 2)).collect();
            format!("AND m.user_id IN ({})", slots.join(", "))
        });
        let text = format!(
            "SELECT u.id, u.email, u.name, m.role FROM workspace_members m
             JOIN users u ON u.id = m.user_id
             WHERE m.workspace_id = $1 {among} ORDER BY m.joined_at, u.email"
        );
        with_pool!(self, |pool, sql| {
            let text = sql(&text);
            let mut query = sqlx::query(&text).bind(workspace);
            for user in users.unwrap_or_default() {
                query = query.bind(user);
            }
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(MemberRow {
                        user_id: r.get(0),
                        email: r.get(1),
                        name: r.get(2),
                        role: role(&r.get::<String, _>(3))?,
                    })
                })
                .collect()
        })
    }

    /// Adds a member (what accepting an invitation does); `false` if already a member.
    pub async fn add_member(
        &self,
        workspace: &str,
        user: &str,
        role: Role,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let done = sqlx::query(&sql(
                "INSERT INTO workspace_members (workspace_id, user_id, role, joined_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, user_id) DO NOTHING",
            ))
            .bind(workspace)
            .bind(user)
            .bind(role.as_str())
            .bind(now_ms)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Changes or ends `target`'s membership as `decide` rules on the facts, all in one
    /// transaction that first locks the workspace row: concurrent changes to one workspace run
    /// one after the other, so "always an owner" holds even when two owners step down at once.
    /// The change's event (`member.role_changed` or `member.removed`) is written with it.
    pub async fn change_member<E>(
        &self,
        workspace: &str,
        actor: &str,
        target: &str,
        decide: impl FnOnce(MemberFacts) -> Result<MemberChange, E>,
    ) -> Result<Result<MemberChange, E>, StoreError> {
        let now = crate::now_ms();
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql("UPDATE workspaces SET name = name WHERE id = $1"))
                .bind(workspace)
                .execute(&mut *tx)
                .await?;
            let role_sql =
                sql("SELECT role FROM workspace_members WHERE workspace_id = $1 AND user_id = $2");
            let actor_role = sqlx::query(&role_sql)
                .bind(workspace)
                .bind(actor)
                .fetch_optional(&mut *tx)
                .await?;
            let target_role = sqlx::query(&role_sql)
                .bind(workspace)
                .bind(target)
                .fetch_optional(&mut *tx)
                .await?;
            let owners: i64 = sqlx::query(&sql(
                "SELECT COUNT(*) FROM workspace_members WHERE workspace_id = $1 AND role = 'owner'",
            ))
            .bind(workspace)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            let facts = MemberFacts {
                actor: actor_role
                    .map(|r| role(&r.get::<String, _>(0)))
                    .transpose()?,
                target: target_role
                    .map(|r| role(&r.get::<String, _>(0)))
                    .transpose()?,
                owners: usize::try_from(owners).unwrap_or(0),
            };
            let from = facts.target;
            let change = match decide(facts) {
                Ok(change) => change,
                Err(refused) => return Ok(Err(refused)),
            };
            let statement = match change {
                MemberChange::SetRole(_) => {
                    "UPDATE workspace_members SET role = $3 WHERE workspace_id = $1 AND user_id = $2"
                }
                MemberChange::Remove => {
                    "DELETE FROM workspace_members WHERE workspace_id = $1 AND user_id = $2"
                }
            };
            let statement = sql(statement);
            let mut query = sqlx::query(&statement).bind(workspace).bind(target);
            if let MemberChange::SetRole(new_role) = change {
                query = query.bind(new_role.as_str());
            }
            query.execute(&mut *tx).await?;
            let to = match change {
                MemberChange::SetRole(role) => Some(role),
                MemberChange::Remove => None,
            };
            if from != to {
                let event =
                    crate::events::domain::member_changed(workspace, actor, target, from, to, now);
                write_outbox!(&mut *tx, sql, std::slice::from_ref(&event)).await?;
            }
            tx.commit().await?;
            Ok(Ok(change))
        })
    }
}
