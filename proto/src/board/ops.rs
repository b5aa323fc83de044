//! Every write to a board document. Each function makes its edits through any Automerge
//! transaction (`AutoCommit`, `Transaction`), takes the time as an argument, and leaves the
//! document readable by [`Board::read`](super::Board::read).

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef};

use super::{ColumnId, CommentId, Millis, OrderKey, Priority, SCHEMA_VERSION, SchemaError, TaskId};

/// The columns of a new board: (id, name).
pub const DEFAULT_COLUMNS: [(&str, &str); 3] = [
    ("todo", "To do"),
    ("doing", "In progress"),
    ("done", "Done"),
];

/// Where a card goes within its column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Top,
    Bottom,
    Before(TaskId),
    After(TaskId),
    /// A key the caller computed already (bulk imports that place many cards at once).
    AtKey(OrderKey),
}

/// A task to add. `column: None` means the board's first column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub id: TaskId,
    pub title: String,
    pub description: String,
    pub column: Option<ColumnId>,
    pub position: Position,
    pub assignees: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    pub priority: Priority,
    pub due: Option<Millis>,
    pub created_by: String,
}

impl NewTask {
    /// A task with just a title, at the bottom of the first column.
    pub fn titled(title: impl Into<String>, created_by: impl Into<String>) -> NewTask {
        NewTask {
            id: TaskId::random(),
            title: title.into(),
            description: String::new(),
            column: None,
            position: Position::Bottom,
            assignees: BTreeSet::new(),
            labels: BTreeSet::new(),
            priority: Priority::None,
            due: None,
            created_by: created_by.into(),
        }
    }
}

/// Field changes to a task; `None` leaves a field as it is. `due: Some(None)` clears the date.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskEdit {
    pub title: Option<String>,
    pub description: Option<String>,
    pub assignees: Option<BTreeSet<String>>,
    pub labels: Option<BTreeSet<String>>,
    pub priority: Option<Priority>,
    pub due: Option<Option<Millis>>,
}

/// Turns an empty document into a board with the default columns.
pub fn create_board<D: Transactable>(doc: &mut D, name: &str) -> Result<(), SchemaError> {
    if doc.get(ROOT, "schemaVersion")?.is_some() {
        return Err(SchemaError::AlreadyABoard);
    }
    // A signed integer: JS Automerge reads unsigned ones as BigInt, which JSON cannot carry.
    doc.put(
        ROOT,
        "schemaVersion",
        ScalarValue::Int(SCHEMA_VERSION as i64),
    )?;
    doc.put(ROOT, "name", name)?;
    let columns = doc.put_object(ROOT, "columns", ObjType::List)?;
    for (index, (id, name)) in DEFAULT_COLUMNS.into_iter().enumerate() {
        let column = doc.insert_object(&columns, index, ObjType::Map)?;
        doc.put(&column, "id", id)?;
        doc.put(&column, "name", name)?;
        doc.put(&column, "wipLimit", ScalarValue::Null)?;
    }
    doc.put_object(ROOT, "tasks", ObjType::Map)?;
    Ok(())
}

pub fn add_task<D: Transactable>(
    doc: &mut D,
    task: NewTask,
    now: Millis,
) -> Result<TaskId, SchemaError> {
    let tasks = map_at(doc, &ROOT, "tasks")?;
    if doc.get(&tasks, task.id.as_str())?.is_some() {
        return Err(SchemaError::InvalidValue {
            path: super::Path(format!("tasks.{}", task.id)),
            problem: "a task with this id exists".into(),
        });
    }
    let column = match task.column {
        Some(c) => {
            require_column(doc, &c)?;
            c
        }
        None => first_column(doc)?,
    };
    let order = order_for(doc, &column, &task.position, None)?;

    let obj = doc.put_object(&tasks, task.id.as_str(), ObjType::Map)?;
    doc.put(&obj, "id", task.id.as_str())?;
    let title = doc.put_object(&obj, "title", ObjType::Text)?;
    doc.splice_text(&title, 0, 0, &task.title)?;
    let description = doc.put_object(&obj, "description", ObjType::Text)?;
    doc.splice_text(&description, 0, 0, &task.description)?;
    doc.put(&obj, "column", column.as_str())?;
    doc.put(&obj, "order", order.as_str())?;
    let assignees = doc.put_object(&obj, "assignees", ObjType::Map)?;
    write_set(doc, &assignees, &task.assignees)?;
    let labels = doc.put_object(&obj, "labels", ObjType::Map)?;
    write_set(doc, &labels, &task.labels)?;
    doc.put(&obj, "priority", task.priority.as_str())?;
    doc.put(&obj, "due", due_value(task.due))?;
    doc.put(&obj, "createdBy", task.created_by.as_str())?;
    doc.put(&obj, "createdAt", ScalarValue::Timestamp(now))?;
    doc.put(&obj, "updatedAt", ScalarValue::Timestamp(now))?;
    doc.put(&obj, "archived", false)?;
    doc.put_object(&obj, "comments", ObjType::Map)?;
    Ok(task.id)
}

pub fn edit_task<D: Transactable>(
    doc: &mut D,
    id: &TaskId,
    edit: TaskEdit,
    now: Millis,
) -> Result<(), SchemaError> {
    let obj = task_obj(doc, id)?;
    if let Some(title) = edit.title {
        update_text(doc, &obj, "title", &title)?;
    }
    if let Some(description) = edit.description {
        update_text(doc, &obj, "description", &description)?;
    }
    if let Some(assignees) = edit.assignees {
        let set = map_at(doc, &obj, "assignees")?;
        write_set(doc, &set, &assignees)?;
    }
    if let Some(labels) = edit.labels {
        let set = map_at(doc, &obj, "labels")?;
        write_set(doc, &set, &labels)?;
    }
    if let Some(priority) = edit.priority {
        doc.put(&obj, "priority", priority.as_str())?;
    }
    if let Some(due) = edit.due {
        doc.put(&obj, "due", due_value(due))?;
    }
    doc.put(&obj, "updatedAt", ScalarValue::Timestamp(now))?;
    Ok(())
}

/// Moves a task to `position` in `column` (which may be its current column: a reorder).
pub fn move_task<D: Transactable>(
    doc: &mut D,
    id: &TaskId,
    column: &ColumnId,
    position: Position,
    now: Millis,
) -> Result<(), SchemaError> {
    let obj = task_obj(doc, id)?;
    require_column(doc, column)?;
    let order = order_for(doc, column, &position, Some(id))?;
    doc.put(&obj, "column", column.as_str())?;
    doc.put(&obj, "order", order.as_str())?;
    doc.put(&obj, "updatedAt", ScalarValue::Timestamp(now))?;
    Ok(())
}

pub fn set_archived<D: Transactable>(
    doc: &mut D,
    id: &TaskId,
    archived: bool,
    now: Millis,
) -> Result<(), SchemaError> {
    let obj = task_obj(doc, id)?;
    doc.put(&obj, "archived", archived)?;
    doc.put(&obj, "updatedAt", ScalarValue::Timestamp(now))?;
    Ok(())
}

pub fn add_comment<D: Transactable>(
    doc: &mut D,
    task: &TaskId,
    comment: CommentId,
    author: &str,
    body: &str,
    now: Millis,
) -> Result<CommentId, SchemaError> {
    let obj = task_obj(doc, task)?;
    let comments = map_at(doc, &obj, "comments")?;
    let c = doc.put_object(&comments, comment.as_str(), ObjType::Map)?;
    doc.put(&c, "id", comment.as_str())?;
    doc.put(&c, "author", author)?;
    let text = doc.put_object(&c, "body", ObjType::Text)?;
    doc.splice_text(&text, 0, 0, body)?;
    doc.put(&c, "createdAt", ScalarValue::Timestamp(now))?;
    Ok(comment)
}

fn due_value(due: Option<Millis>) -> ScalarValue {
    due.map_or(ScalarValue::Null, ScalarValue::Timestamp)
}

fn map_at<D: ReadDoc>(doc: &D, parent: &ObjId, key: &str) -> Result<ObjId, SchemaError> {
    match doc.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        Some(_) => Err(SchemaError::WrongType {
            path: super::Path(key.to_owned()),
            expected: "a map",
        }),
        None => Err(SchemaError::Missing(super::Path(key.to_owned()))),
    }
}

fn task_obj<D: ReadDoc>(doc: &D, id: &TaskId) -> Result<ObjId, SchemaError> {
    let tasks = map_at(doc, &ROOT, "tasks")?;
    match doc.get(&tasks, id.as_str())? {
        Some((Value::Object(ObjType::Map), obj)) => Ok(obj),
        _ => Err(SchemaError::NoSuchTask(id.clone())),
    }
}

/// Writes a set as a map of `key: true`, deleting keys no longer present.
fn write_set<D: Transactable>(
    doc: &mut D,
    set: &ObjId,
    values: &BTreeSet<String>,
) -> Result<(), SchemaError> {
    let existing: Vec<String> = doc.keys(set).collect();
    for key in existing.iter().filter(|k| !values.contains(*k)) {
        doc.delete(set, key.as_str())?;
    }
    for value in values.iter().filter(|v| !existing.contains(v)) {
        doc.put(set, value.as_str(), true)?;
    }
    Ok(())
}

/// Replaces a text field by a minimal diff, so concurrent edits to other parts survive. A field
/// written as a plain string by another client becomes a `Text` object.
fn update_text<D: Transactable>(
    doc: &mut D,
    obj: &ObjId,
    key: &str,
    value: &str,
) -> Result<(), SchemaError> {
    match doc.get(obj, key)? {
        Some((Value::Object(ObjType::Text), text)) => doc
            .update_text(&text, value)
            .map_err(|e| SchemaError::Automerge(e.to_string())),
        _ => {
            let text = doc.put_object(obj, key, ObjType::Text)?;
            doc.splice_text(&text, 0, 0, value)?;
            Ok(())
        }
    }
}

fn column_ids<D: ReadDoc>(doc: &D) -> Result<Vec<ColumnId>, SchemaError> {
    let columns = match doc.get(ROOT, "columns")? {
        Some((Value::Object(ObjType::List), id)) => id,
        _ => return Err(SchemaError::Missing(super::Path("columns".into()))),
    };
    let mut ids = Vec::new();
    for index in 0..doc.length(&columns) {
        if let Some((Value::Object(ObjType::Map), column)) = doc.get(&columns, index)?
            && let Some(id) = read_string(doc, &column, "id")?
        {
            ids.push(ColumnId(id));
        }
    }
    Ok(ids)
}

fn first_column<D: ReadDoc>(doc: &D) -> Result<ColumnId, SchemaError> {
    column_ids(doc)?
        .into_iter()
        .next()
        .ok_or_else(|| SchemaError::Missing(super::Path("columns[0]".into())))
}

fn require_column<D: ReadDoc>(doc: &D, column: &ColumnId) -> Result<(), SchemaError> {
    if column_ids(doc)?.contains(column) {
        Ok(())
    } else {
        Err(SchemaError::NoSuchColumn(column.clone()))
    }
}

fn read_string<D: ReadDoc>(doc: &D, obj: &ObjId, key: &str) -> Result<Option<String>, SchemaError> {
    Ok(match doc.get(obj, key)? {
        Some((Value::Object(ObjType::Text), text)) => Some(doc.text(&text)?),
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// The order key for a card placed at `position` in `column`, ignoring the card itself.
///
/// When concurrent edits left two neighbours with equal keys, no key fits between them; the run
/// of equal keys above the gap is then re-keyed (in this same transaction) to open one.
fn order_for<D: Transactable>(
    doc: &mut D,
    column: &ColumnId,
    position: &Position,
    moving: Option<&TaskId>,
) -> Result<OrderKey, SchemaError> {
    if let Position::AtKey(key) = position {
        return Ok(key.clone());
    }
    let tasks = map_at(doc, &ROOT, "tasks")?;
    // One pass over the tasks and one over each task's fields: the cheap way to read a column
    // off a large board.
    let mut siblings: Vec<(OrderKey, TaskId, ObjId)> = Vec::new();
    for task in doc.map_range(&tasks, ..) {
        let is_map = task.value == ValueRef::Object(ObjType::Map);
        if moving.is_some_and(|m| m.as_str() == task.key) || !is_map {
            continue;
        }
        let obj = task.id();
        let (mut in_column, mut archived, mut order) = (false, false, None);
        for field in doc.map_range(&obj, ..) {
            match (field.key.as_ref(), &field.value) {
                ("column", ValueRef::Scalar(ScalarValueRef::Str(c))) => {
                    in_column = c.as_ref() == column.as_str();
                }
                ("archived", ValueRef::Scalar(ScalarValueRef::Boolean(a))) => archived = *a,
                ("order", ValueRef::Scalar(ScalarValueRef::Str(o))) => {
                    order = OrderKey::parse(o).ok();
                }
                _ => {}
            }
        }
        if let (true, false, Some(order)) = (in_column, archived, order) {
            siblings.push((order, TaskId(task.key.into_owned()), obj));
        }
    }
    siblings.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));

    let index_of = |id: &TaskId| {
        siblings
            .iter()
            .position(|s| &s.1 == id)
            .ok_or_else(|| SchemaError::NoSuchTask(id.clone()))
    };
    let index = match position {
        Position::Top => 0,
        Position::Bottom => siblings.len(),
        Position::Before(id) => index_of(id)?,
        Position::After(id) => index_of(id)? + 1,
        Position::AtKey(_) => unreachable!("handled above"),
    };
    let lower = index.checked_sub(1).map(|i| siblings[i].0.clone());
    let upper = siblings.get(index).map(|s| s.0.clone());
    if let Some(key) = OrderKey::between(lower.as_ref(), upper.as_ref()) {
        return Ok(key);
    }

    // lower == upper: re-key the run of cards from `index` that share that key.
    let tied = lower.expect("a failed `between` has both bounds");
    let run_end = siblings[index..]
        .iter()
        .position(|s| s.0 != tied)
        .map_or(siblings.len(), |offset| index + offset);
    let ceiling = siblings.get(run_end).map(|s| s.0.clone());
    let mut floor = OrderKey::between(Some(&tied), ceiling.as_ref()).expect("tied < ceiling");
    let ours = OrderKey::between(Some(&tied), Some(&floor)).expect("tied < floor");
    for (_, _, obj) in &siblings[index..run_end] {
        doc.put(obj, "order", floor.as_str())?;
        floor = OrderKey::between(Some(&floor), ceiling.as_ref()).expect("floor < ceiling");
    }
    Ok(ours)
}
