//! The storage contract: one suite run against SQLite and against a throw-away PostgreSQL, so
//! the single server and a cluster keep accounts, contacts and records the same way.

mod common;

use std::collections::HashSet;

#[cfg(feature = "cluster")]
use common::postgres::ThrowawayPostgres;
use hark_protocol::{CallQuality, CallRecord, CallResult, Direction, EndReason, Media};
use hark_server::store::{AccountState, ContactRow, Store};
#[cfg(feature = "cluster")]
use hark_server::store::StoreError;

fn record(call_id: &str, started_at: i64) -> CallRecord {
    CallRecord {
        call_id: call_id.into(),
        caller: "alice".into(),
        invitees: vec!["bob".into()],
        media: Media::Video,
        started_at,
        connected_at: Some(started_at + 1_000),
        ended_at: started_at + 43_000,
        duration_s: 42,
        direction: Direction::Outgoing,
        result: CallResult::Completed,
        end_reason: Some(EndReason::Failed),
        quality: None,
    }
}

fn ids(history: &[CallRecord]) -> Vec<&str> {
    history.iter().map(|r| r.call_id.as_str()).collect()
}

async fn accounts_and_profiles(store: &Store) {
    assert!(store.create_user("alice", Some("h"), Some("Alice"), 1).await.unwrap());
    assert!(!store.create_user("alice", Some("h2"), None, 2).await.unwrap(), "taken");
    assert_eq!(store.password_hash("alice").await.unwrap(), Some(Some("h".into())), "the first registration stands");
    assert_eq!(store.ensure_user("bob", 3).await.unwrap(), AccountState::FRESH);
    assert_eq!(store.ensure_user("bob", 4).await.unwrap(), AccountState::FRESH, "a second sign-in creates nothing");
    assert_eq!(store.password_hash("bob").await.unwrap(), Some(None));
    assert_eq!(store.password_hash("nobody").await.unwrap(), None);
    assert_eq!(
        store.list_users().await.unwrap(),
        [("alice".to_string(), Some("Alice".to_string()), 1), ("bob".to_string(), None, 3)]
    );

    let profiles = store.profiles(&["bob".into(), "nobody".into(), "alice".into()]).await.unwrap();
    assert_eq!(profiles.iter().map(|p| (p.user.as_str(), p.nickname.as_str())).collect::<Vec<_>>(), [("bob", "bob"), ("alice", "Alice")]);
    assert!(store.profiles(&[]).await.unwrap().is_empty());
    store.set_profile("bob", Some("Bob"), None).await.unwrap();
    store.set_profile("bob", None, Some("data:image/png;base64,AAAA")).await.unwrap();
    let bob = &store.profiles(&["bob".into()]).await.unwrap()[0];
    assert_eq!((bob.nickname.as_str(), bob.avatar.as_deref()), ("Bob", Some("data:image/png;base64,AAAA")), "each field set alone");

    // Ids are compared as they are: no case folding, quotes and other scripts are plain text.
    for odd in ["O'Brien", "\"quoted\"", "Zoë", "用户"] {
        store.ensure_user(odd, 5).await.unwrap();
    }
    let asked: Vec<String> = ["o'brien", "O'Brien", "\"quoted\"", "用户", "zoë"].map(String::from).into();
    assert_eq!(store.existing_users(&asked).await.unwrap(), HashSet::from(["O'Brien", "\"quoted\"", "用户"].map(String::from)));
    assert!(store.existing_users(&[]).await.unwrap().is_empty());
}

async fn contacts(store: &Store) {
    store.add_contact("alice", "bob", Some("Bobby"), 4).await.unwrap();
    store.add_contact("alice", "Zoë", None, 4).await.unwrap();
    store.add_contact("alice", "ghost", None, 4).await.unwrap();
    // Ids sort by code point, as in SQLite, whatever PostgreSQL's locale: "Z" before "b".
    assert_eq!(
        store.contacts("alice").await.unwrap(),
        [
            ContactRow { user: "Zoë".into(), nickname: "Zoë".into(), alias: None, registered: true },
            ContactRow { user: "bob".into(), nickname: "Bob".into(), alias: Some("Bobby".into()), registered: true },
            ContactRow { user: "ghost".into(), nickname: "ghost".into(), alias: None, registered: false },
        ]
    );
    store.add_contact("alice", "bob", Some("Robert"), 9).await.unwrap();
    assert_eq!(store.contacts("alice").await.unwrap()[1].alias.as_deref(), Some("Robert"), "adding again renames");
    store.remove_contact("alice", "ghost").await.unwrap();
    store.remove_contact("alice", "ghost").await.unwrap();
    assert_eq!((store.contact_count("alice").await.unwrap(), store.has_contact("alice", "bob").await.unwrap()), (2, true));
    assert!(!store.has_contact("bob", "alice").await.unwrap(), "contacts are one-way");
}

async fn records(store: &Store) {
    store.write_records(&[("alice".into(), record("c1", 10)), ("alice".into(), record("c2", 20))]).await.unwrap();
    store.write_records(&[]).await.unwrap();
    let history = store.history("alice", None, 50).await.unwrap();
    assert_eq!(ids(&history), ["c2", "c1"]);
    assert_eq!(history[1], record("c1", 10));
    assert_eq!(store.history("alice", Some(20), 50).await.unwrap().len(), 1);
    assert!(store.history("bob", None, 50).await.unwrap().is_empty(), "records are per person");

    // A call's quality goes into the person's own record of a call they were connected in.
    let quality = CallQuality { mos_average: 4.2, mos_worst: 2.9 };
    assert!(store.set_record_quality("alice", "c1", &quality).await.unwrap());
    assert!(!store.set_record_quality("bob", "c1", &quality).await.unwrap(), "not bob's record");
    assert!(!store.set_record_quality("alice", "c9", &quality).await.unwrap(), "no such call");
    let mut missed = record("c3", 30);
    (missed.connected_at, missed.result, missed.end_reason) = (None, CallResult::Missed, None);
    store.write_records(&[("alice".into(), missed.clone())]).await.unwrap();
    assert!(!store.set_record_quality("alice", "c3", &quality).await.unwrap(), "never connected");
    let history = store.history("alice", None, 50).await.unwrap();
    assert_eq!(history[0], missed, "a record without an end reason reads back without one");
    assert_eq!(history[2], CallRecord { quality: Some(quality), ..record("c1", 10) });

    // A later record of the same call replaces the earlier one whole, in one batch or two.
    let rejoined = CallRecord { duration_s: 50, ended_at: 60_000, ..record("c1", 10) };
    store.write_records(&[("alice".into(), rejoined.clone())]).await.unwrap();
    assert_eq!(store.history("alice", None, 50).await.unwrap()[2], rejoined, "replaced, its old quality gone");
    // Written again, as a second node or a replay after a node died writes it: the quality
    // stays; an older version that arrives late changes nothing.
    assert!(store.set_record_quality("alice", "c1", &quality).await.unwrap());
    store.write_records(&[("alice".into(), rejoined.clone())]).await.unwrap();
    store.write_records(&[("alice".into(), record("c1", 10))]).await.unwrap();
    assert_eq!(store.history("alice", None, 50).await.unwrap()[2], CallRecord { quality: Some(quality), ..rejoined.clone() });
    let first = CallRecord { result: CallResult::Missed, connected_at: None, end_reason: None, ..record("c4", 40) };
    let second = CallRecord { direction: Direction::Incoming, ..record("c4", 40) };
    store.write_records(&[("bob".into(), first), ("alice".into(), record("c5", 50)), ("bob".into(), second.clone())]).await.unwrap();
    assert_eq!(store.history("bob", None, 50).await.unwrap(), [second]);

    // Newest first; records started in the same millisecond by call id, highest first; a page
    // stops at the limit.
    store.write_records(&[("carol".into(), record("b", 70)), ("carol".into(), record("a", 70)), ("carol".into(), record("c", 80))]).await.unwrap();
    assert_eq!(ids(&store.history("carol", None, 50).await.unwrap()), ["c", "b", "a"]);
    assert_eq!(ids(&store.history("carol", None, 2).await.unwrap()), ["c", "b"]);
    assert_eq!(ids(&store.history("carol", Some(80), 2).await.unwrap()), ["b", "a"]);

    store.delete_records("alice", &["c3".into(), "c2".into(), "nope".into()]).await.unwrap();
    store.delete_records("alice", &[]).await.unwrap();
    store.delete_records("bob", &["c1".into()]).await.unwrap();
    assert_eq!(ids(&store.history("alice", None, 50).await.unwrap()), ["c5", "c1"], "only alice's, only those named");
}

async fn removal(store: &Store) {
    // Removal tombstones the account and its tokens stop working; a new registration revives
    // it, refusing tokens from before the removal; running servers learn of it as an event.
    assert_eq!(store.last_account_event().await.unwrap(), 0);
    assert!(store.remove_user("bob", 5_000).await.unwrap());
    assert!(!store.remove_user("bob", 5_500).await.unwrap(), "removed once");
    assert!(!store.remove_user("nobody", 5_500).await.unwrap());
    let events = store.removed_accounts_after(0).await.unwrap();
    assert_eq!(events.iter().map(|(_, user)| user.as_str()).collect::<Vec<_>>(), ["bob"]);
    let first = events[0].0;
    assert_eq!(store.last_account_event().await.unwrap(), first);
    assert!(store.removed_accounts_after(first).await.unwrap().is_empty());
    assert_eq!(store.ensure_user("bob", 6_000).await.unwrap(), AccountState::Removed);
    assert_eq!(store.account_state("bob").await.unwrap(), Some(AccountState::Removed));
    assert_eq!(store.account_state("nobody").await.unwrap(), None);
    assert!(!store.user_exists("bob").await.unwrap() && store.user_exists("alice").await.unwrap());
    assert_eq!(store.password_hash("bob").await.unwrap(), None);
    assert!(store.profiles(&["bob".into()]).await.unwrap().is_empty());
    assert!(!store.list_users().await.unwrap().iter().any(|(id, ..)| id == "bob"));
    assert_eq!(store.existing_users(&["bob".into(), "alice".into()]).await.unwrap(), HashSet::from(["alice".to_string()]));
    let bob_row = store.contacts("alice").await.unwrap().into_iter().find(|c| c.user == "bob").unwrap();
    assert!(!bob_row.registered, "a removed contact stays in the list, unregistered");
    assert_eq!(store.history("alice", None, 50).await.unwrap().len(), 2, "other people's records stay");

    assert!(store.create_user("bob", Some("h3"), None, 7_000).await.unwrap());
    let revived = store.ensure_user("bob", 8_000).await.unwrap();
    assert_eq!(revived, AccountState::Active { tokens_revoked_before: Some(5_000) });
    assert!(!revived.accepts_token(Some(5)), "issued in the second of the removal");
    assert!(!revived.accepts_token(None), "a token that does not say when it was issued");
    assert!(revived.accepts_token(Some(6)));
    assert!(AccountState::FRESH.accepts_token(None));
    assert!(!AccountState::Removed.accepts_token(Some(i64::MAX)));
    assert_eq!(store.profiles(&["bob".into()]).await.unwrap()[0].nickname, "bob", "the old profile went with the removal");

    // Removals at the same moment each get their own event.
    let users: Vec<String> = (0..12).map(|i| format!("gone{i}")).collect();
    for user in &users {
        store.ensure_user(user, 9_000).await.unwrap();
    }
    let removals = users.iter().map(|user| {
        let store = store.clone();
        let user = user.clone();
        tokio::spawn(async move { store.remove_user(&user, 9_500).await })
    });
    for removal in futures_util::future::join_all(removals).await {
        assert!(removal.unwrap().unwrap());
    }
    let events = store.removed_accounts_after(first).await.unwrap();
    assert_eq!(events.iter().map(|(_, u)| u.clone()).collect::<HashSet<_>>(), users.iter().cloned().collect::<HashSet<_>>());
    assert_eq!(store.last_account_event().await.unwrap(), events.last().unwrap().0);
}

/// Everything the server asks of its storage, in the order a server's life asks it.
async fn meets_the_contract(store: Store) {
    accounts_and_profiles(&store).await;
    contacts(&store).await;
    records(&store).await;
    removal(&store).await;
    store.close().await;
}

#[tokio::test]
async fn sqlite_meets_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    meets_the_contract(Store::open(dir.path()).await.unwrap()).await;
    // What was written is there after a reopen, schema and all.
    let store = Store::open(dir.path()).await.unwrap();
    assert_eq!(store.history("alice", None, 50).await.unwrap().len(), 2);
}

#[tokio::test]
#[cfg(feature = "cluster")]
async fn postgresql_meets_the_storage_contract() {
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("contract").await;
    meets_the_contract(Store::connect(&url).await.unwrap()).await;
    // A second node connecting finds the schema in place and the same data.
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.history("alice", None, 50).await.unwrap().len(), 2);
}

/// A server reads "removal events after the last I saw", so in PostgreSQL, where event numbers are
/// taken at insert and seen at commit, a removal must wait for one in flight: it takes a lock on
/// the events. Here another removal has taken its number and not committed yet, and the removal
/// is seen waiting for it; once it commits, both are there, in number order.
#[tokio::test]
#[cfg(feature = "cluster")]
async fn a_postgresql_removal_waits_for_one_in_flight_so_event_numbers_commit_in_order() {
    use sqlx::Connection;
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("removals").await;
    let store = Store::connect(&url).await.unwrap();
    store.ensure_user("erin", 1).await.unwrap();
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("INSERT INTO account_events (\"user\", kind, at) VALUES ('frank', 'removed', 1)").execute(&mut other).await.unwrap();

    let removal = tokio::spawn({
        let store = store.clone();
        async move { store.remove_user("erin", 2).await }
    });
    let mut watch = sqlx::PgConnection::connect(&url).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'account_events'::regclass")
            .fetch_one(&mut watch)
            .await
            .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(!removal.is_finished(), "the removal did not wait for the one in flight");
        assert!(tokio::time::Instant::now() < deadline, "the removal never reached the lock");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!removal.is_finished());
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    assert!(removal.await.unwrap().unwrap(), "it goes through once the other commits");
    let events: Vec<String> = store.removed_accounts_after(0).await.unwrap().into_iter().map(|(_, user)| user).collect();
    assert_eq!(events, ["frank", "erin"], "the one in flight first");
}

#[tokio::test]
#[cfg(feature = "cluster")]
async fn nodes_starting_together_migrate_one_database_once() {
    let postgres = ThrowawayPostgres::start();
    let url = postgres.create_database("together").await;
    let nodes = (0..3).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Store::connect(&url).await })
    });
    let stores: Vec<Store> = futures_util::future::join_all(nodes).await.into_iter().map(|node| node.unwrap().unwrap()).collect();
    assert!(stores[0].create_user("alice", None, None, 1).await.unwrap());
    assert!(stores[2].user_exists("alice").await.unwrap(), "one database behind all three");
}

#[tokio::test]
#[cfg(feature = "cluster")]
async fn a_database_url_that_is_not_postgresql_or_unreachable_is_a_clear_error() {
    let error = Store::connect("mysql://hark@127.0.0.1/hark").await.unwrap_err();
    assert!(matches!(error, StoreError::UnsupportedUrl(_)), "{error}");
    // Nothing listens on the port a listener just gave back.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = Store::connect(&format!("postgres://hark@127.0.0.1:{port}/hark")).await.unwrap_err();
    assert!(matches!(error, StoreError::Database(_)), "{error}");
}
