//! The accept loop every connection goes through, plain or TLS, and the limits it enforces.
//!
//! axum's own `serve` holds a connection for as long as the client likes: one that sends half a
//! request line, or nothing, or trickles a body, or stops reading the answers, is never closed
//! (250 of 250 such connections were still held after 98 s). So the server runs its own loop:
//! - **per source**: at most `connections_per_source` connections from one address (an IPv6 /64
//!   counts as one address); a connection beyond it is answered `429 rate_limited` with
//!   `Retry-After` and closed; and **in all**, no more connections than the process's file
//!   descriptor limit leaves room for (less [`RESERVED_FDS`] for the database and the listener),
//!   so that many sources together meet a clear refusal rather than failing accepts;
//! - **headers in time**: hyper (HTTP/1.1 only) closes a connection whose request headers are not
//!   complete within `request_within`, which also covers a connection that sends nothing and an
//!   idle keep-alive one; bodies that the server reads have their own deadline (`http.rs`);
//! - **writes in time**: every socket is a [`ClientSocket`], whose writes fail once they have made
//!   no progress for `write_stall`, so a client that stops reading cannot hold a task (HTTP or,
//!   after the upgrade, WebSocket) in a write forever;
//! - each request carries the peer address as `ConnectInfo<SocketAddr>`, for the per-source
//!   limits of the HTTP routes.
//!
//! A connection's slot in the per-source table lives inside its [`ClientSocket`], so an upgraded
//! WebSocket keeps counting until its socket is gone.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::debug;

use crate::config::TransportTimers;
use crate::metrics::Metrics;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals being written at once; past this, a connection over its source's limit is dropped
/// without an answer (a flood of them must not become a flood of tasks).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refusal waits for the client to read it and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Descriptors kept for the database, its WAL files, the listener and the runtime.
const RESERVED_FDS: u64 = 32;
/// What a client gets when its address has too many connections open.
const REFUSAL_BODY: &str = r#"{"code":"rate_limited","message":"too many connections from your address"}"#;
/// `Retry-After` of that answer, in seconds.
const REFUSAL_RETRY_AFTER_S: u32 = 10;

/// What the accept loop needs to know.
pub struct ListenerSettings {
    /// Connections allowed at once from one source.
    pub connections_per_source: u32,
    /// Request and write deadlines.
    pub timers: TransportTimers,
    /// TLS, when the server terminates it.
    pub tls: Option<TlsAcceptor>,
}

/// The key connections and login attempts are counted under: the address itself, except that an
/// IPv6 address counts by its /64, since one subscriber holds a whole /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// Open connections per source, and in all.
#[derive(Debug)]
struct SourceTable {
    limit: u32,
    total_limit: u64,
    open: Mutex<HashMap<IpAddr, u32>>,
    metrics: Arc<Metrics>,
}

impl SourceTable {
    /// A slot for one more connection from `source`, unless it or the server is at its limit.
    fn enter(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let total = u64::try_from(self.metrics.tcp_connections.load(Ordering::Relaxed)).unwrap_or(0);
        let count = open.entry(source).or_insert(0);
        if *count >= self.limit || total >= self.total_limit {
            if *count == 0 {
                open.remove(&source);
            }
            return None;
        }
        *count += 1;
        self.metrics.tcp_connections.fetch_add(1, Ordering::Relaxed);
        Some(SourceSlot { table: Arc::clone(self), source })
    }
}

/// One connection's place in the [`SourceTable`], given back on drop.
#[derive(Debug)]
struct SourceSlot {
    table: Arc<SourceTable>,
    source: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
        self.table.metrics.tcp_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's TCP stream: holds its source slot, and fails a write that has made no progress for
/// the stall limit.
#[derive(Debug)]
pub struct ClientSocket {
    tcp: TcpStream,
    _slot: SourceSlot,
    stall_limit: Duration,
    /// Set while a write is pending: when it fires, the write fails.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl ClientSocket {
    /// Called when a write, flush or shutdown returned `Pending`: arms the stall deadline (once
    /// per stall) and says whether it has passed.
    fn stall_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.stall_limit;
        let deadline = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        deadline.as_mut().poll(cx).is_ready()
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match outcome {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending if self.stall_expired(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for ClientSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.guard(cx, outcome)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.guard(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.tcp).poll_flush(cx);
        this.guard(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.tcp).poll_shutdown(cx);
        this.guard(cx, outcome)
    }
}

/// Accepts connections until `stop` turns true; each is served on a task of its own.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let sources = Arc::new(SourceTable {
        limit: settings.connections_per_source,
        total_limit: descriptor_limit().saturating_sub(RESERVED_FDS),
        open: Mutex::new(HashMap::new()),
        metrics: Arc::clone(&metrics),
    });
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let settings = Arc::new(settings);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => Some(accepted),
            _ = stop.wait_for(|stopping| *stopping) => None,
        };
        let (tcp, peer) = match accepted {
            None => return Ok(()),
            Some(Ok(accepted)) => accepted,
            // Out of descriptors, or a connection that died in the backlog: the listener itself is
            // fine, so keep accepting (after a breath, if it is the former).
            Some(Err(e)) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Signaling frames are small and often sent in pairs (`ok` then `call.ended`): without
        // TCP_NODELAY the second waits for the peer's delayed ACK, about 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some(slot) = sources.enter(source_of(peer.ip())) else {
            metrics.refused_connections.fetch_add(1, Ordering::Relaxed);
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                let tls = settings.tls.clone();
                tokio::spawn(async move {
                    refuse(tcp, tls).await;
                    drop(permit);
                });
            }
            continue;
        };
        let socket = ClientSocket { tcp, _slot: slot, stall_limit: settings.timers.write_stall, stalled: None };
        let (app, settings, stop) = (app.clone(), Arc::clone(&settings), stop.clone());
        tokio::spawn(async move {
            match &settings.tls {
                None => serve_http(socket, peer, app, &settings, stop).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(tls)) => serve_http(tls, peer, app, &settings, stop).await,
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

/// The process's soft limit on open files.
fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    limit.rlim_cur
}

/// Serves HTTP/1.1 (with upgrades, for the WebSocket route) on one connection.
async fn serve_http<S>(stream: S, peer: SocketAddr, app: Router, settings: &ListenerSettings, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(settings.timers.request_within);
    let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    // At shutdown an idle keep-alive connection is closed rather than waited for (it holds the
    // app state, and with it the hub, until the client's own idle timeout).
    let finished = tokio::select! {
        outcome = connection.as_mut() => Some(outcome),
        _ = stop.wait_for(|stopping| *stopping) => None,
    };
    let outcome = match finished {
        Some(outcome) => outcome,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = outcome {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Tells a client over its source's limit why, then closes. Whatever the client already sent is
/// read and dropped first: closing a socket with unread data resets it, and the client could lose
/// the answer.
async fn refuse(tcp: TcpStream, tls: Option<TlsAcceptor>) {
    match tls {
        None => write_refusal(tcp).await,
        Some(acceptor) => {
            if let Ok(Ok(stream)) = tokio::time::timeout(REFUSAL_LINGER, acceptor.accept(tcp)).await {
                write_refusal(stream).await;
            }
        }
    }
}

async fn write_refusal<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: {REFUSAL_RETRY_AFTER_S}\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{REFUSAL_BODY}",
        REFUSAL_BODY.len()
    );
    let linger = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let v4: IpAddr = "127.0.0.7".parse().unwrap();
        assert_eq!(source_of(v4), v4);
        let mapped: IpAddr = "::ffff:127.0.0.7".parse().unwrap();
        assert_eq!(source_of(mapped), v4);
    }

    #[test]
    fn a_source_at_its_limit_gets_no_slot_until_one_is_given_back() {
        let metrics = Arc::new(Metrics::default());
        let table = Arc::new(SourceTable { limit: 2, total_limit: 3, open: Mutex::new(HashMap::new()), metrics: Arc::clone(&metrics) });
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let there: IpAddr = "127.0.0.2".parse().unwrap();
        let first = table.enter(here).unwrap();
        let _second = table.enter(here).unwrap();
        assert!(table.enter(here).is_none());
        let elsewhere = table.enter(there).expect("sources are counted apart");
        assert_eq!(metrics.tcp_connections.load(Ordering::Relaxed), 3);
        let third: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(table.enter(third).is_none(), "the server's own limit holds for any source");
        drop(first);
        assert!(table.enter(here).is_some());
        assert_eq!(metrics.tcp_connections.load(Ordering::Relaxed), 2, "the slot taken in the check above went back at once");
        drop(elsewhere);
        assert!(table.open.lock().unwrap().keys().all(|k| *k == here), "no entry is left for a source with nothing open");
    }
}
