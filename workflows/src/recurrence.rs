//! `RecurringTaskWorkflow`: one run of a recurrence rule, started by the rule's Temporal
//! Schedule. The Schedule names each run's workflow after its prefix and the run's scheduled
//! time, which the workflow hands to the server (`Tasks.CreateTask`): the task's id comes from
//! the rule and that time, so a run made twice makes one task.

// The SDK's macros generate types (one per workflow method or activity) without `Debug`.
#![allow(missing_debug_implementations)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowResult};

use crate::activities::{CreatedTask, RecurrenceRunRequest, ServerActivities};

/// What a rule's Schedule starts each run with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrenceRun {
    pub recurrence_id: String,
    /// The Schedule's workflow id, which Temporal follows with `-` and the scheduled time.
    pub workflow_id_prefix: String,
}

/// The workflow id prefix of a rule's runs.
pub fn workflow_id_prefix(task_queue: &str, recurrence: &str) -> String {
    format!("{task_queue}/recurrence-run/{recurrence}")
}

/// The scheduled time (RFC 3339) a run's workflow id carries after its prefix.
pub fn scheduled_time<'a>(workflow_id: &'a str, prefix: &str) -> Option<&'a str> {
    workflow_id.strip_prefix(prefix)?.strip_prefix('-')
}

#[workflow]
#[derive(Default)]
pub struct RecurringTaskWorkflow;

#[workflow_methods]
impl RecurringTaskWorkflow {
    #[run(name = "RecurringTaskWorkflow")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        run: RecurrenceRun,
    ) -> WorkflowResult<Option<CreatedTask>> {
        let Some(scheduled) = scheduled_time(ctx.workflow_id(), &run.workflow_id_prefix) else {
            return Err(ApplicationFailure::new(anyhow::anyhow!(
                "`{}` is not a scheduled run of {}",
                ctx.workflow_id(),
                run.workflow_id_prefix
            ))
            .into());
        };
        let request = RecurrenceRunRequest {
            recurrence_id: run.recurrence_id,
            scheduled: scheduled.to_owned(),
        };
        let options = ActivityOptions::start_to_close_timeout(Duration::from_secs(30));
        // A rule that may no longer run fails for good; the server has turned it off and the
        // next reconciliation removes its Schedule.
        match ctx
            .execute_activity(ServerActivities::create_task, request, options)
            .await
        {
            Ok(created) => Ok(Some(created)),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheduled_time_follows_the_prefix() {
        let prefix = workflow_id_prefix("taskflow", "r1");
        let id = format!("{prefix}-2026-12-07T09:00:00Z");
        assert_eq!(scheduled_time(&id, &prefix), Some("2026-12-07T09:00:00Z"));
        assert_eq!(
            scheduled_time("taskflow/recurrence-run/r2-2026", &prefix),
            None
        );
    }
}
