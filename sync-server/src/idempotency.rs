//! `Idempotency-Key` on POSTs: a signed-in client that retries a POST with the same key gets
//! the first answer again instead of a second effect.
//!
//! The first request with a key claims it (with a fingerprint of its method, path and body);
//! its successful answer is kept for a day and replayed (`Idempotent-Replayed: true`). The same
//! key with a different request answers 422, and while the first is still running, 409. A
//! failed request gives its key back, so a corrected retry may run. Keys belong to a user.
//!
//! Handlers that create things also derive the new thing's id from the key
//! ([`IdempotencyKey::derive_id`]): should the server stop between making the change and keeping
//! the answer, the retry finds the thing already made instead of making a second one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::http::ApiError;
use crate::server::Shared;
use crate::store::{Claim, KeyTimes};

pub const HEADER: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";

/// Longest key accepted.
const MAX_KEY: usize = 255;
/// Largest request or answer body kept for a key.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// How long answers are replayed.
const KEPT_FOR_MS: i64 = 24 * 60 * 60 * 1000;
/// A claim this old without an answer belongs to a request that died with its server.
const ABANDONED_AFTER_MS: i64 = 60 * 1000;
/// Answer headers kept with the body.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// The key a request carries, for handlers (a request extension).
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    user: String,
    key: String,
    /// Of the request (method, path, body): a key reused for another request, once its first
    /// answer is forgotten, derives other ids.
    fingerprint: [u8; 32],
}

impl IdempotencyKey {
    /// A 128-bit id (hex) for the thing of `kind` this request creates: the same for every
    /// retry of it, different for every user, key, request and kind.
    pub fn derive_id(&self, kind: &str) -> String {
        let digest = Sha256::new()
            .chain_update(kind.as_bytes())
            .chain_update([0])
            .chain_update(self.user.as_bytes())
            .chain_update([0])
            .chain_update(self.key.as_bytes())
            .chain_update([0])
            .chain_update(self.fingerprint)
            .finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The answer kept for replays.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Kept {
    headers: Vec<(String, String)>,
    body: String,
}

fn problem(status: StatusCode, kind: &'static str, title: &str, detail: &str) -> Response {
    ApiError::new(status, kind, title, detail).into_response()
}

/// The middleware: passes through anything but a signed-in POST with a key.
pub async fn layer(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER).cloned() else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "/problems/invalid-idempotency-key",
                "Invalid Idempotency-Key",
                "an Idempotency-Key is 1 to 255 visible ASCII characters (a UUID, say)",
            );
        }
    };
    let Some(token) = bearer(request.headers()) else {
        // The handler answers the missing sign-in.
        return next.run(request).await;
    };
    let user = match shared.identity.authenticate(&token).await {
        Ok(user) => user.user_id,
        Err(e) => return ApiError::from(e).into_response(),
    };

    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "/problems/body-too-large",
            "Request body too large",
            "a request with an Idempotency-Key may carry at most 2 MiB",
        );
    };
    let fingerprint: [u8; 32] = Sha256::new()
        .chain_update(parts.method.as_str().as_bytes())
        .chain_update([0])
        .chain_update(parts.uri.to_string().as_bytes())
        .chain_update([0])
        .chain_update(&body)
        .finalize()
        .into();
    let store = shared.identity.store();
    let times = KeyTimes {
        now: crate::now_ms(),
        abandoned_after: ABANDONED_AFTER_MS,
        kept_for: KEPT_FOR_MS,
    };
    let claim = match store
        .claim_idempotency_key(&user, &key, &fingerprint, times)
        .await
    {
        Ok(claim) => claim,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let at = match claim {
        Claim::Claimed { at } => at,
        Claim::Replay { status, body } => return replay(status, &body),
        Claim::InProgress => {
            return problem(
                StatusCode::CONFLICT,
                "/problems/idempotency-key-in-use",
                "Request in progress",
                "a request with this Idempotency-Key is still being handled; retry shortly",
            );
        }
        Claim::Mismatch => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used for a different request; use a new key for a new request",
            );
        }
    };
    // Should the client go away mid-request (dropping this future), the key is given back
    // rather than left "in progress".
    let mut claim = ClaimGuard {
        store: store.clone(),
        user: user.clone(),
        key: key.clone(),
        at,
        settled: false,
    };

    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(IdempotencyKey {
        user: user.clone(),
        key: key.clone(),
        fingerprint,
    });
    let response = next.run(request).await;
    if !response.status().is_success() {
        claim.settled = true;
        if let Err(e) = store.release_idempotency_key(&user, &key, at).await {
            tracing::warn!(error = %e, "releasing an idempotency key failed");
        }
        return response;
    }
    claim.settled = true;
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        tracing::error!("an answer to keep for its Idempotency-Key could not be read");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let kept = Kept {
        headers: KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let saved = match serde_json::to_vec(&kept) {
        Ok(bytes) => {
            store
                .finish_idempotency_key(&user, &key, at, parts.status.as_u16(), &bytes)
                .await
        }
        Err(e) => Err(crate::store::StoreError::Write(e.to_string())),
    };
    if let Err(e) = saved {
        // The change stands; a retry re-runs and finds what this one made (derived ids).
        tracing::warn!(error = %e, "keeping an answer for its Idempotency-Key failed");
    }
    Response::from_parts(parts, Body::from(body))
}

/// A claimed key not yet finished or released: released when dropped.
struct ClaimGuard {
    store: crate::store::Store,
    user: String,
    key: String,
    at: i64,
    settled: bool,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (store, user, key, at) = (
            self.store.clone(),
            std::mem::take(&mut self.user),
            std::mem::take(&mut self.key),
            self.at,
        );
        tokio::spawn(async move {
            if let Err(e) = store.release_idempotency_key(&user, &key, at).await {
                tracing::warn!(error = %e, "releasing an abandoned idempotency key failed");
            }
        });
    }
}

fn replay(status: u16, kept: &[u8]) -> Response {
    let Ok(kept) = serde_json::from_slice::<Kept>(kept) else {
        tracing::error!("a kept idempotent answer does not parse");
        return problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "/problems/internal",
            "Internal error",
            "the answer kept for this Idempotency-Key is unreadable; use a new key",
        );
    };
    let mut response = Response::new(Body::from(kept.body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    for (name, value) in kept.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::IdempotencyKey;

    #[test]
    fn derived_ids_depend_on_user_key_request_and_kind() {
        let key = |user: &str, key: &str, request: u8| IdempotencyKey {
            user: user.into(),
            key: key.into(),
            fingerprint: [request; 32],
        };
        let id = key("u1", "k1", 0).derive_id("task");
        assert_eq!(id.len(), 32);
        assert_eq!(id, key("u1", "k1", 0).derive_id("task"));
        assert_ne!(id, key("u2", "k1", 0).derive_id("task"));
        assert_ne!(id, key("u1", "k2", 0).derive_id("task"));
        assert_ne!(id, key("u1", "k1", 1).derive_id("task"));
        assert_ne!(id, key("u1", "k1", 0).derive_id("comment"));
    }
}
