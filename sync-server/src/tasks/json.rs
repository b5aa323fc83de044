//! The JSON of the tasks API: request bodies and queries as they arrive, parsed into checked
//! values (lengths, dates, positions), and the task and comment views answered.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize};
use taskflow_proto::board::ops::Position;
use taskflow_proto::board::{Priority, TaskId};

use crate::auth::http::ApiError;
use crate::store::{CommentRecord, TaskRecord};

/// Longest title, description, label and comment (in characters), and most labels or
/// assignees on one task.
pub const MAX_TITLE: usize = 500;
pub const MAX_DESCRIPTION: usize = 20_000;
pub const MAX_LABEL: usize = 50;
pub const MAX_COMMENT: usize = 10_000;
pub const MAX_SET: usize = 50;
/// Page sizes of listings.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

pub use crate::auth::http::invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PriorityJson {
    None,
    Low,
    Medium,
    High,
    Urgent,
}

impl From<PriorityJson> for Priority {
    fn from(p: PriorityJson) -> Priority {
        match p {
            PriorityJson::None => Priority::None,
            PriorityJson::Low => Priority::Low,
            PriorityJson::Medium => Priority::Medium,
            PriorityJson::High => Priority::High,
            PriorityJson::Urgent => Priority::Urgent,
        }
    }
}

/// Where a card goes in its column: `"top"`, `"bottom"`, `{"before": taskId}` or
/// `{"after": taskId}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PositionJson {
    Top,
    Bottom,
    Before(String),
    After(String),
}

impl From<PositionJson> for Position {
    fn from(p: PositionJson) -> Position {
        match p {
            PositionJson::Top => Position::Top,
            PositionJson::Bottom => Position::Bottom,
            PositionJson::Before(id) => Position::Before(TaskId::new(id)),
            PositionJson::After(id) => Position::After(TaskId::new(id)),
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct CreateTaskBody {
    pub project_id: String,
    pub title: String,
    pub description: Option<String>,
    /// A column id of the board (default: its first column).
    pub column: Option<String>,
    /// Default: the bottom of the column.
    pub position: Option<PositionJson>,
    /// Members of the workspace, by user id or email.
    pub assignees: Option<Vec<String>>,
    pub labels: Option<Vec<String>>,
    pub priority: Option<PriorityJson>,
    /// RFC 3339 (`2026-12-24T17:00:00Z`), or a date (`2026-12-24`: the end of that day, UTC).
    pub due: Option<String>,
}

/// Absent stays `None`; `null` becomes `Some(None)` (clear the field).
/// A field that is there, even as `null`, is `Some` (`Some(None)`: cleared); a missing one is
/// `None` (unchanged).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Any field given is changed; the others stay. `column` and/or `position` move the card.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct UpdateTaskBody {
    pub title: Option<String>,
    pub description: Option<String>,
    pub column: Option<String>,
    pub position: Option<PositionJson>,
    pub assignees: Option<Vec<String>>,
    pub labels: Option<Vec<String>>,
    pub priority: Option<PriorityJson>,
    /// RFC 3339 or a date; `null` removes the due date.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub due: Option<Option<String>>,
    pub archived: Option<bool>,
}

impl UpdateTaskBody {
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.column.is_none()
            && self.position.is_none()
            && self.assignees.is_none()
            && self.labels.is_none()
            && self.priority.is_none()
            && self.due.is_none()
            && self.archived.is_none()
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommentBody {
    pub body: String,
}

/// `GET /api/v1/projects/{id}/tasks` filters; all that are given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ListQuery {
    /// A column id.
    pub column: Option<String>,
    /// A column's name (any case) or id: the task's status.
    pub status: Option<String>,
    /// A user id, email, or `me`.
    pub assignee: Option<String>,
    pub label: Option<String>,
    pub due_before: Option<String>,
    pub due_after: Option<String>,
    /// Text the title contains (any case; on SQLite, case folds for ASCII letters only).
    pub q: Option<String>,
    /// Archived tasks instead of live ones.
    #[serde(default)]
    pub archived: bool,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The query parameters the listings take, for the OpenAPI document: (name, description).
pub const LIST_PARAMETERS: &[(&str, &str)] = &[
    ("column", "a column id"),
    ("status", "a column's name (any case) or id"),
    ("assignee", "a user id, email, or `me`"),
    ("label", "a label"),
    ("dueBefore", "RFC 3339 or a date: due strictly before"),
    ("dueAfter", "RFC 3339 or a date: due at or after"),
    ("q", "text the title contains (any case)"),
    ("archived", "`true` for archived tasks instead of live ones"),
    ("limit", "page size, 1 to 200 (default 50)"),
    ("cursor", "`nextCursor` of the previous page"),
];
pub const PAGE_PARAMETERS: &[(&str, &str)] = &[
    ("limit", "page size, 1 to 200 (default 50)"),
    ("cursor", "`nextCursor` of the previous page"),
];

/// Text of at most `max` characters; trimmed and non-empty when `required`.
fn text(value: &str, field: &str, max: usize, required: bool) -> Result<String, ApiError> {
    let value = if required { value.trim() } else { value };
    if required && value.is_empty() {
        return Err(invalid(&format!("{field} must not be empty")));
    }
    if value.chars().count() > max {
        return Err(invalid(&format!("{field} is longer than {max} characters")));
    }
    Ok(value.to_owned())
}

/// A title: trimmed, 1 to [`MAX_TITLE`] characters.
pub fn title(value: &str) -> Result<String, ApiError> {
    text(value, "title", MAX_TITLE, true)
}

pub fn description(value: &str) -> Result<String, ApiError> {
    text(value, "description", MAX_DESCRIPTION, false)
}

/// A comment's body: trimmed, 1 to [`MAX_COMMENT`] characters.
pub fn comment(value: &str) -> Result<String, ApiError> {
    text(value, "a comment's body", MAX_COMMENT, true)
}

pub fn labels(list: &[String]) -> Result<BTreeSet<String>, ApiError> {
    if list.len() > MAX_SET {
        return Err(invalid(&format!("at most {MAX_SET} labels")));
    }
    list.iter()
        .map(|label| {
            let label = label.trim();
            if label.is_empty() || label.chars().count() > MAX_LABEL {
                Err(invalid(&format!(
                    "a label is 1 to {MAX_LABEL} characters, not `{label}`"
                )))
            } else {
                Ok(label.to_owned())
            }
        })
        .collect()
}

/// A due date: RFC 3339, or a date meaning the end of that day (UTC); milliseconds.
pub fn due(text: &str, field: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at.as_millisecond());
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>()
        && let Ok(end) = date
            .to_datetime(jiff::civil::time(23, 59, 59, 999_000_000))
            .to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(end.timestamp().as_millisecond());
    }
    Err(invalid(&format!(
        "{field} must be an RFC 3339 time (2026-12-24T17:00:00Z) or a date (2026-12-24), not `{text}`"
    )))
}

pub fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=MAX_PAGE => Ok(n),
        _ => Err(invalid(&format!("limit is 1 to {MAX_PAGE}"))),
    }
}

/// A listing position: the (created at, id) of the last item answered.
pub fn encode_cursor(created_at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{created_at}:{id}"))
}

pub fn decode_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    let bad = || invalid("cursor is not one this server gave out (pass nextCursor as it is)");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    if id.contains('\0') {
        return Err(bad());
    }
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskJson {
    id: String,
    project_id: String,
    title: String,
    description: String,
    /// Its column's id.
    column: String,
    /// Its order key within the column (ascending, then by id).
    position: String,
    assignees: Vec<String>,
    labels: Vec<String>,
    priority: String,
    /// RFC 3339.
    due: Option<String>,
    created_by: String,
    created_at: String,
    updated_at: String,
    archived: bool,
    comment_count: i64,
    /// Changes whenever the task does; also its `ETag`.
    version: String,
}

impl From<TaskRecord> for TaskJson {
    fn from(t: TaskRecord) -> TaskJson {
        TaskJson {
            id: t.id,
            project_id: t.project_id,
            title: t.title,
            description: t.description,
            column: t.column_id,
            position: t.position,
            assignees: t.assignees,
            labels: t.labels,
            priority: t.priority,
            due: t.due_at.map(rfc3339),
            created_by: t.created_by,
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            archived: t.archived,
            comment_count: t.comment_count,
            version: t.version,
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TasksJson {
    pub tasks: Vec<TaskJson>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommentJson {
    id: String,
    task_id: String,
    /// The author's user id.
    author: String,
    body: String,
    created_at: String,
}

impl From<CommentRecord> for CommentJson {
    fn from(c: CommentRecord) -> CommentJson {
        CommentJson {
            id: c.id,
            task_id: c.task_id,
            author: c.author,
            body: c.body,
            created_at: rfc3339(c.created_at),
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommentsJson {
    pub comments: Vec<CommentJson>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_dates_take_rfc3339_or_a_date() {
        assert_eq!(due("1970-01-01T00:00:01Z", "due").ok(), Some(1000));
        assert_eq!(due("1970-01-01T01:00:00+01:00", "due").ok(), Some(0));
        assert_eq!(due("1970-01-01", "due").ok(), Some(86_399_999));
        for bad in ["tomorrow", "2026-13-01", "2026-12-24T25:00:00Z", ""] {
            assert!(due(bad, "due").is_err(), "{bad}");
        }
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(title("  Ship it ").ok().as_deref(), Some("Ship it"));
        assert!(title("   ").is_err());
        assert!(title(&"x".repeat(MAX_TITLE)).is_ok());
        assert!(title(&"x".repeat(MAX_TITLE + 1)).is_err());
    }

    #[test]
    fn labels_are_trimmed_bounded_and_deduplicated() {
        let set = labels(&["bug".into(), " bug ".into(), "ui".into()]).expect("labels");
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec!["bug", "ui"]);
        assert!(labels(&[String::new()]).is_err());
        assert!(labels(&["x".repeat(MAX_LABEL + 1)]).is_err());
        assert!(labels(&vec!["l".to_owned(); MAX_SET + 1]).is_err());
    }

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let cursor = encode_cursor(42, "t:1");
        assert_eq!(decode_cursor(&cursor).ok(), Some((42, "t:1".to_owned())));
        assert!(decode_cursor("not a cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("x:y")).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("1:a\0b")).is_err());
    }

    #[test]
    fn update_bodies_tell_null_from_absent() {
        let cleared: UpdateTaskBody = serde_json::from_str(r#"{"due": null}"#).expect("json");
        assert_eq!(cleared.due, Some(None));
        let absent: UpdateTaskBody = serde_json::from_str(r#"{"title": "x"}"#).expect("json");
        assert_eq!(absent.due, None);
        assert!(!absent.is_empty());
        let empty: UpdateTaskBody = serde_json::from_str("{}").expect("json");
        assert!(empty.is_empty());
    }

    #[test]
    fn positions_are_words_or_neighbours() {
        let top: PositionJson = serde_json::from_str(r#""top""#).expect("json");
        assert_eq!(top, PositionJson::Top);
        let after: PositionJson = serde_json::from_str(r#"{"after": "t1"}"#).expect("json");
        assert_eq!(after, PositionJson::After("t1".into()));
        assert!(serde_json::from_str::<PositionJson>(r#""middle""#).is_err());
    }
}
