//! `/healthz`: whether this server can do its work, for a load balancer to route by. It fails
//! (503) when the database does not answer within [`PING_WITHIN`], so a node that lost its
//! database is taken out of rotation instead of refusing every sign-in. The answer is kept for
//! [`KEPT_FOR`]: a flood of checks costs the database one query a second, and checks that
//! arrive together wait for the one in flight.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::store::Store;

/// Longest the database may take to answer the check.
pub const PING_WITHIN: Duration = Duration::from_secs(2);
/// How long one answer stands.
pub const KEPT_FOR: Duration = Duration::from_secs(1);

/// The last answer and when it was found.
#[derive(Debug, Default)]
pub struct HealthCheck {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl HealthCheck {
    /// `Ok` if the database answered (now or within the last [`KEPT_FOR`]), else why not.
    pub async fn check(&self, store: &Store) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = &*last {
            if at.elapsed() < KEPT_FOR {
                return answer.clone();
            }
        }
        let answer = match tokio::time::timeout(PING_WITHIN, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("database: {e}")),
            Err(_) => Err(format!("database: no answer within {} s", PING_WITHIN.as_secs())),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}
