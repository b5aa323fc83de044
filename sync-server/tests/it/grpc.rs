//! The internal gRPC services (identity, tasks and deadlines for workers), through the generated clients as another
//! service would call them.

use taskflow_grpc::identity::identity_client::IdentityClient;
use taskflow_grpc::identity::{GetWorkspaceContextRequest, Role, VerifySessionRequest};
use taskflow_testkit::Account;
use tonic::transport::Channel;
use tonic::{Code, Request};

use crate::support::{Backend, TestDb, TestServer, on_both_backends};

on_both_backends!(
    the_identity_service_answers_internal_callers_only,
    create_task_makes_a_recurrence_run_once,
    advance_deadline_fires_each_action_once,
);

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

/// A server with its internal gRPC address, and a channel to it.
async fn with_grpc(db: &TestDb) -> (TestServer, Channel) {
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
    (server, channel)
}

async fn the_identity_service_answers_internal_callers_only(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (server, channel) = with_grpc(&db).await;
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

async fn create_task_makes_a_recurrence_run_once(backend: Backend) {
    use reqwest::Method;
    use serde_json::{Value, json};
    use taskflow_grpc::tasks::CreateTaskRequest;
    use taskflow_grpc::tasks::tasks_client::TasksClient;

    use crate::events::rest;

    let db = TestDb::new(backend).await;
    let (server, channel) = with_grpc(&db).await;
    let mut client = TasksClient::new(channel);
    let owner = &server.account;
    let cy = Account::register(server.addr, "Cy").await.expect("cy");
    owner.add_member(&cy, "member").await.expect("join");
    let body = json!({ "workspaceId": owner.workspace_id, "name": "Runs" });
    let project = rest(owner, Method::POST, "/api/v1/projects", body).await;
    let project = project["id"].as_str().expect("id").to_owned();
    // Mondays at 09:00 UTC: the runs come from the caller (as from a Temporal schedule).
    let rule = json!({
        "cron": "0 9 * * MON",
        "template": { "title": "Report {date}", "assignees": ["me"] }
    });
    let rule = rest(
        &cy,
        Method::POST,
        &format!("/api/v1/projects/{project}/recurrences"),
        rule,
    )
    .await;
    let rule = rule["id"].as_str().expect("id").to_owned();
    let run = |recurrence: &str| CreateTaskRequest {
        recurrence_id: recurrence.to_owned(),
        scheduled_at_ms: 1_796_634_000_000, // Monday 2026-12-07 09:00 UTC
    };

    let first = client
        .create_task(call(run(&rule), Some(INTERNAL_TOKEN)))
        .await
        .expect("made")
        .into_inner();
    assert!(first.created);
    assert_eq!(first.project_id, project);
    let again = client
        .create_task(call(run(&rule), Some(INTERNAL_TOKEN)))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(
        (again.task_id.as_str(), again.created),
        (first.task_id.as_str(), false)
    );
    let task = rest(
        &cy,
        Method::GET,
        &format!("/api/v1/tasks/{}", first.task_id),
        Value::Null,
    )
    .await;
    assert_eq!(task["title"], "Report 2026-12-07");
    assert_eq!(task["assignees"], json!([cy.user_id]));
    let kept = rest(
        &cy,
        Method::GET,
        &format!("/api/v1/projects/{project}/recurrences/{rule}"),
        Value::Null,
    )
    .await;
    assert_eq!(kept["lastRunAt"], "2026-12-07T09:00:00Z");

    // Refused: without the token, an unknown rule, a time that is no run, a rule turned off,
    // and a rule whose author left (which turns it off).
    let refused = client
        .create_task(call(run(&rule), None))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let unknown = client
        .create_task(call(run("no-such-rule"), Some(INTERNAL_TOKEN)))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let mut tuesday = run(&rule);
    tuesday.scheduled_at_ms += 24 * 3_600_000;
    let not_a_run = client
        .create_task(call(tuesday, Some(INTERNAL_TOKEN)))
        .await
        .expect_err("not a run");
    assert_eq!(not_a_run.code(), Code::InvalidArgument);
    let path = format!("/api/v1/projects/{project}/recurrences/{rule}");
    rest(&cy, Method::PATCH, &path, json!({ "enabled": false })).await;
    let off = client
        .create_task(call(run(&rule), Some(INTERNAL_TOKEN)))
        .await
        .expect_err("off");
    assert_eq!(off.code(), Code::FailedPrecondition);
    rest(&cy, Method::PATCH, &path, json!({ "enabled": true })).await;
    owner.remove_member(&cy).await.expect("removed");
    let gone = client
        .create_task(call(run(&rule), Some(INTERNAL_TOKEN)))
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::FailedPrecondition, "{gone:?}");
    let off = rest(owner, Method::GET, &path, Value::Null).await;
    assert_eq!(
        off["disabledReason"],
        "its author may no longer add tasks to this project"
    );
    server.stop().await;
}

async fn advance_deadline_fires_each_action_once(backend: Backend) {
    use reqwest::Method;
    use serde_json::json;
    use taskflow_grpc::tasks::AdvanceDeadlineRequest;
    use taskflow_grpc::tasks::tasks_client::TasksClient;

    use crate::events::rest;

    let db = TestDb::new(backend).await;
    let (server, channel) = with_grpc(&db).await;
    let mut client = TasksClient::new(channel);
    let owner = &server.account;
    let body = json!({ "workspaceId": owner.workspace_id, "name": "Deadlines" });
    let project = rest(owner, Method::POST, "/api/v1/projects", body).await;
    let project = project["id"].as_str().expect("id").to_owned();
    // Due in five minutes: not overdue by the server's clock (the embedded scheduler may send
    // the reminder meanwhile), but by the caller's, which may run up to ten minutes ahead.
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(5);
    let due = due.round(jiff::Unit::Second).expect("rounds");
    let body = json!({ "projectId": project, "title": "Renew", "due": due.to_string() });
    let task = rest(owner, Method::POST, "/api/v1/tasks", body).await;
    let task = task["id"].as_str().expect("id").to_owned();
    // As a workflow whose timer fired past the due date would ask.
    let advance = |task: &str| AdvanceDeadlineRequest {
        project_id: project.clone(),
        task_id: task.to_owned(),
        at_ms: due.as_millisecond() + 1,
    };

    // Until the deadlines consumer has recorded the task, it is not known.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        match client
            .advance_deadline(call(advance(&task), Some(INTERNAL_TOKEN)))
            .await
        {
            Ok(answer) => break answer.into_inner(),
            Err(status) if status.code() == Code::NotFound => {
                assert!(tokio::time::Instant::now() < deadline, "never recorded");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    // Past due: escalated, without a reminder first; asked again (a retried activity): nothing.
    assert!(first.escalated && !first.reminded, "{first:?}");
    let again = client
        .advance_deadline(call(advance(&task), Some(INTERNAL_TOKEN)))
        .await
        .expect("answered")
        .into_inner();
    assert!(!again.escalated && !again.reminded, "{again:?}");
    // Published by the relay, once.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let overdue = loop {
        let events = server
            .store
            .published_events(0, 10_000)
            .await
            .expect("events");
        let overdue = events
            .iter()
            .filter(|e| e.event.key == task && e.event.kind == "task.overdue")
            .count();
        if overdue > 0 || tokio::time::Instant::now() > deadline {
            break overdue;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(overdue, 1);
    // A caller's clock an hour ahead is refused.
    let skewed = AdvanceDeadlineRequest {
        at_ms: due.as_millisecond() + 3_600_000,
        ..advance(&task)
    };
    let refused = client
        .advance_deadline(call(skewed, Some(INTERNAL_TOKEN)))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);

    let refused = client
        .advance_deadline(call(advance(&task), None))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let unknown = client
        .advance_deadline(call(advance("no-such-task"), Some(INTERNAL_TOKEN)))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}
