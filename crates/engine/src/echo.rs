//! The echo test service's audio and video: a short spoken-style prompt, then what the caller
//! says, one second later; and in a video call the caller's own picture, a second later.
//!
//! [`EchoLine::devices`] gives a matched pair: the sink (the engine's "speaker") keeps every
//! frame it hears in a delay line; the source (its "microphone") first plays the prompt, then
//! plays back the delay line once it holds a second of audio, so the caller hears themselves
//! with a steady 1 s delay.

use std::collections::VecDeque;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use hark_video::I420Frame;

use crate::audio::{AudioSink, AudioSource, FRAME, SAMPLE_RATE};
use crate::media::Devices;
use crate::video::{VideoDeviceError, VideoFormat, VideoSink, VideoSource};

/// Frames of delay: 50 × 20 ms = 1 s.
pub const DELAY_FRAMES: usize = 50;
/// The delay line holds at most this much (a minute), so a stalled source cannot grow it forever.
const MAX_FRAMES: usize = 3_000;

/// One call's worth of echo state, shared by its source and sink.
#[derive(Clone, Default)]
pub struct EchoLine {
    heard: Arc<Mutex<VecDeque<[i16; FRAME]>>>,
}

impl EchoLine {
    /// The devices of one echo call.
    pub fn devices(&self) -> Devices {
        Devices {
            source: Box::new(EchoSource { line: self.clone(), prompt: prompt(), position: 0 }),
            sink: Box::new(EchoSink { line: self.clone() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<[i16; FRAME]>> {
        self.heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct EchoSink {
    line: EchoLine,
}

impl AudioSink for EchoSink {
    fn write_frame(&mut self, frame: &[i16; FRAME]) {
        let mut heard = self.line.lock();
        if heard.len() == MAX_FRAMES {
            heard.pop_front();
        }
        heard.push_back(*frame);
    }
}

struct EchoSource {
    line: EchoLine,
    prompt: Vec<i16>,
    position: usize,
}

impl AudioSource for EchoSource {
    fn read_frame(&mut self, frame: &mut [i16; FRAME]) {
        if self.position < self.prompt.len() {
            let end = (self.position + FRAME).min(self.prompt.len());
            let n = end - self.position;
            frame[..n].copy_from_slice(&self.prompt[self.position..end]);
            frame[n..].fill(0);
            self.position = end;
            return;
        }
        let mut heard = self.line.lock();
        // Keep exactly a second in hand: play the oldest frame once a second has built up.
        if heard.len() >= DELAY_FRAMES {
            *frame = heard.pop_front().expect("not empty");
        } else {
            frame.fill(0);
        }
    }
}

/// The greeting: two rising chimes, like "speak now" (synthesized; no recorded voice is bundled).
pub fn prompt() -> Vec<i16> {
    let mut samples = Vec::new();
    for (frequency, ms) in [(660.0, 180), (0.0, 80), (880.0, 260), (0.0, 300)] {
        let n = SAMPLE_RATE as usize * ms / 1000;
        for i in 0..n {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            // A soft attack and an exponential decay, so the chime does not click.
            let envelope = (t / 0.01).min(1.0) * (-t * 6.0).exp();
            let value = if frequency > 0.0 { 9_000.0 * envelope * (2.0 * PI * frequency * t).sin() } else { 0.0 };
            samples.push(value as i16);
        }
    }
    samples
}

/// One call's worth of video echo: the caller's pictures, handed back a second later.
///
/// [`EchoVideo::sink`] is the sink for the caller's video; [`EchoVideo::camera`] is a camera that
/// gives back each picture one second after it arrived, at the pace it arrived (and nothing until
/// the first second has passed, then the last picture again if the caller's video stops).
#[derive(Clone, Default)]
pub struct EchoVideo {
    pictures: Arc<Mutex<VecDeque<(Instant, I420Frame)>>>,
}

/// How long the caller's picture takes to come back.
pub const VIDEO_DELAY: Duration = Duration::from_secs(1);
/// Pictures the delay line holds at most (two seconds at 30 fps).
const MAX_PICTURES: usize = 60;

impl EchoVideo {
    /// The sink for the caller's pictures.
    pub fn sink(&self) -> Box<dyn VideoSink> {
        Box::new(EchoVideoSink { line: self.clone() })
    }

    /// A camera giving the caller's pictures back (from the call it opens in: pictures left over
    /// from an earlier call are dropped).
    pub fn camera(&self) -> Box<dyn VideoSource> {
        self.lock().clear();
        Box::new(EchoCamera { line: self.clone(), last: None })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, I420Frame)>> {
        self.pictures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct EchoVideoSink {
    line: EchoVideo,
}

impl VideoSink for EchoVideoSink {
    fn write_frame(&mut self, frame: &I420Frame) {
        let mut pictures = self.line.lock();
        if pictures.len() == MAX_PICTURES {
            pictures.pop_front();
        }
        pictures.push_back((Instant::now(), frame.clone()));
    }
}

struct EchoCamera {
    line: EchoVideo,
    last: Option<I420Frame>,
}

impl VideoSource for EchoCamera {
    fn next_frame(&mut self) -> Result<I420Frame, VideoDeviceError> {
        let asked = Instant::now();
        loop {
            {
                let mut pictures = self.line.lock();
                if pictures.front().is_some_and(|(arrived, _)| arrived.elapsed() >= VIDEO_DELAY) {
                    let (_, picture) = pictures.pop_front().expect("front exists");
                    self.last = Some(picture.clone());
                    return Ok(picture);
                }
            }
            // Nothing due for 100 ms: the last picture again, so a stopped caller's video does
            // not look like a dead camera.
            if let Some(last) = self.last.as_ref().filter(|_| asked.elapsed() >= Duration::from_millis(100)) {
                return Ok(last.clone());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn format(&self) -> VideoFormat {
        self.last.as_ref().map_or(VideoFormat::DEFAULT, |f| VideoFormat { width: f.width(), height: f.height(), fps: 30 })
    }

    fn name(&self) -> String {
        "echo".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_then_a_one_second_echo() {
        let line = EchoLine::default();
        let Devices { mut source, mut sink } = line.devices();
        let mut frame = [0; FRAME];
        let prompt_frames = prompt().len().div_ceil(FRAME);
        for _ in 0..prompt_frames {
            source.read_frame(&mut frame);
            sink.write_frame(&[0; FRAME]);
        }
        // The caller says numbered frames; each comes back 49 frames after it was heard (the
        // delay line holds 50 with the one just heard), i.e. about a second later.
        let delay = DELAY_FRAMES as i16 - 1;
        for i in 0..200i16 {
            sink.write_frame(&[i + 1; FRAME]);
            source.read_frame(&mut frame);
            let expected = if i >= delay { i + 1 - delay } else { 0 };
            assert_eq!(frame[0], expected, "frame {i}");
        }
    }

    #[test]
    fn the_callers_pictures_come_back_a_second_later() {
        let echo = EchoVideo::default();
        let mut sink = echo.sink();
        let mut camera = echo.camera();
        let sent = Instant::now();
        for n in 0..3 {
            sink.write_frame(&hark_video::pattern::draw(64, 36, n));
        }
        for n in 0..3 {
            let picture = camera.next_frame().unwrap();
            assert_eq!(hark_video::pattern::read_number(&picture), Some(n));
        }
        assert!(sent.elapsed() >= VIDEO_DELAY);
        // The caller's video stopped: the last picture again, not a hang.
        assert_eq!(hark_video::pattern::read_number(&camera.next_frame().unwrap()), Some(2));
    }
}
