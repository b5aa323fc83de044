//! Taskflow's client library: offline-first board replicas that sync with a Taskflow server
//! (or any automerge-repo sync server).
//!
//! - [`Client`] is the handle UIs and the CLI use: open boards, make typed edits, watch
//!   [`ClientEvent`]s (board changes, sync status, presence, connection).
//! - [`account`]: register, sign in, refresh and sign out over the server's REST API.
//! - `engine`: the one task that owns the store, the replicas and the socket.
//! - [`store`]: the local replica store (SQLite in the data directory).
//! - `replica`: one board's document and what is stored and synced of it.
//! - [`changes`]: "what changed" notices from patches.
//! - [`presence`]: who else views a board, with expiry.
//! - [`notifications`]: the user's inbox over REST and the live [`NotificationStream`] (with
//!   the unread count).
//! - [`backoff`]: reconnect delays.

pub mod account;
pub mod backoff;
pub mod changes;
mod client;
mod engine;
pub mod notifications;
pub mod presence;
mod replica;
pub mod store;

pub use changes::{BoardChange, Origin, TaskChange};
pub use client::{
    BoardSummary, Client, ClientConfig, ClientError, ClientEvent, ConnectionState, Edit, Edited,
    ServerConfig, SyncStatus,
};
pub use notifications::{
    InboxPage, Notification, NotificationEvent, NotificationMarker, NotificationStream,
};
pub use presence::Viewer;
pub use taskflow_proto::board;
pub use taskflow_proto::{AutomergeUrl, DocumentId};
