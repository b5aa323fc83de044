//! Identity: who a request or a socket acts for.
//!
//! - [`password`]: argon2id hashes (run off the async threads).
//! - [`tokens`]: short-lived JWT access tokens (HS256, issuer/audience checked, `now` injected)
//!   and opaque refresh tokens stored only as hashes.
//! - [`Identity`]: registration, login, refresh-token rotation with reuse detection, logout and
//!   access-token checks, over the store's users and sessions.
//! - [`http`]: the `/api/v1/auth/…` routes.
//! - [`limit`]: per-address and per-account rate limits on login and registration.
//! - [`redis_state`]: with `REDIS_URL`, the rate limits, the access-token blacklist and a cache of
//!   session states shared by every node (in this process and SQL otherwise).
//!
//! A session is one login: the family of refresh tokens exchanged from it. Every access token
//! names its session, so ending the session (logout, or a spent refresh token presented again)
//! ends every token of it at once; logout also blacklists the presented access token until it
//! expires. All of it is in SQL, so a restart never resurrects a logged-out token.

pub mod http;
pub mod limit;
pub mod password;
pub mod redis_state;
pub mod tokens;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::access::{AccessChange, AccessFeed};
use crate::now_ms;
use crate::store::{Rotation, Store, StoreError, UserRow};
use redis_state::{RedisState, SessionState};
use tokens::{AUDIENCE, Claims, ISSUER, TokenError, TokenKeys};

/// How long a session lives without a new login.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// A parsed, normalised email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Trims and lowercases; requires `local@domain.tld` without spaces, at most 254 bytes.
    pub fn parse(text: &str) -> Result<Email, AuthError> {
        let email = text.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(char::is_whitespace)
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.split('.').count() >= 2
                    && domain.split('.').all(|part| !part.is_empty())
            });
        if valid {
            Ok(Email(email))
        } else {
            Err(AuthError::Invalid(format!(
                "`{}` is not an email address",
                text.trim()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The user a valid access token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: String,
    pub session_id: String,
    pub jti: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

/// A freshly issued pair.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: Duration,
    pub user: UserRow,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("an account with this email exists")]
    EmailTaken,
    #[error("wrong email or password")]
    BadCredentials,
    #[error("no valid access token: {0}")]
    Unauthenticated(&'static str),
    #[error("too many attempts; retry in {} s", .0.as_secs().max(1))]
    RateLimited(Duration),
    #[error("this refresh token was already used; the session is ended, log in again")]
    RefreshReused,
    #[error("the refresh token is unknown, expired or revoked")]
    RefreshInvalid,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct Identity {
    store: Store,
    keys: TokenKeys,
    per_address: Arc<Mutex<limit::Limiter>>,
    per_account: Arc<Mutex<limit::Limiter>>,
    /// Tells live sync connections when a session ends.
    feed: AccessFeed,
    access_ttl: Duration,
    /// Shared state of every node, when configured.
    redis: Option<RedisState>,
}

/// A hash to verify against when the account does not exist, so a login for an unknown email
/// takes as long as one with a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| password::hash("decoy password for unknown accounts"))
}

/// Runs password hashing on a few threads of its own, one per core: each argon2id hash holds
/// 19 MiB and a core for a while, so a burst of sign-ups or logins waits its turn rather than
/// taking every core, and the memory stays with those threads (on tokio's blocking pool each
/// hash could land on a new thread whose allocator arena then keeps its 19 MiB). At most
/// [`HASH_QUEUE`] wait; more callers wait (asynchronously) for a place in the queue.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    type Job = Box<dyn FnOnce() + Send>;
    static QUEUE: std::sync::LazyLock<(std::sync::mpsc::SyncSender<Job>, tokio::sync::Semaphore)> =
        std::sync::LazyLock::new(|| {
            let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(HASH_QUEUE);
            let queue = Arc::new(Mutex::new(queue));
            for n in 0..std::thread::available_parallelism().map_or(1, |n| n.get()) {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("password-hasher-{n}"))
                    .spawn(move || {
                        loop {
                            let job = queue.lock().expect("hash queue lock").recv();
                            let Ok(job) = job else {
                                return;
                            };
                            // A panicking job fails its own caller, not the thread.
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                        }
                    })
                    .expect("a password hashing thread starts");
            }
            (jobs, tokio::sync::Semaphore::new(HASH_QUEUE))
        });
    let (jobs, places) = &*QUEUE;
    let _place = places
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = done.send(work());
    });
    jobs.send(job)
        .expect("the password hashing threads run as long as the process");
    result.await.expect("password hashing does not panic")
}

/// Password hashes waiting for a hashing thread.
const HASH_QUEUE: usize = 1024;

impl Identity {
    pub fn new(store: Store, secret: &[u8], feed: AccessFeed, access_ttl: Duration) -> Identity {
        Identity {
            store,
            feed,
            access_ttl,
            redis: None,
            keys: TokenKeys::new(secret),
            per_address: Arc::new(Mutex::new(limit::Limiter::new(limit::PER_ADDRESS))),
            per_account: Arc::new(Mutex::new(limit::Limiter::new(limit::PER_ACCOUNT))),
        }
    }

    /// Keeps rate limits, the blacklist and session states in Redis, shared with other nodes.
    pub fn with_redis(mut self, redis: RedisState) -> Identity {
        self.redis = Some(redis);
        self
    }

    /// Counts one login or registration attempt from `address` (and at `account`, for logins).
    pub async fn attempt(&self, address: IpAddr, account: Option<&str>) -> Result<(), AuthError> {
        let address = address.to_string();
        self.take("address", &address, limit::PER_ADDRESS, &self.per_address)
            .await?;
        if let Some(account) = account {
            let account = account.trim().to_lowercase();
            self.take("account", &account, limit::PER_ACCOUNT, &self.per_account)
                .await?;
        }
        Ok(())
    }

    /// One attempt from `key`'s bucket: in Redis when configured (in this process while Redis
    /// cannot be reached, so logins keep working).
    pub(crate) async fn take(
        &self,
        bucket: &str,
        key: &str,
        rate: limit::Rate,
        local: &Mutex<limit::Limiter>,
    ) -> Result<(), AuthError> {
        if let Some(redis) = &self.redis {
            match redis.take(bucket, key, rate).await {
                Ok(taken) => return taken.map_err(AuthError::RateLimited),
                Err(e) => {
                    tracing::warn!(error = %e, "Redis unreachable; rate limiting in this process")
                }
            }
        }
        local
            .lock()
            .expect("rate limiter lock")
            .take(key, Instant::now())
            .map_err(AuthError::RateLimited)
    }

    /// Whether a session is live: Redis's cached answer when it has one, else SQL's.
    async fn session_live(&self, session: &str, now_ms: i64) -> Result<bool, AuthError> {
        if let Some(redis) = &self.redis {
            match redis.session(session).await {
                Ok(SessionState::Live) => return Ok(true),
                Ok(SessionState::Ended) => return Ok(false),
                Ok(SessionState::Unknown) => {}
                Err(e) => tracing::warn!(error = %e, "Redis unreachable; asking SQL"),
            }
        }
        let live = self.store.session_active(session, now_ms).await?;
        if let Some(redis) = &self.redis
            && let Err(e) = redis.cache_session(session, live).await
        {
            tracing::warn!(error = %e, "caching a session state in Redis failed");
        }
        Ok(live)
    }

    /// Whether an access token was signed out: Redis's blacklist when configured (SQL's while
    /// Redis cannot be reached), else SQL's.
    async fn token_revoked(&self, jti: &str) -> Result<bool, AuthError> {
        if let Some(redis) = &self.redis {
            match redis.token_revoked(jti).await {
                Ok(revoked) => return Ok(revoked),
                Err(e) => tracing::warn!(error = %e, "Redis unreachable; asking SQL"),
            }
        }
        Ok(self.store.access_token_revoked(jti).await?)
    }

    /// Tells every node a session ended (SQL has it already).
    async fn session_ended(&self, session: &str) {
        if let Some(redis) = &self.redis
            && let Err(e) = redis.end_session(session).await
        {
            // Other nodes find out from SQL once their cached "live" runs out.
            tracing::warn!(error = %e, "marking a session ended in Redis failed");
        }
        self.feed.publish(AccessChange::SessionEnded {
            session: session.to_owned(),
        });
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn register(
        &self,
        email: &str,
        name: &str,
        password: &str,
    ) -> Result<TokenPair, AuthError> {
        let email = Email::parse(email)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::Invalid("a name is 1 to 100 characters".into()));
        }
        if password.chars().count() < password::MIN_PASSWORD_CHARS
            || password.len() > password::MAX_PASSWORD_BYTES
        {
            return Err(AuthError::Invalid(format!(
                "a password is at least {} characters (and at most {} bytes)",
                password::MIN_PASSWORD_CHARS,
                password::MAX_PASSWORD_BYTES
            )));
        }
        let owned = password.to_owned();
        let user = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.as_str().to_owned(),
            name: name.to_owned(),
            password_hash: blocking(move || password::hash(&owned)).await,
            created_at: now_ms(),
        };
        if !self.store.create_user(&user).await? {
            return Err(AuthError::EmailTaken);
        }
        self.start_session(user).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair, AuthError> {
        let user = match Email::parse(email) {
            Ok(email) => self.store.user_by_email(email.as_str()).await?,
            Err(_) => None,
        };
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let owned = password.to_owned();
        let matches = blocking(move || {
            password::verify(&owned, stored.as_deref().unwrap_or_else(|| decoy_hash()))
        })
        .await;
        match user {
            Some(user) if matches => self.start_session(user).await,
            _ => Err(AuthError::BadCredentials),
        }
    }

    async fn start_session(&self, user: UserRow) -> Result<TokenPair, AuthError> {
        let now = now_ms();
        let session_id = uuid::Uuid::new_v4().to_string();
        let refresh = tokens::new_refresh_token();
        self.store
            .create_session(
                &session_id,
                &user.id,
                &tokens::refresh_token_hash(&refresh),
                now,
                now + SESSION_TTL.as_millis() as i64,
            )
            .await?;
        Ok(self.pair(user, &session_id, refresh, now))
    }

    fn pair(&self, user: UserRow, session_id: &str, refresh: String, now_ms: i64) -> TokenPair {
        let iat = now_ms / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.id.clone(),
            sid: session_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat,
            exp: iat + self.access_ttl.as_secs() as i64,
        };
        TokenPair {
            access_token: self.keys.sign(&claims),
            refresh_token: refresh,
            expires_in: self.access_ttl,
            user,
        }
    }

    /// Exchanges a refresh token for a new pair. Presenting a spent one ends its session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let now = now_ms();
        let next = tokens::new_refresh_token();
        let rotation = self
            .store
            .rotate_refresh(
                &tokens::refresh_token_hash(refresh_token),
                &tokens::refresh_token_hash(&next),
                now,
            )
            .await?;
        match rotation {
            Rotation::Rotated {
                session_id,
                user_id,
            } => {
                let user = self
                    .store
                    .user_by_id(&user_id)
                    .await?
                    .ok_or(AuthError::RefreshInvalid)?;
                Ok(self.pair(user, &session_id, next, now))
            }
            Rotation::Reused { session_id } => {
                tracing::warn!(session = %session_id, "a spent refresh token was presented again; its session is ended");
                self.session_ended(&session_id).await;
                Err(AuthError::RefreshReused)
            }
            Rotation::Invalid => Err(AuthError::RefreshInvalid),
        }
    }

    /// The user an access token names, if its signature and expiry check out (no session
    /// lookup: for rate limits, which must not cost a database read per request).
    pub fn token_subject(&self, token: &str) -> Option<String> {
        self.keys
            .verify(token, now_ms() / 1000)
            .ok()
            .map(|claims| claims.sub)
    }

    /// Checks an access token: signature, claims, expiry, session still live, not logged out.
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, AuthError> {
        let now = now_ms();
        let claims = self.keys.verify(token, now / 1000).map_err(|e| match e {
            TokenError::Expired => AuthError::Unauthenticated("the access token has expired"),
            TokenError::Invalid => AuthError::Unauthenticated("the access token is invalid"),
        })?;
        if !self.session_live(&claims.sid, now).await? {
            return Err(AuthError::Unauthenticated("the session has ended"));
        }
        if self.token_revoked(&claims.jti).await? {
            return Err(AuthError::Unauthenticated("the access token was revoked"));
        }
        Ok(AuthUser {
            user_id: claims.sub,
            session_id: claims.sid,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }

    /// Ends the session and blacklists the access token until it would have expired.
    pub async fn logout(&self, user: &AuthUser) -> Result<(), AuthError> {
        let now = now_ms();
        let until_ms = user.expires_at * 1000;
        self.store
            .revoke_access_token(&user.jti, until_ms, now)
            .await?;
        self.store
            .revoke_session(&user.session_id, "logout", now)
            .await?;
        if let Some(redis) = &self.redis {
            let left = Duration::from_millis((until_ms - now).max(1) as u64);
            if let Err(e) = redis.revoke_token(&user.jti, left).await {
                // The ended session refuses the token on every node regardless.
                tracing::warn!(error = %e, "blacklisting a token in Redis failed");
            }
        }
        self.session_ended(&user.session_id).await;
        Ok(())
    }

    pub async fn user(&self, id: &str) -> Result<Option<UserRow>, AuthError> {
        Ok(self.store.user_by_id(id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").expect("valid").as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "a n@example.com",
            "ann@example..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
