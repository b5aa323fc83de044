//! `GET /api/v1/tasks/{id}/sla`: what is pending for a task's deadline, for operators and
//! members; `GET`/`PATCH /api/v1/workspaces/{id}/settings`: the workspace's reminder offset.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use taskflow_proto::events::rfc3339;

use super::logic::{self, Next};
use crate::auth::http::{ApiError, Authenticated, body, invalid, not_found};
use crate::now_ms;
use crate::server::Shared;
use crate::workspaces::manager;

/// The longest reminder offset a workspace may choose.
const MAX_REMIND_BEFORE_SECONDS: u64 = 30 * 24 * 3600;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/tasks/{id}/sla", get(sla))
        .route(
            "/api/v1/workspaces/{id}/settings",
            get(settings).patch(change_settings),
        )
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NextJson {
    /// `remind` or `escalate`.
    action: String,
    /// RFC 3339; now or past when it is about to happen.
    at: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SlaJson {
    task_id: String,
    project_id: String,
    /// RFC 3339, or `null` without a due date.
    due: Option<String>,
    /// In the done column or archived.
    finished: bool,
    remind_before_seconds: u64,
    /// When the reminder for the current due date went out.
    reminded_at: Option<String>,
    /// When the task was escalated as overdue (for the current due date).
    escalated_at: Option<String>,
    /// What happens next, and when; `null` when nothing is pending.
    next: Option<NextJson>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SettingsJson {
    workspace_id: String,
    /// How long before a task's due date its assignees are reminded.
    reminder_offset_seconds: u64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SettingsBody {
    /// 0 (no reminder) to 2,592,000 (30 days); `null` goes back to the server's default.
    #[serde(default, deserialize_with = "crate::tasks::json::present")]
    #[schemars(with = "Option<u64>")]
    reminder_offset_seconds: Option<Option<u64>>,
}

/// What happens next, for people: a decision due now shows as now.
fn next_json(next: Next, now: i64) -> Option<NextJson> {
    let (action, at) = match next {
        Next::Now(action) => (action, now),
        Next::At(at, action) => (action, at),
        Next::Nothing => return None,
    };
    Some(NextJson {
        action: action.as_str().to_owned(),
        at: rfc3339(at),
    })
}

async fn sla(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<SlaJson>, ApiError> {
    let (task, _) = crate::tasks::visible(&shared, &id, &user).await?;
    let default = shared.deadlines.remind_before_ms();
    let row = shared
        .identity
        .store()
        .deadline(&task.project_id, &task.id, default)
        .await?;
    let now = now_ms();
    let seconds = |ms: i64| u64::try_from(ms / 1000).unwrap_or(0);
    let answer = match row {
        Some(row) => {
            let (deadline, done) = super::state(&row);
            let current = |for_due: Option<i64>, at: Option<i64>| {
                at.filter(|_| for_due.is_some() && for_due == row.due_at)
                    .map(rfc3339)
            };
            let next = next_json(logic::next(&deadline, &done, now), now);
            SlaJson {
                due: row.due_at.map(rfc3339),
                finished: row.finished,
                remind_before_seconds: seconds(row.remind_before_ms),
                reminded_at: current(row.reminded_for, row.reminded_at),
                escalated_at: current(row.escalated_for, row.escalated_at),
                next,
                task_id: row.task_id,
                project_id: row.project_id,
            }
        }
        // Not recorded yet (its events are on their way, or it predates the scheduler): what
        // the task itself says.
        None => {
            let workspace = workspace_of(&shared, &task.project_id).await?;
            let remind_before = shared
                .identity
                .store()
                .remind_before(&workspace)
                .await?
                .unwrap_or(default);
            let deadline = logic::Deadline {
                due: task.due_at,
                finished: task.archived || task.column_id == super::DONE_COLUMN,
                remind_before,
            };
            let next = next_json(
                logic::next(&deadline, &logic::Progress::default(), now),
                now,
            );
            SlaJson {
                due: task.due_at.map(rfc3339),
                finished: deadline.finished,
                remind_before_seconds: seconds(remind_before),
                reminded_at: None,
                escalated_at: None,
                next,
                task_id: task.id,
                project_id: task.project_id,
            }
        }
    };
    Ok(Json(answer))
}

async fn workspace_of(shared: &Shared, project: &str) -> Result<String, ApiError> {
    shared
        .identity
        .store()
        .project(project)
        .await?
        .map(|p| p.workspace_id)
        .ok_or_else(|| not_found("project"))
}

async fn settings_of(shared: &Shared, workspace: &str) -> Result<SettingsJson, ApiError> {
    let ms = shared
        .identity
        .store()
        .remind_before(workspace)
        .await?
        .unwrap_or_else(|| shared.deadlines.remind_before_ms());
    Ok(SettingsJson {
        workspace_id: workspace.to_owned(),
        reminder_offset_seconds: u64::try_from(ms / 1000).unwrap_or(0),
    })
}

async fn settings(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(workspace): Path<String>,
) -> Result<Json<SettingsJson>, ApiError> {
    shared
        .identity
        .store()
        .membership(&workspace, &user.user_id)
        .await?
        .ok_or_else(|| not_found("workspace"))?;
    Ok(Json(settings_of(&shared, &workspace).await?))
}

async fn change_settings(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(workspace): Path<String>,
    request: Result<Json<SettingsBody>, JsonRejection>,
) -> Result<Json<SettingsJson>, ApiError> {
    manager(&shared, &workspace, &user.user_id).await?;
    let request = body(request)?;
    if let Some(seconds) = request.reminder_offset_seconds {
        if seconds.is_some_and(|s| s > MAX_REMIND_BEFORE_SECONDS) {
            return Err(invalid("reminderOffsetSeconds is 0 to 2592000 (30 days)"));
        }
        let ms = seconds.map(|s| i64::try_from(s * 1000).unwrap_or(i64::MAX));
        shared
            .identity
            .store()
            .set_remind_before(&workspace, ms, now_ms())
            .await?;
        shared.deadlines_wake.notify_one();
    }
    Ok(Json(settings_of(&shared, &workspace).await?))
}
