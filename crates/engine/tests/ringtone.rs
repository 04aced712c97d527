//! The ringtone player end to end on a [`CaptureOutput`]: what it "plays" is recorded at real-time
//! pace as 48 kHz mono, and the tests check the recorded signal itself (its frequencies, its
//! level, whether it grows), not merely which calls were made.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hark_engine::audio::goertzel_power;
use hark_engine::ringtone::{
    bundled_names, CaptureOutput, RingtoneChoice, RingtoneError, RingtoneErrorCode, RingtoneEvent, RingtoneKind, RingtonePlayer, Sound,
};

const WAIT: Duration = Duration::from_secs(5);

struct Rig {
    player: RingtonePlayer,
    events: Receiver<RingtoneEvent>,
    recording: Arc<Mutex<Vec<i16>>>,
}

fn rig() -> Rig {
    let output = CaptureOutput::new();
    let recording = output.recording();
    let (player, events) = RingtonePlayer::new(output);
    Rig { player, events, recording }
}

impl Rig {
    /// The next event, failing the test if none comes in time.
    fn next_event(&self) -> RingtoneEvent {
        self.events.recv_timeout(WAIT).expect("an event from the ringtone player")
    }

    /// Waits until the recording holds at least `len` samples, then returns it all.
    fn recorded_at_least(&self, len: usize) -> Vec<i16> {
        let deadline = Instant::now() + WAIT;
        loop {
            let recorded = self.recorded();
            if recorded.len() >= len {
                return recorded;
            }
            assert!(Instant::now() < deadline, "only {} of {len} samples recorded", recorded.len());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn recorded(&self) -> Vec<i16> {
        self.recording.lock().expect("recording lock").clone()
    }

    fn clear(&self) {
        self.recording.lock().expect("recording lock").clear();
    }
}

fn write_tone(path: &Path, frequency: f64, sample_rate: u32, channels: u16, seconds: f64) {
    let spec = hound::WavSpec { channels, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    let frames = (seconds * f64::from(sample_rate)) as usize;
    for n in 0..frames {
        let value =
            (0.5 * 32767.0 * (std::f64::consts::TAU * frequency * n as f64 / f64::from(sample_rate)).sin()) as i16;
        for _ in 0..channels {
            writer.write_sample(value).expect("write sample");
        }
    }
    writer.finalize().expect("finalize wav");
}

/// Goertzel power of `frequency` relative to the strongest of a few frequencies we never put in.
fn dominates(samples: &[i16], frequency: f64) -> bool {
    let wanted = goertzel_power(samples, frequency);
    let stray = [300.0, 700.0, 1000.0, 1500.0, 2000.0].iter().map(|&f| goertzel_power(samples, f)).fold(0.0, f64::max);
    wanted > 1e-3 && wanted > 20.0 * stray
}

/// A quarter second of the sound starting at its first 100 ms (inside the first burst of every
/// bundled sound).
fn opening(samples: &[i16]) -> &[i16] {
    &samples[4_800..16_800]
}

fn decoded_default(kind: RingtoneKind) -> Vec<i16> {
    Sound::decode(&kind.default_choice()).expect("bundled default decodes").to_mono_48k()
}

#[test]
fn bundled_sounds_are_embedded_and_decode() {
    let names: Vec<_> = bundled_names().collect();
    assert_eq!(names, ["classic", "chime", "dialing"]);
    for name in names {
        let sound = Sound::decode(&RingtoneChoice::Bundled(name.into())).expect("bundled sound decodes");
        assert_eq!((sound.channels(), sound.sample_rate()), (1, 48_000), "{name}");
        let seconds = sound.samples().len() as f64 / 48_000.0;
        assert!((2.0..=4.0).contains(&seconds), "{name} lasts {seconds} s");
        assert_eq!(sound.source(), format!("bundled:{name}"));
    }
    // The defaults are told apart by frequency: the classic ring trills 440/480 Hz, the ring-back is 425 Hz.
    let classic = decoded_default(RingtoneKind::Incoming);
    assert!(goertzel_power(opening(&classic), 440.0) > 1e-3);
    assert!(goertzel_power(opening(&classic), 480.0) > 1e-3);
    assert!(dominates(opening(&decoded_default(RingtoneKind::Dialing)), 425.0));
}

#[test]
fn custom_wav_is_accepted_and_played() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mine.wav");
    write_tone(&path, 1234.0, 48_000, 1, 1.0);
    let rig = rig();

    rig.player
        .set_choice(RingtoneKind::Incoming, RingtoneChoice::Custom(path.clone()))
        .expect("a good WAV is accepted");
    rig.player.play(RingtoneKind::Incoming);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Incoming, source: format!("custom:{}", path.display()) }
    );
    let recorded = rig.recorded_at_least(24_000);
    assert!(dominates(&recorded[..24_000], 1234.0), "the recording carries the custom file's 1234 Hz");
    assert!(goertzel_power(&recorded[..24_000], 440.0) < 1e-5, "and not the default's 440 Hz");
}

#[test]
fn custom_wav_at_another_rate_and_in_stereo_is_played_at_its_pitch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stereo.wav");
    write_tone(&path, 1234.0, 44_100, 2, 0.5);
    let rig = rig();

    rig.player.set_choice(RingtoneKind::Dialing, RingtoneChoice::Custom(path)).expect("accepted");
    rig.player.play(RingtoneKind::Dialing);
    assert!(matches!(rig.next_event(), RingtoneEvent::Playing { kind: RingtoneKind::Dialing, .. }));
    // 0.6 s: more than the 0.5 s file, so the loop's seam is in the recording too.
    let recorded = rig.recorded_at_least(28_800);
    assert!(dominates(&recorded[..28_800], 1234.0));
}

#[test]
fn corrupt_file_is_an_error_and_the_default_plays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.mp3");
    // Deterministic "random" bytes (an LCG), so the test cannot pass or fail by luck.
    let mut state: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        })
        .collect();
    std::fs::write(&path, bytes).expect("write corrupt file");
    let rig = rig();

    let error = rig.player.set_choice(RingtoneKind::Incoming, RingtoneChoice::Custom(path)).expect_err("rejected");
    assert!(matches!(error, RingtoneError::Decode { .. }), "{error:?}");
    assert_eq!(error.code(), RingtoneErrorCode::RingtoneUndecodable);
    match rig.next_event() {
        RingtoneEvent::Error { kind: Some(RingtoneKind::Incoming), code: RingtoneErrorCode::RingtoneUndecodable, message } => {
            assert!(message.contains("broken.mp3") && message.contains("bundled:classic"), "{message}")
        }
        other => panic!("expected an error event, got {other:?}"),
    }

    rig.player.play(RingtoneKind::Incoming);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Incoming, source: "bundled:classic".into() }
    );
    let recorded = rig.recorded_at_least(16_800);
    let default = decoded_default(RingtoneKind::Incoming);
    assert_eq!(recorded[..16_800], default[..16_800], "what plays is the bundled default, sample for sample");
}

#[test]
fn missing_file_is_an_error_and_the_default_plays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gone.ogg");
    let rig = rig();

    let error =
        rig.player.set_choice(RingtoneKind::Dialing, RingtoneChoice::Custom(path.clone())).expect_err("rejected");
    assert_eq!(error.code(), RingtoneErrorCode::RingtoneUnreadable);
    assert!(matches!(&error, RingtoneError::Open { path: p, .. } if *p == path), "{error:?}");
    assert!(matches!(
        rig.next_event(),
        RingtoneEvent::Error { kind: Some(RingtoneKind::Dialing), code: RingtoneErrorCode::RingtoneUnreadable, .. }
    ));

    rig.player.play(RingtoneKind::Dialing);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Dialing, source: "bundled:dialing".into() }
    );
    let recorded = rig.recorded_at_least(16_800);
    assert!(dominates(opening(&recorded), 425.0), "the ring-back default plays");
}

#[test]
fn a_bad_choice_replaces_a_good_one_with_the_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.wav");
    write_tone(&good, 1234.0, 48_000, 1, 1.0);
    let rig = rig();

    rig.player.set_choice(RingtoneKind::Incoming, RingtoneChoice::Custom(good)).expect("accepted");
    let error =
        rig.player.set_choice(RingtoneKind::Incoming, RingtoneChoice::Bundled("nope".into())).expect_err("rejected");
    assert_eq!(error, RingtoneError::UnknownBundled("nope".into()));
    assert!(matches!(rig.next_event(), RingtoneEvent::Error { code: RingtoneErrorCode::RingtoneUnknown, .. }));
    rig.player.play(RingtoneKind::Incoming);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Incoming, source: "bundled:classic".into() }
    );
}

#[test]
fn another_bundled_sound_can_be_chosen() {
    let rig = rig();
    rig.player.set_choice(RingtoneKind::Incoming, RingtoneChoice::Bundled("chime".into())).expect("accepted");
    rig.player.play(RingtoneKind::Incoming);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Incoming, source: "bundled:chime".into() }
    );
    // The arpeggio opens on C5 (523.25 Hz).
    let recorded = rig.recorded_at_least(7_000);
    assert!(dominates(&recorded[..7_000], 523.25));
}

#[test]
fn muted_play_makes_no_sound() {
    let rig = rig();
    rig.player.set_muted(true);
    rig.player.play(RingtoneKind::Incoming);
    assert_eq!(rig.next_event(), RingtoneEvent::Muted { kind: RingtoneKind::Incoming });
    std::thread::sleep(Duration::from_millis(300));
    assert!(rig.recorded().is_empty(), "nothing is played while muted");

    rig.player.set_muted(false);
    rig.player.play(RingtoneKind::Incoming);
    assert!(matches!(rig.next_event(), RingtoneEvent::Playing { .. }));
    rig.recorded_at_least(960);
}

#[test]
fn muting_silences_a_ring_in_progress() {
    let rig = rig();
    rig.player.play(RingtoneKind::Incoming);
    assert!(matches!(rig.next_event(), RingtoneEvent::Playing { .. }));
    rig.recorded_at_least(4_800);
    rig.player.set_muted(true);
    assert_eq!(rig.next_event(), RingtoneEvent::Stopped);
    let len = rig.recorded().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rig.recorded().len(), len);
}

#[test]
fn stop_stops_at_once_and_the_ring_loops_until_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("short.wav");
    write_tone(&path, 1234.0, 48_000, 1, 0.1);
    let rig = rig();
    rig.player.set_choice(RingtoneKind::Incoming, RingtoneChoice::Custom(path)).expect("accepted");

    rig.player.play(RingtoneKind::Incoming);
    assert!(matches!(rig.next_event(), RingtoneEvent::Playing { .. }));
    // 0.3 s recorded from a 0.1 s file: it loops.
    let recorded = rig.recorded_at_least(14_400);
    assert!(dominates(&recorded[9_600..14_400], 1234.0), "the third pass still carries the tone");

    let asked = Instant::now();
    rig.player.stop();
    assert_eq!(rig.next_event(), RingtoneEvent::Stopped);
    assert!(asked.elapsed() < Duration::from_millis(250), "stopping took {:?}", asked.elapsed());
    let len = rig.recorded().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rig.recorded().len(), len, "the recording stops growing at stop");
}

#[test]
fn volume_scales_the_amplitude() {
    let rig = rig();
    rig.player.play(RingtoneKind::Dialing);
    assert!(matches!(rig.next_event(), RingtoneEvent::Playing { .. }));
    let loud = rig.recorded_at_least(16_800)[..16_800].to_vec();
    rig.player.stop();
    assert_eq!(rig.next_event(), RingtoneEvent::Stopped);
    rig.clear();

    rig.player.set_volume(0.25);
    rig.player.play(RingtoneKind::Dialing);
    assert!(matches!(rig.next_event(), RingtoneEvent::Playing { .. }));
    let quiet = rig.recorded_at_least(16_800);
    for (i, (&l, &q)) in loud.iter().zip(&quiet[..16_800]).enumerate() {
        assert!((f32::from(l) * 0.25 - f32::from(q)).abs() <= 1.0, "sample {i}: {l} at full volume, {q} at 0.25");
    }
    let peak = |s: &[i16]| s.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
    assert!(peak(&loud) > 10_000 && peak(&quiet[..16_800]) < 3_500);

    // Changing the volume while ringing applies at once; 0 is silence.
    rig.player.set_volume(0.0);
    let len = rig.recorded().len();
    // Wait for the change to reach the output: the first all-zero 20 ms block after `len`. It
    // must come while the dial tone still sounds (its first second, 48,000 samples), so the
    // tone's own pause cannot pass for it.
    let deadline = Instant::now() + WAIT;
    let start = loop {
        let recorded = rig.recorded();
        if let Some(block) = recorded[len..].chunks_exact(960).position(|b| b.iter().all(|&s| s == 0)) {
            break len + block * 960;
        }
        assert!(Instant::now() < deadline, "volume 0 never reached the output");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(start + 4_800 <= 48_000, "silence came only with the tone's own pause, at sample {start}");
    let later = rig.recorded_at_least(start + 4_800);
    assert!(later[start..start + 4_800].iter().all(|&s| s == 0), "volume 0 is silent");
}

#[test]
fn play_switches_kinds_and_repeating_it_does_not_restart() {
    let rig = rig();
    rig.player.play(RingtoneKind::Dialing);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Dialing, source: "bundled:dialing".into() }
    );
    rig.player.play(RingtoneKind::Dialing);
    rig.player.play(RingtoneKind::Incoming);
    assert_eq!(
        rig.next_event(),
        RingtoneEvent::Playing { kind: RingtoneKind::Incoming, source: "bundled:classic".into() }
    );
    rig.player.stop();
    assert_eq!(rig.next_event(), RingtoneEvent::Stopped);
    // A second stop with nothing playing says nothing.
    rig.player.stop();
    assert!(rig.events.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn preview_plays_once_even_when_muted() {
    let rig = rig();
    rig.player.set_muted(true);
    rig.player.preview(&RingtoneChoice::Bundled("chime".into())).expect("preview");
    assert_eq!(rig.next_event(), RingtoneEvent::Previewing { source: "bundled:chime".into() });
    rig.recorded_at_least(4_800);
    assert!(rig.player.preview(&RingtoneChoice::Bundled("nope".into())).is_err());
}

#[test]
fn sound_card_output_plays_or_reports_an_error_without_panicking() {
    // CI has no sound card (unless PulseAudio runs): either outcome is fine, a panic or hang is not.
    let (player, events) = RingtonePlayer::with_sound_card();
    player.set_volume(0.0);
    player.play(RingtoneKind::Incoming);
    match events.recv_timeout(Duration::from_secs(10)).expect("an event") {
        RingtoneEvent::Playing { source, .. } => {
            assert_eq!(source, "bundled:classic");
            player.stop();
            assert_eq!(events.recv_timeout(WAIT).expect("stopped"), RingtoneEvent::Stopped);
        }
        RingtoneEvent::Error { code, message, .. } => {
            assert_eq!(code, RingtoneErrorCode::RingtoneNoOutput, "{message}");
            // The player still works after a device error.
            player.play(RingtoneKind::Incoming);
            assert!(events.recv_timeout(Duration::from_secs(10)).is_ok());
        }
        other => panic!("unexpected {other:?}"),
    }
}
