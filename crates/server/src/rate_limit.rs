//! Per-user token buckets for invites and logins.
//!
//! Each key gets a bucket of `per_minute` tokens that refills continuously; a request takes one.
//! Time comes from the caller (Unix ms from the server's clock), so tests can drive it.

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
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > SWEEP_THRESHOLD {
            let per_minute = self.per_minute;
            buckets.retain(|_, b| refilled(*b, now_ms, per_minute) < per_minute);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.per_minute, at_ms: now_ms });
        let tokens = refilled(*bucket, now_ms, self.per_minute);
        if tokens < 1.0 {
            *bucket = Bucket { tokens, at_ms: now_ms };
            return false;
        }
        *bucket = Bucket { tokens: tokens - 1.0, at_ms: now_ms };
        true
    }
}

fn refilled(bucket: Bucket, now_ms: i64, per_minute: f64) -> f64 {
    let elapsed = (now_ms - bucket.at_ms).max(0) as f64;
    (bucket.tokens + elapsed * per_minute / 60_000.0).min(per_minute)
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
    }
}
