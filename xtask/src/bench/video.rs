//! `cargo xtask bench video`: hark-cli against Chromium's own WebRTC in the same 1:1 video call.
//!
//! Builds release hark-server and hark-cli, makes sure the UI's npm packages are there (the
//! driver uses playwright-core and Debian's Chromium, as the browser tests do), and runs
//! `ui/tests/browser/video-bench.mjs`, which makes the call with two hark-cli processes and with
//! two headless Chromiums side by side through one hark-server, and prints a Markdown table of
//! figures for both (CPU per side at 640x360 and 1280x720, accept -> first decoded frame, capture ->
//! decoded at 640x360, hark-cli's RSS at 720p, and hark-cli's mesh of nine). The table goes into docs/BENCHMARKS.md under this benchmark's title.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{install_ui_packages, record, target_dir, utc_now, workspace_root, Machine};

const SECTION_TITLE: &str = "## Video calls against Chromium (cargo xtask bench video)";

pub const USAGE: &str = "\
usage: cargo xtask bench video [--seconds S] [--calls N] [--no-record]

  the same 1:1 video call made by two hark-cli processes and by two headless Chromiums (their own
  WebRTC), side by side: CPU per side over S seconds (default 60) at 640x360 and 1280x720, accept
  -> first decoded frame (p50 of N calls, default 5), capture -> decoded at 640x360 (p50 each way
  over a 20 s call), hark-cli RSS at 720p, a mesh of nine hark-cli. Needs what `cargo xtask
  test` installs (Debian Chromium, the UI's npm packages).";

pub fn run(args: &[String]) -> Result<()> {
    let (mut seconds, mut calls, mut record_it) = ("60".to_owned(), "5".to_owned(), true);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => seconds = rest.next().context("--seconds needs a value")?.clone(),
            "--calls" => calls = rest.next().context("--calls needs a value")?.clone(),
            "--no-record" => record_it = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    for (name, value) in [("--seconds", &seconds), ("--calls", &calls)] {
        if !value.parse::<u32>().is_ok_and(|n| n > 0) {
            bail!("{name} takes a positive whole number, not {value:?}");
        }
    }
    let root = workspace_root();
    let command_line = std::iter::once("cargo xtask bench video".to_owned()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");

    let mut build = crate::workspace::cargo_command()?;
    build.args(["build", "--release", "--locked", "-p", "hark-server", "-p", "hark-cli"]);
    eprintln!("bench: {}", crate::workspace::describe(&build));
    if !build.status()?.success() {
        bail!("{} failed", crate::workspace::describe(&build));
    }
    install_ui_packages(&root)?;
    let target_dir = target_dir(&root);
    let output = Command::new("node")
        .current_dir(root.join("ui"))
        .args(["tests/browser/video-bench.mjs", "--seconds", &seconds, "--calls", &calls])
        .env("HARK_BIN_DIR", target_dir.join("release"))
        .stderr(Stdio::inherit())
        .output()
        .context("running node tests/browser/video-bench.mjs")?;
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{table}");
    if !output.status.success() {
        bail!("the video benchmark failed");
    }
    let machine = Machine::read();
    let section = format!(
        "{SECTION_TITLE}\n\nRun {} on {} cores ({}), {}, Linux {}; everything on this machine over loopback: one release hark-server, \
         two release hark-cli processes, two headless Debian Chromium {} browsers (software rendering), one call at a time, both stacks \
         sending the same stamped test pattern from a 30 fps Y4M file and an Opus tone or Chromium's fake beep.\n\nCommand: `{command_line}`\n\n{table}\n\
         CPU is each hark-cli process, and each Chromium's whole process tree (browser, renderer, GPU and network processes), \
         in % of one core over the window; Chromium also composites the video it shows, which hark-cli does not. Accept -> first \
         frame is measured at the side that accepts: for hark-cli from its incoming-call line to its first-frame line (it \
         accepts at once), for Chromium from the page's `call.accept` to the first frame its video element presents. \
         Capture -> decoded: each camera stamps its pictures with the wall-clock time they were made (hark-cli `--camera test-clock`; \
         the page draws a canvas and sends its `captureStream`), and the far side reads the stamp off each picture: hark-cli as it \
         is decoded, Chromium at the frame's `receiveTime` plus its `processingDuration` (requestVideoFrameCallback's metadata for \
         WebRTC video: its last packet's arrival and the time to decode it).\n",
        utc_now(),
        machine.cores,
        machine.model,
        machine.memory,
        machine.kernel,
        chromium_version(),
    );
    if record_it {
        let path = root.join("docs/BENCHMARKS.md");
        record(&path, &section)?;
        eprintln!("bench: recorded in {}", path.display());
    }
    Ok(())
}

fn chromium_version() -> String {
    Command::new("chromium")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "(version unknown)".to_owned())
}
