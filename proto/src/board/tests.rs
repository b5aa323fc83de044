//! Board schema behaviour: writes read back, violations are typed errors, and replicas that
//! edit concurrently converge with every card in exactly one place.

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ROOT, ReadDoc};
use proptest::prelude::*;

use super::ops::{self, NewTask, Position, TaskEdit};
use super::*;

const T0: Millis = 1_764_000_000_000;

fn board_doc() -> AutoCommit {
    let mut doc = AutoCommit::new();
    ops::create_board(&mut doc, "Launch").expect("create board");
    doc
}

fn todo() -> ColumnId {
    ColumnId::new("todo")
}

fn titles(board: &Board, column: &str) -> Vec<String> {
    board
        .column_tasks(&ColumnId::new(column))
        .iter()
        .map(|t| t.title.clone())
        .collect()
}

fn add(doc: &mut AutoCommit, title: &str, position: Position) -> TaskId {
    let mut task = NewTask::titled(title, "ann");
    task.position = position;
    ops::add_task(doc, task, T0).expect("add task")
}

#[test]
fn a_new_board_has_the_default_columns_and_no_tasks() {
    let board = Board::read(&board_doc()).expect("valid board");
    assert_eq!(board.name, "Launch");
    assert_eq!(board.schema_version, SCHEMA_VERSION);
    let names: Vec<_> = board.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["To do", "In progress", "Done"]);
    assert!(board.columns.iter().all(|c| c.wip_limit.is_none()));
    assert!(board.tasks.is_empty());
}

#[test]
fn numbers_are_written_as_signed_integers_so_js_reads_plain_numbers() {
    let doc = board_doc();
    let (value, _) = doc
        .get(ROOT, "schemaVersion")
        .expect("read")
        .expect("present");
    assert_eq!(value.as_scalar(), Some(&ScalarValue::Int(1)));
}

#[test]
fn one_task_reads_alone_as_it_reads_in_the_board() {
    let mut doc = board_doc();
    let id = add(&mut doc, "one", Position::Bottom);
    add(&mut doc, "two", Position::Bottom);
    let board = Board::read(&doc).expect("board");
    assert_eq!(
        Board::read_task(&doc, &id).expect("read"),
        Some(board.tasks[&id].clone())
    );
    assert_eq!(
        Board::read_task(&doc, &TaskId::new("nope")).expect("read"),
        None
    );
}

#[test]
fn creating_a_board_twice_is_refused() {
    let mut doc = board_doc();
    assert_eq!(
        ops::create_board(&mut doc, "Again"),
        Err(SchemaError::AlreadyABoard)
    );
}

#[test]
fn a_task_reads_back_with_every_field() {
    let mut doc = board_doc();
    let task = NewTask {
        id: TaskId::new("t1"),
        title: "Write the launch post".into(),
        description: "Two paragraphs".into(),
        column: Some(ColumnId::new("doing")),
        position: Position::Bottom,
        assignees: BTreeSet::from(["ann".to_owned(), "bo".to_owned()]),
        labels: BTreeSet::from(["marketing".to_owned()]),
        priority: Priority::High,
        due: Some(T0 + 86_400_000),
        created_by: "ann".into(),
    };
    ops::add_task(&mut doc, task, T0).expect("add");
    ops::add_comment(
        &mut doc,
        &TaskId::new("t1"),
        CommentId::new("c1"),
        "bo",
        "On it",
        T0 + 5,
    )
    .expect("comment");

    let board = Board::read(&doc).expect("valid");
    let t = &board.tasks[&TaskId::new("t1")];
    assert_eq!(t.title, "Write the launch post");
    assert_eq!(t.description, "Two paragraphs");
    assert_eq!(t.column, ColumnId::new("doing"));
    assert_eq!(t.assignees.len(), 2);
    assert!(t.labels.contains("marketing"));
    assert_eq!(t.priority, Priority::High);
    assert_eq!(t.due, Some(T0 + 86_400_000));
    assert_eq!(
        (t.created_by.as_str(), t.created_at, t.updated_at),
        ("ann", T0, T0)
    );
    assert!(!t.archived);
    assert_eq!(t.comments.len(), 1);
    assert_eq!(
        (t.comments[0].author.as_str(), t.comments[0].body.as_str()),
        ("bo", "On it")
    );
}

#[test]
fn edits_change_only_the_named_fields() {
    let mut doc = board_doc();
    let id = add(&mut doc, "Draft", Position::Bottom);
    let edit = TaskEdit {
        title: Some("Final".into()),
        priority: Some(Priority::Urgent),
        due: Some(Some(T0 + 1)),
        labels: Some(BTreeSet::from(["x".to_owned()])),
        ..TaskEdit::default()
    };
    ops::edit_task(&mut doc, &id, edit, T0 + 10).expect("edit");
    let t = Board::read(&doc).expect("valid").tasks[&id].clone();
    assert_eq!(
        (t.title.as_str(), t.priority, t.due),
        ("Final", Priority::Urgent, Some(T0 + 1))
    );
    assert_eq!(t.updated_at, T0 + 10);
    assert_eq!(t.created_at, T0);

    let clear = TaskEdit {
        due: Some(None),
        labels: Some(BTreeSet::new()),
        ..TaskEdit::default()
    };
    ops::edit_task(&mut doc, &id, clear, T0 + 20).expect("edit");
    let t = Board::read(&doc).expect("valid").tasks[&id].clone();
    assert_eq!(t.due, None);
    assert!(t.labels.is_empty());
    assert_eq!(t.title, "Final");
}

#[test]
fn positions_order_cards_in_a_column() {
    let mut doc = board_doc();
    let b = add(&mut doc, "b", Position::Bottom);
    add(&mut doc, "d", Position::Bottom);
    add(&mut doc, "a", Position::Top);
    add(&mut doc, "c", Position::After(b.clone()));
    let board = Board::read(&doc).expect("valid");
    assert_eq!(titles(&board, "todo"), ["a", "b", "c", "d"]);

    ops::move_task(&mut doc, &b, &todo(), Position::Bottom, T0).expect("reorder");
    let board = Board::read(&doc).expect("valid");
    assert_eq!(titles(&board, "todo"), ["a", "c", "d", "b"]);

    ops::move_task(&mut doc, &b, &ColumnId::new("done"), Position::Top, T0).expect("move");
    let board = Board::read(&doc).expect("valid");
    assert_eq!(titles(&board, "todo"), ["a", "c", "d"]);
    assert_eq!(titles(&board, "done"), ["b"]);
}

#[test]
fn archived_cards_leave_the_column_but_stay_in_the_document() {
    let mut doc = board_doc();
    let id = add(&mut doc, "old", Position::Bottom);
    ops::set_archived(&mut doc, &id, true, T0).expect("archive");
    let board = Board::read(&doc).expect("valid");
    assert!(board.column_tasks(&todo()).is_empty());
    assert!(board.tasks[&id].archived);
}

#[test]
fn unknown_tasks_and_columns_are_errors() {
    let mut doc = board_doc();
    let ghost = TaskId::new("ghost");
    assert_eq!(
        ops::edit_task(&mut doc, &ghost, TaskEdit::default(), T0),
        Err(SchemaError::NoSuchTask(ghost.clone()))
    );
    let id = add(&mut doc, "a", Position::Bottom);
    assert_eq!(
        ops::move_task(&mut doc, &id, &ColumnId::new("nope"), Position::Top, T0),
        Err(SchemaError::NoSuchColumn(ColumnId::new("nope")))
    );
    assert_eq!(
        ops::move_task(&mut doc, &id, &todo(), Position::Before(ghost.clone()), T0),
        Err(SchemaError::NoSuchTask(ghost))
    );
}

#[test]
fn inserting_between_colliding_keys_rekeys_the_run() {
    // Two replicas put a card at the bottom of the same column concurrently: equal keys.
    let mut a = board_doc();
    let first = add(&mut a, "first", Position::Bottom);
    let mut b = a.fork();
    let x = add(&mut a, "x", Position::Bottom);
    let y = add(&mut b, "y", Position::Bottom);
    a.merge(&mut b).expect("merge");
    let board = Board::read(&a).expect("valid");
    assert_eq!(board.tasks[&x].order, board.tasks[&y].order);

    // Put a new card between the two tied cards.
    let (lo, hi) = if x < y { (x, y) } else { (y, x) };
    let mid = add(&mut a, "mid", Position::After(lo.clone()));
    let board = Board::read(&a).expect("valid");
    let order: Vec<TaskId> = board
        .column_tasks(&todo())
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(order, [first, lo, mid, hi]);
}

#[test]
fn schema_violations_are_typed_errors() {
    let empty = AutoCommit::new();
    assert!(matches!(Board::read(&empty), Err(SchemaError::Missing(_))));

    let mut future = board_doc();
    future.put(ROOT, "schemaVersion", 99u64).expect("put");
    assert_eq!(
        Board::read(&future),
        Err(SchemaError::UnsupportedVersion(99))
    );

    let mut bad_priority = board_doc();
    let id = add(&mut bad_priority, "a", Position::Bottom);
    let tasks = match bad_priority.get(ROOT, "tasks").expect("get") {
        Some((_, obj)) => obj,
        None => panic!("tasks missing"),
    };
    let (_, task) = bad_priority
        .get(&tasks, id.as_str())
        .expect("get")
        .expect("task");
    bad_priority
        .put(&task, "priority", "whenever")
        .expect("put");
    assert!(matches!(
        Board::read(&bad_priority),
        Err(SchemaError::InvalidValue { .. })
    ));

    bad_priority.put(&task, "priority", "low").expect("put");
    bad_priority.put(&task, "column", "limbo").expect("put");
    assert!(matches!(
        Board::read(&bad_priority),
        Err(SchemaError::UnknownColumn { .. })
    ));

    bad_priority.put(&task, "column", "todo").expect("put");
    bad_priority
        .put_object(&task, "title", ObjType::List)
        .expect("put");
    assert!(matches!(
        Board::read(&bad_priority),
        Err(SchemaError::WrongType { .. })
    ));

    bad_priority.put(ROOT, "tasks", 5).expect("put");
    assert!(matches!(
        Board::read(&bad_priority),
        Err(SchemaError::WrongType { .. })
    ));
}

#[test]
fn plain_strings_and_integer_times_from_other_clients_are_read() {
    let mut doc = board_doc();
    let id = add(&mut doc, "a", Position::Bottom);
    let (_, tasks) = doc.get(ROOT, "tasks").expect("get").expect("tasks");
    let (_, task) = doc.get(&tasks, id.as_str()).expect("get").expect("task");
    doc.put(&task, "title", "plain string").expect("put");
    doc.put(&task, "createdAt", 42i64).expect("put");
    let board = Board::read(&doc).expect("valid");
    assert_eq!(board.tasks[&id].title, "plain string");
    assert_eq!(board.tasks[&id].created_at, 42);
    // Editing a plain-string title turns it into text again.
    let edit = TaskEdit {
        title: Some("text again".into()),
        ..TaskEdit::default()
    };
    ops::edit_task(&mut doc, &id, edit, T0).expect("edit");
    assert_eq!(
        Board::read(&doc).expect("valid").tasks[&id].title,
        "text again"
    );
}

// ---- convergence under concurrency ----------------------------------------------------------

const TASK_POOL: usize = 6;
const COLUMNS: [&str; 3] = ["todo", "doing", "done"];

#[derive(Debug, Clone)]
enum Op {
    Add {
        task: usize,
        column: usize,
        top: bool,
    },
    Title {
        task: usize,
        text: String,
    },
    Move {
        task: usize,
        column: usize,
        anchor: Option<usize>,
        before: bool,
    },
    Assign {
        task: usize,
        user: usize,
    },
    Archive {
        task: usize,
        archived: bool,
    },
    Comment {
        task: usize,
        body: String,
    },
    Due {
        task: usize,
        due: Option<i64>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let task = 0..TASK_POOL;
    prop_oneof![
        (task.clone(), 0..3usize, any::<bool>()).prop_map(|(task, column, top)| Op::Add {
            task,
            column,
            top
        }),
        (task.clone(), "[a-z ]{0,8}").prop_map(|(task, text)| Op::Title { task, text }),
        (
            task.clone(),
            0..3usize,
            proptest::option::of(0..TASK_POOL),
            any::<bool>()
        )
            .prop_map(|(task, column, anchor, before)| Op::Move {
                task,
                column,
                anchor,
                before
            }),
        (task.clone(), 0..3usize).prop_map(|(task, user)| Op::Assign { task, user }),
        (task.clone(), any::<bool>()).prop_map(|(task, archived)| Op::Archive { task, archived }),
        (task.clone(), "[a-z]{1,5}").prop_map(|(task, body)| Op::Comment { task, body }),
        (task, proptest::option::of(0..1000i64)).prop_map(|(task, due)| Op::Due { task, due }),
    ]
}

fn task_id(n: usize) -> TaskId {
    TaskId::new(format!("task-{n}"))
}

/// Applies an op; ops that do not apply to this replica's state (unknown task, anchor not in
/// the column) are skipped, as a UI would not offer them.
fn apply(doc: &mut AutoCommit, op: &Op, step: i64) {
    let result = match op {
        Op::Add { task, column, top } => {
            let mut new = NewTask::titled(format!("t{task}"), "ann");
            new.id = task_id(*task);
            new.column = Some(ColumnId::new(COLUMNS[*column]));
            new.position = if *top {
                Position::Top
            } else {
                Position::Bottom
            };
            ops::add_task(doc, new, step).map(|_| ())
        }
        Op::Title { task, text } => {
            let edit = TaskEdit {
                title: Some(text.clone()),
                ..TaskEdit::default()
            };
            ops::edit_task(doc, &task_id(*task), edit, step)
        }
        Op::Move {
            task,
            column,
            anchor,
            before,
        } => {
            let position = match anchor {
                None => Position::Bottom,
                Some(a) if *before => Position::Before(task_id(*a)),
                Some(a) => Position::After(task_id(*a)),
            };
            ops::move_task(
                doc,
                &task_id(*task),
                &ColumnId::new(COLUMNS[*column]),
                position,
                step,
            )
        }
        Op::Assign { task, user } => {
            let edit = TaskEdit {
                assignees: Some(BTreeSet::from([format!("user-{user}")])),
                ..TaskEdit::default()
            };
            ops::edit_task(doc, &task_id(*task), edit, step)
        }
        Op::Archive { task, archived } => ops::set_archived(doc, &task_id(*task), *archived, step),
        Op::Comment { task, body } => {
            let id = CommentId::new(format!("c{step}-{}", doc.get_actor()));
            ops::add_comment(doc, &task_id(*task), id, "bo", body, step).map(|_| ())
        }
        Op::Due { task, due } => {
            let edit = TaskEdit {
                due: Some(*due),
                ..TaskEdit::default()
            };
            ops::edit_task(doc, &task_id(*task), edit, step)
        }
    };
    doc.commit();
    match result {
        Ok(()) | Err(SchemaError::NoSuchTask(_)) => {}
        Err(SchemaError::InvalidValue { .. }) if matches!(op, Op::Add { .. }) => {}
        Err(e) => panic!("{op:?} failed: {e}"),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Edit { replica: usize, op: Op },
    Merge { into: usize, from: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, op()).prop_map(|(replica, op)| Step::Edit { replica, op }),
        1 => (0..3usize, 0..3usize).prop_map(|(into, from)| Step::Merge { into, from }),
    ]
}

fn assert_invariants(board: &Board) {
    let mut placed = BTreeSet::new();
    for column in &board.columns {
        for task in board.column_tasks(&column.id) {
            assert!(placed.insert(task.id.clone()), "{} shown twice", task.id);
        }
    }
    let live: BTreeSet<_> = board
        .tasks
        .values()
        .filter(|t| !t.archived)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(placed, live, "every live task is in exactly one column");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn three_replicas_converge(steps in proptest::collection::vec(step(), 1..40), final_order in Just(vec![0usize, 1, 2]).prop_shuffle()) {
        let mut base = board_doc();
        let mut replicas: Vec<AutoCommit> = (0..3u8)
            .map(|n| base.fork().with_actor(ActorId::from(vec![n + 1; 16])))
            .collect();
        for (n, step) in steps.iter().enumerate() {
            match step {
                Step::Edit { replica, op } => apply(&mut replicas[*replica], op, T0 + n as i64),
                Step::Merge { into, from } if into != from => {
                    let mut source = replicas[*from].clone();
                    replicas[*into].merge(&mut source).expect("merge");
                }
                Step::Merge { .. } => {}
            }
            // Every intermediate state is a valid board too.
            for r in &replicas {
                assert_invariants(&Board::read(r).expect("valid board"));
            }
        }
        // Everyone merges everyone, in a random order.
        for &into in &final_order {
            for from in 0..3 {
                if from != into {
                    let mut source = replicas[from].clone();
                    replicas[into].merge(&mut source).expect("merge");
                }
            }
        }
        for &into in &final_order {
            for from in 0..3 {
                if from != into {
                    let mut source = replicas[from].clone();
                    replicas[into].merge(&mut source).expect("merge");
                }
            }
        }
        let boards: Vec<Board> = replicas.iter().map(|r| Board::read(r).expect("valid board")).collect();
        prop_assert_eq!(&boards[0], &boards[1]);
        prop_assert_eq!(&boards[1], &boards[2]);
        assert_invariants(&boards[0]);
    }
}

// ---- documents written by careless clients -------------------------------------------------

#[derive(Debug, Clone)]
enum Vandal {
    Scalar(i64),
    Text,
    Str(String),
    List,
    Map,
    Null,
    Delete,
}

fn vandal() -> impl Strategy<Value = Vandal> {
    prop_oneof![
        any::<i64>().prop_map(Vandal::Scalar),
        Just(Vandal::Text),
        "[a-z0-9]{0,6}".prop_map(Vandal::Str),
        Just(Vandal::List),
        Just(Vandal::Map),
        Just(Vandal::Null),
        Just(Vandal::Delete),
    ]
}

const TASK_KEYS: [&str; 15] = [
    "id",
    "title",
    "description",
    "column",
    "order",
    "assignees",
    "labels",
    "priority",
    "due",
    "createdBy",
    "createdAt",
    "updatedAt",
    "archived",
    "comments",
    "unknown",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever another client writes into a board, reading it gives a board or a typed error.
    #[test]
    fn reading_a_vandalised_board_never_panics(
        hits in proptest::collection::vec((0usize..3, 0usize..TASK_KEYS.len(), vandal()), 1..6),
    ) {
        let mut doc = board_doc();
        let id = add(&mut doc, "victim", Position::Bottom);
        ops::add_comment(&mut doc, &id, CommentId::new("c"), "bo", "hi", T0).expect("comment");
        let (_, tasks) = doc.get(ROOT, "tasks").expect("get").expect("tasks");
        let (_, task) = doc.get(&tasks, id.as_str()).expect("get").expect("task");
        let (_, columns) = doc.get(ROOT, "columns").expect("get").expect("columns");
        for (target, key, value) in hits {
            let (obj, key) = match target {
                0 => (task.clone(), TASK_KEYS[key]),
                1 => (ROOT, ["schemaVersion", "name", "columns", "tasks", "x"][key % 5]),
                _ => {
                    let (_, column) = doc.get(&columns, 0).expect("get").expect("column");
                    (column, ["id", "name", "wipLimit"][key % 3])
                }
            };
            let _ = match value {
                Vandal::Scalar(n) => doc.put(&obj, key, n).map(|_| ()),
                Vandal::Text => doc.put_object(&obj, key, ObjType::Text).map(|_| ()),
                Vandal::Str(s) => doc.put(&obj, key, s).map(|_| ()),
                Vandal::List => doc.put_object(&obj, key, ObjType::List).map(|_| ()),
                Vandal::Map => doc.put_object(&obj, key, ObjType::Map).map(|_| ()),
                Vandal::Null => doc.put(&obj, key, automerge::ScalarValue::Null).map(|_| ()),
                Vandal::Delete => doc.delete(&obj, key).map(|_| ()),
            };
        }
        let _ = Board::read(&doc);
    }
}
