//! The user directory: which sessions each user has open, on servers that are alive: what the
//! hub of a cluster's server must ask to know whose devices to ring and who is online
//! (docs/cluster-plan.md, step 2). A single server can answer from memory ([`LocalDirectory`]),
//! servers of a cluster from JetStream KV ([`KvDirectory`]). Only tests use it yet: the registry
//! still keeps its own map of sessions, which is right for one server.
//!
//! In KV, each user is one key of bucket `hark_sessions` (`u_<the id in hex>`, since KV keys
//! take a small alphabet), whose value lists their sessions; a session is added and removed by
//! compare-and-set on the key's revision, so servers changing one user's sessions at once never
//! lose each other's change. Each server also keeps a key of its own in bucket `hark_nodes`, put
//! every third of the bucket's age limit: a server that dies (even by SIGKILL) stops putting it,
//! the key ages out, and from then on its sessions no longer count. Bucket-wide ages work on
//! Debian's nats-server 2.9, which has no per-key TTL.

use std::collections::HashMap;

use hark_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::registry::SessionId;

/// One open session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// The session (its top bits name its server).
    pub session: SessionId,
    /// The device it signed in as.
    pub device: String,
}

/// Why the directory could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// NATS or JetStream refused or did not answer.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// A stored value could not be read back.
    #[error("corrupt directory entry for {0}")]
    Corrupt(String),
}

/// Who has which sessions open.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// `session` of `user`, signed in as `device`, is open on this server.
    async fn add(&self, user: &UserId, session: SessionId, device: &str) -> Result<(), DirectoryError>;

    /// It closed.
    async fn remove(&self, user: &UserId, session: SessionId) -> Result<(), DirectoryError>;

    /// `user`'s open sessions on servers that are alive, in the order they opened.
    async fn sessions(&self, user: &UserId) -> Result<Vec<DirectoryEntry>, DirectoryError>;
}

/// This process's sessions: all a single server has.
#[derive(Debug, Default)]
pub struct LocalDirectory {
    users: std::sync::Mutex<HashMap<UserId, Vec<DirectoryEntry>>>,
}

impl LocalDirectory {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Vec<DirectoryEntry>>> {
        // A panic while holding it leaves a map that is still whole: use it.
        self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Directory for LocalDirectory {
    async fn add(&self, user: &UserId, session: SessionId, device: &str) -> Result<(), DirectoryError> {
        let mut users = self.users();
        let sessions = users.entry(user.clone()).or_default();
        if !sessions.iter().any(|s| s.session == session) {
            sessions.push(DirectoryEntry { session, device: device.to_owned() });
        }
        Ok(())
    }

    async fn remove(&self, user: &UserId, session: SessionId) -> Result<(), DirectoryError> {
        let mut users = self.users();
        if let Some(sessions) = users.get_mut(user) {
            sessions.retain(|s| s.session != session);
            if sessions.is_empty() {
                users.remove(user);
            }
        }
        Ok(())
    }

    async fn sessions(&self, user: &UserId) -> Result<Vec<DirectoryEntry>, DirectoryError> {
        Ok(self.users().get(user).cloned().unwrap_or_default())
    }
}

#[cfg(feature = "cluster")]
pub use in_kv::KvDirectory;

/// The directory in JetStream KV (the `cluster` feature).
#[cfg(feature = "cluster")]
mod in_kv {
    use std::collections::HashMap;
    use std::time::Duration;

    use async_nats::jetstream::kv;
    use hark_protocol::UserId;
    use tracing::warn;

    use super::{Directory, DirectoryEntry, DirectoryError};
    use crate::delivery::SessionTag;
    use crate::registry::SessionId;

    fn jetstream(error: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::JetStream(error.to_string())
    }

    /// Longest a JetStream request may take.
    const REQUEST_WITHIN: Duration = Duration::from_secs(2);
    /// Bucket of users' sessions.
    const SESSIONS_BUCKET: &str = "hark_sessions";
    /// Bucket of live servers.
    const NODES_BUCKET: &str = "hark_nodes";

    /// The sessions of every server, in JetStream KV.
    pub struct KvDirectory {
        sessions: kv::Store,
        nodes: kv::Store,
        heartbeat: tokio::task::JoinHandle<()>,
    }

    impl Drop for KvDirectory {
        fn drop(&mut self) {
            self.heartbeat.abort();
        }
    }

    /// Bucket `name` (one value per key; keys older than `max_age` go, if it is not zero), made if
    /// it is not there yet. Servers starting together may both make it: JetStream takes the same
    /// configuration twice as one.
    ///
    /// It is made as the stream KV defines (`KV_<name>` over `$KV.<name>.>`) rather than with
    /// async-nats' `create_key_value`, which first asks for the account's information and cannot
    /// read nats-server 2.9's answer (async-nats 0.52 against Debian's 2.9.10).
    async fn bucket(js: &async_nats::jetstream::Context, name: &str, max_age: Duration) -> Result<kv::Store, DirectoryError> {
        use async_nats::jetstream::stream;
        let config = stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            // JetStream refuses a duplicate window longer than the age limit.
            duplicate_window: if max_age.is_zero() { Duration::from_secs(120) } else { max_age.min(Duration::from_secs(120)) },
            discard: stream::DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map_err(jetstream)?;
        js.get_key_value(name).await.map_err(jetstream)
    }

    fn user_key(user: &str) -> String {
        let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
        format!("u_{hex}")
    }

    fn node_key(tag: SessionTag) -> String {
        format!("n_{}", tag.hex())
    }

    impl KvDirectory {
        /// Joins the directory as the server with `tag`; a server counts as dead once it has not
        /// said it is alive for `node_ttl`.
        pub async fn start(client: async_nats::Client, tag: SessionTag, node_ttl: Duration) -> Result<KvDirectory, DirectoryError> {
            let mut js = async_nats::jetstream::new(client);
            // A lookup sent while the connection is down is lost; it fails after this, not after
            // async-nats' five seconds, so a call setup waits no longer than that to learn it.
            js.set_timeout(REQUEST_WITHIN);
            let sessions = bucket(&js, SESSIONS_BUCKET, Duration::ZERO).await?;
            let nodes = bucket(&js, NODES_BUCKET, node_ttl).await?;
            let key = node_key(tag);
            nodes.put(&key, "alive".into()).await.map_err(jetstream)?;
            let beat = nodes.clone();
            let heartbeat = tokio::spawn(async move {
                let mut every = tokio::time::interval(node_ttl / 3);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    if let Err(e) = beat.put(&key, "alive".into()).await {
                        warn!(error = %e, "could not say this server is alive");
                    }
                }
            });
            Ok(KvDirectory { sessions, nodes, heartbeat })
        }

        /// `user`'s stored sessions and the key's revision (`None`: never stored).
        async fn read(&self, user: &str) -> Result<(Vec<DirectoryEntry>, Option<u64>), DirectoryError> {
            match self.sessions.entry(user_key(user)).await.map_err(jetstream)? {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    let sessions = serde_json::from_slice(&entry.value).map_err(|_| DirectoryError::Corrupt(user.to_owned()))?;
                    Ok((sessions, Some(entry.revision)))
                }
                Some(entry) => Ok((Vec::new(), Some(entry.revision))),
                None => Ok((Vec::new(), None)),
            }
        }

        /// Applies `change` to `user`'s sessions by compare-and-set, again on a lost race. Sessions
        /// of servers that are gone are dropped on the way: each start draws a new tag, so nothing
        /// else would ever remove them.
        async fn change(&self, user: &str, change: impl Fn(&mut Vec<DirectoryEntry>)) -> Result<(), DirectoryError> {
            loop {
                let (sessions, revision) = self.read(user).await?;
                let mut sessions = self.of_live_servers(sessions).await?;
                change(&mut sessions);
                let value = serde_json::to_vec(&sessions).expect("entries serialize").into();
                let written = match revision {
                    Some(revision) => self.sessions.update(user_key(user), value, revision).await.map(|_| ()).map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(jetstream(e)),
                    }),
                    None => self.sessions.create(user_key(user), value).await.map(|_| ()).map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(jetstream(e)),
                    }),
                };
                match written {
                    Ok(()) => return Ok(()),
                    // Another server changed the key in between: read it again.
                    Err(None) => continue,
                    Err(Some(e)) => return Err(e),
                }
            }
        }

        /// Whether the server with `tag` has said it is alive within the age limit.
        async fn alive(&self, tag: SessionTag) -> Result<bool, DirectoryError> {
            Ok(self.nodes.get(node_key(tag)).await.map_err(jetstream)?.is_some())
        }
    }

    #[async_trait::async_trait]
    impl Directory for KvDirectory {
        async fn add(&self, user: &UserId, session: SessionId, device: &str) -> Result<(), DirectoryError> {
            self.change(user, |sessions| {
                if !sessions.iter().any(|s| s.session == session) {
                    sessions.push(DirectoryEntry { session, device: device.to_owned() });
                }
            })
            .await
        }

        async fn remove(&self, user: &UserId, session: SessionId) -> Result<(), DirectoryError> {
            self.change(user, |sessions| sessions.retain(|s| s.session != session)).await
        }

        async fn sessions(&self, user: &UserId) -> Result<Vec<DirectoryEntry>, DirectoryError> {
            let (sessions, _) = self.read(user).await?;
            self.of_live_servers(sessions).await
        }
    }

    impl KvDirectory {
        /// The entries of `sessions` whose server is alive.
        async fn of_live_servers(&self, sessions: Vec<DirectoryEntry>) -> Result<Vec<DirectoryEntry>, DirectoryError> {
            let mut alive: HashMap<SessionTag, bool> = HashMap::new();
            let mut open = Vec::with_capacity(sessions.len());
            for entry in sessions {
                let tag = SessionTag::of(entry.session);
                let live = match alive.get(&tag) {
                    Some(live) => *live,
                    None => {
                        let live = self.alive(tag).await?;
                        alive.insert(tag, live);
                        live
                    }
                };
                if live {
                    open.push(entry);
                }
            }
            Ok(open)
        }
    }
}
