//! Deadlines kept even when processes crash: a reminder before a task is due, an escalation
//! when it is overdue.
//!
//! - [`logic`]: what to do, given the task and the time (pure; the Temporal workflow takes the
//!   same decisions).
//! - [`DeadlineConsumer`]: an event consumer recording each task's due date and whether it is
//!   finished (done column or archived) in the `deadlines` table, asking for a new decision.
//! - [`run`]: the embedded scheduler: durable timers in the database. It sleeps until the
//!   earliest pending decision, then, per deadline and in one transaction, writes what fires
//!   (`task.due_soon`; `task.overdue` with `notification.system.alert`) to the outbox together
//!   with the progress that records it, so each fires once across restarts. The notification
//!   engine turns those events into notifications.
//! - [`http`]: `GET /api/v1/tasks/{id}/sla` (what is pending) and the workspace setting of the
//!   reminder offset.

pub mod http;
/// The decisions, shared with the Temporal workflow.
pub use taskflow_proto::deadlines as logic;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use taskflow_proto::events::{Envelope, EventData, EventType, FieldChange, TaskState};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::Signals;
use crate::events::consume::Consumer;
use crate::events::relay::take_lease;
use crate::now_ms;
use crate::store::{Advance, DeadlineRow, OutboxEvent, Store, StoreError};
use logic::{Action, Deadline, Next, Progress};

/// The column whose tasks are done.
pub const DONE_COLUMN: &str = "done";
/// Deadlines decided per round.
const BATCH: usize = 100;

/// Parses an event's RFC 3339 due date to milliseconds.
fn millis(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// A task state's deadline facts: its due date, and whether it is finished.
pub fn facts(task: &TaskState) -> (Option<i64>, bool) {
    let due = task.due.as_deref().and_then(millis);
    (due, task.archived || task.column.id == DONE_COLUMN)
}

/// Records the deadline facts of every task event.
#[derive(Debug, Clone)]
pub struct DeadlineConsumer {
    store: Store,
    /// Wakes the scheduler.
    wake: Arc<Notify>,
}

impl DeadlineConsumer {
    pub fn new(store: Store, wake: Arc<Notify>) -> DeadlineConsumer {
        DeadlineConsumer { store, wake }
    }

    async fn on_event(&self, event: &Envelope) -> Result<(), StoreError> {
        let data = &event.data;
        let (Some(project), Some(task_id), Some(workspace)) =
            (&data.project_id, &data.task_id, &data.workspace_id)
        else {
            return Ok(());
        };
        match EventType::parse(&event.kind) {
            Some(EventType::TaskDeleted) => {
                return self.store.forget_deadline(project, task_id).await;
            }
            // Its own events change nothing of a deadline.
            Some(EventType::TaskDueSoon | EventType::TaskOverdue | EventType::SystemAlert)
            | None => {
                return Ok(());
            }
            Some(_) => {}
        }
        let Some(task) = &data.task else {
            return Ok(());
        };
        let (due, finished) = facts(task);
        let json = serde_json::to_string(task).map_err(|e| StoreError::Write(e.to_string()))?;
        self.store
            .note_deadline(project, task_id, workspace, due, finished, &json, now_ms())
            .await?;
        self.wake.notify_one();
        Ok(())
    }
}

impl Consumer for DeadlineConsumer {
    fn name(&self) -> &str {
        "deadlines"
    }

    fn handle(&self, event: Arc<Envelope>) -> BoxFuture<'static, Result<(), String>> {
        let consumer = self.clone();
        Box::pin(async move { consumer.on_event(&event).await.map_err(|e| e.to_string()) })
    }
}

/// The row's deadline and what was done about it.
pub fn state(row: &DeadlineRow) -> (Deadline, Progress) {
    (
        Deadline {
            due: row.due_at,
            finished: row.finished,
            remind_before: row.remind_before_ms,
        },
        Progress {
            reminded_for: row.reminded_for,
            escalated_for: row.escalated_for,
        },
    )
}

/// Everything due for `row` at `now`, as events, and when to look again.
pub fn decide(row: &DeadlineRow, now: i64) -> Advance {
    let (deadline, mut done) = state(row);
    let mut advance = Advance::default();
    let task: Option<TaskState> = serde_json::from_str(&row.task).ok();
    loop {
        match logic::next(&deadline, &done, now) {
            Next::Now(action) => {
                let event = |kind: EventType, fields| {
                    let data = EventData {
                        actor: None,
                        workspace_id: Some(row.workspace_id.clone()),
                        project_id: Some(row.project_id.clone()),
                        task_id: Some(row.task_id.clone()),
                        task: task.clone(),
                        fields,
                        ..EventData::default()
                    };
                    let id = uuid::Uuid::new_v4().to_string();
                    OutboxEvent::of(&Envelope::new(id, kind, now, data), now)
                };
                match action {
                    Action::Remind => {
                        advance
                            .events
                            .push(event(EventType::TaskDueSoon, Default::default()));
                        advance.reminded = true;
                    }
                    Action::Escalate => {
                        advance
                            .events
                            .push(event(EventType::TaskOverdue, Default::default()));
                        let alert = FieldChange {
                            from: serde_json::Value::Null,
                            to: serde_json::Value::from("overdue"),
                        };
                        let fields = [("alert".to_owned(), alert)].into();
                        advance.events.push(event(EventType::SystemAlert, fields));
                        advance.escalated = true;
                    }
                }
                done = logic::record(&deadline, done, action);
            }
            Next::At(at, action) => {
                advance.next_at = Some(at);
                advance.next_action = Some(action.as_str());
                return advance;
            }
            Next::Nothing => return advance,
        }
    }
}

/// How the embedded scheduler runs.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineConfig {
    /// The reminder offset of workspaces that set none.
    pub remind_before: Duration,
}

impl DeadlineConfig {
    pub fn remind_before_ms(&self) -> i64 {
        i64::try_from(self.remind_before.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// The embedded scheduler: decides every deadline that is due, until `stop`. One node at a
/// time runs it.
pub async fn run(
    store: Store,
    config: DeadlineConfig,
    wake: Arc<Notify>,
    signals: Signals,
    stop: CancellationToken,
) {
    let Some(_lease) = take_lease(&store, "taskflow.deadlines", &stop).await else {
        return;
    };
    let default = config.remind_before_ms();
    loop {
        let now = now_ms();
        let mut failed = false;
        let due = match store.due_deadlines(now, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading due deadlines failed");
                failed = true;
                Vec::new()
            }
        };
        for (project, task) in &due {
            let now = now_ms();
            match store
                .advance_deadline(project, task, default, now, |row| decide(row, now))
                .await
            {
                Ok(Some(advance)) if !advance.events.is_empty() => signals.events_written(),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, %task, "deciding a deadline failed");
                    failed = true;
                }
            }
        }
        let next = if failed {
            Ok(None)
        } else {
            store.next_deadline_at().await
        };
        if !crate::timer::wait_for_next(next, failed, &wake, &stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(due: Option<i64>, finished: bool) -> DeadlineRow {
        DeadlineRow {
            project_id: "p".into(),
            task_id: "t".into(),
            workspace_id: "w".into(),
            due_at: due,
            finished,
            task: "{}".into(),
            reminded_for: None,
            reminded_at: None,
            escalated_for: None,
            escalated_at: None,
            next_at: Some(0),
            next_action: None,
            remind_before_ms: 1_000,
        }
    }

    fn kinds(advance: &Advance) -> Vec<&str> {
        advance.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn a_decision_writes_what_is_due_and_when_to_look_again() {
        let waiting = decide(&row(Some(10_000), false), 0);
        assert_eq!(
            (waiting.next_at, waiting.next_action),
            (Some(9_000), Some("remind"))
        );
        assert!(waiting.events.is_empty());

        let reminding = decide(&row(Some(10_000), false), 9_500);
        assert_eq!(kinds(&reminding), ["task.due_soon"]);
        assert!(reminding.reminded && !reminding.escalated);
        assert_eq!(reminding.next_at, Some(10_000));

        let late = decide(&row(Some(10_000), false), 20_000);
        assert_eq!(kinds(&late), ["task.overdue", "notification.system.alert"]);
        assert!(
            late.escalated && !late.reminded,
            "past due: no reminder first"
        );
        assert_eq!(late.next_at, None);

        let finished = decide(&row(Some(10_000), true), 20_000);
        assert!(finished.events.is_empty() && finished.next_at.is_none());
    }

    #[test]
    fn facts_come_from_the_task_state() {
        let mut task: TaskState = serde_json::from_value(serde_json::json!({
            "id": "t", "title": "T", "description": "", "column": {"id": "todo", "name": "To do"},
            "position": "80", "assignees": [], "labels": [], "priority": "none",
            "due": "1970-01-01T00:00:01Z", "archived": false, "createdBy": "u",
            "createdAt": "1970-01-01T00:00:00Z", "updatedAt": "1970-01-01T00:00:00Z",
            "commentCount": 0
        }))
        .unwrap();
        assert_eq!(facts(&task), (Some(1_000), false));
        task.column.id = DONE_COLUMN.into();
        assert_eq!(facts(&task), (Some(1_000), true));
        task.due = None;
        assert_eq!(facts(&task), (None, true));
    }
}
