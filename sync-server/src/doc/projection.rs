//! From merged changes to projection rows, without I/O: which parts of the board the changes
//! touched, read off the changes' own operations (each operation's object located by its path
//! of parents, never by walking the document), then those tasks and columns as they now read
//! ([`delta`]).
//!
//! Touched tasks are re-read from the merged document, so the rows say what the document now
//! says whatever the order or concurrency of the edits behind them. (Automerge's patches would
//! name the same things, but building them walks every entry of each parent map: every task of
//! the board, for each change to one of them.)

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::legacy::{Key, ObjectId, OpId};
use automerge::{Automerge, Change, ChangeHash, Prop, ReadDoc};
use sha2::{Digest, Sha256};
use taskflow_proto::board::{Board, Column, ColumnId, CommentId, Task, TaskId};

use crate::store::{ProjectionDelta, TaskUpdate};

/// Which parts of one task changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parts {
    pub assignees: bool,
    pub labels: bool,
    pub comments: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        assignees: true,
        labels: true,
        comments: true,
    };

    fn union(self, other: Parts) -> Parts {
        Parts {
            assignees: self.assignees || other.assignees,
            labels: self.labels || other.labels,
            comments: self.comments || other.comments,
        }
    }
}

/// What a run of merged changes touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Everything must be re-read (the task map itself was replaced).
    pub everything: bool,
    pub columns: bool,
    pub tasks: BTreeMap<TaskId, Parts>,
    /// For each touched task, which of the changes (their indexes, ascending) touched it.
    pub sources: BTreeMap<TaskId, Vec<usize>>,
}

/// The keys from the root down to an object (`""` for a list position).
type ObjectPath = Option<Vec<String>>;

impl Touched {
    pub fn is_empty(&self) -> bool {
        !self.everything && !self.columns && self.tasks.is_empty()
    }

    /// What `changes`, all applied to `doc`, touched.
    pub fn of_changes(doc: &Automerge, changes: &[Change]) -> Touched {
        let mut touched = Touched::default();
        let mut paths: HashMap<(u64, automerge::ActorId), ObjectPath> = HashMap::new();
        for (index, change) in changes.iter().enumerate() {
            for op in change.decode().operations {
                let mut keys = match &op.obj {
                    ObjectId::Root => Vec::new(),
                    ObjectId::Id(OpId(counter, actor)) => {
                        let path = paths
                            .entry((*counter, actor.clone()))
                            .or_insert_with(|| path_of(doc, *counter, actor));
                        match path {
                            Some(path) => path.clone(),
                            // Not an object of this document: nothing of the board.
                            None => continue,
                        }
                    }
                };
                if let Key::Map(key) = &op.key {
                    keys.push(key.to_string());
                }
                touched.classify(&keys, index);
            }
        }
        touched
    }

    fn touch(&mut self, task: &str, parts: Parts, change: usize) {
        let entry = self.tasks.entry(TaskId::new(task)).or_default();
        *entry = entry.union(parts);
        let sources = self.sources.entry(TaskId::new(task)).or_default();
        if sources.last() != Some(&change) {
            sources.push(change);
        }
    }

    /// Notes an operation of change number `change` at `keys` (root first) of the board.
    fn classify(&mut self, keys: &[String], change: usize) {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        match keys.as_slice() {
            ["tasks"] => self.everything = true,
            ["tasks", task] => self.touch(task, Parts::ALL, change),
            ["tasks", task, "assignees", ..] => self.touch(
                task,
                Parts {
                    assignees: true,
                    ..Parts::default()
                },
                change,
            ),
            ["tasks", task, "labels", ..] => self.touch(
                task,
                Parts {
                    labels: true,
                    ..Parts::default()
                },
                change,
            ),
            ["tasks", task, "comments", ..] => self.touch(
                task,
                Parts {
                    comments: true,
                    ..Parts::default()
                },
                change,
            ),
            ["tasks", task, ..] => self.touch(task, Parts::default(), change),
            ["columns", ..] => self.columns = true,
            _ => {}
        }
    }
}

/// Where the object made by operation `counter@actor` sits: the keys from the root to it.
fn path_of(doc: &Automerge, counter: u64, actor: &automerge::ActorId) -> ObjectPath {
    let object = doc.import_obj(&format!("{counter}@{actor}")).ok()?;
    let mut keys: Vec<String> = doc
        .parents(&object)
        .ok()?
        .map(|parent| match parent.prop {
            Prop::Map(key) => key,
            Prop::Seq(_) => String::new(),
        })
        .collect();
    keys.reverse();
    Some(keys)
}

/// Longest key (task, column or comment id, label, assignee) the projection indexes. Any client
/// can write any string into a board; PostgreSQL refuses index entries over about 2.7 kB, and a
/// refused row would fail the whole commit. A task with a longer id is left out of the
/// projection, a longer label, assignee, comment or column id is left out of its task's row.
pub const MAX_KEY_BYTES: usize = 200;

/// PostgreSQL text cannot hold NUL: the projection shows U+FFFD in its place.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn clean_keys(set: &BTreeSet<String>) -> BTreeSet<String> {
    set.iter()
        .filter(|k| k.len() <= MAX_KEY_BYTES)
        .map(|k| clean(k))
        .collect()
}

/// The task as the projection can store it, or `None` when its id is too long to index.
fn storable(task: Task) -> Option<Task> {
    if task.id.as_str().len() > MAX_KEY_BYTES {
        tracing::warn!(
            bytes = task.id.as_str().len(),
            "a task id too long to index is left out of the projection"
        );
        return None;
    }
    Some(Task {
        id: TaskId::new(clean(task.id.as_str())),
        title: clean(&task.title),
        description: clean(&task.description),
        column: ColumnId::new(clean(task.column.as_str())),
        assignees: clean_keys(&task.assignees),
        labels: clean_keys(&task.labels),
        created_by: clean(&task.created_by),
        comments: task
            .comments
            .into_iter()
            .filter(|c| c.id.as_str().len() <= MAX_KEY_BYTES)
            .map(|mut c| {
                c.id = CommentId::new(clean(c.id.as_str()));
                c.author = clean(&c.author);
                c.body = clean(&c.body);
                c
            })
            .collect(),
        ..task
    })
}

fn storable_columns(columns: Vec<Column>) -> Vec<Column> {
    columns
        .into_iter()
        .filter(|c| c.id.as_str().len() <= MAX_KEY_BYTES)
        .map(|c| Column {
            id: ColumnId::new(clean(c.id.as_str())),
            name: clean(&c.name),
            ..c
        })
        .collect()
}

/// The version a task gets when a merge that touched it ends at `heads`: its ETag.
pub fn version(heads: &[ChangeHash]) -> String {
    let mut sorted = heads.to_vec();
    sorted.sort();
    let mut hasher = Sha256::new();
    for head in &sorted {
        hasher.update(head.0);
    }
    let digest = hasher.finalize();
    digest[..10].iter().map(|b| format!("{b:02x}")).collect()
}

/// The projection rows `touched` asks for, read from the merged document `doc` (at `heads`).
/// A task that no longer reads as one (vandalised by a client) leaves the projection.
pub fn delta(doc: &impl ReadDoc, touched: &Touched, heads: &[ChangeHash]) -> ProjectionDelta {
    if touched.everything {
        return rebuild(doc, heads);
    }
    let mut delta = ProjectionDelta {
        version: version(heads),
        ..ProjectionDelta::default()
    };
    if touched.columns {
        match Board::read_columns(doc) {
            Ok(columns) => delta.columns = Some(storable_columns(columns)),
            Err(e) => {
                tracing::warn!(error = %e, "board columns do not read; projection keeps the old ones")
            }
        }
    }
    for (id, parts) in &touched.tasks {
        if id.as_str().len() > MAX_KEY_BYTES {
            continue;
        }
        match Board::read_task(doc, id).map(|t| t.and_then(storable)) {
            Ok(Some(task)) => delta.tasks.push(TaskUpdate {
                task,
                assignees: parts.assignees,
                labels: parts.labels,
                comments: parts.comments,
            }),
            Ok(None) => delta.removed.push(TaskId::new(clean(id.as_str()))),
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "a task does not read; it leaves the projection");
                delta.removed.push(TaskId::new(clean(id.as_str())));
            }
        }
    }
    delta
}

/// Every row of the board, from the whole document: for boards stored before the projection
/// existed, and for a board's first upload.
pub fn rebuild(doc: &impl ReadDoc, heads: &[ChangeHash]) -> ProjectionDelta {
    let mut delta = ProjectionDelta {
        rebuild: true,
        version: version(heads),
        ..ProjectionDelta::default()
    };
    if heads.is_empty() {
        return delta;
    }
    delta.columns = Board::read_columns(doc).ok().map(storable_columns);
    let ids: Vec<TaskId> = match doc.get(automerge::ROOT, "tasks") {
        Ok(Some((automerge::Value::Object(automerge::ObjType::Map), tasks))) => {
            doc.keys(&tasks).map(TaskId::new).collect()
        }
        _ => Vec::new(),
    };
    for id in ids {
        if let Ok(Some(task)) = Board::read_task(doc, &id).map(|t| t.and_then(storable)) {
            delta.tasks.push(TaskUpdate {
                task,
                assignees: true,
                labels: true,
                comments: true,
            });
        }
    }
    delta
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};
    use taskflow_proto::board::ops::{self, NewTask, Position, TaskEdit};
    use taskflow_proto::board::{ColumnId, CommentId};

    use super::*;

    /// A board with one task "t1"; the diff cursor is past its creation.
    fn board() -> AutoCommit {
        let mut doc = AutoCommit::new();
        ops::create_board(&mut doc, "b").expect("board");
        let mut task = NewTask::titled("one", "ann");
        task.id = TaskId::new("t1");
        ops::add_task(&mut doc, task, 1).expect("task");
        doc.update_diff_cursor();
        doc
    }

    /// What the changes since the last call touched.
    fn touched_by(doc: &mut AutoCommit) -> Touched {
        let since = doc.diff_cursor();
        let changes = doc.get_changes(&since);
        let touched = Touched::of_changes(doc.document(), &changes);
        doc.update_diff_cursor();
        touched
    }

    fn parts(assignees: bool, labels: bool, comments: bool) -> Parts {
        Parts {
            assignees,
            labels,
            comments,
        }
    }

    #[test]
    fn a_new_task_is_touched_whole() {
        let mut doc = board();
        let mut task = NewTask::titled("two", "ann");
        task.id = TaskId::new("t2");
        ops::add_task(&mut doc, task, 2).expect("task");
        let touched = touched_by(&mut doc);
        assert_eq!(touched.tasks.len(), 1);
        assert_eq!(touched.tasks[&TaskId::new("t2")], Parts::ALL);
        assert!(!touched.columns && !touched.everything);
    }

    #[test]
    fn field_edits_touch_only_what_they_change() {
        let mut doc = board();
        let id = TaskId::new("t1");
        let edit = TaskEdit {
            title: Some("renamed".into()),
            ..TaskEdit::default()
        };
        ops::edit_task(&mut doc, &id, edit, 2).expect("edit");
        assert_eq!(touched_by(&mut doc).tasks[&id], parts(false, false, false));

        let edit = TaskEdit {
            labels: Some(BTreeSet::from(["bug".to_owned()])),
            ..TaskEdit::default()
        };
        ops::edit_task(&mut doc, &id, edit, 3).expect("edit");
        assert_eq!(touched_by(&mut doc).tasks[&id], parts(false, true, false));

        let edit = TaskEdit {
            assignees: Some(BTreeSet::from(["u1".to_owned()])),
            ..TaskEdit::default()
        };
        ops::edit_task(&mut doc, &id, edit, 4).expect("edit");
        assert_eq!(touched_by(&mut doc).tasks[&id], parts(true, false, false));

        ops::add_comment(&mut doc, &id, CommentId::new("c1"), "ann", "hi", 5).expect("comment");
        assert_eq!(touched_by(&mut doc).tasks[&id], parts(false, false, true));

        ops::move_task(&mut doc, &id, &ColumnId::new("done"), Position::Top, 6).expect("move");
        assert_eq!(touched_by(&mut doc).tasks[&id], parts(false, false, false));
    }

    #[test]
    fn column_edits_and_replaced_task_maps_are_noticed() {
        let mut doc = board();
        let columns = match doc.get(ROOT, "columns").expect("get") {
            Some((_, id)) => id,
            None => panic!("columns"),
        };
        let first = match doc.get(&columns, 0).expect("get") {
            Some((_, id)) => id,
            None => panic!("first column"),
        };
        doc.put(&first, "name", "Backlog").expect("rename");
        let touched = touched_by(&mut doc);
        assert!(touched.columns && touched.tasks.is_empty());

        doc.put_object(ROOT, "tasks", automerge::ObjType::Map)
            .expect("replace the task map");
        assert!(touched_by(&mut doc).everything);
    }

    #[test]
    fn the_delta_reads_touched_tasks_and_drops_vanished_ones() {
        let mut doc = board();
        let mut touched = Touched::default();
        touched.touch("t1", parts(true, false, false), 0);
        touched.touch("gone", Parts::default(), 0);
        let heads = doc.get_heads();
        let delta = delta(doc.document(), &touched, &heads);
        assert_eq!(delta.tasks.len(), 1);
        assert_eq!(delta.tasks[0].task.title, "one");
        assert!(delta.tasks[0].assignees && !delta.tasks[0].comments);
        assert_eq!(delta.removed, vec![TaskId::new("gone")]);
        assert_eq!(delta.version, version(&heads));
        assert_eq!(delta.version.len(), 20);
    }

    #[test]
    fn what_the_database_cannot_index_or_hold_is_left_out_or_replaced() {
        let mut doc = board();
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let mut task = NewTask::titled("nul\0here", "ann");
        task.id = TaskId::new("t2");
        task.labels = BTreeSet::from(["ok".to_owned(), long.clone()]);
        ops::add_task(&mut doc, task, 2).expect("task");
        let mut hidden = NewTask::titled("hidden", "ann");
        hidden.id = TaskId::new(long.clone());
        ops::add_task(&mut doc, hidden, 2).expect("task");
        let touched = touched_by(&mut doc);
        let heads = doc.get_heads();
        let delta = delta(doc.document(), &touched, &heads);
        assert_eq!(delta.tasks.len(), 1, "the long id is left out");
        let task = &delta.tasks[0].task;
        assert_eq!(task.title, "nul\u{FFFD}here");
        assert_eq!(task.labels, BTreeSet::from(["ok".to_owned()]));
        assert!(delta.removed.is_empty());
    }

    #[test]
    fn a_rebuild_holds_every_task_and_the_columns() {
        let mut doc = board();
        let heads = doc.get_heads();
        let delta = rebuild(doc.document(), &heads);
        assert!(delta.rebuild);
        assert_eq!(delta.columns.as_ref().map(Vec::len), Some(3));
        assert_eq!(delta.tasks.len(), 1);
    }
}
