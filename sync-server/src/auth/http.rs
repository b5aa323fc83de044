//! `/api/v1/auth/…`: register, login, refresh, logout, me. Errors are problem+json with stable
//! `type` URIs; request bodies are JSON with no unknown fields.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{AuthError, AuthUser, TokenPair};
use crate::ratelimit::ClientIp;
use crate::server::{Shared, typed_problem};
use crate::store::UserRow;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/me", get(me))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterBody {
    email: String,
    name: String,
    password: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RefreshBody {
    refresh_token: String,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct UserJson {
    id: String,
    email: String,
    name: String,
}

impl From<UserRow> for UserJson {
    fn from(u: UserRow) -> Self {
        UserJson {
            id: u.id,
            email: u.email,
            name: u.name,
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokensJson {
    access_token: String,
    refresh_token: String,
    token_type: &'static str,
    expires_in: u64,
    user: UserJson,
}

impl From<TokenPair> for TokensJson {
    fn from(p: TokenPair) -> Self {
        TokensJson {
            access_token: p.access_token,
            refresh_token: p.refresh_token,
            token_type: "Bearer",
            expires_in: p.expires_in.as_secs(),
            user: p.user.into(),
        }
    }
}

/// An error answered as problem+json.
#[derive(Debug)]
pub struct ApiError(Box<Response>);

impl ApiError {
    /// A problem with a stable `type`, e.g. `/problems/not-found`.
    pub fn new(status: StatusCode, kind: &'static str, title: &str, detail: &str) -> ApiError {
        ApiError(Box::new(typed_problem(status, kind, title, detail)))
    }

    /// The same answer with one more header (an `ETag` with a 412, say).
    pub fn with_header(mut self, name: header::HeaderName, value: header::HeaderValue) -> ApiError {
        self.0.headers_mut().insert(name, value);
        self
    }
}

/// 404 for something that does not exist or that the caller may not know of (`what`: "task").
pub fn not_found(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "/problems/not-found",
        "Not found",
        &format!("no such {what} (or you are not a member of its workspace)"),
    )
}

/// 422 for input that parses but is not acceptable (`detail` says why).
pub fn invalid(detail: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "/problems/invalid-input",
        "Invalid input",
        detail,
    )
}

/// 403: the caller is a member, but their role does not allow this (`why` says so).
pub fn forbidden(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "/problems/forbidden",
        "Forbidden",
        why,
    )
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        AuthError::Store(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let detail = e.to_string();
        let (status, kind, title) = match &e {
            AuthError::Invalid(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/invalid-input",
                "Invalid input",
            ),
            AuthError::EmailTaken => (
                StatusCode::CONFLICT,
                "/problems/email-taken",
                "Email already registered",
            ),
            AuthError::BadCredentials => (
                StatusCode::UNAUTHORIZED,
                "/problems/invalid-credentials",
                "Invalid credentials",
            ),
            AuthError::Unauthenticated(_) => (
                StatusCode::UNAUTHORIZED,
                "/problems/unauthenticated",
                "Authentication required",
            ),
            AuthError::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many attempts",
            ),
            AuthError::RefreshReused => (
                StatusCode::UNAUTHORIZED,
                "/problems/refresh-token-reused",
                "Refresh token reused",
            ),
            AuthError::RefreshInvalid => (
                StatusCode::UNAUTHORIZED,
                "/problems/invalid-refresh-token",
                "Invalid refresh token",
            ),
            AuthError::Store(err) => {
                tracing::error!("identity store: {err}");
                return ApiError(Box::new(typed_problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "/problems/unavailable",
                    "Temporarily unavailable",
                    "the server could not reach its database; try again",
                )));
            }
        };
        let mut response = typed_problem(status, kind, title, &detail);
        if let AuthError::RateLimited(wait) = &e
            && let Ok(value) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        ApiError(Box::new(response))
    }
}

/// The JSON body, or a problem+json answer saying what is wrong with it.
pub fn body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|rejection| {
        ApiError(Box::new(typed_problem(
            rejection.status(),
            "/problems/invalid-body",
            "Invalid request body",
            &rejection.body_text(),
        )))
    })
}

/// The authenticated user of a request (`Authorization: Bearer <access token>`).
#[derive(Debug)]
pub struct Authenticated(pub AuthUser);

impl FromRequestParts<Arc<Shared>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<Shared>) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(AuthError::Unauthenticated(
                "send `Authorization: Bearer <access token>`",
            ))?;
        let user = shared.identity.authenticate(token.trim()).await?;
        tracing::Span::current().record("user", user.user_id.as_str());
        Ok(Authenticated(user))
    }
}

async fn register(
    State(shared): State<Arc<Shared>>,
    ClientIp(peer): ClientIp,
    request: Result<Json<RegisterBody>, JsonRejection>,
) -> Result<(StatusCode, Json<TokensJson>), ApiError> {
    shared.identity.attempt(peer, None).await?;
    let b = body(request)?;
    let pair = shared
        .identity
        .register(&b.email, &b.name, &b.password)
        .await?;
    Ok((StatusCode::CREATED, Json(pair.into())))
}

async fn login(
    State(shared): State<Arc<Shared>>,
    ClientIp(peer): ClientIp,
    request: Result<Json<LoginBody>, JsonRejection>,
) -> Result<Json<TokensJson>, ApiError> {
    let b = body(request)?;
    shared.identity.attempt(peer, Some(&b.email)).await?;
    Ok(Json(
        shared.identity.login(&b.email, &b.password).await?.into(),
    ))
}

async fn refresh(
    State(shared): State<Arc<Shared>>,
    request: Result<Json<RefreshBody>, JsonRejection>,
) -> Result<Json<TokensJson>, ApiError> {
    let b = body(request)?;
    Ok(Json(
        shared.identity.refresh(&b.refresh_token).await?.into(),
    ))
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
) -> Result<StatusCode, ApiError> {
    shared.identity.logout(&user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(
    State(shared): State<Arc<Shared>>,
    Authenticated(user): Authenticated,
) -> Result<Json<UserJson>, ApiError> {
    let row = shared
        .identity
        .user(&user.user_id)
        .await?
        .ok_or(AuthError::Unauthenticated("the account no longer exists"))?;
    Ok(Json(row.into()))
}
