//! Deadlines and recurring tasks on Temporal (`TEMPORAL_ADDRESS`, cargo feature `temporal`),
//! in place of the embedded schedulers. The workflows themselves are in `taskflow-workflows`.
//!
//! Deadlines: the deadlines consumer records each task's deadline facts in the `deadlines`
//! table as always, marking the row for a decision (`next_at`). Here, instead of deciding, the
//! leader hands the row's facts to the task's `TaskManagementWorkflow` (started, or
//! signalled) and clears the mark; a row that could not be handed over (Temporal down) stays
//! marked and is tried again, so no change is lost. The mark then moves to the next action's
//! time, when the leader hands the facts over again: a workflow lost meanwhile is started
//! anew. When the workflow's timer fires it calls back (`Tasks.AdvanceDeadline`): the server
//! decides on its own facts and records what it sent in the same row and transaction, so each
//! reminder and escalation fires once whatever happens to workflows and workers, and the
//! workflow adopts the server's answer.
//!
//! The in-process worker is started again should its run loop end by itself.
//!
//! Recurrences: the leader keeps one Temporal Schedule per enabled rule, reconciled when rules
//! change and every half minute; each run creates its task through `Tasks.CreateTask`.

use std::sync::Arc;
use std::time::Duration;

use taskflow_workflows::client::RecurrenceSpec;
use taskflow_workflows::deadline::TaskDeadline;
use taskflow_workflows::{ServerAddress, TemporalConfig, WorkerHandle, Workflows, worker};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::deadlines::logic::Next;
use crate::events::relay::take_lease;
use crate::now_ms;
use crate::resilience::{Breaker, BreakerConfig};
use crate::store::Store;

/// Deadlines handed over per round.
const BATCH: usize = 100;
/// When a deadline whose action is due now is handed over again, should it still be pending.
const RECHECK_MS: i64 = 60_000;
/// The pause before a worker that stopped by itself is started again.
const RESTART_PAUSE: Duration = Duration::from_secs(2);
/// The longest wait between two tries at reaching Temporal.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How this server uses Temporal.
#[derive(Debug, Clone)]
pub struct TemporalSetup {
    pub config: TemporalConfig,
    /// Where the in-process worker's activities call this server, if it runs one.
    pub worker: Option<ServerAddress>,
}

/// Connects (retrying until Temporal answers), starts the in-process worker if configured,
/// and keeps the workflows and Schedules in step with the database until `stop`.
pub async fn run(
    store: Store,
    setup: TemporalSetup,
    default_remind_before_ms: i64,
    deadlines_wake: Arc<Notify>,
    recurrences_wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let Some(workflows) = retrying("connecting to Temporal", &stop, || {
        Workflows::connect(&setup.config)
    })
    .await
    else {
        return;
    };
    tracing::info!(
        address = %setup.config.address,
        task_queue = %setup.config.task_queue,
        worker = setup.worker.is_some(),
        "deadlines and recurrences run on Temporal"
    );
    let temporal = Guarded {
        workflows,
        breaker: Breaker::new("temporal", BreakerConfig::SLOW),
    };
    let worker = async {
        if let Some(server) = &setup.worker {
            run_worker(&setup.config, server, &stop).await;
        }
    };
    tokio::join!(
        worker,
        hand_over_deadlines(
            &store,
            &temporal,
            default_remind_before_ms,
            &deadlines_wake,
            &stop
        ),
        keep_schedules(&store, &temporal, &recurrences_wake, &stop),
    );
}

/// Temporal's client, and the circuit breaker deadline hand-overs go through: while Temporal is
/// down, rounds fail at once and the marks wait, instead of every round waiting out the
/// client's timeouts.
struct Guarded {
    workflows: Workflows,
    breaker: Breaker,
}

/// Keeps an in-process worker running until `stop`: started again should it end by itself.
async fn run_worker(config: &TemporalConfig, server: &ServerAddress, stop: &CancellationToken) {
    loop {
        let started = retrying("starting the Temporal worker", stop, || {
            worker::start(config.clone(), server.clone())
        })
        .await;
        let Some(mut worker) = started else { return };
        tokio::select! {
            () = worker.ended() => {
                tracing::warn!("the Temporal worker stopped by itself; starting it again");
                stop_worker(worker).await;
                tokio::select! {
                    () = tokio::time::sleep(RESTART_PAUSE) => {}
                    () = stop.cancelled() => return,
                }
            }
            () = stop.cancelled() => {
                stop_worker(worker).await;
                return;
            }
        }
    }
}

async fn stop_worker(worker: WorkerHandle) {
    if let Err(e) = worker.stop().await {
        tracing::warn!(error = %e, "the Temporal worker did not stop cleanly");
    }
}

/// `attempt` until it succeeds, backing off; `None` when stopped first.
async fn retrying<T, F>(
    what: &str,
    stop: &CancellationToken,
    mut attempt: impl FnMut() -> F,
) -> Option<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let mut backoff = Duration::from_millis(500);
    loop {
        tokio::select! {
            result = attempt() => match result {
                Ok(value) => return Some(value),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "{what} failed; trying again"),
            },
            () = stop.cancelled() => return None,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return None,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The leader hands every marked deadline to its workflow.
async fn hand_over_deadlines(
    store: &Store,
    workflows: &Guarded,
    default_remind_before_ms: i64,
    wake: &Notify,
    stop: &CancellationToken,
) {
    let Some(_lease) = take_lease(store, "taskflow.deadlines", stop).await else {
        return;
    };
    loop {
        let mut failed = false;
        let due = match store.due_deadlines(now_ms(), BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading marked deadlines failed");
                failed = true;
                Vec::new()
            }
        };
        for (project, task) in &due {
            let handed = tokio::select! {
                handed = hand_over(store, workflows, default_remind_before_ms, project, task) => handed,
                () = stop.cancelled() => return,
            };
            if let Err(e) = handed {
                tracing::warn!(error = %e, %task, "handing a deadline to Temporal failed");
                // Temporal is likely down: the rest waits for the next round.
                failed = true;
                break;
            }
        }
        let next = if failed {
            Ok(None)
        } else {
            store.next_deadline_at().await
        };
        if !crate::timer::wait_for_next(next, failed, wake, stop).await {
            return;
        }
    }
}

async fn hand_over(
    store: &Store,
    temporal: &Guarded,
    default_remind_before_ms: i64,
    project: &str,
    task: &str,
) -> Result<(), String> {
    let row = store
        .deadline(project, task, default_remind_before_ms)
        .await
        .map_err(|e| e.to_string())?;
    let Some(row) = row else {
        return Ok(());
    };
    let (deadline, done) = crate::deadlines::state(&row);
    let facts = TaskDeadline {
        project_id: row.project_id.clone(),
        task_id: row.task_id.clone(),
        deadline,
        done,
    };
    temporal
        .breaker
        .call(temporal.workflows.track_deadline(facts))
        .await
        .map_err(|e| e.to_string())?;
    // Looked at again when its next action is due (or, if that is now, in a while): a
    // workflow lost by then is started anew.
    let now = now_ms();
    let again = match crate::deadlines::logic::next(&deadline, &done, now) {
        Next::At(at, _) => Some(at),
        Next::Now(_) => Some(now + RECHECK_MS),
        Next::Nothing => None,
    };
    store
        .deadline_handed_over(&row, default_remind_before_ms, again)
        .await
        .map_err(|e| e.to_string())
}

/// The leader keeps the Schedules matching the enabled rules.
async fn keep_schedules(
    store: &Store,
    workflows: &Guarded,
    wake: &Notify,
    stop: &CancellationToken,
) {
    let Some(_lease) = take_lease(store, "taskflow.recurrences", stop).await else {
        return;
    };
    loop {
        let kept = tokio::select! {
            kept = reconcile(store, workflows) => kept,
            () = stop.cancelled() => return,
        };
        if let Err(e) = &kept {
            tracing::warn!(error = %e, "keeping the recurrence Schedules failed");
        }
        // Every half minute at the least (the longest wait), or when rules change.
        if !crate::timer::wait_for_next(Ok(None), kept.is_err(), wake, stop).await {
            return;
        }
    }
}

async fn reconcile(store: &Store, temporal: &Guarded) -> Result<(), String> {
    let rules = store
        .enabled_recurrences()
        .await
        .map_err(|e| e.to_string())?;
    let specs: Vec<RecurrenceSpec> = rules
        .into_iter()
        .map(|rule| RecurrenceSpec {
            id: rule.id,
            cron: rule.cron,
            timezone: rule.timezone,
        })
        .collect();
    // Not through the breaker: a rule Temporal refuses fails the round without Temporal being
    // down, and the round repeats every half minute anyway.
    temporal
        .workflows
        .keep_schedules(&specs)
        .await
        .map_err(|e| e.to_string())
}
