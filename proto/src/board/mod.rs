//! The board document schema: a typed view of an Automerge document holding one task board.
//!
//! ```text
//! { schemaVersion: 1, name,
//!   columns: [ { id, name, wipLimit: int | null } ],
//!   tasks: { <taskId>: { id, title: Text, description: Text, column: <columnId>, order: <hex key>,
//!                        assignees: { <userId>: true }, labels: { <label>: true }, priority,
//!                        due: Timestamp | null, createdBy, createdAt, updatedAt, archived,
//!                        comments: { <commentId>: { id, author, body: Text, createdAt } } } } }
//! ```
//!
//! Sets (assignees, labels) are maps to `true` so concurrent additions merge instead of
//! duplicating; comments are a map keyed by id for the same reason. A task's column is a single
//! register, so concurrent moves resolve to one column and never duplicate a card.
//!
//! [`Board::read`] parses a document into plain values and reports violations as
//! [`SchemaError`]s; [`ops`] holds every write. Readers accept text either as an Automerge
//! `Text` object or as a plain string, and timestamps as `Timestamp` or integer milliseconds,
//! because other clients (the JS ones) may write either.

pub mod ops;
pub mod order;
pub mod order_index;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use automerge::{ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

pub use order::OrderKey;
pub use order_index::OrderIndex;

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u64 = 1;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// A fresh random id (128 bits, hex).
            pub fn random() -> Self {
                Self(format!("{:032x}", rand::random::<u128>()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// The id of a task, its key in the `tasks` map.
    TaskId
);
string_id!(
    /// The id of a column, referenced by each task's `column`.
    ColumnId
);
string_id!(
    /// The id of a comment, its key in the task's `comments` map.
    CommentId
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    #[default]
    None,
    Low,
    Medium,
    High,
    Urgent,
}

impl Priority {
    pub const ALL: [Priority; 5] = [
        Priority::None,
        Priority::Low,
        Priority::Medium,
        Priority::High,
        Priority::Urgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::None => "none",
            Priority::Low => "low",
            Priority::Medium => "medium",
            Priority::High => "high",
            Priority::Urgent => "urgent",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub id: ColumnId,
    pub name: String,
    pub wip_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: CommentId,
    pub author: String,
    pub body: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub title: String,
    pub description: String,
    pub column: ColumnId,
    pub order: OrderKey,
    pub assignees: BTreeSet<String>,
    pub labels: BTreeSet<String>,
    pub priority: Priority,
    pub due: Option<Millis>,
    pub created_by: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub archived: bool,
    /// Oldest first (by creation time, then id).
    pub comments: Vec<Comment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub schema_version: u64,
    pub name: String,
    pub columns: Vec<Column>,
    pub tasks: BTreeMap<TaskId, Task>,
}

impl Board {
    /// Reads the board held by `doc`.
    pub fn read(doc: &impl ReadDoc) -> Result<Board, SchemaError> {
        let r = Reader::new(doc, None);
        let root_path = Path::root();
        let root = r.fields(&ROOT);
        let schema_version = r.uint(&root, "schemaVersion", &root_path)?;
        if schema_version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedVersion(schema_version));
        }
        let name = r.string(&root, "name", &root_path)?;

        let columns = read_columns(&r, &root)?;

        let tasks_obj = r.object(&root, "tasks", ObjType::Map, &root_path)?;
        let tasks_path = root_path.key("tasks");
        let mut tasks = BTreeMap::new();
        for item in r.map_range(&tasks_obj) {
            let path = tasks_path.key(&item.key);
            if item.value != automerge::ValueRef::Object(ObjType::Map) {
                return Err(SchemaError::WrongType {
                    path,
                    expected: "a map",
                });
            }
            let task = r.task(&item.key, &item.id(), &path)?;
            if !columns.iter().any(|c| c.id == task.column) {
                return Err(SchemaError::UnknownColumn {
                    task: task.id,
                    column: task.column,
                });
            }
            tasks.insert(task.id.clone(), task);
        }
        Ok(Board {
            schema_version,
            name,
            columns,
            tasks,
        })
    }

    /// Reads one task without reading the rest of the board (what a UI re-reads when a change
    /// notice names it). `None` when there is no such task.
    /// Does not check the task's column against the board's columns.
    pub fn read_task(doc: &impl ReadDoc, id: &TaskId) -> Result<Option<Task>, SchemaError> {
        Reader::new(doc, None).read_task(id)
    }

    /// Reads one task as it was when the document's heads were `heads` (what a merge changed
    /// it from). `None` when there was no such task then.
    pub fn read_task_at(
        doc: &impl ReadDoc,
        id: &TaskId,
        heads: &[ChangeHash],
    ) -> Result<Option<Task>, SchemaError> {
        Reader::new(doc, Some(heads)).read_task(id)
    }

    /// The ids of the board's tasks, now or (with `heads`) as they were at `heads`.
    pub fn task_ids(
        doc: &impl ReadDoc,
        heads: Option<&[ChangeHash]>,
    ) -> Result<Vec<TaskId>, SchemaError> {
        let r = Reader::new(doc, heads);
        let tasks_obj = r.object(&r.fields(&ROOT), "tasks", ObjType::Map, &Path::root())?;
        Ok(r.map_range(&tasks_obj)
            .map(|item| TaskId(item.key.into_owned()))
            .collect())
    }

    /// Reads the board's columns without its tasks (what changes when a column list is edited).
    pub fn read_columns(doc: &impl ReadDoc) -> Result<Vec<Column>, SchemaError> {
        let r = Reader::new(doc, None);
        read_columns(&r, &r.fields(&ROOT))
    }

    pub fn column(&self, id: &ColumnId) -> Option<&Column> {
        self.columns.iter().find(|c| &c.id == id)
    }

    /// The live (not archived) tasks of a column in display order: by order key, then task id.
    pub fn column_tasks(&self, column: &ColumnId) -> Vec<&Task> {
        let mut tasks: Vec<&Task> = self
            .tasks
            .values()
            .filter(|t| &t.column == column && !t.archived)
            .collect();
        tasks.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.id.cmp(&b.id)));
        tasks
    }
}

fn read_columns<D: ReadDoc>(r: &Reader<'_, D>, root: &Fields) -> Result<Vec<Column>, SchemaError> {
    let root_path = Path::root();
    let columns_path = root_path.key("columns");
    let columns_obj = r.object(root, "columns", ObjType::List, &root_path)?;
    let mut columns = Vec::new();
    for index in 0..r.length(&columns_obj) {
        let path = columns_path.index(index);
        let obj = match r.get(&columns_obj, index)? {
            Some((Value::Object(ObjType::Map), id)) => id,
            _ => {
                return Err(SchemaError::WrongType {
                    path,
                    expected: "a map",
                });
            }
        };
        let fields = r.fields(&obj);
        let wip_limit = match fields.get("wipLimit") {
            None => None,
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => None,
            Some(_) => Some(r.uint(&fields, "wipLimit", &path)?),
        };
        let column = Column {
            id: ColumnId(r.string(&fields, "id", &path)?),
            name: r.string(&fields, "name", &path)?,
            wip_limit,
        };
        if columns.iter().any(|c: &Column| c.id == column.id) {
            return Err(SchemaError::DuplicateColumn(column.id));
        }
        columns.push(column);
    }
    Ok(columns)
}

/// Where in the document a problem was found, e.g. `tasks.t1.comments.c2.body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    fn root() -> Path {
        Path(String::new())
    }

    fn key(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// A way in which a document is not a board.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("`{0}` is missing")]
    Missing(Path),
    #[error("`{path}` must be {expected}")]
    WrongType { path: Path, expected: &'static str },
    #[error("`{path}` has an invalid value: {problem}")]
    InvalidValue { path: Path, problem: String },
    #[error("schema version {0} is not supported (this build reads {SCHEMA_VERSION})")]
    UnsupportedVersion(u64),
    #[error("column `{0}` appears twice")]
    DuplicateColumn(ColumnId),
    #[error("task `{task}` is in column `{column}`, which does not exist")]
    UnknownColumn { task: TaskId, column: ColumnId },
    #[error("no task `{0}`")]
    NoSuchTask(TaskId),
    #[error("no column `{0}`")]
    NoSuchColumn(ColumnId),
    #[error("the document already holds a board")]
    AlreadyABoard,
    #[error("automerge: {0}")]
    Automerge(String),
}

impl From<automerge::AutomergeError> for SchemaError {
    fn from(e: automerge::AutomergeError) -> Self {
        SchemaError::Automerge(e.to_string())
    }
}

/// One map object's entries, read in a single pass (one `map_range` costs about what two
/// single-key lookups do, and a task has a dozen fields).
struct Fields {
    /// Sorted by key, as `map_range` yields them.
    entries: Vec<(String, Value<'static>, ObjId)>,
}

impl Fields {
    fn of(range: automerge::iter::MapRange<'_>) -> Fields {
        Fields {
            entries: range
                .map(|item| {
                    let id = item.id();
                    (item.key.into_owned(), item.value.into_value(), id)
                })
                .collect(),
        }
    }

    fn get(&self, key: &str) -> Option<(&Value<'static>, &ObjId)> {
        self.entries
            .binary_search_by(|(k, _, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| (&self.entries[i].1, &self.entries[i].2))
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _, _)| k.as_str())
    }
}

/// Typed field access with paths for errors, of the document as it is or as it was at `heads`.
struct Reader<'a, D> {
    doc: &'a D,
    heads: Option<&'a [ChangeHash]>,
}

impl<'a, D: ReadDoc> Reader<'a, D> {
    fn new(doc: &'a D, heads: Option<&'a [ChangeHash]>) -> Self {
        Reader { doc, heads }
    }

    fn map_range(&self, obj: &ObjId) -> automerge::iter::MapRange<'a> {
        match self.heads {
            Some(heads) => self.doc.map_range_at(obj, .., heads),
            None => self.doc.map_range(obj, ..),
        }
    }

    fn fields(&self, obj: &ObjId) -> Fields {
        Fields::of(self.map_range(obj))
    }

    fn get(
        &self,
        obj: &ObjId,
        prop: impl Into<automerge::Prop>,
    ) -> Result<Option<(Value<'a>, ObjId)>, automerge::AutomergeError> {
        match self.heads {
            Some(heads) => self.doc.get_at(obj, prop, heads),
            None => self.doc.get(obj, prop),
        }
    }

    fn text(&self, obj: &ObjId) -> Result<String, automerge::AutomergeError> {
        match self.heads {
            Some(heads) => self.doc.text_at(obj, heads),
            None => self.doc.text(obj),
        }
    }

    fn length(&self, obj: &ObjId) -> usize {
        match self.heads {
            Some(heads) => self.doc.length_at(obj, heads),
            None => self.doc.length(obj),
        }
    }

    fn read_task(&self, id: &TaskId) -> Result<Option<Task>, SchemaError> {
        let root_path = Path::root();
        let root = self.fields(&ROOT);
        let tasks_obj = self.object(&root, "tasks", ObjType::Map, &root_path)?;
        let path = root_path.key("tasks").key(id.as_str());
        match self.get(&tasks_obj, id.as_str())? {
            None => Ok(None),
            Some((Value::Object(ObjType::Map), obj)) => {
                self.task(id.as_str(), &obj, &path).map(Some)
            }
            Some(_) => Err(SchemaError::WrongType {
                path,
                expected: "a map",
            }),
        }
    }

    fn required<'f>(
        &self,
        fields: &'f Fields,
        prop: &str,
        parent: &Path,
    ) -> Result<(&'f Value<'static>, &'f ObjId), SchemaError> {
        fields
            .get(prop)
            .ok_or_else(|| SchemaError::Missing(parent.key(prop)))
    }

    fn object(
        &self,
        fields: &Fields,
        prop: &str,
        want: ObjType,
        parent: &Path,
    ) -> Result<ObjId, SchemaError> {
        match self.required(fields, prop, parent)? {
            (Value::Object(t), id) if *t == want => Ok(id.clone()),
            _ => Err(SchemaError::WrongType {
                path: parent.key(prop),
                expected: match want {
                    ObjType::List => "a list",
                    ObjType::Text => "text",
                    _ => "a map",
                },
            }),
        }
    }

    /// Text as an Automerge `Text` object or a plain string scalar.
    fn string(&self, fields: &Fields, prop: &str, parent: &Path) -> Result<String, SchemaError> {
        match self.required(fields, prop, parent)? {
            (Value::Object(ObjType::Text), id) => Ok(self.text(id)?),
            (Value::Scalar(s), _) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(s.to_string()),
                _ => Err(self.wrong(parent, prop, "a string")),
            },
            _ => Err(self.wrong(parent, prop, "a string")),
        }
    }

    fn scalar<'f>(
        &self,
        fields: &'f Fields,
        prop: &str,
        parent: &Path,
    ) -> Result<&'f ScalarValue, SchemaError> {
        match self.required(fields, prop, parent)? {
            (Value::Scalar(s), _) => Ok(s.as_ref()),
            _ => Err(self.wrong(parent, prop, "a scalar")),
        }
    }

    fn uint(&self, fields: &Fields, prop: &str, parent: &Path) -> Result<u64, SchemaError> {
        match *self.scalar(fields, prop, parent)? {
            ScalarValue::Uint(n) => Ok(n),
            ScalarValue::Int(n) if n >= 0 => Ok(n as u64),
            ScalarValue::F64(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
            _ => Err(self.wrong(parent, prop, "a non-negative integer")),
        }
    }

    fn bool(&self, fields: &Fields, prop: &str, parent: &Path) -> Result<bool, SchemaError> {
        match self.scalar(fields, prop, parent)? {
            ScalarValue::Boolean(b) => Ok(*b),
            _ => Err(self.wrong(parent, prop, "a boolean")),
        }
    }

    fn millis(&self, fields: &Fields, prop: &str, parent: &Path) -> Result<Millis, SchemaError> {
        scalar_millis(self.scalar(fields, prop, parent)?)
            .ok_or_else(|| self.wrong(parent, prop, "a timestamp"))
    }

    fn optional_millis(
        &self,
        fields: &Fields,
        prop: &str,
        parent: &Path,
    ) -> Result<Option<Millis>, SchemaError> {
        match fields.get(prop) {
            None => Ok(None),
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => Ok(None),
            Some(_) => self.millis(fields, prop, parent).map(Some),
        }
    }

    /// A map used as a set: the keys whose value is `true`.
    fn set(
        &self,
        fields: &Fields,
        prop: &str,
        parent: &Path,
    ) -> Result<BTreeSet<String>, SchemaError> {
        let set = self.fields(&self.object(fields, prop, ObjType::Map, parent)?);
        let path = parent.key(prop);
        let mut out = BTreeSet::new();
        for key in set.keys() {
            if self.bool(&set, key, &path)? {
                out.insert(key.to_owned());
            }
        }
        Ok(out)
    }

    fn wrong(&self, parent: &Path, prop: &str, expected: &'static str) -> SchemaError {
        SchemaError::WrongType {
            path: parent.key(prop),
            expected,
        }
    }

    fn task(&self, key: &str, obj: &ObjId, path: &Path) -> Result<Task, SchemaError> {
        let fields = self.fields(obj);
        let id = self.string(&fields, "id", path)?;
        if id != key {
            return Err(SchemaError::InvalidValue {
                path: path.key("id"),
                problem: format!("`{id}` differs from its key `{key}`"),
            });
        }
        let order_text = self.string(&fields, "order", path)?;
        let order = OrderKey::parse(&order_text).map_err(|e| SchemaError::InvalidValue {
            path: path.key("order"),
            problem: e.to_string(),
        })?;
        let priority_text = self.string(&fields, "priority", path)?;
        let priority =
            Priority::parse(&priority_text).ok_or_else(|| SchemaError::InvalidValue {
                path: path.key("priority"),
                problem: format!("unknown priority `{priority_text}`"),
            })?;

        let comments_obj = self.object(&fields, "comments", ObjType::Map, path)?;
        let comments_path = path.key("comments");
        let mut comments = Vec::new();
        for item in self.map_range(&comments_obj) {
            let cpath = comments_path.key(&item.key);
            if item.value != automerge::ValueRef::Object(ObjType::Map) {
                return Err(SchemaError::WrongType {
                    path: cpath,
                    expected: "a map",
                });
            }
            let comment = self.fields(&item.id());
            comments.push(Comment {
                id: CommentId(self.string(&comment, "id", &cpath)?),
                author: self.string(&comment, "author", &cpath)?,
                body: self.string(&comment, "body", &cpath)?,
                created_at: self.millis(&comment, "createdAt", &cpath)?,
            });
        }
        comments.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });

        Ok(Task {
            id: TaskId(id),
            title: self.string(&fields, "title", path)?,
            description: self.string(&fields, "description", path)?,
            column: ColumnId(self.string(&fields, "column", path)?),
            order,
            assignees: self.set(&fields, "assignees", path)?,
            labels: self.set(&fields, "labels", path)?,
            priority,
            due: self.optional_millis(&fields, "due", path)?,
            created_by: self.string(&fields, "createdBy", path)?,
            created_at: self.millis(&fields, "createdAt", path)?,
            updated_at: self.millis(&fields, "updatedAt", path)?,
            archived: self.bool(&fields, "archived", path)?,
            comments,
        })
    }
}

fn scalar_millis(s: &ScalarValue) -> Option<Millis> {
    match s {
        ScalarValue::Timestamp(t) | ScalarValue::Int(t) => Some(*t),
        ScalarValue::Uint(t) => i64::try_from(*t).ok(),
        ScalarValue::F64(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
