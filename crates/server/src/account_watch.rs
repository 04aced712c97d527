//! Learns of accounts removed while the server runs, and has the hub close their sessions.
//!
//! `hark-server user remove` runs in another process and writes only to the database, so the
//! running server watches the database: every removal appends a row to `account_events` in the
//! same transaction, and this task reads the rows past the last one it saw, once a second. A
//! database watch rather than a signal or an admin socket, because it needs no extra channel to
//! secure, survives a server restart between the two, and works unchanged when several server
//! nodes share one database. The cost is one indexed query a second.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::hub::HubCommand;
use crate::registry::RegistryInput;
use crate::store::Store;

/// Watches `store` every `every` until `stop` turns true, acting on removals after event `seen`
/// (read by the caller before the server accepts anything, so that no removal made after the
/// start can fall before this task's first look).
pub async fn run(store: Store, hub: mpsc::Sender<HubCommand>, mut seen: i64, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        let removed = match store.removed_accounts_after(seen).await {
            Ok(removed) => removed,
            Err(e) => {
                warn!(error = %e, "cannot read account events");
                continue;
            }
        };
        for (seq, user) in removed {
            info!(%user, "account removed; closing its sessions");
            if hub.send(HubCommand::Input(RegistryInput::AccountRemoved { user, event: seq })).await.is_err() {
                return;
            }
            seen = seen.max(seq);
        }
    }
}
