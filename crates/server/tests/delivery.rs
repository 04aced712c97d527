//! Delivery between servers: frames for sessions of this server and of another, through a real
//! nats-server, in order; kicks; slow and unknown sessions; and a nats-server killed and started
//! again. What one process needs of it is held to the same rules by `LocalDelivery`.
#![cfg(feature = "cluster")]

mod common;

use std::time::Duration;

use common::nats::ThrowawayNats;
use common::PATIENCE;
use hark_protocol::KickReason;
use hark_server::delivery::{Delivery, LocalDelivery, NatsDelivery, SessionTag};
use hark_server::hub::Outbound;
use tokio::sync::mpsc;

fn frame(n: usize) -> Outbound {
    Outbound::Frame(format!("{{\"type\":\"signal\",\"n\":{n}}}"))
}

/// The next thing queued for a session, waiting up to [`PATIENCE`]; `None` if its channel closed.
async fn next(queue: &mut mpsc::Receiver<Outbound>) -> Option<String> {
    match tokio::time::timeout(PATIENCE, queue.recv()).await.expect("nothing arrived in time") {
        Some(Outbound::Frame(text)) => Some(text),
        Some(Outbound::Kick(reason)) => Some(format!("kicked:{}", reason.as_str())),
        None => None,
    }
}

async fn node(nats: &ThrowawayNats, tag: u32) -> NatsDelivery {
    let client = async_nats::connect(nats.url()).await.expect("connect to nats-server");
    NatsDelivery::start(client, SessionTag::new(tag)).await.expect("subscribe")
}

/// What any delivery does for its own sessions: frames in order, nothing for strangers, a kick
/// ends what a session hears, and a session that lets its queue fill is dropped.
async fn delivers_to_its_own_sessions(delivery: &mut dyn Delivery, tag: SessionTag) {
    let (one, two, slow) = (tag.session(1), tag.session(2), tag.session(3));
    let (sender, mut first) = mpsc::channel(256);
    delivery.open(one, sender).await;
    let (sender, mut second) = mpsc::channel(256);
    delivery.open(two, sender).await;
    for n in 0..100 {
        delivery.send(one, frame(n)).await;
    }
    delivery.send(tag.session(99), frame(0)).await;
    for n in 0..100 {
        assert_eq!(next(&mut first).await, Some(format!("{{\"type\":\"signal\",\"n\":{n}}}")));
    }
    delivery.send(two, Outbound::Kick(KickReason::Replaced)).await;
    delivery.send(two, frame(1)).await;
    assert_eq!(next(&mut second).await.as_deref(), Some("kicked:replaced"));
    assert_eq!(next(&mut second).await, None, "nothing after the kick");

    let (sender, mut slow_queue) = mpsc::channel(4);
    delivery.open(slow, sender).await;
    for n in 0..10 {
        delivery.send(slow, frame(n)).await;
    }
    for _ in 0..4 {
        assert!(next(&mut slow_queue).await.is_some());
    }
    assert_eq!(next(&mut slow_queue).await, None, "dropped when its queue filled");

    delivery.close(one).await;
    delivery.send(one, frame(0)).await;
    assert_eq!(next(&mut first).await, None, "closed sessions get nothing");
}

#[tokio::test]
async fn local_delivery_serves_its_own_sessions() {
    let tag = SessionTag::new(7);
    delivers_to_its_own_sessions(&mut LocalDelivery::default(), tag).await;
}

#[tokio::test]
async fn nats_delivery_serves_its_own_sessions_and_another_server_s() {
    let nats = ThrowawayNats::start();
    let (mut first, mut second) = (node(&nats, 1).await, node(&nats, 2).await);
    delivers_to_its_own_sessions(&mut first, SessionTag::new(1)).await;

    // The first server's hub sends to sessions of the second.
    let there = SessionTag::new(2);
    let (sender, mut remote) = mpsc::channel(2048);
    second.open(there.session(1), sender).await;
    for n in 0..1000 {
        first.send(there.session(1), frame(n)).await;
    }
    for n in 0..1000 {
        assert_eq!(next(&mut remote).await, Some(format!("{{\"type\":\"signal\",\"n\":{n}}}")), "in order across servers");
    }
    first.send(there.session(1), Outbound::Kick(KickReason::AccountRemoved)).await;
    assert_eq!(next(&mut remote).await.as_deref(), Some("kicked:account_removed"));
    assert_eq!(next(&mut remote).await, None, "a kicked session hears nothing more");

    // A slow session of the second server is dropped there, whoever sends.
    let (sender, mut slow) = mpsc::channel(4);
    second.open(there.session(2), sender).await;
    for n in 0..10 {
        first.send(there.session(2), frame(n)).await;
    }
    for _ in 0..4 {
        assert!(next(&mut slow).await.is_some());
    }
    assert_eq!(next(&mut slow).await, None);
}

#[tokio::test]
async fn deliveries_resume_once_a_killed_nats_server_is_back() {
    let mut nats = ThrowawayNats::start();
    let (mut first, mut second) = (node(&nats, 1).await, node(&nats, 2).await);
    let there = SessionTag::new(2).session(1);
    let (sender, mut remote) = mpsc::channel(4096);
    second.open(there, sender).await;
    first.send(there, frame(0)).await;
    assert!(next(&mut remote).await.is_some());

    nats.kill();
    nats.restart();
    // Core NATS is at most once: what is sent while a server reconnects may be lost, so probe
    // until one arrives (both clients reconnected and the second subscribed again).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        first.send(there, frame(1)).await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), remote.recv()).await {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery after nats-server came back");
    }
    // Probes sent while it reconnected may still come: a marker behind them shows where they end.
    first.send(there, Outbound::Frame("marker".into())).await;
    while next(&mut remote).await.as_deref() != Some("marker") {}
    for n in 2..200 {
        first.send(there, frame(n)).await;
    }
    for n in 2..200 {
        assert_eq!(next(&mut remote).await, Some(format!("{{\"type\":\"signal\",\"n\":{n}}}")));
    }
}
