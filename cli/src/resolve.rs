//! Turning what a user types into ids: boards by id, URL or name; tasks by id prefix or title;
//! columns by id or name; due dates in a few common forms.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use taskflow_client_core::board::{Board, ColumnId, Millis, TaskId};
use taskflow_client_core::{AutomergeUrl, BoardSummary, DocumentId};

use crate::error::CliError;

/// The shortest task id prefix accepted.
const MIN_PREFIX: usize = 4;

pub fn board(reference: &str, boards: &[BoardSummary]) -> Result<DocumentId, CliError> {
    if let Ok(id) = document_id(reference) {
        if boards.iter().any(|b| b.id == id) {
            return Ok(id);
        }
        return Err(not_in_store(id));
    }
    let named: Vec<&BoardSummary> = boards
        .iter()
        .filter(|b| {
            b.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(reference))
        })
        .collect();
    match named.as_slice() {
        [one] => Ok(one.id),
        [] => Err(CliError::not_found(format!("no board named `{reference}`"))),
        many => Err(CliError::bad_input(format!(
            "{} boards are named `{reference}`; use an id: {}",
            many.len(),
            many.iter()
                .map(|b| b.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub fn not_in_store(id: DocumentId) -> CliError {
    CliError::not_found(format!(
        "board {id} is not in this profile's store (add it with `taskflow board fetch {id}`)"
    ))
}

/// A document id, bare or as an `automerge:` URL.
pub fn document_id(text: &str) -> Result<DocumentId, CliError> {
    let parsed = if text.starts_with("automerge:") {
        AutomergeUrl::parse(text).map(|u| u.document_id)
    } else {
        DocumentId::parse(text)
    };
    parsed.map_err(|e| CliError::bad_input(format!("`{text}` is not a board id: {e}")))
}

pub fn task(reference: &str, board: &Board) -> Result<TaskId, CliError> {
    let exact = TaskId::new(reference);
    if board.tasks.contains_key(&exact) {
        return Ok(exact);
    }
    let mut by_prefix = Vec::new();
    if reference.len() >= MIN_PREFIX {
        by_prefix = board
            .tasks
            .keys()
            .filter(|id| id.as_str().starts_with(reference))
            .collect();
    }
    let by_title: Vec<&TaskId> = board
        .tasks
        .values()
        .filter(|t| t.title == reference)
        .map(|t| &t.id)
        .collect();
    let found = if by_prefix.is_empty() {
        by_title
    } else {
        by_prefix
    };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CliError::not_found(format!(
            "no task `{reference}` on board `{}`",
            board.name
        ))),
        many => Err(CliError::bad_input(format!(
            "`{reference}` matches {} tasks; use more of the id",
            many.len()
        ))),
    }
}

pub fn column(reference: &str, board: &Board) -> Result<ColumnId, CliError> {
    board
        .columns
        .iter()
        .find(|c| c.id.as_str() == reference)
        .or_else(|| {
            board
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(reference))
        })
        .map(|c| c.id.clone())
        .ok_or_else(|| {
            CliError::not_found(format!(
                "no column `{reference}` on board `{}` (columns: {})",
                board.name,
                board
                    .columns
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The column that means "done": one with id `done`, else the last column.
pub fn done_column(board: &Board) -> Result<ColumnId, CliError> {
    board
        .columns
        .iter()
        .find(|c| c.id.as_str() == "done")
        .or(board.columns.last())
        .map(|c| c.id.clone())
        .ok_or_else(|| CliError::bad_input(format!("board `{}` has no columns", board.name)))
}

/// A due date: RFC 3339 (`2026-12-24T17:00:00Z`), a local date and time (`2026-12-24T17:00`),
/// or a date (`2026-12-24`, due by the end of that day) in the time zone `tz`.
pub fn due(text: &str, tz: &TimeZone) -> Result<Millis, CliError> {
    // A bare date also parses as a date-time (at midnight), so it is tried first.
    let at = if let Ok(ts) = text.parse::<Timestamp>() {
        Some(ts)
    } else if let Some(date) = text
        .parse::<Date>()
        .ok()
        .filter(|_| text.len() == "YYYY-MM-DD".len())
    {
        date.at(23, 59, 59, 0)
            .to_zoned(tz.clone())
            .ok()
            .map(|z| z.timestamp())
    } else if let Ok(local) = text.parse::<DateTime>() {
        local.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
    } else {
        None
    };
    at.map(|ts| ts.as_millisecond()).ok_or_else(|| {
        CliError::bad_input(format!(
            "malformed due date `{text}`: use YYYY-MM-DD, YYYY-MM-DDTHH:MM or RFC 3339"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_dates_in_each_accepted_form() {
        let utc = TimeZone::UTC;
        assert_eq!(
            due("2026-12-24T17:00:00Z", &utc).expect("rfc3339"),
            1_798_131_600_000
        );
        assert_eq!(
            due("2026-12-24T17:00", &utc).expect("local"),
            1_798_131_600_000
        );
        assert_eq!(due("2026-12-24", &utc).expect("date"), 1_798_156_799_000);
        let berlin = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::fixed(jiff::tz::offset(1)));
        assert_eq!(
            due("2026-12-24T17:00", &berlin).expect("local"),
            1_798_131_600_000 - 3_600_000
        );
        for bad in ["tomorrow", "2026-13-01", "24/12/2026", ""] {
            let err = due(bad, &utc).expect_err(bad);
            assert!(
                err.message.contains("malformed due date"),
                "{}",
                err.message
            );
        }
    }
}
