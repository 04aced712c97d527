//! The frame socket: a WebSocket server on 127.0.0.1 that hands each tile's newest picture to the
//! page that shows it.
//!
//! It is bound before the app's window exists, so the port is known when the page's CSP is
//! written (`connect-src` names exactly `ws://127.0.0.1:PORT`). Other programs on the machine can
//! reach a loopback port, so a connection must bring the per-launch token (which the page gets
//! through a command) and come from the app's own origin; anything else is answered 403 before
//! it is a WebSocket. A page makes one connection, `/page?token=T`, for all the tiles it shows,
//! and says in text messages:
//! - `{"type":"show","tile":NAME,"width":W,"height":H,"fit":"contain"|"cover","codec":C}`: it
//!   shows the tile NAME (a user id, or `_self`) in a box of W x H device pixels (again whenever
//!   the box changes; 0x0 while hidden). Nothing of a tile is sent before this. `codec` is
//!   `"i420"` (the default) or `"vp8"`: the page decodes VP8 itself, and gets a remote person's
//!   video as it came (our own camera's tile is I420 whatever it says).
//! - `{"type":"hide","tile":NAME}`: it no longer shows that tile.
//! - `{"type":"keyframe","tile":NAME}`: its decoder for that tile failed; it starts again from
//!   a keyframe.
//! - `{"type":"next"}`: it drew what it got last and takes more.
//!
//! It gets binary messages, each a batch of entries: the name's length (one byte) and the name,
//! a [`crate::HEADER_LEN`]-byte header ([`crate::wire_header`]), then the payload the header's
//! length says: I420 planes (none when the tile clears) or one VP8 frame. One batch is in flight
//! at a time. A tile sent as I420 has one entry, its newest picture: pictures made while the
//! page draws replace the ones before them, so a slow page skips pictures, never queues them. A
//! tile sent as VP8 has every frame since the last batch, in order, from a keyframe (a page that
//! fell more than [`crate::MAX_CHAIN`] frames behind starts again at a keyframe). All the tiles
//! that moved meanwhile come in one message and are drawn in one repaint. One connection rather
//! than one per tile: measured in a nine-tile grid, nine connections cost about twice what one
//! does (docs/BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::tiles::{Codec, Fit, FrameTiles, Shown, Tile};

/// At most this many connections at once (the main window, the mini window, and a reloaded
/// page's leftovers, with room to spare).
pub const MAX_CONNECTIONS: usize = 32;

/// At most this many tiles shown by one connection (a grid of nine, ourselves and room).
pub const MAX_TILES_PER_PAGE: usize = 16;

/// How long a connection may take to finish its WebSocket handshake.
pub const HANDSHAKE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest box side taken from a page: 8K, far beyond any picture a call carries.
const MAX_SIDE: u32 = 8192;

/// Why the socket could not start.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The loopback port could not be bound.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
}

/// What a page says.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum PageMessage {
    Show {
        tile: String,
        width: u32,
        height: u32,
        fit: Fit,
        #[serde(default)]
        codec: Codec,
    },
    Hide {
        tile: String,
    },
    Keyframe {
        tile: String,
    },
    Next,
}

/// A tile name a page may ask for: ASCII letters, digits and `._-` (user ids are lowercase), and
/// so the app's own `_self`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= crate::tiles::MAX_NAME_LEN && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The bound socket, its port and token.
pub struct FrameSocket {
    listener: std::net::TcpListener,
    port: u16,
    token: String,
    origins: Vec<String>,
}

impl FrameSocket {
    /// Binds 127.0.0.1 on a free port and makes this launch's token. Pages must come from one of
    /// `origins` (the app's, e.g. `tauri://localhost`).
    pub fn bind(origins: Vec<String>) -> Result<FrameSocket, SocketError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = secret.iter().map(|b| format!("{b:02x}")).collect();
        Ok(FrameSocket { listener, port, token, origins })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// This launch's token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CSP source that allows exactly this socket.
    pub fn csp_source(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Serves `tiles` until the runtime ends. Call from inside a tokio runtime.
    pub fn serve(self, tiles: FrameTiles) -> Result<tokio::task::JoinHandle<()>, SocketError> {
        let listener = TcpListener::from_std(self.listener)?;
        let guard = Arc::new(Guard { token: self.token, origins: self.origins });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let viewers = Arc::new(AtomicU64::new(0));
        Ok(tokio::spawn(async move {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "frame socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    debug!("frame socket full; connection dropped");
                    continue;
                };
                let (guard, tiles) = (Arc::clone(&guard), tiles.clone());
                let viewer = viewers.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(async move {
                    serve_page(stream, &guard, &tiles, viewer).await;
                    drop(permit);
                });
            }
        }))
    }
}

/// What a connection must bring.
struct Guard {
    token: String,
    origins: Vec<String>,
}

impl Guard {
    /// Whether a handshake may become a page's connection, or the answer that refuses it.
    fn check(&self, request: &Request) -> Result<(), ErrorResponse> {
        let refuse = |status: StatusCode, why: &str| {
            let mut response = ErrorResponse::new(Some(why.to_owned()));
            *response.status_mut() = status;
            response
        };
        let origin = request.headers().get("origin").and_then(|o| o.to_str().ok()).unwrap_or("");
        if !self.origins.iter().any(|allowed| allowed == origin) {
            info!(origin, "frame socket: a page from another origin refused");
            return Err(refuse(StatusCode::FORBIDDEN, "origin not allowed"));
        }
        let token = request.uri().query().unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("token=")).unwrap_or("");
        if !same(token.as_bytes(), self.token.as_bytes()) {
            return Err(refuse(StatusCode::FORBIDDEN, "wrong token"));
        }
        if request.uri().path() != "/page" {
            return Err(refuse(StatusCode::NOT_FOUND, "no such path"));
        }
        Ok(())
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A tile one page shows.
struct Watched {
    tile: Arc<Tile>,
    pictures: watch::Receiver<Option<Bytes>>,
    chain: watch::Receiver<u64>,
    codec: Codec,
    /// Where this page reads on in the tile's chain (`None`: from a keyframe at or after
    /// `fresh_from`).
    cursor: Option<u64>,
    fresh_from: u64,
}

/// Which of a tile's news woke a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum News {
    Picture(usize),
    Chain(usize),
}

async fn serve_page(stream: TcpStream, guard: &Guard, tiles: &FrameTiles, viewer: u64) {
    let mut let_in = false;
    let check = |request: &Request, response: Response| {
        guard.check(request)?;
        let_in = true;
        Ok(response)
    };
    // A page's messages are a few dozen bytes.
    let config = WebSocketConfig::default().max_message_size(Some(1024)).max_frame_size(Some(1024));
    // A connection holds one of the few places from its first byte: one that never finishes its
    // handshake must not keep it.
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    let mut ws = match tokio::time::timeout(HANDSHAKE_TIME, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            // Said at info: a page refused here shows no video, and this is where to look.
            info!(%error, "frame socket handshake refused");
            return;
        }
        Err(_) => {
            debug!("frame socket handshake not finished in time");
            return;
        }
    };
    if !let_in {
        return;
    }
    let mut watched: HashMap<String, Watched> = HashMap::new();
    let mut may_send = true;
    let ended = loop {
        // What woke us, taken out of the select so that its futures (which borrow the tiles) are
        // gone before the tiles change.
        let woke = tokio::select! {
            message = ws.next() => Ok(message),
            moved = any_changed(&mut watched), if may_send => Err(moved),
        };
        let message = match woke {
            Ok(message) => message,
            Err(moved) => {
                if let Some(batch) = batch(&mut watched, moved) {
                    if ws.send(Message::Binary(batch)).await.is_err() {
                        break None;
                    }
                    may_send = false;
                }
                continue;
            }
        };
        match message {
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<PageMessage>(&text) {
                Ok(PageMessage::Show { tile, width, height, fit, codec }) if valid_name(&tile) => {
                    // A box beyond any picture (a window across several screens) is taken at the
                    // limit: pictures are never scaled up anyway.
                    let (width, height) = (width.min(MAX_SIDE), height.min(MAX_SIDE));
                    if !watched.contains_key(&tile) {
                        let found = (watched.len() < MAX_TILES_PER_PAGE).then(|| tiles.find(&tile)).flatten();
                        let Some(found) = found else {
                            break Some(CloseFrame { code: CloseCode::Again, reason: "too many tiles".into() });
                        };
                        let (mut pictures, mut chain) = (found.latest.subscribe(), found.chain_moved.subscribe());
                        // The picture there is now goes first (or the chain from its keyframe).
                        pictures.mark_changed();
                        chain.mark_changed();
                        watched.insert(tile.clone(), Watched { tile: found, pictures, chain, codec, cursor: None, fresh_from: 0 });
                    }
                    if let Some(shown) = watched.get_mut(&tile) {
                        if shown.codec != codec {
                            // Its decoder gave up (or came): start over in the new form.
                            shown.codec = codec;
                            shown.cursor = None;
                            shown.pictures.mark_changed();
                            shown.chain.mark_changed();
                        }
                        shown.tile.show(viewer, Shown { width, height, fit, codec });
                    }
                }
                Ok(PageMessage::Hide { tile }) => {
                    if let Some(gone) = watched.remove(&tile) {
                        gone.tile.hide(viewer);
                    }
                }
                Ok(PageMessage::Keyframe { tile }) => {
                    // Only a page that reads the tile's VP8 has a decoder to start again.
                    if let Some(shown) = watched.get_mut(&tile).filter(|w| w.tile.sends_encoded(w.codec)) {
                        shown.cursor = None;
                        shown.fresh_from = shown.tile.chain_end();
                        shown.tile.keyframe_wanted.store(true, Ordering::Relaxed);
                    }
                }
                Ok(PageMessage::Next) => may_send = true,
                _ => break Some(CloseFrame { code: CloseCode::Policy, reason: "unknown message".into() }),
            },
            Some(Ok(Message::Binary(_))) => break Some(CloseFrame { code: CloseCode::Unsupported, reason: "text only".into() }),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
            Some(Ok(_)) => {}
        }
    };
    for shown in watched.values() {
        shown.tile.hide(viewer);
    }
    if let Some(frame) = ended {
        let _ = ws.close(Some(frame)).await;
    }
}

/// Returns once any of the tiles has a new picture or encoded frame (never while there are
/// none), with its place in `watched`'s order: waiting marked that news seen. Both are watched
/// whatever the page asked: a tile becomes encoded when a call's sink for it is made, which may
/// be after the page showed it.
async fn any_changed(watched: &mut HashMap<String, Watched>) -> News {
    if watched.is_empty() {
        return std::future::pending().await;
    }
    // A tile's senders live as long as the tile, which `Watched` holds: `changed` never fails.
    type Wait<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = News> + Send + 'a>>;
    let mut waits: Vec<Wait<'_>> = Vec::with_capacity(2 * watched.len());
    for (index, Watched { pictures, chain, .. }) in watched.values_mut().enumerate() {
        waits.push(Box::pin(async move {
            let _ = pictures.changed().await;
            News::Picture(index)
        }));
        waits.push(Box::pin(async move {
            let _ = chain.changed().await;
            News::Chain(index)
        }));
    }
    futures_util::future::select_all(waits).await.0
}

/// The news of every tile since the last batch (`moved`, in `watched`'s order, was marked seen
/// by waiting for it), as one message (a lone entry goes as it is, uncopied); `None` when there
/// is nothing to send (a tile shown before its first picture, a page waiting for a keyframe).
fn batch(watched: &mut HashMap<String, Watched>, moved: News) -> Option<Bytes> {
    let mut entries: Vec<Bytes> = Vec::new();
    for (index, w) in watched.values_mut().enumerate() {
        let picture_news = moved == News::Picture(index) || w.pictures.has_changed().unwrap_or(false);
        let chain_news = moved == News::Chain(index) || w.chain.has_changed().unwrap_or(false);
        if w.tile.sends_encoded(w.codec) {
            w.pictures.mark_unchanged();
            if chain_news || w.cursor.is_none() {
                w.chain.mark_unchanged();
                let reading = w.tile.read_chain(w.cursor, w.fresh_from);
                w.cursor = reading.cursor;
                entries.extend(reading.entries);
            }
        } else {
            w.chain.mark_unchanged();
            if picture_news {
                entries.extend(w.pictures.borrow_and_update().clone());
            }
        }
    }
    match entries.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        many => {
            let mut message = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            many.iter().for_each(|entry| message.put_slice(entry));
            Some(message.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
