//! Delivery: how the outbox's frames and kicks reach a session, wherever the session is.
//!
//! A session id names its server: the top [`TAG_BITS`] bits are the tag its server drew at
//! start ([`SessionTag`]), the rest count that server's sessions. [`LocalDelivery`] reaches the
//! sessions of this process, which is all a single server has. [`NatsDelivery`] reaches the
//! others' too: a frame for a session of another server is published on that server's subject
//! (`hark.node.<tag>`), and each server passes what arrives on its own subject to its sessions.
//! Core NATS delivers at most once, in order from one publisher: a session whose server is gone
//! misses frames, and its client learns what happened when it resyncs on reconnect (`welcome`'s
//! `joined_calls`, `calls.active`).
//!
//! Delivery never waits for a session: each has a bounded channel, and a session that lets it
//! fill is too slow to be in a call; its sender is dropped, which closes it.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tracing::warn;

use crate::hub::Outbound;
use crate::registry::SessionId;

/// Bits of a session id that name its server.
pub const TAG_BITS: u32 = 24;
const COUNTER_BITS: u32 = 64 - TAG_BITS;

/// A server's tag in its session ids, drawn at random at each start: a restarted server's new
/// sessions never take the ids of its old ones, which other servers may still hold during a
/// reconnect grace. Two running servers draw the same tag with a chance of one in 16.7 million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionTag(u32);

impl SessionTag {
    /// A tag from `bits` (only the low [`TAG_BITS`] count).
    pub fn new(bits: u32) -> SessionTag {
        SessionTag(bits & ((1 << TAG_BITS) - 1))
    }

    /// The tag of the server that opened `session`.
    pub fn of(session: SessionId) -> SessionTag {
        SessionTag((session >> COUNTER_BITS) as u32)
    }

    /// This server's `n`th session id (`n` from 1).
    pub fn session(self, n: u64) -> SessionId {
        (u64::from(self.0) << COUNTER_BITS) | (n & ((1 << COUNTER_BITS) - 1))
    }

    /// The tag's bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The tag as six hex digits.
    pub fn hex(self) -> String {
        format!("{:06x}", self.0)
    }

    /// The NATS subject this server's sessions are reached on.
    pub fn subject(self) -> String {
        format!("hark.node.{}", self.hex())
    }
}

/// Why delivery between servers could not start.
#[cfg(feature = "cluster")]
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// nats-server refused or did not answer.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Where frames for sessions go.
#[async_trait::async_trait]
pub trait Delivery: Send + Sync {
    /// A session of this server opened: what is meant for it goes to `sender` from now on.
    async fn open(&mut self, session: SessionId, sender: mpsc::Sender<Outbound>);

    /// A session of this server closed: nothing more goes to it.
    async fn close(&mut self, session: SessionId);

    /// Passes `item` on towards `session`, wherever it is. A session of this server that is gone
    /// or whose queue is full gets nothing (and a full one is dropped).
    async fn send(&mut self, session: SessionId, item: Outbound);
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct LocalDelivery {
    sessions: HashMap<SessionId, mpsc::Sender<Outbound>>,
}

impl LocalDelivery {
    /// Queues `item` for a session of this process without waiting.
    fn pass(&mut self, session: SessionId, item: Outbound) {
        let Some(sender) = self.sessions.get(&session) else { return };
        let kick = matches!(item, Outbound::Kick(_));
        if sender.try_send(item).is_err() {
            warn!(session, "session queue full or closed; dropping the session");
            self.sessions.remove(&session);
        } else if kick {
            // A kicked session hears nothing more.
            self.sessions.remove(&session);
        }
    }
}

#[async_trait::async_trait]
impl Delivery for LocalDelivery {
    async fn open(&mut self, session: SessionId, sender: mpsc::Sender<Outbound>) {
        self.sessions.insert(session, sender);
    }

    async fn close(&mut self, session: SessionId) {
        self.sessions.remove(&session);
    }

    async fn send(&mut self, session: SessionId, item: Outbound) {
        self.pass(session, item);
    }
}

#[cfg(feature = "cluster")]
pub use over_nats::NatsDelivery;

/// Delivery between servers through NATS (the `cluster` feature).
#[cfg(feature = "cluster")]
mod over_nats {
    use std::sync::Arc;

    use futures_util::StreamExt;
    use hark_protocol::KickReason;
    use tokio::sync::mpsc;
    use tracing::{debug, warn};

    use super::{Delivery, DeliveryError, LocalDelivery, SessionTag};
    use crate::hub::Outbound;
    use crate::registry::SessionId;

    /// What crosses between servers: the session id (8 bytes, big-endian), a kind byte, then the
    /// frame's text or the kick's reason.
    pub(super) const FRAME: u8 = 0;
    const KICK: u8 = 1;

    pub(super) fn encode(session: SessionId, item: &Outbound) -> Vec<u8> {
        let (kind, text) = match item {
            Outbound::Frame(text) => (FRAME, text.as_str()),
            Outbound::Kick(reason) => (KICK, reason.as_str()),
        };
        let mut bytes = Vec::with_capacity(9 + text.len());
        bytes.extend_from_slice(&session.to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(text.as_bytes());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<(SessionId, Outbound)> {
        let session = SessionId::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let text = std::str::from_utf8(bytes.get(9..)?).ok()?;
        let item = match *bytes.get(8)? {
            FRAME => Outbound::Frame(text.to_owned()),
            KICK => Outbound::Kick(serde_json::from_value::<KickReason>(serde_json::Value::String(text.to_owned())).ok()?),
            _ => return None,
        };
        Some((session, item))
    }

    /// This server's sessions, and the other servers' through NATS.
    pub struct NatsDelivery {
        tag: SessionTag,
        client: async_nats::Client,
        /// What arrived for this server's sessions from the others, passed on by `receive`.
        local: Arc<tokio::sync::Mutex<LocalDelivery>>,
        receive: tokio::task::JoinHandle<()>,
    }

    impl NatsDelivery {
        /// Listens on this server's subject; what arrives there goes to its sessions.
        pub async fn start(client: async_nats::Client, tag: SessionTag) -> Result<NatsDelivery, DeliveryError> {
            let mut arriving = client.subscribe(tag.subject()).await.map_err(|e| DeliveryError::Nats(e.to_string()))?;
            // Once nats-server has handled the subscription, frames that other servers send reach
            // this one. `flush` only writes the socket, so a message to ourselves behind the
            // subscription makes the round trip: the server handles one connection's commands in
            // order. Without it, frames sent in the first moments after a start were lost.
            round_trip(&client).await?;
            let local = Arc::new(tokio::sync::Mutex::new(LocalDelivery::default()));
            let sessions = Arc::clone(&local);
            let receive = tokio::spawn(async move {
                while let Some(message) = arriving.next().await {
                    match decode(&message.payload) {
                        Some((session, item)) => sessions.lock().await.pass(session, item),
                        None => warn!(bytes = message.payload.len(), "a malformed delivery from another server"),
                    }
                }
                debug!("delivery subscription ended");
            });
            Ok(NatsDelivery { tag, client, local, receive })
        }
    }

    /// Returns once nats-server has handled everything `client` sent before.
    async fn round_trip(client: &async_nats::Client) -> Result<(), DeliveryError> {
        let inbox = client.new_inbox();
        let mut echo = client.subscribe(inbox.clone()).await.map_err(|e| DeliveryError::Nats(e.to_string()))?;
        client.publish(inbox, Default::default()).await.map_err(|e| DeliveryError::Nats(e.to_string()))?;
        match tokio::time::timeout(ROUND_TRIP_WITHIN, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(DeliveryError::Nats("the connection closed".into())),
            Err(_) => Err(DeliveryError::Nats(format!("no answer within {} s", ROUND_TRIP_WITHIN.as_secs()))),
        }
    }

    /// Longest nats-server may take to answer a round trip at start.
    const ROUND_TRIP_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

    impl Drop for NatsDelivery {
        fn drop(&mut self) {
            self.receive.abort();
        }
    }

    #[async_trait::async_trait]
    impl Delivery for NatsDelivery {
        async fn open(&mut self, session: SessionId, sender: mpsc::Sender<Outbound>) {
            self.local.lock().await.open(session, sender).await;
        }

        async fn close(&mut self, session: SessionId) {
            self.local.lock().await.close(session).await;
        }

        async fn send(&mut self, session: SessionId, item: Outbound) {
            if SessionTag::of(session) == self.tag {
                self.local.lock().await.pass(session, item);
                return;
            }
            let subject = SessionTag::of(session).subject();
            if let Err(e) = self.client.publish(subject, encode(session, &item).into()).await {
                warn!(error = %e, session, "could not pass a frame to another server");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_server() {
        let tag = SessionTag::new(0xabcdef);
        let session = tag.session(42);
        assert_eq!((SessionTag::of(session), session & 0xff_ffff_ffff), (tag, 42));
        assert_eq!(SessionTag::new(0x1ab_cdef), tag, "only the low 24 bits count");
        assert_ne!(SessionTag::of(SessionTag::new(1).session(42)), tag);
        assert_eq!(tag.subject(), "hark.node.abcdef");
    }

    #[test]
    #[cfg(feature = "cluster")]
    fn what_crosses_between_servers_reads_back_and_garbage_does_not() {
        use super::over_nats::{decode, encode, FRAME};
        use hark_protocol::KickReason;

        let session = SessionTag::new(3).session(9);
        for item in [Outbound::Frame("{\"type\":\"ok\"}".into()), Outbound::Kick(KickReason::Shutdown)] {
            let (back, read) = decode(&encode(session, &item)).expect("reads back");
            assert_eq!(back, session);
            assert_eq!(format!("{read:?}"), format!("{item:?}"));
        }
        assert!(decode(b"short").is_none());
        assert!(decode(&[0, 0, 0, 0, 0, 0, 0, 1, 7, b'x']).is_none(), "an unknown kind");
        assert!(decode(&[0, 0, 0, 0, 0, 0, 0, 1, FRAME, 0xff]).is_none(), "not UTF-8");
    }
}
