//! [`Workflows`]: the server's side of Temporal. It starts or signals a task's deadline
//! workflow with the task's latest facts, and keeps one Temporal Schedule per enabled
//! recurrence rule.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use taskflow_proto::deadlines::{self, Next};
use temporalio_client::errors::WorkflowInteractionError;
use temporalio_client::schedules::{
    CreateScheduleOptions, ListSchedulesOptions, ScheduleAction, ScheduleError,
    ScheduleOverlapPolicy, ScheduleSpec,
};
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowQueryOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};
use tonic::Code;

use crate::TemporalConfig;
use crate::deadline::{TaskDeadline, TaskManagementWorkflow, workflow_id};
use crate::recurrence::{RecurrenceRun, RecurringTaskWorkflow, workflow_id_prefix};

/// A recurrence rule, as its Schedule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceSpec {
    pub id: String,
    /// Five fields (minute first) or six (seconds first), day-of-week as names.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
}

impl RecurrenceSpec {
    /// The rule's cron expression as Temporal reads it: seven fields when seconds are given
    /// (Temporal's six-field form ends with the year instead).
    pub fn temporal_cron(&self) -> String {
        let fields: Vec<&str> = self.cron.split_whitespace().collect();
        if fields.len() == 6 {
            format!("{} *", fields.join(" "))
        } else {
            fields.join(" ")
        }
    }

    /// The Schedule's id: the rule's, and a digest of its timing, so a rule whose schedule
    /// changed gets a new Schedule (and the old one goes) rather than an update in place.
    fn schedule_id(&self, task_queue: &str) -> String {
        let digest = Sha256::digest(format!("{}\n{}", self.temporal_cron(), self.timezone));
        let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{}/{short}", schedule_prefix(task_queue), self.id)
    }
}

fn schedule_prefix(task_queue: &str) -> String {
    format!("{task_queue}/recurrence/")
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowsError {
    #[error("Temporal: {0}")]
    Temporal(String),
}

fn temporal(e: impl std::fmt::Display) -> WorkflowsError {
    WorkflowsError::Temporal(e.to_string())
}

/// The server's client of Temporal.
#[derive(Clone)]
pub struct Workflows {
    client: Client,
    task_queue: String,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows")
            .field("task_queue", &self.task_queue)
            .finish_non_exhaustive()
    }
}

impl Workflows {
    pub async fn connect(config: &TemporalConfig) -> anyhow::Result<Workflows> {
        Ok(Workflows {
            client: config.connect("taskflow-server").await?,
            task_queue: config.task_queue.clone(),
        })
    }

    pub fn deadline_workflow_id(&self, project: &str, task: &str) -> String {
        workflow_id(&self.task_queue, project, task)
    }

    /// Hands a task's latest deadline facts to its workflow: started with them if it is not
    /// running (and something is left to do), signalled otherwise.
    pub async fn track_deadline(&self, task: TaskDeadline) -> Result<(), WorkflowsError> {
        let id = self.deadline_workflow_id(&task.project_id, &task.task_id);
        let now = jiff::Timestamp::now().as_millisecond();
        if deadlines::next(&task.deadline, &task.done, now) == Next::Nothing {
            // Nothing to start for; a running workflow learns it may end.
            let handle = self
                .client
                .get_workflow_handle::<TaskManagementWorkflow>(id);
            return match handle
                .signal(
                    TaskManagementWorkflow::changed,
                    task,
                    WorkflowSignalOptions::default(),
                )
                .await
            {
                Ok(()) | Err(WorkflowInteractionError::NotFound(_)) => Ok(()),
                Err(e) => Err(temporal(e)),
            };
        }
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id).build();
        self.client
            .signal_with_start_workflow(
                TaskManagementWorkflow::run,
                task.clone(),
                TaskManagementWorkflow::changed,
                task,
                options,
            )
            .await
            .map_err(temporal)?;
        Ok(())
    }

    /// What a task's running workflow works from (answered by a worker).
    pub async fn tracked_deadline(
        &self,
        project: &str,
        task: &str,
    ) -> Result<TaskDeadline, WorkflowsError> {
        let id = self.deadline_workflow_id(project, task);
        self.client
            .get_workflow_handle::<TaskManagementWorkflow>(id)
            .query(
                TaskManagementWorkflow::deadline,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .map_err(temporal)
    }

    /// Whether a task's workflow is running (it ends when nothing is left to do).
    pub async fn deadline_running(
        &self,
        project: &str,
        task: &str,
    ) -> Result<bool, WorkflowsError> {
        let id = self.deadline_workflow_id(project, task);
        let handle = self
            .client
            .get_workflow_handle::<TaskManagementWorkflow>(id);
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(described) => Ok(described.status() == WorkflowExecutionStatus::Running),
            Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
            Err(e) => Err(temporal(e)),
        }
    }

    /// Makes the Schedules match `rules` (the enabled ones): creates the missing, deletes
    /// those of rules gone, turned off or rescheduled. Safe to repeat, and from several nodes.
    pub async fn keep_schedules(&self, rules: &[RecurrenceSpec]) -> Result<(), WorkflowsError> {
        let wanted: BTreeMap<String, &RecurrenceSpec> = rules
            .iter()
            .map(|rule| (rule.schedule_id(&self.task_queue), rule))
            .collect();
        let existing: BTreeSet<String> = self.schedule_ids().await?.into_iter().collect();
        // A rule Temporal refuses is skipped (and said), so it cannot hold up the others.
        let mut refused = None;
        for (id, rule) in wanted.iter().filter(|(id, _)| !existing.contains(*id)) {
            if let Err(e) = self.create_schedule(id, rule).await {
                tracing::warn!(recurrence = %rule.id, error = %e, "creating its Schedule failed");
                refused = Some(e);
            }
        }
        for id in existing.iter().filter(|id| !wanted.contains_key(*id)) {
            match self
                .client
                .get_schedule_handle(id.clone())
                .delete(Default::default())
                .await
            {
                Ok(()) => tracing::info!(schedule = %id, "recurrence schedule removed"),
                Err(ScheduleError::Rpc(status)) if status.code() == Code::NotFound => {}
                Err(e) => return Err(temporal(e)),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    async fn create_schedule(&self, id: &str, rule: &RecurrenceSpec) -> Result<(), WorkflowsError> {
        let prefix = workflow_id_prefix(&self.task_queue, &rule.id);
        let run = RecurrenceRun {
            recurrence_id: rule.id.clone(),
            workflow_id_prefix: prefix.clone(),
        };
        let options = CreateScheduleOptions::builder()
            .action(ScheduleAction::start_workflow(
                RecurringTaskWorkflow::run,
                run,
                self.task_queue.clone(),
                prefix,
            ))
            .spec(
                ScheduleSpec::builder()
                    .cron_strings(vec![rule.temporal_cron()])
                    .timezone_name(rule.timezone.clone())
                    .build(),
            )
            // Every run is its own task: a slow one never holds the next back.
            .overlap_policy(ScheduleOverlapPolicy::AllowAll)
            .note(format!("Taskflow recurrence {}", rule.id))
            .build();
        match self.client.create_schedule(id, options).await {
            Ok(_) => {
                tracing::info!(schedule = %id, "recurrence schedule created");
                Ok(())
            }
            Err(ScheduleError::Rpc(status)) if status.code() == Code::AlreadyExists => Ok(()),
            Err(e) => Err(temporal(e)),
        }
    }

    /// The ids of this deployment's recurrence Schedules.
    pub async fn schedule_ids(&self) -> Result<Vec<String>, WorkflowsError> {
        let prefix = schedule_prefix(&self.task_queue);
        let mut ids = Vec::new();
        let mut listed = self.client.list_schedules(ListSchedulesOptions::default());
        while let Some(entry) = listed.next().await {
            let entry = entry.map_err(temporal)?;
            if entry.schedule_id().starts_with(&prefix) {
                ids.push(entry.schedule_id().to_owned());
            }
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cron: &str, timezone: &str) -> RecurrenceSpec {
        RecurrenceSpec {
            id: "r1".into(),
            cron: cron.into(),
            timezone: timezone.into(),
        }
    }

    #[test]
    fn seconds_become_temporal_seven_field_form() {
        assert_eq!(
            rule("0 9 * * MON-FRI", "UTC").temporal_cron(),
            "0 9 * * MON-FRI"
        );
        assert_eq!(
            rule("*/2  * * * * *", "UTC").temporal_cron(),
            "*/2 * * * * * *"
        );
    }

    #[test]
    fn a_rescheduled_rule_gets_a_new_schedule_id() {
        let daily = rule("0 9 * * *", "Europe/Paris").schedule_id("q");
        assert!(daily.starts_with("q/recurrence/r1/"), "{daily}");
        assert_eq!(daily, rule("0 9 * * *", "Europe/Paris").schedule_id("q"));
        assert_ne!(daily, rule("0 10 * * *", "Europe/Paris").schedule_id("q"));
        assert_ne!(daily, rule("0 9 * * *", "Europe/Berlin").schedule_id("q"));
    }
}
