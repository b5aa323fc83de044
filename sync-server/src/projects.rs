//! `/api/v1/projects…`: a workspace's boards. Creating a project creates its board document
//! (stored before the project row that points at it), whose id any client opens over the sync
//! socket. A client that made a board offline registers it instead, by naming its
//! `documentId`: the project then points at that document, which the client uploads over the
//! sync socket. Non-members get 404; members without the right role 403 (see
//! [`crate::access`]). A project's view (`GET /api/v1/projects/{id}`, with its board's columns
//! and task counts from the projection) is cached and invalidated by every change to the
//! project or its board ([`crate::cache`]).

use std::sync::Arc;

use automerge::AutoCommit;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use taskflow_proto::DocumentId;
use taskflow_proto::board::ops;

use crate::access::Role;
use crate::auth::http::{ApiError, Authenticated, body, forbidden, not_found};
use crate::cache::Lookup;
use crate::now_ms;
use crate::server::Shared;
use crate::store::{ProjectRow, StoredChange};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/projects", post(create))
        .route("/api/v1/projects/{id}", get(show))
        .route("/api/v1/projects/{id}/archive", post(archive))
        .route("/api/v1/workspaces/{id}/projects", get(list))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreateBody {
    workspace_id: String,
    name: String,
    /// A board document made by the client, to be uploaded by it (none: the server makes one).
    document_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    archived: bool,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProjectJson {
    id: String,
    workspace_id: String,
    name: String,
    document_id: String,
    /// `automerge:<documentId>`, what automerge-repo clients `find()`.
    url: String,
    archived: bool,
}

/// A project with its board's columns, as `GET /api/v1/projects/{id}` answers.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProjectViewJson {
    #[serde(flatten)]
    project: ProjectJson,
    /// The board's columns in order (none until a board made on a device is uploaded).
    columns: Vec<ColumnJson>,
    /// Live (not archived) tasks on the board.
    task_count: i64,
}

#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ColumnJson {
    id: String,
    name: String,
    wip_limit: Option<i64>,
    /// Live tasks in the column.
    task_count: i64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct ProjectsJson {
    projects: Vec<ProjectJson>,
}

fn project_json(p: ProjectRow) -> ProjectJson {
    ProjectJson {
        url: format!("automerge:{}", p.document_id),
        id: p.id,
        workspace_id: p.workspace_id,
        name: p.name,
        document_id: p.document_id,
        archived: p.archived_at.is_some(),
    }
}

/// The caller's role in `workspace`, or 404 (`what` names the thing asked for).
async fn role_in(
    shared: &Shared,
    workspace: &str,
    user: &str,
    what: &str,
) -> Result<Role, ApiError> {
    Ok(shared
        .identity
        .store()
        .membership(workspace, user)
        .await?
        .ok_or_else(|| not_found(what))?
        .1)
}

/// A project the caller may see, and their role in its workspace.
async fn visible_project(
    shared: &Shared,
    id: &str,
    user: &str,
) -> Result<(ProjectRow, Role), ApiError> {
    let project = shared
        .identity
        .store()
        .project(id)
        .await?
        .ok_or_else(|| not_found("project"))?;
    let role = role_in(shared, &project.workspace_id, user, "project").await?;
    Ok((project, role))
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    request: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ProjectJson>), ApiError> {
    let b = body(request)?;
    let name = b.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-input",
            "Invalid input",
            "a project name is 1 to 200 characters",
        ));
    }
    let role = role_in(&shared, &b.workspace_id, &user.user_id, "workspace").await?;
    if !role.can_create_projects() {
        return Err(forbidden("viewers cannot create projects"));
    }

    let store = shared.identity.store();
    let now = now_ms();
    let document_id = match &b.document_id {
        Some(id) => claim_document(&shared, id).await?,
        None => create_board_document(&shared, &name, &user.user_id, now).await?,
    };
    let project = ProjectRow {
        id: uuid::Uuid::new_v4().to_string(),
        workspace_id: b.workspace_id,
        name,
        document_id: document_id.to_string(),
        created_by: user.user_id,
        created_at: now,
        archived_at: None,
    };
    if !store.create_project(&project).await? {
        return Err(document_taken());
    }
    Ok((StatusCode::CREATED, Json(project_json(project))))
}

fn document_taken() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "/problems/document-taken",
        "Document already in use",
        "that document already exists; register a board made on your device, with a new id",
    )
}

/// A client-made document id, checked: well formed, and nothing stored under it yet (a project
/// never adopts a document someone else wrote).
async fn claim_document(shared: &Shared, id: &str) -> Result<DocumentId, ApiError> {
    let document_id: DocumentId = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-input",
            "Invalid input",
            "documentId is not an automerge document id (base58check, as in automerge:<id>)",
        )
    })?;
    if shared
        .identity
        .store()
        .has_document(&document_id.to_string())
        .await?
    {
        return Err(document_taken());
    }
    Ok(document_id)
}

/// Makes and stores a new board document, written as `user`. The document comes first: a
/// project row never points at a missing document.
async fn create_board_document(
    shared: &Shared,
    name: &str,
    user: &str,
    now: i64,
) -> Result<DocumentId, ApiError> {
    let mut doc = AutoCommit::new();
    ops::create_board(&mut doc, name).map_err(|e| {
        tracing::error!("creating a board document: {e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/internal",
            "Internal error",
            "the board could not be created",
        )
    })?;
    let document_id = DocumentId::random();
    let changes: Vec<StoredChange> = doc
        .get_changes(&[])
        .into_iter()
        .map(StoredChange::from)
        .collect();
    let store = shared.identity.store();
    store
        .bind_actor(&doc.get_actor().to_hex_string(), user, now)
        .await?;
    let heads = doc.get_heads();
    let projection = crate::doc::projection::rebuild(doc.document(), &heads);
    let batch = crate::store::Batch {
        base: &[],
        changes: &changes,
        heads: &heads,
        projection: &projection,
        events: &[],
    };
    store.append(&document_id, batch, now).await?;
    Ok(document_id)
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ProjectViewJson>, ApiError> {
    let cached = match shared.cache.get(&id).await {
        Lookup::Hit(text) => serde_json::from_str::<ProjectViewJson>(&text).ok(),
        Lookup::Miss(ticket) => match project_view(&shared, &id).await? {
            Some(view) => {
                if let Ok(text) = serde_json::to_string(&view) {
                    shared.cache.put(&id, ticket, text).await;
                }
                Some(view)
            }
            None => return Err(not_found("project")),
        },
    };
    let view = match cached {
        Some(view) => view,
        None => project_view(&shared, &id)
            .await?
            .ok_or_else(|| not_found("project"))?,
    };
    // Access is checked on every request; only the view is cached.
    role_in(
        &shared,
        &view.project.workspace_id,
        &user.user_id,
        "project",
    )
    .await?;
    Ok(Json(view))
}

/// A project with its board's columns and counts, read from the database.
async fn project_view(shared: &Shared, id: &str) -> Result<Option<ProjectViewJson>, ApiError> {
    let store = shared.identity.store();
    let Some(project) = store.project(id).await? else {
        return Ok(None);
    };
    let columns: Vec<ColumnJson> = store
        .board_columns(&project.document_id)
        .await?
        .into_iter()
        .map(|c| ColumnJson {
            id: c.id,
            name: c.name,
            wip_limit: c.wip_limit,
            task_count: c.task_count,
        })
        .collect();
    Ok(Some(ProjectViewJson {
        task_count: columns.iter().map(|c| c.task_count).sum(),
        columns,
        project: project_json(project),
    }))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(workspace): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ProjectsJson>, ApiError> {
    role_in(&shared, &workspace, &user.user_id, "workspace").await?;
    let projects = shared
        .identity
        .store()
        .projects_of(&workspace, query.archived)
        .await?;
    Ok(Json(ProjectsJson {
        projects: projects.into_iter().map(project_json).collect(),
    }))
}

async fn archive(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ProjectJson>, ApiError> {
    let (project, role) = visible_project(&shared, &id, &user.user_id).await?;
    if !role.can_manage() {
        return Err(forbidden("only owners and admins archive projects"));
    }
    shared
        .identity
        .store()
        .archive_project(&project.id, now_ms())
        .await?;
    shared.cache.invalidate(&project.id).await;
    let (project, _) = visible_project(&shared, &id, &user.user_id).await?;
    Ok(Json(project_json(project)))
}
