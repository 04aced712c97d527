//! TURN over TCP and over TLS, for networks that let no UDP through.
//!
//! webrtc-rs 0.21.1's ICE agent speaks TURN over UDP only (it skips `?transport=tcp` and
//! `turns:` URLs). Rather than patch it, Hark carries the agent's TURN traffic itself: the agent
//! is given each TCP or TLS server as a UDP TURN server at the same address, and its sockets come
//! from [`StreamingRuntime`], webrtc-rs's tokio runtime with one change: a UDP socket sends what
//! is addressed to such a server down a TCP (or TLS) connection of its own, and hands what comes
//! back up it to the agent as datagrams from that address. STUN and ChannelData messages delimit
//! themselves on a stream (RFC 8656 §12.5; ChannelData is padded to four bytes there), so the
//! agent's messages pass unchanged, and each socket's connection carries that socket's one
//! allocation, as its UDP 5-tuple would. The TLS server's name is checked against the same roots
//! as signaling. Why not a patch: TURN over a stream touches the agent's gatherer, its TURN client
//! and the driver's sockets (three crates to vendor); this is one module over the public
//! runtime trait.
//!
//! Each TCP or TLS server is given to webrtc-rs at a stand-in address of its own (see [`plan`]),
//! so a server's UDP and TCP on one port are two paths, as a browser has them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hark_protocol::IceServer;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use webrtc::runtime::{AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime, TokioRuntime, Transmit};

/// How long connecting to a TURN server over TCP (and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest message read off a stream: a STUN or ChannelData length field's most.
const MAX_MESSAGE: usize = 20 + 65_535;
/// Datagrams queued for one stream before more are dropped (about 0.4 s of a 720p call's
/// packets): a stream slower than the media loses packets as a UDP path would.
const STREAM_QUEUE: usize = 64;

/// How a TURN server is reached.
#[derive(Clone, PartialEq, Eq)]
enum Stream {
    Tcp,
    Tls(ServerName<'static>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Tcp => write!(f, "tcp"),
            Stream::Tls(name) => write!(f, "tls({})", name.to_str()),
        }
    }
}

/// The TURN servers reached over a stream, by the stand-in address webrtc-rs sends to: each
/// server's own address and how it is reached; and the TLS client for those over TLS.
#[derive(Clone)]
pub struct StreamedTurn {
    servers: HashMap<SocketAddr, (SocketAddr, Stream)>,
    /// Set whenever a `turns:` server is in `servers` ([`plan`] leaves them out otherwise).
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for StreamedTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.servers.iter().map(|(stand_in, (address, stream))| (stand_in, format!("{address} {stream:?}")))).finish()
    }
}

impl StreamedTurn {
    /// Whether any server is reached over a stream.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

/// A TURN URL taken apart: over a stream or not, host, port.
#[derive(Debug, PartialEq, Eq)]
struct TurnUrl {
    tls: bool,
    tcp: bool,
    host: String,
    port: u16,
}

/// Reads `turn:HOST[:PORT][?transport=udp|tcp]` and `turns:HOST[:PORT][?transport=tcp]`
/// (RFC 7065); `None` for anything else.
fn parse_turn_url(url: &str) -> Option<TurnUrl> {
    let (scheme, rest) = url.split_once(':')?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "turn" => false,
        "turns" => true,
        _ => return None,
    };
    let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
    let transport = query.split('&').find_map(|pair| pair.strip_prefix("transport=")).map(str::to_ascii_lowercase);
    let tcp = match transport.as_deref() {
        None => tls,
        Some("tcp") => true,
        Some("udp") if !tls => false,
        Some(_) => return None,
    };
    let default_port = if tls { 5349 } else { 3478 };
    let (host, port) = match address.strip_prefix('[') {
        // [v6]:port or [v6]
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (host.to_owned(), port)
        }
        None => match address.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().ok()?),
            None => (address.to_owned(), default_port),
        },
    };
    (!host.is_empty()).then_some(TurnUrl { tls, tcp, host, port })
}

/// The ICE servers to give webrtc-rs, and those of them it reaches through a stream: STUN and
/// TURN over UDP as they are; each TURN over TCP or TLS as UDP TURN at a stand-in address of its
/// own, noted in [`StreamedTurn`] with the server's resolved address. The stand-ins come from
/// 198.18.0.0/15 (RFC 2544's benchmarking range, never a real server's), so UDP and TCP at the
/// same host and port are two paths, as in a browser. URLs that do not read, stream servers that
/// do not resolve, and `turns:` without a TLS client are left out. Only stream servers are
/// resolved here (webrtc-rs resolves the others itself), so a call on STUN and UDP TURN alone
/// waits for no lookup.
pub async fn plan(servers: &[IceServer], tls: Option<Arc<rustls::ClientConfig>>) -> (Vec<(IceServer, Vec<String>)>, StreamedTurn) {
    let mut streamed = StreamedTurn { servers: HashMap::new(), tls: None };
    let mut by_server: Vec<(IceServer, Vec<String>)> = Vec::new();
    // Collected first: an iterator of closures held across the awaits below keeps the future
    // from being Send.
    let urls: Vec<(&IceServer, &String)> = servers.iter().flat_map(|s| s.urls.iter().map(move |u| (s, u))).collect();
    for (server, url) in urls {
        let given = match parse_turn_url(url) {
            None if url.to_ascii_lowercase().starts_with("stun:") => Some(url.clone()),
            None => {
                debug!(%url, "an ICE server URL that does not read; left out");
                None
            }
            Some(turn) if !turn.tcp => Some(url.clone()),
            Some(turn) if turn.tls && tls.is_none() => {
                debug!(%url, "TURN over TLS without a TLS client; left out");
                None
            }
            Some(turn) => match resolve(&turn.host, turn.port).await {
                None => {
                    debug!(%url, "a TURN server that does not resolve; left out");
                    None
                }
                Some(address) => {
                    let stream = if turn.tls {
                        match ServerName::try_from(turn.host.clone()) {
                            Ok(name) => Stream::Tls(name),
                            Err(_) => {
                                debug!(%url, "a TURN server name TLS cannot check; left out");
                                continue;
                            }
                        }
                    } else {
                        Stream::Tcp
                    };
                    let known = streamed.servers.values().any(|(a, s)| (a, s) == (&address, &stream));
                    let Ok(n) = u8::try_from(streamed.servers.len() + 1) else { continue };
                    if known || n == u8::MAX {
                        continue;
                    }
                    let stand_in = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)), address.port());
                    streamed.servers.insert(stand_in, (address, stream));
                    Some(format!("turn:{stand_in}?transport=udp"))
                }
            },
        };
        if let Some(given) = given {
            match by_server.iter_mut().find(|(s, _)| s == server) {
                Some((_, urls)) => urls.push(given),
                None => by_server.push((server.clone(), vec![given])),
            }
        }
    }
    streamed.tls = tls;
    (by_server, streamed)
}

/// The first address `host` resolves to, IPv4 first (webrtc-rs's sockets are mostly IPv4).
async fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.ok()?.collect();
    addresses.iter().find(|a| a.is_ipv4()).or(addresses.first()).copied()
}

/// How much of a stream's buffer makes its next message.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// Not all of it has come.
    Partial,
    /// A message of `length` bytes, then `padding` bytes to skip.
    Message { length: usize, padding: usize },
    /// Neither STUN nor ChannelData: the stream is out of step.
    Garbage,
}

/// Finds the next message at the start of `buffer` (RFC 8656 §12.5, RFC 8489 §6).
fn next_message(buffer: &[u8]) -> Framed {
    if buffer.len() < 4 {
        return Framed::Partial;
    }
    let field = usize::from(u16::from_be_bytes([buffer[2], buffer[3]]));
    let (length, padding) = match buffer[0] {
        // STUN: the first two bits are zero, the length excludes the 20-byte header and is a
        // multiple of four.
        0x00..=0x3f => (20 + field, 0),
        // ChannelData: channel numbers 0x4000-0x7FFF; padded to four bytes on a stream.
        0x40..=0x7f => (4 + field, (4 - field % 4) % 4),
        _ => return Framed::Garbage,
    };
    if buffer.len() < length + padding {
        Framed::Partial
    } else {
        Framed::Message { length, padding }
    }
}

/// A datagram as it goes on a stream: ChannelData padded to four bytes.
fn for_stream(datagram: &[u8]) -> Bytes {
    match datagram {
        [0x40..=0x7f, _, high, low, ..] => {
            // The header's length, not the datagram's: it may be padded already.
            let length = (4 + usize::from(u16::from_be_bytes([*high, *low]))).min(datagram.len());
            let mut padded = BytesMut::from(&datagram[..length]);
            padded.resize(length.div_ceil(4) * 4, 0);
            padded.freeze()
        }
        _ => Bytes::copy_from_slice(datagram),
    }
}

/// webrtc-rs's tokio runtime with UDP sockets that reach some TURN servers over a stream.
#[derive(Debug)]
pub struct StreamingRuntime {
    inner: TokioRuntime,
    streamed: Arc<StreamedTurn>,
}

impl StreamingRuntime {
    /// A runtime whose UDP sockets send to `streamed`'s servers over TCP or TLS.
    pub fn new(streamed: StreamedTurn) -> Self {
        StreamingRuntime { inner: TokioRuntime, streamed: Arc::new(streamed) }
    }
}

impl Runtime for StreamingRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(&self, reactor_pool_size: usize, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = self.inner.wrap_udp_socket(socket)?;
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        Ok(Arc::new(StreamingUdpSocket {
            inner,
            streamed: Arc::clone(&self.streamed),
            links: Mutex::new(HashMap::new()),
            arrived_tx,
            arrived: Mutex::new(arrived),
        }))
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(&'a self, remote_addr: SocketAddr) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio, TURN over TCP/TLS"
    }
}

/// A UDP socket whose datagrams to some TURN servers go over a stream of its own to each.
struct StreamingUdpSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    streamed: Arc<StreamedTurn>,
    /// The writer of each server's stream, opened on the first datagram to it (and again after
    /// the stream ends).
    links: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    arrived_tx: mpsc::UnboundedSender<(SocketAddr, Bytes)>,
    /// Messages read off the streams, as datagrams from their server.
    arrived: Mutex<mpsc::UnboundedReceiver<(SocketAddr, Bytes)>>,
}

impl fmt::Debug for StreamingUdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingUdpSocket").field("inner", &self.inner).field("streamed", &self.streamed).finish()
    }
}

impl StreamingUdpSocket {
    /// Queues `datagram` on the stream to the server standing in at `server` (its own address
    /// `address`), opening it first if needed.
    fn send_streamed(&self, server: SocketAddr, address: SocketAddr, stream: &Stream, datagram: &[u8]) -> io::Result<()> {
        let mut links = self.links.lock().map_err(|_| io::Error::other("stream table poisoned"))?;
        let message = for_stream(datagram);
        if let Some(link) = links.get(&server) {
            match link.try_send(message.clone()) {
                Ok(()) => return Ok(()),
                // The stream is slower than what we send: the datagram is dropped, as a full
                // UDP path would drop it, so the senders' rate control sees loss instead of a
                // queue that grows without end.
                Err(mpsc::error::TrySendError::Full(_)) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        // No stream yet, or it ended: a new one. An allocation does not move to a new
        // connection (the server knows it by the old one), so after a reset the relay path
        // stays gone until the media watchdog's ICE restart allocates again.
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let _ = tx.try_send(message);
        runtime.spawn(carry(server, address, stream.clone(), self.streamed.tls.clone(), rx, self.arrived_tx.clone()));
        links.insert(server, tx);
        Ok(())
    }
}

/// One stream to a TURN server at `address`: writes what is queued, reads messages back as
/// datagrams from its stand-in `server`.
async fn carry(
    server: SocketAddr,
    address: SocketAddr,
    stream: Stream,
    tls: Option<Arc<rustls::ClientConfig>>,
    mut outgoing: mpsc::Receiver<Bytes>,
    arrived: mpsc::UnboundedSender<(SocketAddr, Bytes)>,
) {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return debug!(%address, error = %e, "TURN over TCP: cannot connect"),
        Err(_) => return debug!(%address, "TURN over TCP: connecting timed out"),
    };
    let _ = tcp.set_nodelay(true);
    match stream {
        Stream::Tcp => pump(server, tcp, &mut outgoing, arrived).await,
        Stream::Tls(name) => {
            let Some(tls) = tls else { return warn!(%server, "TURN over TLS without a TLS client") };
            let connector = tokio_rustls::TlsConnector::from(tls);
            match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
                Ok(Ok(tls)) => pump(server, tls, &mut outgoing, arrived).await,
                Ok(Err(e)) => warn!(%server, error = %e, "TURN over TLS: handshake refused"),
                Err(_) => debug!(%server, "TURN over TLS: handshake timed out"),
            }
        }
    }
    outgoing.close();
}

/// Moves messages both ways on a connected stream until either side ends.
async fn pump<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    server: SocketAddr,
    stream: S,
    outgoing: &mut mpsc::Receiver<Bytes>,
    arrived: mpsc::UnboundedSender<(SocketAddr, Bytes)>,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let write = async {
        while let Some(message) = outgoing.recv().await {
            if let Err(e) = writer.write_all(&message).await {
                debug!(%server, error = %e, "TURN stream: write failed");
                return;
            }
        }
    };
    let read = async {
        let mut buffer = BytesMut::with_capacity(4096);
        loop {
            match next_message(&buffer) {
                Framed::Message { length, padding } => {
                    let message = buffer.split_to(length).freeze();
                    let _ = buffer.split_to(padding);
                    if arrived.send((server, message)).is_err() {
                        return;
                    }
                    continue;
                }
                Framed::Garbage => return warn!(%server, "TURN stream: neither STUN nor ChannelData; closing it"),
                Framed::Partial if buffer.len() >= MAX_MESSAGE => return,
                Framed::Partial => {}
            }
            match reader.read_buf(&mut buffer).await {
                Ok(0) => return debug!(%server, "TURN stream: closed by the server"),
                Ok(_) => {}
                Err(e) => return debug!(%server, error = %e, "TURN stream: read failed"),
            }
        }
    };
    tokio::select! {
        () = write => {}
        () = read => {}
    }
}

impl AsyncUdpSocket for StreamingUdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let Some((address, stream)) = self.streamed.servers.get(&transmit.destination) else {
            return self.inner.poll_send(cx, transmit);
        };
        let datagrams: Vec<&[u8]> = match transmit.segment_size {
            Some(size) if size > 0 => transmit.contents.chunks(size).collect(),
            _ => vec![transmit.contents],
        };
        for datagram in datagrams {
            if let Err(e) = self.send_streamed(transmit.destination, *address, stream, datagram) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(transmit.contents.len()))
    }

    fn poll_recv(&self, cx: &mut Context<'_>, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> Poll<io::Result<usize>> {
        if let (Ok(mut arrived), Some(buf), Some(slot)) = (self.arrived.lock(), bufs.first_mut(), meta.first_mut()) {
            if let Poll::Ready(Some((server, message))) = arrived.poll_recv(cx) {
                let length = message.len().min(buf.len());
                buf[..length].copy_from_slice(&message[..length]);
                let mut read = RecvMeta::default();
                read.addr = server;
                read.len = length;
                read.stride = length.max(1);
                *slot = read;
                return Poll::Ready(Ok(1));
            }
        }
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(tls: bool, tcp: bool, host: &str, port: u16) -> Option<TurnUrl> {
        Some(TurnUrl { tls, tcp, host: host.into(), port })
    }

    #[test]
    fn turn_urls_read_as_rfc_7065_writes_them() {
        assert_eq!(parse_turn_url("turn:example.org"), turn(false, false, "example.org", 3478));
        assert_eq!(parse_turn_url("turn:example.org:3479?transport=udp"), turn(false, false, "example.org", 3479));
        assert_eq!(parse_turn_url("turn:10.0.0.1:3478?transport=tcp"), turn(false, true, "10.0.0.1", 3478));
        assert_eq!(parse_turn_url("turns:example.org"), turn(true, true, "example.org", 5349));
        assert_eq!(parse_turn_url("TURNS:example.org:443?transport=tcp"), turn(true, true, "example.org", 443));
        assert_eq!(parse_turn_url("turn:[::1]:3478?transport=tcp"), turn(false, true, "::1", 3478));
        assert_eq!(parse_turn_url("turn:[::1]"), turn(false, false, "::1", 3478));
    }

    #[test]
    fn other_urls_are_not_turn() {
        for url in ["stun:example.org", "turns:example.org?transport=udp", "turn:example.org:port", "turn:", "turn:[::1", "http://x", "turn:x?transport=sctp"] {
            assert_eq!(parse_turn_url(url), None, "{url}");
        }
    }

    #[test]
    fn stun_and_channel_data_are_cut_from_a_stream() {
        // A STUN header saying 8 bytes of attributes: 28 in all.
        let mut stun = vec![0x00, 0x01, 0x00, 0x08];
        stun.extend_from_slice(&[0; 24]);
        assert_eq!(next_message(&stun[..27]), Framed::Partial);
        assert_eq!(next_message(&stun), Framed::Message { length: 28, padding: 0 });
        // ChannelData of 5 bytes: 9, then 3 of padding.
        let channel = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(next_message(&channel[..11]), Framed::Partial);
        assert_eq!(next_message(&channel), Framed::Message { length: 9, padding: 3 });
        assert_eq!(next_message(&[0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4]), Framed::Message { length: 8, padding: 0 });
        assert_eq!(next_message(&[0x80, 0, 0, 0]), Framed::Garbage);
        assert_eq!(next_message(&[0x00, 0x01]), Framed::Partial);
    }

    #[test]
    fn channel_data_is_padded_for_a_stream_and_stun_is_not() {
        assert_eq!(&for_stream(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5])[..], &[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
        // Already padded (allowed over UDP): the padding is the header's, not doubled.
        assert_eq!(for_stream(&[0x40, 0x00, 0x00, 0x02, 1, 2, 0, 0]).len(), 8);
        let stun = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(&for_stream(&stun)[..], &stun);
    }

    fn tls() -> Option<Arc<rustls::ClientConfig>> {
        Some(crate::signaling::tls_config(&[]).unwrap())
    }

    fn server(urls: &[&str]) -> IceServer {
        IceServer { urls: urls.iter().map(|u| u.to_string()).collect(), username: Some("u".into()), credential: Some("p".into()) }
    }

    #[tokio::test]
    async fn tcp_and_tls_servers_are_given_to_webrtc_rs_as_udp_at_stand_in_addresses() {
        let (planned, streamed) =
            plan(&[server(&["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp", "turns:localhost:5349"])], tls()).await;
        let urls: Vec<&String> = planned.iter().flat_map(|(_, urls)| urls).collect();
        assert_eq!(urls, ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "turn:198.18.0.1:3478?transport=udp", "turn:198.18.0.2:5349?transport=udp"]);
        assert_eq!(format!("{streamed:?}").len(), "{198.18.0.1:3478: \"127.0.0.1:3478 tcp\", 198.18.0.2:5349: \"127.0.0.1:5349 tls(localhost)\"}".len());
        assert!(format!("{streamed:?}").contains("198.18.0.1:3478: \"127.0.0.1:3478 tcp\""), "{streamed:?}");
        assert!(format!("{streamed:?}").contains("198.18.0.2:5349: \"127.0.0.1:5349 tls(localhost)\""), "{streamed:?}");
        assert_eq!(planned[0].0.username.as_deref(), Some("u"), "the credentials go with the URLs");

        // The same server twice is one path; URLs that do not read are left out.
        let (planned, streamed) =
            plan(&[server(&["turn:127.0.0.1:3478?transport=tcp", "turn:127.0.0.1:3478?transport=tcp", "turn:bad:url", "turns:127.0.0.1:5349?transport=udp"])], tls()).await;
        let urls: Vec<&String> = planned.iter().flat_map(|(_, urls)| urls).collect();
        assert_eq!(urls, ["turn:198.18.0.1:3478?transport=udp"]);
        assert_eq!(format!("{streamed:?}"), "{198.18.0.1:3478: \"127.0.0.1:3478 tcp\"}");

        // Without a TLS client, TLS servers are left out.
        let (planned, streamed) = plan(&[server(&["turns:localhost:5349", "turn:127.0.0.1:3478"])], None).await;
        let urls: Vec<&String> = planned.iter().flat_map(|(_, urls)| urls).collect();
        assert_eq!(urls, ["turn:127.0.0.1:3478"]);
        assert!(streamed.is_empty());
    }
}
