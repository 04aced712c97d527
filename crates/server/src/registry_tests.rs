//! Every call flow of the registry on virtual time: no clock, no sockets, no sleeps.

use super::*;
use serde_json::json;

const T0: i64 = 1_767_139_200_000;

struct World {
    reg: CallRegistry,
    now: i64,
    next_session: SessionId,
}

impl World {
    fn new() -> Self {
        World { reg: CallRegistry::new(RegistrySettings::default(), 0xabc), now: T0, next_session: 1 }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.reg.poll_output()).collect()
    }

    fn open(&mut self, user: &str, device: &str) -> (SessionId, Vec<CallSummary>, Vec<Output>) {
        let session = self.next_session;
        self.next_session += 1;
        let joined = self.reg.open_session(session, user, device);
        (session, joined, self.drain())
    }

    fn online(&mut self, user: &str) -> SessionId {
        self.open(user, &format!("{user}-laptop")).0
    }

    fn req(&mut self, session: SessionId, request: CallRequest) -> Vec<Output> {
        self.reg.handle_request(self.now, session, Some("r".into()), request);
        self.drain()
    }

    fn close(&mut self, session: SessionId) -> Vec<Output> {
        self.reg.close_session(self.now, session);
        self.drain()
    }

    /// Moves virtual time on, firing timers on the way in order.
    fn advance(&mut self, ms: i64) -> Vec<Output> {
        let until = self.now + ms;
        let mut out = Vec::new();
        while let Some(at) = self.reg.poll_timeout().filter(|at| *at <= until) {
            self.now = at;
            self.reg.handle_timeout(at);
            out.extend(self.drain());
        }
        self.now = until;
        out
    }

    fn invite(&mut self, caller: SessionId, to: &[&str]) -> (CallId, Vec<Output>) {
        let out = self.req(caller, invite(to, Media::Audio));
        (call_id_of(&out, caller), out)
    }
}

fn invite(to: &[&str], media: Media) -> CallRequest {
    CallRequest::Invite { to: to.iter().map(|s| s.to_string()).collect(), media, timeout_s: None, user_data: None, connect_early: false }
}

fn cid(call_id: &str) -> CallId {
    call_id.to_owned()
}

/// What `session` was sent, as wire types (`error:<code>` for errors).
fn kinds(out: &[Output], session: SessionId) -> Vec<String> {
    sent(out, session)
        .iter()
        .map(|m| match m {
            ServerMessage::Error { code, .. } => format!("error:{code}"),
            m => serde_json::to_value(m).unwrap()["type"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn sent(out: &[Output], session: SessionId) -> Vec<ServerMessage> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(s, m) if *s == session => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn records(out: &[Output]) -> Vec<(String, CallRecord)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Record { user, record } => Some((user.clone(), record.clone())),
            _ => None,
        })
        .collect()
}

fn record_of<'a>(recs: &'a [(String, CallRecord)], user: &str) -> &'a CallRecord {
    &recs.iter().find(|(u, _)| u == user).unwrap_or_else(|| panic!("no record for {user}: {recs:?}")).1
}

fn call_id_of(out: &[Output], session: SessionId) -> CallId {
    sent(out, session)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::Ok { body: OkBody { call_id: Some(id), .. }, .. } => Some(id),
            _ => None,
        })
        .expect("an ok with a call id")
}

fn ended(out: &[Output], session: SessionId) -> (EndReason, u64) {
    sent(out, session)
        .into_iter()
        .find_map(|m| match m {
            ServerMessage::CallEnded { reason, duration_s, .. } => Some((reason, duration_s)),
            _ => None,
        })
        .expect("call.ended")
}

#[test]
fn one_to_one_accept_signal_hangup() {
    let mut w = World::new();
    let alice = w.online("alice");
    let bob = w.online("bob");
    let (call, out) = w.invite(alice, &["bob"]);
    assert_eq!(kinds(&out, alice), ["ok"]);
    assert_eq!(
        sent(&out, bob),
        [ServerMessage::CallIncoming {
            call_id: call.clone(),
            from: "alice".into(),
            invitees: vec!["bob".into()],
            media: Media::Audio,
            user_data: None,
            expires_at: T0 + 30_000,
            connect_early: false,
        }]
    );

    w.advance(3_000);
    let out = w.req(bob, CallRequest::Accept { call_id: call.clone() });
    assert_eq!(
        sent(&out, bob),
        [ServerMessage::Ok { re: Some("r".into()), body: OkBody { joined: Some(vec!["alice".into()]), ..Default::default() } }]
    );
    assert_eq!(kinds(&out, alice), ["call.accepted"]);

    let offer = json!({"kind":"offer","sdp":"v=0"});
    let out = w.req(alice, CallRequest::Signal { call_id: call.clone(), to: "bob".into(), to_device: None, payload: offer.clone() });
    assert_eq!(kinds(&out, alice), ["ok"]);
    assert_eq!(sent(&out, bob), [ServerMessage::Signal { call_id: call.clone(), from: "alice".into(), from_device: None, payload: offer }]);

    w.advance(42_400);
    let out = w.req(bob, CallRequest::Hangup { call_id: call.clone(), gave_up: false });
    assert_eq!(kinds(&out, alice), ["call.left", "call.ended"]);
    assert_eq!(kinds(&out, bob), ["ok", "call.ended"]);
    assert!(matches!(&sent(&out, bob)[0], ServerMessage::Ok { body: OkBody { duration_s: Some(42), .. }, .. }));
    assert_eq!(ended(&out, alice), (EndReason::Hangup, 42));
    assert_eq!(ended(&out, bob), (EndReason::Hangup, 42));
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    let a = record_of(&recs, "alice");
    assert_eq!((a.direction, a.result, a.duration_s), (Direction::Outgoing, CallResult::Completed, 42));
    assert_eq!((a.started_at, a.connected_at, a.ended_at), (T0, Some(T0 + 3_000), T0 + 45_400));
    let b = record_of(&recs, "bob");
    assert_eq!((b.direction, b.result, b.duration_s), (Direction::Incoming, CallResult::Completed, 42));
    assert_eq!((a.end_reason, b.end_reason), (Some(EndReason::Hangup), Some(EndReason::Hangup)));
    assert_eq!(w.reg.live_calls(), 0);

    // Both are idle again: a new call rings at once.
    let (_, out) = w.invite(bob, &["alice"]);
    assert_eq!(kinds(&out, alice), ["call.incoming"]);
}

#[test]
fn reject_ends_a_one_to_one_call() {
    let mut w = World::new();
    let (alice, bob) = (w.online("alice"), w.online("bob"));
    let (call, _) = w.invite(alice, &["bob"]);
    let out = w.req(bob, CallRequest::Reject { call_id: call.clone() });
    assert_eq!(kinds(&out, alice), ["call.rejected", "call.ended"]);
    assert_eq!(kinds(&out, bob), ["ok", "call.ended"]);
    assert_eq!(ended(&out, alice), (EndReason::Rejected, 0));
    let recs = records(&out);
    assert_eq!(record_of(&recs, "alice").result, CallResult::Declined);
    assert_eq!(record_of(&recs, "bob").result, CallResult::Declined);
    // The ring timer is gone with the invitation.
    assert_eq!(w.reg.poll_timeout(), Some(T0 + ENDED_CALL_MEMORY_MS));
}

#[test]
fn cancel_stops_ringing_everywhere() {
    let mut w = World::new();
    let alice = w.online("alice");
    let bob1 = w.open("bob", "laptop").0;
    let bob2 = w.open("bob", "phone").0;
    let (call, _) = w.invite(alice, &["bob"]);
    let out = w.req(alice, CallRequest::Cancel { call_id: call.clone() });
    assert_eq!(kinds(&out, alice), ["ok", "call.ended"]);
    for bob in [bob1, bob2] {
        assert_eq!(kinds(&out, bob), ["call.cancelled", "call.ended"]);
    }
    assert_eq!(ended(&out, bob1), (EndReason::Cancelled, 0));
    let recs = records(&out);
    assert_eq!(record_of(&recs, "alice").result, CallResult::Cancelled);
    assert_eq!(record_of(&recs, "bob").result, CallResult::Missed);
}

#[test]
fn callers_hangup_before_accept_is_a_cancel() {
    let mut w = World::new();
    let (alice, bob) = (w.online("alice"), w.online("bob"));
    let (call, _) = w.invite(alice, &["bob"]);
    let out = w.req(alice, CallRequest::Hangup { call_id: call, gave_up: false });
    assert_eq!(kinds(&out, bob), ["call.cancelled", "call.ended"]);
}

#[test]
fn ring_timeout_on_virtual_time() {
    let mut w = World::new();
    let (alice, bob) = (w.online("alice"), w.online("bob"));
    let out = w.req(alice, CallRequest::Invite { to: vec!["bob".into()], media: Media::Video, timeout_s: Some(5), user_data: Some("ticket 7".into()), connect_early: false });
    let call = call_id_of(&out, alice);
    assert!(matches!(&sent(&out, bob)[0], ServerMessage::CallIncoming { expires_at, user_data: Some(d), .. } if *expires_at == T0 + 5_000 && d == "ticket 7"));
    assert!(w.advance(4_999).is_empty());
    let out = w.advance(1);
    assert_eq!(kinds(&out, bob), ["call.timeout"]);
    assert_eq!(kinds(&out, alice), ["call.no_answer", "call.ended"]);
    assert_eq!(ended(&out, alice), (EndReason::NoAnswer, 0));
    let recs = records(&out);
    assert_eq!(record_of(&recs, "alice").result, CallResult::NoAnswer);
    assert_eq!(record_of(&recs, "bob").result, CallResult::Missed);
    // A late accept is told the invitation is over.
    let out = w.req(bob, CallRequest::Accept { call_id: call });
    assert_eq!(kinds(&out, bob), ["error:invalid_state"]);
}

#[test]
fn bad_invites_change_nothing() {
    let mut w = World::new();
    let alice = w.online("alice");
    w.online("bob");
    for (request, code) in [
        (invite(&[], Media::Audio), "error:bad_request"),
        (invite(&["alice"], Media::Audio), "error:bad_request"),
        (CallRequest::Invite { to: vec!["bob".into()], media: Media::Audio, timeout_s: Some(4), user_data: None, connect_early: false }, "error:bad_request"),
        (CallRequest::Invite { to: vec!["bob".into()], media: Media::Audio, timeout_s: Some(121), user_data: None, connect_early: false }, "error:bad_request"),
    ] {
        let out = w.req(alice, request);
        assert_eq!(kinds(&out, alice), [code]);
        assert!(records(&out).is_empty());
    }
    assert_eq!(w.reg.live_calls(), 0);
}

#[test]
fn busy_callee_is_not_disturbed() {
    let mut w = World::new();
    let (alice, bob, carol) = (w.online("alice"), w.online("bob"), w.online("carol"));
    let (call, _) = w.invite(alice, &["bob"]);
    w.req(bob, CallRequest::Accept { call_id: call });
    let (_, out) = w.invite(carol, &["bob"]);
    assert_eq!(kinds(&out, carol), ["ok", "call.busy", "call.ended"]);
    assert_eq!(ended(&out, carol), (EndReason::Busy, 0));
    assert!(sent(&out, bob).is_empty(), "bob was disturbed: {out:?}");
    assert!(sent(&out, alice).is_empty());
    let recs = records(&out);
    assert_eq!(record_of(&recs, "carol").result, CallResult::Busy);
    assert_eq!(record_of(&recs, "bob").result, CallResult::Busy);
    // Ringing counts as busy too.
    let (dave, erin) = (w.online("dave"), w.online("erin"));
    w.invite(dave, &["carol"]);
    let (_, out) = w.invite(erin, &["carol"]);
    assert_eq!(kinds(&out, erin), ["ok", "call.busy", "call.ended"]);
    // Someone already in a call cannot place another.
    let out = w.req(alice, invite(&["erin"], Media::Audio));
    assert_eq!(kinds(&out, alice), ["error:invalid_state"]);
}

#[test]
fn glare_resolves_to_one_call() {
    let mut w = World::new();
    let (alice, bob) = (w.online("alice"), w.online("bob"));
    let (first, out) = w.invite(alice, &["bob"]);
    assert_eq!(kinds(&out, bob), ["call.incoming"]);
    // Bob called alice at the same moment: alice is in a live call, so bob's attempt is busy...
    let (_, out) = w.invite(bob, &["alice"]);
    assert_eq!(kinds(&out, bob), ["ok", "call.busy", "call.ended"]);
    assert!(sent(&out, alice).is_empty());
    // ...and alice's invitation still rings for him.
    let out = w.req(bob, CallRequest::Accept { call_id: first });
    assert_eq!(kinds(&out, alice), ["call.accepted"]);
    assert_eq!(w.reg.live_calls(), 1);
}

#[test]
fn multi_device_ringing_and_handled_elsewhere() {
    let mut w = World::new();
    let alice = w.online("alice");
    let bob_laptop = w.open("bob", "laptop").0;
    let bob_phone = w.open("bob", "phone").0;
    let (call, out) = w.invite(alice, &["bob"]);
    assert_eq!(kinds(&out, bob_laptop), ["call.incoming"]);
    assert_eq!(kinds(&out, bob_phone), ["call.incoming"]);
    let out = w.req(bob_phone, CallRequest::Accept { call_id: call.clone() });
    assert_eq!(kinds(&out, bob_phone), ["ok"]);
    assert_eq!(sent(&out, bob_laptop), [ServerMessage::CallHandledElsewhere { call_id: call.clone(), action: HandledAction::Accepted }]);
    // Signals go to the accepting device only.
    let out = w.req(alice, CallRequest::Signal { call_id: call.clone(), to: "bob".into(), to_device: None, payload: json!({"kind":"offer","sdp":"x"}) });
    assert_eq!(kinds(&out, bob_phone), ["signal"]);
    assert!(sent(&out, bob_laptop).is_empty());
    // The other device may not signal in the call, nor hang it up from under the phone.
    let out = w.req(bob_laptop, CallRequest::Signal { call_id: call.clone(), to: "alice".into(), to_device: None, payload: json!({"kind":"restart"}) });
    assert_eq!(kinds(&out, bob_laptop), ["error:forbidden"]);
    let out = w.req(bob_laptop, CallRequest::Hangup { call_id: call, gave_up: false });
    assert_eq!(kinds(&out, bob_laptop), ["error:forbidden"]);
}

#[test]
fn reject_on_one_device_tells_the_others() {
    let mut w = World::new();
    let alice = w.online("alice");
    let bob_laptop = w.open("bob", "laptop").0;
    let bob_phone = w.open("bob", "phone").0;
    let (call, _) = w.invite(alice, &["bob"]);
    let out = w.req(bob_laptop, CallRequest::Reject { call_id: call.clone() });
    assert_eq!(sent(&out, bob_phone)[0], ServerMessage::CallHandledElsewhere { call_id: call, action: HandledAction::Rejected });
}

#[test]
fn pending_invitation_is_delivered_at_sign_in_until_it_expires() {
    let mut w = World::new();
    let alice = w.online("alice");
    let (call, out) = w.invite(alice, &["bob"]);
    assert!(out.iter().all(|o| !matches!(o, Output::Send(s, _) if *s != alice)));
    w.advance(10_000);
    let (bob, _, out) = w.open("bob", "laptop");
    assert!(matches!(&sent(&out, bob)[..], [ServerMessage::CallIncoming { call_id, expires_at, .. }] if *call_id == call && *expires_at == T0 + 30_000));
    w.close(bob);
    w.advance(20_000);
    let (bob, _, out) = w.open("bob", "laptop");
    assert!(sent(&out, bob).is_empty(), "an expired invitation was delivered: {out:?}");
}

#[test]
fn accept_cancel_race_has_exactly_one_winner() {
    for accept_first in [true, false] {
        let mut w = World::new();
        let (alice, bob) = (w.online("alice"), w.online("bob"));
        let (call, _) = w.invite(alice, &["bob"]);
        let (first, second) = if accept_first {
            (w.req(bob, CallRequest::Accept { call_id: call.clone() }), w.req(alice, CallRequest::Cancel { call_id: call.clone() }))
        } else {
            (w.req(alice, CallRequest::Cancel { call_id: call.clone() }), w.req(bob, CallRequest::Accept { call_id: call.clone() }))
        };
        let (winner, loser) = if accept_first { (bob, alice) } else { (alice, bob) };
        assert_eq!(kinds(&first, winner)[0], "ok");
        assert_eq!(kinds(&second, loser), ["error:invalid_state"]);
        assert_eq!(w.reg.live_calls(), usize::from(accept_first));
    }
}

#[test]
fn nine_people_fit_ten_do_not() {
    let mut w = World::new();
    let alice = w.online("alice");
    let eight: Vec<String> = (1..=8).map(|i| format!("u{i}")).collect();
    let nine: Vec<String> = (1..=9).map(|i| format!("v{i}")).collect();
    let out = w.req(alice, CallRequest::Invite { to: nine, media: Media::Audio, timeout_s: None, user_data: None, connect_early: false });
    assert_eq!(kinds(&out, alice), ["error:too_many_participants"]);
    let out = w.req(alice, CallRequest::Invite { to: eight, media: Media::Audio, timeout_s: None, user_data: None, connect_early: false });
    let call = call_id_of(&out, alice);
    let out = w.req(alice, CallRequest::InviteMore { call_id: call, to: vec!["w1".into()] });
    assert_eq!(kinds(&out, alice), ["error:too_many_participants"]);
}

#[test]
fn group_call_invite_more_join_and_leave() {
    let mut w = World::new();
    let (alice, bob, carol, dave) = (w.online("alice"), w.online("bob"), w.online("carol"), w.online("dave"));
    let (call, _) = w.invite(alice, &["bob", "carol"]);
    w.req(bob, CallRequest::Accept { call_id: call.clone() });
    let out = w.req(carol, CallRequest::Reject { call_id: call.clone() });
    assert_eq!(kinds(&out, alice), ["call.rejected"]);
    assert_eq!(kinds(&out, bob), ["call.rejected"]);
    assert!(!kinds(&out, carol).contains(&"call.ended".to_string()), "the call goes on");

    // Bob invites dave; everyone in the call hears of it.
    let out = w.req(bob, CallRequest::InviteMore { call_id: call.clone(), to: vec!["dave".into()] });
    assert_eq!(kinds(&out, bob), ["ok", "call.invited"]);
    assert_eq!(kinds(&out, alice), ["call.invited"]);
    assert!(matches!(&sent(&out, dave)[..], [ServerMessage::CallIncoming { invitees, .. }] if invitees == &["bob", "carol", "dave"]));
    let out = w.req(dave, CallRequest::Accept { call_id: call.clone() });
    assert!(matches!(&sent(&out, dave)[0], ServerMessage::Ok { body: OkBody { joined: Some(j), .. }, .. } if j == &["alice", "bob"]));

    // Carol changes her mind: the call is listed as joinable and she joins it.
    let out = w.req(carol, CallRequest::Active);
    assert!(matches!(&sent(&out, carol)[0], ServerMessage::Ok { body: OkBody { calls: Some(c), .. }, .. } if c.len() == 1 && c[0].joined == ["alice", "bob", "dave"]));
    let out = w.req(carol, CallRequest::Join { call_id: call.clone() });
    assert!(matches!(&sent(&out, carol)[0], ServerMessage::Ok { body: OkBody { joined: Some(j), .. }, .. } if j == &["alice", "bob", "dave"]));
    for s in [alice, bob, dave] {
        assert_eq!(kinds(&out, s), ["call.accepted"]);
    }

    // People leave one by one; the call ends when one is left.
    w.advance(10_000);
    let out = w.req(alice, CallRequest::Hangup { call_id: call.clone(), gave_up: false });
    assert_eq!(kinds(&out, bob), ["call.left"]);
    assert_eq!(record_of(&records(&out), "alice").result, CallResult::Completed);
    w.req(bob, CallRequest::Hangup { call_id: call.clone(), gave_up: false });
    let out = w.req(carol, CallRequest::Hangup { call_id: call.clone(), gave_up: false });
    assert_eq!(kinds(&out, dave), ["call.left", "call.ended"]);
    assert_eq!(ended(&out, dave), (EndReason::Hangup, 10));
    let recs = records(&out);
    let carol_record = record_of(&recs, "carol");
    assert_eq!((carol_record.result, carol_record.duration_s), (CallResult::Completed, 10));
}

#[test]
fn a_client_that_gives_up_on_its_media_ends_the_call_failed() {
    let mut w = World::new();
    let (alice, bob, carol) = (w.online("alice"), w.online("bob"), w.online("carol"));
    let (call, _) = w.invite(alice, &["bob"]);
    w.req(bob, CallRequest::Accept { call_id: call.clone() });
    w.advance(30_000);
    let out = w.req(bob, CallRequest::Hangup { call_id: call.clone(), gave_up: true });
    assert_eq!(ended(&out, alice), (EndReason::Failed, 30));
    assert_eq!(ended(&out, bob), (EndReason::Failed, 30));
    let recs = records(&out);
    for user in ["alice", "bob"] {
        let record = record_of(&recs, user);
        assert_eq!((record.result, record.end_reason), (CallResult::Completed, Some(EndReason::Failed)), "{user}");
    }
    // The other side giving up too, a moment later, finds the call over.
    assert_eq!(kinds(&w.req(alice, CallRequest::Hangup { call_id: call, gave_up: true }), alice), ["error:invalid_state"]);

    // In a group, the one who gives up leaves (their part failed) and the call goes on.
    let (call, _) = w.invite(alice, &["bob", "carol"]);
    w.req(bob, CallRequest::Accept { call_id: call.clone() });
    w.req(carol, CallRequest::Accept { call_id: call.clone() });
    let out = w.req(carol, CallRequest::Hangup { call_id: call.clone(), gave_up: true });
    assert_eq!(kinds(&out, alice), ["call.left"]);
    assert_eq!(record_of(&records(&out), "carol").end_reason, Some(EndReason::Failed));
    let out = w.req(alice, CallRequest::Hangup { call_id: call, gave_up: false });
    assert_eq!(ended(&out, bob).0, EndReason::Hangup);
    assert_eq!(record_of(&records(&out), "bob").end_reason, Some(EndReason::Hangup));
    // Nobody connected, nothing to say how it ended.
    let (call, _) = w.invite(alice, &["bob"]);
    let out = w.req(bob, CallRequest::Reject { call_id: call });
    assert_eq!(record_of(&records(&out), "bob").end_reason, None);
}

#[test]
fn join_rules() {
    let mut w = World::new();
    let (alice, bob, carol, eve) = (w.online("alice"), w.online("bob"), w.online("carol"), w.online("eve"));
    let (call, _) = w.invite(alice, &["bob", "carol"]);
    assert_eq!(kinds(&w.req(bob, CallRequest::Join { call_id: call.clone() }), bob), ["error:invalid_state"], "ringing: accept instead");
    w.req(bob, CallRequest::Reject { call_id: call.clone() });
    assert_eq!(kinds(&w.req(bob, CallRequest::Join { call_id: call.clone() }), bob), ["error:invalid_state"], "not connected yet");
    assert_eq!(kinds(&w.req(eve, CallRequest::Join { call_id: call.clone() }), eve), ["error:forbidden"]);
    w.req(carol, CallRequest::Accept { call_id: call.clone() });
    assert_eq!(kinds(&w.req(bob, CallRequest::Join { call_id: call.clone() }), bob), ["ok"]);
    assert_eq!(kinds(&w.req(bob, CallRequest::Join { call_id: call }), bob), ["error:invalid_state"]);
}

#[test]
fn media_downgrade() {
    let mut w = World::new();
    let (alice, bob) = (w.online("alice"), w.online("bob"));
    let out = w.req(alice, invite(&["bob"], Media::Video));
    let call = call_id_of(&out, alice);
    w.req(bob, CallRequest::Accept { call_id: call.clone() });
    let out = w.req(bob, CallRequest::Media { call_id: call.clone(), media: Media::Video });
    assert_eq!(kinds(&out, bob), ["error:bad_request"]);
    let out = w.req(bob, CallRequest::Media { call_id: call.clone(), media: Media::Audio });
    assert_eq!(kinds(&out, bob), ["ok", "call.media_changed"]);
    assert_eq!(sent(&out, alice), [ServerMessage::CallMediaChanged { call_id: call.clone(), media: Media::Audio, by: "bob".into() }]);
    let out = w.req(alice, CallRequest::Hangup { call_id: call, gave_up: false });
    assert_eq!(record_of(&records(&out), "bob").media, Media::Audio);
}

#[test]
fn only_people_in_the_call_may_act() {
    let mut w = World::new();
    let (alice, bob, eve) = (w.online("alice"), w.online("bob"), w.online("eve"));
    let (call, _) = w.invite(alice, &["bob"]);
    for request in [
        CallRequest::Hangup { call_id: call.clone(), gave_up: false },
        CallRequest::Cancel { call_id: call.clone() },
        CallRequest::Accept { call_id: call.clone() },
        CallRequest::Reject { call_id: call.clone() },
        CallRequest::InviteMore { call_id: call.clone(), to: vec!["bob".into()] },
        CallRequest::Media { call_id: call.clone(), media: Media::Audio },
        CallRequest::Signal { call_id: call.clone(), to: "bob".into(), to_device: None, payload: json!({}) },
    ] {
        assert_eq!(kinds(&w.req(eve, request.clone()), eve), ["error:forbidden"], "{request:?}");
    }
    assert_eq!(kinds(&w.req(bob, CallRequest::Cancel { call_id: call.clone() }), bob), ["error:forbidden"], "invitees cannot cancel");
    assert_eq!(kinds(&w.req(alice, CallRequest::Accept { call_id: call.clone() }), alice), ["error:forbidden"], "callers cannot accept");
    assert_eq!(kinds(&w.req(bob, CallRequest::Signal { call_id: call.clone(), to: "alice".into(), to_device: None, payload: json!({}) }), bob), ["error:forbidden"], "ringing people cannot signal");
    assert_eq!(kinds(&w.req(alice, CallRequest::Signal { call_id: call.clone(), to: "bob".into(), to_device: None, payload: json!({}) }), alice), ["error:invalid_state"], "bob has not joined");
    assert_eq!(kinds(&w.req(alice, CallRequest::Hangup { call_id: cid("c_nope"), gave_up: false }), alice), ["error:not_found"]);
    // After the call ended, eve still gets not_found and bob gets invalid_state.
    w.req(alice, CallRequest::Cancel { call_id: call.clone() });
    assert_eq!(kinds(&w.req(eve, CallRequest::Accept { call_id: call.clone() }), eve), ["error:not_found"]);
    assert_eq!(kinds(&w.req(bob, CallRequest::Accept { call_id: call.clone() }), bob), ["error:invalid_state"]);
    w.advance(ENDED_CALL_MEMORY_MS);
    assert_eq!(kinds(&w.req(bob, CallRequest::Accept { call_id: call }), bob), ["error:not_found"]);
}

#[test]
fn reconnect_within_grace_keeps_the_call() {
    let mut w = World::new();
    let alice = w.online("alice");
    let (bob, _, _) = w.open("bob", "laptop");
    let (call, _) = w.invite(alice, &["bob"]);
    w.req(bob, CallRequest::Accept { call_id: call.clone() });
    assert!(w.close(bob).iter().all(|o| !matches!(o, Output::Record { .. })));
    // While bob is away, signals to him are refused, not queued.
    let out = w.req(alice, CallRequest::Signal { call_id: call.clone(), to: "bob".into(), to_device: None, payload: json!({}) });
    assert_eq!(kinds(&out, alice), ["error:invalid_state"]);
    w.advance(19_000);
    let (bob2, joined, out) = w.open("bob", "laptop");
    assert_eq!(joined.len(), 1);
    assert_eq!((joined[0].call_id.as_str(), joined[0].joined.clone()), (call.as_str(), vec!["alice".to_string(), "bob".to_string()]));
    assert!(sent(&out, bob2).is_empty());
    let out = w.advance(5_000);
    assert!(out.is_empty(), "the old grace timer fired: {out:?}");
    let out = w.req(alice, CallRequest::Signal { call_id: call, to: "bob".into(), to_device: None, payload: json!({"kind":"restart"}) });
    assert_eq!(kinds(&out, bob2), ["signal"]);
}

#[test]
fn away_past_the_grace_counts_as_left() {
    let mut w = World::new();
    let alice = w.online("alice");
    let bob = w.online("bob");
    let (call, _) = w.invite(alice, &["bob"]);
    w.req(bob, CallRequest::Accept { call_id: call });
    w.advance(60_000);
    w.close(bob);
    assert!(w.advance(19_999).is_empty());
    let out = w.advance(1);
    assert_eq!(kinds(&out, alice), ["call.left", "call.ended"]);
    assert_eq!(ended(&out, alice), (EndReason::Failed, 80));
    let recs = records(&out);
    assert_eq!(record_of(&recs, "bob").duration_s, 80);
    assert_eq!(record_of(&recs, "alice").result, CallResult::Completed);
}

#[test]
fn same_device_signing_in_again_replaces_the_old_session() {
    let mut w = World::new();
    let (old, _, _) = w.open("bob", "laptop");
    let (_, _, out) = w.open("bob", "laptop");
    assert!(out.contains(&Output::Close { session: old, reason: KickReason::Replaced }));
    // A close of the replaced socket later changes nothing.
    assert!(w.close(old).is_empty());
    assert!(w.reg.is_online("bob"));
}

#[test]
fn presence_events() {
    let mut w = World::new();
    let carol = w.online("carol");
    w.reg.subscribe(carol, &["bob".into()]);
    let (bob1, _, out) = w.open("bob", "laptop");
    assert_eq!(sent(&out, carol), [ServerMessage::Presence { user: "bob".into(), status: PresenceStatus::Online }]);
    let (bob2, _, out) = w.open("bob", "phone");
    assert!(sent(&out, carol).is_empty(), "already online");
    assert!(sent(&w.close(bob1), carol).is_empty(), "still online on the phone");
    assert_eq!(sent(&w.close(bob2), carol), [ServerMessage::Presence { user: "bob".into(), status: PresenceStatus::Offline }]);
    assert_eq!(presence(w.reg.is_online("bob"), true), PresenceStatus::Offline);
    assert_eq!(presence(w.reg.is_online("carol"), true), PresenceStatus::Online);
    assert_eq!(presence(w.reg.is_online("zed"), false), PresenceStatus::Unregistered);
    // A closed session stops hearing.
    w.close(carol);
    let (_, _, out) = w.open("bob", "laptop");
    assert!(sent(&out, carol).is_empty());
}

#[test]
fn group_ring_timeout_with_one_answer_keeps_the_call() {
    let mut w = World::new();
    let (alice, bob, _carol) = (w.online("alice"), w.online("bob"), w.online("carol"));
    let (call, _) = w.invite(alice, &["bob", "carol"]);
    w.req(bob, CallRequest::Accept { call_id: call });
    let out = w.advance(30_000);
    assert_eq!(kinds(&out, alice), ["call.no_answer"]);
    assert_eq!(kinds(&out, bob), ["call.no_answer"]);
    assert_eq!(w.reg.live_calls(), 1);
}

#[test]
fn a_service_account_serves_several_calls_at_once() {
    let settings = RegistrySettings { service_accounts: ["echo".to_string()].into(), ..RegistrySettings::default() };
    let mut w = World { reg: CallRegistry::new(settings, 1), now: T0, next_session: 1 };
    let echo1 = w.open("echo", "echo-1").0;
    let echo2 = w.open("echo", "echo-2").0;
    let (alice, bob) = (w.online("alice"), w.online("bob"));
    let (first, _) = w.invite(alice, &["echo"]);
    assert_eq!(kinds(&w.req(echo1, CallRequest::Accept { call_id: first }), echo1), ["ok"]);
    // Echo is in a call, yet bob's call rings it rather than finding it busy.
    let (second, out) = w.invite(bob, &["echo"]);
    assert_eq!(kinds(&out, bob), ["ok"]);
    assert_eq!(kinds(&out, echo2), ["call.incoming"]);
    // The session already in a call may not take a second one; another session may.
    assert_eq!(kinds(&w.req(echo1, CallRequest::Accept { call_id: second.clone() }), echo1), ["error:invalid_state"]);
    assert_eq!(kinds(&w.req(echo2, CallRequest::Accept { call_id: second }), echo2), ["ok"]);
    assert_eq!(w.reg.live_calls(), 2);
}

#[test]
fn a_removed_account_is_closed_everywhere_and_leaves_its_calls() {
    let mut w = World::new();
    let carol = w.online("carol");
    w.reg.subscribe(carol, &["alice".into()]);
    let alice_laptop = w.online("alice");
    let (alice_phone, _, _) = w.open("alice", "phone");
    let bob = w.online("bob");
    let dave = w.online("dave");
    // alice rings in dave's call, and is joined in a call she placed to bob meanwhile.
    let (ringing, _) = w.invite(dave, &["alice"]);
    let (call, _) = w.invite(alice_laptop, &["bob"]);
    w.req(bob, CallRequest::Accept { call_id: call.clone() });
    w.advance(5_000);

    w.reg.remove_account(w.now, "alice");
    let out = w.drain();
    assert!(out.contains(&Output::Close { session: alice_laptop, reason: KickReason::AccountRemoved }));
    assert!(out.contains(&Output::Close { session: alice_phone, reason: KickReason::AccountRemoved }));
    assert_eq!(kinds(&out, bob), ["call.left", "call.ended"]);
    assert_eq!(ended(&out, bob), (EndReason::Hangup, 5));
    assert_eq!(kinds(&out, dave), ["call.rejected", "call.ended"]);
    assert_eq!(ended(&out, dave), (EndReason::Rejected, 0));
    assert_eq!(sent(&out, carol), [ServerMessage::Presence { user: "alice".into(), status: PresenceStatus::Unregistered }]);
    let recs = records(&out);
    assert_eq!(recs.iter().filter(|(u, _)| u == "alice").count(), 2, "a record for each of alice's calls: {recs:?}");
    assert!(!w.reg.is_online("alice"));
    assert_eq!(w.reg.live_calls(), 0);
    let out = w.req(dave, CallRequest::Hangup { call_id: ringing, gave_up: false });
    assert_eq!(kinds(&out, dave), ["error:invalid_state"], "dave's call ended with alice's refusal");
    // Nothing of hers is left to fire or to answer.
    assert!(w.close(alice_laptop).is_empty());
    assert!(w.advance(120_000).iter().all(|o| !matches!(o, Output::Send(..) | Output::Record { .. })));
    assert!(w.req(alice_phone, CallRequest::Invite { to: vec!["bob".into()], media: Media::Audio, timeout_s: None, user_data: None, connect_early: false }).is_empty());
}

#[test]
fn a_removed_account_away_in_its_grace_is_not_waited_for() {
    let mut w = World::new();
    let alice = w.online("alice");
    let bob = w.online("bob");
    let (call, _) = w.invite(alice, &["bob"]);
    w.req(bob, CallRequest::Accept { call_id: call });
    w.close(bob);
    w.reg.remove_account(w.now, "bob");
    let out = w.drain();
    assert_eq!(kinds(&out, alice), ["call.left", "call.ended"]);
    assert!(out.iter().all(|o| !matches!(o, Output::Close { .. })), "an away session has no socket to close");
    assert!(w.advance(30_000).is_empty(), "its grace timer is gone");
}

#[test]
fn calls_active_lists_at_most_the_newest_twenty() {
    let mut w = World::new();
    let alice = w.online("alice");
    for n in 0..(MAX_ACTIVE_CALLS_LISTED + 5) {
        let (caller, callee) = (w.online(&format!("caller{n}")), w.online(&format!("callee{n}")));
        let (call, _) = w.invite(caller, &[&format!("callee{n}"), "alice"]);
        w.req(callee, CallRequest::Accept { call_id: call.clone() });
        w.req(alice, CallRequest::Reject { call_id: call });
        w.advance(1_000);
    }
    let out = w.req(alice, CallRequest::Active);
    let answers = sent(&out, alice);
    let [ServerMessage::Ok { body: OkBody { calls: Some(calls), .. }, .. }] = answers.as_slice() else { panic!("{out:?}") };
    assert_eq!(calls.len(), MAX_ACTIVE_CALLS_LISTED);
    let oldest_listed = calls.iter().filter_map(|c| c.connected_at).min().unwrap();
    assert_eq!(oldest_listed, T0 + 5_000, "the five oldest calls are the ones left out");
}

fn early_invite(to: &[&str]) -> CallRequest {
    CallRequest::Invite { to: to.iter().map(|s| s.to_string()).collect(), media: Media::Audio, timeout_s: None, user_data: None, connect_early: true }
}

fn signal(call: &str, to: &str, to_device: Option<&str>, payload: &serde_json::Value) -> CallRequest {
    CallRequest::Signal { call_id: cid(call), to: to.into(), to_device: to_device.map(str::to_owned), payload: payload.clone() }
}

#[test]
fn in_a_call_placed_to_connect_early_ringing_devices_and_the_caller_signal_each_other_by_device() {
    let mut w = World::new();
    let alice = w.online("alice");
    let (laptop, _, _) = w.open("bob", "laptop");
    let (phone, _, _) = w.open("bob", "phone");
    let carol = w.online("carol");
    let out = w.req(alice, early_invite(&["bob"]));
    let call = call_id_of(&out, alice);
    assert!(matches!(&sent(&out, phone)[..], [ServerMessage::CallIncoming { connect_early: true, .. }]));

    // A ringing device asks the caller for an offer; the caller learns which device asked.
    let ready = json!({"kind":"ready"});
    let out = w.req(phone, signal(&call, "alice", None, &ready));
    assert_eq!(kinds(&out, phone), ["ok"]);
    assert_eq!(sent(&out, alice), [ServerMessage::Signal { call_id: call.clone(), from: "bob".into(), from_device: Some("phone".into()), payload: ready.clone() }]);

    // The caller reaches that one device by name, and no other.
    let offer = json!({"kind":"offer","sdp":"v=0"});
    let out = w.req(alice, signal(&call, "bob", Some("laptop"), &offer));
    assert_eq!(kinds(&out, alice), ["ok"]);
    assert_eq!(sent(&out, laptop), [ServerMessage::Signal { call_id: call.clone(), from: "alice".into(), from_device: Some("alice-laptop".into()), payload: offer.clone() }]);
    assert!(sent(&out, phone).is_empty());
    // Not without naming the device, not a device that does not ring, and not for strangers.
    assert_eq!(kinds(&w.req(alice, signal(&call, "bob", None, &offer)), alice), ["error:invalid_state"]);
    assert_eq!(kinds(&w.req(alice, signal(&call, "bob", Some("tablet"), &offer)), alice), ["error:invalid_state"]);
    assert_eq!(kinds(&w.req(carol, signal(&call, "bob", Some("laptop"), &offer)), carol), ["error:forbidden"]);
    // A ringing device reaches the people joined only.
    assert_eq!(kinds(&w.req(phone, signal(&call, "carol", None, &ready)), phone), ["error:invalid_state"]);

    // The laptop answers: the caller is told which device, to keep its connection.
    let out = w.req(laptop, CallRequest::Accept { call_id: call.clone() });
    assert_eq!(sent(&out, alice), [ServerMessage::CallAccepted { call_id: call.clone(), user: "bob".into(), device: Some("laptop".into()) }]);
    assert_eq!(kinds(&out, phone), ["call.handled_elsewhere"]);
    // The phone no longer rings, so it no longer signals; the laptop, joined, does.
    let candidate = json!({"kind":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdp_mid":"0"});
    assert_eq!(kinds(&w.req(phone, signal(&call, "alice", None, &candidate)), phone), ["error:forbidden"]);
    let out = w.req(laptop, signal(&call, "alice", None, &candidate));
    assert_eq!(sent(&out, alice), [ServerMessage::Signal { call_id: call.clone(), from: "bob".into(), from_device: Some("laptop".into()), payload: candidate }]);
}

#[test]
fn a_call_placed_without_connect_early_keeps_ringing_devices_out_of_signalling() {
    let mut w = World::new();
    let alice = w.online("alice");
    let (laptop, _, _) = w.open("bob", "laptop");
    let (call, out) = w.invite(alice, &["bob"]);
    assert!(matches!(&sent(&out, laptop)[..], [ServerMessage::CallIncoming { connect_early: false, .. }]));
    let ready = json!({"kind":"ready"});
    assert_eq!(kinds(&w.req(laptop, signal(&call, "alice", None, &ready)), laptop), ["error:forbidden"]);
    let offer = json!({"kind":"offer","sdp":"v=0"});
    assert_eq!(kinds(&w.req(alice, signal(&call, "bob", Some("laptop"), &offer)), alice), ["error:invalid_state"]);
    // Nor does a v1 call name devices once answered.
    let out = w.req(laptop, CallRequest::Accept { call_id: call.clone() });
    assert_eq!(sent(&out, alice), [ServerMessage::CallAccepted { call_id: call.clone(), user: "bob".into(), device: None }]);
    let out = w.req(alice, signal(&call, "bob", Some("laptop"), &offer));
    assert_eq!(sent(&out, laptop), [ServerMessage::Signal { call_id: call.clone(), from: "alice".into(), from_device: None, payload: offer }]);
}
