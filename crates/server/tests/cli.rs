//! The `hark-server` command line: `user add|list|remove` and `token`, against a running server.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{Client, TestServer};
use serde_json::json;

fn hark_server(args: &[&str], dir: &std::path::Path, stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hark-server"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
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
    let server = TestServer::start().await;
    let dir = server.dir.path();

    stdout(&hark_server(&["user", "add", "alice", "--nickname", "Alice"], dir, Some("correct horse\n")));
    let refused = hark_server(&["user", "add", "bob"], dir, Some("short\n"));
    assert!(!refused.status.success());
    let again = hark_server(&["user", "add", "alice"], dir, Some("correct horse\n"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(stdout(&hark_server(&["user", "list"], dir, None)), "alice\tAlice\n");

    // The password given on stdin logs in.
    let (status, body) = server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!(status, 200, "{body}");

    // A token minted by the command works with the running server (its clock is the manual one,
    // which stands before the real time, so the token is valid for it).
    let token = stdout(&hark_server(&["token", "alice", "--ttl", "1h"], dir, None)).trim().to_owned();
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&token, "cli").await["user"], "alice");
    let bad = hark_server(&["token", "alice", "--ttl", "1w"], dir, None);
    assert!(!bad.status.success());

    stdout(&hark_server(&["user", "remove", "alice"], dir, None));
    assert_eq!(stdout(&hark_server(&["user", "list"], dir, None)), "");
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&token, "cli").await["code"], "unauthorized");
    let (status, _) = server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!(status, 401);
}
