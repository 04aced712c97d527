//! One WebSocket connection: hello, frame limits, keepalive, and the requests that need no hub.
//!
//! The task owns its socket and does everything in one `select!` loop (one task per connection
//! keeps the per-session memory small): frames from the client, frames the hub queued for it,
//! the keepalive ping, the idle deadline and the shutdown signal. It enforces the transport rules
//! of PROTOCOL.md (hello within 10 s, 64 KiB frames, 20 bad frames in 10 s close with 1008, 30 s
//! idle; invalid UTF-8 closes with 1007 and frames over 1 MiB with 1009) and validates each
//! request's shape and sizes before anything reaches the hub.
//!
//! No write may outlive the session's welcome: a client that stops reading fills its socket, and
//! a write into a full socket waits forever. So every write has a deadline (at most
//! [`SEND_LIMIT`], and never past the idle deadline), a write that misses it ends the session, and
//! a session is closed at most a second after the 30 s idle rule says so, reading or not. Every
//! answer stays under 1 MiB: `users.get` names at most 50 distinct users, and an answer that would
//! still be larger is replaced by a `payload_too_large` error. Requests about
//! accounts, contacts, profiles and history go straight to the store from here, so the hub only
//! sees what touches live calls. While a request waits for the store, the frames the hub queued
//! for the session keep going out (the client's next frames wait, so requests stay in order): a
//! slow database delays a session's own answers, and never fills its queue until it is dropped
//! as too slow.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use hark_protocol::token::{self, TokenError};
use hark_protocol::{
    parse_client_frame, valid_name_chars, valid_user_id, CallSummary, ClientMessage, Contact, ErrorCode, HangupReason, KickReason, OkBody, PresenceStatus,
    ServerMessage, UserId, MAX_AVATAR_BYTES, MAX_SERVER_FRAME_BYTES, MAX_SIGNAL_PAYLOAD_BYTES, MAX_USERS_GET,
    MAX_USER_DATA_BYTES, PROTOCOL_VERSION,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info_span, warn, Instrument};

use crate::hub::{HubCommand, Outbound, SESSION_QUEUE};
use crate::metrics::Metrics;
use crate::registry::{presence, CallRequest, RegistryInput, SessionId};
use crate::store::AccountState;
use crate::AppState;

const BAD_FRAME_WINDOW: Duration = Duration::from_secs(10);
const BAD_FRAME_LIMIT: usize = 20;
/// Most users named in one presence request.
const MAX_USERS_PER_REQUEST: usize = 1000;
/// Most contacts one account keeps (a `contacts.list` answer stays well under 1 MiB).
const MAX_CONTACTS: usize = 1000;
/// Longest a write to the client may take; a client that has not taken a frame in this long
/// has stopped reading.
const SEND_LIMIT: Duration = Duration::from_secs(10);
/// Longest a close frame may take to go out: the session is ending either way.
const CLOSE_LIMIT: Duration = Duration::from_secs(1);
/// Longest device id, in characters.
const MAX_DEVICE_CHARS: usize = 64;
/// WebSocket close code for protocol violations.
const POLICY_VIOLATION: u16 = 1008;
/// WebSocket close code for a text frame that is not UTF-8 (RFC 6455 section 7.4.1).
const INVALID_DATA: u16 = 1007;
/// WebSocket close code for a frame too big to take (RFC 6455 section 7.4.1).
const MESSAGE_TOO_BIG: u16 = 1009;
const GOING_AWAY: u16 = 1001;
const NORMAL: u16 = 1000;

/// Serves one upgraded connection until it closes.
pub async fn serve(socket: WebSocket, state: Arc<AppState>) {
    let _connection = GaugeGuard::enter(&state.metrics, |m| &m.connections);
    let idle_limit = state.config.transport.idle_limit;
    let mut conn = Connection { socket, state, bad_frames: VecDeque::new(), last_seen: Instant::now(), idle_limit, gone: false, held_end: None };
    let Some(hello) = conn.await_hello().await else { return };
    let span = info_span!("session", user = %hello.user, device = %hello.device);
    conn.run(hello).instrument(span).await;
}

struct Hello {
    re: Option<String>,
    user: UserId,
    device: String,
    /// The token's `iat`.
    issued_at: Option<i64>,
}

/// What to do after a frame.
enum Flow {
    Continue,
    Close,
}

struct Connection {
    socket: WebSocket,
    state: Arc<AppState>,
    bad_frames: VecDeque<Instant>,
    /// When the client was last heard (any frame, pongs included).
    last_seen: Instant,
    idle_limit: Duration,
    /// A write failed or missed its deadline: the socket is unusable and the session ends.
    gone: bool,
    /// What the hub's channel gave while a request waited that ends the session (a kick, or the
    /// channel closing); acted on once the request is answered.
    held_end: Option<Option<Outbound>>,
}

impl Connection {
    /// Reads frames until a valid `hello`; `None` if the connection ended or was closed for cause.
    async fn await_hello(&mut self) -> Option<Hello> {
        let deadline = Instant::now() + self.state.config.transport.hello_within;
        loop {
            if self.gone {
                return None;
            }
            let message = match tokio::time::timeout_at(deadline, self.socket.recv()).await {
                Err(_) => {
                    self.close(POLICY_VIOLATION, "no hello within 10 s").await;
                    return None;
                }
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    self.close_for(&error).await;
                    return None;
                }
                Ok(None) => return None,
            };
            self.last_seen = Instant::now();
            let text = match message {
                Message::Text(text) => text,
                Message::Binary(_) => {
                    self.fail(None, ErrorCode::BadRequest, "frames are JSON text").await;
                    if self.bad_frame().await {
                        return None;
                    }
                    continue;
                }
                Message::Close(_) => return None,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            self.state.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
            let frame = match parse_client_frame(text.as_str()) {
                Ok(frame) => frame,
                Err(e) => {
                    self.fail(e.re.clone(), e.code, &e.message).await;
                    if e.is_bad_frame() && self.bad_frame().await {
                        return None;
                    }
                    continue;
                }
            };
            let ClientMessage::Hello { token, protocol, device, .. } = frame.message else {
                self.fail(frame.id, ErrorCode::Unauthorized, "send hello first").await;
                continue;
            };
            let re = frame.id;
            if !protocol.contains(&PROTOCOL_VERSION) {
                return self.refuse_hello(re, ErrorCode::UnsupportedVersion, "this server speaks protocol 1").await;
            }
            let now_ms = self.state.clock.now_ms();
            let (user, issued_at) = match token::verify(&self.state.secret, &token, now_ms.div_euclid(1000)) {
                Ok(claims) if valid_user_id(&claims.user) => (claims.user, claims.iat),
                Ok(_) | Err(TokenError::Malformed | TokenError::BadSignature) => {
                    return self.refuse_hello(re, ErrorCode::Unauthorized, "bad token").await;
                }
                Err(TokenError::Expired) => {
                    return self.refuse_hello(re, ErrorCode::TokenExpired, "the token has expired; sign in again").await;
                }
            };
            if device.is_empty() || device.chars().count() > MAX_DEVICE_CHARS {
                self.fail(re, ErrorCode::BadRequest, "device must be 1 to 64 characters").await;
                continue;
            }
            match self.state.store.ensure_user(&user, now_ms).await {
                Ok(account) if account.accepts_token(issued_at) => return Some(Hello { re, user, device, issued_at }),
                Ok(AccountState::Removed) => {
                    return self.refuse_hello(re, ErrorCode::Unauthorized, "this account was removed").await;
                }
                Ok(AccountState::Active { .. }) => {
                    // The id was removed and registered again: this token is the old owner's.
                    return self.refuse_hello(re, ErrorCode::Unauthorized, "this token predates the account; sign in again").await;
                }
                Err(e) => {
                    warn!(error = %e, "cannot look up account");
                    return self.refuse_hello(re, ErrorCode::Internal, "try again later").await;
                }
            }
        }
    }

    async fn refuse_hello(&mut self, re: Option<String>, code: ErrorCode, message: &str) -> Option<Hello> {
        self.fail(re, code, message).await;
        self.close(POLICY_VIOLATION, message).await;
        None
    }

    /// The signed-in part of the session.
    async fn run(&mut self, hello: Hello) {
        let state = Arc::clone(&self.state);
        let session: SessionId = state.session_tag.session(state.next_session.fetch_add(1, Ordering::Relaxed));
        let (sender, mut outbound) = mpsc::channel(SESSION_QUEUE);
        let (reply, joined) = oneshot::channel();
        let open = HubCommand::Open { session, user: hello.user.clone(), device: hello.device, sender, reply };
        if state.hub.send(open).await.is_err() {
            self.close(GOING_AWAY, "server shutting down").await;
            return;
        }
        // The answer waits on the outbox, which waits on the database: a shutdown must not.
        let mut stop = state.shutdown.clone();
        let joined_calls: Vec<CallSummary> = tokio::select! {
            answer = joined => answer.unwrap_or_default(),
            _ = shutting_down(&mut stop) => {
                self.close(GOING_AWAY, "server shutting down").await;
                let _ = state.hub.send(HubCommand::Input(RegistryInput::Close { session })).await;
                return;
            }
        };
        // A removal that committed between our account check and the hub taking this session in
        // may have been acted on before the hub knew of us: look once more, now that it does.
        match state.store.account_state(&hello.user).await {
            Ok(Some(account)) if account.accepts_token(hello.issued_at) => {}
            Ok(_) => {
                self.send(&ServerMessage::Kicked { reason: KickReason::AccountRemoved }).await;
                self.close(NORMAL, KickReason::AccountRemoved.as_str()).await;
                let _ = state.hub.send(HubCommand::Input(RegistryInput::Close { session })).await;
                return;
            }
            Err(e) => warn!(error = %e, "cannot look up account"),
        }
        let _signed_in = GaugeGuard::enter(&state.metrics, |m| &m.sessions);
        let welcome = self.welcome(hello.re, &hello.user, session, joined_calls);
        let mut flow = if self.send(&welcome).await { Flow::Continue } else { Flow::Close };

        let mut shutdown = state.shutdown.clone();
        let timers = state.config.transport;
        let mut pings = tokio::time::interval_at(Instant::now() + timers.ping_every, timers.ping_every);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Reset only when it fires (not on every frame): it then sleeps on to the new deadline.
        let idle = tokio::time::sleep_until(self.last_seen + self.idle_limit);
        tokio::pin!(idle);
        while let (Flow::Continue, false) = (&flow, self.gone) {
            if let Some(end) = self.held_end.take() {
                flow = self.on_outbound(end).await;
                continue;
            }
            flow = tokio::select! {
                incoming = self.socket.recv() => {
                    self.last_seen = Instant::now();
                    match incoming {
                        Some(Ok(Message::Text(text))) => {
                            state.metrics.frames_in.fetch_add(1, Ordering::Relaxed);
                            self.handle_frame(session, &hello.user, text.as_str(), &mut outbound).await
                        }
                        Some(Ok(Message::Binary(_))) => {
                            self.fail(None, ErrorCode::BadRequest, "frames are JSON text").await;
                            if self.bad_frame().await { Flow::Close } else { Flow::Continue }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
                        Some(Err(error)) => {
                            self.close_for(&error).await;
                            Flow::Close
                        }
                        Some(Ok(Message::Close(_))) | None => Flow::Close,
                    }
                }
                queued = outbound.recv() => self.on_outbound(queued).await,
                () = &mut idle => {
                    let deadline = self.last_seen + self.idle_limit;
                    if Instant::now() >= deadline {
                        debug!("idle session closed");
                        self.close(NORMAL, "idle").await;
                        Flow::Close
                    } else {
                        idle.as_mut().reset(deadline);
                        Flow::Continue
                    }
                }
                _ = pings.tick() => {
                    if self.send_message(Message::Ping(Default::default())).await { Flow::Continue } else { Flow::Close }
                }
                _ = shutdown.changed() => {
                    self.send(&ServerMessage::Kicked { reason: KickReason::Shutdown }).await;
                    self.close(GOING_AWAY, "server shutting down").await;
                    Flow::Close
                }
            };
        }
        let _ = state.hub.send(HubCommand::Input(RegistryInput::Close { session })).await;
    }

    /// Acts on what the hub's channel gave: a frame to pass on, a kick, or the channel closing.
    async fn on_outbound(&mut self, queued: Option<Outbound>) -> Flow {
        match queued {
            Some(Outbound::Frame(text)) if text.len() > MAX_SERVER_FRAME_BYTES => {
                warn!(bytes = text.len(), "an event over the frame limit was not sent");
                Flow::Continue
            }
            Some(Outbound::Frame(text)) => {
                if self.send_text(text).await {
                    Flow::Continue
                } else {
                    Flow::Close
                }
            }
            Some(Outbound::Kick(reason)) => {
                self.send(&ServerMessage::Kicked { reason }).await;
                self.close(NORMAL, reason.as_str()).await;
                Flow::Close
            }
            None => {
                // The outbox dropped us: this session fell too far behind.
                self.close(POLICY_VIOLATION, "too slow").await;
                Flow::Close
            }
        }
    }

    /// Awaits `work` while the frames the hub queues for this session keep going out. A kick or
    /// the channel's end is held until the work is done (its answer is sent first). `None` if
    /// the server began to shut down first: the work is dropped, and the session loop says so.
    async fn meanwhile<T>(&mut self, outbound: &mut mpsc::Receiver<Outbound>, work: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(work);
        let mut stop = self.state.shutdown.clone();
        loop {
            if self.gone || self.held_end.is_some() {
                return tokio::select! {
                    done = &mut work => Some(done),
                    _ = shutting_down(&mut stop) => None,
                };
            }
            tokio::select! {
                biased;
                done = &mut work => return Some(done),
                _ = shutting_down(&mut stop) => return None,
                queued = outbound.recv() => match queued {
                    Some(Outbound::Frame(_)) => {
                        self.on_outbound(queued).await;
                    }
                    end => self.held_end = Some(end),
                },
            }
        }
    }

    fn welcome(&self, re: Option<String>, user: &str, session: SessionId, joined_calls: Vec<CallSummary>) -> ServerMessage {
        let config = &self.state.config;
        let now_s = self.state.clock.now_ms().div_euclid(1000);
        let mut ice_servers = Vec::new();
        if !config.stun_urls.is_empty() {
            ice_servers.push(hark_protocol::IceServer { urls: config.stun_urls.clone(), username: None, credential: None });
        }
        if let Some(turn) = &config.turn {
            let (username, credential) = crate::accounts::turn_credentials(&turn.secret, user, now_s + turn.ttl_s);
            ice_servers.push(hark_protocol::IceServer {
                urls: turn.urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        ServerMessage::Welcome {
            re,
            protocol: PROTOCOL_VERSION,
            user: user.to_owned(),
            session: format!("s_{:08x}{session:x}", self.state.session_prefix),
            server_time: self.state.clock.now_ms(),
            ice_servers,
            ice_transport_policy: config.ice_transport_policy,
            max_participants: config.max_participants,
            joined_calls,
        }
    }

    /// Handles one text frame of a signed-in session.
    async fn handle_frame(&mut self, session: SessionId, user: &str, text: &str, outbound: &mut mpsc::Receiver<Outbound>) -> Flow {
        let frame = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.fail(e.re.clone(), e.code, &e.message).await;
                return if e.is_bad_frame() && self.bad_frame().await { Flow::Close } else { Flow::Continue };
            }
        };
        let re = frame.id;
        let work = answer(Arc::clone(&self.state), session, user.to_owned(), re.clone(), frame.message, text.len());
        let Some(outcome) = self.meanwhile(outbound, work).await else {
            // Shutting down: the session loop tells the client.
            return Flow::Continue;
        };
        match outcome {
            Ok(Some(body)) => {
                self.send(&ServerMessage::Ok { re, body }).await;
            }
            // The hub answers it.
            Ok(None) => {}
            Err(Refusal(code, message)) => self.fail(re, code, &message).await,
        }
        Flow::Continue
    }

    async fn fail(&mut self, re: Option<String>, code: ErrorCode, message: &str) {
        self.state.metrics.count_error(code);
        self.send(&ServerMessage::error(re, code, message)).await;
    }

    /// Counts a bad frame; at the limit, closes the socket with 1008 and returns true.
    async fn bad_frame(&mut self) -> bool {
        let now = Instant::now();
        while self.bad_frames.front().is_some_and(|at| now.duration_since(*at) > BAD_FRAME_WINDOW) {
            self.bad_frames.pop_front();
        }
        self.bad_frames.push_back(now);
        if self.bad_frames.len() >= BAD_FRAME_LIMIT {
            self.close(POLICY_VIOLATION, "too many bad frames").await;
            return true;
        }
        false
    }

    /// Sends a frame; an answer that would pass the frame limit goes out as `payload_too_large`.
    async fn send(&mut self, message: &ServerMessage) -> bool {
        let text = message.to_json();
        if text.len() > MAX_SERVER_FRAME_BYTES {
            warn!(bytes = text.len(), "an answer over the frame limit was not sent");
            let re = match message {
                ServerMessage::Ok { re, .. } => re.clone(),
                _ => None,
            };
            let refusal = ServerMessage::error(re, ErrorCode::PayloadTooLarge, "the answer would be over 1 MiB; ask for less");
            return self.send_text(refusal.to_json()).await;
        }
        self.send_text(text).await
    }

    async fn send_text(&mut self, text: String) -> bool {
        self.state.metrics.frames_out.fetch_add(1, Ordering::Relaxed);
        self.send_message(Message::Text(text.into())).await
    }

    /// Writes a message within its deadline: [`SEND_LIMIT`], and never past the idle deadline
    /// (plus [`CLOSE_LIMIT`]), so a blocked write cannot keep a silent session alive. False, and
    /// the session is over, if it failed or missed it.
    async fn send_message(&mut self, message: Message) -> bool {
        if self.gone {
            return false;
        }
        let now = Instant::now();
        let deadline = (self.last_seen + self.idle_limit).max(now + CLOSE_LIMIT).min(now + SEND_LIMIT);
        let sent = matches!(tokio::time::timeout_at(deadline, self.socket.send(message)).await, Ok(Ok(())));
        if !sent {
            debug!("a write to the client failed or timed out; closing");
            self.gone = true;
        }
        sent
    }

    async fn close(&mut self, code: u16, reason: &str) {
        if self.gone {
            return;
        }
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = tokio::time::timeout(CLOSE_LIMIT, self.socket.send(Message::Close(Some(frame)))).await;
        self.gone = true;
    }

    /// Closes with the code RFC 6455 gives a read error: 1007 for a text frame that is not UTF-8,
    /// 1009 for a frame over the size limit; other errors (the connection broke) just end it.
    async fn close_for(&mut self, error: &axum::Error) {
        match std::error::Error::source(error).and_then(|e| e.downcast_ref::<tungstenite::Error>()) {
            Some(tungstenite::Error::Utf8(_)) => self.close(INVALID_DATA, "text frames must be UTF-8").await,
            Some(tungstenite::Error::Capacity(_)) => self.close(MESSAGE_TOO_BIG, "frames are at most 1 MiB").await,
            _ => {
                debug!(%error, "connection broke");
                self.gone = true;
            }
        }
    }
}

/// Answers one request: `Some` body for an `ok` sent from here, `None` when the request went
/// to the hub, which answers it. `frame_len` is the size of the frame it came in. It touches
/// no socket, so the session can pass the hub's frames on while it waits for the store.
async fn answer(
    state: Arc<AppState>,
    session: SessionId,
    user: UserId,
    re: Option<String>,
    message: ClientMessage,
    frame_len: usize,
) -> Result<Option<OkBody>, Refusal> {
    let user = user.as_str();
    let now = state.clock.now_ms();
    let request = match message {
        ClientMessage::Hello { .. } => return Err(Refusal(ErrorCode::InvalidState, "already signed in".into())),
        ClientMessage::Ping => return Ok(Some(OkBody::default())),
        ClientMessage::PresenceQuery { users } | ClientMessage::PresenceSubscribe { users }
            if users.len() > MAX_USERS_PER_REQUEST =>
        {
            return Err(Refusal(ErrorCode::BadRequest, format!("at most {MAX_USERS_PER_REQUEST} users")));
        }
        ClientMessage::PresenceQuery { users } => {
            let statuses = statuses(&state, &users).await?;
            return Ok(Some(OkBody { statuses: Some(statuses), ..OkBody::default() }));
        }
        ClientMessage::PresenceSubscribe { users } => {
            if let Some(bad) = users.iter().find(|u| !valid_user_id(u)) {
                return Err(Refusal(ErrorCode::BadRequest, format!("'{}' is not a user id", bad.chars().take(40).collect::<String>())));
            }
            to_hub(&state, HubCommand::Input(RegistryInput::Subscribe { session, users: users.clone() })).await?;
            let statuses = statuses(&state, &users).await?;
            return Ok(Some(OkBody { statuses: Some(statuses), ..OkBody::default() }));
        }
        ClientMessage::ProfileSet { nickname, avatar } => {
            if nickname.as_ref().is_some_and(|n| n.trim().is_empty() || !valid_name_chars(n)) {
                return Err(Refusal(ErrorCode::BadRequest, "nickname must be 1 to 64 characters, none of them control characters".into()));
            }
            if avatar.as_ref().is_some_and(|a| a.len() > MAX_AVATAR_BYTES) {
                return Err(Refusal(ErrorCode::PayloadTooLarge, "avatar over 16 KiB".into()));
            }
            // URLs and data URIs are printable ASCII; anything else could grow six-fold when
            // escaped into JSON, past the size its limit promises.
            if avatar.as_ref().is_some_and(|a| !a.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')) {
                return Err(Refusal(ErrorCode::BadRequest, "an avatar is a URL or data URI (printable ASCII, no quotes or backslashes)".into()));
            }
            state.store.set_profile(user, nickname.as_deref(), avatar.as_deref()).await.map_err(internal)?;
            return Ok(Some(OkBody::default()));
        }
        ClientMessage::UsersGet { users } => {
            // Each profile may carry a 16 KiB avatar: naming one user a thousand times once
            // made an 11 KB request into a 16 MB answer.
            let mut distinct = HashSet::new();
            let users: Vec<UserId> = users.into_iter().filter(|u| distinct.insert(u.clone())).collect();
            if users.len() > MAX_USERS_GET {
                return Err(Refusal(ErrorCode::BadRequest, format!("at most {MAX_USERS_GET} distinct users")));
            }
            let profiles = state.store.profiles(&users).await.map_err(internal)?;
            return Ok(Some(OkBody { users: Some(profiles), ..OkBody::default() }));
        }
        ClientMessage::ContactsList => {
            let rows = state.store.contacts(user).await.map_err(internal)?;
            let online = online(&state, rows.iter().map(|r| r.user.clone()).collect()).await?;
            let contacts = rows
                .into_iter()
                .zip(online)
                .map(|(row, online)| Contact {
                    status: presence(online, row.registered),
                    user: row.user,
                    nickname: row.nickname,
                    alias: row.alias,
                })
                .collect();
            return Ok(Some(OkBody { contacts: Some(contacts), ..OkBody::default() }));
        }
        ClientMessage::ContactsAdd { user: contact, alias } => {
            if contact == user {
                return Err(Refusal(ErrorCode::BadRequest, "you cannot add yourself".into()));
            }
            if alias.as_ref().is_some_and(|a| !valid_name_chars(a)) {
                return Err(Refusal(ErrorCode::BadRequest, "an alias is at most 64 characters, none of them control characters".into()));
            }
            require_users(&state, std::slice::from_ref(&contact)).await?;
            if !state.store.has_contact(user, &contact).await.map_err(internal)?
                && state.store.contact_count(user).await.map_err(internal)? >= MAX_CONTACTS
            {
                return Err(Refusal(ErrorCode::BadRequest, format!("at most {MAX_CONTACTS} contacts")));
            }
            state.store.add_contact(user, &contact, alias.as_deref(), now).await.map_err(internal)?;
            return Ok(Some(OkBody::default()));
        }
        ClientMessage::ContactsRemove { user: contact } => {
            state.store.remove_contact(user, &contact).await.map_err(internal)?;
            return Ok(Some(OkBody::default()));
        }
        ClientMessage::CallsHistory { before, limit } => {
            let limit = limit.unwrap_or(50);
            if !(1..=200).contains(&limit) {
                return Err(Refusal(ErrorCode::BadRequest, "limit must be 1 to 200".into()));
            }
            let records = state.store.history(user, before, limit).await.map_err(internal)?;
            return Ok(Some(OkBody { records: Some(records), ..OkBody::default() }));
        }
        ClientMessage::CallQuality { call_id, quality } => {
            if !quality.is_valid() {
                return Err(Refusal(ErrorCode::BadRequest, "scores are MOS from 1 to 4.5, the worst no better than the average".into()));
            }
            // Only the person's own record of a call they were connected in: the record is
            // on disk by the time they have seen the call end (or the ok of their hangup).
            if !state.store.set_record_quality(user, &call_id, &quality).await.map_err(internal)? {
                return Err(Refusal(ErrorCode::NotFound, format!("no record of a connected call '{call_id}' for you")));
            }
            return Ok(Some(OkBody::default()));
        }
        ClientMessage::CallsDelete { call_ids } => {
            if call_ids.len() > 200 {
                return Err(Refusal(ErrorCode::BadRequest, "at most 200 call ids".into()));
            }
            state.store.delete_records(user, &call_ids).await.map_err(internal)?;
            return Ok(Some(OkBody::default()));
        }
        ClientMessage::CallInvite { to, media, timeout_s, user_data, connect_early } => {
            if user_data.as_ref().is_some_and(|d| d.len() > MAX_USER_DATA_BYTES) {
                return Err(Refusal(ErrorCode::PayloadTooLarge, "user_data over 4 KiB".into()));
            }
            if to.len() >= state.config.max_participants as usize {
                let max = state.config.max_participants;
                return Err(Refusal(ErrorCode::TooManyParticipants, format!("a call holds at most {max} people")));
            }
            check_invitees(&state, user, &to, now).await?;
            state.metrics.invites.fetch_add(1, Ordering::Relaxed);
            CallRequest::Invite { to, media, timeout_s, user_data, connect_early }
        }
        ClientMessage::CallInviteMore { call_id, to } => {
            check_invitees(&state, user, &to, now).await?;
            CallRequest::InviteMore { call_id, to }
        }
        ClientMessage::CallCancel { call_id } => CallRequest::Cancel { call_id },
        ClientMessage::CallAccept { call_id } => CallRequest::Accept { call_id },
        ClientMessage::CallReject { call_id } => CallRequest::Reject { call_id },
        ClientMessage::CallHangup { call_id, reason } => CallRequest::Hangup { call_id, gave_up: reason == Some(HangupReason::Failed) },
        ClientMessage::CallJoin { call_id } => CallRequest::Join { call_id },
        ClientMessage::CallMedia { call_id, media } => CallRequest::Media { call_id, media },
        ClientMessage::Signal { call_id, to, to_device, payload } => {
            if !payload.is_object() {
                return Err(Refusal(ErrorCode::BadRequest, "payload must be an object".into()));
            }
            // A payload is never larger than its frame: only frames over the limit (rare:
            // candidates and SDP are small) pay for measuring the payload itself.
            if frame_len > MAX_SIGNAL_PAYLOAD_BYTES && payload.to_string().len() > MAX_SIGNAL_PAYLOAD_BYTES {
                return Err(Refusal(ErrorCode::PayloadTooLarge, "payload over 32 KiB".into()));
            }
            CallRequest::Signal { call_id, to, to_device, payload }
        }
        ClientMessage::CallsActive => CallRequest::Active,
    };
    to_hub(&state, HubCommand::Input(RegistryInput::Request { session, re, request })).await.map(|()| None)
}

/// Resolves once the server has begun to shut down (at once if it has).
async fn shutting_down(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns may not be held across an await: drop it here.
    let _ = stop.wait_for(|down| *down).await.map(|_| ());
}

/// Invitees must be well-formed ids of existing accounts, and the inviter within its rate.
async fn check_invitees(state: &AppState, user: &str, to: &[UserId], now: i64) -> Result<(), Refusal> {
    if let Some(bad) = to.iter().find(|u| !valid_user_id(u)) {
        return Err(Refusal(ErrorCode::BadRequest, format!("'{}' is not a user id", bad.chars().take(40).collect::<String>())));
    }
    if to.len() > MAX_USERS_PER_REQUEST {
        return Err(Refusal(ErrorCode::TooManyParticipants, "too many invitees".into()));
    }
    if !state.invites.allow(user, now) {
        return Err(Refusal(ErrorCode::RateLimited, "too many calls; wait a minute".into()));
    }
    require_users(state, to).await
}

async fn require_users(state: &AppState, users: &[UserId]) -> Result<(), Refusal> {
    let existing = state.store.existing_users(users).await.map_err(internal)?;
    match users.iter().find(|u| !existing.contains(*u)) {
        Some(missing) => Err(Refusal(ErrorCode::NotFound, format!("no user '{missing}'"))),
        None => Ok(()),
    }
}

async fn statuses(state: &AppState, users: &[UserId]) -> Result<std::collections::BTreeMap<UserId, PresenceStatus>, Refusal> {
    let registered: HashSet<UserId> = state.store.existing_users(users).await.map_err(internal)?;
    let online = online(state, users.to_vec()).await?;
    Ok(users
        .iter()
        .zip(online)
        .map(|(u, online)| (u.clone(), presence(online, registered.contains(u))))
        .collect())
}

async fn online(state: &AppState, users: Vec<UserId>) -> Result<Vec<bool>, Refusal> {
    let (reply, answer) = oneshot::channel();
    to_hub(state, HubCommand::Online { users, reply }).await?;
    answer.await.map_err(|_| Refusal(ErrorCode::Internal, "server shutting down".into()))
}

async fn to_hub(state: &AppState, command: HubCommand) -> Result<(), Refusal> {
    state.hub.send(command).await.map_err(|_| Refusal(ErrorCode::Internal, "server shutting down".into()))
}

/// A refused request: the code and message of its `error` answer.
struct Refusal(ErrorCode, String);

fn internal(error: crate::store::StoreError) -> Refusal {
    warn!(%error, "storage failed");
    Refusal(ErrorCode::Internal, "storage failed; try again".into())
}

/// Adds one to a gauge for as long as it lives.
struct GaugeGuard {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicI64,
}

impl GaugeGuard {
    fn enter(metrics: &Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicI64) -> Self {
        gauge(metrics).fetch_add(1, Ordering::Relaxed);
        GaugeGuard { metrics: Arc::clone(metrics), gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}
