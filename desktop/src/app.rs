//! The app's state and everything its commands do: signing in (and staying signed in), the
//! client-core engine that keeps and syncs the replicas, and the live notification stream.
//! Runtime-agnostic: what goes to the window goes through [`Ui`], so the tests drive it with
//! Tauri's mock runtime and the app with the real one.
//!
//! On disk, under the app's data directory: `session.json` (server and user),
//! `credentials.json` (tokens, 0600, refreshed by client-core) and `replicas/<user id>/` (the
//! boards, usable offline).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use taskflow_client_core::account::{
    AccountClient, AccountError, CredentialStore, CredentialsFile, Member, Project, Session,
    Workspace,
};
use taskflow_client_core::board::ops::{NewTask, Position, TaskEdit};
use taskflow_client_core::board::{ColumnId, Priority, TaskId};
use taskflow_client_core::{
    Client, ClientConfig, ClientError, ClientEvent, ConnectionState, DocumentId, Edit, Edited,
    Notification, NotificationEvent, NotificationMarker, NotificationStream, ServerConfig,
};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::view::{BoardView, CardView, SessionInfo, StatusView, ViewerView};

/// How long opening a board waits for it to arrive from the server.
const ARRIVAL: Duration = Duration::from_secs(15);

/// What the app tells its window: events for the UI, and native notifications.
pub trait Ui: Send + Sync + 'static {
    fn emit(&self, event: &str, payload: serde_json::Value);
    fn notify(&self, title: &str, body: &str);
}

/// Why a command failed, as the UI shows it: `kind` tells it what to offer (sign in again,
/// fix the input, try again later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "camelCase")]
pub enum AppError {
    #[error("{0}")]
    SignedOut(String),
    #[error("{0}")]
    BadInput(String),
    /// The server said no (wrong password, no access, …).
    #[error("{0}")]
    Rejected(String),
    /// The server cannot be reached; local work goes on.
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

impl From<AccountError> for AppError {
    fn from(e: AccountError) -> AppError {
        match e {
            AccountError::BadUrl(_) => AppError::BadInput(e.to_string()),
            AccountError::SignedOut => AppError::SignedOut("sign in again".into()),
            AccountError::Network(_) => AppError::Network(e.to_string()),
            // The server failing or busy is not the user's doing: try again later.
            AccountError::Rejected { status, .. } if status >= 500 || status == 429 => {
                AppError::Network(e.to_string())
            }
            AccountError::Rejected { status: 401, .. } => AppError::SignedOut(e.to_string()),
            AccountError::Rejected { status: 404, .. } => AppError::NotFound(e.to_string()),
            AccountError::Rejected { .. } => AppError::Rejected(e.to_string()),
        }
    }
}

impl From<ClientError> for AppError {
    fn from(e: ClientError) -> AppError {
        match e {
            ClientError::UnknownBoard(_)
            | ClientError::Unavailable(_)
            | ClientError::NotYetReceived(_) => AppError::NotFound(e.to_string()),
            ClientError::BadServerUrl { .. } => AppError::BadInput(e.to_string()),
            ClientError::Schema(_) => AppError::BadInput(e.to_string()),
            other => AppError::Failed(other.to_string()),
        }
    }
}

/// Changes to a card from the task panel; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CardPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub assignees: Option<Vec<String>>,
    pub labels: Option<Vec<String>>,
    pub priority: Option<String>,
    pub due: Option<i64>,
    /// Removes the due date.
    pub clear_due: bool,
}

/// What is kept of a sign-in besides the tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedSession {
    server_url: String,
    user_id: String,
    name: String,
    email: String,
}

struct SignedIn {
    info: SessionInfo,
    session: Arc<Session>,
    client: Client,
    notifications: NotificationMarker,
    forwarders: Vec<JoinHandle<()>>,
    /// The board open in the window, which others see this user viewing.
    viewing: Option<DocumentId>,
}

/// The app.
pub struct App {
    data_dir: PathBuf,
    ui: Arc<dyn Ui>,
    signed_in: Mutex<Option<SignedIn>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The sync socket's URL from what a person types: `https://host`, `host:8080`, or the
/// `ws(s)://…/api/v1/sync` URL itself.
pub fn sync_url(server: &str) -> Result<String, AppError> {
    let server = server.trim().trim_end_matches('/');
    if server.is_empty() {
        return Err(AppError::BadInput("enter the server's address".into()));
    }
    let url = if let Some(rest) = server.strip_prefix("https://") {
        format!("wss://{rest}/api/v1/sync")
    } else if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}/api/v1/sync")
    } else if server.starts_with("ws://") || server.starts_with("wss://") {
        if server.ends_with("/api/v1/sync") {
            server.to_owned()
        } else {
            format!("{server}/api/v1/sync")
        }
    } else if server.contains("://") {
        return Err(AppError::BadInput(format!(
            "`{server}` is not a Taskflow server address (http://, https://, ws:// or wss://)"
        )));
    } else {
        format!("ws://{server}/api/v1/sync")
    };
    ServerConfig::new(&url)?;
    Ok(url)
}

fn document(id: &str) -> Result<DocumentId, AppError> {
    id.parse()
        .map_err(|_| AppError::BadInput(format!("`{id}` is not a board id")))
}

fn priority(name: &str) -> Result<Priority, AppError> {
    Priority::parse(name).ok_or_else(|| {
        AppError::BadInput(format!(
            "`{name}` is not a priority (none, low, medium, high, urgent)"
        ))
    })
}

fn non_empty(what: &str, text: &str) -> Result<String, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AppError::BadInput(format!("the {what} cannot be empty")));
    }
    Ok(text.to_owned())
}

impl App {
    pub fn new(data_dir: PathBuf, ui: Arc<dyn Ui>) -> App {
        App {
            data_dir,
            ui,
            signed_in: Mutex::new(None),
        }
    }

    fn credentials_file(&self) -> CredentialsFile {
        CredentialsFile::new(self.data_dir.join("credentials.json"))
    }

    fn session_file(&self) -> PathBuf {
        self.data_dir.join("session.json")
    }

    /// Who is signed in: this run's sign-in, or the one kept from the last run (opened with
    /// its boards, offline if the server cannot be reached).
    pub async fn session(&self) -> Result<Option<SessionInfo>, AppError> {
        let mut signed_in = self.signed_in.lock().await;
        if let Some(signed) = signed_in.as_ref() {
            return Ok(Some(signed.info.clone()));
        }
        let Ok(text) = std::fs::read_to_string(self.session_file()) else {
            return Ok(None);
        };
        let saved: SavedSession = serde_json::from_str(&text)
            .map_err(|e| AppError::Failed(format!("the saved session is unreadable: {e}")))?;
        if self.credentials_file().load().is_none() {
            return Ok(None);
        }
        let signed = self.start(saved).await?;
        let info = signed.info.clone();
        *signed_in = Some(signed);
        Ok(Some(info))
    }

    pub async fn sign_in(
        &self,
        server: &str,
        email: &str,
        password: &str,
    ) -> Result<SessionInfo, AppError> {
        let url = sync_url(server)?;
        let email = non_empty("email", email)?;
        if password.is_empty() {
            return Err(AppError::BadInput("enter your password".into()));
        }
        let account = AccountClient::for_sync_url(&url)?;
        // One sign-in or sign-out at a time, from the first step to the last.
        let mut signed_in = self.signed_in.lock().await;
        // Here a refusal is about what was typed, not a session that ended.
        let credentials = account.login(&email, password).await.map_err(|e| match e {
            AccountError::Rejected { status, .. } if status < 500 && status != 429 => {
                AppError::Rejected(e.to_string())
            }
            other => other.into(),
        })?;
        // The previous user's engine stops before the files it reads its tokens from change.
        if let Some(previous) = signed_in.take() {
            stop(previous).await;
        }
        self.credentials_file()
            .write(&credentials)
            .map_err(|e| AppError::Failed(format!("keeping the sign-in failed: {e}")))?;
        let saved = SavedSession {
            server_url: url,
            user_id: credentials.user.id.clone(),
            name: credentials.user.name.clone(),
            email: credentials.user.email.clone(),
        };
        let text = serde_json::to_string(&saved).map_err(|e| AppError::Failed(e.to_string()))?;
        std::fs::write(self.session_file(), text)
            .map_err(|e| AppError::Failed(format!("keeping the sign-in failed: {e}")))?;
        let signed = self.start(saved).await?;
        let info = signed.info.clone();
        *signed_in = Some(signed);
        Ok(info)
    }

    /// Signs out here (the server session ends too when it can be reached). The boards stay
    /// on the device for the next sign-in as the same user.
    pub async fn sign_out(&self) -> Result<(), AppError> {
        let mut signed_in = self.signed_in.lock().await;
        if let Some(signed) = signed_in.take() {
            // The engine first, so no token refresh races the logout.
            let session = signed.session.clone();
            stop(signed).await;
            if let Ok(credentials) = session.credentials().await {
                let _ = session.account().logout(&credentials).await;
            }
        }
        self.credentials_file()
            .remove()
            .map_err(|e| AppError::Failed(format!("forgetting the sign-in failed: {e}")))?;
        match std::fs::remove_file(self.session_file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AppError::Failed(format!(
                "forgetting the sign-in failed: {e}"
            ))),
            _ => Ok(()),
        }
    }

    async fn start(&self, saved: SavedSession) -> Result<SignedIn, AppError> {
        let account = AccountClient::for_sync_url(&saved.server_url)?;
        let session = Session::new(account, self.credentials_file());
        let server = ServerConfig::new(&saved.server_url)?.with_tokens(session.clone());
        let client = Client::open(ClientConfig {
            data_dir: self.data_dir.join("replicas").join(&saved.user_id),
            user: saved.user_id.clone(),
            server: Some(server),
        })
        .await?;
        let stream = NotificationStream::connect(&saved.server_url, session.clone())?;
        let notifications = stream.marker();
        let forwarders = vec![
            tokio::spawn(forward_client_events(client.clone(), self.ui.clone())),
            tokio::spawn(forward_notifications(stream, self.ui.clone())),
        ];
        Ok(SignedIn {
            info: SessionInfo {
                server_url: saved.server_url,
                user_id: saved.user_id,
                name: saved.name,
                email: saved.email,
            },
            session,
            client,
            notifications,
            forwarders,
            viewing: None,
        })
    }

    /// The signed-in client and session.
    async fn signed(&self) -> Result<(Client, Arc<Session>, String), AppError> {
        let signed_in = self.signed_in.lock().await;
        let signed = signed_in
            .as_ref()
            .ok_or_else(|| AppError::SignedOut("sign in first".into()))?;
        Ok((
            signed.client.clone(),
            signed.session.clone(),
            signed.info.user_id.clone(),
        ))
    }

    pub async fn workspaces(&self) -> Result<Vec<Workspace>, AppError> {
        let (_, session, _) = self.signed().await?;
        let credentials = session.credentials().await?;
        Ok(session.account().workspaces(&credentials).await?)
    }

    pub async fn members(&self, workspace: &str) -> Result<Vec<Member>, AppError> {
        let (_, session, _) = self.signed().await?;
        let credentials = session.credentials().await?;
        Ok(session.account().members(&credentials, workspace).await?)
    }

    pub async fn boards(&self, workspace: &str) -> Result<Vec<Project>, AppError> {
        let (_, session, _) = self.signed().await?;
        let credentials = session.credentials().await?;
        Ok(session.account().projects(&credentials, workspace).await?)
    }

    /// Opens a board: from this device when it is here (at once, even offline), otherwise
    /// from the server, waiting for it to arrive. Others see that this user views it.
    pub async fn open_board(&self, id: &str) -> Result<BoardView, AppError> {
        let (client, _, _) = self.signed().await?;
        let id = document(id)?;
        let board = match client.board(id).await {
            Ok(board) => board,
            Err(ClientError::UnknownBoard(_)) => {
                client.fetch(id).await?;
                arrived(&client, id).await?
            }
            Err(ClientError::NotYetReceived(_)) => arrived(&client, id).await?,
            Err(e) => return Err(e.into()),
        };
        client.set_viewing(id, None).await?;
        // No longer shown as viewing the board open before.
        let previous = match self.signed_in.lock().await.as_mut() {
            Some(signed) => signed.viewing.replace(id),
            None => None,
        };
        if let Some(previous) = previous.filter(|p| *p != id) {
            client.stop_viewing(previous).await?;
        }
        Ok(BoardView::of(id, &board))
    }

    pub async fn board(&self, id: &str) -> Result<BoardView, AppError> {
        let (client, _, _) = self.signed().await?;
        let id = document(id)?;
        Ok(BoardView::of(id, &client.board(id).await?))
    }

    /// Tells the board's other viewers which card this user has open (`None`: none).
    pub async fn set_viewing(&self, id: &str, task: Option<&str>) -> Result<(), AppError> {
        let (client, _, _) = self.signed().await?;
        client
            .set_viewing(document(id)?, task.map(TaskId::new))
            .await?;
        Ok(())
    }

    pub async fn viewers(&self, id: &str) -> Result<Vec<ViewerView>, AppError> {
        let (client, _, _) = self.signed().await?;
        let viewers = client.viewers(document(id)?).await?;
        Ok(viewers.iter().map(ViewerView::from).collect())
    }

    pub async fn status(&self, id: &str) -> Result<StatusView, AppError> {
        let (client, _, _) = self.signed().await?;
        Ok(client.status(document(id)?).await?.into())
    }

    /// A card at the bottom of `column`.
    pub async fn add_card(
        &self,
        id: &str,
        column: &str,
        title: &str,
    ) -> Result<CardView, AppError> {
        let (client, _, user) = self.signed().await?;
        let id = document(id)?;
        let mut task = NewTask::titled(non_empty("title", title)?, user);
        task.column = Some(ColumnId::new(column));
        let Edited::Task(task) = client.edit(id, Edit::AddTask(task)).await? else {
            return Err(AppError::Failed("the card was not added".into()));
        };
        card(&client, id, &task).await
    }

    pub async fn update_card(
        &self,
        id: &str,
        task: &str,
        patch: CardPatch,
    ) -> Result<CardView, AppError> {
        let (client, _, _) = self.signed().await?;
        let id = document(id)?;
        let task = TaskId::new(task);
        let edit = TaskEdit {
            title: patch
                .title
                .as_deref()
                .map(|t| non_empty("title", t))
                .transpose()?,
            description: patch.description,
            assignees: patch.assignees.map(|a| a.into_iter().collect()),
            labels: patch.labels.map(|l| {
                l.iter()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect()
            }),
            priority: patch.priority.as_deref().map(priority).transpose()?,
            due: if patch.clear_due {
                Some(None)
            } else {
                patch.due.map(Some)
            },
        };
        client
            .edit(
                id,
                Edit::EditTask {
                    task: task.clone(),
                    edit,
                },
            )
            .await?;
        card(&client, id, &task).await
    }

    /// Moves a card into `column`, just before the card `before` (at the bottom without one).
    pub async fn move_card(
        &self,
        id: &str,
        task: &str,
        column: &str,
        before: Option<&str>,
    ) -> Result<(), AppError> {
        let (client, _, _) = self.signed().await?;
        let position = match before {
            Some(next) => Position::Before(TaskId::new(next)),
            None => Position::Bottom,
        };
        let edit = Edit::MoveTask {
            task: TaskId::new(task),
            column: ColumnId::new(column),
            position,
        };
        client.edit(document(id)?, edit).await?;
        Ok(())
    }

    pub async fn archive_card(&self, id: &str, task: &str) -> Result<(), AppError> {
        let (client, _, _) = self.signed().await?;
        let edit = Edit::SetArchived {
            task: TaskId::new(task),
            archived: true,
        };
        client.edit(document(id)?, edit).await?;
        Ok(())
    }

    pub async fn add_comment(
        &self,
        id: &str,
        task: &str,
        body: &str,
    ) -> Result<CardView, AppError> {
        let (client, _, _) = self.signed().await?;
        let id = document(id)?;
        let task = TaskId::new(task);
        let body = non_empty("comment", body)?;
        client
            .edit(
                id,
                Edit::AddComment {
                    task: task.clone(),
                    body,
                },
            )
            .await?;
        card(&client, id, &task).await
    }

    /// The latest notifications, newest first, with the unread count.
    pub async fn notifications(&self) -> Result<serde_json::Value, AppError> {
        let (_, session, _) = self.signed().await?;
        let credentials = session.credentials().await?;
        let page = session
            .account()
            .notifications(&credentials, false, None, 50)
            .await?;
        Ok(json!({ "notifications": page.notifications, "unreadCount": page.unread_count }))
    }

    pub async fn mark_read(&self, notification: Option<&str>) -> Result<(), AppError> {
        let stream = {
            let signed_in = self.signed_in.lock().await;
            let signed = signed_in
                .as_ref()
                .ok_or_else(|| AppError::SignedOut("sign in first".into()))?;
            signed.notifications.clone()
        };
        match notification {
            Some(id) => stream.mark_read(id).await,
            None => stream.mark_all_read().await,
        }
        Ok(())
    }

    /// Stops syncing (the window is closing); everything is already stored.
    pub async fn shutdown(&self) {
        if let Some(signed) = self.signed_in.lock().await.take() {
            stop(signed).await;
        }
    }
}

async fn stop(signed: SignedIn) {
    for forwarder in &signed.forwarders {
        forwarder.abort();
    }
    signed.client.shutdown().await;
}

async fn card(client: &Client, id: DocumentId, task: &TaskId) -> Result<CardView, AppError> {
    let task = client
        .task(id, task.clone())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no card {task} on this board")))?;
    Ok(CardView::of(&task))
}

/// Waits for a fetched board to arrive from the server.
async fn arrived(
    client: &Client,
    id: DocumentId,
) -> Result<taskflow_client_core::board::Board, AppError> {
    let mut events = client.subscribe();
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        match client.board(id).await {
            Ok(board) => return Ok(board),
            Err(ClientError::NotYetReceived(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if client.status(id).await? == taskflow_client_core::SyncStatus::Unavailable {
            return Err(AppError::NotFound(
                "the server has no such board, or you may not see it".into(),
            ));
        }
        if tokio::time::timeout_at(deadline, events.recv())
            .await
            .is_err()
        {
            return Err(AppError::Network(
                "the board has not arrived from the server yet; it opens once you are online"
                    .into(),
            ));
        }
    }
}

/// Sends the engine's news to the window.
async fn forward_client_events(client: Client, ui: Arc<dyn Ui>) {
    let mut events = client.subscribe();
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Missed some: have the window re-read everything it shows.
                ui.emit("resync", json!({}));
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        match event {
            ClientEvent::Board(change) => {
                let tasks: Vec<&str> = change.tasks.keys().map(TaskId::as_str).collect();
                ui.emit(
                    "board-changed",
                    json!({ "documentId": change.document_id.to_string(), "tasks": tasks }),
                );
            }
            ClientEvent::Status {
                document_id,
                status,
            } => ui.emit(
                "sync-status",
                json!({ "documentId": document_id.to_string(), "status": StatusView::from(status) }),
            ),
            ClientEvent::Presence {
                document_id,
                viewers,
            } => {
                let viewers: Vec<ViewerView> = viewers.iter().map(ViewerView::from).collect();
                ui.emit(
                    "presence",
                    json!({ "documentId": document_id.to_string(), "viewers": viewers }),
                );
            }
            ClientEvent::Connection(state) => {
                let payload = match state {
                    ConnectionState::Disabled => json!({ "state": "disabled" }),
                    ConnectionState::Connecting => json!({ "state": "connecting" }),
                    ConnectionState::Online { .. } => json!({ "state": "online" }),
                    ConnectionState::Offline { error, retry_in } => json!({
                        "state": "offline",
                        "error": error,
                        "retryInMs": retry_in.as_millis() as u64,
                    }),
                };
                ui.emit("connection", payload);
            }
            ClientEvent::Refused(reason) => ui.emit("refused", json!({ "reason": reason })),
            ClientEvent::Received { .. } => {}
        }
    }
}

/// Sends notifications to the window, and new ones to the desktop as well.
async fn forward_notifications(mut stream: NotificationStream, ui: Arc<dyn Ui>) {
    let mut unread = stream.watch_unread();
    loop {
        tokio::select! {
            event = stream.next() => match event {
                Some(NotificationEvent::Received(notification)) => {
                    let Notification { title, body, .. } = notification.as_ref();
                    ui.notify(title, body);
                    ui.emit("notification", json!({ "notification": notification }));
                }
                Some(NotificationEvent::Synced { unread_count, items }) => ui.emit(
                    "notifications-synced",
                    json!({ "unreadCount": unread_count, "notifications": items }),
                ),
                Some(NotificationEvent::Read { ids, all }) => {
                    ui.emit("notifications-read", json!({ "ids": ids, "all": all }));
                }
                Some(NotificationEvent::Disconnected { .. }) => {}
                None => return,
            },
            changed = unread.changed() => {
                if changed.is_err() {
                    return;
                }
                let count = *unread.borrow_and_update();
                ui.emit("unread", json!({ "count": count }));
            }
        }
    }
}
