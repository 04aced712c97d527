//! Video in the app: the frame socket the page reads pictures from, and the engine's camera and
//! video sinks.
//!
//! The socket is bound before the window is built, so the page's CSP can name exactly its port
//! ([`allow_in_csp`]). Remote people's pictures go to the tile named after them and our own
//! camera's to [`hark_frames::SELF_TILE`]; the page shows the tiles it wants ([`hark_frames`]).
//! The camera is the one the settings name (the first listed by default); `HARK_TEST_CAMERA`
//! (`test-pattern`, `test-clock`, `file:PATH.y4m`) puts a synthetic one in its place for tests on
//! machines without a camera, and `HARK_TEST_TILES=N` (benchmarks only) also shows it on N tiles
//! `_test1`..`_testN` as a group call's senders send it, for measuring a grid without eight
//! other people.

use std::sync::{Arc, Mutex};

use hark_engine::camera::{polled_lister, CameraInfo, Webcam};
use hark_engine::engine::VideoConfig;
use hark_engine::video::{CameraSpec, TestPatternSource, VideoSink, VideoSource, Y4mFileSource};
use hark_engine::video_send::{ladder, CameraOpener, VideoResolution};
use hark_frames::{FrameSocket, FrameTiles, SELF_TILE};
use hark_protocol::UserId;

use crate::api::{FrameSocketInfo, Settings};

/// The origins the app's own page has (Linux and macOS; Windows and Android).
const APP_ORIGINS: [&str; 2] = ["tauri://localhost", "http://tauri.localhost"];

/// The frame socket and its tiles, owned by [`crate::AppState`].
pub struct AppVideo {
    /// Every tile's newest picture.
    pub tiles: FrameTiles,
    /// Where the page finds the socket; `None` if it could not be bound (calls go on without
    /// pictures).
    pub socket: Option<FrameSocketInfo>,
    /// The 1:1 resolution setting, read each time the camera opens (a change of it alone must not
    /// reopen a running camera).
    pub resolution: Arc<Mutex<VideoResolution>>,
    /// The main window's video layer (the call view's pictures drawn over the page).
    pub layer: crate::video_layer::VideoLayer,
}

/// Binds the frame socket (before the window exists).
pub fn bind() -> Option<FrameSocket> {
    match FrameSocket::bind(APP_ORIGINS.iter().map(|&o| o.to_owned()).collect()) {
        Ok(socket) => Some(socket),
        Err(error) => {
            tracing::error!(%error, "no frame socket: video calls will show no pictures");
            None
        }
    }
}

/// Lets the page connect to the socket at `source` (`ws://127.0.0.1:PORT`), and to nothing else.
pub fn allow_in_csp(config: &mut tauri::Config, source: &str) {
    use tauri::utils::config::{Csp, CspDirectiveSources};
    let Some(csp) = config.app.security.csp.as_mut() else { return };
    match csp {
        Csp::DirectiveMap(directives) => {
            // A new connect-src replaces default-src for connections: it starts from it.
            let fallback = directives.get("default-src").cloned().unwrap_or(CspDirectiveSources::List(Vec::new()));
            directives.entry("connect-src".into()).or_insert(fallback).push(source);
        }
        Csp::Policy(policy) => {
            let mut directives: Vec<String> = policy.split(';').map(|d| d.trim().to_owned()).filter(|d| !d.is_empty()).collect();
            let named = |d: &String, name: &str| d.split_whitespace().next() == Some(name);
            match directives.iter_mut().find(|d| named(d, "connect-src")) {
                Some(connect) => connect.push_str(&format!(" {source}")),
                None => {
                    let fallback = directives.iter().find(|d| named(d, "default-src")).map(|d| d["default-src".len()..].trim().to_owned()).unwrap_or_default();
                    directives.push(format!("connect-src {fallback} {source}").replace("  ", " "));
                }
            }
            *policy = directives.join("; ");
        }
    }
}

/// The synthetic camera `HARK_TEST_CAMERA` names, if any.
fn test_camera() -> Option<CameraSpec> {
    let spec = std::env::var("HARK_TEST_CAMERA").ok()?;
    match spec.parse::<CameraSpec>() {
        Ok(spec @ (CameraSpec::TestPattern | CameraSpec::TestClock | CameraSpec::File(_))) => Some(spec),
        _ => {
            tracing::warn!(%spec, "HARK_TEST_CAMERA takes test-pattern, test-clock or file:PATH.y4m; using the real camera");
            None
        }
    }
}

/// The cameras to offer: the machine's, or the synthetic one a test put in their place.
pub fn cameras() -> Vec<CameraInfo> {
    match test_camera() {
        Some(spec) => vec![CameraInfo { index: 0, name: format!("{spec:?}") }],
        None => hark_engine::camera::list(),
    }
}

/// Opens the camera the settings name, asking it for the size 1:1 calls send at when it opens.
pub fn camera_opener(video: &AppVideo, settings: &Settings) -> CameraOpener {
    let resolution = Arc::clone(&video.resolution);
    let top = move || ladder(2, *resolution.lock().unwrap_or_else(|p| p.into_inner()), false).0;
    let device = settings.camera;
    match test_camera() {
        Some(CameraSpec::TestPattern) => Arc::new(move || Ok(Box::new(TestPatternSource::new(top())) as Box<dyn VideoSource>)),
        Some(CameraSpec::TestClock) => Arc::new(move || Ok(Box::new(TestPatternSource::clock(top())) as Box<dyn VideoSource>)),
        Some(CameraSpec::File(path)) => Arc::new(move || Ok(Box::new(Y4mFileSource::open(&path)?) as Box<dyn VideoSource>)),
        _ => Arc::new(move || Ok(Box::new(Webcam::open(device, top())?) as Box<dyn VideoSource>)),
    }
}

/// Where an engine's pictures go and where its camera comes from.
pub fn engine_config(video: &AppVideo, settings: &Settings) -> VideoConfig {
    *video.resolution.lock().unwrap_or_else(|p| p.into_inner()) = settings.video_resolution;
    let (remote, own) = (video.tiles.clone(), video.tiles.clone());
    VideoConfig {
        camera: Some(camera_opener(video, settings)),
        sinks: Arc::new(move |user: &UserId, _| Box::new(remote.remote_sink(user)) as Box<dyn VideoSink>),
        preview: Arc::new(move || match test_tiles() {
            0 => Box::new(own.sink(SELF_TILE)) as Box<dyn VideoSink>,
            n => Box::new(PreviewWithTestTiles { own: own.sink(SELF_TILE), grid: (1..=n).map(|i| own.sink(&format!("_test{i}"))).collect(), pictures: 0 }),
        }),
        resolution: settings.video_resolution,
        // A synthetic camera has no hot-plug to watch.
        cameras: test_camera().is_none().then(polled_lister),
    }
}

/// How many test tiles `HARK_TEST_TILES` asks for (at most nine, a grid's).
fn test_tiles() -> usize {
    std::env::var("HARK_TEST_TILES").ok().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0).min(9)
}

/// Our camera on our tile and on the test tiles, as the ladder sends from five people: 320x180,
/// every other picture of a 30 fps camera (15 fps), scaled once for all of them, and only while
/// a page shows them.
struct PreviewWithTestTiles {
    own: hark_frames::TileSink,
    grid: Vec<hark_frames::TileSink>,
    pictures: u64,
}

impl VideoSink for PreviewWithTestTiles {
    fn write_frame(&mut self, frame: &hark_video::I420Frame) {
        self.own.write_frame(frame);
        self.pictures += 1;
        if self.pictures % 2 == 0 && self.grid.iter().any(hark_frames::TileSink::is_shown) {
            let (format, _) = ladder(9, VideoResolution::P360, false);
            let small = frame.scaled(format.width, format.height);
            self.grid.iter_mut().for_each(|tile| tile.write_frame(&small));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_allows_exactly_the_frame_socket() {
        let mut config: tauri::Config = serde_json::from_str(include_str!("../tauri.conf.json")).unwrap();
        allow_in_csp(&mut config, "ws://127.0.0.1:40123");
        let csp = config.app.security.csp.unwrap().to_string();
        let connect = csp.split(';').map(str::trim).find(|d| d.starts_with("connect-src")).unwrap();
        assert_eq!(connect, "connect-src ipc: http://ipc.localhost ws://127.0.0.1:40123");
        assert!(!csp.contains("ws://127.0.0.1:*") && !csp.contains("ws:;"), "no wildcard: {csp}");

        let policy = |text: &str| {
            let mut config = tauri::Config::default();
            config.app.security.csp = Some(tauri::utils::config::Csp::Policy(text.into()));
            allow_in_csp(&mut config, "ws://127.0.0.1:1");
            config.app.security.csp.unwrap().to_string()
        };
        assert_eq!(policy("default-src 'self'; connect-src ipc:"), "default-src 'self'; connect-src ipc: ws://127.0.0.1:1");
        // No connect-src: one is made from default-src, which it replaces for connections.
        assert_eq!(policy("default-src 'self' ipc:; img-src data:"), "default-src 'self' ipc:; img-src data:; connect-src 'self' ipc: ws://127.0.0.1:1");
        // A directive merely named like it is not it.
        assert_eq!(policy("default-src 'self'; x-connect-src a"), "default-src 'self'; x-connect-src a; connect-src 'self' ws://127.0.0.1:1");
    }
}
