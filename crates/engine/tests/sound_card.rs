//! The real sound card path, with no sound card: a private PulseAudio daemon with a null sink, a
//! tone played through cpal into that sink (via ALSA's `default`, which libasound2-plugins routes to
//! PulseAudio), and captured back from the sink's monitor through cpal again.
//!
//! The daemon is found through environment variables, which are process-wide, and ALSA decides
//! whether `default` means PulseAudio when it first loads its configuration. So this binary holds a
//! single test that sets the environment and starts the daemon before anything touches cpal; add
//! new checks to it rather than new `#[test]`s beside it.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hark_engine::audio::{goertzel_power, AudioSink, AudioSource, ToneSource, FRAME};
use hark_engine::sound_card::{list_devices, DeviceWatcher, Direction, MicrophoneSource, SoundCardError, SpeakerSink};

/// STACK.md: capture through the monitor stays silent for about 1.5 s after it opens (2 s here).
const TONE_PATIENCE: Duration = Duration::from_secs(10);
const DAEMON_PATIENCE: Duration = Duration::from_secs(10);
/// The stall watch takes 2 s; an error from the backend is quicker.
const LOSS_PATIENCE: Duration = Duration::from_secs(6);
/// What a `read_frame` or `write_frame` may take at worst, generously: the pipeline calls them every
/// 20 ms from a tokio task, and the point is to catch one that waits on the device.
const CALL_LIMIT: Duration = Duration::from_millis(200);
/// 100 ms at 48 kHz: 44 whole periods of 440 Hz, so Goertzel's bins line up with the tone.
const WINDOW: usize = 4_800;

/// A PulseAudio daemon of the test's own, killed when this is dropped (a failing test included).
struct PulseDaemon {
    child: Child,
    log: std::path::PathBuf,
    // Dropped after the daemon is dead (fields drop in order, after `Drop::drop`).
    _runtime_dir: tempfile::TempDir,
}

impl PulseDaemon {
    /// Points this process (and so cpal and every child) at a fresh runtime directory, starts the
    /// daemon there with a null sink `virt_speaker`, waits until it answers, and makes the sink and
    /// its monitor the defaults.
    fn start() -> PulseDaemon {
        let runtime_dir = tempfile::tempdir().expect("temp dir");
        let dir = runtime_dir.path();
        let client_config = dir.join("client.conf");
        // No autospawn: a client that loses the daemon must not start another one, which would
        // outlive the test.
        std::fs::write(&client_config, "autospawn = no\n").expect("write client.conf");
        std::env::set_var("XDG_RUNTIME_DIR", dir);
        // Named explicitly so neither pactl nor the ALSA plugin can reach a desktop's own server
        // (through an X11 property or a client.conf).
        std::env::set_var("PULSE_SERVER", format!("unix:{}", dir.join("pulse/native").display()));
        std::env::set_var("PULSE_CLIENTCONFIG", &client_config);

        let log = dir.join("pulseaudio.log");
        let log_file = File::create(&log).expect("create the daemon's log");
        // In the foreground rather than `-D`: the test then owns the process and can kill it.
        let child = Command::new("pulseaudio")
            .args([
                "--daemonize=no",
                "-n",
                "--exit-idle-time=-1",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=virt_speaker",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `pulseaudio` ({e}): this test needs it (Debian packages pulseaudio and libasound2-plugins)")
            });
        let mut daemon = PulseDaemon { child, log, _runtime_dir: runtime_dir };

        let deadline = Instant::now() + DAEMON_PATIENCE;
        while !pactl(&["info"]) {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("pulseaudio exited ({status}):\n{}", daemon.log_text());
            }
            assert!(Instant::now() < deadline, "pulseaudio did not answer within {DAEMON_PATIENCE:?}:\n{}", daemon.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(pactl(&["set-default-sink", "virt_speaker"]), "could not set the default sink");
        assert!(pactl(&["set-default-source", "virt_speaker.monitor"]), "could not set the default source");
        daemon
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl PulseDaemon {
    /// Kills the daemon (idempotent).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PulseDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One 20 ms tick of a pipeline: a frame to the speaker and one from the microphone, timed.
fn exchange_frame(speaker: &mut SpeakerSink, microphone: &mut MicrophoneSource, out: &[i16; FRAME], slowest: &mut Duration) -> [i16; FRAME] {
    let mut frame = [0; FRAME];
    let started = Instant::now();
    speaker.write_frame(out);
    microphone.read_frame(&mut frame);
    *slowest = (*slowest).max(started.elapsed());
    frame
}

/// Runs `pactl` against the test's daemon; whether it succeeded.
fn pactl(args: &[&str]) -> bool {
    Command::new("pactl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run `pactl` ({e}): install the Debian package pulseaudio-utils"))
        .success()
}

fn tone_is_clear(window: &[i16]) -> (bool, f64, f64) {
    let at_440 = goertzel_power(window, 440.0);
    let at_880 = goertzel_power(window, 880.0);
    (at_440 > 1e-3 && at_440 > 100.0 * at_880, at_440, at_880)
}

#[test]
fn a_tone_goes_round_a_null_sink_through_cpal() {
    let started = Instant::now();
    let mut daemon = PulseDaemon::start();
    let daemon_ready = started.elapsed();

    // Listing: ALSA always offers `default`, which is each direction's default.
    let listed_at = Instant::now();
    let devices = list_devices().expect("list devices");
    let list_time = listed_at.elapsed();
    for direction in [Direction::Input, Direction::Output] {
        let of_direction: Vec<_> = devices.iter().filter(|d| d.direction == direction).collect();
        assert!(!of_direction.is_empty(), "no {direction} device in {devices:#?}");
        let defaults = of_direction.iter().filter(|d| d.is_default).count();
        assert_eq!(defaults, 1, "{direction} devices need exactly one default: {devices:#?}");
    }
    assert_eq!(DeviceWatcher::new().poll(), None, "nothing changed, yet the watcher saw a change");

    // An id that names nothing is a clear error, not a fallback to some other device.
    for result in [MicrophoneSource::open(Some("alsa:no-such-device")).err(), MicrophoneSource::open(Some("not an id")).err()] {
        assert!(matches!(result, Some(SoundCardError::NotFound { direction: Direction::Input, .. })), "{result:?}");
    }
    let result = SpeakerSink::open(Some("alsa:no-such-device")).err();
    assert!(matches!(result, Some(SoundCardError::NotFound { direction: Direction::Output, .. })), "{result:?}");

    // The round trip: play in real time, capture alongside, until the tone is heard.
    let opened_at = Instant::now();
    let mut speaker = SpeakerSink::open(None).expect("open the default speaker");
    let mut microphone = MicrophoneSource::open(None).expect("open the default microphone");
    let open_time = opened_at.elapsed();
    let mut tone = ToneSource::new(440.0);
    let mut captured: Vec<i16> = Vec::new();
    let playing_since = Instant::now();
    let mut next_frame_at = playing_since;
    let mut slowest_call = Duration::ZERO;
    let heard = loop {
        let mut out = [0; FRAME];
        tone.read_frame(&mut out);
        captured.extend_from_slice(&exchange_frame(&mut speaker, &mut microphone, &out, &mut slowest_call));

        if captured.len() >= WINDOW {
            let window = &captured[captured.len() - WINDOW..];
            if tone_is_clear(window).0 {
                break playing_since.elapsed();
            }
        }
        if playing_since.elapsed() > TONE_PATIENCE {
            let window = &captured[captured.len().saturating_sub(WINDOW)..];
            let (_, at_440, at_880) = tone_is_clear(window);
            let peak = captured.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            panic!(
                "no clear 440 Hz tone within {TONE_PATIENCE:?}: last 100 ms had power {at_440:.2e} at 440 Hz and \
                 {at_880:.2e} at 880 Hz; peak {peak} over {} samples; lost: speaker {}, microphone {}\n{}",
                captured.len(),
                speaker.is_lost(),
                microphone.is_lost(),
                daemon.log_text()
            );
        }
        // Pacing, as the pipeline does: one frame every 20 ms, on a schedule that does not drift.
        next_frame_at += Duration::from_millis(20);
        std::thread::sleep(next_frame_at.saturating_duration_since(Instant::now()));
    };
    assert!(!speaker.is_lost() && !microphone.is_lost(), "a healthy device was reported lost");
    let window = &captured[captured.len() - WINDOW..];
    let (_, at_440, at_880) = tone_is_clear(window);

    // The sound server dies: both devices must say they are lost, and keep answering at once.
    daemon.stop();
    let stopped_at = Instant::now();
    let lost_after = loop {
        let mut out = [0; FRAME];
        tone.read_frame(&mut out);
        exchange_frame(&mut speaker, &mut microphone, &out, &mut slowest_call);
        if speaker.is_lost() && microphone.is_lost() {
            break stopped_at.elapsed();
        }
        assert!(
            stopped_at.elapsed() < LOSS_PATIENCE,
            "the sound server died {LOSS_PATIENCE:?} ago; lost: speaker {}, microphone {}",
            speaker.is_lost(),
            microphone.is_lost()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(slowest_call < CALL_LIMIT, "a frame exchange took {slowest_call:?}");
    eprintln!(
        "daemon ready in {daemon_ready:?}; {} devices listed in {list_time:?}; devices opened in {open_time:?}; \
         tone heard after {heard:?} (power {at_440:.2e} at 440 Hz, {at_880:.2e} at 880 Hz); \
         loss noticed {lost_after:?} after the daemon died; slowest frame exchange {slowest_call:?}",
        devices.len()
    );
}
