//! `/healthz`: whether this server can do its work, for a load balancer to route by. It fails
//! (503) when the database does not answer within [`PING_WITHIN`], so a node that lost its
//! database is taken out of rotation instead of refusing every sign-in, and when call records
//! have failed to be written for [`RECORDS_FAILING_FOR`] (a full disk, a revoked grant: the
//! database answers, but every event waits behind those records), and, on a node of a cluster,
//! when NATS has taken none of its log entries for as long ([`log_failing`]). The answer is kept for
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
/// How long records may keep failing before the server counts as unhealthy.
pub const RECORDS_FAILING_FOR: Duration = Duration::from_secs(2);

/// Why a cluster node is unhealthy: publishing to its log has failed for [`RECORDS_FAILING_FOR`]
/// since `failing_since` (Unix ms; 0: it works), since a node cut off from NATS cannot pass on
/// anything its sessions ask; or the log lost entries under its copy (`broken`).
pub fn log_failing(failing_since: i64, now: i64, broken: bool) -> Option<String> {
    if broken {
        return Some("NATS: the cluster's log lost entries under this node's copy; restart the node".into());
    }
    (failing_since > 0 && now - failing_since >= RECORDS_FAILING_FOR.as_millis() as i64)
        .then(|| format!("NATS: the cluster's log has not taken an entry for {} s", (now - failing_since) / 1000))
}

/// The last answer and when it was found.
#[derive(Debug, Default)]
pub struct HealthCheck {
    last: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl HealthCheck {
    /// `Ok` if records are being written and the database answered (now or within the last
    /// [`KEPT_FOR`]), else why not. `failing_since` and `now` are Unix ms (0: nothing failing).
    pub async fn check(&self, store: &Store, failing_since: i64, now: i64) -> Result<(), String> {
        if failing_since > 0 && now - failing_since >= RECORDS_FAILING_FOR.as_millis() as i64 {
            return Err(format!("call records not written for {} s", (now - failing_since) / 1000));
        }
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
