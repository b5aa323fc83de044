//! The notification engine: people learn what needs them without watching the board.
//!
//! - [`rules`]: who is told what, as pure functions of an event and its facts.
//! - [`Notifier`] (and [`NotificationConsumer`], its consumer of the domain events): applies the
//!   rules, records who now watches the task, honours each user's preferences per kind and
//!   channel, stores the inbox rows and queues the emails of one event in one transaction
//!   (keyed by event and user, so an event handled twice tells nobody twice), then pushes each
//!   new notification to its user's open sockets.
//! - [`hub`]: routes those pushes to the node holding the user's socket (Redis), or in process.
//! - [`http`]: the inbox, preferences and task watching over REST; [`socket`]: the notification
//!   WebSocket.
//! - [`mailer`]: sends queued emails over SMTP, retried with backoff, apart from in-app delivery.
//! - [`render`]: titles and the email templates.

pub mod http;
pub mod hub;
pub mod mailer;
pub mod render;
pub mod rules;
pub mod socket;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use taskflow_proto::events::{Envelope, EventType, rfc3339};
use taskflow_proto::notifications::{Notification, ServerMessage};

use hub::Push;
use tokio::sync::Notify;

use crate::auth::tokens;
use crate::events::consume::Consumer;
use crate::now_ms;
use crate::store::{EmailRow, NotificationRow, Store, StoreError};
use hub::Hub;
use rules::{Channel, Facts, Kind, Member};

/// Unread notifications sent on connect.
pub const UNREAD_SYNC_ITEMS: usize = 20;

/// Why an event could not be handled (it is tried again).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rendering an email: {0}")]
    Render(#[from] minijinja::Error),
}

/// Creates notifications from events and tells their users.
#[derive(Debug)]
pub struct Notifier {
    store: Store,
    pub hub: Arc<Hub>,
    /// Whether emails are queued (an SMTP server is configured).
    email: bool,
    /// How emails name this server.
    server_url: String,
    /// Wakes the mailer when emails were queued.
    pub emails_queued: Arc<Notify>,
}

impl Notifier {
    pub fn new(store: Store, hub: Arc<Hub>, email: bool, server_url: String) -> Notifier {
        Notifier {
            store,
            hub,
            email,
            server_url,
            emails_queued: Arc::new(Notify::new()),
        }
    }

    /// Tells whoever `event` concerns. Handling an event again tells nobody again.
    pub async fn on_event(&self, event: &Envelope) -> Result<(), NotifyError> {
        use EventType::*;
        let Some(kind) = EventType::parse(&event.kind) else {
            return Ok(());
        };
        if !matches!(
            kind,
            TaskCreated
                | TaskAssigned
                | TaskStatusUpdated
                | CommentAdded
                | UserInvited
                | TaskDueSoon
                | TaskOverdue
        ) {
            return Ok(());
        }
        let store = &self.store;
        let data = &event.data;
        let task = data.project_id.as_deref().zip(data.task_id.as_deref());
        let watchers = match task {
            Some((project, task)) if matches!(kind, TaskStatusUpdated | CommentAdded) => {
                store.watchers(project, task).await?
            }
            _ => Vec::new(),
        };
        let members = match &data.workspace_id {
            Some(workspace) => self.members(workspace, kind, event, &watchers).await?,
            None => Vec::new(),
        };
        let invitee = match &data.invitation {
            Some(invitation) => store.user_by_email(&invitation.email).await?,
            None => None,
        };
        let plan = rules::plan(
            event,
            &Facts {
                members: &members,
                watchers: &watchers,
                invitee_account: invitee.as_ref().map(|u| u.id.as_str()),
            },
        );
        let now = now_ms();
        if let Some((project, task)) = task {
            let watch: Vec<(String, &str)> = plan
                .watch
                .iter()
                .map(|(user, reason)| (user.clone(), reason.as_str()))
                .collect();
            store.watch_implicitly(project, task, &watch, now).await?;
        }
        if plan.notify.is_empty() && plan.invitee_email.is_none() {
            return Ok(());
        }
        let actor_name = match &data.actor {
            Some(actor) => match members.iter().find(|m| &m.id == actor) {
                Some(m) => m.name.clone(),
                None => store
                    .user_by_id(actor)
                    .await?
                    .map_or_else(|| "Someone".to_owned(), |u| u.name),
            },
            None => "Taskflow".to_owned(),
        };
        let workspace_name = match (&data.workspace_id, kind) {
            (Some(workspace), UserInvited) => store
                .workspace(workspace)
                .await?
                .map(|w| w.name)
                .unwrap_or_default(),
            _ => String::new(),
        };
        let project_name = match &data.project_id {
            Some(project) if self.email => store.project(project).await?.map(|p| p.name),
            _ => None,
        };

        let mut rows = Vec::new();
        let mut emails = Vec::new();
        for (user, kind) in &plan.notify {
            let (in_app, email) = self.channels(user, *kind).await?;
            let title = render::title(*kind, event, &actor_name, &workspace_name);
            let body = render::body(*kind, event);
            // Invitations are mailed below, with their token.
            let address = members
                .iter()
                .find(|m| &m.id == user)
                .map(|m| (m.email.as_str(), m.name.as_str()));
            if email
                && *kind != Kind::Invited
                && let Some((address, name)) = address
            {
                let message = render::notification_email(&render::NotificationMail {
                    recipient: name,
                    kind: *kind,
                    title: &title,
                    body: &body,
                    task: data.task.as_ref().map(|t| t.title.as_str()),
                    project: project_name.as_deref(),
                    server: &self.server_url,
                })?;
                emails.push(EmailRow::new(
                    format!("{}:{address}", event.id),
                    address,
                    message,
                    now,
                ));
            }
            if in_app {
                rows.push(NotificationRow {
                    seq: 0,
                    id: uuid::Uuid::new_v4().to_string(),
                    user_id: user.clone(),
                    kind: kind.as_str().to_owned(),
                    event_id: event.id.clone(),
                    actor_id: data.actor.clone(),
                    actor_name: data.actor.as_ref().map(|_| actor_name.clone()),
                    workspace_id: data.workspace_id.clone(),
                    project_id: data.project_id.clone(),
                    task_id: data.task_id.clone(),
                    title,
                    body,
                    created_at: now,
                    read_at: None,
                });
            }
        }
        let mut mailed = !emails.is_empty();
        let new = store.save_notifications(&rows, &emails).await?;
        if let (Some(address), Some(invitation)) = (&plan.invitee_email, &data.invitation)
            && self.email
        {
            let token = tokens::new_refresh_token();
            let message = render::invitation_email(&render::InvitationMail {
                inviter: &actor_name,
                workspace: &workspace_name,
                role: &invitation.role,
                email: address,
                token: &token,
                expires: &invitation.expires_at,
                server: &self.server_url,
            })?;
            let email = EmailRow::new(format!("{}:{address}", event.id), address, message, now);
            mailed |= store
                .queue_invitation_email(&invitation.id, &tokens::refresh_token_hash(&token), &email)
                .await?;
        }
        if mailed {
            self.emails_queued.notify_one();
        }
        // Stored: a socket that misses its push still finds it (unread_sync, REST).
        for row in new {
            let user = row.user_id.clone();
            let push = Push::Received(Box::new(notification_json(row)));
            self.hub.send(&user, push).await;
        }
        Ok(())
    }

    /// The members of `workspace` the rules need for `event`: all of them only when a comment may
    /// mention anyone or an overdue task tells the managers; else just the people involved
    /// (so the cost of an event does not grow with the workspace).
    async fn members(
        &self,
        workspace: &str,
        kind: EventType,
        event: &Envelope,
        watchers: &[String],
    ) -> Result<Vec<Member>, StoreError> {
        let data = &event.data;
        let mentions = data.comment.as_ref().is_some_and(|c| c.body.contains('@'));
        let rows = if mentions || kind == EventType::TaskOverdue {
            self.store.members(workspace).await?
        } else {
            let assignees = data.task.iter().flat_map(|t| &t.assignees);
            let mut involved: Vec<String> = assignees
                .chain(&data.added)
                .chain(watchers)
                .chain(&data.actor)
                .cloned()
                .collect();
            involved.sort();
            involved.dedup();
            self.store.members_among(workspace, &involved).await?
        };
        Ok(rows
            .into_iter()
            .map(|m| Member {
                manager: m.role.can_manage(),
                id: m.user_id,
                name: m.name,
                email: m.email,
            })
            .collect())
    }

    /// Whether `user` gets `kind` in the app and by email (email only when it can be sent).
    async fn channels(&self, user: &str, kind: Kind) -> Result<(bool, bool), StoreError> {
        let chosen = self.store.notification_preferences(user).await?;
        let on = |channel| rules::enabled(kind, channel, &chosen);
        Ok((on(Channel::InApp), self.email && on(Channel::Email)))
    }

    /// What a socket is sent first: the unread count and the latest unread notifications.
    pub async fn unread_sync(&self, user: &str) -> Result<ServerMessage, StoreError> {
        let items = self
            .store
            .notifications(user, None, true, UNREAD_SYNC_ITEMS)
            .await?;
        Ok(ServerMessage::UnreadSync {
            unread_count: self.store.unread_count(user).await?,
            items: items.into_iter().map(notification_json).collect(),
        })
    }

    /// What a socket of `user` is sent for `push`: with the unread count read now, so that each
    /// socket's counts follow the order it sends them in, wherever the push was made.
    pub async fn message(&self, user: &str, push: &Push) -> Result<ServerMessage, StoreError> {
        let unread_count = self.store.unread_count(user).await?;
        Ok(match push {
            Push::Received(notification) => ServerMessage::NotificationReceived {
                notification: notification.clone(),
                unread_count,
            },
            Push::Read { ids, all } => ServerMessage::Read {
                ids: ids.clone(),
                all: *all,
                unread_count,
            },
        })
    }

    /// Marks one of `user`'s notifications read and tells their sockets (the one that asked
    /// learns the new unread count, the others also that it was read elsewhere). `None` when
    /// they have no such notification.
    pub async fn mark_read(
        &self,
        user: &str,
        id: &str,
    ) -> Result<Option<Notification>, StoreError> {
        let Some((row, changed)) = self.store.mark_read(user, id, now_ms()).await? else {
            return Ok(None);
        };
        if changed {
            let push = Push::Read {
                ids: vec![row.id.clone()],
                all: false,
            };
            self.hub.send(user, push).await;
        }
        Ok(Some(notification_json(row)))
    }

    /// Marks every notification of `user` read and tells their sockets; answers how many were
    /// unread.
    pub async fn mark_all_read(&self, user: &str) -> Result<u64, StoreError> {
        let marked = self.store.mark_all_read(user, now_ms()).await?;
        if marked > 0 {
            let push = Push::Read {
                ids: Vec::new(),
                all: true,
            };
            self.hub.send(user, push).await;
        }
        Ok(marked)
    }
}

/// A stored notification as clients see it.
pub fn notification_json(row: NotificationRow) -> Notification {
    Notification {
        id: row.id,
        kind: row.kind,
        title: row.title,
        body: row.body,
        actor_id: row.actor_id,
        actor_name: row.actor_name,
        workspace_id: row.workspace_id,
        project_id: row.project_id,
        task_id: row.task_id,
        event_id: row.event_id,
        read: row.read_at.is_some(),
        read_at: row.read_at.map(rfc3339),
        created_at: rfc3339(row.created_at),
    }
}

/// Feeds the domain events to the [`Notifier`].
#[derive(Debug)]
pub struct NotificationConsumer(pub Arc<Notifier>);

impl Consumer for NotificationConsumer {
    fn name(&self) -> &str {
        "notifications"
    }

    fn handle(&self, event: Arc<Envelope>) -> BoxFuture<'static, Result<(), String>> {
        let notifier = self.0.clone();
        Box::pin(async move { notifier.on_event(&event).await.map_err(|e| e.to_string()) })
    }
}
