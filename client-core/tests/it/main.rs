//! client-core against real servers: ours (in-process, crashable) and the stock JS one.

mod account;
mod interop;
mod notifications;
mod offline;
mod presence;
mod support;
mod sync;
mod tls;
