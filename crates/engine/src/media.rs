//! The audio pipeline of a call: microphone -> Opus -> every peer; every peer -> jitter buffer ->
//! Opus decode (with FEC recovery and loss concealment) -> mix -> speaker.
//!
//! An actor on an OS thread of its own ("hark-audio"), fed by [`AudioCommand`]s: it owns the
//! devices, the encoder, one jitter buffer and decoder per remote person, the voice processor
//! and the mutes, so nothing of it is shared or locked. Encoding and decoding never run on a
//! tokio worker. While the call has peers the thread runs the 20 ms clock; each tick it reads one
//! frame from the [`AudioSource`], cleans it with a [`VoiceProcessor`] (echo cancellation and
//! noise suppression, both on unless turned off), encodes it once (48 kHz mono, in-band FEC on)
//! and writes the packet to each connected peer's track; then it takes one frame's worth from each
//! remote person's [`JitterBuffer`], decodes and mixes them, and writes the mix to the
//! [`AudioSink`] and, as the echo reference, to the voice processor. With no peers it sleeps on
//! its commands. RTP from each remote track reaches it as a command, sent by a small reader task
//! as the packet arrives. Voice levels (0–100, five times a second) and the first audio of each
//! person come out as [`MediaReport`]s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_protocol::UserId;
use rtc::media::Sample;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::audio::{voice_level, AudioSink, AudioSource, FRAME, SAMPLE_RATE};
use crate::jitter::{JitterBuffer, Playout};
use crate::red;
use crate::peer::AudioOutlet;
use crate::voice_processing::{ProcessingSettings, VoiceProcessor};

const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Ticks between voice-level reports (5 per second).
const LEVEL_EVERY: u32 = 10;
/// Opus bitrate for speech.
const BITRATE: i32 = 32_000;
/// Ticks the clock may run late and still catch up frame by frame; beyond, it starts afresh
/// (after the machine stalled for that long, a burst of stale frames helps nobody).
const MAX_CATCH_UP: u32 = 10;

/// What the pipeline reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaReport {
    /// The first audio from `user` was decoded.
    RemoteAudioAvailable(UserId),
    /// Speaking levels, 0–100, of each remote person over the last 200 ms.
    VoiceLevels(Vec<(UserId, u8)>),
    /// The microphone's device has gone.
    MicrophoneLost,
    /// The speaker's device has gone.
    SpeakerLost,
}

/// The devices the pipeline reads from and writes to.
pub struct Devices {
    /// Where our voice comes from.
    pub source: Box<dyn AudioSource>,
    /// Where the others' voices go.
    pub sink: Box<dyn AudioSink>,
}

/// What the pipeline can be told.
enum AudioCommand {
    /// Send our audio to `user` through `outlet`.
    AddOutlet(UserId, AudioOutlet),
    /// Expect `user`'s audio (a jitter buffer of their own), with redundant audio under this
    /// payload type if negotiated.
    AddInlet(UserId, Option<u8>),
    /// An RTP packet of `user`'s, arrived at `arrival_ms` (ms since the pipeline started).
    Packet { user: UserId, sequence: u16, timestamp: u32, payload_type: u8, payload: Bytes, arrival_ms: i64 },
    /// Stop sending to and hearing `user`.
    Remove(UserId),
    MuteMicrophone(bool),
    MuteSpeaker(bool),
    Processing(ProcessingSettings),
    ReplaceSource(Box<dyn AudioSource>),
    /// The old sink is finished.
    ReplaceSink(Box<dyn AudioSink>),
    /// Finish the sink (a recording's header is written), then answer.
    Finish(oneshot::Sender<()>),
}

/// A handle to the pipeline; cheap to clone, all clones drive the same one. The thread ends
/// (finishing the sink) when the last handle is dropped.
#[derive(Clone)]
pub struct AudioPipeline {
    commands: CommandSender,
    started: Instant,
    /// Percent of received packets dropped on purpose (a test impairment).
    receive_loss_percent: f64,
}

impl AudioPipeline {
    /// A pipeline over `devices`; its clock runs only while there are peers. Call from within
    /// a tokio runtime: the thread writes to webrtc-rs tracks through it.
    pub fn new(devices: Devices, reports: mpsc::UnboundedSender<MediaReport>) -> Self {
        let (commands, inbox) = mpsc::unbounded_channel();
        let started = Instant::now();
        let runtime = tokio::runtime::Handle::current();
        let actor = AudioActor::new(devices, reports, runtime);
        let listening = Arc::clone(&actor.listening);
        let thread = match std::thread::Builder::new().name("hark-audio".into()).spawn(move || actor.run(inbox)) {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                warn!(error = %e, "cannot start the audio thread; calls will be silent");
                None
            }
        };
        AudioPipeline { commands: CommandSender { commands, thread, listening }, started, receive_loss_percent: 0.0 }
    }

    /// Drops `percent` of received packets at random before the jitter buffer, as a lossy network
    /// would.
    pub fn with_receive_loss(mut self, percent: f64) -> Self {
        self.receive_loss_percent = percent;
        self
    }

    fn send(&self, command: AudioCommand) {
        let _ = self.commands.send(command);
    }
}

/// Sends the audio thread a command, and wakes it while it listens for a first packet (between
/// ticks it waits parked), so that packet is played the moment it arrives. Otherwise commands
/// wait for the next tick, as packets always did: no wake-up per packet.
#[derive(Clone)]
struct CommandSender {
    commands: mpsc::UnboundedSender<AudioCommand>,
    thread: Option<std::thread::Thread>,
    listening: Arc<AtomicBool>,
}

impl CommandSender {
    fn send(&self, command: AudioCommand) -> Result<(), mpsc::error::SendError<AudioCommand>> {
        self.commands.send(command)?;
        if let Some(thread) = self.thread.as_ref().filter(|_| self.listening.load(Ordering::Acquire)) {
            thread.unpark();
        }
        Ok(())
    }
}

impl AudioPipeline {
    /// Sends our audio to `user` from now on (the clock starts with the first peer).
    pub fn add_outlet(&self, user: UserId, outlet: AudioOutlet) {
        self.send(AudioCommand::AddOutlet(user, outlet));
    }

    /// Receives `user`'s audio from `track`: a reader task passes each packet on as it arrives.
    /// Packets of `red_payload_type` carry redundant audio ([`crate::red`]).
    pub fn add_remote_track(&self, user: UserId, track: Arc<dyn TrackRemote>, red_payload_type: Option<u8>) {
        self.send(AudioCommand::AddInlet(user.clone(), red_payload_type));
        let (commands, started, loss) = (self.commands.clone(), self.started, self.receive_loss_percent);
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        if loss > 0.0 && rand::random::<f64>() * 100.0 < loss {
                            continue;
                        }
                        let command = AudioCommand::Packet {
                            user: user.clone(),
                            sequence: packet.header.sequence_number,
                            timestamp: packet.header.timestamp,
                            payload_type: packet.header.payload_type,
                            payload: packet.payload,
                            arrival_ms: started.elapsed().as_millis() as i64,
                        };
                        if commands.send(command).is_err() {
                            break; // the pipeline is gone
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            debug!(%user, "remote audio track ended");
        });
    }

    /// Stops sending to and hearing `user`; the clock stops with the last person.
    pub fn remove(&self, user: &str) {
        self.send(AudioCommand::Remove(user.to_owned()));
    }

    /// Mutes or unmutes our microphone (silence is sent, so the far end hears nothing).
    pub fn set_microphone_muted(&self, muted: bool) {
        self.send(AudioCommand::MuteMicrophone(muted));
    }

    /// Mutes or unmutes all remote audio.
    pub fn set_speaker_muted(&self, muted: bool) {
        self.send(AudioCommand::MuteSpeaker(muted));
    }

    /// Turns echo cancellation and noise suppression of our microphone on or off (both are on at
    /// first); takes effect on the next frame.
    pub fn set_processing(&self, settings: ProcessingSettings) {
        self.send(AudioCommand::Processing(settings));
    }

    /// Replaces the microphone (takes effect on the next frame).
    pub fn replace_source(&self, source: Box<dyn AudioSource>) {
        self.send(AudioCommand::ReplaceSource(source));
    }

    /// Replaces the speaker (takes effect on the next frame); the old one is finished.
    pub fn replace_sink(&self, sink: Box<dyn AudioSink>) {
        self.send(AudioCommand::ReplaceSink(sink));
    }

    /// Finishes the sink (a recording's header is written); the clock stops. Completes when it
    /// is done, or at once if the pipeline has already ended.
    pub async fn finish(&self) {
        let (done, finished) = oneshot::channel();
        self.send(AudioCommand::Finish(done));
        let _ = finished.await;
    }
}

/// Everything the audio thread owns.
struct AudioActor {
    /// Set while nobody has been heard yet: a command wakes the thread ([`CommandSender`]).
    listening: Arc<AtomicBool>,
    devices: Devices,
    reports: mpsc::UnboundedSender<MediaReport>,
    runtime: tokio::runtime::Handle,
    encoder: Option<opus::Encoder>,
    /// The last frames encoded, oldest first, for redundant audio ([`red::RED_DISTANCE`]).
    recent: VecDeque<Bytes>,
    outlets: HashMap<UserId, AudioOutlet>,
    inlets: HashMap<UserId, Inlet>,
    microphone_muted: bool,
    speaker_muted: bool,
    processing: ProcessingSettings,
    /// A new one for each run of the clock: each call learns its own echo path.
    processor: Option<VoiceProcessor>,
    tick: u32,
    source_lost: bool,
    sink_lost: bool,
}

/// One remote person's audio.
struct Inlet {
    buffer: JitterBuffer,
    /// The payload type of their redundant audio, if negotiated.
    red_payload_type: Option<u8>,
    decoder: Option<opus::Decoder>,
    heard: bool,
    peak_level: u8,
}

impl AudioActor {
    fn new(devices: Devices, reports: mpsc::UnboundedSender<MediaReport>, runtime: tokio::runtime::Handle) -> Self {
        AudioActor {
            devices,
            reports,
            runtime,
            encoder: None,
            recent: VecDeque::new(),
            outlets: HashMap::new(),
            inlets: HashMap::new(),
            microphone_muted: false,
            speaker_muted: false,
            processing: ProcessingSettings::default(),
            processor: None,
            tick: 0,
            listening: Arc::new(AtomicBool::new(false)),
            source_lost: false,
            sink_lost: false,
        }
    }

    fn has_peers(&self) -> bool {
        !self.outlets.is_empty() || !self.inlets.is_empty()
    }

    /// Runs until every handle is gone: sleeps on commands while idle, runs the clock otherwise.
    fn run(mut self, mut inbox: mpsc::UnboundedReceiver<AudioCommand>) {
        'serve: loop {
            if !self.has_peers() {
                self.processor = None;
                match inbox.blocking_recv() {
                    Some(command) => self.apply(command),
                    None => break,
                }
                continue;
            }
            // The clock: runs while there are peers, a tick every 20 ms on deadlines (so the
            // time a tick takes does not add up), taking the commands that came in between.
            let mut due = Instant::now();
            self.processor = Some(VoiceProcessor::new(self.processing));
            // A fresh encoder for each call too, so no state of the last one carries over.
            self.encoder = new_encoder().map_err(|e| warn!(error = %e, "cannot make the Opus encoder")).ok();
            self.recent.clear();
            while self.has_peers() {
                if !self.take_commands(&mut inbox) {
                    break 'serve;
                }
                if !self.has_peers() {
                    break;
                }
                self.tick_once();
                due += FRAME_DURATION;
                // Waiting for the next tick. Until somebody is heard, each command wakes the
                // thread and a first packet is played the moment it arrives: the clock takes its
                // phase from it, not from when our side happened to start, which would hold the
                // call's first words for up to a tick. After that, commands wait for the tick.
                loop {
                    let now = Instant::now();
                    if due <= now {
                        if now - due > FRAME_DURATION * MAX_CATCH_UP {
                            due = now;
                        }
                        break;
                    }
                    let waiting = self.inlets.values().all(|inlet| !inlet.heard);
                    self.listening.store(waiting, Ordering::Release);
                    // Commands sent before the flag went up are taken here; one sent after it
                    // leaves the unpark token, so the park below returns at once.
                    if !self.take_commands(&mut inbox) {
                        break 'serve;
                    }
                    if waiting && self.inlets.values().any(|inlet| inlet.buffer.holds_packets()) {
                        due = now;
                        break;
                    }
                    std::thread::park_timeout(due - now);
                }
            }
        }
        self.devices.sink.finish();
    }

    /// Applies every command waiting; false once every handle is gone.
    fn take_commands(&mut self, inbox: &mut mpsc::UnboundedReceiver<AudioCommand>) -> bool {
        loop {
            match inbox.try_recv() {
                Ok(command) => self.apply(command),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn apply(&mut self, command: AudioCommand) {
        match command {
            AudioCommand::AddOutlet(user, outlet) => {
                self.outlets.insert(user, outlet);
            }
            AudioCommand::AddInlet(user, red_payload_type) => {
                self.inlets.insert(user, Inlet { buffer: JitterBuffer::new(), red_payload_type, decoder: None, heard: false, peak_level: 0 });
            }
            AudioCommand::Packet { user, sequence, timestamp, payload_type, payload, arrival_ms } => {
                let Some(inlet) = self.inlets.get_mut(&user) else { return };
                if inlet.red_payload_type != Some(payload_type) {
                    inlet.buffer.push(sequence, timestamp, payload, arrival_ms);
                    return;
                }
                let blocks = match red::unpack(&payload) {
                    Ok(blocks) => blocks,
                    Err(e) => {
                        debug!(%user, error = %e, "unreadable redundant audio");
                        return;
                    }
                };
                let Some((primary, earlier)) = blocks.split_last() else { return };
                inlet.buffer.push(sequence, timestamp, primary.payload.clone(), arrival_ms);
                for block in earlier {
                    // Frames are 20 ms, so a copy's offset says how many packets back it was.
                    let back = block.timestamp_offset / FRAME as u32;
                    if !block.payload.is_empty() && block.timestamp_offset % FRAME as u32 == 0 && (1..=red::RED_DISTANCE as u32).contains(&back) {
                        inlet.buffer.push_redundant(sequence, back as u16, block.payload.clone());
                    }
                }
            }
            AudioCommand::Remove(user) => {
                self.outlets.remove(&user);
                self.inlets.remove(&user);
            }
            AudioCommand::MuteMicrophone(muted) => self.microphone_muted = muted,
            AudioCommand::MuteSpeaker(muted) => self.speaker_muted = muted,
            AudioCommand::Processing(settings) => {
                self.processing = settings;
                if let Some(processor) = &mut self.processor {
                    processor.set_settings(settings);
                }
            }
            AudioCommand::ReplaceSource(source) => {
                self.devices.source = source;
                self.source_lost = false;
            }
            AudioCommand::ReplaceSink(sink) => {
                let mut old = std::mem::replace(&mut self.devices.sink, sink);
                old.finish();
                self.sink_lost = false;
            }
            AudioCommand::Finish(done) => {
                self.outlets.clear();
                self.inlets.clear();
                self.devices.sink.finish();
                let _ = done.send(());
            }
        }
    }

    /// One 20 ms frame: capture, clean, encode, send; receive, decode, mix, play.
    fn tick_once(&mut self) {
        self.tick = self.tick.wrapping_add(1);
        let mut frame = [0i16; FRAME];
        self.devices.source.read_frame(&mut frame);
        // Said once per device: the engine replaces it, and the new one starts healthy.
        if self.devices.source.is_lost() && !self.source_lost {
            self.source_lost = true;
            let _ = self.reports.send(MediaReport::MicrophoneLost);
        }
        let processor = self.processor.get_or_insert_with(|| VoiceProcessor::new(self.processing));
        // Cleaned even when muted, so the echo canceller stays adapted for when the mute ends.
        processor.process_capture(&mut frame);
        if self.microphone_muted {
            frame.fill(0);
        }
        self.send_frame(&frame);

        let mut mix = [0i32; FRAME];
        let mut decoded = [0i16; FRAME];
        for (user, inlet) in &mut self.inlets {
            let playout = inlet.buffer.pop();
            let samples = decode(user, inlet, &playout, &mut decoded);
            decoded[samples..].fill(0);
            if matches!(playout, Playout::Packet(_)) && !inlet.heard {
                inlet.heard = true;
                let _ = self.reports.send(MediaReport::RemoteAudioAvailable(user.clone()));
            }
            inlet.peak_level = inlet.peak_level.max(voice_level(&decoded));
            for (m, &s) in mix.iter_mut().zip(&decoded) {
                *m += i32::from(s);
            }
        }
        for (out, &m) in frame.iter_mut().zip(&mix) {
            *out = if self.speaker_muted { 0 } else { m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16 };
        }
        self.devices.sink.write_frame(&frame);
        if self.devices.sink.is_lost() && !self.sink_lost {
            self.sink_lost = true;
            let _ = self.reports.send(MediaReport::SpeakerLost);
        }
        // What the speaker just played is what the next ticks' microphone frames may echo.
        if let Some(processor) = &mut self.processor {
            processor.process_render(&frame);
        }

        if self.tick.is_multiple_of(LEVEL_EVERY) && !self.inlets.is_empty() {
            let mut levels: Vec<(UserId, u8)> =
                self.inlets.iter_mut().map(|(user, inlet)| (user.clone(), std::mem::take(&mut inlet.peak_level))).collect();
            levels.sort();
            let _ = self.reports.send(MediaReport::VoiceLevels(levels));
        }
    }

    /// Encodes a frame once and writes it to every outlet's track.
    fn send_frame(&mut self, frame: &[i16; FRAME]) {
        let Some(encoder) = &mut self.encoder else { return };
        let mut packet = [0u8; 1500];
        let size = match encoder.encode(frame, &mut packet) {
            Ok(size) => size,
            Err(e) => {
                debug!(error = %e, "Opus encode");
                // A gap: the frames kept are no longer the ones just before the next.
                self.recent.clear();
                return;
            }
        };
        let data = Bytes::copy_from_slice(&packet[..size]);
        // Copies of the frames before this one, for peers that take redundant audio; their
        // offsets hold because a frame is encoded on every tick of the clock.
        let earlier: Vec<(u32, Bytes)> =
            self.recent.iter().enumerate().map(|(i, frame)| (((self.recent.len() - i) * FRAME) as u32, frame.clone())).collect();
        self.recent.push_back(data.clone());
        if self.recent.len() > red::RED_DISTANCE {
            self.recent.pop_front();
        }
        if self.outlets.is_empty() {
            return;
        }
        let timestamp = Instant::now();
        let outlets: Vec<AudioOutlet> = self.outlets.values().cloned().collect();
        // webrtc-rs tracks are written through its runtime: a send into each connection's
        // driver, which does not wait for the network.
        self.runtime.block_on(async {
            for outlet in outlets {
                let (payload_type, data) = match outlet.red_payload_type {
                    Some(red_payload_type) => {
                        let earlier: Vec<(u32, &[u8])> = earlier.iter().map(|(offset, frame)| (*offset, &frame[..])).collect();
                        (red_payload_type, Bytes::from(red::pack(outlet.payload_type, &data, &earlier)))
                    }
                    None => (outlet.payload_type, data.clone()),
                };
                let sample = Sample { data, duration: FRAME_DURATION, ..Sample::new(timestamp) };
                if let Err(e) = outlet.track.write_sample(outlet.ssrc, payload_type, &sample, &[]).await {
                    debug!(error = %e, "write_sample");
                }
            }
        });
    }
}

/// Decodes what the jitter buffer says to play into `out`; the samples written.
fn decode(user: &str, inlet: &mut Inlet, playout: &Playout, out: &mut [i16; FRAME]) -> usize {
    if matches!(playout, Playout::Silence) {
        return 0;
    }
    if inlet.decoder.is_none() {
        match opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono) {
            Ok(decoder) => inlet.decoder = Some(decoder),
            Err(e) => {
                warn!(%user, error = %e, "cannot make an Opus decoder");
                return 0;
            }
        }
    }
    let decoder = inlet.decoder.as_mut().expect("made above");
    let got = match playout {
        Playout::Packet(payload) => decoder.decode(payload, out, false),
        Playout::Recover(next) => decoder.decode(next, out, true),
        Playout::Conceal => decoder.decode(&[], out, false),
        Playout::Silence => Ok(0),
    };
    match got {
        Ok(n) => n.min(FRAME),
        Err(e) => {
            debug!(%user, error = %e, "undecodable packet");
            0
        }
    }
}

fn new_encoder() -> Result<opus::Encoder, opus::Error> {
    let mut encoder = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    encoder.set_bitrate(opus::Bitrate::Bits(BITRATE))?;
    encoder.set_inband_fec(true)?;
    // FEC is only produced when the encoder expects loss.
    encoder.set_packet_loss_perc(10)?;
    Ok(encoder)
}
