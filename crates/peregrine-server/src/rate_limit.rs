//! A token bucket: the per-connection publish rate limit (`client.publish_rate` tokens per
//! second, at most `client.publish_burst` saved up).

use tokio::time::Instant;

/// `rate` tokens per second, at most `burst` stored; starts full.
///
/// ```
/// use peregrine_server::rate_limit::TokenBucket;
/// use std::time::Duration;
/// let start = tokio::time::Instant::now();
/// let mut bucket = TokenBucket::new(10.0, 2);
/// assert!(bucket.try_take(start) && bucket.try_take(start));
/// assert!(!bucket.try_take(start), "the burst is spent");
/// assert!(bucket.try_take(start + Duration::from_millis(100)), "one token per 100 ms at 10/s");
/// ```
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: u32) -> TokenBucket {
        TokenBucket { rate: rate_per_sec, burst: f64::from(burst), tokens: f64::from(burst), last: None }
    }

    /// Takes one token if there is one at `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long after the last [`try_take`](TokenBucket::try_take) until a token is there
    /// (for a `Retry-After`).
    pub fn wait(&self) -> std::time::Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}
