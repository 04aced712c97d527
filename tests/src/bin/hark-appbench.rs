//! `cargo xtask bench app`: the desktop app's memory, launch time and call CPU.
//!
//! Drives the release `hark-desktop` under Xvfb (with openbox as the window manager) through
//! tauri-driver, with fresh XDG folders and its built-in server: sign up, quit, then launch again
//! (the remembered session resumes) and time launch → contacts shown. Then PSS and RSS summed
//! over the app and every WebKit process it started, in each state the app lives in: idle with
//! the window open; ringing (hark-cli calls, the banner is up); in a call to the echo service,
//! and the CPU it takes; in that call with the window minimised (the mini window floats); and
//! idle with the window closed to the tray. Then the frame path: canvases fed by the frame socket
//! at the sizes calls send, beside the same pictures sent as VP8 and decoded in the page with
//! WebCodecs (the comparison the issue asked for). Then video: hark-cli calls with 1280x720 video and
//! the app (set to 720p, its own camera the test pattern) answers; accept -> first remote
//! picture drawn, over five calls; CPU and memory of the whole app in a longer call; and the same
//! call between two headed Chromiums in this Xvfb (`video-bench.mjs --only headed`), for the
//! ratio. Each figure is printed with what produced it; `docs/BENCHMARKS.md` records them.
//!
//! Usage (xtask wraps it in dbus-run-session and xvfb-run): `hark-appbench APP TAURI_DRIVER`;
//! hark-cli is taken from beside this program.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hark_e2e::{sign_up, spawn_logged, wait_for, AppUnderTest};
use hark_video::pattern;
use hark_video::vp8::{EncodedFrame, EncoderSettings, Vp8Decoder, Vp8Encoder};

const SHORT: Duration = Duration::from_secs(20);

/// Memory of a set of processes, in KiB.
#[derive(Debug, Default, Clone)]
struct Memory {
    pss_kib: u64,
    rss_kib: u64,
    processes: usize,
    /// `name PSS` per process, for the breakdown.
    each: Vec<String>,
}

impl Memory {
    fn line(&self) -> String {
        format!("PSS {:.1} MiB, RSS {:.1} MiB over {} processes ({})", mib(self.pss_kib), mib(self.rss_kib), self.processes, self.each.join(", "))
    }
}

fn rollup(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    Some((field("Pss:"), field("Rss:")))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// User and system CPU ticks from a `/proc/…/stat` file (a process's or a thread's); 0 if gone.
fn stat_ticks(path: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(path) else { return 0 };
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the name.
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The app's process (found by its executable) and all its descendants.
fn app_tree(app: &Path) -> Vec<u32> {
    let pids: Vec<u32> = std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    let parents: HashMap<u32, u32> = pids.iter().filter_map(|&pid| Some((pid, parent_of(pid)?))).collect();
    let root = pids.iter().copied().find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).map(|exe| exe == app).unwrap_or(false));
    let Some(root) = root else { return Vec::new() };
    let mut tree = vec![root];
    let mut grew = true;
    while grew {
        grew = false;
        for (&pid, &parent) in &parents {
            if tree.contains(&parent) && !tree.contains(&pid) {
                tree.push(pid);
                grew = true;
            }
        }
    }
    tree
}

/// The memory of the app in a settled state: five readings a second apart, and the one with the
/// median PSS (the app's heap trim and periodic work move a single reading by a few MiB).
async fn settled_memory(app: &Path) -> Memory {
    let mut readings = Vec::new();
    for _ in 0..5 {
        readings.push(memory(app));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    readings.sort_by_key(|reading| reading.pss_kib);
    readings.swap_remove(readings.len() / 2)
}

fn memory(app: &Path) -> Memory {
    let mut total = Memory::default();
    for pid in app_tree(app) {
        if let Some((pss, rss)) = rollup(pid) {
            total.pss_kib += pss;
            total.rss_kib += rss;
            total.processes += 1;
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            total.each.push(format!("{} {:.1}", name.trim(), mib(pss)));
        }
    }
    total
}

/// The mappings holding the most PSS in each process of the app, `name: file PSS, ...`: where
/// the memory goes (shared libraries, the app's own code, heap).
fn mappings(app: &Path, top: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for pid in app_tree(app) {
        let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else { continue };
        let mut by_file: HashMap<String, u64> = HashMap::new();
        let mut current = String::new();
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["Pss:", kib, ..] => *by_file.entry(current.clone()).or_default() += kib.parse::<u64>().unwrap_or(0),
                [range, _perms, _offset, _device, _inode, rest @ ..] if range.contains('-') && !range.ends_with(':') => {
                    let file = rest.join(" ");
                    current = if file.is_empty() { "[anon]".into() } else { file.rsplit('/').next().unwrap_or_default().to_owned() };
                }
                _ => {}
            }
        }
        let mut sorted: Vec<(String, u64)> = by_file.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1));
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let parts: Vec<String> = sorted.iter().take(top).map(|(file, kib)| format!("{file} {:.1}", mib(*kib))).collect();
        lines.push(format!("{}: {}", name.trim(), parts.join(", ")));
    }
    lines
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Settled: pages done loading, and the app's periodic heap trim (every 10 s) has run at least
/// once since. A measurement window, not a wait for a condition.
const SETTLE: Duration = Duration::from_secs(12);

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--frame-path` runs only that stage (signed up, on the settings page), and `--call` only
    // the 720p video call: for trying a change, or profiling the call.
    let (app, tauri_driver, only) = match args.as_slice() {
        [app, driver] => (app, driver, None),
        [app, driver, flag] if flag == "--frame-path" || flag == "--call" => (app, driver, Some(flag.as_str())),
        _ => anyhow::bail!("usage: hark-appbench APP TAURI_DRIVER [--frame-path | --call]"),
    };
    let app = std::fs::canonicalize(app).context("the app binary")?;
    let cli = std::env::current_exe()?.with_file_name("hark-cli");
    // Our camera on nine more tiles as a group call's senders send it, for the grid's figure.
    let fixture = AppUnderTest::prepare_keeping_tray_with(Path::new(tauri_driver), &[("HARK_TEST_TILES", GRID_TILES.to_string())])?;
    let _window_manager = hark_e2e::start_window_manager(&fixture.home.path().join("openbox.log"))?;

    // First launch: sign up.
    let web = fixture.session(&app).await?;
    sign_up(&web, "bench", "bench password 1", None).await?;
    if only == Some("--frame-path") {
        for line in frame_path(&fixture, &web, &app).await? {
            println!("    {line}");
        }
        web.quit().await;
        return Ok(());
    }
    if only == Some("--call") {
        let main = web.current_window().await?;
        set_720p(&fixture, &web).await?;
        web.click_css("[data-testid=nav-contacts]", SHORT).await?;
        let video = video_call(&fixture, &web, &app, &cli, &main, true).await?;
        video.print();
        web.quit().await;
        return Ok(());
    }
    web.quit().await;
    wait_for("the first app to exit", SHORT, || async { Ok(app_tree(&app).is_empty().then_some(())) }).await?;

    // Second launch: the session resumes; time to contacts.
    let launched = Instant::now();
    let web = fixture.session(&app).await?;
    web.wait("[data-testid=contacts-list]", SHORT).await?;
    let to_contacts = launched.elapsed();
    let main = web.current_window().await?;
    // The app's own figure: from its main() to the contacts' answer leaving for the UI.
    let in_app_ms = wait_for("the app's launch figure", SHORT, || async {
        let log = fixture.log();
        let resumed = log.rsplit("hark-desktop starting").next().unwrap_or_default().to_owned();
        Ok(resumed.lines().find(|l| l.contains("contacts listed")).and_then(|l| l.split("since_launch_ms=").nth(1)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()))
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let idle = settled_memory(&app).await;
    let idle_mappings = mappings(&app, 8);

    // Ringing: another user calls; the banner comes up.
    let known = web.windows().await?;
    let caller_log = fixture.home.path().join("caller.log");
    let args = ["--server", &fixture.server, "--user", "caller", "--password", "caller password 1", "--register", "--mic", "tone:440", "--speaker", "none"];
    let _caller = spawn_logged(&cli, &[&args[..], &["--bind", "127.0.0.1:0", "call", "bench", "--timeout", "60"]].concat(), &[], &caller_log)?;
    let banner = web.wait_new_window(&known, Duration::from_secs(40)).await?;
    web.switch_to(&banner).await?;
    web.wait("[data-testid=banner-decline]", SHORT).await?;
    tokio::time::sleep(SETTLE).await;
    let ringing = settled_memory(&app).await;
    let ringing_mappings = mappings(&app, 8);
    web.click_closing_window("[data-testid=banner-decline]", SHORT).await?;
    web.switch_to(&main).await?;
    wait_for("the banner to close", SHORT, || async { Ok((!web.windows().await?.contains(&banner)).then_some(())) }).await?;

    // In a call to the echo service.
    web.type_into("[data-testid=dial-input]", "echo").await?;
    web.click_css("[data-testid=dial-audio]", SHORT).await?;
    web.wait_text("[data-testid=call-timer]", Duration::from_secs(40), |t| t.contains("00:12")).await?;
    let cpu_percent = app_cpu(&app).await.percent;
    let in_call = settled_memory(&app).await;

    // The same call with the window minimised: the mini window floats.
    let known = web.windows().await?;
    let mini = wait_for("the mini window", Duration::from_secs(40), || async {
        hark_e2e::minimise_windows_titled("Hark")?;
        Ok(web.wait_new_window(&known, Duration::from_secs(2)).await.ok())
    })
    .await?;
    web.switch_to(&mini).await?;
    web.wait("[data-testid=mini-hangup]", SHORT).await?;
    tokio::time::sleep(SETTLE).await;
    let minimised = settled_memory(&app).await;
    // Back to the call view (the main window comes back, the mini window goes), and hang up there.
    web.click_closing_window("[data-testid=mini-back]", SHORT).await?;
    web.switch_to(&main).await?;
    wait_for("the mini window to close", SHORT, || async { Ok((!web.windows().await?.contains(&mini)).then_some(())) }).await?;
    web.click_css("[data-testid=hangup]", SHORT).await?;
    wait_for("the call view to close", Duration::from_secs(40), || async { Ok(web.find("[data-testid=call-view]").await?.is_none().then_some(())) }).await?;

    // The call before the frame path: the VP8 comparison loads WebCodecs and GStreamer's
    // decoder into the web process, which would then count in the call's memory.
    set_720p(&fixture, &web).await?;
    web.click_css("[data-testid=nav-contacts]", SHORT).await?;
    let video = video_call(&fixture, &web, &app, &cli, &main, false).await?;
    let paths = frame_path(&fixture, &web, &app).await?;

    // Closed to the tray: the main window and its web process go; the app stays for calls.
    hark_e2e::close_window_titled("Hark")?;
    wait_for("the web process to end", SHORT, || async {
        let names: Vec<String> = app_tree(&app).iter().filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()).collect();
        Ok((!names.iter().any(|name| name.starts_with("WebKitWebProces"))).then_some(()))
    })
    .await?;
    anyhow::ensure!(!app_tree(&app).is_empty(), "the app quit instead of staying in the tray");
    tokio::time::sleep(SETTLE).await;
    let in_tray = settled_memory(&app).await;
    let in_tray_mappings = mappings(&app, 8);
    web.quit().await;

    println!("hark-appbench: {}", app.display());
    println!("  launch -> contacts listed, in the app (main() to the contacts' answer): {in_app_ms} ms");
    println!("  launch -> contacts shown, from outside (WebDriver session start to the list in the page): {:.0} ms", to_contacts.as_secs_f64() * 1000.0);
    println!("  idle, window open:         {}", idle.line());
    println!("  ringing, banner up:        {}", ringing.line());
    println!("  in call:                   {}", in_call.line());
    println!("  in call, window minimised: {}", minimised.line());
    println!("  idle, closed to the tray:  {}", in_tray.line());
    println!("  where it goes, idle with the window open (PSS MiB by mapping, largest first):");
    for line in idle_mappings {
        println!("    {line}");
    }
    println!("  where it goes, ringing:");
    for line in ringing_mappings {
        println!("    {line}");
    }
    println!("  where it goes, idle in the tray:");
    for line in in_tray_mappings {
        println!("    {line}");
    }
    println!("  CPU in a 1:1 audio call to echo (app + WebKit processes): {cpu_percent:.1}% of one core over 10 s");
    println!("  frame path: the app's camera (test pattern, 1280x720 30 fps; the grid's nine tiles at 320x180 15 fps, HARK_TEST_TILES) to canvases");
    println!("  in the main window over the frame socket (one WebSocket for the page, I420 scaled in Rust to the canvas, VideoFrame, 2D canvas),");
    println!("  beside the same pictures as VP8 decoded by WebCodecs in the page; CPU of app + WebKit processes above the same page without them:");
    for line in &paths {
        println!("    {line}");
    }
    video.print();
    // The same call between two headed Chromiums, each drawing the other in its window, in this run.
    let chromium = std::process::Command::new("node")
        .args(["tests/browser/video-bench.mjs", "--only", "headed", "--seconds", "10", "--calls", &video.first_ms.len().to_string(), "--layout", &video.layout])
        .current_dir(std::env::current_exe()?.parent().and_then(|p| p.parent()).and_then(|p| p.parent()).map(|root| root.join("ui")).context("the repository")?)
        .env("HARK_BIN_DIR", cli.parent().context("hark-cli's folder")?)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running node tests/browser/video-bench.mjs --only headed")?;
    let said = String::from_utf8_lossy(&chromium.stdout).into_owned();
    anyhow::ensure!(chromium.status.success(), "the headed Chromium pair failed:\n{said}");
    for line in said.lines().filter(|l| l.starts_with("  chromium headed")) {
        println!("  {line}");
    }
    if let Some(page) = said.lines().find_map(|l| l.trim().strip_prefix("chromium-cpu-percent ")).and_then(|v| v.parse::<f64>().ok()) {
        println!("    app / one Chromium page, CPU in the same 720p call: {:.2}x", video.cpu.percent / page);
        // Each side's pictures are uploaded to and composited by the X server: its share counted
        // too (the two Chromium pages share one X server, so each is given half).
        if let Some(x_pages) = said.lines().find_map(|l| l.trim().strip_prefix("chromium-x-server-percent ")).and_then(|v| v.parse::<f64>().ok()) {
            println!(
                "    the same with the X server's share counted on each side (app {:.1} + {:.1}, page {:.1} + {:.1}): {:.2}x",
                video.cpu.percent,
                video.cpu.x_server,
                page,
                x_pages / 2.0,
                (video.cpu.percent + video.cpu.x_server) / (page + x_pages / 2.0)
            );
        }
        println!(
            "    app / one Chromium page, the app's far end showing its video in the call view's box (the app codes {}; the Chromium pages code 1280x720 whatever they show): {:.2}x",
            video.far_end_shows.1,
            video.far_end_shows.0.percent / page
        );
    }
    Ok(())
}

/// Sets 1:1 video to 720p in settings (the app's test-pattern camera then gives 1280x720) and
/// leaves the settings page showing (its camera preview running).
async fn set_720p(fixture: &AppUnderTest, web: &hark_e2e::WebDriver) -> Result<()> {
    web.click_css("[data-testid=nav-settings]", SHORT).await?;
    web.wait("[data-testid=settings-resolution]", SHORT).await?;
    web.execute("const s = document.querySelector('[data-testid=settings-resolution]'); s.value = '720p'; s.dispatchEvent(new Event('change', { bubbles: true })); return true;").await?;
    let settings_file = fixture.home.path().join("config/hark/settings.json");
    wait_for("720p to be saved", SHORT, || async { Ok(std::fs::read_to_string(&settings_file).ok().filter(|s| s.contains("\"720p\"")).map(|_| ())) }).await?;
    web.wait("[data-testid=camera-preview][data-video=true]", SHORT).await.map(|_| ())
}

/// CPU of the app's whole tree over 10 s, in % of one core: in all, and per process.
struct Cpu {
    percent: f64,
    /// `name %` per process that used any, largest first.
    each: Vec<String>,
    /// The X server's CPU over the same time: what the app's drawing costs it (the app's own
    /// drawing is uploaded and composited there, as a browser's is).
    x_server: f64,
}

/// The X server this runs under: the Xvfb whose arguments name `DISPLAY`.
fn x_server() -> Option<u32> {
    let display = std::env::var("DISPLAY").ok()?;
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        comm.trim() == "Xvfb" && args.split(|&b| b == 0).any(|arg| arg == display.as_bytes())
    })
}

async fn app_cpu(app: &Path) -> Cpu {
    let tree = app_tree(app);
    let before: Vec<u64> = tree.iter().map(|&pid| cpu_ticks(pid)).collect();
    let x = x_server();
    let x_before = x.map(cpu_ticks).unwrap_or(0);
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let seconds = measured.elapsed().as_secs_f64();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    // A process that ended meanwhile reads 0: it counts for nothing rather than underflowing.
    let mut used: Vec<(String, f64)> = tree
        .iter()
        .zip(&before)
        .map(|(&pid, &then)| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned();
            (name, cpu_ticks(pid).saturating_sub(then) as f64 / ticks_per_second / seconds * 100.0)
        })
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    let percent = used.iter().map(|(_, p)| p).sum();
    let x_server = x.map(|pid| cpu_ticks(pid).saturating_sub(x_before) as f64 / ticks_per_second / seconds * 100.0).unwrap_or(0.0);
    Cpu { percent, each: used.iter().filter(|(_, p)| *p > 0.0).map(|(name, p)| format!("{name} {p:.1}")).collect(), x_server }
}

/// Opens `tiles` canvases of `width`x`height` in the main window, each showing one of `names`
/// from the frame socket as the app's own tiles do (one connection for the page, each tile's
/// box said, each batch drawn at the next animation frame as VideoFrames, then the next asked
/// for), and counts what is drawn. The script's body; [`open_canvases`] puts the sizes in front.
const OPEN_CANVASES: &str = "
const info = await window.__TAURI_INTERNALS__.invoke('frame_socket');
window.__harkPath = { drawn: 0, close: [] };
const canvases = new Map(names.map((name, i) => [name, place(i)]));
const contexts = new Map([...canvases].map(([name, canvas]) => [name, canvas.getContext('2d')]));
const socket = new WebSocket(`ws://127.0.0.1:${info.port}/page?token=${info.token}`);
socket.binaryType = 'arraybuffer';
socket.onopen = () => names.forEach((tile) => socket.send(JSON.stringify({ type: 'show', tile, width, height, fit: 'contain' })));
socket.onmessage = (message) => requestAnimationFrame(() => {
  const bytes = new Uint8Array(message.data);
  for (let at = 0; at < bytes.length; ) {
    const end = at + 1 + bytes[at];
    const tile = String.fromCharCode(...bytes.subarray(at + 1, end));
    const view = new DataView(message.data, end, 20);
    const [w, h] = [view.getUint16(0, true), view.getUint16(2, true)];
    const length = 20 + view.getUint32(16, true);
    const canvas = canvases.get(tile);
    if (w > 0 && canvas) {
      if (canvas.width !== w) canvas.width = w;
      if (canvas.height !== h) canvas.height = h;
      const frame = new VideoFrame(new Uint8Array(message.data, end + 20, length - 20), { format: 'I420', codedWidth: w, codedHeight: h, timestamp: view.getUint32(8, true),
        colorSpace: { primaries: 'smpte170m', transfer: 'smpte170m', matrix: 'smpte170m', fullRange: false } });
      contexts.get(tile).drawImage(frame, 0, 0);
      frame.close();
      window.__harkPath.drawn += 1;
    }
    at = end + length;
  }
  socket.send('{\"type\":\"next\"}');
});
window.__harkPath.close.push(() => { socket.close(); canvases.forEach((canvas) => canvas.remove()); });
return 'ok';";

/// The same canvases fed VP8 instead: the encoded `chunks` (base64, keyframe first, played in a
/// loop at `fps`) go to one WebCodecs `VideoDecoder` per canvas, and each decoded picture is
/// drawn at the next animation frame (a newer one replaces one not drawn yet). What the page
/// would do if the app sent the far side's encoded frames instead of decoded pictures; nothing
/// crosses a socket here (about 8 KB a frame at 720p, against 1.4 MB decoded). Answers `ok` or
/// why the page cannot decode VP8.
const DECODE_CANVASES: &str = "
if (typeof VideoDecoder === 'undefined') return 'this WebKit has no VideoDecoder';
const config = { codec: 'vp8', codedWidth: width, codedHeight: height };
const support = await VideoDecoder.isConfigSupported(config).catch((e) => ({ supported: false, error: String(e) }));
if (!support.supported) return `VideoDecoder cannot decode VP8 here (${support.error ?? 'not supported'})`;
const bytes = chunks.map((c) => Uint8Array.from(atob(c), (ch) => ch.charCodeAt(0)));
window.__harkPath = { drawn: 0, errors: 0, close: [] };
const decoders = [];
for (let i = 0; i < tiles; i++) {
  const canvas = place(i);
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d');
  let pending = null;
  const decoder = new VideoDecoder({
    output: (frame) => {
      if (pending) { pending.close(); } else { requestAnimationFrame(() => { context.drawImage(pending, 0, 0); pending.close(); pending = null; window.__harkPath.drawn += 1; }); }
      pending = frame;
    },
    error: () => { window.__harkPath.errors += 1; },
  });
  decoder.configure(config);
  decoders.push(decoder);
  window.__harkPath.close.push(() => { if (decoder.state !== 'closed') decoder.close(); canvas.remove(); });
}
let n = 0;
const timer = setInterval(() => {
  const i = n % bytes.length;
  for (const decoder of decoders) {
    if (decoder.state === 'configured') decoder.decode(new EncodedVideoChunk({ type: keys[i] ? 'key' : 'delta', timestamp: Math.round(n * 1e6 / fps), data: bytes[i] }));
  }
  n += 1;
}, 1000 / fps);
window.__harkPath.close.push(() => clearInterval(timer));
return 'ok';";

/// Where canvas `i` of a grid goes: over the page, three to a row.
const PLACE: &str = "
const place = (i) => {
  const canvas = document.createElement('canvas');
  canvas.style.cssText = `position:fixed;z-index:1000;left:${(i % 3) * (width + 4)}px;top:${Math.floor(i / 3) * (height + 4)}px;width:${width}px;height:${height}px`;
  document.body.append(canvas);
  return canvas;
};";

fn open_canvases(stage: &Stage) -> String {
    let Stage { width, height, .. } = stage;
    format!("return (async () => {{ const [width, height, names] = [{width}, {height}, {}]; {PLACE} {OPEN_CANVASES} }})();", stage_tiles(stage))
}

fn decode_canvases(stage: &Stage, clip: &[EncodedFrame]) -> String {
    use base64::Engine as _;
    let Stage { width, height, tiles, fps, .. } = stage;
    let chunks: Vec<String> = clip.iter().map(|frame| base64::engine::general_purpose::STANDARD.encode(&frame.data)).collect();
    let keys: Vec<bool> = clip.iter().map(|frame| frame.keyframe).collect();
    format!(
        "return (async () => {{ const [width, height, tiles, fps] = [{width}, {height}, {tiles}, {fps}]; const chunks = {}; const keys = {}; {PLACE} {DECODE_CANVASES} }})();",
        serde_json::to_string(&chunks).unwrap_or_default(),
        serde_json::to_string(&keys).unwrap_or_default()
    )
}

/// The app's video layer (src-tauri/src/video_layer.rs) showing `names` in the boxes of canvases
/// placed as the page's are (left empty): the pictures decoded in Rust, converted and drawn by
/// the app over the page. Answers `ok`, or why there is no layer.
const LAYER_BOXES: &str = "
const internals = window.__TAURI_INTERNALS__;
// A Channel as Tauri's API serialises one: the layer's news are not needed here.
const channel = `__CHANNEL__:${internals.transformCallback(() => {})}`;
if (!(await internals.invoke('video_layer', { channel }))) return 'the app has no video layer here';
const boxes = names.map((tile, i) => [tile, place(i)]);
const placements = boxes.map(([tile, canvas]) => {
  const { x, y } = canvas.getBoundingClientRect();
  return { tile, x, y, width, height, scale: 1, fit: 'contain', mirror: false, holes: [] };
});
await internals.invoke('place_video', { placements });
window.__harkPath = { drawn: 0, close: [() => internals.invoke('place_video', { placements: [] }), () => boxes.forEach(([, canvas]) => canvas.remove())] };
return 'ok';";

/// The tiles a stage shows: our camera's, or the grid's test tiles (HARK_TEST_TILES).
fn stage_tiles(stage: &Stage) -> String {
    let names: Vec<String> = if stage.tiles == 1 { vec!["_self".into()] } else { (1..=stage.tiles).map(|i| format!("_test{i}")).collect() };
    serde_json::to_string(&names).unwrap_or_default()
}

fn layer_boxes(stage: &Stage) -> String {
    let Stage { width, height, .. } = stage;
    format!("return (async () => {{ const [width, height, names] = [{width}, {height}, {}]; {PLACE} {LAYER_BOXES} }})();", stage_tiles(stage))
}

/// The rate the video layer drew at per box, and the p50 and p95 of the time from a picture
/// reaching the layer to its being drawn (ms), from what the app logs when the boxes go.
async fn layer_rate(fixture: &AppUnderTest, before: usize, stage: &Stage) -> Result<(f64, f64, f64)> {
    let field = |line: &str, name: &str| line.split(name).nth(1)?.split_whitespace().next()?.parse::<f64>().ok();
    let (pictures, seconds, p50, p95) = wait_for("the video layer's count", SHORT, || async {
        let log = fixture.log();
        let counts: Vec<(f64, f64, f64, f64)> = log
            .lines()
            .filter(|l| l.contains("video layer: the boxes went"))
            .filter_map(|l| Some((field(l, "pictures=")?, field(l, "seconds=")?, field(l, "latency_p50_ms=")?, field(l, "latency_p95_ms=")?)))
            .collect();
        Ok(counts.get(before).copied())
    })
    .await?;
    Ok((pictures / seconds.max(f64::EPSILON) / f64::from(stage.tiles), p50, p95))
}

const CLOSE_CANVASES: &str = "
const path = window.__harkPath;
path.close.forEach((close) => close());
return path.drawn;";

/// One measured picture size: `tiles` canvases of `width`x`height` drawn at `fps`, what a call of
/// that shape sends (the engine's ladder: 720p and 360p at 30 fps for two, 320x180 at 15 fps
/// and 200 kbit/s from five people).
struct Stage {
    width: u32,
    height: u32,
    tiles: u32,
    fps: u32,
    kbps: u32,
}

impl Stage {
    fn name(&self) -> String {
        let Stage { width, height, tiles, fps, .. } = self;
        if *tiles == 1 { format!("{width}x{height} {fps} fps") } else { format!("{tiles} x {width}x{height} {fps} fps") }
    }
}

/// The grid's tiles: nine people.
const GRID_TILES: u32 = 9;

const STAGES: [Stage; 3] = [
    Stage { width: 1280, height: 720, tiles: 1, fps: 30, kbps: 2000 },
    Stage { width: 640, height: 360, tiles: 1, fps: 30, kbps: 1000 },
    Stage { width: 320, height: 180, tiles: GRID_TILES, fps: 15, kbps: 200 },
];

/// Five seconds of the test pattern at the stage's size, rate and bitrate, as the engine's
/// encoder codes it for a call: a keyframe, then deltas.
fn encoded_clip(stage: &Stage) -> Result<Vec<EncodedFrame>> {
    let settings = EncoderSettings { width: stage.width, height: stage.height, fps: stage.fps, bitrate_kbps: stage.kbps, threads: 1 };
    let mut encoder = Vp8Encoder::new(settings)?;
    let mut clip = Vec::new();
    for n in 0..stage.fps * 5 {
        clip.extend(encoder.encode(&pattern::draw(stage.width, stage.height, n), n == 0)?);
    }
    Ok(clip)
}

/// CPU ticks of the calling thread.
fn thread_ticks() -> u64 {
    stat_ticks("/proc/thread-self/stat")
}

/// What decoding `clip` in Rust costs at the stage's rate for all its tiles, in % of one core:
/// the app's decoder (hark-video's libvpx) on this thread for at least 3 s, CPU time from
/// /proc. The I420 path decodes in the app before the frame socket; the VP8 path does not.
fn rust_decode_cost(stage: &Stage, clip: &[EncodedFrame]) -> Result<f64> {
    let (ticks, started) = (thread_ticks(), Instant::now());
    let mut decoded = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        let mut decoder = Vp8Decoder::new()?;
        for frame in clip {
            decoder.decode(&frame.data)?;
            decoded += 1;
        }
    }
    let seconds = thread_ticks().saturating_sub(ticks) as f64 / 100.0;
    Ok(seconds / f64::from(decoded) * f64::from(stage.fps * stage.tiles) * 100.0)
}

/// Runs `script` (which opens canvases), measures the app's CPU for 10 s after 3 s of warm-up,
/// closes them, and says the CPU above `baseline` and the rate drawn per canvas.
async fn measure_canvases(web: &hark_e2e::WebDriver, app: &Path, script: &str, stage: &Stage, baseline: f64) -> Result<(f64, String)> {
    let opened = web.execute(script).await?;
    anyhow::ensure!(opened.as_str() == Some("ok"), "{}", opened.as_str().unwrap_or("the canvases did not open"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drawn_before = web.execute("return window.__harkPath.drawn;").await?.as_f64().unwrap_or(0.0);
    let measured = Instant::now();
    let cpu = app_cpu(app).await;
    let drawn = web.execute(CLOSE_CANVASES).await?.as_f64().unwrap_or(0.0) - drawn_before;
    let fps = drawn / measured.elapsed().as_secs_f64() / f64::from(stage.tiles);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let above = cpu.percent - baseline;
    Ok((above, format!("{above:.1}% of one core above the baseline ({:.1}% in all: {}), {fps:.1} fps drawn per canvas", cpu.percent, cpu.each.join(", "))))
}

/// The frame path's cost, and the VP8 path's beside it: the settings page with its camera
/// preview as the baseline; then canvases fed over the frame socket (I420, scaled in Rust to the
/// canvas) from the camera's tile, or for the grid from nine test tiles at a group call's size
/// and rate; and the same canvases decoding the same pictures sent as VP8 with WebCodecs in the
/// page. Lines to print, with the comparison table's rows.
async fn frame_path(fixture: &AppUnderTest, web: &hark_e2e::WebDriver, app: &Path) -> Result<Vec<String>> {
    set_720p(fixture, web).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = app_cpu(app).await.percent;
    let mut lines = vec![format!("baseline: the settings page, camera preview at 320x180: {baseline:.1}% of one core")];
    let mut table = vec![
        "| picture | I420 path: decode in Rust + frame socket + draw | VP8 path: WebCodecs decode + draw | VP8 / I420 | the app's video layer: decode in Rust + draw over the page |".to_owned(),
        "| --- | --- | --- | --- | --- |".to_owned(),
    ];
    for stage in &STAGES {
        let layer = {
            let before = fixture.log().matches("video layer: the boxes went").count();
            match measure_canvases(web, app, &layer_boxes(stage), stage, baseline).await {
                Ok((cpu, line)) => {
                    let (fps, p50, p95) = layer_rate(fixture, before, stage).await?;
                    // The page counts nothing here: the rate is the app's.
                    let line = line.split(", 0.0 fps drawn per canvas").next().unwrap_or(&line).to_owned();
                    lines.push(format!(
                        "the app's video layer (decoded in Rust, drawn over the page), {}: {line}, {fps:.1} pictures a second per box (the app's count); added from a decoded picture to drawn: p50 {p50:.1} ms, p95 {p95:.1} ms",
                        stage.name()
                    ));
                    format!("{cpu:.1} %")
                }
                Err(why) => {
                    lines.push(format!("the app's video layer, {}: not measured: {why:#}", stage.name()));
                    "–".to_owned()
                }
            }
        };
        let (i420, line) = measure_canvases(web, app, &open_canvases(stage), stage, baseline).await?;
        lines.push(format!("I420 over the frame socket, {}: {line}", stage.name()));
        let clip = encoded_clip(stage)?;
        let kib = clip.iter().map(|frame| frame.data.len()).sum::<usize>() as f64 / 1024.0 / 5.0;
        let decode = rust_decode_cost(stage, &clip)?;
        lines.push(format!("  decoding it in Rust (hark-video, libvpx), {}: {decode:.1}% of one core ({kib:.0} KiB/s of VP8 per tile)", stage.name()));
        match measure_canvases(web, app, &decode_canvases(stage, &clip), stage, baseline).await {
            Ok((vp8, line)) => {
                lines.push(format!("VP8 into VideoDecoder, {}: {line}", stage.name()));
                table.push(format!("| {} | {:.1} % ({decode:.1} + {i420:.1}) | {vp8:.1} % | {:.2}x | {layer} |", stage.name(), decode + i420, vp8 / (decode + i420)));
            }
            Err(why) => lines.push(format!("VP8 into VideoDecoder, {}: not measured: {why:#}", stage.name())),
        }
    }
    lines.push("comparison (% of one core, app + WebKit processes, above the baseline):".into());
    lines.extend(table.into_iter().map(|row| format!("  {row}")));
    web.click_css("[data-testid=nav-contacts]", SHORT).await?;
    Ok(lines)
}

/// What the video call stage measured.
struct VideoFigures {
    first_ms: Vec<f64>,
    cpu: Cpu,
    memory: Memory,
    /// The largest mappings of each process in the call.
    mappings: Vec<String>,
    far_end: String,
    /// Where the call view drew the two pictures (JSON: the window's size, and for the caller's
    /// picture and the self view their box, fit and mirroring), for the Chromium pages to
    /// draw theirs the same.
    layout: String,
    /// CPU of the app in the same call when the far end says it shows the app's video in the
    /// box the app's call view gives it (as another Hark app would: `video_size`), and that box.
    far_end_shows: (Cpu, String),
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().saturating_sub(1) / 2).copied().unwrap_or(f64::NAN)
}

impl VideoFigures {
    fn print(&self) {
        println!("  video, 1:1 1280x720 30 fps both ways (hark-cli's and the app's test patterns):");
        println!("    accept -> first remote picture drawn in the call view, p50 of {}: {:.0} ms (each: {:?})", self.first_ms.len(), median(&self.first_ms), self.first_ms);
        println!("    CPU of the app (all processes): {:.1}% of one core over 10 s ({}); the X server meanwhile {:.1}%", self.cpu.percent, self.cpu.each.join(", "), self.cpu.x_server);
        println!("    memory: {}", self.memory.line());
        println!("    where it goes, in the video call (PSS MiB by mapping, largest first):");
        for line in &self.mappings {
            println!("      {line}");
        }
        println!("    hark-cli decoded the app's video: {}", self.far_end);
        println!("    as laid out in the call view: {}", self.layout);
        let (cpu, view) = &self.far_end_shows;
        println!(
            "    CPU of the app, the far end showing the app's video in a {view} view as the app's call view would (it says so, video_size; the app codes no larger): {:.1}% of one core over 10 s ({})",
            cpu.percent,
            cpu.each.join(", ")
        );
    }
}

/// The box the call view gave the far side's picture, `WxH` in device pixels (what
/// `--video-shown` takes), from the layout's JSON (CSS pixels and the page's scale).
fn call_view_box(layout: &str) -> Result<String> {
    let layout: serde_json::Value = serde_json::from_str(layout)?;
    let scale = layout["scale"].as_f64().unwrap_or(1.0);
    let side = |name: &str| layout["remote"][name].as_f64().map(|css| (css * scale).round() as u64).context("the call view's box");
    Ok(format!("{}x{}", side("width")?, side("height")?))
}

/// Calls the app from hark-cli with 720p video (the app set to 720p, its own camera the test
/// pattern): accept -> first remote picture drawn, timed in the pages on the wall clock (the
/// banner stamps the click, the call view the moment the caller's tile shows a picture), over
/// a few short calls; then CPU and memory in a longer one.
async fn video_call(fixture: &AppUnderTest, web: &hark_e2e::WebDriver, app: &Path, cli: &Path, main: &str, register: bool) -> Result<VideoFigures> {
    const CALLS: usize = 5;

    let args = ["--server", &fixture.server, "--user", "caller", "--password", "caller password 1", "--mic", "tone:440", "--speaker", "none", "--bind", "127.0.0.1:0"];
    let video = ["--camera", "test-pattern", "--hd", "--video-out", "count", "--json"];
    let mut first_ms = Vec::new();
    let mut measured: Option<(Cpu, Memory, Vec<String>, String, String)> = None;
    // The calls: CALLS short ones, timed; the measured one; then one more where the far end says
    // how large it shows the app's video (the call view's box), measured for CPU only.
    for n in 0..=CALLS + 1 {
        let (last, far_end_shows) = (n == CALLS, n == CALLS + 1);
        web.execute(
            "window.__harkFirstPicture = null;
             const observer = new MutationObserver(() => {
               if (document.querySelector('[data-testid=tile-caller][data-video=true]')) { window.__harkFirstPicture = Date.now(); observer.disconnect(); }
             });
             observer.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-video'] });
             return true;",
        )
        .await?;
        let known = web.windows().await?;
        let log = fixture.home.path().join(format!("video-caller-{n}.log"));
        let duration = if last { "25" } else if far_end_shows { "18" } else { "3" };
        // The caller signs up on its first call when no earlier stage did.
        let sign_up: &[&str] = if register && n == 0 { &["--register"] } else { &[] };
        let view = measured.as_ref().map(|m| call_view_box(&m.3)).transpose()?.unwrap_or_default();
        let shows: Vec<&str> = if far_end_shows { vec!["--video-shown", &view] } else { Vec::new() };
        let _caller = spawn_logged(cli, &[&args[..], sign_up, &video[..], &shows[..], &["call", "bench", "--video", "--duration", duration]].concat(), &[], &log)?;
        let banner = web.wait_new_window(&known, Duration::from_secs(40)).await?;
        web.switch_to(&banner).await?;
        web.wait("[data-testid=banner-accept]", SHORT).await?;
        // The click runs just after the stamp is taken and returned (the banner closes on it).
        let accepted = web.execute("setTimeout(() => document.querySelector('[data-testid=banner-accept]').click(), 0); return Date.now();").await?;
        let accepted = accepted.as_f64().context("the banner's clock")?;
        web.switch_to(main).await?;
        let drawn = wait_for("the caller's picture in the call view", Duration::from_secs(20), || async { Ok(web.execute("return window.__harkFirstPicture;").await?.as_f64()) }).await?;
        if !far_end_shows {
            first_ms.push(drawn - accepted);
        }
        if last {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let cpu = app_cpu(app).await;
            let memory = settled_memory(app).await;
            let mappings = mappings(app, 8);
            let layout = web
                .execute(
                    "const box = (selector) => {
                       const canvas = document.querySelector(selector);
                       if (!canvas) return null;
                       const r = canvas.getBoundingClientRect();
                       return { x: Math.round(r.x), y: Math.round(r.y), width: Math.round(r.width), height: Math.round(r.height),
                                fit: getComputedStyle(canvas).objectFit, mirror: canvas.classList.contains('mirror') };
                     };
                     return JSON.stringify({ window: [innerWidth, innerHeight], scale: devicePixelRatio, remote: box('[data-testid=video-caller]'), self: box('[data-testid=video-self]') });",
                )
                .await?
                .as_str()
                .context("the call view's layout")?
                .to_owned();
            wait_for("the video call to end", Duration::from_secs(40), || async { Ok(web.find("[data-testid=call-view]").await?.is_none().then_some(())) }).await?;
            let far_end = wait_for("hark-cli's count", SHORT, || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                Ok(text.lines().find(|l| l.contains("\"video_frames\"")).map(str::to_owned))
            })
            .await?;
            measured = Some((cpu, memory, mappings, layout, far_end));
            continue;
        }
        if far_end_shows {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let cpu = app_cpu(app).await;
            wait_for("the video call to end", Duration::from_secs(40), || async { Ok(web.find("[data-testid=call-view]").await?.is_none().then_some(())) }).await?;
            let (cpu_measured, memory, mappings, layout, far_end) = measured.context("the measured call came first")?;
            return Ok(VideoFigures { first_ms, cpu: cpu_measured, memory, mappings, far_end, layout, far_end_shows: (cpu, view) });
        }
        wait_for("the short call to end", Duration::from_secs(40), || async { Ok(web.find("[data-testid=call-view]").await?.is_none().then_some(())) }).await?;
    }
    anyhow::bail!("no video call was measured")
}
