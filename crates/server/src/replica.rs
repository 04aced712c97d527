//! One server's copy of a cluster's hub: the same log of hub inputs, applied in the same order,
//! to its own [`CallRegistry`].
//!
//! In a cluster no server decides alone. Each server publishes what its sessions ask for (a
//! session opened or closed, a call request, a subscription) as [`Entry`]s to one ordered log
//! (a JetStream stream, see [`crate::cluster`]), and every server applies every entry, in the
//! log's order, to its copy. The registry is deterministic, so the copies stay equal: of an
//! accept and a cancel on two servers, the one the log holds first wins on every server, and
//! busy, presence and the ring timers are decided the same everywhere. Each server then carries
//! out only its own part: the frames for its own sessions (a session id names its server), and
//! the records of the people it serves, which it writes before it sends their frames, as a
//! single server does: whoever saw `call.ended` finds the record in their history. The records
//! of people no server serves (an invitee who was offline) are written by the writer, the live
//! server with the lowest tag. Records are upserts per person and call, so one written by two
//! servers is still one row.
//!
//! Time is in the log too: each entry carries its publisher's clock, and a copy's `now` is the
//! largest seen, so timers fire at the same point of the log on every server. Liveness is counted
//! in beats, not in that time: every server marks an entry as a beat every [`BEAT_EVERY_MS`] of
//! its own running (an empty one if it has nothing to say), and a server silent while another
//! beat [`DEAD_AFTER_BEATS`] times is dead on every copy at the same entry. (Counting in log time
//! would kill every server at once when the clocks jump, as a test's manual clock does.) A dead
//! server's sessions are closed (those in a call are kept for the reconnect grace, so their
//! people can come back through another server), and the records it alone was to write in the
//! last [`RECORD_REPLAY_MS`] are written again by the writer.
//!
//! This module is pure: no clock, no socket, no NATS; every rule is a unit test.

use std::collections::{BTreeMap, VecDeque};

use hark_protocol::{CallRecord, CallSummary, UserId};
use serde::{Deserialize, Serialize};

use crate::delivery::SessionTag;
use crate::registry::{CallRegistry, Output, RegistryInput, RegistrySettings, SessionId};

/// A server's tag: the top bits of its session ids ([`SessionTag::bits`]).
pub type NodeTag = u32;

/// A server marks an entry as a beat this often (an empty one if it has nothing to say).
pub const BEAT_EVERY_MS: i64 = 1_000;
/// A server that published nothing while another beat this many times is dead: about five
/// seconds.
pub const DEAD_AFTER_BEATS: u32 = 5;
/// How long a copy keeps the records it decided, to write them again if their writer died
/// before it could: well past a death's detection, with room for a writer's retries.
const RECORD_REPLAY_MS: i64 = 30_000;

/// One entry of the log: what one server's sessions asked for, at its clock's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The publishing server.
    pub node: NodeTag,
    /// Its clock, Unix ms.
    pub now: i64,
    /// A beat: [`BEAT_EVERY_MS`] passed since the publisher's last.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub beat: bool,
    /// What happened, in order.
    pub items: Vec<Item>,
}

/// One input of the hub, as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Item {
    /// A session said hello.
    Open {
        /// Which.
        session: SessionId,
        /// Its user.
        user: UserId,
        /// Its device.
        device: String,
    },
    /// A timer is due on the publisher's clock (timers fire on any entry whose time has come;
    /// this one only carries the time).
    Tick,
    /// The publisher is shutting down; its sessions were closed before.
    Leave,
    /// The publisher found no live server and starts the cluster afresh: every copy ends the
    /// calls it had (writing their records) and starts from an empty registry whose call ids
    /// begin with `call_id_prefix`, with the publisher's settings. Always alone in its entry.
    Reset {
        /// The new registry's call id prefix.
        call_id_prefix: u32,
        /// The cluster's settings from now on.
        settings: RegistrySettings,
    },
    /// The publisher has just started and needs a copy: server `from` (one that answered it a
    /// moment ago) sends it the state as it is right after this entry.
    CopyFor {
        /// Who asks (the publisher).
        node: NodeTag,
        /// Who sends.
        from: NodeTag,
        /// Which of the publisher's tries this is (each has its own subject: a late copy of an
        /// earlier try is never taken for this one's).
        attempt: u32,
    },
    /// What a session or the account watch asked of the registry, as a single server's hub
    /// takes it. Untagged here: its own tag (`close`, `request`, ...) sits beside the others.
    #[serde(untagged)]
    Input(RegistryInput),
}

/// What applying one entry asks of this server.
#[derive(Debug, Default)]
pub struct Applied {
    /// Frames and kicks for every server's sessions, in order; each server delivers its own.
    pub deliveries: Vec<Output>,
    /// Records this server is to write.
    pub records: Vec<(UserId, CallRecord)>,
    /// This server's sessions whose opening was applied, with the calls they are joined in.
    pub opened: Vec<(SessionId, Vec<CallSummary>)>,
    /// This server's sessions whose closing was applied.
    pub closed: Vec<SessionId>,
    /// A server to send a copy to, now, and for which of its tries.
    pub copy_for: Option<(NodeTag, u32)>,
    /// Another server reset the log: this server's sessions are gone from the registry and are
    /// to be closed (their clients reconnect).
    pub reset_by_other: bool,
    /// The others counted this server dead (it was silent too long): its sessions are away in
    /// every copy and are to be closed, so their clients reconnect and resync.
    pub declared_dead: bool,
    /// The servers this entry counted dead, this one among them when `declared_dead`.
    pub counted_dead: Vec<NodeTag>,
    /// The log skipped entries (a sequence number missing): this copy can no longer be trusted
    /// to equal the others', and nothing more is applied to it.
    pub log_broken: bool,
}

/// A live server, as a copy sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Member {
    /// Beats each other server published since this one's last entry.
    beats_since: BTreeMap<NodeTag, u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RecentRecord {
    at: i64,
    /// The live servers that were to write it.
    writers: Vec<NodeTag>,
    user: UserId,
    record: CallRecord,
}

/// See the module documentation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Replica {
    registry: CallRegistry,
    /// Live servers.
    members: BTreeMap<NodeTag, Member>,
    /// The log's time: the largest entry time applied.
    now: i64,
    /// Records decided in the last [`RECORD_REPLAY_MS`], with who was to write them.
    recent: VecDeque<RecentRecord>,
    /// The stream sequence of the last entry applied: an entry at or below it is one the reader
    /// delivered again, and one past the next is a gap.
    last_seq: u64,
    /// The last account removal acted on.
    removals_seen: i64,
    /// The cluster's settings: those of the server that reset it last.
    settings: RegistrySettings,
    #[serde(skip)]
    me: NodeTag,
}

/// A copy that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("a cluster copy could not be read: {0}")]
pub struct CopyError(#[from] serde_json::Error);

impl Replica {
    /// An empty copy for server `me`, as after a [`Item::Reset`] with `call_id_prefix`.
    pub fn new(me: NodeTag, settings: RegistrySettings, call_id_prefix: u32) -> Replica {
        Replica {
            registry: CallRegistry::new(settings.clone(), call_id_prefix),
            members: BTreeMap::new(),
            now: 0,
            recent: VecDeque::new(),
            last_seq: 0,
            removals_seen: 0,
            settings,
            me,
        }
    }

    /// This copy, for a server that is joining.
    pub fn to_copy(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a replica always serializes")
    }

    /// A copy another server sent, for server `me`. It runs with the cluster's settings, which
    /// it carries ([`Self::settings`]).
    pub fn from_copy(bytes: &[u8], me: NodeTag) -> Result<Replica, CopyError> {
        let mut replica: Replica = serde_json::from_slice(bytes)?;
        replica.registry.set_settings(replica.settings.clone());
        replica.me = me;
        Ok(replica)
    }

    /// The cluster's settings.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The stream sequence of the last entry applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The registry, for questions that change nothing (who is online).
    pub fn registry(&self) -> &CallRegistry {
        &self.registry
    }

    /// The live servers, lowest tag first.
    pub fn members(&self) -> impl Iterator<Item = NodeTag> + '_ {
        self.members.keys().copied()
    }

    /// The log's time.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Whether this server is the writer: it writes the records no other server's people need,
    /// and fires timers first.
    pub fn is_writer(&self) -> bool {
        self.writer() == Some(self.me)
    }

    /// When the registry next needs time to pass a timer (Unix ms).
    pub fn next_timer(&self) -> Option<i64> {
        self.registry.poll_timeout()
    }

    fn writer(&self) -> Option<NodeTag> {
        self.members.keys().next().copied()
    }

    /// Moves on past `seq`, an entry no server can read (every copy skips it alike).
    pub fn skip(&mut self, seq: u64) -> Applied {
        self.advance(seq).err().unwrap_or_default()
    }

    /// Takes `seq` as the next sequence; `Err` with what to do if it is not.
    fn advance(&mut self, seq: u64) -> Result<(), Applied> {
        if seq <= self.last_seq {
            return Err(Applied::default());
        }
        if self.last_seq != 0 && seq != self.last_seq + 1 {
            return Err(Applied { log_broken: true, ..Applied::default() });
        }
        self.last_seq = seq;
        Ok(())
    }

    /// Applies the log's entry at stream sequence `seq`: the next one, or one already applied
    /// (which changes nothing).
    pub fn apply(&mut self, seq: u64, entry: Entry) -> Applied {
        if let Err(applied) = self.advance(seq) {
            return applied;
        }
        let mut applied = Applied::default();
        if let [Item::Reset { call_id_prefix, settings }] = entry.items.as_slice() {
            // The calls the old state held end first, each person's record written as a single
            // server's shutdown writes them.
            self.registry.end_all(self.now);
            self.collect(self.now, entry.node, &mut applied);
            self.settings = settings.clone();
            self.registry = CallRegistry::new(settings.clone(), *call_id_prefix);
            self.members = BTreeMap::from([(entry.node, Member::default())]);
            self.recent.clear();
            self.removals_seen = 0;
            // Exactly the entry's time: a copy that started with this entry has no other.
            self.now = entry.now;
            applied.reset_by_other = entry.node != self.me;
            return applied;
        }
        self.now = self.now.max(entry.now);
        let now = self.now;
        self.members.insert(entry.node, Member::default());
        if let [Item::CopyFor { node, from, attempt }] = entry.items.as_slice() {
            // Nothing else happens at this entry, so the copy sent is exactly the state after it
            // on every server, and the new server misses no output.
            if *from == self.me {
                applied.copy_for = Some((*node, *attempt));
            }
            return applied;
        }
        for item in entry.items {
            self.apply_item(now, entry.node, item, &mut applied);
        }
        let mut dead = Vec::new();
        if entry.beat {
            for (tag, member) in self.members.iter_mut().filter(|(tag, _)| **tag != entry.node) {
                let beats = member.beats_since.entry(entry.node).or_default();
                *beats += 1;
                if *beats >= DEAD_AFTER_BEATS {
                    dead.push(*tag);
                }
            }
        }
        for tag in dead {
            self.remove_member(now, tag, true, &mut applied);
            if tag == self.me {
                applied.declared_dead = true;
            }
            applied.counted_dead.push(tag);
        }
        if self.registry.poll_timeout().is_some_and(|at| at <= now) {
            self.registry.handle_timeout(now);
        }
        self.collect(now, entry.node, &mut applied);
        applied
    }

    fn apply_item(&mut self, now: i64, node: NodeTag, item: Item, applied: &mut Applied) {
        match item {
            Item::Open { session, user, device } => {
                let joined = self.registry.open_session(session, &user, &device);
                if self.is_mine(session) {
                    applied.opened.push((session, joined));
                }
            }
            Item::Input(RegistryInput::Close { session }) => {
                self.registry.close_session(now, session);
                if self.is_mine(session) {
                    applied.closed.push(session);
                }
            }
            Item::Input(RegistryInput::Request { session, re, request }) => self.registry.handle_request(now, session, re, request),
            Item::Input(RegistryInput::Subscribe { session, users }) => self.registry.subscribe(session, &users),
            Item::Input(RegistryInput::AccountRemoved { user, event }) => {
                if event > self.removals_seen {
                    self.removals_seen = event;
                    self.registry.remove_account(now, &user);
                }
            }
            // A reset is applied only alone in its entry (see `apply`), as its publisher sends it.
            Item::Tick | Item::CopyFor { .. } | Item::Reset { .. } => {}
            Item::Leave => {
                // The leaving server wrote its records before it left: nothing to write again.
                self.remove_member(now, node, false, applied);
                if self.members.is_empty() {
                    // The last server is going: like a single server, it ends the calls and
                    // writes their records.
                    self.registry.end_all(now);
                }
            }
        }
    }

    /// Takes `tag` out of the cluster: its sessions close (with the reconnect grace for those in
    /// a call), and, with `replay` (it died), the records it alone was to write go to the writer.
    fn remove_member(&mut self, now: i64, tag: NodeTag, replay: bool, applied: &mut Applied) {
        self.members.remove(&tag);
        for session in self.registry.session_ids() {
            if SessionTag::of(session).bits() == tag {
                self.registry.close_session(now, session);
            }
        }
        let Some(writer) = self.writer() else { return };
        if !replay {
            for recent in &mut self.recent {
                recent.writers.retain(|w| *w != tag);
            }
            return;
        }
        for recent in self.recent.iter_mut().filter(|r| r.writers.contains(&tag)) {
            recent.writers.retain(|w| *w != tag);
            if recent.writers.is_empty() {
                recent.writers.push(writer);
                if writer == self.me {
                    applied.records.push((recent.user.clone(), recent.record.clone()));
                }
            }
        }
    }

    /// Drains the registry's outputs into `applied`, keeping the records for a while. With no
    /// live server left (the last one left), `node`, the entry's publisher, writes.
    fn collect(&mut self, now: i64, node: NodeTag, applied: &mut Applied) {
        while let Some(output) = self.registry.poll_output() {
            match output {
                Output::Record { user, record } => {
                    let mut writers: Vec<NodeTag> = self
                        .registry
                        .sessions_of(&user)
                        .iter()
                        .map(|s| SessionTag::of(*s).bits())
                        .filter(|tag| self.members.contains_key(tag))
                        .collect();
                    writers.sort_unstable();
                    writers.dedup();
                    if writers.is_empty() {
                        writers.push(self.writer().unwrap_or(node));
                    }
                    if writers.contains(&self.me) {
                        applied.records.push((user.clone(), record.clone()));
                    }
                    self.recent.push_back(RecentRecord { at: now, writers, user, record });
                }
                other => applied.deliveries.push(other),
            }
        }
        while self.recent.front().is_some_and(|r| now - r.at > RECORD_REPLAY_MS) {
            self.recent.pop_front();
        }
    }

    fn is_mine(&self, session: SessionId) -> bool {
        SessionTag::of(session).bits() == self.me
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
