//! Call flows through a real server: every row of PROTOCOL.md section 4 with real WebSocket
//! clients; time-dependent rows (ring timeout, duration, reconnect grace) on the manual clock.

mod common;

use common::{place_call, Client, TestServer};
use hark_server::config::Config;
use serde_json::{json, Value};

async fn history(client: &mut Client) -> Vec<Value> {
    let ok = client.request(json!({"type":"calls.history"})).await;
    ok["records"].as_array().expect("records").clone()
}

#[tokio::test]
async fn one_to_one_accept_signal_hangup_with_server_duration() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;

    let ok = alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio","user_data":"hi"})).await;
    let call_id = ok["call_id"].as_str().unwrap().to_owned();
    let incoming = bob.expect("call.incoming").await;
    assert_eq!(
        incoming,
        json!({"type":"call.incoming","call_id":call_id,"from":"alice","invitees":["bob"],"media":"audio",
               "user_data":"hi","expires_at":common::T0 + 30_000})
    );

    server.clock.advance(2_000);
    let ok = bob.request(json!({"type":"call.accept","call_id":call_id})).await;
    assert_eq!(ok["joined"], json!(["alice"]));
    assert_eq!(alice.expect("call.accepted").await["user"], "bob");

    // Alice joined first, so she offers; candidates and the answer travel the same way.
    let ok = alice.request(json!({"type":"signal","call_id":call_id,"to":"bob","payload":{"kind":"offer","sdp":"v=0 offer"}})).await;
    assert_eq!(ok["type"], "ok");
    assert_eq!(bob.expect("signal").await, json!({"type":"signal","call_id":call_id,"from":"alice","payload":{"kind":"offer","sdp":"v=0 offer"}}));
    // A signal without an id is relayed and not answered.
    bob.send(json!({"type":"signal","call_id":call_id,"to":"alice","payload":{"kind":"answer","sdp":"v=0 answer"}})).await;
    assert_eq!(alice.expect("signal").await["payload"]["kind"], "answer");
    bob.send(json!({"type":"signal","call_id":call_id,"to":"alice","payload":{"kind":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdp_mid":"0","sdp_mline_index":0}})).await;
    assert_eq!(alice.expect("signal").await["payload"]["kind"], "candidate");

    server.clock.advance(42_500);
    let ok = bob.request(json!({"type":"call.hangup","call_id":call_id})).await;
    assert_eq!(ok["type"], "ok");
    assert_eq!(alice.expect("call.left").await["user"], "bob");
    let ended = json!({"type":"call.ended","call_id":call_id,"reason":"hangup","duration_s":42});
    assert_eq!(alice.expect("call.ended").await, ended);
    assert_eq!(bob.expect("call.ended").await, ended);

    let records = history(&mut alice).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r["direction"].as_str(), r["result"].as_str(), r["duration_s"].as_u64()), (Some("outgoing"), Some("completed"), Some(42)));
    assert_eq!((r["started_at"].as_i64(), r["connected_at"].as_i64()), (Some(common::T0), Some(common::T0 + 2_000)));
    let r = &history(&mut bob).await[0];
    assert_eq!((r["direction"].as_str(), r["result"].as_str(), r["duration_s"].as_u64()), (Some("incoming"), Some("completed"), Some(42)));
    assert_eq!((r["end_reason"].as_str(), r.get("quality")), (Some("hangup"), None));

    // Each person keeps how the call sounded to them in their own record, and only there.
    let ok = bob.request(json!({"type":"call.quality","call_id":call_id,"mos_average":4.21,"mos_worst":3.5})).await;
    assert_eq!(ok["type"], "ok");
    assert_eq!(history(&mut bob).await[0]["quality"], json!({"mos_average":4.21,"mos_worst":3.5}));
    assert_eq!(history(&mut alice).await[0].get("quality"), None, "bob's scores are not alice's");
    for (bad, code) in [
        (json!({"type":"call.quality","call_id":call_id,"mos_average":4.6,"mos_worst":3.5}), "bad_request"),
        (json!({"type":"call.quality","call_id":call_id,"mos_average":3.0,"mos_worst":3.5}), "bad_request"),
        (json!({"type":"call.quality","call_id":call_id,"mos_average":0.5,"mos_worst":0.5}), "bad_request"),
        (json!({"type":"call.quality","call_id":call_id,"mos_average":"good","mos_worst":3.5}), "bad_request"),
        (json!({"type":"call.quality","call_id":"c_nope","mos_average":4.0,"mos_worst":3.5}), "not_found"),
    ] {
        let refused = bob.request(bad.clone()).await;
        assert_eq!((refused["type"].as_str(), refused["code"].as_str()), (Some("error"), Some(code)), "{bad}");
    }
    assert_eq!(history(&mut bob).await[0]["quality"], json!({"mos_average":4.21,"mos_worst":3.5}), "a refused report changes nothing");
}

/// A person whose client gives the call up (no media for too long) ends a 1:1 call `failed`,
/// and both records say how it ended.
#[tokio::test]
async fn a_hangup_that_gives_up_ends_the_call_failed() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let call_id = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call_id})).await;
    alice.expect("call.accepted").await;
    server.clock.advance(30_000);
    let refused = bob.request(json!({"type":"call.hangup","call_id":call_id,"reason":"bored"})).await;
    assert_eq!(refused["code"], "bad_request", "an unknown reason is refused, and the call goes on");
    let ok = bob.request(json!({"type":"call.hangup","call_id":call_id,"reason":"failed"})).await;
    assert_eq!(ok["duration_s"], 30);
    assert_eq!(alice.expect("call.left").await["user"], "bob");
    let ended = json!({"type":"call.ended","call_id":call_id,"reason":"failed","duration_s":30});
    assert_eq!(alice.expect("call.ended").await, ended);
    assert_eq!(bob.expect("call.ended").await, ended);
    for person in [&mut alice, &mut bob] {
        let r = &history(person).await[0];
        assert_eq!((r["result"].as_str(), r["end_reason"].as_str()), (Some("completed"), Some("failed")), "{r}");
    }
}

#[tokio::test]
async fn reject_cancel_and_ring_timeout() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;

    // Reject.
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    assert_eq!(bob.request(json!({"type":"call.reject","call_id":call})).await["type"], "ok");
    assert_eq!(alice.expect("call.rejected").await["user"], "bob");
    assert_eq!(alice.expect("call.ended").await["reason"], "rejected");
    assert_eq!(bob.expect("call.ended").await["reason"], "rejected");

    // Cancel.
    let call = place_call(&mut alice, &mut [&mut bob], "video").await;
    assert_eq!(alice.request(json!({"type":"call.cancel","call_id":call})).await["type"], "ok");
    assert_eq!(bob.expect("call.cancelled").await, json!({"type":"call.cancelled","call_id":call,"by":"alice"}));
    assert_eq!(bob.expect("call.ended").await["reason"], "cancelled");
    assert_eq!(alice.expect("call.ended").await["reason"], "cancelled");

    // Ring timeout, on the manual clock.
    let ok = alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio","timeout_s":5})).await;
    let call = ok["call_id"].as_str().unwrap().to_owned();
    assert_eq!(bob.expect("call.incoming").await["expires_at"], common::T0 + 5_000);
    assert!(bob.barrier().await.is_empty());
    server.clock.advance(5_000);
    assert_eq!(bob.expect("call.timeout").await, json!({"type":"call.timeout","call_id":call}));
    assert_eq!(alice.expect("call.no_answer").await["user"], "bob");
    assert_eq!(alice.expect("call.ended").await["reason"], "no_answer");

    let results: Vec<(String, String)> = history(&mut alice)
        .await
        .iter()
        .map(|r| (r["direction"].as_str().unwrap().into(), r["result"].as_str().unwrap().into()))
        .collect();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|(d, _)| d == "outgoing"));
    let mut outcomes: Vec<&str> = results.iter().map(|(_, r)| r.as_str()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["cancelled", "declined", "no_answer"]);
    let mut bobs: Vec<String> = history(&mut bob).await.iter().map(|r| r["result"].as_str().unwrap().to_owned()).collect();
    bobs.sort();
    assert_eq!(bobs, ["declined", "missed", "missed"]);
}

#[tokio::test]
async fn busy_user_is_not_disturbed() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut carol = server.client("carol").await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;

    let ok = carol.request(json!({"type":"call.invite","to":["bob"],"media":"audio"})).await;
    let second = ok["call_id"].as_str().unwrap().to_owned();
    assert_eq!(carol.expect("call.busy").await, json!({"type":"call.busy","call_id":second,"user":"bob"}));
    assert_eq!(carol.expect("call.ended").await["reason"], "busy");
    assert!(bob.barrier().await.is_empty(), "bob was disturbed");
    assert!(alice.barrier().await.is_empty());
    assert_eq!(history(&mut bob).await[0]["result"], "busy");
}

#[tokio::test]
async fn multi_device_ringing_handled_elsewhere_and_signal_routing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut laptop = server.client_on("bob", "laptop").await;
    let mut phone = server.client_on("bob", "phone").await;
    let call = place_call(&mut alice, &mut [&mut laptop], "audio").await;
    assert_eq!(phone.expect("call.incoming").await["call_id"], call);

    phone.request(json!({"type":"call.accept","call_id":call})).await;
    assert_eq!(laptop.expect("call.handled_elsewhere").await, json!({"type":"call.handled_elsewhere","call_id":call,"action":"accepted"}));
    alice.expect("call.accepted").await;
    alice.send(json!({"type":"signal","call_id":call,"to":"bob","payload":{"kind":"offer","sdp":"x"}})).await;
    assert_eq!(phone.expect("signal").await["from"], "alice");
    assert!(laptop.barrier().await.is_empty(), "the signal went to the accepting device only");
    let refused = laptop.request(json!({"type":"signal","call_id":call,"to":"alice","payload":{"kind":"restart"}})).await;
    assert_eq!(refused["code"], "forbidden");
    phone.request(json!({"type":"call.hangup","call_id":call})).await;
    phone.expect("call.ended").await;
    assert!(laptop.barrier().await.is_empty());

    // Rejecting on one device tells the other.
    let call = place_call(&mut alice, &mut [&mut laptop], "audio").await;
    phone.expect("call.incoming").await;
    laptop.request(json!({"type":"call.reject","call_id":call})).await;
    assert_eq!(phone.expect("call.handled_elsewhere").await["action"], "rejected");
}

#[tokio::test]
async fn pending_invitation_is_delivered_at_sign_in_but_not_after_it_expired() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    drop(server.client("bob").await); // bob has an account but is offline
    alice.until_offline("bob").await;
    let ok = alice.request(json!({"type":"call.invite","to":["bob"],"media":"video"})).await;
    let call = ok["call_id"].as_str().unwrap().to_owned();

    server.clock.advance(10_000);
    let mut bob = server.client("bob").await;
    let incoming = bob.expect("call.incoming").await;
    assert_eq!((incoming["call_id"].as_str(), incoming["expires_at"].as_i64()), (Some(call.as_str()), Some(common::T0 + 30_000)));
    drop(bob);

    server.clock.advance(20_000);
    assert_eq!(alice.expect("call.no_answer").await["user"], "bob");
    alice.expect("call.ended").await;
    let mut bob = server.client("bob").await;
    assert!(bob.barrier().await.is_empty(), "an expired invitation was delivered");
}

/// Skips events until the answer to request `id`.
async fn answer_to(client: &mut Client, id: &str) -> Value {
    answer_and_before(client, id).await.0
}

/// The answer to request `id`, and the frames that came before it.
async fn answer_and_before(client: &mut Client, id: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let message = client.next().await;
        if message["re"] == id {
            return (message, before);
        }
        before.push(message);
    }
}

#[tokio::test]
async fn accept_cancel_race_has_exactly_one_winner_every_time() {
    let limits = hark_server::config::RateLimits { invites_per_minute: 1000, logins_per_minute: 10, ..Default::default() };
    let server = TestServer::start_with(Config { rate_limits: limits, ..Config::default() }).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let (mut accepted, mut cancelled) = (0, 0);
    let rounds = race_rounds();
    for round in 0..rounds {
        let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
        let cancel = json!({"type":"call.cancel","id":"x","call_id":call});
        let accept = json!({"type":"call.accept","id":"y","call_id":call});
        // Both requests are on the wire before either answer is read.
        if round % 2 == 0 {
            tokio::join!(alice.send(cancel), bob.send(accept));
        } else {
            tokio::join!(bob.send(accept), alice.send(cancel));
        }
        let cancel_answer = answer_to(&mut alice, "x").await;
        let accept_answer = answer_to(&mut bob, "y").await;
        let outcome = (cancel_answer["type"].as_str().unwrap().to_owned(), accept_answer["type"].as_str().unwrap().to_owned());
        match outcome.clone() {
            (c, a) if c == "ok" && a == "error" => {
                assert_eq!(accept_answer["code"], "invalid_state");
                cancelled += 1;
            }
            (c, a) if c == "error" && a == "ok" => {
                assert_eq!(cancel_answer["code"], "invalid_state");
                accepted += 1;
                alice.request(json!({"type":"call.hangup","call_id":call})).await;
            }
            other => panic!("round {round}: both or neither won: {other:?}"),
        }
        // Drain what the round left so the next starts clean.
        alice.barrier().await;
        bob.barrier().await;
    }
    assert_eq!(accepted + cancelled, rounds);
    println!("accept won {accepted} times, cancel {cancelled}");
}

/// Rounds of each race: 200 when the two sides are on different nodes of a cluster (clients
/// go to the nodes in turn), where a race is decided by the order of the log.
fn race_rounds() -> usize {
    if common::test_nodes() > 1 { 200 } else { 60 }
}

/// Two devices of one person accept the same call at once: exactly one joins, the other is
/// told `invalid_state` and hears `call.handled_elsewhere`.
#[tokio::test]
async fn two_devices_accept_race_has_exactly_one_winner_every_time() {
    let limits = hark_server::config::RateLimits { invites_per_minute: 1000, ..Default::default() };
    let server = TestServer::start_with(Config { rate_limits: limits, ..Config::default() }).await;
    let mut alice = server.client("alice").await;
    let mut laptop = server.client_on("bob", "bob-laptop").await;
    let mut phone = server.client_on("bob", "bob-phone").await;
    let (mut laptop_won, mut phone_won) = (0, 0);
    let rounds = race_rounds();
    for round in 0..rounds {
        let call = place_call(&mut alice, &mut [&mut laptop], "audio").await;
        assert_eq!(phone.expect("call.incoming").await["call_id"], call);
        let accept = json!({"type":"call.accept","id":"a","call_id":call});
        if round % 2 == 0 {
            tokio::join!(laptop.send(accept.clone()), phone.send(accept));
        } else {
            tokio::join!(phone.send(accept.clone()), laptop.send(accept));
        }
        let ((on_laptop, laptop_heard), (on_phone, phone_heard)) = (answer_and_before(&mut laptop, "a").await, answer_and_before(&mut phone, "a").await);
        let (winner, loser, mut loser_heard, refusal) = match (on_laptop["type"].as_str(), on_phone["type"].as_str()) {
            (Some("ok"), Some("error")) => {
                laptop_won += 1;
                (&mut laptop, &mut phone, phone_heard, on_phone)
            }
            (Some("error"), Some("ok")) => {
                phone_won += 1;
                (&mut phone, &mut laptop, laptop_heard, on_laptop)
            }
            other => panic!("round {round}: both or neither won: {other:?}"),
        };
        assert_eq!(refusal["code"], "invalid_state");
        // The loser hears why, before or after its refusal.
        loser_heard.extend(loser.barrier().await);
        let handled: Vec<&Value> = loser_heard.iter().filter(|m| m["type"] == "call.handled_elsewhere").collect();
        assert_eq!(handled.len(), 1, "round {round}: {loser_heard:?}");
        assert_eq!((handled[0]["call_id"].as_str(), handled[0]["action"].as_str()), (Some(call.as_str()), Some("accepted")));
        assert_eq!(alice.expect("call.accepted").await["call_id"], call);
        winner.request(json!({"type":"call.hangup","call_id":call})).await;
        alice.expect("call.left").await;
        alice.expect("call.ended").await;
        alice.barrier().await;
        laptop.barrier().await;
        phone.barrier().await;
    }
    assert_eq!(laptop_won + phone_won, rounds);
    println!("the laptop won {laptop_won} times, the phone {phone_won}");
}

#[tokio::test]
async fn nine_participants_allowed_ten_refused() {
    let server = TestServer::start().await;
    let mut host = server.client("host").await;
    let mut guests = Vec::new();
    for i in 1..=9 {
        guests.push(server.client(&format!("guest{i}")).await);
    }
    let refused = host.request(json!({"type":"call.invite","to":(1..=9).map(|i| format!("guest{i}")).collect::<Vec<_>>(),"media":"audio"})).await;
    assert_eq!(refused["code"], "too_many_participants");

    let mut eight: Vec<&mut Client> = guests.iter_mut().take(8).collect();
    let call = place_call(&mut host, &mut eight, "audio").await;
    for (i, guest) in guests.iter_mut().take(8).enumerate() {
        let ok = guest.request(json!({"type":"call.accept","call_id":call})).await;
        assert_eq!(ok["joined"].as_array().unwrap().len(), i + 1, "{ok}");
    }
    let full = host.request(json!({"type":"call.invite_more","call_id":call,"to":["guest9"]})).await;
    assert_eq!(full["code"], "too_many_participants");
    let active = guests[8].request(json!({"type":"calls.active"})).await;
    assert_eq!(active["calls"], json!([]));
}

#[tokio::test]
async fn invite_more_join_media_and_active_calls() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut carol = server.client("carol").await;
    let mut dave = server.client("dave").await;

    let call = place_call(&mut alice, &mut [&mut bob, &mut carol], "video").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;
    assert_eq!(carol.expect("call.accepted").await["user"], "bob", "ringing people hear who joined");
    carol.request(json!({"type":"call.reject","call_id":call})).await;
    alice.expect("call.rejected").await;
    bob.expect("call.rejected").await;

    // Bob (joined) invites dave; everyone in the call hears of it.
    let ok = bob.request(json!({"type":"call.invite_more","call_id":call,"to":["dave"]})).await;
    assert_eq!(ok["type"], "ok");
    assert_eq!(alice.expect("call.invited").await, json!({"type":"call.invited","call_id":call,"users":["dave"]}));
    assert_eq!(bob.expect("call.invited").await["users"], json!(["dave"]));
    let incoming = dave.expect("call.incoming").await;
    assert_eq!(incoming["invitees"], json!(["bob","carol","dave"]));
    let ok = dave.request(json!({"type":"call.accept","call_id":call})).await;
    assert_eq!(ok["joined"], json!(["alice","bob"]));
    alice.expect("call.accepted").await;
    bob.expect("call.accepted").await;

    // Carol can still join the connected call.
    let active = carol.request(json!({"type":"calls.active"})).await;
    assert_eq!(active["calls"][0]["call_id"], call);
    assert_eq!(active["calls"][0]["joined"], json!(["alice","bob","dave"]));
    let ok = carol.request(json!({"type":"call.join","call_id":call})).await;
    assert_eq!(ok["joined"], json!(["alice","bob","dave"]));
    for c in [&mut alice, &mut bob, &mut dave] {
        assert_eq!(c.expect("call.accepted").await["user"], "carol");
    }

    // Dave goes down to audio; everyone hears it.
    let ok = dave.request(json!({"type":"call.media","call_id":call,"media":"audio"})).await;
    assert_eq!(ok["type"], "ok");
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        assert_eq!(c.expect("call.media_changed").await, json!({"type":"call.media_changed","call_id":call,"media":"audio","by":"dave"}));
    }
    let refused = dave.request(json!({"type":"call.media","call_id":call,"media":"video"})).await;
    assert_eq!(refused["code"], "bad_request");

    // Leaving one by one: the call lives until one person is left.
    alice.request(json!({"type":"call.hangup","call_id":call})).await;
    for c in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(c.expect("call.left").await["user"], "alice");
    }
    bob.request(json!({"type":"call.hangup","call_id":call})).await;
    carol.request(json!({"type":"call.hangup","call_id":call})).await;
    dave.expect("call.left").await;
    dave.expect("call.left").await;
    assert_eq!(dave.expect("call.ended").await["reason"], "hangup");
}

#[tokio::test]
async fn only_people_in_the_call_may_act_on_it() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut eve = server.client("eve").await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    for request in [
        json!({"type":"call.accept","call_id":call}),
        json!({"type":"call.reject","call_id":call}),
        json!({"type":"call.cancel","call_id":call}),
        json!({"type":"call.hangup","call_id":call}),
        json!({"type":"call.join","call_id":call}),
        json!({"type":"call.invite_more","call_id":call,"to":["alice"]}),
        json!({"type":"call.media","call_id":call,"media":"audio"}),
        json!({"type":"signal","call_id":call,"to":"bob","payload":{"kind":"restart"}}),
    ] {
        let answer = eve.request(request.clone()).await;
        assert_eq!(answer["code"], "forbidden", "{request}");
    }
    assert_eq!(bob.request(json!({"type":"call.cancel","call_id":call})).await["code"], "forbidden");
    assert_eq!(alice.request(json!({"type":"call.accept","call_id":call})).await["code"], "forbidden");
    assert_eq!(alice.request(json!({"type":"call.hangup","call_id":"c_unknown"})).await["code"], "not_found");
    assert_eq!(alice.request(json!({"type":"call.invite","to":["nobody"],"media":"audio"})).await["code"], "not_found");
    assert_eq!(alice.request(json!({"type":"call.invite","to":["Bad Id"],"media":"audio"})).await["code"], "bad_request");
    // Stale: accepting a cancelled invitation.
    alice.request(json!({"type":"call.cancel","call_id":call})).await;
    bob.expect("call.cancelled").await;
    assert_eq!(bob.request(json!({"type":"call.accept","call_id":call})).await["code"], "invalid_state");
    assert!(bob.barrier().await.iter().all(|m| m["type"] == "call.ended"));
}

#[tokio::test]
async fn reconnect_within_grace_keeps_the_call_and_after_it_counts_as_left() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client_on("bob", "laptop").await;
    alice.request(json!({"type":"presence.subscribe","users":["bob"]})).await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;

    // Bob's network drops. The server notices (alice sees him go offline) and keeps him joined.
    bob.drop_connection().await;
    assert_eq!(alice.expect("presence").await["status"], "offline");
    let refused = alice.request(json!({"type":"signal","call_id":call,"to":"bob","payload":{"kind":"restart"}})).await;
    assert_eq!(refused["code"], "invalid_state", "signals are never queued");
    server.clock.advance(19_000);
    let mut bob = server.client_on("bob", "laptop").await;
    assert_eq!(bob.welcome["joined_calls"][0]["call_id"], call);
    assert_eq!(bob.welcome["joined_calls"][0]["joined"], json!(["alice","bob"]));
    assert_eq!(alice.expect("presence").await["status"], "online");
    server.clock.advance(5_000);
    assert!(alice.barrier().await.is_empty(), "bob must still be in the call");
    alice.send(json!({"type":"signal","call_id":call,"to":"bob","payload":{"kind":"restart"}})).await;
    assert_eq!(bob.expect("signal").await["payload"]["kind"], "restart");

    // This time he stays away past the grace.
    bob.drop_connection().await;
    assert_eq!(alice.expect("presence").await["status"], "offline");
    server.clock.advance(20_000);
    assert_eq!(alice.expect("call.left").await["user"], "bob");
    let ended = alice.expect("call.ended").await;
    assert_eq!((ended["reason"].as_str(), ended["duration_s"].as_u64()), (Some("failed"), Some(44)));
}

#[tokio::test]
async fn glare_leaves_one_call() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    // Both press call at once.
    let (a, b) = tokio::join!(
        alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio"})),
        bob.request(json!({"type":"call.invite","to":["alice"],"media":"audio"}))
    );
    let (a_call, b_call) = (a["call_id"].as_str().unwrap().to_owned(), b["call_id"].as_str().unwrap().to_owned());
    // The invite the server took first rings its callee; the callee's own invite then finds
    // the caller busy. The callee answers the ringing call and there is one call.
    let alice_events = alice.barrier().await;
    let bob_events = bob.barrier().await;
    let (mut callee, callee_events, mut caller, caller_events, call) = if alice_events.iter().any(|m| m["type"] == "call.incoming") {
        (alice, alice_events, bob, bob_events, b_call)
    } else {
        (bob, bob_events, alice, alice_events, a_call)
    };
    let kinds: Vec<&str> = callee_events.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["call.incoming", "call.busy", "call.ended"], "{callee_events:?}");
    assert!(caller_events.is_empty(), "{caller_events:?}");
    let ok = callee.request(json!({"type":"call.accept","call_id":call})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    assert_eq!(caller.expect("call.accepted").await["call_id"], call);
}

#[tokio::test]
async fn invite_rate_limit() {
    let config = Config { rate_limits: hark_server::config::RateLimits { invites_per_minute: 2, logins_per_minute: 10, ..Default::default() }, ..Config::default() };
    let server = TestServer::start_with(config).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    for _ in 0..2 {
        let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
        alice.request(json!({"type":"call.cancel","call_id":call})).await;
        alice.expect("call.ended").await;
        bob.expect("call.cancelled").await;
        bob.expect("call.ended").await;
    }
    let limited = alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio"})).await;
    assert_eq!(limited["code"], "rate_limited");
    server.clock.advance(30_000);
    let ok = alice.request(json!({"type":"call.invite","to":["bob"],"media":"audio"})).await;
    assert_eq!(ok["type"], "ok", "a token came back after half a minute");
}
