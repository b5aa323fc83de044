//! Webhook subscriptions and their delivery log, on either backend (SQL written once, see
//! `with_pool!`).

use sqlx::Row;

use super::{BeginWrite, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub workspace_id: String,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub secret: String,
    pub enabled: bool,
    pub consecutive_failures: i64,
    pub disabled_reason: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

impl WebhookRow {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }
}

/// One event for one subscription, and how its delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A delivery due now, with where it goes and the secret that signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub delivery: DeliveryRow,
    pub url: String,
    pub secret: String,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: i64,
    },
    /// Failed; tried again at `retry_at`, or given up when `None`.
    Failed {
        status: Option<i64>,
        error: String,
        retry_at: Option<i64>,
    },
}

const WEBHOOK_COLUMNS: &str = "id, workspace_id, url, event_types, secret, enabled, \
                               consecutive_failures, disabled_reason, created_by, created_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, event_type, payload, state, attempts, \
                                next_attempt_at, last_status, last_error, created_at, updated_at";

macro_rules! webhook_row {
    ($r:expr) => {{
        let types: String = $r.get(3);
        WebhookRow {
            id: $r.get(0),
            workspace_id: $r.get(1),
            url: $r.get(2),
            event_types: serde_json::from_str(&types).unwrap_or_default(),
            secret: $r.get(4),
            enabled: $r.get(5),
            consecutive_failures: $r.get(6),
            disabled_reason: $r.get(7),
            created_by: $r.get(8),
            created_at: $r.get(9),
        }
    }};
}

macro_rules! delivery_row {
    ($r:expr) => {
        DeliveryRow {
            id: $r.get(0),
            webhook_id: $r.get(1),
            event_id: $r.get(2),
            event_type: $r.get(3),
            payload: $r.get(4),
            state: $r.get(5),
            attempts: $r.get(6),
            next_attempt_at: $r.get(7),
            last_status: $r.get(8),
            last_error: $r.get(9),
            created_at: $r.get(10),
            updated_at: $r.get(11),
        }
    };
}

impl Store {
    pub async fn create_webhook(&self, w: &WebhookRow) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(&format!(
                "INSERT INTO webhooks ({WEBHOOK_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            )))
            .bind(&w.id)
            .bind(&w.workspace_id)
            .bind(&w.url)
            .bind(serde_json::to_string(&w.event_types).unwrap_or_default())
            .bind(&w.secret)
            .bind(w.enabled)
            .bind(w.consecutive_failures)
            .bind(&w.disabled_reason)
            .bind(&w.created_by)
            .bind(w.created_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Rewrites a subscription's settings (url, types, secret, enabled state and failures).
    pub async fn update_webhook(&self, w: &WebhookRow) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE webhooks SET url = $2, event_types = $3, secret = $4, enabled = $5,
                   consecutive_failures = $6, disabled_reason = $7 WHERE id = $1",
            ))
            .bind(&w.id)
            .bind(&w.url)
            .bind(serde_json::to_string(&w.event_types).unwrap_or_default())
            .bind(&w.secret)
            .bind(w.enabled)
            .bind(w.consecutive_failures)
            .bind(&w.disabled_reason)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Deletes a subscription and its delivery log.
    pub async fn delete_webhook(&self, id: &str) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            for statement in [
                "DELETE FROM webhook_deliveries WHERE webhook_id = $1",
                "DELETE FROM webhooks WHERE id = $1",
            ] {
                sqlx::query(&sql(statement))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>, StoreError> {
        let text = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql(&text))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| webhook_row!(r)))
        })
    }

    /// A workspace's subscriptions, oldest first.
    pub async fn webhooks_of(&self, workspace: &str) -> Result<Vec<WebhookRow>, StoreError> {
        let text = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE workspace_id = $1
             ORDER BY created_at, id"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(workspace)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| webhook_row!(r)).collect())
        })
    }

    /// Queues `delivery` unless its subscription already has the event (a repeated event).
    pub async fn enqueue_delivery(&self, delivery: &DeliveryRow) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(&format!(
                "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (webhook_id, event_id) DO NOTHING"
            )))
            .bind(&delivery.id)
            .bind(&delivery.webhook_id)
            .bind(&delivery.event_id)
            .bind(&delivery.event_type)
            .bind(&delivery.payload)
            .bind(&delivery.state)
            .bind(delivery.attempts)
            .bind(delivery.next_attempt_at)
            .bind(delivery.last_status)
            .bind(&delivery.last_error)
            .bind(delivery.created_at)
            .bind(delivery.updated_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Pending deliveries due at `now`, of enabled subscriptions, oldest first.
    pub async fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let columns = DELIVERY_COLUMNS
            .split(", ")
            .map(|c| format!("d.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "SELECT {columns}, w.url, w.secret
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND w.enabled
             ORDER BY d.next_attempt_at, d.created_at, d.id LIMIT $2"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(now_ms)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(|r| DueDelivery {
                    delivery: delivery_row!(r),
                    url: r.get(12),
                    secret: r.get(13),
                })
                .collect())
        })
    }

    /// Records one attempt at `delivery`, and its subscription's run of failures: a success
    /// ends the run; a failure that makes it `disable_after` long disables the subscription.
    /// Moves a pending delivery's next attempt to `at` without counting an attempt (its
    /// destination's circuit is open: it was not called).
    pub async fn postpone_delivery(&self, id: &str, at: i64) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql("UPDATE webhook_deliveries SET next_attempt_at = $2
                 WHERE id = $1 AND state = 'pending'"))
            .bind(id)
            .bind(at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn record_attempt(
        &self,
        delivery: &DeliveryRow,
        attempt: &Attempt,
        disable_after: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (state, status, error, next) = match attempt {
            Attempt::Delivered { status } => ("delivered", Some(*status), None, None),
            Attempt::Failed {
                status,
                error,
                retry_at,
            } => (
                if retry_at.is_some() {
                    "pending"
                } else {
                    "failed"
                },
                *status,
                Some(error.as_str()),
                *retry_at,
            ),
        };
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(&sql(
                "UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1,
                   next_attempt_at = $3, last_status = $4, last_error = $5, updated_at = $6
                 WHERE id = $1",
            ))
            .bind(&delivery.id)
            .bind(state)
            .bind(next)
            .bind(status)
            .bind(error)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            if matches!(attempt, Attempt::Delivered { .. }) {
                sqlx::query(&sql(
                    "UPDATE webhooks SET consecutive_failures = 0 WHERE id = $1",
                ))
                .bind(&delivery.webhook_id)
                .execute(&mut *tx)
                .await?;
            } else {
                sqlx::query(&sql(
                    "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1,
                       enabled = CASE WHEN consecutive_failures + 1 >= $2 THEN FALSE ELSE enabled END,
                       disabled_reason = CASE WHEN consecutive_failures + 1 >= $2
                         THEN $3 ELSE disabled_reason END
                     WHERE id = $1",
                ))
                .bind(&delivery.webhook_id)
                .bind(disable_after)
                .bind(format!(
                    "{disable_after} delivery attempts failed in a row; the last: {}",
                    error.unwrap_or_default()
                ))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A subscription's deliveries, newest first, before `before` (a delivery's `created_at`
    /// and id, for paging).
    pub async fn deliveries(
        &self,
        webhook: &str,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let text = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
               AND (created_at < $2 OR (created_at = $2 AND id < $3))
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(webhook)
                .bind(at)
                .bind(&id)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| delivery_row!(r)).collect())
        })
    }
}
