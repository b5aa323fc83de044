//! Rate limits for login and registration: a token bucket per key (a client address, an
//! account), refilled continuously. Sans-IO: the time is an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Buckets kept before full (idle) ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

/// How many attempts a key may make at once, and how fast it earns them back.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub burst: u32,
    /// Time to earn back one attempt.
    pub every: Duration,
}

/// Login and registration attempts from one client address.
pub const PER_ADDRESS: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(3),
};
/// Login attempts at one account (from anywhere).
pub const PER_ACCOUNT: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(12),
};

#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: HashMap<String, (f64, Instant)>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes one attempt for `key`, or says how long until one is available.
    pub fn take(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.rate.burst);
        let per_second = 1.0 / self.rate.every.as_secs_f64();
        let (tokens, updated) = self.buckets.get(key).copied().unwrap_or((burst, now));
        let available =
            (tokens + now.saturating_duration_since(updated).as_secs_f64() * per_second).min(burst);
        if available < 1.0 {
            self.buckets.insert(key.to_owned(), (available, now));
            return Err(Duration::from_secs_f64((1.0 - available) / per_second));
        }
        self.buckets.insert(key.to_owned(), (available - 1.0, now));
        if self.buckets.len() > PRUNE_ABOVE {
            let every = self.rate.every;
            self.buckets.retain(|_, (tokens, updated)| {
                *tokens
                    + now.saturating_duration_since(*updated).as_secs_f64() / every.as_secs_f64()
                    < burst
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        burst: 3,
        every: Duration::from_secs(10),
    };

    #[test]
    fn a_burst_then_one_attempt_per_interval() {
        let t0 = Instant::now();
        let mut limiter = Limiter::new(RATE);
        for _ in 0..3 {
            assert_eq!(limiter.take("ann", t0), Ok(()));
        }
        assert_eq!(limiter.take("ann", t0), Err(Duration::from_secs(10)));
        assert_eq!(limiter.take("bob", t0), Ok(()), "keys are independent");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.take("ann", later), Ok(()));
        assert!(limiter.take("ann", later).is_err());
        // Waiting long refills to the burst, not beyond.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.take("ann", much_later), Ok(()));
        }
        assert!(limiter.take("ann", much_later).is_err());
    }
}
