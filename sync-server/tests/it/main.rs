//! Integration tests of the sync server, on both storage backends, with real peers.

mod support;

mod access;
mod auth;
mod bad_input;
mod crash;
mod deadlines;
mod email;
mod events;
mod fuzz;
mod grpc;
mod http;
mod interop_js;
#[cfg(feature = "kafka")]
mod kafka;
mod limits;
mod notifications;
mod recurrences;
mod redis;
mod sync;
mod tasks;
#[cfg(feature = "temporal")]
mod temporal;
mod webhooks;
mod workspaces;
