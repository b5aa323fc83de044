//! Taskflow's shared language, spoken by the server and every client.
//!
//! - [`ids`]: document ids (base58check) and `automerge:` URLs, peer and storage ids.
//! - [`wire`]: the automerge-repo network protocol v1 messages and their CBOR codec.
//! - [`board`]: the board document schema, a typed read/write layer over Automerge.
//! - [`presence`]: who views which board and task, as `ephemeral` payloads.
//! - [`events`]: domain events in their CloudEvents envelope, and what a merge did to a task.
//! - [`notifications`]: a user's notifications, and the messages of the notification socket.
//! - [`deadlines`]: what a task's due date calls for (reminder, escalation) at a given time.
//!
//! This crate does no I/O: no sockets, files, clocks or threads. Time comes in as arguments.

pub mod board;
pub mod deadlines;
pub mod events;
pub mod ids;
pub mod notifications;
pub mod presence;
pub mod wire;

pub use ids::{AutomergeUrl, DocumentId, IdError, PeerId, StorageId};
pub use wire::{DecodeError, Message};
