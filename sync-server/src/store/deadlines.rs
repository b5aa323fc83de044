//! The embedded deadline scheduler's durable timers and the workspaces' reminder settings, on
//! either backend (SQL written once, see `with_pool!`).

use sqlx::Row;

use super::{BeginWrite, OutboxEvent, Store, StoreError};

/// One task's deadline: the facts the events told, and what was done about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineRow {
    pub project_id: String,
    pub task_id: String,
    pub workspace_id: String,
    pub due_at: Option<i64>,
    pub finished: bool,
    /// The task as its latest event told it (`TaskState` JSON).
    pub task: String,
    pub reminded_for: Option<i64>,
    pub reminded_at: Option<i64>,
    pub escalated_for: Option<i64>,
    pub escalated_at: Option<i64>,
    pub next_at: Option<i64>,
    pub next_action: Option<String>,
    /// The workspace's reminder offset (or the server's default).
    pub remind_before_ms: i64,
}

/// What the scheduler decided for one deadline: the events to write, what they record, and
/// when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advance {
    pub events: Vec<OutboxEvent>,
    pub reminded: bool,
    pub escalated: bool,
    pub next_at: Option<i64>,
    pub next_action: Option<&'static str>,
}

/// A task of an archived project counts as finished: nobody is reminded of a shelved board.
const SELECT: &str = "SELECT d.project_id, d.task_id, d.workspace_id, d.due_at, \
     d.finished OR p.archived_at IS NOT NULL, \
     d.task, d.reminded_for, d.reminded_at, d.escalated_for, d.escalated_at, d.next_at, \
     d.next_action, COALESCE(s.remind_before_ms, $1) \
     FROM deadlines d LEFT JOIN workspace_settings s ON s.workspace_id = d.workspace_id \
     LEFT JOIN projects p ON p.id = d.project_id";

macro_rules! deadline_row {
    ($r:expr) => {
        DeadlineRow {
            project_id: $r.get(0),
            task_id: $r.get(1),
            workspace_id: $r.get(2),
            due_at: $r.get(3),
            finished: $r.get(4),
            task: $r.get(5),
            reminded_for: $r.get(6),
            reminded_at: $r.get(7),
            escalated_for: $r.get(8),
            escalated_at: $r.get(9),
            next_at: $r.get(10),
            next_action: $r.get(11),
            remind_before_ms: $r.get(12),
        }
    };
}

impl Store {
    /// Records what an event told of a task's deadline and, when its due date or whether it is
    /// finished changed, asks the scheduler to decide again (`next_at` = `now`). A task that
    /// never had a due date gets no row.
    #[allow(clippy::too_many_arguments)]
    pub async fn note_deadline(
        &self,
        project: &str,
        task: &str,
        workspace: &str,
        due_at: Option<i64>,
        finished: bool,
        task_json: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let statement = if due_at.is_some() {
            "INSERT INTO deadlines (project_id, task_id, workspace_id, due_at, finished, task,
                 next_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (project_id, task_id) DO UPDATE SET workspace_id = $3, due_at = $4,
                 finished = $5, task = $6, updated_at = $7,
                 next_at = CASE WHEN deadlines.due_at IS DISTINCT FROM $4
                                  OR deadlines.finished <> $5 THEN $7
                                ELSE deadlines.next_at END"
        } else {
            "UPDATE deadlines SET workspace_id = $3, due_at = $4, finished = $5, task = $6,
                 updated_at = $7,
                 next_at = CASE WHEN due_at IS DISTINCT FROM $4 OR finished <> $5 THEN $7
                                ELSE next_at END
             WHERE project_id = $1 AND task_id = $2"
        };
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(statement))
                .bind(project)
                .bind(task)
                .bind(workspace)
                .bind(due_at)
                .bind(finished)
                .bind(task_json)
                .bind(now_ms)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Forgets a task's deadline (the task is gone).
    pub async fn forget_deadline(&self, project: &str, task: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "DELETE FROM deadlines WHERE project_id = $1 AND task_id = $2",
            ))
            .bind(project)
            .bind(task)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn deadline(
        &self,
        project: &str,
        task: &str,
        default_remind_before_ms: i64,
    ) -> Result<Option<DeadlineRow>, StoreError> {
        let text = format!("{SELECT} WHERE d.project_id = $2 AND d.task_id = $3");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(default_remind_before_ms)
                .bind(project)
                .bind(task)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| deadline_row!(r)))
        })
    }

    /// The deadlines due for a decision at `now`, soonest first: (project, task).
    pub async fn due_deadlines(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql("SELECT project_id, task_id FROM deadlines
                 WHERE next_at IS NOT NULL AND next_at <= $1 ORDER BY next_at LIMIT $2"))
            .bind(now_ms)
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// When the next decision is due, if any is pending.
    pub async fn next_deadline_at(&self) -> Result<Option<i64>, StoreError> {
        with_pool!(self, |pool, sql| {
            let at: Option<i64> = sqlx::query_scalar(&sql(
                "SELECT MIN(next_at) FROM deadlines WHERE next_at IS NOT NULL",
            ))
            .fetch_one(pool)
            .await?;
            Ok(at)
        })
    }

    /// Takes the decision `decide` makes for one deadline, in one transaction that holds the
    /// row: its events go to the outbox with the progress that records them, so each fires
    /// once however often the scheduler runs or restarts. `None` when the row is gone.
    pub async fn advance_deadline(
        &self,
        project: &str,
        task: &str,
        default_remind_before_ms: i64,
        now_ms: i64,
        decide: impl FnOnce(&DeadlineRow) -> Advance,
    ) -> Result<Option<Advance>, StoreError> {
        let text = format!("{SELECT} WHERE d.project_id = $2 AND d.task_id = $3");
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            // A no-op write first: the row lock on PostgreSQL (SQLite holds the write lock).
            sqlx::query(&sql(
                "UPDATE deadlines SET updated_at = updated_at WHERE project_id = $1 AND task_id = $2",
            ))
            .bind(project)
            .bind(task)
            .execute(&mut *tx)
            .await?;
            let Some(row) = sqlx::query(&sql(&text))
                .bind(default_remind_before_ms)
                .bind(project)
                .bind(task)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            let row = deadline_row!(row);
            let advance = decide(&row);
            write_outbox!(&mut *tx, sql, &advance.events).await?;
            sqlx::query(&sql("UPDATE deadlines SET
                   reminded_for = CASE WHEN $3 THEN due_at ELSE reminded_for END,
                   reminded_at = CASE WHEN $3 THEN $5 ELSE reminded_at END,
                   escalated_for = CASE WHEN $4 THEN due_at ELSE escalated_for END,
                   escalated_at = CASE WHEN $4 THEN $5 ELSE escalated_at END,
                   next_at = $6, next_action = $7, updated_at = $5
                 WHERE project_id = $1 AND task_id = $2"))
            .bind(project)
            .bind(task)
            .bind(advance.reminded)
            .bind(advance.escalated)
            .bind(now_ms)
            .bind(advance.next_at)
            .bind(advance.next_action)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(advance))
        })
    }

    /// Records that a deadline's facts were handed to its Temporal workflow: its mark becomes
    /// `next_at` (the time of its next action, when the leader hands the facts over again, so a
    /// workflow lost meanwhile is started anew; `None` when nothing is left to do). Unless newer
    /// facts came meanwhile (a due date, finishing, or a new reminder offset for the workspace):
    /// then the mark stays for them.
    pub async fn deadline_handed_over(
        &self,
        handed: &DeadlineRow,
        default_remind_before_ms: i64,
        next_at: Option<i64>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE deadlines SET next_at = $7
                 WHERE project_id = $1 AND task_id = $2 AND next_at = $3
                   AND due_at IS NOT DISTINCT FROM $4
                   AND (finished OR EXISTS (SELECT 1 FROM projects p
                        WHERE p.id = deadlines.project_id AND p.archived_at IS NOT NULL)) = $8
                   AND COALESCE((SELECT s.remind_before_ms FROM workspace_settings s
                                 WHERE s.workspace_id = deadlines.workspace_id), $6) = $5",
            ))
            .bind(&handed.project_id)
            .bind(&handed.task_id)
            .bind(handed.next_at)
            .bind(handed.due_at)
            .bind(handed.remind_before_ms)
            .bind(default_remind_before_ms)
            .bind(next_at)
            .bind(handed.finished)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// A workspace's reminder offset, when it has its own.
    pub async fn remind_before(&self, workspace: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(self, |pool, sql| {
            let ms: Option<i64> = sqlx::query_scalar(&sql(
                "SELECT remind_before_ms FROM workspace_settings WHERE workspace_id = $1",
            ))
            .bind(workspace)
            .fetch_optional(pool)
            .await?;
            Ok(ms)
        })
    }

    /// Sets a workspace's reminder offset (`None`: back to the server's default), and has every
    /// pending deadline of it decided again.
    pub async fn set_remind_before(
        &self,
        workspace: &str,
        remind_before_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let statement = if remind_before_ms.is_some() {
            "INSERT INTO workspace_settings (workspace_id, remind_before_ms) VALUES ($1, $2)
             ON CONFLICT (workspace_id) DO UPDATE SET remind_before_ms = $2"
        } else {
            "DELETE FROM workspace_settings WHERE workspace_id = $1 AND $2 IS NULL"
        };
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql(statement))
                .bind(workspace)
                .bind(remind_before_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&sql("UPDATE deadlines SET next_at = $2
                 WHERE workspace_id = $1 AND due_at IS NOT NULL AND NOT finished"))
            .bind(workspace)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
