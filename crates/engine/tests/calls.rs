//! Engines calling each other through a real hark-server on loopback, with real webrtc-rs peer
//! connections and Opus; synthetic microphones play tones and the far end's recording is checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hark_engine::audio::{goertzel_power, AudioSink, ToneSource, FRAME};
use hark_engine::core::{CallEvent, CallState, NotConnectedReason};
use hark_engine::media::Devices;
use hark_engine::ringtone::{CaptureOutput, RingtoneChoice, RingtoneKind};
use hark_engine::voice_processing::ProcessingSettings;
use hark_engine::proxy::{HttpProxy, ProxyError, ProxySetting};
use hark_engine::signaling::{Credentials, SignalingConfig, SignalingError};
use hark_engine::policy::Forbidden;
use hark_engine::{CallPolicy, Engine, EngineConfig, EngineError, EngineEvent};
use hark_protocol::{CallResult, EndReason, Media};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

use common::PATIENCE;

/// A speaker that keeps what it plays, for the test to analyse.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<i16>>>);

impl AudioSink for Capture {
    fn write_frame(&mut self, frame: &[i16; FRAME]) {
        self.0.lock().unwrap().extend_from_slice(frame);
    }
}

impl Capture {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn last(&self, samples: usize) -> Vec<i16> {
        let all = self.0.lock().unwrap();
        all[all.len().saturating_sub(samples)..].to_vec()
    }
}

/// How a person reaches the server: extra trusted roots, and the proxy.
#[derive(Default)]
struct Access {
    extra_roots: Vec<std::path::PathBuf>,
    proxy: ProxySetting,
}

struct Person {
    engine: Engine,
    events: UnboundedReceiver<EngineEvent>,
    heard: Capture,
    /// What the ringtone player played.
    rung: Arc<Mutex<Vec<i16>>>,
}

impl Person {
    async fn start(server: &str, user: &str, tone: f64) -> Person {
        Person::start_with_loss(server, user, tone, 0.0).await
    }

    async fn start_on(server: &str, user: &str, device: &str, tone: f64) -> Person {
        Person::launch(server, user, device, tone, 0.0, Access::default(), CallPolicy::default()).await
    }

    async fn start_with_loss(server: &str, user: &str, tone: f64, loss: f64) -> Person {
        Person::launch(server, user, &format!("{user}-test"), tone, loss, Access::default(), CallPolicy::default()).await
    }

    /// One person under an administrator's policy.
    async fn start_under(server: &str, user: &str, tone: f64, policy: CallPolicy) -> Person {
        Person::launch(server, user, &format!("{user}-test"), tone, 0.0, Access::default(), policy).await
    }

    async fn launch(server: &str, user: &str, device: &str, tone: f64, loss: f64, access: Access, policy: CallPolicy) -> Person {
        let heard = Capture::default();
        let ring_output = CaptureOutput::new();
        let rung = ring_output.recording();
        let config = EngineConfig {
            signaling: SignalingConfig {
                server: server.to_owned(),
                credentials: Credentials::Password { user: user.into(), password: "password123".into(), register: true },
                device: device.to_owned(),
                client: "engine-tests/0".into(),
                extra_roots: access.extra_roots,
                proxy: access.proxy,
            },
            udp_addrs: vec!["127.0.0.1:0".into()],
            devices: Devices { source: Box::new(ToneSource::new(tone)), sink: Box::new(heard.clone()) },
            receive_loss_percent: loss,
            policy,
            video: hark_engine::VideoConfig::none(),
            ring_output: Box::new(ring_output),
            watch_devices: false,
            // Synthetic tones are not rooms: the noise suppressor would learn a steady tone as
            // noise. Processing is tested on its own (voice_processing) and below with it on.
            processing: ProcessingSettings::OFF,
        };
        let (engine, events) = Engine::start(config);
        let mut person = Person { engine, events, heard, rung };
        person.wait_for(|e| matches!(e, EngineEvent::SignedIn { .. })).await;
        person
    }

    /// The first event matching `want`, skipping others; fails after PATIENCE.
    async fn wait_for(&mut self, want: impl Fn(&EngineEvent) -> bool) -> EngineEvent {
        common::wait_for(&mut self.events, want).await
    }

    /// Waits until `seconds` more of audio have been played out.
    async fn listen(&self, seconds: f64) {
        let want = self.heard.len() + (seconds * 48_000.0) as usize;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.heard.len() < want {
            assert!(tokio::time::Instant::now() < deadline, "playout stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn start_server() -> (hark_server::RunningServer, String, tempfile::TempDir) {
    start_server_with(Default::default()).await
}

/// A hark-server on loopback with `config`, its base URL and its data folder.
async fn start_server_with(config: hark_server::config::Config) -> (hark_server::RunningServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, config, dir.path(), Arc::new(hark_server::clock::SystemClock)).await.unwrap();
    let base = format!("http://{}", server.addr());
    (server, base, dir)
}

/// Power of `wanted` over the last second, and of `unwanted`, per 100 ms window.
fn tone_windows(samples: &[i16], wanted: f64, unwanted: f64) -> Vec<(f64, f64)> {
    samples.chunks(4_800).map(|w| (goertzel_power(w, wanted), goertzel_power(w, unwanted))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_hear_each_others_tone_and_hang_up_with_a_server_duration() {
    let (_server, base, _dir) = start_server().await;
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;

    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    let incoming = bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    assert!(matches!(incoming, EngineEvent::Call(CallEvent::IncomingCall { ref caller, .. }) if caller == "alice"));
    bob.wait_for(|e| *e == EngineEvent::Ringtone { action: "incoming" }).await;
    bob.engine.accept().await.unwrap();
    bob.wait_for(|e| *e == EngineEvent::Ringtone { action: "stop" }).await;
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallBegan { .. }))).await;
    assert_eq!(alice.engine.state().await.unwrap(), CallState::Connected);

    alice.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { user } if user == "bob")).await;
    bob.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { user } if user == "alice")).await;
    alice.listen(1.5).await;
    bob.listen(1.5).await;

    for (who, heard, wanted, own) in [("alice", &alice.heard, 880.0, 440.0), ("bob", &bob.heard, 440.0, 880.0)] {
        let windows = tone_windows(&heard.last(48_000), wanted, own);
        for (i, (far, near)) in windows.iter().enumerate() {
            assert!(*far > 1e-3, "{who} window {i}: far tone too weak ({far:e})");
            assert!(*far > 100.0 * near, "{who} window {i}: own tone too loud ({far:e} vs {near:e})");
        }
    }
    let level = bob.wait_for(|e| matches!(e, EngineEvent::VoiceLevel { .. })).await;
    assert!(matches!(level, EngineEvent::VoiceLevel { level, .. } if level > 50), "{level:?}");

    alice.engine.hangup().await.unwrap();
    let ended = alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    let EngineEvent::Call(CallEvent::CallEnded { reason, duration_s, .. }) = ended else { unreachable!() };
    assert_eq!(reason, EndReason::Hangup);
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::UserLeft { .. }))).await;
    let ended = bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    assert!(matches!(ended, EngineEvent::Call(CallEvent::CallEnded { duration_s: d, .. }) if d == duration_s));
    assert_eq!(bob.engine.state().await.unwrap(), CallState::Idle);

    for person in [&alice, &bob] {
        let records = person.engine.history(None, None).await.unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!((records[0].result, records[0].duration_s), (CallResult::Completed, duration_s));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_busy_and_cancel_reach_the_right_events() {
    let (_server, base, _dir) = start_server().await;
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    let mut carol = Person::start(&base, "carol", 660.0).await;

    // Bob picks a ringtone of his own; a corrupt one is refused and the default stays.
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.mp3");
    std::fs::write(&corrupt, b"ID3 but not really an mp3 at all").unwrap();
    assert!(bob.engine.set_ringtone(RingtoneKind::Incoming, RingtoneChoice::Custom(corrupt)).await.is_err());
    bob.wait_for(|e| matches!(e, EngineEvent::RingtoneFailed { .. })).await;
    let custom = dir.path().join("mine.wav");
    write_tone_wav(&custom, 1234.0);
    bob.engine.set_ringtone(RingtoneKind::Incoming, RingtoneChoice::Custom(custom.clone())).await.unwrap();

    // Reject.
    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    let playing = bob.wait_for(|e| matches!(e, EngineEvent::RingtonePlaying { .. })).await;
    assert_eq!(playing, EngineEvent::RingtonePlaying { kind: "incoming", source: format!("custom:{}", custom.display()) });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while bob.rung.lock().unwrap().len() < 4_800 {
        assert!(tokio::time::Instant::now() < deadline, "the ringtone did not play");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(goertzel_power(&bob.rung.lock().unwrap()[..4_800], 1234.0) > 1e-3, "not the chosen file");
    bob.engine.reject().await.unwrap();
    bob.wait_for(|e| *e == EngineEvent::RingtoneStopped).await;
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::UserRejected { .. }))).await;
    let e = alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::Rejected, .. })));

    // Cancel.
    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::Dialing { .. }))).await;
    alice.engine.hangup().await.unwrap();
    // The ringing stops the moment the call is cancelled, then the call is reported.
    bob.wait_for(|e| *e == EngineEvent::Ringtone { action: "stop" }).await;
    let e = bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::Cancelled, .. })));

    // Busy: bob is in a call with alice when carol calls.
    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    bob.engine.accept().await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallBegan { .. }))).await;
    carol.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    carol.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::UserBusy { .. }))).await;
    let e = carol.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::Busy, .. })));
    assert_eq!(bob.engine.state().await.unwrap(), CallState::Connected);
    bob.engine.hangup().await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;

    // Commands in the wrong state are refused.
    assert!(carol.engine.accept().await.is_err());
    assert!(carol.engine.hangup().await.is_err());
}

/// Connects `caller` to `callees` (each accepts) and waits until every pair hears the other.
async fn connect(caller: &mut Person, callees: &mut [&mut Person], names: &[&str]) {
    assert_eq!(callees.len() + 1, names.len(), "names: the caller's, then each callee's");
    let to: Vec<String> = names[1..].iter().map(|n| n.to_string()).collect();
    caller.engine.call(to, Media::Audio, None, None).await.unwrap();
    for callee in callees.iter_mut() {
        callee.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
        callee.engine.accept().await.unwrap();
        callee.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallBegan { .. }))).await;
    }
}

fn assert_hears(who: &str, heard: &Capture, wanted: &[f64], unwanted: f64, seconds: f64, min_share: f64) {
    let samples = heard.last((seconds * 48_000.0) as usize);
    let windows: Vec<&[i16]> = samples.chunks(4_800).collect();
    for &tone in wanted {
        let good = windows
            .iter()
            .filter(|w| {
                let far = goertzel_power(w, tone);
                far > 1e-4 && far > 30.0 * goertzel_power(w, unwanted)
            })
            .count();
        let share = good as f64 / windows.len() as f64;
        assert!(share >= min_share, "{who}: {tone} Hz heard in {:.0} % of 100 ms windows", share * 100.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_three_each_hears_both_others() {
    let (_server, base, _dir) = start_server().await;
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 660.0).await;
    let mut carol = Person::start(&base, "carol", 880.0).await;
    connect(&mut alice, &mut [&mut bob, &mut carol], &["alice", "bob", "carol"]).await;
    // Each person hears both others (mesh: bob joined before carol, so bob offered to her).
    for (person, others) in [(&mut alice, ["bob", "carol"]), (&mut bob, ["alice", "carol"]), (&mut carol, ["alice", "bob"])] {
        // In whichever order they come.
        let mut pending: Vec<&str> = others.to_vec();
        while !pending.is_empty() {
            let event = person.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;
            let EngineEvent::RemoteAudioAvailable { user } = event else { unreachable!() };
            pending.retain(|p| *p != user);
        }
    }
    for person in [&alice, &bob, &carol] {
        person.listen(1.2).await;
    }
    assert_hears("alice", &alice.heard, &[660.0, 880.0], 440.0, 1.0, 1.0);
    assert_hears("bob", &bob.heard, &[440.0, 880.0], 660.0, 1.0, 1.0);
    assert_hears("carol", &carol.heard, &[440.0, 660.0], 880.0, 1.0, 1.0);

    // One leaves; the other two go on.
    carol.engine.hangup().await.unwrap();
    // Carol's part ends with her own duration although the call goes on.
    carol.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::UserLeft { user }) if user == "carol")).await;
    assert_eq!(alice.engine.state().await.unwrap(), CallState::Connected);
    bob.engine.hangup().await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_packet_loss_still_carries_the_tone() {
    let (_server, base, _dir) = start_server().await;
    let mut alice = Person::start_with_loss(&base, "alice", 440.0, 10.0).await;
    let mut bob = Person::start_with_loss(&base, "bob", 880.0, 10.0).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    alice.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;
    bob.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;
    alice.listen(3.2).await;
    bob.listen(3.2).await;
    assert_hears("alice", &alice.heard, &[880.0], 440.0, 3.0, 0.95);
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 3.0, 0.95);
    alice.engine.hangup().await.unwrap();
}

/// A TCP relay in front of the server whose connections the test can cut, as a network outage
/// would; new connections still go through.
struct CuttableProxy {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<u32>,
}

impl CuttableProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = tokio::sync::watch::channel(0u32);
        let cuts = cut.subscribe();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {} // both sockets drop here
                    }
                });
            }
        });
        CuttableProxy { addr, cut }
    }

    fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_signaling_socket_does_not_stop_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, Default::default(), dir.path(), Arc::new(hark_server::clock::SystemClock)).await.unwrap();
    let proxy = CuttableProxy::start(server.addr()).await;
    let base = format!("http://{}", proxy.addr);
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    bob.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;

    proxy.cut_all();
    bob.wait_for(|e| matches!(e, EngineEvent::SignalingLost { kicked: None, .. })).await;
    // Audio keeps flowing peer to peer while signaling is down and coming back.
    bob.listen(1.2).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 1.0, 1.0);
    bob.wait_for(|e| matches!(e, EngineEvent::SignedIn { resumed: true, .. })).await;
    alice.wait_for(|e| matches!(e, EngineEvent::SignedIn { resumed: true, .. })).await;
    assert_eq!(bob.engine.state().await.unwrap(), CallState::Connected, "resynced into the same call");
    bob.listen(0.6).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 0.5, 1.0);

    // An ICE restart from either side renegotiates without a gap worth hearing.
    bob.engine.restart_ice();
    bob.listen(0.6).await;
    alice.engine.restart_ice();
    bob.listen(1.0).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 1.5, 0.9);
    let quality = bob.wait_for(|e| matches!(e, EngineEvent::NetworkQuality { .. })).await;
    assert!(matches!(quality, EngineEvent::NetworkQuality { loss_percent, weak: false, .. } if loss_percent < 5.0), "{quality:?}");
    // A clean path on this machine scores near the E-model's best (R 93.2, MOS 4.41).
    assert!(matches!(quality, EngineEvent::NetworkQuality { r_factor, mos, .. } if r_factor > 85.0 && mos > 4.2), "{quality:?}");

    // Signaling works again: the hangup reaches alice through the server.
    bob.engine.hangup().await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    // Each side's record keeps how the call sounded to it: the engine sends it as the call ends.
    for (who, person) in [("alice", &alice), ("bob", &bob)] {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let record = loop {
            let records = person.engine.history(None, Some(1)).await.unwrap();
            match records.first() {
                Some(record) if record.quality.is_some() => break record.clone(),
                other => assert!(std::time::Instant::now() < deadline, "{who}'s record has no quality: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let quality = record.quality.unwrap();
        assert!(quality.mos_worst <= quality.mos_average && quality.mos_average > 4.0, "{who}: {quality:?}");
        assert_eq!(record.end_reason, Some(hark_protocol::EndReason::Hangup), "{who}");
    }
    // A server that stops says so: the engine tells the app why it lost the connection.
    server.shutdown().await;
    alice.wait_for(|e| matches!(e, EngineEvent::SignalingLost { kicked: Some(hark_protocol::KickReason::Shutdown), .. })).await;
}

/// Signaling through a real HTTP proxy (tinyproxy, which wants a password) to a TLS server, as
/// from an office whose only way out is its proxy: a wrong password is said as the proxy's
/// refusal (never as the account's); with the right one both people sign in (the login and the
/// WebSocket each through a CONNECT tunnel, TLS end to end), call and hear each other; and with
/// the proxy gone, signaling is lost: it went through nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_goes_through_an_http_proxy() {
    let (server, base, cert, _dir) = tls_server().await;
    let proxy = Tinyproxy::start("BasicAuth hark s3cret\n");
    let through = |password: &str| Access {
        extra_roots: vec![cert.clone()],
        proxy: ProxySetting::Http(format!("http://hark:{password}@127.0.0.1:{}", proxy.port)),
    };

    let refused = hark_engine::signaling::log_in(&base, &[cert.clone()], &through("wrong").proxy, "alice", "password123").await;
    assert!(matches!(&refused, Err(SignalingError::Transient(message)) if message.contains("the proxy would not open a tunnel")), "{refused:?}");
    for credentials in ["", "hark:wrong@"] {
        let refusing = HttpProxy::parse(&format!("http://{credentials}127.0.0.1:{}", proxy.port)).unwrap();
        let tunnel = refusing.tunnel("localhost", server.addr().port()).await;
        assert!(matches!(tunnel, Err(ProxyError::NeedsCredentials(_))), "{credentials:?}: {tunnel:?}");
    }

    let mut alice = Person::launch(&base, "alice", "alice-proxied", 440.0, 0.0, through("s3cret"), CallPolicy::default()).await;
    let mut bob = Person::launch(&base, "bob", "bob-proxied", 880.0, 0.0, through("s3cret"), CallPolicy::default()).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    bob.listen(1.0).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 1.0, 0.9);
    let tunnels = proxy.log().lines().filter(|line| line.contains(&format!("CONNECT localhost:{}", server.addr().port()))).count();
    assert!(tunnels >= 4, "two logins and two WebSockets through the proxy, saw {tunnels}:\n{}", proxy.log());

    drop(proxy);
    alice.wait_for(|e| matches!(e, EngineEvent::SignalingLost { .. })).await;
    server.shutdown().await;
}

/// A tinyproxy for one test, on a loopback port, with `config` added to its configuration.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start(config: &str) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let file = dir.path().join("tinyproxy.conf");
        let log = dir.path().join("tinyproxy.log");
        std::fs::write(&file, format!("Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 60\nMaxClients 50\nLogLevel Info\nLogFile \"{}\"\n{config}", log.display())).unwrap();
        let child = std::process::Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tinyproxy (Debian package tinyproxy) runs; `cargo xtask test` installs it");
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "tinyproxy never listened on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tinyproxy { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log")).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coturn started for one test, with the TURN REST shared secret.
struct Coturn {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The shared secret between the tests' coturn and hark-server.
const TURN_SECRET: &str = "turn-shared-secret";

impl Coturn {
    /// A server configuration that hands this coturn out over UDP, under the server's default
    /// policy (direct media allowed).
    fn udp_for_everyone(&self) -> hark_server::config::Config {
        hark_server::config::Config {
            turn: Some(hark_server::config::TurnConfig { urls: vec![format!("turn:127.0.0.1:{}?transport=udp", self.port)], secret: TURN_SECRET.into(), ttl_s: 600 }),
            ..Default::default()
        }
    }

    fn start(secret: &str) -> Coturn {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = std::process::Command::new("turnserver")
            .args(["-n", "-L", "127.0.0.1", "-E", "127.0.0.1", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers"])
            .args(["--use-auth-secret", &format!("--static-auth-secret={secret}"), "--realm=hark", "--log-file=stdout"])
            .args(["-p", &port.to_string(), "--min-port", "49400", "--max-port", "49600"])
            .arg(format!("--pidfile={}", dir.path().join("turn.pid").display()))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("turnserver (Debian package coturn) runs; `cargo xtask test` installs it");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("turnserver exited before it was ready").unwrap();
            if line.contains("Total General servers") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Coturn { child, port, _dir: dir }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_calls_connect_through_coturn() {
    let turn = Coturn::start(TURN_SECRET);
    let config = hark_server::config::Config {
        turn: Some(hark_server::config::TurnConfig {
            // TURN over TCP and TLS too, as a server for every client would hand out: the engine
            // gathers over UDP and TCP, and TLS to a port where nothing listens costs the call
            // nothing.
            urls: vec![format!("turn:127.0.0.1:{}?transport=udp", turn.port), format!("turn:127.0.0.1:{}?transport=tcp", turn.port), "turns:127.0.0.1:5349".into()],
            secret: TURN_SECRET.into(),
            ttl_s: 600,
        }),
        ice_transport_policy: hark_protocol::IceTransportPolicy::Relay,
        ..Default::default()
    };
    let (server, base, _dir) = start_server_with(config).await;
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    for person in [&mut alice, &mut bob] {
        let quality = person.wait_for(|e| matches!(e, EngineEvent::NetworkQuality { .. })).await;
        assert!(matches!(quality, EngineEvent::NetworkQuality { relayed: true, .. }), "selected pair is not a relay: {quality:?}");
    }
    bob.listen(1.2).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 1.0, 1.0);
    alice.engine.hangup().await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    server.shutdown().await;
}

/// A relay-only policy holds on a server that allows direct media: the person under it
/// connects through coturn all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_policy_overrides_a_server_that_allows_direct_media() {
    let turn = Coturn::start(TURN_SECRET);
    let config = turn.udp_for_everyone();
    assert_eq!(config.ice_transport_policy, hark_protocol::IceTransportPolicy::All);
    let (server, base, _dir) = start_server_with(config).await;
    let mut alice = Person::start_under(&base, "alice", 440.0, CallPolicy { relay_only: true, ..CallPolicy::default() }).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    let quality = alice.wait_for(|e| matches!(e, EngineEvent::NetworkQuality { .. })).await;
    assert!(matches!(quality, EngineEvent::NetworkQuality { relayed: true, .. }), "alice's pair is not a relay: {quality:?}");
    bob.listen(1.2).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 1.0, 1.0);
    alice.engine.hangup().await.unwrap();
    server.shutdown().await;
}

fn forbidden(result: Result<(), EngineError>) -> Forbidden {
    match result {
        Err(EngineError::Command(hark_engine::core::CommandError::Forbidden(what))) => what,
        other => panic!("not refused by policy: {other:?}"),
    }
}

/// The engine enforces a policy whatever its caller asks: no video call, no camera, no
/// invitations, no ringtone file, no relay-only call without a relay; a video call is answered
/// as audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_enforces_a_policy_whatever_it_is_asked() {
    let (server, base, dir) = start_server().await;
    let strict = CallPolicy { video: false, invite_more: false, relay_only: false, custom_ringtones: false };
    let mut alice = Person::start_under(&base, "alice", 440.0, strict).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    let _carol = Person::start(&base, "carol", 660.0).await;
    assert_eq!(forbidden(alice.engine.call(vec!["bob".into()], Media::Video, None, None).await), Forbidden::Video);
    assert_eq!(forbidden(alice.engine.set_camera(true).await), Forbidden::Video);
    alice.engine.set_camera(false).await.expect("turning the camera off is always allowed");
    let wav = dir.path().join("mine.wav");
    write_tone_wav(&wav, 500.0);
    for refused in [alice.engine.set_ringtone(RingtoneKind::Incoming, RingtoneChoice::Custom(wav.clone())).await, alice.engine.preview_ringtone(RingtoneChoice::Custom(wav)).await] {
        assert_eq!(refused.map_err(|e| e.code()), Err(hark_engine::ringtone::RingtoneErrorCode::RingtoneForbidden));
    }
    alice.engine.set_ringtone(RingtoneKind::Incoming, RingtoneChoice::Bundled("classic".into())).await.expect("bundled sounds stay allowed");
    assert_eq!(alice.engine.state().await.unwrap(), CallState::Idle, "nothing refused started a call");

    // Bob's video call is answered as audio: it goes down to audio for both.
    bob.engine.call(vec!["alice".into()], Media::Video, None, None).await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    alice.engine.accept().await.unwrap();
    let began = alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallBegan { .. }))).await;
    assert!(matches!(began, EngineEvent::Call(CallEvent::CallBegan { media: Media::Audio, .. })), "{began:?}");
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::MediaChanged { media: Media::Audio }))).await;
    assert_eq!(forbidden(alice.engine.invite_more(vec!["carol".into()]).await), Forbidden::InviteMore);
    bob.engine.invite_more(vec!["carol".into()]).await.expect("bob has no policy");
    alice.listen(1.0).await;
    assert_hears("alice", &alice.heard, &[880.0], 440.0, 0.8, 0.9);
    alice.engine.hangup().await.unwrap();

    // Relay-only on a server that offers no relay: refused before anything is sent.
    let dave = Person::start_under(&base, "dave", 300.0, CallPolicy { relay_only: true, ..CallPolicy::default() }).await;
    assert_eq!(forbidden(dave.engine.call(vec!["bob".into()], Media::Audio, None, None).await), Forbidden::NoRelay);
    assert_eq!(dave.engine.state().await.unwrap(), CallState::Idle);
    server.shutdown().await;
}

fn write_tone_wav(path: &std::path::Path, frequency: f64) {
    let mut recorder = hark_engine::audio::WavRecorder::create(path).unwrap();
    let mut tone = ToneSource::new(frequency);
    let mut frame = [0i16; FRAME];
    for _ in 0..50 {
        hark_engine::audio::AudioSource::read_frame(&mut tone, &mut frame);
        recorder.write_frame(&frame);
    }
    recorder.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_timeout_and_answered_elsewhere() {
    // The server's ring timers run on a manual clock: the test rings out a call without waiting.
    let dir = tempfile::tempdir().unwrap();
    let clock = hark_server::clock::ManualClock::new(1_767_225_600_000);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, Default::default(), dir.path(), clock.clone()).await.unwrap();
    let base = format!("http://{}", server.addr());
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;

    alice.engine.call(vec!["bob".into()], Media::Audio, Some(5), None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::Dialing { .. }))).await;
    clock.advance(5_000);
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::UserNoResponse { .. }))).await;
    let e = alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::NoAnswer, .. })), "{e:?}");
    let e = bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::NoAnswer, .. })), "{e:?}");

    // Bob on a second device answers; the first one stops ringing.
    let mut bob_phone = Person::start_on(&base, "bob", "bob-phone", 880.0).await;
    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    bob_phone.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    bob_phone.engine.accept().await.unwrap();
    let e = bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::HandledElsewhere, .. })), "{e:?}");
    bob_phone.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;
    assert_eq!(bob.engine.state().await.unwrap(), CallState::Idle);
    bob_phone.engine.hangup().await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muting_and_deleting_records() {
    let (_server, base, _dir) = start_server().await;
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    bob.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;
    bob.listen(0.5).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 0.4, 1.0);

    // Alice mutes her microphone: bob hears silence (after what was already in flight).
    alice.engine.mute_microphone(true);
    // The engine says so, and its call snapshot (what a window opening now replays) agrees.
    let said = alice.wait_for(|e| matches!(e, EngineEvent::Mutes { .. })).await;
    assert_eq!(said, EngineEvent::Mutes { microphone: true, speaker: false });
    let snapshot = alice.engine.call_snapshot();
    assert!(snapshot.mutes.microphone && snapshot.placed_or_answered, "{snapshot:?}");
    assert!(snapshot.events.iter().any(|e| matches!(e, CallEvent::CallBegan { .. })), "{snapshot:?}");
    bob.listen(0.6).await;
    let quiet = bob.heard.last(9_600);
    assert!(goertzel_power(&quiet, 440.0) < 1e-6, "muted audio still heard: {:e}", goertzel_power(&quiet, 440.0));
    alice.engine.mute_microphone(false);
    bob.listen(0.6).await;
    assert_hears("bob", &bob.heard, &[440.0], 880.0, 0.2, 1.0);

    // With echo cancellation and noise suppression on at both ends, the call still carries the
    // tone (the suppressor takes a steady tone for noise, so it is quieter, not gone).
    alice.engine.set_processing(ProcessingSettings::default());
    bob.engine.set_processing(ProcessingSettings::default());
    bob.listen(1.0).await;
    let processed = bob.heard.last(24_000);
    assert!(goertzel_power(&processed, 440.0) > 1e-5, "{:e}", goertzel_power(&processed, 440.0));
    alice.engine.set_processing(ProcessingSettings::OFF);
    bob.engine.set_processing(ProcessingSettings::OFF);

    // Alice picks another microphone mid-call: bob hears the new one.
    alice.engine.set_microphone(Box::new(ToneSource::new(550.0)));
    bob.listen(0.6).await;
    assert_hears("bob", &bob.heard, &[550.0], 440.0, 0.3, 1.0);

    // Bob mutes all remote audio: his speaker plays silence.
    bob.engine.mute_speaker(true);
    bob.listen(0.3).await;
    assert!(bob.heard.last(4_800).iter().all(|&s| s == 0));

    alice.engine.hangup().await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    // The call's end lifts bob's mute (each call starts unmuted) and empties the snapshot.
    let lifted = bob.wait_for(|e| matches!(e, EngineEvent::Mutes { .. })).await;
    assert_eq!(lifted, EngineEvent::Mutes { microphone: false, speaker: false });
    assert_eq!(bob.engine.call_snapshot(), hark_engine::call_log::CallSnapshot::default());
    let records = bob.engine.history(None, None).await.unwrap();
    assert_eq!(records.len(), 1);
    bob.engine.delete_records(vec![records[0].call_id.clone()]).await.unwrap();
    assert!(bob.engine.history(None, None).await.unwrap().is_empty());
    assert_eq!(alice.engine.history(None, None).await.unwrap().len(), 1, "alice's history is hers");
}

/// A server that terminates TLS with a certificate of its own CA, its base URL and that CA's
/// certificate (which the engines are told to trust).
async fn tls_server() -> (hark_server::RunningServer, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, signed.cert.pem()).unwrap();
    std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
    let config = hark_server::config::Config {
        tls: Some(hark_server::config::TlsConfig { cert: cert.clone(), key }),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, config, &dir.path().join("data"), Arc::new(hark_server::clock::SystemClock)).await.unwrap();
    let base = format!("https://localhost:{}", server.addr().port());
    (server, base, cert, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_calling_over_tls() {
    let (server, base, cert, _dir) = tls_server().await;
    let trusted = || Access { extra_roots: vec![cert.clone()], ..Access::default() };
    let mut alice = Person::launch(&base, "alice", "alice-tls", 440.0, 0.0, trusted(), CallPolicy::default()).await;
    let mut bob = Person::launch(&base, "bob", "bob-tls", 880.0, 0.0, trusted(), CallPolicy::default()).await;
    connect(&mut alice, &mut [&mut bob], &["alice", "bob"]).await;
    bob.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })).await;
    alice.engine.hangup().await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;

    // Without trusting that CA, signing in fails on the certificate, never in plain text.
    let config = EngineConfig {
        signaling: SignalingConfig {
            server: base.clone(),
            credentials: Credentials::Password { user: "carol".into(), password: "password123".into(), register: true },
            device: "carol-tls".into(),
            client: "engine-tests/0".into(),
            extra_roots: Vec::new(),
            proxy: ProxySetting::Direct,
        },
        udp_addrs: vec!["127.0.0.1:0".into()],
        devices: Devices { source: Box::new(ToneSource::new(660.0)), sink: Box::new(Capture::default()) },
        receive_loss_percent: 0.0,
        policy: hark_engine::CallPolicy::default(),
        video: hark_engine::VideoConfig::none(),
        ring_output: Box::new(CaptureOutput::new()),
        watch_devices: false,
        processing: ProcessingSettings::OFF,
    };
    let (_engine, mut events) = Engine::start(config);
    let event = tokio::time::timeout(PATIENCE, events.recv()).await.unwrap().unwrap();
    assert!(matches!(&event, EngineEvent::SignalingLost { reason, .. } if reason.contains("certificate") || reason.contains("Certificate")), "{event:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_device_id_takes_over_without_a_fight() {
    let (_server, base, _dir) = start_server().await;
    let mut first = Person::start_on(&base, "alice", "alice-laptop", 440.0).await;
    let mut second = Person::start_on(&base, "alice", "alice-laptop", 440.0).await;
    let refused = first.wait_for(|e| matches!(e, EngineEvent::SignInRefused { .. })).await;
    assert!(matches!(refused, EngineEvent::SignInRefused { code: hark_protocol::ErrorCode::InvalidState, .. }), "{refused:?}");
    // The newer one stays signed in: a barrier query goes through, and no second take-over comes.
    assert!(second.engine.history(None, None).await.is_ok());
    let bob = Person::start(&base, "bob", 880.0).await;
    bob.engine.call(vec!["alice".into()], Media::Audio, None, None).await.unwrap();
    second.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_of_more_people_than_one_request_may_name() {
    let (_server, base, dir) = start_server().await;
    let store = hark_server::store::Store::open(dir.path()).await.unwrap();
    let people: Vec<String> = (0..(hark_protocol::MAX_USERS_GET + 15)).map(|n| format!("person{n}")).collect();
    for person in &people {
        store.create_user(person, None, Some(&person.to_uppercase()), 0).await.unwrap();
    }
    let alice = Person::start(&base, "alice", 440.0).await;
    // Asked with repeats, answered once each, in the order asked.
    let asked: Vec<String> = people.iter().chain(people.iter().take(5)).cloned().collect();
    let profiles = alice.engine.profiles(asked).await.unwrap();
    assert_eq!(profiles.iter().map(|p| p.user.clone()).collect::<Vec<_>>(), people);
    assert!(profiles.iter().all(|p| p.nickname == p.user.to_uppercase()));
}

/// The engine driver on a virtual clock: a ring the server never ends (its own clock stands still)
/// runs out on the engine's clock when it is moved, with no waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_runs_out_on_the_engines_own_clock() {
    const T0: i64 = 1_767_225_600_000;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, Default::default(), dir.path(), hark_server::clock::ManualClock::new(T0)).await.unwrap();
    let base = format!("http://{}", server.addr());
    let secret = hark_server::accounts::load_secret(dir.path()).unwrap();
    let clock = hark_engine::clock::ManualClock::new(T0);
    let (alice, mut events) = Engine::start_with_clock(token_config(&base, &secret, "alice", T0), clock.clone());
    common::wait_for(&mut events, |e| matches!(e, EngineEvent::SignedIn { .. })).await;
    let (bob, _bob_events) = Engine::start(token_config(&base, &secret, "bob", T0));
    // bob's engine reads the real clock, far past the server's manual one; it only places the call.
    tokio::time::timeout(PATIENCE, async {
        while bob.call(vec!["alice".into()], Media::Audio, Some(10), None).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("bob signs in and calls");
    common::wait_for(&mut events, |e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    assert_eq!(alice.state().await.unwrap(), CallState::Calling);

    // Ten seconds of ring and the slack after it pass on alice's clock only.
    clock.advance(9_000);
    assert_eq!(alice.state().await.unwrap(), CallState::Calling, "still ringing before its time");
    clock.advance(5_000);
    let ended = common::wait_for(&mut events, |e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(ended, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::NoAnswer, .. })), "{ended:?}");
    assert_eq!(alice.state().await.unwrap(), CallState::Idle);
    server.shutdown().await;
}


/// An engine signing in with a token minted from the server's secret (valid for an hour after
/// `now_ms`), a tone for a microphone and a capture for a speaker.
fn token_config(server: &str, secret: &[u8], user: &str, now_ms: i64) -> EngineConfig {
    EngineConfig {
        signaling: SignalingConfig {
            server: server.to_owned(),
            credentials: Credentials::Token(hark_protocol::token::mint(secret, user, now_ms / 1000 + 3600)),
            device: format!("{user}-test"),
            client: "engine-tests/0".into(),
            extra_roots: Vec::new(),
            proxy: ProxySetting::Direct,
        },
        udp_addrs: vec!["127.0.0.1:0".into()],
        devices: Devices { source: Box::new(ToneSource::new(440.0)), sink: Box::new(Capture::default()) },
        receive_loss_percent: 0.0,
        policy: hark_engine::CallPolicy::default(),
        video: hark_engine::VideoConfig::none(),
        ring_output: Box::new(CaptureOutput::new()),
        watch_devices: false,
        processing: ProcessingSettings::OFF,
    }
}

/// A call rings on two of bob's devices: both connect to alice before anyone answers, yet nothing
/// either microphone captured is played anywhere until bob answers; then the answering device's
/// connection carries the call and the other device's is dropped, silent to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_connect_while_they_ring_and_carry_nothing_before_the_answer() {
    let (_server, base, _dir) = start_server().await;
    let mut alice = Person::start(&base, "alice", 440.0).await;
    let mut laptop = Person::start_on(&base, "bob", "bob-laptop", 880.0).await;
    let mut phone = Person::start_on(&base, "bob", "bob-phone", 660.0).await;

    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    for device in [&mut laptop, &mut phone] {
        device.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
        device.wait_for(|e| matches!(e, EngineEvent::ConnectedWhileRinging { user } if user == "alice")).await;
    }
    for _ in 0..2 {
        alice.wait_for(|e| matches!(e, EngineEvent::ConnectedWhileRinging { user } if user == "bob")).await;
    }
    // Connected both ways, and still nothing sent or played: no pipeline runs before the answer.
    for (who, person) in [("alice", &alice), ("laptop", &laptop), ("phone", &phone)] {
        assert_eq!(person.heard.len(), 0, "{who} played audio before the call was answered");
    }

    phone.engine.accept().await.unwrap();
    let e = laptop.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    assert!(matches!(e, EngineEvent::Call(CallEvent::NotConnected { reason: NotConnectedReason::HandledElsewhere, .. })), "{e:?}");
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallBegan { .. }))).await;
    alice.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { user } if user == "bob")).await;
    phone.wait_for(|e| matches!(e, EngineEvent::RemoteAudioAvailable { user } if user == "alice")).await;
    alice.listen(1.0).await;
    phone.listen(1.0).await;
    assert_hears("alice", &alice.heard, &[660.0], 880.0, 1.0, 0.9);
    assert_hears("phone", &phone.heard, &[440.0], 660.0, 1.0, 0.9);
    assert_eq!(laptop.heard.len(), 0, "the device that did not answer never plays anything");

    alice.engine.hangup().await.unwrap();
    phone.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
    assert_eq!(laptop.heard.len(), 0);
}

/// "Connect only after I answer": a ringing device does not connect to the caller, and the call
/// still connects the old way once answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_only_after_i_answer_makes_no_connection_while_it_rings() {
    let (_server, base, _dir) = start_server().await;
    let (proxy, received) = spying_proxy().await;
    let through_spy = Access { proxy: ProxySetting::Http(proxy), ..Access::default() };
    let mut alice = Person::launch(&base, "alice", "alice-test", 440.0, 0.0, through_spy, CallPolicy::default()).await;
    let mut bob = Person::start(&base, "bob", 880.0).await;
    bob.engine.set_connect_early(false);

    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    bob.engine.accept().await.unwrap();
    // Every event up to first audio at both ends is read: none says a connection rang early.
    let first = |e: &EngineEvent| matches!(e, EngineEvent::RemoteAudioAvailable { .. } | EngineEvent::ConnectedWhileRinging { .. });
    let seen = [alice.wait_for(first).await, bob.wait_for(first).await];
    assert!(seen.iter().all(|e| matches!(e, EngineEvent::RemoteAudioAvailable { .. })), "{seen:?}");
    // A `ready` bob sent on ringing would have reached alice before his accept (one socket, one
    // order at the server), so what alice received through the spy holds it if it was sent.
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(seen.contains("\"call.accepted\""), "alice's frames were not seen");
    assert!(!seen.contains("\"kind\":\"ready\""), "bob asked to connect while it rang");
    alice.engine.hangup().await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::CallEnded { .. }))).await;
}

/// An HTTP proxy on loopback that keeps every byte the server sent back through it: server
/// WebSocket frames are not masked, so a test can read the signals its client received.
async fn spying_proxy() -> (String, Arc<Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let kept = Arc::clone(&kept);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut words = text.split_whitespace();
                let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
                // CONNECT host:port (the WebSocket), or a request in absolute form (the login).
                let authority = target.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&authority).await else { return };
                if method == "CONNECT" {
                    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await;
                } else if upstream.write_all(&head).await.is_err() {
                    return;
                }
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = upstream.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                let mut buffer = vec![0u8; 65_536];
                while let Ok(n) = from_server.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    kept.lock().unwrap().extend_from_slice(&buffer[..n]);
                    if to_client.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (format!("http://{address}"), received)
}

/// A device under a relay-only policy that connects while it rings gives the caller relay
/// candidates only: ringing, it exposes no address of its own, as none once answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_device_that_connects_while_it_rings_signals_relay_candidates_only() {
    let turn = Coturn::start(TURN_SECRET);
    let (server, base, _dir) = start_server_with(turn.udp_for_everyone()).await;
    let (proxy, received) = spying_proxy().await;
    let through_spy = Access { proxy: ProxySetting::Http(proxy), ..Access::default() };
    let mut alice = Person::launch(&base, "alice", "alice-test", 440.0, 0.0, through_spy, CallPolicy::default()).await;
    let mut bob = Person::start_under(&base, "bob", 880.0, CallPolicy { relay_only: true, ..CallPolicy::default() }).await;

    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::ConnectedWhileRinging { .. })).await;
    alice.wait_for(|e| matches!(e, EngineEvent::ConnectedWhileRinging { .. })).await;
    // Whatever reached alice from the server while it rang: bob's signals among it.
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(seen.contains("\"kind\":\"candidate\""), "no candidate reached alice");
    assert!(seen.contains(" typ relay"), "no relay candidate reached alice");
    for kind in [" typ host", " typ srflx", " typ prflx"] {
        assert!(!seen.contains(kind), "bob, relay-only, signalled a candidate of{kind} while ringing");
    }
    bob.engine.reject().await.unwrap();
    alice.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::NotConnected { .. }))).await;
    server.shutdown().await;
}
