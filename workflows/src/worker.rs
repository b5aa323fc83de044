//! The worker: polls the task queue and runs the workflows and their activities. The SDK's
//! worker future is not `Send`, so it gets a thread and a runtime of its own; the server runs
//! one beside itself, and `taskflow-worker` runs one alone.

use std::thread::JoinHandle;

use anyhow::Context;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::sync::oneshot;

use crate::activities::ServerActivities;
use crate::deadline::TaskManagementWorkflow;
use crate::recurrence::RecurringTaskWorkflow;
use crate::{ServerAddress, TemporalConfig};

/// A running worker.
pub struct WorkerHandle {
    shutdown: Box<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Closed when the worker's thread ends.
    ended: oneshot::Receiver<()>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Resolves when the worker stops by itself (its run loop failed): it no longer polls.
    pub async fn ended(&mut self) {
        let _ = (&mut self.ended).await;
    }

    /// Asks the worker to stop polling and finish what it runs, and waits for it on a
    /// blocking thread.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        (self.shutdown)();
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the worker thread panicked")))
        })
        .await?
    }
}

/// Starts a worker for `temporal`'s task queue whose activities call the server at `server`;
/// answers once it is connected and polling.
pub async fn start(
    temporal: TemporalConfig,
    server: ServerAddress,
) -> anyhow::Result<WorkerHandle> {
    let (ready, started) = oneshot::channel();
    let (end, ended) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("temporal-worker".into())
        .spawn(move || -> anyhow::Result<()> {
            // Dropped however the thread ends, which tells `ended`.
            let _end = end;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                // Kept for as long as the worker runs.
                let runtime = Runtime::from_current_tokio(Default::default())?;
                let mut worker = match build(&runtime, &temporal, &server).await {
                    Ok(worker) => worker,
                    Err(e) => {
                        let message = format!("{e:#}");
                        let _ = ready.send(Err(e));
                        anyhow::bail!(message);
                    }
                };
                let shutdown: Box<dyn Fn() + Send + Sync> = Box::new(worker.shutdown_handle());
                let _ = ready.send(Ok(shutdown));
                worker.run().await.context("the Temporal worker failed")
            })
        })?;
    let shutdown = started
        .await
        .context("the worker thread ended before it started")??;
    Ok(WorkerHandle {
        shutdown,
        thread: Some(thread),
        ended,
    })
}

async fn build(
    runtime: &Runtime,
    temporal: &TemporalConfig,
    server: &ServerAddress,
) -> anyhow::Result<Worker> {
    let client = temporal.connect("taskflow-worker").await?;
    let options = WorkerOptions::new(temporal.task_queue.clone())
        .register_workflow::<TaskManagementWorkflow>()?
        .register_workflow::<RecurringTaskWorkflow>()?
        .register_activities(ServerActivities::new(server)?)
        .build();
    Ok(Worker::new(runtime, client, options)?)
}
