//! `/api/v1/auth`: accounts, sessions and tokens on both backends, through real HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, ServerProcess, TestDb, TestServer, on_both_backends};

on_both_backends!(
    register_login_me_and_bad_input,
    refresh_rotates_and_reuse_ends_the_session,
    logout_ends_the_tokens_even_across_a_restart,
    brute_force_logins_hit_the_rate_limits,
);

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &TestServer) -> Api {
        Api::at(server.addr)
    }

    fn at(addr: std::net::SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}/api/v1/auth"),
            http: reqwest::Client::new(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        read(response).await
    }

    async fn with_token(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}/{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    async fn me(&self, token: Option<&str>) -> (StatusCode, Value) {
        self.with_token(reqwest::Method::GET, "me", token).await
    }

    async fn register(&self, email: &str) -> Value {
        let (status, body) = self
            .post(
                "register",
                json!({ "email": email, "name": "Ann", "password": "a long enough password" }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let problem = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let text = response.text().await.expect("body");
    if !status.is_success() {
        assert!(problem, "errors are problem+json: {status} {text}");
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn token(body: &Value, field: &str) -> String {
    body[field].as_str().expect(field).to_owned()
}

async fn register_login_me_and_bad_input(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let api = Api::new(&server);

    let registered = api.register("  Ann@Example.com ").await;
    assert_eq!(registered["user"]["email"], "ann@example.com");
    assert_eq!(registered["tokenType"], "Bearer");
    let (status, me) = api.me(Some(&token(&registered, "accessToken"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "ann@example.com");
    assert_eq!(me["name"], "Ann");

    let (status, body) = api
        .post(
            "login",
            json!({ "email": "ann@example.com", "password": "a long enough password" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        api.me(Some(&token(&body, "accessToken"))).await.0,
        StatusCode::OK
    );

    // Wrong password and unknown account look the same.
    for (email, password) in [
        ("ann@example.com", "not the password"),
        ("bob@example.com", "a long enough password"),
    ] {
        let (status, body) = api
            .post("login", json!({ "email": email, "password": password }))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["type"], "/problems/invalid-credentials");
    }
    let (status, body) = api
        .post(
            "register",
            json!({ "email": "ann@example.com", "name": "A", "password": "another long password" }),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (StatusCode::CONFLICT, Some("/problems/email-taken"))
    );
    for bad in [
        json!({ "email": "not-an-email", "name": "A", "password": "a long enough password" }),
        json!({ "email": "cat@example.com", "name": "A", "password": "short" }),
        json!({ "email": "cat@example.com", "name": " ", "password": "a long enough password" }),
    ] {
        let (status, body) = api.post("register", bad).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("/problems/invalid-input")
            )
        );
    }
    let (status, body) = api.post("register", json!({ "email": "cat@example.com", "name": "A", "password": "a long enough password", "admin": true })).await;
    assert!(status.is_client_error());
    assert_eq!(body["type"], "/problems/invalid-body");

    // No token, or a made-up one.
    for t in [
        None,
        Some("garbage"),
        Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."),
    ] {
        let (status, body) = api.me(t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{t:?}");
        assert_eq!(body["type"], "/problems/unauthenticated");
    }
    server.stop().await;
}

async fn refresh_rotates_and_reuse_ends_the_session(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let api = Api::new(&server);
    let first = api.register("ann@example.com").await;
    let other_session = api
        .post(
            "login",
            json!({ "email": "ann@example.com", "password": "a long enough password" }),
        )
        .await
        .1;

    let (status, second) = api
        .post(
            "refresh",
            json!({ "refreshToken": token(&first, "refreshToken") }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(
        token(&second, "refreshToken"),
        token(&first, "refreshToken")
    );
    assert_eq!(
        api.me(Some(&token(&second, "accessToken"))).await.0,
        StatusCode::OK
    );

    // The spent token comes back (stolen?): the whole family ends, including the newest pair.
    let (status, body) = api
        .post(
            "refresh",
            json!({ "refreshToken": token(&first, "refreshToken") }),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("/problems/refresh-token-reused")
        )
    );
    let (status, body) = api
        .post(
            "refresh",
            json!({ "refreshToken": token(&second, "refreshToken") }),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("/problems/invalid-refresh-token")
        )
    );
    assert_eq!(
        api.me(Some(&token(&second, "accessToken"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Another login of the same user is its own session and lives on.
    assert_eq!(
        api.me(Some(&token(&other_session, "accessToken"))).await.0,
        StatusCode::OK
    );
    let (status, _) = api
        .post("refresh", json!({ "refreshToken": "never issued" }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

async fn logout_ends_the_tokens_even_across_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let api = Api::new(&server);
    let ann = api.register("ann@example.com").await;
    let bob = api.register("bob@example.com").await;
    let ann_access = token(&ann, "accessToken");

    let (status, _) = api
        .with_token(reqwest::Method::POST, "logout", Some(&ann_access))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.me(Some(&ann_access)).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .post(
            "refresh",
            json!({ "refreshToken": token(&ann, "refreshToken") }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;

    // After a restart: still logged out, and other tokens still valid (the signing secret is kept).
    let server = TestServer::start(db.config()).await;
    let api = Api::new(&server);
    assert_eq!(api.me(Some(&ann_access)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        api.me(Some(&token(&bob, "accessToken"))).await.0,
        StatusCode::OK
    );
    server.stop().await;
}

async fn brute_force_logins_hit_the_rate_limits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = TestServer::start(db.config()).await;
    let api = Api::new(&server);
    // Attempt 1 from this address was the test account's sign-up; this is attempt 2.
    api.register("ann@example.com").await;
    let wrong = json!({ "email": "ann@example.com", "password": "guess guess guess" });
    for _ in 0..5 {
        assert_eq!(
            api.post("login", wrong.clone()).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    // The account is out of attempts, even with the right password, for a while.
    let response = api
        .http
        .post(format!("{}/login", api.base))
        .json(&json!({ "email": "ann@example.com", "password": "a long enough password" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=12).contains(&retry), "{retry}");
    let (_, body) = read(response).await;
    assert_eq!(body["type"], "/problems/rate-limited");

    // The address runs out too, whichever accounts it tries (20 attempts, 8 used above).
    for i in 0..12 {
        let (status, _) = api
            .post(
                "login",
                json!({ "email": format!("u{i}@example.com"), "password": "x" }),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let (status, body) = api
        .post(
            "login",
            json!({ "email": "zed@example.com", "password": "x" }),
        )
        .await;
    assert_eq!(
        (status, body["type"].as_str()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            Some("/problems/rate-limited")
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_hash_token_or_secret_reaches_the_log() {
    let db = TestDb::new(Backend::Sqlite).await;
    let secret = "a signing secret that must never be logged 0123456789";
    let server = ServerProcess::start_with(&db, &["--log", "trace", "--jwt-secret", secret]).await;
    let api = Api::at(server.addr);
    let password = "my very secret password 42";
    let (status, registered) = api
        .post(
            "register",
            json!({ "email": "ann@example.com", "name": "Ann", "password": password }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, logged_in) = api
        .post(
            "login",
            json!({ "email": "ann@example.com", "password": password }),
        )
        .await;
    api.post(
        "login",
        json!({ "email": "ann@example.com", "password": "wrong password here" }),
    )
    .await;
    let (_, refreshed) = api
        .post(
            "refresh",
            json!({ "refreshToken": token(&logged_in, "refreshToken") }),
        )
        .await;
    // Reuse is logged (as a warning), the token itself must not be.
    api.post(
        "refresh",
        json!({ "refreshToken": token(&logged_in, "refreshToken") }),
    )
    .await;
    api.me(Some(&token(&registered, "accessToken"))).await;
    api.with_token(
        reqwest::Method::POST,
        "logout",
        Some(&token(&registered, "accessToken")),
    )
    .await;

    let log = server.log();
    assert!(
        log.contains("refresh token was presented again"),
        "the log is being captured"
    );
    let mut secrets = vec![
        password.to_owned(),
        "$argon2id$".to_owned(),
        secret.to_owned(),
    ];
    for body in [&registered, &logged_in, &refreshed] {
        secrets.push(token(body, "accessToken"));
        secrets.push(token(body, "refreshToken"));
    }
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "the log contains a secret ({} chars)",
            s.len()
        );
    }
    server.kill9().await;
}
