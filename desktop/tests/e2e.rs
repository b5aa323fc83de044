//! The app end to end in a real window: the `taskflow-desktop` binary driven through
//! tauri-driver and WebKitWebDriver under Xvfb (all installed by scripts/services.sh), against a
//! real server. Signs in, adds a card while the server is down; once the server is back, a
//! second client (client-core, as on another device) gets the card, and the card that client
//! adds appears in the window without a reload; then the card panel's edits reach the server.
//! Screenshots of the board go to `$CARGO_TARGET_DIR/desktop-e2e/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use taskflow_client_core::board::ColumnId;
use taskflow_client_core::board::ops::NewTask;
use taskflow_client_core::{ClientConfig, DocumentId, Edit, ServerConfig};
use taskflow_testkit::account::PASSWORD;
use taskflow_testkit::server::TestServer;
use tokio::process::{Child, Command};

/// A virtual X display of our own.
struct Xvfb {
    display: String,
    _child: Child,
}

impl Xvfb {
    async fn start() -> Xvfb {
        for number in 90..140 {
            if Path::new(&format!("/tmp/.X11-unix/X{number}")).exists() {
                continue;
            }
            let display = format!(":{number}");
            let child = Command::new("Xvfb")
                .args([
                    display.as_str(),
                    "-screen",
                    "0",
                    "1280x800x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("Xvfb (run scripts/services.sh)");
            for _ in 0..100 {
                if Path::new(&format!("/tmp/.X11-unix/X{number}")).exists() {
                    return Xvfb {
                        display,
                        _child: child,
                    };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("no X display could be started");
    }
}

/// tauri-driver, which starts the app (through WebKitWebDriver) for each WebDriver session.
struct Driver {
    port: u16,
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Driver {
    async fn start(display: &str, data_dir: &Path) -> Driver {
        // Where `cargo install` put it (scripts/services.sh).
        let cargo_home = std::env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo"));
        let binary = cargo_home.join("bin/tauri-driver");
        let (port, native) = (free_port(), free_port());
        let child = Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native.to_string(),
            ])
            .env("DISPLAY", display)
            .env("TASKFLOW_DESKTOP_DATA", data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} (run scripts/services.sh): {e}", binary.display()));
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Driver { port, child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tauri-driver did not listen");
    }

    async fn window(&self) -> Client {
        // Already installed when another test did (the error says so): fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = env!("CARGO_BIN_EXE_taskflow-desktop");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("tauri:options".into(), json!({ "application": app }));
        capabilities.insert("browserName".into(), json!("wry"));
        ClientBuilder::rustls()
            .expect("TLS for WebDriver")
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session: the app's window")
    }

    /// SIGTERM: tauri-driver then stops WebKitWebDriver too (SIGKILL would orphan it).
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

fn artifacts() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("desktop-e2e")
}

async fn screenshot(window: &Client, name: &str) {
    let png = window.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(artifacts()).expect("artifacts directory");
    std::fs::write(artifacts().join(format!("{name}.png")), png).expect("saved");
}

/// The element `css` once it is there (20 s at most).
async fn element(window: &Client, css: &str) -> fantoccini::elements::Element {
    match window
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            screenshot(window, "failed").await;
            panic!("`{css}` never appeared: {e}");
        }
    }
}

/// The text of `css` once `ready` holds for it (20 s at most).
async fn text_until(window: &Client, css: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = match window.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if ready(&text) {
            return text;
        }
        if tokio::time::Instant::now() > deadline {
            screenshot(window, "failed").await;
            panic!("`{css}` never got there; it says {text:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A second client of the same account, as on another device.
async fn second_device(
    account: &taskflow_testkit::Account,
    addr: std::net::SocketAddr,
    data_dir: &Path,
) -> taskflow_client_core::Client {
    let server = ServerConfig::new(&format!("ws://{addr}/api/v1/sync"))
        .expect("sync URL")
        .with_token(account.access_token.clone());
    taskflow_client_core::Client::open(ClientConfig {
        data_dir: data_dir.to_owned(),
        user: account.user_id.clone(),
        server: Some(server),
    })
    .await
    .expect("the second client opens")
}

/// The titles of the board's cards as `client` has them.
async fn titles(client: &taskflow_client_core::Client, board: DocumentId) -> Vec<String> {
    match client.board(board).await {
        Ok(board) => board.tasks.values().map(|t| t.title.clone()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_made_offline_reaches_the_server_and_others_edits_appear_live() {
    let server_dir = tempfile::tempdir().expect("dir");
    // This run's screenshots only.
    let _ = std::fs::remove_dir_all(artifacts());
    let server = TestServer::start(server_dir.path()).await;
    let ann = server.account.clone();
    let (project, document) = ann.project("Launch").await.expect("project");
    let data = tempfile::tempdir().expect("dir");
    let xvfb = Xvfb::start().await;
    let driver = Driver::start(&xvfb.display, data.path()).await;
    let window = driver.window().await;

    // Sign in.
    let field = |name: &str| format!("form.sign-in input[name={name}]");
    let server_field = element(&window, &field("server")).await;
    server_field.clear().await.expect("clear");
    server_field
        .send_keys(&format!("http://{}", server.addr))
        .await
        .expect("typed");
    let email = element(&window, &field("email")).await;
    email.send_keys(&ann.email).await.expect("typed");
    let password = element(&window, &field("password")).await;
    password.send_keys(PASSWORD).await.expect("typed");
    element(&window, "form.sign-in button[type=submit]")
        .await
        .click()
        .await
        .expect("signed in");
    text_until(&window, ".board-name", |t| t == "Launch").await;
    text_until(&window, "[data-testid=sync-status]", |t| t == "Synced").await;
    screenshot(&window, "1-signed-in").await;

    // `?` lists the keyboard shortcuts; Escape closes the list.
    element(&window, "body")
        .await
        .send_keys("?")
        .await
        .expect("typed");
    text_until(&window, ".dialog h3", |t| t == "Keyboard shortcuts").await;
    let escape = char::from(fantoccini::key::Key::Escape).to_string();
    element(&window, "body")
        .await
        .send_keys(&escape)
        .await
        .expect("typed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while window.find(Locator::Css(".dialog")).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shortcuts stayed open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The server stops; a card is made anyway, and waits.
    let addr = server.addr;
    server.crash();
    let add = element(&window, "[data-testid=column-todo] .add-card").await;
    let enter = char::from(fantoccini::key::Key::Enter);
    add.send_keys(&format!("Made offline{enter}"))
        .await
        .expect("typed");
    text_until(&window, "[data-testid=column-todo] .card .title", |t| {
        t == "Made offline"
    })
    .await;
    text_until(&window, "[data-testid=sync-status]", |t| {
        t.starts_with("Offline · 1 change")
    })
    .await;
    screenshot(&window, "2-offline-with-a-pending-card").await;

    // Back: a second client gets the card from the server, and the card it adds shows in the
    // window without a reload.
    let server = TestServer::start_on(server_dir.path(), addr).await;
    let ann = ann.at(server.addr);
    text_until(&window, "[data-testid=sync-status]", |t| t == "Synced").await;
    let second_dir = tempfile::tempdir().expect("dir");
    let second = second_device(&ann, server.addr, second_dir.path()).await;
    second.fetch(document).await.expect("fetched");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while titles(&second, document).await != ["Made offline"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second client never got the card"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut teammate = NewTask::titled("From a teammate", ann.user_id.clone());
    teammate.column = Some(ColumnId::new("doing"));
    second
        .edit(document, Edit::AddTask(teammate))
        .await
        .expect("added on the second client");
    text_until(&window, "[data-testid=column-doing] .card .title", |t| {
        t == "From a teammate"
    })
    .await;
    screenshot(&window, "3-synced-with-a-teammates-card").await;

    // The card's panel: a priority and a comment, which reach the server too.
    element(&window, "[data-testid=column-todo] .card")
        .await
        .click()
        .await
        .expect("opened");
    element(&window, ".panel.shown select[name=priority]")
        .await
        .select_by_value("high")
        .await
        .expect("chosen");
    element(&window, ".panel.shown textarea[name=comment]")
        .await
        .send_keys("Ready for review")
        .await
        .expect("typed");
    element(&window, ".panel.shown .comments button")
        .await
        .click()
        .await
        .expect("sent");
    text_until(&window, ".panel.shown .comments h4", |t| {
        t == "Comments (1)"
    })
    .await;
    screenshot(&window, "4-card-panel").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page: Value = ann
            .get(&format!("/api/v1/projects/{project}/tasks"))
            .await
            .expect("tasks");
        let card = page["tasks"]
            .as_array()
            .and_then(|tasks| tasks.iter().find(|t| t["title"] == "Made offline").cloned());
        if card
            .as_ref()
            .is_some_and(|c| c["priority"] == "high" && c["commentCount"] == 1)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the panel's edits never reached the server: {card:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    window.close().await.expect("closed");
    driver.stop().await;
    second.shutdown().await;
    server.crash();
}
