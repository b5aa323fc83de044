//! Notifications, task watchers, notification preferences and the email queue, on either
//! backend (SQL written once, see `with_pool!`).

use sqlx::Row;

use super::{BeginWrite, Store, StoreError};

/// One notification of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    /// The inbox order (0 until stored).
    pub seq: i64,
    pub id: String,
    pub user_id: String,
    pub kind: String,
    pub event_id: String,
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub workspace_id: Option<String>,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    pub title: String,
    pub body: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

/// One email to send, and how sending went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRow {
    pub id: String,
    /// One email per event and address: the same event handled twice mails once.
    pub dedupe_key: String,
    pub to_address: String,
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

impl EmailRow {
    /// A pending email, due now.
    pub fn new(dedupe_key: String, to: &str, message: [String; 3], now_ms: i64) -> EmailRow {
        let [subject, text_body, html_body] = message;
        EmailRow {
            id: uuid::Uuid::new_v4().to_string(),
            dedupe_key,
            to_address: to.to_owned(),
            subject,
            text_body,
            html_body,
            state: "pending".into(),
            attempts: 0,
            next_attempt_at: Some(now_ms),
            last_error: None,
            created_at: now_ms,
            sent_at: None,
        }
    }
}

/// What one try at sending an email came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailAttempt {
    Sent,
    /// Failed; tried again at `retry_at`, or given up when `None`.
    Failed {
        error: String,
        retry_at: Option<i64>,
    },
}

/// A user's watch on a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub watching: bool,
    /// `explicit`, `creator`, `assignee` or `commenter`.
    pub reason: String,
}

const NOTIFICATION_COLUMNS: &str = "seq, id, user_id, kind, event_id, actor_id, actor_name, \
     workspace_id, project_id, task_id, title, body, created_at, read_at";
const EMAIL_COLUMNS: &str = "id, dedupe_key, to_address, subject, text_body, html_body, state, \
     attempts, next_attempt_at, last_error, created_at, sent_at";

macro_rules! notification_row {
    ($r:expr) => {
        NotificationRow {
            seq: $r.get(0),
            id: $r.get(1),
            user_id: $r.get(2),
            kind: $r.get(3),
            event_id: $r.get(4),
            actor_id: $r.get(5),
            actor_name: $r.get(6),
            workspace_id: $r.get(7),
            project_id: $r.get(8),
            task_id: $r.get(9),
            title: $r.get(10),
            body: $r.get(11),
            created_at: $r.get(12),
            read_at: $r.get(13),
        }
    };
}

macro_rules! email_row {
    ($r:expr) => {
        EmailRow {
            id: $r.get(0),
            dedupe_key: $r.get(1),
            to_address: $r.get(2),
            subject: $r.get(3),
            text_body: $r.get(4),
            html_body: $r.get(5),
            state: $r.get(6),
            attempts: $r.get(7),
            next_attempt_at: $r.get(8),
            last_error: $r.get(9),
            created_at: $r.get(10),
            sent_at: $r.get(11),
        }
    };
}

/// Queues `$email` in transaction `$tx` unless its event already mailed that address.
macro_rules! queue_email {
    ($tx:expr, $sql:ident, $e:expr) => {
        sqlx::query(&$sql(&format!(
            "INSERT INTO emails ({EMAIL_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (dedupe_key) DO NOTHING"
        )))
        .bind(&$e.id)
        .bind(&$e.dedupe_key)
        .bind(&$e.to_address)
        .bind(&$e.subject)
        .bind(&$e.text_body)
        .bind(&$e.html_body)
        .bind(&$e.state)
        .bind($e.attempts)
        .bind($e.next_attempt_at)
        .bind(&$e.last_error)
        .bind($e.created_at)
        .bind($e.sent_at)
        .execute($tx)
    };
}

impl Store {
    /// Stores `notifications` and queues `emails` in one transaction, skipping those their
    /// event already made. Answers the notifications that are new, numbered.
    pub async fn save_notifications(
        &self,
        notifications: &[NotificationRow],
        emails: &[EmailRow],
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let insert = "INSERT INTO notifications (id, user_id, kind, event_id, actor_id,
               actor_name, workspace_id, project_id, task_id, title, body, created_at, read_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL)
             ON CONFLICT (event_id, user_id) DO NOTHING RETURNING seq";
        if notifications.is_empty() && emails.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let mut new = Vec::new();
            for n in notifications {
                let seq: Option<i64> = sqlx::query_scalar(&sql(insert))
                    .bind(&n.id)
                    .bind(&n.user_id)
                    .bind(&n.kind)
                    .bind(&n.event_id)
                    .bind(&n.actor_id)
                    .bind(&n.actor_name)
                    .bind(&n.workspace_id)
                    .bind(&n.project_id)
                    .bind(&n.task_id)
                    .bind(&n.title)
                    .bind(&n.body)
                    .bind(n.created_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(seq) = seq {
                    new.push(NotificationRow { seq, ..n.clone() });
                }
            }
            for e in emails {
                queue_email!(&mut *tx, sql, e).await?;
            }
            tx.commit().await?;
            Ok(new)
        })
    }

    /// Gives invitation `invitation` its mailed token and queues `email` (which carries it), in
    /// one transaction. `false` when the invitation already has one (its email was queued
    /// before) or is gone.
    pub async fn queue_invitation_email(
        &self,
        invitation: &str,
        token_hash: &str,
        email: &EmailRow,
    ) -> Result<bool, StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            let issued = sqlx::query(&sql("UPDATE invitations SET mail_token_hash = $2
                 WHERE id = $1 AND mail_token_hash IS NULL AND closed_at IS NULL"))
            .bind(invitation)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if issued == 0 {
                return Ok(false);
            }
            queue_email!(&mut *tx, sql, email).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A user's notifications, newest first: those before `before` (a `seq`, for paging),
    /// only unread ones when `unread_only`.
    pub async fn notifications(
        &self,
        user: &str,
        before: Option<i64>,
        unread_only: bool,
        limit: usize,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        let unread = if unread_only {
            "AND read_at IS NULL"
        } else {
            ""
        };
        let text = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications
             WHERE user_id = $1 AND seq < $2 {unread} ORDER BY seq DESC LIMIT $3"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(user)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| notification_row!(r)).collect())
        })
    }

    pub async fn unread_count(&self, user: &str) -> Result<u64, StoreError> {
        with_pool!(self, |pool, sql| {
            let n: i64 = sqlx::query_scalar(&sql(
                "SELECT COUNT(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL",
            ))
            .bind(user)
            .fetch_one(pool)
            .await?;
            Ok(u64::try_from(n).unwrap_or_default())
        })
    }

    /// Marks `user`'s notification `id` read (a read one keeps its first `read_at`). `None`
    /// when they have no such notification; else it and whether this changed it.
    pub async fn mark_read(
        &self,
        user: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<(NotificationRow, bool)>, StoreError> {
        let select = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1 AND user_id = $2"
        );
        with_pool!(self, |pool, sql| {
            let changed = sqlx::query(&sql("UPDATE notifications SET read_at = $3
                 WHERE id = $1 AND user_id = $2 AND read_at IS NULL"))
            .bind(id)
            .bind(user)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected()
                > 0;
            let row = sqlx::query(&sql(&select))
                .bind(id)
                .bind(user)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|r| (notification_row!(r), changed)))
        })
    }

    /// Marks all of `user`'s notifications read; answers how many were unread.
    pub async fn mark_all_read(&self, user: &str, now_ms: i64) -> Result<u64, StoreError> {
        with_pool!(self, |pool, sql| {
            let n = sqlx::query(&sql(
                "UPDATE notifications SET read_at = $2 WHERE user_id = $1 AND read_at IS NULL",
            ))
            .bind(user)
            .bind(now_ms)
            .execute(pool)
            .await?
            .rows_affected();
            Ok(n)
        })
    }

    /// Who watches a task (and has not stopped).
    pub async fn watchers(&self, project: &str, task: &str) -> Result<Vec<String>, StoreError> {
        with_pool!(self, |pool, sql| {
            let users = sqlx::query_scalar(&sql("SELECT user_id FROM task_watchers
                 WHERE project_id = $1 AND task_id = $2 AND watching ORDER BY user_id"))
            .bind(project)
            .bind(task)
            .fetch_all(pool)
            .await?;
            Ok(users)
        })
    }

    pub async fn watch(
        &self,
        project: &str,
        task: &str,
        user: &str,
    ) -> Result<Option<Watch>, StoreError> {
        with_pool!(self, |pool, sql| {
            let row = sqlx::query(&sql("SELECT watching, reason FROM task_watchers
                 WHERE project_id = $1 AND task_id = $2 AND user_id = $3"))
            .bind(project)
            .bind(task)
            .bind(user)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| Watch {
                watching: r.get(0),
                reason: r.get(1),
            }))
        })
    }

    /// A user's own choice to watch a task or to stop; it overrides every implicit reason.
    pub async fn set_watch(
        &self,
        project: &str,
        task: &str,
        user: &str,
        watching: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "INSERT INTO task_watchers (project_id, task_id, user_id, watching, reason, updated_at)
                 VALUES ($1, $2, $3, $4, 'explicit', $5)
                 ON CONFLICT (project_id, task_id, user_id)
                 DO UPDATE SET watching = $4, reason = 'explicit', updated_at = $5",
            ))
            .bind(project)
            .bind(task)
            .bind(user)
            .bind(watching)
            .bind(now_ms)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Makes `users` watch a task for the reasons given, unless they already have a watch on
    /// it (one they stopped included). Names that are no account (a client may write anything
    /// into a board) are passed over.
    pub async fn watch_implicitly(
        &self,
        project: &str,
        task: &str,
        users: &[(String, &str)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if users.is_empty() {
            return Ok(());
        }
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            for (user, reason) in users {
                sqlx::query(&sql(
                    "INSERT INTO task_watchers (project_id, task_id, user_id, watching, reason, updated_at)
                     SELECT $1, $2, $3, TRUE, $4, $5 WHERE EXISTS (SELECT 1 FROM users WHERE id = $3)
                     ON CONFLICT (project_id, task_id, user_id) DO NOTHING",
                ))
                .bind(project)
                .bind(task)
                .bind(user)
                .bind(*reason)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A user's preference choices: (kind, channel, enabled), where they chose.
    pub async fn notification_preferences(
        &self,
        user: &str,
    ) -> Result<Vec<(String, String, bool)>, StoreError> {
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(
                "SELECT kind, channel, enabled FROM notification_preferences WHERE user_id = $1",
            ))
            .bind(user)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    /// Records a user's choices (kind, channel, enabled) in one transaction.
    pub async fn set_notification_preferences(
        &self,
        user: &str,
        choices: &[(&str, &str, bool)],
    ) -> Result<(), StoreError> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_write().await?;
            for (kind, channel, enabled) in choices {
                sqlx::query(&sql(
                    "INSERT INTO notification_preferences (user_id, kind, channel, enabled)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (user_id, kind, channel) DO UPDATE SET enabled = $4",
                ))
                .bind(user)
                .bind(*kind)
                .bind(*channel)
                .bind(*enabled)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Pending emails due at `now`, oldest first.
    pub async fn due_emails(&self, now_ms: i64, limit: usize) -> Result<Vec<EmailRow>, StoreError> {
        let text = format!(
            "SELECT {EMAIL_COLUMNS} FROM emails
             WHERE state = 'pending' AND next_attempt_at <= $1
             ORDER BY next_attempt_at, created_at, id LIMIT $2"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(now_ms)
                .bind(limit as i64)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| email_row!(r)).collect())
        })
    }

    /// Records one try at sending an email. Once it is sent or given up, its bodies are
    /// emptied: they may carry an invitation's token or people's words, kept no longer than
    /// needed.
    pub async fn record_email_attempt(
        &self,
        id: &str,
        attempt: &EmailAttempt,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (state, error, next, sent_at) = match attempt {
            EmailAttempt::Sent => ("sent", None, None, Some(now_ms)),
            EmailAttempt::Failed { error, retry_at } => (
                if retry_at.is_some() {
                    "pending"
                } else {
                    "failed"
                },
                Some(error.as_str()),
                *retry_at,
                None,
            ),
        };
        with_pool!(self, |pool, sql| {
            sqlx::query(&sql(
                "UPDATE emails SET state = $2, attempts = attempts + 1, next_attempt_at = $3,
                   last_error = $4, sent_at = $5,
                   text_body = CASE WHEN $2 = 'pending' THEN text_body ELSE '' END,
                   html_body = CASE WHEN $2 = 'pending' THEN html_body ELSE '' END
                 WHERE id = $1",
            ))
            .bind(id)
            .bind(state)
            .bind(next)
            .bind(error)
            .bind(sent_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Every email queued for `address`, oldest first (operators and tests).
    pub async fn emails_to(&self, address: &str) -> Result<Vec<EmailRow>, StoreError> {
        let text = format!(
            "SELECT {EMAIL_COLUMNS} FROM emails WHERE to_address = $1 ORDER BY created_at, id"
        );
        with_pool!(self, |pool, sql| {
            let rows = sqlx::query(&sql(&text))
                .bind(address)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| email_row!(r)).collect())
        })
    }
}
