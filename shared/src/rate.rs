//! A token bucket for bandwidth limits: used by the agent (upload rate) and the index server
//! (relay sessions). Pure: the caller sleeps for the delay it returns.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `rate` bytes per second, with bursts of one second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A bucket of `rate` bytes per second (at least 1), starting full.
    pub fn new(rate: u64) -> TokenBucket {
        let rate = rate.max(1) as f64;
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes `bytes` from the bucket; returns how long to wait before sending them.
    pub fn take(&self, bytes: u64) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, at) = &mut *state;
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.rate);
        *at = now;
        *tokens -= bytes as f64;
        if *tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-*tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_after_the_burst() {
        let bucket = TokenBucket::new(1000);
        assert_eq!(bucket.take(1000), Duration::ZERO);
        let wait = bucket.take(500);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
    }
}
