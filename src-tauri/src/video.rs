//! Video in the app: the frame socket the page reads pictures from, and the engine's camera and
//! video sinks.
//!
//! The socket is bound before the window is built, so the page's CSP can name exactly its port
//! ([`allow_in_csp`]). Remote people's pictures go to the tile named after them and our own
//! camera's to [`hark_frames::SELF_TILE`]; the page shows the tiles it wants ([`hark_frames`]).
//! The camera is the system's default one; `HARK_TEST_CAMERA` (`test-pattern`, `test-clock`,
//! `file:PATH.y4m`) puts a synthetic one in its place for tests on machines without a camera.

use std::sync::Arc;

use hark_engine::camera::{polled_lister, CameraInfo, Webcam};
use hark_engine::engine::VideoConfig;
use hark_engine::video::{CameraSpec, TestPatternSource, VideoSink, VideoSource, Y4mFileSource};
use hark_engine::video_send::{ladder, CameraOpener};
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
            directives.entry("connect-src".into()).or_insert_with(|| CspDirectiveSources::List(Vec::new())).push(source);
        }
        Csp::Policy(policy) => {
            *policy = match policy.find("connect-src") {
                Some(at) => format!("{}connect-src {source} {}", &policy[..at], &policy[at + "connect-src".len()..].trim_start()),
                None => format!("{policy}; connect-src {source}"),
            };
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

/// Opens the camera the settings name, asking it for the size 1:1 calls send at.
pub fn camera_opener(settings: &Settings) -> CameraOpener {
    let top = ladder(2, settings.video_resolution, false).0;
    let device = settings.camera;
    match test_camera() {
        Some(CameraSpec::TestPattern) => Arc::new(move || Ok(Box::new(TestPatternSource::new(top)) as Box<dyn VideoSource>)),
        Some(CameraSpec::TestClock) => Arc::new(move || Ok(Box::new(TestPatternSource::clock(top)) as Box<dyn VideoSource>)),
        Some(CameraSpec::File(path)) => Arc::new(move || Ok(Box::new(Y4mFileSource::open(&path)?) as Box<dyn VideoSource>)),
        _ => Arc::new(move || Ok(Box::new(Webcam::open(device, top)?) as Box<dyn VideoSource>)),
    }
}

/// Where an engine's pictures go and where its camera comes from.
pub fn engine_config(tiles: &FrameTiles, settings: &Settings) -> VideoConfig {
    let (remote, own) = (tiles.clone(), tiles.clone());
    VideoConfig {
        camera: Some(camera_opener(settings)),
        sinks: Arc::new(move |user: &UserId, _| Box::new(remote.sink(user)) as Box<dyn VideoSink>),
        preview: Arc::new(move || Box::new(own.sink(SELF_TILE)) as Box<dyn VideoSink>),
        resolution: settings.video_resolution,
        // A synthetic camera has no hot-plug to watch.
        cameras: test_camera().is_none().then(polled_lister),
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

        let mut policy = tauri::utils::config::Csp::Policy("default-src 'self'; connect-src ipc:".into());
        let mut config = tauri::Config::default();
        config.app.security.csp = Some(policy.clone());
        allow_in_csp(&mut config, "ws://127.0.0.1:1");
        policy = config.app.security.csp.unwrap();
        assert_eq!(policy.to_string(), "default-src 'self'; connect-src ws://127.0.0.1:1 ipc:");
    }
}
