//! `/api/v1/workspaces…`: create and list workspaces, read one, manage its members.
//!
//! A workspace a user does not belong to answers 404, as if it did not exist; a member
//! without the right role gets 403. Who may do what is [`crate::access`].

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::access::{self, AccessChange, Refusal, Role};
use crate::auth::http::{ApiError, Authenticated, body, invalid};
use crate::auth::{Email, tokens};
use crate::now_ms;
use crate::server::Shared;
use crate::store::{InvitationRow, MemberChange, MemberFacts, MemberRow, WorkspaceRow};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/workspaces", post(create).get(list))
        .route("/api/v1/workspaces/{id}", get(show))
        .route("/api/v1/workspaces/{id}/members", get(members))
        .route(
            "/api/v1/workspaces/{id}/members/{user}",
            patch(change_role).delete(remove),
        )
        .route("/api/v1/workspaces/{id}/leave", post(leave))
        .route(
            "/api/v1/workspaces/{id}/invitations",
            post(invite).get(invitations),
        )
        .route(
            "/api/v1/workspaces/{id}/invitations/{invitation}",
            axum::routing::delete(revoke),
        )
        .route("/api/v1/invitations/accept", post(accept))
        .route("/api/v1/invitations/decline", post(decline))
}

/// How long an invitation stays open.
pub const INVITATION_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleBody {
    role: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct InviteBody {
    email: String,
    role: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    token: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InvitationJson {
    id: String,
    workspace_id: String,
    email: String,
    role: &'static str,
    expires_at: i64,
    /// Only in the answer to the invite itself: what the invitee presents to accept.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct InvitationsJson {
    invitations: Vec<InvitationJson>,
}

fn invitation_json(i: InvitationRow, token: Option<String>) -> InvitationJson {
    InvitationJson {
        id: i.id,
        workspace_id: i.workspace_id,
        email: i.email,
        role: i.role.as_str(),
        expires_at: i.expires_at,
        token,
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct WorkspaceJson {
    id: String,
    name: String,
    /// The caller's role.
    role: &'static str,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct WorkspacesJson {
    workspaces: Vec<WorkspaceJson>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MemberJson {
    user_id: String,
    email: String,
    name: String,
    role: &'static str,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct MembersJson {
    members: Vec<MemberJson>,
}

fn workspace_json(w: WorkspaceRow, role: Role) -> WorkspaceJson {
    WorkspaceJson {
        id: w.id,
        name: w.name,
        role: role.as_str(),
    }
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "Not found",
        "no such workspace (or you are not a member of it)",
    )
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Forbidden => ApiError::new(
            StatusCode::FORBIDDEN,
            "/problems/forbidden",
            "Forbidden",
            &refusal.to_string(),
        ),
        Refusal::LastOwner => ApiError::new(
            StatusCode::CONFLICT,
            "/problems/last-owner",
            "The last owner cannot go",
            &refusal.to_string(),
        ),
    }
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    request: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<WorkspaceJson>), ApiError> {
    let name = body(request)?.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-input",
            "Invalid input",
            "a workspace name is 1 to 100 characters",
        ));
    }
    let workspace = WorkspaceRow {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        created_at: now_ms(),
    };
    shared
        .identity
        .store()
        .create_workspace(&workspace, &user.user_id)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(workspace_json(workspace, Role::Owner)),
    ))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
) -> Result<Json<WorkspacesJson>, ApiError> {
    let mine = shared.identity.store().workspaces_of(&user.user_id).await?;
    Ok(Json(WorkspacesJson {
        workspaces: mine
            .into_iter()
            .map(|(w, r)| workspace_json(w, r))
            .collect(),
    }))
}

/// The workspace and the caller's role, or 404.
async fn membership(
    shared: &Shared,
    workspace: &str,
    user: &str,
) -> Result<(WorkspaceRow, Role), ApiError> {
    shared
        .identity
        .store()
        .membership(workspace, user)
        .await?
        .ok_or_else(not_found)
}

async fn show(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WorkspaceJson>, ApiError> {
    let (workspace, role) = membership(&shared, &id, &user.user_id).await?;
    Ok(Json(workspace_json(workspace, role)))
}

async fn members(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<MembersJson>, ApiError> {
    membership(&shared, &id, &user.user_id).await?;
    let members = shared.identity.store().members(&id).await?;
    Ok(Json(MembersJson {
        members: members
            .into_iter()
            .map(|m: MemberRow| MemberJson {
                user_id: m.user_id,
                email: m.email,
                name: m.name,
                role: m.role.as_str(),
            })
            .collect(),
    }))
}

/// Applies a membership change decided on facts read in the same transaction.
async fn change(
    shared: &Shared,
    workspace: &str,
    actor: &str,
    target: &str,
    rule: impl FnOnce(Role, Role, usize) -> Result<MemberChange, Refusal>,
) -> Result<(), ApiError> {
    let outcome = shared
        .identity
        .store()
        .change_member(workspace, actor, target, |facts: MemberFacts| {
            let actor = facts.actor.ok_or_else(not_found)?;
            let target = facts.target.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "/problems/no-such-member",
                    "No such member",
                    "that user is not a member of this workspace",
                )
            })?;
            rule(actor, target, facts.owners).map_err(refused)
        })
        .await?;
    outcome?;
    // Live sync connections of the member re-check their access now.
    shared.access.publish(AccessChange::Membership {
        workspace: workspace.to_owned(),
        user: target.to_owned(),
    });
    Ok(())
}

async fn change_role(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path((id, target)): Path<(String, String)>,
    request: Result<Json<RoleBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let wanted = body(request)?.role;
    let to = Role::parse(&wanted).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "/problems/invalid-input",
            "Invalid input",
            &format!("unknown role `{wanted}` (owner, admin, member or viewer)"),
        )
    })?;
    change(
        &shared,
        &id,
        &user.user_id,
        &target,
        |actor, from, owners| {
            access::may_change_role(actor, from, to, owners).map(|()| MemberChange::SetRole(to))
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path((id, target)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let leaving = target == user.user_id;
    change(
        &shared,
        &id,
        &user.user_id,
        &target,
        |actor, role, owners| {
            if leaving {
                access::may_leave(role, owners)
            } else {
                access::may_remove(actor, role, owners)
            }
            .map(|()| MemberChange::Remove)
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(
        &shared,
        &id,
        &user.user_id,
        &user.user_id,
        |_, role, owners| access::may_leave(role, owners).map(|()| MemberChange::Remove),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's role if they may manage `workspace` (404 to non-members, 403 to the rest).
/// The caller's role if they manage the workspace (admins, owners); 403 for other members,
/// 404 for everyone else.
pub(crate) async fn manager(
    shared: &Shared,
    workspace: &str,
    user: &str,
) -> Result<Role, ApiError> {
    let (_, role) = membership(shared, workspace, user).await?;
    if !role.can_manage() {
        return Err(refused(Refusal::Forbidden));
    }
    Ok(role)
}

async fn invite(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    request: Result<Json<InviteBody>, JsonRejection>,
) -> Result<(StatusCode, Json<InvitationJson>), ApiError> {
    let b = body(request)?;
    let actor = manager(&shared, &id, &user.user_id).await?;
    let email = Email::parse(&b.email).map_err(|e| invalid(&e.to_string()))?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        invalid(&format!(
            "unknown role `{}` (owner, admin, member or viewer)",
            b.role
        ))
    })?;
    if role == Role::Owner && actor != Role::Owner {
        return Err(refused(Refusal::Forbidden));
    }
    let now = now_ms();
    let token = tokens::new_refresh_token();
    let invitation = InvitationRow {
        id: uuid::Uuid::new_v4().to_string(),
        workspace_id: id,
        email: email.as_str().to_owned(),
        role,
        invited_by: user.user_id,
        created_at: now,
        expires_at: now + INVITATION_TTL.as_millis() as i64,
        outcome: None,
    };
    shared
        .identity
        .store()
        .create_invitation(&invitation, &tokens::refresh_token_hash(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(invitation_json(invitation, Some(token))),
    ))
}

async fn invitations(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<InvitationsJson>, ApiError> {
    manager(&shared, &id, &user.user_id).await?;
    let open = shared.identity.store().open_invitations(&id).await?;
    Ok(Json(InvitationsJson {
        invitations: open.into_iter().map(|i| invitation_json(i, None)).collect(),
    }))
}

async fn revoke(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path((id, invitation)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    manager(&shared, &id, &user.user_id).await?;
    let store = shared.identity.store();
    let open = store.open_invitations(&id).await?;
    if !open.iter().any(|i| i.id == invitation) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "/problems/not-found",
            "Not found",
            "no open invitation with this id in this workspace",
        ));
    }
    store
        .close_invitation(&invitation, "revoked", None, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The open invitation a token names, addressed to the caller.
async fn invitation_for(
    shared: &Shared,
    token: &str,
    user_id: &str,
) -> Result<InvitationRow, ApiError> {
    let store = shared.identity.store();
    let gone = |detail: &str| {
        ApiError::new(
            StatusCode::GONE,
            "/problems/invitation-closed",
            "Invitation closed",
            detail,
        )
    };
    let invitation = store
        .invitation_by_token(&tokens::refresh_token_hash(token))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "/problems/not-found",
                "Not found",
                "no such invitation",
            )
        })?;
    if let Some(outcome) = &invitation.outcome {
        return Err(gone(&format!("this invitation was {outcome}")));
    }
    if invitation.expires_at <= now_ms() {
        return Err(gone("this invitation has expired; ask for a new one"));
    }
    let me = store.user_by_id(user_id).await?;
    if me.is_none_or(|u| u.email != invitation.email) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "/problems/forbidden",
            "Forbidden",
            "this invitation is for another email address",
        ));
    }
    Ok(invitation)
}

async fn accept(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    request: Result<Json<TokenBody>, JsonRejection>,
) -> Result<Json<WorkspaceJson>, ApiError> {
    let token = body(request)?.token;
    let invitation = invitation_for(&shared, &token, &user.user_id).await?;
    let store = shared.identity.store();
    store
        .close_invitation(
            &invitation.id,
            "accepted",
            Some((&user.user_id, invitation.role)),
            now_ms(),
        )
        .await?;
    shared.access.publish(AccessChange::Membership {
        workspace: invitation.workspace_id.clone(),
        user: user.user_id.clone(),
    });
    let (workspace, role) = membership(&shared, &invitation.workspace_id, &user.user_id).await?;
    Ok(Json(workspace_json(workspace, role)))
}

async fn decline(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    request: Result<Json<TokenBody>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let token = body(request)?.token;
    let invitation = invitation_for(&shared, &token, &user.user_id).await?;
    shared
        .identity
        .store()
        .close_invitation(&invitation.id, "declined", None, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
