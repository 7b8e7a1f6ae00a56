//! In-memory guards against abuse: per-IP rate limits and single-use registration nonces.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys a limiter tracks; beyond it, the stalest half is forgotten.
const MAX_TRACKED: usize = 100_000;

/// A token bucket per key: `per_minute` events a minute, bursts up to the same number.
pub struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, (f64, Instant)>>,
    /// Tokens a full bucket holds.
    capacity: f64,
    /// Tokens added per minute.
    per_minute: f64,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter allowing `per_minute` events per key per minute.
    pub fn new(per_minute: u32) -> Self {
        let rate = f64::from(per_minute.max(1));
        Self {
            buckets: Mutex::new(HashMap::new()),
            capacity: rate,
            per_minute: rate,
        }
    }

    /// A limiter allowing `per_hour` events per key per hour, in bursts up to the same number.
    pub fn per_hour(per_hour: u32) -> Self {
        let rate = f64::from(per_hour.max(1));
        Self {
            buckets: Mutex::new(HashMap::new()),
            capacity: rate,
            per_minute: rate / 60.0,
        }
    }

    /// Whether `key` has no token left now (without taking one), and if so how many seconds
    /// until it has one.
    pub fn exhausted(&self, key: &K) -> Option<u64> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = buckets.get(key)?;
        let refill = at.elapsed().as_secs_f64() * self.per_minute / 60.0;
        let tokens = (tokens + refill).min(self.capacity);
        (tokens < 1.0).then(|| ((1.0 - tokens) * 60.0 / self.per_minute).ceil() as u64)
    }

    /// Takes one token for `key`; false when the key is over its rate.
    pub fn allow(&self, key: &K) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let mut ages: Vec<Instant> = buckets.values().map(|(_, t)| *t).collect();
            ages.sort_unstable();
            let median = ages[ages.len() / 2];
            buckets.retain(|_, (_, t)| *t > median);
        }
        let (tokens, at) = buckets.entry(key.clone()).or_insert((self.capacity, now));
        let refill = now.duration_since(*at).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-IP limiter.
pub type IpRateLimiter = RateLimiter<IpAddr>;

/// Outstanding registration nonces: each is accepted once, within its lifetime.
pub struct NonceStore {
    issued: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
}

/// Most nonces outstanding at once (a flood of challenges cannot grow memory without bound).
const MAX_NONCES: usize = 100_000;

impl NonceStore {
    /// Nonces valid for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            issued: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Lifetime of a nonce.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a fresh nonce, or `None` when too many are outstanding.
    pub fn issue(&self) -> Option<String> {
        let nonce = random_hex::<16>()?;
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if issued.len() >= MAX_NONCES {
            issued.retain(|_, at| now.duration_since(*at) < self.ttl);
            if issued.len() >= MAX_NONCES {
                return None;
            }
        }
        issued.insert(nonce.clone(), now);
        Some(nonce)
    }

    /// Consumes a nonce: true only the first time, and only before it expires.
    pub fn consume(&self, nonce: &str) -> bool {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        issued
            .remove(nonce)
            .is_some_and(|at| at.elapsed() < self.ttl)
    }
}

/// `N` random bytes from the OS, hex-encoded.
pub fn random_hex<const N: usize>() -> Option<String> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Whether two secrets are equal, in time that does not depend on where they differ (their
/// digests are compared, in constant time).
pub fn same_secret(presented: &str, expected: &str) -> bool {
    blake3::hash(presented.as_bytes()) == blake3::hash(expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let limiter = RateLimiter::new(3);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(limiter.allow(&ip) && limiter.allow(&ip) && limiter.allow(&ip));
        assert!(!limiter.allow(&ip));
        assert!(limiter.allow(&IpAddr::from([127, 0, 0, 2])));
    }

    #[test]
    fn nonces_are_single_use() {
        let store = NonceStore::new(Duration::from_secs(60));
        let nonce = store.issue().unwrap();
        assert!(store.consume(&nonce));
        assert!(!store.consume(&nonce));
        assert!(!store.consume("never-issued"));
        let expired = NonceStore::new(Duration::ZERO);
        let nonce = expired.issue().unwrap();
        assert!(!expired.consume(&nonce));
    }
}
