//! `/api/v1/tasks…` and `/api/v1/projects/{id}/tasks`: tasks and comments for integrations.
//!
//! A write is a change to the board document made by the document's actor on behalf of the
//! signed-in user ([`crate::doc::Registry::edit`]): stored under the durability rule, sent at
//! once to every client syncing the board, and answered after the commit. Reads come from the
//! relational projection that every merged change updates in its own transaction, so a client
//! that wrote and then reads sees its write. A task's `version` (its `ETag`) changes whenever
//! the task does; `If-Match` on PATCH and DELETE refuses a write based on an older read (412).
//! Non-members get 404, viewers 403 on writes.

pub(crate) mod json;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use taskflow_proto::DocumentId;
use taskflow_proto::board::ops::{NewTask, Position, TaskEdit};
use taskflow_proto::board::{ColumnId, CommentId, Priority, TaskId};

use crate::access::Role;
use crate::auth::AuthUser;
use crate::auth::http::{ApiError, Authenticated, body, forbidden, not_found};
use crate::doc::edit::{BoardEdit, EditError};
use crate::idempotency::IdempotencyKey;
use crate::server::Shared;
use crate::store::{ProjectRow, TaskFilter, TaskRecord};

pub(crate) use json::{
    CommentBody, CommentJson, CommentsJson, CreateTaskBody, LIST_PARAMETERS, PAGE_PARAMETERS,
    TaskJson, TasksJson, UpdateTaskBody,
};
use json::{ListQuery, PageQuery, invalid};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/tasks", post(create))
        .route(
            "/api/v1/tasks/{id}",
            get(show).patch(update).delete(archive),
        )
        .route(
            "/api/v1/tasks/{id}/comments",
            get(comments).post(add_comment),
        )
        .route("/api/v1/projects/{id}/tasks", get(list))
}

fn problem(status: StatusCode, kind: &'static str, title: &str, detail: &str) -> ApiError {
    ApiError::new(status, kind, title, detail)
}

fn unknown_project() -> ApiError {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/unknown-project",
        "Unknown project",
        "projectId names no project (or you are not a member of its workspace)",
    )
}

fn unknown_column(column: &str) -> ApiError {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/unknown-column",
        "Unknown column",
        &format!(
            "the board has no column `{column}` (GET /api/v1/projects/{{id}} lists its columns)"
        ),
    )
}

pub(crate) fn edit_error(e: EditError) -> ApiError {
    let detail = e.to_string();
    match e {
        EditError::NoBoard => problem(
            StatusCode::CONFLICT,
            "/problems/board-not-uploaded",
            "Board not uploaded",
            "this project's board was made on a device that has not uploaded it yet",
        ),
        EditError::NoTask(_) => not_found("task"),
        EditError::NoColumn(column) => unknown_column(column.as_str()),
        EditError::NoNeighbour(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/unknown-task",
            "Unknown task in position",
            &format!("position: {detail}"),
        ),
        EditError::TaskExists(_) | EditError::CommentExists(_) => problem(
            StatusCode::CONFLICT,
            "/problems/already-exists",
            "Already exists",
            &detail,
        ),
        EditError::Stale { current } => problem(
            StatusCode::PRECONDITION_FAILED,
            "/problems/precondition-failed",
            "Precondition failed",
            &format!("{detail}; read it again and retry"),
        )
        .with_header(header::ETAG, etag(&current)),
        EditError::Damaged(_) => problem(
            StatusCode::CONFLICT,
            "/problems/board-damaged",
            "Board damaged",
            &detail,
        ),
        EditError::Unavailable => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "/problems/unavailable",
            "Temporarily unavailable",
            &detail,
        ),
    }
}

fn etag(version: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// The entity tags of `If-Match` (quotes removed; `*` kept). Weak tags never match.
fn if_match(headers: &HeaderMap) -> Result<Option<Vec<String>>, ApiError> {
    let mut tags = Vec::new();
    let mut present = false;
    for value in headers.get_all(header::IF_MATCH) {
        present = true;
        let text = value
            .to_str()
            .map_err(|_| invalid("If-Match is not readable text"))?;
        for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !tag.starts_with("W/") {
                tags.push(tag.trim_matches('"').to_owned());
            }
        }
    }
    Ok(present.then_some(tags))
}

/// Whether `If-None-Match` names `version` (weak comparison).
fn none_match_hits(headers: &HeaderMap, version: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == "*" || t == version)
}

fn task_response(status: StatusCode, task: TaskRecord, location: bool) -> Response {
    let mut response = (status, Json(TaskJson::from(task.clone()))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag(&task.version));
    if location && let Ok(value) = HeaderValue::from_str(&format!("/api/v1/tasks/{}", task.id)) {
        headers.insert(header::LOCATION, value);
    }
    response
}

pub(crate) fn document_of(project: &ProjectRow) -> Result<DocumentId, ApiError> {
    project.document_id.parse().map_err(|_| {
        tracing::error!(project = %project.id, "a project's document id does not parse");
        edit_error(EditError::Damaged("the project's document id".into()))
    })
}

pub(crate) fn writable(role: Role) -> Result<(), ApiError> {
    if role.can_edit_boards() {
        Ok(())
    } else {
        Err(forbidden("viewers cannot change boards"))
    }
}

/// A task the caller may see (404 otherwise), with their role in its workspace. An id naming
/// tasks on two boards the caller sees (ids are chosen by clients) answers 409: acting on either
/// could be acting on the wrong one.
pub(crate) async fn visible(
    shared: &Shared,
    id: &str,
    user: &AuthUser,
) -> Result<(TaskRecord, Role), ApiError> {
    let mut found = shared
        .identity
        .store()
        .visible_tasks(id, &user.user_id)
        .await?;
    match found.len() {
        0 => Err(not_found("task")),
        1 => Ok(found.remove(0)),
        _ => Err(problem(
            StatusCode::CONFLICT,
            "/problems/ambiguous-task",
            "Ambiguous task id",
            "tasks on more than one of your boards have this id; \
             find the task through GET /api/v1/projects/{id}/tasks",
        )),
    }
}

/// A project the caller is a member of the workspace of (`None` otherwise), with their role.
pub(crate) async fn member_project(
    shared: &Shared,
    id: &str,
    user: &AuthUser,
) -> Result<Option<(ProjectRow, Role)>, ApiError> {
    let store = shared.identity.store();
    let Some(project) = store.project(id).await? else {
        return Ok(None);
    };
    Ok(store
        .membership(&project.workspace_id, &user.user_id)
        .await?
        .map(|(_, role)| (project, role)))
}

/// Reads a task back after a write (the write's commit put it in the projection).
async fn read_back(shared: &Shared, document: &str, id: &TaskId) -> Result<TaskRecord, ApiError> {
    shared
        .identity
        .store()
        .task_in(document, id.as_str())
        .await?
        .ok_or_else(|| {
            edit_error(EditError::Damaged(format!(
                "task `{id}` was stored but does not read as a task"
            )))
        })
}

/// Assignees as user ids: each given as a member's id or email, or `me`.
pub(crate) async fn assignees(
    shared: &Shared,
    workspace: &str,
    given: &[String],
    user: &AuthUser,
) -> Result<BTreeSet<String>, ApiError> {
    if given.len() > json::MAX_SET {
        return Err(invalid(&format!("at most {} assignees", json::MAX_SET)));
    }
    if given.is_empty() {
        return Ok(BTreeSet::new());
    }
    let members = shared.identity.store().members(workspace).await?;
    given
        .iter()
        .map(|who| {
            let who = who.trim();
            if who == "me" {
                return Ok(user.user_id.clone());
            }
            members
                .iter()
                .find(|m| m.user_id == who || m.email.eq_ignore_ascii_case(who))
                .map(|m| m.user_id.clone())
                .ok_or_else(|| {
                    problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "/problems/unknown-assignee",
                        "Unknown assignee",
                        &format!("`{who}` is not a member of this workspace (give a member's id or email)"),
                    )
                })
        })
        .collect()
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    key: Option<Extension<IdempotencyKey>>,
    request: Result<Json<CreateTaskBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(request)?;
    let (project, role) = member_project(&shared, &b.project_id, &user)
        .await?
        .ok_or_else(unknown_project)?;
    writable(role)?;
    let id = TaskId::new(match &key {
        Some(Extension(key)) => key.derive_id("task"),
        None => TaskId::random().to_string(),
    });
    let task = NewTask {
        id: id.clone(),
        title: json::title(&b.title)?,
        description: json::description(b.description.as_deref().unwrap_or(""))?,
        column: b.column.map(ColumnId::new),
        position: b.position.map_or(Position::Bottom, Into::into),
        assignees: assignees(
            &shared,
            &project.workspace_id,
            b.assignees.as_deref().unwrap_or(&[]),
            &user,
        )
        .await?,
        labels: json::labels(b.labels.as_deref().unwrap_or(&[]))?,
        priority: b.priority.map_or(Priority::None, Into::into),
        due: b.due.as_deref().map(|d| json::due(d, "due")).transpose()?,
        created_by: user.user_id.clone(),
    };
    let edit = shared
        .registry
        .edit(
            document_of(&project)?,
            Arc::from(user.user_id.as_str()),
            BoardEdit::AddTask(task),
            None,
        )
        .await;
    match edit {
        Ok(_) => {}
        // A retry whose first attempt made the task but lost its answer.
        Err(EditError::TaskExists(_)) if key.is_some() => {}
        Err(e) => return Err(edit_error(e)),
    }
    let task = read_back(&shared, &project.document_id, &id).await?;
    Ok(task_response(StatusCode::CREATED, task, true))
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (task, _) = visible(&shared, &id, &user).await?;
    if none_match_hits(&headers, &task.version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, etag(&task.version));
        return Ok(response);
    }
    Ok(task_response(StatusCode::OK, task, false))
}

async fn update(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Result<Json<UpdateTaskBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(request)?;
    if b.is_empty() {
        return Err(invalid("nothing to change: give at least one field"));
    }
    let (task, role) = visible(&shared, &id, &user).await?;
    writable(role)?;
    let if_match = if_match(&headers)?;
    let assignees = match &b.assignees {
        Some(given) => {
            let project = shared
                .identity
                .store()
                .project(&task.project_id)
                .await?
                .ok_or_else(|| not_found("task"))?;
            Some(assignees(&shared, &project.workspace_id, given, &user).await?)
        }
        None => None,
    };
    let fields = TaskEdit {
        title: b.title.as_deref().map(json::title).transpose()?,
        description: b
            .description
            .as_deref()
            .map(json::description)
            .transpose()?,
        assignees,
        labels: b.labels.as_deref().map(json::labels).transpose()?,
        priority: b.priority.map(Into::into),
        due: b
            .due
            .map(|due| due.as_deref().map(|d| json::due(d, "due")).transpose())
            .transpose()?,
    };
    // A column alone sends the card to the bottom of it; naming its own column moves nothing.
    let place = match (b.column, b.position) {
        (None, None) => None,
        (Some(column), None) if column == task.column_id => None,
        (column, position) => Some((
            column.map(ColumnId::new),
            position.map_or(Position::Bottom, Into::into),
        )),
    };
    let edit = BoardEdit::UpdateTask {
        id: TaskId::new(&task.id),
        fields,
        place,
        archived: b.archived,
    };
    let document: DocumentId = task.document_id.parse().map_err(|_| not_found("task"))?;
    shared
        .registry
        .edit(document, Arc::from(user.user_id.as_str()), edit, if_match)
        .await
        .map_err(edit_error)?;
    let task = read_back(&shared, &task.document_id, &TaskId::new(&task.id)).await?;
    Ok(task_response(StatusCode::OK, task, false))
}

/// `DELETE` archives: the card leaves the board but stays readable (and can be restored with
/// `PATCH {"archived": false}`).
async fn archive(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (task, role) = visible(&shared, &id, &user).await?;
    writable(role)?;
    let edit = BoardEdit::UpdateTask {
        id: TaskId::new(&task.id),
        fields: TaskEdit::default(),
        place: None,
        archived: Some(true),
    };
    let document: DocumentId = task.document_id.parse().map_err(|_| not_found("task"))?;
    shared
        .registry
        .edit(
            document,
            Arc::from(user.user_id.as_str()),
            edit,
            if_match(&headers)?,
        )
        .await
        .map_err(edit_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_comment(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    request: Result<Json<CommentBody>, JsonRejection>,
) -> Result<(StatusCode, Json<CommentJson>), ApiError> {
    let b = body(request)?;
    let text = json::comment(&b.body)?;
    let (task, role) = visible(&shared, &id, &user).await?;
    writable(role)?;
    let comment = CommentId::new(match &key {
        Some(Extension(key)) => key.derive_id("comment"),
        None => CommentId::random().to_string(),
    });
    let edit = BoardEdit::AddComment {
        task: TaskId::new(&task.id),
        id: comment.clone(),
        body: text,
    };
    let document: DocumentId = task.document_id.parse().map_err(|_| not_found("task"))?;
    let made = shared
        .registry
        .edit(document, Arc::from(user.user_id.as_str()), edit, None)
        .await;
    match made {
        Ok(_) => {}
        // A retry whose first attempt made the comment but lost its answer.
        Err(EditError::CommentExists(_)) if key.is_some() => {}
        Err(e) => return Err(edit_error(e)),
    }
    let stored = shared
        .identity
        .store()
        .task_comment(&task.document_id, &task.id, comment.as_str())
        .await?
        .ok_or_else(|| edit_error(EditError::Damaged("the comment does not read back".into())))?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

async fn comments(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<CommentsJson>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let limit = json::page_size(q.limit)?;
    let after = q.cursor.as_deref().map(json::decode_cursor).transpose()?;
    let (task, _) = visible(&shared, &id, &user).await?;
    let mut rows = shared
        .identity
        .store()
        .task_comments(&task.document_id, &task.id, after, limit + 1)
        .await?;
    let next_cursor = page_end(&mut rows, limit, |c| {
        json::encode_cursor(c.created_at, &c.id)
    });
    Ok(Json(CommentsJson {
        comments: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(project): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<TasksJson>, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let (project, _) = member_project(&shared, &project, &user)
        .await?
        .ok_or_else(|| not_found("project"))?;
    let store = shared.identity.store();
    let limit = json::page_size(q.limit)?;
    let column = match (&q.column, &q.status) {
        (Some(_), Some(_)) => return Err(invalid("give column or status, not both")),
        (None, None) => None,
        (Some(wanted), None) | (None, Some(wanted)) => {
            let by_name = q.status.is_some();
            let columns = store.board_columns(&project.document_id).await?;
            let found = columns.iter().find(|c| {
                c.id == *wanted || (by_name && c.name.to_lowercase() == wanted.to_lowercase())
            });
            Some(found.ok_or_else(|| unknown_column(wanted))?.id.clone())
        }
    };
    let assignee = match q.assignee.as_deref().map(str::trim) {
        None => None,
        Some("me") => Some(user.user_id.clone()),
        Some(who) if who.contains('@') => {
            let given = [who.to_owned()];
            assignees(&shared, &project.workspace_id, &given, &user)
                .await?
                .into_iter()
                .next()
        }
        Some(id) => Some(id.to_owned()),
    };
    let title_contains = match q.q.as_deref().map(str::trim) {
        Some(text) if text.chars().count() > json::MAX_TITLE => {
            return Err(invalid("q is longer than a title can be"));
        }
        Some(text) if !text.is_empty() => Some(text.to_owned()),
        _ => None,
    };
    let filter = TaskFilter {
        column,
        archived: q.archived,
        assignee,
        label: q.label,
        due_before: q
            .due_before
            .as_deref()
            .map(|d| json::due(d, "dueBefore"))
            .transpose()?,
        due_after: q
            .due_after
            .as_deref()
            .map(|d| json::due(d, "dueAfter"))
            .transpose()?,
        title_contains,
        after: q.cursor.as_deref().map(json::decode_cursor).transpose()?,
    };
    let mut rows = store
        .list_tasks(&project.document_id, &filter, limit + 1)
        .await?;
    let next_cursor = page_end(&mut rows, limit, |t| {
        json::encode_cursor(t.created_at, &t.id)
    });
    Ok(Json(TasksJson {
        tasks: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Cuts a page fetched with one extra row to `limit`; the cursor after it when there is more.
fn page_end<T>(rows: &mut Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() <= limit as usize {
        return None;
    }
    rows.truncate(limit as usize);
    rows.last().map(cursor)
}

fn query_error(rejection: QueryRejection) -> ApiError {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/invalid-query",
        "Invalid query parameters",
        &rejection.body_text(),
    )
}
