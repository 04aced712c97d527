//! The hub: the one task that owns the [`CallRegistry`] and carries out what it decides.
//!
//! Sessions send it [`HubCommand`]s over one channel. It takes whatever is queued as a batch,
//! feeds the registry with the clock's `now`, fires due timers, then (1) writes every record of
//! the batch in one SQLite transaction and only then (2) delivers the batch's frames to session
//! channels. That order is the durability promise: a client that saw `call.ended` can rely on the
//! record being on disk, even if the process is killed right after. Batching makes it cheap:
//! under load one commit covers many calls.
//!
//! Delivery never waits: each session has a bounded channel, and a session that lets it fill is
//! too slow to be in a call; its sender is dropped, which closes it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hark_protocol::{CallSummary, KickReason, ServerMessage, UserId};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, debug_span, info, warn};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::registry::{CallRegistry, CallRequest, Output, SessionId};
use crate::store::Store;

/// Most commands taken into one batch.
const MAX_BATCH: usize = 512;

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
    /// A session's socket is gone.
    Close {
        /// Which.
        session: SessionId,
    },
    /// A call request.
    Request {
        /// From whom.
        session: SessionId,
        /// The request id, for the answer.
        re: Option<String>,
        /// What.
        request: CallRequest,
    },
    /// Follow users' presence.
    Subscribe {
        /// Who follows.
        session: SessionId,
        /// Whom.
        users: Vec<UserId>,
    },
    /// An operator removed `user`'s account: close its sessions and take it out of its calls.
    AccountRemoved {
        /// Whose.
        user: UserId,
    },
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
    sessions: HashMap<SessionId, mpsc::Sender<Outbound>>,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// A hub around `registry`.
    pub fn new(registry: CallRegistry, store: Store, clock: Arc<dyn Clock>, metrics: Arc<Metrics>) -> Self {
        Hub { registry, sessions: HashMap::new(), store, clock, metrics }
    }

    /// Runs until every command sender is dropped, then ends the calls still live (so their
    /// records are written) and returns.
    pub async fn run(mut self, mut commands: mpsc::Receiver<HubCommand>) {
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
            let mut opened = Vec::new();
            for command in batch.drain(..) {
                self.apply(now, command, &mut opened);
            }
            if self.registry.poll_timeout().is_some_and(|at| at <= now) {
                self.registry.handle_timeout(now);
            }
            self.carry_out().await;
            for (reply, joined_calls) in opened {
                let _ = reply.send(joined_calls);
            }
        }
        let now = self.clock.now_ms();
        self.registry.end_all(now);
        self.carry_out().await;
        info!("hub stopped");
    }

    fn apply(&mut self, now: i64, command: HubCommand, opened: &mut Vec<(oneshot::Sender<Vec<CallSummary>>, Vec<CallSummary>)>) {
        match command {
            HubCommand::Open { session, user, device, sender, reply } => {
                debug!(session, %user, %device, "session opened");
                self.sessions.insert(session, sender);
                let joined_calls = self.registry.open_session(session, &user, &device);
                opened.push((reply, joined_calls));
            }
            HubCommand::Close { session } => {
                self.sessions.remove(&session);
                self.registry.close_session(now, session);
            }
            HubCommand::Request { session, re, request } => {
                let _span = debug_span!("request", session, call_id = request.call_id().unwrap_or("")).entered();
                self.registry.handle_request(now, session, re, request);
            }
            HubCommand::Subscribe { session, users } => self.registry.subscribe(session, &users),
            HubCommand::AccountRemoved { user } => self.registry.remove_account(now, &user),
            HubCommand::Online { users, reply } => {
                let _ = reply.send(users.iter().map(|u| self.registry.is_online(u)).collect());
            }
        }
    }

    /// Persists the records the registry produced, then delivers its frames in order.
    async fn carry_out(&mut self) {
        let mut records = Vec::new();
        let mut deliveries = Vec::new();
        while let Some(output) = self.registry.poll_output() {
            match output {
                Output::Record { user, record } => {
                    info!(call_id = %record.call_id, %user, result = ?record.result, duration_s = record.duration_s, "record");
                    records.push((user, record));
                }
                other => deliveries.push(other),
            }
        }
        if !records.is_empty() {
            if let Err(e) = self.store.write_records(&records).await {
                // The calls themselves are unaffected; losing history is logged loudly.
                warn!(error = %e, count = records.len(), "could not write call records");
            }
        }
        for delivery in deliveries {
            match delivery {
                Output::Send(session, message) => self.deliver(session, &message),
                Output::Close { session, reason } => {
                    if let Some(sender) = self.sessions.remove(&session) {
                        let _ = sender.try_send(Outbound::Kick(reason));
                    }
                }
                Output::Record { .. } => unreachable!("records were taken out above"),
            }
        }
        let live = i64::try_from(self.registry.live_calls()).unwrap_or(i64::MAX);
        self.metrics.live_calls.store(live, Ordering::Relaxed);
    }

    fn deliver(&mut self, session: SessionId, message: &ServerMessage) {
        let Some(sender) = self.sessions.get(&session) else { return };
        if let ServerMessage::CallEnded { call_id, reason, duration_s } = message {
            debug!(%call_id, session, ?reason, duration_s, "call ended");
        }
        if let ServerMessage::Error { code, .. } = message {
            self.metrics.count_error(*code);
        }
        if sender.try_send(Outbound::Frame(message.to_json())).is_err() {
            warn!(session, "session queue full or closed; dropping the session");
            self.sessions.remove(&session);
        }
    }
}
