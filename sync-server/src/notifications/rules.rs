//! Who is told what: the notification engine's decisions, as pure functions of one event and
//! the facts around it (the workspace's members, the task's watchers).
//!
//! - `task.assigned` → each new assignee.
//! - `task.status.updated` → the task's assignees and watchers.
//! - `comment.added` → anyone `@mentioned` by name or email (as `comment.mentioned`), then the
//!   assignees and watchers.
//! - `user.invited` → the invitee: always by email (the email carries the invitation's token),
//!   and in the app when they already have an account.
//! - `task.due_soon` → the assignees; `task.overdue` → the assignees and the workspace's
//!   admins and owners.
//!
//! Nobody is told of their own action, and only members of the task's workspace are told of
//! it. Creating a task, being assigned to it and commenting on it make a user watch it.

use taskflow_proto::events::{Envelope, EventType};

/// What a notification is about; each has its own preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Assigned,
    StatusChanged,
    Commented,
    Mentioned,
    Invited,
    DueSoon,
    Overdue,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Assigned,
        Kind::StatusChanged,
        Kind::Commented,
        Kind::Mentioned,
        Kind::Invited,
        Kind::DueSoon,
        Kind::Overdue,
    ];

    /// The name clients see (`taskflow_proto::notifications::KINDS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Assigned => "task.assigned",
            Kind::StatusChanged => "task.status_changed",
            Kind::Commented => "comment.added",
            Kind::Mentioned => "comment.mentioned",
            Kind::Invited => "invitation.received",
            Kind::DueSoon => "task.due_soon",
            Kind::Overdue => "task.overdue",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// For people choosing their preferences.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Assigned => "You were assigned to a task",
            Kind::StatusChanged => "A task you are assigned to or watch moved to another column",
            Kind::Commented => "A comment on a task you are assigned to or watch",
            Kind::Mentioned => "Someone mentioned you in a comment",
            Kind::Invited => "You were invited to a workspace",
            Kind::DueSoon => "A task you are assigned to is due soon",
            Kind::Overdue => "A task you are assigned to (or, as an admin, any task) is overdue",
        }
    }

    /// Whether a user who has not chosen gets this kind on `channel`: everything in the app;
    /// by email what asks something of them.
    pub fn default_on(self, channel: Channel) -> bool {
        match channel {
            Channel::InApp => true,
            Channel::Email => !matches!(self, Kind::StatusChanged | Kind::Commented),
        }
    }

    /// Whether users may turn `channel` off. An invitation is always mailed: the email carries
    /// the token that accepts it.
    pub fn optional(self, channel: Channel) -> bool {
        !(self == Kind::Invited && channel == Channel::Email)
    }
}

/// Whether a user gets `kind` on `channel`, given their choices (kind, channel, enabled): what
/// they chose, else the kind's default; a channel that cannot be turned off is always on.
pub fn enabled(kind: Kind, channel: Channel, chosen: &[(String, String, bool)]) -> bool {
    !kind.optional(channel)
        || chosen
            .iter()
            .find(|(k, c, _)| k == kind.as_str() && c == channel.as_str())
            .map_or(kind.default_on(channel), |(_, _, on)| *on)
}

/// Where a notification reaches its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    InApp,
    Email,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::InApp, Channel::Email];

    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "in_app",
            Channel::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why a user watches a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchReason {
    Explicit,
    Creator,
    Assignee,
    Commenter,
}

impl WatchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchReason::Explicit => "explicit",
            WatchReason::Creator => "creator",
            WatchReason::Assignee => "assignee",
            WatchReason::Commenter => "commenter",
        }
    }
}

/// A member of the event's workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub email: String,
    /// An admin or owner.
    pub manager: bool,
}

/// What the rules need besides the event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The workspace's members.
    pub members: &'a [Member],
    /// Who watches the task (and has not stopped).
    pub watchers: &'a [String],
    /// For `user.invited`: the account with the invited address, if there is one.
    pub invitee_account: Option<&'a str>,
}

/// Everything one event leads to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Who is told, and as what kind (one kind per user).
    pub notify: Vec<(String, Kind)>,
    /// Who starts watching the task, and why.
    pub watch: Vec<(String, WatchReason)>,
    /// The address an invitation is mailed to.
    pub invitee_email: Option<String>,
}

impl Plan {
    fn tell(&mut self, user: &str, kind: Kind) {
        if !self.notify.iter().any(|(u, _)| u == user) {
            self.notify.push((user.to_owned(), kind));
        }
    }
}

/// What `event` leads to, given `facts`.
pub fn plan(event: &Envelope, facts: &Facts) -> Plan {
    let mut plan = Plan::default();
    let Some(kind) = EventType::parse(&event.kind) else {
        return plan;
    };
    let data = &event.data;
    let assignees: &[String] = data.task.as_ref().map_or(&[], |t| &t.assignees);
    let involved = || assignees.iter().chain(facts.watchers);
    match kind {
        EventType::TaskCreated => {
            if let Some(creator) = data
                .actor
                .as_ref()
                .or(data.task.as_ref().map(|t| &t.created_by))
            {
                plan.watch.push((creator.clone(), WatchReason::Creator));
            }
        }
        EventType::TaskAssigned => {
            for user in &data.added {
                plan.watch.push((user.clone(), WatchReason::Assignee));
                plan.tell(user, Kind::Assigned);
            }
        }
        EventType::TaskStatusUpdated => {
            for user in involved() {
                plan.tell(user, Kind::StatusChanged);
            }
        }
        EventType::CommentAdded => {
            if let Some(comment) = &data.comment {
                plan.watch
                    .push((comment.author.clone(), WatchReason::Commenter));
                for user in mentions(&comment.body, facts.members) {
                    plan.tell(&user, Kind::Mentioned);
                }
            }
            for user in involved() {
                plan.tell(user, Kind::Commented);
            }
        }
        EventType::UserInvited => {
            plan.invitee_email = data.invitation.as_ref().map(|i| i.email.clone());
            if let Some(user) = facts.invitee_account {
                plan.tell(user, Kind::Invited);
            }
        }
        EventType::TaskDueSoon => {
            for user in assignees {
                plan.tell(user, Kind::DueSoon);
            }
        }
        EventType::TaskOverdue => {
            let managers = facts.members.iter().filter(|m| m.manager).map(|m| &m.id);
            for user in assignees.iter().chain(managers) {
                plan.tell(user, Kind::Overdue);
            }
        }
        _ => {}
    }
    let is_member = |user: &str| facts.members.iter().any(|m| m.id == user);
    plan.notify.retain(|(user, kind)| {
        data.actor.as_deref() != Some(user.as_str()) && (*kind == Kind::Invited || is_member(user))
    });
    plan
}

/// The members a comment mentions: `@` (at the start or after a character that is not part of
/// a word, so `ada@example.com` mentions nobody) followed by a member's email or name, any
/// case, ending where a word would. The longest match wins (`@Ada Lovelace` over `@Ada`); two
/// members of that one name are both mentioned (neither is more likely meant).
pub fn mentions(body: &str, members: &[Member]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut previous: Option<char> = None;
    for (at, c) in body.char_indices() {
        let starts = c == '@' && previous.is_none_or(|p| !is_word(p));
        previous = Some(c);
        if !starts {
            continue;
        }
        let rest = &body[at + 1..];
        let matches: Vec<(usize, &Member)> = members
            .iter()
            .flat_map(|m| [(m, m.email.as_str()), (m, m.name.as_str())])
            .filter(|(_, handle)| !handle.is_empty())
            .filter_map(|(m, handle)| mention_len(rest, handle).map(|len| (len, m)))
            .collect();
        let longest = matches.iter().map(|(len, _)| *len).max();
        for (len, member) in matches {
            if Some(len) == longest && !found.contains(&member.id) {
                found.push(member.id.clone());
            }
        }
    }
    found
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '+' | '@')
}

/// The bytes of `text` that spell `handle` (any case) when a word ends right after them.
fn mention_len(text: &str, handle: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    for expected in handle.chars() {
        let (_, got) = chars.next()?;
        if !got.to_lowercase().eq(expected.to_lowercase()) {
            return None;
        }
    }
    let end = chars.next();
    let len = end.map_or(text.len(), |(i, _)| i);
    let after = &text[len..];
    let mut next = after.chars();
    let ends_word = match next.next() {
        None => true,
        // A full stop ends a sentence, unless a word goes on after it (`@ada.lovelace`).
        Some('.') => next.next().is_none_or(|c| !c.is_alphanumeric()),
        Some(c) => !is_word(c),
    };
    ends_word.then_some(len)
}

#[cfg(test)]
mod tests {
    use taskflow_proto::events::{ColumnRef, CommentState, EventData, InvitationState, TaskState};

    use super::*;

    fn member(id: &str, name: &str, manager: bool) -> Member {
        Member {
            id: id.into(),
            name: name.into(),
            email: format!("{id}@example.com"),
            manager,
        }
    }

    fn team() -> Vec<Member> {
        vec![
            member("ada", "Ada Lovelace", true),
            member("bob", "Bob", false),
            member("cy", "Cy", false),
            member("dee", "Dee", false),
        ]
    }

    fn task(assignees: &[&str]) -> TaskState {
        TaskState {
            id: "t1".into(),
            title: "Fix the login".into(),
            description: String::new(),
            column: ColumnRef {
                id: "todo".into(),
                name: Some("To do".into()),
            },
            position: "80".into(),
            assignees: assignees.iter().map(|s| s.to_string()).collect(),
            labels: vec![],
            priority: "none".into(),
            due: None,
            archived: false,
            created_by: "ada".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            comment_count: 0,
        }
    }

    fn event(kind: EventType, actor: Option<&str>, data: EventData) -> Envelope {
        let data = EventData {
            actor: actor.map(str::to_owned),
            workspace_id: Some("w".into()),
            project_id: Some("p".into()),
            task_id: Some("t1".into()),
            ..data
        };
        Envelope::new("e1".into(), kind, 0, data)
    }

    fn told(plan: &Plan) -> Vec<(&str, Kind)> {
        plan.notify.iter().map(|(u, k)| (u.as_str(), *k)).collect()
    }

    #[test]
    fn an_assignment_tells_the_new_assignees_but_not_the_one_who_assigned() {
        let members = team();
        let e = event(
            EventType::TaskAssigned,
            Some("ada"),
            EventData {
                task: Some(task(&["ada", "bob", "cy"])),
                added: vec!["ada".into(), "bob".into()],
                ..Default::default()
            },
        );
        let plan = plan(
            &e,
            &Facts {
                members: &members,
                ..Default::default()
            },
        );
        assert_eq!(told(&plan), [("bob", Kind::Assigned)]);
        assert_eq!(
            plan.watch,
            [
                ("ada".to_owned(), WatchReason::Assignee),
                ("bob".to_owned(), WatchReason::Assignee)
            ]
        );
    }

    #[test]
    fn a_status_change_tells_assignees_and_watchers_once_each() {
        let members = team();
        let watchers = ["cy".to_owned(), "bob".to_owned(), "dee".to_owned()];
        let e = event(
            EventType::TaskStatusUpdated,
            Some("dee"),
            EventData {
                task: Some(task(&["bob"])),
                ..Default::default()
            },
        );
        let facts = Facts {
            members: &members,
            watchers: &watchers,
            ..Default::default()
        };
        assert_eq!(
            told(&plan(&e, &facts)),
            [("bob", Kind::StatusChanged), ("cy", Kind::StatusChanged)]
        );
    }

    #[test]
    fn a_comment_tells_the_mentioned_first_then_assignees_and_watchers() {
        let members = team();
        let watchers = ["cy".to_owned()];
        let e = event(
            EventType::CommentAdded,
            Some("bob"),
            EventData {
                task: Some(task(&["bob", "cy"])),
                comment: Some(CommentState {
                    id: "c1".into(),
                    author: "bob".into(),
                    body: "@ada lovelace and @DEE@example.com, look".into(),
                    created_at: "2026-01-01T00:00:00Z".into(),
                }),
                ..Default::default()
            },
        );
        let facts = Facts {
            members: &members,
            watchers: &watchers,
            ..Default::default()
        };
        let plan = plan(&e, &facts);
        assert_eq!(
            told(&plan),
            [
                ("ada", Kind::Mentioned),
                ("dee", Kind::Mentioned),
                ("cy", Kind::Commented)
            ]
        );
        assert_eq!(plan.watch, [("bob".to_owned(), WatchReason::Commenter)]);
    }

    #[test]
    fn people_outside_the_workspace_are_not_told() {
        let members = team();
        let watchers = ["gone".to_owned()];
        let e = event(
            EventType::TaskStatusUpdated,
            Some("ada"),
            EventData {
                task: Some(task(&["bob", "left"])),
                ..Default::default()
            },
        );
        let facts = Facts {
            members: &members,
            watchers: &watchers,
            ..Default::default()
        };
        assert_eq!(told(&plan(&e, &facts)), [("bob", Kind::StatusChanged)]);
    }

    #[test]
    fn an_invitation_is_mailed_and_shown_to_an_existing_account() {
        let members = team();
        let invitation = InvitationState {
            id: "i1".into(),
            email: "eve@example.com".into(),
            role: "member".into(),
            expires_at: "2026-01-08T00:00:00Z".into(),
        };
        let e = event(
            EventType::UserInvited,
            Some("ada"),
            EventData {
                invitation: Some(invitation),
                ..Default::default()
            },
        );
        let without = plan(
            &e,
            &Facts {
                members: &members,
                ..Default::default()
            },
        );
        assert_eq!(without.invitee_email.as_deref(), Some("eve@example.com"));
        assert!(without.notify.is_empty());
        let with = plan(
            &e,
            &Facts {
                members: &members,
                invitee_account: Some("eve"),
                ..Default::default()
            },
        );
        assert_eq!(told(&with), [("eve", Kind::Invited)]);
    }

    #[test]
    fn deadlines_tell_assignees_and_overdue_tasks_also_managers() {
        let members = team();
        let facts = Facts {
            members: &members,
            ..Default::default()
        };
        let soon = event(
            EventType::TaskDueSoon,
            None,
            EventData {
                task: Some(task(&["bob"])),
                ..Default::default()
            },
        );
        assert_eq!(told(&plan(&soon, &facts)), [("bob", Kind::DueSoon)]);
        let overdue = EventType::TaskOverdue;
        let late = event(
            overdue,
            None,
            EventData {
                task: Some(task(&["bob"])),
                ..Default::default()
            },
        );
        assert_eq!(
            told(&plan(&late, &facts)),
            [("bob", Kind::Overdue), ("ada", Kind::Overdue)]
        );
    }

    #[test]
    fn a_created_task_is_watched_by_its_creator_and_tells_nobody() {
        let members = team();
        let e = event(
            EventType::TaskCreated,
            Some("cy"),
            EventData {
                task: Some(task(&[])),
                ..Default::default()
            },
        );
        let plan = plan(
            &e,
            &Facts {
                members: &members,
                ..Default::default()
            },
        );
        assert!(plan.notify.is_empty());
        assert_eq!(plan.watch, [("cy".to_owned(), WatchReason::Creator)]);
    }

    #[test]
    fn mentions_need_a_word_boundary_and_prefer_the_longest_name() {
        let mut members = team();
        members.push(member("ada2", "Ada", false));
        let ids = |body: &str| mentions(body, &members);
        assert_eq!(ids("@Ada Lovelace, see this"), ["ada"]);
        assert_eq!(ids("thanks @ada."), ["ada2"]);
        assert_eq!(ids("mail bob@example.com"), Vec::<String>::new());
        assert_eq!(ids("@bobby is not bob"), Vec::<String>::new());
        assert_eq!(ids("(@bob) and @BOB again"), ["bob"]);
        assert_eq!(ids("@cy@example.com."), ["cy"]);
        assert_eq!(ids("@cy@example.com.au"), Vec::<String>::new());
        assert_eq!(ids("@"), Vec::<String>::new());
        members.push(member("bob2", "Bob", false));
        assert_eq!(
            mentions("@bob, @Bob", &members),
            ["bob", "bob2"],
            "both Bobs"
        );
    }

    #[test]
    fn a_choice_overrides_the_default_unless_the_channel_is_mandatory() {
        let chosen = vec![
            ("comment.added".to_owned(), "email".to_owned(), true),
            ("task.assigned".to_owned(), "in_app".to_owned(), false),
            ("invitation.received".to_owned(), "email".to_owned(), false),
        ];
        assert!(enabled(Kind::Commented, Channel::Email, &chosen));
        assert!(!enabled(Kind::Assigned, Channel::InApp, &chosen));
        assert!(
            enabled(Kind::Assigned, Channel::Email, &chosen),
            "the default"
        );
        assert!(
            !enabled(Kind::StatusChanged, Channel::Email, &[]),
            "the default"
        );
        assert!(enabled(Kind::Invited, Channel::Email, &chosen), "mandatory");
    }

    #[test]
    fn preferences_default_to_the_app_and_mail_only_what_asks_something() {
        assert!(Kind::ALL.iter().all(|k| k.default_on(Channel::InApp)));
        let mailed: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.default_on(Channel::Email))
            .collect();
        assert_eq!(
            mailed,
            [
                Kind::Assigned,
                Kind::Mentioned,
                Kind::Invited,
                Kind::DueSoon,
                Kind::Overdue
            ]
        );
        assert!(!Kind::Invited.optional(Channel::Email));
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            Kind::ALL.map(Kind::as_str),
            taskflow_proto::notifications::KINDS
        );
    }
}
