//! The hub: the one task that owns the [`CallRegistry`] and carries out what it decides.
//!
//! Sessions send it [`HubCommand`]s over one channel. It takes whatever is queued as a batch,
//! feeds the registry with the clock's `now`, fires due timers, and hands the batch's outputs to
//! the [`outbox`](crate::outbox), which (1) writes every record of the batch in one transaction
//! and only then (2) delivers the batch's frames to session channels. That order is the
//! durability promise: a client that saw `call.ended` can rely on the record being stored, even
//! if the process is killed right after. The hub does not wait for the write: it goes on to the
//! next commands while the database works, so a slow database delays frames, never decisions.
//! Batching keeps it cheap: under load one commit covers many calls.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hark_protocol::{CallSummary, KickReason, UserId};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, debug_span, info, warn};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::delivery::{Delivery, LocalDelivery};
use crate::outbox::{Batch, Handoff, Outbox};
use crate::registry::{CallRegistry, Output, RegistryInput, SessionId};
use crate::store::Store;

/// Most commands taken into one batch.
const MAX_BATCH: usize = 512;

/// Handoffs the outbox may have queued before the hub waits for it. A batch holds up to
/// [`MAX_BATCH`] commands' outputs, so this bounds what waits on a stalled database (a few
/// seconds of a busy server); past it the hub stops taking commands, and sessions wait to send
/// theirs.
const OUTBOX_QUEUE: usize = 256;

/// Frames a session may have queued before it counts as too slow (a call setup is ~5 frames).
pub const SESSION_QUEUE: usize = 256;

/// What the hub sends down a session's channel.
#[derive(Debug)]
pub enum Outbound {
    /// A frame, already serialized.
    Frame(String),
    /// Tell the client `kicked {reason}` and close.
    Kick(KickReason),
}

/// Requests to the hub.
#[derive(Debug)]
pub enum HubCommand {
    /// A session said hello. The reply carries `welcome.joined_calls`; it is sent after any
    /// frames the opening produced were queued, so the session can write `welcome` first.
    Open {
        /// The new session.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// Its device id.
        device: String,
        /// Where its frames go.
        sender: mpsc::Sender<Outbound>,
        /// Answered with the calls this device is still joined in.
        reply: oneshot::Sender<Vec<CallSummary>>,
    },
    /// An input for the registry itself: a close, a request, a subscription, a removal.
    Input(RegistryInput),
    /// Which of `users` are online.
    Online {
        /// Whom.
        users: Vec<UserId>,
        /// One flag per user, in order.
        reply: oneshot::Sender<Vec<bool>>,
    },
}

/// The hub task's state.
pub struct Hub {
    registry: CallRegistry,
    delivery: Option<Box<dyn Delivery>>,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub around `registry`, delivering through `delivery`.
    pub fn new(registry: CallRegistry, store: Store, delivery: Box<dyn Delivery>, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        Hub { registry, delivery: Some(delivery), store, clock, metrics }
    }

    /// Runs until every command sender is dropped, then ends the calls still live, waits until
    /// the outbox has stored their records and delivered everything, and returns.
    pub async fn run(mut self, mut commands: mpsc::Receiver<HubCommand>) {
        let (outbox, handoffs) = mpsc::channel(OUTBOX_QUEUE);
        let delivery = self.delivery.take().unwrap_or_else(|| Box::new(LocalDelivery::default()));
        let outbox_task = tokio::spawn(Outbox::new(self.store.clone(), delivery, Arc::clone(&self.clock), Arc::clone(&self.metrics)).run(handoffs));
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let wake = self.registry.poll_timeout();
            let clock = Arc::clone(&self.clock);
            tokio::select! {
                received = commands.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                }
                () = async { clock.sleep_until(wake.unwrap_or(i64::MAX)).await }, if wake.is_some() => {}
            }
            let now = self.clock.now_ms();
            let mut outputs = Batch::default();
            for command in batch.drain(..) {
                if let Some(handoff) = self.apply(now, command, &mut outputs) {
                    // Opens and closes go ahead of the batch they came in, as they happened
                    // before its outputs.
                    if outbox.send(handoff).await.is_err() {
                        warn!("the outbox stopped");
                    }
                }
            }
            if self.registry.poll_timeout().is_some_and(|at| at <= now) {
                self.registry.handle_timeout(now);
            }
            self.hand_over(&outbox, outputs).await;
        }
        let now = self.clock.now_ms();
        if outbox.send(Handoff::Closing).await.is_err() {
            warn!("the outbox stopped");
        }
        self.registry.end_all(now);
        self.hand_over(&outbox, Batch::default()).await;
        drop(outbox);
        if let Err(e) = outbox_task.await {
            warn!(error = %e, "the outbox failed");
        }
        info!("hub stopped");
    }

    /// Feeds one command to the registry; what the outbox must learn before the batch's outputs.
    fn apply(&mut self, now: i64, command: HubCommand, outputs: &mut Batch) -> Option<Handoff> {
        match command {
            HubCommand::Open { session, user, device, sender, reply } => {
                debug!(session, %user, %device, "session opened");
                let joined_calls = self.registry.open_session(session, &user, &device);
                outputs.opened.push((reply, joined_calls));
                return Some(Handoff::Open { session, sender });
            }
            HubCommand::Input(RegistryInput::Close { session }) => {
                self.registry.close_session(now, session);
                return Some(Handoff::Close { session });
            }
            HubCommand::Input(RegistryInput::Request { session, re, request }) => {
                let _span = debug_span!("request", session, call_id = request.call_id().unwrap_or("")).entered();
                self.registry.handle_request(now, session, re, request);
            }
            HubCommand::Input(RegistryInput::Subscribe { session, users }) => self.registry.subscribe(session, &users),
            HubCommand::Input(RegistryInput::AccountRemoved { user, .. }) => self.registry.remove_account(now, &user),
            HubCommand::Online { users, reply } => {
                let _ = reply.send(users.iter().map(|u| self.registry.is_online(u)).collect());
            }
        }
        None
    }

    /// Gives the outbox what the registry decided: records apart, frames and kicks in order.
    async fn hand_over(&mut self, outbox: &mpsc::Sender<Handoff>, mut outputs: Batch) {
        while let Some(output) = self.registry.poll_output() {
            match output {
                Output::Record { user, record } => {
                    info!(call_id = %record.call_id, %user, result = ?record.result, duration_s = record.duration_s, "record");
                    outputs.records.push((user, record));
                }
                other => outputs.deliveries.push(other),
            }
        }
        let live = i64::try_from(self.registry.live_calls()).unwrap_or(i64::MAX);
        self.metrics.live_calls.store(live, Ordering::Relaxed);
        if !outputs.is_empty() && outbox.send(Handoff::Batch(outputs)).await.is_err() {
            warn!("the outbox stopped");
        }
    }
}
