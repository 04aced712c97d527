//! What the engine's integration tests share.
#![allow(dead_code)]

use std::time::Duration;

use hark_engine::EngineEvent;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The first event matching `want`, skipping others; fails after [`PATIENCE`], listing what came.
pub async fn wait_for(events: &mut UnboundedReceiver<EngineEvent>, want: impl Fn(&EngineEvent) -> bool) -> EngineEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut skipped = Vec::new();
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("the awaited event did not come in time; got {skipped:#?}"))
            .expect("engine stopped");
        if want(&event) {
            return event;
        }
        skipped.push(event);
    }
}
