//! The internal gRPC services (`proto/grpc`, generated in `taskflow-grpc`): identity for
//! Taskflow's other services and workers. `VerifySession` checks a user's access token exactly
//! as the REST API does; `GetWorkspaceContext` gives a workspace's members and roles.
//!
//! Served on its own address (`--grpc-listen`), never the public one, and every call must carry
//! the deployment's internal token (`authorization: Bearer …`), since these answers are about
//! any user and any workspace.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use taskflow_grpc::identity::identity_server::{Identity, IdentityServer};
use taskflow_grpc::identity::{
    GetWorkspaceContextRequest, Member, Role as WireRole, User, VerifySessionRequest,
    VerifySessionResponse, WorkspaceContext,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::access::Role;
use crate::auth::AuthError;
use crate::config::Secret;
use crate::server::Shared;
use crate::store::StoreError;

pub struct IdentityService {
    shared: Arc<Shared>,
    /// SHA-256 of the internal token: comparing digests does not reveal the token by timing.
    caller_token: [u8; 32],
}

impl IdentityService {
    pub fn new(shared: Arc<Shared>, internal_token: &Secret) -> IdentityService {
        IdentityService {
            shared,
            caller_token: Sha256::digest(internal_token.0.as_bytes()).into(),
        }
    }

    /// Lets through only callers that present the internal token.
    fn check_caller<T>(&self, request: &Request<T>) -> Result<(), Status> {
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
        if digest != self.caller_token {
            return Err(Status::unauthenticated("wrong internal token"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService").finish_non_exhaustive()
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
        self.check_caller(&request)?;
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
        self.check_caller(&request)?;
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

/// Serves the internal services on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    service: IdentityService,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(service))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), stop)
        .await?;
    Ok(())
}
