//! The `hark-server` command line: `user add|list|remove` and `token`, against a running server
//! that keeps its accounts in SQLite, and one that keeps them in PostgreSQL.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

#[cfg(feature = "cluster")]
use common::postgres::ThrowawayPostgres;
use common::{Client, TestServer};
#[cfg(feature = "cluster")]
use hark_server::config::Config;
use serde_json::json;

/// `hark-server ARGS --data-dir DIR EXTRA…`, with `stdin` as its input.
fn hark_server(args: &[&str], dir: &std::path::Path, extra: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hark-server"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hark-server runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn user_add_list_remove_and_token() {
    user_commands(&TestServer::start().await, &[]).await;
}

#[tokio::test]
#[cfg(feature = "cluster")]
async fn user_add_list_remove_and_token_with_postgresql() {
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("accounts").await;
    let server = TestServer::start_with(Config { database: Some(url.clone()), ..Config::default() }).await;
    user_commands(&server, &["--database", &url]).await;
    assert!(!server.dir.path().join("hark.db").exists(), "no SQLite database beside it");
}

/// Adds, lists and removes an account and mints a token with the command, while `server` runs;
/// `extra` names where the accounts are.
async fn user_commands(server: &TestServer, extra: &[&str]) {
    let dir = server.dir.path();
    let hark_server = |args: &[&str], stdin: Option<&str>| hark_server(args, dir, extra, stdin);

    stdout(&hark_server(&["user", "add", "alice", "--nickname", "Alice"], Some("correct horse\n")));
    let refused = hark_server(&["user", "add", "bob"], Some("short\n"));
    assert!(!refused.status.success());
    let again = hark_server(&["user", "add", "alice"], Some("correct horse\n"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(stdout(&hark_server(&["user", "list"], None)), "alice\tAlice\n");

    // The password given on stdin logs in.
    let (status, body) = server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!(status, 200, "{body}");

    // A token minted by the command works with the running server (its clock is the manual one,
    // which stands before the real time, so the token is valid for it).
    let token = stdout(&hark_server(&["token", "alice", "--ttl", "1h"], None)).trim().to_owned();
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&token, "cli").await["user"], "alice");
    let bad = hark_server(&["token", "alice", "--ttl", "1w"], None);
    assert!(!bad.status.success());

    stdout(&hark_server(&["user", "remove", "alice"], None));
    assert_eq!(stdout(&hark_server(&["user", "list"], None)), "");
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&token, "cli").await["code"], "unauthorized");
    let (status, _) = server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!(status, 401);
}

/// Cluster mode needs what every node shares: `--nats` alone, or with a SQLite data folder, is
/// refused at start with a message that says what is missing; so are a URL that is not NATS'
/// and a node id with spaces. Nothing is listening afterwards.
#[test]
fn cluster_mode_refuses_to_start_without_what_nodes_share() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "k".repeat(40)).unwrap();
    let key = key.to_str().unwrap();
    for (extra, says) in [
        (vec!["--nats", "nats://127.0.0.1:4222"], "set database (postgres://…) and signing_key"),
        (vec!["--nats", "nats://127.0.0.1:4222", "--signing-key", key], "set database (postgres://…) and signing_key"),
        (vec!["--nats", "http://127.0.0.1:4222", "--signing-key", key, "--database", "postgres://h@127.0.0.1/x"], "is not a nats:// URL"),
        (vec!["--node-id", "node one"], "node_id must be"),
    ] {
        let output = hark_server(&["serve", "--listen", "127.0.0.1:0"], dir.path(), &extra, None);
        assert!(!output.status.success(), "{extra:?} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{extra:?}: {stderr}");
    }
}
