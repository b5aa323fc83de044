//! Our sync server for client tests: in the test process, on its own runtime and thread, so a
//! test can crash it (every task and socket dropped at once, nothing flushed, as a kill -9 would)
//! and start it again on the same port and data directory. Each data directory has one test
//! [`Account`] (kept in it, so it outlives restarts); [`TestServer::url`] carries its token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use taskflow_proto::DocumentId;
use taskflow_sync_server::{Config, Server};

use crate::Account;
use tokio::sync::oneshot;

#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub account: Account,
    pub data_dir: PathBuf,
    crash: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts an embedded-mode (SQLite) server on a free loopback port.
    pub async fn start(data_dir: &Path) -> TestServer {
        Self::start_on(data_dir, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on a given address (to come back where clients expect it after a crash).
    pub async fn start_on(data_dir: &Path, addr: SocketAddr) -> TestServer {
        Self::start_configured(data_dir, addr, |_| {}).await
    }

    /// Starts on `addr` with the configuration changed by `tune` (e.g. short-lived tokens).
    pub async fn start_configured(
        data_dir: &Path,
        addr: SocketAddr,
        tune: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config::for_data_dir(data_dir);
        config.listen = addr;
        tune(&mut config);
        let (ready, listening) = oneshot::channel();
        let (crash, crashed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let server = Server::open(&config).await.expect("server opens");
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .expect("bind");
                let _ = ready.send(listener.local_addr().expect("address"));
                tokio::spawn(server.serve(listener, std::future::pending()));
                let _ = crashed.await;
            });
            // Drops every task mid-flight: sockets close without a goodbye.
            runtime.shutdown_background();
        });
        let addr = listening.await.expect("server started");
        TestServer {
            addr,
            account: account_of(data_dir, addr).await,
            data_dir: data_dir.to_owned(),
            crash: Some(crash),
            thread: Some(thread),
        }
    }

    /// The sync URL with the test account's token in its query.
    pub fn url(&self) -> String {
        self.account.sync_url()
    }

    /// The sync URL without a token.
    pub fn bare_url(&self) -> String {
        format!("ws://{}/api/v1/sync", self.addr)
    }

    /// Registers a new board id in the test account's workspace: what a client creates its
    /// board under so that the server accepts it.
    pub async fn register_board(&self, name: &str) -> DocumentId {
        let id = DocumentId::random();
        self.account
            .register_document(id, name)
            .await
            .expect("register the board");
        id
    }

    /// Stops the server abruptly; returns once its runtime is gone.
    pub fn crash(mut self) {
        self.crash_now();
    }

    /// Crashes and starts again on the same address and data directory.
    pub async fn restart(mut self) -> TestServer {
        self.crash_now();
        Self::start_on(&self.data_dir, self.addr).await
    }

    fn crash_now(&mut self) {
        if let Some(crash) = self.crash.take() {
            let _ = crash.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The data directory's test account, registered on its first server.
async fn account_of(data_dir: &Path, addr: SocketAddr) -> Account {
    let file = data_dir.join("test-account.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let account: Account = serde_json::from_str(&text).expect("test account file");
        return account.at(addr);
    }
    let account = Account::register(addr, "Tess Tester")
        .await
        .expect("register the test account");
    let text = serde_json::to_string(&account).expect("account JSON");
    std::fs::write(&file, text).expect("write the test account");
    account
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.crash_now();
    }
}
