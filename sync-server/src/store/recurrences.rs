//! Recurrence rules of projects, and the embedded scheduler's timer for each, on either backend
//! (SQL written once, see `with_pool!`).

use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceRow {
    pub id: String,
    pub project_id: String,
    pub cron: String,
    pub timezone: String,
    /// The task template (JSON).
    pub template: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub next_at: Option<i64>,
    pub last_run_at: Option<i64>,
}

const COLUMNS: &str = "id, project_id, cron, timezone, template, enabled, disabled_reason, \
                       created_by, created_at, next_at, last_run_at";

macro_rules! recurrence_row {
    ($r:expr) => {
        RecurrenceRow {
            id: $r.get(0),
            project_id: $r.get(1),
            cron: $r.get(2),
            timezone: $r.get(3),
            template: $r.get(4),
            enabled: $r.get(5),
            disabled_reason: $r.get(6),
            created_by: $r.get(7),
            created_at: $r.get(8),
            next_at: $r.get(9),
            last_run_at: $r.get(10),
        }
    };
}

impl Store {
    pub async fn create_recurrence(&self, r: &RecurrenceRow) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(&format!(
                "INSERT INTO recurrences ({COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )))
            .bind(&r.id)
            .bind(&r.project_id)
            .bind(&r.cron)
            .bind(&r.timezone)
            .bind(&r.template)
            .bind(r.enabled)
            .bind(&r.disabled_reason)
            .bind(&r.created_by)
            .bind(r.created_at)
            .bind(r.next_at)
            .bind(r.last_run_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Rewrites a rule's settings, now acting for `author`. `enabled`, when given, turns it on
    /// (clearing why it was turned off) or off; `next_at`, when given, is its new timer (a new
    /// schedule). What the scheduler wrote meanwhile (its timer, its last run, turning the
    /// rule off) is kept otherwise.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_recurrence(
        &self,
        id: &str,
        cron: &str,
        timezone: &str,
        template: &str,
        author: &str,
        enabled: Option<bool>,
        next_at: Option<Option<i64>>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE recurrences SET cron = $2, timezone = $3, template = $4, created_by = $5,
                   enabled = COALESCE($6, enabled),
                   disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END,
                   next_at = CASE WHEN $7 THEN $8 ELSE next_at END
                 WHERE id = $1",
            ))
            .bind(id)
            .bind(cron)
            .bind(timezone)
            .bind(template)
            .bind(author)
            .bind(enabled)
            .bind(next_at.is_some())
            .bind(next_at.flatten())
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// How many rules a project has.
    pub async fn recurrence_count(&self, project: &str) -> Result<i64, StoreError> {
        with_pool!(self, |pool, sql| {
            let n: i64 = sqlx::query_scalar(&sql(
                "SELECT COUNT(*) FROM recurrences WHERE project_id = $1",
            ))
            .bind(project)
            .fetch_one(pool)
            .await?;
            Ok(n)
        })
    }

    pub async fn recurrence(&self, id: &str) -> Result<Option<RecurrenceRow>, StoreError> {
        let text = format!("SELECT {COLUMNS} FROM recurrences WHERE id = $1");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| recurrence_row!(r)))
        })
    }

    /// A project's rules, oldest first.
    pub async fn recurrences_of(&self, project: &str) -> Result<Vec<RecurrenceRow>, StoreError> {
        let text = format!(
            "SELECT {COLUMNS} FROM recurrences WHERE project_id = $1 ORDER BY created_at, id"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(project)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| recurrence_row!(r)).collect())
        })
    }

    pub async fn delete_recurrence(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql("DELETE FROM recurrences WHERE id = $1"))
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Enabled rules with a run due at `now`, soonest first.
    pub async fn due_recurrences(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<RecurrenceRow>, StoreError> {
        let text = format!(
            "SELECT {COLUMNS} FROM recurrences
             WHERE enabled AND next_at IS NOT NULL AND next_at <= $1 ORDER BY next_at LIMIT $2"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(now_ms)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| recurrence_row!(r)).collect())
        })
    }

    /// When the next run of any enabled rule is due.
    pub async fn next_recurrence_at(&self) -> Result<Option<i64>, StoreError> {
        with_pool!(self, |pool, sql| {
            let at: Option<i64> = sqlx::query_scalar(&sql(
                "SELECT MIN(next_at) FROM recurrences WHERE enabled AND next_at IS NOT NULL",
            ))
            .fetch_one(pool)
            .await?;
            Ok(at)
        })
    }

    /// Records that the run at `ran` made its task, and sets the next one; only if the rule's
    /// timer still said `expected` (`false` otherwise: changed or done meanwhile).
    pub async fn ran_recurrence(
        &self,
        id: &str,
        expected: i64,
        ran: i64,
        next_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let n = sqlx::query(&sql("UPDATE recurrences SET last_run_at = $3, next_at = $4
                 WHERE id = $1 AND next_at = $2"))
            .bind(id)
            .bind(expected)
            .bind(ran)
            .bind(next_at)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    /// Records a run made by a scheduler outside the server (Temporal), and the run after it
    /// (what the rule shows as next), unless a later run was recorded already.
    pub async fn record_recurrence_run(
        &self,
        id: &str,
        ran: i64,
        next_at: Option<i64>,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql("UPDATE recurrences SET last_run_at = $2, next_at = $3
                 WHERE id = $1 AND (last_run_at IS NULL OR last_run_at < $2)"))
            .bind(id)
            .bind(ran)
            .bind(next_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Every enabled rule (for the Temporal Schedules to match).
    pub async fn enabled_recurrences(&self) -> Result<Vec<RecurrenceRow>, StoreError> {
        let text = format!("SELECT {COLUMNS} FROM recurrences WHERE enabled ORDER BY id");
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text)).fetch_all(pool).await?;
            Ok(rows.iter().map(|r| recurrence_row!(r)).collect())
        })
    }

    /// Turns a rule off, saying why.
    pub async fn disable_recurrence(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE recurrences SET enabled = FALSE, disabled_reason = $2 WHERE id = $1",
            ))
            .bind(id)
            .bind(reason)
            .execute(pool)
            .await?;
            Ok(())
        })
    }
}
