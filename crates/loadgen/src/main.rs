//! hark-loadgen: opens many authenticated sessions to a hark-server and drives 1:1 call setups.
//!
//! Sessions come in pairs (caller `A_i`, callee `B_i`), and one task owns both sockets of a pair.
//! That task reads both sockets all the time (so WebSocket pings are answered), and runs the setup
//! `invite -> incoming -> accept -> accepted -> hangup -> ended` as a small state machine: a pair
//! has at most one call in flight, because a user in a live call is busy. Since both ends of a call
//! live in one task, invite->incoming latency is measured with one monotonic clock.
//!
//! Tokens are minted here with the server's signing secret, so password hashing is not measured.
//! Sockets bind to several loopback source addresses (round robin) to get past the ~28k ephemeral
//! ports one source address has.
//!
//! Output: progress on stderr; `sessions-up N` on stdout once every session is up (or has failed);
//! at the end one JSON line on stdout with the figures.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// Load generator for hark-server signaling.
#[derive(Parser, Debug)]
#[command(name = "hark-loadgen", version)]
struct Args {
    /// WebSocket URL of the server, e.g. ws://127.0.0.1:7600/v1/ws (plain ws only). Several,
    /// comma separated, for the nodes of a cluster: session N connects to the (N mod count)th,
    /// so with two or more a pair's caller and callee are on different nodes.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// File holding the server's signing secret (DATA_DIR/signing.key); whitespace is trimmed.
    #[arg(long)]
    secret_file: PathBuf,
    /// Sessions to open; must be even (sessions/2 caller-callee pairs).
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Source addresses to bind, round robin (comma separated), e.g. 127.0.0.1,127.0.0.2.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    bind: Vec<IpAddr>,
    /// Call setups per second across all pairs; 0 = flat out (every pair loops back to back).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds to drive setups once all sessions are up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Only hold the sessions open this many seconds (no calls), or until SIGINT/SIGTERM.
    #[arg(long)]
    hold: Option<f64>,
    /// Number of this process's first session: sessions are FIRST..FIRST+N, so several load
    /// generator processes (each under its own fd limit) can share one run. Must be even.
    #[arg(long, default_value_t = 0)]
    first_session: usize,
    /// Sessions being connected at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// User ids are PREFIX followed by a 6-digit number (u000001, u000002, ...). Use a different
    /// prefix per run against one server, so that no call of an earlier run can make a user busy.
    #[arg(long, default_value = "u")]
    user_prefix: String,
    /// Seconds a setup may take before it counts as an error and is abandoned.
    #[arg(long, default_value_t = 10.0)]
    setup_timeout: f64,
    /// Seconds to wait for all sessions to come up.
    #[arg(long, default_value_t = 180.0)]
    connect_timeout: f64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.sessions == 0 || args.sessions % 2 != 0 {
        bail!("--sessions must be even and positive (sessions/2 caller-callee pairs)");
    }
    if args.bind.is_empty() {
        bail!("--bind needs at least one address");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be >= 0");
    }
    if args.first_session % 2 != 0 {
        bail!("--first-session must be even");
    }
    let fd_limit = raise_fd_limit(args.sessions as u64 * 2 + 1024);
    if args.sessions as u64 + 64 > fd_limit {
        bail!(
            "{} sessions do not fit under this process's fd limit of {fd_limit}; run several \
             hark-loadgen processes with --first-session, e.g. two of {} sessions each",
            args.sessions,
            args.sessions / 4 * 2
        );
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.build()?.block_on(run(args))
}

/// Raises RLIMIT_NOFILE (soft and hard) so that tens of thousands of sockets fit. Raising the hard
/// limit needs CAP_SYS_RESOURCE (root usually has it; some containers drop it); without it, the
/// soft limit goes up to the hard one. Returns the soft limit in force.
fn raise_fd_limit(wanted: u64) -> u64 {
    let wanted = wanted.max(200_000) as libc::rlim_t;
    let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls on a stack struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) != 0 {
            return 1024;
        }
        if current.rlim_cur >= wanted {
            return current.rlim_cur;
        }
        let raised = libc::rlimit { rlim_cur: wanted, rlim_max: wanted.max(current.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return wanted as u64;
        }
        let soft = libc::rlimit { rlim_cur: current.rlim_max, rlim_max: current.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            current.rlim_cur = current.rlim_max;
        }
        current.rlim_cur
    }
}

/// What the pairs should be doing; main moves it forward.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Sessions are coming up; hold them.
    Connecting,
    /// Drive setups from this instant on.
    Run(Instant),
    /// Finish the setup in flight (if any), then close both sessions.
    Stop,
}

/// Shared by all pair tasks.
struct Ctx {
    /// Each server's URL and address.
    servers: Vec<(String, SocketAddr)>,
    bind: Vec<IpAddr>,
    secret: Vec<u8>,
    token_exp: i64,
    user_prefix: String,
    /// Number of this process's first session.
    first: usize,
    ws_config: WebSocketConfig,
    connect_permits: Semaphore,
    connect_timeout: Duration,
    setup_timeout: Duration,
    /// Pairs that drive setups.
    pairs: usize,
    rate: f64,
    duration: Duration,
    /// Sessions up (welcomed).
    up: AtomicUsize,
    /// Sessions that failed to come up.
    failed: AtomicUsize,
    /// Sessions that were up and then closed or broke before the end.
    lost: AtomicUsize,
    /// Errors by kind: server error codes, `timeout`, `connect`, `closed`, ...
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Ctx {
    fn error(&self, kind: &str) {
        *self.errors.lock().unwrap().entry(kind.to_owned()).or_default() += 1;
    }

    fn user(&self, session: usize) -> String {
        format!("{}{:06}", self.user_prefix, session + 1)
    }
}

/// What one pair measured.
#[derive(Default)]
struct PairReport {
    /// Setups completed within the window.
    setups: u64,
    /// invite sent -> call.incoming received, microseconds, within the window.
    incoming_us: Vec<u32>,
    /// invite sent -> both sides got call.ended, microseconds, within the window.
    setup_us: Vec<u32>,
}

async fn run(args: Args) -> Result<()> {
    let secret = std::fs::read_to_string(&args.secret_file)
        .with_context(|| format!("reading {}", args.secret_file.display()))?;
    let secret = secret.trim().as_bytes().to_vec();
    if secret.is_empty() {
        bail!("{} is empty", args.secret_file.display());
    }
    let mut servers = Vec::new();
    for url in &args.server {
        let server = resolve(url).await?;
        for ip in &args.bind {
            if ip.is_ipv4() != server.is_ipv4() {
                bail!("--bind {ip} is not of the same family as the server address {server}");
            }
        }
        servers.push((url.clone(), server));
    }
    let probe = format!("{}000001", args.user_prefix);
    if !hark_protocol::valid_user_id(&probe) {
        bail!("--user-prefix {:?} does not make valid user ids", args.user_prefix);
    }
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let pairs = args.sessions / 2;
    let ctx = Arc::new(Ctx {
        servers,
        bind: args.bind.clone(),
        secret,
        token_exp: now_s + 24 * 3600,
        user_prefix: args.user_prefix.clone(),
        first: args.first_session,
        // Small buffers: 20,000 sessions must fit next to the server. Frames here are tiny.
        ws_config: WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(256 * 1024)
            .max_message_size(Some(256 * 1024))
            .max_frame_size(Some(256 * 1024)),
        connect_permits: Semaphore::new(args.connect_concurrency.max(2)),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        setup_timeout: Duration::from_secs_f64(args.setup_timeout),
        pairs,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        up: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
        errors: Mutex::new(BTreeMap::new()),
    });

    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let connect_started = Instant::now();
    let tasks: Vec<_> =
        (0..pairs).map(|pair| tokio::spawn(run_pair(ctx.clone(), pair, phase_rx.clone()))).collect();
    drop(phase_rx);

    // Wait for every session to be up or failed, with progress on stderr.
    let connect_deadline = connect_started + ctx.connect_timeout + Duration::from_secs(5);
    let mut last_print = Instant::now();
    loop {
        let (up, failed) = (ctx.up.load(Ordering::Relaxed), ctx.failed.load(Ordering::Relaxed));
        if up + failed >= args.sessions {
            break;
        }
        if Instant::now() > connect_deadline {
            eprintln!("hark-loadgen: gave up waiting for sessions: {up} up, {failed} failed");
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            eprintln!("hark-loadgen: {up}/{} sessions up, {failed} failed", args.sessions);
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_s = connect_started.elapsed().as_secs_f64();
    let up = ctx.up.load(Ordering::Relaxed);
    eprintln!(
        "hark-loadgen: {up}/{} sessions up in {connect_s:.1} s ({} failed)",
        args.sessions,
        ctx.failed.load(Ordering::Relaxed)
    );

    let mut window = Duration::ZERO;
    if let Some(hold) = args.hold {
        println!("sessions-up {up}");
        std::io::stdout().flush()?;
        let until = tokio::time::Instant::now() + Duration::from_secs_f64(hold);
        tokio::select! {
            _ = sleep_until(until) => {}
            _ = shutdown_signal() => eprintln!("hark-loadgen: signal, closing sessions"),
        }
    } else {
        let start = Instant::now();
        window = ctx.duration;
        phase_tx.send_replace(Phase::Run(start));
        eprintln!(
            "hark-loadgen: driving setups for {:.0} s, {}",
            ctx.duration.as_secs_f64(),
            if ctx.rate > 0.0 { format!("{} setups/s", ctx.rate) } else { "flat out".into() }
        );
        tokio::select! {
            _ = sleep_until((start + ctx.duration).into()) => {}
            _ = shutdown_signal() => {
                window = start.elapsed();
                eprintln!("hark-loadgen: signal, stopping early");
            }
        }
    }
    let held_at_end = ctx.up.load(Ordering::Relaxed) - ctx.lost.load(Ordering::Relaxed);
    phase_tx.send_replace(Phase::Stop);

    let mut total = PairReport::default();
    let join_deadline = tokio::time::Instant::now() + ctx.setup_timeout + Duration::from_secs(10);
    for task in tasks {
        let abort = task.abort_handle();
        match timeout_at(join_deadline, task).await {
            Ok(Ok(report)) => {
                total.setups += report.setups;
                total.incoming_us.extend_from_slice(&report.incoming_us);
                total.setup_us.extend_from_slice(&report.setup_us);
            }
            Ok(Err(e)) => {
                eprintln!("hark-loadgen: pair task failed: {e}");
                ctx.error("task");
            }
            Err(_) => {
                abort.abort();
                ctx.error("stuck");
            }
        }
    }

    let errors = ctx.errors.lock().unwrap().clone();
    let error_total: u64 = errors.values().sum();
    let window_s = window.as_secs_f64();
    let setups_per_s = if window_s > 0.0 { total.setups as f64 / window_s } else { 0.0 };
    let incoming = Percentiles::of(&mut total.incoming_us);
    let setup = Percentiles::of(&mut total.setup_us);
    let error_json: serde_json::Map<String, serde_json::Value> =
        errors.into_iter().map(|(k, v)| (k, v.into())).collect();
    let report = serde_json::json!({
        "sessions": up,
        "sessions_requested": args.sessions,
        "sessions_held_at_end": held_at_end,
        "connect_s": round3(connect_s),
        "rate": args.rate,
        "duration_s": round3(window_s),
        "setups": total.setups,
        "setups_per_s": round3(setups_per_s),
        "invite_to_incoming_ms": incoming.json(),
        "setup_ms": setup.json(),
        "errors": error_total,
        "cpu_s": round3(cpu_seconds()),
        "error_kinds": error_json,
    });
    println!("{report}");
    std::io::stdout().flush()?;
    Ok(())
}

/// CPU time (user + system) this process used so far, so a reader can tell how much of the shared
/// machine went to the load generator rather than the server.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills a zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `ws://HOST:PORT/...` -> the socket address to connect to.
async fn resolve(url: &str) -> Result<SocketAddr> {
    let Some(rest) = url.strip_prefix("ws://") else {
        bail!("--server must be a ws:// URL, got {url:?}");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let mut addrs = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority:?} (the URL needs an explicit port)"))?;
    addrs.next().with_context(|| format!("{authority:?} resolves to nothing"))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Opens one session (`session` counts from 0 across all processes): TCP from a chosen source address, WebSocket upgrade, hello, welcome.
async fn connect(ctx: &Ctx, session: usize) -> Result<Ws> {
    let ip = ctx.bind[session % ctx.bind.len()];
    let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    let (url, server) = &ctx.servers[session % ctx.servers.len()];
    let stream = socket.connect(*server).await.context("TCP connect")?;
    stream.set_nodelay(true)?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(ctx.ws_config))
            .await
            .context("WebSocket handshake")?;
    let token = hark_protocol::token::mint(&ctx.secret, &ctx.user(session), ctx.token_exp);
    let hello = format!(
        r#"{{"type":"hello","id":"1","token":"{token}","protocol":[1],"device":"lg-{session}","client":"hark-loadgen"}}"#
    );
    ws.send(Message::text(hello)).await.context("sending hello")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame = Frame::parse(text.as_str())?;
                match frame.kind {
                    "welcome" => return Ok(ws),
                    "error" => bail!("hello refused: {}", frame.code.unwrap_or("?")),
                    // A call.incoming for a call still ringing from an earlier run, say.
                    _ => {}
                }
            }
            Some(Ok(Message::Close(close))) => bail!("closed before welcome: {close:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading welcome"),
            None => bail!("closed before welcome"),
        }
    }
}

/// The parts of a server frame the load generator looks at; borrowed, so reading allocates nothing.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    re: Option<&'a str>,
    #[serde(default, borrow)]
    call_id: Option<&'a str>,
    #[serde(default, borrow)]
    code: Option<&'a str>,
}

impl<'a> Frame<'a> {
    fn parse(text: &'a str) -> Result<Self> {
        serde_json::from_str(text).with_context(|| format!("unreadable server frame: {text}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Side {
    Caller,
    Callee,
}

/// One call setup in flight on a pair.
struct Setup {
    /// Request ids of this setup's invite, accept and hangup.
    invite_id: String,
    accept_id: String,
    hangup_id: String,
    call_id: Option<String>,
    invited_at: Instant,
    /// When the setup counts as timed out; or, once abandoned, when the pair may go on.
    deadline: Instant,
    incoming: bool,
    accepted: bool,
    caller_ended: bool,
    callee_ended: bool,
    /// An error or timeout ended this setup; ignore its frames until the deadline.
    abandoned: bool,
}

enum Step {
    Nothing,
    Send(Side, String),
    Done,
    Abandon(String),
}

async fn run_pair(ctx: Arc<Ctx>, pair: usize, mut phase: watch::Receiver<Phase>) -> PairReport {
    let mut report = PairReport::default();
    let (caller, callee) = {
        let _permit = ctx.connect_permits.acquire_many(2).await.expect("semaphore is never closed");
        let connect_both = async {
            let first = ctx.first + 2 * pair;
            tokio::join!(connect(&ctx, first), connect(&ctx, first + 1))
        };
        match timeout(ctx.connect_timeout, connect_both).await {
            Ok((Ok(caller), Ok(callee))) => (caller, callee),
            Ok((a, b)) => {
                for e in [a.err(), b.err()].into_iter().flatten() {
                    if ctx.failed.load(Ordering::Relaxed) < 5 {
                        eprintln!("hark-loadgen: session failed: {e:#}");
                    }
                }
                ctx.error("connect");
                ctx.failed.fetch_add(2, Ordering::Relaxed);
                return report;
            }
            Err(_) => {
                ctx.error("connect_timeout");
                ctx.failed.fetch_add(2, Ordering::Relaxed);
                return report;
            }
        }
    };
    ctx.up.fetch_add(2, Ordering::Relaxed);
    let mut ws = [caller, callee];
    if drive(&ctx, pair, &mut phase, &mut ws, &mut report).await.is_err() {
        ctx.lost.fetch_add(2, Ordering::Relaxed);
        return report;
    }
    let [mut caller, mut callee] = ws;
    let _ = timeout(Duration::from_secs(3), async {
        tokio::join!(close(&mut caller), close(&mut callee));
    })
    .await;
    report
}

async fn close(ws: &mut Ws) {
    if ws.close(None).await.is_ok() {
        while let Some(Ok(_)) = ws.next().await {}
    }
}

/// Holds the pair's sessions until [`Phase::Run`], then drives setups until the window ends or
/// [`Phase::Stop`]. Err when a session closed or broke (already counted).
async fn drive(
    ctx: &Ctx,
    pair: usize,
    phase: &mut watch::Receiver<Phase>,
    ws: &mut [Ws; 2],
    report: &mut PairReport,
) -> Result<(), ()> {
    let [caller, callee] = ws;
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let mut start = None;
    let mut stopping = false;
    let mut setup: Option<Setup> = None;
    let mut next_start = far_future;
    let mut count = 0u64;
    let interval = (ctx.rate > 0.0).then(|| Duration::from_secs_f64(ctx.pairs as f64 / ctx.rate));
    loop {
        // Phase changes.
        // (Read the value every turn: `changed()` below marks it seen, so `has_changed` would miss it.)
        if !stopping {
            match *phase.borrow_and_update() {
                Phase::Connecting => {}
                Phase::Run(at) if start.is_none() => {
                    start = Some(at);
                    // Spread the pairs evenly over one interval, so the rate is steady from the start.
                    next_start = match interval {
                        Some(_) => at + Duration::from_secs_f64(pair as f64 / ctx.rate),
                        None => at,
                    };
                }
                Phase::Run(_) => {}
                Phase::Stop => stopping = true,
            }
        }
        let window_end = start.map(|s| s + ctx.duration).unwrap_or(far_future);
        let now = Instant::now();
        if setup.is_none() {
            if stopping {
                return Ok(());
            }
            if start.is_some() && now >= next_start && now < window_end {
                count += 1;
                let invite_id = format!("i{count}");
                let text = format!(
                    r#"{{"type":"call.invite","id":"{invite_id}","to":["{}"],"media":"audio"}}"#,
                    ctx.user(ctx.first + 2 * pair + 1)
                );
                let invited_at = Instant::now();
                setup = Some(Setup {
                    invite_id,
                    accept_id: format!("a{count}"),
                    hangup_id: format!("h{count}"),
                    call_id: None,
                    invited_at,
                    deadline: invited_at + ctx.setup_timeout,
                    incoming: false,
                    accepted: false,
                    caller_ended: false,
                    callee_ended: false,
                    abandoned: false,
                });
                send(ctx, caller, text).await?;
                next_start = match interval {
                    // Flat out: the next setup starts as soon as this one is done.
                    None => invited_at,
                    // Keep the schedule; a pair that fell behind starts at once, without bursting.
                    Some(every) => (next_start + every).max(invited_at),
                };
                continue;
            }
        }
        let wake = match &setup {
            Some(s) => s.deadline,
            None if start.is_some() && next_start < window_end => next_start,
            None => far_future,
        };
        let (side, message) = tokio::select! {
            m = caller.next() => (Side::Caller, m),
            m = callee.next() => (Side::Callee, m),
            _ = sleep_until(wake.into()) => {
                if let Some(s) = &mut setup {
                    if s.abandoned {
                        setup = None;
                    } else {
                        ctx.error("timeout");
                        abandon(ctx, caller, callee, s).await?;
                    }
                }
                continue;
            }
            r = phase.changed(), if !stopping => {
                if r.is_err() {
                    stopping = true;
                }
                continue;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                ctx.error("closed");
                return Err(());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                if ctx.lost.load(Ordering::Relaxed) < 4 {
                    eprintln!("hark-loadgen: session {}: {e}", ctx.first + 2 * pair + side as usize);
                }
                ctx.error("broken");
                return Err(());
            }
        };
        let Some(s) = &mut setup else {
            // Between setups; an error here would be a server push we did not ask for.
            if text.as_str().contains(r#""type":"error""#) {
                ctx.error("unsolicited_error");
            }
            continue;
        };
        if s.abandoned {
            continue;
        }
        let frame = match Frame::parse(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                eprintln!("hark-loadgen: {e:#}");
                ctx.error("unreadable");
                continue;
            }
        };
        let now = Instant::now();
        match step(s, side, &frame, now, window_end, report) {
            Step::Nothing => {}
            Step::Send(Side::Caller, text) => send(ctx, caller, text).await?,
            Step::Send(Side::Callee, text) => send(ctx, callee, text).await?,
            Step::Done => {
                if now <= window_end {
                    report.setups += 1;
                    report.setup_us.push(micros(now - s.invited_at));
                }
                setup = None;
            }
            Step::Abandon(kind) => {
                ctx.error(&kind);
                abandon(ctx, caller, callee, s).await?;
            }
        }
    }
}

/// Advances a setup on one frame.
fn step(
    s: &mut Setup,
    side: Side,
    frame: &Frame<'_>,
    now: Instant,
    window_end: Instant,
    report: &mut PairReport,
) -> Step {
    let ours = |call_id: Option<&str>| match (&s.call_id, call_id) {
        (Some(mine), Some(theirs)) => mine == theirs,
        _ => false,
    };
    match (side, frame.kind) {
        (_, "error") => {
            // Only errors that answer this setup's requests abandon it.
            let re = frame.re.unwrap_or("");
            if re == s.invite_id || re == s.accept_id || re == s.hangup_id {
                Step::Abandon(frame.code.unwrap_or("error").to_owned())
            } else {
                Step::Abandon(format!("unsolicited_{}", frame.code.unwrap_or("error")))
            }
        }
        (Side::Caller, "ok") if frame.re == Some(s.invite_id.as_str()) => match (&s.call_id, frame.call_id) {
            (None, Some(id)) => {
                s.call_id = Some(id.to_owned());
                Step::Nothing
            }
            (Some(mine), Some(id)) if mine == id => Step::Nothing,
            _ => Step::Abandon("call_id_mismatch".into()),
        },
        (Side::Callee, "call.incoming") if !s.incoming => {
            let Some(id) = frame.call_id else { return Step::Abandon("no_call_id".into()) };
            match &s.call_id {
                Some(mine) if mine != id => return Step::Nothing, // a stale invitation
                Some(_) => {}
                None => s.call_id = Some(id.to_owned()),
            }
            s.incoming = true;
            if now <= window_end {
                report.incoming_us.push(micros(now - s.invited_at));
            }
            Step::Send(
                Side::Callee,
                format!(r#"{{"type":"call.accept","id":"{}","call_id":"{id}"}}"#, s.accept_id),
            )
        }
        (Side::Caller, "call.accepted") if !s.accepted && ours(frame.call_id) => {
            s.accepted = true;
            let id = s.call_id.as_deref().unwrap_or_default();
            Step::Send(
                Side::Caller,
                format!(r#"{{"type":"call.hangup","id":"{}","call_id":"{id}"}}"#, s.hangup_id),
            )
        }
        (_, "call.ended") if ours(frame.call_id) => {
            match side {
                Side::Caller => s.caller_ended = true,
                Side::Callee => s.callee_ended = true,
            }
            if s.caller_ended && s.callee_ended {
                Step::Done
            } else {
                Step::Nothing
            }
        }
        _ => Step::Nothing,
    }
}

/// Gives up on a setup: hangs the call up from both sides if it got that far (a caller's hangup
/// before anyone accepted cancels), then lets the pair rest a second so the server settles.
async fn abandon(ctx: &Ctx, caller: &mut Ws, callee: &mut Ws, s: &mut Setup) -> Result<(), ()> {
    s.abandoned = true;
    s.deadline = Instant::now() + Duration::from_secs(1);
    if let Some(id) = &s.call_id {
        let text = format!(r#"{{"type":"call.hangup","id":"x","call_id":"{id}"}}"#);
        send(ctx, caller, text.clone()).await?;
        send(ctx, callee, text).await?;
    }
    Ok(())
}

async fn send(ctx: &Ctx, ws: &mut Ws, text: String) -> Result<(), ()> {
    match ws.send(Message::text(text)).await {
        Ok(()) => Ok(()),
        Err(_) => {
            ctx.error("send");
            Err(())
        }
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentiles of microsecond samples, reported in milliseconds.
struct Percentiles {
    count: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Percentiles {
    fn of(samples: &mut [u32]) -> Option<Percentiles> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1000.0
        };
        Some(Percentiles { count: samples.len(), p50: at(0.50), p99: at(0.99), max: at(1.0) })
    }
}

trait PercentilesJson {
    fn json(&self) -> serde_json::Value;
}

impl PercentilesJson for Option<Percentiles> {
    fn json(&self) -> serde_json::Value {
        match self {
            Some(p) => serde_json::json!({
                "count": p.count, "p50": round3(p.p50), "p99": round3(p.p99), "max": round3(p.max),
            }),
            None => serde_json::json!({"count": 0, "p50": null, "p99": null, "max": null}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        let now = Instant::now();
        Setup {
            invite_id: "i1".into(),
            accept_id: "a1".into(),
            hangup_id: "h1".into(),
            call_id: None,
            invited_at: now,
            deadline: now + Duration::from_secs(10),
            incoming: false,
            accepted: false,
            caller_ended: false,
            callee_ended: false,
            abandoned: false,
        }
    }

    fn feed(s: &mut Setup, side: Side, json: &str, report: &mut PairReport) -> Step {
        let frame = Frame::parse(json).unwrap();
        let now = Instant::now();
        step(s, side, &frame, now, now + Duration::from_secs(60), report)
    }

    #[test]
    fn full_setup_in_order() {
        let (mut s, mut r) = (setup(), PairReport::default());
        assert!(matches!(feed(&mut s, Side::Caller, r#"{"type":"ok","re":"i1","call_id":"c1"}"#, &mut r), Step::Nothing));
        let incoming = r#"{"type":"call.incoming","call_id":"c1","from":"u000001","invitees":["u000002"],"media":"audio","user_data":null,"expires_at":1}"#;
        match feed(&mut s, Side::Callee, incoming, &mut r) {
            Step::Send(Side::Callee, text) => assert_eq!(text, r#"{"type":"call.accept","id":"a1","call_id":"c1"}"#),
            _ => panic!("expected an accept"),
        }
        assert_eq!(r.incoming_us.len(), 1);
        assert!(matches!(feed(&mut s, Side::Callee, r#"{"type":"ok","re":"a1","joined":["u000001"]}"#, &mut r), Step::Nothing));
        match feed(&mut s, Side::Caller, r#"{"type":"call.accepted","call_id":"c1","user":"u000002"}"#, &mut r) {
            Step::Send(Side::Caller, text) => assert_eq!(text, r#"{"type":"call.hangup","id":"h1","call_id":"c1"}"#),
            _ => panic!("expected a hangup"),
        }
        assert!(matches!(feed(&mut s, Side::Callee, r#"{"type":"call.left","call_id":"c1","user":"u000001"}"#, &mut r), Step::Nothing));
        assert!(matches!(feed(&mut s, Side::Callee, r#"{"type":"call.ended","call_id":"c1","reason":"hangup","duration_s":0}"#, &mut r), Step::Nothing));
        assert!(matches!(feed(&mut s, Side::Caller, r#"{"type":"ok","re":"h1"}"#, &mut r), Step::Nothing));
        assert!(matches!(feed(&mut s, Side::Caller, r#"{"type":"call.ended","call_id":"c1","reason":"hangup","duration_s":0}"#, &mut r), Step::Done));
    }

    #[test]
    fn incoming_before_ok_and_errors() {
        let (mut s, mut r) = (setup(), PairReport::default());
        let incoming = r#"{"type":"call.incoming","call_id":"c9","from":"a","invitees":["b"],"media":"audio","user_data":null,"expires_at":1}"#;
        assert!(matches!(feed(&mut s, Side::Callee, incoming, &mut r), Step::Send(Side::Callee, _)));
        assert!(matches!(feed(&mut s, Side::Caller, r#"{"type":"ok","re":"i1","call_id":"c9"}"#, &mut r), Step::Nothing));
        match feed(&mut s, Side::Callee, r#"{"type":"error","re":"a1","code":"invalid_state","message":"x"}"#, &mut r) {
            Step::Abandon(kind) => assert_eq!(kind, "invalid_state"),
            _ => panic!("expected abandon"),
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let mut samples: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        let p = Percentiles::of(&mut samples).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
    }
}
