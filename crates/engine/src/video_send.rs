//! The video sender of a call: camera -> VP8 -> every peer's track.
//!
//! An actor made of two OS threads, never tokio workers:
//! - the **capture** thread opens the camera, calls its blocking [`VideoSource::next_frame`] and
//!   leaves each picture in a one-place slot (a newer picture replaces one not yet taken, so a
//!   slow encoder drops frames instead of queueing them). It ends, releasing the camera, at the
//!   next picture after it is told to stop, or at the first error, which it reports;
//! - the **encoder** thread ("hark-video-send") owns the VP8 encoders and the outlets, takes
//!   [`Command`]s, scales each picture to the size the call's resolution ladder asks for,
//!   encodes it once per layer and writes the same frame to every peer's track on that layer (a
//!   webrtc-rs track binds to one connection, so each peer has its own). There is one layer, and
//!   a second, smaller one while a peer's link is much slower than the others' ([`layers_for`]);
//!   each follows the weakest peer on it ([`LossBasedRate`], from retransmissions). It forces a
//!   keyframe on a layer when a peer on it asks (PLI/FIR), joins or moves to it. A camera that gives nothing for [`CAMERA_STALL`] is reported as failed:
//!   nokhwa's `frame()` can block forever when a device goes away, so the encoder watches for it
//!   instead of trusting the capture thread to return.
//!
//! Dropping the [`VideoSender`] stops both: the camera is released within a frame period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hark_protocol::UserId;
use hark_video::vp8::{EncoderSettings, Vp8Encoder};
use hark_video::I420Frame;
use rtc::media::Sample;
use tokio::sync::mpsc as tokio_mpsc;
use tracing::{debug, info, warn};

use crate::peer::VideoOutlet;
use crate::video::{VideoDeviceError, VideoFormat, VideoSink, VideoSource};

/// Forced keyframes at most this often: several receivers asking at once, or one asking again
/// before the last keyframe reached it, must not make every frame a keyframe (on a slow link
/// that starves the encoder's budget and nothing gets through at all).
pub const KEYFRAME_SPACING: Duration = Duration::from_millis(400);

/// How long a running camera may give nothing before it counts as failed.
pub const CAMERA_STALL: Duration = Duration::from_secs(3);

/// Opens the camera (called on the capture thread, which then owns it).
pub type CameraOpener = Arc<dyn Fn() -> Result<Box<dyn VideoSource>, VideoDeviceError> + Send + Sync>;

/// How long a camera being opened waits for its last user to let go of it.
pub const CAMERA_HANDOVER: Duration = Duration::from_secs(3);

/// Whether this engine's camera is open now: one engine opens one camera at a time.
///
/// A capture that is stopped lets go of its camera at its next picture, on its own thread, while
/// a new capture (the call taking over from the settings' preview, a switched camera, the camera
/// turned back on) may already be opening it; a second open of a streaming V4L2 device fails as
/// busy. So each opening waits until the last source is dropped.
#[derive(Default)]
pub struct CameraInUse {
    open: Mutex<bool>,
    released: Condvar,
}

/// `camera`, opened only once the last camera opened through `in_use` was dropped (waiting up to
/// [`CAMERA_HANDOVER`]; a camera stuck in its driver is reported rather than waited for).
pub fn one_at_a_time(camera: CameraOpener, in_use: &Arc<CameraInUse>) -> CameraOpener {
    let in_use = Arc::clone(in_use);
    Arc::new(move || {
        {
            let open = in_use.open.lock().unwrap_or_else(|p| p.into_inner());
            let (mut open, waited) = in_use.released.wait_timeout_while(open, CAMERA_HANDOVER, |open| *open).unwrap_or_else(|p| p.into_inner());
            if waited.timed_out() && *open {
                return Err(VideoDeviceError::Open { device: "camera".into(), reason: "still held by its last capture".into() });
            }
            *open = true;
        }
        match camera() {
            Ok(source) => Ok(Box::new(HeldCamera { source: Some(source), in_use: Arc::clone(&in_use) }) as Box<dyn VideoSource>),
            Err(e) => {
                in_use.release();
                Err(e)
            }
        }
    })
}

impl CameraInUse {
    fn release(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = false;
        self.released.notify_all();
    }
}

/// A camera that says when it is let go.
struct HeldCamera {
    /// Always `Some` until dropped.
    source: Option<Box<dyn VideoSource>>,
    in_use: Arc<CameraInUse>,
}

impl VideoSource for HeldCamera {
    fn next_frame(&mut self) -> Result<I420Frame, VideoDeviceError> {
        match self.source.as_mut() {
            Some(source) => source.next_frame(),
            None => Err(VideoDeviceError::Lost { device: "camera".into(), reason: "released".into() }),
        }
    }
    fn format(&self) -> VideoFormat {
        self.source.as_ref().map_or(VideoFormat::DEFAULT, |s| s.format())
    }
    fn request_format(&mut self, wanted: VideoFormat) {
        if let Some(source) = self.source.as_mut() {
            source.request_format(wanted);
        }
    }
    fn name(&self) -> String {
        self.source.as_ref().map_or_else(String::new, |s| s.name())
    }
}

impl Drop for HeldCamera {
    fn drop(&mut self) {
        // The device is closed first, then the next opener may go.
        drop(self.source.take());
        self.in_use.release();
    }
}

/// What the sender reports.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSendReport {
    /// The camera gives pictures.
    CameraStarted(String),
    /// The camera could not be opened, failed or stopped giving pictures; the call goes on
    /// without our video.
    CameraFailed(String),
    /// The encoder's target bitrate changed (kbit/s).
    Bitrate(u32),
}

/// The size a 1:1 call sends at (a person's setting; groups step down from it on the ladder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum VideoResolution {
    /// 640x360.
    #[default]
    #[serde(rename = "360p")]
    P360,
    /// 960x540.
    #[serde(rename = "540p")]
    P540,
    /// 1280x720.
    #[serde(rename = "720p")]
    P720,
}

/// The size, rate and bitrate ceiling for a call of `people` (us included), the resolution ladder:
/// `top` at 30 fps for two (640x360, 960x540 or 1280x720), 480x270 for three or four, 320x180
/// at 15 fps from five. Portrait sources get the same sizes turned.
pub fn ladder(people: usize, top: VideoResolution, portrait: bool) -> (VideoFormat, u32) {
    let (width, height, fps, kbps) = match (people, top) {
        (0..=2, VideoResolution::P720) => (1280, 720, 30, 2000),
        (0..=2, VideoResolution::P540) => (960, 540, 30, 1500),
        (0..=2, VideoResolution::P360) => (640, 360, 30, 1000),
        (3..=4, _) => (480, 270, 30, 500),
        _ => (320, 180, 15, 200),
    };
    let (width, height) = if portrait { (height, width) } else { (width, height) };
    (VideoFormat { width, height, fps }, kbps)
}

/// The ladder's `format` at the shape of a `width`x`height` source: the short side as the ladder
/// says, the long side as the source's shape needs (a 4:3 camera sends 480x360 rather than a
/// stretched 640x360), even, inside the ladder's box.
pub fn keep_shape(format: VideoFormat, width: u32, height: u32) -> VideoFormat {
    let even = |v: u64| (((v + 1) / 2) * 2).max(2) as u32;
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let (fw, fh) = (u64::from(format.width), u64::from(format.height));
    let (width, height) = if width >= height {
        // Landscape: the height is the short side; a source wider than the ladder's box keeps
        // the ladder's width and gives way in height.
        let long = even(fh * w / h);
        if u64::from(long) <= fw { (long, format.height) } else { (format.width, even(fw * h / w)) }
    } else {
        let long = even(fw * h / w);
        if u64::from(long) <= fh { (format.width, long) } else { (even(fh * w / h), format.height) }
    };
    VideoFormat { width, height, ..format }
}

/// A format within this share of the ladder's is sent at the ladder's: scaling would cost about
/// what it saves.
const SHOWN_CLOSE_TO_FULL: f64 = 0.9;
/// The short side is never asked below this: the smallest rung of the ladder is 180, and a
/// tiny view (a mini window) should not make the picture useless once it grows again.
const SHOWN_SHORT_SIDE_MIN: u32 = 90;

/// A layer's format for the sizes its peers show our video at (their `video_size`; `None` for a
/// peer that never said): the ladder's `format`, or, when every peer on the layer shows it
/// smaller, just large enough for the largest of their views, shape kept, even sides. No more
/// pixels than shown go out: VP8 reaches the app's page as it was coded, so only the sender can
/// keep it to the size of the view.
pub fn shown_format(format: VideoFormat, shown: impl IntoIterator<Item = Option<(u32, u32)>>) -> VideoFormat {
    let mut largest: Option<f64> = None;
    for view in shown {
        let Some(view) = view else { return format };
        // The scale at which the picture covers the view: the side that needs most.
        let scale = crate::video::view_scale(format.width, format.height, view, true).unwrap_or(0.0);
        largest = Some(largest.map_or(scale, |l: f64| l.max(scale)));
    }
    let floor = f64::from(SHOWN_SHORT_SIDE_MIN) / f64::from(format.width.min(format.height).max(1));
    match largest {
        Some(scale) if scale < SHOWN_CLOSE_TO_FULL => {
            let (width, height) = crate::video::scaled_even(format.width, format.height, scale.max(floor).min(1.0));
            VideoFormat { width, height, ..format }
        }
        _ => format,
    }
}

/// The ceiling of a layer scaled from the ladder's `format` to `shown` (its [`shown_format`]):
/// in proportion to the sides, as the ladder's own rungs are (640x360 gets half of 1280x720's
/// rate, 960x540 three quarters), so a smaller picture is not sent at the full size's rate.
pub fn shown_kbps(max_kbps: u32, format: VideoFormat, shown: VideoFormat) -> u32 {
    if shown.width >= format.width {
        return max_kbps;
    }
    let scaled = f64::from(max_kbps) * f64::from(shown.width) / f64::from(format.width.max(1));
    (scaled.round() as u32).max(MIN_KBPS)
}

/// Threads for a VP8 encoder of `width`x`height` on a machine of `cores`: libvpx's row threads
/// wait for each other by spinning, so a second thread only pays where there are cores to spare
/// (libwebrtc's rule). Two threads at 720p on two cores spent half the sender's CPU spinning and
/// still fell to 17 fps (perf, `cargo xtask bench video`).
pub fn encoder_threads(width: u32, height: u32, cores: usize) -> u32 {
    let pixels = width * height;
    if pixels >= 1280 * 720 && cores > 4 {
        3
    } else if pixels > 640 * 480 && cores >= 3 {
        2
    } else {
        1
    }
}

/// The bitrate for one peer, from how hard the link works to carry it: retransmissions per new
/// packet, once a second, smoothed over a few seconds. Above [`DECREASE_ABOVE`] (the link drops
/// much of what we send: it is full) the rate falls by 15 %; below [`INCREASE_BELOW`] it grows by
/// 8 %; in between it holds. The thresholds are libwebrtc's loss-based estimate (decrease above
/// 10 % loss, increase below 2 %) moved to what webrtc-rs's retransmission counts read on a real
/// path (`crates/cli/tests/faults.rs`, NACK every 50 ms, 5 asks at most): with 10 % random loss
/// and nothing else they read 0.12–0.83 a second, about 0.47 on average (each loss is asked for
/// again more than once), so random loss alone holds the rate; a 500 kbit/s policer under a
/// larger stream read 1.0–3.3, which pushes the rate down until the video fits. Pure: reports are passed in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossBasedRate {
    kbps: f64,
    max: f64,
    /// Retransmissions per packet, smoothed.
    smoothed: Option<f64>,
    /// Whether the last move was down: the link, not the ramp from the start, holds it here.
    backed_off: bool,
}

/// The smoothed retransmissions per packet above which the rate falls.
pub const DECREASE_ABOVE: f64 = 0.8;
/// The smoothed retransmissions per packet below which the rate grows.
pub const INCREASE_BELOW: f64 = 0.2;

/// The lowest bitrate the sender goes down to.
pub const MIN_KBPS: u32 = 50;

impl LossBasedRate {
    /// Starts at a third of `max_kbps` (ramping up beats a first second of congestion).
    pub fn new(max_kbps: u32) -> Self {
        LossBasedRate { kbps: (f64::from(max_kbps) / 3.0).max(f64::from(MIN_KBPS)), max: f64::from(max_kbps), smoothed: None, backed_off: false }
    }

    /// A second's report: `per_packet` retransmissions per new packet.
    pub fn report(&mut self, per_packet: f64) {
        let smoothed = match self.smoothed {
            Some(previous) => 0.7 * previous + 0.3 * per_packet,
            None => per_packet,
        };
        self.smoothed = Some(smoothed);
        if smoothed > DECREASE_ABOVE {
            self.kbps *= 0.85;
            self.backed_off = true;
        } else if smoothed < INCREASE_BELOW {
            self.kbps *= 1.08;
            self.backed_off = false;
        }
        self.kbps = self.kbps.clamp(f64::from(MIN_KBPS), self.max);
    }

    /// A new ceiling (the ladder moved).
    pub fn set_max(&mut self, max_kbps: u32) {
        self.max = f64::from(max_kbps);
        self.kbps = self.kbps.min(self.max);
    }

    /// Now, in kbit/s.
    pub fn kbps(&self) -> u32 {
        self.kbps.round() as u32
    }

    /// Whether the link pushed the rate down last (a rate still ramping up from the start is not
    /// a slow link).
    pub fn backed_off(&self) -> bool {
        self.backed_off
    }
}

/// Below this share of the best peer's rate a peer is weak and is sent the second layer.
pub const WEAK_BELOW: f64 = 0.5;
/// A weak peer goes back to the main layer once its rate is this share of the best.
pub const STRONG_FROM: f64 = 0.7;
/// The ceiling of the weak layer (kbit/s): it is the ladder's smallest step.
pub const WEAK_MAX_KBPS: u32 = 200;

/// Which layer each peer should be sent, from each link's rate and whether the link pushed it
/// down: 0, the main layer, or 1, the weak layer for a peer whose link pushed its rate below
/// [`WEAK_BELOW`] of the best one's (a newcomer still ramping up is not weak), back to the main
/// layer from [`STRONG_FROM`], so a peer near the line does not flap. With one encoder
/// following the weakest peer, one slow receiver in a group of three took the others down with it
/// (`crates/cli/tests/faults.rs`: the healthy receiver got 15 fps at 50 kbit/s instead of 30 fps at
/// 500). The second encode runs only while some peer is on it. Pure.
pub fn layers_for(rates: &HashMap<UserId, (u32, bool)>, now_on: &HashMap<UserId, usize>) -> HashMap<UserId, usize> {
    let best = f64::from(rates.values().map(|(kbps, _)| *kbps).max().unwrap_or(0)).max(1.0);
    rates
        .iter()
        .map(|(user, &(kbps, backed_off))| {
            let share = f64::from(kbps) / best;
            let weak_now = now_on.get(user) == Some(&1);
            (user.clone(), usize::from((backed_off && share < WEAK_BELOW) || (weak_now && share < STRONG_FROM)))
        })
        .collect()
}

/// One encode of the pictures, for the peers on it.
#[derive(Default)]
struct Layer {
    encoder: Option<Vp8Encoder>,
    /// A keyframe is due (a peer asked, joined or moved here).
    keyframe: bool,
    /// When the last keyframe went out.
    last_keyframe: Option<Instant>,
}

enum Command {
    AddOutlet(UserId, VideoOutlet),
    ViewSize(UserId, u32, u32),
    Remove(UserId),
    Keyframe(UserId),
    Retransmissions(UserId, f64),
    People(usize),
    Enabled(bool),
    Camera(CameraOpener),
}

/// A handle to the sender; dropping it stops the sender and releases the camera.
pub struct VideoSender {
    commands: mpsc::Sender<Command>,
}

impl VideoSender {
    /// Starts the sender for a call of `people` (us included); the camera opens at once if
    /// `camera_on`, and each of its pictures goes to `preview` too (our own view of ourselves).
    /// `runtime` is the tokio runtime the peer connections live on.
    pub fn start(
        camera: CameraOpener,
        camera_on: bool,
        people: usize,
        top: VideoResolution,
        preview: Box<dyn VideoSink>,
        runtime: tokio::runtime::Handle,
        reports: tokio_mpsc::UnboundedSender<VideoSendReport>,
    ) -> VideoSender {
        let (commands, inbox) = mpsc::channel();
        let encoder = Encoder::new(camera, people, top, preview, runtime, reports.clone());
        if !camera_on {
            let _ = commands.send(Command::Enabled(false));
        }
        if let Err(e) = std::thread::Builder::new().name("hark-video-send".into()).spawn(move || encoder.run(inbox)) {
            let _ = reports.send(VideoSendReport::CameraFailed(format!("cannot start the video thread: {e}")));
        }
        VideoSender { commands }
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Sends our video to `user` too (with a keyframe to start on).
    pub fn add_outlet(&self, user: UserId, outlet: VideoOutlet) {
        self.send(Command::AddOutlet(user, outlet));
    }

    /// `user` shows our video at most `width` x `height` now: send them no more pixels.
    pub fn set_view_size(&self, user: UserId, width: u32, height: u32) {
        self.send(Command::ViewSize(user, width, height));
    }

    /// Stops sending to `user`.
    pub fn remove(&self, user: &str) {
        self.send(Command::Remove(user.to_owned()));
    }

    /// `user` lost our picture: the next frame of the layer they get is a keyframe.
    pub fn keyframe(&self, user: UserId) {
        self.send(Command::Keyframe(user));
    }

    /// The link to `user` needed `per_packet` retransmissions per new packet last second.
    pub fn retransmissions(&self, user: UserId, per_packet: f64) {
        self.send(Command::Retransmissions(user, per_packet));
    }

    /// The call now has `people` (us included): the ladder may move.
    pub fn people(&self, people: usize) {
        self.send(Command::People(people));
    }

    /// Uses another camera from now on: a running one is released and the new one opened.
    pub fn set_camera(&self, camera: CameraOpener) {
        self.send(Command::Camera(camera));
    }

    /// Turns the camera off (released) or on again; the call goes on either way.
    pub fn set_enabled(&self, enabled: bool) {
        self.send(Command::Enabled(enabled));
    }
}

/// A one-place slot for the newest picture.
#[derive(Default)]
struct Latest {
    frame: Mutex<Option<I420Frame>>,
    arrived: Condvar,
}

impl Latest {
    fn put(&self, frame: I420Frame) {
        *self.frame.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame);
        self.arrived.notify_one();
    }

    /// The newest picture, waiting up to `wait` for one.
    fn take(&self, wait: Duration) -> Option<I420Frame> {
        let guard = self.frame.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = self.arrived.wait_timeout_while(guard, wait, |f| f.is_none()).unwrap_or_else(|p| p.into_inner());
        guard.take()
    }
}

/// One running capture thread.
struct Capture {
    stop: Arc<AtomicBool>,
    wanted: Arc<Mutex<Option<VideoFormat>>>,
}

impl Capture {
    fn start(camera: &CameraOpener, latest: &Arc<Latest>, format: VideoFormat, reports: &tokio_mpsc::UnboundedSender<VideoSendReport>) -> Capture {
        let stop = Arc::new(AtomicBool::new(false));
        let wanted = Arc::new(Mutex::new(Some(format)));
        let failed = reports.clone();
        let (camera, latest, reports) = (Arc::clone(camera), Arc::clone(latest), reports.clone());
        let (stop_flag, wanted_format) = (Arc::clone(&stop), Arc::clone(&wanted));
        let spawned = std::thread::Builder::new().name("hark-camera".into()).spawn(move || {
            let mut source = match camera() {
                Ok(source) => source,
                Err(e) => {
                    let _ = reports.send(VideoSendReport::CameraFailed(e.to_string()));
                    return;
                }
            };
            let _ = reports.send(VideoSendReport::CameraStarted(source.name()));
            while !stop_flag.load(Ordering::Relaxed) {
                if let Some(format) = wanted_format.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    // The ladder's step in the source's own orientation: an upright camera
                    // stays upright.
                    let now = source.format();
                    let format = if now.height > now.width { VideoFormat { width: format.height, height: format.width, ..format } } else { format };
                    source.request_format(format);
                }
                match source.next_frame() {
                    Ok(frame) => latest.put(frame),
                    Err(e) => {
                        let _ = reports.send(VideoSendReport::CameraFailed(e.to_string()));
                        return;
                    }
                }
            }
            info!(camera = %source.name(), "camera released");
        });
        if let Err(e) = spawned {
            let _ = failed.send(VideoSendReport::CameraFailed(format!("cannot start the camera thread: {e}")));
        }
        Capture { stop, wanted }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Everything the encoder thread owns.
struct Encoder {
    camera: CameraOpener,
    latest: Arc<Latest>,
    capture: Option<Capture>,
    people: usize,
    top: VideoResolution,
    runtime: tokio::runtime::Handle,
    reports: tokio_mpsc::UnboundedSender<VideoSendReport>,
    /// The main layer and the weak one (encoded only while some peer needs it).
    layers: [Layer; 2],
    outlets: HashMap<UserId, VideoOutlet>,
    rates: HashMap<UserId, LossBasedRate>,
    /// The layer each peer is sent now.
    on_layer: HashMap<UserId, usize>,
    /// Peers waiting for a keyframe of a layer before they are sent it (a decoder cannot go on
    /// from another encoder's frames).
    joining: HashMap<UserId, usize>,
    /// The size each peer shows our video at, as they said (`video_size`).
    view_sizes: HashMap<UserId, (u32, u32)>,
    /// When a picture last came from the running camera (the watchdog's reference).
    last_picture: Instant,
    camera_failed: bool,
    bitrate_said: u32,
    preview: Box<dyn VideoSink>,
}

impl Encoder {
    fn new(
        camera: CameraOpener,
        people: usize,
        top: VideoResolution,
        preview: Box<dyn VideoSink>,
        runtime: tokio::runtime::Handle,
        reports: tokio_mpsc::UnboundedSender<VideoSendReport>,
    ) -> Self {
        Encoder {
            camera,
            latest: Arc::new(Latest::default()),
            capture: None,
            people,
            top,
            runtime,
            reports,
            layers: Default::default(),
            outlets: HashMap::new(),
            rates: HashMap::new(),
            on_layer: HashMap::new(),
            joining: HashMap::new(),
            view_sizes: HashMap::new(),
            last_picture: Instant::now(),
            camera_failed: false,
            bitrate_said: 0,
            preview,
        }
    }

    fn format(&self, portrait: bool) -> (VideoFormat, u32) {
        ladder(self.people, self.top, portrait)
    }

    fn start_camera(&mut self) {
        let (format, _) = self.format(false);
        // A fresh slot per capture: a capture being stopped gives one last picture, which must
        // not land among the new camera's.
        self.latest = Arc::new(Latest::default());
        self.capture = Some(Capture::start(&self.camera, &self.latest, format, &self.reports));
        self.last_picture = Instant::now();
        self.camera_failed = false;
        for layer in &mut self.layers {
            layer.keyframe = true;
        }
    }

    fn run(mut self, inbox: mpsc::Receiver<Command>) {
        // A sender started with the camera off has that command waiting: take it first, so the
        // camera is not opened for a moment.
        let first = inbox.try_recv().ok();
        if !matches!(first, Some(Command::Enabled(false))) {
            self.start_camera();
        }
        if let Some(command) = first {
            self.apply(command);
        }
        loop {
            loop {
                match inbox.try_recv() {
                    Ok(command) => self.apply(command),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if self.capture.is_none() {
                // Camera off: nothing to encode; wait for the next command.
                match inbox.recv_timeout(Duration::from_millis(200)) {
                    Ok(command) => self.apply(command),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                continue;
            }
            match self.latest.take(Duration::from_millis(50)) {
                Some(frame) => {
                    self.last_picture = Instant::now();
                    self.preview.write_frame(&frame);
                    self.send_picture(&frame);
                }
                None if !self.camera_failed && self.last_picture.elapsed() > CAMERA_STALL => {
                    self.camera_failed = true;
                    let _ = self.reports.send(VideoSendReport::CameraFailed("the camera stopped giving pictures".into()));
                    // A capture thread stuck in the driver is left behind; it holds nothing
                    // else of ours.
                    self.capture = None;
                }
                None => {}
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::AddOutlet(user, outlet) => {
                let (_, max) = self.format(false);
                self.rates.insert(user.clone(), LossBasedRate::new(max));
                self.outlets.insert(user.clone(), outlet);
                self.on_layer.remove(&user);
                self.joining.insert(user, 0);
                self.layers[0].keyframe = true;
            }
            Command::ViewSize(user, width, height) => {
                self.view_sizes.insert(user, (width, height));
            }
            Command::Remove(user) => {
                self.view_sizes.remove(&user);
                self.outlets.remove(&user);
                self.rates.remove(&user);
                self.on_layer.remove(&user);
                self.joining.remove(&user);
            }
            Command::Keyframe(user) => {
                let layer = self.on_layer.get(&user).or_else(|| self.joining.get(&user)).copied().unwrap_or(0);
                self.layers[layer].keyframe = true;
            }
            Command::Retransmissions(user, per_packet) => {
                if let Some(rate) = self.rates.get_mut(&user) {
                    rate.report(per_packet);
                }
            }
            Command::People(people) => {
                self.people = people;
                let (format, max) = self.format(false);
                for rate in self.rates.values_mut() {
                    rate.set_max(max);
                }
                if let Some(capture) = &self.capture {
                    *capture.wanted.lock().unwrap_or_else(|p| p.into_inner()) = Some(format);
                }
            }
            Command::Enabled(true) if self.capture.is_none() => self.start_camera(),
            Command::Enabled(true) => {}
            Command::Enabled(false) => {
                self.capture = None;
                for layer in &mut self.layers {
                    layer.encoder = None;
                }
            }
            Command::Camera(camera) => {
                self.camera = camera;
                // A running camera is replaced; one turned off (or failed, which the engine
                // turns off) stays off until it is turned on.
                if self.capture.is_some() {
                    self.capture = None;
                    self.start_camera();
                }
            }
        }
    }

    fn send_picture(&mut self, frame: &I420Frame) {
        if self.outlets.is_empty() {
            return;
        }
        let portrait = frame.height() > frame.width();
        let (ladder_format, max) = self.format(portrait);
        let main = keep_shape(ladder_format, frame.width(), frame.height());
        let weak = VideoFormat { fps: main.fps, ..keep_shape(ladder(self.people.max(5), self.top, portrait).0, frame.width(), frame.height()) };
        // Where each peer should be; one who should move waits for the new layer's keyframe.
        let links: HashMap<UserId, (u32, bool)> = self.rates.iter().map(|(user, rate)| (user.clone(), (rate.kbps(), rate.backed_off()))).collect();
        let wanted = layers_for(&links, &self.on_layer);
        let rates: HashMap<UserId, u32> = links.iter().map(|(user, (kbps, _))| (user.clone(), *kbps)).collect();
        for (user, &layer) in &wanted {
            if self.on_layer.get(user) != Some(&layer) && self.joining.get(user) != Some(&layer) {
                self.joining.insert(user.clone(), layer);
                self.layers[layer].keyframe = true;
            }
        }
        for index in 0..self.layers.len() {
            let audience: Vec<UserId> =
                self.outlets.keys().filter(|u| self.on_layer.get(*u) == Some(&index) || self.joining.get(*u) == Some(&index)).cloned().collect();
            if audience.is_empty() {
                // No one needs this layer: its encoder goes (the weak one costs nothing when all
                // links are alike).
                self.layers[index].encoder = None;
                continue;
            }
            // The layer follows the weakest peer meant for it.
            let meant = audience.iter().filter(|u| wanted.get(*u) == Some(&index)).filter_map(|u| rates.get(u)).copied().min();
            // Each layer no larger than its people show it (a peer that joins and has not said yet
            // takes it back to the full size until it says: a keyframe more, in a group call
            // where the ladder's sizes are small already).
            let full = if index == 0 { main } else { weak };
            let format = shown_format(full, audience.iter().map(|u| self.view_sizes.get(u).copied()));
            let ceiling = shown_kbps(if index == 0 { max } else { WEAK_MAX_KBPS.min(max) }, full, format);
            if index == 0 {
                // The links' estimates stay under what the layer sends, so a view that grows
                // ramps up from what the link carried instead of jumping to a rate it never did.
                for user in &audience {
                    if let Some(rate) = self.rates.get_mut(user) {
                        rate.set_max(ceiling);
                    }
                }
            }
            let bitrate = meant.or_else(|| audience.iter().filter_map(|u| rates.get(u)).copied().min()).unwrap_or(max / 3).clamp(MIN_KBPS, ceiling);
            if index == 0 && bitrate != self.bitrate_said {
                self.bitrate_said = bitrate;
                let _ = self.reports.send(VideoSendReport::Bitrate(bitrate));
            }
            let Some(encoded) = encode_layer(&mut self.layers[index], format, bitrate, frame) else { continue };
            if encoded.keyframe {
                let arrived: Vec<UserId> = self.joining.iter().filter(|(_, &layer)| layer == index).map(|(user, _)| user.clone()).collect();
                for user in arrived {
                    self.joining.remove(&user);
                    self.on_layer.insert(user, index);
                }
            }
            let outlets: Vec<VideoOutlet> = self.outlets.iter().filter(|(u, _)| self.on_layer.get(*u) == Some(&index)).map(|(_, o)| o.clone()).collect();
            let data = Bytes::from(encoded.data);
            let duration = Duration::from_secs_f64(1.0 / f64::from(format.fps.max(1)));
            let now = Instant::now();
            self.runtime.block_on(async {
                for outlet in outlets {
                    let sample = Sample { data: data.clone(), duration, ..Sample::new(now) };
                    if let Err(e) = outlet.track.write_sample(outlet.ssrc, outlet.payload_type, &sample, &[]).await {
                        debug!(error = %e, "video write_sample");
                    }
                }
            });
        }
    }
}

/// Encodes `frame` on `layer` at `format` and `bitrate`, (re)making its encoder when the format
/// changed and forcing a keyframe when one is due (at most one per [`KEYFRAME_SPACING`]). `None`
/// when rate control dropped the picture or the encoder failed.
fn encode_layer(layer: &mut Layer, format: VideoFormat, bitrate: u32, frame: &I420Frame) -> Option<hark_video::vp8::EncodedFrame> {
    let fits = layer.encoder.as_ref().is_some_and(|e| {
        let s = e.settings();
        (s.width, s.height, s.fps) == (format.width, format.height, format.fps)
    });
    if !fits {
        info!(width = format.width, height = format.height, fps = format.fps, "VP8 encoder at this size");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = encoder_threads(format.width, format.height, cores);
        let settings = EncoderSettings { width: format.width, height: format.height, fps: format.fps, bitrate_kbps: bitrate, threads };
        match Vp8Encoder::new(settings) {
            Ok(encoder) => layer.encoder = Some(encoder),
            Err(e) => {
                warn!(error = %e, "cannot start the VP8 encoder");
                return None;
            }
        }
        layer.keyframe = true;
        layer.last_keyframe = None;
    }
    let encoder = layer.encoder.as_mut()?;
    if let Err(e) = encoder.set_bitrate(bitrate) {
        debug!(error = %e, "bitrate");
    }
    // The top layer is usually the camera's own size: encoded as it is, not copied.
    let picture = frame.at_size(format.width, format.height);
    let force = layer.keyframe && layer.last_keyframe.is_none_or(|at| at.elapsed() >= KEYFRAME_SPACING);
    match encoder.encode(&picture, force) {
        Ok(Some(encoded)) => {
            if encoded.keyframe {
                layer.keyframe = false;
                layer.last_keyframe = Some(Instant::now());
            }
            Some(encoded)
        }
        Ok(None) => None, // rate control dropped it
        Err(e) => {
            debug!(error = %e, "VP8 encode");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_threads_follow_the_picture_and_the_cores() {
        assert_eq!(encoder_threads(1280, 720, 2), 1, "two cores: no spinning second thread");
        assert_eq!(encoder_threads(1280, 720, 4), 2);
        assert_eq!(encoder_threads(1280, 720, 8), 3);
        assert_eq!(encoder_threads(640, 360, 8), 1, "VGA and below: one");
    }

    #[test]
    fn the_ladder_steps_down_as_people_join() {
        assert_eq!(ladder(2, VideoResolution::P360, false).0, VideoFormat { width: 640, height: 360, fps: 30 });
        assert_eq!(ladder(2, VideoResolution::P720, false).0, VideoFormat { width: 1280, height: 720, fps: 30 });
        assert_eq!(ladder(2, VideoResolution::P540, false).0, VideoFormat { width: 960, height: 540, fps: 30 });
        assert_eq!(ladder(3, VideoResolution::P720, false).0, VideoFormat { width: 480, height: 270, fps: 30 });
        assert_eq!(ladder(4, VideoResolution::P360, false).0.width, 480);
        assert_eq!(ladder(5, VideoResolution::P360, false).0, VideoFormat { width: 320, height: 180, fps: 15 });
        assert_eq!(ladder(9, VideoResolution::P360, true).0, VideoFormat { width: 180, height: 320, fps: 15 }, "portrait");
    }

    #[test]
    fn a_weak_link_gets_the_second_layer_and_comes_back_only_well_above_the_line() {
        // Each link's rate, pushed down by the link.
        let rates = |list: &[(&str, u32)]| list.iter().map(|(u, k)| (u.to_string(), (*k, true))).collect::<HashMap<UserId, (u32, bool)>>();
        let none = HashMap::new();
        assert_eq!(layers_for(&rates(&[("bob", 60)]), &none), HashMap::from([("bob".into(), 0)]), "one peer: the main layer, however slow");
        // A newcomer still ramping up from a third of the ceiling is not a slow link.
        let ramping = HashMap::from([("bob".to_string(), (500, false)), ("carol".to_string(), (167, false))]);
        assert_eq!(layers_for(&ramping, &none)["carol"], 0);
        let alike = layers_for(&rates(&[("bob", 500), ("carol", 300)]), &none);
        assert!(alike.values().all(|&l| l == 0), "{alike:?}");
        let split = layers_for(&rates(&[("bob", 500), ("carol", 200)]), &none);
        assert_eq!((split["bob"], split["carol"]), (0, 1));
        // Between the lines a peer stays where it is.
        let on_weak = HashMap::from([("carol".to_string(), 1)]);
        assert_eq!(layers_for(&rates(&[("bob", 500), ("carol", 300)]), &on_weak)["carol"], 1);
        assert_eq!(layers_for(&rates(&[("bob", 500), ("carol", 350)]), &on_weak)["carol"], 0);
    }

    #[test]
    fn a_source_keeps_its_shape_on_the_ladder() {
        let (one_to_one, _) = ladder(2, VideoResolution::P360, false);
        assert_eq!(keep_shape(one_to_one, 1280, 720), one_to_one, "16:9 as it is");
        assert_eq!(keep_shape(one_to_one, 640, 480), VideoFormat { width: 480, height: 360, fps: 30 }, "4:3");
        assert_eq!(keep_shape(ladder(2, VideoResolution::P360, true).0, 360, 640), VideoFormat { width: 360, height: 640, fps: 30 }, "portrait 9:16");
        assert_eq!(keep_shape(ladder(2, VideoResolution::P360, true).0, 480, 640), VideoFormat { width: 360, height: 480, fps: 30 }, "portrait 3:4");
        // Wider than 16:9: the width is capped and the height gives way.
        assert_eq!(keep_shape(one_to_one, 2560, 1080), VideoFormat { width: 640, height: 270, fps: 30 });
    }

    #[test]
    fn the_rate_grows_on_a_clean_link_holds_on_a_lossy_one_and_falls_on_a_full_one() {
        let mut rate = LossBasedRate::new(900);
        assert_eq!(rate.kbps(), 300);
        for _ in 0..40 {
            rate.report(0.0);
        }
        assert_eq!(rate.kbps(), 900, "never above the ceiling");
        // Random loss: retransmissions around 0.5 a packet, up and down (measured values).
        for r in [0.125, 0.269, 0.696, 0.825, 0.536, 0.404, 0.203, 0.339, 0.492, 0.542, 0.672] {
            rate.report(r);
        }
        assert_eq!(rate.kbps(), 900, "held");
        // A full link: most of it asked for again.
        for _ in 0..5 {
            rate.report(2.0);
        }
        assert!(rate.kbps() < 600, "{}", rate.kbps());
        for _ in 0..100 {
            rate.report(5.0);
        }
        assert_eq!(rate.kbps(), MIN_KBPS);
        rate.set_max(40);
        assert_eq!(rate.kbps(), 40);
    }

    #[test]
    fn the_slot_keeps_only_the_newest_picture() {
        let latest = Latest::default();
        assert!(latest.take(Duration::from_millis(1)).is_none());
        latest.put(I420Frame::black(2, 2));
        latest.put(I420Frame::black(4, 4));
        assert_eq!(latest.take(Duration::from_millis(1)).map(|f| f.width()), Some(4));
        assert!(latest.take(Duration::from_millis(1)).is_none());
    }

    #[test]
    fn the_main_layer_is_no_larger_than_its_largest_view_once_every_peer_on_it_said() {
        let hd = VideoFormat { width: 1280, height: 720, fps: 30 };
        assert_eq!(shown_format(hd, []), hd, "nobody on it");
        assert_eq!(shown_format(hd, [Some((718, 404))]), VideoFormat { width: 718, height: 404, fps: 30 }, "the app's call view");
        assert_eq!(shown_format(hd, [Some((718, 404)), None]), hd, "a peer that never said gets everything");
        assert_eq!(shown_format(hd, [Some((320, 180)), Some((640, 360))]), VideoFormat { width: 640, height: 360, fps: 30 }, "the largest view");
        assert_eq!(shown_format(hd, [Some((1200, 675))]), hd, "close to full: sent as it is");
        assert_eq!(shown_format(hd, [Some((1920, 1080))]), hd, "never above the ladder");
        assert_eq!(shown_format(hd, [Some((40, 22))]), VideoFormat { width: 160, height: 90, fps: 30 }, "a tiny view keeps a usable picture");
        assert_eq!(shown_format(hd, [Some((300, 400))]), VideoFormat { width: 710, height: 400, fps: 30 }, "a view of another shape: the side that needs most");
    }


    #[test]
    fn a_smaller_picture_for_the_views_gets_a_proportionally_lower_ceiling() {
        let hd = VideoFormat { width: 1280, height: 720, fps: 30 };
        assert_eq!(shown_kbps(2000, hd, hd), 2000);
        assert_eq!(shown_kbps(2000, hd, VideoFormat { width: 640, height: 360, fps: 30 }), 1000, "as the ladder's 360p rung");
        assert_eq!(shown_kbps(2000, hd, VideoFormat { width: 960, height: 540, fps: 30 }), 1500, "as the 540p rung");
        assert_eq!(shown_kbps(2000, hd, VideoFormat { width: 718, height: 402, fps: 30 }), 1122);
        assert_eq!(shown_kbps(200, hd, VideoFormat { width: 160, height: 90, fps: 30 }), MIN_KBPS, "never below the floor");
    }

}
