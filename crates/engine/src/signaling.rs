//! The signaling driver: one task that owns the WebSocket to the hark-server.
//!
//! It signs in (a token, or a password it trades for one over HTTP), says `hello`, and then
//! forwards every server frame to the engine as a [`SignalingEvent`] and every queued
//! [`ClientFrame`] to the server. When the socket drops it reconnects with [`Backoff`] and says
//! `hello` again with the same device id, so the server keeps the calls of this device through
//! its reconnect grace; the `welcome` that follows carries `joined_calls`, which the engine hands
//! to the call core to resync. Frames queued while the socket is down are sent after the next
//! `welcome` (a hangup typed during an outage still reaches the server).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hark_protocol::{CallSummary, ClientFrame, ClientMessage, ErrorCode, IceServer, IceTransportPolicy, KickReason, ServerMessage};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::proxy::{proxy_for, HttpProxy, ProxySetting};

/// Frames kept while the socket is down; older ones are dropped past this.
const OFFLINE_QUEUE: usize = 256;

/// How long the server may be silent (it pings every 15 s) before the connection counts as dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(45);

/// How to sign in.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A token minted by the server or an operator's backend.
    Token(String),
    /// A password, traded for a token at `POST /v1/login`; with `register`, the account is
    /// created first if it does not exist.
    Password {
        /// User id.
        user: String,
        /// Password.
        password: String,
        /// Create the account if needed.
        register: bool,
    },
}

/// Where and who.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:7600`.
    pub server: String,
    /// How to sign in.
    pub credentials: Credentials,
    /// A stable id of this device, so reconnects are recognised.
    pub device: String,
    /// Client name and version for `hello`.
    pub client: String,
    /// Extra trusted root certificates (PEM files) for an `https://` server whose certificate is
    /// not signed by a public authority (a self-hosted server's own CA, a test certificate).
    pub extra_roots: Vec<std::path::PathBuf>,
    /// Whether and which proxy to reach the server through ([`crate::proxy`]).
    pub proxy: ProxySetting,
}

/// What the server said at sign-in.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    /// Who we are.
    pub user: String,
    /// ICE servers for our peer connections.
    pub ice_servers: Vec<IceServer>,
    /// Relay only or not.
    pub ice_transport_policy: IceTransportPolicy,
    /// The server's clock at sign-in (Unix ms).
    pub server_time: i64,
    /// Calls this device is still joined in.
    pub joined_calls: Vec<CallSummary>,
}

/// News from the signaling driver.
#[derive(Debug, Clone)]
pub enum SignalingEvent {
    /// Signed in (again): `resumed` after a reconnect.
    Up {
        /// The welcome.
        welcome: Welcome,
        /// Whether this follows a dropped connection.
        resumed: bool,
    },
    /// The connection dropped; it is being re-established.
    Down {
        /// Why, for logs.
        reason: String,
        /// The server closed the session on purpose, and why.
        kicked: Option<KickReason>,
    },
    /// A frame from the server.
    Frame(ServerMessage),
    /// Signing in is impossible with these credentials; the driver has stopped.
    Refused {
        /// The protocol code (`bad_credentials`, `unauthorized`, `token_expired`, …).
        code: ErrorCode,
        /// The server's words.
        message: String,
    },
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalingError {
    /// The server refused the credentials or the hello.
    #[error("{code}: {message}")]
    Refused {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// The network or the server failed; worth retrying.
    #[error("{0}")]
    Transient(String),
}

/// Reconnect delays: exponential from 250 ms to 10 s, with ±20 % jitter so many clients that
/// lost the same server do not come back in lockstep. Pure: the caller supplies the randomness.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
}

impl Backoff {
    const FIRST_MS: f64 = 250.0;
    const MAX_MS: f64 = 10_000.0;

    /// A fresh backoff.
    pub fn new() -> Self {
        Backoff { attempt: 0 }
    }

    /// The delay before the next attempt; `random` is uniform in [0, 1).
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let base = (Self::FIRST_MS * 2f64.powi(self.attempt.min(16) as i32)).min(Self::MAX_MS);
        self.attempt += 1;
        Duration::from_millis((base * (0.8 + 0.4 * random)) as u64)
    }

    /// After a successful connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The WebSocket URL for a server base URL (`http` -> `ws`, `https` -> `wss`).
pub fn websocket_url(server: &str) -> String {
    let trimmed = server.trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").map(|r| format!("wss://{r}"));
    let rest = rest.or_else(|| trimmed.strip_prefix("http://").map(|r| format!("ws://{r}")));
    format!("{}/v1/ws", rest.unwrap_or_else(|| format!("ws://{trimmed}")))
}

/// Sends frames to the driver.
#[derive(Debug, Clone)]
pub struct SignalingHandle {
    frames: mpsc::UnboundedSender<ClientFrame>,
}

impl SignalingHandle {
    /// Queues a frame for the server.
    pub fn send(&self, frame: ClientFrame) {
        let _ = self.frames.send(frame);
    }
}

/// Starts the driver; it runs until the handle is dropped or the credentials are refused.
pub fn spawn(config: SignalingConfig, events: mpsc::UnboundedSender<SignalingEvent>) -> SignalingHandle {
    let (frames, outbound) = mpsc::unbounded_channel();
    tokio::spawn(run(config, events, outbound));
    SignalingHandle { frames }
}

async fn run(config: SignalingConfig, events: mpsc::UnboundedSender<SignalingEvent>, mut outbound: mpsc::UnboundedReceiver<ClientFrame>) {
    let mut backoff = Backoff::new();
    let mut token: Option<String> = None;
    let mut queued: VecDeque<ClientFrame> = VecDeque::new();
    let mut resumed = false;
    // The trusted roots (files on disk) and the HTTP client are made once, not per attempt.
    let prepared = reach(&config.server, &config.extra_roots, &config.proxy);
    let (tls, http, proxy) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            let (code, message) = match e {
                SignalingError::Refused { code, message } => (code, message),
                SignalingError::Transient(message) => (ErrorCode::Internal, message),
            };
            let _ = events.send(SignalingEvent::Refused { code, message });
            return;
        }
    };
    loop {
        let attempt = match token.clone() {
            Some(current) => Ok(current),
            None => obtain_token(&config, &http).await,
        };
        let connected = match attempt {
            Ok(current) => {
                token = Some(current.clone());
                connect(&config, &tls, proxy.as_ref(), &current).await
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok((mut ws, welcome)) => {
                backoff.reset();
                info!(user = %welcome.user, resumed, "signed in");
                let _ = events.send(SignalingEvent::Up { welcome, resumed });
                resumed = true;
                let mut failed = false;
                while let Some(frame) = queued.pop_front() {
                    if ws.send(Message::Text(frame.to_json().into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                let mut kicked = None;
                let reason = if failed {
                    "send failed".to_string()
                } else {
                    // The server pings every 15 s: hearing nothing for much longer means the
                    // connection is half-open (the server vanished without closing it).
                    let mut silence = std::pin::pin!(tokio::time::sleep(SILENCE_LIMIT));
                    loop {
                        tokio::select! {
                            () = &mut silence => break "nothing heard from the server; reconnecting".to_string(),
                            incoming = ws.next() => {
                                if matches!(incoming, Some(Ok(_))) {
                                    silence.as_mut().reset(tokio::time::Instant::now() + SILENCE_LIMIT);
                                }
                                match incoming {
                                Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                                    // Another engine signed in with our device id: coming back
                                    // would only push it out in turn, forever.
                                    Ok(ServerMessage::Kicked { reason: KickReason::Replaced }) => {
                                        let _ = events.send(SignalingEvent::Refused {
                                            code: ErrorCode::InvalidState,
                                            message: "signed in again elsewhere with this device id".into(),
                                        });
                                        return;
                                    }
                                    Ok(ServerMessage::Kicked { reason }) => {
                                        kicked = Some(reason);
                                        break format!("kicked: {}", reason.as_str());
                                    }
                                    Ok(message) => { let _ = events.send(SignalingEvent::Frame(message)); }
                                    Err(e) => warn!(error = %e, "unreadable frame from the server"),
                                },
                                Some(Ok(Message::Close(frame))) => break format!("closed by the server: {frame:?}"),
                                Some(Ok(_)) => {}
                                Some(Err(e)) => break e.to_string(),
                                None => break "connection ended".to_string(),
                                }
                            }
                            frame = outbound.recv() => match frame {
                                Some(frame) => {
                                    if let Err(e) = ws.send(Message::Text(frame.to_json().into())).await {
                                        queued.push_back(frame);
                                        break e.to_string();
                                    }
                                }
                                None => {
                                    let _ = ws.close(None).await;
                                    return;
                                }
                            },
                        }
                    }
                };
                debug!(%reason, "signaling down");
                let _ = events.send(SignalingEvent::Down { reason, kicked });
            }
            Err(SignalingError::Refused { code, message }) => {
                // An expired token can be replaced when we hold a password.
                if code == ErrorCode::TokenExpired && matches!(config.credentials, Credentials::Password { .. }) {
                    token = None;
                    continue;
                }
                let _ = events.send(SignalingEvent::Refused { code, message });
                return;
            }
            Err(SignalingError::Transient(reason)) => {
                let _ = events.send(SignalingEvent::Down { reason, kicked: None });
            }
        }
        if !wait_or_closed(&mut backoff, &mut outbound, &mut queued).await {
            return;
        }
    }
}

/// Waits out the backoff, queueing frames meanwhile; false if the engine went away.
async fn wait_or_closed(backoff: &mut Backoff, outbound: &mut mpsc::UnboundedReceiver<ClientFrame>, queued: &mut VecDeque<ClientFrame>) -> bool {
    let delay = backoff.next_delay(rand::random());
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return true,
            frame = outbound.recv() => match frame {
                Some(frame) => {
                    if queued.len() == OFFLINE_QUEUE {
                        queued.pop_front();
                    }
                    queued.push_back(frame);
                }
                None => return false,
            },
        }
    }
}

/// A byte stream to the server: plain TCP or TLS over it.
trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Transport for T {}

type Socket = tokio_tungstenite::WebSocketStream<Box<dyn Transport>>;

/// Opens `ws://` over TCP, or `wss://` over TLS checked against the public roots and
/// `config.extra_roots`; through `proxy`'s tunnel when there is one.
async fn open_websocket(url: &str, tls: &Arc<rustls::ClientConfig>, proxy: Option<&HttpProxy>) -> Result<Socket, SignalingError> {
    let transient = |e: &dyn std::fmt::Display| SignalingError::Transient(format!("{url}: {e}"));
    let (secure, rest) = match url.strip_prefix("wss://") {
        Some(rest) => (true, rest),
        None => (false, url.strip_prefix("ws://").unwrap_or(url)),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            (host.trim_matches(['[', ']']), port.parse::<u16>().map_err(|e| transient(&e))?)
        }
        _ => (authority, if secure { 443 } else { 80 }),
    };
    let tcp = match proxy {
        Some(proxy) => proxy.tunnel(host, port).await.map_err(|e| transient(&e))?,
        None => tokio::net::TcpStream::connect((host, port)).await.map_err(|e| transient(&e))?,
    };
    // Signaling frames are small; do not let them wait for delayed ACKs.
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Transport> = if secure {
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
        let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| transient(&e))?;
        Box::new(connector.connect(name, tcp).await.map_err(|e| transient(&e))?)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await.map_err(|e| transient(&e))?;
    Ok(ws)
}

/// The TLS client configuration: the public web roots plus any extra ones (signaling's, and
/// TURN over TLS's).
pub(crate) fn tls_config(extra_roots: &[std::path::PathBuf]) -> Result<Arc<rustls::ClientConfig>, SignalingError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for path in extra_roots {
        let refused = |e: &dyn std::fmt::Display| SignalingError::Refused {
            code: ErrorCode::BadRequest,
            message: format!("trusted root {}: {e}", path.display()),
        };
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(|e| refused(&e))? {
            roots.add(cert.map_err(|e| refused(&e))?).map_err(|e| refused(&e))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SignalingError::Transient(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn connect(config: &SignalingConfig, tls: &Arc<rustls::ClientConfig>, proxy: Option<&HttpProxy>, token: &str) -> Result<(Socket, Welcome), SignalingError> {
    let url = websocket_url(&config.server);
    let mut ws = open_websocket(&url, tls, proxy).await?;
    let hello = ClientFrame::new(
        "hello",
        ClientMessage::Hello { token: token.to_owned(), protocol: vec![hark_protocol::PROTOCOL_VERSION], device: config.device.clone(), client: Some(config.client.clone()) },
    );
    ws.send(Message::Text(hello.to_json().into())).await.map_err(|e| SignalingError::Transient(e.to_string()))?;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| SignalingError::Transient("no welcome within 10 s".into()))?;
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(SignalingError::Transient(e.to_string())),
            None => return Err(SignalingError::Transient("closed before welcome".into())),
        };
        match serde_json::from_str::<ServerMessage>(&text) {
            Ok(ServerMessage::Welcome { user, ice_servers, ice_transport_policy, server_time, joined_calls, .. }) => {
                return Ok((ws, Welcome { user, ice_servers, ice_transport_policy, server_time, joined_calls }));
            }
            Ok(ServerMessage::Error { code: ErrorCode::Internal, message, .. }) => {
                return Err(SignalingError::Transient(message));
            }
            Ok(ServerMessage::Error { code, message, .. }) => return Err(SignalingError::Refused { code, message }),
            _ => continue,
        }
    }
}

async fn obtain_token(config: &SignalingConfig, http: &reqwest::Client) -> Result<String, SignalingError> {
    let (user, password, register) = match &config.credentials {
        Credentials::Token(token) => return Ok(token.clone()),
        Credentials::Password { user, password, register } => (user, password, *register),
    };
    let base = config.server.trim_end_matches('/');
    if register {
        let (status, body) = post(http, &format!("{base}/v1/register"), json!({"user": user, "password": password})).await?;
        if status != 201 && body["code"] != "user_exists" {
            return Err(refusal(&body));
        }
    }
    let (status, body) = post(http, &format!("{base}/v1/login"), json!({"user": user, "password": password})).await?;
    if status != 200 {
        return Err(refusal(&body));
    }
    body["token"].as_str().map(str::to_owned).ok_or_else(|| SignalingError::Transient("login answer without a token".into()))
}

/// A token from `POST /v1/login`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedToken {
    /// The token, for [`Credentials::Token`].
    pub token: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
}

/// Creates an account (`POST /v1/register`); `user_exists` and `registration_closed` come back
/// as [`SignalingError::Refused`]. For an app's sign-up form, where an existing account is an
/// error the person must see (the driver's `register` flag instead treats it as "sign in").
pub async fn register_account(server: &str, extra_roots: &[std::path::PathBuf], proxy: &ProxySetting, user: &str, password: &str, nickname: Option<&str>) -> Result<(), SignalingError> {
    let (_, http, _) = reach(server, extra_roots, proxy)?;
    let mut body = json!({"user": user, "password": password});
    if let Some(nickname) = nickname {
        body["nickname"] = json!(nickname);
    }
    let (status, answer) = post(&http, &format!("{}/v1/register", server.trim_end_matches('/')), body).await?;
    if status == 201 { Ok(()) } else { Err(refusal(&answer)) }
}

/// Trades a password for a token (`POST /v1/login`), so an app can keep the token rather than
/// the password.
pub async fn log_in(server: &str, extra_roots: &[std::path::PathBuf], proxy: &ProxySetting, user: &str, password: &str) -> Result<SignedToken, SignalingError> {
    let (_, http, _) = reach(server, extra_roots, proxy)?;
    let (status, body) = post(&http, &format!("{}/v1/login", server.trim_end_matches('/')), json!({"user": user, "password": password})).await?;
    if status != 200 {
        return Err(refusal(&body));
    }
    match (body["token"].as_str(), body["expires_at"].as_i64()) {
        (Some(token), Some(expires_at)) => Ok(SignedToken { token: token.to_owned(), expires_at }),
        _ => Err(SignalingError::Transient("login answer without a token".into())),
    }
}

/// How to reach `server`: the TLS roots, an HTTP client, and the proxy (the setting, else the
/// environment's), made once. A proxy address that cannot be used is refused (`bad_request`):
/// retrying would not make it usable.
fn reach(server: &str, extra_roots: &[std::path::PathBuf], proxy: &ProxySetting) -> Result<(Arc<rustls::ClientConfig>, reqwest::Client, Option<HttpProxy>), SignalingError> {
    let unusable = |e: crate::proxy::ProxyError| SignalingError::Refused { code: ErrorCode::BadRequest, message: e.to_string() };
    let proxy = proxy_for(server, proxy, |name| std::env::var(name).ok()).map_err(unusable)?;
    let tls = tls_config(extra_roots)?;
    // reqwest's own reading of the environment is turned off: one decision, for both paths.
    let mut builder = reqwest::Client::builder().use_preconfigured_tls((*tls).clone()).no_proxy();
    if let Some(proxy) = &proxy {
        builder = builder.proxy(proxy.for_http_client().map_err(unusable)?);
    }
    let http = builder.build().map_err(|e| SignalingError::Transient(e.to_string()))?;
    Ok((tls, http, proxy))
}

async fn post(http: &reqwest::Client, url: &str, body: serde_json::Value) -> Result<(u16, serde_json::Value), SignalingError> {
    let response = http.post(url).json(&body).send().await.map_err(|e| {
        let causes = with_causes(&e);
        // hyper says only "tunnel error" when a proxy refuses CONNECT (wrong credentials, a port
        // it does not allow): say whose refusal it was.
        let whose = if causes.contains("tunnel error") { "the proxy would not open a tunnel to the server: " } else { "" };
        SignalingError::Transient(format!("{url}: {whose}{causes}"))
    })?;
    let status = response.status().as_u16();
    if status >= 500 {
        return Err(SignalingError::Transient(format!("{url}: HTTP {status}")));
    }
    if status == 407 {
        // The proxy's, not the server's: never to be read as the account's credentials failing.
        return Err(SignalingError::Transient(format!("{url}: the proxy asks for credentials (HTTP 407)")));
    }
    let answer = response.json().await.unwrap_or(serde_json::Value::Null);
    if status >= 400 && answer.get("code").is_none() {
        // Not a Hark server's refusal (they all carry a code): a proxy's or a stranger's.
        return Err(SignalingError::Transient(format!("{url}: HTTP {status}, not from a Hark server")));
    }
    Ok((status, answer))
}

/// An error and its causes on one line: reqwest's own text ("error sending request") hides the
/// reason (a refused certificate, say) in its source chain.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn refusal(body: &serde_json::Value) -> SignalingError {
    let code = serde_json::from_value(body["code"].clone()).unwrap_or(ErrorCode::Unauthorized);
    let message = body["message"].as_str().unwrap_or("refused").to_owned();
    if code == ErrorCode::RateLimited {
        return SignalingError::Transient(message);
    }
    SignalingError::Refused { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay(0.5).as_millis() as u64).collect();
        assert_eq!(delays, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(8_000), "-20 % jitter");
        assert_eq!(backoff.next_delay(0.999_999).as_millis(), 11_999, "+20 % jitter");
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), Duration::from_millis(250));
    }

    #[test]
    fn websocket_urls() {
        assert_eq!(websocket_url("http://127.0.0.1:7600"), "ws://127.0.0.1:7600/v1/ws");
        assert_eq!(websocket_url("https://hark.example/"), "wss://hark.example/v1/ws");
        assert_eq!(websocket_url("127.0.0.1:7600"), "ws://127.0.0.1:7600/v1/ws");
    }
}
