//! Records survive the process: a SIGKILL right after a call (with SQLite in the data folder, and
//! with PostgreSQL), and a graceful shutdown mid-call.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[cfg(feature = "cluster")]
use common::postgres::ThrowawayPostgres;
use common::{place_call, Client, TestServer};
use serde_json::json;

/// The real `hark-server` binary on 127.0.0.1:0, with `extra` arguments; returns the child and
/// its address.
fn spawn_server(dir: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hark-server"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hark-server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let addr = line.trim().strip_prefix("hark-server listening on http://").unwrap_or_else(|| panic!("unexpected: {line}")).to_owned();
    (child, addr)
}

async fn client(addr: &str, dir: &std::path::Path, user: &str) -> Client {
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut client = Client::connect(&format!("ws://{addr}/v1/ws")).await;
    let welcome = client.hello(&common::token_from_dir(dir, user, now_s + 600), &format!("{user}-dev")).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client.user = user.into();
    client
}

#[tokio::test]
async fn records_are_intact_after_sigkill_and_restart() {
    records_survive_sigkill(&[]).await;
}

#[tokio::test]
#[cfg(feature = "cluster")]
async fn records_kept_in_postgresql_are_intact_after_sigkill_and_restart() {
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("records").await;
    records_survive_sigkill(&["--database", &url]).await;
    // They are in PostgreSQL, not in a SQLite file beside them.
    let store = hark_server::store::Store::connect(&url).await.unwrap();
    assert_eq!(store.history("alice", None, 50).await.unwrap().len(), 3);
}

/// Three calls, a SIGKILL the moment the last has ended, a restart: both people's histories hold
/// all three. `extra` goes to `hark-server serve`.
async fn records_survive_sigkill(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_server(dir.path(), extra);
    let mut alice = client(&addr, dir.path(), "alice").await;
    let mut bob = client(&addr, dir.path(), "bob").await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
        bob.request(json!({"type":"call.accept","call_id":call})).await;
        alice.expect("call.accepted").await;
        alice.request(json!({"type":"call.hangup","call_id":call})).await;
        alice.expect("call.ended").await;
        bob.expect("call.left").await;
        bob.expect("call.ended").await;
        calls.push(call);
    }
    // The moment the last call.ended has arrived, the process dies without any chance to flush.
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let (mut child, addr) = spawn_server(dir.path(), extra);
    for user in ["alice", "bob"] {
        let mut c = client(&addr, dir.path(), user).await;
        let history = c.request(json!({"type":"calls.history"})).await;
        let mut ids: Vec<String> = history["records"].as_array().unwrap().iter().map(|r| r["call_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        let mut expected = calls.clone();
        expected.sort();
        assert_eq!(ids, expected, "{user}'s history after the restart");
        assert!(history["records"].as_array().unwrap().iter().all(|r| r["result"] == "completed"));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_ends_live_calls_and_writes_their_records() {
    let mut server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let call = place_call(&mut alice, &mut [&mut bob], "video").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;
    server.clock.advance(7_000);

    server.stop().await;
    assert_eq!(alice.expect("kicked").await["reason"], "shutdown");
    assert_eq!(bob.expect("kicked").await["reason"], "shutdown");

    let TestServer { dir, clock, config, .. } = server;
    let server = TestServer::start_in(config, dir, clock).await;
    let mut alice = server.client("alice").await;
    let history = alice.request(json!({"type":"calls.history"})).await;
    let record = &history["records"][0];
    assert_eq!((record["call_id"].as_str(), record["result"].as_str(), record["duration_s"].as_u64()), (Some(call.as_str()), Some("completed"), Some(7)));
}
