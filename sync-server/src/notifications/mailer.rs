//! Sends the queued emails over SMTP (`SMTP_URL`, e.g. `smtp://127.0.0.1:2525` or
//! `smtps://user:password@mail.example.com`), one node at a time.
//!
//! Emails wait in the database (`emails`), written in the transaction that made their
//! notifications, so in-app delivery never waits for the mail server. A failed send is tried
//! again with exponential backoff; an address the server refuses outright (5xx), or one still
//! failing after the last try, is marked failed with its reason.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::consume::RetryPolicy;
use crate::events::relay::take_lease;
use crate::now_ms;
use crate::resilience::{Breaker, BreakerConfig, Failure};
use crate::store::{EmailAttempt, EmailRow, Store};

const POLL: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and how emails are sent.
#[derive(Debug, Clone)]
pub struct MailConfig {
    pub smtp_url: String,
    /// The `From:` of every email, e.g. `Taskflow <taskflow@example.com>`.
    pub from: String,
    pub retry: RetryPolicy,
}

/// Checks `config` before serving, so a bad `SMTP_URL` or sender stops the start.
pub fn check(config: &MailConfig) -> anyhow::Result<()> {
    AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
        .map_err(|e| anyhow::anyhow!("SMTP_URL is not a usable SMTP URL: {e}"))?;
    config.from.parse::<Mailbox>().map_err(|e| {
        anyhow::anyhow!("the email sender `{}` is not an address: {e}", config.from)
    })?;
    Ok(())
}

/// Sends due emails until `stop` is cancelled.
pub async fn run(store: Store, config: MailConfig, queued: Arc<Notify>, stop: CancellationToken) {
    let Some(_lease) = take_lease(&store, "taskflow.mailer", &stop).await else {
        return;
    };
    let (transport, from) = match (
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url),
        config.from.parse::<Mailbox>(),
    ) {
        (Ok(builder), Ok(from)) => (builder.timeout(Some(SEND_TIMEOUT)).build(), from),
        _ => {
            tracing::error!("emails are off: SMTP_URL or the sender address does not parse");
            return;
        }
    };
    // While the mail server is down, emails wait without spending their attempts.
    let breaker = Breaker::new("smtp", BreakerConfig::SLOW);
    loop {
        let due = match store.due_emails(now_ms(), 50).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading due emails failed");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                () = queued.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => return,
            }
            continue;
        }
        for email in due {
            let attempt = tokio::select! {
                attempt = send(&transport, &breaker, &from, &email, &config.retry) => attempt,
                () = stop.cancelled() => return,
            };
            let Some(attempt) = attempt else {
                tokio::select! {
                    () = tokio::time::sleep(BreakerConfig::SLOW.cool_down) => {}
                    () = stop.cancelled() => return,
                }
                break;
            };
            if let EmailAttempt::Failed { error, .. } = &attempt {
                tracing::warn!(email = %email.id, %error, "sending an email failed");
            }
            if let Err(e) = store
                .record_email_attempt(&email.id, &attempt, now_ms())
                .await
            {
                tracing::warn!(error = %e, "recording an email attempt failed");
            }
        }
    }
}

/// Sends one email: what the attempt came to, or `None` when it was not made (the mail server
/// failed repeatedly just before: the circuit is open).
async fn send(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    breaker: &Breaker,
    from: &Mailbox,
    email: &EmailRow,
    retry: &RetryPolicy,
) -> Option<EmailAttempt> {
    let give_up = |error: String| EmailAttempt::Failed {
        error,
        retry_at: None,
    };
    let to = match email.to_address.parse::<Mailbox>() {
        Ok(to) => to,
        Err(e) => {
            return Some(give_up(format!(
                "`{}` is not an address: {e}",
                email.to_address
            )));
        }
    };
    let message = match Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&email.subject)
        .multipart(MultiPart::alternative_plain_html(
            email.text_body.clone(),
            email.html_body.clone(),
        )) {
        Ok(message) => message,
        Err(e) => return Some(give_up(format!("the email does not build: {e}"))),
    };
    // A refusal of this one email is an answer from a working server, not a failure of it.
    let sending = async {
        match transport.send(message).await {
            Ok(_) => Ok(Ok(())),
            Err(e) if e.is_permanent() => Ok(Err(e)),
            Err(e) => Err(e),
        }
    };
    Some(match breaker.call(sending).await {
        Ok(Ok(())) => EmailAttempt::Sent,
        Ok(Err(e)) => give_up(format!("the mail server refused it: {e}")),
        Err(Failure::Open) => return None,
        Err(e) => {
            let tries = u32::try_from(email.attempts)
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            let retry_at = (tries < retry.attempts).then(|| {
                now_ms() + i64::try_from(retry.backoff(tries).as_millis()).unwrap_or(i64::MAX / 2)
            });
            EmailAttempt::Failed {
                error: e.to_string(),
                retry_at,
            }
        }
    })
}
