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
    /// Creates a rule, or (same id) rewrites its settings, keeping its run history.
    pub async fn save_recurrence(&self, r: &RecurrenceRow) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(&format!(
                "INSERT INTO recurrences ({COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (id) DO UPDATE SET cron = $3, timezone = $4, template = $5,
                     enabled = $6, disabled_reason = $7, next_at = $10"
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

    /// Records that the run scheduled at `ran` made its task, and sets the next one; only if
    /// the rule still expected that run (`false` otherwise: changed or done meanwhile).
    pub async fn ran_recurrence(
        &self,
        id: &str,
        ran: i64,
        next_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let n = sqlx::query(&sql("UPDATE recurrences SET last_run_at = $2, next_at = $3
                 WHERE id = $1 AND next_at = $2"))
            .bind(id)
            .bind(ran)
            .bind(next_at)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n > 0)
        })
    }

    /// Records a run made by a scheduler outside the server (Temporal), which keeps no timer
    /// here: only `last_run_at` moves.
    pub async fn record_recurrence_run(&self, id: &str, ran: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql("UPDATE recurrences SET last_run_at = $2
                 WHERE id = $1 AND (last_run_at IS NULL OR last_run_at < $2)"))
            .bind(id)
            .bind(ran)
            .execute(pool)
            .await?;
            Ok(())
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
