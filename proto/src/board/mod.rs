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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

pub use order::OrderKey;

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
        let r = Reader { doc };
        let root = Path::root();
        let schema_version = r.uint(&ROOT, "schemaVersion", &root)?;
        if schema_version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedVersion(schema_version));
        }
        let name = r.string(&ROOT, "name", &root)?;

        let columns_path = root.key("columns");
        let columns_obj = r.object(&ROOT, "columns", ObjType::List, &root)?;
        let mut columns = Vec::new();
        for index in 0..doc.length(&columns_obj) {
            let path = columns_path.index(index);
            let obj = r.object(&columns_obj, index, ObjType::Map, &columns_path)?;
            let wip_limit = match r.get(&obj, "wipLimit")? {
                None => None,
                Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => None,
                Some(_) => Some(r.uint(&obj, "wipLimit", &path)?),
            };
            let column = Column {
                id: ColumnId(r.string(&obj, "id", &path)?),
                name: r.string(&obj, "name", &path)?,
                wip_limit,
            };
            if columns.iter().any(|c: &Column| c.id == column.id) {
                return Err(SchemaError::DuplicateColumn(column.id));
            }
            columns.push(column);
        }

        let tasks_obj = r.object(&ROOT, "tasks", ObjType::Map, &root)?;
        let mut tasks = BTreeMap::new();
        for key in doc.keys(&tasks_obj) {
            let task = r.task(&tasks_obj, &key, &root.key("tasks"))?;
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

/// Typed field access with paths for errors.
struct Reader<'a, D> {
    doc: &'a D,
}

impl<D: ReadDoc> Reader<'_, D> {
    fn get<P: Into<automerge::Prop>>(
        &self,
        obj: &ObjId,
        prop: P,
    ) -> Result<Option<(Value<'_>, ObjId)>, SchemaError> {
        Ok(self.doc.get(obj, prop)?)
    }

    fn required<P: Into<automerge::Prop> + fmt::Display + Clone>(
        &self,
        obj: &ObjId,
        prop: P,
        parent: &Path,
    ) -> Result<(Value<'_>, ObjId), SchemaError> {
        self.get(obj, prop.clone())?
            .ok_or_else(|| SchemaError::Missing(parent.key(&prop.to_string())))
    }

    fn object<P: Into<automerge::Prop> + fmt::Display + Clone>(
        &self,
        obj: &ObjId,
        prop: P,
        want: ObjType,
        parent: &Path,
    ) -> Result<ObjId, SchemaError> {
        match self.required(obj, prop.clone(), parent)? {
            (Value::Object(t), id) if t == want => Ok(id),
            _ => Err(SchemaError::WrongType {
                path: parent.key(&prop.to_string()),
                expected: match want {
                    ObjType::List => "a list",
                    ObjType::Text => "text",
                    _ => "a map",
                },
            }),
        }
    }

    /// Text as an Automerge `Text` object or a plain string scalar.
    fn string(&self, obj: &ObjId, prop: &str, parent: &Path) -> Result<String, SchemaError> {
        match self.required(obj, prop, parent)? {
            (Value::Object(ObjType::Text), id) => Ok(self.doc.text(&id)?),
            (Value::Scalar(s), _) => match s.as_ref() {
                ScalarValue::Str(s) => Ok(s.to_string()),
                _ => Err(self.wrong(parent, prop, "a string")),
            },
            _ => Err(self.wrong(parent, prop, "a string")),
        }
    }

    fn scalar(&self, obj: &ObjId, prop: &str, parent: &Path) -> Result<ScalarValue, SchemaError> {
        match self.required(obj, prop, parent)? {
            (Value::Scalar(s), _) => Ok(s.into_owned()),
            _ => Err(self.wrong(parent, prop, "a scalar")),
        }
    }

    fn uint(&self, obj: &ObjId, prop: &str, parent: &Path) -> Result<u64, SchemaError> {
        match self.scalar(obj, prop, parent)? {
            ScalarValue::Uint(n) => Ok(n),
            ScalarValue::Int(n) if n >= 0 => Ok(n as u64),
            ScalarValue::F64(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
            _ => Err(self.wrong(parent, prop, "a non-negative integer")),
        }
    }

    fn bool(&self, obj: &ObjId, prop: &str, parent: &Path) -> Result<bool, SchemaError> {
        match self.scalar(obj, prop, parent)? {
            ScalarValue::Boolean(b) => Ok(b),
            _ => Err(self.wrong(parent, prop, "a boolean")),
        }
    }

    fn millis(&self, obj: &ObjId, prop: &str, parent: &Path) -> Result<Millis, SchemaError> {
        scalar_millis(&self.scalar(obj, prop, parent)?)
            .ok_or_else(|| self.wrong(parent, prop, "a timestamp"))
    }

    fn optional_millis(
        &self,
        obj: &ObjId,
        prop: &str,
        parent: &Path,
    ) -> Result<Option<Millis>, SchemaError> {
        match self.get(obj, prop)? {
            None => Ok(None),
            Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => Ok(None),
            Some(_) => self.millis(obj, prop, parent).map(Some),
        }
    }

    /// A map used as a set: the keys whose value is `true`.
    fn set(&self, obj: &ObjId, prop: &str, parent: &Path) -> Result<BTreeSet<String>, SchemaError> {
        let set = self.object(obj, prop, ObjType::Map, parent)?;
        let mut out = BTreeSet::new();
        for key in self.doc.keys(&set) {
            if self.bool(&set, &key, &parent.key(prop))? {
                out.insert(key);
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

    fn task(&self, tasks: &ObjId, key: &str, parent: &Path) -> Result<Task, SchemaError> {
        let obj = self.object(tasks, key, ObjType::Map, parent)?;
        let path = parent.key(key);
        let id = self.string(&obj, "id", &path)?;
        if id != key {
            return Err(SchemaError::InvalidValue {
                path: path.key("id"),
                problem: format!("`{id}` differs from its key `{key}`"),
            });
        }
        let order_text = self.string(&obj, "order", &path)?;
        let order = OrderKey::parse(&order_text).map_err(|e| SchemaError::InvalidValue {
            path: path.key("order"),
            problem: e.to_string(),
        })?;
        let priority_text = self.string(&obj, "priority", &path)?;
        let priority =
            Priority::parse(&priority_text).ok_or_else(|| SchemaError::InvalidValue {
                path: path.key("priority"),
                problem: format!("unknown priority `{priority_text}`"),
            })?;

        let comments_obj = self.object(&obj, "comments", ObjType::Map, &path)?;
        let comments_path = path.key("comments");
        let mut comments = Vec::new();
        for ckey in self.doc.keys(&comments_obj) {
            let cobj = self.object(&comments_obj, ckey.as_str(), ObjType::Map, &comments_path)?;
            let cpath = comments_path.key(&ckey);
            comments.push(Comment {
                id: CommentId(self.string(&cobj, "id", &cpath)?),
                author: self.string(&cobj, "author", &cpath)?,
                body: self.string(&cobj, "body", &cpath)?,
                created_at: self.millis(&cobj, "createdAt", &cpath)?,
            });
        }
        comments.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });

        Ok(Task {
            id: TaskId(id),
            title: self.string(&obj, "title", &path)?,
            description: self.string(&obj, "description", &path)?,
            column: ColumnId(self.string(&obj, "column", &path)?),
            order,
            assignees: self.set(&obj, "assignees", &path)?,
            labels: self.set(&obj, "labels", &path)?,
            priority,
            due: self.optional_millis(&obj, "due", &path)?,
            created_by: self.string(&obj, "createdBy", &path)?,
            created_at: self.millis(&obj, "createdAt", &path)?,
            updated_at: self.millis(&obj, "updatedAt", &path)?,
            archived: self.bool(&obj, "archived", &path)?,
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
