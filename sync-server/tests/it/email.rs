//! Notification and invitation emails through a real SMTP server on loopback (aiosmtpd, which
//! stores what it receives in a Maildir the tests read back), on both backends: content,
//! preferences, invitation tokens, and a mail server that is down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use taskflow_testkit::Account;
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::events::rest;
use crate::notifications::{Inbox, kinds_once, received, task_for};
use crate::support::{Backend, TestDb, TestServer, free_addr, on_both_backends, python};

on_both_backends!(
    notifications_are_mailed_as_text_and_html_as_preferences_say,
    an_invitation_mails_a_token_that_accepts_it,
    a_mail_server_that_is_down_delays_email_but_not_the_app,
);

const WAIT: Duration = Duration::from_secs(30);

/// An aiosmtpd SMTP server storing messages in a Maildir.
struct MailSink {
    addr: SocketAddr,
    dir: TempDir,
    _child: Child,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Mail {
    from: String,
    to: String,
    subject: String,
    text: String,
    html: String,
}

impl MailSink {
    async fn start_on(addr: SocketAddr) -> MailSink {
        let dir = TempDir::new().expect("temp dir");
        let child = Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &addr.to_string()])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("Maildir"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("run aiosmtpd from the venv: run scripts/services.sh");
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "aiosmtpd never listened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        MailSink {
            addr,
            dir,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message received so far, in delivery order.
    async fn mails(&self) -> Vec<Mail> {
        let maildir = self.dir.path().join("Maildir");
        if !maildir.join("new").exists() {
            return Vec::new();
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/read_maildir.py");
        let output = Command::new(python())
            .arg(script)
            .arg(maildir)
            .output()
            .await
            .expect("read the Maildir");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("mails as JSON")
    }

    /// Waits until `n` messages have arrived; they are returned.
    async fn until(&self, n: usize) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mails = self.mails().await;
            if mails.len() >= n {
                assert_eq!(mails.len(), n, "more mail than expected: {mails:#?}");
                return mails;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} mails never arrived; got {mails:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn mailing_config(db: &TestDb, smtp_url: String) -> taskflow_sync_server::Config {
    let mut config = db.config();
    config.smtp_url = Some(smtp_url);
    config.email_from = "Taskflow <notify@taskflow.test>".into();
    config.email_backoff = Duration::from_millis(200);
    config.email_attempts = 100;
    config.public_url = Some("https://tasks.example.test".into());
    config
}

/// The token in an invitation email.
fn mailed_token(mail: &Mail) -> String {
    mail.text
        .lines()
        .skip_while(|line| !line.contains("accept with this invitation token"))
        .nth(2)
        .expect("the token line")
        .trim()
        .to_owned()
}

/// Ann invites `account` into her workspace; answers the token she is given.
async fn invite(ann: &Account, account: &Account) -> String {
    let path = format!("/api/v1/workspaces/{}/invitations", ann.workspace_id);
    let body = json!({ "email": account.email, "role": "member" });
    let invitation = rest(ann, Method::POST, &path, body).await;
    invitation["token"].as_str().expect("token").to_owned()
}

async fn accept(account: &Account, token: &str) {
    let body = json!({ "token": token });
    rest(account, Method::POST, "/api/v1/invitations/accept", body).await;
}

/// Registers `name` and has them join Ann's workspace with the token mailed to them (the
/// `count`th email the sink receives).
async fn join_by_mail(server: &TestServer, sink: &MailSink, name: &str, count: usize) -> Account {
    let account = Account::register(server.addr, name)
        .await
        .expect("register");
    invite(&server.account, &account).await;
    let mail = sink.until(count).await.remove(count - 1);
    assert_eq!(mail.to, account.email);
    accept(&account, &mailed_token(&mail)).await;
    account
}

async fn preferences(account: &Account, changes: Value) -> Value {
    let body = json!({ "preferences": changes });
    rest(
        account,
        Method::PATCH,
        "/api/v1/notifications/preferences",
        body,
    )
    .await
}

async fn notifications_are_mailed_as_text_and_html_as_preferences_say(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start_on(free_addr()).await;
    let server = TestServer::start(mailing_config(&db, sink.url())).await;
    let bob = &join_by_mail(&server, &sink, "Bob", 1).await;
    let cy = &join_by_mail(&server, &sink, "Cy", 2).await;
    let ann = &server.account;

    // An assignment is mailed by default.
    let (_, task) = task_for(ann, "Ship <v2> & more", &[&bob.user_id]).await;
    let mail = sink.until(3).await.remove(2);
    assert_eq!(mail.from, "Taskflow <notify@taskflow.test>");
    assert_eq!(mail.to, bob.email);
    assert_eq!(
        mail.subject,
        "Tess Tester assigned you to “Ship <v2> & more”"
    );
    assert!(
        mail.text
            .starts_with("Hello Bob,\n\nTess Tester assigned you to “Ship <v2> & more”\n"),
        "{}",
        mail.text
    );
    assert!(
        mail.text
            .contains("Task: Ship <v2> & more (board “Ship <v2> & more”)"),
        "{}",
        mail.text
    );
    assert!(
        mail.text
            .contains("PATCH https://tasks.example.test/api/v1/notifications/preferences"),
        "{}",
        mail.text
    );
    assert!(
        mail.html
            .contains("assigned you to “Ship &lt;v2&gt; &amp; more”"),
        "{}",
        mail.html
    );
    assert!(!mail.html.contains("<v2>"), "{}", mail.html);

    // A comment is not mailed by default, a mention is: Bob (assignee) gets the comment in the
    // app only, Cy the mention by email too.
    let path = format!("/api/v1/tasks/{task}/comments");
    rest(
        ann,
        Method::POST,
        &path,
        json!({ "body": "@Cy can you\nreview this?" }),
    )
    .await;
    let mail = sink.until(4).await.remove(3);
    assert_eq!(
        (mail.to.as_str(), mail.subject.as_str()),
        (
            cy.email.as_str(),
            "Tess Tester mentioned you on “Ship <v2> & more”"
        )
    );
    assert!(
        mail.text.contains("\n> @Cy can you\n> review this?\n"),
        "{}",
        mail.text
    );
    assert_eq!(
        kinds_once(bob, 3).await[1..],
        ["task.assigned", "comment.added"]
    );

    // Bob wants assignments in the app only, and comments by email only.
    let chosen = preferences(
        bob,
        json!([
            { "kind": "task.assigned", "email": false },
            { "kind": "comment.added", "inApp": false, "email": true },
        ]),
    )
    .await;
    let of = |kind: &str| {
        chosen["preferences"]
            .as_array()
            .expect("preferences")
            .iter()
            .find(|p| p["kind"] == kind)
            .cloned()
            .expect("the kind is listed")
    };
    assert_eq!(
        (
            of("task.assigned")["inApp"].clone(),
            of("task.assigned")["email"].clone()
        ),
        (json!(true), json!(false))
    );
    assert_eq!(
        (
            of("comment.added")["inApp"].clone(),
            of("comment.added")["email"].clone()
        ),
        (json!(false), json!(true))
    );
    assert_eq!(
        of("comment.mentioned")["email"],
        true,
        "untouched kinds keep their defaults"
    );

    let (_, second) = task_for(ann, "Second", &[&bob.user_id]).await;
    rest(
        ann,
        Method::POST,
        &format!("/api/v1/tasks/{second}/comments"),
        json!({ "body": "hello" }),
    )
    .await;
    let mails = sink.until(5).await;
    assert_eq!(
        (mails[4].to.as_str(), mails[4].subject.as_str()),
        (bob.email.as_str(), "Tess Tester commented on “Second”")
    );
    // In the app: the second assignment, not the comment.
    assert_eq!(
        kinds_once(bob, 4).await[1..],
        ["task.assigned", "comment.added", "task.assigned"]
    );

    // What cannot be chosen is refused.
    for (changes, why) in [
        (
            json!([{ "kind": "invitation.received", "email": false }]),
            "invitations are always mailed",
        ),
        (
            json!([{ "kind": "task.exploded", "email": false }]),
            "unknown kind",
        ),
        (
            json!([{ "kind": "task.assigned", "sms": true }]),
            "unknown channel",
        ),
    ] {
        let response = bob
            .request(Method::PATCH, "/api/v1/notifications/preferences")
            .json(&json!({ "preferences": changes }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{why}");
    }
    server.stop().await;
}

async fn an_invitation_mails_a_token_that_accepts_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start_on(free_addr()).await;
    let server = TestServer::start(mailing_config(&db, sink.url())).await;
    let ann = &server.account;

    // Someone with no account yet.
    let email = format!("newcomer-{}@example.test", uuid::Uuid::new_v4().simple());
    let path = format!("/api/v1/workspaces/{}/invitations", ann.workspace_id);
    rest(
        ann,
        Method::POST,
        &path,
        json!({ "email": email, "role": "member" }),
    )
    .await;
    let mail = sink.until(1).await.remove(0);
    assert_eq!(mail.to, email);
    assert_eq!(
        mail.subject,
        "Tess Tester invited you to Tess Tester's workspace on Taskflow"
    );
    assert!(mail.text.contains("as member"), "{}", mail.text);
    let token = mailed_token(&mail);
    assert!(mail.html.contains(&token), "{}", mail.html);

    // They sign up with that address and accept with the mailed token.
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let signed_up: Value = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({ "email": email, "name": "Newcomer", "password": taskflow_testkit::account::PASSWORD }))
        .send()
        .await
        .expect("sign up")
        .json()
        .await
        .expect("tokens");
    let access = signed_up["accessToken"].as_str().expect("signed up");
    let accepted = http
        .post(format!("{base}/api/v1/invitations/accept"))
        .bearer_auth(access)
        .json(&json!({ "token": token }))
        .send()
        .await
        .expect("accept");
    assert_eq!(accepted.status(), StatusCode::OK);
    let workspace: Value = accepted.json().await.expect("workspace");
    assert_eq!(workspace["id"], ann.workspace_id.as_str());
    server.stop().await;
}

async fn a_mail_server_that_is_down_delays_email_but_not_the_app(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Until the mail server starts, something holds its port and hangs up on every
    // connection (so no other test takes the port meanwhile).
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = holder.local_addr().expect("addr");
    let hanging_up = tokio::spawn(async move {
        while let Ok((connection, _)) = holder.accept().await {
            drop(connection);
        }
    });
    let server = TestServer::start(mailing_config(&db, format!("smtp://{addr}"))).await;
    let ann = &server.account;
    // Bob joins with the token Ann was given; his invitation email waits for the mail server.
    let bob = &Account::register(server.addr, "Bob")
        .await
        .expect("register");
    let token = invite(ann, bob).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while server
        .store
        .emails_to(&bob.email)
        .await
        .expect("emails")
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the invitation was never queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    accept(bob, &token).await;
    let mut socket = Inbox::open(bob).await;
    socket.next().await;

    task_for(ann, "While mail is down", &[&bob.user_id]).await;
    let (notification, _) = received(socket.next().await);
    assert_eq!(notification.kind, "task.assigned");

    // The emails (Bob's invitation and the assignment) wait, tried again and again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queued = server.store.emails_to(&bob.email).await.expect("emails");
        assert_eq!(queued.len(), 2);
        if queued.iter().all(|e| e.attempts >= 2) {
            assert!(
                queued
                    .iter()
                    .all(|e| e.state == "pending" && e.last_error.is_some())
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the emails were never tried"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The mail server comes up: each email goes out, once.
    hanging_up.abort();
    let _ = hanging_up.await;
    let sink = MailSink::start_on(addr).await;
    let mut subjects: Vec<String> = sink.until(2).await.into_iter().map(|m| m.subject).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Tess Tester assigned you to “While mail is down”",
            "Tess Tester invited you to Tess Tester's workspace on Taskflow"
        ]
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let queued = server.store.emails_to(&bob.email).await.expect("emails");
        if queued.iter().all(|e| e.state == "sent") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the emails never counted as sent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}
