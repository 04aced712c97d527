//! Delivery: how the outbox's frames and kicks reach a session.
//!
//! A session id names its server: the top [`TAG_BITS`] bits are the tag its server drew at
//! start ([`SessionTag`]), the rest count that server's sessions. [`LocalDelivery`] reaches the
//! sessions of this process, which is all any server needs: a cluster's nodes each deliver to
//! their own sessions (see [`crate::replica`]).
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
        assert_eq!(tag.hex(), "abcdef");
    }
}
