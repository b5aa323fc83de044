//! Every column's cards in order, kept beside a document so that placing a card costs a lookup
//! instead of a scan of the whole board (what [`ops`](super::ops) does without it: 70 ms per
//! card on a 10,000-task board).
//!
//! Built in one pass, then kept current by re-reading the tasks a change touched
//! ([`OrderIndex::refresh`]). [`OrderIndex::key_for`] answers the key `ops` would compute, or
//! `None` where `ops` must decide (equal neighbouring keys to re-key, or a neighbour that is not
//! in the column), so callers pass its answer as [`Position::AtKey`](super::ops::Position).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use automerge::{ObjType, ROOT, ReadDoc, ScalarValueRef, Value, ValueRef};

use super::ops::Position;
use super::{ColumnId, OrderKey, TaskId};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderIndex {
    /// Live (not archived) cards per column, as the board shows them: by key, then id.
    columns: HashMap<ColumnId, BTreeSet<(OrderKey, TaskId)>>,
    /// Where each indexed card is.
    cards: HashMap<TaskId, (ColumnId, OrderKey)>,
}

/// What the index needs of a task: its column and key while it is live.
fn placement(doc: &impl ReadDoc, task: &automerge::ObjId) -> Option<(ColumnId, OrderKey)> {
    let (mut column, mut archived, mut order) = (None, false, None);
    for field in doc.map_range(task, ..) {
        match (field.key.as_ref(), &field.value) {
            ("column", ValueRef::Scalar(ScalarValueRef::Str(c))) => {
                column = Some(ColumnId::new(c.as_ref()));
            }
            ("archived", ValueRef::Scalar(ScalarValueRef::Boolean(a))) => archived = *a,
            ("order", ValueRef::Scalar(ScalarValueRef::Str(o))) => order = OrderKey::parse(o).ok(),
            _ => {}
        }
    }
    match (column, archived, order) {
        (Some(column), false, Some(order)) => Some((column, order)),
        _ => None,
    }
}

fn tasks_map(doc: &impl ReadDoc) -> Option<automerge::ObjId> {
    match doc.get(ROOT, "tasks") {
        Ok(Some((Value::Object(ObjType::Map), tasks))) => Some(tasks),
        _ => None,
    }
}

impl OrderIndex {
    /// Indexes every live card of the board in `doc`.
    pub fn build(doc: &impl ReadDoc) -> OrderIndex {
        let mut index = OrderIndex::default();
        let Some(tasks) = tasks_map(doc) else {
            return index;
        };
        for task in doc.map_range(&tasks, ..) {
            if task.value != ValueRef::Object(ObjType::Map) {
                continue;
            }
            if let Some(place) = placement(doc, &task.id()) {
                index.insert(TaskId::new(task.key.as_ref()), place);
            }
        }
        index
    }

    fn insert(&mut self, id: TaskId, (column, order): (ColumnId, OrderKey)) {
        self.columns
            .entry(column.clone())
            .or_default()
            .insert((order.clone(), id.clone()));
        self.cards.insert(id, (column, order));
    }

    fn remove(&mut self, id: &TaskId) {
        if let Some((column, order)) = self.cards.remove(id)
            && let Some(cards) = self.columns.get_mut(&column)
        {
            cards.remove(&(order, id.clone()));
            if cards.is_empty() {
                self.columns.remove(&column);
            }
        }
    }

    /// Re-reads one task (after a change that touched it).
    pub fn refresh(&mut self, doc: &impl ReadDoc, id: &TaskId) {
        self.remove(id);
        let Some(tasks) = tasks_map(doc) else {
            return;
        };
        if let Ok(Some((Value::Object(ObjType::Map), task))) = doc.get(&tasks, id.as_str())
            && let Some(place) = placement(doc, &task)
        {
            self.insert(id.clone(), place);
        }
    }

    /// The key for a card placed at `position` in `column` (`moving`: the card itself, left out
    /// of its neighbours), or `None` when only `ops` can tell.
    pub fn key_for(
        &self,
        column: &ColumnId,
        position: &Position,
        moving: Option<&TaskId>,
    ) -> Option<OrderKey> {
        let empty = BTreeSet::new();
        let cards = self.columns.get(column).unwrap_or(&empty);
        let not_moving = |card: &&(OrderKey, TaskId)| Some(&card.1) != moving;
        let (lower, upper) = match position {
            Position::AtKey(key) => return Some(key.clone()),
            Position::Top => (None, cards.iter().find(not_moving)),
            Position::Bottom => (cards.iter().rev().find(not_moving), None),
            Position::Before(id) | Position::After(id) => {
                if Some(id) == moving {
                    return None;
                }
                let (at_column, at) = self.cards.get(id)?;
                if at_column != column {
                    return None;
                }
                let anchor = cards.get(&(at.clone(), id.clone()))?;
                if matches!(position, Position::Before(_)) {
                    (cards.range(..anchor).rev().find(not_moving), Some(anchor))
                } else {
                    let after = (Bound::Excluded(anchor), Bound::Unbounded);
                    (Some(anchor), cards.range(after).find(not_moving))
                }
            }
        };
        OrderKey::between(lower.map(|c| &c.0), upper.map(|c| &c.0))
    }
}

#[cfg(test)]
mod tests {
    use automerge::AutoCommit;
    use proptest::prelude::*;

    use super::*;
    use crate::board::ops::{self, NewTask};

    fn position(kind: u8, neighbour: Option<TaskId>) -> Position {
        match (kind % 4, neighbour) {
            (0, _) | (_, None) => Position::Top,
            (1, _) => Position::Bottom,
            (2, Some(id)) => Position::Before(id),
            (_, Some(id)) => Position::After(id),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]

        /// Whatever the board, the index answers the key `ops` computes (or defers to it), and
        /// stays equal to a fresh index as cards are added, moved and archived.
        #[test]
        fn the_index_agrees_with_ops(steps in prop::collection::vec((0u8..5, 0u8..8, 0usize..64, 0u8..3), 1..60)) {
            let mut doc = AutoCommit::new();
            ops::create_board(&mut doc, "b").expect("board");
            let mut index = OrderIndex::build(&doc);
            let mut ids: Vec<TaskId> = Vec::new();
            for (n, (action, kind, pick, column)) in steps.into_iter().enumerate() {
                let column = ColumnId::new(["todo", "doing", "done"][usize::from(column)]);
                let neighbour = (!ids.is_empty()).then(|| ids[pick % ids.len()].clone());
                let place = position(kind, neighbour);
                if action == 4 {
                    // Two replicas place a card at the same spot: equal keys after the merge.
                    let mut other = doc.fork();
                    for (replica, suffix) in [(&mut doc, "a"), (&mut other, "b")] {
                        let mut task = NewTask::titled("t", "u");
                        task.id = TaskId::new(format!("t{n}{suffix}"));
                        task.column = Some(column.clone());
                        task.position = place.clone();
                        let _ = ops::add_task(replica, task, 1);
                    }
                    doc.merge(&mut other).expect("merge");
                    for suffix in ["a", "b"] {
                        let id = TaskId::new(format!("t{n}{suffix}"));
                        if crate::board::Board::read_task(&doc, &id).expect("read").is_some() {
                            ids.push(id);
                        }
                    }
                    for id in &ids {
                        index.refresh(&doc, id);
                    }
                    prop_assert_eq!(&index, &OrderIndex::build(&doc));
                    continue;
                }
                let moving = (!ids.is_empty() && action != 0).then(|| ids[pick * 7 % ids.len()].clone());
                let expected = match &moving {
                    None => {
                        let id = TaskId::new(format!("t{n}"));
                        let key = index.key_for(&column, &place, None);
                        let mut task = NewTask::titled("t", "u");
                        task.id = id.clone();
                        task.column = Some(column.clone());
                        task.position = place.clone();
                        if ops::add_task(&mut doc, task, 1).is_ok() {
                            ids.push(id.clone());
                            index.refresh(&doc, &id);
                            Some((id, key))
                        } else {
                            None
                        }
                    }
                    Some(id) if action == 3 => {
                        let _ = ops::set_archived(&mut doc, id, true, 1);
                        index.refresh(&doc, id);
                        None
                    }
                    Some(id) => {
                        let key = index.key_for(&column, &place, Some(id));
                        if ops::move_task(&mut doc, id, &column, place.clone(), 1).is_ok() {
                            index.refresh(&doc, id);
                            Some((id.clone(), key))
                        } else {
                            // ops refused: so must the index have deferred.
                            prop_assert_eq!(key, None);
                            None
                        }
                    }
                };
                // A placement between equal keys re-keys the tied cards too: re-read them all,
                // as a user of the index does for every task a change touched.
                for id in &ids {
                    index.refresh(&doc, id);
                }
                if let Some((id, Some(key))) = expected {
                    let task = crate::board::Board::read_task(&doc, &id).expect("read").expect("there");
                    prop_assert_eq!(task.order, key);
                }
                prop_assert_eq!(&index, &OrderIndex::build(&doc));
            }
        }
    }
}
