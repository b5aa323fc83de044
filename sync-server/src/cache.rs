//! The cache of project views (`GET /api/v1/projects/{id}`: the project with its columns and
//! task counts): in Redis when `REDIS_URL` is set, so every node shares one cache and one
//! invalidation, otherwise in this process.
//!
//! An entry is invalidated after every commit that changes the project's board and whenever
//! the project itself changes. A reader that missed takes a ticket before reading the database
//! and may store what it read only if no invalidation happened since (a generation per
//! project), so a slow reader never puts back a view older than the latest change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::resilience::Breaker;

/// How long an entry lives at most: a bound on staleness should an invalidation be lost
/// (Redis unreachable at that moment).
const ENTRY_TTL: Duration = Duration::from_secs(60);

/// Entries kept in process before the cache starts afresh.
const LOCAL_ENTRIES: usize = 10_000;

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(String),
    /// Not cached: load it, then [`ProjectCache::put`] it with this ticket.
    Miss(Ticket),
}

/// Permission to store a view read after the lookup that issued it (`None`: do not store).
#[derive(Debug, Clone, Copy)]
pub struct Ticket(Option<u64>);

#[derive(Clone)]
pub enum ProjectCache {
    Local(Arc<Mutex<Local>>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
        /// Invalidations run on the document actors' path: a hung Redis must not hold them.
        breaker: Arc<Breaker>,
    },
}

impl std::fmt::Debug for ProjectCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectCache::Local(_) => f.write_str("ProjectCache::Local"),
            ProjectCache::Redis { prefix, .. } => write!(f, "ProjectCache::Redis({prefix})"),
        }
    }
}

#[derive(Debug, Default)]
pub struct Local {
    /// The clock of invalidations: tickets are its value when issued.
    clock: u64,
    /// Tickets issued before this are void (the map was emptied).
    cleared_at: u64,
    entries: HashMap<String, LocalEntry>,
}

#[derive(Debug)]
struct LocalEntry {
    invalidated_at: u64,
    value: Option<(String, Instant)>,
}

/// Stores `ARGV[2]` under `KEYS[1]` for `ARGV[3]` ms only if the generation `KEYS[2]` still
/// reads `ARGV[1]` (no invalidation since the ticket was issued).
const PUT_IF_CURRENT: &str = r"
if (redis.call('GET', KEYS[2]) or '0') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 0
";

impl ProjectCache {
    pub fn local() -> ProjectCache {
        ProjectCache::Local(Arc::default())
    }

    /// A cache shared through Redis; `prefix` names the database (see `RedisState::prefix`).
    pub fn redis(conn: ConnectionManager, prefix: &str, breaker: Arc<Breaker>) -> ProjectCache {
        ProjectCache::Redis {
            conn,
            prefix: prefix.to_owned(),
            breaker,
        }
    }

    pub async fn get(&self, project: &str) -> Lookup {
        match self {
            ProjectCache::Local(local) => {
                let local = local.lock().expect("cache lock");
                let ticket = Ticket(Some(local.clock));
                match local.entries.get(project).and_then(|e| e.value.as_ref()) {
                    Some((value, at)) if at.elapsed() < ENTRY_TTL => Lookup::Hit(value.clone()),
                    _ => Lookup::Miss(ticket),
                }
            }
            ProjectCache::Redis {
                conn,
                prefix,
                breaker,
            } => {
                let mut conn = conn.clone();
                let keys = [value_key(prefix, project), generation_key(prefix, project)];
                let mut mget = redis::cmd("MGET");
                mget.arg(&keys);
                let read: Result<(Option<String>, Option<u64>), _> =
                    breaker.call(mget.query_async(&mut conn)).await;
                match read {
                    Ok((Some(value), _)) => Lookup::Hit(value),
                    Ok((None, generation)) => Lookup::Miss(Ticket(Some(generation.unwrap_or(0)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "project cache: Redis read failed");
                        Lookup::Miss(Ticket(None))
                    }
                }
            }
        }
    }

    /// Stores a view loaded after the lookup that gave `ticket`, unless invalidated since.
    pub async fn put(&self, project: &str, ticket: Ticket, value: String) {
        let Ticket(Some(ticket)) = ticket else {
            return;
        };
        match self {
            ProjectCache::Local(local) => {
                let mut local = local.lock().expect("cache lock");
                if ticket < local.cleared_at {
                    return;
                }
                if local.entries.len() >= LOCAL_ENTRIES && !local.entries.contains_key(project) {
                    local.clock += 1;
                    local.cleared_at = local.clock;
                    local.entries.clear();
                    return;
                }
                let entry = local
                    .entries
                    .entry(project.to_owned())
                    .or_insert(LocalEntry {
                        invalidated_at: 0,
                        value: None,
                    });
                if entry.invalidated_at <= ticket {
                    entry.value = Some((value, Instant::now()));
                }
            }
            ProjectCache::Redis {
                conn,
                prefix,
                breaker,
            } => {
                let mut conn = conn.clone();
                let script = redis::Script::new(PUT_IF_CURRENT);
                let mut invocation = script.key(value_key(prefix, project));
                invocation
                    .key(generation_key(prefix, project))
                    .arg(ticket)
                    .arg(value)
                    .arg(ENTRY_TTL.as_millis() as u64);
                let stored: Result<(), _> = breaker.call(invocation.invoke_async(&mut conn)).await;
                if let Err(e) = stored {
                    tracing::warn!(error = %e, "project cache: Redis write failed");
                }
            }
        }
    }

    /// Forgets the project's view; views read before now will not be stored.
    pub async fn invalidate(&self, project: &str) {
        match self {
            ProjectCache::Local(local) => {
                let mut local = local.lock().expect("cache lock");
                local.clock += 1;
                let now = local.clock;
                let entry = local
                    .entries
                    .entry(project.to_owned())
                    .or_insert(LocalEntry {
                        invalidated_at: now,
                        value: None,
                    });
                entry.invalidated_at = now;
                entry.value = None;
            }
            ProjectCache::Redis {
                conn,
                prefix,
                breaker,
            } => {
                let mut conn = conn.clone();
                let generation = generation_key(prefix, project);
                // The generation outlives any ticket by far; it only has to move.
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .incr(&generation, 1)
                    .ignore()
                    .expire(&generation, 86_400)
                    .ignore()
                    .del(value_key(prefix, project))
                    .ignore();
                let done: Result<(), _> = breaker.call(pipe.query_async(&mut conn)).await;
                if let Err(e) = done {
                    tracing::warn!(error = %e, project, "project cache: Redis invalidation failed; the entry expires within a minute");
                }
            }
        }
    }
}

fn value_key(prefix: &str, project: &str) -> String {
    format!("{prefix}project:{project}")
}

fn generation_key(prefix: &str, project: &str) -> String {
    format!("{prefix}project-generation:{project}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(lookup: Lookup) -> Option<String> {
        match lookup {
            Lookup::Hit(value) => Some(value),
            Lookup::Miss(_) => None,
        }
    }

    fn ticket(lookup: Lookup) -> Ticket {
        match lookup {
            Lookup::Miss(ticket) => ticket,
            Lookup::Hit(value) => panic!("expected a miss, got {value}"),
        }
    }

    #[tokio::test]
    async fn a_put_is_read_back_until_invalidated() {
        let cache = ProjectCache::local();
        let t = ticket(cache.get("p").await);
        cache.put("p", t, "v1".into()).await;
        assert_eq!(hit(cache.get("p").await).as_deref(), Some("v1"));
        cache.invalidate("p").await;
        assert_eq!(hit(cache.get("p").await), None);
    }

    #[tokio::test]
    async fn a_view_read_before_an_invalidation_is_not_stored() {
        let cache = ProjectCache::local();
        let stale = ticket(cache.get("p").await);
        cache.invalidate("p").await;
        cache.put("p", stale, "old".into()).await;
        assert_eq!(hit(cache.get("p").await), None);
        let fresh = ticket(cache.get("p").await);
        cache.put("p", fresh, "new".into()).await;
        assert_eq!(hit(cache.get("p").await).as_deref(), Some("new"));
    }

    #[tokio::test]
    async fn invalidating_one_project_leaves_the_others() {
        let cache = ProjectCache::local();
        let t = ticket(cache.get("a").await);
        cache.put("a", t, "a".into()).await;
        cache.invalidate("b").await;
        assert_eq!(hit(cache.get("a").await).as_deref(), Some("a"));
    }
}
