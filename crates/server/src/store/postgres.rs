//! [`Storage`] in PostgreSQL (15 and later) through sqlx: the database several server nodes share.
//! Lists of ids travel as one `text[]`; a batch of records is one `INSERT … SELECT FROM unnest`,
//! so a busy node's commit costs one round trip however many calls it covers.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hark_protocol::{CallQuality, CallRecord, UserProfile};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::{record_from_columns, AccountState, ContactRow, RecordColumns, Storage, StoreError, StoredRecordFields};

/// Connections a node keeps to the database: the hub's record writer, the account watch and the
/// sessions' requests (profiles, contacts, history) share them.
const MAX_CONNECTIONS: u32 = 8;

/// PostgreSQL storage; cheap to clone.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` and brings the schema up to date. Nodes that start together are safe:
    /// sqlx holds an advisory lock while it migrates.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A database that does not answer fails the start, or a request (a sign-in answered
            // `internal`), within this: a client should not wait longer to learn it.
            .acquire_timeout(Duration::from_secs(3))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations-postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

#[async_trait::async_trait]
impl Storage for PostgresStore {
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, id: &str, password_hash: Option<&str>, nickname: Option<&str>, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO users (id, password_hash, nickname, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET password_hash = $2, nickname = $3, avatar = NULL, created_at = $4, removed_at = NULL
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
        sqlx::query("INSERT INTO users (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn account_state(&self, id: &str) -> Result<Option<AccountState>, StoreError> {
        let row: Option<(Option<i64>, Option<i64>)> = sqlx::query_as("SELECT removed_at, tokens_revoked_before FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(removed_at, before)| AccountState::from_columns(removed_at, before)))
    }

    async fn user_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND removed_at IS NULL)")
            .bind(id)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn password_hash(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        let hash: Option<Option<String>> = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1 AND removed_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(hash)
    }

    async fn remove_user(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Removals commit in the order of their event numbers: an identity value is taken at
        // insert but seen at commit, so two removals committing out of order could let a server
        // that already read the later one skip the earlier one for good.
        sqlx::query("LOCK TABLE account_events IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        let result = sqlx::query(
            "UPDATE users SET removed_at = $2, tokens_revoked_before = $2, password_hash = NULL, nickname = NULL, avatar = NULL
             WHERE id = $1 AND removed_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 1 {
            sqlx::query("DELETE FROM contacts WHERE owner = $1").bind(id).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO account_events (\"user\", kind, at) VALUES ($1, 'removed', $2)")
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
        Ok(sqlx::query_as("SELECT seq, \"user\" FROM account_events WHERE seq > $1 AND kind = 'removed' ORDER BY seq LIMIT 1000")
            .bind(seq)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn list_users(&self) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, nickname, created_at FROM users WHERE removed_at IS NULL ORDER BY id").fetch_all(&self.pool).await?)
    }

    async fn existing_users(&self, ids: &[String]) -> Result<HashSet<String>, StoreError> {
        let rows = sqlx::query_scalar::<_, String>("SELECT id FROM users WHERE removed_at IS NULL AND id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn set_profile(&self, id: &str, nickname: Option<&str>, avatar: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET nickname = COALESCE($2, nickname), avatar = COALESCE($3, avatar) WHERE id = $1")
            .bind(id)
            .bind(nickname)
            .bind(avatar)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn profiles(&self, ids: &[String]) -> Result<Vec<UserProfile>, StoreError> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT u.id, COALESCE(u.nickname, u.id), u.avatar FROM unnest($1::text[]) WITH ORDINALITY AS j(id, n)
             JOIN users u ON u.id = j.id WHERE u.removed_at IS NULL ORDER BY j.n",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(user, nickname, avatar)| UserProfile { user, nickname, avatar }).collect())
    }

    async fn contacts(&self, owner: &str) -> Result<Vec<ContactRow>, StoreError> {
        let rows: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT c.contact, COALESCE(u.nickname, c.contact), c.alias, u.id IS NOT NULL AND u.removed_at IS NULL
             FROM contacts c LEFT JOIN users u ON u.id = c.contact WHERE c.owner = $1 ORDER BY c.contact",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(user, nickname, alias, registered)| ContactRow { user, nickname, alias, registered }).collect())
    }

    async fn contact_count(&self, owner: &str) -> Result<usize, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM contacts WHERE owner = $1").bind(owner).fetch_one(&self.pool).await?;
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }

    async fn has_contact(&self, owner: &str, contact: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM contacts WHERE owner = $1 AND contact = $2)")
            .bind(owner)
            .bind(contact)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn add_contact(&self, owner: &str, contact: &str, alias: Option<&str>, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO contacts (owner, contact, alias, added_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (owner, contact) DO UPDATE SET alias = $3",
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
        sqlx::query("DELETE FROM contacts WHERE owner = $1 AND contact = $2").bind(owner).bind(contact).execute(&self.pool).await?;
        Ok(())
    }

    async fn write_records(&self, records: &[(String, CallRecord)]) -> Result<(), StoreError> {
        // One statement may not touch a row twice, so a person's later record of a call in the
        // same batch stands for both, as it would replace the earlier one anyway.
        let mut last: HashMap<(&str, &str), usize> = HashMap::new();
        for (index, (user, record)) in records.iter().enumerate() {
            last.insert((user.as_str(), record.call_id.as_str()), index);
        }
        let mut columns = RecordArrays::default();
        for (index, (user, record)) in records.iter().enumerate() {
            if last.get(&(user.as_str(), record.call_id.as_str())) == Some(&index) {
                columns.push(user, record);
            }
        }
        if columns.user.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO call_records
             (\"user\", call_id, caller, invitees, media, started_at, connected_at, ended_at, duration_s, direction, result, end_reason)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::int8[],
                                  $9::int8[], $10::text[], $11::text[], $12::text[])
             ON CONFLICT (\"user\", call_id) DO UPDATE SET
               caller = EXCLUDED.caller, invitees = EXCLUDED.invitees, media = EXCLUDED.media, started_at = EXCLUDED.started_at,
               connected_at = EXCLUDED.connected_at, ended_at = EXCLUDED.ended_at, duration_s = EXCLUDED.duration_s,
               direction = EXCLUDED.direction, result = EXCLUDED.result, end_reason = EXCLUDED.end_reason,
               mos_average = CASE WHEN EXCLUDED.ended_at = call_records.ended_at THEN call_records.mos_average END,
               mos_worst = CASE WHEN EXCLUDED.ended_at = call_records.ended_at THEN call_records.mos_worst END
             WHERE EXCLUDED.ended_at >= call_records.ended_at",
        )
        .bind(columns.user)
        .bind(columns.call_id)
        .bind(columns.caller)
        .bind(columns.invitees)
        .bind(columns.media)
        .bind(columns.started_at)
        .bind(columns.connected_at)
        .bind(columns.ended_at)
        .bind(columns.duration_s)
        .bind(columns.direction)
        .bind(columns.result)
        .bind(columns.end_reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_record_quality(&self, user: &str, call_id: &str, quality: &CallQuality) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE call_records SET mos_average = $3, mos_worst = $4 WHERE \"user\" = $1 AND call_id = $2 AND connected_at IS NOT NULL",
        )
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
             FROM call_records WHERE \"user\" = $1 AND started_at < $2 ORDER BY started_at DESC, call_id DESC LIMIT $3",
        )
        .bind(user)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(record_from_columns).collect()
    }

    async fn delete_records(&self, user: &str, call_ids: &[String]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM call_records WHERE \"user\" = $1 AND call_id = ANY($2)").bind(user).bind(call_ids).execute(&self.pool).await?;
        Ok(())
    }
}

/// A batch of records as one array per column, for `unnest`.
#[derive(Default)]
struct RecordArrays {
    user: Vec<String>,
    call_id: Vec<String>,
    caller: Vec<String>,
    invitees: Vec<String>,
    media: Vec<String>,
    started_at: Vec<i64>,
    connected_at: Vec<Option<i64>>,
    ended_at: Vec<i64>,
    duration_s: Vec<i64>,
    direction: Vec<String>,
    result: Vec<String>,
    end_reason: Vec<Option<String>>,
}

impl RecordArrays {
    fn push(&mut self, user: &str, record: &CallRecord) {
        let stored = StoredRecordFields::of(record);
        self.user.push(user.to_owned());
        self.call_id.push(record.call_id.clone());
        self.caller.push(record.caller.clone());
        self.invitees.push(stored.invitees);
        self.media.push(stored.media);
        self.started_at.push(record.started_at);
        self.connected_at.push(record.connected_at);
        self.ended_at.push(record.ended_at);
        self.duration_s.push(stored.duration_s);
        self.direction.push(stored.direction);
        self.result.push(stored.result);
        self.end_reason.push(stored.end_reason);
    }
}
