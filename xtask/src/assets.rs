//! `cargo xtask assets`: synthesizes Hark's bundled sounds into `assets/ringtones/`.
//!
//! The project ships no downloaded sounds: every bundled ringtone is computed here from sines and
//! envelopes, so its licence is ours and anyone can rebuild it. Output is deterministic (pure
//! arithmetic, no randomness, no timestamps in the files), so rerunning the command yields the same
//! bytes and `--check` can tell whether the committed files match this code. Every file is 48 kHz
//! mono 16-bit PCM WAV and at most 4 s long (under 400 KB), because hark-engine embeds them in the
//! binary and loops them while ringing.

use std::f64::consts::TAU;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::workspace;

const SAMPLE_RATE: u32 = 48_000;

const USAGE: &str = "\
usage: cargo xtask assets [--check]

  writes assets/ringtones/{classic,chime,dialing}.wav (48 kHz mono 16-bit, generated, no downloads)
  and assets/icons/*.png (the app icon from 16 to 512 px, drawn by xtask/src/icons.rs)
  --check   write nothing; fail if the files on disk differ from what this code generates";

/// One bundled sound: its file name and how to synthesize its samples.
struct Asset {
    file_name: &'static str,
    synthesize: fn() -> Vec<f64>,
}

const ASSETS: &[Asset] = &[
    Asset { file_name: "classic.wav", synthesize: classic },
    Asset { file_name: "chime.wav", synthesize: chime },
    Asset { file_name: "dialing.wav", synthesize: dialing },
];

/// Runs `cargo xtask assets ARGS…`; `args` is what follows `assets`.
pub fn run(args: &[String]) -> Result<()> {
    let check = match args.first().map(String::as_str) {
        None => false,
        Some("--check") if args.len() == 1 => true,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(_) => bail!("unexpected arguments {args:?}\n\n{USAGE}"),
    };
    let root = workspace::root()?.join("assets");
    let ringtones = ASSETS.iter().map(|asset| (root.join("ringtones").join(asset.file_name), wav_bytes(&(asset.synthesize)())));
    let icons = crate::icons::ICONS.iter().map(|(file_name, size)| (root.join("icons").join(file_name), crate::icons::png_bytes(*size)));
    let mut stale = Vec::new();
    for (path, bytes) in ringtones.chain(icons) {
        if check {
            if !matches_file(&path, &bytes) {
                stale.push(path.display().to_string());
            }
            continue;
        }
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        }
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
    if !stale.is_empty() {
        bail!("out of date (run `cargo xtask assets`): {}", stale.join(", "));
    }
    Ok(())
}

fn matches_file(path: &Path, expected: &[u8]) -> bool {
    std::fs::read(path).map(|actual| actual == expected).unwrap_or(false)
}

/// The incoming-call ring: two trill bursts then silence, 4 s in all.
///
/// A trill between 440 and 480 Hz (the North American ringing pair) switched 20 times a second is
/// what electronic desk phones made of the old bell; a soft second harmonic keeps it from sounding
/// like a test tone. The frequency switches keep the phase, so the switches do not click.
fn classic() -> Vec<f64> {
    const BURSTS: [(f64, f64); 2] = [(0.0, 0.9), (1.1, 2.0)];
    let total = seconds(4.0);
    let mut phase = 0.0;
    (0..total)
        .map(|n| {
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let frequency = if ((t * 40.0) as u64).is_multiple_of(2) { 440.0 } else { 480.0 };
            phase = (phase + TAU * frequency / f64::from(SAMPLE_RATE)) % TAU;
            let gain: f64 = BURSTS.iter().map(|&(start, end)| envelope(t, start, end, 0.02, 0.12)).sum();
            0.45 * gain * (phase.sin() + 0.2 * (2.0 * phase).sin()) / 1.2
        })
        .collect()
}

/// A second choice: a rising C-major arpeggio of bell-like notes, 3 s in all.
///
/// Each note starts fast and dies away exponentially, with an octave partial that dies faster (as
/// struck metal does); notes overlap so the arpeggio rings as a chord.
fn chime() -> Vec<f64> {
    const NOTES: [f64; 4] = [523.25, 659.26, 783.99, 1046.50];
    const SPACING: f64 = 0.16;
    let total = seconds(3.0);
    (0..total)
        .map(|n| {
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let sum: f64 = NOTES
                .iter()
                .enumerate()
                .map(|(i, &frequency)| {
                    let local = t - i as f64 * SPACING;
                    if local < 0.0 {
                        return 0.0;
                    }
                    // 5 ms attack: fast enough to sound struck, slow enough not to click.
                    let attack = (local / 0.005).min(1.0);
                    let body = (-local / 0.45).exp() * (TAU * frequency * local).sin();
                    let partial = 0.3 * (-local / 0.15).exp() * (TAU * 2.0 * frequency * local).sin();
                    attack * (body + partial)
                })
                .sum();
            // Up to four notes overlap: scale so the loudest moment stays near -6 dBFS.
            0.22 * sum
        })
        .collect()
}

/// The outgoing ring-back: 425 Hz (the ETSI ringing tone) 1 s on, 3 s off; the player loops it.
///
/// 425 Hz, not the 440/480 pair of `classic`, so a listener (or a test) tells the two apart.
fn dialing() -> Vec<f64> {
    let total = seconds(4.0);
    (0..total)
        .map(|n| {
            let t = n as f64 / f64::from(SAMPLE_RATE);
            0.4 * envelope(t, 0.0, 1.0, 0.01, 0.01) * (TAU * 425.0 * t).sin()
        })
        .collect()
}

fn seconds(duration: f64) -> usize {
    (duration * f64::from(SAMPLE_RATE)) as usize
}

/// 1 inside `start..end`, with raised-cosine ramps of `attack` and `release` seconds at the edges
/// (a hard edge on a sine is heard as a click), 0 outside.
fn envelope(t: f64, start: f64, end: f64, attack: f64, release: f64) -> f64 {
    if t < start || t >= end {
        0.0
    } else if t < start + attack {
        0.5 - 0.5 * (std::f64::consts::PI * (t - start) / attack).cos()
    } else if t > end - release {
        0.5 - 0.5 * (std::f64::consts::PI * (end - t) / release).cos()
    } else {
        1.0
    }
}

/// A 48 kHz mono 16-bit PCM WAV file holding `samples` (full scale is ±1.0; beyond it clips).
///
/// Written by hand because xtask keeps to anyhow and std: a canonical 44-byte RIFF header
/// (`RIFF` size `WAVE`, a 16-byte `fmt ` chunk, a `data` chunk), little-endian throughout.
fn wav_bytes(samples: &[f64]) -> Vec<u8> {
    const CHANNELS: u16 = 1;
    const BITS: u16 = 16;
    let block_align = CHANNELS * BITS / 8;
    let data_len = u32::try_from(samples.len() * usize::from(block_align)).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(44 + samples.len() * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVE");
    bytes.extend_from_slice(b"fmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&CHANNELS.to_le_bytes());
    bytes.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    bytes.extend_from_slice(&(SAMPLE_RATE * u32::from(block_align)).to_le_bytes());
    bytes.extend_from_slice(&block_align.to_le_bytes());
    bytes.extend_from_slice(&BITS.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for &sample in samples {
        let value = (sample * 32767.0).round().clamp(-32768.0, 32767.0) as i16;
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_short_mono_and_unclipped() {
        for asset in ASSETS {
            let samples = (asset.synthesize)();
            assert!(samples.len() <= seconds(4.0), "{} is longer than 4 s", asset.file_name);
            let peak = samples.iter().fold(0.0f64, |peak, s| peak.max(s.abs()));
            assert!(peak > 0.2 && peak < 0.95, "{} peaks at {peak}", asset.file_name);
            let bytes = wav_bytes(&samples);
            assert!(bytes.len() < 400_000, "{} is {} bytes", asset.file_name, bytes.len());
            assert_eq!(&bytes[..4], b"RIFF");
            assert_eq!(bytes.len(), 44 + samples.len() * 2);
        }
    }
}
