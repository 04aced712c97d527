//! hark-cli against the echo service, both as real processes, through a real server: a tone
//! burst sent comes back about a second later.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

use hark_engine::audio::{goertzel_power, FRAME};

mod common;

use common::{cli, Killed};

/// 0.5 s of 440 Hz, then 2.5 s of silence: a burst every 3 s when looped.
fn write_burst(path: &Path) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..144_000 {
        let t = i as f64 / 48_000.0;
        let value = if t < 0.5 { 8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin() } else { 0.0 };
        writer.write_sample(value as i16).unwrap();
    }
    writer.finalize().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tone_sent_to_the_echo_service_comes_back_a_second_later() {
    let dir = tempfile::tempdir().unwrap();
    let config = hark_server::config::Config { service_accounts: vec!["echo".into()], ..Default::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = hark_server::start(listener, config, &dir.path().join("server"), Arc::new(hark_server::clock::SystemClock)).await.unwrap();
    let base = format!("http://{}", server.addr());

    let mut echo = Killed(cli(&base, &["--json", "echo", "--lines", "2"]).stdout(Stdio::piped()).spawn().unwrap());
    // The service is up once each line has signed in.
    let stdout = echo.0.stdout.take().unwrap();
    let signed_in = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut count = 0;
        while count < 2 {
            let line = lines.next().expect("echo exited").unwrap();
            if line.contains("\"signed_in\"") {
                count += 1;
            }
        }
        lines // keep the pipe open so the service can keep writing
    });
    let _echo_output = tokio::time::timeout(std::time::Duration::from_secs(30), signed_in).await.expect("echo signed in").unwrap();

    let burst = dir.path().join("burst.wav");
    write_burst(&burst);
    let heard = dir.path().join("heard.wav");
    let mic = format!("file:{}", burst.display());
    let speaker = format!("record:{}", heard.display());
    let status = tokio::task::spawn_blocking({
        let base = base.clone();
        move || cli(&base, &["--user", "alice", "--mic", &mic, "--speaker", &speaker, "call", "echo", "--duration", "5"]).status().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "hark-cli call failed: {status}");

    // Frame k of the recording was played on the same 20 ms tick that frame k of the burst file
    // was captured, so the echo's delay is where the tone first shows up in the recording.
    let samples: Vec<i16> = hound::WavReader::open(&heard).unwrap().samples::<i16>().map(Result::unwrap).collect();
    assert!(samples.len() > 150 * FRAME, "only {} samples recorded", samples.len());
    let first = samples
        .chunks(FRAME)
        .position(|frame| goertzel_power(frame, 440.0) > 1e-3 && goertzel_power(frame, 440.0) > 30.0 * goertzel_power(frame, 880.0))
        .expect("the tone never came back");
    let delay_ms = first * 20;
    println!("echo delay: {delay_ms} ms");
    assert!((900..=1_500).contains(&delay_ms), "the echo came back after {delay_ms} ms");
    // And it comes back again on the next burst, 3 s later.
    let again = &samples[(first + 150) * FRAME..(first + 160) * FRAME];
    assert!(goertzel_power(again, 440.0) > 1e-3, "the second burst did not come back");

    let history = cli(&base, &["--user", "alice", "--json", "history"]).output().unwrap();
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains("\"completed\""), "{text}");
    server.shutdown().await;
}
