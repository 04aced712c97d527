//! `cargo xtask bench app`: the desktop app's memory, launch time and call CPU.
//!
//! Drives the release `hark-desktop` under Xvfb through tauri-driver, with fresh XDG folders and
//! its built-in server: sign up, quit, then launch again (the remembered session resumes) and
//! time launch → contacts shown; measure PSS and RSS summed over the app and every WebKit
//! process it started, idle and in a call to the echo service; and the CPU those processes use
//! during the call. Each figure is printed with what produced it; `docs/BENCHMARKS.md` records them.
//!
//! Usage (xtask wraps it in dbus-run-session and xvfb-run): `hark-appbench APP TAURI_DRIVER`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hark_e2e::{sign_up, wait_for, AppUnderTest};

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

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [app, tauri_driver] = args.as_slice() else { anyhow::bail!("usage: hark-appbench APP TAURI_DRIVER") };
    let app = std::fs::canonicalize(app).context("the app binary")?;
    let fixture = AppUnderTest::prepare(Path::new(tauri_driver))?;

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
    // The app's own figure: from its main() to the contacts' answer leaving for the UI.
    let in_app_ms = wait_for("the app's launch figure", SHORT, || async {
        let log = fixture.log();
        let resumed = log.rsplit("hark-desktop starting").next().unwrap_or_default().to_owned();
        Ok(resumed.lines().find(|l| l.contains("contacts listed")).and_then(|l| l.split("since_launch_ms=").nth(1)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()))
    })
    .await?;
    // Idle means settled: the web process done loading, and the app's periodic heap trim
    // (every 10 s) has run at least once since.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let idle = memory(&app);

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
    let in_call = memory(&app);
    web.click_css("[data-testid=hangup]", SHORT).await?;
    web.quit().await;

    println!("hark-appbench: {}", app.display());
    println!("  launch -> contacts listed, in the app (main() to the contacts' answer): {in_app_ms} ms");
    println!("  launch -> contacts shown, from outside (WebDriver session start to the list in the page): {:.0} ms", to_contacts.as_secs_f64() * 1000.0);
    println!("  idle:    PSS {:.1} MiB, RSS {:.1} MiB over {} processes ({})", mib(idle.pss_kib), mib(idle.rss_kib), idle.processes, idle.each.join(", "));
    println!("  in call: PSS {:.1} MiB, RSS {:.1} MiB over {} processes ({})", mib(in_call.pss_kib), mib(in_call.rss_kib), in_call.processes, in_call.each.join(", "));
    println!("  CPU in a 1:1 audio call to echo (app + WebKit processes): {cpu_percent:.1}% of one core over 10 s");
    Ok(())
}
