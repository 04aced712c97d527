//! Cluster mode (`--nats`): several hark-servers, one NATS, one PostgreSQL, and any server
//! answers any client.
//!
//! Every server keeps a copy of the hub ([`Replica`]) and feeds it one log, the JetStream stream
//! `HARK_LOG`: each server publishes its sessions' inputs there and applies every server's, in
//! the stream's order. Copies that apply the same entries in the same order decide the same, so
//! "exactly one wins" needs no lock: a race between servers is decided by which entry the stream
//! stored first. What a server does with a decision is its own part only: the frames for its own
//! sessions, and the records if it is the writer (the live server with the lowest tag).
//!
//! Three tasks per server:
//! - the publisher: takes the inputs, packs what queued while the last entry was in flight into
//!   the next (one in flight keeps a server's entries in order), and publishes it with a message
//!   id, so that one published again after a lost acknowledgement is stored once. It marks an
//!   entry as a beat every [`BEAT_EVERY_MS`], publishing an empty one if it has nothing to say:
//!   that is how the others know it lives.
//! - the reader: an ordered consumer of the stream, from where this server's copy starts.
//! - the driver (this module's [`run`](ClusterHub::run)): applies entries, hands frames and
//!   records to the [`Outbox`] as the single server's hub does, publishes a tick when a timer
//!   of the copy is due, and answers "who is online" from its copy.
//!
//! A server that starts asks on `hark.cluster.alive` whether others live. If one answers, it
//! publishes [`Item::CopyFor`] naming that one, which sends it its copy as of that entry, in
//! parts, on `hark.cluster.copy.<tag>.<try>`, and it applies the log from the next entry on (if
//! the copy does not come, say because the one that answered died, it asks again, up to
//! [`JOIN_ATTEMPTS`] times). If none answers, it publishes [`Item::Reset`] and starts the
//! cluster afresh.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::StreamExt;
use hark_protocol::{CallSummary, KickReason};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::clock::Clock;
use crate::delivery::{LocalDelivery, SessionTag};
use crate::hub::{HubCommand, Outbound};
use crate::metrics::Metrics;
use crate::outbox::{Batch, Handoff, Outbox};
use crate::registry::{Output, RegistrySettings, SessionId};
use crate::replica::{CopyError, Entry, Item, NodeTag, Replica, BEAT_EVERY_MS, DEAD_AFTER_BEATS};
use crate::store::Store;

/// The stream that holds the log.
const STREAM: &str = "HARK_LOG";
/// The subject entries are published on.
const SUBJECT: &str = "hark.log";
/// Live servers answer requests here, so that a starting one knows whether to ask for a copy.
const ALIVE_SUBJECT: &str = "hark.cluster.alive";
/// How long the stream keeps entries: a starting server needs those after its copy's entry.
const LOG_MAX_AGE: Duration = Duration::from_secs(600);
/// How long NATS remembers message ids: an entry published again within it is stored once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Longest a NATS request may take.
const REQUEST_WITHIN: Duration = Duration::from_secs(2);
/// Longest a starting server waits for its copy before it asks again.
const COPY_WITHIN: Duration = Duration::from_secs(5);
/// How many times a starting server asks for a copy.
const JOIN_ATTEMPTS: u32 = 3;
/// Most inputs in one entry.
const MAX_ITEMS_PER_ENTRY: usize = 512;
/// Most commands the driver takes at once.
const MAX_BATCH: usize = 512;
/// Inputs queued for the publisher before the driver waits.
const PUBLISH_QUEUE: usize = 8192;
/// Entries read ahead of the driver.
const READ_AHEAD: usize = 1024;
/// A timer is due on every server at once; the writer publishes its tick, and the others only
/// if the writer has not within this many ms (it may have died).
const BACKUP_TICK_AFTER_MS: i64 = 1_500;
/// How long a leaving server waits to see its `Leave` in the log.
const LEAVE_WITHIN: Duration = Duration::from_secs(3);
/// The header that numbers the parts of a copy: `INDEX/COUNT`.
const COPY_PART: &str = "Hark-Copy-Part";

/// What cluster mode needs besides the single server's settings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The NATS server (`nats://HOST:PORT`).
    pub nats: String,
    /// This node's name, for logs.
    pub node_id: String,
    /// The registry's tunables (every node should have the same).
    pub registry: RegistrySettings,
}

/// Why a server could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS refused or did not answer.
    #[error("NATS: {0}")]
    Nats(String),
    /// The copy another server sent could not be read.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// No server sent a copy in time.
    #[error("no copy of the cluster's state arrived ({JOIN_ATTEMPTS} tries of {} s)", COPY_WITHIN.as_secs())]
    NoCopy,
    /// Another server drew the same tag (one chance in 16.7 million): starting again draws anew.
    #[error("another server has this server's tag {0:06x}; start it again")]
    TagTaken(NodeTag),
    /// This server's call settings (ring timeout, reconnect grace, participants, service
    /// accounts) differ from the cluster's: the copies would decide differently.
    #[error("this server's call settings differ from the cluster's: theirs are {0}")]
    SettingsDiffer(String),
}

fn nats_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

fn copy_subject(node: NodeTag, attempt: u32) -> String {
    format!("hark.cluster.copy.{node:06x}.{attempt}")
}

/// Joins the cluster on `settings.nats` and starts this server's copy of the hub, which takes
/// `commands` as the single server's hub does. The task ends after every command sender is gone
/// and this server has left the cluster.
pub async fn start(
    settings: ClusterSettings,
    tag: SessionTag,
    store: Store,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    commands: mpsc::Receiver<HubCommand>,
) -> Result<JoinHandle<()>, ClusterError> {
    let me = tag.bits();
    let client = async_nats::ConnectOptions::new()
        .name(format!("hark-server {}", settings.node_id))
        .connect(settings.nats.as_str())
        .await
        .map_err(nats_error)?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(REQUEST_WITHIN);
    let stream = open_stream(&js).await?;
    let mut publisher = Publisher::new(js, me, Arc::clone(&clock), Arc::clone(&metrics), client.server_info().max_payload);
    let log_lost = Arc::clone(&publisher.log_lost);

    let (replica, from) = join(&client, &stream, &mut publisher, tag, &settings).await?;

    let reader = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
            ..Default::default()
        })
        .await
        .map_err(nats_error)?
        .messages()
        .await
        .map_err(nats_error)?;
    let (entries_tx, entries) = mpsc::channel(READ_AHEAD);
    let read = tokio::spawn(read_log(reader, entries_tx));
    let (items, items_rx) = mpsc::channel(PUBLISH_QUEUE);
    let publish = tokio::spawn(publisher.run(items_rx));
    let mut alive = client.subscribe(ALIVE_SUBJECT).await.map_err(nats_error)?;
    let answer_client = client.clone();
    let answer_metrics = Arc::clone(&metrics);
    let answer_alive = tokio::spawn(async move {
        while let Some(request) = alive.next().await {
            // A node whose copy may differ from the others' must not hand it out.
            if answer_metrics.log_broken.load(Ordering::Relaxed) {
                return;
            }
            if let Some(reply) = request.reply {
                let _ = answer_client.publish(reply, Bytes::from(format!("{me:06x}"))).await;
            }
        }
    });
    let hub = ClusterHub {
        replica,
        me,
        client,
        items,
        answer_alive,
        log_lost,
        pending: HashMap::new(),
        local: HashSet::new(),
        ticked_for: None,
        left: false,
        broken: false,
        clock,
        metrics,
    };
    Ok(tokio::spawn(async move {
        hub.run(commands, entries, store).await;
        read.abort();
        // With NATS away the publisher would try its last entry for ever.
        let abort = publish.abort_handle();
        match tokio::time::timeout(LEAVE_WITHIN, publish).await {
            Ok(Err(e)) => warn!(error = %e, "the log publisher failed"),
            Ok(Ok(())) => {}
            Err(_) => {
                warn!("the log publisher did not finish; stopped");
                abort.abort();
            }
        }
    }))
}

/// Starts this server's copy: from another server's, or afresh if none lives. Returns it and
/// the sequence of the first entry to apply to it.
async fn join(
    client: &async_nats::Client,
    stream: &stream::Stream,
    publisher: &mut Publisher,
    tag: SessionTag,
    settings: &ClusterSettings,
) -> Result<(Replica, u64), ClusterError> {
    let me = tag.bits();
    for attempt in 1..=JOIN_ATTEMPTS {
        let answer = tokio::time::timeout(REQUEST_WITHIN, client.request(ALIVE_SUBJECT, Bytes::new())).await;
        let from = match answer {
            Ok(Ok(message)) => std::str::from_utf8(&message.payload).ok().and_then(|hex| NodeTag::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        let Some(from) = from else {
            if log_is_busy(stream).await? {
                // Live servers beat every second: one is there but did not answer in time.
                // Starting afresh would end its calls, so ask again in a moment.
                warn!(attempt, "no server answered, but the log is in use; asking again");
                tokio::time::sleep(REQUEST_WITHIN).await;
                continue;
            }
            let call_id_prefix = rand::thread_rng().gen();
            let at = publisher.publish(vec![Item::Reset { call_id_prefix, settings: settings.registry.clone() }]).await;
            info!(node = %settings.node_id, tag = %tag.hex(), at, "no other server answered: started the cluster afresh");
            return Ok((Replica::new(me, settings.registry.clone(), call_id_prefix), at));
        };
        // Subscribed before the request is published on the same connection, so no part of
        // the copy can arrive before the subscription.
        let mut parts = client.subscribe(copy_subject(me, attempt)).await.map_err(nats_error)?;
        let at = publisher.publish(vec![Item::CopyFor { node: me, from, attempt }]).await;
        match receive_copy(&mut parts).await {
            Ok(copy) => {
                let replica = Replica::from_copy(&copy, me)?;
                if replica.registry().session_ids().iter().any(|s| SessionTag::of(*s) == tag) {
                    return Err(ClusterError::TagTaken(me));
                }
                if replica.settings() != &settings.registry {
                    return Err(ClusterError::SettingsDiffer(format!("{:?}", replica.settings())));
                }
                info!(node = %settings.node_id, tag = %tag.hex(), at, from = %format!("{from:06x}"), "joined the cluster from a copy");
                return Ok((replica, at + 1));
            }
            Err(ClusterError::NoCopy) => warn!(from = %format!("{from:06x}"), attempt, "no copy came; asking again"),
            Err(e) => return Err(e),
        }
    }
    Err(ClusterError::NoCopy)
}

/// Whether an entry was stored in the last [`DEAD_AFTER_BEATS`] seconds: a live server beats
/// every second, so a quiet log has none.
async fn log_is_busy(stream: &stream::Stream) -> Result<bool, ClusterError> {
    let mut stream = stream.clone();
    let info = stream.info().await.map_err(nats_error)?;
    if info.state.messages == 0 {
        return Ok(false);
    }
    let age_s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) - info.state.last_timestamp.unix_timestamp();
    Ok(age_s < i64::from(DEAD_AFTER_BEATS))
}

/// The log's stream, made if missing. File storage: a NATS restart keeps the log.
async fn open_stream(js: &jetstream::Context) -> Result<stream::Stream, ClusterError> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::File,
        max_age: LOG_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(nats_error)
}

/// Collects the parts of a copy sent to this server.
async fn receive_copy(parts: &mut async_nats::Subscriber) -> Result<Vec<u8>, ClusterError> {
    let collect = async {
        let mut got: Vec<Option<Bytes>> = Vec::new();
        while let Some(message) = parts.next().await {
            let Some((index, count)) = message
                .headers
                .as_ref()
                .and_then(|h| h.get(COPY_PART))
                .and_then(|v| v.as_str().split_once('/').and_then(|(i, n)| Some((i.parse::<usize>().ok()?, n.parse::<usize>().ok()?))))
            else {
                warn!("a copy part without its number; ignored");
                continue;
            };
            if got.len() != count {
                got = vec![None; count];
            }
            if let Some(slot) = got.get_mut(index) {
                *slot = Some(message.payload);
            }
            if got.iter().all(Option::is_some) {
                return Some(got.into_iter().flatten().flat_map(|b| b.to_vec()).collect());
            }
        }
        None
    };
    match tokio::time::timeout(COPY_WITHIN, collect).await {
        Ok(Some(copy)) => Ok(copy),
        Ok(None) => Err(ClusterError::Nats("the connection closed while the copy arrived".into())),
        Err(_) => Err(ClusterError::NoCopy),
    }
}

/// Sends this server's copy to `node` for its try `attempt`, in parts NATS takes.
async fn send_copy(client: async_nats::Client, node: NodeTag, attempt: u32, copy: Vec<u8>) {
    let part_size = client.server_info().max_payload.saturating_sub(4096).max(4096);
    let parts: Vec<&[u8]> = copy.chunks(part_size).collect();
    let count = parts.len().max(1);
    for (index, part) in parts.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(COPY_PART, format!("{index}/{count}").as_str());
        if let Err(e) = client.publish_with_headers(copy_subject(node, attempt), headers, Bytes::copy_from_slice(part)).await {
            warn!(error = %e, "could not send a copy");
            return;
        }
    }
    info!(to = %format!("{node:06x}"), bytes = copy.len(), "sent a copy to a joining server");
}

/// Passes the log's entries to the driver, in order, with their stream sequence (`None` for one
/// that cannot be read: every server skips it alike, so the copies stay equal).
async fn read_log(mut reader: consumer::push::Ordered, entries: mpsc::Sender<(u64, Option<Entry>)>) {
    while let Some(message) = reader.next().await {
        match message {
            Ok(message) => {
                let seq = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(e) => {
                        warn!(error = %e, "a log message without its sequence");
                        continue;
                    }
                };
                let entry = match serde_json::from_slice::<Entry>(&message.payload) {
                    Ok(entry) => Some(entry),
                    Err(e) => {
                        warn!(error = %e, seq, "an entry that cannot be read; skipped");
                        None
                    }
                };
                if entries.send((seq, entry)).await.is_err() {
                    return;
                }
            }
            // The ordered consumer makes itself again from where it was.
            Err(e) => warn!(error = %e, "reading the cluster's log"),
        }
    }
}

/// Publishes entries, one in flight at a time.
struct Publisher {
    js: jetstream::Context,
    me: NodeTag,
    /// Random per start: message ids never repeat across restarts within NATS' window.
    run: u32,
    next: u64,
    last_beat: Instant,
    /// The sequence of this publisher's last entry: a new entry's is always higher, unless NATS
    /// lost the stream and numbers again from 1.
    last_acked: u64,
    /// Told when the publisher finds the log lost (it also sets `Metrics::log_broken`).
    log_lost: Arc<tokio::sync::Notify>,
    max_payload: usize,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Publisher {
    fn new(js: jetstream::Context, me: NodeTag, clock: Arc<dyn Clock>, metrics: Arc<Metrics>, max_payload: usize) -> Publisher {
        Publisher { js, me, run: rand::thread_rng().gen(), next: 0, last_beat: Instant::now(), last_acked: 0, log_lost: Arc::default(), max_payload, clock, metrics }
    }

    /// Publishes what queues in `items`, an empty entry after [`BEAT_EVERY_MS`] of quiet, until
    /// the driver drops its sender.
    async fn run(mut self, mut items: mpsc::Receiver<Item>) {
        loop {
            let first = tokio::select! {
                item = items.recv() => match item {
                    Some(item) => Some(item),
                    None => break,
                },
                () = tokio::time::sleep(Duration::from_millis(BEAT_EVERY_MS as u64)) => None,
            };
            let mut batch: Vec<Item> = first.into_iter().collect();
            while batch.len() < MAX_ITEMS_PER_ENTRY {
                match items.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            self.publish(batch).await;
            if self.metrics.log_broken.load(Ordering::Relaxed) {
                // Nothing more, not even a beat: see `ClusterHub::stop_following`.
                break;
            }
        }
        debug!("log publisher stopped");
    }

    /// Publishes `items` as one entry (or, past NATS' size limit, as several in order) and
    /// returns the stream sequence of the last. Tries again until NATS stores it: the entry
    /// keeps its message id, so one that was stored but not acknowledged is stored once.
    async fn publish(&mut self, items: Vec<Item>) -> u64 {
        // Beats are counted in this server's running time, so a jump of the clock neither kills
        // nor revives anyone.
        let beat = self.last_beat.elapsed() >= Duration::from_millis(BEAT_EVERY_MS as u64);
        if beat {
            self.last_beat = Instant::now();
        }
        let entry = Entry { node: self.me, now: self.clock.now_ms(), beat, items };
        let payload = serde_json::to_vec(&entry).expect("an entry always serializes");
        if payload.len() + 1024 > self.max_payload {
            if entry.items.len() > 1 {
                let mut first = entry.items;
                let second = first.split_off(first.len() / 2);
                Box::pin(self.publish(first)).await;
                return Box::pin(self.publish(second)).await;
            }
            warn!(bytes = payload.len(), "an input larger than NATS takes; dropped");
            return 0;
        }
        self.next += 1;
        let id = format!("{:06x}-{:08x}-{}", self.me, self.run, self.next);
        let payload = Bytes::from(payload);
        let mut wait = Duration::from_millis(50);
        loop {
            let sent = Instant::now();
            let outcome = match self.js.send_publish(SUBJECT, PublishMessage::build().payload(payload.clone()).message_id(&id)).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => {
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.metrics.log_round_trip_us.fetch_add(us, Ordering::Relaxed);
                    self.metrics.log_entries.fetch_add(1, Ordering::Relaxed);
                    if ack.duplicate {
                        self.metrics.log_duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    self.metrics.log_failing_since_ms.store(0, Ordering::Relaxed);
                    // A duplicate's acknowledgement names the sequence it was stored at first.
                    if !ack.duplicate && ack.sequence <= self.last_acked {
                        error!(seq = ack.sequence, last = self.last_acked, "the cluster's log numbers entries again from the start: NATS lost it");
                        self.metrics.log_broken.store(true, Ordering::Relaxed);
                        self.log_lost.notify_one();
                    }
                    self.last_acked = self.last_acked.max(ack.sequence);
                    return ack.sequence;
                }
                Err(e) => {
                    if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                        // It existed when this server joined: NATS lost its store, and with it
                        // entries some copies may not have applied. Making it again would let
                        // the copies go on unequal; only a restart of the nodes starts afresh.
                        error!("the cluster's log is gone from NATS (its store was lost); restart the nodes");
                        self.metrics.log_broken.store(true, Ordering::Relaxed);
                        self.log_lost.notify_one();
                        return self.last_acked;
                    }
                    warn!(error = %e, "publishing to the cluster's log failed; trying again");
                    self.metrics.log_publish_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = self.metrics.log_failing_since_ms.compare_exchange(0, self.clock.now_ms(), Ordering::Relaxed, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// The driver: this server's copy of the hub.
struct ClusterHub {
    replica: Replica,
    me: NodeTag,
    client: async_nats::Client,
    items: mpsc::Sender<Item>,
    /// The task that answers `hark.cluster.alive`.
    answer_alive: JoinHandle<()>,
    /// Told when the publisher finds the log lost.
    log_lost: Arc<tokio::sync::Notify>,
    /// Sessions whose opening is in the log but not yet applied.
    pending: HashMap<SessionId, (mpsc::Sender<Outbound>, oneshot::Sender<Vec<CallSummary>>)>,
    /// This server's open sessions.
    local: HashSet<SessionId>,
    /// The timer a tick was published for.
    ticked_for: Option<i64>,
    /// This server's `Leave` was applied.
    left: bool,
    /// The log lost entries under this copy: nothing more is applied (see [`Replica::apply`]).
    broken: bool,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl ClusterHub {
    async fn run(mut self, mut commands: mpsc::Receiver<HubCommand>, mut entries: mpsc::Receiver<(u64, Option<Entry>)>, store: Store) {
        let (outbox, handoffs) = mpsc::channel(256);
        let outbox_task = tokio::spawn(
            Outbox::new(store, Box::new(LocalDelivery::default()), Arc::clone(&self.clock), Arc::clone(&self.metrics)).run(handoffs),
        );
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let wake = self.tick_due();
            let clock = Arc::clone(&self.clock);
            let log_lost = Arc::clone(&self.log_lost);
            tokio::select! {
                () = log_lost.notified(), if !self.broken => {
                    self.stop_following();
                    let mut batch = Batch::default();
                    self.close_local_sessions(&mut batch);
                    if outbox.send(Handoff::Batch(batch)).await.is_err() {
                        warn!("the outbox stopped");
                    }
                }
                received = commands.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    for command in batch.drain(..) {
                        self.take(command).await;
                    }
                }
                entry = entries.recv() => match entry {
                    Some((seq, entry)) => self.apply(seq, entry, &outbox).await,
                    None => {
                        warn!("the cluster's log ended");
                        break;
                    }
                },
                () = async { clock.sleep_until(wake.unwrap_or(i64::MAX)).await }, if wake.is_some() => {
                    self.ticked_for = self.replica.next_timer();
                    self.publish(Item::Tick).await;
                }
            }
        }
        // Leaving: the others stop counting this server at once instead of after its silence,
        // and if it is the last, it ends the calls and writes their records. A joining server
        // must not pick it to send a copy any more.
        self.answer_alive.abort();
        self.publish(Item::Leave).await;
        let _ = tokio::time::timeout(LEAVE_WITHIN, async {
            while !self.left && !self.broken {
                match entries.recv().await {
                    Some((seq, entry)) => self.apply(seq, entry, &outbox).await,
                    None => break,
                }
            }
        })
        .await;
        // Nothing more goes into the log: a beat after the `Leave` would count this server
        // live again on every copy.
        self.items = mpsc::channel(1).0;
        if outbox.send(Handoff::Closing).await.is_err() {
            warn!("the outbox stopped");
        }
        drop(outbox);
        if let Err(e) = outbox_task.await {
            warn!(error = %e, "the outbox failed");
        }
        info!("left the cluster");
    }

    /// Stops taking part: a copy that may differ from the others must not decide or answer
    /// anything, nor beat (so that a restarted node, finding the log quiet, starts it afresh).
    fn stop_following(&mut self) {
        self.broken = true;
        self.answer_alive.abort();
        self.items = mpsc::channel(1).0;
    }

    /// Closes this server's sessions (`kicked {reason:"shutdown"}`): their clients reconnect,
    /// through another node if this one cannot serve them.
    fn close_local_sessions(&mut self, batch: &mut Batch) {
        for session in self.local.drain() {
            batch.deliveries.push(Output::Close { session, reason: KickReason::Shutdown });
        }
    }

    /// When to publish a tick: a timer of the copy is due (at once for the writer, a little
    /// later for the others) and no tick went out for it yet.
    fn tick_due(&self) -> Option<i64> {
        if self.broken {
            return None;
        }
        let at = self.replica.next_timer()?;
        if self.ticked_for == Some(at) {
            return None;
        }
        Some(if self.replica.is_writer() { at } else { at + BACKUP_TICK_AFTER_MS })
    }

    async fn publish(&self, item: Item) {
        if self.items.send(item).await.is_err() {
            warn!("the log publisher stopped");
        }
    }

    /// A session's command: into the log, except questions the copy answers.
    async fn take(&mut self, command: HubCommand) {
        if self.metrics.log_broken.load(Ordering::Relaxed) && !self.broken {
            // The publisher found the log numbered anew.
            self.stop_following();
        }
        if self.broken && !matches!(command, HubCommand::Online { .. }) {
            // Nothing goes into a log this copy no longer follows: an opening session is
            // refused (its answer dropped), and its client tries another node.
            return;
        }
        let item = match command {
            HubCommand::Open { session, user, device, sender, reply } => {
                self.pending.insert(session, (sender, reply));
                Item::Open { session, user, device }
            }
            HubCommand::Input(input) => Item::Input(input),
            HubCommand::Online { users, reply } => {
                let _ = reply.send(users.iter().map(|u| self.replica.registry().is_online(u)).collect());
                return;
            }
        };
        self.publish(item).await;
    }

    /// Applies the log's entry at `seq` (`None`: one that cannot be read) and carries out this
    /// server's part of it.
    async fn apply(&mut self, seq: u64, entry: Option<Entry>, outbox: &mpsc::Sender<Handoff>) {
        if self.broken {
            return;
        }
        let mut applied = match entry {
            Some(entry) => {
                if entry.node == self.me && entry.items.contains(&Item::Leave) {
                    self.left = true;
                }
                self.replica.apply(seq, entry)
            }
            None => self.replica.skip(seq),
        };
        let mut batch = Batch::default();
        for tag in &applied.counted_dead {
            warn!(tag = %format!("{tag:06x}"), "a server went silent and is counted dead; its people have the reconnect grace to come back through another");
            self.metrics.cluster_deaths.fetch_add(1, Ordering::Relaxed);
        }
        if applied.log_broken {
            error!(seq, after = self.replica.last_seq(), "the cluster's log skipped entries: this server's copy may differ from the others'; restart it");
            self.metrics.log_broken.store(true, Ordering::Relaxed);
        }
        if self.metrics.log_broken.load(Ordering::Relaxed) && !self.broken {
            self.stop_following();
            applied.log_broken = true;
        }
        if applied.reset_by_other || applied.declared_dead || applied.log_broken {
            warn!(reset = applied.reset_by_other, "this server's sessions are gone from the cluster; closing them so their clients reconnect");
            // What this entry decided for them went to the others' copies as well; they hear
            // it again when they resync.
            applied.deliveries.clear();
            self.close_local_sessions(&mut batch);
        }
        let mut handoffs = Vec::new();
        for (session, joined_calls) in applied.opened {
            let Some((sender, reply)) = self.pending.remove(&session) else { continue };
            self.local.insert(session);
            handoffs.push(Handoff::Open { session, sender });
            batch.opened.push((reply, joined_calls));
        }
        for session in applied.closed {
            self.local.remove(&session);
            self.pending.remove(&session);
            handoffs.push(Handoff::Close { session });
        }
        let me = self.me;
        batch.deliveries.extend(applied.deliveries.into_iter().filter(|output| match output {
            Output::Send(session, _) | Output::Close { session, .. } => SessionTag::of(*session).bits() == me,
            Output::Record { .. } => false,
        }));
        batch.records = applied.records;
        if let Some((node, attempt)) = applied.copy_for {
            tokio::spawn(send_copy(self.client.clone(), node, attempt, self.replica.to_copy()));
        }
        for handoff in handoffs {
            if outbox.send(handoff).await.is_err() {
                warn!("the outbox stopped");
            }
        }
        if !batch.is_empty() && outbox.send(Handoff::Batch(batch)).await.is_err() {
            warn!("the outbox stopped");
        }
        let live = i64::try_from(self.replica.registry().live_calls()).unwrap_or(i64::MAX);
        self.metrics.live_calls.store(live, Ordering::Relaxed);
        self.metrics.cluster_members.store(self.replica.members().count() as i64, Ordering::Relaxed);
    }
}
