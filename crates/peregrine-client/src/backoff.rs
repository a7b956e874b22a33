//! Reconnect delays: exponential backoff with full jitter and a cap.
//!
//! Every client of a restarted server loses its connection at the same moment. If they all
//! waited the same delay they would all come back at the same moment too, and again after
//! each failure: a reconnect storm. With *full jitter* each delay is drawn uniformly from
//! `0..=min(cap, min_delay * 2^attempt)`, which spreads the clients over the whole window
//! (see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).

use std::time::Duration;

/// Reconnect backoff settings.
///
/// ```
/// use std::time::Duration;
/// use peregrine_client::Backoff;
/// let backoff = Backoff { min_delay: Duration::from_millis(100), max_delay: Duration::from_secs(5) };
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
/// assert_eq!(backoff.ceiling(30), Duration::from_secs(5));
/// assert!(backoff.delay(3) <= Duration::from_millis(800));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub min_delay: Duration,
    /// No delay is ever longer than this.
    pub max_delay: Duration,
}

impl Default for Backoff {
    /// 250 ms doubling up to 20 s.
    fn default() -> Self {
        Backoff { min_delay: Duration::from_millis(250), max_delay: Duration::from_secs(20) }
    }
}

impl Backoff {
    /// The longest delay before reconnect attempt number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.min_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// A random delay in `0..=ceiling(attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos() as u64;
        Duration::from_nanos(random_u64() % (ceiling + 1))
    }
}

/// A random number from the operating system (no seeding, no shared generator state).
pub(crate) fn random_u64() -> u64 {
    // getrandom only fails when the OS has no entropy source at all; a clock-derived
    // value still spreads reconnects in that case.
    getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let backoff = Backoff { min_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        let delays: Vec<Duration> = (0..2000).map(|_| backoff.delay(2)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
        // Each quarter of the window gets a fair share: no clustering at either end.
        for quarter in 0..4u64 {
            let lo = Duration::from_millis(quarter * 100);
            let hi = lo + Duration::from_millis(100);
            let n = delays.iter().filter(|d| **d >= lo && **d < hi).count();
            assert!((350..650).contains(&n), "quarter {quarter} got {n} of 2000");
        }
    }

    #[test]
    fn ceiling_saturates() {
        let backoff = Backoff { min_delay: Duration::from_secs(1), max_delay: Duration::from_secs(30) };
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(30));
    }
}
