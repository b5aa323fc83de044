//! Domain events: what happened to boards, workspaces and people, in the form other systems
//! (Kafka consumers, webhooks, the notification and deadline engines) rely on.
//!
//! Every event travels as one CloudEvents 1.0 JSON object (structured mode, [`Envelope`]).
//! `EVENTS.md` beside this crate documents each type and its `data`; [`DATA_SCHEMA`] names the
//! version of that layout, and changes to it that could break a reader get a new version.
//!
//! Board events are derived from merged changes: [`task_changes`] compares one task as it was
//! before a merge with what the merged document now says, so concurrent, conflicting edits are
//! reported as their merged outcome.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::board::{ColumnId, Comment, Millis, Task};

/// The CloudEvents version of the envelope.
pub const SPEC_VERSION: &str = "1.0";
/// The version of the `data` layout (the envelope's `dataschema`).
pub const DATA_SCHEMA: &str = "urn:taskflow:events:v1";
pub const CONTENT_TYPE: &str = "application/json";

/// The types of event, as the envelope's `type` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    TaskCreated,
    TaskUpdated,
    TaskStatusUpdated,
    TaskAssigned,
    TaskDueChanged,
    TaskArchived,
    TaskRestored,
    TaskDeleted,
    /// Emitted by the deadline engine: a task's reminder time has come.
    TaskDueSoon,
    /// Emitted by the deadline engine: a task is past its due date and not done.
    TaskOverdue,
    /// Emitted by the deadline engine with `task.overdue`: an alert for operators' systems.
    SystemAlert,
    CommentAdded,
    ProjectCreated,
    UserRegistered,
    UserInvited,
    MemberJoined,
    MemberRoleChanged,
    MemberRemoved,
}

impl EventType {
    pub const ALL: [EventType; 18] = [
        EventType::TaskCreated,
        EventType::TaskUpdated,
        EventType::TaskStatusUpdated,
        EventType::TaskAssigned,
        EventType::TaskDueChanged,
        EventType::TaskArchived,
        EventType::TaskRestored,
        EventType::TaskDeleted,
        EventType::TaskDueSoon,
        EventType::TaskOverdue,
        EventType::SystemAlert,
        EventType::CommentAdded,
        EventType::ProjectCreated,
        EventType::UserRegistered,
        EventType::UserInvited,
        EventType::MemberJoined,
        EventType::MemberRoleChanged,
        EventType::MemberRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TaskCreated => "task.created",
            EventType::TaskUpdated => "task.updated",
            EventType::TaskStatusUpdated => "task.status.updated",
            EventType::TaskAssigned => "task.assigned",
            EventType::TaskDueChanged => "task.due_changed",
            EventType::TaskArchived => "task.archived",
            EventType::TaskRestored => "task.restored",
            EventType::TaskDeleted => "task.deleted",
            EventType::TaskDueSoon => "task.due_soon",
            EventType::TaskOverdue => "task.overdue",
            EventType::SystemAlert => "notification.system.alert",
            EventType::CommentAdded => "comment.added",
            EventType::ProjectCreated => "project.created",
            EventType::UserRegistered => "user.registered",
            EventType::UserInvited => "user.invited",
            EventType::MemberJoined => "member.joined",
            EventType::MemberRoleChanged => "member.role_changed",
            EventType::MemberRemoved => "member.removed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One event in its CloudEvents 1.0 envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    /// Unique per event; a consumer that sees an id twice has seen the same event twice.
    pub id: String,
    /// Where it happened: `/workspaces/{id}/projects/{id}`, `/workspaces/{id}` or `/users`.
    pub source: String,
    /// One of [`EventType`]'s names.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the server derived it (RFC 3339).
    pub time: String,
    /// What it is about within `source`: `tasks/{id}`, `members/{id}`, `users/{id}`, ….
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub datacontenttype: String,
    pub dataschema: String,
    /// CloudEvents partitioning extension: the Kafka message key. Events with one key are
    /// delivered in the order they happened.
    pub partitionkey: String,
    pub data: EventData,
}

impl Envelope {
    /// An envelope for `data`, keyed and addressed from the ids it carries.
    pub fn new(id: String, kind: EventType, time_ms: Millis, data: EventData) -> Envelope {
        let source = match (&data.workspace_id, &data.project_id) {
            (Some(w), Some(p)) => format!("/workspaces/{w}/projects/{p}"),
            (Some(w), None) => format!("/workspaces/{w}"),
            _ => "/users".to_owned(),
        };
        let subject = data
            .task_id
            .as_ref()
            .map(|task| format!("tasks/{task}"))
            .or_else(|| data.member_id.as_ref().map(|m| format!("members/{m}")))
            .or_else(|| data.user.as_ref().map(|u| format!("users/{}", u.id)))
            .or_else(|| {
                data.invitation
                    .as_ref()
                    .map(|i| format!("invitations/{}", i.id))
            });
        let partitionkey = data
            .task_id
            .clone()
            .or_else(|| data.project_id.clone())
            .or_else(|| data.workspace_id.clone())
            .or_else(|| data.user.as_ref().map(|u| u.id.clone()))
            .unwrap_or_default();
        Envelope {
            specversion: SPEC_VERSION.to_owned(),
            id,
            source,
            kind: kind.as_str().to_owned(),
            time: rfc3339(time_ms),
            subject,
            datacontenttype: CONTENT_TYPE.to_owned(),
            dataschema: DATA_SCHEMA.to_owned(),
            partitionkey,
            data,
        }
    }
}

/// An event's `data`: the ids it concerns and who acted, then what happened (the fields a type
/// uses are listed in `EVENTS.md`; the others are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    /// The user whose action it was (for a board event: the author of the last merged change
    /// that touched the task). `None` for what the server did on its own.
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Board events: the hashes (hex) of the merged changes that touched the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Board events: the board document's heads (hex) after the merge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heads: Vec<String>,
    /// Task events: the task as the merged document now says (before, for `task.deleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskState>,
    /// `task.updated`: each changed field, old → new.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldChange>,
    /// `task.status.updated`, `task.due_changed` and member events: old → new (`null`: none,
    /// as a due date removed).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub from: Option<Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub to: Option<Value>,
    /// `task.assigned`: who joined and who left the assignees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<CommentState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<ProjectState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<InvitationState>,
    /// Member events: the member's user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
}

/// A field that is there, even as `null`, is `Some`; only a missing one is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

/// A column as events name it: its id, and its name when the board has such a column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRef {
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskState {
    pub id: String,
    pub title: String,
    pub description: String,
    pub column: ColumnRef,
    pub position: String,
    pub assignees: Vec<String>,
    pub labels: Vec<String>,
    pub priority: String,
    /// RFC 3339.
    pub due: Option<String>,
    pub archived: bool,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub comment_count: usize,
}

impl TaskState {
    /// `task` as events show it; `column_name` names its column on the board.
    pub fn of(task: &Task, column_name: Option<&str>) -> TaskState {
        TaskState {
            id: task.id.to_string(),
            title: task.title.clone(),
            description: task.description.clone(),
            column: ColumnRef {
                id: task.column.to_string(),
                name: column_name.map(str::to_owned),
            },
            position: task.order.as_str().to_owned(),
            assignees: task.assignees.iter().cloned().collect(),
            labels: task.labels.iter().cloned().collect(),
            priority: task.priority.as_str().to_owned(),
            due: task.due.map(rfc3339),
            archived: task.archived,
            created_by: task.created_by.clone(),
            created_at: rfc3339(task.created_at),
            updated_at: rfc3339(task.updated_at),
            comment_count: task.comments.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentState {
    pub id: String,
    pub author: String,
    pub body: String,
    pub created_at: String,
}

impl CommentState {
    pub fn of(comment: &Comment) -> CommentState {
        CommentState {
            id: comment.id.to_string(),
            author: comment.author.clone(),
            body: comment.body.clone(),
            created_at: rfc3339(comment.created_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectState {
    pub id: String,
    pub name: String,
    pub document_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserState {
    pub id: String,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvitationState {
    pub id: String,
    pub email: String,
    pub role: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// What happened to one task between two states of its board.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskChange {
    Created,
    /// Fields other than those with events of their own (column, assignees, due date,
    /// archived, comments), old → new.
    Updated(BTreeMap<String, FieldChange>),
    StatusUpdated {
        from: ColumnId,
        to: ColumnId,
    },
    Assigned {
        added: Vec<String>,
        removed: Vec<String>,
    },
    DueChanged {
        from: Option<Millis>,
        to: Option<Millis>,
    },
    Archived,
    Restored,
    CommentAdded(Comment),
    Deleted,
}

impl TaskChange {
    pub fn event_type(&self) -> EventType {
        match self {
            TaskChange::Created => EventType::TaskCreated,
            TaskChange::Updated(_) => EventType::TaskUpdated,
            TaskChange::StatusUpdated { .. } => EventType::TaskStatusUpdated,
            TaskChange::Assigned { .. } => EventType::TaskAssigned,
            TaskChange::DueChanged { .. } => EventType::TaskDueChanged,
            TaskChange::Archived => EventType::TaskArchived,
            TaskChange::Restored => EventType::TaskRestored,
            TaskChange::CommentAdded(_) => EventType::CommentAdded,
            TaskChange::Deleted => EventType::TaskDeleted,
        }
    }
}

/// What happened to a task that read as `old` before a merge and reads as `new` after it, in
/// the order a reader would tell it: created, then its column, assignees, due date, other
/// fields, new comments, archiving. A new task's assignees and comments are reported too, so
/// whoever a task concerns learns of it from the events alone.
pub fn task_changes(old: Option<&Task>, new: Option<&Task>) -> Vec<TaskChange> {
    let (old, new) = match (old, new) {
        (None, None) => return Vec::new(),
        (Some(_), None) => return vec![TaskChange::Deleted],
        (old, Some(new)) => (old, new),
    };
    let mut out = Vec::new();
    if old.is_none() {
        out.push(TaskChange::Created);
    }
    if let Some(old) = old
        && old.column != new.column
    {
        out.push(TaskChange::StatusUpdated {
            from: old.column.clone(),
            to: new.column.clone(),
        });
    }
    let empty = BTreeSet::new();
    let old_assignees = old.map_or(&empty, |t| &t.assignees);
    let added: Vec<String> = new.assignees.difference(old_assignees).cloned().collect();
    let removed: Vec<String> = old_assignees.difference(&new.assignees).cloned().collect();
    if !added.is_empty() || !removed.is_empty() {
        out.push(TaskChange::Assigned { added, removed });
    }
    if let Some(old) = old {
        if old.due != new.due {
            out.push(TaskChange::DueChanged {
                from: old.due,
                to: new.due,
            });
        }
        let fields = field_changes(old, new);
        if !fields.is_empty() {
            out.push(TaskChange::Updated(fields));
        }
    }
    let seen: BTreeSet<&str> = old
        .map(|t| t.comments.iter().map(|c| c.id.as_str()).collect())
        .unwrap_or_default();
    for comment in &new.comments {
        if !seen.contains(comment.id.as_str()) {
            out.push(TaskChange::CommentAdded(comment.clone()));
        }
    }
    match (old.map(|t| t.archived), new.archived) {
        (Some(false) | None, true) => out.push(TaskChange::Archived),
        (Some(true), false) => out.push(TaskChange::Restored),
        _ => {}
    }
    out
}

/// The fields `task.updated` reports (its `updatedAt` moves with every edit and is left out).
fn field_changes(old: &Task, new: &Task) -> BTreeMap<String, FieldChange> {
    let mut fields = BTreeMap::new();
    let mut note = |name: &str, from: Value, to: Value| {
        if from != to {
            fields.insert(name.to_owned(), FieldChange { from, to });
        }
    };
    note("title", old.title.clone().into(), new.title.clone().into());
    note(
        "description",
        old.description.clone().into(),
        new.description.clone().into(),
    );
    note(
        "priority",
        old.priority.as_str().into(),
        new.priority.as_str().into(),
    );
    note(
        "labels",
        old.labels.iter().cloned().collect::<Vec<_>>().into(),
        new.labels.iter().cloned().collect::<Vec<_>>().into(),
    );
    // A move within the column; a move to another column is `task.status.updated`'s.
    if old.column == new.column {
        note(
            "position",
            old.order.as_str().into(),
            new.order.as_str().into(),
        );
    }
    fields
}

/// Milliseconds since the epoch as RFC 3339 (UTC), as every time in an event is written.
pub fn rfc3339(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{CommentId, OrderKey, Priority, TaskId};

    fn task() -> Task {
        Task {
            id: TaskId::new("t1"),
            title: "Write the report".into(),
            description: String::new(),
            column: ColumnId::new("todo"),
            order: OrderKey::between(None, None).expect("a first key"),
            assignees: BTreeSet::new(),
            labels: BTreeSet::new(),
            priority: Priority::None,
            due: None,
            created_by: "u1".into(),
            created_at: 1_000,
            updated_at: 1_000,
            archived: false,
            comments: Vec::new(),
        }
    }

    fn types(changes: &[TaskChange]) -> Vec<&'static str> {
        changes.iter().map(|c| c.event_type().as_str()).collect()
    }

    #[test]
    fn a_new_task_is_created_then_assigned_and_commented() {
        let mut new = task();
        new.assignees.insert("u2".into());
        new.comments.push(Comment {
            id: CommentId::new("c1"),
            author: "u1".into(),
            body: "first".into(),
            created_at: 1_000,
        });
        let changes = task_changes(None, Some(&new));
        assert_eq!(
            types(&changes),
            ["task.created", "task.assigned", "comment.added"]
        );
        assert_eq!(
            changes[1],
            TaskChange::Assigned {
                added: vec!["u2".into()],
                removed: vec![]
            }
        );
    }

    #[test]
    fn each_kind_of_edit_has_its_own_event() {
        let old = task();
        let mut new = task();
        new.column = ColumnId::new("done");
        new.assignees.insert("u3".into());
        new.due = Some(5_000);
        new.title = "Write the final report".into();
        new.priority = Priority::High;
        new.updated_at = 2_000;
        new.archived = true;
        let changes = task_changes(Some(&old), Some(&new));
        assert_eq!(
            types(&changes),
            [
                "task.status.updated",
                "task.assigned",
                "task.due_changed",
                "task.updated",
                "task.archived"
            ]
        );
        let TaskChange::Updated(fields) = &changes[3] else {
            panic!("not an update: {:?}", changes[3]);
        };
        assert_eq!(
            fields.keys().map(String::as_str).collect::<Vec<_>>(),
            ["priority", "title"],
            "a move to another column is not also a position change, and updatedAt is no field"
        );
        assert_eq!(fields["title"].from, Value::from("Write the report"));
        assert_eq!(fields["title"].to, Value::from("Write the final report"));
    }

    #[test]
    fn nothing_changed_is_no_event_and_a_removed_task_is_deleted() {
        let mut touched = task();
        touched.updated_at = 9_000;
        assert!(task_changes(Some(&task()), Some(&touched)).is_empty());
        assert_eq!(types(&task_changes(Some(&task()), None)), ["task.deleted"]);
        let mut archived = task();
        archived.archived = true;
        assert_eq!(
            types(&task_changes(Some(&archived), Some(&task()))),
            ["task.restored"]
        );
    }

    #[test]
    fn the_envelope_is_cloudevents_json_keyed_by_task() {
        let data = EventData {
            actor: Some("u1".into()),
            workspace_id: Some("w1".into()),
            project_id: Some("p1".into()),
            task_id: Some("t1".into()),
            task: Some(TaskState::of(&task(), Some("To do"))),
            ..EventData::default()
        };
        let envelope = Envelope::new("e1".into(), EventType::TaskCreated, 0, data);
        let json = serde_json::to_value(&envelope).expect("serializes");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "task.created");
        assert_eq!(json["source"], "/workspaces/w1/projects/p1");
        assert_eq!(json["subject"], "tasks/t1");
        assert_eq!(json["partitionkey"], "t1");
        assert_eq!(json["time"], "1970-01-01T00:00:00Z");
        assert_eq!(json["data"]["task"]["column"]["name"], "To do");
        assert!(
            json["data"].get("fields").is_none(),
            "unused parts are left out"
        );
        let back: Envelope = serde_json::from_value(json).expect("parses");
        assert_eq!(back, envelope);
    }
}
