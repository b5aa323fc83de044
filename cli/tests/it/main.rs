//! The `taskflow` binary end to end, as a user or a script runs it.

mod account;
mod crash;
mod notifications;
mod session;
mod support;
