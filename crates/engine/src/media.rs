//! The audio pipeline of a call: microphone -> Opus -> every peer; every peer -> jitter buffer ->
//! Opus decode (with FEC recovery and loss concealment) -> mix -> speaker.
//!
//! One task runs the 20 ms clock while a call has peers. Each tick it reads one frame from the
//! [`AudioSource`], cleans it with a [`VoiceProcessor`] (echo cancellation and noise suppression,
//! both on unless turned off with [`AudioPipeline::set_processing`]), encodes it once (48 kHz mono,
//! in-band FEC on) and writes the packet to each connected peer's track; then it takes one frame's
//! worth from each remote person's [`JitterBuffer`], decodes and mixes them, and writes the mix to
//! the [`AudioSink`] and, as the echo reference, to the voice processor. RTP from each remote track
//! is pushed into its jitter buffer by a small reader task as it arrives. Voice levels (0–100, five
//! times a second) and the first audio of each person are reported as events.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_protocol::UserId;
use rtc::media::Sample;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::audio::{voice_level, AudioSink, AudioSource, FRAME, SAMPLE_RATE};
use crate::jitter::{JitterBuffer, Playout};
use crate::peer::AudioOutlet;
use crate::voice_processing::{ProcessingSettings, VoiceProcessor};

const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Ticks between voice-level reports (5 per second).
const LEVEL_EVERY: u32 = 10;
/// Opus bitrate for speech.
const BITRATE: i32 = 32_000;

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

/// The devices the pipeline reads from and writes to, shared so they can be swapped mid-call.
pub struct Devices {
    /// Where our voice comes from.
    pub source: Box<dyn AudioSource>,
    /// Where the others' voices go.
    pub sink: Box<dyn AudioSink>,
}

struct Shared {
    devices: Mutex<Devices>,
    outlets: Mutex<HashMap<UserId, AudioOutlet>>,
    inlets: Mutex<HashMap<UserId, JitterBuffer>>,
    microphone_muted: AtomicBool,
    speaker_muted: AtomicBool,
    /// Echo cancellation and noise suppression of the microphone; the clock reads it every tick.
    processing: Mutex<ProcessingSettings>,
    started: Instant,
    /// Percent of received packets dropped on purpose (a test impairment).
    receive_loss_percent: f64,
}

/// The pipeline; cheap to clone, all clones drive the same one.
#[derive(Clone)]
pub struct AudioPipeline {
    shared: Arc<Shared>,
    next_generation: Arc<std::sync::atomic::AtomicU64>,
    /// The generation of the clock that should run, 0 for none. A clock task runs only while the
    /// value is its own generation, so a clock stopped and restarted within one tick cannot
    /// leave two clocks running.
    running: Arc<watch::Sender<u64>>,
    reports: mpsc::UnboundedSender<MediaReport>,
}

impl AudioPipeline {
    /// A pipeline over `devices`; nothing runs until the first peer is added.
    pub fn new(devices: Devices, reports: mpsc::UnboundedSender<MediaReport>) -> Self {
        let shared = Arc::new(Shared {
            devices: Mutex::new(devices),
            outlets: Mutex::new(HashMap::new()),
            inlets: Mutex::new(HashMap::new()),
            microphone_muted: AtomicBool::new(false),
            speaker_muted: AtomicBool::new(false),
            processing: Mutex::new(ProcessingSettings::default()),
            started: Instant::now(),
            receive_loss_percent: 0.0,
        });
        let (running, _) = watch::channel(0u64);
        AudioPipeline { shared, next_generation: Arc::new(std::sync::atomic::AtomicU64::new(0)), running: Arc::new(running), reports }
    }

    /// Drops `percent` of received packets at random before the jitter buffer, as a lossy network
    /// would.
    pub fn with_receive_loss(mut self, percent: f64) -> Self {
        Arc::get_mut(&mut self.shared).expect("set before the pipeline is shared").receive_loss_percent = percent;
        self
    }

    /// Sends our audio to `user` from now on, and starts the clock if it is not running.
    pub fn add_outlet(&self, user: UserId, outlet: AudioOutlet) {
        lock(&self.shared.outlets).insert(user, outlet);
        self.ensure_running();
    }

    /// Receives `user`'s audio from `track`.
    pub fn add_remote_track(&self, user: UserId, track: Arc<dyn TrackRemote>) {
        lock(&self.shared.inlets).insert(user.clone(), JitterBuffer::new());
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        if shared.receive_loss_percent > 0.0 && rand::random::<f64>() * 100.0 < shared.receive_loss_percent {
                            continue;
                        }
                        let arrival_ms = shared.started.elapsed().as_millis() as i64;
                        if let Some(buffer) = lock(&shared.inlets).get_mut(&user) {
                            buffer.push(packet.header.sequence_number, packet.header.timestamp, packet.payload, arrival_ms);
                        } else {
                            break; // the person left
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            debug!(%user, "remote track ended");
        });
        self.ensure_running();
    }

    /// Stops sending to and hearing `user`; the clock stops with the last person.
    pub fn remove(&self, user: &str) {
        lock(&self.shared.outlets).remove(user);
        lock(&self.shared.inlets).remove(user);
        if lock(&self.shared.outlets).is_empty() && lock(&self.shared.inlets).is_empty() {
            self.running.send_replace(0);
        }
    }

    /// Mutes or unmutes our microphone (silence is sent, so the far end hears nothing).
    pub fn set_microphone_muted(&self, muted: bool) {
        self.shared.microphone_muted.store(muted, Ordering::Relaxed);
    }

    /// Mutes or unmutes all remote audio.
    pub fn set_speaker_muted(&self, muted: bool) {
        self.shared.speaker_muted.store(muted, Ordering::Relaxed);
    }

    /// Turns echo cancellation and noise suppression of our microphone on or off (both are on at
    /// first); takes effect on the next frame.
    pub fn set_processing(&self, settings: ProcessingSettings) {
        *lock(&self.shared.processing) = settings;
    }

    /// Replaces the microphone (takes effect on the next frame).
    pub fn replace_source(&self, source: Box<dyn AudioSource>) {
        lock(&self.shared.devices).source = source;
    }

    /// Replaces the speaker (takes effect on the next frame); the old one is finished.
    pub fn replace_sink(&self, sink: Box<dyn AudioSink>) {
        let mut old = std::mem::replace(&mut lock(&self.shared.devices).sink, sink);
        old.finish();
    }

    /// Finishes the sink (a recording's header is written) and stops the clock.
    pub fn finish(&self) {
        self.running.send_replace(0);
        lock(&self.shared.devices).sink.finish();
    }

    fn ensure_running(&self) {
        if *self.running.borrow() != 0 {
            return;
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.running.send_replace(generation);
        let shared = Arc::clone(&self.shared);
        let reports = self.reports.clone();
        let running = self.running.clone();
        tokio::spawn(async move {
            let outcome = clock(shared, running.subscribe(), generation, reports).await;
            // A clock that failed says so and lets the next peer start a new one.
            running.send_if_modified(|current| {
                let mine = *current == generation;
                if mine {
                    *current = 0;
                }
                mine
            });
            if let Err(e) = outcome {
                warn!(error = %e, "audio pipeline stopped");
            }
        });
    }
}

/// The 20 ms clock: capture, clean, encode, send; receive, decode, mix, play.
async fn clock(
    shared: Arc<Shared>,
    running: watch::Receiver<u64>,
    generation: u64,
    reports: mpsc::UnboundedSender<MediaReport>,
) -> Result<(), opus::Error> {
    let mut encoder = opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
    encoder.set_bitrate(opus::Bitrate::Bits(BITRATE))?;
    encoder.set_inband_fec(true)?;
    // FEC is only produced when the encoder expects loss.
    encoder.set_packet_loss_perc(10)?;
    // One per run of the clock: each call learns its own echo path.
    let mut processor = VoiceProcessor::new(*lock(&shared.processing));
    let mut decoders: HashMap<UserId, opus::Decoder> = HashMap::new();
    let mut heard: HashMap<UserId, bool> = HashMap::new();
    let mut peak_levels: HashMap<UserId, u8> = HashMap::new();
    let mut interval = tokio::time::interval(FRAME_DURATION);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut frame = [0i16; FRAME];
    let mut packet = [0u8; 1500];
    let mut decoded = vec![0i16; FRAME];
    let mut tick: u32 = 0;
    let (mut source_lost, mut sink_lost) = (false, false);
    loop {
        interval.tick().await;
        if *running.borrow() != generation {
            break;
        }
        tick = tick.wrapping_add(1);

        {
            let mut devices = lock(&shared.devices);
            devices.source.read_frame(&mut frame);
            // Said once per device: the engine replaces it, and the new one starts healthy.
            if devices.source.is_lost() && !source_lost {
                source_lost = true;
                let _ = reports.send(MediaReport::MicrophoneLost);
            } else if !devices.source.is_lost() {
                source_lost = false;
            }
        }
        // Cleaned even when muted, so the echo canceller stays adapted for when the mute ends.
        processor.set_settings(*lock(&shared.processing));
        processor.process_capture(&mut frame);
        if shared.microphone_muted.load(Ordering::Relaxed) {
            frame.fill(0);
        }
        let size = encoder.encode(&frame, &mut packet)?;
        let data = Bytes::copy_from_slice(&packet[..size]);
        let outlets: Vec<AudioOutlet> = lock(&shared.outlets).values().cloned().collect();
        for outlet in outlets {
            let sample = Sample { data: data.clone(), duration: FRAME_DURATION, ..Sample::new(Instant::now()) };
            if let Err(e) = outlet.track.write_sample(outlet.ssrc, outlet.payload_type, &sample, &[]).await {
                debug!(error = %e, "write_sample");
            }
        }

        let mut mix = [0i32; FRAME];
        let playouts: Vec<(UserId, Playout)> = lock(&shared.inlets).iter_mut().map(|(u, b)| (u.clone(), b.pop())).collect();
        for (user, playout) in playouts {
            let decoder = match decoders.entry(user.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?),
            };
            let got = match &playout {
                Playout::Packet(payload) => decoder.decode(payload, &mut decoded[..FRAME], false),
                Playout::Recover(next) => decoder.decode(next, &mut decoded[..FRAME], true),
                Playout::Conceal => decoder.decode(&[], &mut decoded[..FRAME], false),
                Playout::Silence => Ok(0),
            };
            let samples = match got {
                Ok(n) => n.min(FRAME),
                Err(e) => {
                    debug!(%user, error = %e, "undecodable packet");
                    0
                }
            };
            decoded[samples..FRAME].fill(0);
            if matches!(playout, Playout::Packet(_)) && !heard.get(&user).copied().unwrap_or(false) {
                heard.insert(user.clone(), true);
                let _ = reports.send(MediaReport::RemoteAudioAvailable(user.clone()));
            }
            let level = voice_level(&decoded[..FRAME]);
            let peak = peak_levels.entry(user).or_insert(0);
            *peak = (*peak).max(level);
            for (m, &s) in mix.iter_mut().zip(&decoded[..FRAME]) {
                *m += i32::from(s);
            }
        }
        let speaker_muted = shared.speaker_muted.load(Ordering::Relaxed);
        for (out, &m) in frame.iter_mut().zip(&mix) {
            *out = if speaker_muted { 0 } else { m.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16 };
        }
        {
            let mut devices = lock(&shared.devices);
            devices.sink.write_frame(&frame);
            if devices.sink.is_lost() && !sink_lost {
                sink_lost = true;
                let _ = reports.send(MediaReport::SpeakerLost);
            } else if !devices.sink.is_lost() {
                sink_lost = false;
            }
        }
        // What the speaker just played is what the next ticks' microphone frames may echo.
        processor.process_render(&frame);

        if tick.is_multiple_of(LEVEL_EVERY) && !peak_levels.is_empty() {
            let mut levels: Vec<(UserId, u8)> = peak_levels.drain().collect();
            levels.sort();
            let _ = reports.send(MediaReport::VoiceLevels(levels));
        }
        decoders.retain(|user, _| lock(&shared.inlets).contains_key(user));
    }
    Ok(())
}

/// Locks a mutex, carrying on after a panic elsewhere (the data is plain audio state).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
