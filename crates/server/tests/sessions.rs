//! Sessions through a real server: hello and tokens, frame limits, keepalive, presence,
//! contacts and profiles.

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use hark_server::config::{Config, TransportTimers, TurnConfig};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn welcome_carries_ice_servers_and_limits() {
    let config = Config {
        stun_urls: vec!["stun:127.0.0.1:3478".into()],
        turn: Some(TurnConfig {
            urls: vec!["turn:127.0.0.1:3478".into(), "turn:127.0.0.1:3478?transport=tcp".into(), "turns:127.0.0.1:5349".into()],
            secret: "turn-secret".into(),
            ttl_s: 600,
        }),
        ice_transport_policy: hark_protocol::IceTransportPolicy::Relay,
        ..Config::default()
    };
    let server = TestServer::start_with(config).await;
    let alice = server.client("alice").await;
    let w = &alice.welcome;
    assert_eq!((w["re"].as_str(), w["protocol"].as_u64(), w["user"].as_str()), (Some("1"), Some(1), Some("alice")));
    assert_eq!(w["server_time"], common::T0);
    assert_eq!(w["ice_transport_policy"], "relay");
    assert_eq!(w["max_participants"], 9);
    assert!(w["session"].as_str().unwrap().starts_with("s_"));
    assert_eq!(w["ice_servers"][0], json!({"urls":["stun:127.0.0.1:3478"]}));
    let expiry = common::T0 / 1000 + 600;
    let (username, credential) = hark_server::accounts::turn_credentials("turn-secret", "alice", expiry);
    // Every TURN transport the server was given, with the one credential.
    let turn_urls = ["turn:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=tcp", "turns:127.0.0.1:5349"];
    assert_eq!(w["ice_servers"][1], json!({"urls":turn_urls,"username":username,"credential":credential}));
    assert_eq!(username, format!("{expiry}:alice"));
}

#[tokio::test]
async fn forged_expired_and_removed_tokens_are_refused_and_closed() {
    let server = TestServer::start().await;
    let now_s = server.clock_s();
    let cases = [
        (hark_protocol::token::mint(b"not the server's secret", "alice", now_s + 60), "unauthorized"),
        ("garbage".to_string(), "unauthorized"),
        (common::token_from_dir(server.dir.path(), "alice", now_s - 1), "token_expired"),
        (common::token_from_dir(server.dir.path(), "Not An Id", now_s + 60), "unauthorized"),
    ];
    for (token, code) in cases {
        let mut client = Client::connect(&server.ws_url()).await;
        let answer = client.hello(&token, "d").await;
        assert_eq!((answer["type"].as_str(), answer["code"].as_str(), answer["re"].as_str()), (Some("error"), Some(code), Some("1")));
        assert_eq!(client.closed().await, Some(CloseCode::Policy));
    }
    // A token that was good until the clock moved past it.
    let token = server.token("alice");
    server.clock.advance(3_600_000);
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&token, "d").await["code"], "token_expired");

    // An account removed by the operator: its tokens stop working.
    let token = server.token("mallory");
    drop(server.client("mallory").await);
    let store = server.store().await;
    assert!(store.remove_user("mallory", common::T0).await.unwrap());
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&token, "d").await["code"], "unauthorized");
}

#[tokio::test]
async fn unsupported_version_is_refused() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.ws_url()).await;
    client.send(json!({"type":"hello","id":"1","token":server.token("alice"),"protocol":[2,3],"device":"d"})).await;
    assert_eq!(client.next().await["code"], "unsupported_version");
    assert_eq!(client.closed().await, Some(CloseCode::Policy));
}

#[tokio::test]
async fn requests_before_hello_are_unauthorized_and_hello_still_works() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server.ws_url()).await;
    client.send(json!({"type":"contacts.list","id":"7"})).await;
    let answer = client.next().await;
    assert_eq!((answer["code"].as_str(), answer["re"].as_str()), (Some("unauthorized"), Some("7")));
    client.send(json!({"type":"hello","id":"2","token":server.token("alice"),"protocol":[1],"device":""})).await;
    assert_eq!(client.next().await["code"], "bad_request", "an empty device id");
    let welcome = client.hello(&server.token("alice"), "d").await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(client.request(json!({"type":"hello","token":"x","protocol":[1],"device":"d"})).await["code"], "invalid_state");
}

#[tokio::test]
async fn hello_must_come_in_time() {
    let mut config = Config::default();
    config.transport.hello_within = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.closed().await, Some(CloseCode::Policy));
}

#[tokio::test]
async fn malformed_oversized_and_unknown_frames_keep_the_socket_open() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.send_text("{not json".into()).await;
    assert_eq!(alice.next().await["code"], "bad_request");
    alice.send_text("[1,2,3]".into()).await;
    assert_eq!(alice.next().await["code"], "bad_request");
    alice.send(json!({"id":"5","no":"type"})).await;
    let answer = alice.next().await;
    assert_eq!((answer["code"].as_str(), answer["re"].as_str()), (Some("bad_request"), Some("5")));
    alice.send(json!({"type":"call.invite","id":"6","to":"bob"})).await;
    assert_eq!(alice.next().await["code"], "bad_request");
    alice.send_text(json!({"type":"ping","pad":"x".repeat(70 * 1024)}).to_string()).await;
    assert_eq!(alice.next().await["code"], "payload_too_large");
    alice.send(json!({"type":"call.teleport","id":"9"})).await;
    let answer = alice.next().await;
    assert_eq!((answer["code"].as_str(), answer["re"].as_str()), (Some("unsupported"), Some("9")));
    alice.send_binary(vec![1, 2, 3]).await;
    assert_eq!(alice.next().await["code"], "bad_request");
    let big_signal = json!({"type":"signal","call_id":"c","to":"bob","payload":{"sdp":"x".repeat(40 * 1024)}});
    assert_eq!(alice.request(big_signal).await["code"], "payload_too_large");
    let not_object = json!({"type":"signal","call_id":"c","to":"bob","payload":"offer"});
    assert_eq!(alice.request(not_object).await["code"], "bad_request");
    let data = json!({"type":"call.invite","to":["bob"],"media":"audio","user_data":"x".repeat(5000)});
    assert_eq!(alice.request(data).await["code"], "payload_too_large");
    // Still open and working.
    assert_eq!(alice.request(json!({"type":"ping"})).await["type"], "ok");
}

#[tokio::test]
async fn twenty_bad_frames_in_ten_seconds_close_the_socket() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    for i in 0..19 {
        alice.send_text(format!("bad frame {i}")).await;
        assert_eq!(alice.next().await["code"], "bad_request");
    }
    // Unknown types are not bad frames: a newer client may send them in good faith.
    for _ in 0..5 {
        alice.send(json!({"type":"from.the.future"})).await;
        assert_eq!(alice.next().await["code"], "unsupported");
    }
    assert_eq!(alice.request(json!({"type":"ping"})).await["type"], "ok");
    alice.send_text("the twentieth".into()).await;
    assert_eq!(alice.closed().await, Some(CloseCode::Policy));
}

#[tokio::test]
async fn silent_sessions_are_closed_and_answering_ones_are_not() {
    let timers = TransportTimers {
        hello_within: Duration::from_secs(10),
        ping_every: Duration::from_millis(100),
        idle_limit: Duration::from_millis(400),
        ..TransportTimers::default()
    };
    let config = Config { transport: timers, ..Config::default() };
    let server = TestServer::start_with(config).await;
    let mut lively = server.client("alice").await;
    let mut silent = server.client("bob").await;
    // `lively` reads (so its pongs go out) and sends a frame now and then; `silent` does neither.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1_200) {
        assert_eq!(lively.request(json!({"type":"ping"})).await["type"], "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The close frame may be lost behind the pongs the client owes, so any close counts; a socket
    // still open would make `closed` fail after its deadline.
    assert!(matches!(silent.closed().await, Some(CloseCode::Normal) | None));
    assert_eq!(lively.request(json!({"type":"ping"})).await["type"], "ok");
}

#[tokio::test]
async fn same_device_again_replaces_the_old_session() {
    let server = TestServer::start().await;
    let mut old = server.client_on("alice", "laptop").await;
    let _new = server.client_on("alice", "laptop").await;
    assert_eq!(old.next().await, json!({"type":"kicked","reason":"replaced"}));
    assert_eq!(old.closed().await, Some(CloseCode::Normal));
}

#[tokio::test]
async fn presence_query_subscribe_and_events() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    drop(server.client("bob").await);
    alice.until_offline("bob").await;
    let ok = alice.request(json!({"type":"presence.query","users":["alice","bob","nobody"]})).await;
    assert_eq!(ok["statuses"], json!({"alice":"online","bob":"offline","nobody":"unregistered"}));
    let ok = alice.request(json!({"type":"presence.subscribe","users":["bob"]})).await;
    assert_eq!(ok["type"], "ok");
    let laptop = server.client_on("bob", "laptop").await;
    assert_eq!(alice.expect("presence").await, json!({"type":"presence","user":"bob","status":"online"}));
    let phone = server.client_on("bob", "phone").await;
    laptop.drop_connection().await;
    assert!(alice.barrier().await.is_empty(), "bob is still online on his phone");
    drop(phone);
    assert_eq!(alice.expect("presence").await, json!({"type":"presence","user":"bob","status":"offline"}));
}

#[tokio::test]
async fn contacts_add_list_remove() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    drop(server.client("carol").await);
    alice.until_offline("carol").await;
    bob.request(json!({"type":"profile.set","nickname":"Bob B."})).await;
    assert_eq!(alice.request(json!({"type":"contacts.add","user":"bob","alias":"Bobby"})).await["type"], "ok");
    assert_eq!(alice.request(json!({"type":"contacts.add","user":"carol"})).await["type"], "ok");
    assert_eq!(alice.request(json!({"type":"contacts.add","user":"nobody"})).await["code"], "not_found");
    assert_eq!(alice.request(json!({"type":"contacts.add","user":"alice"})).await["code"], "bad_request");
    let list = alice.request(json!({"type":"contacts.list"})).await;
    assert_eq!(
        list["contacts"],
        json!([
            {"user":"bob","nickname":"Bob B.","alias":"Bobby","status":"online"},
            {"user":"carol","nickname":"carol","alias":null,"status":"offline"}
        ])
    );
    alice.request(json!({"type":"contacts.remove","user":"bob"})).await;
    let list = alice.request(json!({"type":"contacts.list"})).await;
    assert_eq!(list["contacts"].as_array().unwrap().len(), 1);
    // Contacts are per user.
    assert_eq!(bob.request(json!({"type":"contacts.list"})).await["contacts"], json!([]));
}

#[tokio::test]
async fn profiles_set_and_get() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let avatar = "data:image/png;base64,iVBORw0KGgo=";
    assert_eq!(alice.request(json!({"type":"profile.set","nickname":"Alice A.","avatar":avatar})).await["type"], "ok");
    let ok = alice.request(json!({"type":"users.get","users":["alice","nobody"]})).await;
    assert_eq!(ok["users"], json!([{"user":"alice","nickname":"Alice A.","avatar":avatar}]));
    let too_big = json!({"type":"profile.set","avatar":"x".repeat(17 * 1024)});
    assert_eq!(alice.request(too_big).await["code"], "payload_too_large");
    assert_eq!(alice.request(json!({"type":"profile.set","nickname":""})).await["code"], "bad_request");
    assert_eq!(alice.request(json!({"type":"profile.set","nickname":"Al\u{0}ice"})).await["code"], "bad_request");
    // The alias is checked before the contact is looked up: a good one meets the missing user.
    let with_a_break = json!({"type":"contacts.add","user":"nobody","alias":"line\nbreak"});
    assert_eq!(alice.request(with_a_break).await["code"], "bad_request");
    assert_eq!(alice.request(json!({"type":"contacts.add","user":"nobody","alias":"Nobody"})).await["code"], "not_found");
    // Nothing was lost by the refused requests.
    let ok = alice.request(json!({"type":"users.get","users":["alice"]})).await;
    assert_eq!(ok["users"][0]["nickname"], "Alice A.");
}

#[tokio::test]
async fn history_paging_and_delete_are_per_user() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let call = common::place_call(&mut alice, &mut [&mut bob], "audio").await;
        alice.request(json!({"type":"call.cancel","call_id":call})).await;
        alice.expect("call.ended").await;
        bob.barrier().await;
        ids.push(call);
        server.clock.advance(1_000);
    }
    let page = alice.request(json!({"type":"calls.history","limit":2})).await;
    let got: Vec<&str> = page["records"].as_array().unwrap().iter().map(|r| r["call_id"].as_str().unwrap()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let before = page["records"][1]["started_at"].as_i64().unwrap();
    let rest = alice.request(json!({"type":"calls.history","before":before})).await;
    assert_eq!(rest["records"][0]["call_id"], ids[0]);
    assert_eq!(alice.request(json!({"type":"calls.history","limit":0})).await["code"], "bad_request");
    assert_eq!(alice.request(json!({"type":"calls.history","limit":201})).await["code"], "bad_request");

    alice.request(json!({"type":"calls.delete","call_ids":[ids[0], ids[1]]})).await;
    let left = alice.request(json!({"type":"calls.history"})).await;
    assert_eq!(left["records"].as_array().unwrap().len(), 1);
    let bobs = bob.request(json!({"type":"calls.history"})).await;
    assert_eq!(bobs["records"].as_array().unwrap().len(), 3, "bob's history is his own");
}
