//! Integration tests of the sync server, on both storage backends, with real peers.

mod support;

mod access;
mod auth;
mod bad_input;
mod cluster;
mod crash;
mod deadlines;
mod deploy;
mod email;
mod events;
mod faults;
mod fuzz;
mod grpc;
mod http;
mod interop_js;
#[cfg(feature = "kafka")]
mod kafka;
mod limits;
mod notifications;
mod observability;
mod recurrences;
mod redis;
mod store;
mod sync;
mod tasks;
#[cfg(feature = "temporal")]
mod temporal;
mod webhooks;
mod workspaces;
