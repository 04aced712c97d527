//! Audio devices behind traits, and the signal measures tests and meters use.
//!
//! Everything here speaks one format: 48 kHz mono `i16`, in frames of 20 ms ([`FRAME`] samples),
//! which is what Opus carries. A [`AudioSource`] fills frames (a microphone, a tone, a file,
//! silence); an [`AudioSink`] takes them (a speaker, a WAV recorder, nothing). The synthetic ones
//! exist for hardware CI lacks, and they carry real signals: a tone sent is a tone the far end can
//! find with [`goertzel_power`].

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

/// Samples per second.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME: usize = 960;

/// Why a device could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// Which file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A device spec like `tone:440` could not be read.
    #[error("unknown device '{0}' (use default, tone:FREQ, file:PATH, silence; record:PATH.wav, none)")]
    UnknownSpec(String),
}

/// Something that produces audio, one frame at a time.
pub trait AudioSource: Send {
    /// Fills `frame` with the next 20 ms.
    fn read_frame(&mut self, frame: &mut [i16; FRAME]);
    /// Whether the device behind it has gone and it should be replaced (only real devices go).
    fn is_lost(&self) -> bool {
        false
    }
}

/// Something that consumes audio, one frame at a time.
pub trait AudioSink: Send {
    /// Takes the next 20 ms.
    fn write_frame(&mut self, frame: &[i16; FRAME]);
    /// Flushes whatever is buffered (a WAV file's header, say).
    fn finish(&mut self) {}
    /// Whether the device behind it has gone and it should be replaced (only real devices go).
    fn is_lost(&self) -> bool {
        false
    }
}

/// A sine at a fixed frequency and level.
#[derive(Debug, Clone)]
pub struct ToneSource {
    frequency: f64,
    amplitude: f64,
    phase: f64,
}

impl ToneSource {
    /// A sine of `frequency` Hz at a quarter of full scale (loud enough to measure, far from clipping).
    pub fn new(frequency: f64) -> Self {
        ToneSource { frequency, amplitude: 8_000.0, phase: 0.0 }
    }
}

impl AudioSource for ToneSource {
    fn read_frame(&mut self, frame: &mut [i16; FRAME]) {
        let step = 2.0 * PI * self.frequency / f64::from(SAMPLE_RATE);
        for sample in frame.iter_mut() {
            *sample = (self.amplitude * self.phase.sin()) as i16;
            self.phase = (self.phase + step) % (2.0 * PI);
        }
    }
}

/// Silence.
#[derive(Debug, Clone, Copy, Default)]
pub struct SilenceSource;

impl AudioSource for SilenceSource {
    fn read_frame(&mut self, frame: &mut [i16; FRAME]) {
        frame.fill(0);
    }
}

/// A WAV file played in a loop (mixed down to mono; it must be 48 kHz).
#[derive(Debug, Clone)]
pub struct FileSource {
    samples: Vec<i16>,
    position: usize,
}

impl FileSource {
    /// Reads the whole file.
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        let fail = |message: String| DeviceError::File { path: path.to_owned(), message };
        let mut reader = hound::WavReader::open(path).map_err(|e| fail(e.to_string()))?;
        let spec = reader.spec();
        if spec.sample_rate != SAMPLE_RATE || spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
            return Err(fail(format!("need 48 kHz 16-bit PCM, got {} Hz {}-bit {:?}", spec.sample_rate, spec.bits_per_sample, spec.sample_format)));
        }
        let channels = usize::from(spec.channels.max(1));
        let all: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>().map_err(|e| fail(e.to_string()))?;
        let samples: Vec<i16> =
            all.chunks(channels).map(|c| (c.iter().map(|&s| i32::from(s)).sum::<i32>() / channels as i32) as i16).collect();
        if samples.is_empty() {
            return Err(fail("no samples".into()));
        }
        Ok(FileSource { samples, position: 0 })
    }
}

impl AudioSource for FileSource {
    fn read_frame(&mut self, frame: &mut [i16; FRAME]) {
        for sample in frame.iter_mut() {
            *sample = self.samples[self.position];
            self.position = (self.position + 1) % self.samples.len();
        }
    }
}

/// Records what it is given to a 48 kHz mono WAV file.
pub struct WavRecorder {
    writer: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
}

impl WavRecorder {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, DeviceError> {
        let spec = hound::WavSpec { channels: 1, sample_rate: SAMPLE_RATE, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| DeviceError::File { path: path.to_owned(), message: e.to_string() })?;
        Ok(WavRecorder { writer: Some(writer) })
    }
}

impl AudioSink for WavRecorder {
    fn write_frame(&mut self, frame: &[i16; FRAME]) {
        if let Some(writer) = self.writer.as_mut() {
            for &sample in frame {
                if writer.write_sample(sample).is_err() {
                    tracing::warn!("WAV recorder failed; recording stopped");
                    self.writer = None;
                    return;
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Some(writer) = self.writer.take() {
            if let Err(e) = writer.finalize() {
                tracing::warn!(error = %e, "could not finish the WAV file");
            }
        }
    }
}

impl Drop for WavRecorder {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Throws audio away.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl AudioSink for NullSink {
    fn write_frame(&mut self, _frame: &[i16; FRAME]) {}
}

/// A source as named on a command line: `silence`, `tone:FREQ`, `file:PATH`.
pub fn source_from_spec(spec: &str) -> Result<Box<dyn AudioSource>, DeviceError> {
    match spec.split_once(':') {
        None if spec == "silence" => Ok(Box::new(SilenceSource)),
        Some(("tone", freq)) => freq.parse().map(|f| Box::new(ToneSource::new(f)) as Box<dyn AudioSource>).map_err(|_| DeviceError::UnknownSpec(spec.into())),
        Some(("file", path)) => Ok(Box::new(FileSource::open(Path::new(path))?)),
        _ => Err(DeviceError::UnknownSpec(spec.into())),
    }
}

/// A sink as named on a command line: `none`, `record:PATH.wav`.
pub fn sink_from_spec(spec: &str) -> Result<Box<dyn AudioSink>, DeviceError> {
    match spec.split_once(':') {
        None if spec == "none" => Ok(Box::new(NullSink)),
        Some(("record", path)) => Ok(Box::new(WavRecorder::create(Path::new(path))?)),
        _ => Err(DeviceError::UnknownSpec(spec.into())),
    }
}

/// The power of `frequency` in `samples`, normalized so a full-scale sine gives about 0.25
/// (Goertzel's algorithm: one DFT bin, cheap enough to run on every 100 ms window).
pub fn goertzel_power(samples: &[i16], frequency: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let n = samples.len() as f64;
    let k = (0.5 + n * frequency / f64::from(SAMPLE_RATE)).floor();
    let coefficient = 2.0 * (2.0 * PI * k / n).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &sample in samples {
        let s0 = f64::from(sample) / 32768.0 + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / (n * n)
}

/// Speaking level 0–100 of a frame: its RMS on a 60 dB scale (-60 dBFS and below is 0).
pub fn voice_level(frame: &[i16]) -> u8 {
    if frame.is_empty() {
        return 0;
    }
    let mean_square = frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / frame.len() as f64;
    let dbfs = 10.0 * (mean_square / (32768.0 * 32768.0)).max(1e-12).log10();
    ((dbfs + 60.0) / 60.0 * 100.0).round().clamp(0.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frequency: f64, frames: usize) -> Vec<i16> {
        let mut source = ToneSource::new(frequency);
        let mut out = Vec::new();
        let mut frame = [0; FRAME];
        for _ in 0..frames {
            source.read_frame(&mut frame);
            out.extend_from_slice(&frame);
        }
        out
    }

    #[test]
    fn goertzel_finds_the_tone_and_not_others() {
        let samples = tone(440.0, 5);
        let at_440 = goertzel_power(&samples, 440.0);
        let at_880 = goertzel_power(&samples, 880.0);
        assert!(at_440 > 0.01, "{at_440}");
        assert!(at_440 > 1000.0 * at_880, "{at_440} vs {at_880}");
    }

    #[test]
    fn voice_levels() {
        assert_eq!(voice_level(&[0; FRAME]), 0);
        let loud = tone(440.0, 1);
        assert!((70..=90).contains(&voice_level(&loud)), "{}", voice_level(&loud));
        assert_eq!(voice_level(&[i16::MAX; FRAME]), 100);
    }

    #[test]
    fn wav_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let mut recorder = WavRecorder::create(&path).unwrap();
        let samples = tone(880.0, 3);
        for chunk in samples.chunks(FRAME) {
            recorder.write_frame(chunk.try_into().unwrap());
        }
        recorder.finish();
        let mut source = FileSource::open(&path).unwrap();
        let mut frame = [0; FRAME];
        source.read_frame(&mut frame);
        assert_eq!(&frame[..], &samples[..FRAME]);

        std::fs::write(dir.path().join("bad.wav"), b"not a wav").unwrap();
        assert!(matches!(FileSource::open(&dir.path().join("bad.wav")), Err(DeviceError::File { .. })));
        assert!(matches!(source_from_spec("tone:abc"), Err(DeviceError::UnknownSpec(_))));
        assert!(matches!(source_from_spec("microwave"), Err(DeviceError::UnknownSpec(_))));
        assert!(source_from_spec("tone:440").is_ok());
    }
}
