//! Every frame of protocol v1: client requests, server answers and events, and their parts.
//!
//! Names follow PROTOCOL.md: the serde tag of each variant is its wire `type`. Fields the protocol
//! marks optional are `Option`s that are left out when empty on the way out and accepted when
//! missing on the way in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ErrorCode, MAX_FRAME_BYTES, MAX_REQUEST_ID_CHARS};

/// A user id (see [`crate::valid_user_id`]).
pub type UserId = String;
/// A call id, chosen by the server.
pub type CallId = String;

/// What a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum Media {
    /// Audio only.
    Audio,
    /// Audio and video.
    Video,
}

/// Why the server closes a session (`kicked.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum KickReason {
    /// The same user signed in again with the same `device`.
    Replaced,
    /// An operator removed the account.
    AccountRemoved,
    /// The server is stopping.
    Shutdown,
    /// A reason a newer server gives that this client does not know.
    Unknown,
}

impl<'de> Deserialize<'de> for KickReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By hand rather than `#[serde(other)]`, which ts-rs cannot read.
        Ok(match String::deserialize(deserializer)?.as_str() {
            "replaced" => KickReason::Replaced,
            "account_removed" => KickReason::AccountRemoved,
            "shutdown" => KickReason::Shutdown,
            _ => KickReason::Unknown,
        })
    }
}

impl KickReason {
    /// The reason as the wire spells it (for a WebSocket close frame and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            KickReason::Replaced => "replaced",
            KickReason::AccountRemoved => "account_removed",
            KickReason::Shutdown => "shutdown",
            KickReason::Unknown => "unknown",
        }
    }
}

/// Whether a user can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum PresenceStatus {
    /// At least one live session.
    Online,
    /// An account with no live session.
    Offline,
    /// No such account.
    Unregistered,
}

/// Why a call ended (`call.ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum EndReason {
    /// The call connected and people hung up.
    Hangup,
    /// The caller cancelled before anyone accepted.
    Cancelled,
    /// Every invitee declined.
    Rejected,
    /// Every invitee was busy.
    Busy,
    /// Nobody answered in time.
    NoAnswer,
    /// The call could not go on (e.g. everyone's connection dropped).
    Failed,
}

/// How a call went for one person, in their record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum CallResult {
    /// The person was in the connected call.
    Completed,
    /// An incoming call the person never answered.
    Missed,
    /// The person declined, or (outgoing) was declined.
    Declined,
    /// Busy.
    Busy,
    /// The caller cancelled (outgoing).
    Cancelled,
    /// Nobody answered (outgoing).
    NoAnswer,
    /// The call failed.
    Failed,
}

/// Which side of a call a record is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum Direction {
    /// This person called.
    Outgoing,
    /// This person was called.
    Incoming,
}

/// What another session of the same user did with an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandledAction {
    /// Accepted on another device.
    Accepted,
    /// Rejected on another device.
    Rejected,
}

/// Which ICE candidates a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IceTransportPolicy {
    /// Any candidate.
    #[default]
    All,
    /// Relay (TURN) candidates only.
    Relay,
}

/// One ICE server of `welcome`, in the shape of the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name (`"<expiry>:<user>"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A user's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct UserProfile {
    /// User id.
    pub user: UserId,
    /// Display name; the user id when none was set.
    pub nickname: String,
    /// URL or data URI.
    #[serde(default)]
    pub avatar: Option<String>,
}

/// One entry of `contacts.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Contact {
    /// User id.
    pub user: UserId,
    /// The contact's own display name.
    pub nickname: String,
    /// The name this user gave the contact.
    #[serde(default)]
    pub alias: Option<String>,
    /// Presence right now.
    pub status: PresenceStatus,
}

/// A live call, as `calls.active` and `welcome.joined_calls` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CallSummary {
    /// Call id.
    pub call_id: CallId,
    /// Who placed it.
    pub caller: UserId,
    /// Everyone invited, in invitation order.
    pub invitees: Vec<UserId>,
    /// Audio or video.
    pub media: Media,
    /// Who is joined now, in joining order.
    pub joined: Vec<UserId>,
    /// When it connected (Unix ms), if it has.
    #[serde(default)]
    pub connected_at: Option<i64>,
    /// The caller's `user_data`.
    #[serde(default)]
    pub user_data: Option<String>,
}

/// How a call sounded to one person: the ITU-T G.107 E-model's MOS (1 to 4.5) of their links,
/// averaged over the call and at its worst (`call.quality`, and in records).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CallQuality {
    /// The mean of the scores taken during the call.
    pub mos_average: f64,
    /// The lowest of them.
    pub mos_worst: f64,
}

// JSON has no NaN, and a record's scores are checked before they are kept: equality is total.
impl Eq for CallQuality {}

impl CallQuality {
    /// Whether the scores are possible: both within 1 to 4.5, the worst no better than the mean.
    pub fn is_valid(&self) -> bool {
        let range = 1.0..=4.5;
        range.contains(&self.mos_average) && range.contains(&self.mos_worst) && self.mos_worst <= self.mos_average
    }
}

/// Why a client leaves a call on its own (`call.hangup`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum HangupReason {
    /// No media came for so long that the client gave the call up: a call this ends ends
    /// `failed`.
    Failed,
}

/// One person's record of one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CallRecord {
    /// Call id.
    pub call_id: CallId,
    /// Who placed it.
    pub caller: UserId,
    /// Everyone invited.
    pub invitees: Vec<UserId>,
    /// Audio or video (as it was when the person's part ended).
    pub media: Media,
    /// When the call was placed (Unix ms).
    pub started_at: i64,
    /// When this person was connected (Unix ms), if they were.
    pub connected_at: Option<i64>,
    /// When this person's part ended (Unix ms).
    pub ended_at: i64,
    /// Whole seconds from `connected_at` to `ended_at`; 0 if never connected.
    pub duration_s: u64,
    /// Outgoing for the caller, incoming for invitees.
    pub direction: Direction,
    /// How it went.
    pub result: CallResult,
    /// For a person who was connected: how their part ended, `hangup` or `failed` (their
    /// connection, or the call's media, could not be recovered). Absent otherwise, and in
    /// records kept before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub end_reason: Option<EndReason>,
    /// How the call sounded to this person, when their client said (`call.quality`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub quality: Option<CallQuality>,
}

/// The media negotiation payloads carried opaquely by `signal` (PROTOCOL.md section 4).
///
/// The server never looks inside; clients parse `payload` into this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalPayload {
    /// An SDP offer.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A trickled ICE candidate.
    Candidate {
        /// Exactly `RTCIceCandidate.candidate` (starts with `candidate:`).
        candidate: String,
        /// The media id, or null.
        #[serde(default)]
        sdp_mid: Option<String>,
        /// The m-line index, or null.
        #[serde(default)]
        sdp_mline_index: Option<u16>,
        /// The ICE generation's username fragment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ufrag: Option<String>,
    },
    /// No more candidates for this pair and ICE generation.
    EndOfCandidates,
    /// Asks the pair's offerer to re-offer with an ICE restart.
    Restart,
    /// (Added by Hark) a device still ringing in a call placed with `connect_early` asks the
    /// joined person it is sent to for an offer now, so the connection is up when the call is
    /// answered (PROTOCOL.md section 7).
    Ready,
    /// (Added by Hark) the sender's camera went off or on, so the far side can show it at once
    /// instead of waiting for the video to stop; a peer that ignores it still sees the video stop.
    Camera {
        /// Whether the camera is on now.
        on: bool,
    },
    /// (Added by Hark) the size, in device pixels, at which the receiver now shows the
    /// sender's video at most (its largest view, fitted to the picture's shape), so the sender
    /// can send no more pixels than that; a peer that ignores it sends as before.
    VideoSize {
        /// Width shown.
        width: u32,
        /// Height shown.
        height: u32,
    },
}

/// A request from a client, tagged by `type`. The `id` lives in [`ClientFrame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientMessage {
    /// Opens the session; must be the first frame.
    #[serde(rename = "hello")]
    Hello {
        /// Session token.
        token: String,
        /// Protocol versions the client speaks.
        protocol: Vec<u32>,
        /// A stable id of this device, so a reconnect is recognised.
        device: String,
        /// Client name and version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
    },
    /// Keepalive for clients that cannot answer WebSocket pings.
    #[serde(rename = "ping")]
    Ping,
    /// Presence of some users, once.
    #[serde(rename = "presence.query")]
    PresenceQuery {
        /// Whom to ask about.
        users: Vec<UserId>,
    },
    /// Presence events for some users from now on.
    #[serde(rename = "presence.subscribe")]
    PresenceSubscribe {
        /// Whom to follow.
        users: Vec<UserId>,
    },
    /// Changes this user's profile.
    #[serde(rename = "profile.set")]
    ProfileSet {
        /// New display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
        /// New avatar (URL or data URI, at most 16 KiB).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
    },
    /// Profiles of some users.
    #[serde(rename = "users.get")]
    UsersGet {
        /// Whose profiles.
        users: Vec<UserId>,
    },
    /// This user's contacts with presence.
    #[serde(rename = "contacts.list")]
    ContactsList,
    /// Adds a contact.
    #[serde(rename = "contacts.add")]
    ContactsAdd {
        /// Whom.
        user: UserId,
        /// A name of this user's choosing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
    },
    /// Removes a contact.
    #[serde(rename = "contacts.remove")]
    ContactsRemove {
        /// Whom.
        user: UserId,
    },
    /// Places a call.
    #[serde(rename = "call.invite")]
    CallInvite {
        /// Invitees.
        to: Vec<UserId>,
        /// Audio or video.
        media: Media,
        /// Ring timeout, 5 to 120 s (default from the server, 30).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_s: Option<u32>,
        /// Opaque data for the invitees, at most 4 KiB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_data: Option<String>,
        /// (Added) the caller connects to ringing devices that ask for it, before anyone
        /// answers (PROTOCOL.md section 7).
        #[serde(default, skip_serializing_if = "is_false")]
        connect_early: bool,
    },
    /// The caller withdraws a call nobody accepted yet.
    #[serde(rename = "call.cancel")]
    CallCancel {
        /// Which call.
        call_id: CallId,
    },
    /// An invitee answers.
    #[serde(rename = "call.accept")]
    CallAccept {
        /// Which call.
        call_id: CallId,
    },
    /// An invitee declines.
    #[serde(rename = "call.reject")]
    CallReject {
        /// Which call.
        call_id: CallId,
    },
    /// A joined person leaves.
    #[serde(rename = "call.hangup")]
    CallHangup {
        /// Which call.
        call_id: CallId,
        /// Why, when it is not the person's choice (an added field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<HangupReason>,
    },
    /// A joined person invites more people.
    #[serde(rename = "call.invite_more")]
    CallInviteMore {
        /// Which call.
        call_id: CallId,
        /// Whom.
        to: Vec<UserId>,
    },
    /// Someone invited earlier joins a call that is still connected.
    #[serde(rename = "call.join")]
    CallJoin {
        /// Which call.
        call_id: CallId,
    },
    /// A joined person downgrades the call to audio.
    #[serde(rename = "call.media")]
    CallMedia {
        /// Which call.
        call_id: CallId,
        /// The new media (only `audio` is allowed).
        media: Media,
    },
    /// A media negotiation message for one other joined person.
    #[serde(rename = "signal")]
    Signal {
        /// Which call.
        call_id: CallId,
        /// The addressee.
        to: UserId,
        /// (Added) which of the addressee's devices: in a call placed with `connect_early`, a
        /// joined person reaches a device that still rings this way.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_device: Option<String>,
        /// A [`SignalPayload`] (an object, at most 32 KiB); relayed untouched.
        payload: Value,
    },
    /// Live calls this user could still join.
    #[serde(rename = "calls.active")]
    CallsActive,
    /// This user's call records, newest first.
    #[serde(rename = "calls.history")]
    CallsHistory {
        /// Only records started before this (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<i64>,
        /// At most this many (1–200, default 50).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Removes records from this user's history.
    #[serde(rename = "calls.delete")]
    CallsDelete {
        /// Which calls.
        call_ids: Vec<CallId>,
    },
    /// How the call sounded to this person, kept in their record (an added request).
    #[serde(rename = "call.quality")]
    CallQuality {
        /// Which call.
        call_id: CallId,
        /// The scores.
        #[serde(flatten)]
        quality: CallQuality,
    },
}

impl ClientMessage {
    /// Every wire `type` a client may send.
    pub const TYPES: [&'static str; 22] = [
        "hello",
        "ping",
        "presence.query",
        "presence.subscribe",
        "profile.set",
        "users.get",
        "contacts.list",
        "contacts.add",
        "contacts.remove",
        "call.invite",
        "call.cancel",
        "call.accept",
        "call.reject",
        "call.hangup",
        "call.invite_more",
        "call.join",
        "call.media",
        "signal",
        "calls.active",
        "calls.history",
        "calls.delete",
        "call.quality",
    ];
}

/// A client frame: a request and its optional `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    /// Echoed back as `re` in the answer.
    pub id: Option<String>,
    /// The request.
    pub message: ClientMessage,
}

impl ClientFrame {
    /// A frame with an id.
    pub fn new(id: impl Into<String>, message: ClientMessage) -> Self {
        ClientFrame { id: Some(id.into()), message }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(&self.message).expect("client messages serialize");
        if let (Some(id), Value::Object(map)) = (&self.id, &mut value) {
            map.insert("id".into(), Value::String(id.clone()));
        }
        value.to_string()
    }
}

/// Why a text frame could not be read as a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The frame's `id`, when it had a usable one, so the error can answer it.
    pub re: Option<String>,
    /// `bad_request`, `payload_too_large` or `unsupported`.
    pub code: ErrorCode,
    /// What was wrong, for people.
    pub message: String,
}

impl FrameError {
    /// Whether this counts towards the "20 bad frames in 10 s" limit: an unknown type does not,
    /// since a newer client may send it in good faith.
    pub fn is_bad_frame(&self) -> bool {
        self.code != ErrorCode::Unsupported
    }
}

/// For `skip_serializing_if`: an added flag is left out while off, so frames stay as v1 wrote them.
fn is_false(flag: &bool) -> bool {
    !flag
}

/// Reads one text frame from a client (PROTOCOL.md section 2).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let fail = |re: Option<String>, code, message: String| Err(FrameError { re, code, message });
    if text.len() > MAX_FRAME_BYTES {
        return fail(None, ErrorCode::PayloadTooLarge, format!("frame over {MAX_FRAME_BYTES} bytes"));
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return fail(None, ErrorCode::BadRequest, format!("not JSON: {e}")),
    };
    let Value::Object(map) = value else {
        return fail(None, ErrorCode::BadRequest, "a frame must be a JSON object".into());
    };
    let re = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.chars().count() <= MAX_REQUEST_ID_CHARS => Some(id.clone()),
        Some(_) => {
            return fail(None, ErrorCode::BadRequest, format!("id must be a string of at most {MAX_REQUEST_ID_CHARS} characters"))
        }
    };
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return fail(re, ErrorCode::BadRequest, "a frame needs a string `type`".into()),
    };
    if !ClientMessage::TYPES.contains(&kind) {
        let message = format!("unknown type '{}'", kind.chars().take(64).collect::<String>());
        return fail(re, ErrorCode::Unsupported, message);
    }
    match serde_json::from_value(Value::Object(map)) {
        Ok(message) => Ok(ClientFrame { id: re, message }),
        Err(e) => fail(re, ErrorCode::BadRequest, e.to_string()),
    }
}

/// The fields an `ok` may carry, depending on the request it answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkBody {
    /// `call.invite`: the new call's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<CallId>,
    /// `call.accept` / `call.join`: who was joined before, in joining order (they send offers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<Vec<UserId>>,
    /// `presence.query` / `presence.subscribe`: status by user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<BTreeMap<UserId, PresenceStatus>>,
    /// `users.get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<UserProfile>>,
    /// `contacts.list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<Contact>>,
    /// `calls.active`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<CallSummary>>,
    /// `calls.history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<CallRecord>>,
    /// (Added to v1.) `call.hangup`: whole seconds the leaver was connected, so a person who
    /// leaves a group call that goes on knows their own duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
}

/// A frame from the server, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    /// The answer to `hello`.
    #[serde(rename = "welcome")]
    Welcome {
        /// The `hello`'s id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<String>,
        /// The version chosen.
        protocol: u32,
        /// Who this session is.
        user: UserId,
        /// Session id.
        session: String,
        /// The server's clock (Unix ms), so clients can show `expires_at` right.
        server_time: i64,
        /// STUN/TURN servers for this user.
        ice_servers: Vec<IceServer>,
        /// Whether only relay candidates may be used.
        ice_transport_policy: IceTransportPolicy,
        /// Most people in one call, caller included.
        max_participants: u32,
        /// (Added to v1.) Calls this device is still joined in, after a reconnect within the grace.
        #[serde(default)]
        joined_calls: Vec<CallSummary>,
    },
    /// A request succeeded.
    #[serde(rename = "ok")]
    Ok {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<String>,
        /// What the answer carries.
        #[serde(flatten)]
        body: OkBody,
    },
    /// A request failed.
    #[serde(rename = "error")]
    Error {
        /// The request's id, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        re: Option<String>,
        /// Why.
        code: ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// An invitation rings this user.
    #[serde(rename = "call.incoming")]
    CallIncoming {
        /// Call id.
        call_id: CallId,
        /// The caller.
        from: UserId,
        /// Everyone invited.
        invitees: Vec<UserId>,
        /// Audio or video.
        media: Media,
        /// The caller's opaque data.
        user_data: Option<String>,
        /// When the ringing stops (Unix ms).
        expires_at: i64,
        /// (Added) the caller asked to connect while it rings: this device may send the caller
        /// a `ready` signal (PROTOCOL.md section 7).
        #[serde(default, skip_serializing_if = "is_false")]
        connect_early: bool,
    },
    /// The caller withdrew the invitation.
    #[serde(rename = "call.cancelled")]
    CallCancelled {
        /// Call id.
        call_id: CallId,
        /// Who cancelled.
        by: UserId,
    },
    /// Someone joined the call.
    #[serde(rename = "call.accepted")]
    CallAccepted {
        /// Call id.
        call_id: CallId,
        /// Who.
        user: UserId,
        /// (Added, in calls placed with `connect_early`) the device that answered: its early
        /// connection is the one to keep.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// An invitee declined.
    #[serde(rename = "call.rejected")]
    CallRejected {
        /// Call id.
        call_id: CallId,
        /// Who.
        user: UserId,
    },
    /// An invitee is in another call.
    #[serde(rename = "call.busy")]
    CallBusy {
        /// Call id.
        call_id: CallId,
        /// Who.
        user: UserId,
    },
    /// An invitee did not answer in time.
    #[serde(rename = "call.no_answer")]
    CallNoAnswer {
        /// Call id.
        call_id: CallId,
        /// Who.
        user: UserId,
    },
    /// This user's ringing timed out.
    #[serde(rename = "call.timeout")]
    CallTimeout {
        /// Call id.
        call_id: CallId,
    },
    /// Another session of this user accepted or rejected the call.
    #[serde(rename = "call.handled_elsewhere")]
    CallHandledElsewhere {
        /// Call id.
        call_id: CallId,
        /// What it did.
        action: HandledAction,
    },
    /// More people were invited.
    #[serde(rename = "call.invited")]
    CallInvited {
        /// Call id.
        call_id: CallId,
        /// Who.
        users: Vec<UserId>,
    },
    /// A joined person left.
    #[serde(rename = "call.left")]
    CallLeft {
        /// Call id.
        call_id: CallId,
        /// Who.
        user: UserId,
    },
    /// The call went down to audio.
    #[serde(rename = "call.media_changed")]
    CallMediaChanged {
        /// Call id.
        call_id: CallId,
        /// The new media.
        media: Media,
        /// Who changed it.
        by: UserId,
    },
    /// The call is over.
    #[serde(rename = "call.ended")]
    CallEnded {
        /// Call id.
        call_id: CallId,
        /// Why.
        reason: EndReason,
        /// Whole seconds since it connected (0 if it never did).
        duration_s: u64,
    },
    /// A relayed media negotiation message.
    #[serde(rename = "signal")]
    Signal {
        /// Call id.
        call_id: CallId,
        /// The sender.
        from: UserId,
        /// (Added, in calls placed with `connect_early`) the sender's device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from_device: Option<String>,
        /// A [`SignalPayload`], as the sender wrote it.
        payload: Value,
    },
    /// A followed user's presence changed.
    #[serde(rename = "presence")]
    Presence {
        /// Who.
        user: UserId,
        /// Now.
        status: PresenceStatus,
    },
    /// The server is closing this session.
    #[serde(rename = "kicked")]
    Kicked {
        /// Why.
        reason: KickReason,
    },
    /// A `type` this client does not know (a newer server); ignore it.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl ServerMessage {
    /// An `ok` with no fields.
    pub fn ok(re: Option<String>) -> Self {
        ServerMessage::Ok { re, body: OkBody::default() }
    }

    /// An `error`.
    pub fn error(re: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error { re, code, message: message.into() }
    }

    /// The call this message is about, if any (for logs and routing).
    pub fn call_id(&self) -> Option<&str> {
        use ServerMessage::*;
        match self {
            CallIncoming { call_id, .. }
            | CallCancelled { call_id, .. }
            | CallAccepted { call_id, .. }
            | CallRejected { call_id, .. }
            | CallBusy { call_id, .. }
            | CallNoAnswer { call_id, .. }
            | CallTimeout { call_id }
            | CallHandledElsewhere { call_id, .. }
            | CallInvited { call_id, .. }
            | CallLeft { call_id, .. }
            | CallMediaChanged { call_id, .. }
            | CallEnded { call_id, .. }
            | Signal { call_id, .. } => Some(call_id),
            _ => None,
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> (Option<String>, ErrorCode) {
        let e = parse_client_frame(text).unwrap_err();
        (e.re, e.code)
    }

    #[test]
    fn kick_reasons_read_as_the_wire_spells_them_and_a_new_one_is_unknown() {
        let kicked = |text: &str| match serde_json::from_str::<ServerMessage>(text).unwrap() {
            ServerMessage::Kicked { reason } => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(kicked(r#"{"type":"kicked","reason":"replaced"}"#), KickReason::Replaced);
        assert_eq!(kicked(r#"{"type":"kicked","reason":"account_removed"}"#), KickReason::AccountRemoved);
        assert_eq!(kicked(r#"{"type":"kicked","reason":"maintenance"}"#), KickReason::Unknown, "a newer server's reason");
        let json = serde_json::to_string(&ServerMessage::Kicked { reason: KickReason::Shutdown }).unwrap();
        assert_eq!(json, r#"{"type":"kicked","reason":"shutdown"}"#);
        for reason in [KickReason::Replaced, KickReason::AccountRemoved, KickReason::Shutdown] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(code_of("not json"), (None, ErrorCode::BadRequest));
        assert_eq!(code_of("[1,2]"), (None, ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"id":"1"}"#), (Some("1".into()), ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"type":7}"#), (None, ErrorCode::BadRequest));
        assert_eq!(code_of(&format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(65))), (None, ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"type":"call.accept","id":"2"}"#), (Some("2".into()), ErrorCode::BadRequest));
        assert_eq!(code_of(r#"{"type":"call.invite","id":"3","to":["b"],"media":"smell"}"#), (Some("3".into()), ErrorCode::BadRequest));
        let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(MAX_FRAME_BYTES));
        assert_eq!(code_of(&huge), (None, ErrorCode::PayloadTooLarge));
    }

    #[test]
    fn unknown_type_is_unsupported_and_not_a_bad_frame() {
        let e = parse_client_frame(r#"{"type":"call.teleport","id":"9"}"#).unwrap_err();
        assert_eq!((e.re.as_deref(), e.code), (Some("9"), ErrorCode::Unsupported));
        assert!(!e.is_bad_frame());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let frame = parse_client_frame(r#"{"type":"call.cancel","id":"4","call_id":"c1","future":{"x":1}}"#).unwrap();
        assert_eq!(frame, ClientFrame::new("4", ClientMessage::CallCancel { call_id: "c1".into() }));
    }

    #[test]
    fn every_type_is_listed() {
        // Serialize one of each request and check its tag is in TYPES and parses back.
        let samples = [
            ClientMessage::Hello { token: "t".into(), protocol: vec![1], device: "d".into(), client: None },
            ClientMessage::Ping,
            ClientMessage::PresenceQuery { users: vec!["a".into()] },
            ClientMessage::PresenceSubscribe { users: vec![] },
            ClientMessage::ProfileSet { nickname: Some("A".into()), avatar: None },
            ClientMessage::UsersGet { users: vec![] },
            ClientMessage::ContactsList,
            ClientMessage::ContactsAdd { user: "b".into(), alias: None },
            ClientMessage::ContactsRemove { user: "b".into() },
            ClientMessage::CallInvite { to: vec!["b".into()], media: Media::Video, timeout_s: Some(5), user_data: None, connect_early: true },
            ClientMessage::CallCancel { call_id: "c".into() },
            ClientMessage::CallAccept { call_id: "c".into() },
            ClientMessage::CallReject { call_id: "c".into() },
            ClientMessage::CallHangup { call_id: "c".into(), reason: Some(HangupReason::Failed) },
            ClientMessage::CallInviteMore { call_id: "c".into(), to: vec!["d".into()] },
            ClientMessage::CallJoin { call_id: "c".into() },
            ClientMessage::CallMedia { call_id: "c".into(), media: Media::Audio },
            ClientMessage::Signal { call_id: "c".into(), to: "b".into(), to_device: Some("d".into()), payload: serde_json::json!({"kind":"ready"}) },
            ClientMessage::CallsActive,
            ClientMessage::CallsHistory { before: None, limit: Some(3) },
            ClientMessage::CallsDelete { call_ids: vec!["c".into()] },
            ClientMessage::CallQuality { call_id: "c".into(), quality: CallQuality { mos_average: 4.1, mos_worst: 3.2 } },
        ];
        assert_eq!(samples.len(), ClientMessage::TYPES.len());
        for (sample, kind) in samples.into_iter().zip(ClientMessage::TYPES) {
            let frame = ClientFrame::new("1", sample);
            let json: Value = serde_json::from_str(&frame.to_json()).unwrap();
            assert_eq!(json["type"], kind);
            assert_eq!(parse_client_frame(&frame.to_json()).unwrap(), frame);
        }
    }

    #[test]
    fn the_early_connection_fields_stay_out_of_frames_that_do_not_use_them() {
        let invite = ClientMessage::CallInvite { to: vec!["b".into()], media: Media::Audio, timeout_s: None, user_data: None, connect_early: false };
        let json: Value = serde_json::from_str(&ClientFrame::new("1", invite).to_json()).unwrap();
        assert_eq!(json, serde_json::json!({"id":"1","type":"call.invite","to":["b"],"media":"audio"}));
        let relayed = ServerMessage::Signal { call_id: "c".into(), from: "a".into(), from_device: None, payload: serde_json::json!({"kind":"restart"}) };
        assert_eq!(serde_json::to_value(&relayed).unwrap(), serde_json::json!({"type":"signal","call_id":"c","from":"a","payload":{"kind":"restart"}}));
        let v1: ServerMessage = serde_json::from_str(r#"{"type":"call.accepted","call_id":"c","user":"b"}"#).unwrap();
        assert_eq!(v1, ServerMessage::CallAccepted { call_id: "c".into(), user: "b".into(), device: None });
        let ready: SignalPayload = serde_json::from_str(r#"{"kind":"ready"}"#).unwrap();
        assert_eq!(ready, SignalPayload::Ready);
    }

    #[test]
    fn signal_payloads() {
        let candidate: SignalPayload = serde_json::from_str(
            r#"{"kind":"candidate","candidate":"candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host","sdp_mid":"0","sdp_mline_index":null}"#,
        )
        .unwrap();
        assert!(matches!(candidate, SignalPayload::Candidate { sdp_mline_index: None, .. }));
        let end: SignalPayload = serde_json::from_str(r#"{"kind":"end_of_candidates"}"#).unwrap();
        assert_eq!(end, SignalPayload::EndOfCandidates);
    }
}
