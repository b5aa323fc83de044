//! Shared helpers: test databases (SQLite and PostgreSQL), in-process and subprocess servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use automerge::AutoCommit;
use taskflow_proto::board::ops::{self, NewTask};
use taskflow_sync_server::events::consume::Consumer;
use taskflow_sync_server::server::Shared;
use taskflow_sync_server::store::Store;
use taskflow_sync_server::{Config, Server};
use taskflow_testkit::{Account, Peer};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// Where the tests find PostgreSQL (scripts/services.sh makes sure one answers here).
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Where scripts/services.sh keeps its state (the Python virtualenv with the test tools).
pub fn state_dir() -> PathBuf {
    std::env::var("TASKFLOW_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/taskflow")
        })
}

/// The virtualenv's Python (tansu, confluent-kafka, aiosmtpd).
pub fn python() -> PathBuf {
    state_dir().join("venv/bin/python")
}

/// A loopback address nothing listens on yet.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
}

/// Reads with `read` every `every` until `ready` holds for what it read, and answers that;
/// fails the test with `what` and the last reading after 20 s.
pub async fn eventually<T: std::fmt::Debug>(
    what: &str,
    every: Duration,
    mut read: impl AsyncFnMut() -> T,
    ready: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = read().await;
        if ready(&now) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never happened: {now:?}"
        );
        tokio::time::sleep(every).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares `mod $name { sqlite, postgres }` running `$name(Backend)` on each backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use crate::support::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(Backend::Postgres).await;
                }
            }
        )*
    };
}
pub(crate) use on_both_backends;

/// A fresh, empty database for one test.
pub struct TestDb {
    pub dir: TempDir,
    pub database_url: Option<String>,
    /// The account the servers on this database are used as (made by the first one).
    account: std::sync::Mutex<Option<Account>>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(create_pg_database().await),
        };
        TestDb {
            dir,
            database_url,
            account: std::sync::Mutex::new(None),
        }
    }

    /// The database's test account, at the server listening on `addr` (registered there first
    /// if this database has none yet).
    async fn account_at(&self, addr: SocketAddr) -> Account {
        let known = self.account.lock().expect("account lock").clone();
        let account = match known {
            Some(account) => account.at(addr),
            None => Account::register(addr, "Tess Tester")
                .await
                .expect("register the test account"),
        };
        *self.account.lock().expect("account lock") = Some(account.clone());
        account
    }

    /// A database the test made itself (on a PostgreSQL of its own, say).
    pub fn at(database_url: String) -> TestDb {
        TestDb {
            dir: tempfile::tempdir().expect("temp dir"),
            database_url: Some(database_url),
            account: std::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> Config {
        let mut config = Config::for_data_dir(self.dir.path());
        config.database_url = self.database_url.clone();
        config
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

async fn create_pg_database() -> String {
    use sqlx::Connection;
    let admin =
        std::env::var("TASKFLOW_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (run scripts/services.sh): {e}"));
    let name = format!("taskflow_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("admin url has a database").0;
    format!("{base}/{name}")
}

/// A server running inside the test process, with a registered account to use it as.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The internal gRPC address, when configured.
    pub grpc_addr: Option<SocketAddr>,
    pub account: Account,
    pub shared: Arc<Shared>,
    pub store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        Self::start_as(config, None).await
    }

    /// Starts with `account` (from an earlier server on the same database) as the test account,
    /// or a newly registered one.
    pub async fn start_as(config: Config, account: Option<Account>) -> TestServer {
        Self::start_with(config, account, Vec::new()).await
    }

    /// Starts with extra consumers of the domain events.
    pub async fn start_with(
        config: Config,
        account: Option<Account>,
        consumers: Vec<Arc<dyn Consumer>>,
    ) -> TestServer {
        let mut server = Server::open(&config).await.expect("server opens");
        for consumer in consumers {
            server.add_consumer(consumer);
        }
        let grpc_addr = server.grpc_addr();
        let shared = server.shared().clone();
        let store = server.store().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        let account = match account {
            Some(account) => account.at(addr),
            None => Account::register(addr, "Tess Tester")
                .await
                .expect("register the test account"),
        };
        TestServer {
            addr,
            grpc_addr,
            account,
            shared,
            store,
            stop: Some(stop),
            task,
        }
    }

    /// The sync URL with the test account's token.
    pub fn url(&self) -> String {
        self.account.sync_url()
    }

    /// The sync URL without a token.
    pub fn bare_url(&self) -> String {
        format!("ws://{}/api/v1/sync", self.addr)
    }

    /// A peer joined as the test account.
    pub async fn peer(&self, name: &str) -> anyhow::Result<Peer> {
        Peer::connect_as(&self.account, name).await
    }

    /// Graceful stop; returns once the server has finished.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

/// The real `taskflow-server` binary in a child process (for kill -9 and signals).
pub struct ServerProcess {
    pub addr: SocketAddr,
    /// The database's test account (the same across restarts on one database).
    pub account: Account,
    /// Where the server's log (stderr) goes.
    pub log_path: PathBuf,
    child: Child,
}

impl ServerProcess {
    pub async fn start(db: &TestDb) -> ServerProcess {
        Self::start_with(db, &[]).await
    }

    /// Starts the server with extra command-line flags.
    pub async fn start_with(db: &TestDb, flags: &[&str]) -> ServerProcess {
        Self::start_with_env(db, flags, &[]).await
    }

    /// Starts the server with extra flags and environment variables.
    pub async fn start_with_env(
        db: &TestDb,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let log_path = db
            .data_dir()
            .join(format!("server-{}.log", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_taskflow-server"));
        command.args(flags);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(db.data_dir())
            .env_remove("DATABASE_URL")
            .env("TASKFLOW_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&log_path).expect("log file"),
            ))
            .kill_on_drop(true);
        if let Some(url) = &db.database_url {
            command.arg("--database-url").arg(url);
        }
        let mut child = command.spawn().expect("server binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr.parse().expect("address");
                }
            }
            panic!("server exited before listening");
        })
        .await
        .expect("server listens in time");
        ServerProcess {
            addr,
            account: db.account_at(addr).await,
            log_path,
            child,
        }
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A peer joined as the test account.
    pub async fn peer(&self, name: &str) -> anyhow::Result<Peer> {
        Peer::connect_as(&self.account, name).await
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }

    /// Sends SIGTERM and returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await
            .expect("kill -TERM");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("exit status")
    }
}

/// A board document with `tasks` tasks titled "task 0", "task 1", ….
pub fn board(name: &str, tasks: usize) -> AutoCommit {
    let mut doc = AutoCommit::new();
    ops::create_board(&mut doc, name).expect("create board");
    for i in 0..tasks {
        ops::add_task(&mut doc, NewTask::titled(format!("task {i}"), "ann"), 1).expect("add task");
    }
    doc.commit();
    doc
}

pub fn add_task(doc: &mut impl automerge::transaction::Transactable, title: &str) {
    ops::add_task(doc, NewTask::titled(title, "ann"), 2).expect("add task");
}

pub fn task_titles(doc: &automerge::Automerge) -> Vec<String> {
    match taskflow_proto::board::Board::read(doc) {
        Ok(board) => {
            let mut titles: Vec<String> = board.tasks.values().map(|t| t.title.clone()).collect();
            titles.sort();
            titles
        }
        Err(_) => Vec::new(),
    }
}

/// A Redis server of a test's own (the shared one stays up for the other tests), which the test
/// can stop and start again on the same port.
pub struct OwnRedis {
    pub port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        let port = free_addr().port();
        let mut redis = OwnRedis { port, child: None };
        redis.resume().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL): connections drop, nothing answers on the port.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("SIGKILL");
            child.wait().await.expect("reaped");
        }
    }

    /// Starts it again on the same port (empty: it keeps nothing on disk).
    pub async fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (scripts/services.sh installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not listen on {addr}");
    }
}

/// A PostgreSQL server of a test's own, in a temporary directory, which the test can stop
/// (as a crash: immediate shutdown) and start again. Runs as the `postgres` user, since
/// PostgreSQL refuses to run as root.
pub struct OwnPostgres {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

impl OwnPostgres {
    pub async fn start() -> OwnPostgres {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed (scripts/services.sh)")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|v| v.parse::<u32>().ok())
            .max()
            .expect("a PostgreSQL version");
        let bin = PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"));
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .await
            .expect("chown");
        assert!(chown.success());
        let port = free_addr().port();
        let pg = OwnPostgres { port, dir, bin };
        pg.as_postgres(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "postgres"],
        )
        .await;
        pg.resume().await;
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    async fn as_postgres(&self, tool: &str, args: &[&str]) {
        let output = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .await
            .expect("runuser");
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The URL of a fresh database on it.
    pub async fn database(&self) -> String {
        use sqlx::Connection;
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
        sqlx::query("CREATE DATABASE taskflow")
            .execute(&mut conn)
            .await
            .expect("create database");
        format!("postgres://postgres@127.0.0.1:{}/taskflow", self.port)
    }

    /// Stops it the way a crash would (immediate shutdown: no checkpoint, connections cut).
    pub async fn crash(&self) {
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "stop", "-m", "immediate", "-w"],
        )
        .await;
    }

    pub async fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                &log,
                "start",
                "-w",
            ],
        )
        .await;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "stop", "-m", "immediate"])
            .output();
    }
}

/// A client-core client of `account` (the desktop app's and the CLI's library) syncing through
/// `addr` (a node, or a balancer in front of nodes), with its replicas in `dir`.
pub async fn sync_client(
    dir: &TempDir,
    account: &Account,
    addr: SocketAddr,
) -> taskflow_client_core::Client {
    let server = taskflow_client_core::ServerConfig::new(&format!("ws://{addr}/api/v1/sync"))
        .expect("url")
        .with_token(account.access_token.clone());
    taskflow_client_core::Client::open(taskflow_client_core::ClientConfig {
        data_dir: dir.path().to_owned(),
        user: account.user_id.clone(),
        server: Some(server),
    })
    .await
    .expect("client opens")
}

/// Adds a task titled `title` on the client (a local edit, which always works).
pub async fn add_titled_task(
    client: &taskflow_client_core::Client,
    board: taskflow_proto::DocumentId,
    title: &str,
) {
    let edit = taskflow_client_core::Edit::AddTask(NewTask::titled(title, "test"));
    client.edit(board, edit).await.expect("a local edit");
}
