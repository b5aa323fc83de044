//! Board edits the server makes on behalf of a user (the REST API), and how one is applied to
//! a board document in one Automerge transaction. No I/O: the document actor runs these.

use automerge::ChangeHash;
use automerge::transaction::Transactable;
use taskflow_proto::board::ops::{self, NewTask, Position, TaskEdit};
use taskflow_proto::board::{Board, ColumnId, CommentId, OrderIndex, SchemaError, TaskId};

/// One edit, as one change to the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardEdit {
    AddTask(NewTask),
    UpdateTask {
        id: TaskId,
        fields: TaskEdit,
        /// Where to put the card: a column (`None`: its current one) and a place in it.
        place: Option<(Option<ColumnId>, Position)>,
        archived: Option<bool>,
    },
    AddComment {
        task: TaskId,
        id: CommentId,
        body: String,
    },
}

impl BoardEdit {
    /// The task the edit is about.
    pub fn task(&self) -> &TaskId {
        match self {
            BoardEdit::AddTask(task) => &task.id,
            BoardEdit::UpdateTask { id, .. } => id,
            BoardEdit::AddComment { task, .. } => task,
        }
    }
}

/// What an applied edit made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub task: TaskId,
    pub comment: Option<CommentId>,
    /// The document's heads once the edit is stored.
    pub heads: Vec<ChangeHash>,
}

/// Why an edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the project's board has not been uploaded yet")]
    NoBoard,
    #[error("no task `{0}` on this board")]
    NoTask(TaskId),
    #[error("no column `{0}` on this board")]
    NoColumn(ColumnId),
    #[error("task `{0}` is not in that column, so nothing can be placed next to it")]
    NoNeighbour(TaskId),
    #[error("task `{0}` exists already")]
    TaskExists(TaskId),
    #[error("comment `{0}` exists already")]
    CommentExists(CommentId),
    #[error("the task changed since it was read (its version is now {current})")]
    Stale { current: String },
    #[error("the board document is damaged: {0}")]
    Damaged(String),
    #[error("the board is unavailable right now; try again")]
    Unavailable,
}

/// Applies `edit` as `user` at `now` (ms) inside a transaction. `index` (the document's cards
/// in order) places cards without scanning the board; where it cannot tell, `ops` decides.
pub fn apply<D: Transactable>(
    doc: &mut D,
    edit: BoardEdit,
    user: &str,
    now: i64,
    index: &OrderIndex,
) -> Result<(TaskId, Option<CommentId>), EditError> {
    let subject = edit.task().clone();
    let schema_error = |e: SchemaError| match e {
        SchemaError::NoSuchTask(id) if id == subject => EditError::NoTask(id),
        SchemaError::NoSuchTask(id) => EditError::NoNeighbour(id),
        SchemaError::NoSuchColumn(id) => EditError::NoColumn(id),
        other => EditError::Damaged(other.to_string()),
    };
    match edit {
        BoardEdit::AddTask(mut task) => {
            if Board::read_task(doc, &task.id)
                .map_err(schema_error)?
                .is_some()
            {
                return Err(EditError::TaskExists(task.id));
            }
            task.created_by = user.to_owned();
            let column = match &task.column {
                Some(column) => Some(column.clone()),
                None => Board::read_columns(doc)
                    .map_err(schema_error)?
                    .first()
                    .map(|c| c.id.clone()),
            };
            if let Some(key) = column.and_then(|c| index.key_for(&c, &task.position, None)) {
                task.position = Position::AtKey(key);
            }
            let id = ops::add_task(doc, task, now).map_err(schema_error)?;
            Ok((id, None))
        }
        BoardEdit::UpdateTask {
            id,
            fields,
            place,
            archived,
        } => {
            let current = Board::read_task(doc, &id)
                .map_err(schema_error)?
                .ok_or_else(|| EditError::NoTask(id.clone()))?;
            if fields != TaskEdit::default() {
                ops::edit_task(doc, &id, fields, now).map_err(schema_error)?;
            }
            if let Some((column, position)) = place {
                let column = column.unwrap_or_else(|| current.column.clone());
                let position = match index.key_for(&column, &position, Some(&id)) {
                    Some(key) => Position::AtKey(key),
                    None => position,
                };
                ops::move_task(doc, &id, &column, position, now).map_err(schema_error)?;
            }
            if let Some(archived) = archived.filter(|a| *a != current.archived) {
                ops::set_archived(doc, &id, archived, now).map_err(schema_error)?;
            }
            Ok((id, None))
        }
        BoardEdit::AddComment { task, id, body } => {
            let existing = Board::read_task(doc, &task)
                .map_err(schema_error)?
                .ok_or_else(|| EditError::NoTask(task.clone()))?;
            // Writing under an existing id would replace that comment.
            if existing.comments.iter().any(|c| c.id == id) {
                return Err(EditError::CommentExists(id));
            }
            let comment =
                ops::add_comment(doc, &task, id, user, &body, now).map_err(schema_error)?;
            Ok((task, Some(comment)))
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::AutoCommit;

    use super::*;

    /// Applies with the document's own order index, as the actor does.
    fn run(
        doc: &mut AutoCommit,
        edit: BoardEdit,
        user: &str,
        now: i64,
    ) -> Result<(TaskId, Option<CommentId>), EditError> {
        let index = OrderIndex::build(doc);
        apply(doc, edit, user, now, &index)
    }

    fn board_with(task: &str) -> AutoCommit {
        let mut doc = AutoCommit::new();
        ops::create_board(&mut doc, "b").expect("board");
        let mut new = NewTask::titled("one", "someone");
        new.id = TaskId::new(task);
        ops::add_task(&mut doc, new, 1).expect("task");
        doc
    }

    #[test]
    fn a_created_task_is_authored_by_the_user() {
        let mut doc = board_with("t1");
        let mut task = NewTask::titled("two", "ignored");
        task.id = TaskId::new("t2");
        run(&mut doc, BoardEdit::AddTask(task), "u1", 5).expect("add");
        let read = Board::read_task(&doc, &TaskId::new("t2"))
            .expect("read")
            .expect("there");
        assert_eq!((read.created_by.as_str(), read.created_at), ("u1", 5));
    }

    #[test]
    fn adding_an_existing_task_id_is_refused() {
        let mut doc = board_with("t1");
        let task = NewTask {
            id: TaskId::new("t1"),
            ..NewTask::titled("again", "u1")
        };
        assert_eq!(
            run(&mut doc, BoardEdit::AddTask(task), "u1", 2),
            Err(EditError::TaskExists(TaskId::new("t1")))
        );
    }

    #[test]
    fn unknown_tasks_columns_and_neighbours_are_told_apart() {
        let mut doc = board_with("t1");
        let update = |id: &str, column: Option<&str>, position: Position| BoardEdit::UpdateTask {
            id: TaskId::new(id),
            fields: TaskEdit::default(),
            place: Some((column.map(ColumnId::new), position)),
            archived: None,
        };
        assert_eq!(
            run(&mut doc, update("nope", None, Position::Top), "u1", 2),
            Err(EditError::NoTask(TaskId::new("nope")))
        );
        assert_eq!(
            run(&mut doc, update("t1", Some("zzz"), Position::Top), "u1", 2),
            Err(EditError::NoColumn(ColumnId::new("zzz")))
        );
        let before = Position::Before(TaskId::new("elsewhere"));
        assert_eq!(
            run(&mut doc, update("t1", Some("done"), before), "u1", 2),
            Err(EditError::NoNeighbour(TaskId::new("elsewhere")))
        );
    }

    #[test]
    fn an_update_moves_edits_and_archives_in_one_go() {
        let mut doc = board_with("t1");
        let edit = BoardEdit::UpdateTask {
            id: TaskId::new("t1"),
            fields: TaskEdit {
                title: Some("renamed".into()),
                ..TaskEdit::default()
            },
            place: Some((Some(ColumnId::new("done")), Position::Top)),
            archived: Some(true),
        };
        run(&mut doc, edit, "u1", 9).expect("update");
        let task = Board::read_task(&doc, &TaskId::new("t1"))
            .expect("read")
            .expect("there");
        assert_eq!(task.title, "renamed");
        assert_eq!(task.column, ColumnId::new("done"));
        assert!(task.archived);
        assert_eq!(task.updated_at, 9);
    }

    #[test]
    fn a_comment_never_replaces_another() {
        let mut doc = board_with("t1");
        let edit = || BoardEdit::AddComment {
            task: TaskId::new("t1"),
            id: CommentId::new("c1"),
            body: "first".into(),
        };
        run(&mut doc, edit(), "u1", 3).expect("comment");
        assert_eq!(
            run(&mut doc, edit(), "u1", 4),
            Err(EditError::CommentExists(CommentId::new("c1")))
        );
    }

    #[test]
    fn comments_are_signed_by_the_user() {
        let mut doc = board_with("t1");
        let edit = BoardEdit::AddComment {
            task: TaskId::new("t1"),
            id: CommentId::new("c1"),
            body: "looks good".into(),
        };
        run(&mut doc, edit, "u1", 3).expect("comment");
        let task = Board::read_task(&doc, &TaskId::new("t1"))
            .expect("read")
            .expect("there");
        assert_eq!(task.comments[0].author, "u1");
        assert_eq!(task.comments[0].body, "looks good");
    }
}
