//! A slow database delays only what needs it: a session whose own request waits on the store
//! still gets every frame its call sends meanwhile, and is not dropped as too slow.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{place_call, TestServer, T0};
use hark_protocol::{CallQuality, CallRecord, UserProfile};
use hark_server::clock::ManualClock;
use hark_server::config::Config;
use hark_server::store::{AccountState, ContactRow, Storage, Store, StoreError};
use serde_json::json;
use tokio::sync::Semaphore;

/// SQLite whose `history` waits until the test lets it through; everything else as it is.
#[derive(Debug)]
struct HeldHistory {
    inner: Store,
    gate: Semaphore,
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
        self.inner.write_records(records).await
    }
    async fn set_record_quality(&self, user: &str, call_id: &str, quality: &CallQuality) -> Result<bool, StoreError> {
        self.inner.set_record_quality(user, call_id, quality).await
    }
    async fn delete_records(&self, user: &str, call_ids: &[String]) -> Result<(), StoreError> {
        self.inner.delete_records(user, call_ids).await
    }
}

/// More frames than a session may have queued (`SESSION_QUEUE`, 256).
const SIGNALS: usize = 400;

#[tokio::test]
async fn a_session_waiting_on_a_slow_database_still_gets_its_call_s_frames() {
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new(HeldHistory { inner: Store::open(dir.path()).await.unwrap(), gate: Semaphore::new(0) });
    let store = Store::from_shared(Arc::clone(&held) as Arc<dyn Storage>);
    let server = TestServer::start_on(Config::default(), dir, ManualClock::new(T0), store).await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let call = place_call(&mut alice, &mut [&mut bob], "audio").await;
    bob.request(json!({"type":"call.accept","call_id":call})).await;
    alice.expect("call.accepted").await;

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
