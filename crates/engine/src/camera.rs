//! The real camera: V4L2 devices through nokhwa, listed, picked, watched for hot-plug and read
//! as a [`VideoSource`].
//!
//! nokhwa 0.10 has gaps this module works around rather than trusts:
//! - `query()` lists every `/dev/video*` node, a UVC camera's metadata node included; only nodes
//!   that list video-capture formats are cameras here;
//! - its `Closest` format request is buggy (it filters frame rates by the requested size), so
//!   the camera is opened on any usable format and then set to the one [`choose_format`] picks
//!   from what the camera says it can do: MJPEG first (USB 2.0 cameras give 720p30 only that
//!   way), YUYV next, the smallest size that covers what the call wants at the shape it wants;
//! - it decodes only to RGB, so pictures are taken raw and converted to I420 in
//!   [`hark_video::convert`];
//! - `frame()` can block forever when the camera is unplugged (v4l never sets a timeout); the
//!   video sender's watchdog ([`crate::video_send::CAMERA_STALL`]) reports a camera that stops
//!   giving pictures instead of waiting for this thread.
//!
//! There is no hot-plug API either: [`CameraWatch`] compares lists, and the engine polls
//! [`polled_lister`], which lists again only when the `/dev/video*` nodes changed.

use hark_video::convert::{self, CameraPixels};
use hark_video::I420Frame;
use nokhwa::utils::{ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
use nokhwa::Camera;

use crate::video::{VideoDeviceError, VideoFormat, VideoSource};

/// A camera as a person picks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CameraInfo {
    /// The V4L2 device number (`/dev/videoN`).
    pub index: u32,
    /// The name the driver gives it.
    pub name: String,
}

impl CameraInfo {
    /// Its device path.
    pub fn path(&self) -> String {
        format!("/dev/video{}", self.index)
    }
}

/// The cameras on this machine, in device order (the first is the default). A machine with no
/// camera, or one where listing fails, has none; that is not an error until a call wants one.
pub fn list() -> Vec<CameraInfo> {
    let nodes = match nokhwa::query(ApiBackend::Video4Linux) {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::debug!(error = %e, "cannot list cameras");
            return Vec::new();
        }
    };
    let mut cameras: Vec<CameraInfo> = nodes
        .into_iter()
        .filter_map(|node| match node.index() {
            CameraIndex::Index(index) => Some(CameraInfo { index: *index, name: node.human_name() }),
            CameraIndex::String(_) => None,
        })
        .filter(|camera| captures_video(camera.index))
        .collect();
    cameras.sort_by_key(|camera| camera.index);
    cameras
}

/// The camera list for the hot-plug poll: listing opens every video node (and can wake a USB
/// camera), so it is done again only when the set of `/dev/video*` nodes changed since the last
/// poll; reading the folder is all a poll costs otherwise.
pub fn polled_lister() -> crate::engine::CameraLister {
    let last: std::sync::Mutex<Option<(Vec<String>, Vec<CameraInfo>)>> = std::sync::Mutex::new(None);
    std::sync::Arc::new(move || {
        let mut nodes: Vec<String> = std::fs::read_dir("/dev")
            .map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("video")).collect())
            .unwrap_or_default();
        nodes.sort();
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_ref() {
            Some((seen, cameras)) if *seen == nodes => cameras.clone(),
            _ => {
                let cameras = list();
                *last = Some((nodes, cameras.clone()));
                cameras
            }
        }
    })
}

/// Whether `/dev/videoN` lists video-capture formats: a UVC camera's metadata node does not.
fn captures_video(index: u32) -> bool {
    v4l::Device::new(index as usize).and_then(|device| v4l::video::Capture::enum_formats(&device)).is_ok_and(|formats| !formats.is_empty())
}

/// Remembers the last list and says when it changed (a camera plugged in or out).
#[derive(Debug, Default)]
pub struct CameraWatch {
    last: Option<Vec<CameraInfo>>,
}

impl CameraWatch {
    /// The new list if it differs from the one seen before (the first list counts as a change
    /// only if it has a camera: "none yet" is not news).
    pub fn changed(&mut self, now: Vec<CameraInfo>) -> Option<Vec<CameraInfo>> {
        let before = self.last.replace(now.clone());
        match before {
            Some(before) if before == now => None,
            None if now.is_empty() => None,
            _ => Some(now),
        }
    }
}

fn pixels_of(format: FrameFormat) -> Option<CameraPixels> {
    match format {
        FrameFormat::MJPEG => Some(CameraPixels::Mjpeg),
        FrameFormat::YUYV => Some(CameraPixels::Yuyv),
        FrameFormat::NV12 => Some(CameraPixels::Nv12),
        _ => None,
    }
}

/// The camera format to use for pictures of `wanted`, from what the camera offers: one that
/// covers the wanted size at the wanted rate if any does (the sender scales down, never up),
/// keeping the wanted shape (a 4:3 picture stretched to 16:9 distorts faces), the smallest such,
/// MJPEG before YUYV before NV12, the rate nearest the wanted one. Failing that, the largest
/// picture at the best rate. `None` if it offers nothing convertible.
pub fn choose_format(offered: &[CameraFormat], wanted: VideoFormat) -> Option<CameraFormat> {
    let (want_w, want_h) = (u64::from(wanted.width), u64::from(wanted.height));
    offered.iter().filter(|f| pixels_of(f.format()).is_some()).copied().min_by_key(|f| {
        let (w, h) = (u64::from(f.width()), u64::from(f.height()));
        let covers = w >= want_w && h >= want_h;
        let fast_enough = f.frame_rate() >= wanted.fps;
        let other_shape = w * want_h != h * want_w;
        let area = w * h;
        let rank = match f.format() {
            FrameFormat::MJPEG => 0,
            FrameFormat::YUYV => 1,
            _ => 2,
        };
        (
            !fast_enough,
            !covers,
            other_shape,
            // Covering: the smallest; not covering: the largest.
            if covers { area } else { u64::MAX - area },
            rank,
            f.frame_rate().abs_diff(wanted.fps),
        )
    })
}

/// A V4L2 camera, opened on the capture thread that then owns it.
pub struct Webcam {
    camera: Camera,
    pixels: CameraPixels,
    format: CameraFormat,
    name: String,
    /// Frames in a row that could not be converted (torn MJPEG, say).
    bad_in_a_row: u32,
}

/// After this many unusable frames in a row the camera counts as failed.
const BAD_FRAMES_TOLERATED: u32 = 30;

impl Webcam {
    /// Opens camera `index` (the first camera if `None`) for pictures of `wanted`, and starts it.
    pub fn open(index: Option<u32>, wanted: VideoFormat) -> Result<Webcam, VideoDeviceError> {
        let index = match index {
            Some(index) => index,
            None => list()
                .first()
                .map(|camera| camera.index)
                .ok_or_else(|| VideoDeviceError::Open { device: "default camera".into(), reason: "no camera found".into() })?,
        };
        let device = format!("/dev/video{index}");
        let failed = |reason: String| VideoDeviceError::Open { device: device.clone(), reason };
        if !std::path::Path::new(&device).exists() {
            return Err(failed("no such camera".into()));
        }
        let any = RequestedFormat::with_formats(RequestedFormatType::None, &[FrameFormat::MJPEG, FrameFormat::YUYV, FrameFormat::NV12]);
        let mut camera = Camera::with_backend(CameraIndex::Index(index), any, ApiBackend::Video4Linux)
            .map_err(|e| failed(format!("{e} (it gives no MJPEG, YUYV or NV12 pictures, or it is busy)")))?;
        let offered = camera.compatible_camera_formats().map_err(|e| failed(e.to_string()))?;
        let format = choose_format(&offered, wanted).ok_or_else(|| failed("it gives no MJPEG, YUYV or NV12 pictures".into()))?;
        camera
            .set_camera_requset(RequestedFormat::with_formats(RequestedFormatType::Exact(format), &[format.format()]))
            .map_err(|e| failed(e.to_string()))?;
        camera.open_stream().map_err(|e| failed(e.to_string()))?;
        let pixels = pixels_of(format.format()).ok_or_else(|| failed("unusable pixel format".into()))?;
        let name = format!("{} ({device})", camera.info().human_name());
        tracing::info!(camera = %name, format = %format, "camera opened");
        Ok(Webcam { camera, pixels, format, name, bad_in_a_row: 0 })
    }
}

impl VideoSource for Webcam {
    fn next_frame(&mut self) -> Result<I420Frame, VideoDeviceError> {
        loop {
            let raw = self.camera.frame_raw().map_err(|e| VideoDeviceError::Lost { device: self.name.clone(), reason: e.to_string() })?;
            match convert::to_i420(self.pixels, self.format.width(), self.format.height(), &raw) {
                Ok(frame) => {
                    self.bad_in_a_row = 0;
                    return Ok(frame);
                }
                Err(e) => {
                    self.bad_in_a_row += 1;
                    tracing::debug!(camera = %self.name, error = %e, "camera frame dropped");
                    if self.bad_in_a_row >= BAD_FRAMES_TOLERATED {
                        return Err(VideoDeviceError::Lost { device: self.name.clone(), reason: format!("its pictures cannot be read: {e}") });
                    }
                }
            }
        }
    }

    fn format(&self) -> VideoFormat {
        VideoFormat { width: self.format.width(), height: self.format.height(), fps: self.format.frame_rate() }
    }

    fn name(&self) -> String {
        self.name.clone()
    }
}

impl Drop for Webcam {
    fn drop(&mut self) {
        // Stops streaming now, so the light goes off before the device is closed.
        let _ = self.camera.stop_stream();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(w: u32, h: u32, format: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new_from(w, h, format, fps)
    }

    /// What a common USB 2.0 webcam offers: 720p30 only in MJPEG, YUYV slow at large sizes,
    /// and 4:3 sizes beside the 16:9 ones.
    fn usb_webcam() -> Vec<CameraFormat> {
        vec![
            f(640, 480, FrameFormat::YUYV, 30),
            f(640, 360, FrameFormat::YUYV, 30),
            f(1280, 720, FrameFormat::YUYV, 10),
            f(320, 240, FrameFormat::YUYV, 30),
            f(1280, 720, FrameFormat::MJPEG, 30),
            f(1280, 720, FrameFormat::MJPEG, 15),
            f(640, 480, FrameFormat::MJPEG, 30),
            f(640, 360, FrameFormat::MJPEG, 30),
            f(1920, 1080, FrameFormat::MJPEG, 30),
            f(1920, 1080, FrameFormat::GRAY, 30),
        ]
    }

    #[test]
    fn the_smallest_covering_mjpeg_at_the_wanted_shape_and_rate_is_chosen() {
        assert_eq!(choose_format(&usb_webcam(), VideoFormat::DEFAULT), Some(f(640, 360, FrameFormat::MJPEG, 30)));
        let hd = VideoFormat { width: 1280, height: 720, fps: 30 };
        assert_eq!(choose_format(&usb_webcam(), hd), Some(f(1280, 720, FrameFormat::MJPEG, 30)), "not YUYV at 10 fps");
        let group = VideoFormat { width: 480, height: 270, fps: 30 };
        assert_eq!(choose_format(&usb_webcam(), group), Some(f(640, 360, FrameFormat::MJPEG, 30)));
    }

    #[test]
    fn yuyv_when_there_is_no_mjpeg_and_the_best_there_is_when_nothing_fits() {
        let yuyv_only: Vec<CameraFormat> = usb_webcam().into_iter().filter(|c| c.format() == FrameFormat::YUYV).collect();
        assert_eq!(choose_format(&yuyv_only, VideoFormat::DEFAULT), Some(f(640, 360, FrameFormat::YUYV, 30)));
        // An old 4:3 camera: the whole picture at the wanted rate (the sender keeps its shape).
        let old = vec![f(320, 240, FrameFormat::YUYV, 30), f(640, 480, FrameFormat::YUYV, 15), f(160, 120, FrameFormat::YUYV, 30)];
        assert_eq!(choose_format(&old, VideoFormat::DEFAULT), Some(f(320, 240, FrameFormat::YUYV, 30)));
        assert_eq!(choose_format(&[f(640, 480, FrameFormat::GRAY, 30)], VideoFormat::DEFAULT), None);
        assert_eq!(choose_format(&[], VideoFormat::DEFAULT), None);
    }

    #[test]
    fn the_watch_says_only_changes() {
        let mut watch = CameraWatch::default();
        assert_eq!(watch.changed(vec![]), None, "no camera at start is not news");
        let webcam = CameraInfo { index: 0, name: "Webcam".into() };
        assert_eq!(watch.changed(vec![webcam.clone()]), Some(vec![webcam.clone()]), "plugged in");
        assert_eq!(watch.changed(vec![webcam.clone()]), None);
        assert_eq!(watch.changed(vec![]), Some(vec![]), "unplugged");
        let mut fresh = CameraWatch::default();
        assert_eq!(fresh.changed(vec![webcam.clone()]), Some(vec![webcam]), "a camera there at start is said");
    }

    #[test]
    fn a_missing_camera_is_a_clear_error() {
        // /dev/video63 is past what udev hands out on a desktop; a machine with one skips this.
        if std::path::Path::new("/dev/video63").exists() {
            return;
        }
        let error = Webcam::open(Some(63), VideoFormat::DEFAULT).err().expect("no such camera");
        assert_eq!(error, VideoDeviceError::Open { device: "/dev/video63".into(), reason: "no such camera".into() });
    }
}
