//! Recurring tasks: per project, rules of a cron schedule in a time zone and a task template;
//! each run makes one task.
//!
//! - [`Schedule`]: a rule's cron expression read in its time zone.
//! - [`make_task`]: the task of one scheduled run, with an id derived from the rule and the
//!   scheduled time, so making it again (a retry, a crash before the run was recorded) finds
//!   the task already there instead of making a second.
//! - [`run`]: the embedded scheduler: the rule's next run time is its durable timer in the
//!   database. Runs missed while no server ran are made once when one is back, as the latest
//!   of them (its date and due date are current); the others are skipped, so a long outage
//!   does not flood the board.
//! - [`http`]: the REST routes, `/api/v1/projects/{id}/recurrences`.

pub mod http;

use std::collections::BTreeSet;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use taskflow_proto::board::ops::{NewTask, Position};
use taskflow_proto::board::{ColumnId, Priority, TaskId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::doc::edit::{BoardEdit, EditError};
use crate::events::relay::take_lease;
use crate::now_ms;
use crate::server::Shared;
use crate::store::RecurrenceRow;
use crate::tasks::json::PriorityJson;

/// A rule's schedule: when its runs are.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: jiff_cron::Schedule,
    zone: TimeZone,
}

impl Schedule {
    /// Reads `cron` (minute, hour, day of month, month, day of week; or six fields, seconds
    /// first) in the IANA time zone `timezone`. Why it cannot be read, for people.
    pub fn parse(cron: &str, timezone: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let full = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 => fields.join(" "),
            _ => {
                return Err(
                    "a cron expression has 5 fields (minute hour day-of-month month \
                            day-of-week), or 6 with seconds first"
                        .into(),
                );
            }
        };
        let weekdays = fields.last().copied().unwrap_or_default();
        if weekdays.chars().any(|c| c.is_ascii_digit()) {
            return Err(
                "write days of the week as names (MON-FRI, SAT,SUN) or *: as numbers \
                        they mean different days in different cron dialects"
                    .into(),
            );
        }
        let cron = full
            .parse::<jiff_cron::Schedule>()
            .map_err(|e| format!("not a cron expression: {e}"))?;
        let zone = TimeZone::get(timezone)
            .map_err(|_| format!("`{timezone}` is not an IANA time zone (e.g. Europe/Paris)"))?;
        Ok(Schedule { cron, zone })
    }

    /// The first run strictly after `after` (milliseconds since the epoch).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(after)
            .ok()?
            .to_zoned(self.zone.clone());
        self.cron
            .after(start)
            .map(|z| z.timestamp().as_millisecond())
            .find(|at| *at > after)
    }

    /// Whether a run is scheduled at `at` exactly.
    pub fn is_run(&self, at: i64) -> bool {
        at % 1000 == 0
            && Timestamp::from_millisecond(at)
                .is_ok_and(|t| self.cron.includes(t.to_zoned(self.zone.clone())))
    }

    /// The latest run from `first` (a run) up to `now`: after an outage, the one to make.
    pub fn latest_run(&self, first: i64, now: i64) -> i64 {
        let mut latest = first;
        // Bounded: an every-second rule after a long outage need not walk every second.
        for _ in 0..100_000 {
            match self.next_after(latest) {
                Some(next) if next <= now => latest = next,
                _ => break,
            }
        }
        latest
    }

    /// The local date of `at` (YYYY-MM-DD), for `{date}` in titles.
    pub fn date(&self, at: i64) -> String {
        Timestamp::from_millisecond(at)
            .map(|t| t.to_zoned(self.zone.clone()).date().to_string())
            .unwrap_or_default()
    }
}

/// The task each run makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskTemplate {
    /// `{date}` becomes the run's date (YYYY-MM-DD, in the rule's time zone).
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A column id (default: the board's first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Members' ids or emails (kept as ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignees: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<PriorityJson>,
    /// The task is due this many minutes after its run (none: no due date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_in_minutes: Option<u32>,
}

/// The id of the task that `rule`'s run scheduled at `scheduled` makes.
pub fn task_id(rule: &str, scheduled: i64) -> TaskId {
    let digest = Sha256::new()
        .chain_update(b"recurrence\0")
        .chain_update(rule.as_bytes())
        .chain_update([0])
        .chain_update(scheduled.to_be_bytes())
        .finalize();
    TaskId::new(
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// Why a run could not make its task.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It never will: the rule is turned off with this reason.
    #[error("{0}")]
    Disable(String),
    /// Maybe later.
    #[error("{0}")]
    Retry(String),
}

/// Makes the task of `rule`'s run scheduled at `scheduled`, as the rule's author; answers its
/// id and whether this call made it. Making it again is harmless: the task is found already
/// there.
pub async fn make_task(
    shared: &Shared,
    rule: &RecurrenceRow,
    scheduled: i64,
) -> Result<(TaskId, bool), RunError> {
    let retry = |e: crate::store::StoreError| RunError::Retry(e.to_string());
    let schedule = Schedule::parse(&rule.cron, &rule.timezone).map_err(RunError::Disable)?;
    let template: TaskTemplate = serde_json::from_str(&rule.template)
        .map_err(|e| RunError::Disable(format!("its task template no longer reads: {e}")))?;
    let store = shared.identity.store();
    let project = match store.project(&rule.project_id).await.map_err(retry)? {
        Some(p) if p.archived_at.is_none() => p,
        Some(_) => return Err(RunError::Disable("its project is archived".into())),
        None => return Err(RunError::Disable("its project is gone".into())),
    };
    let role = store
        .membership(&project.workspace_id, &rule.created_by)
        .await
        .map_err(retry)?
        .map(|(_, role)| role);
    if !role.is_some_and(|r| r.can_edit_boards()) {
        return Err(RunError::Disable(
            "its author may no longer add tasks to this project".into(),
        ));
    }
    // Assignees who left the workspace are left out.
    let members = store
        .members_among(&project.workspace_id, &template.assignees)
        .await
        .map_err(retry)?;
    let id = task_id(&rule.id, scheduled);
    let task = NewTask {
        id: id.clone(),
        title: template.title.replace("{date}", &schedule.date(scheduled)),
        description: template.description.clone().unwrap_or_default(),
        column: template.column.clone().map(ColumnId::new),
        position: Position::Bottom,
        assignees: members
            .into_iter()
            .map(|m| m.user_id)
            .collect::<BTreeSet<_>>(),
        labels: template.labels.iter().cloned().collect(),
        priority: template.priority.map_or(Priority::None, Into::into),
        due: template
            .due_in_minutes
            .and_then(|minutes| scheduled.checked_add(i64::from(minutes) * 60_000)),
        created_by: rule.created_by.clone(),
    };
    let document = crate::tasks::document_of(&project)
        .map_err(|_| RunError::Disable("its project's board id does not read".into()))?;
    match shared
        .registry
        .edit(
            document,
            Arc::from(rule.created_by.as_str()),
            BoardEdit::AddTask(task),
            None,
        )
        .await
    {
        Ok(_) => Ok((id, true)),
        Err(EditError::TaskExists(_)) => Ok((id, false)),
        Err(EditError::NoColumn(column)) => Err(RunError::Disable(format!(
            "the board has no column `{column}` any more"
        ))),
        Err(e) => Err(RunError::Retry(e.to_string())),
    }
}

/// The embedded scheduler: makes every run that is due, until `stop`. One node at a time runs
/// it.
pub async fn run(shared: Arc<Shared>, wake: Arc<Notify>, stop: CancellationToken) {
    let store = shared.identity.store().clone();
    let Some(_lease) = take_lease(&store, "taskflow.recurrences", &stop).await else {
        return;
    };
    loop {
        let mut failed = false;
        let due = match store.due_recurrences(now_ms(), 50).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading due recurrences failed");
                failed = true;
                Vec::new()
            }
        };
        for rule in &due {
            let Some(scheduled) = rule.next_at else {
                continue;
            };
            let schedule = Schedule::parse(&rule.cron, &rule.timezone).ok();
            let run = schedule
                .as_ref()
                .map_or(scheduled, |s| s.latest_run(scheduled, now_ms()));
            let outcome = match make_task(&shared, rule, run).await {
                Ok(_) => {
                    let next = schedule.and_then(|s| s.next_after(run));
                    match store.ran_recurrence(&rule.id, scheduled, run, next).await {
                        Ok(false) => {
                            tracing::info!(rule = %rule.id, "a recurrence changed while its run was made");
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                }
                Err(RunError::Disable(reason)) => {
                    tracing::info!(rule = %rule.id, %reason, "a recurrence is turned off");
                    store.disable_recurrence(&rule.id, &reason).await
                }
                Err(RunError::Retry(reason)) => {
                    tracing::warn!(rule = %rule.id, %reason, "a recurring task could not be made yet");
                    failed = true;
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, rule = %rule.id, "recording a recurrence run failed");
                failed = true;
            }
        }
        let next = if failed {
            Ok(None)
        } else {
            store.next_recurrence_at().await
        };
        if !crate::timer::wait_for_next(next, failed, &wake, &stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn five_fields_are_read_in_the_rules_time_zone() {
        let weekdays = Schedule::parse("30 9 * * MON-FRI", "Europe/Paris").unwrap();
        // Friday 2026-12-04 10:00 in Paris (09:00 UTC): the next run is Monday 09:30 Paris.
        assert_eq!(
            weekdays.next_after(at("2026-12-04T09:00:00Z")),
            Some(at("2026-12-07T08:30:00Z"))
        );
        assert_eq!(weekdays.date(at("2026-12-07T08:30:00Z")), "2026-12-07");
    }

    #[test]
    fn six_fields_start_with_seconds_and_runs_are_strictly_after() {
        let every_two = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
        let t = at("2026-12-07T00:00:00Z");
        assert_eq!(every_two.next_after(t), Some(t + 2_000));
        assert_eq!(every_two.next_after(t + 1), Some(t + 2_000));
    }

    #[test]
    fn unreadable_rules_say_why() {
        for (cron, zone, why) in [
            ("* * * *", "UTC", "5 fields"),
            ("0 9 * * 1-5", "UTC", "names"),
            ("61 9 * * *", "UTC", "not a cron expression"),
            ("0 9 * * *", "Mars/Olympus", "IANA"),
        ] {
            let error = Schedule::parse(cron, zone).unwrap_err();
            assert!(error.contains(why), "{cron} in {zone}: {error}");
        }
    }

    #[test]
    fn after_an_outage_the_latest_missed_run_is_made() {
        let hourly = Schedule::parse("0 * * * *", "UTC").unwrap();
        let first = at("2026-12-07T01:00:00Z");
        assert_eq!(
            hourly.latest_run(first, at("2026-12-07T05:30:00Z")),
            at("2026-12-07T05:00:00Z")
        );
        assert_eq!(hourly.latest_run(first, first), first);
        assert!(hourly.is_run(first));
        assert!(!hourly.is_run(first + 1_000));
        assert!(!hourly.is_run(first + 1));
    }

    #[test]
    fn daylight_saving_changes_keep_local_times() {
        // Paris springs forward on 2026-03-29 (02:00 -> 03:00): 09:00 stays 09:00 local.
        let nine = Schedule::parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            nine.next_after(at("2026-03-28T09:00:00Z")),
            Some(at("2026-03-29T07:00:00Z"))
        );
        // New York falls back on 2026-11-01: 09:00 local is 14:00 UTC after it.
        let ny = Schedule::parse("0 9 * * *", "America/New_York").unwrap();
        assert_eq!(
            ny.next_after(at("2026-10-31T14:00:00Z")),
            Some(at("2026-11-01T14:00:00Z"))
        );
    }

    #[test]
    fn a_run_has_one_task_id() {
        assert_eq!(task_id("r1", 1_000), task_id("r1", 1_000));
        assert_ne!(task_id("r1", 1_000), task_id("r1", 2_000));
        assert_ne!(task_id("r1", 1_000), task_id("r2", 1_000));
    }
}
