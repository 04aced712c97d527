//! The server against hostile clients: each test is an attack an earlier server fell to, made with
//! nothing more than HTTP and WebSocket clients on loopback, and what the server must do now.
//!
//! Loopback has a whole /8 of source addresses, so attackers and owners come from different ones
//! (127.0.x.y) where the server counts per source. Time-bound rules run with shortened timers
//! where the test is about the rule, not its constant.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, TestServer, PATIENCE};
use futures_util::{SinkExt, StreamExt};
use hark_server::config::{Config, RateLimits, TransportTimers};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// A TCP connection to `addr` from the loopback address `source`.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((source, 0))).expect("bind a loopback source");
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent.
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

fn gauge(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

// ---- 1. password hashing: bounded memory and threads, no account needed ----

/// The real `hark-server` binary in a process of its own, so its memory and threads can be read.
struct ServerProcess {
    child: tokio::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    async fn start() -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("hark-server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout);
        let mut line = String::new();
        tokio::time::timeout(PATIENCE, tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line))
            .await
            .expect("the server says where it listens")
            .expect("stdout");
        let addr = line.trim().rsplit("//").next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line}"));
        ServerProcess { child, addr, _dir: dir }
    }

    /// (resident memory in KiB, threads), from /proc.
    fn usage(&self) -> (u64, u64) {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}"));
            line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
        };
        (field("VmRSS:"), field("Threads:"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_floods_cost_bounded_memory_and_threads() {
    // Logins for unknown ids (each costs a decoy hash), then registrations (each costs a hash),
    // 200 at once, each from an address of its own so that no per-source budget steps in: only
    // the hashing pool's bound stands between them and the server's memory.
    let floods: [(&str, u8, &[u16]); 2] = [("/v1/login", 10, &[401, 429]), ("/v1/register", 11, &[201, 429])];
    for (path, subnet, allowed) in floods {
        // A server of its own for each flood: the hashing budget (5 a second, on the real clock
        // in another process) that one flood used up is not there for the next.
        let server = ServerProcess::start().await;
        reqwest::get(server.url("/healthz")).await.expect("healthz");
        let (base_kib, base_threads) = server.usage();
        let started = Instant::now();
        let attempts: Vec<_> = (0..200u16)
            .map(|n| {
                let url = server.url(path);
                let source = [127, 0, subnet, u8::try_from(n).expect("under 256")];
                let body = json!({"user": format!("ghost-{subnet}-{n}"), "password": "x-password"});
                tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(10), common::post_from(source, &url, body)).await })
            })
            .collect();
        let (mut peak_kib, mut peak_threads) = (base_kib, base_threads);
        while attempts.iter().any(|a| !a.is_finished()) {
            let (kib, threads) = server.usage();
            (peak_kib, peak_threads) = (peak_kib.max(kib), peak_threads.max(threads));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut statuses = std::collections::BTreeMap::new();
        for attempt in attempts {
            let (status, body) = attempt.await.unwrap().unwrap_or_else(|_| panic!("a {path} was not answered within 10 s"));
            assert!(allowed.contains(&status), "{path}: {status} {body}");
            *statuses.entry(status).or_insert(0) += 1;
        }
        eprintln!(
            "{path}: {statuses:?} in {:?}; RSS {} -> peak {} MiB, threads {base_threads} -> peak {peak_threads}",
            started.elapsed(),
            base_kib / 1024,
            peak_kib / 1024
        );
        assert!(statuses.get(&429).is_some_and(|n| *n > 0), "the pool refused nothing: {statuses:?}");
        assert!(statuses.len() == 2, "some were hashed: {statuses:?}");
        assert!(peak_kib - base_kib <= 64 * 1024, "RSS grew by {} MiB", (peak_kib - base_kib) / 1024);
        assert!(peak_threads <= base_threads + 6, "threads went from {base_threads} to {peak_threads}");

        // The hashing memory goes back to the system once the pool is idle.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (kib, _) = server.usage();
            if kib <= base_kib + 16 * 1024 {
                break;
            }
            assert!(Instant::now() < deadline, "RSS stayed at {} MiB (started at {} MiB)", kib / 1024, base_kib / 1024);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn a_busy_hashing_pool_answers_429_with_retry_after() {
    // Forty logins at once from forty addresses: the pool takes a few and refuses the rest at
    // once, each with the header that says when to come back.
    let server = TestServer::start().await;
    let url = server.http("/v1/login");
    let attempts: Vec<_> = (0..40u8)
        .map(|n| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 12, n])).build().unwrap();
                let response = client.post(&url).json(&json!({"user":"ghost","password":"x-password"})).send().await.unwrap();
                (response.status().as_u16(), response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()))
            })
        })
        .collect();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            (401, None) => {}
            (429, Some(retry_after)) => {
                assert_eq!(retry_after, "1");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 0, "forty fit in a pool of {} workers and 8 places", hark_server::hashing::HashPool::default_workers());
}

#[tokio::test]
async fn the_owner_gets_in_while_strangers_fill_the_hashing_pool() {
    let server = TestServer::start().await;
    server.register_and_login("alice", "correct horse").await;
    // Strangers from forty addresses keep the pool full for as long as alice tries.
    let url = server.http("/v1/login");
    let flood = tokio::spawn(async move {
        let mut busy = 0;
        for round in 0..3u8 {
            let attempts: Vec<_> = (0..40u8)
                .map(|n| common::post_from([127, 0, 13 + round, n], &url, json!({"user":"ghost","password":"x-password"})))
                .collect();
            busy += futures_util::future::join_all(attempts).await.iter().filter(|(status, _)| *status == 429).count();
        }
        busy
    });
    // alice signed in from here before, so her login does not queue behind them.
    let mut answers = Vec::new();
    while !flood.is_finished() {
        answers.push(server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await.0);
    }
    assert!(flood.await.unwrap() > 0, "the strangers did fill the pool");
    assert!(!answers.is_empty() && answers.iter().all(|s| *s == 200), "alice: {answers:?}");
}

// ---- 2. a client that stops reading ----

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_by_the_idle_rule() {
    let timers = TransportTimers { ping_every: Duration::from_millis(500), idle_limit: Duration::from_secs(3), ..TransportTimers::default() };
    let server = TestServer::start_with(Config { transport: timers, ..Config::default() }).await;
    let metrics = server.server.as_ref().expect("running").metrics().clone();
    let sessions = || metrics.sessions.load(std::sync::atomic::Ordering::Relaxed);
    let mut alice = server.client("alice").await;
    let avatar = format!("data:image/png;base64,{}", "A".repeat(16_000));
    assert_eq!(alice.request(json!({"type":"profile.set","avatar":avatar})).await["type"], "ok");
    drop(alice);
    tokio::time::timeout(PATIENCE, async {
        while sessions() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("alice's session ends");
    let before = 0;

    // Two clients with tiny receive buffers that never read: one says hello and goes quiet; the
    // other asks for alice's 16 KiB profile as fast as it can for a second (filling its socket,
    // so the server's writes to it block), then goes quiet too, keeping the connection open.
    let mut quiet_clients = Vec::new();
    let mut last_sent = Instant::now();
    for flood in [false, true] {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(server.addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(), tcp).await.unwrap();
        let hello = json!({"type":"hello","id":"1","token":server.token(if flood { "bob" } else { "carol" }),"protocol":[1],"device":"d"});
        ws.send(Message::Text(hello.to_string().into())).await.unwrap();
        if flood {
            let until = Instant::now() + Duration::from_secs(1);
            let request = Message::Text(json!({"type":"users.get","users":["alice"]}).to_string().into());
            let mut sent = 0;
            while let Ok(Ok(())) = tokio::time::timeout_at(until, ws.send(request.clone())).await {
                sent += 1;
            }
            assert!(sent > 100, "only {sent} requests went out");
            last_sent = Instant::now();
        }
        quiet_clients.push(ws);
    }
    tokio::time::timeout(PATIENCE, async {
        while sessions() < before + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .ok();

    // Both are closed by the 30 s rule (3 s here) plus at most the second a close frame gets.
    let deadline = last_sent + timers.idle_limit + Duration::from_millis(1_500);
    while sessions() > before {
        assert!(Instant::now() < deadline, "{} non-reading sessions still held", sessions() - before);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A client that reads is still served.
    let mut dave = server.client("dave").await;
    assert_eq!(dave.request(json!({"type":"ping"})).await["type"], "ok");
    drop(quiet_clients);
}

#[tokio::test]
async fn an_http_client_that_stops_reading_is_let_go() {
    // Pipelined requests for /metrics from a socket that never reads: the server's writes fill
    // it and stall, and a stalled write ends the connection.
    let timers = TransportTimers { write_stall: Duration::from_secs(1), ..TransportTimers::default() };
    let server = TestServer::start_with(Config { transport: timers, ..Config::default() }).await;
    let metrics = server.server.as_ref().expect("running").metrics().clone();
    let open = || metrics.tcp_connections.load(std::sync::atomic::Ordering::Relaxed);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(server.addr).await.unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(50);
    let until = Instant::now() + Duration::from_secs(1);
    while let Ok(Ok(())) = tokio::time::timeout_at(until, tcp.write_all(&request)).await {}
    assert_eq!(open(), 1);
    let stalled_from = Instant::now();
    while open() > 0 {
        assert!(stalled_from.elapsed() < timers.write_stall + Duration::from_secs(3), "a non-reading HTTP client is still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tcp);
}

// ---- 3. slowloris, and connections per source ----

#[tokio::test]
async fn slow_and_silent_http_connections_are_closed() {
    let timers = TransportTimers { request_within: Duration::from_secs(1), ..TransportTimers::default() };
    let server = TestServer::start_with(Config { transport: timers, ..Config::default() }).await;
    let limit = timers.request_within + Duration::from_millis(800);

    // A request line trickled a byte at a time.
    let mut trickle = connect_from([127, 0, 5, 1], server.addr).await;
    let started = Instant::now();
    let closed = async {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n".iter().cycle() {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut probe)).await {
                break;
            }
        }
    };
    tokio::time::timeout(PATIENCE, closed).await.expect("a trickled request line is closed");
    assert!(started.elapsed() < limit, "held {:?}", started.elapsed());

    // A connection that sends nothing, and a keep-alive connection left idle after an answer.
    let mut silent = connect_from([127, 0, 5, 2], server.addr).await;
    let mut idle = connect_from([127, 0, 5, 3], server.addr).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let (silent_seen, idle_seen) = tokio::time::timeout(PATIENCE, async {
        tokio::join!(read_until_closed(&mut silent), read_until_closed(&mut idle))
    })
    .await
    .expect("silent and idle connections are closed");
    assert!(started.elapsed() < limit, "held {:?}", started.elapsed());
    assert!(silent_seen.is_empty());
    assert!(String::from_utf8_lossy(&idle_seen).starts_with("HTTP/1.1 200"), "the request itself was answered");

    // A body that is declared too large is refused at once; one that trickles is refused at the
    // deadline; either way the connection is let go.
    let mut large = connect_from([127, 0, 5, 4], server.addr).await;
    large
        .write_all(b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
        .await
        .unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_until_closed(&mut large)).await.expect("refused and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"), "{answer}");

    let mut slow_body = connect_from([127, 0, 5, 5], server.addr).await;
    slow_body
        .write_all(b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"user\"")
        .await
        .unwrap();
    let started = Instant::now();
    let trickled = async {
        let mut answer = Vec::new();
        loop {
            let _ = slow_body.write_all(b" ").await;
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(100), slow_body.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return answer,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    };
    let answer = tokio::time::timeout(PATIENCE, trickled).await.expect("a trickled body is cut off");
    assert!(started.elapsed() < limit, "held {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("bad_request"), "{answer}");
}

#[tokio::test]
async fn connections_per_source_are_capped_with_a_clear_refusal() {
    let server = TestServer::start_with(Config { connections_per_source: 4, ..Config::default() }).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from([127, 0, 6, 1], server.addr).await);
    }
    let mut fifth = connect_from([127, 0, 6, 1], server.addr).await;
    fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_until_closed(&mut fifth)).await.expect("refused and closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after: 10") && answer.contains(r#""code":"rate_limited""#), "{answer}");

    // Another address is not affected, and a freed place can be taken again.
    let (status, _) = server.post_from([127, 0, 6, 2], "/v1/login", json!({"user":"nobody","password":"x-password"})).await;
    assert_eq!(status, 401);
    drop(held.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = connect_from([127, 0, 6, 1], server.addr).await;
        again.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let answer = read_until_closed(&mut again).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        // The server notices the dropped connection when its read returns: poll, don't sleep.
        assert!(Instant::now() < deadline, "the freed place never came back");
        tokio::task::yield_now().await;
    }
    let metrics = reqwest::get(server.http("/metrics")).await.unwrap().text().await.unwrap();
    assert!(gauge(&metrics, "hark_refused_connections_total") >= 1, "{metrics}");

    // A WebSocket session keeps its place after the upgrade, for as long as it lasts.
    let upgraded = connect_from([127, 0, 6, 1], server.addr).await;
    let (mut session, _) = tokio_tungstenite::client_async(server.ws_url(), upgraded).await.unwrap();
    let hello = json!({"type":"hello","id":"1","token":server.token("alice"),"protocol":[1],"device":"d"});
    session.send(Message::Text(hello.to_string().into())).await.unwrap();
    assert!(matches!(session.next().await, Some(Ok(Message::Text(_)))));
    let mut refused = connect_from([127, 0, 6, 1], server.addr).await;
    refused.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_until_closed(&mut refused)).await.expect("refused and closed");
    assert!(answer.starts_with(b"HTTP/1.1 429"), "{}", String::from_utf8_lossy(&answer));
    drop(held);
}

// ---- 4. bounded answers ----

#[tokio::test]
async fn users_get_removes_duplicates_and_caps_the_list() {
    let server = TestServer::start().await;
    let mut mallory = server.client("mallory").await;
    let avatar = format!("data:image/png;base64,{}", "A".repeat(16 * 1024 - 30));
    assert_eq!(mallory.request(json!({"type":"profile.set","avatar":avatar})).await["type"], "ok");

    // The 11 KB request that used to come back as a 16 MB frame.
    let answer = mallory.request(json!({"type":"users.get","users":vec!["mallory"; 1000]})).await;
    assert_eq!(answer["users"].as_array().map(Vec::len), Some(1));
    assert!(answer.to_string().len() < 20 * 1024);

    // Fifty real profiles, each with the largest avatar, fit in one answer under 1 MiB.
    let store = server.store().await;
    let fifty: Vec<String> = (0..50).map(|n| format!("u{n}")).collect();
    for user in &fifty {
        store.create_user(user, None, None, common::T0).await.unwrap();
        store.set_profile(user, None, Some(&avatar)).await.unwrap();
    }
    let answer = mallory.request(json!({"type":"users.get","users":fifty})).await;
    assert_eq!(answer["users"].as_array().map(Vec::len), Some(50));
    let size = answer.to_string().len();
    assert!((800 * 1024..1024 * 1024).contains(&size), "{size} bytes");
    let fifty_one: Vec<String> = (0..51).map(|n| format!("u{n}")).collect();
    let refused = mallory.request(json!({"type":"users.get","users":fifty_one})).await;
    assert_eq!(refused["code"], "bad_request", "{refused}");

    // Avatars stored before the rules (written under the server here) could still make an answer
    // too big: it is refused rather than sent.
    let old_avatar = "\u{1}".repeat(16 * 1024);
    match &server.config.database {
        #[cfg(feature = "cluster")]
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query("UPDATE users SET avatar = $1 WHERE id LIKE 'u%'").bind(&old_avatar).execute(&pool).await.unwrap();
            pool.close().await;
        }
        _ => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.dir.path().join("hark.db").display())).await.unwrap();
            sqlx::query("UPDATE users SET avatar = ?1 WHERE id LIKE 'u%'").bind(&old_avatar).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
    let answer = mallory.request(json!({"type":"users.get","users":(0..50).map(|n| format!("u{n}")).collect::<Vec<_>>()})).await;
    assert_eq!(answer["code"], "payload_too_large", "{}", answer.to_string().chars().take(200).collect::<String>());

    // Avatars are URLs or data URIs: nothing that JSON escaping could blow up.
    for bad in ["data:\u{1}\u{1}", "https://x/\"quoted\"", "back\\slash", "white space"] {
        let answer = mallory.request(json!({"type":"profile.set","avatar":bad})).await;
        assert_eq!(answer["code"], "bad_request", "{bad:?}: {answer}");
    }
}

#[tokio::test]
async fn contacts_are_capped() {
    let server = TestServer::start().await;
    let store = server.store().await;
    for n in 0..1001 {
        store.create_user(&format!("c{n}"), None, None, common::T0).await.unwrap();
    }
    for n in 0..1000 {
        store.add_contact("alice", &format!("c{n}"), None, common::T0).await.unwrap();
    }
    let mut alice = server.client("alice").await;
    let refused = alice.request(json!({"type":"contacts.add","user":"c1000"})).await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
    let renamed = alice.request(json!({"type":"contacts.add","user":"c7","alias":"Seven"})).await;
    assert_eq!(renamed["type"], "ok", "renaming an existing contact is not adding one");
    let list = alice.request(json!({"type":"contacts.list"})).await;
    assert_eq!(list["contacts"].as_array().map(Vec::len), Some(1000));
    assert!(list.to_string().len() < 1024 * 1024);
}

// ---- 5 and 6. removed accounts: sessions closed, tokens void ----

#[tokio::test]
async fn removing_an_account_kicks_its_sessions_within_two_seconds() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    common::place_call(&mut alice, &mut [&mut bob], "audio").await;

    // The operator's command runs in another process, as it would on a real host; the two
    // seconds run from when it is done.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark-server"))
        .args(["user", "remove", "alice"])
        .args(server.account_args())
        .output()
        .await
        .expect("hark-server user remove");
    let removed_at = Instant::now();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    assert_eq!(alice.next().await, json!({"type":"kicked","reason":"account_removed"}));
    assert_eq!(alice.closed().await, Some(CloseCode::Normal));
    assert!(removed_at.elapsed() < Duration::from_secs(2), "kicked after {:?}", removed_at.elapsed());
    // bob's phone stops ringing: alice's call is over.
    assert_eq!(bob.expect("call.cancelled").await["by"], "alice");
    assert_eq!(bob.request(json!({"type":"presence.query","users":["alice"]})).await["statuses"]["alice"], "unregistered");
    // And her token no longer signs in.
    let mut again = Client::connect(&server.ws_url()).await;
    assert_eq!(again.hello(&server.token("alice"), "laptop").await["code"], "unauthorized");
}

#[tokio::test]
async fn tokens_do_not_outlive_their_account() {
    let server = TestServer::start().await;
    let old_token = server.register_and_login("alice", "correct horse").await;
    let operator_token = common::token_from_dir(server.dir.path(), "alice", server.clock_s() + 3600);
    let store = server.store().await;
    server.clock.advance(1_000);
    assert!(store.remove_user("alice", common::T0 + 1_000).await.unwrap());

    // A stranger registers the free id, a second later.
    server.clock.advance(1_000);
    let new_token = server.register_and_login("alice", "another horse").await;
    for (token, what) in [(&old_token, "the old owner's login token"), (&operator_token, "a token without iat")] {
        let mut client = Client::connect(&server.ws_url()).await;
        let answer = client.hello(token, "d").await;
        assert_eq!(answer["code"], "unauthorized", "{what}: {answer}");
        assert_eq!(client.closed().await, Some(CloseCode::Policy));
    }
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&new_token, "d").await["user"], "alice", "the new owner's token works");
}

// ---- 7. a stranger cannot lock the owner out ----

#[tokio::test]
async fn a_strangers_wrong_passwords_do_not_lock_the_owner_out() {
    let server = TestServer::start().await;
    server.register_and_login("alice", "correct horse").await;
    // Two seconds on, the server's hashing budget (a burst of ten) is whole again: what follows
    // meets the login limits only.
    server.clock.advance(2_000);
    let mut stranger = Vec::new();
    for _ in 0..30 {
        stranger.push(server.post_from([127, 0, 7, 1], "/v1/login", json!({"user":"alice","password":"guess guess"})).await.0);
    }
    assert_eq!(&stranger[..10], [401; 10]);
    assert!(stranger[10..].iter().all(|s| *s == 429), "the stranger is slowed: {stranger:?}");

    let (status, body) = server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!(status, 200, "the owner signs in: {body}");
    // The owner's own typo costs the owner, and a success gives it back.
    for _ in 0..9 {
        assert_eq!(server.post("/v1/login", json!({"user":"alice","password":"typo typo"})).await.0, 401);
    }
    assert_eq!(server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await.0, 200);
    assert_eq!(server.post("/v1/login", json!({"user":"alice","password":"typo typo"})).await.0, 401);

    // A source trying many ids meets its own budget for all of them.
    let limits = RateLimits { logins_per_source_per_minute: 5, ..RateLimits::default() };
    let server = TestServer::start_with(Config { rate_limits: limits, ..Config::default() }).await;
    let mut answers = Vec::new();
    for n in 0..7 {
        answers.push(server.post_from([127, 0, 7, 2], "/v1/login", json!({"user":format!("ghost{n}"),"password":"x-password"})).await.0);
    }
    assert_eq!(answers, [401, 401, 401, 401, 401, 429, 429]);
    assert_eq!(server.post_from([127, 0, 7, 3], "/v1/login", json!({"user":"ghost9","password":"x-password"})).await.0, 401);
}

// ---- 8. close codes ----

#[tokio::test]
async fn invalid_utf8_closes_with_1007_and_oversized_frames_with_1009() {
    let server = TestServer::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let not_utf8 = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(not_utf8)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));

    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let hello = json!({"type":"hello","id":"1","token":server.token("alice"),"protocol":[1],"device":"d"});
    ws.send(Message::Text(hello.to_string().into())).await.unwrap();
    // The server may close before it has taken the whole frame, so this write may fail.
    let huge = json!({"type":"ping","pad":"x".repeat(2 * 1024 * 1024)}).to_string();
    let _ = ws.send(Message::Text(huge.into())).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
}

async fn close_code(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}
