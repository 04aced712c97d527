//! `hark-cli`: a headless Hark client on hark-engine, and the echo test service.
//!
//! Every command signs in first (a password, traded for a token; `--register` creates the
//! account if needed), then runs to completion. Events go to stdout, as JSON lines with `--json`
//! and as short sentences otherwise; diagnostics go to stderr. Media devices are chosen by spec:
//! `--mic default|tone:FREQ|file:PATH|silence`, `--speaker default|record:PATH.wav|none`,
//! `--camera default|/dev/videoN|test-pattern|file:PATH.y4m|none`, `--video-out record:PATH.y4m|none`.
//! Options may come before or after the command (`hark-cli call bob --mic tone:440`).


use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hark_engine::audio::{sink_from_spec, source_from_spec};
use hark_engine::core::CallEvent;
use hark_engine::media::Devices;
use hark_engine::sound_card::{MicrophoneSource, SpeakerSink};
use hark_engine::media_watchdog::MediaLinkState;
use hark_engine::voice_processing::ProcessingSettings;
use hark_engine::ringtone::{RingtoneChoice, RingtoneKind, RodioOutput, SilentOutput};
use hark_engine::signaling::{Credentials, SignalingConfig};
use hark_engine::video::{clock_stamp_age, clock_stamp_now, CameraSpec, NoVideo, TestPatternSource, VideoFormat, VideoOutSpec, VideoSink, VideoSource, Y4mFileSource, Y4mRecorder};
use hark_engine::camera::Webcam;
use hark_engine::video_send::{ladder, CameraOpener, VideoResolution};
use hark_engine::{Engine, EngineConfig, EngineEvent, VideoConfig};
use hark_protocol::{Media, PresenceStatus};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Parser)]
#[command(name = "hark-cli", version, about = "Headless Hark client")]
struct Cli {
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:7600")]
    server: String,
    /// User id (the echo service defaults to `echo`).
    #[arg(long, global = true)]
    user: Option<String>,
    /// Password.
    #[arg(long, global = true)]
    password: Option<String>,
    /// Create the account first if it does not exist.
    #[arg(long, global = true)]
    register: bool,
    /// Events as JSON lines.
    #[arg(long, global = true)]
    json: bool,
    /// Microphone: default, tone:FREQ, file:PATH (48 kHz WAV), silence.
    #[arg(long, global = true, default_value = "default")]
    mic: String,
    /// Speaker: default, record:PATH.wav, none.
    #[arg(long, global = true, default_value = "default")]
    speaker: String,
    /// Local addresses for media; repeat to bind several. 127.0.0.1:0 is needed for calls on one
    /// machine, since 0.0.0.0:0 leaves loopback out.
    #[arg(long, global = true, default_values_t = ["0.0.0.0:0".to_string(), "127.0.0.1:0".to_string()])]
    bind: Vec<String>,
    /// This device's id (defaults to one derived from the user and the host).
    #[arg(long, global = true)]
    device: Option<String>,
    /// Echo cancellation and noise suppression on, even for a synthetic microphone (they are on
    /// by default only for `--mic default`).
    #[arg(long, global = true, conflicts_with = "no_voice_processing")]
    voice_processing: bool,
    /// Echo cancellation and noise suppression off.
    #[arg(long, global = true)]
    no_voice_processing: bool,
    /// Also trust this root certificate (PEM) for an https:// server (repeatable).
    #[arg(long, global = true)]
    trust_root: Vec<std::path::PathBuf>,
    /// Reach the server through this HTTP proxy (http://[user:password@]host[:port], CONNECT
    /// for the WebSocket), or `none`; by default HTTPS_PROXY or HTTP_PROXY, with NO_PROXY.
    #[arg(long, global = true, default_value = "")]
    proxy: String,
    /// A custom incoming ringtone (WAV, OGG, MP3, FLAC); the bundled one otherwise.
    #[arg(long, global = true)]
    ringtone: Option<std::path::PathBuf>,
    /// Camera for video calls: default (the first camera), /dev/videoN (see `hark-cli cameras`),
    /// test-pattern (a moving picture stamped with its frame number), test-clock (the same,
    /// stamped with the time it was made), file:PATH.y4m (4:2:0, played in real time, looped),
    /// none.
    #[arg(long, global = true, default_value = "none")]
    camera: String,
    /// Where the others' video goes: record:PATH.y4m (one file per person in a group call,
    /// PATH-USER.y4m), count (decoded, counted and said at the end, not kept), latency (capture ->
    /// decoded of a test-clock camera on this machine, said at the end), none.
    #[arg(long, global = true, default_value = "none")]
    video_out: String,
    /// With `--video-out count`: say the far side's video is shown in a WxH view (as a window
    /// would show it, fitted), so it sends no more pixels than that (`video_size`, PROTOCOL.md).
    #[arg(long, global = true, value_parser = parse_view_size)]
    video_shown: Option<(u32, u32)>,
    /// Send 1280x720 in 1:1 video calls (640x360 otherwise).
    #[arg(long, global = true)]
    hd: bool,
    /// Connect only after a call is answered: a call that rings here is not connected to its
    /// caller (who would learn this machine's addresses) before you answer, and calls placed
    /// from here do not ask ringing devices to connect. Answers then take a moment longer.
    #[arg(long, global = true)]
    connect_after_answer: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Calls one or more people and stays until the call ends.
    Call {
        /// Whom.
        users: Vec<String>,
        /// A video call.
        #[arg(long)]
        video: bool,
        /// Ring for this many seconds.
        #[arg(long)]
        timeout: Option<u32>,
        /// Hang up after this many seconds of connection.
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Waits for the next incoming call.
    Answer {
        /// Answer without asking.
        #[arg(long)]
        auto: bool,
        /// Decline instead.
        #[arg(long)]
        reject: bool,
        /// Keep serving calls.
        #[arg(long = "loop")]
        repeat: bool,
        /// Hang up after this many seconds of connection.
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Lists recent calls.
    History {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Shows whether people are online.
    Status {
        /// Whom.
        users: Vec<String>,
    },
    /// Writes the moving test picture, each frame stamped with its number, as a 4:2:0 Y4M file
    /// (for a browser's fake camera, or `--camera file:`); needs no server.
    TestPattern {
        /// Where.
        path: std::path::PathBuf,
        /// Width x height.
        #[arg(long, default_value = "640x360")]
        size: String,
        /// Frames.
        #[arg(long, default_value_t = 300)]
        frames: u32,
        /// Frames per second (written in the header).
        #[arg(long, default_value_t = 30)]
        fps: u32,
    },
    /// Lists the cameras (the first is the default); needs no server.
    Cameras,
    /// Runs the echo test service: answers every call, plays a prompt, then plays back what it
    /// hears one second later, for up to five minutes a call, several calls at once.
    Echo {
        /// Calls served at once.
        #[arg(long, default_value_t = 4)]
        lines: usize,
        /// Longest call, in seconds.
        #[arg(long, default_value_t = 300)]
        max_call: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let printer = Printer { json: cli.json };
    match &cli.command {
        Command::Cameras => {
            let cameras = hark_engine::camera::list();
            let printer = Printer { json: cli.json };
            if cli.json {
                printer.write(&serde_json::json!({ "event": "cameras", "cameras": cameras }).to_string());
            } else if cameras.is_empty() {
                printer.write("no camera found");
            } else {
                for camera in &cameras {
                    printer.write(&format!("{}  {}", camera.path(), camera.name));
                }
            }
            Ok(())
        }
        Command::TestPattern { path, size, frames, fps } => {
            let (width, height) = width_by_height(size).filter(|(w, h)| *w > 0 && *h > 0).with_context(|| format!("--size {size:?}: give WIDTHxHEIGHT"))?;
            let mut writer = hark_video::y4m::Y4mWriter::create(path, width, height, *fps)?;
            for n in 0..*frames {
                writer.write_frame(&hark_video::pattern::draw(width, height, n))?;
            }
            writer.flush()?;
            Ok(())
        }
        Command::Echo { lines, max_call } => echo_service(&cli, &printer, *lines, Duration::from_secs(*max_call)).await,
        Command::Call { users, video, timeout, duration } => {
            let (engine, mut events) = sign_in(&cli, &printer, devices(&cli)?, video_config(&cli)?, None).await?;
            let media = if *video { Media::Video } else { Media::Audio };
            engine.call(users.clone(), media, *timeout, None).await?;
            let connected = follow_call(&engine, &mut events, &printer, duration.map(Duration::from_secs_f64)).await;
            engine.stop().await;
            if connected {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Answer { auto, reject, repeat, duration } => {
            let (engine, mut events) = sign_in(&cli, &printer, devices(&cli)?, video_config(&cli)?, None).await?;
            loop {
                wait_for_incoming(&mut events, &printer).await?;
                if *reject {
                    engine.reject().await?;
                } else if *auto || ask("Answer? [Y/n] ")? {
                    engine.accept().await?;
                    follow_call(&engine, &mut events, &printer, duration.map(Duration::from_secs_f64)).await;
                } else {
                    engine.reject().await?;
                }
                if !*repeat {
                    break;
                }
            }
            engine.stop().await;
            Ok(())
        }
        Command::History { limit } => {
            let (engine, _events) = sign_in(&cli, &printer, silent_devices(), VideoConfig::none(), None).await?;
            for record in engine.history(None, Some(*limit)).await? {
                printer.line(
                    &serde_json::to_value(&record)?,
                    &format!(
                        "{} {:?} {} {:?} {:?} {} s{}",
                        record.call_id,
                        record.direction,
                        record.caller,
                        record.media,
                        record.result,
                        record.duration_s,
                        if record.end_reason == Some(hark_protocol::EndReason::Failed) { ", dropped" } else { "" }
                    ),
                );
            }
            Ok(())
        }
        Command::Status { users } => {
            let (engine, _events) = sign_in(&cli, &printer, silent_devices(), VideoConfig::none(), None).await?;
            for (user, status) in engine.presence(users.clone()).await? {
                let word = match status {
                    PresenceStatus::Online => "online",
                    PresenceStatus::Offline => "offline",
                    PresenceStatus::Unregistered => "unregistered",
                };
                printer.line(&serde_json::json!({"user": user, "status": word}), &format!("{user}: {word}"));
            }
            Ok(())
        }
    }
}

/// Starts an engine and waits until it is signed in.
async fn sign_in(
    cli: &Cli,
    printer: &Printer,
    devices: Devices,
    video: VideoConfig,
    device: Option<String>,
) -> anyhow::Result<(Engine, UnboundedReceiver<EngineEvent>)> {
    let is_echo = matches!(cli.command, Command::Echo { .. });
    let user = cli.user.clone().or_else(|| is_echo.then(|| "echo".to_owned()));
    let Some(user) = user else { bail!("--user is required") };
    let Some(password) = cli.password.clone() else { bail!("--password is required") };
    let device = device.or_else(|| cli.device.clone()).unwrap_or_else(|| format!("cli-{user}-{}", std::process::id()));
    let config = EngineConfig {
        signaling: SignalingConfig {
            server: cli.server.clone(),
            credentials: Credentials::Password { user, password, register: cli.register },
            device,
            client: format!("hark-cli/{}", env!("CARGO_PKG_VERSION")),
            extra_roots: cli.trust_root.clone(),
            proxy: hark_engine::proxy::ProxySetting::from_text(&cli.proxy),
        },
        udp_addrs: cli.bind.clone(),
        devices,
        receive_loss_percent: 0.0,
        policy: hark_engine::CallPolicy::default(),
        video,
        // Ring on the sound card only when audio goes to it; headless runs stay quiet.
        ring_output: if cli.speaker == "default" { Box::new(RodioOutput::new()) } else { Box::new(SilentOutput) },
        watch_devices: cli.mic == "default" || cli.speaker == "default",
        // A room needs cleaning; a tone, a file or the echo service's playback does not (and a
        // suppressor would learn a steady tone as noise).
        processing: if cli.voice_processing || (cli.mic == "default" && !cli.no_voice_processing && !is_echo) {
            ProcessingSettings::default()
        } else {
            ProcessingSettings::OFF
        },
    };
    let (engine, mut events) = Engine::start(config);
    engine.set_connect_early(!cli.connect_after_answer);
    if let Some(path) = &cli.ringtone {
        engine.set_ringtone(RingtoneKind::Incoming, RingtoneChoice::Custom(path.clone())).await?;
    }
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .context("no answer from the server in 30 s")?
            .context("the engine stopped")?;
        printer.event(&event);
        match event {
            EngineEvent::SignedIn { .. } => return Ok((engine, events)),
            EngineEvent::SignInRefused { code, message } => bail!("sign-in refused: {code}: {message}"),
            _ => {}
        }
    }
}

/// Prints events until the current call ends; true if it had connected. With `hang_up_after`,
/// hangs up that long after it connected.
async fn follow_call(engine: &Engine, events: &mut UnboundedReceiver<EngineEvent>, printer: &Printer, hang_up_after: Option<Duration>) -> bool {
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut connected = false;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                deadline = None;
                if let Err(e) = engine.hangup().await {
                    eprintln!("hangup: {e}");
                }
                continue;
            }
        };
        let Some(event) = event else { return connected };
        printer.event(&event);
        match event {
            EngineEvent::Call(CallEvent::CallBegan { .. }) => {
                connected = true;
                deadline = hang_up_after.map(|after| tokio::time::Instant::now() + after);
            }
            EngineEvent::Call(CallEvent::CallEnded { .. }) => return true,
            EngineEvent::Call(CallEvent::NotConnected { .. }) => return false,
            _ => {}
        }
    }
}

async fn wait_for_incoming(events: &mut UnboundedReceiver<EngineEvent>, printer: &Printer) -> anyhow::Result<()> {
    while let Some(event) = events.recv().await {
        printer.event(&event);
        if matches!(event, EngineEvent::Call(CallEvent::IncomingCall { .. })) {
            return Ok(());
        }
    }
    bail!("the engine stopped")
}

/// The echo service: `lines` engines on one account (a service account on the server, so it is
/// never busy), each answering whatever rings while it is free.
async fn echo_service(cli: &Cli, printer: &Printer, lines: usize, max_call: Duration) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for line in 1..=lines.max(1) {
        let device = format!("echo-line-{line}");
        let echo_line = hark_engine::echo::EchoLine::default();
        let echo_video = hark_engine::echo::EchoVideo::default();
        let (camera, sink) = (echo_video.clone(), echo_video);
        let video = VideoConfig {
            camera: Some(Arc::new(move || Ok(camera.camera()))),
            sinks: Arc::new(move |_: &hark_protocol::UserId, _| sink.sink()),
            preview: hark_engine::engine::no_preview(),
            resolution: VideoResolution::P360,
            cameras: None,
        };
        let (engine, events) = sign_in(cli, printer, echo_line.devices(), video, Some(device)).await?;
        let printer = Printer { json: printer.json };
        tasks.push(tokio::spawn(serve_echo_line(engine, events, printer, max_call)));
    }
    for task in tasks {
        task.await?;
    }
    Ok(())
}

async fn serve_echo_line(engine: Engine, mut events: UnboundedReceiver<EngineEvent>, printer: Printer, max_call: Duration) {
    loop {
        if wait_for_incoming(&mut events, &printer).await.is_err() {
            return;
        }
        // Another line may have taken it; the core then reports it handled elsewhere.
        if engine.accept().await.is_ok() {
            follow_call(&engine, &mut events, &printer, Some(max_call)).await;
        }
    }
}

fn devices(cli: &Cli) -> anyhow::Result<Devices> {
    let source: Box<dyn hark_engine::audio::AudioSource> = match cli.mic.as_str() {
        "default" => Box::new(MicrophoneSource::open(None).context("opening the microphone (try --mic tone:440 or silence)")?),
        spec => source_from_spec(spec)?,
    };
    let sink: Box<dyn hark_engine::audio::AudioSink> = match cli.speaker.as_str() {
        "default" => Box::new(SpeakerSink::open(None).context("opening the speaker (try --speaker none or record:PATH.wav)")?),
        spec => sink_from_spec(spec)?,
    };
    Ok(Devices { source, sink })
}

/// The largest picture a call asks of the camera (1:1, so the camera is opened once per call
/// at the size the ladder starts from; smaller steps are scaled from it).
fn ladder_top(resolution: VideoResolution) -> VideoFormat {
    ladder(2, resolution, false).0
}

/// The camera and video sinks the options name.
fn video_config(cli: &Cli) -> anyhow::Result<VideoConfig> {
    let resolution = if cli.hd { VideoResolution::P720 } else { VideoResolution::P360 };
    let camera: Option<CameraOpener> = match cli.camera.parse::<CameraSpec>()? {
        CameraSpec::None => None,
        CameraSpec::TestPattern => Some(Arc::new(|| Ok(Box::new(TestPatternSource::new(VideoFormat::DEFAULT)) as Box<dyn VideoSource>))),
        CameraSpec::TestClock => Some(Arc::new(|| Ok(Box::new(TestPatternSource::clock(VideoFormat::DEFAULT)) as Box<dyn VideoSource>))),
        CameraSpec::File(path) => {
            // Checked now, so a bad file is an error at the start rather than in the call.
            Y4mFileSource::open(&path)?;
            Some(Arc::new(move || Ok(Box::new(Y4mFileSource::open(&path)?) as Box<dyn VideoSource>)))
        }
        CameraSpec::Default => Some(Arc::new(move || Ok(Box::new(Webcam::open(None, ladder_top(resolution))?) as Box<dyn VideoSource>))),
        CameraSpec::Device(index) => Some(Arc::new(move || Ok(Box::new(Webcam::open(Some(index), ladder_top(resolution))?) as Box<dyn VideoSource>))),
    };
    // A real camera is watched for hot-plug (said with --json); synthetic ones have nothing to watch.
    let real_camera = matches!(cli.camera.parse::<CameraSpec>()?, CameraSpec::Default | CameraSpec::Device(_));
    let cameras: Option<hark_engine::engine::CameraLister> = real_camera.then(hark_engine::camera::polled_lister);
    let out: VideoOutSpec = cli.video_out.parse()?;
    let json = cli.json;
    let view = cli.video_shown;
    if view.is_some() && out != VideoOutSpec::Count {
        anyhow::bail!("--video-shown says how large the counted video is shown: use it with --video-out count");
    }
    let sinks = Arc::new(move |user: &hark_protocol::UserId, group: bool| match (&out, out.path_for(user, group)) {
        (_, Some(path)) => Box::new(Y4mRecorder::new(&path, 30)) as Box<dyn VideoSink>,
        (VideoOutSpec::Count, None) => Box::new(FrameCount { user: user.clone(), frames: 0, size: (0, 0), view, printer: Printer { json } }) as Box<dyn VideoSink>,
        (VideoOutSpec::Latency, None) => Box::new(FrameLatency { user: user.clone(), ages_ms: Vec::new(), unread: 0, printer: Printer { json } }) as Box<dyn VideoSink>,
        _ => Box::new(NoVideo) as Box<dyn VideoSink>,
    });
    Ok(VideoConfig { camera, sinks, preview: hark_engine::engine::no_preview(), resolution, cameras })
}

/// `WIDTHxHEIGHT`, as `--size` and `--video-shown` take it.
fn width_by_height(text: &str) -> Option<(u32, u32)> {
    text.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
}

/// `--video-shown WxH`: two sides, each from 2 to 7680.
fn parse_view_size(text: &str) -> Result<(u32, u32), String> {
    match width_by_height(text) {
        Some((w, h)) if (2..=7680).contains(&w) && (2..=7680).contains(&h) => Ok((w, h)),
        _ => Err(format!("'{text}' is not a view size: use WIDTHxHEIGHT, e.g. 640x360")),
    }
}

/// `--video-out count`: counts one person's decoded pictures and says how many when their video
/// ends (a line per person per call).
struct FrameCount {
    user: hark_protocol::UserId,
    frames: u64,
    size: (u32, u32),
    /// `--video-shown`: the view the pictures are said to be shown in.
    view: Option<(u32, u32)>,
    printer: Printer,
}

impl VideoSink for FrameCount {
    fn write_frame(&mut self, frame: &hark_video::I420Frame) {
        self.frames += 1;
        self.size = (frame.width(), frame.height());
    }

    fn shown_at(&self, width: u32, height: u32) -> Option<(u32, u32)> {
        self.view.map(|view| hark_engine::video::fitted_to_view(width, height, view, false))
    }

    fn finish(&mut self) {
        let (user, frames, (width, height)) = (&self.user, self.frames, self.size);
        let json = serde_json::json!({"event": "video_frames", "user": user, "frames": frames, "width": width, "height": height});
        self.printer.line(&json, &format!("decoded {frames} frames of {user}'s video ({width}x{height})"));
    }
}

/// `--video-out latency`: reads the capture time a `test-clock` camera stamped on each of one
/// person's pictures as it is decoded, and says the p50 and p90 of capture -> decoded when their
/// video ends (the sender must be on this machine's clock).
struct FrameLatency {
    user: hark_protocol::UserId,
    ages_ms: Vec<u32>,
    unread: u64,
    printer: Printer,
}

impl VideoSink for FrameLatency {
    fn write_frame(&mut self, frame: &hark_video::I420Frame) {
        let now = clock_stamp_now();
        match hark_video::pattern::read_number(frame) {
            Some(stamp) => self.ages_ms.push(clock_stamp_age(stamp, now)),
            None => self.unread += 1,
        }
    }

    fn finish(&mut self) {
        self.ages_ms.sort_unstable();
        let at = |q: f64| self.ages_ms.get(((self.ages_ms.len() as f64 - 1.0) * q).round().max(0.0) as usize).copied();
        let (p50, p90, frames, unread, user) = (at(0.5), at(0.9), self.ages_ms.len(), self.unread, &self.user);
        let json = serde_json::json!({"event": "video_latency", "user": user, "frames": frames, "unread": unread, "p50_ms": p50, "p90_ms": p90});
        let text = match (p50, p90) {
            (Some(p50), Some(p90)) => format!("{user}'s video: capture -> decoded p50 {p50} ms, p90 {p90} ms over {frames} frames"),
            _ => format!("{user}'s video: no clock-stamped frames ({unread} unread)"),
        };
        self.printer.line(&json, &text);
    }
}

fn silent_devices() -> Devices {
    Devices { source: Box::new(hark_engine::audio::SilenceSource), sink: Box::new(hark_engine::audio::NullSink) }
}

fn ask(question: &str) -> anyhow::Result<bool> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(!answer.trim().eq_ignore_ascii_case("n"))
}

/// Writes events to stdout, as JSON lines or as sentences.
#[derive(Clone, Copy)]
struct Printer {
    json: bool,
}

impl Printer {
    fn event(&self, event: &EngineEvent) {
        if self.json {
            self.write(&serde_json::to_string(event).unwrap_or_default());
            return;
        }
        let text = match event {
            EngineEvent::SignedIn { user, resumed: false } => format!("signed in as {user}"),
            EngineEvent::SignedIn { resumed: true, .. } => "reconnected".to_owned(),
            EngineEvent::SignalingLost { reason, .. } => format!("connection lost ({reason}); reconnecting"),
            EngineEvent::SignInRefused { code, message } => format!("sign-in refused: {code}: {message}"),
            EngineEvent::Call(CallEvent::IncomingCall { caller, media, .. }) => format!("{caller} is calling ({media:?})"),
            EngineEvent::Call(CallEvent::Dialing { invitees, .. }) => format!("ringing {}", invitees.join(", ")),
            EngineEvent::Call(CallEvent::CallBegan { .. }) => "connected".to_owned(),
            EngineEvent::Call(CallEvent::CallEnded { reason, duration_s, .. }) => format!("call ended ({reason:?}) after {duration_s} s"),
            EngineEvent::Call(CallEvent::NotConnected { reason, .. }) => format!("not connected: {reason:?}"),
            EngineEvent::Call(CallEvent::UserJoined { user }) => format!("{user} joined"),
            EngineEvent::Call(CallEvent::UserLeft { user }) => format!("{user} left"),
            EngineEvent::Call(CallEvent::UserRejected { user }) => format!("{user} declined"),
            EngineEvent::Call(CallEvent::UserBusy { user }) => format!("{user} is busy"),
            EngineEvent::Call(CallEvent::UserNoResponse { user }) => format!("{user} did not answer"),
            EngineEvent::Call(CallEvent::Error { code, message }) => format!("error: {code}: {message}"),
            EngineEvent::RemoteAudioAvailable { user } => format!("hearing {user}"),
            EngineEvent::ConnectedWhileRinging { user } => format!("connected to {user} while it rings; answering starts audio at once"),
            EngineEvent::MediaLink { user, state: MediaLinkState::Reconnecting } => format!("nothing arrives from {user}; reconnecting"),
            EngineEvent::MediaLink { user, state: MediaLinkState::Connected } => format!("{user}'s media arrives again"),
            EngineEvent::MediaLink { user, state: MediaLinkState::Lost } => format!("nothing from {user} for {} s: media lost; still trying", hark_engine::media_watchdog::LOST_AFTER.as_secs()),
            EngineEvent::FirstRemoteVideoFrame { user } => format!("seeing {user}"),
            EngineEvent::RemoteVideoAvailable { user } => format!("{user}'s video on"),
            EngineEvent::RemoteVideoUnavailable { user } => format!("{user}'s video off"),
            EngineEvent::RemoteVideoUndecodable { user, message } => format!("{user}'s video cannot be decoded: {message}"),
            EngineEvent::CameraStarted { camera } => format!("camera on: {camera}"),
            EngineEvent::CameraError { message } => format!("camera: {message}"),
            EngineEvent::CameraListChanged { cameras } => {
                let names: Vec<String> = cameras.iter().map(|c| format!("{} ({})", c.name, c.path())).collect();
                format!("cameras: {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") })
            }
            EngineEvent::RingtonePlaying { kind, source } => format!("ringing ({kind}): {source}"),
            EngineEvent::RingtoneFailed { message, .. } => format!("ringtone: {message}"),
            EngineEvent::DeviceFallback { direction, error: None } => format!("the {direction} device went away; using the default"),
            EngineEvent::DeviceFallback { direction, error: Some(e) } => format!("the {direction} device went away and the default failed: {e}"),
            // Levels and quality are too chatty for people; JSON carries them.
            _ => return,
        };
        self.write(&text);
    }

    fn line(&self, json: &serde_json::Value, text: &str) {
        self.write(&if self.json { json.to_string() } else { text.to_owned() });
    }

    fn write(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
