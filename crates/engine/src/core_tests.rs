//! The call core on virtual time: the API table, every flow, glare and the accept/cancel race.

use super::*;
use serde_json::json;

const T0: i64 = 1_000_000;

struct Rig {
    core: CallCore,
    now: i64,
}

impl Rig {
    fn new(me: &str) -> Self {
        Rig { core: CallCore::new(me), now: T0 }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.core.poll_output()).collect()
    }

    fn cmd(&mut self, command: Command) -> Vec<Output> {
        self.core.command(self.now, command).expect("allowed");
        self.drain()
    }

    fn server(&mut self, message: serde_json::Value) -> Vec<Output> {
        self.core.handle_server(self.now, serde_json::from_value(message).expect("a server message"));
        self.drain()
    }

    /// The id of the last request sent.
    fn last_request(out: &[Output]) -> (String, ClientMessage) {
        out.iter()
            .rev()
            .find_map(|o| match o {
                Output::Send(ClientFrame { id: Some(id), message }) => Some((id.clone(), message.clone())),
                _ => None,
            })
            .expect("a request")
    }

    /// Places a call to `to` and has the server name it `c1`.
    fn dialing(&mut self, to: &[&str]) -> Vec<Output> {
        let out = self.cmd(call(to));
        let (id, _) = Rig::last_request(&out);
        self.server(json!({"type":"ok","re":id,"call_id":"c1"}))
    }

    fn ringing_in(&mut self, from: &str) -> Vec<Output> {
        self.server(json!({"type":"call.incoming","call_id":"c1","from":from,"invitees":[self.core.me],"media":"audio","user_data":null,"expires_at":T0 + 30_000}))
    }
}

fn call(to: &[&str]) -> Command {
    Command::Call { to: to.iter().map(|s| s.to_string()).collect(), media: Media::Audio, timeout_s: None, user_data: None }
}

fn events(out: &[Output]) -> Vec<CallEvent> {
    out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e.clone()) } else { None }).collect()
}

fn sent(out: &[Output]) -> Vec<ClientMessage> {
    out.iter().filter_map(|o| if let Output::Send(f) = o { Some(f.message.clone()) } else { None }).collect()
}

fn ringtones(out: &[Output]) -> Vec<RingtoneCommand> {
    out.iter().filter_map(|o| if let Output::Ringtone(r) = o { Some(*r) } else { None }).collect()
}

#[test]
fn api_table_refuses_commands_in_the_wrong_state_and_changes_nothing() {
    let mut rig = Rig::new("alice");
    for command in [Command::Accept, Command::Reject, Command::Hangup, Command::InviteMore { to: vec!["x".into()] }, Command::AudioOnly] {
        let err = rig.core.command(T0, command).unwrap_err();
        assert!(matches!(err, CommandError::WrongState { state: CallState::Idle, .. }), "{err}");
    }
    assert!(rig.drain().is_empty());
    assert!(matches!(rig.core.command(T0, call(&["alice"])), Err(CommandError::BadArgument(_))));
    assert!(matches!(rig.core.command(T0, call(&[])), Err(CommandError::BadArgument(_))));

    rig.dialing(&["bob"]);
    assert_eq!(rig.core.state(), CallState::Calling);
    for command in [call(&["carol"]), Command::Join { call_id: "c9".into(), media: Media::Audio }, Command::Accept, Command::Reject] {
        assert!(rig.core.command(T0, command).is_err());
    }
    assert!(rig.drain().is_empty());

    let mut rig = Rig::new("bob");
    rig.ringing_in("alice");
    for command in [call(&["carol"]), Command::InviteMore { to: vec!["carol".into()] }] {
        assert!(rig.core.command(T0, command).is_err());
    }
    assert!(rig.drain().is_empty());
    assert_eq!(rig.core.state(), CallState::Calling);
}

#[test]
fn outgoing_call_connects_offers_and_ends_with_the_server_duration() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(call(&["bob"]));
    assert_eq!(ringtones(&out), [RingtoneCommand::Dialing]);
    assert!(matches!(&sent(&out)[..], [ClientMessage::CallInvite { to, .. }] if to == &["bob"]));
    let (id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    assert_eq!(events(&out), [CallEvent::Dialing { call_id: "c1".into(), invitees: vec!["bob".into()] }]);

    rig.now += 3_000;
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob"}));
    assert_eq!(out[0], Output::OpenPeer { call_id: "c1".into(), user: "bob".into(), offerer: true, media: Media::Audio });
    assert_eq!(ringtones(&out), [RingtoneCommand::Stop]);
    assert!(events(&out).contains(&CallEvent::CallBegan { call_id: "c1".into(), media: Media::Audio, connected_at: Some(rig.now) }));
    assert_eq!(rig.core.state(), CallState::Connected);

    // Negotiation goes both ways through the core.
    let offer = SignalPayload::Offer { sdp: "v=0".into() };
    rig.core.handle_media(MediaEvent::LocalSignal { user: "bob".into(), payload: offer });
    let out = rig.drain();
    assert!(matches!(&sent(&out)[..], [ClientMessage::Signal { to, payload, .. }] if to == "bob" && payload["kind"] == "offer"));
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","payload":{"kind":"answer","sdp":"v=0 a"}}));
    assert_eq!(out, [Output::RemoteSignal { user: "bob".into(), payload: SignalPayload::Answer { sdp: "v=0 a".into() } }]);

    let out = rig.server(json!({"type":"call.left","call_id":"c1","user":"bob"}));
    assert_eq!(out[0], Output::ClosePeer { user: "bob".into() });
    let out = rig.server(json!({"type":"call.ended","call_id":"c1","reason":"hangup","duration_s":42}));
    assert!(events(&out).contains(&CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 42 }));
    assert_eq!(rig.core.state(), CallState::Idle);
}

#[test]
fn incoming_call_accept_answers_offers_and_local_hangup_waits_for_the_duration() {
    let mut rig = Rig::new("bob");
    let out = rig.ringing_in("alice");
    assert_eq!(ringtones(&out), [RingtoneCommand::Incoming]);
    assert!(matches!(&events(&out)[..], [CallEvent::IncomingCall { caller, .. }] if caller == "alice"));
    let out = rig.cmd(Command::Accept);
    assert_eq!(ringtones(&out), [RingtoneCommand::Stop], "ringing stops the moment the call is answered");
    let (id, message) = Rig::last_request(&out);
    assert_eq!(message, ClientMessage::CallAccept { call_id: "c1".into() });
    assert_eq!(rig.core.state(), CallState::Calling);
    let out = rig.server(json!({"type":"ok","re":id,"joined":["alice"]}));
    assert_eq!(out[0], Output::OpenPeer { call_id: "c1".into(), user: "alice".into(), offerer: false, media: Media::Audio });
    assert_eq!(rig.core.state(), CallState::Connected);

    rig.now += 10_000;
    let out = rig.cmd(Command::Hangup);
    assert_eq!(sent(&out), [ClientMessage::CallHangup { call_id: "c1".into(), reason: None }]);
    assert!(out.contains(&Output::ClosePeer { user: "alice".into() }));
    assert_eq!(rig.core.state(), CallState::Idle);
    assert!(events(&out).is_empty(), "the end is told with the server's duration");
    let (hangup_id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":hangup_id,"duration_s":9}));
    assert_eq!(events(&out), [CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 9 }]);
    // The call.ended of a 1:1 call that follows is no news.
    assert!(rig.server(json!({"type":"call.ended","call_id":"c1","reason":"hangup","duration_s":9})).is_empty());
}

#[test]
fn giving_up_a_call_whose_media_is_gone_says_why_and_ends_it_failed() {
    let mut rig = Rig::new("bob");
    rig.ringing_in("alice");
    assert!(matches!(rig.core.command(rig.now, Command::GiveUp), Err(CommandError::WrongState { .. })), "nothing to give up while ringing");
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"joined":["alice"]}));
    rig.now += 30_000;
    let out = rig.cmd(Command::GiveUp);
    assert_eq!(sent(&out), [ClientMessage::CallHangup { call_id: "c1".into(), reason: Some(HangupReason::Failed) }]);
    assert!(out.contains(&Output::ClosePeer { user: "alice".into() }));
    assert_eq!(rig.core.state(), CallState::Idle);
    let (hangup_id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":hangup_id,"duration_s":30}));
    assert_eq!(events(&out), [CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Failed, duration_s: 30 }]);
}

#[test]
fn a_calls_quality_goes_to_the_server_and_a_refusal_is_no_news() {
    let mut rig = Rig::new("bob");
    let quality = CallQuality { mos_average: 4.3, mos_worst: 3.9 };
    rig.core.report_quality(rig.now, "c1".into(), quality);
    let out = rig.drain();
    assert_eq!(sent(&out), [ClientMessage::CallQuality { call_id: "c1".into(), quality }]);
    let (id, _) = Rig::last_request(&out);
    assert!(rig.server(json!({"type":"error","re":id,"code":"not_found","message":"no record"})).is_empty());
}

#[test]
fn leaving_a_group_call_that_goes_on_ends_it_here() {
    let mut rig = Rig::new("carol");
    rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob","carol"],"media":"audio","user_data":null,"expires_at":T0}));
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"joined":["alice","bob"]}));
    rig.now += 4_000;
    let out = rig.cmd(Command::Hangup);
    let (hangup_id, _) = Rig::last_request(&out);
    // Alice and bob go on talking: the server sends carol only the ok.
    let out = rig.server(json!({"type":"ok","re":hangup_id,"duration_s":4}));
    assert_eq!(events(&out), [CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 4 }]);
    assert_eq!(rig.core.state(), CallState::Idle);
    assert_eq!(rig.core.poll_timeout(), None, "nothing left waiting");
}

#[test]
fn hangup_without_an_answer_from_the_server_still_ends() {
    let mut rig = Rig::new("bob");
    rig.ringing_in("alice");
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"joined":["alice"]}));
    rig.now += 5_000;
    rig.cmd(Command::Hangup);
    assert_eq!(rig.core.poll_timeout(), Some(rig.now + REQUEST_TIMEOUT_MS));
    rig.now += REQUEST_TIMEOUT_MS;
    rig.core.handle_timeout(rig.now);
    let out = rig.drain();
    assert_eq!(events(&out), [CallEvent::CallEnded { call_id: "c1".into(), reason: EndReason::Hangup, duration_s: 15 }]);
}

#[test]
fn not_connected_outcomes() {
    for (frame, reason) in [
        (json!({"type":"call.ended","call_id":"c1","reason":"rejected","duration_s":0}), NotConnectedReason::Rejected),
        (json!({"type":"call.ended","call_id":"c1","reason":"busy","duration_s":0}), NotConnectedReason::Busy),
        (json!({"type":"call.ended","call_id":"c1","reason":"no_answer","duration_s":0}), NotConnectedReason::NoAnswer),
    ] {
        let mut rig = Rig::new("alice");
        rig.dialing(&["bob"]);
        let out = rig.server(frame);
        assert_eq!(events(&out), [CallEvent::NotConnected { call_id: Some("c1".into()), reason }]);
        assert_eq!(ringtones(&out), [RingtoneCommand::Stop]);
        assert_eq!(rig.core.state(), CallState::Idle);
    }
    for (frame, reason) in [
        (json!({"type":"call.cancelled","call_id":"c1","by":"alice"}), NotConnectedReason::Cancelled),
        (json!({"type":"call.timeout","call_id":"c1"}), NotConnectedReason::NoAnswer),
        (json!({"type":"call.handled_elsewhere","call_id":"c1","action":"accepted"}), NotConnectedReason::HandledElsewhere),
    ] {
        let mut rig = Rig::new("bob");
        rig.ringing_in("alice");
        let out = rig.server(frame);
        assert_eq!(events(&out), [CallEvent::NotConnected { call_id: Some("c1".into()), reason }]);
        assert_eq!(ringtones(&out), [RingtoneCommand::Stop], "ringing stops when handled anywhere");
        // The server's call.ended that follows is no news.
        assert!(rig.server(json!({"type":"call.ended","call_id":"c1","reason":"cancelled","duration_s":0})).is_empty());
    }
}

#[test]
fn reject_and_cancel() {
    let mut rig = Rig::new("bob");
    rig.ringing_in("alice");
    let out = rig.cmd(Command::Reject);
    assert_eq!(sent(&out), [ClientMessage::CallReject { call_id: "c1".into() }]);
    assert_eq!(events(&out), [CallEvent::NotConnected { call_id: Some("c1".into()), reason: NotConnectedReason::Rejected }]);

    let mut rig = Rig::new("alice");
    rig.dialing(&["bob"]);
    let out = rig.cmd(Command::Hangup);
    assert_eq!(sent(&out), [ClientMessage::CallCancel { call_id: "c1".into() }]);
    assert_eq!(rig.core.state(), CallState::Idle);
}

#[test]
fn hangup_before_the_server_named_the_call_cancels_it_when_named() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(call(&["bob"]));
    let (id, _) = Rig::last_request(&out);
    assert!(rig.cmd(Command::Hangup).is_empty());
    let out = rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    assert_eq!(sent(&out), [ClientMessage::CallCancel { call_id: "c1".into() }]);
    assert_eq!(events(&out), [CallEvent::NotConnected { call_id: Some("c1".into()), reason: NotConnectedReason::Cancelled }]);
}

#[test]
fn refused_invite_fails_with_the_servers_code() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(call(&["nobody"]));
    let (id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"error","re":id,"code":"not_found","message":"no user 'nobody'"}));
    assert_eq!(
        events(&out),
        [
            CallEvent::Error { code: ErrorCode::NotFound, message: "no user 'nobody'".into() },
            CallEvent::NotConnected { call_id: None, reason: NotConnectedReason::Failed }
        ]
    );
    assert_eq!(rig.core.state(), CallState::Idle);
}

#[test]
fn accept_that_lost_the_race_to_cancel() {
    let mut rig = Rig::new("bob");
    rig.ringing_in("alice");
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    // The server took alice's cancel first.
    let out = rig.server(json!({"type":"call.ended","call_id":"c1","reason":"cancelled","duration_s":0}));
    assert_eq!(events(&out), [CallEvent::NotConnected { call_id: Some("c1".into()), reason: NotConnectedReason::Cancelled }]);
    let out = rig.server(json!({"type":"error","re":id,"code":"invalid_state","message":"the call has ended"}));
    assert!(events(&out).iter().all(|e| !matches!(e, CallEvent::NotConnected { .. })), "told once: {out:?}");
    assert_eq!(rig.core.state(), CallState::Idle);
}

#[test]
fn glare_resolves_to_one_call() {
    // Alice calls bob while bob calls alice; the server took bob's invite first.
    let mut rig = Rig::new("alice");
    let out = rig.cmd(call(&["bob"]));
    let (invite_id, _) = Rig::last_request(&out);
    let out = rig.ringing_in("bob");
    let (accept_id, accept) = Rig::last_request(&out);
    assert_eq!(accept, ClientMessage::CallAccept { call_id: "c1".into() }, "alice answers bob's call at once");
    // Her own invite is named, then found busy: it is cancelled and its end is no news.
    let out = rig.server(json!({"type":"ok","re":invite_id,"call_id":"c2"}));
    assert_eq!(sent(&out), [ClientMessage::CallCancel { call_id: "c2".into() }]);
    assert!(rig.server(json!({"type":"call.busy","call_id":"c2","user":"bob"})).is_empty());
    assert!(rig.server(json!({"type":"call.ended","call_id":"c2","reason":"busy","duration_s":0})).is_empty());
    let out = rig.server(json!({"type":"ok","re":accept_id,"joined":["bob"]}));
    assert!(events(&out).iter().any(|e| matches!(e, CallEvent::CallBegan { call_id, .. } if call_id == "c1")));
    assert_eq!(rig.core.state(), CallState::Connected);
}

#[test]
fn group_call_mesh_roles_and_invite_more() {
    let mut rig = Rig::new("carol");
    rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob","carol"],"media":"video","user_data":null,"expires_at":T0}));
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    // Alice and bob were joined before carol: both offer to her.
    let out = rig.server(json!({"type":"ok","re":id,"joined":["alice","bob"]}));
    let opened: Vec<(String, bool)> = out
        .iter()
        .filter_map(|o| if let Output::OpenPeer { user, offerer, .. } = o { Some((user.clone(), *offerer)) } else { None })
        .collect();
    assert_eq!(opened, [("alice".to_string(), false), ("bob".to_string(), false)]);
    // Dave joins after carol: she offers to him.
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"dave"}));
    assert_eq!(out[0], Output::OpenPeer { call_id: "c1".into(), user: "dave".into(), offerer: true, media: Media::Video });
    let out = rig.cmd(Command::InviteMore { to: vec!["erin".into()] });
    assert_eq!(sent(&out), [ClientMessage::CallInviteMore { call_id: "c1".into(), to: vec!["erin".into()] }]);
    let out = rig.server(json!({"type":"call.media_changed","call_id":"c1","media":"audio","by":"bob"}));
    assert_eq!(events(&out), [CallEvent::MediaChanged { media: Media::Audio }]);
}

#[test]
fn resync_after_reconnect() {
    let mut rig = Rig::new("alice");
    rig.dialing(&["bob", "carol"]);
    rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob"}));
    // While the socket was down, bob left and carol joined.
    let summary = CallSummary {
        call_id: "c1".into(),
        caller: "alice".into(),
        invitees: vec!["bob".into(), "carol".into()],
        media: Media::Audio,
        joined: vec!["alice".into(), "carol".into()],
        connected_at: Some(T0),
        user_data: None,
    };
    rig.core.resync(rig.now, std::slice::from_ref(&summary));
    let out = rig.drain();
    assert!(out.contains(&Output::ClosePeer { user: "bob".into() }));
    assert!(out.contains(&Output::OpenPeer { call_id: "c1".into(), user: "carol".into(), offerer: true, media: Media::Audio }));
    assert_eq!(rig.core.state(), CallState::Connected);

    // Away past the grace: the server no longer has us in the call.
    rig.now += 30_000;
    rig.core.resync(rig.now, &[]);
    let out = rig.drain();
    assert!(out.contains(&Output::ClosePeer { user: "carol".into() }));
    assert!(matches!(&events(&out)[..], [CallEvent::CallEnded { reason: EndReason::Failed, duration_s: 30, .. }]));
    assert_eq!(rig.core.state(), CallState::Idle);
}

#[test]
fn an_unanswered_invite_fails_after_the_request_timeout() {
    let mut rig = Rig::new("alice");
    rig.cmd(call(&["bob"]));
    rig.now += REQUEST_TIMEOUT_MS - 1;
    rig.core.handle_timeout(rig.now);
    assert!(rig.drain().is_empty());
    rig.now += 1;
    rig.core.handle_timeout(rig.now);
    let out = rig.drain();
    assert_eq!(events(&out), [CallEvent::NotConnected { call_id: None, reason: NotConnectedReason::Failed }]);
}

#[test]
fn a_stale_answer_or_timeout_does_not_touch_a_newer_call() {
    let mut rig = Rig::new("bob");
    rig.ringing_in("alice");
    let out = rig.cmd(Command::Accept);
    let (accept_id, _) = Rig::last_request(&out);
    // The accept's answer is lost with the socket; bob gives up and calls carol instead.
    rig.now += 1_000;
    rig.cmd(Command::Hangup);
    rig.now += 1_000;
    let out = rig.cmd(call(&["carol"]));
    let (invite_id, _) = Rig::last_request(&out);
    rig.now += REQUEST_TIMEOUT_MS - 1_500; // past the accept's timeout, before the invite's
    rig.core.handle_timeout(rig.now);
    assert!(events(&rig.drain()).is_empty(), "the old accept's timeout ended the new call");
    assert_eq!(rig.core.state(), CallState::Calling);
    // A late answer to the old accept changes nothing either.
    assert!(rig.server(json!({"type":"ok","re":accept_id,"joined":["alice"]})).is_empty());
    let out = rig.server(json!({"type":"ok","re":invite_id,"call_id":"c2"}));
    assert!(matches!(&events(&out)[..], [CallEvent::Dialing { call_id, .. }] if call_id == "c2"));
}

#[test]
fn ringing_stops_at_expiry_even_if_the_servers_word_was_lost() {
    let mut rig = Rig::new("bob");
    rig.ringing_in("alice"); // expires_at T0 + 30 s
    assert_eq!(rig.core.poll_timeout(), Some(T0 + 30_000 + RING_SLACK_MS));
    rig.now = T0 + 30_000 + RING_SLACK_MS - 1;
    rig.core.handle_timeout(rig.now);
    assert!(rig.drain().is_empty());
    rig.now += 1;
    rig.core.handle_timeout(rig.now);
    let out = rig.drain();
    assert_eq!(ringtones(&out), [RingtoneCommand::Stop]);
    assert_eq!(events(&out), [CallEvent::NotConnected { call_id: Some("c1".into()), reason: NotConnectedReason::NoAnswer }]);
}

#[test]
fn ring_expiry_is_read_on_our_clock() {
    // The server's clock is an hour ahead of ours.
    let mut rig = Rig::new("bob");
    rig.core.set_server_clock(T0 + 3_600_000, T0);
    rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"audio","user_data":null,"expires_at":T0 + 3_600_000 + 30_000}));
    assert_eq!(rig.core.poll_timeout(), Some(T0 + 30_000 + RING_SLACK_MS));
}

fn media_said(out: &[Output]) -> Vec<Option<Media>> {
    out.iter().filter_map(|o| if let Output::SetMedia(m) = o { Some(*m) } else { None }).collect()
}

#[test]
fn the_core_says_what_media_the_connected_call_carries() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(Command::Call { to: vec!["bob".into()], media: Media::Video, timeout_s: None, user_data: None });
    let (id, _) = Rig::last_request(&out);
    assert_eq!(media_said(&out), [Some(Media::Video)], "a video call we place opens the camera at once, for the preview");
    let out = rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    assert!(media_said(&out).is_empty(), "ringing changes nothing");
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob"}));
    assert!(media_said(&out).is_empty(), "connecting changes nothing");
    let out = rig.server(json!({"type":"call.media_changed","call_id":"c1","media":"audio","by":"bob"}));
    assert_eq!(media_said(&out), [Some(Media::Audio)]);
    assert!(matches!(out.last(), Some(Output::SetMedia(_))), "said last, after the events: {out:?}");
    let out = rig.server(json!({"type":"call.ended","call_id":"c1","reason":"hangup","duration_s":3}));
    assert_eq!(media_said(&out), [None]);

    // Called: nothing opens while it rings here; accepting connects the media.
    let mut rig = Rig::new("bob");
    let out = rig.server(json!({"type":"call.incoming","call_id":"c2","from":"alice","invitees":["bob"],"media":"video","user_data":null,"expires_at":T0 + 30_000}));
    assert!(media_said(&out).is_empty(), "a call ringing here opens no camera");
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    assert!(media_said(&out).is_empty());
    let out = rig.server(json!({"type":"ok","re":id}));
    assert_eq!(media_said(&out), [Some(Media::Video)]);
    assert!(matches!(out.last(), Some(Output::SetMedia(_))), "said last, after the peer and the events: {out:?}");
    assert!(media_said(&rig.server(json!({"type":"call.left","call_id":"c2","user":"carol"}))).is_empty(), "no change, nothing said");
    let out = rig.server(json!({"type":"call.ended","call_id":"c2","reason":"hangup","duration_s":3}));
    assert_eq!(media_said(&out), [None]);
}

#[test]
fn a_video_call_answered_with_audio_only_never_opens_the_camera_and_goes_down_for_everyone() {
    let mut rig = Rig::new("bob");
    rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"video","user_data":null,"expires_at":T0 + 30_000}));
    let out = rig.cmd(Command::AcceptAudioOnly);
    let (id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":id,"joined":["alice"]}));
    assert_eq!(media_said(&out), [Some(Media::Audio)], "the camera is never asked for");
    assert!(out.iter().any(|o| matches!(o, Output::Event(CallEvent::CallBegan { media: Media::Audio, .. }))), "{out:?}");
    // The peer is set up for the video alice offers; the call is taken down to audio for all.
    assert!(out.iter().any(|o| matches!(o, Output::OpenPeer { media: Media::Video, .. })));
    let (_, asked) = Rig::last_request(&out);
    assert!(matches!(asked, ClientMessage::CallMedia { media: Media::Audio, .. }), "{asked:?}");

    // An audio call answered that way is simply answered.
    let mut rig = Rig::new("bob");
    rig.server(json!({"type":"call.incoming","call_id":"c2","from":"alice","invitees":["bob"],"media":"audio","user_data":null,"expires_at":T0 + 30_000}));
    let out = rig.cmd(Command::AcceptAudioOnly);
    let (id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":id,"joined":["alice"]}));
    assert_eq!(media_said(&out), [Some(Media::Audio)]);
    assert!(!out.iter().any(|o| matches!(o, Output::Send(ClientFrame { message: ClientMessage::CallMedia { .. }, .. }))));
}

#[test]
fn a_video_call_we_cancel_while_it_rings_closes_the_camera() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(Command::Call { to: vec!["bob".into()], media: Media::Video, timeout_s: None, user_data: None });
    let (id, _) = Rig::last_request(&out);
    assert_eq!(media_said(&out), [Some(Media::Video)]);
    rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    let out = rig.cmd(Command::AudioOnly);
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id}));
    let out = rig.server(json!({"type":"call.media_changed","call_id":"c1","media":"audio","by":"alice"}));
    assert_eq!(media_said(&out), [Some(Media::Audio)], "switched to audio before anyone answered: the camera closes");
    let out = rig.cmd(Command::Hangup);
    let (id, _) = Rig::last_request(&out);
    let out = [out, rig.server(json!({"type":"ok","re":id}))].concat();
    assert_eq!(media_said(&out), [None]);
}

fn camera_signals(out: &[Output]) -> Vec<(String, bool)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(ClientFrame { message: ClientMessage::Signal { to, payload, .. }, .. }) if payload["kind"] == "camera" => {
                Some((to.clone(), payload["on"].as_bool().unwrap()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn camera_off_and_on_is_told_to_everyone_in_the_call_and_to_later_joiners() {
    let mut rig = Rig::new("alice");
    // Off before the call: nobody to tell yet.
    assert!(camera_signals(&rig.cmd(Command::Camera { on: false })).is_empty());
    let out = rig.cmd(Command::Call { to: vec!["bob".into(), "carol".into()], media: Media::Video, timeout_s: None, user_data: None });
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob"}));
    assert_eq!(camera_signals(&out), [("bob".to_string(), false)], "bob joins while it is off");
    assert!(camera_signals(&rig.server(json!({"type":"call.left","call_id":"c1","user":"dave"}))).is_empty(), "told once");
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"carol"}));
    assert_eq!(camera_signals(&out), [("carol".to_string(), false)]);
    let mut on = camera_signals(&rig.cmd(Command::Camera { on: true }));
    on.sort();
    assert_eq!(on, [("bob".to_string(), true), ("carol".to_string(), true)]);
    // Theirs: an event for the app, nothing for the peer connection.
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","payload":{"kind":"camera","on":false}}));
    assert_eq!(events(&out), [CallEvent::RemoteCamera { user: "bob".into(), on: false }]);
    assert!(!out.iter().any(|o| matches!(o, Output::RemoteSignal { .. })));
}

#[test]
fn a_policy_without_video_or_invitations_refuses_them_and_answers_video_as_audio() {
    let policy = crate::policy::CallPolicy { video: false, invite_more: false, ..Default::default() };
    let mut rig = Rig { core: CallCore::new("bob").with_policy(policy), now: T0 };
    let video_call = Command::Call { to: vec!["alice".into()], media: Media::Video, timeout_s: None, user_data: None };
    for command in [video_call, Command::Camera { on: true }] {
        assert!(matches!(rig.core.command(T0, command), Err(CommandError::Forbidden(crate::policy::Forbidden::Video))));
    }
    assert!(rig.drain().is_empty(), "a refused command sends nothing");
    rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"video","user_data":null,"expires_at":T0 + 30_000}));
    let out = rig.cmd(Command::Accept);
    let (id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":id,"joined":["alice","bob"]}));
    assert!(events(&out).iter().any(|e| matches!(e, CallEvent::CallBegan { media: Media::Audio, .. })), "{out:?}");
    assert!(sent(&out).iter().any(|m| matches!(m, ClientMessage::CallMedia { media: Media::Audio, .. })), "the call goes down to audio: {out:?}");
    assert!(matches!(rig.core.command(T0, Command::InviteMore { to: vec!["carol".into()] }), Err(CommandError::Forbidden(crate::policy::Forbidden::InviteMore))));
}

fn early_outputs(out: &[Output]) -> Vec<Output> {
    out.iter().filter(|o| matches!(o, Output::OpenEarlyPeer { .. } | Output::EarlySignal { .. } | Output::BeginPeer { .. } | Output::CloseEarlyPeer { .. })).cloned().collect()
}

#[test]
fn a_ringing_call_connects_to_each_device_that_asks_and_keeps_the_one_that_answers() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(call(&["bob"]));
    assert!(matches!(&sent(&out)[..], [ClientMessage::CallInvite { connect_early: true, .. }]));
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));

    // Two of bob's devices ring and ask; each gets a connection of its own, offered by us.
    for device in ["laptop", "phone"] {
        let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":device,"payload":{"kind":"ready"}}));
        assert_eq!(out, [Output::OpenEarlyPeer { call_id: "c1".into(), user: "bob".into(), device: Some(device.into()), offerer: true, media: Media::Audio }]);
    }
    // Asking twice opens nothing more; a stranger to the call is not connected to.
    assert!(rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":"phone","payload":{"kind":"ready"}})).is_empty());
    assert!(rig.server(json!({"type":"signal","call_id":"c1","from":"mallory","from_device":"x","payload":{"kind":"ready"}})).is_empty());
    // Their negotiation goes to the device's own connection, and ours to that device by name.
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":"phone","payload":{"kind":"answer","sdp":"v=0 p"}}));
    assert_eq!(out, [Output::EarlySignal { user: "bob".into(), device: Some("phone".into()), payload: SignalPayload::Answer { sdp: "v=0 p".into() } }]);
    rig.core.handle_media(MediaEvent::EarlySignal { user: "bob".into(), device: Some("laptop".into()), payload: SignalPayload::Offer { sdp: "v=0".into() } });
    let out = rig.drain();
    assert!(matches!(&sent(&out)[..], [ClientMessage::Signal { to, to_device: Some(d), .. }] if to == "bob" && d == "laptop"));
    assert_eq!(rig.core.state(), CallState::Calling, "connected devices still only ring");

    // The phone answers: its connection begins, the laptop's closes, and nothing new is opened.
    rig.now += 2_000;
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob","device":"phone"}));
    assert_eq!(
        early_outputs(&out),
        [
            Output::CloseEarlyPeer { user: "bob".into(), device: Some("laptop".into()) },
            Output::BeginPeer { user: "bob".into(), device: Some("phone".into()) },
        ]
    );
    assert!(!out.iter().any(|o| matches!(o, Output::OpenPeer { .. })));
    assert!(events(&out).contains(&CallEvent::CallBegan { call_id: "c1".into(), media: Media::Audio, connected_at: Some(rig.now) }));
    // From now on bob's signals are his joined connection's.
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":"phone","payload":{"kind":"restart"}}));
    assert_eq!(out, [Output::RemoteSignal { user: "bob".into(), payload: SignalPayload::Restart }]);
}

#[test]
fn an_answer_from_a_device_that_never_connected_early_is_offered_to_as_before() {
    let mut rig = Rig::new("alice");
    rig.dialing(&["bob"]);
    rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":"phone","payload":{"kind":"ready"}}));
    // A v1 client answers (no device named): the early connection closes and we offer anew.
    let out = rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob"}));
    assert_eq!(early_outputs(&out), [Output::CloseEarlyPeer { user: "bob".into(), device: Some("phone".into()) }]);
    assert!(out.contains(&Output::OpenPeer { call_id: "c1".into(), user: "bob".into(), offerer: true, media: Media::Audio }));
}

#[test]
fn a_ringing_device_asks_the_caller_to_connect_and_answering_begins_that_connection() {
    let mut rig = Rig::new("bob");
    let incoming = json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"video","user_data":null,"expires_at":T0 + 30_000,"connect_early":true});
    let out = rig.server(incoming.clone());
    assert_eq!(early_outputs(&out), [Output::OpenEarlyPeer { call_id: "c1".into(), user: "alice".into(), device: None, offerer: false, media: Media::Video }]);
    assert!(matches!(&sent(&out)[..], [ClientMessage::Signal { to, to_device: None, payload, .. }] if to == "alice" && payload["kind"] == "ready"));
    assert!(!out.contains(&Output::SetMedia(Some(Media::Video))), "no camera while it rings here");
    // The caller's offer (from its joined session) reaches the early connection, and its answer
    // goes back.
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"alice","from_device":"desk","payload":{"kind":"offer","sdp":"v=0"}}));
    assert_eq!(out, [Output::EarlySignal { user: "alice".into(), device: None, payload: SignalPayload::Offer { sdp: "v=0".into() } }]);
    rig.core.handle_media(MediaEvent::EarlySignal { user: "alice".into(), device: None, payload: SignalPayload::Answer { sdp: "v=0 a".into() } });
    assert!(matches!(&sent(&rig.drain())[..], [ClientMessage::Signal { to, to_device: None, payload, .. }] if to == "alice" && payload["kind"] == "answer"));

    let out = rig.cmd(Command::Accept);
    assert!(early_outputs(&out).is_empty(), "nothing begins before the server says we joined");
    let (id, _) = Rig::last_request(&out);
    let out = rig.server(json!({"type":"ok","re":id,"joined":["alice"]}));
    assert_eq!(early_outputs(&out), [Output::BeginPeer { user: "alice".into(), device: None }]);
    assert!(!out.iter().any(|o| matches!(o, Output::OpenPeer { .. })));
    assert_eq!(out.last(), Some(&Output::SetMedia(Some(Media::Video))));
}

#[test]
fn a_ringing_call_that_ends_unanswered_closes_its_early_connection() {
    for ending in [
        json!({"type":"call.cancelled","call_id":"c1","by":"alice"}),
        json!({"type":"call.timeout","call_id":"c1"}),
        json!({"type":"call.handled_elsewhere","call_id":"c1","action":"accepted"}),
    ] {
        let mut rig = Rig::new("bob");
        rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"audio","user_data":null,"expires_at":T0 + 30_000,"connect_early":true}));
        let out = rig.server(ending.clone());
        assert_eq!(early_outputs(&out), [Output::CloseEarlyPeer { user: "alice".into(), device: None }], "{ending}");
    }
    let mut rig = Rig::new("bob");
    rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"audio","user_data":null,"expires_at":T0 + 30_000,"connect_early":true}));
    let out = rig.cmd(Command::Reject);
    assert_eq!(early_outputs(&out), [Output::CloseEarlyPeer { user: "alice".into(), device: None }]);

    // At the caller: a device that declines or stops ringing is let go.
    let mut rig = Rig::new("alice");
    rig.dialing(&["bob", "carol"]);
    rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":"phone","payload":{"kind":"ready"}}));
    rig.server(json!({"type":"signal","call_id":"c1","from":"carol","from_device":"desk","payload":{"kind":"ready"}}));
    let out = rig.server(json!({"type":"call.rejected","call_id":"c1","user":"bob"}));
    assert_eq!(early_outputs(&out), [Output::CloseEarlyPeer { user: "bob".into(), device: Some("phone".into()) }]);
    let out = rig.server(json!({"type":"call.no_answer","call_id":"c1","user":"carol"}));
    assert_eq!(early_outputs(&out), [Output::CloseEarlyPeer { user: "carol".into(), device: Some("desk".into()) }]);
}

#[test]
fn connect_only_after_i_answer_keeps_both_sides_from_connecting_early() {
    let mut rig = Rig::new("bob");
    rig.core.set_connect_early(false);
    let out = rig.server(json!({"type":"call.incoming","call_id":"c1","from":"alice","invitees":["bob"],"media":"audio","user_data":null,"expires_at":T0 + 30_000,"connect_early":true}));
    assert!(early_outputs(&out).is_empty());
    assert!(sent(&out).is_empty(), "no ready is sent");

    let mut rig = Rig::new("alice");
    rig.core.set_connect_early(false);
    let out = rig.cmd(call(&["bob"]));
    assert!(matches!(&sent(&out)[..], [ClientMessage::CallInvite { connect_early: false, .. }]));
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    assert!(rig.server(json!({"type":"signal","call_id":"c1","from":"bob","from_device":"phone","payload":{"kind":"ready"}})).is_empty());

    // A call placed without it (a v1 caller) is not connected early either.
    let mut rig = Rig::new("bob");
    let out = rig.ringing_in("alice");
    assert!(early_outputs(&out).is_empty() && sent(&out).is_empty());
}


#[test]
fn a_peer_saying_how_large_it_shows_our_video_reaches_the_sender_and_no_one_else_is_heard() {
    let mut rig = Rig::new("alice");
    let out = rig.cmd(Command::Call { to: vec!["bob".into()], media: Media::Video, timeout_s: None, user_data: None });
    let (id, _) = Rig::last_request(&out);
    rig.server(json!({"type":"ok","re":id,"call_id":"c1"}));
    rig.server(json!({"type":"call.accepted","call_id":"c1","user":"bob"}));
    let shown = |out: &[Output]| out.iter().filter(|o| matches!(o, Output::VideoShownBy { .. })).cloned().collect::<Vec<_>>();
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","payload":{"kind":"video_size","width":718,"height":404}}));
    assert_eq!(shown(&out), [Output::VideoShownBy { user: "bob".into(), width: 718, height: 404 }]);
    assert!(!out.iter().any(|o| matches!(o, Output::RemoteSignal { .. })), "nothing for the peer connection");
    for payload in [json!({"kind":"video_size","width":0,"height":404}), json!({"kind":"video_size","width":-3,"height":404}), json!({"kind":"video_size"})] {
        let out = rig.server(json!({"type":"signal","call_id":"c1","from":"bob","payload":payload}));
        assert!(shown(&out).is_empty() && !out.iter().any(|o| matches!(o, Output::RemoteSignal { .. })), "{payload} is ignored");
    }
    let out = rig.server(json!({"type":"signal","call_id":"c1","from":"mallory","payload":{"kind":"video_size","width":64,"height":36}}));
    assert!(shown(&out).is_empty(), "only a person in the call is heard");
    // Ours goes out as a signal to the person whose video it is.
    rig.core.handle_media(MediaEvent::LocalSignal { user: "bob".into(), payload: SignalPayload::VideoSize { width: 480, height: 270 } });
    let out = rig.drain();
    assert!(
        out.iter().any(|o| matches!(o, Output::Send(ClientFrame { message: ClientMessage::Signal { to, payload, .. }, .. }) if to == "bob" && payload == &json!({"kind":"video_size","width":480,"height":270}))),
        "{out:?}"
    );
}
