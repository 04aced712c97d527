//! `cargo xtask bench …`: benchmarks that print figures and record them in `docs/BENCHMARKS.md`.
//!
//! `signaling` builds hark-server and hark-loadgen in release mode, starts the server on a loopback
//! port with a throwaway data directory, and runs the load generator against it three times:
//!
//! 1. **hold**: N sessions (default 20,000) open at once, no calls; the server's RSS is read before
//!    and once it is stable with all sessions up, giving KiB of server RSS per session;
//! 2. **flat out**: 1,000 caller-callee pairs, each looping full call setups back to back
//!    (invite -> incoming -> accept -> accepted -> hangup -> ended), giving setups/s;
//! 3. **paced**: the same pairs at 500 setups/s in all, giving p50/p99 invite->incoming latency.
//!
//! Server and load generator share this machine's cores, so the figures are a floor for the
//! server alone. Every run uses its own user-id prefix and source addresses, so calls or sockets
//! left over from one run cannot disturb the next.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

mod call;
mod cluster;
mod hostile;
mod video;

const BENCHMARKS: &[&str] = &["signaling", "call", "app", "video"];

const TARGET_SESSIONS: usize = 20_000;
const TARGET_KIB_PER_SESSION: f64 = 16.0;
const TARGET_SETUPS_PER_S: f64 = 2_000.0;
const TARGET_P99_MS: f64 = 20.0;
/// The paced run's rate, at which the latency target applies.
const PACED_RATE: f64 = 500.0;
/// Sessions of the setup runs: 1,000 pairs.
const SETUP_SESSIONS: usize = 2_000;

const SECTION_TITLE: &str = "## Signaling (cargo xtask bench signaling)";

const USAGE: &str = "\
usage: cargo xtask bench signaling [--sessions N] [--duration S] [--quick] [--no-record]
       cargo xtask bench signaling --hostile [--duration S] [--no-record]

  --sessions N   sessions held open at once in the hold run (default 20000; even)
  --duration S   seconds of each setup run, flat out and paced (default 20)
  --quick        smoke run: 2000 sessions, 5 s runs; does not touch docs/BENCHMARKS.md
  --nodes N      one server (SQLite) beside N nodes on one nats-server and PostgreSQL, side by
                 side: setups/s flat out, invite -> incoming at 1000 setups/s with caller and
                 callee on different nodes, RSS per session per node (6000 sessions held unless
                 --sessions says), CPU per setup split between hark-server, nats-server and
                 PostgreSQL
  --no-record    print the figures only; do not update docs/BENCHMARKS.md
  --hostile      the soak instead: 200 honest pairs flat out, calm and then through a storm of
                 hostile clients (hark-storm), for S seconds each (default 60);
                 HARK_STORM_ARGS passes options to hark-storm (e.g. --login-rate 0)

HARK_BENCH_SERVER=PATH benchmarks that hark-server binary instead of building this one.

usage: cargo xtask bench call [--calls N] [--cpu-seconds S] [--quick] [--no-record] [--no-baresip]

  call setup (accept -> first audio), audio latency, and CPU per side against baresip;
  `cargo xtask bench call --help` for the options.

usage: cargo xtask bench app [--no-record]

  the desktop app (the `desktop` profile, as `cargo xtask run` builds it) under Xvfb and openbox: launch -> contacts shown; PSS and RSS over
  the app and its WebKit processes idle (window open), ringing (banner), in a call, in a call
  minimised (mini window) and idle closed to the tray, with where the memory goes; CPU in a 1:1
  audio call; in a 1:1 720p30 video call: accept -> first remote picture drawn, CPU and memory of
  the whole app, and the same call between two headed Chromiums for the ratio. Needs what `cargo xtask test` installs (tauri-driver in target/tools, openbox,
  xdotool, wmctrl). HARK_WEBKIT_TUNING=0, HARK_RELATED_VIEWS=0 or HARK_VIDEO_LAYER=0 in the
  environment measure without the WebKit settings, with a web process per window, or with the
  call view's pictures drawn in the page.";

/// Runs `cargo xtask bench ARGS…`; `args` is what follows `bench`.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("signaling") => signaling(&args[1..]),
        Some("call") => call::run(&args[1..]),
        Some("app") => app(&args[1..]),
        Some("video") => video::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}\n\n{}", video::USAGE);
            Ok(())
        }
        Some(other) => bail!("unknown benchmark {other:?}; available: {}\n\n{USAGE}", BENCHMARKS.join(", ")),
        None => bail!("which benchmark? available: {}\n\n{USAGE}", BENCHMARKS.join(", ")),
    }
}

struct Options {
    hold_sessions: usize,
    duration_s: f64,
    quick: bool,
    record: bool,
    /// `--nodes N`: one server beside a cluster of N (see [`cluster`]).
    nodes: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut options = Options { hold_sessions: TARGET_SESSIONS, duration_s: 20.0, quick: false, record: true, nodes: 1 };
        let (mut sessions, mut duration) = (None, None);
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--sessions" => sessions = Some(value("--sessions")?.parse::<usize>().context("--sessions")?),
                "--duration" => duration = Some(value("--duration")?.parse::<f64>().context("--duration")?),
                "--quick" => options.quick = true,
                "--nodes" => options.nodes = value("--nodes")?.parse::<usize>().context("--nodes")?,
                "--no-record" => options.record = false,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if options.nodes > 1 {
            // Both set-ups hold their sessions in turn: a shorter hold keeps the run short.
            options.hold_sessions = 6_000;
        }
        if options.quick {
            options.hold_sessions = 2_000;
            options.duration_s = 5.0;
            options.record = false;
        }
        if let Some(n) = sessions {
            if n == 0 || n % 2 != 0 {
                bail!("--sessions must be even and positive");
            }
            options.hold_sessions = n;
        }
        if let Some(d) = duration {
            if !(d > 0.0 && d.is_finite()) {
                bail!("--duration must be positive");
            }
            options.duration_s = d;
        }
        Ok(options)
    }
}

fn signaling(args: &[String]) -> Result<()> {
    let command_line = std::iter::once("cargo xtask bench signaling".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    if args.iter().any(|a| a == "--hostile") {
        let rest: Vec<String> = args.iter().filter(|a| *a != "--hostile").cloned().collect();
        let options = Options::parse(&rest)?;
        let duration_s = if rest.iter().any(|a| a == "--duration") { options.duration_s } else { 60.0 };
        return hostile::run(hostile::HostileOptions { duration_s, record: options.record }, &command_line);
    }
    let options = Options::parse(args)?;
    let root = workspace_root();
    if options.nodes == 0 {
        bail!("--nodes must be at least 1");
    }

    // HARK_BENCH_SERVER=PATH benchmarks another hark-server build (e.g. an older release).
    let other_server = std::env::var_os("HARK_BENCH_SERVER").map(PathBuf::from);
    let mut build = vec!["build", "--release", "-p", "hark-loadgen"];
    if other_server.is_none() {
        build.extend(["-p", "hark-server"]);
    }
    eprintln!("bench: cargo {}", build.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo).current_dir(&root).args(&build).status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo {} failed", build.join(" "));
    }
    let target_dir = target_dir(&root);
    let server_bin = other_server.unwrap_or_else(|| target_dir.join("release/hark-server"));
    let loadgen_bin = target_dir.join("release/hark-loadgen");
    if options.nodes > 1 {
        let cluster = cluster::ClusterOptions {
            nodes: options.nodes,
            hold_sessions: options.hold_sessions,
            duration_s: options.duration_s,
            record: options.record,
        };
        return cluster::run(cluster, &server_bin, &loadgen_bin, &root, &command_line);
    }

    let mut scratch = Scratch::new()?;
    let config = scratch.path.join("bench.toml");
    std::fs::write(
        &config,
        "# Written by `cargo xtask bench signaling`: limits out of the benchmark's way.\n\
         connections_per_source = 1000000\n\
         [rate_limits]\ninvites_per_minute = 1000000\nlogins_per_minute = 1000000\n",
    )?;
    let mut server = Server::start(&server_bin, &scratch.path, &config)?;
    eprintln!("bench: hark-server (pid {}) listening on {}", server.pid(), server.addr);
    let secret_file = scratch.path.join("signing.key");
    wait_for(Duration::from_secs(10), || secret_file.exists())
        .with_context(|| format!("{} did not appear", secret_file.display()))?;
    let loadgen = Loadgen {
        bin: loadgen_bin,
        url: format!("ws://{}/v1/ws", server.addr),
        secret_file,
    };

    let figures = (|| -> Result<Figures> {
        std::thread::sleep(Duration::from_secs(1));
        let baseline_kib = rss_kib(server.pid())?;

        // 1. Hold.
        eprintln!("bench: hold run, {} sessions", options.hold_sessions);
        let hold = loadgen.hold(options.hold_sessions, &mut server)?;
        let held_kib = hold.rss_kib;
        let per_session_kib = (held_kib as f64 - baseline_kib as f64) / hold.sessions_up.max(1) as f64;
        std::thread::sleep(Duration::from_secs(2));

        // 2. Flat out.
        eprintln!("bench: flat-out run, {} pairs, {} s", SETUP_SESSIONS / 2, options.duration_s);
        let flat = loadgen.drive("f", 2, SETUP_SESSIONS, 0.0, options.duration_s, &mut server)?;
        std::thread::sleep(Duration::from_secs(2));

        // 3. Paced.
        eprintln!("bench: paced run, {PACED_RATE} setups/s, {} s", options.duration_s);
        let paced = loadgen.drive("p", 3, SETUP_SESSIONS, PACED_RATE, options.duration_s, &mut server)?;

        Ok(Figures { baseline_kib, hold, held_kib, per_session_kib, flat, paced })
    })();
    let stopped = server.stop();
    let figures = match figures {
        Ok(figures) => figures,
        Err(e) => {
            scratch.keep = true;
            return Err(e.context(format!("server log: {}", scratch.path.join("server.log").display())));
        }
    };
    stopped?;

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

/// Where cargo builds for this workspace: `CARGO_TARGET_DIR` (relative to the root) or `target`.
/// Installs the UI's npm packages from the lockfile (the browser benchmarks drive Chromium with
/// playwright-core) unless they are there already, saying so.
fn install_ui_packages(root: &Path) -> Result<()> {
    if root.join("ui/node_modules/playwright-core").exists() {
        return Ok(());
    }
    let mut install = crate::workspace::npm_command(&["ci", "--no-audit", "--no-fund"])?;
    eprintln!("bench: {}", crate::workspace::describe(&install));
    if !install.status()?.success() {
        bail!("{} failed", crate::workspace::describe(&install));
    }
    Ok(())
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// A throwaway data directory; removed at the end unless a failure wants it kept for its logs.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn new() -> Result<Scratch> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let path = std::env::temp_dir().join(format!("hark-bench-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path, keep: false })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("bench: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A child process with its stdout lines coming through a channel (read on a thread, so waits can
/// time out), killed with SIGTERM (then SIGKILL) when dropped.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: &'static str,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Result<Process> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Process { child, lines, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line for which `pick` returns something, within `within`.
    fn wait_line<T>(&mut self, within: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return Ok(found);
                    }
                    eprintln!("{}: {line}", self.name);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!("{} exited ({status}) before printing what was expected", self.name);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                    bail!("{} printed nothing expected within {} s", self.name, within.as_secs())
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([signal, &self.pid().to_string()]).status();
    }

    /// Whether it has exited (and if so, reaps it).
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    fn stop(&mut self, grace: Duration) -> Result<()> {
        if self.exited() {
            return Ok(());
        }
        self.signal("-TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() || status.code().is_none() {
                    Ok(())
                } else {
                    Err(anyhow!("{} exited with {status} after SIGTERM", self.name))
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not exit within {} s of SIGTERM; killed", self.name, grace.as_secs())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(5));
    }
}

struct Server {
    process: Process,
    addr: String,
}

impl Server {
    fn start(bin: &Path, data_dir: &Path, config: &Path) -> Result<Server> {
        Server::start_with(bin, data_dir, config, &[])
    }

    /// Starts it with `extra` arguments to `serve` too.
    fn start_with(bin: &Path, data_dir: &Path, config: &Path, extra: &[String]) -> Result<Server> {
        let log = std::fs::File::create(data_dir.join("server.log"))?;
        let mut process = Process::spawn(
            "hark-server",
            Command::new(bin)
                .arg("serve")
                .args(["--listen", "127.0.0.1:0", "--data-dir"])
                .arg(data_dir)
                .arg("--config")
                .arg(config)
                .args(extra)
                .stderr(log),
        )?;
        let addr = process
            .wait_line(Duration::from_secs(30), |line| {
                line.strip_prefix("hark-server listening on http://").map(|a| a.trim().trim_end_matches('/').to_owned())
            })
            .with_context(|| format!("waiting for hark-server to listen (log: {})", data_dir.join("server.log").display()))?;
        Ok(Server { process, addr })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn check_alive(&mut self) -> Result<()> {
        if self.process.exited() {
            bail!("hark-server exited during the benchmark");
        }
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        self.process.stop(Duration::from_secs(15))
    }

    /// `GET /metrics`, with plain std (HTTP/1.0, so the server closes when done).
    fn metrics(&self) -> Result<String> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        Ok(body.to_owned())
    }
}

/// The soft and hard RLIMIT_NOFILE of a process, from /proc/PID/limits.
fn fd_limits(pid: u32) -> Result<(usize, usize)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files")).context("no fd limit in /proc/PID/limits")?;
    let mut fields = line.split_whitespace().map(|f| if f == "unlimited" { Ok(usize::MAX) } else { f.parse::<usize>() });
    match (fields.next(), fields.next()) {
        (Some(Ok(soft)), Some(Ok(hard))) => Ok((soft, hard)),
        _ => bail!("unreadable fd limit: {line:?}"),
    }
}

/// CPU time (user + system) a process used so far, from /proc/PID/stat (in USER_HZ = 100 ticks/s,
/// which is what Linux reports there on every architecture).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("unreadable /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok()).context("unreadable /proc/PID/stat");
    Ok((ticks(14)? + ticks(15)?) / 100.0)
}

/// Resident set size of a process, from /proc/PID/status.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn wait_for(within: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !ready() {
        if Instant::now() >= deadline {
            bail!("timed out after {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

struct Loadgen {
    bin: PathBuf,
    url: String,
    secret_file: PathBuf,
}

/// What the hold run found.
struct Hold {
    requested: usize,
    /// Sessions opened: `requested`, or fewer when the server's fd limit could not take them.
    attempted: usize,
    sessions_up: usize,
    /// The server's fd limit, when it made the run hold fewer sessions than requested.
    capped_by: Option<usize>,
    /// Load generator processes used.
    processes: usize,
    rss_kib: u64,
    /// Server-side gauges about connections or sessions from /metrics, as printed.
    server_gauges: Vec<String>,
    errors: u64,
    error_kinds: String,
}

impl Loadgen {
    /// Sessions `first..first + sessions` bind to their own source addresses in 127.0.SUBNET.0/24.
    fn command(&self, prefix: &str, subnet: u8, first: usize, sessions: usize) -> Command {
        // At most ~28k ephemeral ports per source address: give each address ~5,000 sessions.
        let addresses = sessions.div_ceil(5_000).max(2);
        let offset = first / 5_000;
        let bind: Vec<String> = (1..=addresses).map(|k| format!("127.0.{subnet}.{}", (offset + k).min(254))).collect();
        let mut command = Command::new(&self.bin);
        command
            .args(["--server", &self.url, "--secret-file"])
            .arg(&self.secret_file)
            .args(["--sessions", &sessions.to_string(), "--bind", &bind.join(",")])
            .args(["--user-prefix", prefix, "--connect-concurrency", "128"]);
        command
    }

    /// Opens `requested` sessions (fewer if the server's fd limit cannot take them) from as many
    /// load generator processes as this machine's fd limit needs, measures the server's RSS once
    /// it is stable, then closes them.
    fn hold(&self, requested: usize, server: &mut Server) -> Result<Hold> {
        let (server_fd_limit, _) = fd_limits(server.pid())?;
        let server_fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))?.count();
        // Room for the server's own files (database, logs, epoll) beyond those open now.
        let fit = server_fd_limit.saturating_sub(server_fds + 32) / 2 * 2;
        let sessions = requested.min(fit);
        let capped_by = (sessions < requested).then_some(server_fd_limit);
        if let Some(limit) = capped_by {
            eprintln!("bench: the server's fd limit is {limit}: holding {sessions} sessions, not {requested}");
        }
        // Each load generator process lives under the same fd limit as this one.
        let (_, own_hard) = fd_limits(std::process::id())?;
        let chunk = (own_hard.saturating_sub(128).min(10_000) / 2 * 2).max(2);
        let mut processes = Vec::new();
        for first in (0..sessions).step_by(chunk) {
            let n = chunk.min(sessions - first);
            let mut command = self.command("h", 1, first, n);
            command.args(["--hold", "3600", "--first-session", &first.to_string()]);
            processes.push(Process::spawn("hark-loadgen", &mut command)?);
        }
        let mut sessions_up = 0;
        for process in &mut processes {
            sessions_up += process.wait_line(Duration::from_secs(600), |line| {
                line.strip_prefix("sessions-up ").and_then(|n| n.trim().parse::<usize>().ok())
            })?;
        }
        eprintln!("bench: {sessions_up} sessions up; waiting for the server's RSS to settle");
        server.check_alive()?;
        // Stable: the last 2 s of readings (every 250 ms) within 1% or 256 KiB; at most 30 s.
        let mut readings = VecDeque::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let rss_kib = loop {
            let rss = rss_kib(server.pid())?;
            readings.push_back(rss);
            if readings.len() > 9 {
                readings.pop_front();
            }
            let (lo, hi) = (readings.iter().min().copied().unwrap_or(0), readings.iter().max().copied().unwrap_or(0));
            if readings.len() == 9 && (hi - lo <= 256 || (hi - lo) as f64 <= hi as f64 * 0.01) || Instant::now() >= deadline {
                break rss;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let server_gauges = match server.metrics() {
            Ok(text) => text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| l.contains("session") || l.contains("connection"))
                .map(str::to_owned)
                .collect(),
            Err(e) => {
                eprintln!("bench: could not read /metrics: {e}");
                Vec::new()
            }
        };
        let mut errors = 0;
        let mut error_kinds = Vec::new();
        for process in &processes {
            process.signal("-TERM");
        }
        for process in &mut processes {
            let json = process.wait_line(Duration::from_secs(60), |line| line.starts_with('{').then(|| line.to_owned()))?;
            process.stop(Duration::from_secs(10))?;
            let report = LoadReport::parse(&json)?;
            errors += report.errors;
            if report.errors > 0 {
                error_kinds.push(report.error_kinds);
            }
        }
        Ok(Hold {
            requested,
            attempted: sessions,
            sessions_up,
            capped_by,
            processes: processes.len(),
            rss_kib,
            server_gauges,
            errors,
            error_kinds: error_kinds.join(" "),
        })
    }

    fn drive(&self, prefix: &str, subnet: u8, sessions: usize, rate: f64, duration_s: f64, server: &mut Server) -> Result<LoadReport> {
        let mut command = self.command(prefix, subnet, 0, sessions);
        command.args(["--rate", &rate.to_string(), "--duration", &duration_s.to_string()]);
        let mut process = Process::spawn("hark-loadgen", &mut command)?;
        // The server's CPU from "driving" to the report includes the connects of the load
        // generator; they are few (2,000) next to the setups.
        let cpu_before = cpu_seconds(server.pid())?;
        let within = Duration::from_secs_f64(duration_s + 300.0);
        let json = process.wait_line(within, |line| line.starts_with('{').then(|| line.to_owned()))?;
        let server_cpu_s = cpu_seconds(server.pid())? - cpu_before;
        process.stop(Duration::from_secs(10))?;
        server.check_alive()?;
        let mut report = LoadReport::parse(&json)?;
        report.server_cpu_s = server_cpu_s;
        Ok(report)
    }
}

/// The load generator's final JSON line, read without a JSON library (xtask keeps to std).
struct LoadReport {
    sessions: usize,
    setups: u64,
    setups_per_s: f64,
    incoming_p50_ms: Option<f64>,
    incoming_p99_ms: Option<f64>,
    setup_p50_ms: Option<f64>,
    setup_p99_ms: Option<f64>,
    errors: u64,
    error_kinds: String,
    /// CPU seconds the load generator used.
    loadgen_cpu_s: f64,
    /// CPU seconds the server used while the load generator ran (set by the caller).
    server_cpu_s: f64,
}

impl LoadReport {
    fn parse(json: &str) -> Result<LoadReport> {
        let number = |path: &[&str]| json_number(json, path);
        let need = |path: &[&str]| number(path).with_context(|| format!("no {} in the load generator's report: {json}", path.join(".")));
        Ok(LoadReport {
            sessions: need(&["sessions"])? as usize,
            setups: need(&["setups"])? as u64,
            setups_per_s: need(&["setups_per_s"])?,
            incoming_p50_ms: number(&["invite_to_incoming_ms", "p50"]),
            incoming_p99_ms: number(&["invite_to_incoming_ms", "p99"]),
            setup_p50_ms: number(&["setup_ms", "p50"]),
            setup_p99_ms: number(&["setup_ms", "p99"]),
            errors: need(&["errors"])? as u64,
            error_kinds: json
                .split_once("\"error_kinds\":")
                .map(|(_, rest)| rest.split('}').next().unwrap_or_default().to_owned() + "}")
                .unwrap_or_default(),
            loadgen_cpu_s: number(&["cpu_s"]).unwrap_or(0.0),
            server_cpu_s: 0.0,
        })
    }
}

/// The number at `"k1": … "k2": <number>`, each key searched after the previous one; None for null.
fn json_number(json: &str, path: &[&str]) -> Option<f64> {
    let mut rest = json;
    for key in path {
        let quoted = format!("\"{key}\":");
        let at = rest.find(&quoted)?;
        rest = &rest[at + quoted.len()..];
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

struct Figures {
    baseline_kib: u64,
    hold: Hold,
    held_kib: u64,
    per_session_kib: f64,
    flat: LoadReport,
    paced: LoadReport,
}

struct Machine {
    cores: usize,
    model: String,
    memory: String,
    kernel: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| format!("{:.0} GiB RAM", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown RAM".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            model,
            memory,
            kernel,
        }
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "pass"
    } else {
        "**FAIL**"
    }
}

fn ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into())
}

impl Figures {
    /// The markdown section for docs/BENCHMARKS.md (also what is printed).
    fn render(&self, options: &Options, machine: &Machine, command_line: &str) -> String {
        let hold = &self.hold;
        let (flat, paced) = (&self.flat, &self.paced);
        let pairs = flat.sessions / 2;
        let d = options.duration_s;
        let sessions_verdict = match hold.capped_by {
            _ if hold.sessions_up >= TARGET_SESSIONS && hold.errors == 0 => "pass",
            _ if hold.requested < TARGET_SESSIONS => "n/a (fewer asked)",
            Some(_) if hold.sessions_up == hold.attempted && hold.errors == 0 => "not reachable here (fd limit)",
            _ => "**FAIL**",
        };
        let rss_pass = self.per_session_kib <= TARGET_KIB_PER_SESSION;
        let rate_pass = flat.setups_per_s >= TARGET_SETUPS_PER_S;
        let p99_pass = paced.incoming_p99_ms.is_some_and(|p| p <= TARGET_P99_MS)
            && paced.setups_per_s >= PACED_RATE * 0.95;
        let mut out = section_opening(SECTION_TITLE, "server and load generator on the same machine, over loopback", machine, command_line);
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "| sessions held at once | {} of {} asked{} | {TARGET_SESSIONS} | {sessions_verdict} |",
            hold.sessions_up,
            hold.requested,
            match hold.capped_by {
                Some(limit) => format!(" (the server's fd limit is {limit}, which this machine does not let a process raise)"),
                None => String::new(),
            },
        ));
        line(format!(
            "| server RSS per session | {:.1} KiB ({:.1} MiB idle, {:.1} MiB with {} sessions) | ≤ {TARGET_KIB_PER_SESSION} KiB | {} |",
            self.per_session_kib,
            self.baseline_kib as f64 / 1024.0,
            self.held_kib as f64 / 1024.0,
            hold.sessions_up,
            verdict(rss_pass)
        ));
        line(format!(
            "| call setups/s, flat out ({pairs} pairs, {d} s) | {:.0} ({} setups) | ≥ {TARGET_SETUPS_PER_S} | {} |",
            flat.setups_per_s,
            flat.setups,
            verdict(rate_pass)
        ));
        line(format!(
            "| invite→incoming p50 / p99 at {PACED_RATE} setups/s ({pairs} pairs, {d} s; achieved {:.0}/s) | {} / {} ms | p99 ≤ {TARGET_P99_MS} ms | {} |",
            paced.setups_per_s,
            ms(paced.incoming_p50_ms),
            ms(paced.incoming_p99_ms),
            verdict(p99_pass)
        ));
        line(format!(
            "| invite→incoming p50 / p99, flat out | {} / {} ms | (none) | |",
            ms(flat.incoming_p50_ms),
            ms(flat.incoming_p99_ms)
        ));
        line(format!(
            "| whole setup (invite → both ended) p50 / p99: paced, flat out | {} / {} ms, {} / {} ms | (none) | |",
            ms(paced.setup_p50_ms),
            ms(paced.setup_p99_ms),
            ms(flat.setup_p50_ms),
            ms(flat.setup_p99_ms)
        ));
        line(format!(
            "| CPU seconds, server / load generator: flat out, paced (each run includes its {} connects) | {:.1} / {:.1}, {:.1} / {:.1} | (none) | |",
            flat.sessions,
            flat.server_cpu_s, flat.loadgen_cpu_s, paced.server_cpu_s, paced.loadgen_cpu_s
        ));
        line(format!(
            "| load generator errors: hold, flat out, paced | {}, {}, {} | 0 | {} |",
            hold.errors,
            flat.errors,
            paced.errors,
            verdict(hold.errors + flat.errors + paced.errors == 0)
        ));
        line(String::new());
        line(format!(
            "How: `hark-loadgen` mints tokens with the server's signing secret (so password hashing is not \
             measured) and opens sessions from several 127.0.x.y source addresses ({} process(es) for the \
             hold run, each under the fd limit). RSS per session is the server's VmRSS with all sessions up \
             and idle (stable over 2 s) minus its VmRSS before, divided by the sessions; it includes creating \
             each session's account. A setup is `call.invite` → `call.incoming` → `call.accept` → \
             `call.accepted` → `call.hangup` → `call.ended` on both sides; each pair has one call at a time. \
             Latency is from sending `call.invite` to receiving `call.incoming`, on one clock in the load \
             generator, so it includes the load generator's own scheduling on the shared cores.",
            hold.processes
        ));
        if !hold.server_gauges.is_empty() {
            line(String::new());
            line("Server gauges during the hold run:".into());
            line(String::new());
            line("```".into());
            for gauge in &hold.server_gauges {
                line(gauge.clone());
            }
            line("```".into());
        }
        for (name, errors, kinds) in [
            ("hold", hold.errors, &hold.error_kinds),
            ("flat out", flat.errors, &flat.error_kinds),
            ("paced", paced.errors, &paced.error_kinds),
        ] {
            if errors > 0 {
                line(String::new());
                line(format!("Errors in the {name} run: `{kinds}`"));
            }
        }
        out
    }
}

/// `cargo xtask bench app`: builds the UI, the app (`desktop` profile) and the driver program, runs it under
/// `dbus-run-session -- xvfb-run` and records what it prints.
fn app(args: &[String]) -> Result<()> {
    let no_record = match args {
        [] => false,
        [flag] if flag == "--no-record" => true,
        _ => bail!("unexpected arguments {args:?}\n\n{USAGE}"),
    };
    let root = crate::workspace::root()?;
    let npm = crate::workspace::npm_command(&["run", "build"])?;
    // The app apart, as it is packaged (see bundle::pack); hark-server too: the headed Chromium
    // pair (video-bench.mjs) runs through one.
    let mut app = crate::workspace::cargo_command()?;
    app.args(["build", "--profile", "desktop", "--locked", "-p", "hark-desktop"]);
    let mut tools = crate::workspace::cargo_command()?;
    tools.args(["build", "--profile", "desktop", "--locked", "-p", "hark-e2e", "-p", "hark-cli", "-p", "hark-server"]);
    for mut step in [npm, app, tools] {
        println!("xtask: {}", crate::workspace::describe(&step));
        if !step.status()?.success() {
            bail!("{} failed", crate::workspace::describe(&step));
        }
    }
    let driver = crate::run_tests::tauri_driver()?;
    let release = root.join("target").join("desktop");
    let output = Command::new("dbus-run-session")
        .args(["--", "xvfb-run", "-a", "-s", "-screen 0 1280x800x24"])
        .arg(release.join("hark-appbench"))
        .arg(release.join("hark-desktop"))
        .arg(&driver)
        .stderr(Stdio::inherit())
        .output()
        .context("running hark-appbench")?;
    // Only the bench's own lines: the session bus and X server also write to stdout.
    let printed: String = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("hark-appbench") || line.starts_with("  "))
        .map(|line| format!("{line}\n"))
        .collect();
    print!("{printed}");
    if !output.status.success() {
        bail!("hark-appbench failed");
    }
    if !no_record {
        let section = format!(
            "## Desktop app (cargo xtask bench app)\n\nRecorded {} on this machine (2 cores, Xvfb with openbox, software rendering), `desktop` profile (release, optimised for size), \
             first-run folders, the built-in server and echo service in the app process.\n\n```\n{}```\n",
            utc_now(),
            printed
        );
        record(&root.join("docs").join("BENCHMARKS.md"), &section)?;
    }
    Ok(())
}

/// Replaces the benchmark's section in `path` (the one titled like `section`'s first line), or
/// appends it; creates the file if need be.
fn record(path: &Path, section: &str) -> Result<()> {
    let title = section.lines().next().unwrap_or(SECTION_TITLE);
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n\n\
             Figures from `cargo xtask bench …` on the machine named in each section (a small shared \
             machine: expect noise of 10–20% between runs; compare ratios, not absolute numbers, across \
             machines).\n"
            .to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = match existing.find(title) {
        Some(start) => {
            let after = start + title.len();
            let end = existing[after..].find("\n## ").map(|i| after + i + 1).unwrap_or(existing.len());
            let tail = &existing[end..];
            let separator = if tail.is_empty() { "" } else { "\n" };
            format!("{}{}{separator}{}", &existing[..start], section, tail)
        }
        None => format!("{}\n{}", existing.trim_end_matches('\n').to_owned() + "\n", section),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

/// `YYYY-MM-DD HH:MM UTC`, from the system clock (std only).
/// The lines every recorded section opens with: its title, when and on what it ran, the command,
/// and the head of the figures table.
fn section_opening(title: &str, setting: &str, machine: &Machine, command_line: &str) -> String {
    format!(
        "{title}\n\nRun {} on {} cores ({}), {}, Linux {}; {setting}.\n\nCommand: `{command_line}`\n\n| figure | result | target | |\n| --- | --- | --- | --- |\n",
        utc_now(),
        machine.cores,
        machine.model,
        machine.memory,
        machine.kernel
    )
}

fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_load_generator_report() {
        let json = r#"{"connect_s":1.2,"duration_s":20.0,"error_kinds":{"timeout":2},"errors":2,"invite_to_incoming_ms":{"count":10,"max":9.0,"p50":0.5,"p99":3.25},"rate":0.0,"sessions":2000,"sessions_held_at_end":2000,"sessions_requested":2000,"setup_ms":{"count":0,"max":null,"p50":null,"p99":null},"setups":40000,"setups_per_s":2000.5}"#;
        let r = LoadReport::parse(json).unwrap();
        assert_eq!((r.sessions, r.setups, r.errors), (2000, 40000, 2));
        assert_eq!((r.setups_per_s, r.incoming_p50_ms, r.incoming_p99_ms), (2000.5, Some(0.5), Some(3.25)));
        assert_eq!((r.setup_p50_ms, r.setup_p99_ms), (None, None));
        assert_eq!(r.error_kinds, r#"{"timeout":2}"#);
    }

    #[test]
    fn replaces_only_its_section() {
        let dir = std::env::temp_dir().join(format!("hark-bench-test-{}", std::process::id()));
        let path = dir.join("BENCHMARKS.md");
        let _ = std::fs::remove_file(&path);
        record(&path, &format!("{SECTION_TITLE}\n\nold\n")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Benchmarks\n"));
        std::fs::write(&path, text + "\n## Media\n\nkeep\n").unwrap();
        record(&path, &format!("{SECTION_TITLE}\n\nnew\n")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("new\n") && !text.contains("old") && text.contains("## Media\n\nkeep\n"), "{text}");
        assert_eq!(text.matches(SECTION_TITLE).count(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn dates() {
        assert!(utc_now().starts_with("20"));
    }
}
