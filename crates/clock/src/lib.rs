//! hark-clock: wall-clock time for call-level timers, injectable so tests can move it by hand.
//!
//! The server's call registry and the engine's call core reason in Unix milliseconds (records,
//! `expires_at` and ring timeouts are wall-clock facts). Socket-level timeouts and media use
//! tokio's timers and real time directly; only call-level time goes through a [`Clock`], so an
//! integration test can ring out a call or give it a 42-second duration without waiting for
//! either.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// A source of Unix-millisecond time that can also wait for a moment.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix ms.
    fn now_ms(&self) -> i64;
    /// Completes when `now_ms() >= at` (or a little after).
    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let wait = u64::try_from(at - self.now_ms()).unwrap_or(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    moved: Notify,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(ManualClock { now: AtomicI64::new(now_ms), moved: Notify::new() })
    }

    /// Moves time forward by `ms` and wakes whoever waits on it.
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, at: i64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let moved = self.moved.notified();
                if self.now_ms() >= at {
                    return;
                }
                moved.await;
            }
        })
    }
}
