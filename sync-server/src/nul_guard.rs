//! Refuses requests that carry a NUL character in their path, query or JSON body, with 422.
//! PostgreSQL text cannot hold NUL, so such a request would otherwise fail deep inside a
//! handler as a database error; here it gets a clear answer before anything runs. (Text that
//! arrives over the sync socket is cleaned where it enters the projection instead.)

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::http::ApiError;

/// Largest body inspected (larger ones are refused by the handlers' own limits).
const MAX_BODY: usize = 2 * 1024 * 1024;

fn refused(where_: &str) -> Response {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/invalid-input",
        "Invalid input",
        &format!(
            "the request {where_} contains a NUL character (\\u0000), which no text here may hold"
        ),
    )
    .into_response()
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

pub async fn layer(request: Request, next: Next) -> Response {
    let target = request.uri().path_and_query().map_or("", |p| p.as_str());
    if target.to_ascii_lowercase().contains("%00") {
        return refused("address");
    }
    // What axum's `Json` takes: application/json or application/*+json, in any case.
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    if !json {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/body-too-large",
            "Request body too large",
            "a request body may be at most 2 MiB",
        )
        .into_response();
    };
    // Bodies that are not JSON get the handler's own answer.
    if serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| holds_nul(&v)) {
        return refused("body");
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::holds_nul;
    use serde_json::json;

    #[test]
    fn nul_is_found_anywhere_in_a_body() {
        assert!(!holds_nul(&json!({ "title": "fine", "labels": ["a"] })));
        assert!(holds_nul(&json!({ "title": "a\u{0}b" })));
        assert!(holds_nul(&json!({ "labels": ["ok", "\u{0}"] })));
        assert!(holds_nul(&json!({ "a\u{0}": 1 })));
    }
}
