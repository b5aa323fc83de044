//! The HTTP middleware every request passes: a span carrying its request id (the caller's
//! `X-Request-Id`, or a fresh one, echoed in the answer), method and route, which handlers
//! add the user to; then the request is counted and timed by route and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The header carrying a request's id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest caller-chosen request id kept (a longer one is replaced).
const MAX_REQUEST_ID: usize = 128;

pub async fn observe(request: Request, next: Next) -> Response {
    // The route pattern, not the path: ids in paths would make a series per resource.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "http",
        request_id = %request_id,
        method = %method,
        route = %route,
        user = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.record("status", status);
    span.in_scope(|| {
        tracing::debug!(
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        )
    });
    metrics::counter!(
        super::HTTP_REQUESTS,
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string(),
    )
    .increment(1);
    metrics::histogram!(super::HTTP_SECONDS, "method" => method, "route" => route)
        .record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
