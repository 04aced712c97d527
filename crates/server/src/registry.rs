//! The call registry: the one owner of every live call, session and presence fact.
//!
//! It is a pure state machine in the sans-IO style: the hub feeds it inputs (a session opened or
//! closed, a call request, a timer firing), each with `now` in Unix milliseconds, and drains what
//! it decided with [`CallRegistry::poll_output`]: frames for sessions, records to persist,
//! sessions to close. [`CallRegistry::poll_timeout`] says when it next needs
//! [`CallRegistry::handle_timeout`]. It never reads a clock, touches a socket or a database, so
//! every call flow (busy, ring timeout, the cancel-versus-accept race, reconnect grace) is a plain
//! unit test on virtual time.
//!
//! Invariants:
//! - A user is `ringing` or `joined` in a live call only while that call is in `calls`; a user is
//!   joined in at most one live call.
//! - A call is live while somebody rings or at least one person is joined and it has not ended by
//!   the rule of PROTOCOL.md: fewer than two joined and nobody ringing, or nobody joined.
//! - Every state change of a person that ends their part emits exactly one record for them (a
//!   person who joins again later gets their record rewritten when that part ends).
//! - Requests are handled one at a time, so of two racing requests (cancel and accept) exactly one
//!   wins and the other sees `invalid_state`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use hark_protocol::{
    CallId, CallRecord, CallResult, CallSummary, Direction, EndReason, ErrorCode, HandledAction, KickReason, Media, OkBody,
    PresenceStatus, ServerMessage, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A session, as the hub numbers them.
pub type SessionId = u64;

/// Most users one session may follow.
pub const MAX_SUBSCRIPTIONS: usize = 2_000;

/// Most calls one `calls.active` answer lists (the newest): each summary can carry 4 KiB of
/// `user_data`, and no answer may pass 1 MiB.
pub const MAX_ACTIVE_CALLS_LISTED: usize = 20;

/// How long an ended call is remembered, so a late request about it is told `invalid_state`
/// rather than `not_found`.
const ENDED_CALL_MEMORY_MS: i64 = 120_000;

/// Tunables of the registry, from the server's configuration (a cluster's copies carry the
/// settings they started with, and a node configured otherwise refuses to join).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// Most people in one call, caller included.
    pub max_participants: usize,
    /// Ring timeout when the invite names none, in seconds.
    pub default_ring_timeout_s: u32,
    /// How long a joined session may be away before it counts as left.
    pub reconnect_grace_ms: i64,
    /// Service accounts (the echo test service): never busy, and each of their sessions may be
    /// in a different call, so one account can serve many callers at once.
    pub service_accounts: HashSet<UserId>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            max_participants: 9,
            default_ring_timeout_s: 30,
            reconnect_grace_ms: 20_000,
            service_accounts: HashSet::new(),
        }
    }
}

/// What sessions and the account watch ask of the registry, as data. A single server's hub
/// applies it as it comes; a cluster's nodes put it in their log ([`crate::replica::Item`]) and
/// apply it in log order. One type for both, so the two paths cannot drift apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum RegistryInput {
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
    /// An operator removed the account: its sessions close and it leaves its calls.
    AccountRemoved {
        /// Whose.
        user: UserId,
        /// The removal's number among the database's account events. Every node of a cluster
        /// reads each removal from the database and publishes it; the copies act on the first
        /// and skip the others by this number. A single server ignores it.
        event: i64,
    },
}

/// A call request from a session, already checked for shape and for unknown users by the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallRequest {
    /// `call.invite`; `to` holds existing users.
    Invite { to: Vec<UserId>, media: Media, timeout_s: Option<u32>, user_data: Option<String>, connect_early: bool },
    /// `call.cancel`.
    Cancel { call_id: CallId },
    /// `call.accept`.
    Accept { call_id: CallId },
    /// `call.reject`.
    Reject { call_id: CallId },
    /// `call.hangup`; `gave_up` when the client left because its media could not be recovered.
    Hangup { call_id: CallId, gave_up: bool },
    /// `call.invite_more`; `to` holds existing users.
    InviteMore { call_id: CallId, to: Vec<UserId> },
    /// `call.join`.
    Join { call_id: CallId },
    /// `call.media`.
    Media { call_id: CallId, media: Media },
    /// `signal`; the payload is already checked to be an object within size.
    Signal { call_id: CallId, to: UserId, to_device: Option<String>, payload: Value },
    /// `calls.active`.
    Active,
}

impl CallRequest {
    /// The call this request is about, if any (for logs).
    pub fn call_id(&self) -> Option<&str> {
        match self {
            CallRequest::Cancel { call_id }
            | CallRequest::Accept { call_id }
            | CallRequest::Reject { call_id }
            | CallRequest::Hangup { call_id, .. }
            | CallRequest::InviteMore { call_id, .. }
            | CallRequest::Join { call_id }
            | CallRequest::Media { call_id, .. }
            | CallRequest::Signal { call_id, .. } => Some(call_id),
            CallRequest::Invite { .. } | CallRequest::Active => None,
        }
    }
}

/// What the registry decided, for the hub to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame to a session (dropped if the session is away).
    Send(SessionId, ServerMessage),
    /// Persist a record for one person (upsert by call id and user).
    Record { user: UserId, record: CallRecord },
    /// Close a session, after telling it why with `kicked`.
    Close { session: SessionId, reason: KickReason },
}

/// A person's state in one call (PROTOCOL.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum PartState {
    Ringing { expires_at: i64 },
    Joined { session: SessionId },
    Declined,
    Busy,
    NoAnswer,
    Cancelled,
    Left,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Participant {
    user: UserId,
    state: PartState,
    /// When this person was first connected in this call.
    connected_at: Option<i64>,
    /// Order of joining, for deciding who offers to whom.
    join_seq: u64,
    /// Whether the record for this person's latest part has been written.
    recorded: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    id: CallId,
    media: Media,
    caller: UserId,
    started_at: i64,
    connected_at: Option<i64>,
    user_data: Option<String>,
    /// The caller first, then invitees in invitation order.
    participants: Vec<Participant>,
    next_join_seq: u64,
    ring_timeout_ms: i64,
    /// Placed with `connect_early`: devices still ringing and the people joined may signal each
    /// other, named by device (PROTOCOL.md section 7).
    connect_early: bool,
}

/// Why a call is being checked for its end: the reason it ends with if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Reject,
    Busy,
    Timeout,
    Hangup,
    /// The person's client gave the call up: no media for too long.
    GaveUp,
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Timer {
    Ring { call: CallId, user: UserId },
    Grace { session: SessionId },
    ForgetEnded { call: CallId },
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionEntry {
    user: UserId,
    device: String,
    /// Set while the socket is gone but the session is kept for the reconnect grace.
    away_until: Option<i64>,
    /// Users this session follows.
    subscriptions: Vec<UserId>,
}

/// See the module documentation.
///
/// It serializes (without its settings and pending outputs) so that a server joining a cluster
/// can start from another's copy: see [`crate::replica`].
#[derive(Debug, Serialize, Deserialize)]
pub struct CallRegistry {
    #[serde(skip)]
    settings: RegistrySettings,
    sessions: HashMap<SessionId, SessionEntry>,
    /// Sessions of each user (connected and away).
    user_sessions: HashMap<UserId, Vec<SessionId>>,
    /// Live calls each user is ringing or joined in.
    user_calls: HashMap<UserId, Vec<CallId>>,
    /// Sessions following each user's presence.
    watchers: HashMap<UserId, BTreeSet<SessionId>>,
    calls: HashMap<CallId, Call>,
    /// Ended calls, by the people who were in them, for `invalid_state` answers.
    ended: HashMap<CallId, Vec<UserId>>,
    timers: BTreeSet<(i64, Timer)>,
    call_id_prefix: u32,
    next_call: u64,
    #[serde(skip)]
    outputs: VecDeque<Output>,
}

impl CallRegistry {
    /// A registry whose call ids start with `call_id_prefix` (random per server start, so ids
    /// do not repeat across restarts).
    pub fn new(settings: RegistrySettings, call_id_prefix: u32) -> Self {
        CallRegistry {
            settings,
            sessions: HashMap::new(),
            user_sessions: HashMap::new(),
            user_calls: HashMap::new(),
            watchers: HashMap::new(),
            calls: HashMap::new(),
            ended: HashMap::new(),
            timers: BTreeSet::new(),
            call_id_prefix,
            next_call: 0,
            outputs: VecDeque::new(),
        }
    }

    /// The next thing to carry out, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due (Unix ms).
    pub fn poll_timeout(&self) -> Option<i64> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Number of live calls.
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// Puts the settings back after the registry was read from a copy (they are not copied:
    /// each server has its own configuration).
    pub fn set_settings(&mut self, settings: RegistrySettings) {
        self.settings = settings;
    }

    /// `user`'s sessions, connected or away.
    pub fn sessions_of(&self, user: &str) -> &[SessionId] {
        self.user_sessions.get(user).map_or(&[], Vec::as_slice)
    }

    /// Every session it knows, connected or away, in order.
    pub fn session_ids(&self) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `user` has a connected session.
    pub fn is_online(&self, user: &str) -> bool {
        self.user_sessions
            .get(user)
            .is_some_and(|ids| ids.iter().any(|id| self.sessions[id].away_until.is_none()))
    }

    /// A session said `hello`. If the same user and device has a session still here (away within
    /// its grace, or a socket not yet noticed dead), the new one takes over its calls and the old
    /// one is closed. Returns the calls this device is joined in, for `welcome.joined_calls`;
    /// invitations still ringing for the user follow as `call.incoming` outputs.
    pub fn open_session(&mut self, session: SessionId, user: &str, device: &str) -> Vec<CallSummary> {
        let was_online = self.is_online(user);
        let previous: Vec<SessionId> = self
            .user_sessions
            .get(user)
            .into_iter()
            .flatten()
            .copied()
            .filter(|id| self.sessions[id].device == device)
            .collect();
        self.sessions.insert(
            session,
            SessionEntry { user: user.to_owned(), device: device.to_owned(), away_until: None, subscriptions: Vec::new() },
        );
        self.user_sessions.entry(user.to_owned()).or_default().push(session);

        let mut joined_calls = Vec::new();
        for old in previous {
            for call_id in self.user_calls.get(user).cloned().unwrap_or_default() {
                let call = self.calls.get_mut(&call_id).expect("user_calls holds live calls");
                if let Some(p) = call.participants.iter_mut().find(|p| p.state == PartState::Joined { session: old }) {
                    p.state = PartState::Joined { session };
                    joined_calls.push(summary(call));
                }
            }
            let entry = self.sessions.get(&old).expect("listed session exists");
            if let Some(until) = entry.away_until {
                self.timers.remove(&(until, Timer::Grace { session: old }));
            } else {
                self.outputs.push_back(Output::Close { session: old, reason: KickReason::Replaced });
            }
            self.forget_session(old);
        }

        // Invitations still ringing are delivered again at sign-in.
        for call_id in self.user_calls.get(user).cloned().unwrap_or_default() {
            let call = &self.calls[&call_id];
            if let Some(PartState::Ringing { expires_at }) = call.part(user).map(|p| p.state) {
                self.outputs.push_back(Output::Send(session, incoming(call, expires_at)));
            }
        }
        if !was_online {
            self.announce_presence(user, PresenceStatus::Online);
        }
        joined_calls
    }

    /// A session's socket is gone. A session joined in a call is kept for the reconnect grace;
    /// any other is forgotten at once.
    pub fn close_session(&mut self, now: i64, session: SessionId) {
        let Some(entry) = self.sessions.get(&session) else { return };
        if entry.away_until.is_some() {
            return;
        }
        let user = entry.user.clone();
        if self.joined_call_of_session(&user, session).is_some() {
            let until = now + self.settings.reconnect_grace_ms;
            self.sessions.get_mut(&session).expect("checked above").away_until = Some(until);
            self.timers.insert((until, Timer::Grace { session }));
        } else {
            self.forget_session(session);
        }
        if !self.is_online(&user) {
            self.announce_presence(&user, PresenceStatus::Offline);
        }
    }

    /// An operator removed `user`'s account. It cannot come back, so nothing waits for it: every
    /// invitation ringing for it is declined, it leaves every call it is joined in (a caller
    /// before anyone accepted cancels), each of its sessions is closed with
    /// `kicked {reason:"account_removed"}` and forgotten at once (no reconnect grace), and whoever
    /// follows it sees it `unregistered`.
    pub fn remove_account(&mut self, now: i64, user: &str) {
        for call_id in self.user_calls.get(user).cloned().unwrap_or_default() {
            let Some(state) = self.calls.get(&call_id).and_then(|call| call.part(user)).map(|p| p.state) else { continue };
            match state {
                PartState::Ringing { expires_at } => {
                    self.timers.remove(&(expires_at, Timer::Ring { call: call_id.clone(), user: user.to_owned() }));
                    self.end_part(now, &call_id, user, PartState::Declined, None);
                    let rejected = ServerMessage::CallRejected { call_id: call_id.clone(), user: user.to_owned() };
                    let recipients = self.joined_sessions(&call_id);
                    self.send_all(&recipients, &rejected);
                    self.check_end(now, &call_id, Cause::Reject, None);
                }
                PartState::Joined { .. } => self.leave(now, &call_id, user, Cause::Hangup, None),
                _ => {}
            }
        }
        for session in self.user_sessions.get(user).cloned().unwrap_or_default() {
            match self.sessions.get(&session).and_then(|entry| entry.away_until) {
                Some(until) => {
                    self.timers.remove(&(until, Timer::Grace { session }));
                }
                None => self.outputs.push_back(Output::Close { session, reason: KickReason::AccountRemoved }),
            }
            self.forget_session(session);
        }
        self.announce_presence(user, PresenceStatus::Unregistered);
    }

    /// Ends every live call (server shutdown) so that each person's record is written.
    pub fn end_all(&mut self, now: i64) {
        let mut ids: Vec<CallId> = self.calls.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.end(now, &id, EndReason::Failed, None);
        }
    }

    /// Follows the presence of `users` for `session`, up to [`MAX_SUBSCRIPTIONS`] users a session
    /// (more are ignored: a contact list is far smaller, and the registry's memory stays bounded).
    pub fn subscribe(&mut self, session: SessionId, users: &[UserId]) {
        let Some(entry) = self.sessions.get_mut(&session) else { return };
        for user in users {
            if entry.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                break;
            }
            if self.watchers.entry(user.clone()).or_default().insert(session) {
                entry.subscriptions.push(user.clone());
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: i64) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let (_, timer) = self.timers.pop_first().expect("first exists");
            match timer {
                Timer::Ring { call, user } => self.ring_expired(now, &call, &user),
                Timer::Grace { session } => self.grace_expired(now, session),
                Timer::ForgetEnded { call } => {
                    self.ended.remove(&call);
                }
            }
        }
    }

    /// Handles one call request from `session`; the answer (`ok` or `error` with `re`) and every
    /// event it causes come out of [`Self::poll_output`].
    pub fn handle_request(&mut self, now: i64, session: SessionId, re: Option<String>, request: CallRequest) {
        let Some(user) = self.sessions.get(&session).map(|s| s.user.clone()) else { return };
        let result = match request {
            CallRequest::Invite { to, media, timeout_s, user_data, connect_early } => {
                self.invite(now, session, &user, re.clone(), to, media, timeout_s, user_data, connect_early)
            }
            CallRequest::Cancel { call_id } => self.cancel(now, session, &user, re.clone(), &call_id),
            CallRequest::Accept { call_id } => self.accept(now, session, &user, re.clone(), &call_id, false),
            CallRequest::Join { call_id } => self.accept(now, session, &user, re.clone(), &call_id, true),
            CallRequest::Reject { call_id } => self.reject(now, session, &user, re.clone(), &call_id),
            CallRequest::Hangup { call_id, gave_up } => self.hangup(now, session, &user, re.clone(), &call_id, gave_up),
            CallRequest::InviteMore { call_id, to } => self.invite_more(now, session, &user, re.clone(), &call_id, to),
            CallRequest::Media { call_id, media } => self.change_media(session, &user, re.clone(), &call_id, media),
            CallRequest::Signal { call_id, to, to_device, payload } => {
                self.signal(session, &user, re.clone(), &call_id, &to, to_device.as_deref(), payload)
            }
            CallRequest::Active => {
                let calls = self.joinable_calls(&user);
                self.reply(session, re.clone(), OkBody { calls: Some(calls), ..OkBody::default() });
                Ok(())
            }
        };
        if let Err((code, message)) = result {
            self.outputs.push_back(Output::Send(session, ServerMessage::error(re, code, message)));
        }
    }

    // ---- requests ----

    #[allow(clippy::too_many_arguments)]
    fn invite(
        &mut self,
        now: i64,
        session: SessionId,
        user: &str,
        re: Option<String>,
        to: Vec<UserId>,
        media: Media,
        timeout_s: Option<u32>,
        user_data: Option<String>,
        connect_early: bool,
    ) -> Result<(), Refusal> {
        let to = dedup(to);
        if to.is_empty() {
            return refuse(ErrorCode::BadRequest, "`to` names nobody");
        }
        if to.iter().any(|u| u == user) {
            return refuse(ErrorCode::BadRequest, "you cannot call yourself");
        }
        let timeout_s = timeout_s.unwrap_or(self.settings.default_ring_timeout_s);
        if !hark_protocol::RING_TIMEOUT_RANGE_S.contains(&timeout_s) {
            return refuse(ErrorCode::BadRequest, "timeout_s must be 5 to 120");
        }
        if 1 + to.len() > self.settings.max_participants {
            return refuse(
                ErrorCode::TooManyParticipants,
                format!("a call holds at most {} people", self.settings.max_participants),
            );
        }
        if self.joined_call_of_session_user(user, session).is_some() {
            return refuse(ErrorCode::InvalidState, "you are already in a call");
        }

        self.next_call += 1;
        let call_id = format!("c_{:08x}{:x}", self.call_id_prefix, self.next_call);
        let mut call = Call {
            id: call_id.clone(),
            media,
            caller: user.to_owned(),
            started_at: now,
            connected_at: None,
            user_data,
            participants: vec![Participant {
                user: user.to_owned(),
                state: PartState::Joined { session },
                connected_at: None,
                join_seq: 0,
                recorded: false,
            }],
            next_join_seq: 1,
            ring_timeout_ms: i64::from(timeout_s) * 1000,
            connect_early,
        };
        for invitee in &to {
            call.participants.push(Participant {
                user: invitee.clone(),
                state: PartState::Busy,
                connected_at: None,
                join_seq: 0,
                recorded: false,
            });
        }
        self.user_calls.entry(user.to_owned()).or_default().push(call_id.clone());
        self.calls.insert(call_id.clone(), call);
        self.reply(session, re, OkBody { call_id: Some(call_id.clone()), ..OkBody::default() });
        self.ring(now, &call_id, &to);
        self.check_end(now, &call_id, Cause::Busy, None);
        Ok(())
    }

    fn cancel(&mut self, now: i64, session: SessionId, user: &str, re: Option<String>, call_id: &str) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        if call.caller != user {
            return refuse(ErrorCode::Forbidden, "only the caller can cancel");
        }
        if call.connected_at.is_some() {
            return refuse(ErrorCode::InvalidState, "the call was already accepted");
        }
        self.reply(session, re, OkBody::default());
        self.end(now, call_id, EndReason::Cancelled, Some(session));
        Ok(())
    }

    /// `call.accept` (only while ringing) and `call.join` (only after declining or missing a call
    /// that is still connected) have the same effect: the session joins.
    fn accept(
        &mut self,
        now: i64,
        session: SessionId,
        user: &str,
        re: Option<String>,
        call_id: &str,
        join: bool,
    ) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        let part = invitee_part(call, user)?;
        match (join, part.state) {
            (false, PartState::Ringing { .. }) => {}
            (false, _) => return refuse(ErrorCode::InvalidState, "this invitation is no longer ringing"),
            (true, PartState::Ringing { .. }) => return refuse(ErrorCode::InvalidState, "the call is ringing: accept it"),
            (true, PartState::Joined { .. }) => return refuse(ErrorCode::InvalidState, "you are already in this call"),
            (true, _) if call.connected_at.is_none() => return refuse(ErrorCode::InvalidState, "the call is not connected"),
            (true, _) => {
                if call.active_count() >= self.settings.max_participants {
                    return refuse(ErrorCode::TooManyParticipants, "the call is full");
                }
            }
        }
        if let Some(other) = self.joined_call_of_session_user(user, session) {
            if other != call_id {
                return refuse(ErrorCode::InvalidState, "you are already in another call");
            }
        }

        let call = self.calls.get_mut(call_id).expect("found above");
        if let PartState::Ringing { expires_at } = call.part(user).expect("checked").state {
            self.timers.remove(&(expires_at, Timer::Ring { call: call_id.to_owned(), user: user.to_owned() }));
        }
        let mut joined: Vec<(u64, UserId)> = call
            .participants
            .iter()
            .filter(|p| matches!(p.state, PartState::Joined { .. }))
            .map(|p| (p.join_seq, p.user.clone()))
            .collect();
        joined.sort();
        if call.connected_at.is_none() {
            call.connected_at = Some(now);
            let caller = call.caller.clone();
            call.part_mut(&caller).expect("caller is a participant").connected_at = Some(now);
        }
        let seq = call.next_join_seq;
        call.next_join_seq += 1;
        let part = call.part_mut(user).expect("checked");
        part.state = PartState::Joined { session };
        part.join_seq = seq;
        part.recorded = false;
        // A record covers a person's latest part: joining again starts a new one.
        part.connected_at = Some(now);
        if join {
            self.user_calls.entry(user.to_owned()).or_default().push(call_id.to_owned());
        }

        self.reply(session, re, OkBody { joined: Some(joined.into_iter().map(|(_, u)| u).collect()), ..OkBody::default() });
        // In a call that connects early, the people joined keep the connection of the device
        // that answered and drop the others'.
        let device = self.early_device(call_id, session);
        let accepted = ServerMessage::CallAccepted { call_id: call_id.to_owned(), user: user.to_owned(), device };
        let recipients = self.active_sessions(call_id, Some(user));
        self.send_all(&recipients, &accepted);
        if !join {
            self.tell_other_sessions(user, session, call_id, HandledAction::Accepted);
        }
        Ok(())
    }

    fn reject(&mut self, now: i64, session: SessionId, user: &str, re: Option<String>, call_id: &str) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        let part = invitee_part(call, user)?;
        let PartState::Ringing { expires_at } = part.state else {
            return refuse(ErrorCode::InvalidState, "this invitation is no longer ringing");
        };
        self.timers.remove(&(expires_at, Timer::Ring { call: call_id.to_owned(), user: user.to_owned() }));
        self.reply(session, re, OkBody::default());
        self.end_part(now, call_id, user, PartState::Declined, None);
        let rejected = ServerMessage::CallRejected { call_id: call_id.to_owned(), user: user.to_owned() };
        let recipients = self.joined_sessions(call_id);
        self.send_all(&recipients, &rejected);
        self.tell_other_sessions(user, session, call_id, HandledAction::Rejected);
        self.check_end(now, call_id, Cause::Reject, Some(session));
        Ok(())
    }

    fn hangup(&mut self, now: i64, session: SessionId, user: &str, re: Option<String>, call_id: &str, gave_up: bool) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        let part = call.part(user).ok_or((ErrorCode::Forbidden, "you are not in this call".into()))?;
        match part.state {
            // The caller's hangup before anyone accepted is a cancel.
            PartState::Joined { .. } if call.caller == user && call.connected_at.is_none() => {
                self.cancel(now, session, user, re, call_id)
            }
            // An invitee hanging up a ringing call declines it.
            PartState::Ringing { .. } => self.reject(now, session, user, re, call_id),
            // Only the device in the call hangs it up: another device of the same person would
            // leave the joined one in a call nobody else is in any more.
            PartState::Joined { session: joined } if joined != session => {
                refuse(ErrorCode::Forbidden, "this session is not the one in the call")
            }
            PartState::Joined { .. } => {
                let duration_s = part.connected_at.map(|at| whole_seconds(now - at));
                self.reply(session, re, OkBody { duration_s, ..OkBody::default() });
                self.leave(now, call_id, user, if gave_up { Cause::GaveUp } else { Cause::Hangup }, Some(session));
                Ok(())
            }
            _ => refuse(ErrorCode::InvalidState, "you are not joined in this call"),
        }
    }

    fn invite_more(
        &mut self,
        now: i64,
        session: SessionId,
        user: &str,
        re: Option<String>,
        call_id: &str,
        to: Vec<UserId>,
    ) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        let Some(PartState::Joined { .. }) = call.part(user).map(|p| p.state) else {
            return refuse(ErrorCode::Forbidden, "only people joined in the call can invite more");
        };
        let to: Vec<UserId> = dedup(to).into_iter().filter(|u| !call.part(u).is_some_and(|p| p.is_active())).collect();
        if to.is_empty() {
            return refuse(ErrorCode::BadRequest, "everyone named is already in the call");
        }
        if call.active_count() + to.len() > self.settings.max_participants {
            return refuse(
                ErrorCode::TooManyParticipants,
                format!("a call holds at most {} people", self.settings.max_participants),
            );
        }
        let call = self.calls.get_mut(call_id).expect("found above");
        for invitee in &to {
            match call.part_mut(invitee) {
                Some(p) => {
                    p.state = PartState::Busy;
                    p.recorded = false;
                }
                None => call.participants.push(Participant {
                    user: invitee.clone(),
                    state: PartState::Busy,
                    connected_at: None,
                    join_seq: 0,
                    recorded: false,
                }),
            }
        }
        // Everyone already in the call hears who was invited; then the new people ring.
        let invited = ServerMessage::CallInvited { call_id: call_id.to_owned(), users: to.clone() };
        let recipients = self.active_sessions(call_id, None);
        self.reply(session, re, OkBody::default());
        self.send_all(&recipients, &invited);
        self.ring(now, call_id, &to);
        Ok(())
    }

    fn change_media(
        &mut self,
        session: SessionId,
        user: &str,
        re: Option<String>,
        call_id: &str,
        media: Media,
    ) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        if !matches!(call.part(user).map(|p| p.state), Some(PartState::Joined { .. })) {
            return refuse(ErrorCode::Forbidden, "only people joined in the call can change its media");
        }
        if media != Media::Audio {
            return refuse(ErrorCode::BadRequest, "a call can only go down to audio");
        }
        let changed = call.media != Media::Audio;
        self.calls.get_mut(call_id).expect("found above").media = Media::Audio;
        self.reply(session, re, OkBody::default());
        if changed {
            let message = ServerMessage::CallMediaChanged { call_id: call_id.to_owned(), media, by: user.to_owned() };
            let recipients = self.active_sessions(call_id, None);
            self.send_all(&recipients, &message);
        }
        Ok(())
    }

    /// Relays a `signal`. Joined sessions signal each other by user; in a call placed with
    /// `connect_early`, a device still ringing may also signal the people joined, and they may
    /// answer that device by name (`to_device`), so the connection is up before the answer.
    #[allow(clippy::too_many_arguments)]
    fn signal(
        &mut self,
        session: SessionId,
        user: &str,
        re: Option<String>,
        call_id: &str,
        to: &str,
        to_device: Option<&str>,
        payload: Value,
    ) -> Result<(), Refusal> {
        let call = self.find_call(user, call_id)?;
        let sender_state = call.part(user).map(|p| p.state);
        let sender_joined = sender_state == Some(PartState::Joined { session });
        // A ringing person rings on every session they have, so any of them may signal.
        let sender_ringing = call.connect_early && matches!(sender_state, Some(PartState::Ringing { .. }));
        if !sender_joined && !sender_ringing {
            return refuse(ErrorCode::Forbidden, "this session is not joined in that call");
        }
        if to == user {
            return refuse(ErrorCode::BadRequest, "a signal goes to another person");
        }
        let target = match (call.part(to).map(|p| p.state), to_device) {
            (Some(PartState::Joined { session: target }), None) => target,
            (Some(PartState::Joined { session: target }), Some(device)) if self.sessions.get(&target).is_some_and(|s| s.device == device) => target,
            // Only the people joined reach a device that still rings.
            (Some(PartState::Ringing { .. }), Some(device)) if sender_joined && call.connect_early => {
                match self.connected_sessions(to).into_iter().find(|s| self.sessions[s].device == device) {
                    Some(target) => target,
                    None => return refuse(ErrorCode::InvalidState, format!("no device '{device}' of '{to}' rings in that call")),
                }
            }
            _ => return refuse(ErrorCode::InvalidState, format!("'{to}' is not joined in that call")),
        };
        if self.sessions.get(&target).is_none_or(|s| s.away_until.is_some()) {
            return refuse(ErrorCode::InvalidState, format!("'{to}' is reconnecting; signals are not queued"));
        }
        let from_device = self.early_device(call_id, session);
        let message = ServerMessage::Signal { call_id: call_id.to_owned(), from: user.to_owned(), from_device, payload };
        self.outputs.push_back(Output::Send(target, message));
        if re.is_some() {
            self.reply(session, re, OkBody::default());
        }
        Ok(())
    }

    // ---- timers ----

    fn ring_expired(&mut self, now: i64, call_id: &str, user: &str) {
        let Some(call) = self.calls.get(call_id) else { return };
        if !matches!(call.part(user).map(|p| p.state), Some(PartState::Ringing { .. })) {
            return;
        }
        self.end_part(now, call_id, user, PartState::NoAnswer, None);
        let timeout = ServerMessage::CallTimeout { call_id: call_id.to_owned() };
        let sessions = self.connected_sessions(user);
        self.send_all(&sessions, &timeout);
        let no_answer = ServerMessage::CallNoAnswer { call_id: call_id.to_owned(), user: user.to_owned() };
        let recipients = self.joined_sessions(call_id);
        self.send_all(&recipients, &no_answer);
        self.check_end(now, call_id, Cause::Timeout, None);
    }

    fn grace_expired(&mut self, now: i64, session: SessionId) {
        let Some(entry) = self.sessions.get(&session) else { return };
        let user = entry.user.clone();
        if let Some(call_id) = self.joined_call_of_session(&user, session) {
            self.leave(now, &call_id, &user, Cause::Dropped, None);
        }
        self.forget_session(session);
    }

    // ---- shared steps ----

    /// Rings `to` in a call: busy people are marked busy (and the call told), the rest get
    /// `call.incoming` on every session and a ring timer.
    fn ring(&mut self, now: i64, call_id: &str, to: &[UserId]) {
        let mut rung = Vec::new();
        for invitee in to {
            if self.is_busy(invitee) {
                self.end_part(now, call_id, invitee, PartState::Busy, None);
                let busy = ServerMessage::CallBusy { call_id: call_id.to_owned(), user: invitee.clone() };
                let recipients = self.joined_sessions(call_id);
                self.send_all(&recipients, &busy);
                continue;
            }
            let call = self.calls.get_mut(call_id).expect("ringing a live call");
            let expires_at = now + call.ring_timeout_ms;
            call.part_mut(invitee).expect("added before ringing").state = PartState::Ringing { expires_at };
            self.timers.insert((expires_at, Timer::Ring { call: call_id.to_owned(), user: invitee.clone() }));
            self.user_calls.entry(invitee.clone()).or_default().push(call_id.to_owned());
            rung.push(invitee.clone());
        }
        let call = &self.calls[call_id];
        let message = incoming(call, now + call.ring_timeout_ms);
        for invitee in &rung {
            for session in self.connected_sessions(invitee) {
                self.outputs.push_back(Output::Send(session, message.clone()));
            }
        }
    }
}

// ---- endings, lookups and small helpers ----

impl CallRegistry {
    /// Ends one person's part: sets their final state, drops the call from their live calls and
    /// emits their record.
    fn end_part(&mut self, now: i64, call_id: &str, user: &str, state: PartState, part_end: Option<EndReason>) {
        let call = self.calls.get_mut(call_id).expect("ending a part of a live call");
        call.part_mut(user).expect("a participant").state = state;
        let record = record_for(call, user, now, None, part_end);
        call.part_mut(user).expect("a participant").recorded = true;
        self.drop_user_call(user, call_id);
        self.outputs.push_back(Output::Record { user: user.to_owned(), record });
    }

    /// A joined person leaves (hangup or dropped connection): the rest are told, and the call ends
    /// if too few are left.
    fn leave(&mut self, now: i64, call_id: &str, user: &str, cause: Cause, requester: Option<SessionId>) {
        let part_end = match cause {
            Cause::Dropped | Cause::GaveUp => EndReason::Failed,
            _ => EndReason::Hangup,
        };
        self.end_part(now, call_id, user, PartState::Left, Some(part_end));
        let left = ServerMessage::CallLeft { call_id: call_id.to_owned(), user: user.to_owned() };
        let recipients = self.joined_sessions(call_id);
        self.send_all(&recipients, &left);
        self.check_end(now, call_id, cause, requester);
    }

    /// Ends the call if fewer than two are joined and nobody rings, or nobody is joined.
    fn check_end(&mut self, now: i64, call_id: &str, cause: Cause, requester: Option<SessionId>) {
        let call = &self.calls[call_id];
        let joined = call.participants.iter().filter(|p| matches!(p.state, PartState::Joined { .. })).count();
        let ringing = call.participants.iter().filter(|p| matches!(p.state, PartState::Ringing { .. })).count();
        if joined > 0 && (joined >= 2 || ringing > 0) {
            return;
        }
        let reason = match (call.connected_at.is_some(), cause) {
            (_, Cause::Dropped | Cause::GaveUp) => EndReason::Failed,
            (true, _) => EndReason::Hangup,
            (false, Cause::Hangup) => EndReason::Cancelled,
            (false, Cause::Reject) => EndReason::Rejected,
            (false, Cause::Busy) => EndReason::Busy,
            (false, Cause::Timeout) => EndReason::NoAnswer,
        };
        self.end(now, call_id, reason, requester);
    }

    /// Ends a call: whoever still rings stops (told `call.cancelled` when the caller cancelled),
    /// every open part gets its record, and everyone still in it plus the requester get
    /// `call.ended`.
    fn end(&mut self, now: i64, call_id: &str, reason: EndReason, requester: Option<SessionId>) {
        let mut recipients = self.active_sessions(call_id, None);
        if let Some(session) = requester {
            if !recipients.contains(&session) {
                recipients.push(session);
            }
        }
        let mut call = self.calls.remove(call_id).expect("ending a live call");
        let cancelled = ServerMessage::CallCancelled { call_id: call.id.clone(), by: call.caller.clone() };
        for i in 0..call.participants.len() {
            let user = call.participants[i].user.clone();
            match call.participants[i].state {
                PartState::Ringing { expires_at } => {
                    self.timers.remove(&(expires_at, Timer::Ring { call: call.id.clone(), user: user.clone() }));
                    call.participants[i].state = PartState::Cancelled;
                    if reason == EndReason::Cancelled {
                        let sessions = self.connected_sessions(&user);
                        self.send_all(&sessions, &cancelled);
                    }
                }
                PartState::Joined { .. } => call.participants[i].state = PartState::Left,
                _ => {}
            }
            if !call.participants[i].recorded {
                let record = record_for(&call, &user, now, Some(reason), None);
                call.participants[i].recorded = true;
                self.outputs.push_back(Output::Record { user: user.clone(), record });
            }
            self.drop_user_call(&user, call_id);
        }
        let duration_s = call.connected_at.map_or(0, |at| whole_seconds(now - at));
        let ended = ServerMessage::CallEnded { call_id: call.id.clone(), reason, duration_s };
        self.send_all(&recipients, &ended);
        self.ended.insert(call.id.clone(), call.participants.into_iter().map(|p| p.user).collect());
        self.timers.insert((now + ENDED_CALL_MEMORY_MS, Timer::ForgetEnded { call: call.id }));
    }

    fn find_call(&self, user: &str, call_id: &str) -> Result<&Call, Refusal> {
        match self.calls.get(call_id) {
            Some(call) => Ok(call),
            None if self.ended.get(call_id).is_some_and(|people| people.iter().any(|p| p == user)) => {
                refuse(ErrorCode::InvalidState, "the call has ended")
            }
            None => refuse(ErrorCode::NotFound, format!("no call '{call_id}'")),
        }
    }

    fn is_busy(&self, user: &str) -> bool {
        !self.settings.service_accounts.contains(user) && self.user_calls.get(user).is_some_and(|calls| !calls.is_empty())
    }

    /// The call `user` is joined in, as far as `session` is concerned: any session's call for a
    /// person, only this session's for a service account (whose sessions serve separate calls).
    fn joined_call_of_session_user(&self, user: &str, session: SessionId) -> Option<CallId> {
        if self.settings.service_accounts.contains(user) {
            self.joined_call_of_session(user, session)
        } else {
            self.joined_call_of_user(user)
        }
    }

    fn joined_call_of_user(&self, user: &str) -> Option<CallId> {
        self.user_calls.get(user)?.iter().find(|id| self.calls[*id].part(user).is_some_and(|p| p.is_joined())).cloned()
    }

    fn joined_call_of_session(&self, user: &str, session: SessionId) -> Option<CallId> {
        self.user_calls
            .get(user)?
            .iter()
            .find(|id| self.calls[*id].part(user).is_some_and(|p| p.state == PartState::Joined { session }))
            .cloned()
    }

    fn joinable_calls(&self, user: &str) -> Vec<CallSummary> {
        let mut calls: Vec<CallSummary> = self
            .calls
            .values()
            .filter(|call| call.connected_at.is_some() && call.part(user).is_some_and(|p| !p.is_active()))
            .map(summary)
            .collect();
        if calls.len() > MAX_ACTIVE_CALLS_LISTED {
            calls.sort_by_key(|c| std::cmp::Reverse(c.connected_at));
            calls.truncate(MAX_ACTIVE_CALLS_LISTED);
        }
        calls.sort_by(|a, b| a.call_id.cmp(&b.call_id));
        calls
    }

    fn drop_user_call(&mut self, user: &str, call_id: &str) {
        if let Some(calls) = self.user_calls.get_mut(user) {
            calls.retain(|c| c != call_id);
            if calls.is_empty() {
                self.user_calls.remove(user);
            }
        }
    }

    fn forget_session(&mut self, session: SessionId) {
        let Some(entry) = self.sessions.remove(&session) else { return };
        if let Some(ids) = self.user_sessions.get_mut(&entry.user) {
            ids.retain(|id| *id != session);
            if ids.is_empty() {
                self.user_sessions.remove(&entry.user);
            }
        }
        for user in entry.subscriptions {
            if let Some(set) = self.watchers.get_mut(&user) {
                set.remove(&session);
                if set.is_empty() {
                    self.watchers.remove(&user);
                }
            }
        }
    }

    fn announce_presence(&mut self, user: &str, status: PresenceStatus) {
        let Some(watchers) = self.watchers.get(user) else { return };
        let message = ServerMessage::Presence { user: user.to_owned(), status };
        let watchers: Vec<SessionId> = watchers.iter().copied().collect();
        self.send_all(&watchers, &message);
    }

    fn connected_sessions(&self, user: &str) -> Vec<SessionId> {
        self.user_sessions
            .get(user)
            .into_iter()
            .flatten()
            .copied()
            .filter(|id| self.sessions[id].away_until.is_none())
            .collect()
    }

    /// The joined session of every joined person.
    fn joined_sessions(&self, call_id: &str) -> Vec<SessionId> {
        self.calls[call_id]
            .participants
            .iter()
            .filter_map(|p| match p.state {
                PartState::Joined { session } => Some(session),
                _ => None,
            })
            .collect()
    }

    /// Joined sessions plus every session of everyone ringing, but `except`'s.
    fn active_sessions(&self, call_id: &str, except: Option<&str>) -> Vec<SessionId> {
        let mut out = Vec::new();
        for p in &self.calls[call_id].participants {
            if Some(p.user.as_str()) == except {
                continue;
            }
            match p.state {
                PartState::Joined { session } => out.push(session),
                PartState::Ringing { .. } => out.extend(self.connected_sessions(&p.user)),
                _ => {}
            }
        }
        out
    }

    /// The device of `session`, said to the others in a call placed with `connect_early` (their
    /// early connections are per device); `None` in any other call.
    fn early_device(&self, call_id: &str, session: SessionId) -> Option<String> {
        let early = self.calls.get(call_id).is_some_and(|call| call.connect_early);
        early.then(|| self.sessions.get(&session).map(|s| s.device.clone())).flatten()
    }

    fn tell_other_sessions(&mut self, user: &str, session: SessionId, call_id: &str, action: HandledAction) {
        let message = ServerMessage::CallHandledElsewhere { call_id: call_id.to_owned(), action };
        let others: Vec<SessionId> = self.connected_sessions(user).into_iter().filter(|s| *s != session).collect();
        self.send_all(&others, &message);
    }

    fn reply(&mut self, session: SessionId, re: Option<String>, body: OkBody) {
        self.outputs.push_back(Output::Send(session, ServerMessage::Ok { re, body }));
    }

    fn send_all(&mut self, sessions: &[SessionId], message: &ServerMessage) {
        for session in sessions {
            self.outputs.push_back(Output::Send(*session, message.clone()));
        }
    }
}

impl Call {
    fn part(&self, user: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user == user)
    }

    fn part_mut(&mut self, user: &str) -> Option<&mut Participant> {
        self.participants.iter_mut().find(|p| p.user == user)
    }

    /// People ringing or joined.
    fn active_count(&self) -> usize {
        self.participants.iter().filter(|p| p.is_active()).count()
    }
}

impl Participant {
    fn is_joined(&self) -> bool {
        matches!(self.state, PartState::Joined { .. })
    }

    fn is_active(&self) -> bool {
        matches!(self.state, PartState::Joined { .. } | PartState::Ringing { .. })
    }
}

type Refusal = (ErrorCode, String);

/// `user`'s part in `call` as an invitee; only invitees may accept, reject or join.
fn invitee_part<'a>(call: &'a Call, user: &str) -> Result<&'a Participant, Refusal> {
    match call.part(user) {
        Some(part) if user != call.caller => Ok(part),
        _ => refuse(ErrorCode::Forbidden, "you were not invited to this call"),
    }
}

fn refuse<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Refusal> {
    Err((code, message.into()))
}

fn dedup(users: Vec<UserId>) -> Vec<UserId> {
    let mut seen = HashSet::new();
    users.into_iter().filter(|u| seen.insert(u.clone())).collect()
}

fn whole_seconds(ms: i64) -> u64 {
    u64::try_from(ms.max(0) / 1000).unwrap_or(0)
}

fn summary(call: &Call) -> CallSummary {
    let mut joined: Vec<(u64, UserId)> =
        call.participants.iter().filter(|p| p.is_joined()).map(|p| (p.join_seq, p.user.clone())).collect();
    joined.sort();
    CallSummary {
        call_id: call.id.clone(),
        caller: call.caller.clone(),
        invitees: call.participants[1..].iter().map(|p| p.user.clone()).collect(),
        media: call.media,
        joined: joined.into_iter().map(|(_, u)| u).collect(),
        connected_at: call.connected_at,
        user_data: call.user_data.clone(),
    }
}

fn incoming(call: &Call, expires_at: i64) -> ServerMessage {
    ServerMessage::CallIncoming {
        call_id: call.id.clone(),
        from: call.caller.clone(),
        invitees: call.participants[1..].iter().map(|p| p.user.clone()).collect(),
        media: call.media,
        user_data: call.user_data.clone(),
        expires_at,
        connect_early: call.connect_early,
    }
}

/// The record of `user`'s part, ending at `now`. `reason` is the call's end reason when the
/// part ends with the call (it decides the caller's result for a call that never connected);
/// `part_end`, how a connected person's part ended when it ends before the call.
fn record_for(call: &Call, user: &str, now: i64, reason: Option<EndReason>, part_end: Option<EndReason>) -> CallRecord {
    let part = call.part(user).expect("records are for participants");
    let outgoing = user == call.caller;
    let result = if outgoing {
        match (call.connected_at, reason) {
            (Some(_), _) => CallResult::Completed,
            (None, Some(EndReason::Rejected)) => CallResult::Declined,
            (None, Some(EndReason::Busy)) => CallResult::Busy,
            (None, Some(EndReason::NoAnswer)) => CallResult::NoAnswer,
            (None, Some(EndReason::Failed)) => CallResult::Failed,
            (None, _) => CallResult::Cancelled,
        }
    } else if part.connected_at.is_some() {
        CallResult::Completed
    } else {
        match part.state {
            PartState::Declined => CallResult::Declined,
            PartState::Busy => CallResult::Busy,
            _ => CallResult::Missed,
        }
    };
    CallRecord {
        call_id: call.id.clone(),
        caller: call.caller.clone(),
        invitees: call.participants[1..].iter().map(|p| p.user.clone()).collect(),
        media: call.media,
        started_at: call.started_at,
        connected_at: part.connected_at,
        ended_at: now,
        duration_s: part.connected_at.map_or(0, |at| whole_seconds(now - at)),
        direction: if outgoing { Direction::Outgoing } else { Direction::Incoming },
        result,
        end_reason: part.connected_at.and(part_end.or(reason)),
        quality: None,
    }
}

/// Presence from the two facts behind it: a live session (the registry's) and an account (the
/// store's). The one place that decides between online, offline and unregistered.
pub fn presence(online: bool, registered: bool) -> PresenceStatus {
    match (online, registered) {
        (true, _) => PresenceStatus::Online,
        (false, true) => PresenceStatus::Offline,
        (false, false) => PresenceStatus::Unregistered,
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
