//! What the UI is sent: plain JSON views of boards, cards, sync status and the session, built
//! from client-core's types. Times are milliseconds since the epoch (the UI formats them).

use serde::Serialize;
use taskflow_client_core::board::{Board, Task};
use taskflow_client_core::{DocumentId, SyncStatus, Viewer};

/// Who is signed in, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub server_url: String,
    pub user_id: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoardView {
    pub document_id: String,
    pub name: String,
    pub columns: Vec<ColumnView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnView {
    pub id: String,
    pub name: String,
    pub wip_limit: Option<u64>,
    /// In board order, archived cards left out.
    pub cards: Vec<CardView>,
}

/// A card as the board shows it, and as the task panel edits it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CardView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub column: String,
    pub assignees: Vec<String>,
    pub labels: Vec<String>,
    /// `none`, `low`, `medium`, `high` or `urgent`.
    pub priority: String,
    pub due: Option<i64>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub comments: Vec<CommentView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommentView {
    pub id: String,
    pub author: String,
    pub body: String,
    pub created_at: i64,
}

impl BoardView {
    pub fn of(id: DocumentId, board: &Board) -> BoardView {
        BoardView {
            document_id: id.to_string(),
            name: board.name.clone(),
            columns: board
                .columns
                .iter()
                .map(|column| ColumnView {
                    id: column.id.as_str().to_owned(),
                    name: column.name.clone(),
                    wip_limit: column.wip_limit,
                    cards: board
                        .column_tasks(&column.id)
                        .into_iter()
                        .filter(|task| !task.archived)
                        .map(CardView::of)
                        .collect(),
                })
                .collect(),
        }
    }
}

impl CardView {
    pub fn of(task: &Task) -> CardView {
        CardView {
            id: task.id.as_str().to_owned(),
            title: task.title.clone(),
            description: task.description.clone(),
            column: task.column.as_str().to_owned(),
            assignees: task.assignees.iter().cloned().collect(),
            labels: task.labels.iter().cloned().collect(),
            priority: task.priority.as_str().to_owned(),
            due: task.due,
            created_by: task.created_by.clone(),
            created_at: task.created_at,
            updated_at: task.updated_at,
            comments: task
                .comments
                .iter()
                .map(|c| CommentView {
                    id: c.id.as_str().to_owned(),
                    author: c.author.clone(),
                    body: c.body.clone(),
                    created_at: c.created_at,
                })
                .collect(),
        }
    }
}

/// Where a board stands with the server, for the indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `offline`, `syncing`, `synced` or `unavailable`.
    pub state: &'static str,
    /// Local changes not yet on the server.
    pub pending: usize,
}

impl From<SyncStatus> for StatusView {
    fn from(status: SyncStatus) -> StatusView {
        let state = match status {
            SyncStatus::Offline { .. } => "offline",
            SyncStatus::Syncing { .. } => "syncing",
            SyncStatus::InSync => "synced",
            SyncStatus::Unavailable => "unavailable",
        };
        StatusView {
            state,
            pending: status.pending(),
        }
    }
}

/// Someone else with the board open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerView {
    pub user_id: String,
    pub task_id: Option<String>,
}

impl From<&Viewer> for ViewerView {
    fn from(viewer: &Viewer) -> ViewerView {
        ViewerView {
            user_id: viewer.user.clone(),
            task_id: viewer.task.as_ref().map(|t| t.as_str().to_owned()),
        }
    }
}
