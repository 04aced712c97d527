//! [`Storage`] in SQLite (WAL) through sqlx: `DIR/hark.db`, the database of a single server and of
//! the app's built-in one. Lists of ids travel as one JSON array unpacked with `json_each`.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use hark_protocol::{CallQuality, CallRecord, UserProfile};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{json_array, record_from_columns, AccountState, ContactRow, RecordColumns, Storage, StoreError, StoredRecordFields};

/// SQLite storage; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) `DIR/hark.db` in WAL mode and brings its schema up to date.
    pub async fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
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
        Ok(SqliteStore { pool })
    }
}

#[async_trait::async_trait]
impl Storage for SqliteStore {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, id: &str, password_hash: Option<&str>, nickname: Option<&str>, now: i64) -> Result<bool, StoreError> {
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

    async fn insert_user_if_missing(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO users (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn account_state(&self, id: &str) -> Result<Option<AccountState>, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as("SELECT removed_at, tokens_revoked_before FROM users WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(removed_at, before)| AccountState::from_columns(removed_at, before)))
    }

    async fn user_exists(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = ?1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn password_hash(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        let hash: Option<Option<String>> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = ?1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(hash)
    }

    async fn remove_user(&self, id: &str, now: i64) -> Result<bool, StoreError> {
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

    async fn last_account_event(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM account_events").fetch_one(&self.pool).await?;
        Ok(seq.unwrap_or(0))
    }

    async fn removed_accounts_after(&self, seq: i64) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT seq, user FROM account_events WHERE seq > ?1 AND kind = 'removed' ORDER BY seq LIMIT 1000")
            .bind(seq)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn list_users(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, nickname, created_at FROM users WHERE removed_at IS NULL ORDER BY id").fetch_all(&self.pool).await?)
    }

    async fn existing_users(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query_scalar::<_, String>(
            "SELECT id FROM users WHERE removed_at IS NULL AND id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json_array(ids))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn set_profile(&self, id: &str, nickname: Option<&str>, avatar: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET nickname = COALESCE(?2, nickname), avatar = COALESCE(?3, avatar) WHERE id = ?1")
            .bind(id)
            .bind(nickname)
            .bind(avatar)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn profiles(&self, ids: &[String]) -> Result<Vec<UserProfile>, StoreError> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT u.id, COALESCE(u.nickname, u.id), u.avatar FROM json_each(?1) AS j
             JOIN users u ON u.id = j.value WHERE u.removed_at IS NULL ORDER BY j.key",
        )
        .bind(json_array(ids))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(user, nickname, avatar)| UserProfile { user, nickname, avatar }).collect())
    }

    async fn contacts(&self, owner: &str) -> Result<Vec<ContactRow>, StoreError> {
        let rows: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT c.contact, COALESCE(u.nickname, c.contact), c.alias, u.id IS NOT NULL AND u.removed_at IS NULL
             FROM contacts c LEFT JOIN users u ON u.id = c.contact WHERE c.owner = ?1 ORDER BY c.contact",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(user, nickname, alias, registered)| ContactRow { user, nickname, alias, registered }).collect())
    }

    async fn contact_count(&self, owner: &str) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts WHERE owner = ?1").bind(owner).fetch_one(&self.pool).await?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    async fn has_contact(&self, owner: &str, contact: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE owner = ?1 AND contact = ?2")
            .bind(owner)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    async fn add_contact(&self, owner: &str, contact: &str, alias: Option<&str>, now: i64) -> Result<(), StoreError> {
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

    async fn remove_contact(&self, owner: &str, contact: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM contacts WHERE owner = ?1 AND contact = ?2").bind(owner).bind(contact).execute(&self.pool).await?;
        Ok(())
    }

    async fn write_records(&self, records: &[(String, CallRecord)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (user, r) in records {
            let stored = StoredRecordFields::of(r);
            sqlx::query(
                "INSERT INTO call_records
                 (user, call_id, caller, invitees, media, started_at, connected_at, ended_at, duration_s, direction, result, end_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (user, call_id) DO UPDATE SET
                   caller = excluded.caller, invitees = excluded.invitees, media = excluded.media, started_at = excluded.started_at,
                   connected_at = excluded.connected_at, ended_at = excluded.ended_at, duration_s = excluded.duration_s,
                   direction = excluded.direction, result = excluded.result, end_reason = excluded.end_reason,
                   mos_average = CASE WHEN excluded.ended_at = call_records.ended_at THEN call_records.mos_average END,
                   mos_worst = CASE WHEN excluded.ended_at = call_records.ended_at THEN call_records.mos_worst END
                 WHERE excluded.ended_at >= call_records.ended_at",
            )
            .bind(user)
            .bind(&r.call_id)
            .bind(&r.caller)
            .bind(stored.invitees)
            .bind(stored.media)
            .bind(r.started_at)
            .bind(r.connected_at)
            .bind(r.ended_at)
            .bind(stored.duration_s)
            .bind(stored.direction)
            .bind(stored.result)
            .bind(stored.end_reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn set_record_quality(&self, user: &str, call_id: &str, quality: &CallQuality) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE call_records SET mos_average = ?3, mos_worst = ?4 WHERE user = ?1 AND call_id = ?2 AND connected_at IS NOT NULL")
            .bind(user)
            .bind(call_id)
            .bind(quality.mos_average)
            .bind(quality.mos_worst)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn history(&self, user: &str, before: Option<i64>, limit: u32) -> Result<Vec<CallRecord>, StoreError> {
        let rows: Vec<RecordColumns> = sqlx::query_as(
            "SELECT call_id, caller, invitees, media, started_at, connected_at, ended_at, duration_s, direction, result, end_reason, mos_average, mos_worst
             FROM call_records WHERE user = ?1 AND started_at < ?2 ORDER BY started_at DESC, call_id DESC LIMIT ?3",
        )
        .bind(user)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(record_from_columns).collect()
    }

    async fn delete_records(&self, user: &str, call_ids: &[String]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM call_records WHERE user = ?1 AND call_id IN (SELECT value FROM json_each(?2))")
            .bind(user)
            .bind(json_array(call_ids))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
