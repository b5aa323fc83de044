//! The Tauri commands the window calls, each one call on [`App`]. Errors reach the window as
//! `{kind, message}` ([`AppError`]).

use taskflow_client_core::account::{Member, Project, Workspace};
use tauri::State;

use crate::app::{App, AppError, CardPatch};
use crate::view::{BoardView, CardView, SessionInfo, StatusView, ViewerView};

type Answer<T> = Result<T, AppError>;

#[tauri::command]
pub async fn session(app: State<'_, App>) -> Answer<Option<SessionInfo>> {
    app.session().await
}

#[tauri::command]
pub async fn sign_in(
    app: State<'_, App>,
    server: String,
    email: String,
    password: String,
) -> Answer<SessionInfo> {
    app.sign_in(&server, &email, &password).await
}

#[tauri::command]
pub async fn sign_out(app: State<'_, App>) -> Answer<()> {
    app.sign_out().await
}

#[tauri::command]
pub async fn workspaces(app: State<'_, App>) -> Answer<Vec<Workspace>> {
    app.workspaces().await
}

#[tauri::command]
pub async fn members(app: State<'_, App>, workspace: String) -> Answer<Vec<Member>> {
    app.members(&workspace).await
}

#[tauri::command]
pub async fn boards(app: State<'_, App>, workspace: String) -> Answer<Vec<Project>> {
    app.boards(&workspace).await
}

#[tauri::command]
pub async fn open_board(app: State<'_, App>, board: String) -> Answer<BoardView> {
    app.open_board(&board).await
}

#[tauri::command]
pub async fn board(app: State<'_, App>, board: String) -> Answer<BoardView> {
    app.board(&board).await
}

#[tauri::command]
pub async fn status(app: State<'_, App>, board: String) -> Answer<StatusView> {
    app.status(&board).await
}

#[tauri::command]
pub async fn viewers(app: State<'_, App>, board: String) -> Answer<Vec<ViewerView>> {
    app.viewers(&board).await
}

#[tauri::command]
pub async fn set_viewing(app: State<'_, App>, board: String, task: Option<String>) -> Answer<()> {
    app.set_viewing(&board, task.as_deref()).await
}

#[tauri::command]
pub async fn add_card(
    app: State<'_, App>,
    board: String,
    column: String,
    title: String,
) -> Answer<CardView> {
    app.add_card(&board, &column, &title).await
}

#[tauri::command]
pub async fn update_card(
    app: State<'_, App>,
    board: String,
    task: String,
    patch: CardPatch,
) -> Answer<CardView> {
    app.update_card(&board, &task, patch).await
}

#[tauri::command]
pub async fn move_card(
    app: State<'_, App>,
    board: String,
    task: String,
    column: String,
    before: Option<String>,
) -> Answer<()> {
    app.move_card(&board, &task, &column, before.as_deref())
        .await
}

#[tauri::command]
pub async fn archive_card(app: State<'_, App>, board: String, task: String) -> Answer<()> {
    app.archive_card(&board, &task).await
}

#[tauri::command]
pub async fn add_comment(
    app: State<'_, App>,
    board: String,
    task: String,
    body: String,
) -> Answer<CardView> {
    app.add_comment(&board, &task, &body).await
}

#[tauri::command]
pub async fn notifications(app: State<'_, App>) -> Answer<serde_json::Value> {
    app.notifications().await
}

#[tauri::command]
pub async fn mark_read(app: State<'_, App>, notification: Option<String>) -> Answer<()> {
    app.mark_read(notification.as_deref()).await
}
