//! REST for notifications: the signed-in user's inbox (a user only ever reaches their own),
//! their preferences per kind and channel, and watching tasks.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use taskflow_proto::notifications::Notification;

use super::notification_json;
use super::rules::{Channel, Kind};
use crate::auth::http::{ApiError, Authenticated, body, invalid, not_found};
use crate::now_ms;
use crate::server::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .route("/api/v1/notifications/unread-count", get(unread_count))
        .route("/api/v1/notifications/read-all", post(read_all))
        .route("/api/v1/notifications/{id}/read", patch(read))
        .route(
            "/api/v1/notifications/preferences",
            get(preferences).patch(change_preferences),
        )
        .route("/api/v1/notifications/ws", get(super::socket::upgrade))
        .route(
            "/api/v1/tasks/{id}/watch",
            get(watch).put(start_watching).delete(stop_watching),
        )
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// 1 to 200 (default 50).
    limit: Option<usize>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// `true`: only unread notifications.
    unread: Option<bool>,
}

pub(crate) const LIST_PARAMETERS: &[(&str, &str)] = &[
    ("limit", "1 to 200 (default 50)"),
    ("cursor", "nextCursor of the previous page"),
    ("unread", "true: only unread notifications"),
];

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotificationsJson {
    /// Newest first.
    notifications: Vec<Notification>,
    /// Pass as `cursor` for older ones; absent on the last page.
    next_cursor: Option<String>,
    unread_count: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UnreadCountJson {
    unread_count: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReadAllJson {
    /// How many were unread.
    marked: u64,
    unread_count: u64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreferenceJson {
    kind: String,
    description: String,
    in_app: bool,
    email: bool,
    /// Whether email may be turned off (not for invitations: the email carries their token).
    email_optional: bool,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct PreferencesJson {
    preferences: Vec<PreferenceJson>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PreferenceChange {
    /// A notification kind, e.g. `task.assigned`.
    kind: String,
    in_app: Option<bool>,
    email: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreferencesBody {
    preferences: Vec<PreferenceChange>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WatchJson {
    task_id: String,
    project_id: String,
    /// Whether you are told of the task's status changes and comments (assignees always are).
    watching: bool,
    /// `explicit`, `creator`, `assignee` or `commenter`; `null` when never watched.
    reason: Option<String>,
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<NotificationsJson>, ApiError> {
    let Query(query) = query.map_err(|e| invalid(&e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(invalid("limit is 1 to 200"));
    }
    let before = match &query.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| {
                    invalid("cursor is not one this server gave out (pass nextCursor as it is)")
                })?,
        ),
        None => None,
    };
    let store = shared.identity.store();
    let mut rows = store
        .notifications(&user.user_id, before, query.unread == Some(true), limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|n| n.seq.to_string())
    } else {
        None
    };
    Ok(Json(NotificationsJson {
        notifications: rows.into_iter().map(notification_json).collect(),
        next_cursor,
        unread_count: store.unread_count(&user.user_id).await?,
    }))
}

async fn unread_count(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
) -> Result<Json<UnreadCountJson>, ApiError> {
    Ok(Json(UnreadCountJson {
        unread_count: shared.identity.store().unread_count(&user.user_id).await?,
    }))
}

async fn read(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Notification>, ApiError> {
    shared
        .notifier
        .mark_read(&user.user_id, &id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found("notification"))
}

async fn read_all(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
) -> Result<Json<ReadAllJson>, ApiError> {
    let marked = shared.notifier.mark_all_read(&user.user_id).await?;
    Ok(Json(ReadAllJson {
        marked,
        unread_count: shared.identity.store().unread_count(&user.user_id).await?,
    }))
}

async fn preferences_of(shared: &Shared, user: &str) -> Result<PreferencesJson, ApiError> {
    let chosen = shared
        .identity
        .store()
        .notification_preferences(user)
        .await?;
    let on = |kind, channel| super::rules::enabled(kind, channel, &chosen);
    Ok(PreferencesJson {
        preferences: Kind::ALL
            .into_iter()
            .map(|kind| PreferenceJson {
                kind: kind.as_str().to_owned(),
                description: kind.describe().to_owned(),
                in_app: on(kind, Channel::InApp),
                email: on(kind, Channel::Email),
                email_optional: kind.optional(Channel::Email),
            })
            .collect(),
    })
}

async fn preferences(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
) -> Result<Json<PreferencesJson>, ApiError> {
    Ok(Json(preferences_of(&shared, &user.user_id).await?))
}

async fn change_preferences(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    request: Result<Json<PreferencesBody>, JsonRejection>,
) -> Result<Json<PreferencesJson>, ApiError> {
    let request = body(request)?;
    if request.preferences.len() > Kind::ALL.len() {
        return Err(invalid(&format!(
            "at most {} preferences at once, one per kind",
            Kind::ALL.len()
        )));
    }
    let mut choices = Vec::new();
    for (n, change) in request.preferences.iter().enumerate() {
        if request.preferences[..n]
            .iter()
            .any(|c| c.kind == change.kind)
        {
            return Err(invalid(&format!(
                "`{}` is listed twice",
                change.kind.chars().take(60).collect::<String>()
            )));
        }
        let kind = Kind::parse(&change.kind).ok_or_else(|| {
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            invalid(&format!(
                "unknown notification kind `{}` (known: {})",
                change.kind.chars().take(60).collect::<String>(),
                known.join(", ")
            ))
        })?;
        for (channel, enabled) in [
            (Channel::InApp, change.in_app),
            (Channel::Email, change.email),
        ] {
            let Some(enabled) = enabled else {
                continue;
            };
            if !enabled && !kind.optional(channel) {
                return Err(invalid(&format!(
                    "{} cannot be turned off for {}: the email carries what accepts it",
                    channel.as_str(),
                    kind.as_str()
                )));
            }
            choices.push((kind.as_str(), channel.as_str(), enabled));
        }
    }
    shared
        .identity
        .store()
        .set_notification_preferences(&user.user_id, &choices)
        .await?;
    Ok(Json(preferences_of(&shared, &user.user_id).await?))
}

async fn watch(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WatchJson>, ApiError> {
    let (task, _) = crate::tasks::visible(&shared, &id, &user).await?;
    let watch = shared
        .identity
        .store()
        .watch(&task.project_id, &task.id, &user.user_id)
        .await?;
    Ok(Json(WatchJson {
        task_id: task.id,
        project_id: task.project_id,
        watching: watch.as_ref().is_some_and(|w| w.watching),
        reason: watch.map(|w| w.reason),
    }))
}

async fn set_watch(
    shared: &Shared,
    id: &str,
    user: &crate::auth::AuthUser,
    watching: bool,
) -> Result<Json<WatchJson>, ApiError> {
    let (task, _) = crate::tasks::visible(shared, id, user).await?;
    shared
        .identity
        .store()
        .set_watch(
            &task.project_id,
            &task.id,
            &user.user_id,
            watching,
            now_ms(),
        )
        .await?;
    Ok(Json(WatchJson {
        task_id: task.id,
        project_id: task.project_id,
        watching,
        reason: Some("explicit".to_owned()),
    }))
}

async fn start_watching(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WatchJson>, ApiError> {
    set_watch(&shared, &id, &user, true).await
}

async fn stop_watching(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WatchJson>, ApiError> {
    set_watch(&shared, &id, &user, false).await
}
