//! Notifications as clients see them: the JSON of the REST inbox (`/api/v1/notifications`) and
//! the messages of the notification socket (`/api/v1/notifications/ws`), one JSON object per
//! text frame, told apart by `type`.
//!
//! On connect the server sends [`ServerMessage::UnreadSync`]; then a
//! [`ServerMessage::NotificationReceived`] for each new notification, and
//! [`ServerMessage::Read`] when notifications are marked read elsewhere (another connection of
//! the same user, or the REST API). A notification may arrive both in the first `unread_sync`
//! and in a `notification_received` just after it: clients keep them by `id`.

use serde::{Deserialize, Serialize};

/// The kinds of notification, as [`Notification::kind`] names them.
pub const KINDS: [&str; 7] = [
    "task.assigned",
    "task.status_changed",
    "comment.added",
    "comment.mentioned",
    "invitation.received",
    "task.due_soon",
    "task.overdue",
];

/// One notification of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: String,
    /// One of [`KINDS`].
    pub kind: String,
    /// One line for people, e.g. `Ada assigned you to “Fix the login”`.
    pub title: String,
    /// More text when there is some (a comment's words), else empty.
    pub body: String,
    /// Who caused it; `null` when the server did (deadlines).
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub workspace_id: Option<String>,
    pub project_id: Option<String>,
    pub task_id: Option<String>,
    /// The domain event it came from.
    pub event_id: String,
    pub read: bool,
    /// RFC 3339, when read.
    pub read_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// What the server sends on the notification socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First, on connect: how many are unread, and the latest unread ones (newest first).
    #[serde(rename_all = "camelCase")]
    UnreadSync {
        unread_count: u64,
        items: Vec<Notification>,
    },
    /// A new notification, and the unread count with it.
    #[serde(rename_all = "camelCase")]
    NotificationReceived {
        notification: Box<Notification>,
        unread_count: u64,
    },
    /// Notifications were marked read: these `ids`, or every one when `all`.
    #[serde(rename_all = "camelCase")]
    Read {
        ids: Vec<String>,
        all: bool,
        unread_count: u64,
    },
    /// A client message was refused; the connection stays open.
    Error { message: String },
}

/// What a client may send on the notification socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Marks one notification read (every connection of the user is told).
    MarkRead { id: String },
    /// Marks every notification read.
    MarkAllRead,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json_objects() {
        let read = ServerMessage::Read {
            ids: vec!["n1".into()],
            all: false,
            unread_count: 2,
        };
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::json!({"type": "read", "ids": ["n1"], "all": false, "unreadCount": 2})
        );
        let mark: ClientMessage =
            serde_json::from_str(r#"{"type":"mark_read","id":"n1"}"#).unwrap();
        assert_eq!(mark, ClientMessage::MarkRead { id: "n1".into() });
        let all: ClientMessage = serde_json::from_str(r#"{"type":"mark_all_read"}"#).unwrap();
        assert_eq!(all, ClientMessage::MarkAllRead);
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"delete"}"#).is_err());
    }
}
