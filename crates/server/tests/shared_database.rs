//! Two servers on one PostgreSQL database with one signing key, as a cluster's nodes will be: a
//! token from either works on both, what one writes the other reads, and removing an account
//! from any host closes its sessions on every server.
#![cfg(feature = "cluster")]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::postgres::ThrowawayPostgres;
use common::{place_call, Client, TestServer, T0};
use hark_server::clock::ManualClock;
use hark_server::config::Config;
use serde_json::json;

async fn signed_in(server: &TestServer, key: &[u8], user: &str) -> Client {
    let mut client = Client::connect(&server.ws_url()).await;
    let token = hark_protocol::token::mint(key, user, server.clock_s() + 3600);
    let welcome = client.hello(&token, &format!("{user}-laptop")).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client.user = user.to_owned();
    client
}

#[tokio::test]
async fn two_servers_share_accounts_records_and_removals_through_one_database() {
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("shared").await;
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("cluster.key");
    let key = "0123456789abcdef".repeat(4);
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = Config { database: Some(url.clone()), signing_key: Some(key_file.clone()), ..Config::default() };
    let start = || TestServer::start_in(config.clone(), tempfile::tempdir().unwrap(), ManualClock::new(T0));
    let (first, second) = (start().await, start().await);
    for server in [&first, &second] {
        assert!(!server.dir.path().join(hark_server::accounts::SECRET_FILE).exists(), "the shared key, not one of its own");
    }

    // A call on the first server; its records are read through the second.
    let mut alice = signed_in(&first, key.as_bytes(), "alice").await;
    let mut bob = signed_in(&first, key.as_bytes(), "bob").await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;
    alice.request(json!({"type":"call.hangup","call_id":call})).await;
    alice.expect("call.ended").await;
    let mut alice_there = signed_in(&second, key.as_bytes(), "alice").await;
    let history = alice_there.request(json!({"type":"calls.history"})).await;
    assert_eq!(history["records"][0]["call_id"], call, "{history}");
    let contacts_added = alice_there.request(json!({"type":"contacts.add","user":"bob"})).await;
    assert_eq!(contacts_added["type"], "ok");
    assert_eq!(alice.request(json!({"type":"contacts.list"})).await["contacts"][0]["user"], "bob");

    // The operator removes alice from a third process; both servers close her sessions.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark-server"))
        .args(["user", "remove", "alice", "--database", &url])
        .output()
        .await
        .expect("hark-server user remove");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for client in [&mut alice, &mut alice_there] {
        assert_eq!(client.next().await, json!({"type":"kicked","reason":"account_removed"}));
    }
    // A token the command mints with the key file works on either server.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hark-server"))
        .args(["token", "carol", "--ttl", "1h", "--data-dir"])
        .arg(keys.path())
        .args(["--database", &url, "--signing-key"])
        .arg(&key_file)
        .output()
        .await
        .expect("hark-server token");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    for server in [&first, &second] {
        let mut carol = Client::connect(&server.ws_url()).await;
        assert_eq!(carol.hello(&token, "phone").await["user"], "carol");
    }
}
