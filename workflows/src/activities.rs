//! The workflows' activities: calls to the sync server's internal gRPC, which does the work
//! idempotently (each is safe to retry and to repeat).
//!
//! What retrying cannot mend (the task or rule is gone, the rule may no longer run, a bad
//! request) fails for good; anything else (the server down, storage failing, even a wrong
//! internal token, which an operator can put right) is retried by Temporal with backoff.

// The SDK's macros generate types (one per workflow method or activity) without `Debug`.
#![allow(missing_debug_implementations)]

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use taskflow_grpc::tasks::tasks_client::TasksClient;
use taskflow_grpc::tasks::{AdvanceDeadlineRequest, CreateTaskRequest};
use taskflow_proto::deadlines::{Deadline, Progress};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::ServerAddress;

/// Ask the server to do what a task's deadline calls for at `at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvanceDeadline {
    pub project_id: String,
    pub task_id: String,
    pub at_ms: i64,
}

/// What the server did (it sends each at most once per due date), and the deadline as it knows
/// it afterwards, which the workflow adopts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    pub reminded: bool,
    pub escalated: bool,
    pub deadline: Deadline,
    pub done: Progress,
}

/// Make the task of one run of a recurrence rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrenceRunRequest {
    pub recurrence_id: String,
    /// The run's scheduled time, RFC 3339.
    pub scheduled: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTask {
    pub project_id: String,
    pub task_id: String,
    /// False when an earlier try of the same run made it.
    pub created: bool,
}

/// The activities, with their connection to the server.
#[derive(Debug)]
pub struct ServerActivities {
    tasks: TasksClient<Channel>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
}

impl ServerActivities {
    /// Activities calling the server at `server` (connected lazily, reconnecting as needed).
    pub fn new(server: &ServerAddress) -> anyhow::Result<ServerActivities> {
        let channel = Channel::from_shared(server.url.clone())?.connect_lazy();
        Ok(ServerActivities {
            tasks: TasksClient::new(channel),
            bearer: format!("Bearer {}", server.token).parse()?,
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }
}

#[activities]
impl ServerActivities {
    #[activity(name = "advance_deadline")]
    pub async fn advance_deadline(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: AdvanceDeadline,
    ) -> Result<Fired, ActivityError> {
        let request = self.request(AdvanceDeadlineRequest {
            project_id: input.project_id,
            task_id: input.task_id,
            at_ms: input.at_ms,
        });
        let response = self
            .tasks
            .clone()
            .advance_deadline(request)
            .await
            .map_err(failure)?
            .into_inner();
        Ok(Fired {
            reminded: response.reminded,
            escalated: response.escalated,
            deadline: Deadline {
                due: response.due_at_ms,
                finished: response.finished,
                remind_before: response.remind_before_ms,
            },
            done: Progress {
                reminded_for: response.reminded_for_ms,
                escalated_for: response.escalated_for_ms,
            },
        })
    }

    #[activity(name = "create_recurring_task")]
    pub async fn create_task(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RecurrenceRunRequest,
    ) -> Result<CreatedTask, ActivityError> {
        let scheduled: jiff::Timestamp = input.scheduled.parse().map_err(|e| {
            ActivityError::from(
                ApplicationFailure::builder(anyhow::anyhow!(
                    "`{}` is not a scheduled time: {e}",
                    input.scheduled
                ))
                .non_retryable(true)
                .build(),
            )
        })?;
        let request = self.request(CreateTaskRequest {
            recurrence_id: input.recurrence_id,
            scheduled_at_ms: scheduled.as_millisecond(),
        });
        let response = self
            .tasks
            .clone()
            .create_task(request)
            .await
            .map_err(failure)?
            .into_inner();
        Ok(CreatedTask {
            project_id: response.project_id,
            task_id: response.task_id,
            created: response.created,
        })
    }
}

/// A gRPC error as an activity failure: retried unless retrying cannot mend it.
fn failure(status: Status) -> ActivityError {
    let permanent = matches!(
        status.code(),
        Code::NotFound | Code::FailedPrecondition | Code::InvalidArgument
    );
    let error = anyhow::anyhow!(
        "the server answered {:?}: {}",
        status.code(),
        status.message()
    );
    ApplicationFailure::builder(error)
        .non_retryable(permanent)
        .build()
        .into()
}
