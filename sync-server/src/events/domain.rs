//! Events about workspaces, projects and people, written by the store in the transaction of the
//! rows they describe (board events come from merges: [`super::derive`]).

use taskflow_proto::events::{
    Envelope, EventData, EventType, InvitationState, ProjectState, UserState, rfc3339,
};

use crate::access::Role;
use crate::store::{InvitationRow, OutboxEvent, ProjectRow, UserRow};

fn event(kind: EventType, data: EventData, now_ms: i64) -> OutboxEvent {
    let envelope = Envelope::new(uuid::Uuid::new_v4().to_string(), kind, now_ms, data);
    OutboxEvent::of(&envelope, now_ms)
}

pub fn project_created(project: &ProjectRow) -> OutboxEvent {
    let data = EventData {
        actor: Some(project.created_by.clone()),
        workspace_id: Some(project.workspace_id.clone()),
        project_id: Some(project.id.clone()),
        project: Some(ProjectState {
            id: project.id.clone(),
            name: project.name.clone(),
            document_id: project.document_id.clone(),
        }),
        ..EventData::default()
    };
    event(EventType::ProjectCreated, data, project.created_at)
}

pub fn user_registered(user: &UserRow) -> OutboxEvent {
    let data = EventData {
        actor: Some(user.id.clone()),
        user: Some(UserState {
            id: user.id.clone(),
            email: user.email.clone(),
            name: user.name.clone(),
        }),
        ..EventData::default()
    };
    event(EventType::UserRegistered, data, user.created_at)
}

pub fn user_invited(invitation: &InvitationRow) -> OutboxEvent {
    let data = EventData {
        actor: Some(invitation.invited_by.clone()),
        workspace_id: Some(invitation.workspace_id.clone()),
        invitation: Some(InvitationState {
            id: invitation.id.clone(),
            email: invitation.email.clone(),
            role: invitation.role.as_str().to_owned(),
            expires_at: rfc3339(invitation.expires_at),
        }),
        ..EventData::default()
    };
    event(EventType::UserInvited, data, invitation.created_at)
}

/// A membership began (`from` `None`), changed role, or ended (`to` `None`).
pub fn member_changed(
    workspace: &str,
    actor: &str,
    member: &str,
    from: Option<Role>,
    to: Option<Role>,
    now_ms: i64,
) -> OutboxEvent {
    let kind = match (from, to) {
        (None, _) => EventType::MemberJoined,
        (Some(_), Some(_)) => EventType::MemberRoleChanged,
        (Some(_), None) => EventType::MemberRemoved,
    };
    let data = EventData {
        actor: Some(actor.to_owned()),
        workspace_id: Some(workspace.to_owned()),
        member_id: Some(member.to_owned()),
        from: from.map(|r| r.as_str().into()),
        to: to.map(|r| r.as_str().into()),
        ..EventData::default()
    };
    event(kind, data, now_ms)
}
