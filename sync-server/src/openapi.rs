//! The OpenAPI 3.1 description of the REST API, served at `/api/v1/openapi.json`. Request and
//! response bodies are JSON Schemas derived (schemars) from the very serde types the handlers
//! use, so they cannot drift. `tests/it/http.rs` checks that every operation listed here is
//! routed, every route is listed, and each documented request body refuses unknown fields.

use serde_json::{Value, json};

/// One documented operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Query parameters it takes: (name, description).
    pub query: &'static [(&'static str, &'static str)],
    /// Needs `Authorization: Bearer <access token>`.
    pub bearer: bool,
    /// The JSON body it takes (unknown fields are refused).
    pub request: Option<fn() -> Value>,
    /// The JSON body a success answers with (`None`: no body, or not JSON).
    pub response: Option<fn() -> Value>,
}

/// The JSON Schema (2020-12, which OpenAPI 3.1 uses) of a body type, from its serde shape.
fn schema<T: schemars::JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let mut schema = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    if let Some(object) = schema.as_object_mut() {
        object.remove("title");
    }
    schema
}

/// Every documented operation.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "get",
        path: "/healthz",
        summary: "Liveness",
        query: &[],
        bearer: false,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/readyz",
        summary: "Readiness: the database (with every migration) and each configured dependency answer; 503 (a problem listing the checks) otherwise, and while draining",
        query: &[],
        bearer: false,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics (text exposition format)",
        query: &[],
        bearer: false,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/api/v1/sync",
        summary: "The sync WebSocket (automerge-repo protocol v1); the access token goes in `?token=`",
        query: &[],
        bearer: false,
        request: None,
        response: None,
    },
    Operation {
        method: "post",
        path: "/api/v1/auth/register",
        summary: "Create an account and sign in",
        query: &[],
        bearer: false,
        request: Some(schema::<crate::auth::http::RegisterBody>),
        response: Some(schema::<crate::auth::http::TokensJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/auth/login",
        summary: "Sign in",
        query: &[],
        bearer: false,
        request: Some(schema::<crate::auth::http::LoginBody>),
        response: Some(schema::<crate::auth::http::TokensJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/auth/refresh",
        summary: "Exchange a refresh token for a new pair",
        query: &[],
        bearer: false,
        request: Some(schema::<crate::auth::http::RefreshBody>),
        response: Some(schema::<crate::auth::http::TokensJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/auth/logout",
        summary: "End this session",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/api/v1/auth/me",
        summary: "The signed-in user",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::auth::http::UserJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/workspaces",
        summary: "Create a workspace",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::workspaces::CreateBody>),
        response: Some(schema::<crate::workspaces::WorkspaceJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces",
        summary: "My workspaces, with my role",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::workspaces::WorkspacesJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}",
        summary: "A workspace I belong to",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::workspaces::WorkspaceJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/members",
        summary: "Its members and roles",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::workspaces::MembersJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/workspaces/{id}/members/{user}",
        summary: "Change a member's role",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::workspaces::RoleBody>),
        response: None,
    },
    Operation {
        method: "delete",
        path: "/api/v1/workspaces/{id}/members/{user}",
        summary: "Remove a member (or leave)",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
    Operation {
        method: "post",
        path: "/api/v1/workspaces/{id}/leave",
        summary: "Leave a workspace",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
    Operation {
        method: "post",
        path: "/api/v1/workspaces/{id}/invitations",
        summary: "Invite by email with a role",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::workspaces::InviteBody>),
        response: Some(schema::<crate::workspaces::InvitationJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/invitations",
        summary: "Open invitations",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::workspaces::InvitationsJson>),
    },
    Operation {
        method: "delete",
        path: "/api/v1/workspaces/{id}/invitations/{invitation}",
        summary: "Revoke an invitation",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
    Operation {
        method: "post",
        path: "/api/v1/workspaces/{id}/webhooks",
        summary: "Subscribe a URL to the workspace's events (admins)",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::events::webhooks::CreateWebhookBody>),
        response: Some(schema::<crate::events::webhooks::WebhookJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/webhooks",
        summary: "The workspace's webhook subscriptions (admins)",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::events::webhooks::WebhooksJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/webhooks/{webhook}",
        summary: "One webhook subscription",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::events::webhooks::WebhookJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/workspaces/{id}/webhooks/{webhook}",
        summary: "Change, disable or re-enable a subscription",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::events::webhooks::ChangeWebhookBody>),
        response: Some(schema::<crate::events::webhooks::WebhookJson>),
    },
    Operation {
        method: "delete",
        path: "/api/v1/workspaces/{id}/webhooks/{webhook}",
        summary: "Delete a subscription and its delivery log",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/webhooks/{webhook}/deliveries",
        summary: "A subscription's delivery log, newest first",
        query: &[
            ("limit", "1 to 100 (default 50)"),
            ("cursor", "nextCursor from the previous page"),
        ],
        bearer: true,
        request: None,
        response: Some(schema::<crate::events::webhooks::DeliveriesJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/invitations/accept",
        summary: "Accept an invitation",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::workspaces::TokenBody>),
        response: Some(schema::<crate::workspaces::WorkspaceJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/invitations/decline",
        summary: "Decline an invitation",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::workspaces::TokenBody>),
        response: None,
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/projects",
        summary: "A workspace's projects",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::projects::ProjectsJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/projects",
        summary: "Create a project and its board document (or register one made on a device)",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::projects::CreateBody>),
        response: Some(schema::<crate::projects::ProjectJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/projects/{id}",
        summary: "A project, with its board's columns and task counts (cached)",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::projects::ProjectViewJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/projects/{id}/archive",
        summary: "Archive a project",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::projects::ProjectJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/tasks",
        summary: "Create a task on a project's board (live clients see it at once)",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::tasks::CreateTaskBody>),
        response: Some(schema::<crate::tasks::TaskJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/tasks/{id}",
        summary: "A task (`ETag`: its version; `If-None-Match` answers 304)",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::tasks::TaskJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/tasks/{id}",
        summary: "Change any of a task's fields, move it (column, position), archive or restore it; `If-Match` refuses a stale write with 412",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::tasks::UpdateTaskBody>),
        response: Some(schema::<crate::tasks::TaskJson>),
    },
    Operation {
        method: "delete",
        path: "/api/v1/tasks/{id}",
        summary: "Archive a task",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
    Operation {
        method: "post",
        path: "/api/v1/tasks/{id}/comments",
        summary: "Comment on a task",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::tasks::CommentBody>),
        response: Some(schema::<crate::tasks::CommentJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/tasks/{id}/comments",
        summary: "A task's comments, oldest first",
        query: crate::tasks::PAGE_PARAMETERS,
        bearer: true,
        request: None,
        response: Some(schema::<crate::tasks::CommentsJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/projects/{id}/tasks",
        summary: "A board's tasks, oldest first, filtered and paged",
        query: crate::tasks::LIST_PARAMETERS,
        bearer: true,
        request: None,
        response: Some(schema::<crate::tasks::TasksJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/openapi.json",
        summary: "This document",
        query: &[],
        bearer: false,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/api/v1/notifications",
        summary: "Your notifications, newest first",
        query: crate::notifications::http::LIST_PARAMETERS,
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::NotificationsJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/notifications/unread-count",
        summary: "How many of your notifications are unread",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::UnreadCountJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/notifications/{id}/read",
        summary: "Mark one of your notifications read",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<taskflow_proto::notifications::Notification>),
    },
    Operation {
        method: "post",
        path: "/api/v1/notifications/read-all",
        summary: "Mark all your notifications read",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::ReadAllJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/notifications/preferences",
        summary: "Which notifications you get in the app and by email",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::PreferencesJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/notifications/preferences",
        summary: "Change which notifications you get in the app and by email",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::notifications::http::PreferencesBody>),
        response: Some(schema::<crate::notifications::http::PreferencesJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/notifications/ws",
        summary: "The notification WebSocket (JSON messages: unread_sync, notification_received, read); the access token goes in `?token=`",
        query: &[],
        bearer: false,
        request: None,
        response: None,
    },
    Operation {
        method: "get",
        path: "/api/v1/tasks/{id}/watch",
        summary: "Whether you watch a task",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::WatchJson>),
    },
    Operation {
        method: "put",
        path: "/api/v1/tasks/{id}/watch",
        summary: "Watch a task: be told of its status changes and comments",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::WatchJson>),
    },
    Operation {
        method: "delete",
        path: "/api/v1/tasks/{id}/watch",
        summary: "Stop watching a task (also one you created, were assigned or commented on)",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::notifications::http::WatchJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/tasks/{id}/sla",
        summary: "A task's deadline: its due date, what was sent, and what happens next",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::deadlines::http::SlaJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/workspaces/{id}/settings",
        summary: "A workspace's settings (the reminder offset before due dates)",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::deadlines::http::SettingsJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/workspaces/{id}/settings",
        summary: "Change a workspace's settings (admins and owners)",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::deadlines::http::SettingsBody>),
        response: Some(schema::<crate::deadlines::http::SettingsJson>),
    },
    Operation {
        method: "post",
        path: "/api/v1/projects/{id}/recurrences",
        summary: "Make a recurrence rule: a cron schedule in a time zone and the task each run makes",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::recurrences::http::CreateRecurrenceBody>),
        response: Some(schema::<crate::recurrences::http::RecurrenceJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/projects/{id}/recurrences",
        summary: "A project's recurrence rules",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::recurrences::http::RecurrencesJson>),
    },
    Operation {
        method: "get",
        path: "/api/v1/projects/{id}/recurrences/{rule}",
        summary: "One recurrence rule, with its next and last runs",
        query: &[],
        bearer: true,
        request: None,
        response: Some(schema::<crate::recurrences::http::RecurrenceJson>),
    },
    Operation {
        method: "patch",
        path: "/api/v1/projects/{id}/recurrences/{rule}",
        summary: "Change a recurrence rule (a new schedule starts from now)",
        query: &[],
        bearer: true,
        request: Some(schema::<crate::recurrences::http::ChangeRecurrenceBody>),
        response: Some(schema::<crate::recurrences::http::RecurrenceJson>),
    },
    Operation {
        method: "delete",
        path: "/api/v1/projects/{id}/recurrences/{rule}",
        summary: "Delete a recurrence rule (the tasks it made stay)",
        query: &[],
        bearer: true,
        request: None,
        response: None,
    },
];

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for op in OPERATIONS {
        let Operation {
            method,
            path,
            summary,
            bearer,
            ..
        } = op;
        let success = match op.response {
            Some(body) => json!({
                "description": "Done",
                "content": { "application/json": { "schema": body() } }
            }),
            None => json!({ "description": "Done" }),
        };
        let mut operation = json!({
            "summary": summary,
            "responses": {
                "2XX": success,
                "default": {
                    "description": "An error",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
                }
            }
        });
        if let Some(body) = op.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": body() } }
            });
        }
        if *bearer {
            operation["security"] = json!([{ "bearer": [] }]);
        }
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut parameters = parameters;
        if matches!(*path, "/api/v1/sync" | "/api/v1/notifications/ws") {
            // Browsers cannot set headers on a WebSocket, so the token rides in the query.
            parameters.push(json!({ "name": "token", "in": "query", "required": true, "schema": { "type": "string" }, "description": "an access token" }));
        }
        for (name, description) in op.query {
            let schema = match *name {
                "limit" => json!({ "type": "integer", "minimum": 1, "maximum": 200 }),
                "archived" | "unread" => json!({ "type": "boolean" }),
                _ => json!({ "type": "string" }),
            };
            parameters.push(json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description }));
        }
        if *method == "post" && *bearer {
            parameters.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "minLength": 1, "maxLength": 255 }, "description": "a retry with the same key gets the first answer instead of a second effect" }));
        }
        if path.starts_with("/api/v1/tasks/{id}") && matches!(*method, "patch" | "delete") {
            parameters.push(json!({ "name": "If-Match", "in": "header", "required": false, "schema": { "type": "string" }, "description": "the task's ETag as read; a task changed since answers 412" }));
        }
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Taskflow", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details; `type` is stable (e.g. /problems/invalid-credentials)",
                    "properties": {
                        "type": { "type": "string" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" }
                    },
                    "required": ["type", "title", "status"]
                }
            }
        }
    })
}
