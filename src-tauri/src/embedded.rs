//! The server built into the app, and the echo test service on it.
//!
//! With no server configured, the app runs a real hark-server in-process on loopback (SQLite in
//! the XDG data folder) and signs the echo service in to it, so a new user can call `echo` in
//! the first minute. The echo account is a service account (never busy, many calls at once) with
//! a password generated on first run and kept owner-only beside the database. The port is 7600
//! when free (so other devices on this machine, hark-cli say, can find it), else any free port;
//! `HARK_EMBEDDED_LISTEN` chooses another.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hark_engine::core::CallEvent;
use hark_engine::echo::EchoLine;
use hark_engine::engine::{Engine, EngineConfig, EngineEvent};
use hark_engine::ringtone::SilentOutput;
use hark_engine::signaling::{Credentials, SignalingConfig};
use hark_engine::voice_processing::ProcessingSettings;
use hark_server::clock::SystemClock;
use hark_server::config::Config;
use hark_server::RunningServer;

/// The echo service's user id.
pub const ECHO_USER: &str = "echo";
/// Echo calls answered at once: one person's app rarely calls echo twice at once, and each line
/// is an engine of its own (a few MiB).
const ECHO_LINES: usize = 1;
/// An echo call ends by itself after this long.
const ECHO_MAX_CALL: Duration = Duration::from_secs(600);

/// Why the built-in server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No port to listen on.
    #[error("could not listen on {0}: {1}")]
    Listen(String, std::io::Error),
    /// The data folder or the echo password.
    #[error("{0}")]
    Files(std::io::Error),
    /// The server refused to start.
    #[error("the built-in server did not start: {0}")]
    Start(#[from] hark_server::StartError),
}

/// The running built-in server and echo service.
pub struct EmbeddedServer {
    server: RunningServer,
    echo: Vec<Engine>,
}

impl EmbeddedServer {
    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// Stops the echo lines, then the server (which ends live calls and writes their records).
    pub async fn shutdown(self) {
        for line in &self.echo {
            line.stop().await;
        }
        self.server.shutdown().await;
    }
}

/// Starts the server in `data_dir` and the echo service on it.
pub async fn start(data_dir: &Path) -> Result<EmbeddedServer, EmbeddedError> {
    std::fs::create_dir_all(data_dir).map_err(EmbeddedError::Files)?;
    let listener = bind().await?;
    let config = Config { service_accounts: vec![ECHO_USER.to_owned()], ..Config::default() };
    let server = hark_server::start(listener, config, data_dir, Arc::new(SystemClock)).await?;
    let password = echo_password(data_dir).map_err(EmbeddedError::Files)?;
    let url = format!("http://{}", server.addr());
    tracing::info!(%url, "built-in server listening");
    let echo = (1..=ECHO_LINES).map(|line| start_echo_line(&url, &password, line)).collect();
    Ok(EmbeddedServer { server, echo })
}

async fn bind() -> Result<tokio::net::TcpListener, EmbeddedError> {
    if let Ok(address) = std::env::var("HARK_EMBEDDED_LISTEN") {
        return tokio::net::TcpListener::bind(&address).await.map_err(|e| EmbeddedError::Listen(address, e));
    }
    match tokio::net::TcpListener::bind("127.0.0.1:7600").await {
        Ok(listener) => Ok(listener),
        Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| EmbeddedError::Listen("127.0.0.1:0".into(), e)),
    }
}

fn start_echo_line(url: &str, password: &str, line: usize) -> Engine {
    let echo_line = EchoLine::default();
    // Video too: the caller's own picture comes back a second later (a test call shows that
    // the camera works, as the sound shows the microphone does).
    let echo_video = hark_engine::echo::EchoVideo::default();
    let (camera, sink) = (echo_video.clone(), echo_video);
    let video = hark_engine::VideoConfig {
        camera: Some(std::sync::Arc::new(move || Ok(camera.camera()))),
        sinks: std::sync::Arc::new(move |_: &hark_protocol::UserId, _| sink.sink()),
        preview: hark_engine::engine::no_preview(),
        resolution: hark_engine::video_send::VideoResolution::P360,
        cameras: None,
    };
    let (engine, events) = Engine::start(EngineConfig {
        signaling: SignalingConfig {
            server: url.to_owned(),
            credentials: Credentials::Password { user: ECHO_USER.into(), password: password.to_owned(), register: true },
            device: format!("echo-line-{line}"),
            client: concat!("hark-desktop-echo/", env!("CARGO_PKG_VERSION")).into(),
            extra_roots: Vec::new(),
            proxy: hark_engine::proxy::ProxySetting::Direct,
        },
        // Loopback first: the app's own engine calls echo inside this machine.
        udp_addrs: vec!["127.0.0.1:0".into(), "0.0.0.0:0".into()],
        devices: echo_line.devices(),
        ring_output: Box::new(SilentOutput),
        processing: ProcessingSettings::OFF,
        watch_devices: false,
        receive_loss_percent: 0.0,
        policy: hark_engine::CallPolicy::default(),
        video,
    });
    tokio::spawn(answer_calls(engine.clone(), events));
    engine
}

/// Answers every call that rings this line, one at a time, hanging up after [`ECHO_MAX_CALL`].
async fn answer_calls(engine: Engine, mut events: tokio::sync::mpsc::UnboundedReceiver<EngineEvent>) {
    while let Some(event) = events.recv().await {
        if !matches!(event, EngineEvent::Call(CallEvent::IncomingCall { .. })) {
            continue;
        }
        // Another line may have taken it; the core then reports it handled elsewhere.
        if engine.accept().await.is_err() {
            continue;
        }
        let call_over = async {
            while let Some(event) = events.recv().await {
                if matches!(event, EngineEvent::Call(CallEvent::CallEnded { .. } | CallEvent::NotConnected { .. })) {
                    return;
                }
            }
        };
        if tokio::time::timeout(ECHO_MAX_CALL, call_over).await.is_err() {
            let _ = engine.hangup().await;
        }
    }
}

/// The echo account's password: made once from the OS's random source, kept owner-only.
fn echo_password(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("echo.password");
    if let Ok(password) = std::fs::read_to_string(&path) {
        if !password.trim().is_empty() {
            return Ok(password.trim().to_owned());
        }
    }
    use rand::Rng;
    let password: String = rand::rngs::OsRng.sample_iter(&rand::distributions::Alphanumeric).take(32).map(char::from).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options.open(&path)?.write_all(password.as_bytes())?;
    Ok(password)
}
