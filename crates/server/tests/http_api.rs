//! The HTTP side: registration, login, CORS, health and metrics; and the full list of error codes.

mod common;

#[cfg(feature = "cluster")]
use common::postgres::ThrowawayPostgres;
#[cfg(feature = "cluster")]
use common::PATIENCE;
use common::{Client, TestServer};
use hark_protocol::ErrorCode;
use hark_server::config::{Config, RateLimits};
use serde_json::json;

#[tokio::test]
async fn register_and_login() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/v1/register", json!({"user":"alice","password":"correct horse","nickname":"Alice"})).await;
    assert_eq!((status, body), (201, json!({"user":"alice"})));
    let (status, body) = server.post("/v1/register", json!({"user":"alice","password":"another one"})).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("user_exists")));
    let (status, body) = server.post("/v1/register", json!({"user":"Alice!","password":"correct horse"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = server.post("/v1/register", json!({"user":"bob","password":"short"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    let (status, body) = server.post("/v1/register", json!({"user":"bob"})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");

    let (status, body) = server.post("/v1/login", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_at"], (common::T0 / 1000 + 7 * 86_400) * 1000);
    let token = body["token"].as_str().unwrap();
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(token, "laptop").await["user"], "alice");
    let profile = client.request(json!({"type":"users.get","users":["alice"]})).await;
    assert_eq!(profile["users"][0]["nickname"], "Alice");

    for wrong in [json!({"user":"alice","password":"wrong horse"}), json!({"user":"nobody","password":"whatever1"})] {
        let (status, body) = server.post("/v1/login", wrong).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("bad_credentials")));
    }
    // An account made by a token has no password to log in with.
    drop(server.client("tokenonly").await);
    let (status, _) = server.post("/v1/login", json!({"user":"tokenonly","password":""})).await;
    assert_eq!(status, 401);

    // Malformed bodies get the protocol's error shape.
    let response = reqwest::Client::new()
        .post(server.http("/v1/login"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["code"], "bad_request");
}

#[tokio::test]
async fn login_rate_limit_and_closed_registration() {
    let config = Config { closed_registration: true, rate_limits: RateLimits { invites_per_minute: 30, logins_per_minute: 3, ..Default::default() }, ..Config::default() };
    let server = TestServer::start_with(config).await;
    let (status, body) = server.post("/v1/register", json!({"user":"alice","password":"correct horse"})).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("registration_closed")));
    for _ in 0..3 {
        assert_eq!(server.post("/v1/login", json!({"user":"alice","password":"guess guess"})).await.0, 401);
    }
    let (status, body) = server.post("/v1/login", json!({"user":"alice","password":"guess guess"})).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    server.clock.advance(20_000);
    assert_eq!(server.post("/v1/login", json!({"user":"alice","password":"guess guess"})).await.0, 401);
}

#[tokio::test]
#[cfg(feature = "cluster")]
async fn healthz_fails_while_the_database_does_not_answer() {
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("health").await;
    let server = TestServer::start_with(Config { database: Some(url), ..Config::default() }).await;
    let http = reqwest::Client::new();
    let answer = http.get(server.http("/healthz")).send().await.unwrap();
    assert_eq!((answer.status().as_u16(), answer.text().await.unwrap().as_str()), (200, "ok"));

    drop(postgres);
    // An answer stands for a second; the next check finds the database gone.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = http.get(server.http("/healthz")).send().await.unwrap();
        if answer.status() == 503 {
            let reason = answer.text().await.unwrap();
            assert!(reason.starts_with("database"), "{reason}");
            break;
        }
        assert_eq!(answer.status(), 200);
        assert!(tokio::time::Instant::now() < deadline, "/healthz still said ok with the database stopped");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Sign-ins are refused with a clear code meanwhile, and the server stays up.
    let mut client = Client::connect(&server.ws_url()).await;
    assert_eq!(client.hello(&server.token("alice"), "laptop").await["code"], "internal");
}

#[tokio::test]
async fn health_metrics_and_cors() {
    let config = Config { allowed_origins: vec!["https://app.example".into()], ..Config::default() };
    let server = TestServer::start_with(config).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(server.http("/healthz")).send().await.unwrap().text().await.unwrap(), "ok");

    let preflight = http
        .request(reqwest::Method::OPTIONS, server.http("/v1/login"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    let refused = http
        .request(reqwest::Method::OPTIONS, server.http("/v1/login"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // The WebSocket checks Origin too.
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(server.ws_url()).unwrap();
    request.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(request).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");

    let _alice = server.client("alice").await;
    let metrics = http.get(server.http("/metrics")).send().await.unwrap().text().await.unwrap();
    // Each node counts its own sessions.
    let mut sessions = 0;
    for url in server.http_on_every_node("/metrics") {
        let text = http.get(url).send().await.unwrap().text().await.unwrap();
        sessions += text.lines().find_map(|l| l.strip_prefix("hark_sessions ")).and_then(|n| n.parse::<i64>().ok()).expect("hark_sessions");
    }
    assert_eq!(sessions, 1, "{metrics}");
    assert!(metrics.contains("hark_calls_live 0"));
    assert!(metrics.contains("hark_errors_total{code=\"bad_request\"}"));
}

/// Every error code of the protocol is produced by some real request, and counted in /metrics.
#[tokio::test]
async fn every_error_code_is_produced() {
    let config = Config { rate_limits: RateLimits { invites_per_minute: 2, logins_per_minute: 1, ..Default::default() }, ..Config::default() };
    let mut server = TestServer::start_with(config).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut note = |code: &serde_json::Value| {
        seen.insert(code.as_str().expect("a code").to_owned());
    };

    // HTTP codes.
    assert_eq!(server.post("/v1/register", json!({"user":"alice","password":"correct horse"})).await.0, 201);
    note(&server.post("/v1/register", json!({"user":"alice","password":"correct horse"})).await.1["code"]);
    note(&server.post("/v1/login", json!({"user":"alice","password":"wrong wrong"})).await.1["code"]);
    note(&server.post("/v1/login", json!({"user":"alice","password":"wrong wrong"})).await.1["code"]);
    let closed = TestServer::start_with(Config { closed_registration: true, ..Config::default() }).await;
    note(&closed.post("/v1/register", json!({"user":"zed","password":"correct horse"})).await.1["code"]);

    // Session codes.
    let mut client = Client::connect(&server.ws_url()).await;
    client.send(json!({"type":"ping","id":"1"})).await;
    note(&client.next().await["code"]); // unauthorized
    client.send(json!({"type":"hello","token":server.token("alice"),"protocol":[9],"device":"d"})).await;
    note(&client.next().await["code"]); // unsupported_version
    let mut client = Client::connect(&server.ws_url()).await;
    note(&client.hello(&common::token_from_dir(server.dir.path(), "alice", 1), "d").await["code"]); // token_expired

    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    for request in [
        json!({"type":"contacts.add","user":"alice"}),                                  // bad_request
        json!({"type":"profile.set","avatar":"x".repeat(20_000)}),                      // payload_too_large
        json!({"type":"what.is.this"}),                                                 // unsupported
        json!({"type":"call.invite","to":["nobody"],"media":"audio"}),                  // not_found
        json!({"type":"call.invite","to":["u1","u2","u3","u4","u5","u6","u7","u8","u9"],"media":"audio"}), // too_many_participants
    ] {
        note(&alice.request(request).await["code"]);
    }
    let call = common::place_call(&mut alice, &mut [&mut bob], "audio").await;
    note(&bob.request(json!({"type":"call.cancel","call_id":call})).await["code"]); // forbidden
    note(&bob.request(json!({"type":"call.join","call_id":call})).await["code"]); // invalid_state
    alice.request(json!({"type":"call.cancel","call_id":call})).await;
    note(&alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio"})).await["code"]); // rate_limited

    // internal: the storage fails under the server (a table vanishes).
    server.execute_sql("DROP TABLE contacts").await;
    note(&alice.request(json!({"type":"contacts.list"})).await["code"]);

    // Each node counts the errors it answered.
    let mut metrics = Vec::new();
    for url in server.http_on_every_node("/metrics") {
        metrics.push(reqwest::get(url).await.unwrap().text().await.unwrap());
    }
    let all: std::collections::BTreeSet<String> = ErrorCode::ALL.iter().map(|c| c.as_str().to_owned()).collect();
    assert_eq!(seen, all, "missing: {:?}", all.difference(&seen).collect::<Vec<_>>());
    for code in ["unauthorized", "forbidden", "internal", "rate_limited"] {
        let zero = format!("hark_errors_total{{code=\"{code}\"}} 0\n");
        assert!(metrics.iter().any(|m| !m.contains(&zero)), "{code} not counted:\n{metrics:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn registrations_have_a_budget_per_source() {
    let limits = RateLimits { registrations_per_minute: 2, ..Default::default() };
    let server = TestServer::start_with(Config { rate_limits: limits, ..Config::default() }).await;
    for user in ["ann", "ben"] {
        assert_eq!(server.post("/v1/register", json!({"user":user,"password":"correct horse"})).await.0, 201);
    }
    let (status, body) = server.post("/v1/register", json!({"user":"cat","password":"correct horse"})).await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    let (status, body) = server.post_from([127, 0, 0, 2], "/v1/register", json!({"user":"cat","password":"correct horse"})).await;
    assert_eq!((status, body["user"].as_str()), (201, Some("cat")), "another address has its own budget");
    // A login with something that is not a user id costs nothing and says nothing.
    let (status, body) = server.post("/v1/login", json!({"user":"x".repeat(10_000),"password":"p"})).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("bad_credentials")));
    server.clock.advance(30_000);
    assert_eq!(server.post("/v1/register", json!({"user":"dot","password":"correct horse"})).await.0, 201);
}
