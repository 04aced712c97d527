//! The frame socket: a WebSocket server on 127.0.0.1 that hands each tile's newest picture to the
//! page that shows it.
//!
//! It is bound before the app's window exists, so the port is known when the page's CSP is
//! written (`connect-src` names exactly `ws://127.0.0.1:PORT`). Other programs on the machine can
//! reach a loopback port, so a connection must bring the per-launch token (which the page gets
//! through a command) and come from the app's own origin; anything else is answered 403 before
//! it is a WebSocket. A page connects to `/tiles/NAME?token=T`, one connection per tile, and says
//! in text messages:
//! - `{"type":"size","width":W,"height":H,"fit":"contain"|"cover"}`: the tile's box in device
//!   pixels (again whenever it changes; 0x0 when hidden). Nothing is sent before the first.
//! - `{"type":"next"}`: it drew the last picture and takes another.
//!
//! It gets binary messages: a [`crate::HEADER_LEN`]-byte header ([`crate::wire_header`]) then the
//! I420 planes. One picture is in flight at a time: a picture made while the page is drawing
//! replaces the one before it, so a slow page skips pictures, never queues them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::tiles::{Fit, FrameTiles, Shown};

/// At most this many pages' tiles at once (nine tiles in the main window, a few in the mini
/// window and settings, and a reloaded page's leftovers).
pub const MAX_CONNECTIONS: usize = 32;

/// How long a connection may take to finish its WebSocket handshake.
pub const HANDSHAKE_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest box a page may ask for: 8K, far beyond any picture a call carries.
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
    Size { width: u32, height: u32, fit: Fit },
    Next,
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
    /// The tile a handshake asks for, or the answer that refuses it.
    fn check(&self, request: &Request) -> Result<String, ErrorResponse> {
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
        let name = request.uri().path().strip_prefix("/tiles/").unwrap_or("");
        // User ids (lowercase letters, digits, `._-`) and the app's own `_self`.
        let valid = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(refuse(StatusCode::NOT_FOUND, "no such tile"));
        }
        Ok(name.to_owned())
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn serve_page(stream: TcpStream, guard: &Guard, tiles: &FrameTiles, viewer: u64) {
    let mut asked = None;
    let check = |request: &Request, response: Response| {
        asked = Some(guard.check(request)?);
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
    let Some(name) = asked else { return };
    let Some(tile) = tiles.find(&name) else {
        let _ = ws.close(Some(CloseFrame { code: CloseCode::Again, reason: "too many tiles".into() })).await;
        return;
    };
    let mut pictures = tile.latest.subscribe();
    // The picture there is now goes first.
    pictures.mark_changed();
    let mut may_send = true;
    let mut sized = false;
    let ended = loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<PageMessage>(&text) {
                    Ok(PageMessage::Size { width, height, fit }) if width <= MAX_SIDE && height <= MAX_SIDE => {
                        tile.show(viewer, Shown { width, height, fit });
                        sized = true;
                    }
                    Ok(PageMessage::Next) => may_send = true,
                    _ => break Some(CloseFrame { code: CloseCode::Policy, reason: "unknown message".into() }),
                },
                Some(Ok(Message::Binary(_))) => break Some(CloseFrame { code: CloseCode::Unsupported, reason: "text only".into() }),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => {}
            },
            changed = pictures.changed(), if may_send && sized => {
                if changed.is_err() {
                    break None;
                }
                let picture = pictures.borrow_and_update().clone();
                if let Some(picture) = picture {
                    if ws.send(Message::Binary(picture)).await.is_err() {
                        break None;
                    }
                    may_send = false;
                }
            }
        }
    };
    tile.hide(viewer);
    if let Some(frame) = ended {
        let _ = ws.close(Some(frame)).await;
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
