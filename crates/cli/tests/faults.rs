//! Calls over a real network path with faults: two hark-cli processes in a network namespace of
//! their own (`unshare -n`, only `lo` in it), where nftables drops a tenth of all UDP at random and
//! polices it to 500 kbit/s mid-call (video), a group of three where one person's link alone is
//! policed, audio calls through 10 % and 20 % random loss and 50 % bursts (the far tone recorded
//! and checked in 100 ms windows), calls set up through 20 % loss, calls through coturn over TCP
//! and TLS where all UDP is blocked, a five-second cut of all UDP (audio) and a 25-second one. The audio calls use
//! hark-cli's default binds, so they are also calls on a machine whose only interface is
//! loopback. (`tc netem` does not exist on these machines; nftables does.)
//! The server runs in this test's process, listening on a socket made inside the namespace.
//!
//! Needs root (to make a namespace), `unshare`, `nsenter`, `ip` and `nft`, which `cargo xtask test`
//! installs; it fails, saying so, without them.

mod common;

use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Killed;

/// A network namespace held open by a sleeping process.
struct Namespace {
    holder: Killed,
}

impl Namespace {
    fn new() -> Namespace {
        let holder = Command::new("unshare").args(["-n", "sleep", "600"]).spawn().expect("unshare (root, util-linux) is needed");
        let namespace = Namespace { holder: Killed(holder) };
        // The holder is in a namespace of its own once its namespace differs from ours.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{}/ns/net", namespace.pid())).ok().is_none_or(|theirs| theirs == ours) {
            assert!(Instant::now() < deadline, "unshare made no namespace");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Loopback up: the only interface there is.
        assert!(namespace.run("ip", &["link", "set", "lo", "up"]), "ip link set lo up");
        namespace
    }

    fn pid(&self) -> u32 {
        self.holder.0.id()
    }

    /// A command that runs inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.pid().to_string(), "-n", "--"]).arg(program);
        command
    }

    fn run(&self, program: &str, args: &[&str]) -> bool {
        self.command(program).args(args).status().is_ok_and(|s| s.success())
    }

    fn nft(&self, rule: &str) {
        nft_in(self.pid(), rule);
    }

    /// A TCP listener on the namespace's loopback, made by a thread that enters it (sockets
    /// belong to the namespace of the thread that made them).
    fn listener(&self) -> std::net::TcpListener {
        let path = format!("/proc/{}/ns/net", self.pid());
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("the namespace's handle");
            // SAFETY: setns only reads the descriptor; it moves this thread alone into the
            // namespace, and this thread ends right after binding.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind in the namespace")
        })
        .join()
        .unwrap()
    }
}

/// Applies an nftables `rule` in the namespace of process `pid` (callable from any thread).
fn nft_in(pid: u32, rule: &str) {
    let status = Command::new("nsenter").args(["-t", &pid.to_string(), "-n", "--", "nft"]).args(rule.split_whitespace()).status();
    assert!(status.is_ok_and(|s| s.success()), "nft {rule}");
}

/// JSON events of a child, read on a thread, each with when it came.
fn events(child: &mut Child) -> std::sync::mpsc::Receiver<(Instant, serde_json::Value)> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send((Instant::now(), value)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits for an event named `name`, keeping the ones before it.
fn wait_event(rx: &std::sync::mpsc::Receiver<(Instant, serde_json::Value)>, name: &str, kept: &mut Vec<(Instant, serde_json::Value)>) -> Instant {
    wait_event_or_end(rx, name, kept).unwrap_or_else(|| panic!("no {name} before the process ended; got {kept:?}"))
}

/// Waits for an event named `name`, keeping the ones before it; `None` if the process ends
/// first (it panics after 30 s).
fn wait_event_or_end(rx: &std::sync::mpsc::Receiver<(Instant, serde_json::Value)>, name: &str, kept: &mut Vec<(Instant, serde_json::Value)>) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, event) = match rx.recv_timeout(left) {
            Ok(next) => next,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no {name} in 30 s; got {kept:?}"),
        };
        let matched = event["event"] == name;
        kept.push((at, event));
        if matched {
            return Some(at);
        }
    }
}

/// A fresh namespace with a hark-server listening inside it, its data in a temporary folder, and
/// its base URL.
async fn server_in_a_namespace() -> (Namespace, tempfile::TempDir, hark_server::RunningServer, String) {
    let namespace = Namespace::new();
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = server_in(&namespace, Default::default(), &dir).await;
    (namespace, dir, server, base)
}

/// A hark-server with `config` listening inside `namespace`, its data in `dir`, and its base URL.
async fn server_in(namespace: &Namespace, config: hark_server::config::Config, dir: &tempfile::TempDir) -> (hark_server::RunningServer, String) {
    let listener = namespace.listener();
    listener.set_nonblocking(true).unwrap();
    let server = hark_server::start(tokio::net::TcpListener::from_std(listener).unwrap(), config, &dir.path().join("server"), Arc::new(hark_server::clock::SystemClock))
        .await
        .unwrap();
    let base = format!("http://{}", server.addr());
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_survives_loss_and_a_bandwidth_cap_on_a_real_network_path() {
    let (namespace, dir, server, base) = server_in_a_namespace().await;
    let cli = |args: &[&str]| {
        let mut command = namespace.command(env!("CARGO_BIN_EXE_hark-cli"));
        command
            .args(args)
            .args(["--server", &base, "--password", "password123", "--register", "--bind", "127.0.0.1:0", "--mic", "tone:440", "--speaker", "none", "--json"])
            .stdout(Stdio::piped());
        command
    };

    let recording = dir.path().join("bob-saw.y4m");
    let video_out = format!("record:{}", recording.display());
    let mut bob = Killed(cli(&["answer", "--auto", "--user", "bob", "--camera", "none", "--video-out", &video_out]).spawn().unwrap());
    let bob_events = events(&mut bob.0);
    let mut bob_log = Vec::new();
    wait_event(&bob_events, "signed_in", &mut bob_log);
    let mut alice = Killed(cli(&["call", "bob", "--video", "--duration", "26", "--user", "alice", "--camera", "test-pattern"]).spawn().unwrap());
    let alice_events = events(&mut alice.0);
    wait_event(&bob_events, "first_remote_video_frame", &mut bob_log);

    // Mid-call: a tenth of UDP dropped at random, and the rest policed to 500 kbit/s.
    namespace.nft("add table inet impair");
    namespace.nft("add chain inet impair in { type filter hook input priority 0 ; }");
    namespace.nft("add rule inet impair in meta l4proto udp numgen random mod 10 0 drop");
    namespace.nft("add rule inet impair in meta l4proto udp limit rate over 62 kbytes/second drop");
    let capped = Instant::now();

    let ended = tokio::task::spawn_blocking(move || {
        let status = alice.0.wait().unwrap();
        let alice_log: Vec<(Instant, serde_json::Value)> = alice_events.try_iter().collect();
        let _ = bob.0.wait();
        (status, alice_log, bob_events.try_iter().collect::<Vec<_>>())
    });
    let (status, alice_log, bob_rest) = tokio::time::timeout(Duration::from_secs(60), ended).await.expect("the call ends").unwrap();
    assert!(status.success(), "alice: {status}");
    bob_log.extend(bob_rest);

    // The sender's bitrate settles under the cap within 10 s and stays there.
    let bitrates: Vec<(f64, u64)> = alice_log
        .iter()
        .filter(|(_, e)| e["event"] == "video_bitrate")
        .map(|(at, e)| (at.saturating_duration_since(capped).as_secs_f64(), e["kbps"].as_u64().unwrap()))
        .collect();
    println!("alice's bitrate after the cap (s, kbit/s): {bitrates:?}");
    assert!(bitrates.iter().any(|(t, _)| *t > 0.0), "the bitrate never moved under the cap");
    let late: Vec<u64> = bitrates.iter().filter(|(t, _)| *t >= 10.0).map(|(_, k)| *k).collect();
    assert!(late.iter().all(|k| *k < 500), "still over 500 kbit/s 10 s after the cap: {late:?}");

    // Every freeze ends within a second of a keyframe request (the last one: a keyframe lost on
    // the way is asked for again; how long the whole freeze lasted is printed, and bounded below
    // by the frames that arrived).
    let recovered: Vec<(u64, u64)> = bob_log
        .iter()
        .filter(|(_, e)| e["event"] == "remote_video_recovered")
        .map(|(_, e)| (e["frozen_ms"].as_u64().unwrap(), e["after_request_ms"].as_u64().unwrap()))
        .collect();
    let frozen = bob_log.iter().filter(|(_, e)| e["event"] == "remote_video_frozen").count();
    println!("freezes: {frozen}, recovered (ms frozen, ms after the last keyframe request): {recovered:?}");
    assert!(recovered.len() + 1 >= frozen, "{frozen} freezes, {} recovered", recovered.len());
    assert!(recovered.iter().all(|(_, after)| *after <= 1_000), "{recovered:?}");

    // And what bob recorded carries rising frame numbers throughout.
    let (numbers, _) = common::recorded(&recording);
    let read: Vec<u32> = numbers.iter().flatten().copied().collect();
    assert_eq!(read.len(), numbers.len(), "a recorded frame without its number (decoded from a broken reference?)");
    assert!(read.windows(2).all(|w| w[1] > w[0]), "numbers go up");
    println!("bob recorded {} frames, the last numbered {:?}", read.len(), read.last());
    // 26 s at 30 fps is 780 frames; runs here recorded 683–735.
    assert!(read.len() > 500, "only {} frames in 26 s", read.len());
    server.shutdown().await;
}

/// A group of three where one person's link is slow: their inbound UDP is policed to 250 kbit/s
/// (they bind an address of their own on the namespace's loopback, 127.0.0.3, which the rule
/// matches). The slow link gets the sender's second, smaller layer; the healthy one keeps the main
/// layer's full rate instead of being taken down to the slow one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_group_a_slow_link_gets_its_own_layer_and_does_not_slow_the_others() {
    let (namespace, _dir, server, base) = server_in_a_namespace().await;
    const SECONDS: &str = "24";
    let cli = |user: &str, bind: &str, args: &[&str]| {
        let mut command = namespace.command(env!("CARGO_BIN_EXE_hark-cli"));
        command
            .args(args)
            .args(["--user", user, "--duration", SECONDS, "--server", &base, "--password", "password123", "--register", "--bind", bind])
            .args(["--mic", "tone:440", "--speaker", "none", "--json", "--camera", "test-pattern", "--video-out", "count"])
            .stdout(Stdio::piped());
        command
    };
    let mut bob = Killed(cli("bob", "127.0.0.1:0", &["answer", "--auto"]).spawn().unwrap());
    let mut carol = Killed(cli("carol", "127.0.0.3:0", &["answer", "--auto"]).spawn().unwrap());
    let (bob_events, carol_events) = (events(&mut bob.0), events(&mut carol.0));
    let (mut bob_log, mut carol_log) = (Vec::new(), Vec::new());
    wait_event(&bob_events, "signed_in", &mut bob_log);
    wait_event(&carol_events, "signed_in", &mut carol_log);
    let mut alice = Killed(cli("alice", "127.0.0.1:0", &["call", "bob", "carol", "--video"]).spawn().unwrap());
    let alice_events = events(&mut alice.0);
    wait_event(&bob_events, "first_remote_video_frame", &mut bob_log);
    namespace.nft("add table inet impair");
    namespace.nft("add chain inet impair in { type filter hook input priority 0 ; }");
    namespace.nft("add rule inet impair in ip daddr 127.0.0.3 meta l4proto udp limit rate over 31 kbytes/second drop");

    let ended = tokio::task::spawn_blocking(move || {
        let status = alice.0.wait().unwrap();
        let _ = (bob.0.wait(), carol.0.wait());
        (status, alice_events.try_iter().collect::<Vec<_>>(), bob_events.try_iter().collect::<Vec<_>>(), carol_events.try_iter().collect::<Vec<_>>())
    });
    let (status, alice_log, bob_rest, carol_rest) = tokio::time::timeout(Duration::from_secs(60), ended).await.expect("the call ends").unwrap();
    assert!(status.success(), "alice: {status}");
    bob_log.extend(bob_rest);
    carol_log.extend(carol_rest);
    let decoded = |log: &[(Instant, serde_json::Value)], from: &str| {
        log.iter().find(|(_, e)| e["event"] == "video_frames" && e["user"] == from).map(|(_, e)| e.clone()).unwrap_or_else(|| panic!("no video_frames of {from}: {log:?}"))
    };
    let (bob_saw, carol_saw) = (decoded(&bob_log, "alice"), decoded(&carol_log, "alice"));
    let bitrates: Vec<u64> = alice_log.iter().filter(|(_, e)| e["event"] == "video_bitrate").map(|(_, e)| e["kbps"].as_u64().unwrap()).collect();
    println!("bob decoded alice: {bob_saw}; carol decoded alice: {carol_saw}; alice's main layer (kbit/s): {bitrates:?}");
    // Bob's link is healthy: alice's main layer keeps climbing to the ladder's 500 kbit/s and bob
    // decodes nearly all of the 30 fps (one encoder following carol gave him about half).
    assert!(bitrates.last().is_some_and(|&k| k >= 400), "alice's main layer followed the slow link: {bitrates:?}");
    assert!(bob_saw["frames"].as_u64().unwrap() >= 600, "bob: {bob_saw}");
    assert_eq!((bob_saw["width"].as_u64(), bob_saw["height"].as_u64()), (Some(480), Some(270)));
    // Carol still gets alice's video, on the weak layer's smaller picture.
    assert!(carol_saw["frames"].as_u64().unwrap() >= 100, "carol: {carol_saw}");
    assert_eq!((carol_saw["width"].as_u64(), carol_saw["height"].as_u64()), (Some(320), Some(180)), "carol's last pictures were not the weak layer's");
    server.shutdown().await;
}

/// The tone each person's microphone plays: alice's and bob's differ, so what each hears is
/// the other's.
fn tone_of(user: &str) -> u32 {
    if user == "alice" { 440 } else { 660 }
}

/// hark-cli in `namespace` as `user`, signed in to `base`, with the default binds, a tone for a
/// microphone, `speaker` for a speaker and JSON events on its stdout.
fn audio_cli_hearing(namespace: &Namespace, base: &str, user: &str, speaker: &str, args: &[&str]) -> Command {
    let mut command = namespace.command(env!("CARGO_BIN_EXE_hark-cli"));
    command
        .args(args)
        .args(["--user", user, "--server", base, "--password", "password123", "--register"])
        .args(["--mic", &format!("tone:{}", tone_of(user)), "--speaker", speaker, "--json"])
        .stdout(Stdio::piped());
    command
}

/// hark-cli as [`audio_cli_hearing`] with no speaker.
fn audio_cli(namespace: &Namespace, base: &str, user: &str, args: &[&str]) -> Command {
    audio_cli_hearing(namespace, base, user, "none", args)
}

/// One side of a call: its hark-cli, its events as they come, and those already read.
struct Side {
    process: Killed,
    events: std::sync::mpsc::Receiver<(Instant, serde_json::Value)>,
    log: Vec<(Instant, serde_json::Value)>,
}

/// Bob answering and alice calling him for `duration` seconds, with the default binds, once
/// each hears the other; (alice, bob).
fn audio_call(namespace: &Namespace, base: &str, duration: &str) -> (Side, Side) {
    audio_call_hearing(namespace, base, duration, ["none", "none"])
}

/// [`audio_call`] with speakers for alice and bob.
fn audio_call_hearing(namespace: &Namespace, base: &str, duration: &str, [alice_speaker, bob_speaker]: [&str; 2]) -> (Side, Side) {
    let mut bob = Killed(audio_cli_hearing(namespace, base, "bob", bob_speaker, &["answer", "--auto"]).spawn().unwrap());
    let bob_events = events(&mut bob.0);
    let mut bob_log = Vec::new();
    wait_event(&bob_events, "signed_in", &mut bob_log);
    let mut alice = Killed(audio_cli_hearing(namespace, base, "alice", alice_speaker, &["call", "bob", "--duration", duration]).spawn().unwrap());
    let alice_events = events(&mut alice.0);
    let mut alice_log = Vec::new();
    wait_event(&bob_events, "remote_audio_available", &mut bob_log);
    wait_event(&alice_events, "remote_audio_available", &mut alice_log);
    (Side { process: alice, events: alice_events, log: alice_log }, Side { process: bob, events: bob_events, log: bob_log })
}

/// Drops every UDP packet in `namespace` (signaling, on TCP, stays up) until the table is
/// deleted.
fn cut_udp(namespace: &Namespace) {
    namespace.nft("add table inet cut");
    namespace.nft("add chain inet cut in { type filter hook input priority 0 ; }");
    namespace.nft("add rule inet cut in meta l4proto udp drop");
}

/// A five-second cut of all UDP in a 1:1 call: each side says "reconnecting" about the other
/// during the cut (not "connected" over silence) and scores the link at the bottom (all lost),
/// and after it media arrives and the far tone is heard again within 3 s, the score back up;
/// the call goes on to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_cut_says_reconnecting_and_the_call_comes_back() {
    let (namespace, _dir, server, base) = server_in_a_namespace().await;
    let (Side { process: mut alice, events: alice_events, log: mut alice_log }, Side { process: mut bob, events: bob_events, log: mut bob_log }) =
        audio_call(&namespace, &base, "14");
    // Let the tone settle into the levels before the cut.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Signaling (TCP) stays up; every UDP packet, media and ICE checks alike, is dropped.
    cut_udp(&namespace);
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    namespace.nft("delete table inet cut");
    let restored = Instant::now();

    let ended = tokio::task::spawn_blocking(move || {
        let status = alice.0.wait().unwrap();
        let _ = bob.0.wait();
        (status, alice_events.try_iter().collect::<Vec<_>>(), bob_events.try_iter().collect::<Vec<_>>())
    });
    let (status, alice_rest, bob_rest) = tokio::time::timeout(Duration::from_secs(40), ended).await.expect("the call ends").unwrap();
    assert!(status.success(), "alice: {status}");
    alice_log.extend(alice_rest);
    bob_log.extend(bob_rest);

    for (who, log, far) in [("alice", &alice_log, "bob"), ("bob", &bob_log, "alice")] {
        let since = |at: &Instant, from: &Instant| at.saturating_duration_since(*from).as_secs_f64();
        let link = |state: &'static str| {
            log.iter().filter(move |(_, e)| e["event"] == "media_link" && e["user"] == far && e["state"] == state).map(|(at, _)| *at)
        };
        let reconnecting = link("reconnecting").find(|at| *at >= cut).unwrap_or_else(|| panic!("{who} never said reconnecting: {log:?}"));
        let connected = link("connected").find(|at| *at >= reconnecting).unwrap_or_else(|| panic!("{who} never said connected again: {log:?}"));
        let levels: Vec<(f64, u64)> = log
            .iter()
            .filter(|(at, e)| e["event"] == "voice_level" && e["user"] == far && *at >= cut)
            .map(|(at, e)| (since(at, &cut), e["level"].as_u64().unwrap()))
            .collect();
        let heard = levels.iter().find(|(t, level)| *t >= since(&restored, &cut) && *level >= 20).map(|(t, _)| *t);
        println!(
            "{who}: reconnecting {:.2} s into the cut, connected {:.2} s after it, {far}'s tone heard {:?} s after it; levels from the cut (s, level): {levels:?}",
            since(&reconnecting, &cut),
            since(&connected, &restored),
            heard.map(|t| t - since(&restored, &cut)),
        );
        assert!(since(&reconnecting, &cut) <= 4.0, "{who} said reconnecting {:.2} s into the cut", since(&reconnecting, &cut));
        assert!(reconnecting < restored, "{who} said reconnecting only after the cut");
        assert!(since(&connected, &restored) <= 3.0, "{who}: media came back {:.2} s after the cut", since(&connected, &restored));
        assert!(
            levels.iter().filter(|(t, _)| (1.0..5.0).contains(t)).all(|(_, level)| *level < 5),
            "{who} heard {far} through the cut: the cut was not one"
        );
        let heard = heard.unwrap_or_else(|| panic!("{who} never heard {far} again"));
        assert!(heard - since(&restored, &cut) <= 3.0, "{who} heard {far} {:.2} s after the cut", heard - since(&restored, &cut));
        // The call-quality score: at its best before the cut, at the bottom through it (nothing
        // arrives: all lost), and back up once media flows again.
        let scores: Vec<(f64, f64, f64)> = log
            .iter()
            .filter(|(at, e)| e["event"] == "network_quality" && e["user"] == far && *at >= cut)
            .map(|(at, e)| (since(at, &cut), e["loss_percent"].as_f64().unwrap(), e["mos"].as_f64().unwrap()))
            .collect();
        println!("{who}'s scores of {far} (s from the cut, loss %, MOS): {scores:?}");
        let before: Vec<f64> = log
            .iter()
            .filter(|(at, e)| e["event"] == "network_quality" && e["user"] == far && *at < cut)
            .map(|(_, e)| e["mos"].as_f64().unwrap())
            .collect();
        assert!(before.last().is_some_and(|mos| *mos > 4.2), "{who}: before the cut {before:?}");
        let during = |(t, _, _): &&(f64, f64, f64)| (2.5..5.0).contains(t);
        assert!(scores.iter().filter(during).count() > 0 && scores.iter().filter(during).all(|(_, loss, mos)| *loss == 100.0 && *mos < 1.5), "{who}: in the cut {scores:?}");
        // The receiver counts the cut's packets as lost only once packets return, a report or
        // two late: those were charged while missing, and a full interval after the cut they
        // do not pull the score down a second time.
        let after = since(&restored, &cut) + 2.2;
        assert!(scores.iter().filter(|(t, _, _)| *t >= after).all(|(_, loss, mos)| *loss < 5.0 && *mos > 3.8), "{who}: after the cut {scores:?}");
        assert!(scores.last().is_some_and(|(_, loss, mos)| *loss < 5.0 && *mos > 4.2), "{who}: at the end {scores:?}");
        let ended = log.iter().find(|(_, e)| e["event"] == "call_ended").unwrap_or_else(|| panic!("{who}: no call_ended: {log:?}"));
        assert_eq!(ended.1["reason"], "hangup", "{who}: {}", ended.1);
    }
    server.shutdown().await;
}

/// A 25-second cut of all UDP in a 1:1 call: each side is told media is lost within 15 s, and
/// gives the call up (no media for 20 s) before the cut ends; the call ends `failed`, and both
/// records say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_that_lasts_ends_the_call_failed() {
    let (namespace, _dir, server, base) = server_in_a_namespace().await;
    let cli = |user: &str, args: &[&str]| audio_cli(&namespace, &base, user, args);
    let (Side { process: mut alice, events: alice_events, log: mut alice_log }, Side { process: mut bob, events: bob_events, log: mut bob_log }) =
        audio_call(&namespace, &base, "60");

    cut_udp(&namespace);
    let cut = Instant::now();
    let ended = tokio::task::spawn_blocking(move || {
        let alice_status = alice.0.wait().unwrap();
        let alice_done = Instant::now();
        let bob_status = bob.0.wait().unwrap();
        (alice_status, bob_status, alice_done, Instant::now(), alice_events.try_iter().collect::<Vec<_>>(), bob_events.try_iter().collect::<Vec<_>>())
    });
    let (alice_status, bob_status, alice_done, bob_done, alice_rest, bob_rest) =
        tokio::time::timeout(Duration::from_secs(40), ended).await.expect("the call ends by itself").unwrap();
    namespace.nft("delete table inet cut");
    assert!(alice_status.success() && bob_status.success(), "alice: {alice_status}, bob: {bob_status}");
    alice_log.extend(alice_rest);
    bob_log.extend(bob_rest);

    for (who, log, far, done) in [("alice", &alice_log, "bob", alice_done), ("bob", &bob_log, "alice", bob_done)] {
        let since_cut = |at: &Instant| at.saturating_duration_since(cut).as_secs_f64();
        let lost = log
            .iter()
            .find(|(at, e)| e["event"] == "media_link" && e["user"] == far && e["state"] == "lost" && *at >= cut)
            .unwrap_or_else(|| panic!("{who} was never told media is lost: {log:?}"));
        let ended = log.iter().find(|(_, e)| e["event"] == "call_ended").unwrap_or_else(|| panic!("{who}: no call_ended: {log:?}"));
        println!("{who}: media lost {:.2} s into the cut, the call ended {:.2} s into it ({})", since_cut(&lost.0), since_cut(&ended.0), ended.1);
        assert!(since_cut(&lost.0) <= 15.0, "{who} was told media is lost {:.2} s into the cut", since_cut(&lost.0));
        assert_eq!(ended.1["reason"], "failed", "{who}: {}", ended.1);
        assert!(since_cut(&ended.0) > since_cut(&lost.0) && since_cut(&done) <= 25.0, "{who} ended {:.2} s into the cut", since_cut(&ended.0));

        // The records, over signaling that never went down.
        let history = cli(who, &["history"]).output().unwrap();
        let newest: serde_json::Value = String::from_utf8_lossy(&history.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line.get("call_id").is_some())
            .unwrap_or_else(|| panic!("{who}: no records: {}", String::from_utf8_lossy(&history.stdout)));
        assert_eq!((&newest["result"], &newest["end_reason"]), (&serde_json::json!("completed"), &serde_json::json!("failed")), "{who}: {newest}");
    }
    server.shutdown().await;
}

/// How a far tone came through a recording, in 100 ms windows from 1 s after it first came to
/// half a second before the recording ends: how many windows, the share where the tone holds
/// (within 20 dB of its median power in the recording: concealment keeps it audible), and the
/// share at full level (within 3 dB of the median: what a listener hears as clean).
#[derive(Debug)]
struct ToneHeld {
    windows: usize,
    audible: f64,
    full: f64,
}

fn tone_held(recording: &std::path::Path, tone: f64) -> ToneHeld {
    let mut reader = hound::WavReader::open(recording).unwrap_or_else(|e| panic!("{}: {e}", recording.display()));
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    // The tone's level in a window is the mean of its power in each 20 ms of it, so a frame
    // that comes back in a different phase (a recovered or concealed one) counts by its level
    // and does not cancel its neighbours out.
    let powers: Vec<f64> =
        samples.chunks_exact(4_800).map(|w| w.chunks_exact(960).map(|frame| hark_engine::audio::goertzel_power(frame, tone)).sum::<f64>() / 5.0).collect();
    let first = powers.iter().position(|p| *p > 1e-4).unwrap_or_else(|| panic!("{}: the tone never came", recording.display()));
    let span = &powers[(first + 10).min(powers.len())..powers.len().saturating_sub(5)];
    assert!(span.len() >= 50, "{}: only {} windows of tone", recording.display(), span.len());
    let mut sorted = span.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let share = |within_db: f64| {
        let (low, high) = (median * 10f64.powf(-within_db / 10.0), median * 10f64.powf(within_db / 10.0));
        span.iter().filter(|p| (low..=high).contains(*p)).count() as f64 / span.len() as f64
    };
    ToneHeld { windows: span.len(), audible: share(20.0), full: share(3.0) }
}

/// How a path loses packets.
#[derive(Clone, Copy, Debug)]
enum PathLoss {
    /// One UDP packet in `n`, at random.
    OneIn(u32),
    /// Half of all UDP packets at random, every other second.
    Bursty,
}

/// What each side of a call over a lossy path heard of the other, and its mean score of the
/// other while the loss lasted: [(alice heard bob, alice's MOS of bob), (bob heard alice, …)].
async fn call_over_a_lossy_path(loss: PathLoss) -> [(ToneHeld, f64); 2] {
    const SECONDS: u64 = 16;
    let (namespace, dir, server, base) = server_in_a_namespace().await;
    let recordings = [dir.path().join("alice-heard.wav"), dir.path().join("bob-heard.wav")];
    let speakers = recordings.clone().map(|path| format!("record:{}", path.display()));
    let (Side { process: mut alice, events: alice_events, log: mut alice_log }, Side { process: mut bob, events: bob_events, log: mut bob_log }) =
        audio_call_hearing(&namespace, &base, &SECONDS.to_string(), [&speakers[0], &speakers[1]]);

    namespace.nft("add table inet impair");
    namespace.nft("add chain inet impair in { type filter hook input priority 0 ; }");
    let impaired = Instant::now();
    let bursts = match loss {
        PathLoss::OneIn(n) => {
            namespace.nft(&format!("add rule inet impair in meta l4proto udp numgen random mod {n} 0 drop"));
            None
        }
        PathLoss::Bursty => {
            // The bursts follow the wall clock: the rule is added for a second, then taken out
            // for one, until the call is over.
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let pid = namespace.pid();
            let stopped = stop.clone();
            let thread = std::thread::spawn(move || {
                let nft = |rule: &str| nft_in(pid, rule);
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    nft("add rule inet impair in meta l4proto udp numgen random mod 2 0 drop");
                    std::thread::sleep(Duration::from_secs(1));
                    nft("flush chain inet impair in");
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
            Some((stop, thread))
        }
    };

    let ended = tokio::task::spawn_blocking(move || {
        let status = alice.0.wait().unwrap();
        let _ = bob.0.wait();
        (status, alice_events.try_iter().collect::<Vec<_>>(), bob_events.try_iter().collect::<Vec<_>>())
    });
    let (status, alice_rest, bob_rest) = tokio::time::timeout(Duration::from_secs(SECONDS + 20), ended).await.expect("the call ends").unwrap();
    if let Some((stop, thread)) = bursts {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        thread.join().unwrap();
    }
    assert!(status.success(), "alice: {status}");
    alice_log.extend(alice_rest);
    bob_log.extend(bob_rest);
    server.shutdown().await;

    let mut heard = Vec::new();
    for (who, log, far, recording) in [("alice", &alice_log, "bob", &recordings[0]), ("bob", &bob_log, "alice", &recordings[1])] {
        // The score once a few reports have seen the loss.
        let scores: Vec<f64> = log
            .iter()
            .filter(|(at, e)| e["event"] == "network_quality" && e["user"] == far && at.saturating_duration_since(impaired) >= Duration::from_secs(3))
            .map(|(_, e)| e["mos"].as_f64().unwrap())
            .collect();
        assert!(!scores.is_empty(), "{who}: no scores of {far}: {log:?}");
        let held = tone_held(recording, f64::from(tone_of(far)));
        let mos = scores.iter().sum::<f64>() / scores.len() as f64;
        println!("{loss:?}: {who} heard {far}'s tone {held:?}; mean MOS {mos:.2} over {} reports", scores.len());
        heard.push((held, mos));
    }
    let [alice, bob]: [(ToneHeld, f64); 2] = heard.try_into().unwrap();
    [alice, bob]
}

/// A call over a real path that loses 10 % of UDP, then 20 %, then half of it every other
/// second: the far tone holds in most 100 ms windows and is heard at full level in most, with
/// the protection the engine chooses (Opus in-band FEC, tuned to the loss the far side reports).
/// The call-quality score falls as the loss grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_holds_through_random_and_bursty_loss() {
    let ten = call_over_a_lossy_path(PathLoss::OneIn(10)).await;
    let twenty = call_over_a_lossy_path(PathLoss::OneIn(5)).await;
    let bursty = call_over_a_lossy_path(PathLoss::Bursty).await;
    for (what, heard, audible, full) in [("10 %", &ten, 0.95, 0.95), ("20 %", &twenty, 0.85, 0.85), ("bursty", &bursty, 0.80, 0.80)] {
        for (who, (held, _)) in ["alice", "bob"].iter().zip(heard.iter()) {
            assert!(held.windows >= 100, "{what} loss: {who} heard too short a call: {held:?}");
            assert!(held.audible >= audible && held.full >= full, "{what} loss: {who} heard {held:?}");
        }
    }
    for who in 0..2 {
        assert!(ten[who].1 > twenty[who].1, "the score did not fall from 10 % loss ({:.2}) to 20 % ({:.2})", ten[who].1, twenty[who].1);
        assert!(ten[who].1 < 4.3, "10 % loss scored {:.2}, as if nothing were lost", ten[who].1);
    }
}

/// coturn's relay ports in the UDP-blocked namespace: the only UDP let through is between two
/// of them (the relay's own side of the network), none to or from a client.
const RELAY_PORTS: &str = "20000-20100";

/// A coturn inside `namespace` on 127.0.0.1: TURN over TCP (and UDP) on 3478, over TLS on 5349
/// with a certificate for `localhost` (written to `dir/turn-cert.pem`), the REST shared secret
/// `secret`; held until dropped.
fn coturn_in(namespace: &Namespace, dir: &std::path::Path, secret: &str) -> Killed {
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("turn-cert.pem"), dir.join("turn-key.pem"));
    std::fs::write(&cert, signed.cert.pem()).unwrap();
    std::fs::write(&key, signed.signing_key.serialize_pem()).unwrap();
    let (min, max) = RELAY_PORTS.split_once('-').unwrap();
    let mut child = namespace
        .command("turnserver")
        .args(["-n", "-L", "127.0.0.1", "-E", "127.0.0.1", "-p", "3478", "--tls-listening-port", "5349", "--no-dtls", "--no-cli", "--allow-loopback-peers"])
        .args(["--min-port", min, "--max-port", max, "--use-auth-secret", &format!("--static-auth-secret={secret}"), "--realm=hark", "--log-file=stdout"])
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--pkey={}", key.display()))
        .arg(format!("--pidfile={}", dir.join("turn.pid").display()))
        .arg(format!("--userdb={}", dir.join("turndb").display()))
        .stdout(Stdio::piped())
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
    Killed(child)
}

/// A network that lets no UDP through: a call still connects, relay-only, through coturn over
/// TCP (handed out beside UDP on the same port, as a common coturn setup does) and, in a second
/// call, over TLS (webrtc-rs speaks TURN over UDP only; the engine carries its TURN messages
/// over the stream), and each side hears the other's tone over the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_all_udp_blocked_calls_go_through_turn_over_tcp_and_tls() {
    for urls in [&["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"][..], &["turns:localhost:5349"][..]] {
        let url = urls.join(" ");
        let namespace = Namespace::new();
        let dir = tempfile::tempdir().unwrap();
        let _turn = coturn_in(&namespace, dir.path(), "turn-shared-secret");
        let config = hark_server::config::Config {
            turn: Some(hark_server::config::TurnConfig { urls: urls.iter().map(|u| u.to_string()).collect(), secret: "turn-shared-secret".into(), ttl_s: 600 }),
            ice_transport_policy: hark_protocol::IceTransportPolicy::Relay,
            ..Default::default()
        };
        let (server, base) = server_in(&namespace, config, &dir).await;
        // Every UDP packet to or from a client is dropped, from before the call.
        namespace.nft("add table inet blocked");
        namespace.nft("add chain inet blocked in { type filter hook input priority 0 ; }");
        namespace.nft(&format!("add rule inet blocked in meta l4proto udp udp sport != {RELAY_PORTS} drop"));
        namespace.nft(&format!("add rule inet blocked in meta l4proto udp udp dport != {RELAY_PORTS} drop"));

        let trust = dir.path().join("turn-cert.pem");
        let trust = trust.to_str().unwrap();
        let mut bob = Killed(audio_cli(&namespace, &base, "bob", &["answer", "--auto", "--trust-root", trust]).spawn().unwrap());
        let bob_events = events(&mut bob.0);
        let mut bob_log = Vec::new();
        wait_event(&bob_events, "signed_in", &mut bob_log);
        let mut alice = Killed(audio_cli(&namespace, &base, "alice", &["call", "bob", "--duration", "5", "--trust-root", trust]).spawn().unwrap());
        let alice_events = events(&mut alice.0);
        let ended = tokio::task::spawn_blocking(move || {
            let status = alice.0.wait().unwrap();
            let _ = bob.0.wait();
            (status, alice_events.try_iter().collect::<Vec<_>>(), bob_events.try_iter().collect::<Vec<_>>())
        });
        let (status, alice_log, bob_rest) = tokio::time::timeout(Duration::from_secs(40), ended).await.expect("the call ends").unwrap();
        bob_log.extend(bob_rest);
        assert!(status.success(), "alice: {status}");
        for (who, log, far) in [("alice", &alice_log, "bob"), ("bob", &bob_log, "alice")] {
            let relayed = log.iter().filter(|(_, e)| e["event"] == "network_quality" && e["user"] == far).map(|(_, e)| e["relayed"].clone()).collect::<Vec<_>>();
            let loudest = log.iter().filter(|(_, e)| e["event"] == "voice_level" && e["user"] == far).filter_map(|(_, e)| e["level"].as_u64()).max();
            println!("{url}: {who} heard {far} at up to {loudest:?}; relayed: {relayed:?}");
            assert!(!relayed.is_empty() && relayed.iter().all(|r| r == true), "{url}: {who}'s media did not go through the relay: {log:?}");
            assert!(loudest.is_some_and(|level| level >= 20), "{url}: {who} never heard {far}: {log:?}");
        }
        server.shutdown().await;
    }
}

/// Calls set up over a path that loses a fifth of all UDP from the start: every one connects,
/// and each side hears the other within 1.5 s of the answer (the ICE checks and the DTLS
/// handshake go on through the loss instead of stalling on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_set_up_through_20_percent_loss_have_audio_within_a_second_and_a_half() {
    const CALLS: usize = 10;
    let (namespace, _dir, server, base) = server_in_a_namespace().await;
    namespace.nft("add table inet impair");
    namespace.nft("add chain inet impair in { type filter hook input priority 0 ; }");
    namespace.nft("add rule inet impair in meta l4proto udp numgen random mod 5 0 drop");

    let mut bob = Killed(audio_cli(&namespace, &base, "bob", &["answer", "--auto", "--loop"]).spawn().unwrap());
    let bob_events = events(&mut bob.0);
    let mut bob_log = Vec::new();
    wait_event(&bob_events, "signed_in", &mut bob_log);
    let mut setups = Vec::new();
    for call in 0..CALLS {
        let mut alice = Killed(audio_cli(&namespace, &base, "alice", &["call", "bob", "--duration", "3"]).spawn().unwrap());
        let alice_events = events(&mut alice.0);
        let mut alice_log = Vec::new();
        let alice_began = wait_event(&alice_events, "call_began", &mut alice_log);
        let alice_heard = wait_event_or_end(&alice_events, "remote_audio_available", &mut alice_log);
        let bob_began = wait_event(&bob_events, "call_began", &mut bob_log);
        // Bob's audio, unless the call ends first.
        let mut bob_heard = None;
        loop {
            let (at, event) = bob_events.recv_timeout(Duration::from_secs(30)).expect("bob's call ends");
            let name = event["event"].as_str().unwrap_or_default().to_owned();
            bob_log.push((at, event));
            match name.as_str() {
                "remote_audio_available" => bob_heard = bob_heard.or(Some(at)),
                "call_ended" => break,
                _ => {}
            }
        }
        let status = tokio::task::spawn_blocking(move || alice.0.wait().unwrap()).await.unwrap();
        assert!(status.success(), "call {call}: alice {status}");
        let seconds = |from: Instant, to: Option<Instant>| to.map(|to| to.saturating_duration_since(from).as_secs_f64());
        setups.push((seconds(alice_began, alice_heard), seconds(bob_began, bob_heard)));
    }
    println!("answer -> first audio through 20 % loss (alice, bob), s: {setups:?}");
    for (call, (alice, bob)) in setups.iter().enumerate() {
        assert!(alice.is_some_and(|t| t <= 1.5) && bob.is_some_and(|t| t <= 1.5), "call {call}: first audio {alice:?} s (alice), {bob:?} s (bob) after the answer");
    }
    server.shutdown().await;
}
