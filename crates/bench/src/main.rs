//! `hark-callbench`: how fast a call starts and how late its audio plays, between two engines in
//! one process (the driver behind `cargo xtask bench call`).
//!
//! It starts a hark-server in process and two engines, `caller` and `callee`, each with a
//! [`ClickSource`] as microphone (a 5 ms 1 kHz burst every 500 ms from each call's first frame,
//! silence between) and a
//! [`ClickDetector`] as speaker. Then, `--calls` times: the caller calls, the callee accepts, both
//! wait for [`EngineEvent::RemoteAudioAvailable`], the call runs `--listen` seconds while clicks go
//! both ways, and the caller hangs up.
//!
//! - **Accept -> first decoded remote audio**: from just before `accept()` to the
//!   `RemoteAudioAvailable` event at each side (time-stamped as it comes out of the event channel).
//! - **Where the time goes**: milestones on the same clock, read from what the stack already logs
//!   (no engine changes): webrtc-rs's signaling-state changes (`have-local-offer` … `stable`), the
//!   ICE agents' `Connected` (`controlling` is the caller, the offerer), `dtls handshake complete`,
//!   hark-engine's `peer connection` state (`connected`, per remote user); the first packet a side
//!   sends is its microphone's first 20 ms tick after its peer connection is up.
//! - **Audio latency**: a click's capture tick (the instant its frame was read from the source)
//!   to its playout tick (the instant the frame carrying it was written to the far speaker), and
//!   the same plus where in that frame it lands (Opus's look-ahead shifts it a few ms).
//!
//! Engines are in one process: one clock, no sound card. The pipeline runs on a 20 ms tick, so
//! these figures move in 20 ms steps with the phase between the two sides' ticks (random per call).
//!
//! The last line of stdout is a JSON report; progress goes to stderr.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hark_engine::audio::{AudioSink, AudioSource, FRAME, SAMPLE_RATE};
use hark_engine::core::CallEvent;
use hark_engine::media::Devices;
use hark_engine::ringtone::SilentOutput;
use hark_engine::signaling::{Credentials, SignalingConfig};
use hark_engine::voice_processing::ProcessingSettings;
use hark_engine::{Engine, EngineConfig, EngineEvent};
use hark_protocol::Media;
use serde_json::json;
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

const USAGE: &str = "usage: hark-callbench [--calls N] [--listen SECONDS] [--no-voice-processing] [--connect-after-answer]

  --calls N                calls to time (default 20)
  --listen SECONDS         seconds each call runs after both sides hear audio, for the click latency (default 3)
  --no-voice-processing    echo cancellation and noise suppression off (on by default, as in a call)
  --connect-after-answer   the person's \"connect only after I answer\": no connection while the call rings";

const PATIENCE: Duration = Duration::from_secs(15);
/// Frames between clicks (500 ms).
const CLICK_EVERY: u32 = 25;
/// Burst length: 5 ms.
const CLICK_SAMPLES: usize = 240;
const CLICK_AMPLITUDE: f64 = 16_000.0;
/// A played sample above this starts a click.
const DETECT_THRESHOLD: i16 = 2_000;
/// Frames after a detection during which nothing new is detected (the burst's tail, ringing).
const REFRACTORY_FRAMES: u32 = 10;
/// A click played later than this after one was sent is not that click.
const MATCH_WITHIN: Duration = Duration::from_millis(450);

// ---------------------------------------------------------------------------------------------
// Milestones from the logs.

#[derive(Debug, Clone, PartialEq)]
enum Mark {
    /// webrtc-rs: `signaling state changed to …`.
    Signaling(String),
    /// An ICE agent reached Connected; `controlling` is the offerer's (the caller's).
    IceConnected { controlling: bool },
    /// A DTLS handshake completed (the side is not in the log line).
    DtlsComplete,
    /// hark-engine: the peer connection to `remote` is connected (ICE and DTLS).
    PeerConnected { remote: String },
}

static MARKS: Mutex<Vec<(Instant, Mark)>> = Mutex::new(Vec::new());

fn mark(mark: Mark) {
    lock(&MARKS).push((Instant::now(), mark));
}

fn take_marks() -> Vec<(Instant, Mark)> {
    std::mem::take(&mut *lock(&MARKS))
}

/// Takes the `log` records of webrtc-rs (rtc, rtc-ice) that carry milestones; drops the rest.
struct MarkLogger;

impl log::Log for MarkLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let target = metadata.target();
        metadata.level() <= log::Level::Debug
            && (target.starts_with("rtc_ice::agent")
                || target == "rtc::peer_connection::internal"
                || target == "rtc::peer_connection::handler::dtls")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        let text = record.args().to_string();
        if target.starts_with("rtc_ice") {
            if text.ends_with("Setting new connection state: Connected") {
                mark(Mark::IceConnected { controlling: text.starts_with("[controlling]") });
            }
        } else if let Some(state) = text.strip_prefix("signaling state changed to ") {
            mark(Mark::Signaling(state.trim().to_owned()));
        } else if text == "dtls handshake complete" {
            mark(Mark::DtlsComplete);
        }
    }

    fn flush(&self) {}
}

static LOGGER: MarkLogger = MarkLogger;

/// Takes hark-engine's `peer connection` debug events (tracing).
struct PeerLayer;

impl<S: tracing::Subscriber> Layer<S> for PeerLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "hark_engine::peer" {
            return;
        }
        #[derive(Default)]
        struct Fields(BTreeMap<&'static str, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(field.name(), format!("{value:?}"));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name(), value.to_owned());
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let fields = fields.0;
        if fields.get("message").map(String::as_str) == Some("peer connection")
            && fields.get("state").map(String::as_str) == Some("connected")
        {
            if let Some(remote) = fields.get("user") {
                mark(Mark::PeerConnected { remote: remote.clone() });
            }
        }
    }
}

fn install_logging() -> Result<()> {
    log::set_logger(&LOGGER).map_err(|e| anyhow::anyhow!("log::set_logger: {e}"))?;
    log::set_max_level(log::LevelFilter::Debug);
    let marks = PeerLayer.with_filter(tracing_subscriber::filter::Targets::new().with_target("hark_engine::peer", tracing::Level::DEBUG));
    let diagnostics = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
    );
    // Not `try_init`: that would also route `log` records into tracing, and `log` is ours.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(marks).with(diagnostics))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Clicks.

/// What one side's microphone and speaker saw during a call.
#[derive(Default)]
struct Probe {
    /// Every microphone tick (a frame read).
    reads: Vec<Instant>,
    /// Ticks whose frame started with a click (at sample 0).
    clicks: Vec<Instant>,
    /// Speaker ticks whose frame held a click: when, and at which sample it starts.
    detections: Vec<(Instant, usize)>,
}

type SharedProbe = Arc<Mutex<Probe>>;

/// A microphone of silence with a 5 ms 1 kHz burst at the start of every 25th frame of a call,
/// counted from the call's first frame. Both sides click at the same moments of their calls, so
/// the far side's click always plays after one's own was captured and cannot pass for its echo.
/// Clicks that drift apart until one side's is captured a little after the other's is played
/// (as when the count ran on across calls) are taken for echo by the echo canceller, whose delay
/// estimator locks onto the periodic clicks, and that side's clicks vanish: a fault of the
/// probe, not of the call.
struct ClickSource {
    probe: SharedProbe,
}

impl AudioSource for ClickSource {
    fn read_frame(&mut self, frame: &mut [i16; FRAME]) {
        let now = Instant::now();
        frame.fill(0);
        let mut probe = lock(&self.probe);
        // The probe is emptied at each call's accept: its reads count this call's frames.
        let click = (probe.reads.len() as u32).is_multiple_of(CLICK_EVERY);
        if click {
            for (i, sample) in frame[..CLICK_SAMPLES].iter_mut().enumerate() {
                let t = i as f64 / f64::from(SAMPLE_RATE);
                *sample = (CLICK_AMPLITUDE * (2.0 * std::f64::consts::PI * 1_000.0 * t).sin()) as i16;
            }
        }
        probe.reads.push(now);
        if click {
            probe.clicks.push(now);
        }
    }
}

/// A speaker that notes where clicks start.
struct ClickDetector {
    probe: SharedProbe,
    quiet_frames: u32,
}

impl AudioSink for ClickDetector {
    fn write_frame(&mut self, frame: &[i16; FRAME]) {
        let now = Instant::now();
        self.quiet_frames = self.quiet_frames.saturating_add(1);
        if self.quiet_frames <= REFRACTORY_FRAMES {
            return;
        }
        if let Some(at) = frame.iter().position(|s| s.unsigned_abs() > DETECT_THRESHOLD.unsigned_abs()) {
            self.quiet_frames = 0;
            lock(&self.probe).detections.push((now, at));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// People.

struct Person {
    name: String,
    engine: Engine,
    events: mpsc::UnboundedReceiver<(Instant, EngineEvent)>,
    probe: SharedProbe,
}

impl Person {
    async fn start(server: &str, name: &str, processing: ProcessingSettings) -> Result<Person> {
        let probe = SharedProbe::default();
        let config = EngineConfig {
            signaling: SignalingConfig {
                server: server.to_owned(),
                credentials: Credentials::Password { user: name.into(), password: "password123".into(), register: true },
                device: format!("{name}-bench"),
                client: "hark-callbench/0".into(),
                extra_roots: Vec::new(),
                proxy: hark_engine::proxy::ProxySetting::Direct,
            },
            udp_addrs: vec!["127.0.0.1:0".into()],
            devices: Devices {
                source: Box::new(ClickSource { probe: Arc::clone(&probe) }),
                sink: Box::new(ClickDetector { probe: Arc::clone(&probe), quiet_frames: REFRACTORY_FRAMES }),
            },
            receive_loss_percent: 0.0,
            policy: hark_engine::CallPolicy::default(),
            video: hark_engine::VideoConfig::none(),
            ring_output: Box::new(SilentOutput),
            processing,
            watch_devices: false,
        };
        let (engine, mut raw) = Engine::start(config);
        // Time-stamp events as they come out of the engine, not when this task gets to them.
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = raw.recv().await {
                if tx.send((Instant::now(), event)).is_err() {
                    break;
                }
            }
        });
        let mut person = Person { name: name.to_owned(), engine, events, probe };
        person.wait_for(|e| matches!(e, EngineEvent::SignedIn { .. })).await?;
        Ok(person)
    }

    /// The first event matching `want` (others are skipped), and when it came.
    async fn wait_for(&mut self, want: impl Fn(&EngineEvent) -> bool) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (at, event) = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("{}: the awaited event did not come within {} s", self.name, PATIENCE.as_secs()))?
                .context("engine stopped")?;
            if let EngineEvent::SignInRefused { code, message } = &event {
                bail!("{}: sign-in refused: {code}: {message}", self.name);
            }
            if want(&event) {
                return Ok(at);
            }
        }
    }

    fn reset_probe(&self) {
        *lock(&self.probe) = Probe::default();
    }
}

// ---------------------------------------------------------------------------------------------
// One call.

/// Milliseconds since accept of each milestone of one call (None: not seen; negative: before
/// accept, on a connection made while the call rang).
#[derive(Debug, Default)]
struct CallTimes {
    caller_call_began: Option<f64>,
    offer_created: Option<f64>,
    offer_applied: Option<f64>,
    answer_created: Option<f64>,
    answer_applied: Option<f64>,
    ice_connected_callee: Option<f64>,
    ice_connected_caller: Option<f64>,
    dtls_first: Option<f64>,
    dtls_second: Option<f64>,
    peer_connected_callee: Option<f64>,
    peer_connected_caller: Option<f64>,
    first_packet_caller: Option<f64>,
    first_packet_callee: Option<f64>,
    audio_callee: f64,
    audio_caller: f64,
    /// Click latencies, ms: tick to tick, and to the click's sample in the played frame.
    tick_latencies: Vec<f64>,
    sample_latencies: Vec<f64>,
    clicks_sent: usize,
    /// How far apart the two sides' 20 ms ticks are (ms, 0–10).
    tick_offset: Option<f64>,
}

fn ms_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1_000.0
    } else {
        -((from - to).as_secs_f64() * 1_000.0)
    }
}

async fn one_call(caller: &mut Person, callee: &mut Person, listen: Duration) -> Result<CallTimes> {
    // Milestones from the invite on: a connection made while the call rings has them before
    // accept (negative times).
    take_marks();
    caller.engine.call(vec![callee.name.clone()], Media::Audio, None, None).await?;
    callee.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await?;
    // Someone takes a moment to answer; whatever the invite set off has settled by then.
    tokio::time::sleep(Duration::from_millis(200)).await;
    caller.reset_probe();
    callee.reset_probe();

    let accepted = Instant::now();
    callee.engine.accept().await?;
    let began = caller.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallBegan { .. }))).await?;
    let callee_name = callee.name.clone();
    let caller_name = caller.name.clone();
    let audio_caller = caller.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { user } if *user == callee_name)).await?;
    let audio_callee = callee.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { user } if *user == caller_name)).await?;
    tokio::time::sleep(listen).await;
    let marks = take_marks();
    let hung_up = Instant::now();
    caller.engine.hangup().await?;
    caller.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await?;
    callee.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await?;

    let since = |at: Instant| ms_between(accepted, at);
    let mut times = CallTimes {
        caller_call_began: Some(since(began)),
        audio_caller: since(audio_caller),
        audio_callee: since(audio_callee),
        ..Default::default()
    };
    let mut stables = Vec::new();
    let mut dtls = Vec::new();
    for (at, m) in &marks {
        let t = Some(since(*at));
        match m {
            Mark::Signaling(s) if s == "have-local-offer" => times.offer_created = times.offer_created.or(t),
            Mark::Signaling(s) if s == "have-remote-offer" => times.offer_applied = times.offer_applied.or(t),
            // The callee's answer makes its side stable first; the caller's side follows when it
            // applies that answer.
            Mark::Signaling(s) if s == "stable" => stables.push(t),
            Mark::Signaling(_) => {}
            Mark::IceConnected { controlling: true } => times.ice_connected_caller = times.ice_connected_caller.or(t),
            Mark::IceConnected { controlling: false } => times.ice_connected_callee = times.ice_connected_callee.or(t),
            Mark::DtlsComplete => dtls.push(t),
            Mark::PeerConnected { remote } if *remote == callee.name => {
                times.peer_connected_caller = times.peer_connected_caller.or(t)
            }
            Mark::PeerConnected { remote } if *remote == caller.name => {
                times.peer_connected_callee = times.peer_connected_callee.or(t)
            }
            Mark::PeerConnected { .. } => {}
        }
    }
    times.answer_created = stables.first().copied().flatten();
    times.answer_applied = stables.get(1).copied().flatten();
    times.dtls_first = dtls.first().copied().flatten();
    times.dtls_second = dtls.get(1).copied().flatten();

    let caller_probe = std::mem::take(&mut *lock(&caller.probe));
    let callee_probe = std::mem::take(&mut *lock(&callee.probe));
    // A side's first packet goes out on its first microphone tick once its connection is up.
    let first_tick_after = |probe: &Probe, after_ms: Option<f64>| {
        let after_ms = after_ms?;
        probe.reads.iter().map(|&r| since(r)).find(|&r| r >= after_ms)
    };
    times.first_packet_caller = first_tick_after(&caller_probe, times.peer_connected_caller);
    times.first_packet_callee = first_tick_after(&callee_probe, times.peer_connected_callee);

    // How far apart the two clocks tick (a tick reads the microphone, then plays, at once).
    if let (Some(&a), Some(&b)) = (caller_probe.reads.last(), callee_probe.reads.last()) {
        let phase = ms_between(a, b).rem_euclid(20.0);
        times.tick_offset = Some(phase.min(20.0 - phase));
    }

    // Clicks sent once the far side hears audio, until 450 ms before the hangup, each matched to
    // the first click the far side played within 450 ms of it (clicks are 500 ms apart).
    for (sender, receiver, heard_from) in [(&caller_probe, &callee_probe, audio_callee), (&callee_probe, &caller_probe, audio_caller)] {
        let window = (heard_from, hung_up - MATCH_WITHIN);
        for &sent in sender.clicks.iter().filter(|&&c| c >= window.0 && c <= window.1) {
            times.clicks_sent += 1;
            let Some(&(played, at)) = receiver.detections.iter().find(|&&(p, _)| p > sent && p <= sent + MATCH_WITHIN) else {
                continue;
            };
            let tick = ms_between(sent, played);
            times.tick_latencies.push(tick);
            times.sample_latencies.push(tick + at as f64 * 1_000.0 / f64::from(SAMPLE_RATE));
        }
    }
    Ok(times)
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn summary(values: impl IntoIterator<Item = f64>) -> serde_json::Value {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let round = |x: Option<f64>| x.map(|x| (x * 100.0).round() / 100.0);
    json!({
        "count": v.len(),
        "p50": round(percentile(&v, 50.0)),
        "p90": round(percentile(&v, 90.0)),
        "min": round(v.first().copied()),
        "max": round(v.last().copied()),
    })
}

/// A phase of one call: from `from` to `to`, each clamped so phases add up to the whole.
fn phase(from: Option<f64>, to: Option<f64>) -> Option<f64> {
    Some((to? - from?).max(0.0))
}

fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.max(b?))
}

/// Where one direction's time went: signaling, ICE, DTLS, first packet, jitter buffer + playout.
/// A step done while the call rang (before accept) takes none of it.
fn phases(t: &CallTimes, sender_connected: Option<f64>, sender_first_packet: Option<f64>, heard: f64) -> [Option<f64>; 5] {
    let signaling_done = t.answer_applied.map(|x| x.max(0.0));
    let ice_done = max_of(t.ice_connected_caller, t.ice_connected_callee).map(|x| x.max(signaling_done.unwrap_or(0.0)));
    let dtls_done = sender_connected.map(|x| x.max(ice_done.unwrap_or(0.0)));
    let first_packet = sender_first_packet.map(|x| x.max(dtls_done.unwrap_or(0.0)));
    [
        phase(Some(0.0), signaling_done),
        phase(signaling_done, ice_done),
        phase(ice_done, dtls_done),
        phase(dtls_done, first_packet),
        phase(first_packet, Some(heard)),
    ]
}

const PHASES: [&str; 5] = ["signaling", "ice", "dtls", "first_packet", "jitter_playout"];

fn report(calls: &[CallTimes], failed: usize, args: &Args) -> serde_json::Value {
    let col = |f: &dyn Fn(&CallTimes) -> Option<f64>| summary(calls.iter().filter_map(f));
    let milestones = json!({
        "caller_call_began": col(&|t| t.caller_call_began),
        "offer_created": col(&|t| t.offer_created),
        "offer_applied": col(&|t| t.offer_applied),
        "answer_created": col(&|t| t.answer_created),
        "answer_applied": col(&|t| t.answer_applied),
        "ice_connected_callee": col(&|t| t.ice_connected_callee),
        "ice_connected_caller": col(&|t| t.ice_connected_caller),
        "dtls_first": col(&|t| t.dtls_first),
        "dtls_second": col(&|t| t.dtls_second),
        "peer_connected_callee": col(&|t| t.peer_connected_callee),
        "peer_connected_caller": col(&|t| t.peer_connected_caller),
        "first_packet_callee": col(&|t| t.first_packet_callee),
        "first_packet_caller": col(&|t| t.first_packet_caller),
    });
    let direction = |heard_by_callee: bool| {
        let mut out = serde_json::Map::new();
        for (i, name) in PHASES.iter().enumerate() {
            let values = calls.iter().filter_map(|t| {
                let p = if heard_by_callee {
                    phases(t, t.peer_connected_caller, t.first_packet_caller, t.audio_callee)
                } else {
                    phases(t, t.peer_connected_callee, t.first_packet_callee, t.audio_caller)
                };
                p[i]
            });
            out.insert((*name).to_owned(), summary(values));
        }
        serde_json::Value::Object(out)
    };
    json!({
        "calls": calls.len(),
        "failed": failed,
        "listen_s": args.listen_s,
        "voice_processing": args.processing != ProcessingSettings::OFF,
        "callee_first_audio_ms": summary(calls.iter().map(|t| t.audio_callee)),
        "caller_first_audio_ms": summary(calls.iter().map(|t| t.audio_caller)),
        "either_first_audio_ms": summary(calls.iter().flat_map(|t| [t.audio_callee, t.audio_caller])),
        "milestones_ms": milestones,
        "phases_callee_ms": direction(true),
        "phases_caller_ms": direction(false),
        "clicks_sent": calls.iter().map(|t| t.clicks_sent).sum::<usize>(),
        "latency_tick_ms": summary(calls.iter().flat_map(|t| t.tick_latencies.iter().copied())),
        "latency_sample_ms": summary(calls.iter().flat_map(|t| t.sample_latencies.iter().copied())),
        "tick_offset_ms": summary(calls.iter().filter_map(|t| t.tick_offset)),
    })
}

// ---------------------------------------------------------------------------------------------

struct Args {
    calls: usize,
    listen_s: f64,
    processing: ProcessingSettings,
    connect_early: bool,
}

fn parse_args() -> Result<Args> {
    let (mut calls, mut listen) = (20usize, 3.0f64);
    let mut processing = ProcessingSettings::default();
    let mut connect_early = true;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-voice-processing" => processing = ProcessingSettings::OFF,
            "--connect-after-answer" => connect_early = false,
            "--calls" => calls = args.next().context("--calls needs a value")?.parse().context("--calls")?,
            "--listen" => listen = args.next().context("--listen needs a value")?.parse().context("--listen")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if calls == 0 || !(listen >= 0.0 && listen.is_finite()) {
        bail!("--calls must be positive and --listen not negative");
    }
    Ok(Args { calls, listen_s: listen, processing, connect_early })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    install_logging()?;
    // Two workers, like the engine tests and a small machine.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let (calls, listen_s) = (args.calls, args.listen_s);
    let dir = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = hark_server::config::Config {
        rate_limits: hark_server::config::RateLimits {
            invites_per_minute: 100_000,
            logins_per_minute: 100_000,
            logins_per_source_per_minute: 100_000,
            registrations_per_minute: 100_000,
            password_hashes_per_second: 100_000,
        },
        ..Default::default()
    };
    let server = hark_server::start(listener, config, dir.path(), Arc::new(hark_server::clock::SystemClock)).await?;
    let base = format!("http://{}", server.addr());
    let mut caller = Person::start(&base, "caller", args.processing).await?;
    let mut callee = Person::start(&base, "callee", args.processing).await?;
    for person in [&caller, &callee] {
        person.engine.set_connect_early(args.connect_early);
    }

    let listen = Duration::from_secs_f64(listen_s);
    let mut times = Vec::new();
    let mut failed = 0;
    for n in 1..=calls {
        match one_call(&mut caller, &mut callee, listen).await {
            Ok(t) => {
                eprintln!(
                    "call {n}/{calls}: first audio at the callee {:.1} ms, at the caller {:.1} ms after accept; {} click latencies, median {}",
                    t.audio_callee,
                    t.audio_caller,
                    t.tick_latencies.len(),
                    summary(t.tick_latencies.iter().copied())["p50"]
                );
                times.push(t);
            }
            Err(e) => {
                failed += 1;
                eprintln!("call {n}/{calls} failed: {e:#}");
                // Start the next one from a clean state.
                let _ = caller.engine.hangup().await;
                let _ = callee.engine.hangup().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                while caller.events.try_recv().is_ok() {}
                while callee.events.try_recv().is_ok() {}
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    caller.engine.stop().await;
    callee.engine.stop().await;
    server.shutdown().await;
    if times.is_empty() {
        bail!("no call completed");
    }
    println!("{}", report(&times, failed, &args));
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 90.0), Some(18.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn a_click_is_detected_where_it_starts() {
        let probe = SharedProbe::default();
        let mut source = ClickSource { probe: Arc::clone(&probe) };
        let mut sink = ClickDetector { probe: Arc::clone(&probe), quiet_frames: REFRACTORY_FRAMES };
        let mut frame = [0i16; FRAME];
        let mut shifted = [0i16; FRAME];
        for _ in 0..(3 * CLICK_EVERY) {
            source.read_frame(&mut frame);
            // Delay by 100 samples, as a codec would.
            shifted.fill(0);
            shifted[100..].copy_from_slice(&frame[..FRAME - 100]);
            sink.write_frame(&shifted);
        }
        let probe = lock(&probe);
        assert_eq!(probe.clicks.len(), 3);
        assert_eq!(probe.clicks[0], probe.reads[0], "a call's first frame clicks");
        assert_eq!(probe.detections.len(), 3);
        // The first sample above the threshold is a few samples into the burst.
        assert!(probe.detections.iter().all(|&(_, at)| (100..110).contains(&at)), "{:?}", probe.detections);
    }

    #[test]
    fn phases_add_up_to_the_first_audio() {
        let t = CallTimes {
            answer_applied: Some(10.0),
            ice_connected_callee: Some(12.0),
            ice_connected_caller: Some(14.0),
            peer_connected_caller: Some(20.0),
            first_packet_caller: Some(25.0),
            audio_callee: 60.0,
            ..Default::default()
        };
        let p = phases(&t, t.peer_connected_caller, t.first_packet_caller, t.audio_callee);
        assert_eq!(p, [Some(10.0), Some(4.0), Some(6.0), Some(5.0), Some(35.0)]);
    }
}
