//! Who may do what in a workspace: the roles and the permission matrix, as pure functions.
//!
//! | action                                   | owner | admin | member | viewer |
//! |------------------------------------------|-------|-------|--------|--------|
//! | read the workspace, its members, boards  | yes   | yes   | yes    | yes    |
//! | edit boards                              | yes   | yes   | yes    | no     |
//! | create projects                          | yes   | yes   | yes    | no     |
//! | archive projects, invite                 | yes   | yes   | no     | no     |
//! | change roles / remove non-owners         | yes   | yes   | no     | no     |
//! | grant or take the owner role, remove owners | yes | no    | no     | no     |
//! | leave                                    | yes*  | yes   | yes    | yes    |
//!
//! (*) A workspace always keeps an owner: the last owner cannot leave, be removed or be demoted.

use std::fmt;

use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn can_edit_boards(self) -> bool {
        self >= Role::Member
    }

    pub fn can_create_projects(self) -> bool {
        self >= Role::Member
    }

    pub fn can_manage(self) -> bool {
        self >= Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a membership change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("your role does not allow this")]
    Forbidden,
    #[error("a workspace must keep an owner: make someone else owner first")]
    LastOwner,
}

/// May `actor` change `target`'s role from `from` to `to`? `owners` counts the workspace's
/// owners now.
pub fn may_change_role(actor: Role, from: Role, to: Role, owners: usize) -> Result<(), Refusal> {
    let touches_owner = from == Role::Owner || to == Role::Owner;
    if !actor.can_manage() || (touches_owner && actor != Role::Owner) {
        return Err(Refusal::Forbidden);
    }
    if from == Role::Owner && to != Role::Owner && owners <= 1 {
        return Err(Refusal::LastOwner);
    }
    Ok(())
}

/// May `actor` remove a member whose role is `target` (someone else; leaving is [`may_leave`])?
pub fn may_remove(actor: Role, target: Role, owners: usize) -> Result<(), Refusal> {
    if !actor.can_manage() || (target == Role::Owner && actor != Role::Owner) {
        return Err(Refusal::Forbidden);
    }
    if target == Role::Owner && owners <= 1 {
        return Err(Refusal::LastOwner);
    }
    Ok(())
}

pub fn may_leave(role: Role, owners: usize) -> Result<(), Refusal> {
    if role == Role::Owner && owners <= 1 {
        return Err(Refusal::LastOwner);
    }
    Ok(())
}

/// A change to who may reach what, for live sync connections to act on at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AccessChange {
    /// `user` joined `workspace`, changed role in it, was removed or left.
    Membership { workspace: String, user: String },
    /// A session ended (logout, or its refresh token was reused).
    SessionEnded { session: String },
    /// Changes may have been missed (the link to the other nodes dropped): check everything.
    Everything,
}

/// Broadcasts [`AccessChange`]s from the REST handlers to every connection on this node, and,
/// when shared through Redis, to every connection on every node.
#[derive(Debug, Clone)]
pub struct AccessFeed {
    local: broadcast::Sender<AccessChange>,
    remote: Option<RemoteFeed>,
}

/// The Redis pub/sub side of a shared feed.
#[derive(Clone)]
struct RemoteFeed {
    conn: redis::aio::ConnectionManager,
    channel: String,
    /// This node, so that it skips its own messages coming back.
    node: String,
}

impl std::fmt::Debug for RemoteFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFeed")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// One change on the Redis channel.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Envelope {
    node: String,
    change: AccessChange,
}

/// Changes a slow connection may fall behind by before it re-checks everything.
const FEED_CAPACITY: usize = 1024;

impl Default for AccessFeed {
    fn default() -> Self {
        Self {
            local: broadcast::channel(FEED_CAPACITY).0,
            remote: None,
        }
    }
}

impl AccessFeed {
    /// A feed shared with every node that uses `channel` on the Redis at `url`.
    pub async fn shared(url: &str, channel: String) -> redis::RedisResult<AccessFeed> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new_with_config(
            client.clone(),
            crate::auth::redis_state::manager_config(),
        )
        .await?;
        let local = broadcast::channel(FEED_CAPACITY).0;
        let node = uuid::Uuid::new_v4().to_string();
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        tokio::spawn(relay(
            client,
            pubsub,
            channel.clone(),
            node.clone(),
            local.clone(),
        ));
        Ok(Self {
            local,
            remote: Some(RemoteFeed {
                conn,
                channel,
                node,
            }),
        })
    }

    pub fn publish(&self, change: AccessChange) {
        // No receivers means no live connection here cares.
        let _ = self.local.send(change.clone());
        if let Some(remote) = self.remote.clone() {
            tokio::spawn(async move {
                let envelope = Envelope {
                    node: remote.node,
                    change,
                };
                let text = serde_json::to_string(&envelope).expect("plain JSON");
                let mut conn = remote.conn;
                let sent: redis::RedisResult<()> =
                    redis::AsyncCommands::publish(&mut conn, &remote.channel, text).await;
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "telling other nodes of an access change failed");
                }
            });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AccessChange> {
        self.local.subscribe()
    }
}

/// Hands other nodes' changes to this node's connections; after losing the subscription it
/// subscribes again and has everyone re-check (what was said meanwhile is unknown).
async fn relay(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    channel: String,
    node: String,
    local: broadcast::Sender<AccessChange>,
) {
    use futures_util::StreamExt;
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                match serde_json::from_str::<Envelope>(&text) {
                    Ok(envelope) if envelope.node != node => {
                        let _ = local.send(envelope.change);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "an unreadable access change on Redis"),
                }
            }
        }
        tracing::warn!("lost the Redis subscription to access changes; subscribing again");
        pubsub = loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match client.get_async_pubsub().await {
                Ok(mut fresh) => {
                    if fresh.subscribe(&channel).await.is_ok() {
                        break fresh;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Redis unreachable"),
            }
        };
        let _ = local.send(AccessChange::Everything);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    #[test]
    fn roles_read_and_write_as_the_matrix_says() {
        assert_eq!(
            Role::ALL.map(|r| (r.can_edit_boards(), r.can_create_projects(), r.can_manage())),
            [
                (true, true, true),
                (true, true, true),
                (true, true, false),
                (false, false, false)
            ]
        );
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("superuser"), None);
    }

    #[test]
    fn only_owners_touch_the_owner_role_and_one_always_remains() {
        assert_eq!(may_change_role(Admin, Member, Viewer, 1), Ok(()));
        assert_eq!(may_change_role(Admin, Viewer, Admin, 1), Ok(()));
        assert_eq!(
            may_change_role(Admin, Member, Owner, 1),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            may_change_role(Admin, Owner, Member, 2),
            Err(Refusal::Forbidden)
        );
        assert_eq!(
            may_change_role(Member, Viewer, Member, 1),
            Err(Refusal::Forbidden)
        );
        assert_eq!(may_change_role(Owner, Member, Owner, 1), Ok(()));
        assert_eq!(may_change_role(Owner, Owner, Admin, 2), Ok(()));
        assert_eq!(
            may_change_role(Owner, Owner, Admin, 1),
            Err(Refusal::LastOwner)
        );

        assert_eq!(may_remove(Admin, Member, 1), Ok(()));
        assert_eq!(may_remove(Admin, Owner, 2), Err(Refusal::Forbidden));
        assert_eq!(may_remove(Viewer, Viewer, 1), Err(Refusal::Forbidden));
        assert_eq!(may_remove(Owner, Owner, 2), Ok(()));
        assert_eq!(may_remove(Owner, Owner, 1), Err(Refusal::LastOwner));

        assert_eq!(may_leave(Viewer, 1), Ok(()));
        assert_eq!(may_leave(Owner, 2), Ok(()));
        assert_eq!(may_leave(Owner, 1), Err(Refusal::LastOwner));
    }
}
