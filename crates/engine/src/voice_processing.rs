//! Echo cancellation and noise suppression of the microphone, between capture and Opus.
//!
//! The work is done by [`sonora`], a pure-Rust port of WebRTC's audio processing module (the
//! same AEC3 echo canceller and noise suppressor browsers use). It was chosen over binding the C++
//! library (`webrtc-audio-processing`, which needs Debian's 0.3 library and libclang to build) and
//! over `aec3` + `nnnoiseless` (two crates of different origins with their own frame and sample
//! conventions) because it builds offline from crates.io and gives both halves, made to work
//! together, from one well-known design.
//!
//! How it fits the pipeline:
//! - An echo canceller must know what the speaker played (the *render* or far-end signal) to
//!   remove it from what the microphone hears (the *capture* or near-end signal). So the pipeline
//!   calls [`VoiceProcessor::process_render`] with every frame it writes to the speaker, and
//!   [`VoiceProcessor::process_capture`] with every microphone frame before it is encoded.
//!   Render for tick *n* is given before capture for tick *n + 1*: the echo of a sound can only
//!   arrive after it was played, and AEC3 finds the actual delay (device buffers, the room) itself.
//! - The pipeline's frames are 20 ms (960 samples at 48 kHz); WebRTC processes 10 ms, so each
//!   frame is handed over as two halves, in order.
//! - Both features are on by default and each can be turned off. Turning one on or off rebuilds
//!   the library's configuration, which resets what the echo canceller has learnt about the echo
//!   path (in the tests below it removes echo again within the first second). With both off the
//!   frames are not touched at all, and nothing is computed.
//! - Processing is for microphones in rooms. A steady test tone is learnt as noise and removed,
//!   and the echo service's playback is (literally) an echo: whoever feeds synthetic or relayed
//!   audio turns processing off (`EngineConfig::processing`, hark-cli `--no-voice-processing`).
//! - The high-pass filter (cuts rumble and DC below ~80 Hz) is on whenever either feature is: the
//!   echo canceller turns it on anyway, and it helps the noise suppressor. Gain control is left
//!   off: the issue did not ask for it, and it would change levels the tests and meters rely on.

use sonora::config::{EchoCanceller, HighPassFilter, MaxProcessingRate, NoiseSuppression, Pipeline};
use sonora::{AudioProcessing, Config, StreamConfig};
use tracing::warn;

#[cfg(doc)]
use crate::audio::AudioSource;
use crate::audio::{FRAME, SAMPLE_RATE};

/// Samples in one 10 ms block, the unit WebRTC's processing works in.
const BLOCK: usize = FRAME / 2;

/// Which processing the microphone gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingSettings {
    /// Remove what the speaker played from what the microphone hears.
    pub echo_cancellation: bool,
    /// Remove steady background noise (fans, hum, hiss).
    pub noise_suppression: bool,
}

impl ProcessingSettings {
    /// Neither: the audio passes untouched.
    pub const OFF: ProcessingSettings = ProcessingSettings { echo_cancellation: false, noise_suppression: false };
}

impl Default for ProcessingSettings {
    /// Both on, as a call should start.
    fn default() -> Self {
        ProcessingSettings { echo_cancellation: true, noise_suppression: true }
    }
}

/// Echo cancellation and noise suppression for one call's audio, 20 ms at a time.
pub struct VoiceProcessor {
    settings: ProcessingSettings,
    apm: AudioProcessing,
    /// Where a processed block is written before it is copied back (the library does not work in
    /// place).
    scratch: [i16; BLOCK],
    /// Whether a processing error was already logged (it would repeat every 10 ms otherwise).
    warned: bool,
}

impl std::fmt::Debug for VoiceProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceProcessor").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl VoiceProcessor {
    /// A processor for 48 kHz mono audio with `settings`.
    pub fn new(settings: ProcessingSettings) -> Self {
        let stream = StreamConfig::new(SAMPLE_RATE, 1);
        let apm = AudioProcessing::builder().config(library_config(settings)).capture_config(stream).render_config(stream).build();
        VoiceProcessor { settings, apm, scratch: [0; BLOCK], warned: false }
    }

    /// The current settings.
    pub fn settings(&self) -> ProcessingSettings {
        self.settings
    }

    /// Changes the settings from the next frame on; nothing happens if they are unchanged, so it
    /// is cheap to call every tick.
    pub fn set_settings(&mut self, settings: ProcessingSettings) {
        if settings != self.settings {
            self.settings = settings;
            self.apm.apply_config(library_config(settings));
        }
    }

    /// Takes the frame the speaker is about to play: the echo canceller's reference.
    pub fn process_render(&mut self, far_end: &[i16; FRAME]) {
        if !self.settings.echo_cancellation {
            // Only the echo canceller reads the far end; without it this would be wasted work.
            return;
        }
        for block in far_end.chunks_exact(BLOCK) {
            // The render output is the far end after processing, which we do not use: the speaker
            // plays the original.
            if let Err(e) = self.apm.process_render_i16(block, &mut self.scratch) {
                self.warn_once(e);
            }
        }
    }

    /// Cleans a microphone frame in place.
    pub fn process_capture(&mut self, near_end: &mut [i16; FRAME]) {
        if !self.settings.echo_cancellation && !self.settings.noise_suppression {
            return;
        }
        for block in near_end.chunks_exact_mut(BLOCK) {
            match self.apm.process_capture_i16(block, &mut self.scratch) {
                Ok(()) => block.copy_from_slice(&self.scratch),
                // Cannot happen with the fixed format we use; if it does, the unprocessed audio
                // is better than whatever the library left in the output.
                Err(e) => self.warn_once(e),
            }
        }
    }

    fn warn_once(&mut self, error: sonora::Error) {
        if !self.warned {
            self.warned = true;
            warn!(%error, "voice processing failed; sending unprocessed audio");
        }
    }
}

/// The library's configuration for `settings`.
fn library_config(settings: ProcessingSettings) -> Config {
    let any = settings.echo_cancellation || settings.noise_suppression;
    Config {
        pipeline: Pipeline {
            // Process at 32 kHz: a voice has next to nothing above 16 kHz, and the smaller band
            // costs a third less CPU (0.28 against 0.42 ms per 20 ms frame, measured), which is
            // what keeps a call near baresip's CPU (docs/BENCHMARKS.md).
            maximum_internal_processing_rate: MaxProcessingRate::Rate32kHz,
            ..Pipeline::default()
        },
        high_pass_filter: any.then(HighPassFilter::default),
        echo_canceller: settings.echo_cancellation.then(EchoCanceller::default),
        noise_suppression: settings.noise_suppression.then(NoiseSuppression::default),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::goertzel_power;
    use std::f64::consts::PI;
    use std::ops::Range;

    const RATE: usize = SAMPLE_RATE as usize;
    const ECHO_ONLY: ProcessingSettings = ProcessingSettings { echo_cancellation: true, noise_suppression: false };
    const NOISE_ONLY: ProcessingSettings = ProcessingSettings { echo_cancellation: false, noise_suppression: true };

    /// A seeded xorshift generator: the same "random" noise on every run.
    struct XorShift(u64);

    impl XorShift {
        /// Uniform in [-1, 1).
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    fn sine(frequency: f64, amplitude: f64, n: usize) -> f64 {
        amplitude * (2.0 * PI * frequency * n as f64 / f64::from(SAMPLE_RATE)).sin()
    }

    fn to_i16(x: f64) -> i16 {
        x.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
    }

    fn seconds(from: f64, to: f64) -> Range<usize> {
        (from * RATE as f64) as usize..(to * RATE as f64) as usize
    }

    /// How much more (positive) or less (negative) power `processed` has at `frequency` than
    /// `raw` over `window`, in dB.
    fn change_db(processed: &[i16], raw: &[i16], window: Range<usize>, frequency: f64) -> f64 {
        10.0 * (goertzel_power(&processed[window.clone()], frequency) / goertzel_power(&raw[window], frequency)).log10()
    }

    /// Runs a call's worth of audio through `processor` the way the pipeline's clock does: each
    /// tick processes the captured frame, then hands over the frame the speaker plays.
    fn run(processor: &mut VoiceProcessor, played: &[i16], captured: &[i16], mut each_tick: impl FnMut(usize, &mut VoiceProcessor)) -> Vec<i16> {
        let mut out = Vec::with_capacity(captured.len());
        for (tick, (play, capture)) in played.chunks_exact(FRAME).zip(captured.chunks_exact(FRAME)).enumerate() {
            each_tick(tick, processor);
            let mut frame: [i16; FRAME] = capture.try_into().expect("whole frames");
            processor.process_capture(&mut frame);
            out.extend_from_slice(&frame);
            processor.process_render(play.try_into().expect("whole frames"));
        }
        out
    }

    /// 8 s of a synthetic call with a loud room echo: the far end "speaks" in syllables (300 ms of
    /// a 700 Hz tone over broadband noise, then 200 ms of silence); the microphone hears that 40 ms
    /// later at -12 dB (a laptop's speaker-to-microphone echo), plus a little self-noise; from 6 s
    /// on the near end talks too (a 300 Hz tone), so the last 2 s are double talk.
    /// Returns (played, captured).
    fn echo_call() -> (Vec<i16>, Vec<i16>) {
        let total = 8 * RATE;
        let delay = 40 * RATE / 1000;
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let far: Vec<f64> = (0..total)
            .map(|n| if n % (RATE / 2) < RATE * 3 / 10 { sine(700.0, 8000.0, n) + 2000.0 * rng.next() } else { 0.0 })
            .collect();
        let captured = (0..total)
            .map(|n| {
                let echo = if n >= delay { 0.25 * far[n - delay] } else { 0.0 };
                let near = if n >= 6 * RATE { sine(300.0, 4000.0, n) } else { 0.0 };
                to_i16(echo + near + 30.0 * rng.next())
            })
            .collect();
        (far.into_iter().map(to_i16).collect(), captured)
    }

    #[test]
    fn echo_cancellation_removes_the_echo_and_keeps_the_near_end() {
        let (played, captured) = echo_call();
        for settings in [ECHO_ONLY, ProcessingSettings::default()] {
            let out = run(&mut VoiceProcessor::new(settings), &played, &captured, |_, _| {});
            // 0-4 s is for convergence; 4-6 s has only echo; 6-8 s is double talk.
            let echo_alone = change_db(&out, &captured, seconds(4.0, 6.0), 700.0);
            let echo_in_double_talk = change_db(&out, &captured, seconds(6.0, 8.0), 700.0);
            let near_end = change_db(&out, &captured, seconds(6.0, 8.0), 300.0);
            println!("{settings:?}: echo {echo_alone:.1} dB alone, {echo_in_double_talk:.1} dB in double talk; near end {near_end:+.1} dB");
            assert!(echo_alone < -30.0, "{settings:?}: echo only {echo_alone:.1} dB");
            assert!(echo_in_double_talk < -25.0, "{settings:?}: echo in double talk only {echo_in_double_talk:.1} dB");
            assert!(near_end > -6.0, "{settings:?}: near end lost {near_end:.1} dB");
        }
    }

    #[test]
    fn without_echo_cancellation_the_echo_stays() {
        let (played, captured) = echo_call();
        // Both off: the frames are not touched at all.
        let out = run(&mut VoiceProcessor::new(ProcessingSettings::OFF), &played, &captured, |_, _| {});
        assert!(out == captured, "with everything off the audio must pass unchanged");
        // Turned off mid-call, noise suppression still on: the echo comes back.
        let out = run(&mut VoiceProcessor::new(ProcessingSettings::default()), &played, &captured, |tick, processor| {
            if tick == 2 * 50 {
                processor.set_settings(NOISE_ONLY);
            }
        });
        let echo = change_db(&out, &captured, seconds(4.0, 8.0), 700.0);
        let near_end = change_db(&out, &captured, seconds(6.0, 8.0), 300.0);
        println!("echo cancellation off: echo {echo:+.1} dB, near end {near_end:+.1} dB");
        assert!(echo > -3.0, "echo removed although echo cancellation is off: {echo:.1} dB");
    }

    /// The power of `samples` away from the test tone, summed over bins spread across the band
    /// (white noise has the same expected power in each).
    fn off_tone_power(samples: &[i16]) -> f64 {
        [2100.0, 3300.0, 4700.0, 5900.0, 7300.0, 8900.0, 11_100.0, 13_700.0].iter().map(|&f| goertzel_power(samples, f)).sum()
    }

    #[test]
    fn noise_suppression_removes_hiss_and_keeps_the_voice() {
        // 6 s of white noise (-35 dBFS RMS) under a 1 kHz "voice" that talks half of each second.
        // The voice is gated on purpose: a suppressor learns whatever is steady as noise, and a
        // tone that never stops (a fan's whine) is suppressed like the hiss, as it should be.
        let total = 6 * RATE;
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let noisy: Vec<i16> = (0..total)
            .map(|n| {
                let voice = if n % RATE < RATE / 2 { sine(1000.0, 4000.0, n) } else { 0.0 };
                to_i16(voice + 1000.0 * rng.next())
            })
            .collect();
        let silence = vec![0i16; total];
        // The first 3 s let the noise estimate settle.
        let window = seconds(3.0, 6.0);
        for (settings, suppressing) in [(NOISE_ONLY, true), (ProcessingSettings::default(), true), (ECHO_ONLY, false)] {
            let out = run(&mut VoiceProcessor::new(settings), &silence, &noisy, |_, _| {});
            let noise = 10.0 * (off_tone_power(&out[window.clone()]) / off_tone_power(&noisy[window.clone()])).log10();
            let voice = change_db(&out, &noisy, window.clone(), 1000.0);
            println!("{settings:?}: noise {noise:+.1} dB, voice {voice:+.1} dB");
            assert!(voice > -3.0, "{settings:?}: the voice lost {voice:.1} dB");
            if suppressing {
                assert!(noise < -8.0, "{settings:?}: noise only {noise:.1} dB lower");
            } else {
                assert!(noise > -2.0, "{settings:?}: noise changed {noise:.1} dB although suppression is off");
            }
        }
        let out = run(&mut VoiceProcessor::new(ProcessingSettings::OFF), &silence, &noisy, |_, _| {});
        assert!(out == noisy, "with everything off the audio must pass unchanged");
    }

    /// Not a check: prints what processing costs per 20 ms frame in this build.
    #[test]
    fn cpu_cost_per_frame() {
        let (played, captured) = echo_call();
        let frames = played.len() / FRAME; // 400
        for settings in [ProcessingSettings::default(), ECHO_ONLY, NOISE_ONLY] {
            let mut processor = VoiceProcessor::new(settings);
            let started = std::time::Instant::now();
            run(&mut processor, &played, &captured, |_, _| {});
            let per_frame = started.elapsed() / frames as u32;
            println!("{settings:?}: {per_frame:?} per 20 ms frame ({:.1} % of one core)", per_frame.as_secs_f64() / 0.020 * 100.0);
        }
    }
}
