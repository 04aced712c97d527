//! hark-cli video calls as real processes through a real server: test-pattern cameras, Y4M
//! recordings of what each side decoded, read back frame by frame.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;


mod common;

use common::{recorded, Killed};

fn cli(server: &str, args: &[&str]) -> Command {
    let mut command = common::cli(server, args);
    command.args(["--mic", "tone:440", "--speaker", "none"]);
    command
}

/// `hark-cli test-pattern PATH --size SIZE` with `more` options after it.
fn test_pattern(path: &Path, size: &str, more: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hark-cli")).arg("test-pattern").arg(path).args(["--size", size]).args(more).output().unwrap()
}

async fn server(service_accounts: Vec<String>) -> (hark_server::RunningServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = hark_server::config::Config { service_accounts, ..Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, config, &dir.path().join("server"), Arc::new(hark_server::clock::SystemClock)).await.unwrap();
    let base = format!("http://{}", server.addr());
    (server, base, dir)
}

/// Waits for a line containing `what` on a child's stdout (in a thread; the pipe stays open).
async fn wait_for_line(child: &mut Child, what: &'static str) -> std::io::Lines<std::io::BufReader<std::process::ChildStdout>> {
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let found = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines.next().expect("exited").unwrap();
            if line.contains(what) {
                return lines;
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), found).await.expect("in time").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clis_record_each_others_video() {
    let (server, base, dir) = server(Vec::new()).await;
    let bob_out = dir.path().join("bob-saw.y4m");
    // Options after the command, the way people type them. Both cameras stamp each picture with
    // the time it was made: bob records alice's, and alice reads how long bob's took to reach
    // her decoder.
    let bob_video = format!("record:{}", bob_out.display());
    let mut bob = Killed(
        cli(&base, &["answer", "--auto", "--user", "bob", "--camera", "test-clock", "--video-out", &bob_video])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _bob_output = wait_for_line(&mut bob.0, "signed in").await;
    let output = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            cli(&base, &["call", "bob", "--video", "--duration", "5", "--user", "alice", "--camera", "test-clock", "--video-out", "latency", "--json"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "hark-cli call failed: {}", String::from_utf8_lossy(&output.stderr));
    let bob_status = tokio::task::spawn_blocking(move || bob.0.wait().unwrap()).await.unwrap();
    assert!(bob_status.success());

    // Bob decoded alice's clock stamps: rising, every frame readable.
    let (stamps, size) = recorded(&bob_out);
    assert_eq!(size, (640, 360));
    let read: Vec<u32> = stamps.iter().map(|n| n.expect("bob: a frame without its stamp")).collect();
    assert!(read.windows(2).all(|w| w[1] > w[0]), "bob: stamps go up");
    // About four seconds of a five-second call carry video (setup and the keyframe first).
    assert!(read.len() >= 100, "bob: {} frames", read.len());
    // Alice read the capture time on bob's pictures as she decoded them.
    let latency = String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|e| e["event"] == "video_latency").expect("alice's video_latency line");
    assert_eq!(latency["user"], "bob");
    assert!(latency["frames"].as_u64().unwrap() >= 100 && latency["unread"] == 0, "{latency}");
    println!("capture -> decoded, bob to alice: {latency}");
    // On loopback it is tens of milliseconds; a second would be frames queueing somewhere.
    assert!(latency["p50_ms"].as_u64().is_some_and(|ms| ms < 1000), "{latency}");
    server.shutdown().await;
}

/// Bob's window shows alice's video in a 480x270 view: his side says so (`video_size`), and
/// alice, who would send 1280x720, sends him pictures no larger than that view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_sends_no_more_pixels_than_the_receiver_shows() {
    let (server, base, _dir) = server(Vec::new()).await;
    let mut bob = Killed(
        cli(&base, &["answer", "--auto", "--user", "bob", "--camera", "none", "--video-out", "count", "--video-shown", "480x270", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let bob_lines = wait_for_line(&mut bob.0, "signed_in").await;
    let output = tokio::task::spawn_blocking({
        let base = base.clone();
        move || cli(&base, &["call", "bob", "--video", "--duration", "4", "--user", "alice", "--camera", "test-pattern", "--hd"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "hark-cli call failed: {}", String::from_utf8_lossy(&output.stderr));
    let counted = tokio::task::spawn_blocking(move || {
        bob_lines.map_while(Result::ok).filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok()).find(|e| e["event"] == "video_frames")
    })
    .await
    .unwrap()
    .expect("bob's video_frames line");
    assert_eq!((counted["width"].as_u64(), counted["height"].as_u64()), (Some(480), Some(270)), "{counted}");
    assert!(counted["frames"].as_u64().is_some_and(|n| n >= 30), "{counted}");
    server.shutdown().await;
}

#[test]
fn a_shown_size_that_is_not_one_is_refused() {
    for bad in ["0x270", "480", "480x", "axb", "9000x100"] {
        let output = Command::new(env!("CARGO_BIN_EXE_hark-cli")).args(["--video-shown", bad, "history"]).output().unwrap();
        assert!(!output.status.success(), "{bad} was taken");
        assert!(String::from_utf8_lossy(&output.stderr).contains("is not a view size"), "{bad}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_service_sends_your_own_video_back_a_second_later() {
    let (server, base, dir) = server(vec!["echo".into()]).await;
    let mut echo = Killed(cli(&base, &["echo", "--lines", "1"]).stdout(Stdio::piped()).spawn().unwrap());
    let _echo_output = wait_for_line(&mut echo.0, "signed in").await;
    let seen = dir.path().join("seen.y4m");
    let video_out = format!("record:{}", seen.display());
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking({
        let base = base.clone();
        move || cli(&base, &["call", "echo", "--video", "--duration", "5", "--user", "alice", "--camera", "test-pattern", "--video-out", &video_out]).status().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    let (numbers, _) = recorded(&seen);
    let read: Vec<u32> = numbers.into_iter().flatten().collect();
    assert!(read.len() >= 60, "{} echoed frames", read.len());
    assert!(read.windows(2).all(|w| w[1] >= w[0]), "our own numbers, in order (repeats while the echo waits)");
    // The echo's newest picture is about a second behind ours: in 5 s of connection our camera
    // made about 150 frames (30 fps), and what came back stops about 30 frames short of that.
    let last = *read.last().unwrap();
    println!("last echoed frame {last} after {:?}", started.elapsed());
    assert!((60..=130).contains(&last), "last echoed frame {last}");
    server.shutdown().await;
}

#[test]
fn test_pattern_writes_numbered_frames_and_refuses_a_bad_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pattern.y4m");
    let made = test_pattern(&path, "320x180", &["--frames", "12", "--fps", "15"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (numbers, size) = recorded(&path);
    assert_eq!(size, (320, 180));
    assert_eq!(numbers, (0..12).map(Some).collect::<Vec<_>>());
    let header = std::fs::read(&path).unwrap();
    assert!(header.starts_with(b"YUV4MPEG2 W320 H180 F15:1"), "{}", String::from_utf8_lossy(&header[..40]));

    for size in ["0x180", "320", "axb"] {
        let refused = test_pattern(&dir.path().join("bad.y4m"), size, &[]);
        assert!(!refused.status.success(), "--size {size} was taken");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("WIDTHxHEIGHT"), "{}", String::from_utf8_lossy(&refused.stderr));
        assert!(!dir.path().join("bad.y4m").exists(), "nothing is written for --size {size}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_file_that_is_not_420_is_refused_and_a_truncated_one_ends_video_not_the_call() {
    let (server, base, dir) = server(Vec::new()).await;

    // Not 4:2:0: refused before anything is dialled, with the reason.
    let not_420 = dir.path().join("444.y4m");
    let mut bytes = b"YUV4MPEG2 W64 H64 F30:1 C444\nFRAME\n".to_vec();
    bytes.resize(bytes.len() + 64 * 64 * 3, 128);
    std::fs::write(&not_420, bytes).unwrap();
    let camera = format!("file:{}", not_420.display());
    let refused = cli(&base, &["call", "bob", "--video", "--user", "alice", "--camera", &camera]).output().unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("4:2:0"), "{said}");

    // Truncated: twelve frames and half of a thirteenth. The sender plays what is there, then
    // says its camera failed; the call goes on to its end, and bob saw the frames that were whole.
    let truncated = dir.path().join("truncated.y4m");
    assert!(test_pattern(&truncated, "320x180", &["--frames", "13", "--fps", "30"]).status.success());
    let length = std::fs::metadata(&truncated).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&truncated).unwrap().set_len(length - 320 * 180 * 3 / 4).unwrap();

    let bob_out = dir.path().join("bob-saw.y4m");
    let bob_video = format!("record:{}", bob_out.display());
    let mut bob = Killed(cli(&base, &["answer", "--auto", "--user", "bob", "--video-out", &bob_video]).stdout(Stdio::piped()).spawn().unwrap());
    let _bob_output = wait_for_line(&mut bob.0, "signed in").await;
    let camera = format!("file:{}", truncated.display());
    let alice = tokio::task::spawn_blocking({
        let base = base.clone();
        move || cli(&base, &["call", "bob", "--video", "--duration", "4", "--json", "--user", "alice", "--camera", &camera]).output().unwrap()
    })
    .await
    .unwrap();
    let events = String::from_utf8_lossy(&alice.stdout);
    assert!(alice.status.success(), "{events}");
    assert!(events.contains("\"camera_error\""), "the camera's failure is said: {events}");
    assert!(events.contains("\"call_ended\"") && events.contains("\"reason\":\"hangup\""), "the call ran to its end: {events}");
    let (numbers, _) = recorded(&bob_out);
    assert!(!numbers.is_empty() && numbers.iter().all(|n| n.is_some_and(|n| n < 12)), "bob saw whole frames only: {numbers:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_camera_on_a_machine_without_one_is_an_error_and_the_video_call_goes_on() {
    // The real camera path (V4L2 through nokhwa): on a machine with no camera, as CI is.
    let listed = Command::new(env!("CARGO_BIN_EXE_hark-cli")).args(["cameras", "--json"]).output().unwrap();
    assert!(listed.status.success());
    let cameras: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(cameras["event"], "cameras");
    if cameras["cameras"].as_array().is_some_and(|list| !list.is_empty()) {
        println!("this machine has a camera ({cameras}); the no-camera case cannot be shown here");
        return;
    }
    let (server, base, dir) = server(Vec::new()).await;
    let alice_out = dir.path().join("alice-saw.y4m");
    let mut bob = Killed(cli(&base, &["answer", "--auto", "--user", "bob", "--camera", "test-pattern"]).stdout(Stdio::piped()).spawn().unwrap());
    let _bob_output = wait_for_line(&mut bob.0, "signed in").await;
    let alice_video = format!("record:{}", alice_out.display());
    let output = tokio::task::spawn_blocking({
        let base = base.clone();
        move || cli(&base, &["call", "bob", "--video", "--duration", "3", "--user", "alice", "--camera", "default", "--json", "--video-out", &alice_video]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "hark-cli call failed: {}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let error = events.iter().find(|e| e["event"] == "camera_error").expect("a camera_error event");
    assert_eq!(error["message"], "cannot open default camera: no camera found");
    let ended = events.iter().find(|e| e["event"] == "call_ended").expect("the call ran to its end");
    assert!(ended["duration_s"].as_u64().is_some_and(|s| s >= 2), "{ended}");
    // Bob's video still reached alice.
    let (numbers, _) = recorded(&alice_out);
    assert!(numbers.iter().flatten().count() >= 40, "{} frames of bob", numbers.len());
    let _ = bob.0.kill();
    server.shutdown().await;
}
