//! What to do about a task's deadline, given the task and the time: pure, so the server's
//! embedded scheduler and the Temporal workflow (`taskflow-workflows`) take the same decisions.
//!
//! A task with a due date that is not finished gets a reminder `remind_before` ahead of the
//! due date, then, if still not finished when the due date passes, an escalation. Each fires
//! once per due date: moving the due date starts over for the new date, and a task whose due
//! date has already passed when it is first seen is escalated without a reminder.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// What is known of a task's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    pub due: Option<Millis>,
    /// In the done column, or archived: nothing more to do.
    pub finished: bool,
    /// How long before the due date the reminder goes out.
    pub remind_before: Millis,
}

/// What has already been done, each recorded with the due date it was done for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub reminded_for: Option<Millis>,
    pub escalated_for: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Tell the assignees the task is due soon.
    Remind,
    /// Tell the assignees and the workspace's admins that the task is overdue.
    Escalate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Remind => "remind",
            Action::Escalate => "escalate",
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Do it now (then record it in [`Progress`] and ask again).
    Now(Action),
    /// Nothing until then; then ask again.
    At(Millis, Action),
    /// Nothing left to do for this due date (none, finished, or both done).
    Nothing,
}

/// What to do about `deadline` at `now`, given what was done already.
pub fn next(deadline: &Deadline, done: &Progress, now: Millis) -> Next {
    let Some(due) = deadline.due else {
        return Next::Nothing;
    };
    if deadline.finished || done.escalated_for == Some(due) {
        return Next::Nothing;
    }
    if now >= due {
        return Next::Now(Action::Escalate);
    }
    // No reminder with no lead time (it would coincide with the escalation).
    if done.reminded_for == Some(due) || deadline.remind_before <= 0 {
        return Next::At(due, Action::Escalate);
    }
    let remind_at = due.saturating_sub(deadline.remind_before);
    if now >= remind_at {
        Next::Now(Action::Remind)
    } else {
        Next::At(remind_at, Action::Remind)
    }
}

/// `done` after `action` was taken for the due date of `deadline`.
pub fn record(deadline: &Deadline, done: Progress, action: Action) -> Progress {
    match action {
        Action::Remind => Progress {
            reminded_for: deadline.due,
            ..done
        },
        Action::Escalate => Progress {
            escalated_for: deadline.due,
            ..done
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;
    const DAY: Millis = 24 * HOUR;

    fn due_at(due: Millis) -> Deadline {
        Deadline {
            due: Some(due),
            finished: false,
            remind_before: DAY,
        }
    }

    /// Runs the decisions from `start` as a scheduler would, answering (when, action) fired.
    fn run(deadline: &Deadline, start: Millis) -> Vec<(Millis, Action)> {
        let (mut now, mut done, mut fired) = (start, Progress::default(), Vec::new());
        for _ in 0..10 {
            match next(deadline, &done, now) {
                Next::Now(action) => {
                    fired.push((now, action));
                    done = record(deadline, done, action);
                }
                Next::At(at, _) => now = at,
                Next::Nothing => return fired,
            }
        }
        panic!("the decisions never settled: {fired:?}");
    }

    #[test]
    fn a_reminder_a_day_ahead_then_an_escalation_at_the_due_date() {
        let deadline = due_at(10 * DAY);
        assert_eq!(
            next(&deadline, &Progress::default(), 0),
            Next::At(9 * DAY, Action::Remind)
        );
        assert_eq!(
            run(&deadline, 0),
            [(9 * DAY, Action::Remind), (10 * DAY, Action::Escalate)]
        );
    }

    #[test]
    fn finished_tasks_and_tasks_without_a_due_date_need_nothing() {
        let finished = Deadline {
            finished: true,
            ..due_at(DAY)
        };
        assert_eq!(next(&finished, &Progress::default(), 0), Next::Nothing);
        let undated = Deadline {
            due: None,
            ..due_at(DAY)
        };
        assert_eq!(next(&undated, &Progress::default(), 0), Next::Nothing);
    }

    #[test]
    fn a_task_finished_after_its_reminder_is_not_escalated() {
        let mut deadline = due_at(2 * DAY);
        let reminded = record(&deadline, Progress::default(), Action::Remind);
        assert_eq!(
            next(&deadline, &reminded, DAY + HOUR),
            Next::At(2 * DAY, Action::Escalate)
        );
        deadline.finished = true;
        assert_eq!(next(&deadline, &reminded, 3 * DAY), Next::Nothing);
    }

    #[test]
    fn a_due_date_inside_the_reminder_window_reminds_at_once() {
        assert_eq!(
            run(&due_at(2 * HOUR), 0),
            [(0, Action::Remind), (2 * HOUR, Action::Escalate)]
        );
    }

    #[test]
    fn a_due_date_already_past_is_escalated_without_a_reminder() {
        assert_eq!(run(&due_at(DAY), 2 * DAY), [(2 * DAY, Action::Escalate)]);
    }

    #[test]
    fn moving_the_due_date_starts_over_for_the_new_date() {
        let first = due_at(2 * DAY);
        let done = record(&first, Progress::default(), Action::Remind);
        // Moved later: a new reminder a day before the new date.
        let later = due_at(5 * DAY);
        assert_eq!(
            next(&later, &done, DAY + HOUR),
            Next::At(4 * DAY, Action::Remind)
        );
        // Moved earlier, into the reminder window: reminded again at once, for the new date.
        let earlier = due_at(DAY + 2 * HOUR);
        assert_eq!(next(&earlier, &done, DAY + HOUR), Next::Now(Action::Remind));
        // After an escalation, a new date is reminded and escalated again.
        let escalated = record(&first, done, Action::Escalate);
        assert_eq!(next(&first, &escalated, 3 * DAY), Next::Nothing);
        assert_eq!(
            next(&later, &escalated, 3 * DAY),
            Next::At(4 * DAY, Action::Remind)
        );
    }

    #[test]
    fn no_lead_time_means_no_reminder() {
        let deadline = Deadline {
            remind_before: 0,
            ..due_at(DAY)
        };
        assert_eq!(run(&deadline, 0), [(DAY, Action::Escalate)]);
    }

    #[test]
    fn each_action_fires_once_per_due_date() {
        let deadline = due_at(2 * DAY);
        let reminded = record(&deadline, Progress::default(), Action::Remind);
        // Asked again at the same moment (a restart): nothing new until the due date.
        assert_eq!(
            next(&deadline, &reminded, DAY),
            Next::At(2 * DAY, Action::Escalate)
        );
        let escalated = record(&deadline, reminded, Action::Escalate);
        assert_eq!(next(&deadline, &escalated, 10 * DAY), Next::Nothing);
    }
}
