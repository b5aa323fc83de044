//! The internal gRPC identity service, through the generated client as another service would
//! call it.

use taskflow_grpc::identity::identity_client::IdentityClient;
use taskflow_grpc::identity::{GetWorkspaceContextRequest, Role, VerifySessionRequest};
use taskflow_testkit::Account;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::{Backend, TestDb, TestServer, on_both_backends};

on_both_backends!(the_identity_service_answers_internal_callers_only);

const INTERNAL_TOKEN: &str = "an internal token for the services of this deployment";

fn call<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii metadata");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn verify(access_token: &str, caller: Option<&str>) -> Request<VerifySessionRequest> {
    call(
        VerifySessionRequest {
            access_token: access_token.to_owned(),
        },
        caller,
    )
}

async fn the_identity_service_answers_internal_callers_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    config.grpc_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.internal_token = Some(INTERNAL_TOKEN.parse().expect("token"));
    let server = TestServer::start(config).await;
    let addr = server.grpc_addr.expect("gRPC configured");
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut client = IdentityClient::new(channel);
    let owner = &server.account;
    let caller = Some(INTERNAL_TOKEN);

    // A user's token checks out as whom it stands for.
    let answer = client
        .verify_session(verify(&owner.access_token, caller))
        .await
        .expect("verified")
        .into_inner();
    let user = answer.user.expect("user");
    assert_eq!(
        (user.id.as_str(), user.email.as_str()),
        (owner.user_id.as_str(), owner.email.as_str())
    );
    assert!(!answer.session_id.is_empty());
    assert!(answer.expires_at > 0);

    // Not without the internal token, nor with another one.
    for bad_caller in [None, Some("a guess at the internal token, long enough")] {
        let refused = client
            .verify_session(verify(&owner.access_token, bad_caller))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }

    // Members and roles of a workspace.
    let vic = Account::register(server.addr, "Vic").await.expect("vic");
    owner.add_member(&vic, "viewer").await.expect("invite");
    let context = client
        .get_workspace_context(call(
            GetWorkspaceContextRequest {
                workspace_id: owner.workspace_id.clone(),
            },
            caller,
        ))
        .await
        .expect("context")
        .into_inner();
    assert_eq!(context.id, owner.workspace_id);
    let members: Vec<(String, Role)> = context
        .members
        .iter()
        .map(|m| (m.user.as_ref().expect("user").id.clone(), m.role()))
        .collect();
    assert_eq!(
        members,
        [
            (owner.user_id.clone(), Role::Owner),
            (vic.user_id.clone(), Role::Viewer)
        ]
    );
    let missing = client
        .get_workspace_context(call(
            GetWorkspaceContextRequest {
                workspace_id: "no-such-workspace".into(),
            },
            caller,
        ))
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);

    // Bad and signed-out tokens do not check out.
    let refused = client
        .verify_session(verify("not-a-token", caller))
        .await
        .expect_err("garbage");
    assert_eq!(refused.code(), Code::Unauthenticated);
    vic.logout().await.expect("logout");
    let refused = client
        .verify_session(verify(&vic.access_token, caller))
        .await
        .expect_err("signed out");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("ended"), "{}", refused.message());
    server.stop().await;
}
