//! `cargo xtask bench app`: the desktop app's memory, launch time and call CPU.
//!
//! Drives the release `hark-desktop` under Xvfb (with openbox as the window manager) through
//! tauri-driver, with fresh XDG folders and its built-in server: sign up, quit, then launch again
//! (the remembered session resumes) and time launch → contacts shown. Then PSS and RSS summed
//! over the app and every WebKit process it started, in each state the app lives in: idle with
//! the window open; ringing (hark-cli calls, the banner is up); in a call to the echo service,
//! and the CPU it takes; in that call with the window minimised (the mini window floats); and
//! idle with the window closed to the tray. Each figure is printed with what produced it;
//! `docs/BENCHMARKS.md` records them.
//!
//! Usage (xtask wraps it in dbus-run-session and xvfb-run): `hark-appbench APP TAURI_DRIVER`;
//! hark-cli is taken from beside this program.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hark_e2e::{sign_up, spawn_logged, wait_for, AppUnderTest};

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
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
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
    let [app, tauri_driver] = args.as_slice() else { anyhow::bail!("usage: hark-appbench APP TAURI_DRIVER") };
    let app = std::fs::canonicalize(app).context("the app binary")?;
    let cli = std::env::current_exe()?.with_file_name("hark-cli");
    let fixture = AppUnderTest::prepare_keeping_tray(Path::new(tauri_driver))?;
    let _window_manager = hark_e2e::start_window_manager(&fixture.home.path().join("openbox.log"))?;

    // First launch: sign up.
    let web = fixture.session(&app).await?;
    sign_up(&web, "bench", "bench password 1", None).await?;
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
    let tree = app_tree(&app);
    let ticks_before: u64 = tree.iter().map(|&pid| cpu_ticks(pid)).sum();
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks_after: u64 = tree.iter().map(|&pid| cpu_ticks(pid)).sum();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let cpu_percent = (ticks_after - ticks_before) as f64 / ticks_per_second / measured.elapsed().as_secs_f64() * 100.0;
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
    web.click_closing_window("[data-testid=mini-hangup]", SHORT).await?;
    web.switch_to(&main).await?;
    wait_for("the mini window to close", SHORT, || async { Ok((!web.windows().await?.contains(&mini)).then_some(())) }).await?;

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
    Ok(())
}
