//! The engine: the call core wired to its drivers, behind one handle and one event channel.
//!
//! [`Engine::start`] spawns the engine task and returns `(Engine, events)`, LiveKit-style:
//! commands are methods on [`Engine`], everything that happens comes out of the event channel as
//! [`EngineEvent`]s. The task owns the [`CallCore`] and carries out its outputs in order: frames
//! go to the signaling driver, peer links are opened and closed, remote negotiation messages are
//! handed to the right link, the ringtone starts and stops, and call events go to the channel. It
//! feeds the core the server's frames, the links' negotiation messages and its timers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hark_protocol::{
    CallId, CallRecord, CallSummary, ClientFrame, Contact, ClientMessage, ErrorCode, IceTransportPolicy, KickReason, Media, OkBody, PresenceStatus,
    ServerMessage, UserId, UserProfile,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::audio::{AudioSink, AudioSource};
use crate::call_log::{CallLog, CallSnapshot, Mutes};
use crate::call_quality;
use crate::camera::{CameraInfo, CameraWatch};
use crate::clock::{Clock, SystemClock};
use crate::core::{CallCore, CallEvent, CallState, Command, CommandError, MediaEvent, Output, RingtoneCommand};
use crate::media::{AudioPipeline, Devices, MediaReport};
use crate::peer::{LinkKey, MediaKind, PeerCommand, PeerEvent, PeerLink, PeerSettings, VideoOutlet};
use crate::video::{NoVideo, VideoSink};
use crate::video_receive::VideoReceiveReport;
use crate::video_send::{one_at_a_time, CameraInUse, CameraOpener, VideoResolution, VideoSendReport, VideoSender};
use crate::policy::{CallPolicy, Forbidden};
use crate::voice_processing::ProcessingSettings;
use crate::sound_card::{DeviceInfo, DeviceWatcher, Direction, MicrophoneSource, SpeakerSink};
use crate::ringtone::{RingOutput, RingtoneChoice, RingtoneError, RingtoneErrorCode, RingtoneEvent, RingtoneKind, RingtonePlayer};
use crate::signaling::{self, SignalingConfig, SignalingEvent, SignalingHandle};

/// Everything the engine needs to start.
pub struct EngineConfig {
    /// Server and credentials.
    pub signaling: SignalingConfig,
    /// Local UDP addresses for peer connections.
    pub udp_addrs: Vec<String>,
    /// Microphone and speaker.
    pub devices: Devices,
    /// Where ringtones play: the sound card ([`crate::ringtone::RodioOutput`]), nowhere
    /// ([`crate::ringtone::SilentOutput`]) or a recording for tests.
    pub ring_output: Box<dyn RingOutput>,
    /// Echo cancellation and noise suppression of the microphone (both on by default).
    pub processing: ProcessingSettings,
    /// Watch the sound cards and report changes (apps with real devices; not headless tests).
    pub watch_devices: bool,
    /// Percent of received packets to drop on purpose (0 normally): a network impairment for
    /// tests and diagnostics, applied as they arrive (audio before the jitter buffer, video before
    /// reassembly).
    pub receive_loss_percent: f64,
    /// The camera and where remote video goes.
    pub video: VideoConfig,
    /// What the administrator allows ([`CallPolicy::default`]: everything).
    pub policy: CallPolicy,
}

/// Makes the sink for one remote person's pictures from their user id and whether the call is a
/// group call.
pub type VideoSinks = Arc<dyn Fn(&UserId, bool) -> Box<dyn VideoSink> + Send + Sync>;

/// The video side of the engine's configuration.
#[derive(Clone)]
pub struct VideoConfig {
    /// Opens the camera when a video call connects (on a thread of its own, which owns it until
    /// the call ends or goes down to audio); `None`: video calls are held without sending video.
    pub camera: Option<CameraOpener>,
    /// Makes the sink for one remote person's pictures: their user id, and whether the call is a
    /// group call.
    pub sinks: VideoSinks,
    /// Makes the sink for our own pictures, as the camera gives them (the self view and the
    /// caller's preview while a video call rings), one per camera session.
    pub preview: VideoPreview,
    /// The size 1:1 calls send at.
    pub resolution: VideoResolution,
    /// Lists the cameras (polled every [`CAMERA_POLL`] to notice hot-plug); `None`: not watched.
    pub cameras: Option<CameraLister>,
}

/// Makes the sink for our own pictures.
pub type VideoPreview = Arc<dyn Fn() -> Box<dyn VideoSink> + Send + Sync>;

/// Lists the cameras there are now ([`crate::camera::polled_lister`], or a stand-in in tests).
pub type CameraLister = Arc<dyn Fn() -> Vec<CameraInfo> + Send + Sync>;

/// How often the camera list is polled: V4L2 has no hot-plug events of its own, and listing opens
/// every video node, so not more often than a person would notice.
pub const CAMERA_POLL: std::time::Duration = std::time::Duration::from_secs(2);

impl VideoConfig {
    /// No camera, remote video dropped: an audio-only engine.
    pub fn none() -> Self {
        VideoConfig {
            camera: None,
            sinks: Arc::new(|_: &UserId, _| Box::new(NoVideo) as Box<dyn VideoSink>),
            preview: no_preview(),
            resolution: VideoResolution::P360,
            cameras: None,
        }
    }
}

/// A preview that shows nothing (a headless client).
pub fn no_preview() -> VideoPreview {
    Arc::new(|| Box::new(NoVideo) as Box<dyn VideoSink>)
}

/// Loss (percent, over the last two seconds) from which a link counts as weak.
pub const WEAK_LOSS_PERCENT: f64 = 8.0;
/// Round-trip time (ms) from which a link counts as weak.
pub const WEAK_RTT_MS: f64 = 400.0;

/// Everything that happens, on one channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum EngineEvent {
    /// Signed in (`resumed` after a reconnect).
    SignedIn {
        /// Who we are.
        user: UserId,
        /// Whether this follows a dropped connection.
        resumed: bool,
    },
    /// The signaling connection dropped; calls go on and it is being re-established.
    SignalingLost {
        /// Why, in words for logs.
        reason: String,
        /// The server closed the session on purpose, and why (a server stopping is `shutdown`).
        kicked: Option<KickReason>,
    },
    /// The server refused to sign us in; the engine cannot go on.
    SignInRefused {
        /// The protocol code.
        code: ErrorCode,
        /// The server's words.
        message: String,
    },
    /// The first audio from `user` was heard.
    RemoteAudioAvailable {
        /// Who.
        user: UserId,
    },
    /// Speaking level 0–100 of a person, about five times a second.
    VoiceLevel {
        /// Who.
        user: UserId,
        /// Level.
        level: u8,
    },
    /// Network quality of the link to a person.
    NetworkQuality {
        /// Who.
        user: UserId,
        /// Percent of packets lost over the last two seconds.
        loss_percent: f64,
        /// Round-trip time in ms.
        rtt_ms: Option<f64>,
        /// Inter-arrival jitter of their audio in ms, once our receiver has reported it.
        jitter_ms: Option<f64>,
        /// Whether it runs through a TURN relay.
        relayed: bool,
        /// Whether the link counts as weak ([`WEAK_LOSS_PERCENT`], [`WEAK_RTT_MS`]): decided here
        /// once, so every view shows the same badge.
        weak: bool,
        /// The call-quality score of this link: ITU-T G.107's transmission rating R (0–100,
        /// 93.2 at best; [`crate::call_quality`]).
        r_factor: f64,
        /// R as a mean opinion score, 1 (bad) to 4.5.
        mos: f64,
    },
    /// The connection to `user` (the caller, seen from a ringing device; one of their ringing
    /// devices, seen from the caller) is up while the call rings: answering starts media at once.
    /// Nothing is sent or played on it before the answer.
    ConnectedWhileRinging {
        /// Who.
        user: UserId,
    },
    /// Media from a person in the call stopped arriving (`reconnecting`: the path is being
    /// recovered, the call goes on) or came back (`connected`). Said on changes only: a link
    /// that connects is `connected` until said otherwise.
    MediaLink {
        /// Who.
        user: UserId,
        /// Whether packets arrive.
        state: crate::media_watchdog::MediaLinkState,
    },
    /// The ringtone should start or stop (the core's decision).
    Ringtone {
        /// `incoming`, `dialing` or `stop`.
        action: &'static str,
    },
    /// Our camera gives pictures (a video call connected, or the camera was turned back on).
    CameraStarted {
        /// Which camera.
        camera: String,
    },
    /// Our camera could not be opened, failed or stopped giving pictures; the call goes on, and
    /// the others see our video stop.
    CameraError {
        /// What happened.
        message: String,
    },
    /// Our camera was turned on or off: by the person, off by its failure, or back on for the next
    /// call after a failure. Video calls start with it as it was left.
    Camera {
        /// On.
        on: bool,
    },
    /// Our microphone or the call's sound was muted or unmuted (by any window, or lifted when a
    /// call ended).
    Mutes {
        /// Our microphone sends silence.
        microphone: bool,
        /// The others are not played.
        speaker: bool,
    },
    /// A camera was plugged in or out: the cameras there are now (the first is the default).
    /// Said once at start if there is a camera.
    CameraListChanged {
        /// The cameras.
        cameras: Vec<CameraInfo>,
    },
    /// The first picture of the call from `user` was decoded.
    FirstRemoteVideoFrame {
        /// Who.
        user: UserId,
    },
    /// `user`'s video flows (again).
    RemoteVideoAvailable {
        /// Who.
        user: UserId,
    },
    /// `user`'s video stopped (their camera went off, the call went down to audio, or the network
    /// dropped it).
    RemoteVideoUnavailable {
        /// Who.
        user: UserId,
    },
    /// `user`'s video cannot be decoded (not VP8, or broken); a keyframe was asked for. Said once
    /// until a picture from `user` shows again.
    RemoteVideoUndecodable {
        /// Who.
        user: UserId,
        /// The decoder's words.
        message: String,
    },
    /// A loss broke `user`'s picture: the last good one is held and a keyframe asked for.
    RemoteVideoFrozen {
        /// Who.
        user: UserId,
    },
    /// A keyframe ended the freeze of `user`'s picture.
    RemoteVideoRecovered {
        /// Who.
        user: UserId,
        /// How long it was frozen, from the first keyframe request, in ms.
        frozen_ms: u64,
        /// How long after the last keyframe request (a keyframe that was lost on the way is asked
        /// for again), in ms.
        after_request_ms: u64,
    },
    /// The bitrate our video is sent at now, in kbit/s (it follows the weakest peer's network).
    VideoBitrate {
        /// kbit/s.
        kbps: u32,
    },
    /// A ringtone is playing: which sound (`bundled:NAME` or `custom:PATH`).
    RingtonePlaying {
        /// `incoming` or `dialing`.
        kind: &'static str,
        /// The sound.
        source: String,
    },
    /// The ringtone stopped.
    RingtoneStopped,
    /// A ringtone could not be used (the bundled default is used instead).
    RingtoneFailed {
        /// A stable code such as `ringtone_undecodable`.
        code: RingtoneErrorCode,
        /// What happened.
        message: String,
    },
    /// A sound card went away mid-call; the default device took over (or could not: `error`).
    DeviceFallback {
        /// Microphone (input) or speaker (output).
        direction: Direction,
        /// Why the default could not be opened, if it could not.
        error: Option<String>,
    },
    /// The sound cards changed (plugged or unplugged).
    DeviceListChanged {
        /// All devices now.
        devices: Vec<DeviceInfo>,
    },
    /// A followed user's presence changed.
    Presence {
        /// Who.
        user: UserId,
        /// Now.
        status: PresenceStatus,
    },
    /// A call event from the core. Serialized as the call event itself (`{"event":"dialing",…}`):
    /// nesting one tagged enum in another would write the `event` key twice.
    #[serde(untagged)]
    Call(CallEvent),
}

/// Why an engine request failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The call core refused the command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The server refused the request.
    #[error("{code}: {message}")]
    Server {
        /// The protocol code.
        code: ErrorCode,
        /// The server's words.
        message: String,
    },
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// The server did not answer in time (the connection may have dropped with the request).
    #[error("no answer from the server")]
    TimedOut,
}

/// How long a query waits for the server's answer: a request lost with a dropped socket is
/// never answered, and the caller must not wait forever.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

enum Request {
    Command(Command, oneshot::Sender<Result<(), CommandError>>),
    Query(ClientMessage, oneshot::Sender<Result<OkBody, EngineError>>),
    State(oneshot::Sender<CallState>),
    MuteMicrophone(bool),
    MuteSpeaker(bool),
    Processing(ProcessingSettings),
    RestartIce,
    Microphone(Box<dyn AudioSource>),
    Speaker(Box<dyn AudioSink>),
    Camera(CameraOpener),
    Resolution(VideoResolution),
    Preview(bool),
    ConnectEarly(bool),
    Stop(oneshot::Sender<()>),
}

/// The handle to a running engine; dropping every clone stops it.
#[derive(Clone)]
pub struct Engine {
    requests: mpsc::UnboundedSender<Request>,
    ringtones: Arc<RingtonePlayer>,
    policy: CallPolicy,
    /// The call now, as the engine last published it.
    call: tokio::sync::watch::Receiver<CallSnapshot>,
}

impl Engine {
    /// Starts the engine: it signs in and waits for commands.
    pub fn start(config: EngineConfig) -> (Engine, mpsc::UnboundedReceiver<EngineEvent>) {
        Engine::start_with_clock(config, Arc::new(SystemClock))
    }

    /// Starts the engine with call-level time from `clock` (tests move a [`crate::clock::ManualClock`]).
    pub fn start_with_clock(config: EngineConfig, clock: Arc<dyn Clock>) -> (Engine, mpsc::UnboundedReceiver<EngineEvent>) {
        let (requests, request_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let (signaling_tx, signaling_rx) = mpsc::unbounded_channel();
        // TURN over TLS trusts what signaling trusts.
        let turn_tls = signaling::tls_config(&config.signaling.extra_roots).ok();
        let signaling = signaling::spawn(config.signaling, signaling_tx);
        let (peer_tx, peer_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let (ring_tx, ring_rx) = mpsc::unbounded_channel();
        let (video_send_tx, video_send_rx) = mpsc::unbounded_channel();
        let (video_receive_tx, video_receive_rx) = mpsc::unbounded_channel();
        let ringtones = Arc::new(RingtonePlayer::with_listener(config.ring_output, move |event| {
            let _ = ring_tx.send(event);
        }));
        let (call_tx, call_rx) = tokio::sync::watch::channel(CallSnapshot::default());
        let policy = config.policy;
        // Without video by policy no camera opens and no picture received goes anywhere.
        let video = if policy.video { config.video } else { VideoConfig { resolution: config.video.resolution, ..VideoConfig::none() } };
        let task = EngineTask {
            call_log: CallLog::default(),
            call_published: call_tx,
            ringtones: Arc::clone(&ringtones),
            core: CallCore::new(String::new()).with_policy(policy),
            policy,
            signaling,
            events,
            peers: HashMap::new(),
            early: HashMap::new(),
            connect_early: true,
            silent_for_good: HashSet::new(),
            call_scores: call_quality::CallScores::default(),
            peer_events: peer_tx,
            pipeline: AudioPipeline::new(config.devices, report_tx).with_receive_loss(config.receive_loss_percent),
            settings: PeerSettings { ice_servers: Vec::new(), policy: IceTransportPolicy::All, udp_addrs: config.udp_addrs, turn_tls },
            media: None,
            receive_loss_percent: config.receive_loss_percent,
            camera_on: true,
            camera_off_by_failure: false,
            video_shown: HashMap::new(),
            video,
            video_sender: None,
            previewing: false,
            camera_in_use: Arc::default(),
            sender_is_preview: false,
            video_outlets: HashMap::new(),
            their_views_of_ours: HashMap::new(),
            video_send_reports: video_send_tx,
            video_receive_reports: video_receive_tx,
            video_receivers: Vec::new(),
            clock,
            queries: HashMap::new(),
            next_query: 0,
        };
        task.pipeline.set_processing(config.processing);
        if config.watch_devices {
            tokio::spawn(watch_devices(task.events.downgrade()));
        }
        if let Some(lister) = task.video.cameras.clone() {
            tokio::spawn(watch_cameras(lister, task.events.downgrade()));
        }
        let inboxes = Inboxes {
            signaling: signaling_rx,
            peer_events: peer_rx,
            reports: report_rx,
            ring_events: ring_rx,
            video_send: video_send_rx,
            video_receive: video_receive_rx,
        };
        tokio::spawn(task.run(request_rx, inboxes));
        (Engine { requests, ringtones, policy, call: call_rx }, event_rx)
    }

    /// Places a call.
    pub async fn call(&self, to: Vec<UserId>, media: Media, timeout_s: Option<u32>, user_data: Option<String>) -> Result<(), EngineError> {
        self.command(Command::Call { to, media, timeout_s, user_data }).await
    }

    /// Answers the ringing call.
    pub async fn accept(&self) -> Result<(), EngineError> {
        self.command(Command::Accept).await
    }

    /// Answers a ringing video call with audio only: our camera never opens, and the call goes
    /// down to audio for everyone (an audio call is simply answered).
    pub async fn accept_audio_only(&self) -> Result<(), EngineError> {
        self.command(Command::AcceptAudioOnly).await
    }

    /// Declines the ringing call.
    pub async fn reject(&self) -> Result<(), EngineError> {
        self.command(Command::Reject).await
    }

    /// Leaves, cancels or declines the current call.
    pub async fn hangup(&self) -> Result<(), EngineError> {
        self.command(Command::Hangup).await
    }

    /// Invites more people into the current call.
    pub async fn invite_more(&self, to: Vec<UserId>) -> Result<(), EngineError> {
        self.command(Command::InviteMore { to }).await
    }

    /// Turns our camera off (it is released, and the others are told) or on again, any time;
    /// a call goes on either way.
    pub async fn set_camera(&self, on: bool) -> Result<(), EngineError> {
        self.command(Command::Camera { on }).await
    }

    /// Takes the video call down to audio for everyone (every side stops its camera).
    pub async fn audio_only(&self) -> Result<(), EngineError> {
        self.command(Command::AudioOnly).await
    }

    /// Joins a connected call one was invited to.
    pub async fn join(&self, call_id: CallId, media: Media) -> Result<(), EngineError> {
        self.command(Command::Join { call_id, media }).await
    }

    /// The reference product's call state.
    pub async fn state(&self) -> Result<CallState, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::State(reply)).map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)
    }

    /// Our call records, newest first.
    pub async fn history(&self, before: Option<i64>, limit: Option<u32>) -> Result<Vec<CallRecord>, EngineError> {
        Ok(self.query(ClientMessage::CallsHistory { before, limit }).await?.records.unwrap_or_default())
    }

    /// Removes records from our history.
    pub async fn delete_records(&self, call_ids: Vec<CallId>) -> Result<(), EngineError> {
        self.query(ClientMessage::CallsDelete { call_ids }).await.map(|_| ())
    }

    /// Presence of some users.
    pub async fn presence(&self, users: Vec<UserId>) -> Result<Vec<(UserId, PresenceStatus)>, EngineError> {
        let statuses = self.query(ClientMessage::PresenceQuery { users }).await?.statuses.unwrap_or_default();
        Ok(statuses.into_iter().collect())
    }

    /// Follows some users' presence: [`EngineEvent::Presence`] reports each change from now on.
    pub async fn subscribe_presence(&self, users: Vec<UserId>) -> Result<Vec<(UserId, PresenceStatus)>, EngineError> {
        let statuses = self.query(ClientMessage::PresenceSubscribe { users }).await?.statuses.unwrap_or_default();
        Ok(statuses.into_iter().collect())
    }

    /// Our contacts, with presence.
    pub async fn contacts(&self) -> Result<Vec<Contact>, EngineError> {
        Ok(self.query(ClientMessage::ContactsList).await?.contacts.unwrap_or_default())
    }

    /// Adds a contact (`not_found` for an unknown user).
    pub async fn add_contact(&self, user: UserId, alias: Option<String>) -> Result<(), EngineError> {
        self.query(ClientMessage::ContactsAdd { user, alias }).await.map(|_| ())
    }

    /// Removes a contact.
    pub async fn remove_contact(&self, user: UserId) -> Result<(), EngineError> {
        self.query(ClientMessage::ContactsRemove { user }).await.map(|_| ())
    }

    /// Changes our display name and/or avatar.
    pub async fn set_profile(&self, nickname: Option<String>, avatar: Option<String>) -> Result<(), EngineError> {
        self.query(ClientMessage::ProfileSet { nickname, avatar }).await.map(|_| ())
    }

    /// Profiles of some users (any number: asked of the server in batches of its limit).
    pub async fn profiles(&self, users: Vec<UserId>) -> Result<Vec<UserProfile>, EngineError> {
        let mut distinct = std::collections::HashSet::new();
        let users: Vec<UserId> = users.into_iter().filter(|u| distinct.insert(u.clone())).collect();
        let mut profiles = Vec::with_capacity(users.len());
        for batch in users.chunks(hark_protocol::MAX_USERS_GET) {
            let answer = self.query(ClientMessage::UsersGet { users: batch.to_vec() }).await?;
            profiles.extend(answer.users.unwrap_or_default());
        }
        Ok(profiles)
    }

    /// Live calls we were invited to and could still join.
    pub async fn active_calls(&self) -> Result<Vec<CallSummary>, EngineError> {
        Ok(self.query(ClientMessage::CallsActive).await?.calls.unwrap_or_default())
    }

    /// Mutes or unmutes our microphone.
    /// The call going on now (its events so far and the mutes), for a view that starts late;
    /// always the engine's own record, read without waiting.
    pub fn call_snapshot(&self) -> CallSnapshot {
        self.call.borrow().clone()
    }

    pub fn mute_microphone(&self, muted: bool) {
        let _ = self.requests.send(Request::MuteMicrophone(muted));
    }

    /// Mutes or unmutes all remote audio.
    pub fn mute_speaker(&self, muted: bool) {
        let _ = self.requests.send(Request::MuteSpeaker(muted));
    }

    /// Turns echo cancellation and noise suppression on or off, mid-call or not.
    pub fn set_processing(&self, settings: ProcessingSettings) {
        let _ = self.requests.send(Request::Processing(settings));
    }

    /// Switches the microphone (a picked device, say), mid-call or not.
    pub fn set_microphone(&self, source: Box<dyn AudioSource>) {
        let _ = self.requests.send(Request::Microphone(source));
    }

    /// Switches the camera (a picked device, say), mid-call or not: a running camera is
    /// released and the new one opened in its place, and the others get a keyframe from it. A
    /// camera that is off (or failed) stays off until [`Engine::set_camera`] turns it on.
    pub fn set_camera_device(&self, camera: CameraOpener) {
        let _ = self.requests.send(Request::Camera(camera));
    }

    /// Opens the camera outside a call, its pictures to the preview sink (a settings page's
    /// picture of the camera), or closes it. A call that starts takes the camera over.
    pub fn preview_camera(&self, on: bool) {
        let _ = self.requests.send(Request::Preview(on));
    }

    /// The size 1:1 calls send at from the next call on (a call going on keeps its own).
    pub fn set_video_resolution(&self, resolution: VideoResolution) {
        let _ = self.requests.send(Request::Resolution(resolution));
    }

    /// Switches the speaker, mid-call or not; the old one is finished.
    pub fn set_speaker(&self, sink: Box<dyn AudioSink>) {
        let _ = self.requests.send(Request::Speaker(sink));
    }

    /// Whether calls connect while they ring (the default), or only once answered: the person's
    /// "connect only after I answer", which keeps this device's addresses from a caller it never
    /// answers. Applies to calls placed or rung from now on.
    pub fn set_connect_early(&self, on: bool) {
        let _ = self.requests.send(Request::ConnectEarly(on));
    }

    /// Renegotiates ICE on every peer connection of the call, as a failed connection does by
    /// itself (for a network change the application noticed first).
    pub fn restart_ice(&self) {
        let _ = self.requests.send(Request::RestartIce);
    }

    /// Chooses the incoming ringtone or the dial tone. A file that is missing or cannot be decoded
    /// is refused (and reported as an event) and the bundled default is used instead.
    pub async fn set_ringtone(&self, kind: RingtoneKind, choice: RingtoneChoice) -> Result<(), RingtoneError> {
        self.allowed_ringtone(&choice)?;
        let player = Arc::clone(&self.ringtones);
        // Decoding a file is blocking work.
        tokio::task::spawn_blocking(move || player.set_choice(kind, choice)).await.map_err(|_| RingtoneError::Stopped)?
    }

    /// Plays a sound once as a preview (settings' play button, the speaker test).
    pub async fn preview_ringtone(&self, choice: RingtoneChoice) -> Result<(), RingtoneError> {
        self.allowed_ringtone(&choice)?;
        let player = Arc::clone(&self.ringtones);
        tokio::task::spawn_blocking(move || player.preview(&choice)).await.map_err(|_| RingtoneError::Stopped)?
    }

    /// Stops whatever ringtone or preview is playing.
    pub fn stop_ringtone(&self) {
        self.ringtones.stop();
    }

    /// Ringtone volume, 0.0 to 1.0.
    pub fn set_ringtone_volume(&self, volume: f32) {
        self.ringtones.set_volume(volume);
    }

    /// Mute mode: calls still come in, nothing rings.
    pub fn set_ringtone_muted(&self, muted: bool) {
        self.ringtones.set_muted(muted);
    }

    /// What the administrator allows.
    pub fn policy(&self) -> CallPolicy {
        self.policy
    }

    fn allowed_ringtone(&self, choice: &RingtoneChoice) -> Result<(), RingtoneError> {
        match choice {
            RingtoneChoice::Custom(_) if !self.policy.custom_ringtones => Err(Forbidden::CustomRingtone.into()),
            _ => Ok(()),
        }
    }

    /// Stops the engine: peers close, recordings are finished.
    pub async fn stop(&self) {
        let (reply, done) = oneshot::channel();
        if self.requests.send(Request::Stop(reply)).is_ok() {
            let _ = done.await;
        }
    }

    async fn command(&self, command: Command) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Command(command, reply)).map_err(|_| EngineError::Stopped)?;
        Ok(answer.await.map_err(|_| EngineError::Stopped)??)
    }

    async fn query(&self, message: ClientMessage) -> Result<OkBody, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request::Query(message, reply)).map_err(|_| EngineError::Stopped)?;
        match tokio::time::timeout(QUERY_TIMEOUT, answer).await {
            Ok(answer) => answer.map_err(|_| EngineError::Stopped)?,
            Err(_) => Err(EngineError::TimedOut),
        }
    }
}

/// What the engine task hears from its drivers, one channel each.
struct Inboxes {
    signaling: mpsc::UnboundedReceiver<SignalingEvent>,
    peer_events: mpsc::UnboundedReceiver<(LinkKey, PeerEvent)>,
    reports: mpsc::UnboundedReceiver<MediaReport>,
    ring_events: mpsc::UnboundedReceiver<RingtoneEvent>,
    video_send: mpsc::UnboundedReceiver<VideoSendReport>,
    video_receive: mpsc::UnboundedReceiver<VideoReceiveReport>,
}

struct EngineTask {
    core: CallCore,
    ringtones: Arc<RingtonePlayer>,
    signaling: SignalingHandle,
    events: mpsc::UnboundedSender<EngineEvent>,
    peers: HashMap<UserId, PeerLink>,
    /// Links opened while the call rings, by person and device, with no media until the call is
    /// answered on one of them (then it moves to `peers`).
    early: HashMap<LinkKey, PeerLink>,
    /// Whether calls connect while they ring ([`Engine::set_connect_early`]).
    connect_early: bool,
    /// The people whose links went silent for good ([`PeerEvent::MediaGaveUp`]); when that is
    /// everyone, the call is given up.
    silent_for_good: HashSet<UserId>,
    /// The current call's scores, for its record.
    call_scores: call_quality::CallScores,
    peer_events: mpsc::UnboundedSender<(LinkKey, PeerEvent)>,
    pipeline: AudioPipeline,
    settings: PeerSettings,
    /// What the connected call carries, as the core last said.
    media: Option<Media>,
    video: VideoConfig,
    receive_loss_percent: f64,
    /// Whether our camera is on (off: the sender does not open it).
    camera_on: bool,
    /// Whether the camera is off because it failed (not because the person turned it off).
    camera_off_by_failure: bool,
    /// Whether each remote person's video was last said to be flowing, so each change is said
    /// once whether it came from their camera signal or from the frames.
    video_shown: HashMap<UserId, bool>,
    /// Our video sender while a video call is connected (or ours rings), or the settings'
    /// preview runs outside calls, and a camera is configured.
    video_sender: Option<VideoSender>,
    /// The camera preview was asked for outside a call (a settings page).
    previewing: bool,
    /// Whether a camera is open: a new one waits for the last to be let go.
    camera_in_use: Arc<CameraInUse>,
    /// The running sender was started for the preview (no call), with the camera on whatever
    /// `camera_on` says.
    sender_is_preview: bool,
    /// The call now and its mutes; the one record of them.
    call_log: CallLog,
    call_published: tokio::sync::watch::Sender<CallSnapshot>,
    /// The video outlet of each connected peer of a video call.
    video_outlets: HashMap<UserId, VideoOutlet>,
    /// The size each peer last said it shows our video at (`video_size`), for the sender now and
    /// any made later in the call.
    their_views_of_ours: HashMap<UserId, (u32, u32)>,
    video_send_reports: mpsc::UnboundedSender<VideoSendReport>,
    video_receive_reports: mpsc::UnboundedSender<VideoReceiveReport>,
    /// One per remote video track received: says when its sink is finished (a recording whole).
    video_receivers: Vec<tokio::sync::oneshot::Receiver<()>>,
    /// What the administrator allows.
    policy: CallPolicy,
    /// Call-level time.
    clock: Arc<dyn Clock>,
    /// Our own requests (history, presence…) waiting for their answer, by request id.
    queries: HashMap<String, oneshot::Sender<Result<OkBody, EngineError>>>,
    next_query: u64,
}

impl EngineTask {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>, inboxes: Inboxes) {
        let Inboxes { mut signaling, mut peer_events, mut reports, mut ring_events, mut video_send, mut video_receive } = inboxes;
        loop {
            let wake = self.core.poll_timeout();
            let clock = Arc::clone(&self.clock);
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Stop(done)) => {
                        self.stop().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(request) => self.request(request),
                    None => {
                        self.stop().await;
                        return;
                    }
                },
                event = signaling.recv() => match event {
                    Some(event) => self.signaling_event(event),
                    None => return,
                },
                Some((user, event)) = peer_events.recv() => self.peer_event(user, event),
                Some(report) = reports.recv() => self.media_report(report),
                Some(event) = ring_events.recv() => self.ringtone_event(event),
                Some(report) = video_send.recv() => self.video_send_report(report),
                Some(report) = video_receive.recv() => self.video_receive_report(report),
                () = clock.sleep_until(wake.unwrap_or(i64::MAX)), if wake.is_some() => self.core.handle_timeout(self.clock.now_ms()),
            }
            self.carry_out().await;
        }
    }

    fn request(&mut self, request: Request) {
        match request {
            Request::Command(command, reply) => {
                if let Err(forbidden) = self.forbidden(&command) {
                    let _ = reply.send(Err(forbidden.into()));
                    return;
                }
                if let Command::Camera { on } = command {
                    self.set_camera_on(on);
                    self.camera_off_by_failure = false;
                    // The settings' preview shows the camera whatever calls start with.
                    if let Some(sender) = self.video_sender.as_ref().filter(|_| !self.sender_is_preview) {
                        sender.set_enabled(on);
                    }
                }
                let _ = reply.send(self.core.command(self.clock.now_ms(), command));
            }
            Request::Query(message, reply) => {
                // Forget queries whose callers stopped waiting (timed out): their answer is lost.
                self.queries.retain(|_, waiting| !waiting.is_closed());
                self.next_query += 1;
                let id = format!("q{}", self.next_query);
                self.queries.insert(id.clone(), reply);
                self.signaling.send(ClientFrame::new(id, message));
            }
            Request::State(reply) => {
                let _ = reply.send(self.core.state());
            }
            Request::MuteMicrophone(muted) => self.set_mutes(Some(muted), None),
            Request::MuteSpeaker(muted) => self.set_mutes(None, Some(muted)),
            Request::Processing(settings) => self.pipeline.set_processing(settings),
            Request::Microphone(source) => self.pipeline.replace_source(source),
            Request::Speaker(sink) => self.pipeline.replace_sink(sink),
            Request::Camera(_) | Request::Preview(true) if !self.policy.video => tracing::info!("no camera: video is off by policy"),
            Request::Camera(camera) => {
                self.video.camera = Some(Arc::clone(&camera));
                match &self.video_sender {
                    Some(sender) => sender.set_camera(one_at_a_time(camera, &self.camera_in_use)),
                    // A video call held without a camera starts sending now.
                    None => self.follow_media(),
                }
            }
            Request::Resolution(resolution) => self.video.resolution = resolution,
            Request::ConnectEarly(on) => {
                self.connect_early = on;
                self.core.set_connect_early(on);
            }
            Request::Preview(on) => {
                self.previewing = on;
                self.follow_media();
            }
            Request::RestartIce => {
                for link in self.peers.values() {
                    link.send(PeerCommand::RestartIce);
                }
            }
            Request::Stop(_) => unreachable!("handled in run"),
        }
    }

    /// What the policy forbids that the call core cannot see: the camera (turned on here before
    /// the core hears of it) and a relay-only call on a server without a relay.
    fn forbidden(&self, command: &Command) -> Result<(), Forbidden> {
        match command {
            Command::Camera { on: true } if !self.policy.video => Err(Forbidden::Video),
            Command::Call { .. } | Command::Accept | Command::AcceptAudioOnly | Command::Join { .. }
                if self.settings.policy == IceTransportPolicy::Relay && !self.settings.ice_servers.iter().any(|s| s.urls.iter().any(|u| u.starts_with("turn"))) =>
            {
                Err(Forbidden::NoRelay)
            }
            _ => Ok(()),
        }
    }

    fn signaling_event(&mut self, event: SignalingEvent) {
        match event {
            SignalingEvent::Up { welcome, resumed } => {
                if !resumed {
                    self.core = CallCore::new(welcome.user.clone()).with_policy(self.policy);
                    self.core.set_connect_early(self.connect_early);
                }
                self.core.set_server_clock(welcome.server_time, self.clock.now_ms());
                self.settings.ice_servers = welcome.ice_servers.clone();
                self.settings.policy = if self.policy.relay_only { IceTransportPolicy::Relay } else { welcome.ice_transport_policy };
                self.core.resync(self.clock.now_ms(), &welcome.joined_calls);
                self.emit(EngineEvent::SignedIn { user: welcome.user, resumed });
            }
            SignalingEvent::Down { reason, kicked } => self.emit(EngineEvent::SignalingLost { reason, kicked }),
            SignalingEvent::Refused { code, message } => self.emit(EngineEvent::SignInRefused { code, message }),
            SignalingEvent::Frame(message) => self.server_frame(message),
        }
    }

    fn server_frame(&mut self, message: ServerMessage) {
        match message {
            ServerMessage::Ok { re: Some(re), body } if self.queries.contains_key(&re) => {
                let _ = self.queries.remove(&re).expect("checked").send(Ok(body));
            }
            ServerMessage::Error { re: Some(re), code, message } if self.queries.contains_key(&re) => {
                let _ = self.queries.remove(&re).expect("checked").send(Err(EngineError::Server { code, message }));
            }
            ServerMessage::Presence { user, status } => self.emit(EngineEvent::Presence { user, status }),
            other => self.core.handle_server(self.clock.now_ms(), other),
        }
    }

    fn peer_event(&mut self, (user, device): LinkKey, event: PeerEvent) {
        if self.peers.get(&user).is_none_or(|link| link.device != device) {
            // A link that waits for the answer only negotiates (it holds its media back); a link
            // we closed says nothing more.
            if !self.early.contains_key(&(user.clone(), device.clone())) {
                return;
            }
            match event {
                PeerEvent::LocalSignal(payload) => self.core.handle_media(MediaEvent::EarlySignal { user, device, payload }),
                PeerEvent::ReadyToBegin => self.emit(EngineEvent::ConnectedWhileRinging { user }),
                _ => {}
            }
            return;
        }
        match event {
            PeerEvent::LocalSignal(payload) => self.core.handle_media(MediaEvent::LocalSignal { user, payload }),
            PeerEvent::Connected(outlet) => self.pipeline.add_outlet(user, outlet),
            PeerEvent::RemoteTrack { kind: MediaKind::Audio, track, red_payload_type } => self.pipeline.add_remote_track(user, track, red_payload_type),
            PeerEvent::RemoteTrack { kind: MediaKind::Video, track, .. } => {
                let group = self.peers.len() > 1;
                let sink = (self.video.sinks)(&user, group);
                if let Some(done) = crate::video_receive::spawn(user, track, sink, self.receive_loss_percent, self.video_receive_reports.clone()) {
                    // Those already finished (earlier calls) need no waiting for.
                    self.video_receivers.retain_mut(|receiver| matches!(receiver.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty)));
                    self.video_receivers.push(done);
                }
            }
            PeerEvent::VideoConnected(outlet) => {
                if let Some(sender) = &self.video_sender {
                    sender.add_outlet(user.clone(), outlet.clone());
                }
                self.video_outlets.insert(user, outlet);
            }
            PeerEvent::KeyframeRequested => {
                if let Some(sender) = &self.video_sender {
                    sender.keyframe(user);
                }
            }
            PeerEvent::VideoRetransmissions(per_packet) => {
                if let Some(sender) = &self.video_sender {
                    sender.retransmissions(user, per_packet);
                }
            }
            PeerEvent::Failed => debug!(%user, "peer connection failed; restarting ICE"),
            PeerEvent::ReadyToBegin => {}
            PeerEvent::MediaLink(state) => {
                tracing::info!(%user, ?state, "media link");
                if state == crate::media_watchdog::MediaLinkState::Connected {
                    self.silent_for_good.remove(&user);
                }
                self.emit(EngineEvent::MediaLink { user, state });
            }
            PeerEvent::MediaGaveUp => {
                self.silent_for_good.insert(user);
                // With some people still heard, the fault is on their side: their own client
                // (or the server's grace) ends their part, and the call goes on.
                if self.peers.keys().all(|user| self.silent_for_good.contains(user)) {
                    warn!("no media from anyone for {:?}: giving the call up", crate::media_watchdog::GIVE_UP_AFTER);
                    self.silent_for_good.clear();
                    if let Err(e) = self.core.command(self.clock.now_ms(), Command::GiveUp) {
                        debug!(error = ?e, "giving the call up");
                    }
                }
            }
            PeerEvent::Quality { loss_percent, rtt_ms, jitter_ms, relayed } => {
                let weak = loss_percent >= WEAK_LOSS_PERCENT || rtt_ms.is_some_and(|rtt| rtt >= WEAK_RTT_MS);
                let score = call_quality::score(&call_quality::Impairments::measured(loss_percent, rtt_ms.unwrap_or(0.0), jitter_ms.unwrap_or(0.0)));
                self.call_scores.add(score.mos);
                self.emit(EngineEvent::NetworkQuality { user, loss_percent, rtt_ms, jitter_ms, relayed, weak, r_factor: score.r, mos: score.mos })
            }
        }
    }

    fn media_report(&mut self, report: MediaReport) {
        match report {
            MediaReport::RemoteAudioAvailable(user) => self.emit(EngineEvent::RemoteAudioAvailable { user }),
            MediaReport::VoiceLevels(levels) => {
                for (user, level) in levels {
                    self.emit(EngineEvent::VoiceLevel { user, level });
                }
            }
            // A sound card that disappears mid-call is replaced by the default one, and said so.
            MediaReport::MicrophoneLost => self.fall_back(Direction::Input),
            MediaReport::SpeakerLost => self.fall_back(Direction::Output),
        }
    }

    fn fall_back(&self, direction: Direction) {
        let pipeline = self.pipeline.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = match direction {
                Direction::Input => MicrophoneSource::open(None).map(|source| pipeline.replace_source(Box::new(source))),
                Direction::Output => SpeakerSink::open(None).map(|sink| pipeline.replace_sink(Box::new(sink))),
            };
            let _ = events.send(EngineEvent::DeviceFallback { direction, error: outcome.err().map(|e| e.to_string()) });
        });
    }

    fn video_send_report(&mut self, report: VideoSendReport) {
        match report {
            VideoSendReport::CameraStarted(camera) => self.emit(EngineEvent::CameraStarted { camera }),
            VideoSendReport::CameraFailed(message) => {
                self.emit(EngineEvent::CameraError { message });
                // A failed camera counts as turned off: the others are told at once (rather than
                // noticing after a while without pictures), and turning it on again retries. A
                // failed preview is only said: no call is told anything.
                if self.camera_on && !self.sender_is_preview {
                    self.set_camera_on(false);
                    self.camera_off_by_failure = true;
                    if let Some(sender) = &self.video_sender {
                        sender.set_enabled(false);
                    }
                    if let Err(e) = self.core.command(self.clock.now_ms(), Command::Camera { on: false }) {
                        debug!(error = ?e, "camera off after a failure");
                    }
                }
            }
            VideoSendReport::Bitrate(kbps) => self.emit(EngineEvent::VideoBitrate { kbps }),
        }
    }

    fn video_receive_report(&mut self, report: VideoReceiveReport) {
        match report {
            VideoReceiveReport::FirstFrame(user) => self.emit(EngineEvent::FirstRemoteVideoFrame { user }),
            VideoReceiveReport::Available(user) => self.video_shown(user, true),
            VideoReceiveReport::Unavailable(user) => self.video_shown(user, false),
            VideoReceiveReport::Undecodable(user, message) => self.emit(EngineEvent::RemoteVideoUndecodable { user, message }),
            VideoReceiveReport::Frozen(user) => self.emit(EngineEvent::RemoteVideoFrozen { user }),
            VideoReceiveReport::Recovered(user, frozen, after_request) => self.emit(EngineEvent::RemoteVideoRecovered {
                user,
                frozen_ms: frozen.as_millis() as u64,
                after_request_ms: after_request.as_millis() as u64,
            }),
            VideoReceiveReport::ViewSize(user, width, height) => {
                info!(%user, width, height, "their video is shown at most this large; telling them");
                self.core.handle_media(MediaEvent::LocalSignal { user, payload: hark_protocol::SignalPayload::VideoSize { width, height } });
            }
        }
    }

    /// Says that `user`'s video flows or stopped, if that is news.
    fn video_shown(&mut self, user: UserId, shown: bool) {
        if self.video_shown.insert(user.clone(), shown) == Some(shown) {
            return;
        }
        self.emit(if shown { EngineEvent::RemoteVideoAvailable { user } } else { EngineEvent::RemoteVideoUnavailable { user } });
    }

    /// Follows the call's media: a video call (connected, or ours while it rings) runs the sender
    /// (the camera opens), as does the settings' preview when no call has media; anything else
    /// stops it (the camera is released).
    fn follow_media(&mut self) {
        let preview = self.media.is_none() && self.previewing;
        let wanted = (self.media == Some(Media::Video) || preview) && self.video.camera.is_some();
        if self.sender_is_preview != preview {
            // A call takes over from the preview (its sender starts with the call's camera
            // state), and the preview from a call that ended (the camera on, whatever the call
            // left it at).
            self.video_sender = None;
        }
        self.sender_is_preview = preview && wanted;
        match (&self.video_sender, wanted) {
            (None, true) => {
                let camera = self.video.camera.clone().expect("checked");
                let sender = VideoSender::start(
                    one_at_a_time(camera, &self.camera_in_use),
                    self.camera_on || preview,
                    self.peers.len() + 1,
                    self.video.resolution,
                    (self.video.preview)(),
                    tokio::runtime::Handle::current(),
                    self.video_send_reports.clone(),
                );
                for (user, outlet) in &self.video_outlets {
                    sender.add_outlet(user.clone(), outlet.clone());
                }
                for (user, &(width, height)) in &self.their_views_of_ours {
                    sender.set_view_size(user.clone(), width, height);
                }
                self.video_sender = Some(sender);
            }
            (Some(_), false) => self.video_sender = None,
            _ => {}
        }
        if self.media.is_none() {
            self.video_outlets.clear();
            self.their_views_of_ours.clear();
            self.video_shown.clear();
            // A camera turned off by its failure is tried again in the next call (it may have
            // been plugged back in); one the person turned off stays off.
            if std::mem::take(&mut self.camera_off_by_failure) {
                self.set_camera_on(true);
                if let Err(e) = self.core.command(self.clock.now_ms(), Command::Camera { on: true }) {
                    debug!(error = ?e, "camera back on after the call");
                }
            }
        }
    }

    fn ringtone_event(&mut self, event: RingtoneEvent) {
        let kind_name = |kind: RingtoneKind| match kind {
            RingtoneKind::Incoming => "incoming",
            RingtoneKind::Dialing => "dialing",
        };
        match event {
            RingtoneEvent::Playing { kind, source } => self.emit(EngineEvent::RingtonePlaying { kind: kind_name(kind), source }),
            RingtoneEvent::Stopped => self.emit(EngineEvent::RingtoneStopped),
            RingtoneEvent::Error { code, message, .. } => self.emit(EngineEvent::RingtoneFailed { code, message }),
            _ => {}
        }
    }

    /// Carries out the core's outputs in order.
    async fn carry_out(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send(frame) => self.signaling.send(frame),
                Output::OpenEarlyPeer { user, device, offerer, media, .. } => {
                    let key = (user, device);
                    match PeerLink::open(key.clone(), true, offerer, media, &self.settings, self.peer_events.clone()).await {
                        Ok(link) => {
                            self.early.insert(key, link);
                        }
                        Err(e) => warn!(user = %key.0, error = %e, "cannot open a peer connection while the call rings"),
                    }
                }
                Output::EarlySignal { user, device, payload } => match self.early.get(&(user, device)) {
                    Some(link) => link.send(PeerCommand::Remote(payload)),
                    None => debug!("signal for a closed early link"),
                },
                Output::BeginPeer { user, device } => match self.early.remove(&(user.clone(), device)) {
                    Some(link) => {
                        link.send(PeerCommand::Begin);
                        self.add_peer(user, link);
                    }
                    // It could not be opened (said then), as an `OpenPeer` that fails.
                    None => warn!(%user, "no connection was made while the call rang"),
                },
                Output::CloseEarlyPeer { user, device } => {
                    if let Some(link) = self.early.remove(&(user, device)) {
                        link.send(PeerCommand::Close);
                    }
                }
                Output::OpenPeer { user, offerer, media, .. } => {
                    match PeerLink::open((user.clone(), None), false, offerer, media, &self.settings, self.peer_events.clone()).await {
                        Ok(link) => self.add_peer(user, link),
                        Err(e) => warn!(%user, error = %e, "cannot open a peer connection"),
                    }
                }
                Output::RemoteSignal { user, payload } => match self.peers.get(&user) {
                    Some(link) => link.send(PeerCommand::Remote(payload)),
                    None => debug!(%user, "signal for a closed link"),
                },
                Output::VideoShownBy { user, width, height } => {
                    info!(%user, width, height, "they show our video at most this large");
                    if let Some(sender) = &self.video_sender {
                        sender.set_view_size(user.clone(), width, height);
                    }
                    self.their_views_of_ours.insert(user, (width, height));
                }
                Output::ClosePeer { user } => {
                    self.silent_for_good.remove(&user);
                    self.their_views_of_ours.remove(&user);
                    if let Some(link) = self.peers.remove(&user) {
                        link.send(PeerCommand::Close);
                    }
                    self.pipeline.remove(&user);
                    self.video_outlets.remove(&user);
                    if let Some(sender) = &self.video_sender {
                        sender.remove(&user);
                        sender.people(self.peers.len() + 1);
                    }
                }
                Output::Ringtone(command) => {
                    let action = match command {
                        RingtoneCommand::Incoming => {
                            self.ringtones.play(RingtoneKind::Incoming);
                            "incoming"
                        }
                        RingtoneCommand::Dialing => {
                            self.ringtones.play(RingtoneKind::Dialing);
                            "dialing"
                        }
                        RingtoneCommand::Stop => {
                            self.ringtones.stop();
                            "stop"
                        }
                    };
                    self.emit(EngineEvent::Ringtone { action });
                }
                Output::Event(event) => {
                    match &event {
                        CallEvent::RemoteCamera { user, on: false } => self.video_shown(user.clone(), false),
                        CallEvent::CallBegan { .. } => self.call_scores = call_quality::CallScores::default(),
                        // How it sounded goes into our record of it (kept by the server, which
                        // has written the record by the time it told us the call ended).
                        CallEvent::CallEnded { call_id, .. } => {
                            if let Some(quality) = std::mem::take(&mut self.call_scores).summary() {
                                self.core.report_quality(self.clock.now_ms(), call_id.clone(), quality);
                            }
                        }
                        _ => {}
                    }
                    // Recorded (and published) before it is sent: whoever reads the snapshot on
                    // hearing the event finds it there.
                    let ended_with = self.call_log.record(&event);
                    self.call_published.send_replace(self.call_log.snapshot());
                    self.emit(EngineEvent::Call(event));
                    // Each call starts unmuted.
                    if ended_with.is_some_and(|mutes| mutes != Mutes::default()) {
                        self.pipeline.set_microphone_muted(false);
                        self.pipeline.set_speaker_muted(false);
                        self.emit(EngineEvent::Mutes { microphone: false, speaker: false });
                    }
                }
                Output::SetMedia(media) => {
                    debug!(?media, "call media");
                    self.media = media;
                    self.follow_media();
                }
            }
        }
    }

    /// `user`'s link carries the call from now on; the video sender sizes for one more person.
    fn add_peer(&mut self, user: UserId, link: PeerLink) {
        self.peers.insert(user, link);
        if let Some(sender) = &self.video_sender {
            sender.people(self.peers.len() + 1);
        }
    }

    async fn stop(&mut self) {
        self.ringtones.stop();
        self.video_sender = None;
        for link in self.peers.drain().map(|(_, link)| link).chain(self.early.drain().map(|(_, link)| link)) {
            link.send(PeerCommand::Close);
        }
        // A recording's header is written before the engine says it has stopped.
        if tokio::time::timeout(std::time::Duration::from_secs(5), self.pipeline.finish()).await.is_err() {
            warn!("the audio pipeline did not finish in 5 s");
        }
        // And every video sink is finished (a recording's last frame written), the peers being
        // closed, so their tracks end.
        let receivers = futures_util::future::join_all(self.video_receivers.drain(..));
        if tokio::time::timeout(std::time::Duration::from_secs(5), receivers).await.is_err() {
            warn!("a video receiver did not finish in 5 s");
        }
    }

    fn emit(&self, event: EngineEvent) {
        let _ = self.events.send(event);
    }

    /// Our camera is on or off now (the person's choice, or off by its failure); says so when it
    /// changed, and the call snapshot carries it.
    fn set_camera_on(&mut self, on: bool) {
        if self.camera_on != on {
            self.camera_on = on;
            self.call_log.set_camera_on(on);
            self.call_published.send_replace(self.call_log.snapshot());
            self.emit(EngineEvent::Camera { on });
        }
    }

    /// Mutes or unmutes; says the new mutes to everyone when they changed.
    fn set_mutes(&mut self, microphone: Option<bool>, speaker: Option<bool>) {
        if let Some(muted) = microphone {
            self.pipeline.set_microphone_muted(muted);
        }
        if let Some(muted) = speaker {
            self.pipeline.set_speaker_muted(muted);
        }
        let before = self.call_log.mutes();
        let now = self.call_log.set_mutes(microphone, speaker);
        if now != before {
            self.call_published.send_replace(self.call_log.snapshot());
            self.emit(EngineEvent::Mutes { microphone: now.microphone, speaker: now.speaker });
        }
    }
}

/// Polls the sound cards every second (listing them blocks for a few ms) until the engine stops.
/// Polls the sound cards every second while the engine runs. It holds only a weak sender, so
/// the event channel closes when the engine stops (and whoever reads it sees the end).
async fn watch_devices(events: mpsc::WeakUnboundedSender<EngineEvent>) {
    let mut watcher = Some(DeviceWatcher::new());
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if events.strong_count() == 0 {
            return;
        }
        let Some(mut current) = watcher.take() else { return };
        let Ok((changed, returned)) = tokio::task::spawn_blocking(move || (current.poll(), current)).await else { return };
        watcher = Some(returned);
        if let (Some(devices), Some(events)) = (changed, events.upgrade()) {
            let _ = events.send(EngineEvent::DeviceListChanged { devices });
        }
    }
}

/// Polls the camera list every [`CAMERA_POLL`] while the engine runs, saying each change.
async fn watch_cameras(lister: CameraLister, events: mpsc::WeakUnboundedSender<EngineEvent>) {
    let mut watch = CameraWatch::default();
    loop {
        let list = Arc::clone(&lister);
        let Ok(cameras) = tokio::task::spawn_blocking(move || list()).await else { return };
        let Some(events) = events.upgrade() else { return };
        if let Some(cameras) = watch.changed(cameras) {
            let _ = events.send(EngineEvent::CameraListChanged { cameras });
        }
        drop(events);
        tokio::time::sleep(CAMERA_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_event_serializes_with_one_event_key() {
        let event = EngineEvent::Call(CallEvent::Dialing { call_id: "c1".into(), invitees: vec!["bob".into()] });
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(json, r#"{"event":"dialing","call_id":"c1","invitees":["bob"]}"#);
        let presence = EngineEvent::Presence { user: "bob".into(), status: PresenceStatus::Online };
        assert_eq!(serde_json::to_string(&presence).unwrap(), r#"{"event":"presence","user":"bob","status":"online"}"#);
    }
}
