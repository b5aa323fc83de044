//! `/api/v1/projects/{id}/recurrences[/{rule}]`: a project's recurrence rules. Members read
//! them; members who may edit the board make, change and delete them. A rule makes its tasks
//! as its author: whoever changed it last.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use taskflow_proto::events::rfc3339;

use super::{Schedule, TaskTemplate};
use crate::auth::AuthUser;
use crate::auth::http::{ApiError, Authenticated, body, invalid, not_found};
use crate::now_ms;
use crate::server::Shared;
use crate::store::{ProjectRow, RecurrenceRow};
use crate::tasks::{json, member_project, writable};

/// Rules one project may have.
const MAX_RULES: i64 = 100;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/projects/{id}/recurrences", get(list).post(create))
        .route(
            "/api/v1/projects/{id}/recurrences/{rule}",
            get(show).patch(change).delete(remove),
        )
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreateRecurrenceBody {
    /// Minute hour day-of-month month day-of-week (days as names: MON-FRI), or six fields
    /// with seconds first, e.g. `0 9 * * MON`.
    cron: String,
    /// IANA time zone the schedule is read in (default UTC).
    timezone: Option<String>,
    template: TaskTemplate,
    /// Default true.
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ChangeRecurrenceBody {
    cron: Option<String>,
    timezone: Option<String>,
    template: Option<TaskTemplate>,
    enabled: Option<bool>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecurrenceJson {
    id: String,
    project_id: String,
    cron: String,
    timezone: String,
    template: TaskTemplate,
    enabled: bool,
    /// Why the server turned it off, when it did.
    disabled_reason: Option<String>,
    created_by: String,
    created_at: String,
    /// When the next task is made (RFC 3339); `null` when off or the schedule has ended.
    next_run_at: Option<String>,
    /// The scheduled time of the last task made.
    last_run_at: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct RecurrencesJson {
    recurrences: Vec<RecurrenceJson>,
}

fn recurrence_json(r: RecurrenceRow) -> RecurrenceJson {
    RecurrenceJson {
        template: serde_json::from_str(&r.template).unwrap_or(TaskTemplate {
            title: String::new(),
            description: None,
            column: None,
            assignees: Vec::new(),
            labels: Vec::new(),
            priority: None,
            due_in_minutes: None,
        }),
        id: r.id,
        project_id: r.project_id,
        cron: r.cron,
        timezone: r.timezone,
        enabled: r.enabled,
        disabled_reason: r.disabled_reason,
        created_by: r.created_by,
        created_at: rfc3339(r.created_at),
        next_run_at: r.next_at.filter(|_| r.enabled).map(rfc3339),
        last_run_at: r.last_run_at.map(rfc3339),
    }
}

/// The project, if the caller is a member of its workspace; with whether they may edit.
async fn project_of(
    shared: &Shared,
    id: &str,
    user: &AuthUser,
    write: bool,
) -> Result<ProjectRow, ApiError> {
    let (project, role) = member_project(shared, id, user)
        .await?
        .ok_or_else(|| not_found("project"))?;
    if write {
        writable(role)?;
    }
    Ok(project)
}

async fn rule_of(shared: &Shared, project: &str, rule: &str) -> Result<RecurrenceRow, ApiError> {
    shared
        .identity
        .store()
        .recurrence(rule)
        .await?
        .filter(|r| r.project_id == project)
        .ok_or_else(|| not_found("recurrence"))
}

/// The template as kept: checked like a task (its column on the board), assignees as member
/// ids.
async fn checked(
    shared: &Shared,
    project: &ProjectRow,
    template: TaskTemplate,
    user: &AuthUser,
) -> Result<TaskTemplate, ApiError> {
    if template
        .title
        .replace("{date}", "2026-12-07")
        .trim()
        .is_empty()
    {
        return Err(invalid("the template's title must not be empty"));
    }
    json::title(&template.title)?;
    if let Some(description) = &template.description {
        json::description(description)?;
    }
    let labels = json::labels(&template.labels)?;
    if let Some(column) = &template.column {
        let columns = shared
            .identity
            .store()
            .board_columns(&project.document_id)
            .await?;
        if !columns.iter().any(|c| &c.id == column) {
            return Err(invalid(&format!(
                "the board has no column `{}`",
                column.chars().take(60).collect::<String>()
            )));
        }
    }
    let assignees =
        crate::tasks::assignees(shared, &project.workspace_id, &template.assignees, user).await?;
    Ok(TaskTemplate {
        assignees: assignees.into_iter().collect(),
        labels: labels.into_iter().collect(),
        ..template
    })
}

fn schedule(cron: &str, timezone: &str) -> Result<Schedule, ApiError> {
    Schedule::parse(cron, timezone).map_err(|why| invalid(&why))
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(project): Path<String>,
    request: Result<Json<CreateRecurrenceBody>, JsonRejection>,
) -> Result<(StatusCode, Json<RecurrenceJson>), ApiError> {
    let request = body(request)?;
    let project = project_of(&shared, &project, &user, true).await?;
    let timezone = request.timezone.unwrap_or_else(|| "UTC".into());
    let schedule = schedule(&request.cron, &timezone)?;
    let template = checked(&shared, &project, request.template, &user).await?;
    let now = now_ms();
    let next_at = schedule
        .next_after(now)
        .ok_or_else(|| invalid("this schedule never runs (e.g. February 30th)"))?;
    let store = shared.identity.store();
    if store.recurrence_count(&project.id).await? >= MAX_RULES {
        return Err(invalid(&format!(
            "a project has at most {MAX_RULES} recurrence rules"
        )));
    }
    let enabled = request.enabled.unwrap_or(true);
    let rule = RecurrenceRow {
        id: uuid::Uuid::new_v4().to_string(),
        project_id: project.id,
        cron: request
            .cron
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        timezone,
        template: serde_json::to_string(&template).expect("plain JSON"),
        enabled,
        disabled_reason: None,
        created_by: user.user_id.clone(),
        created_at: now,
        next_at: Some(next_at),
        last_run_at: None,
    };
    store.create_recurrence(&rule).await?;
    shared.recurrences_wake.notify_one();
    Ok((StatusCode::CREATED, Json(recurrence_json(rule))))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(project): Path<String>,
) -> Result<Json<RecurrencesJson>, ApiError> {
    let project = project_of(&shared, &project, &user, false).await?;
    let rules = shared.identity.store().recurrences_of(&project.id).await?;
    Ok(Json(RecurrencesJson {
        recurrences: rules.into_iter().map(recurrence_json).collect(),
    }))
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path((project, rule)): Path<(String, String)>,
) -> Result<Json<RecurrenceJson>, ApiError> {
    let project = project_of(&shared, &project, &user, false).await?;
    Ok(Json(recurrence_json(
        rule_of(&shared, &project.id, &rule).await?,
    )))
}

async fn change(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path((project, rule)): Path<(String, String)>,
    request: Result<Json<ChangeRecurrenceBody>, JsonRejection>,
) -> Result<Json<RecurrenceJson>, ApiError> {
    let request = body(request)?;
    let project = project_of(&shared, &project, &user, true).await?;
    let mut rule = rule_of(&shared, &project.id, &rule).await?;
    let rescheduled = request.cron.is_some() || request.timezone.is_some();
    if let Some(cron) = request.cron {
        rule.cron = cron.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    if let Some(timezone) = request.timezone {
        rule.timezone = timezone;
    }
    let next_at = schedule(&rule.cron, &rule.timezone)?
        .next_after(now_ms())
        .ok_or_else(|| invalid("this schedule never runs (e.g. February 30th)"))?;
    if let Some(template) = request.template {
        let template = checked(&shared, &project, template, &user).await?;
        rule.template = serde_json::to_string(&template).expect("plain JSON");
    }
    // A new schedule, or one turned back on, starts from now (runs missed while off are not
    // made).
    let turned_on = request.enabled == Some(true) && !rule.enabled;
    shared
        .identity
        .store()
        .change_recurrence(
            &rule.id,
            &rule.cron,
            &rule.timezone,
            &rule.template,
            &user.user_id,
            request.enabled,
            (rescheduled || turned_on).then_some(Some(next_at)),
        )
        .await?;
    shared.recurrences_wake.notify_one();
    Ok(Json(recurrence_json(
        rule_of(&shared, &project.id, &rule.id).await?,
    )))
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path((project, rule)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&shared, &project, &user, true).await?;
    rule_of(&shared, &project.id, &rule).await?;
    shared.identity.store().delete_recurrence(&rule).await?;
    // Its Temporal Schedule goes (when deadlines run on Temporal).
    shared.recurrences_wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
