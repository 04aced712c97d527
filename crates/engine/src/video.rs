//! Video devices behind traits, as sound cards are: a [`VideoSource`] gives pictures (a camera, a
//! moving test pattern, a Y4M file), a [`VideoSink`] takes the pictures decoded from one remote
//! person (the app's view, a Y4M recording, nothing).
//!
//! A source paces itself: [`VideoSource::next_frame`] blocks until the next picture is due (a
//! camera's driver does; the synthetic ones sleep to their frame rate), so it is called on an OS
//! thread of its own, never on a tokio worker, and that thread is the only clock local video
//! has. The synthetic devices carry real pictures: the test pattern stamps each frame's number
//! (see [`hark_video::pattern`]), which a far end reads back to check it decoded what was sent.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hark_video::y4m::{Y4mReader, Y4mWriter};
use hark_video::{pattern, I420Frame};

/// A picture size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoFormat {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl VideoFormat {
    /// 640x360 at 30 fps, the 1:1 default.
    pub const DEFAULT: VideoFormat = VideoFormat { width: 640, height: 360, fps: 30 };
}

/// Why a video device could not be opened or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoDeviceError {
    /// The device could not be opened (missing, busy, or a file that is not usable video).
    #[error("cannot open {device}: {reason}")]
    Open {
        /// Which device.
        device: String,
        /// Why.
        reason: String,
    },
    /// The device stopped giving pictures (unplugged, a file that ends inside a frame).
    #[error("{device} stopped: {reason}")]
    Lost {
        /// Which device.
        device: String,
        /// Why.
        reason: String,
    },
    /// A device spec like `file:x.y4m` could not be read.
    #[error("unknown video device '{0}' (use default, /dev/videoN, test-pattern, test-clock, file:PATH.y4m, none; record:PATH.y4m, count, latency, none)")]
    UnknownSpec(String),
}

/// Something that produces pictures.
pub trait VideoSource: Send {
    /// The next picture, blocking until it is due. An error ends the source: the caller reports
    /// it and the call goes on without this video.
    fn next_frame(&mut self) -> Result<I420Frame, VideoDeviceError>;
    /// What it gives now.
    fn format(&self) -> VideoFormat;
    /// Asks for another size or rate (the resolution ladder). A source that cannot change keeps
    /// its own; the sender scales what it gets.
    fn request_format(&mut self, _wanted: VideoFormat) {}
    /// A short name for logs and events.
    fn name(&self) -> String;
}

/// One whole VP8 frame as received, for a sink that decodes elsewhere (a page's WebCodecs
/// decoder).
#[derive(Debug, Clone, Copy)]
pub struct ReceivedFrame<'a> {
    pub data: &'a [u8],
    pub keyframe: bool,
    /// The picture size the last keyframe set.
    pub width: u32,
    pub height: u32,
    /// Counts the frames handed on; a step of more than one means frames were not handed on
    /// between (nobody wanted them, or the receiver skipped a broken chain), so whoever decodes
    /// must start again from a keyframe.
    pub number: u64,
}

/// Something that takes the pictures of one remote person.
pub trait VideoSink: Send {
    /// Takes the next decoded picture.
    fn write_frame(&mut self, frame: &I420Frame);
    /// Flushes whatever is buffered (a recording's file).
    fn finish(&mut self) {}
    /// Whether it takes decoded pictures now. When it takes only encoded frames (or nothing,
    /// nobody watching), the receiver does not decode at all.
    fn wants_pictures(&self) -> bool {
        true
    }
    /// Whether it takes the encoded frames now ([`VideoSink::write_encoded`]).
    fn wants_encoded(&self) -> bool {
        false
    }
    /// Takes the next encoded frame that the receiver would decode (in order, from a keyframe).
    fn write_encoded(&mut self, _frame: &ReceivedFrame<'_>) {}
    /// Whether whoever decodes its encoded frames waits for a keyframe: the receiver asks the
    /// sender for one (at the pace of its own requests).
    fn wants_keyframe(&self) -> bool {
        false
    }
    /// The largest size anyone shows a `width` x `height` picture at now, in device pixels
    /// (fitted to the picture's shape, larger than the picture when the view is), or `None`
    /// when the sink does not know (a recording, a count) or nobody shows it: the receiver tells
    /// the sender, which then sends no more pixels than that (`video_size`, PROTOCOL.md).
    fn shown_at(&self, _width: u32, _height: u32) -> Option<(u32, u32)> {
        None
    }
}

/// The scale that fits a `width` x `height` picture to a `view` box: all of it showing (`cover`
/// false, bars where the shapes differ) or filling the box (`cover`). `None` for an empty
/// picture or box.
pub fn view_scale(width: u32, height: u32, view: (u32, u32), cover: bool) -> Option<f64> {
    let (view_w, view_h) = view;
    if width == 0 || height == 0 || view_w == 0 || view_h == 0 {
        return None;
    }
    let (by_width, by_height) = (f64::from(view_w) / f64::from(width), f64::from(view_h) / f64::from(height));
    Some(if cover { by_width.max(by_height) } else { by_width.min(by_height) })
}

/// A `width` x `height` picture scaled by `scale`, with even sides (I420's chroma is halved),
/// rounded down: a picture never comes out larger than the box it was fitted to. (A millionth
/// of a pixel is added first, so that a side the box gives exactly, such as 718 of 1280 x
/// 718/1280, is not lost to the division's rounding.)
pub fn scaled_even(width: u32, height: u32, scale: f64) -> (u32, u32) {
    let side = |n: u32| (((f64::from(n) * scale + 1e-6) / 2.0).floor() as u32 * 2).max(2);
    (side(width), side(height))
}

/// The size a `width` x `height` picture takes in a `view` box ([`view_scale`]), scaled up or
/// down; (0, 0) for an empty picture or box.
pub fn fitted_to_view(width: u32, height: u32, view: (u32, u32), cover: bool) -> (u32, u32) {
    view_scale(width, height, view, cover).map_or((0, 0), |scale| scaled_even(width, height, scale))
}

/// Sleeps until `due`, then moves it on by one frame period; a source that fell behind (the
/// machine was busy) skips ahead rather than bursting frames to catch up.
fn pace(due: &mut Instant, fps: u32) {
    let now = Instant::now();
    if *due > now {
        std::thread::sleep(*due - now);
    }
    let period = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
    *due += period;
    if *due + period < Instant::now() {
        *due = Instant::now() + period;
    }
}

/// The wall-clock time in ms modulo 2^24 (about 4.7 hours), as a clock stamp carries it.
pub fn clock_stamp_now() -> u32 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    (ms & u128::from(pattern::NUMBER_MASK)) as u32
}

/// How many ms ago a clock stamp was made, by the same clock (stamps wrap every 2^24 ms).
pub fn clock_stamp_age(stamp: u32, now: u32) -> u32 {
    now.wrapping_sub(stamp) & pattern::NUMBER_MASK
}

/// The moving test pattern at the format asked for, stamped with its frame number from 0, or,
/// as a clock, with the wall-clock ms at which each picture was made ([`clock_stamp_now`]): a far
/// end on the same machine reads how long capture -> decoded took.
#[derive(Debug)]
pub struct TestPatternSource {
    format: VideoFormat,
    number: u32,
    clock: bool,
    due: Instant,
}

impl TestPatternSource {
    /// A numbered pattern at `format`.
    pub fn new(format: VideoFormat) -> Self {
        TestPatternSource { format, number: 0, clock: false, due: Instant::now() }
    }

    /// A pattern at `format` stamped with the time each picture is made.
    pub fn clock(format: VideoFormat) -> Self {
        TestPatternSource { clock: true, ..TestPatternSource::new(format) }
    }
}

impl VideoSource for TestPatternSource {
    fn next_frame(&mut self) -> Result<I420Frame, VideoDeviceError> {
        pace(&mut self.due, self.format.fps);
        let mut frame = pattern::draw(self.format.width, self.format.height, self.number);
        if self.clock {
            pattern::stamp(&mut frame, clock_stamp_now());
        }
        self.number = self.number.wrapping_add(1);
        Ok(frame)
    }

    fn format(&self) -> VideoFormat {
        self.format
    }

    fn request_format(&mut self, wanted: VideoFormat) {
        // The numbers go on: a far end checking them sees no jump at a size change.
        self.format = wanted;
    }

    fn name(&self) -> String {
        if self.clock { "test-clock" } else { "test-pattern" }.into()
    }
}

/// A Y4M file (4:2:0) played in real time at its own frame rate, looping at its end.
pub struct Y4mFileSource {
    path: PathBuf,
    reader: Y4mReader<std::io::BufReader<std::fs::File>>,
    due: Instant,
}

impl Y4mFileSource {
    /// Opens the file and reads its header (a file that is not usable 4:2:0 Y4M is refused here).
    pub fn open(path: &Path) -> Result<Self, VideoDeviceError> {
        let open = |reason: String| VideoDeviceError::Open { device: format!("file:{}", path.display()), reason };
        let mut reader = Y4mReader::open(path).map_err(|e| open(e.to_string()))?;
        // A file with no whole frame at all is refused now rather than at the first read.
        match reader.read_frame() {
            Ok(Some(_)) => reader.rewind().map_err(|e| open(e.to_string()))?,
            Ok(None) => return Err(open("no frames in it".into())),
            Err(e) => return Err(open(e.to_string())),
        }
        Ok(Y4mFileSource { path: path.to_owned(), reader, due: Instant::now() })
    }
}

impl VideoSource for Y4mFileSource {
    fn next_frame(&mut self) -> Result<I420Frame, VideoDeviceError> {
        let fps = self.reader.fps().round().max(1.0) as u32;
        pace(&mut self.due, fps);
        let lost = |reason: String| VideoDeviceError::Lost { device: format!("file:{}", self.path.display()), reason };
        match self.reader.read_frame() {
            Ok(Some(frame)) => Ok(frame),
            Ok(None) => {
                self.reader.rewind().map_err(|e| lost(e.to_string()))?;
                self.reader.read_frame().map_err(|e| lost(e.to_string()))?.ok_or_else(|| lost("empty after rewinding".into()))
            }
            Err(e) => Err(lost(e.to_string())),
        }
    }

    fn format(&self) -> VideoFormat {
        VideoFormat { width: self.reader.width(), height: self.reader.height(), fps: self.reader.fps().round().max(1.0) as u32 }
    }

    fn name(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// Writes each decoded picture to a Y4M file, at the size of the first one (later pictures of
/// another size are scaled to it, never cropped: a Y4M has one header).
pub struct Y4mRecorder {
    path: PathBuf,
    fps: u32,
    writer: Option<Y4mWriter<std::io::BufWriter<std::fs::File>>>,
    failed: bool,
}

impl Y4mRecorder {
    /// A recorder that creates `path` at its first picture.
    pub fn new(path: &Path, fps: u32) -> Self {
        Y4mRecorder { path: path.to_owned(), fps, writer: None, failed: false }
    }
}

impl VideoSink for Y4mRecorder {
    fn write_frame(&mut self, frame: &I420Frame) {
        if self.failed {
            return;
        }
        if self.writer.is_none() {
            match Y4mWriter::create(&self.path, frame.width(), frame.height(), self.fps) {
                Ok(writer) => self.writer = Some(writer),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot record video");
                    self.failed = true;
                    return;
                }
            }
        }
        if let Some(writer) = &mut self.writer {
            if let Err(e) = writer.write_frame(frame) {
                tracing::warn!(path = %self.path.display(), error = %e, "video recording stopped");
                self.failed = true;
            }
        }
    }

    fn finish(&mut self) {
        if let Some(writer) = &mut self.writer {
            if let Err(e) = writer.flush() {
                tracing::warn!(path = %self.path.display(), error = %e, "video recording not flushed");
            }
        }
    }
}

/// Pictures go nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVideo;

impl VideoSink for NoVideo {
    fn write_frame(&mut self, _frame: &I420Frame) {}
}

/// Where local video comes from, as a user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CameraSpec {
    /// The system's default camera (the first one listed).
    Default,
    /// A V4L2 camera by its device number (`/dev/videoN`).
    Device(u32),
    /// The moving test pattern.
    TestPattern,
    /// The moving test pattern stamped with the time of capture.
    TestClock,
    /// A Y4M file.
    File(PathBuf),
    /// No camera: calls are placed and answered without sending video.
    None,
}

impl std::str::FromStr for CameraSpec {
    type Err = VideoDeviceError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        match spec {
            "default" => Ok(CameraSpec::Default),
            "test-pattern" => Ok(CameraSpec::TestPattern),
            "test-clock" => Ok(CameraSpec::TestClock),
            "none" => Ok(CameraSpec::None),
            _ => match (spec.strip_prefix("file:"), spec.strip_prefix("/dev/video").map(str::parse::<u32>)) {
                (Some(path), _) if !path.is_empty() => Ok(CameraSpec::File(PathBuf::from(path))),
                (_, Some(Ok(index))) => Ok(CameraSpec::Device(index)),
                _ => Err(VideoDeviceError::UnknownSpec(spec.to_owned())),
            },
        }
    }
}

/// Where remote video goes, as a user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoOutSpec {
    /// One Y4M file per remote person: `PATH.y4m` for a 1:1 call; in a group call each person's
    /// file is named after them (`PATH-USER.y4m`).
    Record(PathBuf),
    /// Counted, not kept: how many pictures of each person were decoded, and their size, said
    /// when their video ends (for benchmarks, where writing the pictures would cost more than
    /// decoding them).
    Count,
    /// Each person's pictures, stamped by a `test-clock` camera on this machine, read for how long
    /// capture -> decoded took; the p50 and p90 said when their video ends.
    Latency,
    /// Nowhere.
    None,
}

impl std::str::FromStr for VideoOutSpec {
    type Err = VideoDeviceError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        match spec {
            "none" => Ok(VideoOutSpec::None),
            "count" => Ok(VideoOutSpec::Count),
            "latency" => Ok(VideoOutSpec::Latency),
            _ => match spec.strip_prefix("record:") {
                Some(path) if !path.is_empty() => Ok(VideoOutSpec::Record(PathBuf::from(path))),
                _ => Err(VideoDeviceError::UnknownSpec(spec.to_owned())),
            },
        }
    }
}

impl VideoOutSpec {
    /// The file for `user`'s pictures: `PATH.y4m` itself in a 1:1 call, `PATH-USER.y4m` next to it
    /// in a group call.
    pub fn path_for(&self, user: &str, group: bool) -> Option<PathBuf> {
        let VideoOutSpec::Record(path) = self else { return None };
        if !group {
            return Some(path.clone());
        }
        let stem = path.file_stem().map_or_else(|| "video".into(), |s| s.to_string_lossy().into_owned());
        Some(path.with_file_name(format!("{stem}-{user}.y4m")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_pattern_counts_and_follows_the_format_asked() {
        let mut source = TestPatternSource::new(VideoFormat { width: 320, height: 180, fps: 1000 });
        for n in 0..3 {
            assert_eq!(pattern::read_number(&source.next_frame().unwrap()), Some(n));
        }
        source.request_format(VideoFormat { width: 640, height: 360, fps: 1000 });
        let frame = source.next_frame().unwrap();
        assert_eq!((frame.width(), frame.height(), pattern::read_number(&frame)), (640, 360, Some(3)));
    }

    #[test]
    fn a_file_camera_loops_and_bad_files_are_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.y4m");
        let mut writer = Y4mWriter::create(&path, 64, 36, 1000).unwrap();
        for n in 0..3 {
            writer.write_frame(&pattern::draw(64, 36, n)).unwrap();
        }
        writer.flush().unwrap();
        drop(writer);
        let mut source = Y4mFileSource::open(&path).unwrap();
        assert_eq!(source.format(), VideoFormat { width: 64, height: 36, fps: 1000 });
        let numbers: Vec<Option<u32>> = (0..7).map(|_| pattern::read_number(&source.next_frame().unwrap())).collect();
        assert_eq!(numbers, [0, 1, 2, 0, 1, 2, 0].map(Some));

        // Truncated inside the first frame, not 4:2:0, missing.
        let truncated = dir.path().join("cut.y4m");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&truncated, &bytes[..100]).unwrap();
        let not_420 = dir.path().join("444.y4m");
        std::fs::write(&not_420, b"YUV4MPEG2 W4 H2 F30:1 C444\nFRAME\n").unwrap();
        for bad in [truncated, not_420, dir.path().join("missing.y4m")] {
            let err = Y4mFileSource::open(&bad).err().expect("refused");
            assert!(matches!(err, VideoDeviceError::Open { .. }), "{err}");
        }
    }

    #[test]
    fn a_recording_is_made_at_the_first_size_and_named_per_person() {
        let dir = tempfile::tempdir().unwrap();
        let spec: VideoOutSpec = format!("record:{}", dir.path().join("out.y4m").display()).parse().unwrap();
        assert_eq!(spec.path_for("bob", false).unwrap().file_name().unwrap(), "out.y4m");
        let path = spec.path_for("bob", true).unwrap();
        assert_eq!(path.file_name().unwrap(), "out-bob.y4m");
        let mut recorder = Y4mRecorder::new(&path, 30);
        recorder.write_frame(&pattern::draw(320, 180, 1));
        recorder.write_frame(&pattern::draw(160, 90, 2));
        recorder.finish();
        let mut reader = Y4mReader::open(&path).unwrap();
        assert_eq!((reader.width(), reader.height()), (320, 180));
        assert_eq!(pattern::read_number(&reader.read_frame().unwrap().unwrap()), Some(1));
        assert_eq!(pattern::read_number(&reader.read_frame().unwrap().unwrap()), Some(2));
    }

    #[test]
    fn a_clock_pattern_carries_the_time_it_was_made() {
        let mut camera = TestPatternSource::clock(VideoFormat { width: 320, height: 180, fps: 30 });
        let before = clock_stamp_now();
        let stamp = pattern::read_number(&camera.next_frame().unwrap()).unwrap();
        let after = clock_stamp_now();
        assert!(clock_stamp_age(stamp, after) <= clock_stamp_age(before, after), "made between {before} and {after}: {stamp}");
        assert_eq!(camera.name(), "test-clock");
        // Across the wrap of 2^24 ms.
        assert_eq!(clock_stamp_age(pattern::NUMBER_MASK - 4, 5), 10);
        assert_eq!(clock_stamp_age(100, 160), 60);
    }

    #[test]
    fn specs() {
        assert_eq!("test-pattern".parse::<CameraSpec>().unwrap(), CameraSpec::TestPattern);
        assert_eq!("file:a.y4m".parse::<CameraSpec>().unwrap(), CameraSpec::File("a.y4m".into()));
        assert!("file:".parse::<CameraSpec>().is_err());
        assert!("webcam".parse::<CameraSpec>().is_err());
        assert_eq!("/dev/video2".parse::<CameraSpec>().unwrap(), CameraSpec::Device(2));
        assert!("/dev/videoX".parse::<CameraSpec>().is_err());
        assert!("/dev/sda".parse::<CameraSpec>().is_err());
        assert_eq!("test-clock".parse::<CameraSpec>().unwrap(), CameraSpec::TestClock);
        assert_eq!("latency".parse::<VideoOutSpec>().unwrap(), VideoOutSpec::Latency);
        assert_eq!("none".parse::<VideoOutSpec>().unwrap(), VideoOutSpec::None);
        assert!("record:".parse::<VideoOutSpec>().is_err());
        let count = "count".parse::<VideoOutSpec>().unwrap();
        assert_eq!((count.path_for("bob", false), count.path_for("bob", true)), (None, None), "counting keeps no file");
        assert!("counts".parse::<VideoOutSpec>().is_err());
    }
}
