//! The cluster's rules on a log written by hand: no NATS, no clock.

use super::*;
use crate::registry::CallRequest;
use hark_protocol::{CallResult, Media, ServerMessage};

const T0: i64 = 1_767_139_200_000;
const A: NodeTag = 0x0a;
const B: NodeTag = 0x0b;
const C: NodeTag = 0x0c;

fn session(node: NodeTag, n: u64) -> SessionId {
    SessionTag::new(node).session(n)
}

fn entry(node: NodeTag, now: i64, items: Vec<Item>) -> Entry {
    Entry { node, now, beat: false, items }
}

/// An entry marked as its server's beat.
fn beat(node: NodeTag, now: i64) -> Entry {
    Entry { node, now, beat: true, items: vec![] }
}

/// The `live` servers beat in turn, once a second from `from`, until the silent ones count as
/// dead; what every entry asked of each copy, merged per copy.
fn beat_until_dead(cluster: &mut Cluster, live: &[NodeTag], from: i64) -> Vec<Applied> {
    let mut merged: Vec<Applied> = (0..3).map(|_| Applied::default()).collect();
    for i in 0..DEAD_AFTER_BEATS {
        for node in live {
            for (copy, out) in cluster.apply(beat(*node, from + i64::from(i) * 1_000)).into_iter().enumerate() {
                merged[copy].deliveries.extend(out.deliveries);
                merged[copy].records.extend(out.records);
                merged[copy].declared_dead |= out.declared_dead;
                merged[copy].counted_dead.extend(out.counted_dead);
            }
        }
    }
    merged
}

fn open(node: NodeTag, n: u64, user: &str) -> Item {
    Item::Open { session: session(node, n), user: user.into(), device: format!("{user}-{n}") }
}

fn request(s: SessionId, request: CallRequest) -> Item {
    Item::Input(RegistryInput::Request { session: s, re: Some("r".into()), request })
}

fn invite(to: &str) -> CallRequest {
    CallRequest::Invite { to: vec![to.into()], media: Media::Audio, timeout_s: None, user_data: None, connect_early: false }
}

fn reset(prefix: u32) -> Item {
    Item::Reset { call_id_prefix: prefix, settings: RegistrySettings::default() }
}

/// Three servers' copies of one log.
struct Cluster {
    copies: Vec<Replica>,
    /// The stream sequence of the last entry.
    seq: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let copies: Vec<Replica> = [A, B, C].iter().map(|me| Replica::new(*me, RegistrySettings::default(), 7)).collect();
        let mut cluster = Cluster { copies, seq: 0 };
        cluster.apply(entry(A, T0, vec![reset(7)]));
        cluster.apply(entry(B, T0, vec![]));
        cluster.apply(entry(C, T0, vec![]));
        cluster
    }

    /// Applies `e`, as the log's next entry, to every copy; what each was asked to do, in the
    /// order A, B, C.
    fn apply(&mut self, e: Entry) -> Vec<Applied> {
        self.seq += 1;
        let seq = self.seq;
        self.copies.iter_mut().map(|copy| copy.apply(seq, e.clone())).collect()
    }

    /// The copies' states, which must be equal.
    fn states(&self) -> Vec<serde_json::Value> {
        self.copies.iter().map(|copy| serde_json::to_value(copy).unwrap()).collect()
    }

    /// Opens the caller's and the callee's first sessions on their servers and has the caller
    /// invite the callee; the two sessions and the call id.
    fn ring(&mut self, caller: (NodeTag, &str), callee: (NodeTag, &str)) -> (SessionId, SessionId, String) {
        self.apply(entry(caller.0, T0, vec![open(caller.0, 1, caller.1)]));
        self.apply(entry(callee.0, T0, vec![open(callee.0, 1, callee.1)]));
        let caller_session = session(caller.0, 1);
        let out = self.apply(entry(caller.0, T0 + 1, vec![request(caller_session, invite(callee.1))]));
        let call = call_id(&out[0], caller_session);
        (caller_session, session(callee.0, 1), call)
    }

    fn assert_equal(&self) {
        let states = self.states();
        assert_eq!(states[0], states[1]);
        assert_eq!(states[0], states[2]);
    }
}

/// Frames meant for `s` among every server's deliveries.
fn frames_for(applied: &Applied, s: SessionId) -> Vec<ServerMessage> {
    applied
        .deliveries
        .iter()
        .filter_map(|o| match o {
            Output::Send(to, m) if *to == s => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn call_id(applied: &Applied, caller: SessionId) -> String {
    frames_for(applied, caller)
        .iter()
        .find_map(|m| match m {
            ServerMessage::Ok { body, .. } => body.call_id.clone(),
            _ => None,
        })
        .expect("the invite was answered with a call id")
}

fn is_error(m: &ServerMessage) -> bool {
    matches!(m, ServerMessage::Error { .. })
}

#[test]
fn the_entry_first_in_the_log_wins_on_every_copy() {
    let mut cluster = Cluster::new();
    let (alice, bob, call) = cluster.ring((A, "alice"), (B, "bob"));
    // Bob's accept on B and Alice's cancel on A were sent at the same moment; the log holds the
    // accept first.
    let accept = cluster.apply(entry(B, T0 + 20, vec![request(bob, CallRequest::Accept { call_id: call.clone() })]));
    let cancel = cluster.apply(entry(A, T0 + 20, vec![request(alice, CallRequest::Cancel { call_id: call.clone() })]));
    for copy in 0..3 {
        assert!(!frames_for(&accept[copy], bob).iter().any(is_error), "accept won on copy {copy}");
        assert!(frames_for(&cancel[copy], alice).iter().any(is_error), "cancel lost on copy {copy}");
    }
    cluster.assert_equal();
}

#[test]
fn busy_is_decided_once_across_servers() {
    let mut cluster = Cluster::new();
    let (alice, bob, carol) = (session(A, 1), session(B, 1), session(C, 1));
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice")]));
    cluster.apply(entry(B, T0, vec![open(B, 1, "bob")]));
    cluster.apply(entry(C, T0, vec![open(C, 1, "carol")]));
    let first = cluster.apply(entry(A, T0 + 5, vec![request(alice, invite("bob"))]));
    let call = call_id(&first[0], alice);
    cluster.apply(entry(B, T0 + 6, vec![request(bob, CallRequest::Accept { call_id: call })]));
    let second = cluster.apply(entry(C, T0 + 7, vec![request(carol, invite("bob"))]));
    for applied in &second {
        assert!(
            frames_for(applied, carol).iter().any(|m| matches!(m, ServerMessage::CallBusy { .. })),
            "carol hears bob is busy"
        );
    }
    cluster.assert_equal();
}

/// Users of each record in `applied`, sorted.
fn record_users(applied: &Applied) -> Vec<String> {
    let mut users: Vec<String> = applied.records.iter().map(|(user, _)| user.clone()).collect();
    users.sort();
    users
}

#[test]
fn each_server_writes_its_peoples_records_and_the_writer_the_rest() {
    let mut cluster = Cluster::new();
    let alice = session(B, 1);
    cluster.apply(entry(B, T0, vec![open(B, 1, "alice")]));
    cluster.apply(entry(C, T0, vec![open(C, 1, "bob")]));
    let to_bob_and_dave = CallRequest::Invite { to: vec!["bob".into(), "dave".into()], media: Media::Audio, timeout_s: None, user_data: None, connect_early: false };
    let out = cluster.apply(entry(B, T0 + 1, vec![request(alice, to_bob_and_dave)]));
    let call = call_id(&out[1], alice);
    let out = cluster.apply(entry(B, T0 + 2, vec![request(alice, CallRequest::Cancel { call_id: call })]));
    assert_eq!(record_users(&out[0]), ["dave"], "A, the writer, writes the record of dave, whom no server serves");
    assert_eq!(record_users(&out[1]), ["alice"], "B writes alice's before she hears the call ended");
    assert_eq!(record_users(&out[2]), ["bob"]);
}

#[test]
fn a_dead_writers_records_are_written_again_by_the_next() {
    let mut cluster = Cluster::new();
    let alice = session(B, 1);
    cluster.apply(entry(B, T0, vec![open(B, 1, "alice")]));
    let out = cluster.apply(entry(B, T0 + 1, vec![request(alice, invite("dave"))]));
    let call = call_id(&out[1], alice);
    let out = cluster.apply(entry(B, T0 + 2, vec![request(alice, CallRequest::Cancel { call_id: call })]));
    assert_eq!(record_users(&out[0]), ["dave"]);
    // A says nothing more (killed, perhaps before its write); B and C go on.
    let out = beat_until_dead(&mut cluster, &[B, C], T0 + 1_000);
    assert!(!cluster.copies[1].members().any(|m| m == A), "A is dead");
    assert!(cluster.copies[1].members().any(|m| m == C), "C, which beat, is not");
    assert_eq!(record_users(&out[1]), ["dave"], "B, the writer now, writes dave's record again");
    assert!(out[2].records.is_empty());
    // B dies past the replay window: nothing is written again.
    cluster.apply(entry(C, T0 + 40_000, vec![]));
    let out = beat_until_dead(&mut cluster, &[C], T0 + 41_000);
    assert!(!cluster.copies[2].members().any(|m| m == B), "B is dead");
    assert!(out[2].records.is_empty(), "B died past the replay window: nothing left to write again");
}

#[test]
fn a_dead_servers_person_reconnects_through_another_within_the_grace() {
    let mut cluster = Cluster::new();
    let (alice, bob, call) = cluster.ring((A, "alice"), (B, "bob"));
    cluster.apply(entry(B, T0 + 2, vec![request(bob, CallRequest::Accept { call_id: call.clone() })]));
    // B is killed: once the others beat five times without it, bob's session is away on every
    // copy.
    let out = beat_until_dead(&mut cluster, &[A, C], T0 + 1_000);
    assert!(!cluster.copies[0].registry().is_online("bob"));
    assert!(frames_for(&out[0], alice).is_empty(), "alice's call goes on: bob is only away");
    // Bob's app reconnects through C with the same device, within the grace.
    let back = Item::Open { session: session(C, 9), user: "bob".into(), device: "bob-1".into() };
    let out = cluster.apply(entry(C, T0 + 10_000, vec![back]));
    let (opened, joined) = &out[2].opened[0];
    assert_eq!(*opened, session(C, 9));
    assert_eq!(joined.iter().map(|c| c.call_id.clone()).collect::<Vec<_>>(), vec![call], "still in the call");
    assert!(out[0].opened.is_empty(), "only C answers its own session");
    cluster.apply(entry(C, T0 + 6_000 + 21_000, vec![]));
    assert_eq!(cluster.copies[0].registry().live_calls(), 1, "past bob's first grace the call still goes on");
}

#[test]
fn a_ring_timer_fires_after_the_callers_server_died() {
    let mut cluster = Cluster::new();
    let (alice, bob) = (session(B, 1), session(C, 1));
    cluster.apply(entry(B, T0, vec![open(B, 1, "alice")]));
    cluster.apply(entry(C, T0, vec![open(C, 1, "bob")]));
    let ring_for_10_s = CallRequest::Invite { to: vec!["bob".into()], media: Media::Audio, timeout_s: Some(10), user_data: None, connect_early: false };
    let out = cluster.apply(entry(B, T0 + 1, vec![request(alice, ring_for_10_s)]));
    let call = call_id(&out[2], alice);
    assert_eq!(cluster.copies[2].next_timer(), Some(T0 + 1 + 10_000));
    // B dies (alice is away from then on, within her grace); A and C keep beating; the ring
    // timer is due at C's tick.
    beat_until_dead(&mut cluster, &[A, C], T0 + 1_000);
    beat_until_dead(&mut cluster, &[A, C], T0 + 6_000);
    let out = cluster.apply(entry(C, T0 + 10_001, vec![Item::Tick]));
    let timeouts: Vec<_> = frames_for(&out[2], bob).into_iter().filter(|m| matches!(m, ServerMessage::CallTimeout { .. })).collect();
    assert_eq!(timeouts.len(), 1, "bob's devices stop ringing, once");
    let missed: Vec<_> = out[2].records.iter().filter(|(user, r)| user == "bob" && r.call_id == call).collect();
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].1.result, CallResult::Missed);
    cluster.assert_equal();
}

#[test]
fn a_joining_server_starts_from_a_copy_and_stays_equal() {
    let mut cluster = Cluster::new();
    let (alice, bob) = (session(A, 1), session(B, 1));
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice")]));
    cluster.apply(entry(B, T0, vec![open(B, 1, "bob")]));
    cluster.apply(entry(A, T0 + 1, vec![request(alice, invite("bob"))]));
    const D: NodeTag = 0x0d;
    let asks = cluster.apply(entry(D, T0 + 2, vec![Item::CopyFor { node: D, from: B, attempt: 1 }]));
    assert_eq!(asks.iter().filter(|a| a.copy_for.is_some()).count(), 1, "one server sends the copy");
    assert_eq!(asks[1].copy_for, Some((D, 1)), "the one asked does");
    let mut d = Replica::from_copy(&cluster.copies[1].to_copy(), D).unwrap();
    assert_eq!(d.last_seq(), cluster.seq, "the copy is as of the CopyFor entry");
    let next = entry(D, T0 + 3, vec![Item::Open { session: session(D, 1), user: "bob".into(), device: "bob-desk".into() }]);
    let out = d.apply(cluster.seq + 1, next.clone());
    cluster.apply(next);
    assert_eq!(out.opened.len(), 1);
    assert!(
        frames_for(&out, session(D, 1)).iter().any(|m| matches!(m, ServerMessage::CallIncoming { .. })),
        "the new server knows the call ringing for bob"
    );
    assert_eq!(serde_json::to_value(&d).unwrap(), cluster.states()[0]);
    let _ = bob;
}

#[test]
fn a_copy_that_cannot_be_read_is_an_error() {
    assert!(Replica::from_copy(b"{\"registry\":", A).is_err());
}

#[test]
fn a_reset_by_another_server_drops_everything() {
    let mut cluster = Cluster::new();
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice")]));
    let out = cluster.apply(entry(C, T0 + 1, vec![reset(9)]));
    assert!(out[0].reset_by_other && out[1].reset_by_other);
    assert!(!out[2].reset_by_other, "C reset it itself");
    assert!(!cluster.copies[0].registry().is_online("alice"));
    assert_eq!(cluster.copies[0].members().collect::<Vec<_>>(), vec![C]);
}

#[test]
fn a_server_counted_dead_learns_it_and_the_last_to_leave_ends_the_calls() {
    let mut cluster = Cluster::new();
    let (alice, bob) = (session(A, 1), session(A, 2));
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice"), open(A, 2, "bob")]));
    let out = cluster.apply(entry(A, T0 + 1, vec![request(alice, invite("bob"))]));
    let call = call_id(&out[0], alice);
    cluster.apply(entry(A, T0 + 2, vec![request(bob, CallRequest::Accept { call_id: call })]));
    // A stalls; B's and C's beats count it dead, and A's copy learns it at the same entry.
    let out = beat_until_dead(&mut cluster, &[B, C], T0 + 1_000);
    assert!(out[0].declared_dead);
    assert!(!out[1].declared_dead);
    assert!(out.iter().all(|copy| copy.counted_dead == [A]), "every copy counts A dead, once");
    // C leaves, then B: B is the last and ends the call, writing both records.
    cluster.apply(entry(C, T0 + 7_000, vec![Item::Leave]));
    let out = cluster.apply(entry(B, T0 + 7_001, vec![Item::Leave]));
    assert_eq!(out[1].records.len(), 2, "the last server writes the ended call's records");
    assert_eq!(cluster.copies[1].registry().live_calls(), 0);
}

#[test]
fn an_entry_delivered_again_changes_nothing_and_a_gap_stops_the_copy() {
    let mut cluster = Cluster::new();
    let alice = session(A, 1);
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice")]));
    let invite_entry = entry(A, T0 + 1, vec![request(alice, invite("bob"))]);
    cluster.apply(invite_entry.clone());
    // The reader made itself again and delivered the invite once more.
    let again = cluster.copies[0].apply(cluster.seq, invite_entry);
    assert!(again.deliveries.is_empty() && !again.log_broken);
    assert_eq!(cluster.copies[0].registry().live_calls(), 1, "one call, not two");
    // An unreadable entry moves the sequence on; a missing one breaks the copy.
    assert!(!cluster.copies[0].skip(cluster.seq + 1).log_broken);
    let gap = cluster.copies[0].apply(cluster.seq + 3, entry(B, T0 + 2, vec![]));
    assert!(gap.log_broken);
}

#[test]
fn a_removal_every_server_publishes_is_acted_on_once() {
    let mut cluster = Cluster::new();
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice")]));
    let (carol, watch) = (session(C, 1), Item::Input(RegistryInput::Subscribe { session: session(C, 1), users: vec!["alice".into()] }));
    cluster.apply(entry(C, T0, vec![open(C, 1, "carol"), watch]));
    let mut unregistered = 0;
    for node in [A, B, C] {
        let out = cluster.apply(entry(node, T0 + 1, vec![Item::Input(RegistryInput::AccountRemoved { user: "alice".into(), event: 4 })]));
        unregistered += frames_for(&out[2], carol).iter().filter(|m| matches!(m, ServerMessage::Presence { .. })).count();
    }
    assert_eq!(unregistered, 1, "carol hears it once");
    // A later account of the same id is not removed by a late copy of the old event.
    cluster.apply(entry(B, T0 + 2, vec![open(B, 5, "alice")]));
    cluster.apply(entry(C, T0 + 3, vec![Item::Input(RegistryInput::AccountRemoved { user: "alice".into(), event: 4 })]));
    assert!(cluster.copies[0].registry().is_online("alice"));
}

#[test]
fn two_resets_leave_equal_copies_with_equal_time() {
    // A and B start together; A's copy applies both resets, B's only its own.
    let mut a = Replica::new(A, RegistrySettings::default(), 1);
    let mut b = Replica::new(B, RegistrySettings::default(), 2);
    a.apply(1, entry(A, T0 + 500, vec![reset(1)]));
    a.apply(2, entry(A, T0 + 900, vec![]));
    let out = a.apply(3, entry(B, T0 + 100, vec![reset(2)]));
    assert!(out.reset_by_other);
    b.apply(3, entry(B, T0 + 100, vec![reset(2)]));
    assert_eq!(a.now(), T0 + 100);
    assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap());
}

#[test]
fn a_reset_ends_the_calls_it_drops_with_their_records() {
    let mut cluster = Cluster::new();
    let (_, bob, call) = cluster.ring((A, "alice"), (B, "bob"));
    cluster.apply(entry(B, T0 + 2, vec![request(bob, CallRequest::Accept { call_id: call })]));
    let out = cluster.apply(entry(C, T0 + 3, vec![reset(9)]));
    assert_eq!(record_users(&out[0]), ["alice"]);
    assert_eq!(record_users(&out[1]), ["bob"]);
    assert_eq!(cluster.copies[2].registry().live_calls(), 0);
}

#[test]
fn a_server_that_leaves_is_not_written_for_again() {
    let mut cluster = Cluster::new();
    let alice = session(A, 1);
    cluster.apply(entry(A, T0, vec![open(A, 1, "alice")]));
    let out = cluster.apply(entry(A, T0 + 1, vec![request(alice, invite("dave"))]));
    let call = call_id(&out[0], alice);
    let out = cluster.apply(entry(A, T0 + 2, vec![request(alice, CallRequest::Cancel { call_id: call })]));
    assert_eq!(record_users(&out[0]), ["alice", "dave"]);
    let out = cluster.apply(entry(A, T0 + 3, vec![Item::Input(RegistryInput::Close { session: alice }), Item::Leave]));
    assert!(out[1].records.is_empty() && out[2].records.is_empty(), "A wrote them before it left");
}

#[test]
fn a_copy_carries_the_clusters_settings() {
    let mut cluster = Cluster::new();
    let settings = RegistrySettings { max_participants: 4, ..RegistrySettings::default() };
    cluster.apply(entry(A, T0, vec![Item::Reset { call_id_prefix: 3, settings: settings.clone() }]));
    let copy = Replica::from_copy(&cluster.copies[0].to_copy(), B).unwrap();
    assert_eq!(copy.settings(), &settings);
}

#[test]
fn a_registry_input_sits_in_the_log_under_its_own_tag_and_reads_back() {
    let sent = entry(
        A,
        T0,
        vec![
            Item::Input(RegistryInput::Close { session: session(A, 1) }),
            Item::Tick,
            request(session(A, 1), invite("bob")),
            Item::Input(RegistryInput::Subscribe { session: session(A, 1), users: vec!["carol".into()] }),
            Item::Input(RegistryInput::AccountRemoved { user: "dave".into(), event: 7 }),
        ],
    );
    let json = serde_json::to_value(&sent).unwrap();
    assert_eq!(json["items"][0], serde_json::json!({"k": "close", "session": session(A, 1)}));
    let tags: Vec<&str> = json["items"].as_array().unwrap().iter().map(|i| i["k"].as_str().unwrap()).collect();
    // Each input's tag must stay its own: one equal to an item's would be read as that item.
    assert_eq!(tags, ["close", "tick", "request", "subscribe", "account_removed"]);
    assert_eq!(serde_json::from_value::<Entry>(json).unwrap(), sent);
    assert!(serde_json::from_value::<Entry>(serde_json::json!({"node": A, "now": T0, "items": [{"k": "shout"}]})).is_err(), "an unknown tag is refused");
}
