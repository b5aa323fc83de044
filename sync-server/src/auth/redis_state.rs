//! Identity state shared by every server node through Redis (when `REDIS_URL` is set): the
//! login rate limits, the access-token blacklist, and a cache of whether each session is live.
//!
//! SQL stays the authority for sessions: a session ends in SQL first and is then marked ended
//! here, so a node that finds nothing here asks SQL (and caches the answer for a while). The
//! blacklist lives only here in this mode, under keys that expire with the tokens; a logged-out
//! token is also caught by its ended session, so losing Redis never revives one. Every key
//! starts with a prefix naming the database, so servers on one database share them and servers
//! on another never collide.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::limit::Rate;
use crate::resilience::{Breaker, BreakerConfig, Failure};
use std::sync::Arc;

/// How long a node trusts a cached "session live" before asking SQL again.
const SESSION_LIVE_FOR: Duration = Duration::from_secs(30);

/// One token bucket per key as GCRA: the key holds the "theoretical arrival time" of the next
/// attempt. Runs on the Redis clock, so nodes with skewed clocks share one limit. Answers 0
/// when the attempt is allowed, else the milliseconds until one is.
const TAKE: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local every = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + every
if next_tat - now > every * burst then
  return next_tat - now - every * burst
end
redis.call('SET', KEYS[1], next_tat, 'PX', math.max(next_tat - now, 1))
return 0
";

/// How a node's Redis connections reconnect: every second at the longest, each attempt and
/// each command bounded, so a Redis that comes back is used again within about a second (the
/// library's default backoff grows to minutes, and commands would wait on it).
pub fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_max_delay(1_000)
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(2))
}

#[derive(Clone)]
pub struct RedisState {
    conn: ConnectionManager,
    prefix: String,
    take: std::sync::Arc<redis::Script>,
    /// Shared by everything this node asks Redis: a Redis that is down or hung is given up on
    /// quickly, and callers fall back to SQL or to this node's own state.
    breaker: Arc<Breaker>,
}

/// Why a Redis call failed.
pub type RedisFailure = Failure<redis::RedisError>;

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// What Redis knows of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    Ended,
    /// Nothing cached: ask SQL.
    Unknown,
}

impl RedisState {
    /// Connects (the manager reconnects by itself later). `database` names the database the
    /// server uses, for the key prefix.
    pub async fn connect(url: &str, database: &str) -> redis::RedisResult<RedisState> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new_with_config(client, manager_config()).await?;
        Ok(RedisState {
            conn,
            prefix: format!("taskflow:{database}:"),
            take: std::sync::Arc::new(redis::Script::new(TAKE)),
            breaker: Arc::new(Breaker::new("redis", BreakerConfig::FAST)),
        })
    }

    /// The breaker every Redis call of this node goes through.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared connection (it reconnects by itself), for other state kept in Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Takes one attempt from `key`'s bucket, or says how long until one is available.
    pub async fn take(
        &self,
        bucket: &str,
        key: &str,
        rate: Rate,
    ) -> Result<Result<(), Duration>, RedisFailure> {
        let mut conn = self.conn.clone();
        let mut invocation = self
            .take
            .key(format!("{}limit:{bucket}:{key}", self.prefix));
        invocation
            .arg(rate.every.as_millis() as u64)
            .arg(rate.burst);
        let wait_ms: u64 = self
            .breaker
            .call(invocation.invoke_async(&mut conn))
            .await?;
        Ok(if wait_ms == 0 {
            Ok(())
        } else {
            Err(Duration::from_millis(wait_ms))
        })
    }

    /// Blacklists an access token for `left` (until it would have expired anyway).
    pub async fn revoke_token(&self, jti: &str, left: Duration) -> Result<(), RedisFailure> {
        let mut conn = self.conn.clone();
        let millis = left.as_millis().max(1) as u64;
        let key = self.revoked_key(jti);
        self.breaker
            .call(conn.pset_ex::<_, _, ()>(key, 1, millis))
            .await
    }

    pub async fn token_revoked(&self, jti: &str) -> Result<bool, RedisFailure> {
        let mut conn = self.conn.clone();
        let key = self.revoked_key(jti);
        self.breaker.call(conn.exists(key)).await
    }

    pub async fn session(&self, session: &str) -> Result<SessionState, RedisFailure> {
        let mut conn = self.conn.clone();
        let key = self.session_key(session);
        let value: Option<String> = self.breaker.call(conn.get(key)).await?;
        Ok(match value.as_deref() {
            Some("live") => SessionState::Live,
            Some(_) => SessionState::Ended,
            None => SessionState::Unknown,
        })
    }

    /// Caches what SQL said of a session. "Live" never overwrites "ended": a node that read
    /// SQL just before another ended the session must not bring it back.
    pub async fn cache_session(&self, session: &str, live: bool) -> Result<(), RedisFailure> {
        if !live {
            return self.end_session(session).await;
        }
        let mut conn = self.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(self.session_key(session))
            .arg("live")
            .arg("NX")
            .arg("EX")
            .arg(SESSION_LIVE_FOR.as_secs());
        self.breaker.call(set.query_async::<()>(&mut conn)).await
    }

    /// Marks a session ended (after SQL has it so) for as long as it could have lived.
    pub async fn end_session(&self, session: &str) -> Result<(), RedisFailure> {
        let mut conn = self.conn.clone();
        let key = self.session_key(session);
        self.breaker
            .call(conn.set_ex::<_, _, ()>(key, "ended", super::SESSION_TTL.as_secs()))
            .await
    }

    fn revoked_key(&self, jti: &str) -> String {
        format!("{}revoked:{jti}", self.prefix)
    }

    fn session_key(&self, session: &str) -> String {
        format!("{}session:{session}", self.prefix)
    }
}
