//! `/api/v1/workspaces`: roles and the "always an owner" rule, on both backends over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskflow_sync_server::access::Role;

use taskflow_proto::DocumentId;
use taskflow_proto::board::Board;
use taskflow_testkit::Peer;

use crate::support::{Backend, TestDb, TestServer, on_both_backends};

on_both_backends!(
    members_roles_and_the_last_owner,
    projects_and_their_boards,
    invitations_accept_decline_revoke,
);

struct User {
    base: String,
    http: reqwest::Client,
    token: String,
    id: String,
}

impl User {
    async fn register(server: &TestServer, email: &str) -> User {
        let base = format!("http://{}/api/v1", server.addr);
        let http = reqwest::Client::new();
        let body: Value = http
            .post(format!("{base}/auth/register"))
            .json(&json!({ "email": email, "name": email, "password": "a long enough password" }))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("json");
        User {
            token: body["accessToken"].as_str().expect("token").to_owned(),
            id: body["user"]["id"].as_str().expect("id").to_owned(),
            base,
            http,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn members_roles_and_the_last_owner(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = User::register(&server, "ann@example.com").await;
    let bob = User::register(&server, "bob@example.com").await;

    let (status, created) = ann
        .call(Method::POST, "workspaces", Some(json!({ "name": "Acme" })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["role"], "owner");
    let ws = created["id"].as_str().expect("id").to_owned();
    let (_, listed) = ann.call(Method::GET, "workspaces", None).await;
    assert_eq!(listed["workspaces"][0]["name"], "Acme");

    // Not a member: the workspace does not exist as far as Bob can tell.
    for path in [
        format!("workspaces/{ws}"),
        format!("workspaces/{ws}/members"),
    ] {
        let (status, body) = bob.call(Method::GET, &path, None).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (StatusCode::NOT_FOUND, Some("/problems/not-found"))
        );
    }
    assert_eq!(
        bob.call(Method::GET, "workspaces", None).await.1["workspaces"],
        json!([])
    );

    // Bob joins as a member (what accepting an invitation will do).
    assert!(
        server
            .store
            .add_member(&ws, &bob.id, Role::Member, 1)
            .await
            .expect("add")
    );
    assert_eq!(
        bob.call(Method::GET, &format!("workspaces/{ws}"), None)
            .await
            .1["role"],
        "member"
    );
    let ann_member = format!("workspaces/{ws}/members/{}", ann.id);
    let bob_member = format!("workspaces/{ws}/members/{}", bob.id);
    let (status, body) = bob
        .call(
            Method::PATCH,
            &ann_member,
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("/problems/forbidden"))
    );

    assert_eq!(
        ann.call(Method::PATCH, &bob_member, Some(json!({ "role": "admin" })))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    // An admin manages others but cannot make owners.
    assert_eq!(
        bob.call(Method::PATCH, &bob_member, Some(json!({ "role": "owner" })))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = ann
        .call(
            Method::PATCH,
            &bob_member,
            Some(json!({ "role": "superuser" })),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("/problems/invalid-input")
        )
    );

    // The only owner can neither leave nor step down.
    let (status, body) = ann
        .call(Method::POST, &format!("workspaces/{ws}/leave"), None)
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::CONFLICT, Some("/problems/last-owner"))
    );
    assert_eq!(
        ann.call(Method::PATCH, &ann_member, Some(json!({ "role": "admin" })))
            .await
            .0,
        StatusCode::CONFLICT
    );

    // Hand over, then leave.
    assert_eq!(
        ann.call(Method::PATCH, &bob_member, Some(json!({ "role": "owner" })))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ann.call(Method::POST, &format!("workspaces/{ws}/leave"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (_, members) = bob
        .call(Method::GET, &format!("workspaces/{ws}/members"), None)
        .await;
    assert_eq!(
        members["members"],
        json!([{ "userId": bob.id, "email": "bob@example.com", "name": "bob@example.com", "role": "owner" }])
    );
    assert_eq!(
        ann.call(Method::GET, &format!("workspaces/{ws}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        bob.call(Method::DELETE, &bob_member, None).await.0,
        StatusCode::CONFLICT,
        "last owner"
    );
    let (status, body) = bob.call(Method::DELETE, &ann_member, None).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("/problems/no-such-member"))
    );

    // Without a token nothing answers.
    let anonymous = reqwest::Client::new()
        .get(format!("http://{}/api/v1/workspaces", server.addr))
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn projects_and_their_boards(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = User::register(&server, "ann@example.com").await;
    let vic = User::register(&server, "vic@example.com").await;
    let eve = User::register(&server, "eve@example.com").await;
    let (_, ws) = ann
        .call(Method::POST, "workspaces", Some(json!({ "name": "Acme" })))
        .await;
    let ws = ws["id"].as_str().expect("id").to_owned();
    server
        .store
        .add_member(&ws, &vic.id, Role::Viewer, 1)
        .await
        .expect("add");

    let (status, project) = ann
        .call(
            Method::POST,
            "projects",
            Some(json!({ "workspaceId": ws, "name": "Launch" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    let id = project["id"].as_str().expect("id").to_owned();
    let document = project["documentId"].as_str().expect("document").to_owned();
    assert_eq!(project["url"], format!("automerge:{document}"));

    // Its board document exists and any sync client can open it.
    let document_id = DocumentId::parse(&document).expect("a document id");
    let url = format!("{}?token={}", server.bare_url(), ann.token);
    let mut peer = Peer::connect(&url, "reader").await.expect("join");
    peer.request(document_id).await.expect("request");
    peer.until_doc(document_id, |d| {
        Board::read(d).is_ok_and(|b| b.name == "Launch")
    })
    .await
    .expect("the board arrives");

    // A viewer reads but does not create or archive; an outsider sees nothing.
    assert_eq!(
        vic.call(Method::GET, &format!("projects/{id}"), None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = vic
        .call(
            Method::POST,
            "projects",
            Some(json!({ "workspaceId": ws, "name": "Mine" })),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("/problems/forbidden"))
    );
    assert_eq!(
        vic.call(Method::POST, &format!("projects/{id}/archive"), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        eve.call(Method::GET, &format!("projects/{id}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        eve.call(Method::GET, &format!("workspaces/{ws}/projects"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = eve
        .call(
            Method::POST,
            "projects",
            Some(json!({ "workspaceId": ws, "name": "Sneaky" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = ann
        .call(
            Method::POST,
            "projects",
            Some(json!({ "workspaceId": ws, "name": "" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, listed) = vic
        .call(Method::GET, &format!("workspaces/{ws}/projects"), None)
        .await;
    assert_eq!(listed["projects"][0]["id"], id.as_str());
    let (status, archived) = ann
        .call(Method::POST, &format!("projects/{id}/archive"), None)
        .await;
    assert_eq!(
        (status, archived["archived"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (_, listed) = ann
        .call(Method::GET, &format!("workspaces/{ws}/projects"), None)
        .await;
    assert_eq!(listed["projects"], json!([]));
    let (_, listed) = ann
        .call(
            Method::GET,
            &format!("workspaces/{ws}/projects?archived=true"),
            None,
        )
        .await;
    assert_eq!(listed["projects"][0]["archived"], true);
    server.stop().await;
}

async fn invitations_accept_decline_revoke(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let ann = User::register(&server, "ann@example.com").await;
    let bob = User::register(&server, "bob@example.com").await;
    let cat = User::register(&server, "cat@example.com").await;
    let (_, ws) = ann
        .call(Method::POST, "workspaces", Some(json!({ "name": "Acme" })))
        .await;
    let ws = ws["id"].as_str().expect("id").to_owned();
    let invite = |email: &str, role: &str| json!({ "email": email, "role": role });
    let path = format!("workspaces/{ws}/invitations");

    let (status, inv) = ann
        .call(
            Method::POST,
            &path,
            Some(invite("Bob@Example.com", "member")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    assert_eq!(inv["email"], "bob@example.com");
    let bob_token = inv["token"].as_str().expect("token").to_owned();
    let (_, open) = ann.call(Method::GET, &path, None).await;
    assert_eq!(open["invitations"][0]["email"], "bob@example.com");
    assert!(
        open["invitations"][0].get("token").is_none(),
        "tokens are shown once"
    );

    // Someone else cannot use Bob's invitation.
    let (status, _) = cat
        .call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": bob_token })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, joined) = bob
        .call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": bob_token })),
        )
        .await;
    assert_eq!(
        (status, joined["role"].as_str()),
        (StatusCode::OK, Some("member"))
    );
    let (status, body) = bob
        .call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": bob_token })),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::GONE, Some("/problems/invitation-closed"))
    );
    // Members do not invite.
    assert_eq!(
        bob.call(Method::POST, &path, Some(invite("x@example.com", "viewer")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Declined and revoked invitations cannot be accepted.
    let (_, inv) = ann
        .call(
            Method::POST,
            &path,
            Some(invite("cat@example.com", "viewer")),
        )
        .await;
    let cat_token = inv["token"].as_str().expect("token").to_owned();
    assert_eq!(
        cat.call(
            Method::POST,
            "invitations/decline",
            Some(json!({ "token": cat_token }))
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        cat.call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": cat_token }))
        )
        .await
        .0,
        StatusCode::GONE
    );
    let (_, inv) = ann
        .call(
            Method::POST,
            &path,
            Some(invite("cat@example.com", "viewer")),
        )
        .await;
    let again = inv["token"].as_str().expect("token").to_owned();
    let revoke = format!("{path}/{}", inv["id"].as_str().expect("id"));
    assert_eq!(
        ann.call(Method::DELETE, &revoke, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        ann.call(Method::DELETE, &revoke, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        cat.call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": again }))
        )
        .await
        .0,
        StatusCode::GONE
    );
    assert_eq!(
        cat.call(Method::GET, &format!("workspaces/{ws}"), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Bad input, and an admin may not hand out ownership.
    assert_eq!(
        ann.call(Method::POST, &path, Some(invite("nope", "member")))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        ann.call(Method::POST, &path, Some(invite("d@example.com", "king")))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let bob_member = format!("workspaces/{ws}/members/{}", bob.id);
    ann.call(Method::PATCH, &bob_member, Some(json!({ "role": "admin" })))
        .await;
    assert_eq!(
        bob.call(Method::POST, &path, Some(invite("d@example.com", "owner")))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        bob.call(Method::POST, &path, Some(invite("d@example.com", "admin")))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, _) = cat
        .call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": "never issued" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Invitations expire after `INVITATION_TTL`; here one is aged in the database, as a week
/// passing would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invitation_cannot_be_accepted() {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Postgres).await;
    let server = TestServer::start(db.config()).await;
    let ann = User::register(&server, "ann@example.com").await;
    let bob = User::register(&server, "bob@example.com").await;
    let (_, ws) = ann
        .call(Method::POST, "workspaces", Some(json!({ "name": "Acme" })))
        .await;
    let ws = ws["id"].as_str().expect("id").to_owned();
    let (_, invitation) = ann
        .call(
            Method::POST,
            &format!("workspaces/{ws}/invitations"),
            Some(json!({ "email": "bob@example.com", "role": "member" })),
        )
        .await;
    let token = invitation["token"].as_str().expect("token").to_owned();
    let url = db.database_url.as_deref().expect("PostgreSQL");
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query("UPDATE invitations SET expires_at = created_at - 1")
        .execute(&mut conn)
        .await
        .expect("age the invitation");

    let (status, body) = bob
        .call(
            Method::POST,
            "invitations/accept",
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::GONE, Some("/problems/invitation-closed")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{body}"
    );
    let (status, _) = bob
        .call(Method::GET, &format!("workspaces/{ws}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not a member");
    server.stop().await;
}

/// A board made on a device is registered under its own document id, once; an id already in
/// use (registered, or stored by the server) or not a document id is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_board_is_registered_under_a_fresh_id_only() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = TestServer::start(db.config()).await;
    let account = &server.account;
    let mine = DocumentId::random();
    account
        .register_document(mine, "From my laptop")
        .await
        .expect("a fresh id is accepted");
    let again = account
        .register_document(mine, "Twice")
        .await
        .expect_err("taken");
    assert!(again.to_string().contains("409"), "{again}");
    let made_by_server = account.board("Server-made").await.expect("board");
    let taken = account
        .register_document(made_by_server, "Hijack")
        .await
        .expect_err("stored already");
    assert!(
        taken.to_string().contains("/problems/document-taken"),
        "{taken}"
    );
    let body = serde_json::json!({ "workspaceId": account.workspace_id, "name": "Bad", "documentId": "nope" });
    let malformed = account
        .post("/api/v1/projects", body)
        .await
        .expect_err("not an id");
    assert!(malformed.to_string().contains("422"), "{malformed}");
    server.stop().await;
}
