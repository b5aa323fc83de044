//! Who may reach what over the sync socket: the token at upgrade, workspace membership per
//! document, viewers, live role changes and sign-outs, token expiry, and actor ids bound to
//! users.

use std::time::Duration;

use taskflow_proto::DocumentId;
use taskflow_sync_server::auth::tokens::{AUDIENCE, Claims, ISSUER, TokenKeys};
use taskflow_testkit::{Account, Event, Peer};

use crate::support::{Backend, TestDb, TestServer, add_task, board, on_both_backends, task_titles};

on_both_backends!(
    outsiders_cannot_reach_another_workspaces_board,
    viewers_read_but_their_changes_are_refused,
    removal_and_downgrade_take_effect_on_live_connections,
    an_actor_id_belongs_to_the_first_user_who_used_it,
);

const SECRET: &str = "a test secret that is long enough to sign tokens";

/// A token signed with the server's own key, with claims of our choosing.
fn signed(account: &Account, aud: &str, exp_from_now: i64) -> String {
    let now = taskflow_sync_server::now_ms() / 1000;
    let session = account_session(account);
    TokenKeys::new(SECRET.as_bytes()).sign(&Claims {
        iss: ISSUER.into(),
        aud: aud.into(),
        sub: account.user_id.clone(),
        sid: session,
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now - 60,
        exp: now + exp_from_now,
    })
}

/// The session id inside the account's access token.
fn account_session(account: &Account) -> String {
    use base64::Engine;
    let payload = account.access_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["sid"].as_str().expect("sid").to_owned()
}

/// The test account's board (made by its peer `ann`, with one task "task 0") and `name`, with
/// `role` in the account's workspace, connected and holding the board.
async fn board_shared_with(
    server: &TestServer,
    name: &str,
    role: &str,
) -> (Peer, DocumentId, Account, Peer) {
    let account = Account::register(server.addr, name)
        .await
        .expect("register");
    server
        .account
        .add_member(&account, role)
        .await
        .expect("invite");
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Shared", 1)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");
    let mut peer = Peer::connect_as(&account, name).await.expect("join");
    peer.request(id).await.expect("request");
    peer.until_doc(id, |d| task_titles(d) == ["task 0"])
        .await
        .expect("the member reads the board");
    (ann, id, account, peer)
}

/// Connecting must fail at the upgrade, with 401.
async fn refused_at_upgrade(url: &str, what: &str) {
    let err = Peer::connect_raw(url, "intruder").await.expect_err(what);
    let cause = format!("{err:?}");
    assert!(cause.contains("401"), "{what}: {cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_wants_a_valid_live_token() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.jwt_secret = Some(SECRET.parse().expect("secret"));
    let server = TestServer::start(config).await;
    let account = &server.account;
    let bare = server.bare_url();

    let with = |token: &str| format!("{bare}?token={token}");
    refused_at_upgrade(&bare, "no token").await;
    refused_at_upgrade(&with(""), "an empty token").await;
    refused_at_upgrade(&with("not-a-jwt"), "garbage").await;

    let good = &account.access_token;
    let mut tampered = good.clone();
    tampered.insert(good.rfind('.').expect("signature") + 1, 'x');
    refused_at_upgrade(&with(&tampered), "a tampered signature").await;
    refused_at_upgrade(
        &with(&signed(account, "other-api", 600)),
        "the wrong audience",
    )
    .await;
    refused_at_upgrade(&with(&signed(account, AUDIENCE, -10)), "an expired token").await;
    let unsigned = {
        let mut parts = good.split('.');
        let _header = parts.next();
        let payload = parts.next().expect("payload");
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    refused_at_upgrade(&with(&unsigned), "alg none").await;

    // The real token works, until the session is signed out: then live connections end
    // (with their own close code) and new ones are refused.
    let mut live = Peer::connect_as(account, "live").await.expect("join");
    account.logout().await.expect("logout");
    while live
        .next_message(taskflow_testkit::DEFAULT_TIMEOUT)
        .await
        .expect("closes in time")
        .is_some()
    {}
    assert!(
        live.events.iter().any(|e| matches!(
            e,
            Event::Closed {
                code: Some(4002),
                ..
            }
        )),
        "{:?}",
        live.events
    );
    refused_at_upgrade(&with(good), "a signed-out token").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_connection_ends_it_with_4001() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.access_token_ttl = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let mut peer = server.peer("short-lived").await.expect("join");
    let id = peer.create(board("Brief", 1)).await.expect("create");
    peer.until_server_has(id)
        .await
        .expect("works while the token does");

    let (error, code) = peer.expect_error_and_close().await.expect("closed");
    assert_eq!(code, Some(4001));
    assert!(error.contains("expired"), "{error}");
    server.stop().await;
}

async fn outsiders_cannot_reach_another_workspaces_board(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let mut ann = server.peer("ann").await.expect("join");
    let id = ann.create(board("Private", 1)).await.expect("create");
    ann.until_server_has(id).await.expect("stored");
    let changes_before = server.store.change_count(&id).await.expect("count");

    let eve = Account::register(server.addr, "Eve").await.expect("eve");
    let mut snoop = Peer::connect_as(&eve, "eve").await.expect("eve joins");
    // Asking gets exactly what a board that does not exist gets.
    snoop.request(id).await.expect("request");
    snoop
        .run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
            p.replicas[&id].unavailable
        })
        .await
        .expect("doc-unavailable");
    let missing = DocumentId::random();
    snoop.request(missing).await.expect("request");
    snoop
        .run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
            p.replicas[&missing].unavailable
        })
        .await
        .expect("doc-unavailable");

    // Pushing changes into it, or presence, does nothing either.
    let mut forged = board("Forged", 0);
    add_task(&mut forged, "planted by eve");
    snoop
        .replicas
        .get_mut(&id)
        .expect("replica")
        .doc
        .merge(&mut forged.document().clone())
        .expect("merge");
    snoop.push(id, false).await.expect("push");
    snoop
        .send(&taskflow_proto::wire::Message::Ephemeral {
            sender_id: snoop.peer_id.clone(),
            target_id: snoop.server_peer.clone(),
            document_id: id,
            session_id: "eve".into(),
            count: 1,
            data: vec![1, 2, 3],
        })
        .await
        .expect("send");
    snoop
        .drain(Duration::from_millis(300))
        .await
        .expect("quiet");
    assert_eq!(
        server.store.change_count(&id).await.expect("count"),
        changes_before,
        "nothing of eve's stored"
    );
    ann.drain(Duration::from_millis(300)).await.expect("quiet");
    assert!(!task_titles(ann.doc(id)).contains(&"planted by eve".to_owned()));
    assert!(
        !ann.events
            .iter()
            .any(|e| matches!(e, Event::Ephemeral { .. })),
        "eve's presence is not relayed"
    );
    server.stop().await;
}

async fn viewers_read_but_their_changes_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    // A viewer reads the board.
    let (mut ann, id, _, mut vic) = board_shared_with(&server, "Vic", "viewer").await;
    let changes_before = server.store.change_count(&id).await.expect("count");

    vic.edit(id, |d| add_task(d, "by the viewer"))
        .await
        .expect("edit");
    vic.run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
        p.events
            .iter()
            .any(|e| matches!(e, Event::Error(m) if m.contains("viewers cannot change")))
    })
    .await
    .expect("a clear refusal");
    assert!(!vic.is_closed(), "refused, not disconnected");

    // Not stored, not relayed; and the viewer still gets everyone else's edits.
    ann.edit(id, |d| add_task(d, "by the owner"))
        .await
        .expect("edit");
    vic.until_doc(id, |d| task_titles(d).contains(&"by the owner".to_owned()))
        .await
        .expect("the viewer still follows the board");
    ann.until_server_has(id).await.expect("stored");
    assert_eq!(
        server.store.change_count(&id).await.expect("count"),
        changes_before + 1
    );
    assert!(!task_titles(ann.doc(id)).contains(&"by the viewer".to_owned()));
    server.stop().await;
}

async fn removal_and_downgrade_take_effect_on_live_connections(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let owner = &server.account;
    let (mut ann, id, bo_account, mut bo) = board_shared_with(&server, "Bo", "member").await;
    bo.edit(id, |d| add_task(d, "while a member"))
        .await
        .expect("edit");
    bo.until_server_has(id).await.expect("a member writes");

    // Made a viewer: the very next edit on the open connection is refused.
    owner
        .set_role(&bo_account, "viewer")
        .await
        .expect("downgrade");
    let changes = server.store.change_count(&id).await.expect("count");
    bo.edit(id, |d| add_task(d, "after the downgrade"))
        .await
        .expect("edit");
    bo.run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
        p.events.iter().any(|e| matches!(e, Event::Error(_)))
    })
    .await
    .expect("refused");
    assert_eq!(
        server.store.change_count(&id).await.expect("count"),
        changes
    );

    // Removed: told the board is unavailable, and sent nothing of it any more.
    owner.remove_member(&bo_account).await.expect("remove");
    bo.run_until(taskflow_testkit::DEFAULT_TIMEOUT, |p| {
        p.replicas[&id].unavailable
    })
    .await
    .expect("doc-unavailable on the live connection");
    ann.edit(id, |d| add_task(d, "after bo left"))
        .await
        .expect("edit");
    ann.until_server_has(id).await.expect("stored");
    bo.drain(Duration::from_millis(500)).await.expect("quiet");
    assert!(!task_titles(bo.doc(id)).contains(&"after bo left".to_owned()));
    bo.request(id).await.expect("ask again");
    bo.drain(Duration::from_millis(300)).await.expect("quiet");
    assert!(!task_titles(bo.doc(id)).contains(&"after bo left".to_owned()));
    server.stop().await;
}

async fn an_actor_id_belongs_to_the_first_user_who_used_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    // Mallory, a member, writes under Ann's actor id: refused and disconnected.
    let (ann, id, mallory_account, mut mallory) =
        board_shared_with(&server, "Mallory", "member").await;
    let ann_actor = ann.doc(id).get_actor().clone();
    let changes = server.store.change_count(&id).await.expect("count");
    let replica = mallory.replicas.get_mut(&id).expect("replica");
    replica.doc.set_actor(ann_actor);
    mallory
        .edit(id, |d| add_task(d, "in ann's name"))
        .await
        .expect("edit");
    let (error, code) = mallory.expect_error_and_close().await.expect("closed");
    assert_eq!(code, Some(1008), "{error}");
    assert!(error.contains("belongs to another user"), "{error}");
    assert_eq!(
        server.store.change_count(&id).await.expect("count"),
        changes
    );

    // Under an actor id of her own she writes as herself.
    let mut mallory = Peer::connect_as(&mallory_account, "mallory-2")
        .await
        .expect("join");
    mallory.request(id).await.expect("request");
    mallory
        .until_doc(id, |d| task_titles(d) == ["task 0"])
        .await
        .expect("reads");
    mallory
        .edit(id, |d| add_task(d, "by mallory"))
        .await
        .expect("edit");
    mallory.until_server_has(id).await.expect("accepted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_missing_and_bad_tokens() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.jwt_secret = Some(SECRET.parse().expect("secret"));
    let server = TestServer::start(config).await;
    let account = &server.account;
    let signed_out = Account::register(server.addr, "Gone")
        .await
        .expect("register");
    signed_out.logout().await.expect("logout");

    let good = &account.access_token;
    let mut tampered = good.clone();
    tampered.insert(good.rfind('.').expect("signature") + 1, 'x');
    let payload = good.split('.').nth(1).expect("payload");
    let bad_tokens = [
        ("no token", None),
        ("garbage", Some("not-a-jwt".to_owned())),
        ("tampered", Some(tampered)),
        ("wrong audience", Some(signed(account, "other-api", 600))),
        ("expired", Some(signed(account, AUDIENCE, -10))),
        (
            "alg none",
            Some(format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")),
        ),
        ("signed out", Some(signed_out.access_token.clone())),
    ];
    let http = reqwest::Client::new();
    let guarded = taskflow_sync_server::openapi::OPERATIONS
        .iter()
        .filter(|op| op.bearer);
    for op in guarded {
        let (method, path) = (op.method, op.path);
        let path = path
            .replace("{id}", &account.workspace_id)
            .replace("{user}", &account.user_id)
            .replace("{invitation}", "some-invitation");
        for (what, token) in &bad_tokens {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let mut request = http
                .request(method.clone(), format!("{}{path}", account.base))
                .json(&serde_json::json!({}));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("request");
            let status = response.status();
            let body: serde_json::Value = response.json().await.expect("problem JSON");
            assert_eq!(
                status,
                reqwest::StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}"
            );
            assert_eq!(
                body["type"], "/problems/unauthenticated",
                "{method} {path} with {what}"
            );
        }
    }
    server.stop().await;
}
