//! Events over Kafka (feature `kafka`, enabled by `KAFKA_BROKERS`): the relay's sink, and each
//! consumer as its own consumer group on the events topic, dead letters on `<topic>.dlq`.
//!
//! Records are the CloudEvents JSON (structured mode, `content-type:
//! application/cloudevents+json`), keyed by the event's `partitionkey`, so the events of one
//! task (or project, workspace, user) keep their order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::BoxFuture;
use taskflow_kafka::{Producer, Record, Subscription, Verdict};
use tokio_util::sync::CancellationToken;

use super::EventsConfig;
use super::consume::{self, Consumer, Outcome};
use super::relay::Sink;
use crate::resilience::{Breaker, BreakerConfig, Failure};
use crate::store::LoggedEvent;

/// Publishes the outbox to the events topic with the idempotent producer.
#[derive(Debug)]
pub struct KafkaSink {
    producer: Producer,
    brokers: String,
    topics: [String; 2],
    /// The topics are known to exist (until a send fails: a broker may come back empty).
    topics_ready: AtomicBool,
    /// While Kafka is down the relay is told at once, and backs off, instead of waiting out
    /// the producer's timeouts round after round.
    breaker: Breaker,
}

impl KafkaSink {
    pub fn new(brokers: &str, config: &EventsConfig) -> anyhow::Result<KafkaSink> {
        Ok(KafkaSink {
            producer: Producer::new(brokers, &config.topic)?,
            brokers: brokers.to_owned(),
            topics: [config.topic.clone(), config.dead_letter_topic()],
            topics_ready: AtomicBool::new(false),
            breaker: Breaker::new("kafka", BreakerConfig::SLOW),
        })
    }
}

impl Sink for KafkaSink {
    fn publish<'a>(&'a self, events: &'a [LoggedEvent]) -> BoxFuture<'a, (usize, Option<String>)> {
        Box::pin(async move {
            let publishing = async {
                match self.send(events).await {
                    (sent, None) => Ok(sent),
                    (sent, Some(why)) => Err((sent, why)),
                }
            };
            match self.breaker.call(publishing).await {
                Ok(sent) => (sent, None),
                Err(Failure::Failed((sent, why))) => (sent, Some(why)),
                Err(Failure::Open) => (
                    0,
                    Some("Kafka: circuit open after repeated failures".into()),
                ),
                Err(Failure::Timeout(after)) => {
                    (0, Some(format!("Kafka: no answer within {after:?}")))
                }
            }
        })
    }
}

impl KafkaSink {
    /// Sends `events` in order: how many leading ones are durably published, and why not the
    /// rest.
    fn send<'a>(&'a self, events: &'a [LoggedEvent]) -> BoxFuture<'a, (usize, Option<String>)> {
        Box::pin(async move {
            if !self.topics_ready.load(Ordering::Relaxed) {
                let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                if let Err(e) = taskflow_kafka::ensure_topics(&self.brokers, &topics).await {
                    return (0, Some(format!("creating the events topics: {e}")));
                }
                self.topics_ready.store(true, Ordering::Relaxed);
            }
            let headers: Vec<[(&str, &str); 3]> = events
                .iter()
                .map(|e| {
                    [
                        ("content-type", "application/cloudevents+json"),
                        ("ce_id", e.event.id.as_str()),
                        ("ce_type", e.event.kind.as_str()),
                    ]
                })
                .collect();
            let records: Vec<Record<'_>> = events
                .iter()
                .zip(&headers)
                .map(|(e, headers)| Record {
                    key: &e.event.key,
                    payload: e.event.payload.as_bytes(),
                    headers,
                })
                .collect();
            let (sent, failure) = self.producer.publish(&records).await;
            if failure.is_some() {
                self.topics_ready.store(false, Ordering::Relaxed);
            }
            (sent, failure)
        })
    }
}

/// Runs `consumer` as the consumer group `taskflow.<name>` until `stop` is cancelled.
pub async fn run_consumer(
    brokers: String,
    config: EventsConfig,
    consumer: Arc<dyn Consumer>,
    stop: CancellationToken,
) {
    let subscription = Subscription {
        brokers,
        topic: config.topic.clone(),
        group: format!("taskflow.{}", consumer.name()),
        dead_letter_topic: config.dead_letter_topic(),
        consumer: consumer.name().to_owned(),
    };
    let retry = config.retry;
    let stopping = stop.clone();
    let handle = move |payload: Vec<u8>| {
        let consumer = consumer.clone();
        let stop = stopping.clone();
        async move {
            match consume::handle(consumer.as_ref(), &payload, &retry, &stop).await {
                Outcome::Handled => Verdict::Handled,
                Outcome::Failed { .. } if stop.is_cancelled() => Verdict::Abandon,
                Outcome::Failed { reason, attempts } => {
                    tracing::warn!(consumer = consumer.name(), attempts, %reason, "an event is dead-lettered");
                    Verdict::DeadLetter { reason, attempts }
                }
            }
        }
    };
    taskflow_kafka::consume(subscription, handle, stop).await;
}
