//! The internal gRPC services (`proto/grpc`, generated in `taskflow-grpc`) for Taskflow's other
//! services and workers. Identity: `VerifySession` checks a user's access token exactly as the
//! REST API does; `GetWorkspaceContext` gives a workspace's members and roles. Tasks:
//! `CreateTask` makes the task of one run of a recurrence rule (idempotent per run).
//!
//! Served on its own address (`--grpc-listen`), never the public one, and every call must carry
//! the deployment's internal token (`authorization: Bearer …`), since these answers are about
//! any user and any workspace.
//!
//! `AdvanceDeadline` does what a task's deadline calls for (the Temporal workflow's activity),
//! exactly as the embedded scheduler would, once per due date.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use taskflow_grpc::identity::identity_server::{Identity, IdentityServer};
use taskflow_grpc::identity::{
    GetWorkspaceContextRequest, Member, Role as WireRole, User, VerifySessionRequest,
    VerifySessionResponse, WorkspaceContext,
};
use taskflow_grpc::tasks::tasks_server::{Tasks, TasksServer};
use taskflow_grpc::tasks::{
    AdvanceDeadlineRequest, AdvanceDeadlineResponse, CreateTaskRequest, CreateTaskResponse,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::access::Role;
use crate::auth::AuthError;
use crate::config::Secret;
use crate::recurrences::RunError;
use crate::server::Shared;
use crate::store::StoreError;

/// How far ahead of this server's clock a worker's decision time may be.
const MAX_CLOCK_SKEW_MS: i64 = 10 * 60 * 1000;

/// The internal token callers must present, kept as its SHA-256: comparing digests does not
/// reveal the token by timing.
#[derive(Clone)]
pub struct InternalToken([u8; 32]);

impl InternalToken {
    pub fn new(token: &Secret) -> InternalToken {
        InternalToken(Sha256::digest(token.0.as_bytes()).into())
    }

    /// Lets through only callers that present the internal token.
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated(
                    "internal calls carry `authorization: Bearer <internal token>`",
                )
            })?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if digest != self.0 {
            return Err(Status::unauthenticated("wrong internal token"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(…)")
    }
}

#[derive(Debug)]
pub struct IdentityService {
    shared: Arc<Shared>,
    caller: InternalToken,
}

impl IdentityService {
    pub fn new(shared: Arc<Shared>, caller: InternalToken) -> IdentityService {
        IdentityService { shared, caller }
    }
}

fn store_failed(e: StoreError) -> Status {
    tracing::error!(error = %e, "gRPC: storage failed");
    Status::internal("storage failed; try again")
}

fn wire_role(role: Role) -> WireRole {
    match role {
        Role::Viewer => WireRole::Viewer,
        Role::Member => WireRole::Member,
        Role::Admin => WireRole::Admin,
        Role::Owner => WireRole::Owner,
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn verify_session(
        &self,
        request: Request<VerifySessionRequest>,
    ) -> Result<Response<VerifySessionResponse>, Status> {
        self.caller.check(&request)?;
        let token = request.into_inner().access_token;
        let identity = &self.shared.identity;
        let user = identity.authenticate(&token).await.map_err(|e| match e {
            AuthError::Store(e) => store_failed(e),
            other => Status::unauthenticated(other.to_string()),
        })?;
        let row = identity
            .store()
            .user_by_id(&user.user_id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| Status::unauthenticated("the account no longer exists"))?;
        Ok(Response::new(VerifySessionResponse {
            user: Some(User {
                id: row.id,
                email: row.email,
                name: row.name,
            }),
            session_id: user.session_id,
            expires_at: user.expires_at,
        }))
    }

    async fn get_workspace_context(
        &self,
        request: Request<GetWorkspaceContextRequest>,
    ) -> Result<Response<WorkspaceContext>, Status> {
        self.caller.check(&request)?;
        let id = request.into_inner().workspace_id;
        let store = self.shared.identity.store();
        let workspace = store
            .workspace(&id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| Status::not_found(format!("no workspace {id}")))?;
        let members = store.members(&id).await.map_err(store_failed)?;
        Ok(Response::new(WorkspaceContext {
            id: workspace.id,
            name: workspace.name,
            members: members
                .into_iter()
                .map(|m| Member {
                    user: Some(User {
                        id: m.user_id,
                        email: m.email,
                        name: m.name,
                    }),
                    role: wire_role(m.role).into(),
                })
                .collect(),
        }))
    }
}

/// The calls of the workflow workers: `CreateTask` (the run of a recurrence rule) and
/// `AdvanceDeadline`.
#[derive(Debug)]
pub struct TasksService {
    shared: Arc<Shared>,
    caller: InternalToken,
}

impl TasksService {
    pub fn new(shared: Arc<Shared>, caller: InternalToken) -> TasksService {
        TasksService { shared, caller }
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create_task(
        &self,
        request: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        self.caller.check(&request)?;
        let CreateTaskRequest {
            recurrence_id,
            scheduled_at_ms,
        } = request.into_inner();
        let store = self.shared.identity.store();
        let rule = store
            .recurrence(&recurrence_id)
            .await
            .map_err(store_failed)?
            .ok_or_else(|| Status::not_found(format!("no recurrence {recurrence_id}")))?;
        if !rule.enabled {
            return Err(Status::failed_precondition("the recurrence is turned off"));
        }
        let schedule = crate::recurrences::Schedule::parse(&rule.cron, &rule.timezone)
            .map_err(Status::failed_precondition)?;
        if !schedule.is_run(scheduled_at_ms) {
            return Err(Status::invalid_argument(
                "scheduled_at_ms is not a run of the recurrence's schedule",
            ));
        }
        match crate::recurrences::make_task(&self.shared, &rule, scheduled_at_ms).await {
            Ok((task, created)) => {
                let next = schedule.next_after(scheduled_at_ms);
                store
                    .record_recurrence_run(&rule.id, scheduled_at_ms, next)
                    .await
                    .map_err(store_failed)?;
                Ok(Response::new(CreateTaskResponse {
                    task_id: task.to_string(),
                    project_id: rule.project_id,
                    created,
                }))
            }
            Err(RunError::Disable(reason)) => {
                store
                    .disable_recurrence(&rule.id, &reason)
                    .await
                    .map_err(store_failed)?;
                // Its Schedule goes.
                self.shared.recurrences_wake.notify_one();
                Err(Status::failed_precondition(reason))
            }
            Err(RunError::Retry(reason)) => Err(Status::unavailable(reason)),
        }
    }

    async fn advance_deadline(
        &self,
        request: Request<AdvanceDeadlineRequest>,
    ) -> Result<Response<AdvanceDeadlineResponse>, Status> {
        self.caller.check(&request)?;
        let AdvanceDeadlineRequest {
            project_id,
            task_id,
            at_ms,
        } = request.into_inner();
        let now = crate::now_ms();
        if at_ms > now + MAX_CLOCK_SKEW_MS {
            return Err(Status::invalid_argument(
                "at_ms is more than ten minutes ahead of the server's clock",
            ));
        }
        // The caller's time when it is ahead of this clock: a timer that fired is not early.
        let at = at_ms.max(now);
        let shared = &self.shared;
        let mut known = None;
        let advance = shared
            .identity
            .store()
            .advance_deadline(
                &project_id,
                &task_id,
                shared.deadlines.remind_before_ms(),
                at,
                |row| {
                    known = Some(crate::deadlines::state(row));
                    crate::deadlines::decide(row, at)
                },
            )
            .await
            .map_err(store_failed)?
            .ok_or_else(|| {
                Status::not_found(format!("no deadline on record for task {task_id}"))
            })?;
        if !advance.events.is_empty() {
            shared.signals.events_written();
        }
        let (deadline, mut done) = known.ok_or_else(|| Status::internal("no decision was made"))?;
        if advance.reminded {
            done.reminded_for = deadline.due;
        }
        if advance.escalated {
            done.escalated_for = deadline.due;
        }
        Ok(Response::new(AdvanceDeadlineResponse {
            reminded: advance.reminded,
            escalated: advance.escalated,
            due_at_ms: deadline.due,
            finished: deadline.finished,
            remind_before_ms: deadline.remind_before,
            reminded_for_ms: done.reminded_for,
            escalated_for_ms: done.escalated_for,
        }))
    }
}

/// Serves the internal services on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    caller: InternalToken,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(
            shared.clone(),
            caller.clone(),
        )))
        .add_service(TasksServer::new(TasksService::new(shared, caller)))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop)
        .await?;
    Ok(())
}
