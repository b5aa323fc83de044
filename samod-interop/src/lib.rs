//! Interop tests of Taskflow's sync server with `samod`, an independent Rust implementation of
//! automerge-repo. The tests live in `tests/it`; this crate has no code of its own, and is a
//! crate of its own so the core builds without samod and its WebSocket stack.
