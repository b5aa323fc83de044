//! From one merge to board events, without I/O.
//!
//! The tasks a merge touched are known from the merged changes' own operations
//! ([`Touched`]); each is read as it was at the heads before the merge and as the merged
//! document now says, and [`task_changes`] tells what happened between the two. Nothing else of
//! the board is read, so the cost follows the size of the merge, not of the board.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use automerge::{ActorId, Automerge, Change, ChangeHash};
use serde_json::{Value, json};
use taskflow_proto::board::{Board, ColumnId, Task, TaskId};
use taskflow_proto::events::{
    ColumnRef, CommentState, Envelope, EventData, TaskChange, TaskState, task_changes,
};

use crate::doc::projection::Touched;

/// The board a document is: where its events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardRef {
    pub workspace_id: String,
    pub project_id: String,
}

/// One merge, as the document actor saw it.
#[derive(Debug)]
pub struct Merge<'a> {
    /// The merged document.
    pub doc: &'a Automerge,
    /// The document's heads before the merge (empty for a board's first upload).
    pub before: &'a [ChangeHash],
    pub heads: &'a [ChangeHash],
    /// The merged changes, in the order they were applied.
    pub changes: &'a [Change],
    pub touched: &'a Touched,
    /// The user each change author (actor id) belongs to.
    pub authors: &'a HashMap<ActorId, Arc<str>>,
}

/// The events `merge` makes of `board`'s tasks, in order per task.
pub fn board_events(board: &BoardRef, merge: &Merge<'_>, now_ms: i64) -> Vec<Envelope> {
    let ids = touched_ids(merge);
    if ids.is_empty() {
        return Vec::new();
    }
    let columns = Board::read_columns(merge.doc).unwrap_or_default();
    let column_name = |id: &ColumnId| columns.iter().find(|c| &c.id == id).map(|c| c.name.clone());
    let heads: Vec<String> = merge.heads.iter().map(ToString::to_string).collect();
    let mut events = Vec::new();
    for id in ids {
        let old = read(merge.doc, &id, Some(merge.before));
        let new = read(merge.doc, &id, None);
        let changes = task_changes(old.as_ref(), new.as_ref());
        if changes.is_empty() {
            continue;
        }
        let sources = merge
            .touched
            .sources
            .get(&id)
            .map_or(&[][..], Vec::as_slice);
        let actor = sources
            .last()
            .and_then(|&i| merge.changes.get(i))
            .and_then(|c| merge.authors.get(c.actor_id()))
            .map(|user| user.to_string());
        let hashes: Vec<String> = sources
            .iter()
            .filter_map(|&i| merge.changes.get(i))
            .map(|c| c.hash().to_string())
            .collect();
        let shown = new.as_ref().or(old.as_ref());
        let state = shown.map(|t| TaskState::of(t, column_name(&t.column).as_deref()));
        for change in changes {
            let mut data = EventData {
                actor: actor.clone(),
                workspace_id: Some(board.workspace_id.clone()),
                project_id: Some(board.project_id.clone()),
                task_id: Some(id.to_string()),
                changes: hashes.clone(),
                heads: heads.clone(),
                task: state.clone(),
                ..EventData::default()
            };
            let kind = change.event_type();
            match change {
                TaskChange::Created
                | TaskChange::Archived
                | TaskChange::Restored
                | TaskChange::Deleted => {}
                TaskChange::Updated(fields) => data.fields = fields,
                TaskChange::StatusUpdated { from, to } => {
                    let column = |id: &ColumnId| {
                        json!(ColumnRef {
                            id: id.to_string(),
                            name: column_name(id),
                        })
                    };
                    data.from = Some(column(&from));
                    data.to = Some(column(&to));
                }
                TaskChange::Assigned { added, removed } => {
                    data.added = added;
                    data.removed = removed;
                }
                TaskChange::DueChanged { from, to } => {
                    let due = |ms: Option<i64>| {
                        ms.map_or(Value::Null, |ms| taskflow_proto::events::rfc3339(ms).into())
                    };
                    data.from = Some(due(from));
                    data.to = Some(due(to));
                }
                TaskChange::CommentAdded(comment) => {
                    data.comment = Some(CommentState::of(&comment));
                    // A comment is the commenter's, whoever merged it.
                    data.actor = Some(comment.author.clone());
                }
            }
            events.push(Envelope::new(
                uuid::Uuid::new_v4().to_string(),
                kind,
                now_ms,
                data,
            ));
        }
    }
    events
}

/// Every task the merge may have changed: those its operations touched, and when it replaced
/// the task map, every task there was or is.
fn touched_ids(merge: &Merge<'_>) -> BTreeSet<TaskId> {
    let mut ids: BTreeSet<TaskId> = merge.touched.tasks.keys().cloned().collect();
    if merge.touched.everything {
        ids.extend(Board::task_ids(merge.doc, None).unwrap_or_default());
        if !merge.before.is_empty() {
            ids.extend(Board::task_ids(merge.doc, Some(merge.before)).unwrap_or_default());
        }
    }
    ids
}

/// The task as it reads now (`at` `None`) or at some heads; a task that does not read as one
/// (or did not exist) is `None`.
fn read(doc: &Automerge, id: &TaskId, at: Option<&[ChangeHash]>) -> Option<Task> {
    let read = match at {
        // Before a board's first upload there was nothing.
        Some([]) => return None,
        Some(heads) => Board::read_task_at(doc, id, heads),
        None => Board::read_task(doc, id),
    };
    read.unwrap_or_else(|e| {
        tracing::debug!(task = %id, error = %e, "a task does not read; events treat it as absent");
        None
    })
}

#[cfg(test)]
mod tests {
    use automerge::AutoCommit;
    use taskflow_proto::board::ops::{self, NewTask, Position, TaskEdit};

    use super::*;

    fn board_ref() -> BoardRef {
        BoardRef {
            workspace_id: "w1".into(),
            project_id: "p1".into(),
        }
    }

    /// The events of the changes made to `doc` since `before`.
    fn events_since(doc: &mut AutoCommit, before: &[ChangeHash]) -> Vec<Envelope> {
        let changes = doc.get_changes(before);
        let actor = doc.get_actor().clone();
        let authors = HashMap::from([(actor, Arc::<str>::from("ann"))]);
        let heads = doc.get_heads();
        let touched = Touched::of_changes(doc.document(), &changes);
        let merge = Merge {
            doc: doc.document(),
            before,
            heads: &heads,
            changes: &changes,
            touched: &touched,
            authors: &authors,
        };
        board_events(&board_ref(), &merge, 0)
    }

    fn types(events: &[Envelope]) -> Vec<&str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn a_boards_first_upload_creates_each_task() {
        let mut doc = AutoCommit::new();
        ops::create_board(&mut doc, "b").expect("board");
        for title in ["one", "two"] {
            ops::add_task(&mut doc, NewTask::titled(title, "ann"), 1).expect("task");
        }
        let events = events_since(&mut doc, &[]);
        assert_eq!(types(&events), ["task.created", "task.created"]);
        let first = &events[0].data;
        assert_eq!(first.actor.as_deref(), Some("ann"));
        assert_eq!(first.project_id.as_deref(), Some("p1"));
        assert_eq!(first.heads, vec![doc.get_heads()[0].to_string()]);
        assert!(!first.changes.is_empty());
        assert_eq!(
            first.task.as_ref().map(|t| t.column.name.as_deref()),
            Some(Some("To do"))
        );
    }

    #[test]
    fn an_edit_reports_the_old_and_new_values_and_only_its_task() {
        let mut doc = AutoCommit::new();
        ops::create_board(&mut doc, "b").expect("board");
        let one = ops::add_task(&mut doc, NewTask::titled("one", "ann"), 1).expect("task");
        ops::add_task(&mut doc, NewTask::titled("two", "ann"), 1).expect("task");
        let before = doc.get_heads();
        let edit = TaskEdit {
            title: Some("first".into()),
            due: Some(Some(86_400_000)),
            ..TaskEdit::default()
        };
        ops::edit_task(&mut doc, &one, edit, 2).expect("edit");
        doc.commit();
        ops::move_task(&mut doc, &one, &ColumnId::new("done"), Position::Top, 3).expect("move");
        let events = events_since(&mut doc, &before);
        assert_eq!(
            types(&events),
            ["task.status.updated", "task.due_changed", "task.updated"]
        );
        assert!(events.iter().all(|e| e.partitionkey == one.as_str()));
        assert_eq!(
            events[0].data.from,
            Some(json!({"id": "todo", "name": "To do"}))
        );
        assert_eq!(
            events[0].data.to,
            Some(json!({"id": "done", "name": "Done"}))
        );
        assert_eq!(events[1].data.from, Some(Value::Null));
        assert_eq!(events[1].data.to, Some(json!("1970-01-02T00:00:00Z")));
        assert_eq!(events[2].data.fields["title"].from, json!("one"));
        assert_eq!(events[2].data.changes.len(), 2, "the edit and the move");
    }
}
