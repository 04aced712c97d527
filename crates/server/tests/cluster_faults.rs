//! A cluster's faults, with real processes: three `hark-server` programs on a throw-away
//! nats-server and PostgreSQL, one of them (or NATS) killed with SIGKILL under live calls. Time
//! is the real clock here: the nodes are separate programs. Waits are for conditions, each
//! with a deadline.
#![cfg(feature = "cluster")]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::nats::ThrowawayNats;
use common::{place_call, Client};
use serde_json::{json, Value};

/// Three nodes sharing one NATS, one database and one key.
struct Cluster {
    nats: ThrowawayNats,
    database: String,
    key_dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

struct Node {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    async fn start() -> Cluster {
        let key_dir = tempfile::tempdir().unwrap();
        let key = key_dir.path().join(hark_server::accounts::SECRET_FILE);
        std::fs::write(&key, "the-fault-tests-shared-signing-key-0123456789").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut cluster = Cluster { nats: ThrowawayNats::start(), database: common::postgres::fresh_database().await, key_dir, nodes: Vec::new() };
        for n in 0..3 {
            let node = cluster.spawn(n);
            cluster.nodes.push(node);
        }
        cluster
    }

    fn spawn(&self, n: usize) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hark-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--nats", &self.nats.url(), "--database", &self.database, "--node-id", &format!("node{n}"), "--signing-key"])
            .arg(self.key_dir.path().join(hark_server::accounts::SECRET_FILE))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("hark-server starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
        let addr = match line.trim().strip_prefix("hark-server listening on http://") {
            Some(addr) => addr.to_owned(),
            None => panic!("node {n} did not start: {}", std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()),
        };
        Node { child, addr, _dir: dir }
    }

    fn kill(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.child.kill().expect("SIGKILL");
        node.child.wait().expect("reaped");
    }

    /// A signed-in client of `user` on node `n`, on device `device`.
    async fn client(&self, n: usize, user: &str, device: &str) -> (Client, Value) {
        let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut client = Client::connect(&format!("ws://{}/v1/ws", self.nodes[n].addr)).await;
        let welcome = client.hello(&common::token_from_dir(self.key_dir.path(), user, now_s + 600), device).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client.user = user.into();
        (client, welcome)
    }

    /// The rows the database holds for `call`: (user, result), sorted.
    async fn records(&self, call: &str) -> Vec<(String, String)> {
        let pool = sqlx::PgPool::connect(&self.database).await.unwrap();
        let mut rows: Vec<(String, String)> =
            sqlx::query_as(r#"SELECT "user", result FROM call_records WHERE call_id = $1"#).bind(call).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.sort();
        rows
    }

    /// Waits until the database holds `expected` for `call`.
    async fn await_records(&self, call: &str, expected: &[(&str, &str)]) {
        let expected: Vec<(String, String)> = expected.iter().map(|(u, r)| (u.to_string(), r.to_string())).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = self.records(call).await;
            if rows == expected {
                return;
            }
            assert!(Instant::now() < deadline, "records of {call}: {rows:?}, expected {expected:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn health(addr: &str) -> u16 {
    reqwest::get(format!("http://{addr}/healthz")).await.map(|r| r.status().as_u16()).unwrap_or(0)
}

impl Cluster {
    /// Waits for node `n`'s copy of the log to have counted `count` servers dead.
    async fn await_deaths(&self, n: usize, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let metrics = reqwest::get(format!("http://{}/metrics", self.nodes[n].addr)).await.unwrap().text().await.unwrap();
            let deaths = metrics.lines().find_map(|l| l.strip_prefix("hark_cluster_deaths_total ")).and_then(|v| v.trim().parse::<u64>().ok());
            if deaths.is_some_and(|d| d >= count) {
                return;
            }
            assert!(Instant::now() < deadline, "node {n} counted {deaths:?} servers dead, expected {count}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until node `n`'s `/healthz` answers `status`.
    async fn await_health(&self, n: usize, status: u16) {
        let node = &self.nodes[n];
        let deadline = Instant::now() + Duration::from_secs(15);
        while health(&node.addr).await != status {
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(node._dir.path().join("stderr.log")).unwrap_or_default();
                panic!("node {n}'s /healthz never answered {status}; its log:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The caller's node dies while the call rings: the callee's two devices, on the two other
/// nodes, stop ringing with `call.timeout` once, both records say so, and whoever follows the
/// caller sees them offline within seconds.
#[tokio::test]
async fn the_callers_node_dies_while_the_call_rings() {
    let mut cluster = Cluster::start().await;
    let (mut alice, _) = cluster.client(0, "alice", "alice-dev").await;
    let (mut laptop, _) = cluster.client(1, "bob", "bob-laptop").await;
    let (mut phone, _) = cluster.client(2, "bob", "bob-phone").await;
    let (mut carol, _) = cluster.client(2, "carol", "carol-dev").await;
    carol.request(json!({"type":"presence.subscribe","users":["alice"]})).await;
    let ok = alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio","timeout_s":5})).await;
    let call = ok["call_id"].as_str().unwrap().to_owned();
    assert_eq!(laptop.expect("call.incoming").await["call_id"], call);
    assert_eq!(phone.expect("call.incoming").await["call_id"], call);

    cluster.kill(0);
    let killed = Instant::now();
    let presence = carol.expect("presence").await;
    assert_eq!((presence["user"].as_str(), presence["status"].as_str()), (Some("alice"), Some("offline")));
    assert!(killed.elapsed() < Duration::from_secs(8), "alice offline after {:?}", killed.elapsed());
    for device in [&mut laptop, &mut phone] {
        assert_eq!(device.expect("call.timeout").await["call_id"], call);
        assert!(device.barrier().await.iter().all(|m| m["type"] != "call.timeout"), "once");
    }
    cluster.await_records(&call, &[("alice", "no_answer"), ("bob", "missed")]).await;
}

/// Alice on node 0 calls Bob on node 1, who accepts: a call in progress across two nodes.
async fn call_across_nodes(cluster: &Cluster) -> (Client, Client, String) {
    let (mut alice, _) = cluster.client(0, "alice", "alice-dev").await;
    let (mut bob, _) = cluster.client(1, "bob", "bob-dev").await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;
    (alice, bob, call)
}

/// A node dies mid-call and is started again (as a service manager would); its person's app
/// reconnects through the new process, which started from another node's copy, within the
/// grace: the call goes on (signals pass, the hangup ends it), with one record per person.
#[tokio::test]
async fn a_node_dies_mid_call_and_its_person_reconnects_through_another() {
    let mut cluster = Cluster::start().await;
    // Bob's first connection is to the node about to die; he comes back on a new one.
    let (mut alice, _bob_before, call) = call_across_nodes(&cluster).await;

    cluster.kill(1);
    cluster.nodes[1] = cluster.spawn(1);
    let (mut bob, welcome) = cluster.client(1, "bob", "bob-dev").await;
    assert_eq!(welcome["joined_calls"][0]["call_id"], call, "{welcome}");
    bob.request(json!({"type":"signal","call_id":call,"to":"alice","payload":{"kind":"offer","sdp":"v=0 again"}})).await;
    assert_eq!(alice.expect("signal").await["payload"]["sdp"], "v=0 again");
    // Once the dead node is counted dead (and its sessions closed, bob's with the grace), the
    // call is still on and alice heard nothing of it.
    cluster.await_deaths(0, 1).await;
    assert!(alice.barrier().await.is_empty(), "alice hears nothing while bob is back");
    bob.request(json!({"type":"call.hangup","call_id":call})).await;
    alice.expect("call.left").await;
    assert_eq!(alice.expect("call.ended").await["reason"], "hangup");
    cluster.await_records(&call, &[("alice", "completed"), ("bob", "completed")]).await;
}

/// NATS is killed and started again under a live call: the nodes report it on `/healthz`,
/// what was sent meanwhile arrives after, and new calls work across nodes.
#[tokio::test]
async fn nats_restarts_under_a_live_call() {
    let mut cluster = Cluster::start().await;
    let (mut alice, mut bob, call) = call_across_nodes(&cluster).await;

    cluster.nats.kill();
    cluster.await_health(0, 503).await;
    bob.send(json!({"type":"signal","call_id":call,"to":"alice","payload":{"kind":"candidate","sent":"during the outage"}})).await;
    cluster.nats.restart();
    assert_eq!(alice.expect("signal").await["payload"]["sent"], "during the outage");
    for n in 0..cluster.nodes.len() {
        cluster.await_health(n, 200).await;
    }
    let (mut carol, _) = cluster.client(2, "carol", "carol-dev").await;
    let (mut dave, _) = cluster.client(0, "dave", "dave-dev").await;
    let second = place_call(&mut carol, &mut [&mut dave], "video").await;
    dave.request(json!({"type":"call.reject","call_id":second})).await;
    assert_eq!(carol.expect("call.rejected").await["user"], "dave");
    bob.request(json!({"type":"call.hangup","call_id":call})).await;
    assert_eq!(alice.expect("call.left").await["user"], "bob");
    cluster.await_records(&call, &[("alice", "completed"), ("bob", "completed")]).await;
    cluster.await_records(&second, &[("carol", "declined"), ("dave", "declined")]).await;
}

/// NATS comes back without its store (a lost disk): the log numbers its entries from 1 again, so
/// no node's copy can be trusted. Every node stops, closes its sessions and says so on
/// `/healthz`; a node started again finds the log quiet, starts the cluster afresh, and calls
/// work through it.
#[tokio::test]
async fn nats_losing_its_store_stops_every_node_until_it_is_restarted() {
    let mut cluster = Cluster::start().await;
    let (mut alice, _) = cluster.client(0, "alice", "alice-dev").await;
    cluster.nats.restart_without_its_store();
    for n in 0..cluster.nodes.len() {
        cluster.await_health(n, 503).await;
        let reason = reqwest::get(format!("http://{}/healthz", cluster.nodes[n].addr)).await.unwrap().text().await.unwrap();
        assert!(reason.contains("restart the node"), "node {n}: {reason}");
    }
    assert_eq!(alice.next().await, json!({"type":"kicked","reason":"shutdown"}));

    cluster.kill(0);
    cluster.nodes[0] = cluster.spawn(0);
    cluster.await_health(0, 200).await;
    let (mut carol, _) = cluster.client(0, "carol", "carol-dev").await;
    let (mut dave, _) = cluster.client(0, "dave", "dave-dev").await;
    let call = place_call(&mut carol, &mut [&mut dave], "audio").await;
    dave.request(json!({"type":"call.reject","call_id":call})).await;
    assert_eq!(carol.expect("call.rejected").await["user"], "dave");
}
