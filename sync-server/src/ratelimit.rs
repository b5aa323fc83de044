//! The REST API's rate limits: per client address and per signed-in user, shared by every node
//! through Redis (GCRA buckets on the Redis clock) and kept in this process while Redis cannot
//! be reached, as the login limits are.
//!
//! The client address is the socket's peer, or, behind a trusted proxy
//! (`--trust-forwarded-for`), the last address of `X-Forwarded-For`: the one the proxy itself
//! saw, which a client cannot forge. The sockets' upgrades, health and metrics are not
//! limited: reconnect storms after a node dies must get through, and probes must always.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::auth::http::ApiError;
use crate::auth::limit::{Limiter, Rate};
use crate::server::Shared;

/// Paths never limited (exact).
const EXEMPT: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/sync",
    "/api/v1/notifications/ws",
];

/// The REST limits and this node's fallback buckets.
#[derive(Debug)]
pub struct ApiLimits {
    per_address: Rate,
    per_user: Rate,
    local_address: Mutex<Limiter>,
    local_user: Mutex<Limiter>,
    trust_forwarded_for: bool,
}

impl ApiLimits {
    /// `per_second` requests earned back each second, up to `burst` at once, per address and
    /// per user.
    pub fn new(address: (u32, u32), user: (u32, u32), trust_forwarded_for: bool) -> ApiLimits {
        let rate = |(per_second, burst): (u32, u32)| Rate {
            burst: burst.max(1),
            every: Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))),
        };
        let (per_address, per_user) = (rate(address), rate(user));
        ApiLimits {
            per_address,
            per_user,
            local_address: Mutex::new(Limiter::new(per_address)),
            local_user: Mutex::new(Limiter::new(per_user)),
            trust_forwarded_for,
        }
    }
}

/// The client's address, as the limits (and the login limits) count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    fn of(headers: &HeaderMap, peer: Option<SocketAddr>, trust_forwarded_for: bool) -> ClientIp {
        // Only the last entry: the proxy appended it. Earlier ones are the client's to forge.
        let forwarded = trust_forwarded_for
            .then(|| {
                let last = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .next_back()?
                    .to_str()
                    .ok()?
                    .rsplit(',')
                    .next()?;
                last.trim().parse::<IpAddr>().ok()
            })
            .flatten();
        let peer = peer.map(|p| p.ip());
        ClientIp(
            forwarded
                .or(peer)
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        )
    }
}

impl FromRequestParts<Arc<Shared>> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(ip) = parts.extensions.get::<ClientIp>() {
            return Ok(*ip);
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientIp::of(
            &parts.headers,
            peer,
            shared.api_limits.trust_forwarded_for,
        ))
    }
}

/// Takes one request from the client's address bucket and, with a valid bearer token, from
/// its user's; over either, 429 with `Retry-After`.
pub async fn layer(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let limits = &shared.api_limits;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = ClientIp::of(request.headers(), peer, limits.trust_forwarded_for);
    request.extensions_mut().insert(ip);
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let address = ip.0.to_string();
    if let Err(e) = shared
        .identity
        .take(
            "api-address",
            &address,
            limits.per_address,
            &limits.local_address,
        )
        .await
    {
        return refused(e);
    }
    let user = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| shared.identity.token_subject(token.trim()));
    if let Some(user) = user
        && let Err(e) = shared
            .identity
            .take("api-user", &user, limits.per_user, &limits.local_user)
            .await
    {
        return refused(e);
    }
    next.run(request).await
}

fn refused(e: AuthError) -> Response {
    ApiError::from(e).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().expect("header"));
        headers
    }

    #[test]
    fn the_proxy_seen_address_counts_only_behind_a_trusted_proxy() {
        let peer: SocketAddr = "10.0.0.2:4000".parse().expect("addr");
        let spoofed = headers("1.2.3.4, 203.0.113.9");
        assert_eq!(
            ClientIp::of(&spoofed, Some(peer), true).0.to_string(),
            "203.0.113.9",
            "the last address is the one the proxy saw"
        );
        assert_eq!(
            ClientIp::of(&spoofed, Some(peer), false).0.to_string(),
            "10.0.0.2",
            "untrusted: the header is ignored"
        );
        assert_eq!(
            ClientIp::of(&headers("garbage"), Some(peer), true)
                .0
                .to_string(),
            "10.0.0.2"
        );
    }
}
