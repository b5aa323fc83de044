//! The relational projection of board documents: tasks (with assignees, labels and comments)
//! and columns, as rows that REST reads and filters. Rows are written only together with the
//! changes they come from (`write_projection!`, inside `Store::append`'s transaction), so the
//! projection never disagrees with the stored document. Reads run on either backend (SQL
//! written once, see `with_pool!`).

use sqlx::Row;
use taskflow_proto::board::{Column, Task, TaskId};

use super::{Store, StoreError};
use crate::access::Role;

/// What one merge changes in a board's projection (built by `doc::projection` from the
/// operations of the merged changes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProjectionDelta {
    /// Drop every row of the document first (a rebuild from the whole document), and take it
    /// off the backlog.
    pub rebuild: bool,
    /// The board's columns, when they changed.
    pub columns: Option<Vec<Column>>,
    /// Tasks to write as they now are.
    pub tasks: Vec<TaskUpdate>,
    /// Tasks no longer in the document (or no longer readable as tasks).
    pub removed: Vec<TaskId>,
    /// The version every written task gets: derived from the document's new heads.
    pub version: String,
}

impl ProjectionDelta {
    pub fn is_empty(&self) -> bool {
        !self.rebuild && self.columns.is_none() && self.tasks.is_empty() && self.removed.is_empty()
    }
}

/// A task to write, and which of its sets to rewrite (the task row itself is always written).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskUpdate {
    pub task: Task,
    pub assignees: bool,
    pub labels: bool,
    pub comments: bool,
}

/// Writes a [`ProjectionDelta`] for one document through `$conn` (a `&mut` connection inside
/// the caller's transaction); `$sql` rewrites placeholders for the backend, as in `with_pool!`.
/// Evaluates to a future of `Result<(), sqlx::Error>`. A failure here fails the commit of the
/// changes too, so nothing a client can write may fail it: rows whose keys repeat (two comments
/// claiming one id, say) are skipped with `ON CONFLICT DO NOTHING`.
macro_rules! write_projection {
    ($conn:expr, $sql:ident, $document:expr, $delta:expr) => {{
        let conn = $conn;
        let document: &str = $document;
        let delta: &$crate::store::ProjectionDelta = $delta;
        async move {
            if delta.rebuild {
                for table in ["tasks", "board_columns", "projection_backlog"] {
                    sqlx::query(&$sql(&format!("DELETE FROM {table} WHERE document_id = $1")))
                        .bind(document)
                        .execute(&mut *conn)
                        .await?;
                }
            }
            if let Some(columns) = &delta.columns {
                sqlx::query(&$sql("DELETE FROM board_columns WHERE document_id = $1"))
                    .bind(document)
                    .execute(&mut *conn)
                    .await?;
                for (position, column) in columns.iter().enumerate() {
                    sqlx::query(&$sql(
                        "INSERT INTO board_columns (document_id, id, name, position, wip_limit)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    ))
                    .bind(document)
                    .bind(column.id.as_str())
                    .bind(&column.name)
                    .bind(position as i64)
                    .bind(column.wip_limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                    .execute(&mut *conn)
                    .await?;
                }
            }
            for id in &delta.removed {
                sqlx::query(&$sql("DELETE FROM tasks WHERE document_id = $1 AND id = $2"))
                    .bind(document)
                    .bind(id.as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            for update in &delta.tasks {
                let t = &update.task;
                let json = |set: &std::collections::BTreeSet<String>| {
                    serde_json::to_string(set).unwrap_or_else(|_| "[]".into())
                };
                sqlx::query(&$sql(
                    "INSERT INTO tasks (document_id, id, title, description, column_id, position,
                         priority, due_at, created_by, created_at, updated_at, archived, assignees,
                         labels, comment_count, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
                     ON CONFLICT (document_id, id) DO UPDATE SET
                         title = excluded.title, description = excluded.description,
                         column_id = excluded.column_id, position = excluded.position,
                         priority = excluded.priority, due_at = excluded.due_at,
                         created_by = excluded.created_by, created_at = excluded.created_at,
                         updated_at = excluded.updated_at, archived = excluded.archived,
                         assignees = excluded.assignees, labels = excluded.labels,
                         comment_count = excluded.comment_count, version = excluded.version",
                ))
                .bind(document)
                .bind(t.id.as_str())
                .bind(&t.title)
                .bind(&t.description)
                .bind(t.column.as_str())
                .bind(t.order.as_str())
                .bind(t.priority.as_str())
                .bind(t.due)
                .bind(&t.created_by)
                .bind(t.created_at)
                .bind(t.updated_at)
                .bind(t.archived)
                .bind(json(&t.assignees))
                .bind(json(&t.labels))
                .bind(t.comments.len() as i64)
                .bind(&delta.version)
                .execute(&mut *conn)
                .await?;
                let sets = [
                    (update.assignees, "task_assignees", "user_id", &t.assignees),
                    (update.labels, "task_labels", "label", &t.labels),
                ];
                for (changed, table, column, values) in sets {
                    if !changed {
                        continue;
                    }
                    sqlx::query(&$sql(&format!(
                        "DELETE FROM {table} WHERE document_id = $1 AND task_id = $2"
                    )))
                    .bind(document)
                    .bind(t.id.as_str())
                    .execute(&mut *conn)
                    .await?;
                    for value in values {
                        sqlx::query(&$sql(&format!(
                            "INSERT INTO {table} (document_id, task_id, {column}) VALUES ($1, $2, $3)
                             ON CONFLICT DO NOTHING"
                        )))
                        .bind(document)
                        .bind(t.id.as_str())
                        .bind(value)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
                if update.comments {
                    sqlx::query(&$sql(
                        "DELETE FROM task_comments WHERE document_id = $1 AND task_id = $2",
                    ))
                    .bind(document)
                    .bind(t.id.as_str())
                    .execute(&mut *conn)
                    .await?;
                    for c in &t.comments {
                        sqlx::query(&$sql(
                            "INSERT INTO task_comments (document_id, task_id, id, author, body, created_at)
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                        ))
                        .bind(document)
                        .bind(t.id.as_str())
                        .bind(c.id.as_str())
                        .bind(&c.author)
                        .bind(&c.body)
                        .bind(c.created_at)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
            }
            Ok::<(), sqlx::Error>(())
        }
    }};
}

/// A task as the projection holds it, with its project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub project_id: String,
    pub document_id: String,
    pub id: String,
    pub title: String,
    pub description: String,
    pub column_id: String,
    pub position: String,
    pub priority: String,
    pub due_at: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub archived: bool,
    pub assignees: Vec<String>,
    pub labels: Vec<String>,
    pub comment_count: i64,
    pub version: String,
}

const TASK_COLUMNS: &str = "SELECT p.id, t.document_id, t.id, t.title, t.description, t.column_id, \
     t.position, t.priority, t.due_at, t.created_by, t.created_at, t.updated_at, t.archived, \
     t.assignees, t.labels, t.comment_count, t.version";
const TASK_FROM: &str = "FROM tasks t JOIN projects p ON p.document_id = t.document_id";

macro_rules! task_record {
    ($r:expr) => {{
        let r = $r;
        let set = |i: usize| -> Vec<String> {
            serde_json::from_str(&r.get::<String, _>(i)).unwrap_or_default()
        };
        TaskRecord {
            project_id: r.get(0),
            document_id: r.get(1),
            id: r.get(2),
            title: r.get(3),
            description: r.get(4),
            column_id: r.get(5),
            position: r.get(6),
            priority: r.get(7),
            due_at: r.get(8),
            created_by: r.get(9),
            created_at: r.get(10),
            updated_at: r.get(11),
            archived: r.get(12),
            assignees: set(13),
            labels: set(14),
            comment_count: r.get(15),
            version: r.get(16),
        }
    }};
}

/// Which tasks of a board a listing wants (all conditions must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in this column (by id).
    pub column: Option<String>,
    /// Archived tasks instead of live ones.
    pub archived: bool,
    pub assignee: Option<String>,
    pub label: Option<String>,
    /// Due strictly before / at or after (ms); tasks without a due date never match these.
    pub due_before: Option<i64>,
    pub due_after: Option<i64>,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
    /// Only tasks after this (created_at, id), the listing's order.
    pub after: Option<(i64, String)>,
}

/// A board column with how many live tasks it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSummary {
    pub id: String,
    pub name: String,
    pub wip_limit: Option<i64>,
    pub task_count: i64,
}

/// A comment as the projection holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRecord {
    pub id: String,
    pub task_id: String,
    pub author: String,
    pub body: String,
    pub created_at: i64,
}

const COMMENT_COLUMNS: &str = "SELECT id, task_id, author, body, created_at FROM task_comments";

/// Reads one `COMMENT_COLUMNS` row (same column order on both backends).
macro_rules! comment_record {
    ($r:expr) => {
        CommentRecord {
            id: $r.get(0),
            task_id: $r.get(1),
            author: $r.get(2),
            body: $r.get(3),
            created_at: $r.get(4),
        }
    };
}

/// `%` and `_` match themselves in a `LIKE … ESCAPE '\'` pattern.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// The tasks with id `id` on boards whose workspace `user` is a member of, each with their
    /// role there: at most two. (Task ids are unique per board, and chosen by clients: two
    /// boards the user sees may share one.)
    pub async fn visible_tasks(
        &self,
        id: &str,
        user: &str,
    ) -> Result<Vec<(TaskRecord, Role)>, StoreError> {
        let text = format!(
            "{TASK_COLUMNS}, m.role {TASK_FROM}
             JOIN workspace_members m ON m.workspace_id = p.workspace_id AND m.user_id = $2
             WHERE t.id = $1 LIMIT 2"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(id)
                .bind(user)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let role = super::workspaces::role(&r.get::<String, _>(17))?;
                    Ok((task_record!(r), role))
                })
                .collect()
        })
    }

    /// The task `id` of the board `document_id`.
    pub async fn task_in(
        &self,
        document_id: &str,
        id: &str,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let text = format!("{TASK_COLUMNS} {TASK_FROM} WHERE t.document_id = $1 AND t.id = $2");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(document_id)
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| task_record!(&r)))
        })
    }

    /// Up to `limit` tasks of a board matching `filter`, oldest first (then by id).
    pub async fn list_tasks(
        &self,
        document_id: &str,
        filter: &TaskFilter,
        limit: u32,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        // Conditions with numbered placeholders, bound in the same order below.
        let mut conditions = vec![
            "t.document_id = $1".to_owned(),
            "t.archived = $2".to_owned(),
        ];
        let mut n = 2;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.column.is_some() {
            conditions.push(format!("t.column_id = {}", next()));
        }
        if filter.assignee.is_some() {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM task_assignees a WHERE a.document_id = t.document_id \
                 AND a.task_id = t.id AND a.user_id = {})",
                next()
            ));
        }
        if filter.label.is_some() {
            conditions.push(format!(
                "EXISTS (SELECT 1 FROM task_labels l WHERE l.document_id = t.document_id \
                 AND l.task_id = t.id AND l.label = {})",
                next()
            ));
        }
        if filter.due_before.is_some() {
            conditions.push(format!("t.due_at < {}", next()));
        }
        if filter.due_after.is_some() {
            conditions.push(format!("t.due_at >= {}", next()));
        }
        if filter.title_contains.is_some() {
            conditions.push(format!("lower(t.title) LIKE {} ESCAPE '\\'", next()));
        }
        if filter.after.is_some() {
            let (at, id) = (next(), next());
            conditions.push(format!(
                "(t.created_at > {at} OR (t.created_at = {at} AND t.id > {id}))"
            ));
        }
        let limit_param = next();
        let text = format!(
            "{TASK_COLUMNS} {TASK_FROM} WHERE {} ORDER BY t.created_at, t.id LIMIT {limit_param}",
            conditions.join(" AND ")
        );
        with_pool!(self, |pool, sql| {
            let text = sql(&text);
            let mut query = sqlx::query(&text).bind(document_id).bind(filter.archived);
            for value in [&filter.column, &filter.assignee, &filter.label]
                .into_iter()
                .flatten()
            {
                query = query.bind(value.as_str());
            }
            for value in [filter.due_before, filter.due_after].into_iter().flatten() {
                query = query.bind(value);
            }
            if let Some(text) = &filter.title_contains {
                query = query.bind(like_pattern(text));
            }
            if let Some((at, id)) = &filter.after {
                query = query.bind(*at).bind(id.as_str());
            }
            let rows = query.bind(i64::from(limit)).fetch_all(pool).await?;
            Ok(rows.iter().map(|r| task_record!(r)).collect())
        })
    }

    /// Up to `limit` comments of a task, oldest first, after `(created_at, id)` when given.
    pub async fn task_comments(
        &self,
        document_id: &str,
        task_id: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<CommentRecord>, StoreError> {
        let (after_at, after_id) = after.unwrap_or((i64::MIN, String::new()));
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&format!(
                "{COMMENT_COLUMNS} WHERE document_id = $1 AND task_id = $2
                   AND (created_at > $3 OR (created_at = $3 AND id > $4))
                 ORDER BY created_at, id LIMIT $5"
            )))
            .bind(document_id)
            .bind(task_id)
            .bind(after_at)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| comment_record!(r)).collect())
        })
    }

    /// One comment of a task.
    pub async fn task_comment(
        &self,
        document_id: &str,
        task_id: &str,
        id: &str,
    ) -> Result<Option<CommentRecord>, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&format!(
                "{COMMENT_COLUMNS} WHERE document_id = $1 AND task_id = $2 AND id = $3"
            )))
            .bind(document_id)
            .bind(task_id)
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| comment_record!(r)))
        })
    }

    /// A board's columns in order, each with its number of live tasks.
    pub async fn board_columns(&self, document_id: &str) -> Result<Vec<ColumnSummary>, StoreError> {
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql("SELECT c.id, c.name, c.wip_limit,
                        (SELECT COUNT(*) FROM tasks t WHERE t.document_id = c.document_id
                            AND t.column_id = c.id AND t.archived = $2)
                 FROM board_columns c WHERE c.document_id = $1 ORDER BY c.position"))
            .bind(document_id)
            .bind(false)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| ColumnSummary {
                    id: r.get(0),
                    name: r.get(1),
                    wip_limit: r.get(2),
                    task_count: r.get(3),
                })
                .collect())
        })
    }

    /// Documents whose projection must be rebuilt from the whole document.
    pub async fn projection_backlog(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(self, |pool, sql| {
            Ok(
                sqlx::query_scalar(&sql("SELECT document_id FROM projection_backlog"))
                    .fetch_all(pool)
                    .await?,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_escape_wildcards_and_ignore_case() {
        assert_eq!(like_pattern("Ship It"), "%ship it%");
        assert_eq!(like_pattern("100%_done\\"), "%100\\%\\_done\\\\%");
    }
}
