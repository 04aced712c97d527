//! Engines calling each other through a real hark-server on loopback, with real webrtc-rs peer
//! connections and Opus; synthetic microphones play tones and the far end's recording is checked.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hark_engine::audio::{goertzel_power, AudioSink, ToneSource, FRAME};
use hark_engine::core::{CallEvent, CallState, NotConnectedReason};
use hark_engine::media::Devices;
use hark_engine::signaling::{Credentials, SignalingConfig};
use hark_engine::{Engine, EngineConfig, EngineEvent};
use hark_protocol::{CallResult, EndReason, Media};
use tokio::sync::mpsc::UnboundedReceiver;

const PATIENCE: Duration = Duration::from_secs(15);

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

struct Person {
    engine: Engine,
    events: UnboundedReceiver<EngineEvent>,
    heard: Capture,
}

impl Person {
    async fn start(server: &str, user: &str, tone: f64) -> Person {
        let heard = Capture::default();
        let config = EngineConfig {
            signaling: SignalingConfig {
                server: server.to_owned(),
                credentials: Credentials::Password { user: user.into(), password: "password123".into(), register: true },
                device: format!("{user}-test"),
                client: "engine-tests/0".into(),
            },
            udp_addrs: vec!["127.0.0.1:0".into()],
            devices: Devices { source: Box::new(ToneSource::new(tone)), sink: Box::new(heard.clone()) },
        };
        let (engine, events) = Engine::start(config);
        let mut person = Person { engine, events, heard };
        person.wait_for(|e| matches!(e, EngineEvent::SignedIn { .. })).await;
        person
    }

    /// The first event matching `want`, skipping others; fails after PATIENCE.
    async fn wait_for(&mut self, want: impl Fn(&EngineEvent) -> bool) -> EngineEvent {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut skipped = Vec::new();
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("the awaited event did not come in time; got {skipped:#?}"))
                .expect("engine stopped");
            if want(&event) {
                return event;
            }
            skipped.push(event);
        }
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
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, Default::default(), dir.path(), Arc::new(hark_server::clock::SystemClock)).await.unwrap();
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

    // Reject.
    alice.engine.call(vec!["bob".into()], Media::Audio, None, None).await.unwrap();
    bob.wait_for(|e| matches!(e, EngineEvent::Call(CallEvent::IncomingCall { .. }))).await;
    bob.engine.reject().await.unwrap();
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
