//! The call core: what a Hark client does in a call, as a pure state machine.
//!
//! In the sans-IO style of str0m: the engine feeds it inputs (a user command, a frame from the
//! server, a media event, a timer firing), each with `now` in milliseconds, and drains
//! [`CallCore::poll_output`] for what to do: frames to send, peer connections to open or close,
//! the ringtone to start or stop, events for the application. It never touches a socket, a device
//! or the clock, so every flow is a unit test on virtual time.
//!
//! States follow the reference product (TUICallEngine): `idle`, `calling` (ringing either way,
//! including the moments before the server confirmed an invite or an accept) and `connected`.
//! Which commands are allowed in which state is its API table: `call` and `join` only when idle;
//! `accept` and `reject` only while an incoming call rings; `hangup` while calling or connected;
//! `invite_more` while calling or connected (and joined). A command in the wrong state returns
//! [`CommandError`] and changes nothing.
//!
//! The server is authoritative (PROTOCOL.md): the core mirrors it. Glare (two people calling each
//! other at once) resolves to one call: the server rings one side and finds the other busy; when
//! the core receives an invitation from the very person it is calling, it accepts that invitation
//! and lets its own attempt end quietly.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hark_protocol::{
    CallId, CallQuality, CallSummary, ClientFrame, ClientMessage, EndReason, ErrorCode, HangupReason, Media, OkBody,
    ServerMessage, SignalPayload, UserId,
};

/// How long the core waits for the server to answer a call request before it gives up.
pub const REQUEST_TIMEOUT_MS: i64 = 10_000;

/// The coarse call state of the reference product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// No call.
    Idle,
    /// Placing, ringing (either way) or joining.
    Calling,
    /// In a connected call.
    Connected,
}

/// A user command the core refused, with nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command is not allowed in the current state.
    #[error("`{command}` is not allowed while {state:?}")]
    WrongState {
        /// The command.
        command: &'static str,
        /// The state it was given in.
        state: CallState,
    },
    /// The command's arguments are unusable.
    #[error("{0}")]
    BadArgument(String),
    /// The administrator's policy forbids it.
    #[error(transparent)]
    Forbidden(#[from] crate::policy::Forbidden),
}

/// What the user asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Place a call.
    Call {
        /// Invitees.
        to: Vec<UserId>,
        /// Audio or video.
        media: Media,
        /// Ring timeout in seconds (server default if none).
        timeout_s: Option<u32>,
        /// Opaque data for the invitees.
        user_data: Option<String>,
    },
    /// Join a connected call one was invited to.
    Join {
        /// Which call.
        call_id: CallId,
        /// Its media (from `calls.active`).
        media: Media,
    },
    /// Answer the ringing call.
    Accept,
    /// Answer a ringing video call with audio only: our camera never opens, and the call goes
    /// down to audio for everyone as soon as we are in it.
    AcceptAudioOnly,
    /// Decline the ringing call.
    Reject,
    /// Leave (or cancel, or decline) the current call.
    Hangup,
    /// Leave the connected call because its media could not be recovered: the server hears
    /// `call.hangup {reason:"failed"}` and we end the call `failed`.
    GiveUp,
    /// Invite more people into the current call.
    InviteMore {
        /// Whom.
        to: Vec<UserId>,
    },
    /// Go down to audio.
    AudioOnly,
    /// Turn our camera off or on (any time; the people in a connected call are told).
    Camera {
        /// On or off.
        on: bool,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Call { .. } => "call",
            Command::Join { .. } => "join",
            Command::Accept => "accept",
            Command::AcceptAudioOnly => "accept_audio_only",
            Command::Reject => "reject",
            Command::Hangup => "hangup",
            Command::GiveUp => "give_up",
            Command::InviteMore { .. } => "invite_more",
            Command::AudioOnly => "audio_only",
            Command::Camera { .. } => "camera",
        }
    }
}

/// Why a call did not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum NotConnectedReason {
    /// The caller cancelled (incoming) or we cancelled (outgoing).
    Cancelled,
    /// Declined.
    Rejected,
    /// Busy.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// Answered or declined on another device of ours.
    HandledElsewhere,
    /// The server refused or the connection failed.
    Failed,
}

/// What the core tells the application; the engine adds device and media events of its own.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum CallEvent {
    /// An invitation rings.
    IncomingCall {
        /// Call id.
        call_id: CallId,
        /// Who calls.
        caller: UserId,
        /// Everyone invited.
        invitees: Vec<UserId>,
        /// Audio or video.
        media: Media,
        /// The caller's data.
        user_data: Option<String>,
    },
    /// Our invitation went out (the server gave it an id).
    Dialing {
        /// Call id.
        call_id: CallId,
        /// Whom we call.
        invitees: Vec<UserId>,
    },
    /// The call connected.
    CallBegan {
        /// Call id.
        call_id: CallId,
        /// Audio or video.
        media: Media,
        /// When it connected (Unix ms): the moment the server confirmed it, on the clock the core
        /// is driven by (a call view times from this).
        connected_at: Option<i64>,
    },
    /// A connected call ended.
    CallEnded {
        /// Call id.
        call_id: CallId,
        /// Why.
        reason: EndReason,
        /// Seconds, from the server.
        duration_s: u64,
    },
    /// A call ended before it connected for us.
    NotConnected {
        /// Call id (none if the server never gave one).
        call_id: Option<CallId>,
        /// Why.
        reason: NotConnectedReason,
    },
    /// Someone joined the call.
    UserJoined {
        /// Who.
        user: UserId,
    },
    /// A person's camera went off or on (what they told us; their video stops or resumes).
    RemoteCamera {
        /// Who.
        user: UserId,
        /// On or off.
        on: bool,
    },
    /// Someone left.
    UserLeft {
        /// Who.
        user: UserId,
    },
    /// An invitee declined.
    UserRejected {
        /// Who.
        user: UserId,
    },
    /// An invitee did not answer.
    UserNoResponse {
        /// Who.
        user: UserId,
    },
    /// An invitee was busy.
    UserBusy {
        /// Who.
        user: UserId,
    },
    /// More people were invited.
    UsersInvited {
        /// Who.
        users: Vec<UserId>,
    },
    /// The call went down to audio.
    MediaChanged {
        /// Now.
        media: Media,
    },
    /// A request failed at the server.
    Error {
        /// The protocol code.
        code: ErrorCode,
        /// The server's words.
        message: String,
    },
}

/// What the core decided, for the engine to carry out in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame to the server.
    Send(ClientFrame),
    /// Open a peer connection to `user` (offer first if `offerer`).
    OpenPeer {
        /// Call id.
        call_id: CallId,
        /// The remote person.
        user: UserId,
        /// Whether we send the offer.
        offerer: bool,
        /// Audio or video.
        media: Media,
    },
    /// Hand a remote negotiation message to the peer connection of `user`.
    RemoteSignal {
        /// The remote person.
        user: UserId,
        /// What they sent.
        payload: SignalPayload,
    },
    /// `user` shows our video at most this large now (their `video_size`): send them no more
    /// pixels than that.
    VideoShownBy {
        /// The remote person.
        user: UserId,
        /// Width shown, device pixels.
        width: u32,
        /// Height shown.
        height: u32,
    },
    /// Close the peer connection to `user`.
    ClosePeer {
        /// The remote person.
        user: UserId,
    },
    /// Open a connection to `user` (their `device`, when it still rings) while the call rings,
    /// with no media either way until [`Output::BeginPeer`] (PROTOCOL.md section 7).
    OpenEarlyPeer {
        /// Call id.
        call_id: CallId,
        /// The remote person.
        user: UserId,
        /// Their ringing device; `None` for the caller, who is reached as a joined person.
        device: Option<String>,
        /// Whether we send the offer.
        offerer: bool,
        /// Audio or video.
        media: Media,
    },
    /// Hand a remote negotiation message to the early connection to `user`'s `device`.
    EarlySignal {
        /// The remote person.
        user: UserId,
        /// Their device, as the early connection was opened.
        device: Option<String>,
        /// What they sent.
        payload: SignalPayload,
    },
    /// The call was answered on this early connection: it becomes `user`'s connection and its
    /// media starts.
    BeginPeer {
        /// The remote person.
        user: UserId,
        /// Their device, as the early connection was opened.
        device: Option<String>,
    },
    /// Close an early connection that was not answered.
    CloseEarlyPeer {
        /// The remote person.
        user: UserId,
        /// Their device, as the early connection was opened.
        device: Option<String>,
    },
    /// Start or stop the ringtone.
    Ringtone(RingtoneCommand),
    /// Tell the application.
    Event(CallEvent),
    /// What media the call we are connected in, or are placing, carries now: `Some(Video)` starts
    /// the camera and video to every peer (none yet while our call rings: the camera gives the
    /// caller's preview), `Some(Audio)` (a video call gone down to audio) stops them and
    /// releases the camera, `None` (no call, or one ringing here) stops everything. Said on every
    /// change, after the outputs that made it.
    SetMedia(Option<Media>),
}

/// What the ringtone player should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingtoneCommand {
    /// The incoming-call ringtone.
    Incoming,
    /// The outgoing dial tone.
    Dialing,
    /// Silence.
    Stop,
}

/// The media driver's news, fed back into the core.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The peer connection to `user` produced a negotiation message to send.
    LocalSignal {
        /// The remote person.
        user: UserId,
        /// What to send them.
        payload: SignalPayload,
    },
    /// The early connection to `user`'s `device` produced a negotiation message to send.
    EarlySignal {
        /// The remote person.
        user: UserId,
        /// Their device, as the early connection was opened.
        device: Option<String>,
        /// What to send them.
        payload: SignalPayload,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// We sent `call.invite`; waiting for its `ok`.
    Dialing,
    /// Our invitation rings at the far end.
    RingingOut,
    /// An invitation rings here.
    RingingIn,
    /// We sent `call.accept` or `call.join`; waiting for its `ok`.
    Joining,
    /// Joined, with at least one other person.
    Connected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Invite,
    /// An invite we gave up on (glare): its call is ended quietly when it is named.
    AbandonedInvite,
    Join,
    Hangup,
    Other,
    /// A request whose refusal is no news (a `call.quality` report the server did not keep, a
    /// `ready` to a caller who left): whatever the answer, nothing to tell.
    Quiet,
}

#[derive(Debug, Clone)]
struct Call {
    /// This call's sequence number here.
    seq: u64,
    id: Option<CallId>,
    phase: Phase,
    media: Media,
    caller: UserId,
    invitees: Vec<UserId>,
    /// Other people joined, with whether we offer to them.
    peers: BTreeMap<UserId, bool>,
    /// Connections opened while the call rings, by person and device (`None`: the caller, seen
    /// from a ringing device), with no media until the call is answered on one of them.
    early: BTreeSet<(UserId, Option<String>)>,
    /// `hangup` was asked before the server gave the call an id.
    hangup_asked: bool,
    /// We answered this video call with audio only.
    audio_only_answer: bool,
    /// When it connected here (our clock), for a fallback duration.
    connected_at: Option<i64>,
    /// An incoming call stops ringing here at the server's `expires_at` (plus a little for clock
    /// skew) even if the server's word is lost with a dropped socket.
    ring_until: Option<i64>,
}

/// Slack after an invitation's `expires_at` before the core stops ringing on its own.
const RING_SLACK_MS: i64 = 3_000;

/// See the module documentation.
#[derive(Debug)]
pub struct CallCore {
    me: UserId,
    call: Option<Call>,
    /// Ids of our requests still waiting for an answer: what they were, when they were sent,
    /// and which call (by sequence number) they were about.
    pending: HashMap<String, (Pending, i64, Option<u64>)>,
    /// Sequence numbers of calls here, so a late answer or timeout about an old call cannot
    /// touch a newer one.
    next_seq: u64,
    next_request: u64,
    /// A connected call we hung up, waiting for the server's `call.ended` (with the duration),
    /// and when it connected here, for a duration of our own if the answer never comes.
    ending: Option<(CallId, i64, EndReason)>,
    /// Calls we dropped (glare) whose late events are ignored.
    abandoned: Vec<CallId>,
    /// The server's clock minus ours (from `welcome.server_time`): server times such as
    /// `expires_at` are read on our clock through it.
    server_offset_ms: i64,
    outputs: VecDeque<Output>,
    /// The media last said with [`Output::SetMedia`].
    media_said: Option<Media>,
    /// Whether our camera is on (people who join a call while it is off are told).
    camera_on: bool,
    /// The people of the current call told that our camera is off.
    told_camera_off: std::collections::HashSet<UserId>,
    /// What the administrator allows.
    policy: crate::policy::CallPolicy,
    /// Whether calls connect while they ring (off: the person's "connect only after I answer",
    /// so nobody learns this device's addresses before it answers).
    connect_early: bool,
}

impl CallCore {
    /// A core for the signed-in user `me`.
    pub fn new(me: impl Into<UserId>) -> Self {
        CallCore {
            me: me.into(),
            call: None,
            pending: HashMap::new(),
            next_request: 0,
            next_seq: 0,
            ending: None,
            abandoned: Vec::new(),
            server_offset_ms: 0,
            outputs: VecDeque::new(),
            media_said: None,
            camera_on: true,
            told_camera_off: std::collections::HashSet::new(),
            policy: crate::policy::CallPolicy::default(),
            connect_early: true,
        }
    }

    /// Whether calls placed and rung from now on connect while they ring.
    pub fn set_connect_early(&mut self, on: bool) {
        self.connect_early = on;
    }

    /// The core under an administrator's `policy`.
    pub fn with_policy(mut self, policy: crate::policy::CallPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Learns how the server's clock stands to ours: `server_time` is what `welcome` said, `now`
    /// our time when it arrived.
    pub fn set_server_clock(&mut self, server_time: i64, now: i64) {
        self.server_offset_ms = server_time - now;
    }

    /// The state of the reference product.
    pub fn state(&self) -> CallState {
        match self.call.as_ref().map(|c| c.phase) {
            None => CallState::Idle,
            Some(Phase::Connected) => CallState::Connected,
            Some(_) => CallState::Calling,
        }
    }

    /// The current call's id, once the server gave it one.
    pub fn call_id(&self) -> Option<&str> {
        self.call.as_ref().and_then(|c| c.id.as_deref())
    }

    /// The next thing to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && !self.camera_on {
            // Whoever joined while our camera is off hears so once, however they joined.
            let untold: Vec<UserId> = match self.call.as_ref().filter(|c| c.id.is_some()) {
                Some(call) => call.peers.keys().filter(|u| !self.told_camera_off.contains(*u)).cloned().collect(),
                None => Vec::new(),
            };
            for user in untold {
                self.tell_camera(&user);
                self.told_camera_off.insert(user);
            }
            if self.call.is_none() {
                self.told_camera_off.clear();
            }
        }
        if self.outputs.is_empty() {
            // One place decides media, from the state every path leaves behind: whatever ended,
            // connected or changed the call, the engine hears it once, last.
            // A video call we place counts from the start: the camera opens while it rings, for
            // the caller's own preview (nothing is sent: there is no peer yet).
            let me = &self.me;
            let media = self
                .call
                .as_ref()
                .filter(|c| c.phase == Phase::Connected || (&c.caller == me && matches!(c.phase, Phase::Dialing | Phase::RingingOut)))
                .map(|c| c.media);
            if media != self.media_said {
                self.media_said = media;
                return Some(Output::SetMedia(media));
            }
        }
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<i64> {
        let ring = self.call.as_ref().filter(|c| c.phase == Phase::RingingIn).and_then(|c| c.ring_until);
        self.pending.values().map(|(_, at, _)| at + REQUEST_TIMEOUT_MS).chain(ring).min()
    }

    /// A user command. Refused commands change nothing.
    pub fn command(&mut self, now: i64, command: Command) -> Result<(), CommandError> {
        let state = self.state();
        let phase = self.call.as_ref().map(|c| c.phase);
        let wrong = || Err(CommandError::WrongState { command: command.name(), state });
        use crate::policy::Forbidden;
        match &command {
            Command::Call { media: Media::Video, .. } | Command::Camera { on: true } if !self.policy.video => return Err(Forbidden::Video.into()),
            Command::InviteMore { .. } if !self.policy.invite_more => return Err(Forbidden::InviteMore.into()),
            _ => {}
        }
        match (&command, phase) {
            (Command::Call { to, .. }, None) => {
                if to.is_empty() || to.contains(&self.me) {
                    return Err(CommandError::BadArgument("call someone other than yourself".into()));
                }
            }
            (Command::Join { .. }, None) => {}
            (Command::Accept | Command::AcceptAudioOnly | Command::Reject, Some(Phase::RingingIn)) => {}
            (Command::Hangup, Some(_)) => {}
            (Command::GiveUp, Some(Phase::Joining | Phase::Connected)) => {}
            (Command::InviteMore { to }, Some(Phase::RingingOut | Phase::Connected)) => {
                if to.is_empty() {
                    return Err(CommandError::BadArgument("invite someone".into()));
                }
            }
            (Command::AudioOnly, Some(Phase::Connected | Phase::RingingOut)) => {}
            (Command::Camera { .. }, _) => {}
            _ => return wrong(),
        }

        match command {
            Command::Call { to, media, timeout_s, user_data } => {
                self.call = Some(Call {
                    seq: self.fresh_seq(),
                    id: None,
                    phase: Phase::Dialing,
                    media,
                    caller: self.me.clone(),
                    invitees: to.clone(),
                    peers: BTreeMap::new(),
                    early: BTreeSet::new(),
                    hangup_asked: false,
                    audio_only_answer: false,
                    connected_at: None,
                    ring_until: None,
                });
                let connect_early = self.connect_early;
                self.request(now, Pending::Invite, ClientMessage::CallInvite { to, media, timeout_s, user_data, connect_early });
                self.outputs.push_back(Output::Ringtone(RingtoneCommand::Dialing));
            }
            Command::Join { call_id, media } => {
                self.call = Some(Call {
                    seq: self.fresh_seq(),
                    id: Some(call_id.clone()),
                    phase: Phase::Joining,
                    media,
                    caller: String::new(),
                    invitees: Vec::new(),
                    peers: BTreeMap::new(),
                    early: BTreeSet::new(),
                    hangup_asked: false,
                    // Without video by policy, a video call is joined as audio.
                    audio_only_answer: !self.policy.video && media == Media::Video,
                    connected_at: None,
                    ring_until: None,
                });
                self.request(now, Pending::Join, ClientMessage::CallJoin { call_id });
            }
            Command::Accept | Command::AcceptAudioOnly => {
                let call = self.call.as_mut().expect("checked: ringing");
                call.phase = Phase::Joining;
                // Without video by policy, every answer is an audio one.
                call.audio_only_answer = (matches!(command, Command::AcceptAudioOnly) || !self.policy.video) && call.media == Media::Video;
                let call_id = call.id.clone().expect("incoming calls have ids");
                self.outputs.push_back(Output::Ringtone(RingtoneCommand::Stop));
                self.request(now, Pending::Join, ClientMessage::CallAccept { call_id });
            }
            Command::Reject => {
                let call_id = self.call.as_ref().and_then(|c| c.id.clone()).expect("incoming calls have ids");
                self.request(now, Pending::Other, ClientMessage::CallReject { call_id: call_id.clone() });
                self.finish_not_connected(Some(call_id), NotConnectedReason::Rejected);
            }
            Command::Hangup => self.hangup(now),
            Command::GiveUp => self.leave(now, Some(HangupReason::Failed)),
            Command::InviteMore { to } => {
                let call_id = self.call.as_ref().and_then(|c| c.id.clone()).expect("ringing or connected calls have ids");
                self.request(now, Pending::Other, ClientMessage::CallInviteMore { call_id, to });
            }
            Command::AudioOnly => {
                let call_id = self.call.as_ref().and_then(|c| c.id.clone()).expect("has an id");
                self.request(now, Pending::Other, ClientMessage::CallMedia { call_id, media: Media::Audio });
            }
            Command::Camera { on } => {
                self.camera_on = on;
                let peers: Vec<UserId> = self.call.as_ref().map(|c| c.peers.keys().cloned().collect()).unwrap_or_default();
                self.told_camera_off.clear();
                for user in peers {
                    self.tell_camera(&user);
                    if !on {
                        self.told_camera_off.insert(user);
                    }
                }
            }
        }
        Ok(())
    }

    fn hangup(&mut self, now: i64) {
        let call = self.call.as_mut().expect("checked: in a call");
        match (call.phase, call.id.clone()) {
            // The server has not named the call yet: cancel as soon as it does.
            (Phase::Dialing, None) => call.hangup_asked = true,
            (Phase::RingingIn, Some(call_id)) => {
                self.request(now, Pending::Other, ClientMessage::CallReject { call_id: call_id.clone() });
                self.finish_not_connected(Some(call_id), NotConnectedReason::Rejected);
            }
            (Phase::RingingOut | Phase::Dialing, Some(call_id)) => {
                self.request(now, Pending::Other, ClientMessage::CallCancel { call_id: call_id.clone() });
                self.finish_not_connected(Some(call_id), NotConnectedReason::Cancelled);
            }
            (Phase::Joining | Phase::Connected, Some(_)) => self.leave(now, None),
            (_, None) => unreachable!("only dialing calls lack an id"),
        }
    }

    /// Tells the server how the call `call_id` sounded, for our record of it. A refusal (the
    /// server is older, or kept no record) is no news.
    pub fn report_quality(&mut self, now: i64, call_id: CallId, quality: CallQuality) {
        self.request(now, Pending::Quiet, ClientMessage::CallQuality { call_id, quality });
    }

    /// Leaves the call we are joined in, for `reason` when it is not the person's choice.
    fn leave(&mut self, now: i64, reason: Option<HangupReason>) {
        let Some(call) = self.call.as_ref() else { return };
        let Some(call_id) = call.id.clone() else { return };
        let connected_at = call.connected_at;
        self.request(now, Pending::Hangup, ClientMessage::CallHangup { call_id: call_id.clone(), reason });
        self.close_peers();
        self.call = None;
        let end_reason = if reason == Some(HangupReason::Failed) { EndReason::Failed } else { EndReason::Hangup };
        match connected_at {
            // The duration comes with the server's `call.ended`.
            Some(at) => self.ending = Some((call_id, at, end_reason)),
            None => self.finish_not_connected(Some(call_id), NotConnectedReason::Cancelled),
        }
    }
}

impl CallCore {
    /// A frame from the server. Frames about other calls, or that the core has no use for
    /// (presence, profiles), are ignored.
    pub fn handle_server(&mut self, now: i64, message: ServerMessage) {
        match message {
            ServerMessage::Ok { re: Some(re), body } => self.answered(now, &re, Ok(body)),
            ServerMessage::Error { re: Some(re), code, message } => self.answered(now, &re, Err((code, message))),
            ServerMessage::Error { re: None, code, message } => self.event(CallEvent::Error { code, message }),
            ServerMessage::CallIncoming { call_id, from, invitees, media, user_data, expires_at, connect_early } => {
                self.incoming(now, call_id, from, invitees, media, user_data, expires_at);
                if connect_early {
                    self.connect_while_ringing(now);
                }
            }
            ServerMessage::CallCancelled { call_id, .. } if self.is_ringing_in(&call_id) => {
                self.finish_not_connected(Some(call_id), NotConnectedReason::Cancelled)
            }
            ServerMessage::CallTimeout { call_id } if self.is_ringing_in(&call_id) => {
                self.finish_not_connected(Some(call_id), NotConnectedReason::NoAnswer)
            }
            ServerMessage::CallHandledElsewhere { call_id, .. } if self.is_ringing_in(&call_id) => {
                self.finish_not_connected(Some(call_id), NotConnectedReason::HandledElsewhere)
            }
            ServerMessage::CallAccepted { call_id, user, device } if self.is_current(&call_id) => {
                self.accepted_on(now, user, device)
            }
            ServerMessage::CallRejected { call_id, user } if self.is_current(&call_id) => {
                self.close_early(&user);
                self.event(CallEvent::UserRejected { user })
            }
            ServerMessage::CallBusy { call_id, user } if self.is_current(&call_id) => {
                self.event(CallEvent::UserBusy { user })
            }
            ServerMessage::CallNoAnswer { call_id, user } if self.is_current(&call_id) => {
                self.close_early(&user);
                self.event(CallEvent::UserNoResponse { user })
            }
            ServerMessage::CallInvited { call_id, users } if self.is_current(&call_id) => {
                let call = self.call.as_mut().expect("current");
                call.invitees.extend(users.iter().filter(|u| !call.invitees.contains(u)).cloned().collect::<Vec<_>>());
                self.event(CallEvent::UsersInvited { users });
            }
            ServerMessage::CallLeft { call_id, user } if self.is_current(&call_id) => {
                let call = self.call.as_mut().expect("current");
                if call.peers.remove(&user).is_some() {
                    self.outputs.push_back(Output::ClosePeer { user: user.clone() });
                }
                self.event(CallEvent::UserLeft { user });
            }
            ServerMessage::CallMediaChanged { call_id, media, .. } if self.is_current(&call_id) => {
                self.call.as_mut().expect("current").media = media;
                self.event(CallEvent::MediaChanged { media });
            }
            ServerMessage::CallEnded { call_id, reason, duration_s } => self.ended(call_id, reason, duration_s),
            ServerMessage::Signal { call_id, from, from_device, payload } if self.is_current(&call_id) => {
                self.remote_signal(call_id, from, from_device, payload)
            }
            _ => {}
        }
    }

    /// News from the media driver.
    pub fn handle_media(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::LocalSignal { user, payload } => {
                let Some(call_id) = self.call.as_ref().filter(|c| c.peers.contains_key(&user)).and_then(|c| c.id.clone())
                else {
                    return;
                };
                let payload = serde_json::to_value(payload).expect("payloads serialize");
                // No id: signals are fire-and-forget; a refusal comes back as an `error` anyway.
                self.outputs.push_back(Output::Send(ClientFrame {
                    id: None,
                    message: ClientMessage::Signal { call_id, to: user, to_device: None, payload },
                }));
            }
            MediaEvent::EarlySignal { user, device, payload } => {
                let key = (user, device);
                let Some(call_id) = self.call.as_ref().filter(|c| c.early.contains(&key)).and_then(|c| c.id.clone()) else {
                    return;
                };
                let (to, to_device) = key;
                let payload = serde_json::to_value(payload).expect("payloads serialize");
                self.outputs.push_back(Output::Send(ClientFrame { id: None, message: ClientMessage::Signal { call_id, to, to_device, payload } }));
            }
        }
    }

    /// The signaling connection is back: `joined_calls` is the server's word on which calls this
    /// device is still joined in. Peers that came or went while we were away are reconciled; a
    /// call the server no longer has ended while we were away.
    pub fn resync(&mut self, now: i64, joined_calls: &[CallSummary]) {
        let Some(call) = self.call.as_mut() else { return };
        let Some(id) = call.id.clone() else { return };
        if !matches!(call.phase, Phase::Connected | Phase::RingingOut) {
            return;
        }
        let Some(summary) = joined_calls.iter().find(|s| s.call_id == id) else {
            let connected_at = call.connected_at;
            self.close_peers();
            self.call = None;
            match connected_at {
                Some(at) => self.event(CallEvent::CallEnded { call_id: id, reason: EndReason::Failed, duration_s: seconds(now - at) }),
                None => self.finish_not_connected(Some(id), NotConnectedReason::Failed),
            }
            return;
        };
        let gone: Vec<UserId> = call.peers.keys().filter(|u| !summary.joined.contains(u)).cloned().collect();
        for user in gone {
            call.peers.remove(&user);
            self.outputs.push_back(Output::ClosePeer { user: user.clone() });
            self.outputs.push_back(Output::Event(CallEvent::UserLeft { user }));
        }
        let came: Vec<UserId> =
            summary.joined.iter().filter(|u| **u != self.me && !call.peers.contains_key(*u)).cloned().collect();
        for user in came {
            // They joined after us, so we offer.
            self.accepted(now, user);
        }
    }

    /// Fires due timers: requests the server never answered, and ringing the server never ended.
    pub fn handle_timeout(&mut self, now: i64) {
        if let Some(call) = self.call.as_ref().filter(|c| c.phase == Phase::RingingIn && c.ring_until.is_some_and(|t| t <= now)) {
            let call_id = call.id.clone();
            self.finish_not_connected(call_id, NotConnectedReason::NoAnswer);
        }
        let expired: Vec<(String, Pending, Option<u64>)> = self
            .pending
            .iter()
            .filter(|(_, (_, at, _))| at + REQUEST_TIMEOUT_MS <= now)
            .map(|(id, (kind, _, seq))| (id.clone(), *kind, *seq))
            .collect();
        for (id, kind, seq) in expired {
            self.pending.remove(&id);
            match kind {
                Pending::Invite | Pending::Join if !self.is_call_seq(seq) => {}
                Pending::Invite | Pending::Join => {
                    let call_id = self.call.as_ref().and_then(|c| c.id.clone());
                    self.close_peers();
                    self.finish_not_connected(call_id, NotConnectedReason::Failed);
                }
                Pending::Hangup => {
                    if let Some((call_id, at, reason)) = self.ending.take() {
                        self.event(CallEvent::CallEnded { call_id, reason, duration_s: seconds(now - at) });
                    }
                }
                Pending::AbandonedInvite | Pending::Other | Pending::Quiet => {}
            }
        }
    }

    // ---- server frames ----

    fn answered(&mut self, now: i64, re: &str, answer: Result<OkBody, (ErrorCode, String)>) {
        let Some((kind, _, seq)) = self.pending.remove(re) else { return };
        // An invite or accept answered after its call ended here is about no current call.
        let kind = match kind {
            Pending::Invite if !self.is_call_seq(seq) => Pending::AbandonedInvite,
            Pending::Join if !self.is_call_seq(seq) => return,
            kind => kind,
        };
        match (kind, answer) {
            (Pending::Invite, Ok(body)) => {
                let Some(call_id) = body.call_id else { return };
                let call = self.call.as_mut().filter(|c| c.phase == Phase::Dialing).expect("an invite is answered while dialing");
                call.id = Some(call_id.clone());
                call.phase = Phase::RingingOut;
                let invitees = call.invitees.clone();
                if call.hangup_asked {
                    self.request(now, Pending::Other, ClientMessage::CallCancel { call_id: call_id.clone() });
                    self.finish_not_connected(Some(call_id), NotConnectedReason::Cancelled);
                } else {
                    self.event(CallEvent::Dialing { call_id, invitees });
                }
            }
            (Pending::AbandonedInvite, Ok(body)) => {
                if let Some(call_id) = body.call_id {
                    self.request(now, Pending::Other, ClientMessage::CallCancel { call_id: call_id.clone() });
                    self.abandoned.push(call_id);
                }
            }
            (Pending::Join, Ok(body)) => {
                let Some(call) = self.call.as_mut().filter(|c| c.phase == Phase::Joining) else { return };
                call.phase = Phase::Connected;
                call.connected_at = Some(now);
                // Answered with audio only: the peers are still set up for the video the others
                // offer (they drop it at `call.media_changed`), but here the call is audio from
                // the start, so the camera never opens.
                let (call_id, media) = (call.id.clone().expect("joining a named call"), call.media);
                let audio_only = std::mem::take(&mut call.audio_only_answer);
                if audio_only {
                    call.media = Media::Audio;
                }
                for user in body.joined.unwrap_or_default() {
                    if user != self.me && call.peers.insert(user.clone(), false).is_none() {
                        // The connection made while it rang (the caller's) is the one to use.
                        let output = match call.early.remove(&(user.clone(), None)) {
                            true => Output::BeginPeer { user: user.clone(), device: None },
                            false => Output::OpenPeer { call_id: call_id.clone(), user: user.clone(), offerer: false, media },
                        };
                        self.outputs.push_back(output);
                        self.outputs.push_back(Output::Event(CallEvent::UserJoined { user }));
                    }
                }
                for (user, device) in std::mem::take(&mut call.early) {
                    self.outputs.push_back(Output::CloseEarlyPeer { user, device });
                }
                self.event(CallEvent::CallBegan { call_id: call_id.clone(), media: if audio_only { Media::Audio } else { media }, connected_at: Some(now) });
                if audio_only {
                    self.request(now, Pending::Other, ClientMessage::CallMedia { call_id, media: Media::Audio });
                }
            }
            (Pending::Invite | Pending::Join, Err((code, message))) => {
                // An answer about a call that already ended here (say, an accept that lost the
                // race to the caller's cancel) is no news.
                if !self.call.as_ref().is_some_and(|c| matches!(c.phase, Phase::Dialing | Phase::Joining)) {
                    return;
                }
                let call_id = self.call.as_ref().and_then(|c| c.id.clone());
                self.event(CallEvent::Error { code, message });
                self.close_peers();
                self.finish_not_connected(call_id, NotConnectedReason::Failed);
            }
            (Pending::Hangup | Pending::Other | Pending::AbandonedInvite, Err((code, message))) => {
                // A cancel or reject that lost a race to the other side is no news.
                if code != ErrorCode::InvalidState {
                    self.event(CallEvent::Error { code, message });
                }
            }
            (Pending::Hangup, Ok(body)) => {
                // The server answers a hangup with how long we were connected. In a group call
                // that goes on, no `call.ended` follows, so the end is told now; in a call that
                // ends, the `call.ended` that follows finds nothing left to end.
                if let Some((call_id, at, reason)) = self.ending.take() {
                    let duration_s = body.duration_s.unwrap_or_else(|| seconds(now - at));
                    self.event(CallEvent::CallEnded { call_id, reason, duration_s });
                }
            }
            (Pending::Other, Ok(_)) => {}
            (Pending::Quiet, outcome) => {
                if let Err((code, message)) = outcome {
                    tracing::debug!(?code, message, "a request the server refused, quietly");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn incoming(
        &mut self,
        now: i64,
        call_id: CallId,
        from: UserId,
        invitees: Vec<UserId>,
        media: Media,
        user_data: Option<String>,
        expires_at: i64,
    ) {
        let glare = match self.call.as_ref() {
            None => false,
            Some(call) if call.id.as_deref() == Some(call_id.as_str()) => return, // delivered again at sign-in
            Some(call) => {
                matches!(call.phase, Phase::Dialing | Phase::RingingOut) && call.invitees == [from.clone()] && call.caller == self.me
            }
        };
        if self.call.is_some() && !glare {
            return; // busy here; the server tells the caller
        }
        if glare {
            // We called them as they called us: take their call, drop ours quietly.
            let ours = self.call.take().expect("glare needs a call");
            match ours.id {
                Some(id) => {
                    self.request(now, Pending::Other, ClientMessage::CallCancel { call_id: id.clone() });
                    self.abandoned.push(id);
                }
                None => {
                    for (kind, _, _) in self.pending.values_mut() {
                        if *kind == Pending::Invite {
                            *kind = Pending::AbandonedInvite;
                        }
                    }
                }
            }
        }
        self.call = Some(Call {
            seq: self.fresh_seq(),
            id: Some(call_id.clone()),
            phase: Phase::RingingIn,
            media,
            caller: from.clone(),
            invitees: invitees.clone(),
            peers: BTreeMap::new(),
            early: BTreeSet::new(),
            hangup_asked: false,
            audio_only_answer: false,
            connected_at: None,
            ring_until: Some(expires_at - self.server_offset_ms + RING_SLACK_MS),
        });
        self.event(CallEvent::IncomingCall { call_id, caller: from, invitees, media, user_data });
        if glare {
            self.command(now, Command::Accept).expect("ringing in: accept is allowed");
        } else {
            self.outputs.push_back(Output::Ringtone(RingtoneCommand::Incoming));
        }
    }

    /// Someone answered on `device` (named in calls that connect early): the connection made to
    /// that device while it rang becomes theirs, and those to their other devices close.
    fn accepted_on(&mut self, now: i64, user: UserId, device: Option<String>) {
        let Some(call) = self.call.as_mut() else { return };
        let key = (user.clone(), device);
        let early = matches!(call.phase, Phase::RingingOut | Phase::Connected) && !call.peers.contains_key(&user) && call.early.remove(&key);
        self.close_early(&user);
        if !early {
            return self.accepted(now, user);
        }
        let call = self.call.as_mut().expect("checked");
        call.peers.insert(user.clone(), true);
        self.outputs.push_back(Output::BeginPeer { user: user.clone(), device: key.1 });
        self.outputs.push_back(Output::Event(CallEvent::UserJoined { user }));
        self.began(now);
    }

    /// Someone joined a call we are joined in: we joined first, so we offer.
    fn accepted(&mut self, now: i64, user: UserId) {
        let Some(call) = self.call.as_mut() else { return };
        if !matches!(call.phase, Phase::RingingOut | Phase::Connected) || user == self.me {
            return;
        }
        let call_id = call.id.clone().expect("joined calls have ids");
        if call.peers.insert(user.clone(), true).is_none() {
            self.outputs.push_back(Output::OpenPeer { call_id, user: user.clone(), offerer: true, media: call.media });
            self.outputs.push_back(Output::Event(CallEvent::UserJoined { user }));
        }
        self.began(now);
    }

    /// Our call rang out and now has someone in it: it is connected.
    fn began(&mut self, now: i64) {
        let Some(call) = self.call.as_mut() else { return };
        if call.phase == Phase::RingingOut {
            let call_id = call.id.clone().expect("ringing calls have ids");
            call.phase = Phase::Connected;
            call.connected_at = Some(now);
            let media = call.media;
            self.outputs.push_back(Output::Ringtone(RingtoneCommand::Stop));
            self.event(CallEvent::CallBegan { call_id, media, connected_at: Some(now) });
        }
    }

    fn ended(&mut self, call_id: CallId, reason: EndReason, duration_s: u64) {
        if let Some(i) = self.abandoned.iter().position(|c| *c == call_id) {
            self.abandoned.remove(i);
            return;
        }
        if self.ending.as_ref().is_some_and(|(id, _, _)| *id == call_id) {
            self.ending = None;
            self.event(CallEvent::CallEnded { call_id, reason, duration_s });
            return;
        }
        if !self.is_current(&call_id) {
            return;
        }
        let connected = self.call.as_ref().is_some_and(|c| c.phase == Phase::Connected);
        self.close_peers();
        if connected {
            self.call = None;
            self.outputs.push_back(Output::Ringtone(RingtoneCommand::Stop));
            self.event(CallEvent::CallEnded { call_id, reason, duration_s });
        } else {
            let why = match reason {
                EndReason::Cancelled => NotConnectedReason::Cancelled,
                EndReason::Rejected => NotConnectedReason::Rejected,
                EndReason::Busy => NotConnectedReason::Busy,
                EndReason::NoAnswer => NotConnectedReason::NoAnswer,
                EndReason::Hangup | EndReason::Failed => NotConnectedReason::Failed,
            };
            self.finish_not_connected(Some(call_id), why);
        }
    }

    fn remote_signal(&mut self, call_id: CallId, from: UserId, from_device: Option<String>, payload: serde_json::Value) {
        let Ok(payload) = serde_json::from_value::<SignalPayload>(payload) else {
            tracing::debug!(%from, "ignoring a signal payload of an unknown kind");
            return;
        };
        let call = self.call.as_mut().expect("current");
        // A device ringing with our call asks to connect now: we offer to that device.
        if payload == SignalPayload::Ready {
            let wanted = self.connect_early
                && matches!(call.phase, Phase::RingingOut | Phase::Connected)
                && !call.peers.contains_key(&from)
                && call.invitees.contains(&from)
                && from_device.is_some();
            if wanted && call.early.insert((from.clone(), from_device.clone())) {
                let media = call.media;
                self.outputs.push_back(Output::OpenEarlyPeer { call_id, user: from, device: from_device, offerer: true, media });
            }
            return;
        }
        // Negotiation of a connection made while the call rings: by device at the caller, by
        // person at the ringing device (it only ever connects early to the caller).
        for key in [(from.clone(), from_device.clone()), (from.clone(), None)] {
            if call.early.contains(&key) && !call.peers.contains_key(&from) {
                self.outputs.push_back(Output::EarlySignal { user: key.0, device: key.1, payload });
                return;
            }
        }
        if let SignalPayload::Camera { on } = payload {
            if self.call.as_ref().is_some_and(|c| c.peers.contains_key(&from)) {
                self.event(CallEvent::RemoteCamera { user: from, on });
            }
            return;
        }
        if let SignalPayload::VideoSize { width, height } = payload {
            if width > 0 && height > 0 && self.call.as_ref().is_some_and(|c| c.peers.contains_key(&from)) {
                self.outputs.push_back(Output::VideoShownBy { user: from, width, height });
            }
            return;
        }
        let call = self.call.as_mut().expect("current");
        if call.phase != Phase::Connected && call.phase != Phase::RingingOut {
            return;
        }
        if !call.peers.contains_key(&from) {
            // An offer from someone we have not heard join yet: they joined before us.
            call.peers.insert(from.clone(), false);
            let media = call.media;
            self.outputs.push_back(Output::OpenPeer { call_id, user: from.clone(), offerer: false, media });
        }
        self.outputs.push_back(Output::RemoteSignal { user: from, payload });
    }

    // ---- helpers ----

    /// Tells `user` whether our camera is on.
    fn tell_camera(&mut self, user: &UserId) {
        let Some(call_id) = self.call.as_ref().and_then(|c| c.id.clone()) else { return };
        let payload = serde_json::to_value(SignalPayload::Camera { on: self.camera_on }).expect("payloads serialize");
        self.outputs.push_back(Output::Send(ClientFrame { id: None, message: ClientMessage::Signal { call_id, to: user.clone(), to_device: None, payload } }));
    }

    fn request(&mut self, now: i64, kind: Pending, message: ClientMessage) {
        self.next_request += 1;
        let id = format!("e{}", self.next_request);
        let seq = self.call.as_ref().map(|c| c.seq);
        self.pending.insert(id.clone(), (kind, now, seq));
        self.outputs.push_back(Output::Send(ClientFrame { id: Some(id), message }));
    }

    fn fresh_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn is_call_seq(&self, seq: Option<u64>) -> bool {
        seq.is_some() && self.call.as_ref().map(|c| c.seq) == seq
    }

    fn is_current(&self, call_id: &str) -> bool {
        self.call.as_ref().is_some_and(|c| c.id.as_deref() == Some(call_id))
    }

    fn is_ringing_in(&self, call_id: &str) -> bool {
        self.call.as_ref().is_some_and(|c| c.phase == Phase::RingingIn && c.id.as_deref() == Some(call_id))
    }

    fn close_peers(&mut self) {
        if let Some(call) = self.call.as_mut() {
            for user in std::mem::take(&mut call.peers).into_keys() {
                self.outputs.push_back(Output::ClosePeer { user });
            }
            for (user, device) in std::mem::take(&mut call.early) {
                self.outputs.push_back(Output::CloseEarlyPeer { user, device });
            }
        }
    }

    /// Closes the early connections to `user`'s devices.
    fn close_early(&mut self, user: &str) {
        let Some(call) = self.call.as_mut() else { return };
        let outputs = &mut self.outputs;
        call.early.retain(|(u, device)| {
            let closing = u == user;
            if closing {
                outputs.push_back(Output::CloseEarlyPeer { user: u.clone(), device: device.clone() });
            }
            !closing
        });
    }

    /// The call ringing here asks to connect early: unless the person chose to connect only
    /// after answering, a connection to the caller is opened (it answers the caller's offer)
    /// and the caller is asked for that offer. Nothing is sent or played on it until accept.
    fn connect_while_ringing(&mut self, now: i64) {
        if !self.connect_early {
            return;
        }
        let Some(call) = self.call.as_mut().filter(|c| c.phase == Phase::RingingIn && c.early.is_empty()) else { return };
        let (Some(call_id), caller, media) = (call.id.clone(), call.caller.clone(), call.media) else { return };
        call.early.insert((caller.clone(), None));
        self.outputs.push_back(Output::OpenEarlyPeer { call_id: call_id.clone(), user: caller.clone(), device: None, offerer: false, media });
        let payload = serde_json::to_value(SignalPayload::Ready).expect("payloads serialize");
        // Asked with an id so a refusal (the caller left a group call) is answered quietly.
        self.request(now, Pending::Quiet, ClientMessage::Signal { call_id, to: caller, to_device: None, payload });
    }

    fn finish_not_connected(&mut self, call_id: Option<CallId>, reason: NotConnectedReason) {
        self.close_peers();
        self.call = None;
        self.outputs.push_back(Output::Ringtone(RingtoneCommand::Stop));
        self.event(CallEvent::NotConnected { call_id, reason });
    }

    fn event(&mut self, event: CallEvent) {
        self.outputs.push_back(Output::Event(event));
    }
}

fn seconds(ms: i64) -> u64 {
    u64::try_from(ms.max(0) / 1000).unwrap_or(0)
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
