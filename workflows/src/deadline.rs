//! `TaskManagementWorkflow`: one per task with a due date, its id derived from the task's, so
//! starting it twice finds the one already running.
//!
//! It holds the task's deadline facts (due date, finished, reminder offset) and asks
//! [`deadlines::next`] what comes next: it sleeps on a durable timer until then, unless a
//! signal brings new facts first (the due date moved, the task done or archived), and when the
//! time comes has the server act (`Tasks.AdvanceDeadline`, which sends each reminder and
//! escalation once per due date whatever happens to this workflow) and adopts the server's
//! answer: its facts and its record of what was sent. It ends when nothing is left to do: the
//! task is finished, has no due date, or was escalated.

// The SDK's macros generate types (one per workflow method or activity) without `Debug`.
#![allow(missing_debug_implementations)]

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use taskflow_proto::deadlines::{self, Deadline, Millis, Next, Progress};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, SyncWorkflowContext, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

use crate::activities::{AdvanceDeadline, ServerActivities};

/// A task's deadline, as the workflow starts with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDeadline {
    pub project_id: String,
    pub task_id: String,
    pub deadline: Deadline,
    /// What the server had already done for it (a workflow started again after its task was
    /// reopened does not start over).
    pub done: Progress,
}

/// The id of a task's workflow.
pub fn workflow_id(task_queue: &str, project: &str, task: &str) -> String {
    format!("{task_queue}/deadline/{project}/{task}")
}

#[workflow]
pub struct TaskManagementWorkflow {
    task: TaskDeadline,
    /// Counts signals, so a wait ends when one arrives.
    version: u64,
}

#[workflow_methods]
impl TaskManagementWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, task: TaskDeadline) -> Self {
        TaskManagementWorkflow { task, version: 0 }
    }

    #[run(name = "TaskManagementWorkflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<Progress> {
        loop {
            let (task, version) = ctx.state(|s| (s.task.clone(), s.version));
            let now = millis(ctx.workflow_time())?;
            match deadlines::next(&task.deadline, &task.done, now) {
                Next::Nothing => return Ok(task.done),
                Next::Now(_) => {
                    let request = AdvanceDeadline {
                        project_id: task.project_id.clone(),
                        task_id: task.task_id.clone(),
                        at_ms: now,
                    };
                    let options = ActivityOptions::start_to_close_timeout(Duration::from_secs(30));
                    let outcome = ctx
                        .execute_activity(ServerActivities::advance_deadline, request, options)
                        .await;
                    let Ok(fired) = outcome else {
                        // Only what retrying cannot mend fails for good (the server no longer
                        // knows the task's deadline: the task is gone): nothing left to do.
                        return Ok(task.done);
                    };
                    // The server decided on what it knows and recorded what it sent: that is
                    // the truth from here, unless newer facts came by signal meanwhile.
                    ctx.state_mut(|s| {
                        if s.version == version {
                            s.task.deadline = fired.deadline;
                            s.task.done = fired.done;
                        } else {
                            s.task.done = merge(s.task.deadline.due, s.task.done, fired.done);
                        }
                    });
                }
                Next::At(at, _) => {
                    let wait = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                    temporalio_sdk::workflows::select! {
                        _ = ctx.timer(wait) => {}
                        _ = ctx.wait_condition(|s: &Self| s.version != version) => {}
                    }
                }
            }
        }
    }

    /// The task's deadline as the server knows it now: its facts (from the latest event) and
    /// what was sent.
    #[signal(name = "deadline_changed")]
    pub fn changed(&mut self, _ctx: &mut SyncWorkflowContext<Self>, known: TaskDeadline) {
        self.task.done = merge(known.deadline.due, self.task.done, known.done);
        self.task.deadline = known.deadline;
        self.version += 1;
    }

    /// The facts and progress the workflow works from.
    #[query(name = "deadline")]
    pub fn deadline(&self, _ctx: &WorkflowContextView) -> TaskDeadline {
        self.task.clone()
    }
}

/// What was sent for the due date `due`, from two records of it (either may be the newer).
fn merge(due: Option<Millis>, ours: Progress, theirs: Progress) -> Progress {
    let pick = |a: Option<Millis>, b: Option<Millis>| if a == due { a } else { b.or(a) };
    Progress {
        reminded_for: pick(ours.reminded_for, theirs.reminded_for),
        escalated_for: pick(ours.escalated_for, theirs.escalated_for),
    }
}

fn millis(time: Option<SystemTime>) -> WorkflowResult<Millis> {
    let since_epoch = time
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .ok_or_else(|| ApplicationFailure::new(anyhow::anyhow!("the workflow has no time")))?;
    Ok(Millis::try_from(since_epoch.as_millis()).unwrap_or(Millis::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_for_the_current_due_date_wins_from_either_side() {
        let (old, due) = (Some(1_000), Some(2_000));
        let ours = Progress {
            reminded_for: due,
            escalated_for: old,
        };
        let theirs = Progress {
            reminded_for: old,
            escalated_for: due,
        };
        let merged = merge(due, ours, theirs);
        assert_eq!((merged.reminded_for, merged.escalated_for), (due, due));
        // Neither for the current date: the other side's record (the newer one) stays.
        let moved = merge(Some(3_000), ours, theirs);
        assert_eq!((moved.reminded_for, moved.escalated_for), (old, due));
    }
}
