//! Token buckets keyed by user, by source address, or by both: invites per user, login attempts
//! per source, failed logins per source and user id, registrations per source.
//!
//! Each key gets a bucket of `per_minute` tokens that refills continuously; a request takes one,
//! and a request that turned out not to count (a successful login) gives it back. Time comes from
//! the caller (Unix ms from the server's clock), so tests can drive it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buckets beyond this many trigger a sweep of the full ones, bounding memory under many users.
const SWEEP_THRESHOLD: usize = 10_000;

/// A family of token buckets keyed by user.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl RateLimiter {
    /// Allows `per_minute` requests per key per minute, in bursts of up to the same number.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute: f64::from(per_minute.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `key` at `now_ms`; false if the bucket is empty.
    pub fn allow(&self, key: &str, now_ms: i64) -> bool {
        self.take(key, now_ms).is_ok()
    }

    /// Takes a token for `key` at `now_ms`, or says how many whole seconds until one is back
    /// (for `Retry-After`).
    pub fn take(&self, key: &str, now_ms: i64) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > SWEEP_THRESHOLD {
            let per_minute = self.per_minute;
            buckets.retain(|_, b| refilled(*b, now_ms, per_minute) < per_minute);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.per_minute, at_ms: now_ms });
        let tokens = refilled(*bucket, now_ms, self.per_minute);
        if tokens < 1.0 {
            *bucket = Bucket { tokens, at_ms: now_ms };
            let wait_ms = (1.0 - tokens) * 60_000.0 / self.per_minute;
            return Err((wait_ms / 1000.0).ceil().max(1.0) as u64);
        }
        *bucket = Bucket { tokens: tokens - 1.0, at_ms: now_ms };
        Ok(())
    }

    /// Gives back a token taken for `key` (up to the bucket's size).
    pub fn refund(&self, key: &str) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.per_minute);
        }
    }
}

fn refilled(bucket: Bucket, now_ms: i64, per_minute: f64) -> f64 {
    let elapsed = (now_ms - bucket.at_ms).max(0) as f64;
    (bucket.tokens + elapsed * per_minute / 60_000.0).min(per_minute)
}

/// Where each account signed in from before: (source, user id) pairs of successful logins, so
/// that the next login from there can skip the queue strangers fill. In memory only, and bounded:
/// when full it starts over (a forgotten pair only waits with everyone else).
#[derive(Debug, Default)]
pub struct KnownSources {
    pairs: Mutex<std::collections::HashSet<String>>,
}

/// Pairs remembered before [`KnownSources`] starts over (a few MiB at most).
const MAX_KNOWN_SOURCES: usize = 50_000;

impl KnownSources {
    /// Whether `key` (source and user id) signed in before.
    pub fn contains(&self, key: &str) -> bool {
        self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(key)
    }

    /// Remembers a successful sign-in.
    pub fn insert(&self, key: &str) {
        let mut pairs = self.pairs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pairs.len() >= MAX_KNOWN_SOURCES && !pairs.contains(key) {
            pairs.clear();
        }
        pairs.insert(key.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills() {
        let limiter = RateLimiter::new(3);
        assert!((0..3).all(|_| limiter.allow("alice", 0)));
        assert!(!limiter.allow("alice", 0));
        assert!(limiter.allow("bob", 0), "buckets are per key");
        assert!(!limiter.allow("alice", 19_999));
        assert!(limiter.allow("alice", 20_000), "one token back after a third of a minute");
        assert!(!limiter.allow("alice", 20_000));
        assert_eq!(limiter.take("alice", 20_000), Err(20), "a whole token is 20 s away");
        assert_eq!(limiter.take("alice", 39_500), Err(1), "half a second away rounds up");
    }

    #[test]
    fn a_refund_gives_the_token_back() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.allow("k", 0) && limiter.allow("k", 0));
        limiter.refund("k");
        assert!(limiter.allow("k", 0));
        assert!(!limiter.allow("k", 0));
        limiter.refund("unknown");
        limiter.refund("k");
        limiter.refund("k");
        limiter.refund("k");
        assert!(limiter.allow("k", 0) && limiter.allow("k", 0) && !limiter.allow("k", 0), "never more than the bucket holds");
    }
}
