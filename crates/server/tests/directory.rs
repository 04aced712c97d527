//! The user directory: the same rules in memory and in JetStream KV (a throw-away nats-server),
//! two servers seeing each other's sessions, servers changing one user's sessions at once, a
//! server that dies taking its sessions with it, and a nats-server restart keeping what it held.
#![cfg(feature = "cluster")]

mod common;

use std::time::Duration;

use common::nats::ThrowawayNats;
use common::PATIENCE;
use hark_server::delivery::SessionTag;
use hark_server::directory::{Directory, DirectoryEntry, KvDirectory, LocalDirectory};

/// Long enough that a busy test machine never misses two heartbeats (one every third of it).
const NODE_TTL: Duration = Duration::from_secs(2);

fn entry(session: u64, device: &str) -> DirectoryEntry {
    DirectoryEntry { session, device: device.into() }
}

async fn server(nats: &ThrowawayNats, tag: u32) -> KvDirectory {
    let client = async_nats::connect(nats.url()).await.expect("connect to nats-server");
    KvDirectory::start(client, SessionTag::new(tag), NODE_TTL).await.expect("join the directory")
}

/// What any directory does for one server's sessions.
async fn keeps_sessions(directory: &dyn Directory, tag: SessionTag) {
    let (alice, bob) = ("alice".to_string(), "bob".to_string());
    let (laptop, phone) = (tag.session(1), tag.session(2));
    assert!(directory.sessions(&alice).await.unwrap().is_empty(), "nobody yet");
    directory.add(&alice, laptop, "laptop").await.unwrap();
    directory.add(&alice, phone, "phone").await.unwrap();
    directory.add(&alice, phone, "phone").await.unwrap();
    directory.add(&bob, tag.session(3), "desk").await.unwrap();
    assert_eq!(directory.sessions(&alice).await.unwrap(), [entry(laptop, "laptop"), entry(phone, "phone")], "in order, once each");
    directory.remove(&alice, laptop).await.unwrap();
    directory.remove(&alice, tag.session(99)).await.unwrap();
    assert_eq!(directory.sessions(&alice).await.unwrap(), [entry(phone, "phone")]);
    directory.remove(&alice, phone).await.unwrap();
    assert!(directory.sessions(&alice).await.unwrap().is_empty());
    assert_eq!(directory.sessions(&bob).await.unwrap(), [entry(tag.session(3), "desk")], "users apart");
}

#[tokio::test]
async fn a_local_directory_keeps_this_server_s_sessions() {
    keeps_sessions(&LocalDirectory::default(), SessionTag::new(5)).await;
}

#[tokio::test]
async fn servers_share_one_directory_and_race_on_one_user_without_losing_a_session() {
    let nats = ThrowawayNats::start();
    let (first, second) = (server(&nats, 1).await, server(&nats, 2).await);
    keeps_sessions(&first, SessionTag::new(1)).await;

    // Each server adds ten of carol's sessions at once: all twenty are there, seen from both.
    let (one, two) = (SessionTag::new(1), SessionTag::new(2));
    let carol = "carol".to_string();
    let adds = (1..=10).flat_map(|n| [(&first, one.session(n)), (&second, two.session(n))]);
    let results = futures_util::future::join_all(adds.map(|(server, session)| {
        let carol = carol.clone();
        async move { server.add(&carol, session, &format!("d{session:x}")).await }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for view in [&first, &second] {
        let mut seen: Vec<u64> = view.sessions(&carol).await.unwrap().iter().map(|e| e.session).collect();
        seen.sort();
        let mut expected: Vec<u64> = (1..=10).flat_map(|n| [one.session(n), two.session(n)]).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }
}

#[tokio::test]
async fn a_dead_server_s_sessions_stop_counting_and_a_nats_restart_keeps_the_rest() {
    let mut nats = ThrowawayNats::start();
    let (first, second) = (server(&nats, 1).await, server(&nats, 2).await);
    let dave = "dave".to_string();
    let (on_first, on_second) = (SessionTag::new(1).session(1), SessionTag::new(2).session(1));
    first.add(&dave, on_first, "laptop").await.unwrap();
    second.add(&dave, on_second, "phone").await.unwrap();
    assert_eq!(second.sessions(&dave).await.unwrap().len(), 2);

    // The first server dies without a word (its heartbeat stops): within the age limit and a
    // little, its session no longer counts; the second server's does.
    drop(first);
    let died = tokio::time::Instant::now();
    loop {
        let seen = second.sessions(&dave).await.unwrap();
        if seen == [entry(on_second, "phone")] {
            break;
        }
        assert!(died.elapsed() < NODE_TTL + PATIENCE, "the dead server's session still counted: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(died.elapsed() >= NODE_TTL / 3, "a live server's session never stops counting at once: {:?}", died.elapsed());
    // The next change of dave's sessions drops the dead server's entry from the store itself.
    second.add(&dave, SessionTag::new(2).session(2), "tablet").await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let bucket = async_nats::jetstream::new(client).get_key_value("hark_sessions").await.unwrap();
    let stored = bucket.get("u_64617665").await.unwrap().expect("dave's key");
    let stored: Vec<DirectoryEntry> = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored, [entry(on_second, "phone"), entry(SessionTag::new(2).session(2), "tablet")]);

    // nats-server killed and started again on its store: what it held is still there (once the
    // second server's heartbeat, which may have aged out meanwhile, is put again).
    nats.kill();
    nats.restart();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let seen = second.sessions(&dave).await;
        if matches!(&seen, Ok(seen) if *seen == stored) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the directory did not come back: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
