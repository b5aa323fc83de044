//! Reconnect delays: exponential backoff with full jitter, so a server coming back is not met by
//! every client at the same instant.

use std::time::Duration;

/// The first retry waits up to this long.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// No retry waits longer than this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The delay before reconnect attempt `attempt` (0 for the first retry after a failure):
/// uniform in `[0, min(BACKOFF_MAX, BACKOFF_BASE · 2^attempt)]`, drawn from `unit` in `[0, 1)`.
pub fn delay(attempt: u32, unit: f64) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_MAX);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum() {
        let almost_one = 0.999_999;
        let ceilings: Vec<u128> = (0..10).map(|a| delay(a, almost_one).as_millis()).collect();
        assert_eq!(
            ceilings,
            [249, 499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999]
        );
        assert_eq!(delay(u32::MAX, almost_one).as_millis(), 29999);
    }

    #[test]
    fn jitter_spreads_delays_from_zero() {
        assert_eq!(delay(5, 0.0), Duration::ZERO);
        assert_eq!(delay(5, 0.5), Duration::from_secs(4));
    }
}
