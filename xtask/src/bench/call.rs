//! `cargo xtask bench call`: how fast a call starts, how late its audio is, and what a call costs.
//!
//! 1. **Setup and latency** (`hark-callbench`, release): two engines and a hark-server in one
//!    process place `--calls` calls; for each, accept -> first decoded remote audio at both sides,
//!    the milestones in between (signaling, ICE, DTLS, first packet, jitter buffer) and the
//!    capture -> playout latency of clicks sent both ways. One clock, no sound card.
//! 2. **CPU and memory**: two release `hark-cli` processes call each other through a release
//!    `hark-server` on loopback (tone microphone, no speaker) and each one's user+sys CPU over a
//!    steady stretch of the call (`--cpu-seconds`, after a 2 s warm-up) is read from
//!    /proc/PID/stat, and its VmRSS half-way; once with voice processing (echo cancellation, noise
//!    suppression) on (`--voice-processing`: hark-cli turns it on by itself only for a real
//!    microphone), once with `--no-voice-processing`; a switch this hark-cli lacks is reported as
//!    "not available" rather than failing the run. Then the same call between two baresip instances (Debian package; SIP over
//!    UDP on loopback, Opus only, a WAV tone as microphone, a bridge device as speaker), run right
//!    after in the same bench run, and the ratios hark / baresip per side.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{cpu_seconds, install_ui_packages, json_number, record, rss_kib, section_opening, target_dir, verdict, workspace_root, Machine, Process, Scratch, Server};

const SECTION_TITLE: &str = "## Call (cargo xtask bench call)";

const TARGET_FIRST_AUDIO_P50_MS: f64 = 25.0;
/// Capture -> playout, to the click's sample in the played frame.
const TARGET_LATENCY_P50_MS: f64 = 45.0;
const TARGET_RATIO_PROCESSING_ON: f64 = 1.5;
/// Hark's accept -> first decoded audio against two Chromiums' in the same calls.
const TARGET_RATIO_FIRST_AUDIO_CHROMIUM: f64 = 0.6;
const TARGET_RATIO_PROCESSING_OFF: f64 = 1.0;
/// Seconds of call before CPU is counted (setup, first packets, buffers filling).
const WARM_UP_S: f64 = 2.0;
/// hark-cli's switch that turns voice processing off.
const NO_PROCESSING_FLAG: &str = "--no-voice-processing";
/// hark-cli's switch that turns it on for a synthetic microphone (it is on by default only for a
/// real one).
const PROCESSING_FLAG: &str = "--voice-processing";

const USAGE: &str = "\
usage: cargo xtask bench call [--calls N] [--cpu-seconds S] [--quick] [--no-record] [--no-baresip]

  --calls N         calls timed in process (default 20)
  --cpu-seconds S   seconds of call over which CPU is measured (default 60)
  --quick           smoke run: 5 calls, 10 s CPU runs; does not touch docs/BENCHMARKS.md
  --no-record       print the figures only; do not update docs/BENCHMARKS.md
  --no-baresip      skip the baresip comparison";

struct Options {
    calls: usize,
    cpu_s: f64,
    /// Seconds each timed call runs after both sides hear audio (clicks for the latency).
    listen_s: f64,
    quick: bool,
    record: bool,
    baresip: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options { calls: 20, cpu_s: 60.0, listen_s: 3.0, quick: false, record: true, baresip: true };
        let (mut calls, mut cpu) = (None, None);
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--calls" => calls = Some(value("--calls")?.parse::<usize>().context("--calls")?),
                "--cpu-seconds" => cpu = Some(value("--cpu-seconds")?.parse::<f64>().context("--cpu-seconds")?),
                "--quick" => options.quick = true,
                "--no-record" => options.record = false,
                "--no-baresip" => options.baresip = false,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if options.quick {
            options.calls = 5;
            options.cpu_s = 10.0;
            options.listen_s = 2.0;
            options.record = false;
        }
        if let Some(n) = calls {
            if n == 0 {
                bail!("--calls must be positive");
            }
            options.calls = n;
        }
        if let Some(s) = cpu {
            if !(s >= 1.0 && s.is_finite()) {
                bail!("--cpu-seconds must be at least 1");
            }
            options.cpu_s = s;
        }
        Ok(options)
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let options = Options::parse(args)?;
    let root = workspace_root();
    let command_line =
        std::iter::once("cargo xtask bench call".to_owned()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");

    let build = ["build", "--release", "-p", "hark-server", "-p", "hark-cli", "-p", "hark-bench"];
    eprintln!("bench: cargo {}", build.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).current_dir(&root).args(build).status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo {} failed", build.join(" "));
    }
    let target_dir = target_dir(&root);
    let bins = Bins {
        server: target_dir.join("release/hark-server"),
        cli: target_dir.join("release/hark-cli"),
        callbench: target_dir.join("release/hark-callbench"),
    };

    let mut scratch = Scratch::new()?;
    let figures = (|| -> Result<Figures> {
        // 1. Setup and latency, in process: voice processing on (as a call with a real microphone
        //    has it), then off.
        eprintln!("bench: {} calls between two engines in one process, voice processing on", options.calls);
        let setup = run_callbench(&bins.callbench, &options, true, true)?;
        eprintln!("bench: {} calls between two engines in one process, voice processing off", options.calls);
        let setup_off = run_callbench(&bins.callbench, &options, false, true)?;
        eprintln!("bench: {} calls between two engines in one process, connecting only after the answer", options.calls);
        let setup_late = run_callbench(&bins.callbench, &options, true, false)?;
        eprintln!("bench: {} audio calls between two Chromiums through a release hark-server", options.calls);
        let chromium = chromium_first_audio(&root, &target_dir, &options).map_err(|e| format!("{e:#}"));

        // 2. CPU: hark-cli with processing on, off, then baresip.
        let switches = Switches::of(&bins.cli)?;
        let config = scratch.path.join("bench.toml");
        std::fs::write(&config, "# Written by `cargo xtask bench call`.\n[rate_limits]\ninvites_per_minute = 1000\nlogins_per_minute = 1000\nlogins_per_source_per_minute = 1000\nregistrations_per_minute = 1000\npassword_hashes_per_second = 1000\n")?;
        let mut server = Server::start(&bins.server, &scratch.path, &config)?;
        eprintln!("bench: hark-server (pid {}) listening on {}", server.pid(), server.addr);
        let server_addr = server.addr.clone();
        let cpu = (|| -> Result<CpuFigures> {
            let hark = HarkCall { cli: &bins.cli, server: &server_addr, logs: &scratch.path };
            eprintln!("bench: hark-cli call, voice processing on, {} s", options.cpu_s);
            let on = hark.measure("on", switches.on.map(|place| (PROCESSING_FLAG, place)), options.cpu_s)?;
            server.check_alive()?;
            let off = match switches.off {
                Some(place) => {
                    eprintln!("bench: hark-cli call with {NO_PROCESSING_FLAG}, {} s", options.cpu_s);
                    Some(hark.measure("off", Some((NO_PROCESSING_FLAG, place)), options.cpu_s)?)
                }
                None => {
                    eprintln!("bench: hark-cli has no {NO_PROCESSING_FLAG}: processing off is not available");
                    None
                }
            };
            let baresip = if options.baresip {
                match baresip_call(&scratch.path, options.cpu_s) {
                    Ok(run) => Ok(run),
                    Err(e) => {
                        eprintln!("bench: baresip comparison failed: {e:#}");
                        Err(format!("{e:#}"))
                    }
                }
            } else {
                Err("skipped (--no-baresip)".to_owned())
            };
            Ok(CpuFigures { on, off, baresip })
        })();
        let stopped = server.stop();
        let cpu = cpu?;
        stopped?;
        Ok(Figures { setup, setup_off, setup_late, chromium, switches, cpu })
    })();
    let figures = match figures {
        Ok(figures) => figures,
        Err(e) => {
            scratch.keep = true;
            return Err(e.context(format!("logs in {}", scratch.path.display())));
        }
    };

    let machine = Machine::read();
    let report = figures.render(&options, &machine, &command_line);
    println!("\n{report}");
    if options.record {
        let path = root.join("docs/BENCHMARKS.md");
        record(&path, &report)?;
        eprintln!("bench: recorded in {}", path.display());
    } else {
        eprintln!("bench: not recorded in docs/BENCHMARKS.md ({})", if options.quick { "--quick" } else { "--no-record" });
    }
    Ok(())
}

struct Bins {
    server: PathBuf,
    cli: PathBuf,
    callbench: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// 1. Setup and latency.

/// hark-callbench's JSON report.
struct Setup {
    json: String,
}

impl Setup {
    fn get(&self, path: &[&str]) -> Option<f64> {
        json_number(&self.json, path)
    }
}

fn run_callbench(bin: &Path, options: &Options, processing: bool, connect_early: bool) -> Result<Setup> {
    let mut command = Command::new(bin);
    command.args(["--calls", &options.calls.to_string(), "--listen", &options.listen_s.to_string()]);
    if !processing {
        command.arg("--no-voice-processing");
    }
    if !connect_early {
        command.arg("--connect-after-answer");
    }
    let mut process = Process::spawn("hark-callbench", &mut command)?;
    let within = Duration::from_secs_f64(options.calls as f64 * (options.listen_s + 20.0) + 60.0);
    let json = process.wait_line(within, |line| line.starts_with('{').then(|| line.to_owned()))?;
    process.stop(Duration::from_secs(10))?;
    Ok(Setup { json })
}

/// Accept -> first decoded audio between two Chromiums (ui/tests/browser/audio-first-bench.mjs).
struct ChromiumFirstAudio {
    version: String,
    callee_p50: f64,
    caller_p50: f64,
    calls: usize,
}

fn chromium_first_audio(root: &Path, target_dir: &Path, options: &Options) -> Result<ChromiumFirstAudio> {
    install_ui_packages(root)?;
    let output = Command::new("node")
        .current_dir(root.join("ui"))
        .args(["tests/browser/audio-first-bench.mjs", "--calls", &options.calls.to_string()])
        .env("HARK_BIN_DIR", target_dir.join("release"))
        .stderr(Stdio::inherit())
        .output()
        .context("running node tests/browser/audio-first-bench.mjs")?;
    if !output.status.success() {
        bail!("the Chromium calls failed");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = stdout.lines().last().unwrap_or_default();
    let number = |key: &str| json_number(json, &[key]).with_context(|| format!("no {key} in the Chromium calls' report: {json}"));
    let version = json.split("\"chromium\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("?").to_owned();
    Ok(ChromiumFirstAudio { version, callee_p50: number("callee_p50")?, caller_p50: number("caller_p50")?, calls: number("calls")? as usize })
}

// ---------------------------------------------------------------------------------------------
// 2. CPU.

/// Where hark-cli takes a switch: before the subcommand, or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagPlace {
    Global,
    Subcommand,
}

/// Which voice-processing switches this hark-cli has, from its help.
#[derive(Debug, Clone, Copy)]
struct Switches {
    on: Option<FlagPlace>,
    off: Option<FlagPlace>,
}

impl Switches {
    fn of(cli: &Path) -> Result<Switches> {
        let help = |args: &[&str]| -> Result<String> {
            let output =
                Command::new(cli).args(args).output().with_context(|| format!("running {} {}", cli.display(), args.join(" ")))?;
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        let global = help(&["--help"])?;
        let call = help(&["--password", "x", "call", "--help"])?;
        let answer = help(&["--password", "x", "answer", "--help"])?;
        // `--voice-processing` is not a substring of `--no-voice-processing` (one dash before "voice").
        let place = |flag: &str| {
            if has_flag(&global, flag) {
                Some(FlagPlace::Global)
            } else if has_flag(&call, flag) && has_flag(&answer, flag) {
                Some(FlagPlace::Subcommand)
            } else {
                None
            }
        };
        Ok(Switches { on: place(PROCESSING_FLAG), off: place(NO_PROCESSING_FLAG) })
    }
}

/// Whether `help` lists `flag` (as a whole word).
fn has_flag(help: &str, flag: &str) -> bool {
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=' || c == '<')
        .any(|word| word == flag)
}

/// CPU (percent of one core, user+sys over wall) and RSS of one process in a call.
#[derive(Debug, Clone, Copy)]
struct Side {
    cpu_percent: f64,
    rss_kib: u64,
}

#[derive(Debug, Clone, Copy)]
struct CpuRun {
    caller: Side,
    callee: Side,
    seconds: f64,
}

impl CpuRun {
    fn mean_cpu(&self) -> f64 {
        (self.caller.cpu_percent + self.callee.cpu_percent) / 2.0
    }
}

/// Measures `processes` (caller, callee) over `seconds` once the call is up and warm.
fn measure_pair(caller: &mut Process, callee: &mut Process, seconds: f64) -> Result<CpuRun> {
    std::thread::sleep(Duration::from_secs_f64(WARM_UP_S));
    let pids = [caller.pid(), callee.pid()];
    let before = [cpu_seconds(pids[0])?, cpu_seconds(pids[1])?];
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds / 2.0));
    let rss = [rss_kib(pids[0])?, rss_kib(pids[1])?];
    let deadline = start + Duration::from_secs_f64(seconds);
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let after = [cpu_seconds(pids[0])?, cpu_seconds(pids[1])?];
    let wall = start.elapsed().as_secs_f64();
    for process in [&mut *caller, &mut *callee] {
        if process.exited() {
            bail!("{} ended before the measurement did", process.name);
        }
    }
    let side = |i: usize| Side { cpu_percent: 100.0 * (after[i] - before[i]) / wall, rss_kib: rss[i] };
    Ok(CpuRun { caller: side(0), callee: side(1), seconds: wall })
}

/// Waits up to `within` for a process to exit by itself, then stops it.
fn wait_exit(process: &mut Process, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if process.exited() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    process.stop(Duration::from_secs(5))
}

struct HarkCall<'a> {
    cli: &'a Path,
    server: &'a str,
    logs: &'a Path,
}

impl HarkCall<'_> {
    fn command(&self, user: &str, tone: &str, switch: Option<(&str, FlagPlace)>, log: &str) -> Result<Command> {
        let mut command = Command::new(self.cli);
        command
            .args(["--server", &format!("http://{}", self.server), "--user", user, "--password", "password123", "--register"])
            .args(["--mic", tone, "--speaker", "none", "--bind", "127.0.0.1:0"])
            .stderr(std::fs::File::create(self.logs.join(log))?);
        if let Some((flag, FlagPlace::Global)) = switch {
            command.arg(flag);
        }
        Ok(command)
    }

    /// One call of `seconds` (plus warm-up and margin) between two fresh hark-cli processes.
    fn measure(&self, tag: &str, switch: Option<(&str, FlagPlace)>, seconds: f64) -> Result<CpuRun> {
        let (caller_user, callee_user) = (format!("{tag}-caller"), format!("{tag}-callee"));
        let call_s = (WARM_UP_S + seconds + 3.0).to_string();
        let sub_flag = switch.and_then(|(flag, place)| (place == FlagPlace::Subcommand).then_some(flag));

        let mut command = self.command(&callee_user, "tone:880", switch, &format!("cli-{tag}-callee.log"))?;
        command.args(["answer", "--auto", "--duration", &call_s]).args(sub_flag);
        let mut callee = Process::spawn("hark-cli callee", &mut command)?;
        callee.wait_line(Duration::from_secs(30), |l| l.starts_with("signed in as").then_some(()))?;

        let mut command = self.command(&caller_user, "tone:440", switch, &format!("cli-{tag}-caller.log"))?;
        command.args(["call", &callee_user, "--duration", &call_s]).args(sub_flag);
        let mut caller = Process::spawn("hark-cli caller", &mut command)?;
        let hearing_callee = format!("hearing {callee_user}");
        caller.wait_line(Duration::from_secs(30), |l| (l.trim() == hearing_callee).then_some(()))?;
        let hearing_caller = format!("hearing {caller_user}");
        callee.wait_line(Duration::from_secs(30), |l| (l.trim() == hearing_caller).then_some(()))?;

        let run = measure_pair(&mut caller, &mut callee, seconds)?;
        wait_exit(&mut caller, Duration::from_secs(20))?;
        wait_exit(&mut callee, Duration::from_secs(20))?;
        Ok(run)
    }
}

/// A free UDP port on loopback (free when asked; baresip binds it a moment later).
fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A 48 kHz mono 16-bit WAV of a 440 Hz tone at a quarter of full scale (hark's `tone:440`).
fn write_tone_wav(path: &Path, seconds: f64) -> Result<()> {
    let samples = (seconds * 48_000.0) as u32;
    let mut bytes = Vec::with_capacity(44 + samples as usize * 2);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&48_000u32.to_le_bytes());
    bytes.extend_from_slice(&(48_000u32 * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&(samples * 2).to_le_bytes());
    for i in 0..samples {
        let s = (8_000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 48_000.0).sin()) as i16;
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// One baresip's configuration directory: SIP over UDP on 127.0.0.1:`sip_port`, Opus only (same
/// bitrate, in-band FEC and expected loss as hark), a WAV tone as microphone, a bridge device
/// nobody reads as speaker, auto-answer, no status line.
fn baresip_dir(dir: &Path, name: &str, sip_port: u16, rtp_ports: (u16, u16), tone: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("config"),
        format!(
            "# Written by `cargo xtask bench call`.\n\
             poll_method\tepoll\n\
             sip_listen\t127.0.0.1:{sip_port}\n\
             sip_trans_def\tudp\n\
             net_interface\t127.0.0.1\n\
             audio_player\taubridge,speaker-{name}\n\
             audio_alert\taubridge,speaker-{name}\n\
             audio_source\taufile,{tone}\n\
             ausrc_srate\t48000\n\
             auplay_srate\t48000\n\
             ausrc_channels\t1\n\
             auplay_channels\t1\n\
             rtp_ports\t{}-{}\n\
             statmode_default\toff\n\
             module_path\t/usr/lib/baresip/modules\n\
             module\topus.so\n\
             module\taufile.so\n\
             module\taubridge.so\n\
             module_app\taccount.so\n\
             module_app\tmenu.so\n\
             opus_bitrate\t32000\n\
             opus_stereo\tno\n\
             opus_sprop_stereo\tno\n\
             opus_application\tvoip\n\
             opus_inbandfec\tyes\n\
             opus_packet_loss\t10\n",
            rtp_ports.0,
            rtp_ports.1,
            tone = tone.display()
        ),
    )?;
    std::fs::write(dir.join("accounts"), format!("<sip:{name}@127.0.0.1:{sip_port};transport=udp>;regint=0;answermode=auto\n"))?;
    std::fs::write(dir.join("contacts"), "")?;
    Ok(())
}

struct BaresipRun {
    version: String,
    run: CpuRun,
}

fn baresip_version() -> Result<String> {
    let output = Command::new("baresip").arg("-h").output().context("running baresip -h")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    Ok(text.split_whitespace().find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit())).unwrap_or("?").to_owned())
}

/// The same call between two baresip instances.
fn baresip_call(scratch: &Path, seconds: f64) -> Result<BaresipRun> {
    crate::system_packages::ensure_installed(&["baresip-core"])?;
    if !crate::workspace::is_on_path("baresip") {
        bail!("baresip is not installed");
    }
    let version = baresip_version()?;
    let total = WARM_UP_S + seconds + 30.0;
    let tone = scratch.join("tone-440.wav");
    // aufile ends the call at the end of the file: longer than the call.
    write_tone_wav(&tone, total + 10.0)?;
    let (caller_port, callee_port) = (free_udp_port()?, free_udp_port()?);
    let (caller_dir, callee_dir) = (scratch.join("baresip-caller"), scratch.join("baresip-callee"));
    baresip_dir(&caller_dir, "caller", caller_port, (41_000, 41_199), &tone)?;
    baresip_dir(&callee_dir, "callee", callee_port, (41_200, 41_399), &tone)?;
    // Line-buffered stdout (stdbuf), or its lines would come only when it exits.
    let spawn = |name: &'static str, dir: &Path, extra: &[String]| -> Result<Process> {
        let log = std::fs::File::create(scratch.join(format!("{name}.log").replace(' ', "-")))?;
        Process::spawn(
            name,
            Command::new("stdbuf")
                .args(["-oL", "-eL", "baresip", "-f"])
                .arg(dir)
                .args(["-t", &format!("{}", total.ceil() as u64)])
                .args(extra)
                .stderr(Stdio::from(log)),
        )
    };
    let mut callee = spawn("baresip callee", &callee_dir, &[])?;
    callee.wait_line(Duration::from_secs(20), |l| l.contains("baresip is ready").then_some(()))?;
    let dial = format!("/dial sip:callee@127.0.0.1:{callee_port}");
    let mut caller = spawn("baresip caller", &caller_dir, &["-e".to_owned(), dial])?;
    caller.wait_line(Duration::from_secs(20), |l| l.contains("Call established").then_some(()))?;
    callee.wait_line(Duration::from_secs(20), |l| l.contains("Call established").then_some(()))?;
    let run = measure_pair(&mut caller, &mut callee, seconds)?;
    // baresip quits on SIGTERM.
    let stopped = [caller.stop(Duration::from_secs(10)), callee.stop(Duration::from_secs(10))];
    for s in stopped {
        s?;
    }
    Ok(BaresipRun { version, run })
}

struct CpuFigures {
    on: CpuRun,
    off: Option<CpuRun>,
    /// The baresip run, or why there is none.
    baresip: std::result::Result<BaresipRun, String>,
}

// ---------------------------------------------------------------------------------------------
// Report.

struct Figures {
    /// hark-callbench with voice processing on, and off (both connecting while the call rings),
    /// and on with "connect only after I answer".
    setup: Setup,
    setup_off: Setup,
    setup_late: Setup,
    /// The same calls between two Chromiums, or why they could not be made.
    chromium: std::result::Result<ChromiumFirstAudio, String>,
    /// hark-cli's voice-processing switches.
    switches: Switches,
    cpu: CpuFigures,
}

fn ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.1}")).unwrap_or_else(|| "n/a".into())
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

const PHASES: [(&str, &str); 5] = [
    ("signaling", "signaling"),
    ("ice", "ICE"),
    ("dtls", "DTLS"),
    ("first_packet", "first packet"),
    ("jitter_playout", "jitter buffer + playout"),
];

const MILESTONES: [(&str, &str); 13] = [
    ("caller_call_began", "caller told the call was accepted (`CallBegan`)"),
    ("offer_created", "offer set locally at the caller (`have-local-offer`)"),
    ("offer_applied", "offer applied at the callee (`have-remote-offer`)"),
    ("answer_created", "answer set locally at the callee (first `stable`)"),
    ("answer_applied", "answer applied at the caller (second `stable`)"),
    ("ice_connected_callee", "ICE connected, callee (controlled agent)"),
    ("ice_connected_caller", "ICE connected, caller (controlling agent)"),
    ("dtls_first", "DTLS handshake complete, first side (the server, the callee)"),
    ("dtls_second", "DTLS handshake complete, second side"),
    ("peer_connected_callee", "peer connection connected, callee"),
    ("peer_connected_caller", "peer connection connected, caller"),
    ("first_packet_callee", "first audio packet sent, callee (its first 20 ms tick once connected)"),
    ("first_packet_caller", "first audio packet sent, caller"),
];

impl Figures {
    fn render(&self, options: &Options, machine: &Machine, command_line: &str) -> String {
        let s = &self.setup;
        let calls = s.get(&["calls"]).unwrap_or(0.0) as usize;
        let failed = s.get(&["failed"]).unwrap_or(0.0) as usize;
        let first = |who: &str, p: &str| s.get(&[&format!("{who}_first_audio_ms"), p]);
        let (callee_p50, callee_p90) = (first("callee", "p50"), first("callee", "p90"));
        let (caller_p50, caller_p90) = (first("caller", "p50"), first("caller", "p90"));
        let first_pass = callee_p50.is_some_and(|p| p <= TARGET_FIRST_AUDIO_P50_MS)
            && caller_p50.is_some_and(|p| p <= TARGET_FIRST_AUDIO_P50_MS)
            && failed == 0;
        let phases = |direction: &str| {
            PHASES
                .iter()
                .map(|(key, _)| ms(s.get(&[&format!("phases_{direction}_ms"), key, "p50"])))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let off = &self.setup_off;
        let latency_row = |setup: &Setup, label: &str| {
            let get = |key: &str, p: &str| setup.get(&[key, p]);
            let heard = get("latency_tick_ms", "count").unwrap_or(0.0) as usize;
            let sent = setup.get(&["clicks_sent"]).unwrap_or(0.0) as usize;
            let pass = get("latency_sample_ms", "p50").is_some_and(|p| p <= TARGET_LATENCY_P50_MS) && heard > 0;
            format!(
                "| audio latency, capture tick → playout tick, {label}: p50 / p90 ({heard} clicks heard of {sent} sent); \
                 to the click's sample in the played frame: p50 / p90 | {} / {} ms; {} / {} ms | sample p50 ≤ {TARGET_LATENCY_P50_MS} ms | {} |",
                ms(get("latency_tick_ms", "p50")),
                ms(get("latency_tick_ms", "p90")),
                ms(get("latency_sample_ms", "p50")),
                ms(get("latency_sample_ms", "p90")),
                verdict(pass)
            )
        };

        let cpu = &self.cpu;
        let on_label = if self.switches.on.is_some() {
            format!("hark-cli `{PROCESSING_FLAG}` (echo cancellation and noise suppression on)")
        } else {
            format!("hark-cli as built (it has no `{PROCESSING_FLAG}`: voice processing may be off for a tone microphone)")
        };
        let side_row = |label: &str, run: &CpuRun| {
            format!(
                "| CPU per side, {label}: caller / callee ({:.0} s of call) | {:.2} % / {:.2} % of one core | (none) | |",
                run.seconds, run.caller.cpu_percent, run.callee.cpu_percent
            )
        };
        let ratio_row = |label: &str, run: Option<&CpuRun>, target: f64, missing: &str| match (run, &cpu.baresip) {
            (Some(run), Ok(b)) => {
                let r = run.mean_cpu() / b.run.mean_cpu();
                format!(
                    "| CPU hark / baresip, {label} (caller, callee) | {r:.2}× ({:.2}×, {:.2}×) | ≤ {target}× | {} |",
                    run.caller.cpu_percent / b.run.caller.cpu_percent,
                    run.callee.cpu_percent / b.run.callee.cpu_percent,
                    verdict(r <= target)
                )
            }
            (None, _) => format!("| CPU hark / baresip, {label} | {missing} | ≤ {target}× | n/a |"),
            (_, Err(why)) => format!("| CPU hark / baresip, {label} | baresip: {why} | ≤ {target}× | n/a |"),
        };

        let mut out = section_opening(SECTION_TITLE, "everything on this machine, over loopback", machine, command_line);
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "| accept → first decoded remote audio at the callee, p50 / p90 ({calls} calls{}) | {} / {} ms | p50 ≤ {TARGET_FIRST_AUDIO_P50_MS} ms | {} |",
            if failed > 0 { format!(", {failed} failed") } else { String::new() },
            ms(callee_p50),
            ms(callee_p90),
            verdict(first_pass)
        ));
        line(format!(
            "| accept → first decoded remote audio at the caller, p50 / p90 | {} / {} ms | p50 ≤ {TARGET_FIRST_AUDIO_P50_MS} ms | {} |",
            ms(caller_p50),
            ms(caller_p90),
            verdict(first_pass)
        ));
        line(format!(
            "| where the callee's wait goes, p50 per phase: {} | {} ms | (none) | |",
            PHASES.map(|(_, name)| name).join(" / "),
            phases("callee")
        ));
        line(format!("| where the caller's wait goes, p50 per phase (same phases) | {} ms | (none) | |", phases("caller")));
        line(latency_row(s, "voice processing on"));
        line(latency_row(off, "voice processing off"));
        line(format!(
            "| accept → first decoded remote audio with voice processing off, p50 callee / caller | {} / {} ms | (none) | |",
            ms(off.get(&["callee_first_audio_ms", "p50"])),
            ms(off.get(&["caller_first_audio_ms", "p50"]))
        ));
        let late = &self.setup_late;
        match &self.chromium {
            Ok(c) => {
                let ratio = |hark: Option<f64>, chromium: f64| hark.map(|h| h / chromium);
                let mean = match (callee_p50, caller_p50) {
                    (Some(a), Some(b)) => Some((a + b) / (c.callee_p50 + c.caller_p50)),
                    _ => None,
                };
                line(format!(
                    "| the same calls between two Chromium {} (their own WebRTC, connecting after the answer as protocol v1 does): accept → first decoded audio, p50 callee / caller ({} calls) | {:.1} / {:.1} ms | (none) | |",
                    c.version, c.calls, c.callee_p50, c.caller_p50
                ));
                line(format!(
                    "| accept → first decoded audio, Hark / Chromium, p50 (callee, caller) | {} ({}, {}) | ≤ {TARGET_RATIO_FIRST_AUDIO_CHROMIUM}× | {} |",
                    mean.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "n/a".into()),
                    ratio(callee_p50, c.callee_p50).map(|r| format!("{r:.2}×")).unwrap_or_else(|| "n/a".into()),
                    ratio(caller_p50, c.caller_p50).map(|r| format!("{r:.2}×")).unwrap_or_else(|| "n/a".into()),
                    verdict(mean.is_some_and(|r| r <= TARGET_RATIO_FIRST_AUDIO_CHROMIUM))
                ));
            }
            Err(why) => line(format!("| accept → first decoded audio, Hark / Chromium | Chromium: {why} | ≤ {TARGET_RATIO_FIRST_AUDIO_CHROMIUM}× | n/a |")),
        }
        line(format!(
            "| accept → first decoded remote audio with \"connect only after I answer\" (no connection while it rings), p50 callee / caller | {} / {} ms | (none) | |",
            ms(late.get(&["callee_first_audio_ms", "p50"])),
            ms(late.get(&["caller_first_audio_ms", "p50"]))
        ));
        line(format!(
            "| distance between the two sides' 20 ms ticks, p50 / max over the calls | {} / {} ms | (none) | |",
            ms(s.get(&["tick_offset_ms", "p50"])),
            ms(s.get(&["tick_offset_ms", "max"]))
        ));
        line(side_row(&on_label, &cpu.on));
        match &cpu.off {
            Some(off) => line(side_row(&format!("hark-cli `{NO_PROCESSING_FLAG}`"), off)),
            None => line(format!("| CPU per side, hark-cli, voice processing off | not available (hark-cli has no `{NO_PROCESSING_FLAG}`) | (none) | |")),
        }
        match &cpu.baresip {
            Ok(b) => line(side_row(&format!("baresip {} (Debian)", b.version), &b.run)),
            Err(why) => line(format!("| CPU per side, baresip | {why} | (none) | |")),
        }
        line(ratio_row(
            if self.switches.on.is_some() { "processing on" } else { "processing on (hark-cli as built)" },
            Some(&cpu.on),
            TARGET_RATIO_PROCESSING_ON,
            "",
        ));
        line(ratio_row("processing off", cpu.off.as_ref(), TARGET_RATIO_PROCESSING_OFF, "not available"));
        line(format!(
            "| RSS per hark-cli process half-way through the call: caller / callee{} | {} / {} MiB{} | (none) | |",
            if cpu.off.is_some() { " (processing on; off)" } else { "" },
            mib(cpu.on.caller.rss_kib),
            mib(cpu.on.callee.rss_kib),
            cpu.off.map(|o| format!("; {} / {} MiB", mib(o.caller.rss_kib), mib(o.callee.rss_kib))).unwrap_or_default()
        ));
        if let Ok(b) = &cpu.baresip {
            line(format!(
                "| RSS per baresip process: caller / callee | {} / {} MiB | (none) | |",
                mib(b.run.caller.rss_kib),
                mib(b.run.callee.rss_kib)
            ));
        }
        line(String::new());
        line("Milestones after accept (p50 / p90 over the calls, ms; negative: before accept, while the call rang):".into());
        line(String::new());
        line("| milestone | p50 | p90 |".into());
        line("| --- | --- | --- |".into());
        for (key, name) in MILESTONES {
            line(format!(
                "| {name} | {} | {} |",
                ms(s.get(&["milestones_ms", key, "p50"])),
                ms(s.get(&["milestones_ms", key, "p90"]))
            ));
        }
        line(format!("| first decoded remote audio, callee (`RemoteAudioAvailable`) | {} | {} |", ms(callee_p50), ms(callee_p90)));
        line(format!("| first decoded remote audio, caller | {} | {} |", ms(caller_p50), ms(caller_p90)));
        line(String::new());
        // What the figures say, computed from them.
        let mut reading = Vec::new();
        let jitter = s.get(&["phases_callee_ms", "jitter_playout", "p50"]);
        let (ice, dtls) = (s.get(&["milestones_ms", "ice_connected_callee", "p50"]), s.get(&["milestones_ms", "dtls_first", "p50"]));
        // Said only when the milestones show it: the connection up before the accept.
        if let (Some(first), Some(jitter), true) = (callee_p50, jitter, dtls.is_some_and(|d| d < 0.0)) {
            reading.push(format!(
                "The connection is made while the call rings (ICE and DTLS complete at {} / {} ms, before the \
                 accept), so accept only starts media on it. Of the callee's {first:.0} ms to first audio, \
                 {jitter:.0} ms pass between the caller's first packet leaving and its playout (a receiver that has \
                 heard nobody yet plays a first packet as it arrives and takes its 20 ms tick from it); the \
                 rest is the accept reaching the caller through the server and the caller's first tick. \
                 Without the early connection (\"connect only after I answer\") the same calls take {} / {} ms.",
                ms(ice),
                ms(dtls),
                ms(late.get(&["callee_first_audio_ms", "p50"])),
                ms(late.get(&["caller_first_audio_ms", "p50"]))
            ));
        }
        if let (Some(on), Some(off)) = (s.get(&["latency_sample_ms", "p50"]), off.get(&["latency_sample_ms", "p50"])) {
            reading.push(format!(
                "Voice processing adds {:.1} ms to the capture → playout latency ({on:.1} ms against {off:.1} ms, \
                 to the click's sample).",
                on - off
            ));
        }
        if s.get(&["tick_offset_ms", "p50"]).is_some_and(|offset| offset <= 3.0) {
            reading.push(
                "In one process the two clocks tick within a few milliseconds of each other (each side's phase \
                 is set by the first packet it plays or by when it starts), so packets one way arrive just \
                 before the far side's tick and the other way just after it, waiting almost a whole 20 ms \
                 tick: the latency figure mixes the best and the worst phase. Between two machines the phase \
                 is random and the wait averages about 10 ms each way, before sound card buffers are added."
                    .to_owned(),
            );
        }
        line(reading.join(" "));
        line(String::new());
        line(format!(
            "How: setup and latency come from `hark-callbench` (crates/bench): a hark-server and two engines in \
             one process, {calls} calls on loopback per run (one run with voice processing on, as a call with a \
             real microphone has it, one with it off, one on with \"connect only after I answer\"), each accepted 200 ms after it rang and kept {} s after \
             both sides heard audio. \"Accept\" is the instant before the callee's `accept()`; first audio is the \
             `RemoteAudioAvailable` event (the first decoded packet played). The phases of one direction are \
             accept → answer applied at the caller (signaling: accept, offer and answer through the server) → \
             both ICE agents connected → the sender's peer connection connected (DTLS) → the sender's next 20 ms \
             tick (first packet) → the receiver plays it (jitter buffer and the receiver's tick), a step done \
             before accept counting nothing; milestones \
             come from webrtc-rs's and hark-engine's own log lines, time-stamped in process. Latency: each \
             microphone sends a 5 ms 1 kHz burst every 500 ms from the call's first frame, timed at \
             the tick that read it; the far speaker \
             notes the tick that played it. The pipeline runs on a 20 ms tick at each side, so tick-to-tick \
             latency moves in 20 ms steps plus the phase between the two clocks; the sample figure adds where \
             the burst starts in the played frame (Opus look-ahead, processing delay). No sound card is in the \
             path: a real one adds its capture period and its output buffer. CPU: release `hark-cli` caller and \
             callee (`--mic tone:440`/`tone:880 --speaker none --bind 127.0.0.1:0`) through a release \
             hark-server, user+sys from /proc/PID/stat over {:.0} s of the call after a {WARM_UP_S:.0} s \
             warm-up, VmRSS half-way; baresip: two instances (`baresip -f DIR`), SIP over UDP on 127.0.0.1, \
             Opus only (32 kb/s, VoIP, in-band FEC, 10 % expected loss, as hark), `aufile` playing a 440 Hz \
             WAV as microphone, an `aubridge` device as speaker, auto-answer, plain RTP (no ICE, no DTLS-SRTP, \
             no echo cancellation), measured the same way right after the hark runs. Chromium: two headless \
             Debian Chromiums (ui/tests/browser/audio-first-bench.mjs) call each other through a release \
             hark-server with the page client of the interop test and Chromium's fake microphone, accepted 200 ms \
             after ringing like Hark's; first decoded audio is the first getStats reading (every 2 ms) with \
             samples that were not concealment, timed from the accept on the wall clock. Ratios are of the mean of \
             the two sides. The processes share two cores with whatever else runs.",
            options.listen_s, cpu.on.seconds
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_whole_words() {
        let help = "      --voice-processing  Echo cancellation on\n      --no-voice-processing  off\n";
        assert!(has_flag(help, PROCESSING_FLAG) && has_flag(help, NO_PROCESSING_FLAG));
        let only_off = "      --no-voice-processing  off\n";
        assert!(!has_flag(only_off, PROCESSING_FLAG) && has_flag(only_off, NO_PROCESSING_FLAG));
    }

    #[test]
    fn tone_wav_has_a_valid_header() {
        let path = std::env::temp_dir().join(format!("hark-bench-tone-{}.wav", std::process::id()));
        write_tone_wav(&path, 0.5).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 48_000);
        assert_eq!(bytes.len(), 44 + 48_000);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn reads_the_callbench_report() {
        let json = r#"{"calls":20,"callee_first_audio_ms":{"count":20,"p50":41.5,"p90":60.0},"caller_first_audio_ms":{"count":20,"p50":30.0,"p90":50.0},"phases_callee_ms":{"signaling":{"p50":10.0},"ice":{"p50":3.0}}}"#;
        let s = Setup { json: json.into() };
        assert_eq!(s.get(&["callee_first_audio_ms", "p50"]), Some(41.5));
        assert_eq!(s.get(&["caller_first_audio_ms", "p90"]), Some(50.0));
        assert_eq!(s.get(&["phases_callee_ms", "ice", "p50"]), Some(3.0));
    }
}
