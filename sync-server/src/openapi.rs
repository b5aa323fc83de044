//! The OpenAPI 3.1 description of the REST API, served at `/api/v1/openapi.json`. Kept beside
//! the routes it describes; `tests/it/http.rs` checks that every operation listed here is
//! routed.

use serde_json::{Value, json};

/// Every documented operation: (method, path, summary, needs a bearer token).
pub const OPERATIONS: &[(&str, &str, &str, bool)] = &[
    ("get", "/healthz", "Liveness", false),
    (
        "get",
        "/api/v1/sync",
        "The sync WebSocket (automerge-repo protocol v1); the access token goes in `?token=`",
        false,
    ),
    (
        "post",
        "/api/v1/auth/register",
        "Create an account and sign in",
        false,
    ),
    ("post", "/api/v1/auth/login", "Sign in", false),
    (
        "post",
        "/api/v1/auth/refresh",
        "Exchange a refresh token for a new pair",
        false,
    ),
    ("post", "/api/v1/auth/logout", "End this session", true),
    ("get", "/api/v1/auth/me", "The signed-in user", true),
    ("post", "/api/v1/workspaces", "Create a workspace", true),
    (
        "get",
        "/api/v1/workspaces",
        "My workspaces, with my role",
        true,
    ),
    (
        "get",
        "/api/v1/workspaces/{id}",
        "A workspace I belong to",
        true,
    ),
    (
        "get",
        "/api/v1/workspaces/{id}/members",
        "Its members and roles",
        true,
    ),
    (
        "patch",
        "/api/v1/workspaces/{id}/members/{user}",
        "Change a member's role",
        true,
    ),
    (
        "delete",
        "/api/v1/workspaces/{id}/members/{user}",
        "Remove a member (or leave)",
        true,
    ),
    (
        "post",
        "/api/v1/workspaces/{id}/leave",
        "Leave a workspace",
        true,
    ),
    (
        "post",
        "/api/v1/workspaces/{id}/invitations",
        "Invite by email with a role",
        true,
    ),
    (
        "get",
        "/api/v1/workspaces/{id}/invitations",
        "Open invitations",
        true,
    ),
    (
        "delete",
        "/api/v1/workspaces/{id}/invitations/{invitation}",
        "Revoke an invitation",
        true,
    ),
    (
        "post",
        "/api/v1/invitations/accept",
        "Accept an invitation",
        true,
    ),
    (
        "post",
        "/api/v1/invitations/decline",
        "Decline an invitation",
        true,
    ),
    (
        "get",
        "/api/v1/workspaces/{id}/projects",
        "A workspace's projects",
        true,
    ),
    (
        "post",
        "/api/v1/projects",
        "Create a project and its board document (or register one made on a device)",
        true,
    ),
    ("get", "/api/v1/projects/{id}", "A project", true),
    (
        "post",
        "/api/v1/projects/{id}/archive",
        "Archive a project",
        true,
    ),
    ("get", "/api/v1/openapi.json", "This document", false),
];

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, secured) in OPERATIONS {
        let mut operation = json!({
            "summary": summary,
            "responses": {
                "default": {
                    "description": "An error",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
                }
            }
        });
        if *secured {
            operation["security"] = json!([{ "bearer": [] }]);
        }
        let parameters: Vec<Value> = path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut parameters = parameters;
        if *path == "/api/v1/sync" {
            // Browsers cannot set headers on a WebSocket, so the token rides in the query.
            parameters.push(json!({ "name": "token", "in": "query", "required": true, "schema": { "type": "string" }, "description": "an access token" }));
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
