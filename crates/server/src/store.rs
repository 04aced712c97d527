//! Storage: accounts, profiles, contacts and call records in SQLite (WAL) through sqlx.
//!
//! Only this module speaks SQL. Lists of ids travel as one JSON array bound to a single parameter
//! and unpacked with `json_each`, so no query is built by string concatenation. Records are
//! written in batches inside one transaction: the hub persists a whole batch before it sends that
//! batch's events, so a client that has seen `call.ended` can count on the record being on disk.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hark_protocol::{CallQuality, CallRecord, UserProfile};
use serde::de::DeserializeOwned;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// What a sign-in finds about an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// Usable. An account whose id was removed before (and registered again) refuses tokens
    /// issued at or before `tokens_revoked_before` (Unix ms), and tokens that do not say when they
    /// were issued.
    Active {
        /// Set once the id has been removed.
        tokens_revoked_before: Option<i64>,
    },
    /// Removed by an operator: its tokens no longer work.
    Removed,
}

impl AccountState {
    /// A usable account whose id was never removed.
    pub const FRESH: AccountState = AccountState::Active { tokens_revoked_before: None };

    /// Whether a token issued at `iat` (Unix s; `None` if the token does not say) signs in here.
    pub fn accepts_token(self, iat: Option<i64>) -> bool {
        match self {
            AccountState::Removed => false,
            AccountState::Active { tokens_revoked_before: None } => true,
            AccountState::Active { tokens_revoked_before: Some(before) } => iat.is_some_and(|iat| iat.saturating_mul(1000) > before),
        }
    }
}

/// A contact row before presence is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRow {
    /// The contact's user id.
    pub user: String,
    /// Their nickname (their id if they set none).
    pub nickname: String,
    /// The owner's name for them.
    pub alias: Option<String>,
    /// Whether the contact's account still exists.
    pub registered: bool,
}

/// The database handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) `DIR/hark.db` in WAL mode and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(data_dir.join("hark.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a killed process (not a power cut) and keeps commits cheap.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Closes the pool, waiting for checked-out connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates an account, or revives a removed one. Returns false if the id is taken.
    pub async fn create_user(&self, id: &str, password_hash: Option<&str>, nickname: Option<&str>, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (id, password_hash, nickname, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET password_hash = ?2, nickname = ?3, avatar = NULL, created_at = ?4, removed_at = NULL
             WHERE users.removed_at IS NOT NULL",
        )
        .bind(id)
        .bind(password_hash)
        .bind(nickname)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// The account state for a sign-in by token, creating the account if there is none.
    pub async fn ensure_user(&self, id: &str, now: i64) -> Result<AccountState, StoreError> {
        sqlx::query("INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.account_state(id).await?.ok_or_else(|| StoreError::Corrupt(format!("account {id} vanished after its insert")))
    }

    /// The account state of an existing id (`None` if there was never such an account), without
    /// creating anything.
    pub async fn account_state(&self, id: &str) -> Result<Option<AccountState>, StoreError> {
        let row = sqlx::query("SELECT removed_at, tokens_revoked_before FROM users WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| match row.get::<Option<i64>, _>(0) {
            Some(_) => AccountState::Removed,
            None => AccountState::Active { tokens_revoked_before: row.get(1) },
        }))
    }

    /// Whether `id` is an active account.
    pub async fn user_exists(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The password hash of an active account: `None` if there is no such account,
    /// `Some(None)` if it has no password (created by a token).
    pub async fn password_hash(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = ?1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.get::<Option<String>, _>(0)))
    }

    /// Removes an account: tombstones it, forgets its password, profile and contacts, revokes
    /// every token issued until now, and records the removal for running servers to act on
    /// ([`Self::removed_accounts_after`]). Call records stay (they are other people's history
    /// too). Returns false if there was none.
    pub async fn remove_user(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE users SET removed_at = ?2, tokens_revoked_before = ?2, password_hash = NULL, nickname = NULL, avatar = NULL
             WHERE id = ?1 AND removed_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 1 {
            sqlx::query("DELETE FROM contacts WHERE owner = ?1").bind(id).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO account_events (user, kind, at) VALUES (?1, 'removed', ?2)")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(result.rows_affected() == 1)
    }

    /// The newest account event's number (0 if there is none).
    pub async fn last_account_event(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM account_events").fetch_one(&self.pool).await?;
        Ok(seq.unwrap_or(0))
    }

    /// Accounts removed after event `seq`: (event number, user id), oldest first, at most 1,000.
    pub async fn removed_accounts_after(&self, seq: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query("SELECT seq, user FROM account_events WHERE seq > ?1 AND kind = 'removed' ORDER BY seq LIMIT 1000")
            .bind(seq)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Active accounts: id, nickname and creation time, by id.
    pub async fn list_users(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        let rows = sqlx::query("SELECT id, nickname, created_at FROM users WHERE removed_at IS NULL ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Which of `ids` are active accounts.
    pub async fn existing_users(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query_scalar::<_, String>(
            "SELECT id FROM users WHERE removed_at IS NULL AND id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_array(ids))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Sets the nickname and/or avatar of an account.
    pub async fn set_profile(&self, id: &str, nickname: Option<&str>, avatar: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET nickname = COALESCE(?2, nickname), avatar = COALESCE(?3, avatar) WHERE id = ?1")
            .bind(id)
            .bind(nickname)
            .bind(avatar)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Profiles of the active accounts among `ids`, in the order asked.
    pub async fn profiles(&self, ids: &[String]) -> Result<Vec<UserProfile>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.id, COALESCE(u.nickname, u.id), u.avatar FROM json_each(?1) AS j
             JOIN users u ON u.id = j.value WHERE u.removed_at IS NULL ORDER BY j.key",
        )
        .bind(json_array(ids))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| UserProfile { user: r.get(0), nickname: r.get(1), avatar: r.get(2) }).collect())
    }

    /// The contacts of `owner`, by id.
    pub async fn contacts(&self, owner: &str) -> Result<Vec<ContactRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.contact, COALESCE(u.nickname, c.contact), c.alias, u.id IS NOT NULL AND u.removed_at IS NULL
             FROM contacts c LEFT JOIN users u ON u.id = c.contact WHERE c.owner = ?1 ORDER BY c.contact",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ContactRow { user: r.get(0), nickname: r.get(1), alias: r.get(2), registered: r.get(3) })
            .collect())
    }

    /// How many contacts `owner` has.
    pub async fn contact_count(&self, owner: &str) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts WHERE owner = ?1").bind(owner).fetch_one(&self.pool).await?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Whether `contact` is one of `owner`'s contacts.
    pub async fn has_contact(&self, owner: &str, contact: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE owner = ?1 AND contact = ?2")
            .bind(owner)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Adds (or renames) a contact.
    pub async fn add_contact(&self, owner: &str, contact: &str, alias: Option<&str>, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contacts (owner, contact, alias, added_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (owner, contact) DO UPDATE SET alias = ?3",
        )
        .bind(owner)
        .bind(contact)
        .bind(alias)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a contact (no error if it was not there).
    pub async fn remove_contact(&self, owner: &str, contact: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM contacts WHERE owner = ?1 AND contact = ?2")
            .bind(owner)
            .bind(contact)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes records in one transaction; a person's record of a call replaces an earlier one.
    pub async fn write_records(&self, records: &[(String, CallRecord)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (user, r) in records {
            sqlx::query(
                "INSERT OR REPLACE INTO call_records
                 (user, call_id, caller, invitees, media, started_at, connected_at, ended_at, duration_s, direction, result, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .bind(user)
            .bind(&r.call_id)
            .bind(&r.caller)
            .bind(json_array(&r.invitees))
            .bind(wire_name(&r.media))
            .bind(r.started_at)
            .bind(r.connected_at)
            .bind(r.ended_at)
            .bind(i64::try_from(r.duration_s).unwrap_or(i64::MAX))
            .bind(wire_name(&r.direction))
            .bind(wire_name(&r.result))
            .bind(r.end_reason.as_ref().map(wire_name))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Keeps how the call sounded in `user`'s record of `call_id`, if they were connected in it;
    /// whether there was such a record.
    pub async fn set_record_quality(&self, user: &str, call_id: &str, quality: &CallQuality) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE call_records SET mos_average = ?3, mos_worst = ?4 WHERE user = ?1 AND call_id = ?2 AND connected_at IS NOT NULL")
            .bind(user)
            .bind(call_id)
            .bind(quality.mos_average)
            .bind(quality.mos_worst)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `user`'s records started before `before` (ms), newest first, at most `limit`.
    pub async fn history(&self, user: &str, before: Option<i64>, limit: u32) -> Result<Vec<CallRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT call_id, caller, invitees, media, started_at, connected_at, ended_at, duration_s, direction, result, end_reason, mos_average, mos_worst
             FROM call_records WHERE user = ?1 AND started_at < ?2 ORDER BY started_at DESC, call_id DESC LIMIT ?3",
        )
        .bind(user)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(CallRecord {
                    call_id: r.get(0),
                    caller: r.get(1),
                    invitees: from_json(&r.get::<String, _>(2))?,
                    media: from_wire_name(&r.get::<String, _>(3))?,
                    started_at: r.get(4),
                    connected_at: r.get(5),
                    ended_at: r.get(6),
                    duration_s: u64::try_from(r.get::<i64, _>(7)).unwrap_or(0),
                    direction: from_wire_name(&r.get::<String, _>(8))?,
                    result: from_wire_name(&r.get::<String, _>(9))?,
                    end_reason: r.get::<Option<String>, _>(10).as_deref().map(from_wire_name).transpose()?,
                    quality: match (r.get::<Option<f64>, _>(11), r.get::<Option<f64>, _>(12)) {
                        (Some(mos_average), Some(mos_worst)) => Some(CallQuality { mos_average, mos_worst }),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    /// Removes records from `user`'s history only.
    pub async fn delete_records(&self, user: &str, call_ids: &[String]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM call_records WHERE user = ?1 AND call_id IN (SELECT value FROM json_each(?2))")
            .bind(user)
            .bind(json_array(call_ids))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn json_array(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

/// The serde name of a unit enum value, e.g. `Media::Audio` -> `audio`.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => unreachable!("unit enums serialize to strings, got {other:?}"),
    }
}

fn from_wire_name<T: DeserializeOwned>(name: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{text}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_protocol::{CallResult, Direction, Media};

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
            end_reason: Some(hark_protocol::EndReason::Failed),
            quality: None,
        }
    }

    #[tokio::test]
    async fn accounts_contacts_and_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        assert!(store.create_user("alice", Some("h"), Some("Alice"), 1).await.unwrap());
        assert!(!store.create_user("alice", Some("h2"), None, 2).await.unwrap(), "taken");
        assert_eq!(store.ensure_user("bob", 3).await.unwrap(), AccountState::FRESH);
        assert_eq!(store.password_hash("bob").await.unwrap(), Some(None));
        assert_eq!(store.password_hash("alice").await.unwrap(), Some(Some("h".into())));

        let profiles = store.profiles(&["bob".into(), "nobody".into(), "alice".into()]).await.unwrap();
        assert_eq!(profiles.iter().map(|p| (p.user.as_str(), p.nickname.as_str())).collect::<Vec<_>>(), [("bob", "bob"), ("alice", "Alice")]);

        store.add_contact("alice", "bob", Some("Bobby"), 4).await.unwrap();
        let contacts = store.contacts("alice").await.unwrap();
        assert_eq!(contacts, [ContactRow { user: "bob".into(), nickname: "bob".into(), alias: Some("Bobby".into()), registered: true }]);

        store.write_records(&[("alice".into(), record("c1", 10)), ("alice".into(), record("c2", 20))]).await.unwrap();
        let history = store.history("alice", None, 50).await.unwrap();
        assert_eq!(history.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>(), ["c2", "c1"]);
        assert_eq!(history[1], record("c1", 10));
        assert_eq!(store.history("alice", Some(20), 50).await.unwrap().len(), 1);
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
        store.delete_records("alice", &["c3".into()]).await.unwrap();
        store.delete_records("alice", &["c2".into()]).await.unwrap();
        assert_eq!(store.history("alice", None, 50).await.unwrap().len(), 1);

        // Removal tombstones the account and its tokens stop working; a new registration revives
        // it, refusing tokens from before the removal; running servers learn of it as an event.
        assert_eq!(store.last_account_event().await.unwrap(), 0);
        assert!(store.remove_user("bob", 5_000).await.unwrap());
        assert!(!store.remove_user("bob", 5_500).await.unwrap(), "removed once");
        assert_eq!(store.removed_accounts_after(0).await.unwrap(), [(1, "bob".to_string())]);
        assert_eq!(store.last_account_event().await.unwrap(), 1);
        assert!(store.removed_accounts_after(1).await.unwrap().is_empty());
        assert_eq!(store.ensure_user("bob", 6_000).await.unwrap(), AccountState::Removed);
        assert_eq!(store.account_state("bob").await.unwrap(), Some(AccountState::Removed));
        assert_eq!(store.account_state("nobody").await.unwrap(), None);
        assert!(!store.user_exists("bob").await.unwrap() && store.user_exists("alice").await.unwrap());
        assert!(store.existing_users(&["bob".into(), "alice".into()]).await.unwrap() == HashSet::from(["alice".to_string()]));
        assert!(!store.contacts("alice").await.unwrap()[0].registered);
        assert!(store.create_user("bob", Some("h3"), None, 7_000).await.unwrap());
        let revived = store.ensure_user("bob", 8_000).await.unwrap();
        assert_eq!(revived, AccountState::Active { tokens_revoked_before: Some(5_000) });
        assert!(!revived.accepts_token(Some(5)), "issued in the second of the removal");
        assert!(!revived.accepts_token(None), "a token that does not say when it was issued");
        assert!(revived.accepts_token(Some(6)));
        assert!(AccountState::FRESH.accepts_token(None));
        assert!(!AccountState::Removed.accepts_token(Some(i64::MAX)));
        assert_eq!((store.contact_count("alice").await.unwrap(), store.has_contact("alice", "bob").await.unwrap()), (1, true));
    }
}
