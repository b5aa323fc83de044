//! Taskflow's internal gRPC services, generated from the `.proto` files in `proto/grpc`:
//!
//! - [`identity`] (`taskflow.identity.v1.Identity`): `VerifySession` and
//!   `GetWorkspaceContext`, served by the sync server for other services and workers.
//! - [`tasks`] (`taskflow.tasks.v1.Tasks`): `CreateTask`, the run of a recurrence rule, for
//!   the workflow workers.

#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod identity {
    tonic::include_proto!("taskflow.identity.v1");
}

pub mod tasks {
    tonic::include_proto!("taskflow.tasks.v1");
}
