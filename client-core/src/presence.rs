//! Who else is viewing each board: a table of the presence other peers broadcast, with expiry
//! when a peer goes quiet. Sans-IO: time comes in as an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use taskflow_proto::DocumentId;
use taskflow_proto::board::TaskId;
use taskflow_proto::presence::Presence;

/// How often a client repeats its own presence while it views a board.
pub const PRESENCE_HEARTBEAT: Duration = Duration::from_secs(5);
/// A viewer not heard from for this long is gone (three missed heartbeats).
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// One other viewer of a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user: String,
    /// The task they have open, if any.
    pub task: Option<TaskId>,
    /// Their presence session (one per running client).
    pub session: String,
}

#[derive(Debug, Default)]
pub(crate) struct PresenceTable {
    /// (document, session) → viewer and when last heard.
    viewers: BTreeMap<(DocumentId, String), (Viewer, Instant)>,
}

impl PresenceTable {
    /// Records one received presence message; `true` when what we show changed.
    pub fn receive(
        &mut self,
        document: DocumentId,
        session: String,
        presence: Presence,
        now: Instant,
    ) -> bool {
        let key = (document, session.clone());
        if presence.left {
            return self.viewers.remove(&key).is_some();
        }
        let viewer = Viewer {
            user: presence.user,
            task: presence.task,
            session,
        };
        let changed = self.viewers.get(&key).is_none_or(|(old, _)| *old != viewer);
        self.viewers.insert(key, (viewer, now));
        changed
    }

    /// Drops viewers not heard from within [`PRESENCE_TTL`]; returns the boards that changed.
    pub fn expire(&mut self, now: Instant) -> BTreeSet<DocumentId> {
        let mut changed = BTreeSet::new();
        self.viewers.retain(|(document, _), (_, seen)| {
            let alive = now.saturating_duration_since(*seen) < PRESENCE_TTL;
            if !alive {
                changed.insert(*document);
            }
            alive
        });
        changed
    }

    /// Forgets everyone (the connection to the server is gone, so is what we knew).
    pub fn clear(&mut self) -> BTreeSet<DocumentId> {
        let boards = self.viewers.keys().map(|(d, _)| *d).collect();
        self.viewers.clear();
        boards
    }

    pub fn viewers(&self, document: &DocumentId) -> Vec<Viewer> {
        self.viewers
            .iter()
            .filter(|((d, _), _)| d == document)
            .map(|(_, (viewer, _))| viewer.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewing(user: &str, task: Option<&str>) -> Presence {
        Presence {
            user: user.into(),
            task: task.map(TaskId::new),
            left: false,
        }
    }

    #[test]
    fn viewers_appear_move_and_leave() {
        let board = DocumentId::random();
        let t0 = Instant::now();
        let mut table = PresenceTable::default();
        assert!(table.receive(board, "s1".into(), viewing("ann", None), t0));
        assert!(
            !table.receive(board, "s1".into(), viewing("ann", None), t0),
            "heartbeat"
        );
        assert!(table.receive(board, "s1".into(), viewing("ann", Some("t1")), t0));
        assert_eq!(table.viewers(&board)[0].task, Some(TaskId::new("t1")));
        let left = Presence {
            left: true,
            ..viewing("ann", None)
        };
        assert!(table.receive(board, "s1".into(), left, t0));
        assert!(table.viewers(&board).is_empty());
    }

    #[test]
    fn quiet_viewers_expire_and_heartbeats_keep_them() {
        let board = DocumentId::random();
        let other = DocumentId::random();
        let t0 = Instant::now();
        let mut table = PresenceTable::default();
        table.receive(board, "ann".into(), viewing("ann", None), t0);
        table.receive(board, "bob".into(), viewing("bob", None), t0);
        table.receive(other, "cat".into(), viewing("cat", None), t0);
        let later = t0 + PRESENCE_HEARTBEAT;
        table.receive(board, "bob".into(), viewing("bob", None), later);
        assert!(
            table
                .expire(t0 + PRESENCE_TTL - Duration::from_millis(1))
                .is_empty()
        );
        let changed = table.expire(t0 + PRESENCE_TTL);
        assert_eq!(changed, BTreeSet::from([board, other]));
        let users: Vec<String> = table.viewers(&board).into_iter().map(|v| v.user).collect();
        assert_eq!(users, ["bob"]);
        assert!(table.viewers(&other).is_empty());
    }
}
