//! `cargo xtask bench signaling --hostile`: honest calls through a storm of hostile clients.
//!
//! A release hark-server with its default limits (only the per-user invite budget is raised, so
//! that honest pairs can loop setups flat out) serves 200 honest caller-callee pairs
//! (`hark-loadgen`, flat out) twice: once calm, once while `hark-storm` runs every attack the
//! server has had to learn to refuse (login and registration floods, a stranger guessing the
//! owner's password, slowloris, clients that stop reading, amplified `users.get`, garbage frames,
//! forged tokens). The two runs side by side give the honest setups/s ratio and invite→incoming
//! latencies. Each run has a fresh server, so neither inherits the other's calls or memory; the
//! server's RSS, threads and sockets are sampled every 250 ms throughout, and read once more after
//! the storm, when the server has let go of its sockets and of the ended calls it remembers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{cpu_seconds, ms, record, rss_kib, section_opening, target_dir, verdict, LoadReport, Loadgen, Machine, Process, Scratch, Server};

const SECTION_TITLE: &str = "## Signaling under a hostile storm (cargo xtask bench signaling --hostile)";
const TARGET_RATIO: f64 = 0.8;
/// Honest sessions: 200 pairs, from two addresses (well under the per-source cap).
const HONEST_SESSIONS: usize = 400;

pub struct HostileOptions {
    pub duration_s: f64,
    pub record: bool,
}

/// The server's resources at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    rss_kib: u64,
    threads: u64,
    sockets: u64,
}

impl Usage {
    fn read(pid: u32) -> Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no Threads in /proc/PID/status")?;
        let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))?
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count() as u64;
        Ok(Usage { rss_kib: rss_kib(pid)?, threads, sockets })
    }

    fn max(self, other: Usage) -> Usage {
        Usage {
            rss_kib: self.rss_kib.max(other.rss_kib),
            threads: self.threads.max(other.threads),
            sockets: self.sockets.max(other.sockets),
        }
    }
}

/// Samples a process every 250 ms on a thread of its own until stopped; gives the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Usage>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = Usage::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(now) = Usage::read(pid) {
                    peak = peak.max(now);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            peak
        });
        Sampler { stop, thread }
    }

    fn peak(self) -> Usage {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

struct Figures {
    /// A fresh server, before any load.
    base: Usage,
    calm: LoadReport,
    calm_peak: Usage,
    storm: LoadReport,
    storm_peak: Usage,
    storm_report: String,
    /// The storm's server once it has let go of everything.
    after: Usage,
    /// Seconds after the storm until the server held no more sockets than before it.
    sockets_back_s: Option<f64>,
    refused_connections: String,
    storm_cpu_s: f64,
}

/// A fresh server in its own scratch folder, and a load generator pointed at it.
struct Fresh {
    server: Server,
    loadgen: Loadgen,
    secret_file: std::path::PathBuf,
    scratch: Scratch,
}

impl Fresh {
    fn start(target_dir: &std::path::Path) -> Result<Fresh> {
        let scratch = Scratch::new()?;
        let config = scratch.path.join("bench.toml");
        std::fs::write(
            &config,
            "# Written by `cargo xtask bench signaling --hostile`: every limit at its default but the\n\
             # per-user invite budget, so that honest pairs can loop call setups flat out.\n\
             [rate_limits]\ninvites_per_minute = 1000000\n",
        )?;
        let server = Server::start(&target_dir.join("release/hark-server"), &scratch.path, &config)?;
        eprintln!("bench: hark-server (pid {}) listening on {}", server.pid(), server.addr);
        let secret_file = scratch.path.join("signing.key");
        super::wait_for(Duration::from_secs(10), || secret_file.exists())?;
        let loadgen = Loadgen { bin: target_dir.join("release/hark-loadgen"), url: format!("ws://{}/v1/ws", server.addr), secret_file: secret_file.clone() };
        std::thread::sleep(Duration::from_secs(1));
        Ok(Fresh { server, loadgen, secret_file, scratch })
    }

    /// Stops the server; on failure keeps its folder for the log.
    fn finish<T>(mut self, outcome: Result<T>) -> Result<T> {
        let stopped = self.server.stop();
        match outcome {
            Ok(value) => stopped.map(|()| value),
            Err(e) => {
                self.scratch.keep = true;
                Err(e.context(format!("server log: {}", self.scratch.path.join("server.log").display())))
            }
        }
    }
}

/// How long the registry remembers ended calls (so late requests about them get `invalid_state`):
/// memory from a run is only given back after it.
const ENDED_CALL_MEMORY: Duration = Duration::from_secs(125);

pub fn run(options: HostileOptions, command_line: &str) -> Result<()> {
    let root = super::workspace_root();
    let build = ["build", "--release", "-p", "hark-server", "-p", "hark-loadgen"];
    eprintln!("bench: cargo {}", build.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if !std::process::Command::new(&cargo).current_dir(&root).args(build).status().context("running cargo build")?.success() {
        bail!("cargo {} failed", build.join(" "));
    }
    let target_dir = target_dir(&root);
    let storm_bin = target_dir.join("release/hark-storm");

    // Each run gets a fresh server, so that neither inherits the other's calls or memory.
    eprintln!("bench: calm run, {} honest pairs flat out for {} s", HONEST_SESSIONS / 2, options.duration_s);
    let mut calm_server = Fresh::start(&target_dir)?;
    let calm = (|| -> Result<(Usage, LoadReport, Usage)> {
        let base = Usage::read(calm_server.server.pid())?;
        let sampler = Sampler::start(calm_server.server.pid());
        let report = calm_server.loadgen.drive("c", 4, HONEST_SESSIONS, 0.0, options.duration_s, &mut calm_server.server)?;
        Ok((base, report, sampler.peak()))
    })();
    let (calm_base, calm, calm_peak) = calm_server.finish(calm)?;

    eprintln!("bench: storm run, the same pairs through hark-storm");
    let mut stormy = Fresh::start(&target_dir)?;
    let figures = (|| -> Result<Figures> {
        let base = Usage::read(stormy.server.pid())?;
        // The storm starts first and outlasts the honest run, so that all of it is stormy.
        let mut storm = Process::spawn(
            "hark-storm",
            std::process::Command::new(&storm_bin)
                .args(["--server", &stormy.server.addr, "--secret-file"])
                .arg(&stormy.secret_file)
                .args(["--duration", &(options.duration_s + 15.0).to_string()])
                // For experiments: HARK_STORM_ARGS="--login-rate 0" leaves an attack out.
                .args(std::env::var("HARK_STORM_ARGS").unwrap_or_default().split_whitespace()),
        )?;
        let sampler = Sampler::start(stormy.server.pid());
        std::thread::sleep(Duration::from_secs(3));
        let honest = stormy.loadgen.drive("s", 5, HONEST_SESSIONS, 0.0, options.duration_s, &mut stormy.server);
        let storm_report = storm.wait_line(Duration::from_secs(120), |line| line.starts_with('{').then(|| line.to_owned()));
        let storm_peak = sampler.peak();
        let storm_cpu_s = cpu_seconds(storm.pid()).unwrap_or(0.0);
        storm.stop(Duration::from_secs(10))?;
        let (honest, storm_report) = (honest?, storm_report?);
        stormy.server.check_alive()?;

        // Afterwards: the server lets go of every attacker's socket (the slowest, a silent
        // session, within 31 s), then of the calls it remembers.
        eprintln!("bench: waiting for the server to let go ({} s)", ENDED_CALL_MEMORY.as_secs());
        let settle_started = Instant::now();
        let mut sockets_back = None;
        while settle_started.elapsed() < ENDED_CALL_MEMORY {
            if sockets_back.is_none() && Usage::read(stormy.server.pid())?.sockets <= base.sockets + 1 {
                sockets_back = Some(settle_started.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let after = Usage::read(stormy.server.pid())?;
        let metrics = stormy.server.metrics().unwrap_or_default();
        let refused_connections = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hark_refused_connections_total "))
            .unwrap_or("?")
            .to_owned();
        Ok(Figures {
            base,
            calm,
            calm_peak,
            storm: honest,
            storm_peak,
            storm_report,
            after,
            sockets_back_s: sockets_back,
            refused_connections,
            storm_cpu_s,
        })
    })();
    let mut figures = stormy.finish(figures)?;
    figures.base = figures.base.max(calm_base);

    let report = figures.render(&options, &Machine::read(), command_line);
    println!("\n{report}");
    if options.record {
        let path = root.join("docs/BENCHMARKS.md");
        record(&path, &report)?;
        eprintln!("bench: recorded in {}", path.display());
    }
    Ok(())
}

/// The counts of one attack in hark-storm's report: `{"outcome":count,…}` under `"attack":`.
fn tally(report: &str, attack: &str) -> Vec<(String, f64)> {
    let key = format!("\"{attack}\":{{");
    let Some(at) = report.find(&key) else { return Vec::new() };
    let body = &report[at + key.len()..];
    let body = &body[..body.find('}').unwrap_or(body.len())];
    body.split(',')
        .filter_map(|entry| {
            let (name, count) = entry.rsplit_once(':')?;
            Some((name.trim().trim_matches('"').to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl Figures {
    fn render(&self, options: &HostileOptions, machine: &Machine, command_line: &str) -> String {
        let (calm, storm) = (&self.calm, &self.storm);
        let ratio = storm.setups_per_s / calm.setups_per_s.max(f64::MIN_POSITIVE);
        let owner = tally(&self.storm_report, "owner_login");
        let owner_ok = owner.iter().filter(|(o, _)| o == "200").map(|(_, n)| *n as u64).sum::<u64>();
        let owner_refused = owner.iter().filter(|(o, _)| o != "200").map(|(_, n)| *n as u64).sum::<u64>();
        let mut out = section_opening(SECTION_TITLE, "server, honest load generator and storm on the same machine, over loopback", machine, command_line);
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        let pairs = HONEST_SESSIONS / 2;
        let d = options.duration_s;
        line(format!(
            "| honest call setups/s, {pairs} pairs flat out for {d} s: storm / calm | {:.0} / {:.0} = {ratio:.2}× | ≥ {TARGET_RATIO}× | {} |",
            storm.setups_per_s,
            calm.setups_per_s,
            verdict(ratio >= TARGET_RATIO)
        ));
        line(format!(
            "| honest invite→incoming p50 / p99: storm; calm | {} / {} ms; {} / {} ms | (none) | |",
            ms(storm.incoming_p50_ms),
            ms(storm.incoming_p99_ms),
            ms(calm.incoming_p50_ms),
            ms(calm.incoming_p99_ms)
        ));
        line(format!(
            "| honest errors: storm, calm | {}, {} | 0 | {} |",
            storm.errors,
            calm.errors,
            verdict(storm.errors + calm.errors == 0)
        ));
        line(format!(
            "| the victim's owner signing in every 2 s during the storm (a stranger guessing the password meanwhile) | {owner_ok} in, {owner_refused} refused | all in | {} |",
            verdict(owner_ok > 0 && owner_refused == 0)
        ));
        line(format!(
            "| server RSS: fresh, peak calm, peak storm, after the storm ({} s) | {}, {}, {}, {} | peak storm ≤ peak calm + 64 MiB | {} |",
            ENDED_CALL_MEMORY.as_secs(),
            mib(self.base.rss_kib),
            mib(self.calm_peak.rss_kib),
            mib(self.storm_peak.rss_kib),
            mib(self.after.rss_kib),
            verdict(self.storm_peak.rss_kib <= self.calm_peak.rss_kib + 64 * 1024)
        ));
        line(format!(
            "| server threads: fresh, peak calm, peak storm, after | {}, {}, {}, {} | bounded | {} |",
            self.base.threads,
            self.calm_peak.threads,
            self.storm_peak.threads,
            self.after.threads,
            verdict(self.storm_peak.threads <= self.calm_peak.threads + 8)
        ));
        line(format!(
            "| server sockets: fresh, peak calm, peak storm, after (back to fresh {} after the storm) | {}, {}, {}, {} | back to fresh | {} |",
            self.sockets_back_s.map_or("never".to_owned(), |s| format!("{s:.0} s")),
            self.base.sockets,
            self.calm_peak.sockets,
            self.storm_peak.sockets,
            self.after.sockets,
            verdict(self.after.sockets <= self.base.sockets + 1)
        ));
        line(format!("| connections refused for their source's cap | {} | (none) | |", self.refused_connections));
        line(format!(
            "| CPU seconds during the honest runs, server / load generator: calm; storm (+ hark-storm {:.1}) | {:.1} / {:.1}; {:.1} / {:.1} | (none) | |",
            self.storm_cpu_s, calm.server_cpu_s, calm.loadgen_cpu_s, storm.server_cpu_s, storm.loadgen_cpu_s
        ));
        line(String::new());
        line(
            "How: the server runs with its default limits (256 connections per source, 10 s request deadlines, \
             60 login attempts per source per minute, 10 failed logins per source and id, 10 registrations per \
             source, password hashing on one nice-19 thread with 8 places and 5 hashes a second) but the per-user invite budget, so that \
             honest pairs can loop setups flat out. The honest pairs sign in with tokens minted from the secret and \
             come from 127.0.4.x (calm) and 127.0.5.x (storm). `hark-storm` (crates/loadgen) runs from 127.0.20–30.x: \
             200 logins/s for unknown ids and 50 registrations/s from 8 addresses, 10 wrong passwords/s for the \
             victim, 300 slowloris connections from one address (a third trickle a request line, a third send \
             nothing, a third trickle a body; each reopens a second after the server lets it go), 20 sessions that \
             flood `users.get` for a 16 KiB profile without reading and then go silent, 10 sessions asking \
             `users.get` for one user 1,000 times and for 51 users, 5 sessions sending garbage (bad JSON, invalid \
             UTF-8, 2 MiB frames), and two forged-token `hello`s a second. It starts 3 s before the honest run and \
             ends after it. Each run has a fresh server; \"after\" is read once the storm's server has let go of \
             its sockets and of the ended calls it remembers for two minutes. What each attack got back:"
                .into(),
        );
        line(String::new());
        line("```".into());
        line(self.storm_report.clone());
        line("```".into());
        for (name, errors, kinds) in [("calm", calm.errors, &calm.error_kinds), ("storm", storm.errors, &storm.error_kinds)] {
            if errors > 0 {
                line(String::new());
                line(format!("Honest errors in the {name} run: `{kinds}`"));
            }
        }
        out
    }
}
