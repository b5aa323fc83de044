//! "What changed" notices for UIs, read off the patches of one local edit or one remote merge.
//!
//! Patches come from automerge's `PatchLog` for exactly the operations applied, so describing a
//! change costs in proportion to the change, never to the board.

use std::collections::{BTreeMap, BTreeSet};

use automerge::{Patch, PatchAction, Prop};
use taskflow_proto::DocumentId;
use taskflow_proto::board::TaskId;

/// Who made the change a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An edit made through this client.
    Local,
    /// Changes received from the server (other people's edits, or this user's from elsewhere).
    Remote,
}

/// What happened to one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskChange {
    /// The task appeared (its fields are all new; `fields` lists none of them).
    pub created: bool,
    /// The task was deleted from the document (archiving is a field change, not this).
    pub removed: bool,
    /// Schema field names that changed: `title`, `column`, `order`, `comments`, …
    pub fields: BTreeSet<String>,
}

/// One "board changed" notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardChange {
    pub document_id: DocumentId,
    pub origin: Origin,
    /// Board-level fields that changed: `name`, `columns`, `schemaVersion`, `tasks` (replaced).
    pub board_fields: BTreeSet<String>,
    pub tasks: BTreeMap<TaskId, TaskChange>,
}

impl BoardChange {
    pub fn describe(document_id: DocumentId, origin: Origin, patches: &[Patch]) -> BoardChange {
        let mut change = BoardChange {
            document_id,
            origin,
            board_fields: BTreeSet::new(),
            tasks: BTreeMap::new(),
        };
        for patch in patches {
            change.add(patch);
        }
        change
    }

    pub fn is_empty(&self) -> bool {
        self.board_fields.is_empty() && self.tasks.is_empty()
    }

    fn add(&mut self, patch: &Patch) {
        // The location of the change: the path to the patched object, then the key in it.
        let mut location: Vec<&str> = patch
            .path
            .iter()
            .map(|(_, prop)| match prop {
                Prop::Map(key) => key.as_str(),
                Prop::Seq(_) => "",
            })
            .collect();
        let (key, put_object, deleted) = match &patch.action {
            PatchAction::PutMap { key, value, .. } => {
                (Some(key.as_str()), value.0.is_object(), false)
            }
            PatchAction::DeleteMap { key } => (Some(key.as_str()), false, true),
            PatchAction::Increment {
                prop: Prop::Map(key),
                ..
            }
            | PatchAction::Conflict {
                prop: Prop::Map(key),
            } => (Some(key.as_str()), false, false),
            _ => (None, false, false),
        };
        location.extend(key);
        match location.as_slice() {
            ["tasks", id] => {
                let task = self.tasks.entry(TaskId::new(*id)).or_default();
                if deleted {
                    task.removed = true;
                } else if put_object {
                    task.created = true;
                }
            }
            ["tasks", id, field, ..] => {
                let task = self.tasks.entry(TaskId::new(*id)).or_default();
                if !task.created {
                    task.fields.insert((*field).to_owned());
                }
            }
            [field, ..] if !field.is_empty() => {
                self.board_fields.insert((*field).to_owned());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::{AutoCommit, Automerge, PatchLog};
    use taskflow_proto::board::ops::{self, NewTask, TaskEdit};
    use taskflow_proto::board::{ColumnId, CommentId, Priority};

    use super::*;

    fn patches_of(
        doc: &mut Automerge,
        edit: impl FnOnce(&mut automerge::transaction::Transaction),
    ) -> Vec<Patch> {
        let done = doc
            .transact_and_log_patches(|tx| {
                edit(tx);
                Ok::<_, automerge::AutomergeError>(())
            })
            .expect("edit");
        let mut log = done.patch_log;
        doc.make_patches(&mut log)
    }

    fn board() -> (Automerge, TaskId) {
        let mut doc = AutoCommit::new();
        ops::create_board(&mut doc, "B").expect("board");
        let id = ops::add_task(&mut doc, NewTask::titled("one", "ann"), 1).expect("task");
        (doc.document().clone(), id)
    }

    #[test]
    fn a_new_task_is_created_not_a_list_of_fields() {
        let (mut doc, _) = board();
        let mut new = None;
        let patches = patches_of(&mut doc, |tx| {
            new = Some(ops::add_task(tx, NewTask::titled("two", "ann"), 2).expect("task"));
        });
        let change = BoardChange::describe(DocumentId::random(), Origin::Local, &patches);
        let new = new.expect("id");
        assert_eq!(change.tasks.len(), 1);
        assert_eq!(
            change.tasks[&new],
            TaskChange {
                created: true,
                ..TaskChange::default()
            }
        );
        assert!(change.board_fields.is_empty());
    }

    #[test]
    fn edits_name_the_fields_they_touched() {
        let (mut doc, id) = board();
        let patches = patches_of(&mut doc, |tx| {
            let edit = TaskEdit {
                title: Some("uno".into()),
                priority: Some(Priority::High),
                ..TaskEdit::default()
            };
            ops::edit_task(tx, &id, edit, 3).expect("edit");
            ops::move_task(tx, &id, &ColumnId::new("done"), ops::Position::Top, 3).expect("move");
            ops::add_comment(tx, &id, CommentId::random(), "bob", "looks good", 3)
                .expect("comment");
        });
        let change = BoardChange::describe(DocumentId::random(), Origin::Remote, &patches);
        let fields: Vec<&str> = change.tasks[&id]
            .fields
            .iter()
            .map(String::as_str)
            .collect();
        // The only card lands on an empty column with the order key it had: `order` is untouched.
        assert_eq!(
            fields,
            ["column", "comments", "priority", "title", "updatedAt"]
        );
        assert!(!change.tasks[&id].created);
    }

    #[test]
    fn an_empty_patch_log_describes_nothing() {
        let mut log = PatchLog::active();
        let (doc, _) = board();
        let change = BoardChange::describe(
            DocumentId::random(),
            Origin::Remote,
            &doc.make_patches(&mut log),
        );
        assert!(change.is_empty());
    }
}
