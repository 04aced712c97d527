//! Storage: accounts, profiles, contacts and call records, behind one trait ([`Storage`]) with
//! two implementations: SQLite in the data folder ([`sqlite`], what a single server and the app's
//! built-in one use) and PostgreSQL ([`postgres`], which several nodes can share).
//!
//! Only this module and its two children speak SQL. Both pass lists of ids as one bound value
//! (a JSON array in SQLite, an array in PostgreSQL), so no query is built by string
//! concatenation. Records are written in batches inside one transaction: the outbox stores a
//! whole hub batch before it sends that batch's events, so a client that has seen `call.ended`
//! can count on the record being stored. One conformance suite (`tests/storage.rs`) holds both to the same
//! behaviour.

#[cfg(feature = "cluster")]
pub mod postgres;
pub mod sqlite;

use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use hark_protocol::{CallQuality, CallRecord, UserProfile};
use serde::de::DeserializeOwned;

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
    /// The database URL names no database this server speaks.
    #[error("unsupported database URL {0:?}: expected postgres://… or postgresql://…")]
    UnsupportedUrl(String),
    /// PostgreSQL was asked of a build without it (the app's built-in server).
    #[error("this server was built without PostgreSQL (the `cluster` feature)")]
    NoPostgres,
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

    /// The state read from an account's `removed_at` and `tokens_revoked_before` columns.
    fn from_columns(removed_at: Option<i64>, tokens_revoked_before: Option<i64>) -> AccountState {
        match removed_at {
            Some(_) => AccountState::Removed,
            None => AccountState::Active { tokens_revoked_before },
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

/// What the server keeps, whatever keeps it. Times are Unix milliseconds.
#[async_trait::async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Closes the connections, waiting for checked-out ones.
    async fn close(&self);

    /// Asks the database the simplest question: whether it answers at all (`/healthz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates an account, or revives a removed one. Returns false if the id is taken.
    async fn create_user(&self, id: &str, password_hash: Option<&str>, nickname: Option<&str>, now: i64) -> Result<bool, StoreError>;

    /// Creates the account of a token's user if there is none, without touching one that exists
    /// (removed or not).
    async fn insert_user_if_missing(&self, id: &str, now: i64) -> Result<(), StoreError>;

    /// The account state of an existing id (`None` if there was never such an account), without
    /// creating anything.
    async fn account_state(&self, id: &str) -> Result<Option<AccountState>, StoreError>;

    /// Whether `id` is an active account.
    async fn user_exists(&self, id: &str) -> Result<bool, StoreError>;

    /// The password hash of an active account: `None` if there is no such account,
    /// `Some(None)` if it has no password (created by a token).
    async fn password_hash(&self, id: &str) -> Result<Option<Option<String>>, StoreError>;

    /// Removes an account: tombstones it, forgets its password, profile and contacts, revokes
    /// every token issued until now, and records the removal for running servers to act on
    /// ([`Self::removed_accounts_after`]), all in one transaction. Call records stay (they are
    /// other people's history too). Returns false if there was none.
    async fn remove_user(&self, id: &str, now: i64) -> Result<bool, StoreError>;

    /// The newest account event's number (0 if there is none).
    async fn last_account_event(&self) -> Result<i64, StoreError>;

    /// Accounts removed after event `seq`: (event number, user id), oldest first, at most 1,000.
    async fn removed_accounts_after(&self, seq: i64) -> Result<Vec<(i64, String)>, StoreError>;

    /// Active accounts: id, nickname and creation time, by id.
    async fn list_users(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError>;

    /// Which of `ids` are active accounts.
    async fn existing_users(&self, ids: &[String]) -> Result<HashSet<String>, StoreError>;

    /// Sets the nickname and/or avatar of an account.
    async fn set_profile(&self, id: &str, nickname: Option<&str>, avatar: Option<&str>) -> Result<(), StoreError>;

    /// Profiles of the active accounts among `ids`, in the order asked.
    async fn profiles(&self, ids: &[String]) -> Result<Vec<UserProfile>, StoreError>;

    /// The contacts of `owner`, by id.
    async fn contacts(&self, owner: &str) -> Result<Vec<ContactRow>, StoreError>;

    /// How many contacts `owner` has.
    async fn contact_count(&self, owner: &str) -> Result<usize, StoreError>;

    /// Whether `contact` is one of `owner`'s contacts.
    async fn has_contact(&self, owner: &str, contact: &str) -> Result<bool, StoreError>;

    /// Adds (or renames) a contact.
    async fn add_contact(&self, owner: &str, contact: &str, alias: Option<&str>, now: i64) -> Result<(), StoreError>;

    /// Removes a contact (no error if it was not there).
    async fn remove_contact(&self, owner: &str, contact: &str) -> Result<(), StoreError>;

    /// Writes records in one transaction; a person's record of a call replaces an earlier one
    /// whole (its quality too, which belongs to the call as it was). The same record written
    /// again (by a second node of a cluster, or again after a node died) keeps its quality, and
    /// a record that ended earlier than the stored one changes nothing.
    async fn write_records(&self, records: &[(String, CallRecord)]) -> Result<(), StoreError>;

    /// Keeps how the call sounded in `user`'s record of `call_id`, if they were connected in it;
    /// whether there was such a record.
    async fn set_record_quality(&self, user: &str, call_id: &str, quality: &CallQuality) -> Result<bool, StoreError>;

    /// `user`'s records started before `before` (ms), newest first, at most `limit`.
    async fn history(&self, user: &str, before: Option<i64>, limit: u32) -> Result<Vec<CallRecord>, StoreError>;

    /// Removes records from `user`'s history only.
    async fn delete_records(&self, user: &str, call_ids: &[String]) -> Result<(), StoreError>;
}

/// The database handle the server holds; cheap to clone. It derefs to the [`Storage`] it wraps.
#[derive(Debug, Clone)]
pub struct Store {
    storage: Arc<dyn Storage>,
}

impl Store {
    /// Opens (creating if needed) `DIR/hark.db`: the single server's database.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::from(sqlite::SqliteStore::open(data_dir).await?))
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://…`) and brings its schema up to
    /// date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        #[cfg(feature = "cluster")]
        return Ok(Store::from(postgres::PostgresStore::connect(url).await?));
        #[cfg(not(feature = "cluster"))]
        Err(StoreError::NoPostgres)
    }

    /// The database a server is configured with: PostgreSQL at `database` if given, else SQLite
    /// in `data_dir`.
    pub async fn open_configured(database: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        match database {
            Some(url) => Store::connect(url).await,
            None => Store::open(data_dir).await,
        }
    }

    /// A handle on storage that is shared elsewhere too.
    pub fn from_shared(storage: Arc<dyn Storage>) -> Store {
        Store { storage }
    }

    /// The account state for a sign-in by token, creating the account if there is none.
    pub async fn ensure_user(&self, id: &str, now: i64) -> Result<AccountState, StoreError> {
        self.storage.insert_user_if_missing(id, now).await?;
        self.storage.account_state(id).await?.ok_or_else(|| StoreError::Corrupt(format!("account {id} vanished after its insert")))
    }
}

impl<S: Storage + 'static> From<S> for Store {
    fn from(storage: S) -> Store {
        Store { storage: Arc::new(storage) }
    }
}

impl Deref for Store {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        &*self.storage
    }
}

/// A record's columns as both databases return them, in the order `history` selects them:
/// call id, caller, invitees (JSON), media, started, connected, ended, duration, direction,
/// result, end reason, MOS average, MOS worst.
type RecordColumns = (
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<f64>,
    Option<f64>,
);

/// A record's enum and list fields as stored: invitees as a JSON array, the rest by their wire
/// names.
struct StoredRecordFields {
    invitees: String,
    media: String,
    duration_s: i64,
    direction: String,
    result: String,
    end_reason: Option<String>,
}

impl StoredRecordFields {
    fn of(record: &CallRecord) -> StoredRecordFields {
        StoredRecordFields {
            invitees: json_array(&record.invitees),
            media: wire_name(&record.media),
            duration_s: i64::try_from(record.duration_s).unwrap_or(i64::MAX),
            direction: wire_name(&record.direction),
            result: wire_name(&record.result),
            end_reason: record.end_reason.as_ref().map(wire_name),
        }
    }
}

fn record_from_columns(columns: RecordColumns) -> Result<CallRecord, StoreError> {
    let (call_id, caller, invitees, media, started_at, connected_at, ended_at, duration_s, direction, result, end_reason, mos_average, mos_worst) =
        columns;
    Ok(CallRecord {
        call_id,
        caller,
        invitees: from_json(&invitees)?,
        media: from_wire_name(&media)?,
        started_at,
        connected_at,
        ended_at,
        duration_s: u64::try_from(duration_s).unwrap_or(0),
        direction: from_wire_name(&direction)?,
        result: from_wire_name(&result)?,
        end_reason: end_reason.as_deref().map(from_wire_name).transpose()?,
        quality: match (mos_average, mos_worst) {
            (Some(mos_average), Some(mos_worst)) => Some(CallQuality { mos_average, mos_worst }),
            _ => None,
        },
    })
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
