//! Taskflow's Kafka client, over librdkafka (`rdkafka`), knowing nothing of what it carries.
//!
//! - [`Producer`]: the idempotent producer (`enable.idempotence`, `acks=all`) the outbox relay
//!   publishes with: a batch goes out in order and the caller learns how many leading records
//!   the brokers acknowledged.
//! - [`consume`]: one consumer group's loop: each record is handed to a handler, whose
//!   [`Verdict`] decides what follows: the offset is committed only after a record is handled
//!   or sent to the dead-letter topic.
//!
//! Kept apart from the server so that only builds that talk to Kafka compile librdkafka.

use std::future::Future;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

pub use rdkafka::error::KafkaError as Error;

/// Partitions of the topics this crate creates: records with one key stay in one partition,
/// so in order.
pub const PARTITIONS: i32 = 3;
/// How long a record may wait for the brokers before its send fails (and is retried later by
/// the caller).
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// One record to publish.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub key: &'a str,
    pub payload: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
}

/// The clients' context: librdkafka reports each failed connection attempt (every half
/// second per client while a broker is down), which the callers already report once per
/// failed operation, so those reports go to debug.
#[derive(Debug, Clone, Copy)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(facility = fac, "librdkafka: {message}")
            }
            _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka: {reason}");
    }
}

impl ConsumerContext for Quiet {}

/// Creates `topics` when missing.
pub async fn ensure_topics(brokers: &str, topics: &[&str]) -> Result<(), KafkaError> {
    let admin: AdminClient<Quiet> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create_with_context(Quiet)?;
    let wanted: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&wanted, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::warn!(%topic, ?code, "creating a topic failed");
                });
            }
        }
    }
    Ok(())
}

/// The idempotent producer.
pub struct Producer {
    inner: FutureProducer<Quiet>,
    topic: String,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Producer {
    /// A producer to `topic` on `brokers` (`host:port,…`). Connects lazily: brokers that are
    /// down now are retried by each send.
    pub fn new(brokers: &str, topic: &str) -> Result<Producer, KafkaError> {
        let inner: FutureProducer<Quiet> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set(
                "message.timeout.ms",
                MESSAGE_TIMEOUT.as_millis().to_string(),
            )
            .create_with_context(Quiet)?;
        Ok(Producer {
            inner,
            topic: topic.to_owned(),
        })
    }

    /// Sends `records` in order to this producer's topic. Answers how many leading records
    /// the brokers acknowledged, and why the first one that failed did.
    pub async fn publish(&self, records: &[Record<'_>]) -> (usize, Option<String>) {
        send_all(&self.inner, &self.topic, records).await
    }
}

async fn send_all(
    producer: &FutureProducer<Quiet>,
    topic: &str,
    records: &[Record<'_>],
) -> (usize, Option<String>) {
    let mut pending = Vec::with_capacity(records.len());
    let mut failure = None;
    for record in records {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(*value),
            });
        }
        let message = FutureRecord::to(topic)
            .key(record.key)
            .payload(record.payload)
            .headers(headers);
        match producer.send_result(message) {
            Ok(delivery) => pending.push(delivery),
            Err((e, _)) => {
                failure = Some(format!("queueing a record: {e}"));
                break;
            }
        }
    }
    let mut acknowledged = 0;
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) if failure.is_none() => acknowledged += 1,
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                failure.get_or_insert_with(|| e.to_string());
            }
            Err(_) => {
                failure.get_or_insert_with(|| "the producer went away".to_owned());
            }
        }
    }
    (acknowledged, failure)
}

/// What a handler made of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Handled,
    /// Given up after `attempts`: goes to the dead-letter topic with why.
    DeadLetter {
        reason: String,
        attempts: u32,
    },
    /// Not handled and not given up (the consumer is stopping): left uncommitted.
    Abandon,
}

/// Where [`consume`] reads and what it does with records given up on.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub brokers: String,
    pub topic: String,
    /// The consumer group: each group sees every record once (at least).
    pub group: String,
    pub dead_letter_topic: String,
    /// Named in dead letters' headers.
    pub consumer: String,
}

/// Feeds `handle` each record of the subscription's topic, in order per partition, until
/// `stop` is cancelled; commits each record's offset after its verdict is carried out.
pub async fn consume<F, Fut>(subscription: Subscription, handle: F, stop: CancellationToken)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = Verdict>,
{
    let consumer: StreamConsumer<Quiet> = match ClientConfig::new()
        .set("bootstrap.servers", &subscription.brokers)
        .set("group.id", &subscription.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // How long a fetch may wait for new records. A broker that holds a fetch this long even
        // when records arrive (tansu does) makes it the floor of an idle consumer's delay:
        // the default 500 ms gave 250 ms from an edit to its event, 25 ms gives ~20 ms.
        .set("fetch.wait.max.ms", "25")
        .create_with_context(Quiet)
    {
        Ok(consumer) => consumer,
        Err(e) => {
            tracing::error!(group = %subscription.group, error = %e, "a Kafka consumer could not start");
            return;
        }
    };
    let dead_letters = match Producer::new(&subscription.brokers, &subscription.dead_letter_topic) {
        Ok(producer) => producer,
        Err(e) => {
            tracing::error!(error = %e, "a dead-letter producer could not start");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&subscription.topic]) {
        tracing::error!(topic = %subscription.topic, error = %e, "subscribing failed");
        return;
    }
    loop {
        let message = tokio::select! {
            message = consumer.recv() => message,
            () = stop.cancelled() => return,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(group = %subscription.group, error = %e, "reading from Kafka failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        let payload = message.payload().unwrap_or_default().to_vec();
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        match handle(payload.clone()).await {
            Verdict::Handled => {}
            Verdict::Abandon => return,
            Verdict::DeadLetter { reason, attempts } => {
                let attempts = attempts.to_string();
                let headers = [
                    ("taskflow-consumer", subscription.consumer.as_str()),
                    ("taskflow-failure", reason.as_str()),
                    ("taskflow-attempts", attempts.as_str()),
                ];
                let record = Record {
                    key: &key,
                    payload: &payload,
                    headers: &headers,
                };
                // Committed only once the dead letter is safe.
                loop {
                    match dead_letters.publish(&[record]).await {
                        (1, _) => break,
                        (_, why) => {
                            tracing::warn!(error = ?why, "writing a dead letter failed; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = stop.cancelled() => return,
                            }
                        }
                    }
                }
            }
        }
        if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::warn!(group = %subscription.group, error = %e, "committing an offset failed");
        }
    }
}
