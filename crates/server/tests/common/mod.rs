//! Test harness: a real hark-server on 127.0.0.1:0 with a manual clock, and real WebSocket and
//! HTTP clients.
//!
//! Waiting is always for a condition with a deadline (a frame arriving, a socket closing), never a
//! fixed sleep. To show that something did *not* arrive, [`Client::barrier`] makes a round trip
//! through the hub: the hub handles commands in order, so anything it meant to send this client
//! before the barrier is queued ahead of the barrier's answer.
#![allow(dead_code)]

pub mod nats;
#[cfg(feature = "cluster")]
pub mod postgres;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hark_server::clock::ManualClock;
use hark_server::config::Config;
use hark_server::RunningServer;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where the manual clock starts: 2026-01-01T00:00:00Z.
pub const T0: i64 = 1_767_225_600_000;
/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub addr: std::net::SocketAddr,
    /// When the suite runs against a cluster (`HARK_TEST_NODES=3`): `server` is its first node.
    pub cluster: Option<ClusterNodes>,
}

/// The other nodes of a test cluster, and what the nodes share.
pub struct ClusterNodes {
    /// Nodes 2 and on.
    pub others: Vec<RunningServer>,
    /// Every node's address, the first node's first.
    pub addrs: Vec<std::net::SocketAddr>,
    /// Which node the next client connects to: clients are spread over the nodes in turn.
    next: std::sync::atomic::AtomicUsize,
    /// The NATS the nodes share.
    pub nats: nats::ThrowawayNats,
    _node_dirs: Vec<tempfile::TempDir>,
}

/// How many nodes the suite's servers have: 1 (one process, the default) or what
/// `HARK_TEST_NODES` says (a cluster on a throw-away nats-server and PostgreSQL).
pub fn test_nodes() -> usize {
    std::env::var("HARK_TEST_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(1)
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(config, dir, ManualClock::new(T0)).await
    }

    /// Starts (again) on an existing data folder.
    pub async fn start_in(config: Config, dir: tempfile::TempDir, clock: Arc<ManualClock>) -> Self {
        #[cfg(feature = "cluster")]
        if test_nodes() > 1 && config.nats.is_none() && config.database.is_none() {
            return Self::start_cluster(config, dir, clock, test_nodes()).await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = hark_server::start(listener, config.clone(), dir.path(), clock.clone()).await.expect("server starts");
        let addr = server.addr();
        TestServer { server: Some(server), clock, dir, config, addr, cluster: None }
    }

    /// `nodes` servers in one cluster: a throw-away nats-server of their own, a fresh database
    /// on the shared throw-away PostgreSQL, and one signing key, kept where
    /// [`token_from_dir`] finds it. They start one after the other, as an operator's would.
    #[cfg(feature = "cluster")]
    pub async fn start_cluster(mut config: Config, dir: tempfile::TempDir, clock: Arc<ManualClock>, nodes: usize) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let nats = nats::ThrowawayNats::start();
        let key = dir.path().join(hark_server::accounts::SECRET_FILE);
        std::fs::write(&key, "a-test-clusters-shared-signing-key-0123456789").expect("write the key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key owner-only");
        config.nats = Some(nats.url());
        config.database = Some(postgres::fresh_database().await);
        config.signing_key = Some(key);
        let mut started = Vec::new();
        let mut node_dirs = Vec::new();
        for _ in 0..nodes {
            let node_dir = tempfile::tempdir().expect("temp dir");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            started.push(hark_server::start(listener, config.clone(), node_dir.path(), clock.clone()).await.expect("node starts"));
            node_dirs.push(node_dir);
        }
        let addrs: Vec<_> = started.iter().map(|s| s.addr()).collect();
        // Each node counts every node once it has applied their entries.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        for node in &started {
            while node.metrics().cluster_members.load(std::sync::atomic::Ordering::Relaxed) != nodes as i64 {
                assert!(tokio::time::Instant::now() < deadline, "a node does not see the whole cluster");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let first = started.remove(0);
        let addr = first.addr();
        let cluster = ClusterNodes { others: started, addrs, next: Default::default(), nats, _node_dirs: node_dirs };
        TestServer { server: Some(first), clock, dir, config, addr, cluster: Some(cluster) }
    }

    /// Starts on storage the test opened (to slow or fail it).
    pub async fn start_on(config: Config, dir: tempfile::TempDir, clock: Arc<ManualClock>, store: hark_server::store::Store) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = hark_server::start_with_store(listener, config.clone(), dir.path(), clock.clone(), store).await.expect("server starts");
        let addr = server.addr();
        TestServer { server: Some(server), clock, dir, config, addr, cluster: None }
    }

    /// Stops every node, the first last: in a cluster, the last to go ends the live calls.
    pub async fn stop(&mut self) {
        if let Some(cluster) = &mut self.cluster {
            for node in cluster.others.drain(..) {
                node.shutdown().await;
            }
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The WebSocket URL of a node: in a cluster, each call names the next node in turn.
    pub fn ws_url(&self) -> String {
        let addr = match &self.cluster {
            Some(cluster) => cluster.addrs[cluster.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % cluster.addrs.len()],
            None => self.addr,
        };
        format!("ws://{addr}/v1/ws")
    }

    /// The server's storage, opened apart, as an operator's tool would: the data folder's
    /// SQLite, or a cluster's PostgreSQL.
    pub async fn store(&self) -> hark_server::store::Store {
        hark_server::store::Store::open_configured(self.config.database.as_deref(), self.dir.path()).await.expect("open the store")
    }

    /// Runs `sql` on the server's database under it (to break it on purpose).
    pub async fn execute_sql(&self, sql: &str) {
        match &self.config.database {
            #[cfg(feature = "cluster")]
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.expect("connect");
                sqlx::query(sql).execute(&pool).await.expect("the statement runs");
                pool.close().await;
            }
            _ => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.dir.path().join("hark.db").display())).await.expect("connect");
                sqlx::query(sql).execute(&pool).await.expect("the statement runs");
                pool.close().await;
            }
        }
    }

    /// `path` on every node (one URL for a single server).
    pub fn http_on_every_node(&self, path: &str) -> Vec<String> {
        match &self.cluster {
            Some(cluster) => cluster.addrs.iter().map(|addr| format!("http://{addr}{path}")).collect(),
            None => vec![self.http(path)],
        }
    }

    /// The command-line arguments that name the server's accounts: `--data-dir DIR`, or a
    /// cluster's `--database URL`.
    pub fn account_args(&self) -> Vec<std::ffi::OsString> {
        match &self.config.database {
            Some(url) => vec!["--database".into(), url.into()],
            None => vec!["--data-dir".into(), self.dir.path().into()],
        }
    }

    /// A token minted with the server's secret, valid for an hour of the manual clock.
    pub fn token(&self, user: &str) -> String {
        token_from_dir(self.dir.path(), user, self.clock_s() + 3600)
    }

    pub fn clock_s(&self) -> i64 {
        use hark_server::clock::Clock;
        self.clock.now_ms() / 1000
    }

    /// A signed-in client on the device `<user>-laptop`.
    pub async fn client(&self, user: &str) -> Client {
        self.client_on(user, &format!("{user}-laptop")).await
    }

    pub async fn client_on(&self, user: &str, device: &str) -> Client {
        let mut client = Client::connect(&self.ws_url()).await;
        let welcome = client.hello(&self.token(user), device).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client.user = user.to_owned();
        client.welcome = welcome;
        client
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_from([127, 0, 0, 1], path, body).await
    }

    /// A POST from another loopback source address (the server limits some things per source).
    pub async fn post_from(&self, source: [u8; 4], path: &str, body: Value) -> (u16, Value) {
        post_from(source, &self.http(path), body).await
    }

    /// Registers and logs in over HTTP, returning the token.
    pub async fn register_and_login(&self, user: &str, password: &str) -> String {
        let (status, body) = self.post("/v1/register", json!({"user": user, "password": password})).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self.post("/v1/login", json!({"user": user, "password": password})).await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }
}

/// A POST to `url` from the loopback address `source`, on a connection of its own.
pub async fn post_from(source: [u8; 4], url: &str, body: Value) -> (u16, Value) {
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::from(source)).build().expect("client");
    let response = client.post(url).json(&body).send().await.expect("http");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn token_from_dir(dir: &Path, user: &str, exp_s: i64) -> String {
    let secret = hark_server::accounts::load_secret(dir).expect("secret");
    hark_protocol::token::mint(&secret, user, exp_s)
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    next_id: u64,
    pub user: String,
    pub welcome: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
        Client { ws, pending: VecDeque::new(), next_id: 100, user: String::new(), welcome: Value::Null }
    }

    /// Sends `hello` and returns the answer (`welcome` or `error`).
    pub async fn hello(&mut self, token: &str, device: &str) -> Value {
        self.send(json!({"type":"hello","id":"1","token":token,"protocol":[1],"device":device,"client":"tests/0"})).await;
        self.next().await
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.expect("send");
    }

    /// Sends a request with a fresh id and returns its answer; events that arrive first are kept
    /// for [`Self::next`].
    pub async fn request(&mut self, mut value: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id.to_string();
        value["id"] = json!(id);
        self.send(value).await;
        let mut skipped = VecDeque::new();
        loop {
            let message = self.receive().await.unwrap_or_else(|| panic!("{}: closed while waiting for answer {id}", self.user));
            if message["re"] == json!(id) {
                self.pending.extend(skipped);
                return message;
            }
            skipped.push_back(message);
        }
    }

    /// The next frame that is not an answer to a request, waiting up to [`PATIENCE`].
    pub async fn next(&mut self) -> Value {
        if let Some(message) = self.pending.pop_front() {
            return message;
        }
        self.receive().await.unwrap_or_else(|| panic!("{}: closed while waiting for a frame", self.user))
    }

    /// The next frame, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.next().await;
        assert_eq!(message["type"], kind, "{}: expected {kind}, got {message}", self.user);
        message
    }

    /// Waits until this client's server counts `user` offline (their last socket was just
    /// dropped). A closing socket reaches the registry after its server reads it, and on a
    /// cluster after every node applies it from the log: this client's node may still count
    /// them online for a moment, and ring or list them so. Asks every 20 ms, for up to 5 s.
    pub async fn until_offline(&mut self, user: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let ok = self.request(json!({"type":"presence.query","users":[user]})).await;
            if ok["statuses"][user] != "online" {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{}: {user} still counted online after 5 s", self.user);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every frame the server queued for this client before now (see the module docs).
    pub async fn barrier(&mut self) -> Vec<Value> {
        let before: Vec<Value> = self.pending.drain(..).collect();
        self.next_id += 1;
        let id = self.next_id.to_string();
        self.send(json!({"type":"calls.active","id":id})).await;
        let mut seen = before;
        loop {
            let message = self.receive().await.expect("closed during barrier");
            if message["re"] == json!(id) {
                return seen;
            }
            seen.push(message);
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.expect("socket was not closed in time") {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(Message::Text(text))) => self.pending.push_back(serde_json::from_str(&text).expect("JSON")),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Drops the connection without a close handshake, as a lost network would.
    pub async fn drop_connection(self) {
        drop(self.ws);
    }

    async fn receive(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{}: nothing arrived in {PATIENCE:?}", self.user));
            match frame {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).expect("server frames are JSON")),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Starts a throw-away server (`what`) with `start` on a port of 127.0.0.1 that was free a moment
/// ago. Another process may take the port in between; that start fails, and the next of three
/// tries takes another port.
pub fn on_a_free_port<T>(what: &str, mut start: impl FnMut(u16) -> Result<T, String>) -> (T, u16) {
    let mut why = String::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        match start(port) {
            Ok(started) => return (started, port),
            Err(error) => why = error,
        }
    }
    panic!("{what} did not start: {why}")
}

/// Places a call from `caller` and returns its id after checking each invitee's ring.
pub async fn place_call(caller: &mut Client, invitees: &mut [&mut Client], media: &str) -> String {
    let to: Vec<&str> = invitees.iter().map(|c| c.user.as_str()).collect();
    let ok = caller.request(json!({"type":"call.invite","to":to,"media":media})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    let call_id = ok["call_id"].as_str().expect("call_id").to_owned();
    for invitee in invitees.iter_mut() {
        let incoming = invitee.expect("call.incoming").await;
        assert_eq!(incoming["call_id"], call_id);
        assert_eq!(incoming["from"], caller.user);
    }
    call_id
}

/// A config whose reconnect grace and ring timeout are the protocol defaults.
pub fn config() -> Config {
    Config::default()
}
