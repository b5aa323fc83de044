//! What notifications say: the one-line title of each kind, and emails (subject, plain text and
//! HTML) from the templates in `sync-server/templates/email` (HTML ones escape what they
//! insert).

use std::sync::LazyLock;

use minijinja::{Environment, context};
use serde_json::Value;
use taskflow_proto::events::Envelope;

use super::rules::Kind;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.add_filter("quote", |text: String| -> String {
        text.lines()
            .map(|line| format!("> {line}"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    for (name, source) in [
        (
            "notification.txt",
            include_str!("../../templates/email/notification.txt"),
        ),
        (
            "notification.html",
            include_str!("../../templates/email/notification.html"),
        ),
        (
            "invitation.txt",
            include_str!("../../templates/email/invitation.txt"),
        ),
        (
            "invitation.html",
            include_str!("../../templates/email/invitation.html"),
        ),
    ] {
        env.add_template(name, source)
            .expect("the email templates parse");
    }
    env
});

/// Longest comment excerpt a notification keeps.
const BODY_CHARS: usize = 500;

/// The title of a `kind` notification about `event`, done by `actor`.
pub fn title(kind: Kind, event: &Envelope, actor: &str, workspace: &str) -> String {
    let data = &event.data;
    let task = data.task.as_ref().map_or("a task", |t| t.title.as_str());
    let due = data
        .task
        .as_ref()
        .and_then(|t| t.due.as_deref())
        .unwrap_or("soon");
    match kind {
        Kind::Assigned => format!("{actor} assigned you to “{task}”"),
        Kind::StatusChanged => format!(
            "{actor} moved “{task}” from {} to {}",
            column(data.from.as_ref()),
            column(data.to.as_ref())
        ),
        Kind::Commented => format!("{actor} commented on “{task}”"),
        Kind::Mentioned => format!("{actor} mentioned you on “{task}”"),
        Kind::Invited => {
            let role = data
                .invitation
                .as_ref()
                .map_or("member", |i| i.role.as_str());
            format!("{actor} invited you to {workspace} as {role}")
        }
        Kind::DueSoon => format!("“{task}” is due {due}"),
        Kind::Overdue => format!("“{task}” is overdue: it was due {due}"),
    }
}

/// More text for a `kind` notification: the comment, for comments.
pub fn body(kind: Kind, event: &Envelope) -> String {
    match (kind, &event.data.comment) {
        (Kind::Commented | Kind::Mentioned, Some(comment)) => {
            let mut text: String = comment.body.chars().take(BODY_CHARS).collect();
            if comment.body.chars().count() > BODY_CHARS {
                text.push('…');
            }
            text
        }
        _ => String::new(),
    }
}

/// A column as a status event names it: its name, else its id.
fn column(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "?".into();
    };
    value
        .get("name")
        .and_then(Value::as_str)
        .or_else(|| value.get("id").and_then(Value::as_str))
        .unwrap_or("?")
        .to_owned()
}

/// What an email about a notification needs.
#[derive(Debug, Clone, Copy)]
pub struct NotificationMail<'a> {
    pub recipient: &'a str,
    pub kind: Kind,
    pub title: &'a str,
    pub body: &'a str,
    pub task: Option<&'a str>,
    pub project: Option<&'a str>,
    pub server: &'a str,
}

/// Subject, text and HTML of the email for a notification.
pub fn notification_email(mail: &NotificationMail) -> Result<[String; 3], minijinja::Error> {
    let values = context! {
        name => mail.recipient,
        kind => mail.kind.describe(),
        title => mail.title,
        body => mail.body,
        task => mail.task,
        project => mail.project,
        server => mail.server,
    };
    Ok([
        mail.title.to_owned(),
        TEMPLATES
            .get_template("notification.txt")?
            .render(&values)?,
        TEMPLATES
            .get_template("notification.html")?
            .render(&values)?,
    ])
}

/// What an invitation email needs.
#[derive(Debug, Clone, Copy)]
pub struct InvitationMail<'a> {
    pub inviter: &'a str,
    pub workspace: &'a str,
    pub role: &'a str,
    pub email: &'a str,
    pub token: &'a str,
    pub expires: &'a str,
    pub server: &'a str,
}

/// Subject, text and HTML of an invitation email.
pub fn invitation_email(mail: &InvitationMail) -> Result<[String; 3], minijinja::Error> {
    let values = context! {
        inviter => mail.inviter,
        workspace => mail.workspace,
        role => mail.role,
        email => mail.email,
        token => mail.token,
        expires => mail.expires,
        server => mail.server,
    };
    Ok([
        format!(
            "{} invited you to {} on Taskflow",
            mail.inviter, mail.workspace
        ),
        TEMPLATES.get_template("invitation.txt")?.render(&values)?,
        TEMPLATES.get_template("invitation.html")?.render(&values)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail<'a>(body: &'a str) -> NotificationMail<'a> {
        NotificationMail {
            recipient: "Bob",
            kind: Kind::Mentioned,
            title: "Ada mentioned you on “<Fix> the login”",
            body,
            task: Some("<Fix> the login"),
            project: Some("Web & app"),
            server: "http://127.0.0.1:8080",
        }
    }

    #[test]
    fn notification_emails_quote_the_body_in_text_and_escape_it_in_html() {
        let [subject, text, html] =
            notification_email(&mail("line one\n<script>alert(1)</script>")).unwrap();
        assert_eq!(subject, "Ada mentioned you on “<Fix> the login”");
        assert!(text.starts_with("Hello Bob,\n\nAda mentioned you on “<Fix> the login”\n"));
        assert!(
            text.contains("\n> line one\n> <script>alert(1)</script>\n"),
            "{text}"
        );
        assert!(
            text.contains("\n\nTask: <Fix> the login (board “Web & app”)\n\n--\n"),
            "{text}"
        );
        assert!(
            text.contains("“Someone mentioned you in a comment”"),
            "{text}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(html.contains("Web &amp; app"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn an_empty_body_leaves_no_quote() {
        let [_, text, html] = notification_email(&mail("")).unwrap();
        assert!(!text.contains("\n> "), "{text}");
        assert!(!html.contains("blockquote"), "{html}");
    }

    #[test]
    fn invitation_emails_carry_the_token() {
        let [subject, text, html] = invitation_email(&InvitationMail {
            inviter: "Ada",
            workspace: "Acme",
            role: "member",
            email: "eve@example.com",
            token: "tok-123",
            expires: "2026-12-14T10:00:00Z",
            server: "http://127.0.0.1:8080",
        })
        .unwrap();
        assert_eq!(subject, "Ada invited you to Acme on Taskflow");
        assert!(text.contains("\n    tok-123\n"), "{text}");
        assert!(text.contains("as member"), "{text}");
        assert!(html.contains("<code style=\"font-size: 1.1em; background: #f6f8fa; padding: 0.3em 0.5em;\">tok-123</code>"), "{html}");
    }
}
