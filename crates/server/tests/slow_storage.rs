//! A slow or failing database: a session whose own request waits on the store still gets every
//! frame its call sends meanwhile, and is not dropped as too slow; records that cannot be
//! written hold their events back, make `/healthz` fail, and do not stop a shutdown for good.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{place_call, Client, TestServer, T0};
use hark_protocol::{CallQuality, CallRecord, UserProfile};
use hark_server::clock::ManualClock;
use hark_server::config::Config;
use hark_server::store::{AccountState, ContactRow, Storage, Store, StoreError};
use serde_json::json;
use tokio::sync::Semaphore;

/// SQLite whose `history` waits until the test lets it through, and whose record writes fail
/// while `failing` is set; everything else as it is.
#[derive(Debug)]
struct HeldHistory {
    inner: Store,
    gate: Semaphore,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl Storage for HeldHistory {
    async fn history(&self, user: &str, before: Option<i64>, limit: u32) -> Result<Vec<CallRecord>, StoreError> {
        let _through = self.gate.acquire().await.expect("gate open");
        self.inner.history(user, before, limit).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn create_user(&self, id: &str, hash: Option<&str>, nickname: Option<&str>, now: i64) -> Result<bool, StoreError> {
        self.inner.create_user(id, hash, nickname, now).await
    }
    async fn insert_user_if_missing(&self, id: &str, now: i64) -> Result<(), StoreError> {
        self.inner.insert_user_if_missing(id, now).await
    }
    async fn account_state(&self, id: &str) -> Result<Option<AccountState>, StoreError> {
        self.inner.account_state(id).await
    }
    async fn user_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.user_exists(id).await
    }
    async fn password_hash(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        self.inner.password_hash(id).await
    }
    async fn remove_user(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.inner.remove_user(id, now).await
    }
    async fn last_account_event(&self) -> Result<i64, StoreError> {
        self.inner.last_account_event().await
    }
    async fn removed_accounts_after(&self, seq: i64) -> Result<Vec<(i64, String)>, StoreError> {
        self.inner.removed_accounts_after(seq).await
    }
    async fn list_users(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        self.inner.list_users().await
    }
    async fn existing_users(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        self.inner.existing_users(ids).await
    }
    async fn set_profile(&self, id: &str, nickname: Option<&str>, avatar: Option<&str>) -> Result<(), StoreError> {
        self.inner.set_profile(id, nickname, avatar).await
    }
    async fn profiles(&self, ids: &[String]) -> Result<Vec<UserProfile>, StoreError> {
        self.inner.profiles(ids).await
    }
    async fn contacts(&self, owner: &str) -> Result<Vec<ContactRow>, StoreError> {
        self.inner.contacts(owner).await
    }
    async fn contact_count(&self, owner: &str) -> Result<usize, StoreError> {
        self.inner.contact_count(owner).await
    }
    async fn has_contact(&self, owner: &str, contact: &str) -> Result<bool, StoreError> {
        self.inner.has_contact(owner, contact).await
    }
    async fn add_contact(&self, owner: &str, contact: &str, alias: Option<&str>, now: i64) -> Result<(), StoreError> {
        self.inner.add_contact(owner, contact, alias, now).await
    }
    async fn remove_contact(&self, owner: &str, contact: &str) -> Result<(), StoreError> {
        self.inner.remove_contact(owner, contact).await
    }
    async fn write_records(&self, records: &[(String, CallRecord)]) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("disk full".into()));
        }
        self.inner.write_records(records).await
    }
    async fn set_record_quality(&self, user: &str, call_id: &str, quality: &CallQuality) -> Result<bool, StoreError> {
        self.inner.set_record_quality(user, call_id, quality).await
    }
    async fn delete_records(&self, user: &str, call_ids: &[String]) -> Result<(), StoreError> {
        self.inner.delete_records(user, call_ids).await
    }
}

async fn start() -> (Arc<HeldHistory>, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let inner = Store::open(dir.path()).await.unwrap();
    let held = Arc::new(HeldHistory { inner, gate: Semaphore::new(0), failing: AtomicBool::new(false) });
    let store = Store::from_shared(Arc::clone(&held) as Arc<dyn Storage>);
    let server = TestServer::start_on(Config::default(), dir, ManualClock::new(T0), store).await;
    (held, server)
}

/// alice and bob in a call on a server whose storage the test holds.
async fn in_a_call() -> (Arc<HeldHistory>, TestServer, Client, Client, String) {
    let (held, server) = start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;
    (held, server, alice, bob, call)
}

async fn health(server: &TestServer) -> (u16, String) {
    let answer = reqwest::get(server.http("/healthz")).await.expect("healthz");
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test]
async fn records_that_cannot_be_written_hold_their_events_and_fail_the_health_check() {
    let (held, server, mut alice, mut bob, call) = in_a_call().await;
    assert_eq!(health(&server).await.0, 200);

    held.failing.store(true, Ordering::SeqCst);
    alice.send(json!({"type":"call.hangup","call_id":call,"id":"bye"})).await;
    // The hangup's answer and bob's news wait behind the records; two seconds of failing on the
    // server's clock, and the health check says why.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        server.clock.advance(500);
        let (status, reason) = health(&server).await;
        if status == 503 {
            assert!(reason.starts_with("call records not written"), "{reason}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/healthz stayed ok while records failed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The disk has room again: the next try writes them, the events go out, health is back.
    held.failing.store(false, Ordering::SeqCst);
    server.clock.advance(2_000);
    assert_eq!(bob.expect("call.left").await["user"], "alice");
    let answer = alice.next().await;
    assert_eq!((answer["type"].as_str(), answer["re"].as_str()), (Some("ok"), Some("bye")), "{answer}");
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while health(&server).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "/healthz did not recover");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_shutdown_gives_up_records_that_cannot_be_written_instead_of_hanging() {
    let (held, mut server, mut alice, _bob, _call) = in_a_call().await;

    held.failing.store(true, Ordering::SeqCst);
    let clock = Arc::clone(&server.clock);
    let stopping = tokio::spawn(async move {
        server.stop().await;
        server
    });
    // The live call's records fail at every try; ten seconds of the clock later they are given
    // up and the shutdown completes.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while !stopping.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "the shutdown hung on records it could not write");
        clock.advance(1_000);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stopping.await.unwrap();
    assert_eq!(alice.expect("kicked").await["reason"], "shutdown");
}

/// More frames than a session may have queued (`SESSION_QUEUE`, 256).
const SIGNALS: usize = 400;

#[tokio::test]
async fn a_session_waiting_on_a_slow_database_still_gets_its_call_s_frames() {
    let (held, _server, mut alice, mut bob, call) = in_a_call().await;

    // Alice asks for her history, which the database holds; bob signals her meanwhile.
    alice.send(json!({"type":"calls.history","id":"held"})).await;
    for n in 0..SIGNALS {
        let ok = bob.request(json!({"type":"signal","call_id":call,"to":"alice","payload":{"kind":"candidate","n":n}})).await;
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    for n in 0..SIGNALS {
        let signal = alice.next().await;
        assert_eq!((signal["type"].as_str(), signal["payload"]["n"].as_u64()), (Some("signal"), Some(n as u64)), "{signal}");
    }
    // Only now does the database answer, and alice's answer follows; her session lived on.
    held.gate.add_permits(1);
    let answer = alice.next().await;
    assert_eq!((answer["type"].as_str(), answer["re"].as_str()), (Some("ok"), Some("held")), "{answer}");
    let ok = alice.request(json!({"type":"call.hangup","call_id":call})).await;
    assert_eq!(ok["type"], "ok", "{ok}");
    bob.expect("call.left").await;
}
