//! Sound card devices through cpal: a [`MicrophoneSource`] and a [`SpeakerSink`] that speak the
//! pipeline's format (48 kHz mono `i16`, 20 ms frames), device listing and a [`DeviceWatcher`].
//!
//! The pipeline and the sound card run on different clocks: the pipeline calls
//! [`AudioSource::read_frame`] / [`AudioSink::write_frame`] every 20 ms from a tokio task, while
//! cpal calls its data callback on its own audio thread whenever the device wants a period. The two
//! meet in a queue of 48 kHz mono samples bounded to [`QUEUE_LIMIT`] (200 ms): when one
//! side runs ahead, the oldest samples are dropped, so latency can never grow past that bound, and
//! neither side ever waits for the other (an empty queue reads as silence). Everything the device
//! needs besides that (channel count, sample format, sample rate) is converted inside the data
//! callback. A device that disappears is reported through `is_lost()`, from cpal's error callback or,
//! for backends that go quiet instead of failing, from a stall in the data callbacks; reopening is
//! the caller's job (the engine reopens the default). A lost stream is closed at the next
//! read/write, because cpal's ALSA host keeps retrying a dead PulseAudio connection in a tight loop
//! (a whole core) until its stream is dropped.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig, SupportedStreamConfig, SupportedStreamConfigRange};

use crate::audio::{AudioSink, AudioSource, FRAME, SAMPLE_RATE};

/// The most audio a queue holds between the pipeline and the device: 200 ms at 48 kHz.
pub const QUEUE_LIMIT: usize = SAMPLE_RATE as usize / 5;

/// After running dry, playback waits for this much audio (40 ms) before it starts again, so the
/// pipeline's 20 ms writes and the device's period-sized reads, which need not line up, don't
/// alternate between a few samples of sound and a gap (a crackle) every period.
const PLAYBACK_PRIME: usize = 2 * FRAME;

/// How long cpal's stream thread may block waiting on the device before it re-checks the device's
/// state; a disconnected device is noticed at least this often.
const STREAM_POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// A running stream whose data callbacks stop for this long is taken for lost: when PulseAudio
/// dies, cpal's ALSA capture can sit in its poll loop forever without reporting an error.
const STALL_LIMIT: Duration = Duration::from_secs(2);

/// Data callbacks before the stall watch starts. The first few only fill the device's buffer up
/// front, and a stream may then legitimately wait a while (PulseAudio's null sink: about 2 s) before
/// asking for more.
const STALL_WATCH_AFTER: u32 = 10;

/// How long errors must keep coming, with no audio in between, before a stream is taken for lost:
/// cpal's ALSA host reports a dead PulseAudio connection as a generic backend error, tens of
/// thousands of times a second, rather than as `DeviceNotAvailable`. The same error also comes in a
/// burst of a millisecond or two while a PulseAudio stream starts, which must not count.
const FAILURE_SPAN: Duration = Duration::from_millis(250);

/// Runs `$build!(T)` with `T` the Rust type of a PCM `SampleFormat`; `None` for formats that are
/// not PCM (DSD) or that this cpal version added after this was written.
macro_rules! dispatch_format {
    ($format:expr, $build:ident) => {
        match $format {
            SampleFormat::I8 => Some($build!(i8)),
            SampleFormat::I16 => Some($build!(i16)),
            SampleFormat::I24 => Some($build!(cpal::I24)),
            SampleFormat::I32 => Some($build!(i32)),
            SampleFormat::I64 => Some($build!(i64)),
            SampleFormat::U8 => Some($build!(u8)),
            SampleFormat::U16 => Some($build!(u16)),
            SampleFormat::U24 => Some($build!(cpal::U24)),
            SampleFormat::U32 => Some($build!(u32)),
            SampleFormat::U64 => Some($build!(u64)),
            SampleFormat::F32 => Some($build!(f32)),
            SampleFormat::F64 => Some($build!(f64)),
            _ => None,
        }
    };
}

/// Why a sound card could not be listed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SoundCardError {
    /// No device with this id (or it exists but cannot capture/play, as asked).
    #[error("no {direction} device with id '{id}'")]
    NotFound {
        /// Capture or playback.
        direction: Direction,
        /// The id asked for.
        id: String,
    },
    /// The system has no default device of this direction.
    #[error("no default {0} device")]
    NoDefault(Direction),
    /// The device offers no sample format this module can convert.
    #[error("{direction} device '{device}' offers no usable stream configuration")]
    NoUsableConfig {
        /// Capture or playback.
        direction: Direction,
        /// The device's id.
        device: String,
    },
    /// The audio system refused to open or start the stream.
    #[error("could not open {direction} device '{device}': {source}")]
    Open {
        /// Capture or playback.
        direction: Direction,
        /// The device's id.
        device: String,
        /// What the audio system said.
        #[source]
        source: cpal::Error,
    },
    /// The audio system could not enumerate its devices.
    #[error("could not list audio devices: {0}")]
    List(#[source] cpal::Error),
}

/// Whether a device captures or plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(rename = "DeviceDirection"))]
pub enum Direction {
    /// A microphone or line in.
    Input,
    /// A speaker or headset.
    Output,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Input => "input",
            Direction::Output => "output",
        })
    }
}

/// One device as the UI shows it. A device that both captures and plays is listed twice, once per
/// direction, with the same id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DeviceInfo {
    /// cpal's device id as a string (`host:device`, e.g. `alsa:default`): stable across runs, and
    /// what [`MicrophoneSource::open`] and [`SpeakerSink::open`] take.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Capture or playback.
    pub direction: Direction,
    /// Whether this is what opening with no id gives.
    pub is_default: bool,
}

/// Every input and output device of the default host; each direction's default is always in the
/// list, exactly once.
pub fn list_devices() -> Result<Vec<DeviceInfo>, SoundCardError> {
    let host = cpal::default_host();
    let mut listed: Vec<DeviceInfo> = Vec::new();
    let add = |listed: &mut Vec<DeviceInfo>, device: &cpal::Device, direction: Direction, is_default: bool| {
        // A device unplugged between enumeration and this question has no id: leave it out.
        let Ok(id) = device.id() else { return };
        let id = id.to_string();
        if listed.iter().any(|d| d.id == id && d.direction == direction) {
            return;
        }
        let name = device.description().map(|d| d.name().to_owned()).unwrap_or_else(|_| id.clone());
        listed.push(DeviceInfo { id, name, direction, is_default });
    };

    // Defaults first: ALSA's `default` PCM is not always among the enumerated devices, and when it
    // is, its entry must carry `is_default`.
    if let Some(device) = host.default_input_device() {
        add(&mut listed, &device, Direction::Input, true);
    }
    if let Some(device) = host.default_output_device() {
        add(&mut listed, &device, Direction::Output, true);
    }
    for device in host.devices().map_err(SoundCardError::List)? {
        if device.supports_input() {
            add(&mut listed, &device, Direction::Input, false);
        }
        if device.supports_output() {
            add(&mut listed, &device, Direction::Output, false);
        }
    }
    Ok(listed)
}

/// Notices when devices come and go. The engine polls it about once a second; each poll lists the
/// devices afresh, which blocks for a few ms (5–15 ms with ALSA). `DeviceWatcher::default()` starts
/// from an empty list, so its first poll reports every device.
#[derive(Debug, Default)]
pub struct DeviceWatcher {
    last: Vec<DeviceInfo>,
}

impl DeviceWatcher {
    /// Starts from the current list, so the first [`poll`](Self::poll) reports only changes.
    pub fn new() -> Self {
        DeviceWatcher { last: list_devices().unwrap_or_default() }
    }

    /// The new list if it differs from the one seen last; `None` if unchanged or if listing failed
    /// (a failure is not a change: the next poll tries again).
    pub fn poll(&mut self) -> Option<Vec<DeviceInfo>> {
        match list_devices() {
            Ok(list) if list != self.last => {
                self.last = list.clone();
                Some(list)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "could not list audio devices");
                None
            }
        }
    }
}

/// Audio from a sound card's input, converted to 48 kHz mono.
pub struct MicrophoneSource {
    queue: Arc<SampleQueue>,
    health: Arc<StreamHealth>,
    // Held to keep capturing; dropped once lost. cpal 0.18 requires every host's stream to be
    // `Send + Sync`, so it can live here rather than on a thread of its own.
    stream: Option<cpal::Stream>,
}

impl MicrophoneSource {
    /// Opens the input device with this id (from [`list_devices`]), or the default one, and starts
    /// capturing. Blocks while the audio system opens the device (typically tens of ms).
    pub fn open(id: Option<&str>) -> Result<Self, SoundCardError> {
        let device = find_device(Direction::Input, id)?;
        let name = device_label(&device);
        let chosen = choose_config(&device, Direction::Input, &name)?;
        let config = chosen.config();
        let queue = Arc::new(SampleQueue::default());
        let health = Arc::new(StreamHealth::new());
        let open_error = |source| SoundCardError::Open { direction: Direction::Input, device: name.clone(), source };

        macro_rules! build {
            ($sample:ty) => {
                device.build_input_stream::<$sample, _, _>(
                    config,
                    capture_callback::<$sample>(queue.clone(), health.clone(), config),
                    stream_error_handler(Direction::Input, name.clone(), health.clone()),
                    Some(STREAM_POLL_TIMEOUT),
                )
            };
        }
        let stream = dispatch_format!(chosen.sample_format(), build)
            .ok_or_else(|| SoundCardError::NoUsableConfig { direction: Direction::Input, device: name.clone() })?
            .map_err(open_error)?;
        stream.play().map_err(open_error)?;
        tracing::info!(device = %name, rate = config.sample_rate, channels = config.channels,
            format = %chosen.sample_format(), "microphone open");
        Ok(MicrophoneSource { queue, health, stream: Some(stream) })
    }

}

impl AudioSource for MicrophoneSource {
    /// Whether the device has gone (unplugged, or the sound server died): it will deliver only
    /// silence from now on, and should be replaced.
    fn is_lost(&self) -> bool {
        self.health.is_lost()
    }

    fn read_frame(&mut self, frame: &mut [i16; FRAME]) {
        close_if_lost(&mut self.stream, &self.health);
        let mut queue = self.queue.lock();
        let available = queue.len().min(FRAME);
        for (slot, sample) in frame.iter_mut().zip(queue.drain(..available)) {
            *slot = sample;
        }
        // Not enough captured yet (the device is starting, or it is gone): pad, never wait.
        frame[available..].fill(0);
    }
}

/// Audio to a sound card's output: 48 kHz mono in, whatever the device wants out.
pub struct SpeakerSink {
    queue: Arc<SampleQueue>,
    health: Arc<StreamHealth>,
    // As for the microphone: held to keep playing, dropped once lost.
    stream: Option<cpal::Stream>,
}

impl SpeakerSink {
    /// Opens the output device with this id (from [`list_devices`]), or the default one, and starts
    /// playing (silence until frames are written). Blocks while the audio system opens the device.
    pub fn open(id: Option<&str>) -> Result<Self, SoundCardError> {
        let device = find_device(Direction::Output, id)?;
        let name = device_label(&device);
        let chosen = choose_config(&device, Direction::Output, &name)?;
        let config = chosen.config();
        let queue = Arc::new(SampleQueue::default());
        let health = Arc::new(StreamHealth::new());
        let open_error = |source| SoundCardError::Open { direction: Direction::Output, device: name.clone(), source };

        macro_rules! build {
            ($sample:ty) => {
                device.build_output_stream::<$sample, _, _>(
                    config,
                    playback_callback::<$sample>(queue.clone(), health.clone(), config),
                    stream_error_handler(Direction::Output, name.clone(), health.clone()),
                    Some(STREAM_POLL_TIMEOUT),
                )
            };
        }
        let stream = dispatch_format!(chosen.sample_format(), build)
            .ok_or_else(|| SoundCardError::NoUsableConfig { direction: Direction::Output, device: name.clone() })?
            .map_err(open_error)?;
        stream.play().map_err(open_error)?;
        tracing::info!(device = %name, rate = config.sample_rate, channels = config.channels,
            format = %chosen.sample_format(), "speaker open");
        Ok(SpeakerSink { queue, health, stream: Some(stream) })
    }

}

impl AudioSink for SpeakerSink {
    /// Whether the device has gone: what is written is no longer heard, and the sink should be
    /// replaced.
    fn is_lost(&self) -> bool {
        self.health.is_lost()
    }

    fn write_frame(&mut self, frame: &[i16; FRAME]) {
        close_if_lost(&mut self.stream, &self.health);
        self.queue.push(frame);
    }
}

/// Drops the stream of a lost device, which stops whatever its backend still does with it.
fn close_if_lost(stream: &mut Option<cpal::Stream>, health: &StreamHealth) {
    if stream.is_some() && health.is_lost() {
        *stream = None;
        tracing::info!("closed the stream of a lost audio device");
    }
}

/// What the audio thread tells the pipeline about a stream: whether it still runs.
#[derive(Debug)]
struct StreamHealth {
    opened: Instant,
    /// Milliseconds from `opened` to the latest data callback, once the stall watch has started;
    /// 0 before.
    latest_data_ms: AtomicU64,
    /// Milliseconds from `opened` to the first error since the latest data callback; 0 if none.
    failing_since_ms: AtomicU64,
    /// Set for good by an error that means the device is gone.
    gone: AtomicBool,
}

impl StreamHealth {
    fn new() -> Self {
        StreamHealth { opened: Instant::now(), latest_data_ms: AtomicU64::new(0), failing_since_ms: AtomicU64::new(0), gone: AtomicBool::new(false) }
    }

    fn millis_since_open(&self) -> u64 {
        // Plus one so that 0 keeps meaning "not watching yet".
        millis(self.opened.elapsed()).saturating_add(1)
    }

    /// Called by the data callback; `callbacks` counts them, so the stall watch starts only once
    /// the stream runs steadily.
    fn data_arrived(&self, callbacks: u32) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
        if callbacks >= STALL_WATCH_AFTER {
            self.latest_data_ms.store(self.millis_since_open(), Ordering::Relaxed);
        }
    }

    /// Called by the error callback for an error that may be transient; whether errors have now
    /// kept coming long enough, with no audio in between, to call the device gone.
    fn failed(&self) -> bool {
        let now = self.millis_since_open();
        let since = match self.failing_since_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => now,
            Err(earlier) => earlier,
        };
        now.saturating_sub(since) >= millis(FAILURE_SPAN)
    }

    fn is_lost(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return true;
        }
        let latest = self.latest_data_ms.load(Ordering::Relaxed);
        latest != 0 && self.millis_since_open().saturating_sub(latest) > millis(STALL_LIMIT)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Samples waiting between the pipeline and the device, 48 kHz mono, at most [`QUEUE_LIMIT`].
#[derive(Debug, Default)]
struct SampleQueue(Mutex<VecDeque<i16>>);

impl SampleQueue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<i16>> {
        // A panic elsewhere while holding the lock leaves plain samples behind: still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends, dropping the oldest samples beyond the limit: stale audio is worth less than
    /// latency in a call.
    fn push(&self, samples: &[i16]) {
        let mut queue = self.lock();
        queue.extend(samples);
        let excess = queue.len().saturating_sub(QUEUE_LIMIT);
        queue.drain(..excess);
    }
}

/// Turns one sample rate into another by linear interpolation between neighbouring samples. That
/// lets some aliasing and a slight treble loss through, acceptable for voice headed to (or coming
/// from) Opus, and it costs next to nothing on the audio thread; most devices run at 48 kHz anyway,
/// where this is a one-sample delay.
#[derive(Debug, Clone)]
struct LinearResampler {
    /// Input samples per output sample.
    step: f64,
    /// Where the next output sample lies between `previous` (0.0) and `next` (1.0).
    position: f64,
    previous: f32,
    next: f32,
}

impl LinearResampler {
    fn new(from_rate: u32, to_rate: u32) -> Self {
        LinearResampler { step: f64::from(from_rate) / f64::from(to_rate.max(1)), position: 1.0, previous: 0.0, next: 0.0 }
    }

    /// The next output sample, pulling input from `input` as needed; `None` when the input runs out
    /// (the state is kept: the next call carries on where this one stopped).
    fn next_sample(&mut self, mut input: impl FnMut() -> Option<f32>) -> Option<f32> {
        while self.position >= 1.0 {
            let sample = input()?;
            self.previous = self.next;
            self.next = sample;
            self.position -= 1.0;
        }
        let value = self.previous + (self.next - self.previous) * self.position as f32;
        self.position += self.step;
        Some(value)
    }
}

/// The data callback of an input stream: mixes each device frame down to mono, resamples to
/// 48 kHz and queues the result.
fn capture_callback<T>(queue: Arc<SampleQueue>, health: Arc<StreamHealth>, config: StreamConfig) -> impl FnMut(&[T], &cpal::InputCallbackInfo) + Send + 'static
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let mut resampler = LinearResampler::new(config.sample_rate, SAMPLE_RATE);
    // Reused between callbacks so the audio thread allocates only while they grow.
    let mut mono: Vec<f32> = Vec::new();
    let mut converted: Vec<i16> = Vec::new();
    let mut callbacks: u32 = 0;
    move |data: &[T], _: &cpal::InputCallbackInfo| {
        callbacks = callbacks.saturating_add(1);
        health.data_arrived(callbacks);
        mono.clear();
        mono.extend(data.chunks(channels).map(|frame| frame.iter().map(|&s| f32::from_sample(s)).sum::<f32>() / frame.len() as f32));
        converted.clear();
        let mut input = mono.iter().copied();
        while let Some(value) = resampler.next_sample(|| input.next()) {
            converted.push(i16::from_sample(value));
        }
        queue.push(&converted);
    }
}

/// The data callback of an output stream: takes 48 kHz mono from the queue, resamples to the
/// device's rate and writes each sample to every channel; silence when the queue runs dry.
fn playback_callback<T>(queue: Arc<SampleQueue>, health: Arc<StreamHealth>, config: StreamConfig) -> impl FnMut(&mut [T], &cpal::OutputCallbackInfo) + Send + 'static
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels.max(1));
    let mut resampler = LinearResampler::new(SAMPLE_RATE, config.sample_rate);
    let mut playing = false;
    let mut callbacks: u32 = 0;
    move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
        callbacks = callbacks.saturating_add(1);
        health.data_arrived(callbacks);
        let mut queue = queue.lock();
        if !playing && queue.len() >= PLAYBACK_PRIME {
            playing = true;
        }
        for frame in data.chunks_mut(channels) {
            let value = if playing {
                let sample = resampler.next_sample(|| queue.pop_front().map(f32::from_sample));
                // Ran dry: the rest is silence until the queue is primed again.
                playing = sample.is_some();
                sample.unwrap_or(0.0)
            } else {
                0.0
            };
            frame.fill(T::from_sample(value));
        }
    }
}

/// The error callback of a stream: decides when the device is gone, and logs each kind of trouble
/// once per stream (some backends repeat an error thousands of times a second).
fn stream_error_handler(direction: Direction, device: String, health: Arc<StreamHealth>) -> impl FnMut(cpal::Error) + Send + 'static {
    let mut warned = false;
    move |error: cpal::Error| {
        let gone = match error.kind() {
            cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated | cpal::ErrorKind::HostUnavailable => true,
            // A glitch, a default device followed to its replacement, or no real-time priority:
            // the stream goes on.
            cpal::ErrorKind::Xrun | cpal::ErrorKind::DeviceChanged | cpal::ErrorKind::RealtimeDenied => {
                tracing::debug!(%direction, %device, %error, "audio stream hiccup");
                false
            }
            kind => {
                if !warned {
                    warned = true;
                    tracing::warn!(%direction, %device, %error, ?kind, "audio stream error");
                }
                health.failed()
            }
        };
        if gone && !health.gone.swap(true, Ordering::Relaxed) {
            tracing::warn!(%direction, %device, %error, "audio device lost");
        }
    }
}

/// The device with this id, or the default one.
fn find_device(direction: Direction, id: Option<&str>) -> Result<cpal::Device, SoundCardError> {
    let default_of = |host: &cpal::Host| match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    };
    let Some(id) = id else {
        return default_of(&cpal::default_host()).ok_or(SoundCardError::NoDefault(direction));
    };
    let not_found = || SoundCardError::NotFound { direction, id: id.to_owned() };
    let device_id: cpal::DeviceId = id.parse().map_err(|_| not_found())?;
    let host = cpal::host_from_id(device_id.host()).map_err(|_| not_found())?;
    // The default is looked at first because ALSA's `default` PCM need not be enumerated.
    if let Some(device) = default_of(&host).filter(|d| d.id().ok().as_ref() == Some(&device_id)) {
        return Ok(device);
    }
    let device = host.device_by_id(&device_id).ok_or_else(not_found)?;
    let usable = match direction {
        Direction::Input => device.supports_input(),
        Direction::Output => device.supports_output(),
    };
    if usable {
        Ok(device)
    } else {
        Err(not_found())
    }
}

/// Whether `dispatch_format!` has a sample type for `format`.
fn converts(format: SampleFormat) -> bool {
    macro_rules! nothing {
        ($sample:ty) => {
            ()
        };
    }
    dispatch_format!(format, nothing).is_some()
}

/// How a device is named in errors and logs: its id, which is what a person can act on.
fn device_label(device: &cpal::Device) -> String {
    device.id().map(|id| id.to_string()).unwrap_or_else(|_| device.to_string())
}

/// The stream configuration to open: 48 kHz if the device can (no resampling), with cpal's own
/// preferences (stereo, float...) among those; else the device's best with cpal's preferred rate.
fn choose_config(device: &cpal::Device, direction: Direction, name: &str) -> Result<SupportedStreamConfig, SoundCardError> {
    let ranges: Result<Vec<SupportedStreamConfigRange>, cpal::Error> = match direction {
        Direction::Input => device.supported_input_configs().map(Iterator::collect),
        Direction::Output => device.supported_output_configs().map(Iterator::collect),
    };
    let open_error = |source| SoundCardError::Open { direction, device: name.to_owned(), source };
    let best = ranges
        .map_err(open_error)?
        .into_iter()
        .filter(|range| converts(range.sample_format()) && range.channels() > 0)
        .max_by(|a, b| a.contains_rate(SAMPLE_RATE).cmp(&b.contains_rate(SAMPLE_RATE)).then_with(|| a.cmp_default_heuristics(b)));
    if let Some(range) = best {
        return Ok(range
            .try_with_sample_rate(SAMPLE_RATE)
            .or_else(|| range.try_with_standard_sample_rate())
            .unwrap_or_else(|| range.with_max_sample_rate()));
    }
    // Some backends list no ranges but still know a default.
    let fallback = match direction {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
    .map_err(open_error)?;
    if converts(fallback.sample_format()) && fallback.channels() > 0 {
        Ok(fallback)
    } else {
        Err(SoundCardError::NoUsableConfig { direction, device: name.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{goertzel_power, ToneSource};

    #[test]
    fn queue_keeps_only_the_newest_200_ms() {
        let queue = SampleQueue::default();
        for n in 0..20 {
            queue.push(&[n as i16; FRAME]);
        }
        let kept = queue.lock();
        assert_eq!(kept.len(), QUEUE_LIMIT);
        assert_eq!(kept.front(), Some(&10), "the oldest frames went first");
    }

    #[test]
    fn resampling_keeps_a_tone_at_its_frequency() {
        // A 48 kHz tone taken to 44.1 kHz and back must still be the same tone.
        let mut tone = ToneSource::new(440.0);
        let mut original = Vec::new();
        for _ in 0..10 {
            let mut frame = [0; FRAME];
            tone.read_frame(&mut frame);
            original.extend_from_slice(&frame);
        }
        let mut down = LinearResampler::new(SAMPLE_RATE, 44_100);
        let mut input = original.iter().map(|&s| f32::from_sample(s));
        let device_side: Vec<f32> = std::iter::from_fn(|| down.next_sample(|| input.next())).collect();
        assert!((device_side.len() as i64 - 8_820).abs() <= 2, "{} samples for 200 ms at 44.1 kHz", device_side.len());
        let mut up = LinearResampler::new(44_100, SAMPLE_RATE);
        let mut input = device_side.into_iter();
        let back: Vec<i16> = std::iter::from_fn(|| up.next_sample(|| input.next())).map(i16::from_sample).collect();
        let window = &back[back.len() - 4_800..];
        let at_440 = goertzel_power(window, 440.0);
        assert!(at_440 > 5e-3, "tone lost: {at_440}");
        assert!(at_440 > 100.0 * goertzel_power(window, 880.0));
    }
}
