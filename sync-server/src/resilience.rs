//! Circuit breakers around outbound dependencies (Redis, Kafka, Temporal, SMTP, webhook
//! destinations).
//!
//! Every call through a [`Breaker`] is bounded by a timeout. After `threshold` failures in a
//! row the circuit opens: calls fail at once, without waiting on a dependency known to be
//! down, for `cool_down`; then one trial call goes through (half open) and its outcome closes
//! or reopens the circuit. What a failed call means is each caller's business: Redis callers
//! fall back to this node's own state, the relay and the mailer keep their rows and retry with
//! backoff, deadlines stay marked for the next round. The sync path waits on the database and,
//! for the project-cache invalidation after a commit (so a REST read after a write sees it), on
//! Redis through its breaker: a second at most, then nothing while the circuit is open.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a call through a breaker failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// The circuit is open: the dependency failed recently and was not called.
    Open,
    /// The dependency did not answer in time.
    Timeout(Duration),
    /// The dependency answered with an error.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Open => write!(f, "circuit open after repeated failures; not called"),
            Failure::Timeout(after) => write!(f, "no answer within {after:?}"),
            Failure::Failed(e) => e.fmt(f),
        }
    }
}

/// How a breaker judges its dependency.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Longest one call may take.
    pub timeout: Duration,
    /// Failures in a row that open the circuit.
    pub threshold: u32,
    /// How long an open circuit refuses calls before a trial.
    pub cool_down: Duration,
}

impl BreakerConfig {
    /// For calls that answer in milliseconds when well (Redis).
    pub const FAST: BreakerConfig = BreakerConfig {
        timeout: Duration::from_secs(1),
        threshold: 3,
        cool_down: Duration::from_secs(5),
    };
    /// For calls that may take seconds when well (Kafka, Temporal, SMTP, webhooks).
    pub const SLOW: BreakerConfig = BreakerConfig {
        timeout: Duration::from_secs(30),
        threshold: 5,
        cool_down: Duration::from_secs(15),
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is in flight; others are refused until it ends, or until `until` should
    /// the trial never end (its caller dropped it), when another may try.
    HalfOpen {
        until: Instant,
    },
}

/// One dependency's circuit. Share it (`Arc`) between everything calling that dependency.
#[derive(Debug)]
pub struct Breaker {
    /// The dependency, as named in metrics (`taskflow_dependency_errors_total{dependency}`).
    dependency: &'static str,
    /// Whether this breaker alone stands for the dependency in `taskflow_circuit_open`.
    reports_state: bool,
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// The breaker of a whole dependency (Redis, Kafka, …).
    pub fn new(dependency: &'static str, config: BreakerConfig) -> Breaker {
        metrics::gauge!(crate::telemetry::CIRCUIT_OPEN, "dependency" => dependency).set(0.0);
        Breaker {
            dependency,
            reports_state: true,
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// The breaker of one destination among many of a kind (a webhook's host): it counts
    /// errors under `dependency` but leaves `taskflow_circuit_open` alone, which one open host
    /// among many healthy ones would otherwise claim for the whole kind.
    pub fn for_destination(dependency: &'static str, config: BreakerConfig) -> Breaker {
        Breaker {
            dependency,
            reports_state: false,
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Runs `call` unless the circuit is open, bounded by the timeout, and records the outcome.
    pub async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Failure<E>> {
        self.admit(Instant::now())?;
        let outcome = match tokio::time::timeout(self.config.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Failure::Failed(e)),
            Err(_) => Err(Failure::Timeout(self.config.timeout)),
        };
        self.record(outcome.is_ok(), Instant::now());
        outcome
    }

    /// Whether the circuit is open now (calls would fail at once).
    pub fn is_open(&self) -> bool {
        matches!(*self.state.lock().expect("breaker lock"), State::Open { until } if Instant::now() < until)
    }

    fn admit<E>(&self, now: Instant) -> Result<(), Failure<E>> {
        let mut state = self.state.lock().expect("breaker lock");
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } | State::HalfOpen { until } if now >= until => {
                *state = State::HalfOpen {
                    until: now + self.config.timeout,
                };
                Ok(())
            }
            State::Open { .. } | State::HalfOpen { .. } => Err(Failure::Open),
        }
    }

    fn record(&self, ok: bool, now: Instant) {
        let mut state = self.state.lock().expect("breaker lock");
        let next = match (*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.config.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => State::Open {
                until: now + self.config.cool_down,
            },
        };
        if !ok {
            crate::telemetry::dependency_error(self.dependency);
        }
        let was_open = !matches!(*state, State::Closed { .. });
        let is_open = !matches!(next, State::Closed { .. });
        if was_open != is_open && self.reports_state {
            metrics::gauge!(crate::telemetry::CIRCUIT_OPEN, "dependency" => self.dependency)
                .set(if is_open { 1.0 } else { 0.0 });
            if is_open {
                tracing::warn!(dependency = self.dependency, cool_down = ?self.config.cool_down, "circuit opened: calls fail fast for a while");
            } else {
                tracing::info!(
                    dependency = self.dependency,
                    "circuit closed: the dependency answers again"
                );
            }
        }
        *state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(
            "test",
            BreakerConfig {
                timeout: Duration::from_millis(50),
                threshold: 2,
                cool_down: Duration::from_millis(100),
            },
        )
    }

    async fn fail(b: &Breaker) -> Result<(), Failure<&'static str>> {
        b.call(async { Err::<(), _>("down") }).await
    }

    async fn succeed(b: &Breaker) -> Result<(), Failure<&'static str>> {
        b.call(async { Ok::<(), &str>(()) }).await
    }

    #[tokio::test]
    async fn opens_after_the_threshold_fails_fast_then_tries_once_and_closes() {
        let b = breaker();
        assert!(matches!(fail(&b).await, Err(Failure::Failed("down"))));
        assert!(!b.is_open(), "one failure is below the threshold");
        assert!(matches!(fail(&b).await, Err(Failure::Failed("down"))));
        assert!(b.is_open());
        // Open: not even called.
        let mut called = false;
        let refused = b
            .call(async {
                called = true;
                Ok::<(), &str>(())
            })
            .await;
        assert!(matches!(refused, Err(Failure::Open)));
        assert!(!called);
        // After the cool-down one trial goes through; success closes the circuit.
        std::thread::sleep(Duration::from_millis(120));
        assert!(succeed(&b).await.is_ok());
        assert!(!b.is_open());
        assert!(succeed(&b).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_trial_opens_it_again_and_a_hung_call_counts_as_failed() {
        let b = breaker();
        let hung = b.call(std::future::pending::<Result<(), &str>>()).await;
        assert!(matches!(hung, Err(Failure::Timeout(_))));
        assert!(matches!(fail(&b).await, Err(Failure::Failed(_))));
        assert!(b.is_open());
        std::thread::sleep(Duration::from_millis(120));
        assert!(matches!(fail(&b).await, Err(Failure::Failed(_))));
        assert!(b.is_open(), "the trial failed: open again");
    }

    #[tokio::test]
    async fn a_trial_its_caller_dropped_does_not_keep_the_circuit_open() {
        let b = breaker();
        for _ in 0..2 {
            assert!(fail(&b).await.is_err());
        }
        std::thread::sleep(Duration::from_millis(120));
        // The trial starts and is dropped before it ends (its request was cancelled).
        let trial = b.call(std::future::pending::<Result<(), &str>>());
        let _ = tokio::time::timeout(Duration::from_millis(1), trial).await;
        assert!(
            matches!(succeed(&b).await, Err(Failure::Open)),
            "the trial is in flight"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            succeed(&b).await.is_ok(),
            "another trial after the call timeout"
        );
        assert!(!b.is_open());
    }

    #[tokio::test]
    async fn successes_reset_the_count() {
        let b = breaker();
        for _ in 0..5 {
            assert!(fail(&b).await.is_err());
            assert!(succeed(&b).await.is_ok());
        }
        assert!(!b.is_open());
    }
}
