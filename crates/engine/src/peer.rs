//! One WebRTC peer connection to one remote person (mesh: a call of N has N-1 of these).
//!
//! A [`PeerLink`] is an actor: its task owns the webrtc-rs `PeerConnection` and takes
//! [`PeerCommand`]s (a remote offer, answer or candidate; close). It reports [`PeerEvent`]s: a
//! negotiation message to send, the connection state, an outlet per kind of our media (audio, and
//! video in a video call: one VP8 track per link, since a webrtc-rs track binds to one
//! connection), the remote tracks with their kind, keyframe requests about our video (PLI/FIR,
//! let through by [`crate::keyframe_requests`]) and network figures. The offerer (the
//! person who joined first, PROTOCOL.md) sends the offer as soon as it opens; the answerer waits.
//! Remote candidates that arrive before the remote description are held until it is set
//! (`add_ice_candidate` refuses them before), and when the connection fails the offerer re-offers
//! with an ICE restart while the answerer asks it to.
//!
//! Settings that matter for time-to-audio (measured, see STACK.md and docs/ARCHITECTURE.md): the
//! answerer is the DTLS server, a peer-reflexive pair is accepted at once, ICE checks run every
//! 10 ms for the first 1.5 s, and relay pairs are accepted at once under a relay-only policy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hark_protocol::{IceServer, IceTransportPolicy, Media, SignalPayload, UserId};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{NackGeneratorBuilder, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType, RTCSessionDescription, RTCStatsReportEntry,
    Registry, SettingEngineBuilder, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;
use crate::call_quality::LossMeter;
use crate::media_watchdog::{MediaLinkState, MediaWatchdog};
use crate::round_trips::{RoundTripTime, RoundTrips};

/// How a peer connection is set up: from `welcome`, plus where to bind.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// Relay only or not.
    pub policy: IceTransportPolicy,
    /// Local UDP addresses to bind (`127.0.0.1:0` for calls on one machine; `0.0.0.0:0` skips
    /// loopback).
    pub udp_addrs: Vec<String>,
    /// The TLS client for TURN over TLS ([`crate::turn_stream`]); without it `turns:` URLs are
    /// left out.
    pub turn_tls: Option<Arc<rustls::ClientConfig>>,
}

/// RFC 2198 redundant audio's MIME type.
const MIME_TYPE_RED: &str = "audio/red";
/// The payload types Hark offers for Opus (webrtc-rs's default) and RED (Chromium's).
const OPUS_PAYLOAD_TYPE: u8 = 111;
const RED_PAYLOAD_TYPE: u8 = 63;

/// How often a lost packet is asked for again (NACK) before the receiver gives up on its frame.
const MAX_NACKS_PER_PACKET: u16 = 5;

/// What the engine tells a peer link.
#[derive(Debug)]
pub enum PeerCommand {
    /// A negotiation message from the remote person.
    Remote(SignalPayload),
    /// Renegotiate ICE (what a failed connection does by itself): the offerer re-offers with an
    /// ICE restart, the answerer asks it to.
    RestartIce,
    /// The call was answered on this link, opened while it rang: its media starts (until then
    /// it connects, but gives no outlet and no remote track, so nothing is sent or played).
    Begin,
    /// Hang up this link.
    Close,
}

/// Which link an event comes from: the remote person, and their device for a link opened to a
/// device that still rings ([`crate::core::Output::OpenEarlyPeer`]).
pub type LinkKey = (UserId, Option<String>);

/// What a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// Opus.
    Audio,
    /// VP8.
    Video,
}

/// Where our audio goes to one peer: the track, its SSRC and the negotiated payload type.
#[derive(Clone)]
pub struct AudioOutlet {
    /// The local track.
    pub track: Arc<TrackLocalStaticSample>,
    /// Our SSRC on it.
    pub ssrc: u32,
    /// The negotiated Opus payload type.
    pub payload_type: u8,
    /// The negotiated RED payload type, when the far side takes redundant audio
    /// ([`crate::red`]).
    pub red_payload_type: Option<u8>,
}

/// Where our video goes to one peer: its own VP8 track, SSRC and payload type.
#[derive(Clone)]
pub struct VideoOutlet {
    /// The local track.
    pub track: Arc<TrackLocalStaticSample>,
    /// Our SSRC on it.
    pub ssrc: u32,
    /// The negotiated VP8 payload type.
    pub payload_type: u8,
}

/// What a peer link reports.
pub enum PeerEvent {
    /// Send this to the remote person.
    LocalSignal(SignalPayload),
    /// Connected: audio can be sent through the outlet.
    Connected(AudioOutlet),
    /// A link opened while the call rings is connected (ICE and DTLS done), still holding its
    /// media back until [`PeerCommand::Begin`].
    ReadyToBegin,
    /// Connected in a video call: video can be sent through the outlet.
    VideoConnected(VideoOutlet),
    /// The remote person lost our picture and asks for a keyframe (PLI or FIR).
    KeyframeRequested,
    /// Our video's retransmissions per new packet sent to this person over the last second (what
    /// their receiver lost and asked for again), for the sender's bitrate.
    VideoRetransmissions(f64),
    /// A track of the remote person's, of `kind`.
    RemoteTrack {
        /// Audio or video.
        kind: MediaKind,
        /// The track.
        track: Arc<dyn TrackRemote>,
        /// The payload type of redundant audio on it, if negotiated.
        red_payload_type: Option<u8>,
    },
    /// The connection failed (an ICE restart is under way).
    Failed,
    /// Media stopped arriving from this person, or came back ([`MediaWatchdog`]).
    MediaLink(MediaLinkState),
    /// No packet came for [`crate::media_watchdog::GIVE_UP_AFTER`]: the link is given up.
    MediaGaveUp,
    /// Network figures from stats: loss in percent of packets and round-trip time.
    Quality {
        /// Percent of their audio's packets lost in the interval ([`LossMeter`]).
        loss_percent: f64,
        /// Round-trip time in ms, if measured.
        rtt_ms: Option<f64>,
        /// Inter-arrival jitter of their audio in ms, if our receiver has reported it.
        jitter_ms: Option<f64>,
        /// Whether the selected candidate pair runs through a TURN relay.
        relayed: bool,
    },
}

impl std::fmt::Debug for PeerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerEvent::LocalSignal(p) => write!(f, "LocalSignal({p:?})"),
            PeerEvent::Connected(o) => write!(f, "Connected(ssrc {:#x}, pt {})", o.ssrc, o.payload_type),
            PeerEvent::VideoConnected(o) => write!(f, "VideoConnected(ssrc {:#x}, pt {})", o.ssrc, o.payload_type),
            PeerEvent::KeyframeRequested => write!(f, "KeyframeRequested"),
            PeerEvent::ReadyToBegin => write!(f, "ReadyToBegin"),
            PeerEvent::VideoRetransmissions(r) => write!(f, "VideoRetransmissions({r:.3})"),
            PeerEvent::RemoteTrack { kind, .. } => write!(f, "RemoteTrack({kind:?})"),
            PeerEvent::Failed => write!(f, "Failed"),
            PeerEvent::MediaLink(state) => write!(f, "MediaLink({state:?})"),
            PeerEvent::MediaGaveUp => write!(f, "MediaGaveUp"),
            PeerEvent::Quality { loss_percent, rtt_ms, jitter_ms, relayed } => write!(f, "Quality({loss_percent:.1}%, {rtt_ms:?} ms, jitter {jitter_ms:?} ms, relayed {relayed})"),
        }
    }
}

/// The audio packets a quality report's interval (two seconds) brings from a far side sending
/// Opus in 20 ms packets, the default of every WebRTC client ([`LossMeter`] learns other rates).
const AUDIO_PACKETS_PER_QUALITY_REPORT: f64 = 100.0;

/// Opus's RTP clock, ticks per millisecond.
const OPUS_CLOCK_PER_MS: f64 = 48.0;

/// Why a peer link could not be built.
#[derive(Debug, thiserror::Error)]
#[error("peer connection: {0}")]
pub struct PeerError(pub String);

/// A handle to a peer link's task.
#[derive(Debug, Clone)]
pub struct PeerLink {
    commands: mpsc::UnboundedSender<PeerCommand>,
    /// The device it was opened to, if it was opened to a ringing device.
    pub device: Option<String>,
}

impl PeerLink {
    /// Builds the peer connection to `user` (their `device`, for one opened while the call
    /// rings) and starts its task. Events are tagged with both. A link opened `early` holds its
    /// media back until [`PeerCommand::Begin`].
    pub async fn open(
        (user, device): LinkKey,
        early: bool,
        offerer: bool,
        media: Media,
        settings: &PeerSettings,
        events: mpsc::UnboundedSender<(LinkKey, PeerEvent)>,
    ) -> Result<PeerLink, PeerError> {
        let fail = |e: webrtc::error::Error| PeerError(e.to_string());
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler { events: local_tx });
        // mDNS lets us resolve a browser's `.local` candidates, but its multicast socket cannot
        // be opened where there is no multicast route (a bare network namespace, some
        // containers): then the connection is built without it rather than not at all.
        let rtt = RoundTripTime::default();
        let pc = match build(media, settings, Arc::clone(&handler), MulticastDnsMode::QueryOnly, &rtt).await {
            Ok(pc) => pc,
            Err(e) => {
                debug!(error = %e, "peer connection with mDNS failed; trying without");
                build(media, settings, handler, MulticastDnsMode::Disabled, &rtt).await.map_err(fail)?
            }
        };
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let ssrc: u32 = rand::random();
        let stream_id = format!("hark-{:016x}", rand::random::<u64>());
        let track = Arc::new(
            TrackLocalStaticSample::new(
                Instant::now(),
                // Track ids must differ from the far side's: webrtc-rs routes feedback by track
                // id, remote tracks first, so a PLI about our "video" would go to their "video".
                MediaStreamTrack::new(
                    stream_id.clone(),
                    format!("audio-{ssrc:08x}"),
                    "microphone".to_owned(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                        codec: RTCRtpCodec {
                            mime_type: MIME_TYPE_OPUS.to_owned(),
                            clock_rate: 48_000,
                            channels: 2, // Opus is always "/2" in SDP, even when mono is sent
                            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                            rtcp_feedback: vec![],
                        },
                        ..Default::default()
                    }],
                ),
            )
            .map_err(fail)?,
        );
        let sender = pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await.map_err(fail)?;
        // The video m-line comes second (PROTOCOL.md's SDP profile).
        let video = if media == Media::Video {
            let ssrc: u32 = rand::random();
            let track = Arc::new(
                TrackLocalStaticSample::new(
                    Instant::now(),
                    MediaStreamTrack::new(
                        stream_id.clone(),
                        format!("video-{ssrc:08x}"),
                        "camera".to_owned(),
                        RtpCodecKind::Video,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                            codec: RTCRtpCodec {
                                mime_type: MIME_TYPE_VP8.to_owned(),
                                clock_rate: 90_000,
                                channels: 0,
                                sdp_fmtp_line: String::new(),
                                rtcp_feedback: vec![],
                            },
                            ..Default::default()
                        }],
                    ),
                )
                .map_err(fail)?,
            );
            let sender = pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>).await.map_err(fail)?;
            Some(VideoSend { track, ssrc, sender, counted: (0, 0) })
        } else {
            None
        };

        let (commands, command_rx) = mpsc::unbounded_channel();
        let task = LinkTask {
            user,
            device: device.clone(),
            offerer,
            pc,
            track,
            ssrc,
            sender,
            video,
            events,
            held: Vec::new(),
            connected: false,
            begun: !early,
            held_tracks: Vec::new(),
            watchdog: None,
            rtt,
            loss: LossMeter::new(AUDIO_PACKETS_PER_QUALITY_REPORT),
        };
        tokio::spawn(task.run(command_rx, local_rx));
        Ok(PeerLink { commands, device })
    }

    /// Passes a command to the link's task.
    pub fn send(&self, command: PeerCommand) {
        let _ = self.commands.send(command);
    }
}

/// Builds a peer connection: Hark's codecs and interceptors (keyframe requests let through in a
/// video call), the settings that make calls connect fast, and the ICE servers.
async fn build(
    media: Media,
    settings: &PeerSettings,
    handler: Arc<Handler>,
    mdns: MulticastDnsMode,
    rtt: &RoundTripTime,
) -> Result<impl PeerConnection, webrtc::error::Error> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_default_codecs()?;
    // Redundant audio, after Opus so a peer without it keeps Opus alone (crate::red).
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_RED.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: format!("{OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"),
                rtcp_feedback: vec![],
            },
            payload_type: RED_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    let mut registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    // The default generator asks for a lost packet again and again until it comes: on a link
    // that drops because it is full, that is a storm of retransmissions that leaves no room for
    // new video (measured behind a 500 kbit/s policer: 170 retransmissions per new packet, and
    // the picture stopped). A few asks, then the frame is given up and a keyframe asked for.
    // Asked every 50 ms (not 100): a lost retransmission is asked for again in time for the
    // frame it belongs to (video_receive waits 350 ms for a frame's packets).
    registry = registry.with(
        Slot::NackGenerator,
        NackGeneratorBuilder::new().with_interval(Duration::from_millis(50)).with_max_nacks_per_packet(MAX_NACKS_PER_PACKET).build(),
    );
    registry = registry.with(Slot::from(crate::round_trips::SLOT), RoundTrips::new(rtt.clone()));
    if media == Media::Video {
        registry = registry.with(Slot::from(crate::keyframe_requests::SLOT), crate::keyframe_requests::KeyframeRequests::default());
    }
    let relay_only = settings.policy == IceTransportPolicy::Relay;
    let mut setting_engine = SettingEngineBuilder::new()
        .with_answering_dtls_role(RTCDtlsRole::Server)
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        .with_ice_connection_attempts(Some(Duration::from_millis(10)), Some(150))
        .with_multicast_dns_mode(mdns);
    if relay_only {
        setting_engine = setting_engine.with_relay_acceptance_min_wait(Some(Duration::ZERO));
    }
    // TURN over TCP and TLS go to webrtc-rs as UDP TURN, carried over the stream by our
    // sockets (crate::turn_stream).
    let (planned, streamed) = crate::turn_stream::plan(&settings.ice_servers, settings.turn_tls.clone()).await;
    let ice_servers = planned
        .into_iter()
        .map(|(s, urls)| RTCIceServer { urls, username: s.username.unwrap_or_default(), credential: s.credential.unwrap_or_default() })
        .collect();
    let configuration = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .with_ice_transport_policy(if relay_only { RTCIceTransportPolicy::Relay } else { RTCIceTransportPolicy::All })
        .build();
    let mut builder = PeerConnectionBuilder::new();
    if !streamed.is_empty() {
        debug!(?streamed, "TURN servers reached over TCP or TLS");
        builder = builder.with_runtime(Arc::new(crate::turn_stream::StreamingRuntime::new(streamed)));
    }
    builder
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_setting_engine(setting_engine.build())
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(settings.udp_addrs.clone())
        .build()
        .await
}

/// What the webrtc-rs driver loop tells us; forwarded into the link's own task at once.
enum Local {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
}

struct Handler {
    events: mpsc::UnboundedSender<Local>,
}

/// Reads the RTCP feedback about our video track (only keyframe requests get through) until the
/// track is unbound, and reports each request.
async fn forward_keyframe_requests(track: Arc<TrackLocalStaticSample>, key: LinkKey, events: mpsc::UnboundedSender<(LinkKey, PeerEvent)>) {
    while let Some(event) = track.poll().await {
        if let TrackLocalEvent::OnRtcpPacket(packets) = event {
            if packets.iter().any(|p| crate::keyframe_requests::is_keyframe_request(p.as_ref())) && events.send((key.clone(), PeerEvent::KeyframeRequested)).is_err() {
                return;
            }
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    // These run on webrtc-rs's driver loop: hand off and return, never block.
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => {
                let _ = self.events.send(Local::Candidate(init));
            }
            Err(e) => warn!(error = %e, "unusable local candidate"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(Local::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.events.send(Local::Track(track));
    }
}

/// Our video track on one link.
struct VideoSend {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    /// Packets and retransmissions sent, as of the last look at the stats.
    counted: (u64, u64),
}

struct LinkTask {
    user: UserId,
    device: Option<String>,
    offerer: bool,
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    sender: Arc<dyn RtpSender>,
    video: Option<VideoSend>,
    events: mpsc::UnboundedSender<(LinkKey, PeerEvent)>,
    /// Remote candidates that came before the remote description.
    held: Vec<RTCIceCandidateInit>,
    connected: bool,
    /// Whether its media may flow: from the start, or (a link opened while the call rang) from
    /// [`PeerCommand::Begin`].
    begun: bool,
    /// Remote tracks that came before the link began.
    held_tracks: Vec<PeerEvent>,
    /// Whether packets arrive, from the first connection on.
    watchdog: Option<MediaWatchdog>,
    /// The RTT measured from RTCP reports ([`crate::round_trips`]).
    rtt: RoundTripTime,
    /// Their audio's loss per quality report.
    loss: LossMeter,
}

impl LinkTask {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<PeerCommand>, mut local: mpsc::UnboundedReceiver<Local>) {
        if self.offerer {
            if let Err(e) = self.offer().await {
                warn!(user = %self.user, error = %e, "could not make an offer");
            }
        }
        // Once a second for the video sender's bitrate; network quality every second tick.
        let mut stats = tokio::time::interval(Duration::from_secs(1));
        let mut ticks = 0u64;
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(PeerCommand::Remote(payload)) => {
                        if let Err(e) = self.remote(payload).await {
                            warn!(user = %self.user, error = %e, "negotiation step failed");
                        }
                    }
                    Some(PeerCommand::RestartIce) => self.restart_or_ask().await,
                    Some(PeerCommand::Begin) if !self.begun => {
                        self.begun = true;
                        for track in std::mem::take(&mut self.held_tracks) {
                            self.emit(track);
                        }
                        if self.connected {
                            self.start_media().await;
                        }
                    }
                    Some(PeerCommand::Begin) => {}
                    Some(PeerCommand::Close) | None => break,
                },
                news = local.recv() => match news {
                    Some(Local::Candidate(init)) => {
                        let sdp_mid = init.sdp_mid.filter(|m| !m.is_empty()).or_else(|| Some("0".to_owned()));
                        self.emit(PeerEvent::LocalSignal(SignalPayload::Candidate {
                            candidate: init.candidate,
                            sdp_mid,
                            sdp_mline_index: init.sdp_mline_index.or(Some(0)),
                            ufrag: init.username_fragment,
                        }));
                    }
                    Some(Local::State(state)) => self.state_changed(state).await,
                    Some(Local::Track(track)) => {
                        let kind = match track.kind().await {
                            RtpCodecKind::Video => MediaKind::Video,
                            _ => MediaKind::Audio,
                        };
                        // Both directions use the payload types of the answer.
                        let red_payload_type = self.audio_payload_types().await.and_then(|(_, red)| red);
                        let track = PeerEvent::RemoteTrack { kind, track, red_payload_type };
                        // Nothing the far side sends is played before the call is answered.
                        match self.begun {
                            true => self.emit(track),
                            false => self.held_tracks.push(track),
                        }
                    }
                    None => break,
                },
                _ = stats.tick(), if self.connected && self.begun => {
                    ticks += 1;
                    self.report_quality(ticks.is_multiple_of(2)).await;
                }
            }
        }
        if let Err(e) = self.pc.close().await {
            debug!(user = %self.user, error = %e, "close");
        }
    }

    async fn offer(&mut self) -> Result<(), webrtc::error::Error> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer.clone()).await?;
        self.emit(PeerEvent::LocalSignal(SignalPayload::Offer { sdp: offer.sdp }));
        Ok(())
    }

    async fn remote(&mut self, payload: SignalPayload) -> Result<(), webrtc::error::Error> {
        match payload {
            SignalPayload::Offer { sdp } => {
                self.pc.set_remote_description(RTCSessionDescription::offer(sdp)?).await?;
                self.release_held().await?;
                let answer = self.pc.create_answer(None).await?;
                self.pc.set_local_description(answer.clone()).await?;
                self.emit(PeerEvent::LocalSignal(SignalPayload::Answer { sdp: answer.sdp }));
            }
            SignalPayload::Answer { sdp } => {
                self.pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                self.release_held().await?;
            }
            SignalPayload::Candidate { candidate, sdp_mid, sdp_mline_index, ufrag } => {
                let init = RTCIceCandidateInit { candidate, sdp_mid, sdp_mline_index, username_fragment: ufrag, ..Default::default() };
                if self.pc.remote_description().await.is_some() {
                    self.pc.add_ice_candidate(init).await?;
                } else {
                    self.held.push(init);
                }
            }
            // webrtc-rs needs no end-of-candidates marker.
            SignalPayload::EndOfCandidates => {}
            SignalPayload::Restart if self.offerer => self.restart().await?,
            SignalPayload::Restart => {}
            // The core handles these; they never reach a link.
            SignalPayload::Ready | SignalPayload::Camera { .. } | SignalPayload::VideoSize { .. } => {}
        }
        Ok(())
    }

    async fn release_held(&mut self) -> Result<(), webrtc::error::Error> {
        let remote_kind = self.pc.remote_description().await.map(|d| d.sdp_type);
        debug_assert!(remote_kind.is_some_and(|k| k == RTCSdpType::Offer || k == RTCSdpType::Answer));
        for init in std::mem::take(&mut self.held) {
            self.pc.add_ice_candidate(init).await?;
        }
        Ok(())
    }

    /// The offerer restarts ICE; the answerer asks the offerer to (PROTOCOL.md `restart`).
    async fn restart_or_ask(&mut self) {
        if !self.offerer {
            self.emit(PeerEvent::LocalSignal(SignalPayload::Restart));
            return;
        }
        if let Err(e) = self.restart().await {
            warn!(user = %self.user, error = %e, "ICE restart failed");
        }
    }

    async fn restart(&mut self) -> Result<(), webrtc::error::Error> {
        self.pc.restart_ice().await?;
        self.offer().await
    }

    /// The negotiated payload types of our audio: Opus's, and RED's if the far side takes it.
    async fn audio_payload_types(&self) -> Option<(u8, Option<u8>)> {
        let codecs = match self.sender.get_parameters().await {
            Ok(parameters) => parameters.rtp_parameters.codecs,
            Err(e) => {
                warn!(error = %e, "no negotiated codec");
                return None;
            }
        };
        let of = |mime: &str| codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime)).map(|c| c.payload_type);
        let Some(opus) = of(MIME_TYPE_OPUS) else {
            warn!(codecs = ?codecs.iter().map(|c| &c.rtp_codec.mime_type).collect::<Vec<_>>(), "Opus was not negotiated");
            return None;
        };
        Some((opus, of(MIME_TYPE_RED)))
    }

    async fn state_changed(&mut self, state: RTCPeerConnectionState) {
        debug!(user = %self.user, %state, "peer connection");
        match state {
            RTCPeerConnectionState::Connected if !self.connected => {
                self.connected = true;
                match self.begun {
                    true => self.start_media().await,
                    false => self.emit(PeerEvent::ReadyToBegin),
                }
            }
            RTCPeerConnectionState::Failed => {
                self.emit(PeerEvent::Failed);
                self.restart_or_ask().await;
            }
            _ => {}
        }
    }

    /// Connected and begun: our media may go out (the outlets), and the far side's is watched
    /// for from now on.
    async fn start_media(&mut self) {
        self.watchdog = Some(MediaWatchdog::new(Instant::now()));
        if let Some((payload_type, red_payload_type)) = self.audio_payload_types().await {
            // Redundant audio in audio calls only: it triples the audio's bitrate, which
            // the video sender's rate control does not count, and behind a 500 kbit/s
            // policer that starved the picture (crates/cli/tests/faults.rs). Video calls
            // send Opus with its in-band FEC; they still read RED.
            let red_payload_type = red_payload_type.filter(|_| self.video.is_none());
            self.emit(PeerEvent::Connected(AudioOutlet { track: Arc::clone(&self.track), ssrc: self.ssrc, payload_type, red_payload_type }));
        }
        if let Some(video) = &self.video {
            match video.sender.get_parameters().await {
                Ok(parameters) => match parameters.rtp_parameters.codecs.first() {
                    Some(codec) => {
                        let outlet = VideoOutlet { track: Arc::clone(&video.track), ssrc: video.ssrc, payload_type: codec.payload_type };
                        self.emit(PeerEvent::VideoConnected(outlet));
                        // The track is bound now, so its RTCP feedback can be read.
                        tokio::spawn(forward_keyframe_requests(Arc::clone(&video.track), (self.user.clone(), self.device.clone()), self.events.clone()));
                    }
                    None => debug!(user = %self.user, "video not negotiated (the far side takes audio only)"),
                },
                Err(e) => warn!(error = %e, "no negotiated video codec"),
            }
        }
    }

    /// Loss from our own inbound stats (the far side's RTCP reports are not parsed by webrtc-rs
    /// 0.21.1); RTT from RTCP sender and receiver reports, or from the selected candidate pair's
    /// consent checks until the first report has come back.
    async fn report_quality(&mut self, quality_due: bool) {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let mut received = 0u64;
        let (mut audio_received, mut audio_lost) = (0u64, 0i64);
        let mut jitter_ms = None;
        for inbound in report.inbound_rtp_streams() {
            let stream = &inbound.received_rtp_stream_stats;
            received += stream.packets_received;
            if stream.rtp_stream_stats.kind == RtpCodecKind::Audio {
                // The voice's loss is what the score rates; video's rate is too uneven to tell
                // a gap from a still picture.
                audio_received += stream.packets_received;
                audio_lost += stream.packets_lost;
                // The figure our receiver reports carry: RFC 3550's estimate in RTP timestamp
                // units (the field's doc says seconds; the stats copy the report's value), at
                // Opus's 48 kHz.
                jitter_ms = Some(stream.jitter / OPUS_CLOCK_PER_MS);
            }
        }
        let now = Instant::now();
        if let Some(state) = self.watchdog.as_mut().and_then(|watchdog| watchdog.observe(received, now)) {
            debug!(user = %self.user, ?state, "media link");
            self.emit(PeerEvent::MediaLink(state));
        }
        if self.watchdog.as_mut().is_some_and(|watchdog| watchdog.give_up_now(now)) {
            self.emit(PeerEvent::MediaGaveUp);
        }
        if let Some(video) = &mut self.video {
            // How hard the link to this person works to carry our video, once a second:
            // retransmissions per new packet since the last look. It is the only loss signal
            // webrtc-rs 0.21.1 gives a sender that works: its receiver reports say a fraction
            // lost of 0 whatever is lost (measured behind a policer dropping most packets), and
            // count repaired packets as received.
            let sent = report
                .outbound_rtp_streams()
                .find(|o| o.sent_rtp_stream_stats.rtp_stream_stats.ssrc == video.ssrc)
                .map(|o| (o.sent_rtp_stream_stats.packets_sent, o.retransmitted_packets_sent));
            if let Some((packets, retransmitted)) = sent {
                let (last_packets, last_retransmitted) = video.counted;
                video.counted = (packets, retransmitted);
                let new_packets = packets.saturating_sub(last_packets);
                if new_packets > 0 {
                    let r = retransmitted.saturating_sub(last_retransmitted) as f64 / new_packets as f64;
                    self.emit(PeerEvent::VideoRetransmissions(r));
                }
            }
        }
        if !quality_due {
            return;
        }
        let pair_id = report.transport().map(|t| t.selected_candidate_pair_id.clone());
        let pair = pair_id.and_then(|id| match report.get(&id) {
            Some(RTCStatsReportEntry::IceCandidatePair(p)) => Some(p),
            _ => None,
        });
        let rtt_ms = self.rtt.get().map(|rtt| rtt.as_secs_f64() * 1000.0).or_else(|| pair.as_ref().map(|p| p.current_round_trip_time * 1000.0));
        let relayed = pair
            .and_then(|p| match report.get(&format!("RTCLocalIceCandidate_{}", p.local_candidate_id)) {
                Some(RTCStatsReportEntry::LocalCandidate(c)) => Some(c.candidate_type == RTCIceCandidateType::Relay),
                _ => None,
            })
            .unwrap_or(false);
        let loss_percent = self.loss.interval(audio_received, audio_lost);
        debug!(user = %self.user, audio_received, audio_lost, loss_percent, "quality");
        self.emit(PeerEvent::Quality { loss_percent, rtt_ms, jitter_ms, relayed });
    }

    fn emit(&self, event: PeerEvent) {
        let _ = self.events.send(((self.user.clone(), self.device.clone()), event));
    }
}
