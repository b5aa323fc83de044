//! How boards, tasks and statuses look: a table of columns for people, JSON for scripts.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use taskflow_client_core::board::{Board, Millis, Priority, Task, TaskId};
use taskflow_client_core::{
    BoardChange, BoardSummary, DocumentId, Notification, SyncStatus, Viewer,
};

/// Characters of a task id shown in tables (enough to name it on the command line).
pub const SHORT_ID: usize = 8;

pub fn short(id: &str) -> &str {
    &id[..id.len().min(SHORT_ID)]
}

pub fn time(ms: Millis, tz: &TimeZone) -> String {
    Timestamp::from_millisecond(ms)
        .map(|ts| {
            ts.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| ms.to_string())
}

fn rfc3339(ms: Millis) -> Value {
    Timestamp::from_millisecond(ms).map_or(Value::from(ms), |ts| Value::from(ts.to_string()))
}

pub fn status_text(status: SyncStatus) -> String {
    match status {
        SyncStatus::InSync => "in sync".into(),
        SyncStatus::Unavailable => "not on the server".into(),
        SyncStatus::Syncing { pending: 0 } => "syncing".into(),
        SyncStatus::Syncing { pending } => format!("syncing, {pending} local changes to send"),
        SyncStatus::Offline { pending: 0 } => "offline".into(),
        SyncStatus::Offline { pending } => {
            format!("offline, {pending} local changes not on the server")
        }
    }
}

pub fn status_json(status: SyncStatus) -> Value {
    let (state, pending) = match status {
        SyncStatus::InSync => ("in_sync", 0),
        SyncStatus::Unavailable => ("unavailable", 0),
        SyncStatus::Syncing { pending } => ("syncing", pending),
        SyncStatus::Offline { pending } => ("offline", pending),
    };
    json!({ "state": state, "pending": pending })
}

pub fn task_json(task: &Task) -> Value {
    json!({
        "id": task.id.as_str(),
        "title": task.title,
        "description": task.description,
        "column": task.column.as_str(),
        "order": task.order.as_str(),
        "assignees": task.assignees,
        "labels": task.labels,
        "priority": task.priority.as_str(),
        "due": task.due.map(rfc3339),
        "createdBy": task.created_by,
        "createdAt": rfc3339(task.created_at),
        "updatedAt": rfc3339(task.updated_at),
        "archived": task.archived,
        "comments": task.comments.iter().map(|c| json!({
            "id": c.id.as_str(),
            "author": c.author,
            "body": c.body,
            "createdAt": rfc3339(c.created_at),
        })).collect::<Vec<_>>(),
    })
}

pub fn board_json(id: DocumentId, board: &Board, status: SyncStatus) -> Value {
    json!({
        "id": id.to_string(),
        "url": id.url().to_string(),
        "name": board.name,
        "status": status_json(status),
        "columns": board.columns.iter().map(|c| json!({
            "id": c.id.as_str(),
            "name": c.name,
            "wipLimit": c.wip_limit,
            "tasks": board.column_tasks(&c.id).into_iter().map(task_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "archived": board.tasks.values().filter(|t| t.archived).map(task_json).collect::<Vec<_>>(),
    })
}

pub fn summary_json(summary: &BoardSummary) -> Value {
    json!({
        "id": summary.id.to_string(),
        "url": summary.id.url().to_string(),
        "name": summary.name,
        "tasks": summary.tasks,
        "status": status_json(summary.status),
    })
}

pub fn board_list(boards: &[BoardSummary]) -> String {
    if boards.is_empty() {
        return "No boards yet. Create one with `taskflow board create NAME`, or add a shared one \
                with `taskflow board fetch ID`."
            .into();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["Board", "Tasks", "Status", "Id"]);
    for b in boards {
        table.add_row([
            b.name
                .clone()
                .unwrap_or_else(|| "(not yet received)".into()),
            b.tasks.to_string(),
            status_text(b.status),
            b.id.to_string(),
        ]);
    }
    table.to_string()
}

fn card(task: &Task, tz: &TimeZone) -> String {
    let mut lines = vec![format!("{}  #{}", task.title, short(task.id.as_str()))];
    let mut meta = Vec::new();
    meta.extend(task.assignees.iter().map(|a| format!("@{a}")));
    if task.priority != Priority::None {
        meta.push(format!("!{}", task.priority.as_str()));
    }
    if let Some(due) = task.due {
        meta.push(format!("due {}", time(due, tz)));
    }
    meta.extend(task.labels.iter().map(|l| format!("[{l}]")));
    if !task.comments.is_empty() {
        meta.push(format!("{} comments", task.comments.len()));
    }
    if !meta.is_empty() {
        lines.push(meta.join(" "));
    }
    lines.join("\n")
}

/// The board as a table: one table column per board column, cards in order.
pub fn board_table(board: &Board, status: SyncStatus, viewers: &[Viewer], tz: &TimeZone) -> String {
    let columns: Vec<Vec<&Task>> = board
        .columns
        .iter()
        .map(|c| board.column_tasks(&c.id))
        .collect();
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(
        board
            .columns
            .iter()
            .zip(&columns)
            .map(|(c, tasks)| match c.wip_limit {
                Some(limit) => format!("{} ({}/{limit})", c.name, tasks.len()),
                None => format!("{} ({})", c.name, tasks.len()),
            }),
    );
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0);
    for row in 0..rows {
        table.add_row(
            columns
                .iter()
                .map(|tasks| tasks.get(row).map(|t| card(t, tz)).unwrap_or_default()),
        );
    }
    let archived = board.tasks.values().filter(|t| t.archived).count();
    let mut out = format!("{}  ({})\n{table}", board.name, status_text(status));
    if archived > 0 {
        out.push_str(&format!("\n{archived} archived"));
    }
    if !viewers.is_empty() {
        let names: Vec<&str> = viewers.iter().map(|v| v.user.as_str()).collect();
        out.push_str(&format!("\nAlso viewing: {}", names.join(", ")));
    }
    out
}

pub fn task_detail(task: &Task, tz: &TimeZone) -> String {
    let mut out = format!("{}  #{}\n", task.title, task.id);
    out.push_str(&format!("column: {}", task.column));
    if task.archived {
        out.push_str(" (archived)");
    }
    out.push('\n');
    if !task.description.is_empty() {
        out.push_str(&format!("{}\n", task.description));
    }
    for comment in &task.comments {
        out.push_str(&format!(
            "  {} · {}: {}\n",
            time(comment.created_at, tz),
            comment.author,
            comment.body
        ));
    }
    out.trim_end().to_owned()
}

/// One line per changed task, for `watch`; `titles` holds the current title of each task.
pub fn change_lines(
    change: &BoardChange,
    board_name: &str,
    titles: &BTreeMap<TaskId, String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for field in &change.board_fields {
        lines.push(format!("{board_name}: board {field} changed"));
    }
    for (id, task) in &change.tasks {
        let title = titles
            .get(id)
            .map_or(String::new(), |t| format!(" \"{t}\""));
        let what = if task.created {
            "added".to_owned()
        } else if task.removed {
            "removed".to_owned()
        } else {
            let fields: Vec<&str> = task
                .fields
                .iter()
                .map(String::as_str)
                .filter(|f| *f != "updatedAt")
                .collect();
            format!("changed {}", fields.join(", "))
        };
        lines.push(format!(
            "{board_name}: task #{}{title} {what}",
            short(id.as_str())
        ));
    }
    lines
}

pub fn change_json(change: &BoardChange) -> Value {
    json!({
        "event": "board_changed",
        "board": change.document_id.to_string(),
        "origin": match change.origin {
            taskflow_client_core::Origin::Local => "local",
            taskflow_client_core::Origin::Remote => "remote",
        },
        "boardFields": change.board_fields,
        "tasks": change.tasks.iter().map(|(id, t)| json!({
            "id": id.as_str(),
            "created": t.created,
            "removed": t.removed,
            "fields": t.fields,
        })).collect::<Vec<_>>(),
    })
}

/// Notifications, newest first, with the unread count.
pub fn notification_list(
    notifications: &[Notification],
    unread_count: u64,
    tz: &TimeZone,
) -> String {
    if notifications.is_empty() {
        return "No notifications.\n".into();
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header(["", "When", "What", "Id"]);
    for n in notifications {
        let when = n
            .created_at
            .parse::<Timestamp>()
            .map_or_else(|_| n.created_at.clone(), |t| time(t.as_millisecond(), tz));
        let mut what = n.title.clone();
        if !n.body.is_empty() {
            what.push('\n');
            what.push_str(&n.body);
        }
        let mark = if n.read { "" } else { "•" };
        table.add_row([mark.to_owned(), when, what, n.id.clone()]);
    }
    format!(
        "{table}\n{unread_count} unread. Mark read with `taskflow notifications --read ID` or `--read-all`.\n"
    )
}
