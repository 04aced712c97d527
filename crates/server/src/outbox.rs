//! The outbox: the task that stores each of the hub's batches' records and only then delivers
//! that batch's frames, batch after batch in the order the hub decided them.
//!
//! It is what lets the hub keep deciding while the database writes: the hub hands a batch over
//! and takes the next commands, and a slow commit delays frames instead of the registry. It is
//! also what keeps the durability promise when a write fails: the batch's records are written
//! again (after 50 ms, doubling up to 2 s) until they are stored, and no frame of that batch or of
//! any later one goes out before, so nobody sees `call.ended` for a call whose record could still
//! be lost. Frames reach sessions through a [`Delivery`]: this process's sessions alone, or
//! every server's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hark_protocol::{CallRecord, CallSummary, ServerMessage, UserId};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::delivery::Delivery;
use crate::hub::Outbound;
use crate::metrics::Metrics;
use crate::registry::{Output, SessionId};
use crate::store::Store;

/// The first wait before a failed write is tried again, in ms; it doubles up to [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: i64 = 50;
/// The longest wait between two tries of a failed write, in ms.
const RETRY_MAX_MS: i64 = 2_000;
/// Once the server is shutting down, how long the last records may keep failing before they
/// are given up (logged, with every call id), in ms: a server asked to stop must stop.
const GIVE_UP_AT_SHUTDOWN_MS: i64 = 10_000;

/// What the hub hands over, in the order it happened.
#[derive(Debug)]
pub enum Handoff {
    /// A session joined: frames for it go to `sender` from now on.
    Open {
        /// Which.
        session: SessionId,
        /// Its channel.
        sender: mpsc::Sender<Outbound>,
    },
    /// A session's socket is gone: nothing more goes to it.
    Close {
        /// Which.
        session: SessionId,
    },
    /// One hub batch's outputs.
    Batch(Batch),
    /// The server is shutting down: what follows is the last of it.
    Closing,
}

/// One hub batch: records to store, then frames and kicks to deliver, then the answers to the
/// sessions that opened in it (so each writes `welcome` before the frames queued for it).
#[derive(Debug, Default)]
pub struct Batch {
    /// One per person whose part of a call ended.
    pub records: Vec<(UserId, CallRecord)>,
    /// Frames and kicks, in order.
    pub deliveries: Vec<Output>,
    /// Opened sessions' answers: the calls they are still joined in.
    pub opened: Vec<(oneshot::Sender<Vec<CallSummary>>, Vec<CallSummary>)>,
}

impl Batch {
    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.deliveries.is_empty() && self.opened.is_empty()
    }
}

/// The outbox task's state.
pub struct Outbox {
    /// Set once the hub said the server is shutting down.
    closing: bool,
    delivery: Box<dyn Delivery>,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    /// An outbox writing to `store` and delivering through `delivery`.
    pub fn new(store: Store, delivery: Box<dyn Delivery>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Outbox {
        Outbox { closing: false, delivery, store, clock, metrics }
    }

    /// Runs until the hub drops its sender, after carrying out everything it handed over.
    pub async fn run(mut self, mut handoffs: mpsc::Receiver<Handoff>) {
        while let Some(handoff) = handoffs.recv().await {
            match handoff {
                Handoff::Open { session, sender } => self.delivery.open(session, sender).await,
                Handoff::Close { session } => self.delivery.close(session).await,
                Handoff::Batch(batch) => self.carry_out(batch).await,
                Handoff::Closing => self.closing = true,
            }
        }
    }

    async fn carry_out(&mut self, batch: Batch) {
        self.store_records(&batch.records).await;
        for delivery in batch.deliveries {
            match delivery {
                Output::Send(session, message) => self.deliver(session, &message).await,
                Output::Close { session, reason } => self.delivery.send(session, Outbound::Kick(reason)).await,
                Output::Record { user, record } => {
                    warn!(%user, call_id = %record.call_id, "a record among the deliveries; the hub separates them");
                }
            }
        }
        for (reply, joined_calls) in batch.opened {
            let _ = reply.send(joined_calls);
        }
    }

    /// Writes `records`, trying again until they are stored (or, once the server is shutting
    /// down, for [`GIVE_UP_AT_SHUTDOWN_MS`]). While they fail, `/healthz` says so.
    async fn store_records(&self, records: &[(UserId, CallRecord)]) {
        if records.is_empty() {
            return;
        }
        let first_try = self.clock.now_ms();
        let mut wait = RETRY_FIRST_MS;
        loop {
            match self.store.write_records(records).await {
                Ok(()) => {
                    self.metrics.records_failing_since_ms.store(0, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    self.metrics.record_write_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = self.metrics.records_failing_since_ms.compare_exchange(0, first_try.max(1), Ordering::Relaxed, Ordering::Relaxed);
                    warn!(error = %e, count = records.len(), retry_in_ms = wait, "could not write call records; their frames wait");
                    if self.closing && self.clock.now_ms() - first_try >= GIVE_UP_AT_SHUTDOWN_MS {
                        let calls: Vec<&str> = records.iter().map(|(_, r)| r.call_id.as_str()).collect();
                        tracing::error!(?calls, count = records.len(), "shutting down: call records given up");
                        return;
                    }
                }
            }
            let clock = Arc::clone(&self.clock);
            clock.sleep_until(clock.now_ms() + wait).await;
            wait = (wait * 2).min(RETRY_MAX_MS);
        }
    }

    async fn deliver(&mut self, session: SessionId, message: &ServerMessage) {
        if let ServerMessage::CallEnded { call_id, reason, duration_s } = message {
            debug!(%call_id, session, ?reason, duration_s, "call ended");
        }
        if let ServerMessage::Error { code, .. } = message {
            self.metrics.count_error(*code);
        }
        self.delivery.send(session, Outbound::Frame(message.to_json())).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicUsize;

    use hark_protocol::{CallQuality, CallResult, Direction, Media, UserProfile};

    use super::*;
    use crate::clock::ManualClock;
    use crate::delivery::LocalDelivery;
    use crate::store::{AccountState, ContactRow, Storage, StoreError};

    /// Storage whose record writes fail while `failing` is above zero, counting down, and that
    /// keeps what it was given; nothing else is asked of it here.
    #[derive(Debug, Default)]
    struct FailingWrites {
        failing: AtomicUsize,
        written: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Storage for FailingWrites {
        async fn close(&self) {}
        async fn ping(&self) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn write_records(&self, records: &[(String, CallRecord)]) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) > 0 {
                self.failing.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Corrupt("disk full".into()));
            }
            self.written.lock().unwrap().extend(records.iter().map(|(user, r)| format!("{user}:{}", r.call_id)));
            Ok(())
        }
        async fn create_user(&self, _: &str, _: Option<&str>, _: Option<&str>, _: i64) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn insert_user_if_missing(&self, _: &str, _: i64) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn account_state(&self, _: &str) -> Result<Option<AccountState>, StoreError> {
            unimplemented!()
        }
        async fn user_exists(&self, _: &str) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn password_hash(&self, _: &str) -> Result<Option<Option<String>>, StoreError> {
            unimplemented!()
        }
        async fn remove_user(&self, _: &str, _: i64) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn last_account_event(&self) -> Result<i64, StoreError> {
            unimplemented!()
        }
        async fn removed_accounts_after(&self, _: i64) -> Result<Vec<(i64, String)>, StoreError> {
            unimplemented!()
        }
        async fn list_users(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
            unimplemented!()
        }
        async fn existing_users(&self, _: &[String]) -> Result<HashSet<String>, StoreError> {
            unimplemented!()
        }
        async fn set_profile(&self, _: &str, _: Option<&str>, _: Option<&str>) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn profiles(&self, _: &[String]) -> Result<Vec<UserProfile>, StoreError> {
            unimplemented!()
        }
        async fn contacts(&self, _: &str) -> Result<Vec<ContactRow>, StoreError> {
            unimplemented!()
        }
        async fn contact_count(&self, _: &str) -> Result<usize, StoreError> {
            unimplemented!()
        }
        async fn has_contact(&self, _: &str, _: &str) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn add_contact(&self, _: &str, _: &str, _: Option<&str>, _: i64) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn remove_contact(&self, _: &str, _: &str) -> Result<(), StoreError> {
            unimplemented!()
        }
        async fn set_record_quality(&self, _: &str, _: &str, _: &CallQuality) -> Result<bool, StoreError> {
            unimplemented!()
        }
        async fn history(&self, _: &str, _: Option<i64>, _: u32) -> Result<Vec<CallRecord>, StoreError> {
            unimplemented!()
        }
        async fn delete_records(&self, _: &str, _: &[String]) -> Result<(), StoreError> {
            unimplemented!()
        }
    }

    fn record(call_id: &str) -> CallRecord {
        CallRecord {
            call_id: call_id.into(),
            caller: "alice".into(),
            invitees: vec!["bob".into()],
            media: Media::Audio,
            started_at: 1,
            connected_at: Some(2),
            ended_at: 3,
            duration_s: 0,
            direction: Direction::Outgoing,
            result: CallResult::Completed,
            end_reason: None,
            quality: None,
        }
    }

    fn ended(call_id: &str) -> ServerMessage {
        ServerMessage::CallEnded { call_id: call_id.into(), reason: hark_protocol::EndReason::Hangup, duration_s: 0 }
    }

    /// Waits until the outbox has moved on: `probe` is the answer of a later session opening,
    /// which it sends only after everything handed over before it.
    async fn caught_up(handoffs: &mpsc::Sender<Handoff>) {
        let (reply, answered) = oneshot::channel();
        let probe = Batch { opened: vec![(reply, Vec::new())], ..Batch::default() };
        handoffs.send(Handoff::Batch(probe)).await.unwrap();
        answered.await.unwrap();
    }

    #[tokio::test]
    async fn frames_wait_until_their_batch_s_records_are_stored_however_long_that_takes() {
        let storage = Arc::new(FailingWrites::default());
        storage.failing.store(3, Ordering::SeqCst);
        let store = Store::from_shared(Arc::clone(&storage) as Arc<dyn Storage>);
        let clock = ManualClock::new(0);
        let (handoffs, receiver) = mpsc::channel(16);
        let outbox = tokio::spawn(Outbox::new(store, Box::new(LocalDelivery::default()), clock.clone(), Arc::new(Metrics::default())).run(receiver));
        let (alice, mut alice_frames) = mpsc::channel(16);
        handoffs.send(Handoff::Open { session: 1, sender: alice }).await.unwrap();

        let first = Batch { records: vec![("alice".into(), record("c1"))], deliveries: vec![Output::Send(1, ended("c1"))], ..Batch::default() };
        handoffs.send(Handoff::Batch(first)).await.unwrap();
        // A later batch without records waits behind the first: order is kept.
        let second = Batch { deliveries: vec![Output::Send(1, ended("c2"))], ..Batch::default() };
        handoffs.send(Handoff::Batch(second)).await.unwrap();

        // Three writes fail; each wait before the next try is longer (50, 100, 200 ms of the
        // clock), and nothing is delivered meanwhile.
        let mut advanced = 0;
        while storage.written.lock().unwrap().is_empty() {
            assert!(alice_frames.try_recv().is_err(), "nothing goes out before the record is stored");
            assert!(advanced < 10_000, "the write was never tried again");
            clock.advance(10);
            advanced += 10;
            // Lets the outbox run on the new time.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert!(advanced >= 350, "three failures wait 50 + 100 + 200 ms, not {advanced}");
        caught_up(&handoffs).await;
        assert_eq!(*storage.written.lock().unwrap(), ["alice:c1"]);
        let frames: Vec<String> = std::iter::from_fn(|| alice_frames.try_recv().ok())
            .map(|frame| match frame {
                Outbound::Frame(text) => serde_json::from_str::<serde_json::Value>(&text).unwrap()["call_id"].as_str().unwrap().to_owned(),
                Outbound::Kick(reason) => panic!("kicked: {reason:?}"),
            })
            .collect();
        assert_eq!(frames, ["c1", "c2"], "both batches, in order, once the write went through");
        drop(handoffs);
        outbox.await.unwrap();
    }

    #[tokio::test]
    async fn a_session_that_lets_its_queue_fill_is_dropped_and_a_closed_one_gets_nothing() {
        let store = Store::from(FailingWrites::default());
        let (handoffs, receiver) = mpsc::channel(16);
        let outbox = tokio::spawn(Outbox::new(store, Box::new(LocalDelivery::default()), ManualClock::new(0), Arc::new(Metrics::default())).run(receiver));
        let (slow, mut slow_frames) = mpsc::channel(1);
        let (gone, mut gone_frames) = mpsc::channel(4);
        handoffs.send(Handoff::Open { session: 1, sender: slow }).await.unwrap();
        handoffs.send(Handoff::Open { session: 2, sender: gone }).await.unwrap();
        handoffs.send(Handoff::Close { session: 2 }).await.unwrap();
        let deliveries = vec![Output::Send(1, ended("a")), Output::Send(1, ended("b")), Output::Send(2, ended("a"))];
        handoffs.send(Handoff::Batch(Batch { deliveries, ..Batch::default() })).await.unwrap();
        caught_up(&handoffs).await;
        assert!(matches!(slow_frames.recv().await, Some(Outbound::Frame(_))), "the first frame fit");
        assert!(slow_frames.recv().await.is_none(), "the second did not: the session's sender was dropped");
        assert!(gone_frames.recv().await.is_none(), "nothing after its close");
        drop(handoffs);
        outbox.await.unwrap();
    }
}
