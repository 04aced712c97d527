//! hark-storm: a mixed storm of hostile clients against a hark-server, for the soak benchmark
//! (`cargo xtask bench signaling --hostile`).
//!
//! For `--duration` seconds it runs, each from attacker source addresses of its own (127.0.20+.x):
//! - **login flood**: logins for unknown ids at `--login-rate` a second (each one is a password
//!   hash if the server lets it through), and a **lockout** attempt: wrong passwords for `victim`;
//! - **registration flood**: new random ids at `--register-rate` a second;
//! - **slowloris**: `--slow` connections that send a request a byte a second, or nothing, or
//!   declare a body and trickle it; each is reopened when the server lets it go;
//! - **non-readers**: WebSocket sessions that ask for a 16 KiB profile as fast as they can without
//!   reading, then go silent; reopened when closed;
//! - **amplifiers**: sessions asking `users.get` for one user a thousand times, and for 51 users;
//! - **garbage**: sessions sending bad JSON, invalid UTF-8 and 2 MiB frames;
//! - **forged tokens**: `hello` with a token signed by the wrong key.
//!
//! Meanwhile the owner of `victim` logs in with the right password every 2 s from an address of
//! its own, and must always get in. Attacker accounts sign in with tokens minted from the
//! server's secret (as the load generator's do): the storm is about what signed-in strangers can
//! do, and signing them up first would only be slower. At the end it prints one JSON line: what
//! each attack got back.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// A storm of hostile clients.
#[derive(Parser, Debug)]
#[command(name = "hark-storm", version)]
struct Args {
    /// The server's address, e.g. 127.0.0.1:7600 (plain HTTP).
    #[arg(long)]
    server: SocketAddr,
    /// File holding the server's signing secret (DATA_DIR/signing.key).
    #[arg(long)]
    secret_file: PathBuf,
    /// Seconds of storm.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Logins for unknown ids per second, in all.
    #[arg(long, default_value_t = 200.0)]
    login_rate: f64,
    /// Registrations of new ids per second, in all.
    #[arg(long, default_value_t = 50.0)]
    register_rate: f64,
    /// Slow HTTP connections kept open at once.
    #[arg(long, default_value_t = 300)]
    slow: usize,
    /// WebSocket sessions that stop reading.
    #[arg(long, default_value_t = 20)]
    non_readers: usize,
    /// Sessions asking for amplified answers.
    #[arg(long, default_value_t = 10)]
    amplifiers: usize,
    /// Sessions sending garbage.
    #[arg(long, default_value_t = 5)]
    garbage: usize,
    /// Attacker source addresses per attack.
    #[arg(long, default_value_t = 8)]
    sources: u8,
}

/// What the attacks got back, by attack and outcome.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Tally {
    fn note(&self, attack: &str, outcome: impl Into<String>) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *all.entry(attack.to_owned()).or_default().entry(outcome.into()).or_default() += 1;
    }
}

struct Storm {
    server: SocketAddr,
    secret: Vec<u8>,
    until: Instant,
    sources: u8,
    tally: Tally,
    /// Largest frame any attacker received, in bytes.
    largest_frame: AtomicU64,
    /// How long the server held slow connections before closing them, ms (max).
    longest_slow_hold_ms: AtomicU64,
}

impl Storm {
    /// The `n`th attacker address of attack `subnet` (127.0.SUBNET.1..=sources).
    fn source(&self, subnet: u8, n: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, subnet, 1 + (n % usize::from(self.sources.max(1))) as u8))
    }

    fn token(&self, user: &str) -> String {
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) + 3600;
        hark_protocol::token::mint(&self.secret, user, exp)
    }

    fn running(&self) -> bool {
        Instant::now() < self.until
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let secret = std::fs::read_to_string(&args.secret_file).with_context(|| format!("reading {}", args.secret_file.display()))?;
    let storm = Arc::new(Storm {
        server: args.server,
        secret: secret.trim().as_bytes().to_vec(),
        until: Instant::now() + Duration::from_secs_f64(args.duration),
        sources: args.sources,
        tally: Tally::default(),
        largest_frame: AtomicU64::new(0),
        longest_slow_hold_ms: AtomicU64::new(0),
    });
    // Two threads: the storm must not take the machine from the server it is measuring.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(args, storm))
}

async fn run(args: Args, storm: Arc<Storm>) -> Result<()> {
    // The victim's account and the 16 KiB profile the amplifiers and non-readers ask for.
    let owner = IpAddr::V4(Ipv4Addr::new(127, 0, 30, 1));
    let (status, _) = http_post(storm.server, owner, "/v1/register", r#"{"user":"victim","password":"the right password"}"#).await?;
    if status != 201 && status != 409 {
        bail!("registering the victim: HTTP {status}");
    }
    let mut profile = open_session(&storm, owner, "storm-avatar", 0).await?;
    let avatar = format!("data:image/png;base64,{}", "A".repeat(16 * 1024 - 30));
    profile.send(Message::text(serde_json::json!({"type":"profile.set","id":"p","avatar":avatar}).to_string())).await?;

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(paced(Arc::clone(&storm), "login_flood", args.login_rate, 20, |n| {
        (format!(r#"{{"user":"ghost{n}","password":"guess guess"}}"#), "/v1/login")
    })));
    tasks.push(tokio::spawn(paced(Arc::clone(&storm), "lockout", 10.0, 21, |_| {
        (r#"{"user":"victim","password":"guess guess"}"#.to_owned(), "/v1/login")
    })));
    tasks.push(tokio::spawn(paced(Arc::clone(&storm), "register_flood", args.register_rate, 22, |n| {
        (format!(r#"{{"user":"squat{n}-{}","password":"squatter password"}}"#, std::process::id()), "/v1/register")
    })));
    tasks.push(tokio::spawn(owner_logins(Arc::clone(&storm), owner)));
    for n in 0..args.slow {
        tasks.push(tokio::spawn(slow_connection(Arc::clone(&storm), n)));
    }
    for n in 0..args.non_readers {
        tasks.push(tokio::spawn(non_reader(Arc::clone(&storm), n)));
    }
    for n in 0..args.amplifiers {
        tasks.push(tokio::spawn(amplifier(Arc::clone(&storm), n)));
    }
    for n in 0..args.garbage {
        tasks.push(tokio::spawn(garbage(Arc::clone(&storm), n)));
    }
    tasks.push(tokio::spawn(forged(Arc::clone(&storm))));
    for task in tasks {
        let _ = task.await;
    }
    drop(profile);

    let tally = storm.tally.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let report = serde_json::json!({
        "attacks": tally,
        "largest_frame_bytes": storm.largest_frame.load(Ordering::Relaxed),
        "longest_slow_hold_ms": storm.longest_slow_hold_ms.load(Ordering::Relaxed),
    });
    println!("{report}");
    Ok(())
}

/// POSTs `body` to `path` from `source` on a connection of its own; (status, body).
async fn http_post(server: SocketAddr, source: IpAddr, path: &str, body: &str) -> Result<(u16, String)> {
    let mut tcp = connect_from(source, server).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: hark\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    timeout(Duration::from_secs(15), tcp.read_to_end(&mut answer)).await.context("no answer in 15 s")??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, answer))
}

async fn connect_from(source: IpAddr, server: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket.connect(server).await?)
}

/// `rate` requests a second (each on its own connection, at most 64 in flight) from the sources
/// of `subnet`, noting each HTTP status.
async fn paced(storm: Arc<Storm>, attack: &'static str, rate: f64, subnet: u8, request: impl Fn(u64) -> (String, &'static str)) {
    if rate <= 0.0 {
        return;
    }
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n = 0u64;
    while storm.running() {
        tick.tick().await;
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            storm.tally.note(attack, "skipped (64 in flight)");
            continue;
        };
        n += 1;
        let (body, path) = request(n);
        let source = storm.source(subnet, n as usize);
        let storm = Arc::clone(&storm);
        tokio::spawn(async move {
            match http_post(storm.server, source, path, &body).await {
                Ok((status, _)) => storm.tally.note(attack, status.to_string()),
                Err(e) => storm.tally.note(attack, format!("error: {}", short(&e))),
            }
            drop(permit);
        });
    }
}

/// The victim's owner logs in with the right password every 2 s from an address of its own.
async fn owner_logins(storm: Arc<Storm>, owner: IpAddr) {
    while storm.running() {
        match http_post(storm.server, owner, "/v1/login", r#"{"user":"victim","password":"the right password"}"#).await {
            Ok((status, _)) => storm.tally.note("owner_login", status.to_string()),
            Err(e) => storm.tally.note("owner_login", format!("error: {}", short(&e))),
        }
        sleep(Duration::from_secs(2)).await;
    }
}

/// One slow connection, reopened whenever the server lets it go: a request line a byte a second,
/// or nothing at all, or a declared body that trickles.
async fn slow_connection(storm: Arc<Storm>, n: usize) {
    // One address for all of them, so that 300 slow connections meet the per-source cap (256).
    let source = storm.source(23, 0);
    while storm.running() {
        let mut tcp = match connect_from(source, storm.server).await {
            Ok(tcp) => tcp,
            Err(_) => {
                storm.tally.note("slowloris", "connect failed");
                sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let opened = Instant::now();
        let script: &[u8] = match n % 3 {
            0 => b"GET /healthz HTTP/1.1\r\nHost: hark\r\nX-Slow: yes\r\n",
            1 => b"",
            _ => b"POST /v1/login HTTP/1.1\r\nHost: hark\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
        };
        let mut sent = 0;
        let mut answer = Vec::new();
        let outcome = loop {
            let mut buf = [0u8; 1024];
            match timeout(Duration::from_secs(1), tcp.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break "closed by the server",
                Ok(Ok(read)) => answer.extend_from_slice(&buf[..read]),
                Err(_) => {}
            }
            if !storm.running() {
                break "still open at the end";
            }
            let byte = if script.is_empty() { None } else if sent < script.len() { Some(script[sent]) } else if n % 3 == 2 { Some(b' ') } else { None };
            if let Some(byte) = byte {
                if tcp.write_all(&[byte]).await.is_err() {
                    break "closed by the server";
                }
                sent += 1;
            }
        };
        let held = opened.elapsed().as_millis() as u64;
        let answered = String::from_utf8_lossy(&answer);
        let outcome = match answered.split_whitespace().nth(1) {
            Some(status) if outcome == "closed by the server" => format!("answered {status}, closed"),
            _ => outcome.to_owned(),
        };
        if outcome.contains("closed") && !answered.contains(" 429 ") {
            storm.longest_slow_hold_ms.fetch_max(held, Ordering::Relaxed);
        }
        storm.tally.note("slowloris", outcome);
        // Come back a second later: a tighter loop would measure this program, not the server.
        sleep(Duration::from_secs(1)).await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A signed-in session for `user` from `source`, with a receive buffer of `recv_buffer` bytes
/// (0: the system's).
async fn open_session(storm: &Storm, source: IpAddr, user: &str, recv_buffer: u32) -> Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    if recv_buffer > 0 {
        socket.set_recv_buffer_size(recv_buffer)?;
    }
    let tcp = socket.connect(storm.server).await?;
    let url = format!("ws://{}/v1/ws", storm.server);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let hello = serde_json::json!({"type":"hello","id":"1","token":storm.token(user),"protocol":[1],"device":"storm","client":"hark-storm"});
    ws.send(Message::text(hello.to_string())).await?;
    Ok(ws)
}

/// Asks for the 16 KiB profile as fast as the socket takes it for 2 s without reading, then
/// goes silent with the connection open. After 35 s of silence it looks whether the server has
/// let go (it must, 30–31 s after it last heard from it), and starts over.
async fn non_reader(storm: Arc<Storm>, n: usize) {
    let source = storm.source(24, n);
    while storm.running() {
        let Ok(mut ws) = open_session(&storm, source, &format!("nonreader{n}"), 4096).await else {
            storm.tally.note("non_reader", "connect failed");
            sleep(Duration::from_secs(1)).await;
            continue;
        };
        let ask = Message::text(r#"{"type":"users.get","users":["storm-avatar"]}"#);
        let flood_until = Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(())) = tokio::time::timeout_at(flood_until, ws.send(ask.clone())).await {}
        // Silence: neither read nor write (a write would count as being heard).
        let look_at = Instant::now() + Duration::from_secs(35);
        tokio::time::sleep_until(look_at.min(storm.until)).await;
        if Instant::now() < look_at {
            storm.tally.note("non_reader", "storm ended while silent");
            break;
        }
        // Now read what is buffered: a socket the server closed ends soon after.
        let drained = timeout(Duration::from_secs(5), async {
            while let Some(Ok(message)) = ws.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
        storm.tally.note("non_reader", if drained.is_ok() { "closed by the server within 35 s of silence" } else { "still open after 35 s" });
    }
}

/// Asks for amplified answers and measures what comes back.
async fn amplifier(storm: Arc<Storm>, n: usize) {
    let source = storm.source(25, n);
    while storm.running() {
        let Ok(mut ws) = open_session(&storm, source, &format!("amplifier{n}"), 0).await else {
            storm.tally.note("amplifier", "connect failed");
            sleep(Duration::from_secs(1)).await;
            continue;
        };
        let duplicates = serde_json::json!({"type":"users.get","id":"d","users":vec!["storm-avatar"; 1000]});
        let many: Vec<String> = (0..51).map(|k| format!("storm-avatar{k}")).collect();
        let too_many = serde_json::json!({"type":"users.get","id":"m","users":many});
        while storm.running() {
            let mut failed = false;
            for request in [&duplicates, &too_many] {
                if ws.send(Message::text(request.to_string())).await.is_err() {
                    failed = true;
                    break;
                }
            }
            let mut answers = 0;
            while answers < 2 && !failed {
                match timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        storm.largest_frame.fetch_max(text.len() as u64, Ordering::Relaxed);
                        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                        match value["re"].as_str() {
                            Some("d") => {
                                let users = value["users"].as_array().map_or(0, Vec::len);
                                storm.tally.note("amplifier", format!("1000 duplicates -> {users} profile(s), {} KiB", text.len() / 1024));
                                answers += 1;
                            }
                            Some("m") => {
                                storm.tally.note("amplifier", format!("51 users -> {}", value["code"].as_str().unwrap_or("ok")));
                                answers += 1;
                            }
                            _ => {}
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => failed = true,
                }
            }
            if failed {
                storm.tally.note("amplifier", "connection lost");
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends malformed frames until the server closes; notes the close code.
async fn garbage(storm: Arc<Storm>, n: usize) {
    let source = storm.source(26, n);
    let mut round = 0usize;
    while storm.running() {
        round += 1;
        let Ok(mut ws) = open_session(&storm, source, &format!("garbage{n}"), 0).await else {
            storm.tally.note("garbage", "connect failed");
            sleep(Duration::from_secs(1)).await;
            continue;
        };
        let frames: Vec<Message> = match round % 3 {
            0 => (0..25).map(|_| Message::text("{not json")).collect(),
            1 => vec![Message::Frame(Frame::message(vec![b'{', 0xff, b'}'], OpCode::Data(Data::Text), true))],
            _ => vec![Message::text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2 << 20)))],
        };
        for frame in frames {
            if ws.send(frame).await.is_err() {
                break;
            }
        }
        let code = loop {
            match timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame.map_or("close without code".to_owned(), |f| u16::from(f.code).to_string()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => break "dropped".to_owned(),
                Err(_) => break "still open after 10 s".to_owned(),
            }
        };
        storm.tally.note("garbage", format!("closed {code}"));
        sleep(Duration::from_millis(200)).await;
    }
}

/// `hello` with tokens signed by the wrong key, twice a second.
async fn forged(storm: Arc<Storm>) {
    let mut n = 0;
    while storm.running() {
        n += 1;
        let source = storm.source(27, n);
        let outcome = async {
            let tcp = connect_from(source, storm.server).await?;
            let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/v1/ws", storm.server), tcp).await?;
            let token = hark_protocol::token::mint(b"not the server's key", "victim", i64::MAX / 2);
            let hello = serde_json::json!({"type":"hello","id":"1","token":token,"protocol":[1],"device":"forged"});
            ws.send(Message::text(hello.to_string())).await?;
            let mut answer = String::new();
            while let Ok(Some(Ok(message))) = timeout(Duration::from_secs(5), ws.next()).await {
                match message {
                    Message::Text(text) => answer = serde_json::from_str::<serde_json::Value>(text.as_str())?["code"].as_str().unwrap_or("").to_owned(),
                    Message::Close(frame) => return Ok::<_, anyhow::Error>(format!("{answer}, closed {}", frame.map_or(0, |f| u16::from(f.code)))),
                    _ => {}
                }
            }
            Ok(format!("{answer}, not closed"))
        };
        match outcome.await {
            Ok(outcome) => storm.tally.note("forged_token", outcome),
            Err(e) => storm.tally.note("forged_token", format!("error: {}", short(&e))),
        }
        sleep(Duration::from_millis(500)).await;
    }
}

fn short(error: &anyhow::Error) -> String {
    error.to_string().chars().take(60).collect()
}
