//! hark-server: the Hark signaling server (protocol v1, `docs/PROTOCOL.md`).
//!
//! The pieces, from the socket inwards:
//! - [`listener`]: the accept loop (plain or TLS) with its limits: connections per source,
//!   request and write deadlines.
//! - [`http`]: axum routes for register/login, the WebSocket upgrade, `/healthz` ([`health`]),
//!   `/metrics`, CORS.
//! - [`hashing`]: argon2id on a bounded pool of its own threads.
//! - [`session`]: one task per connection; transport rules, request validation, and the requests
//!   that only touch storage (contacts, profiles, history).
//! - [`hub`]: the single task that owns the [`registry::CallRegistry`] and feeds it.
//! - [`outbox`]: stores each hub batch's records, then delivers that batch's events, in order,
//!   so the hub never waits on the database.
//! - [`registry`]: the pure call state machine; every call flow is a unit test on virtual time.
//! - [`store`]: storage behind one trait: SQLite via sqlx (WAL, migrations) for a single server,
//!   PostgreSQL for servers that share a database.
//! - [`account_watch`]: learns of accounts removed by `hark-server user remove` (another process)
//!   and has the hub close their sessions.
//!
//! [`start`] takes its listener, configuration, data folder and clock as arguments (so tests bind
//! `127.0.0.1:0` and drive time by hand) and returns a handle whose [`RunningServer::shutdown`]
//! closes every session with `kicked {reason:"shutdown"}`, ends live calls and writes their
//! records before it returns.

pub mod account_watch;
pub mod accounts;
pub mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod hashing;
pub mod health;
pub mod http;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod rate_limit;
pub mod registry;
pub mod replica;
pub mod session;
pub mod store;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::hashing::HashPool;
use crate::hub::Hub;
use crate::listener::ListenerSettings;
use crate::metrics::Metrics;
use crate::rate_limit::{KnownSources, RateLimiter};
use crate::registry::{CallRegistry, RegistrySettings};
use crate::store::Store;

/// Commands queued for the hub before senders wait: deep enough to absorb a burst of setups.
const HUB_QUEUE: usize = 8192;
/// Password hashes that may wait for a worker; more are refused at once (`429`).
const HASH_QUEUE: usize = 8;

/// What every request handler shares.
pub struct AppState {
    /// The configuration in force.
    pub config: Config,
    /// Storage.
    pub store: Store,
    /// The token signing secret.
    pub secret: Vec<u8>,
    /// Wall-clock time for tokens, records and ring timers.
    pub clock: Arc<dyn Clock>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The hub's command channel.
    pub hub: mpsc::Sender<hub::HubCommand>,
    /// `/healthz`'s last answer.
    pub health: health::HealthCheck,
    /// Invite budget per user.
    pub invites: RateLimiter,
    /// Failed-login budget per source address and user id.
    pub logins: RateLimiter,
    /// Login-attempt budget per source address.
    pub login_sources: RateLimiter,
    /// Registration budget per source address.
    pub registrations: RateLimiter,
    /// Where passwords are hashed and checked.
    pub passwords: HashPool,
    /// Where each account signed in from before (their logins go first).
    pub known_sources: KnownSources,
    /// Session numbering: the next session is this server's `next_session`th.
    pub next_session: AtomicU64,
    /// This server's tag in its session ids.
    pub session_tag: delivery::SessionTag,
    /// Random per start, so session ids do not repeat across restarts.
    pub session_prefix: u32,
    /// Flips to true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data folder or the secret in it could not be used.
    #[error("data folder: {0}")]
    DataDir(#[from] std::io::Error),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The cluster could not be joined.
    #[cfg(feature = "cluster")]
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// A started server.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    serve: JoinHandle<std::io::Result<()>>,
    hub: JoinHandle<()>,
    watch: JoinHandle<()>,
    store: Store,
    metrics: Arc<Metrics>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, closes every session, ends live calls (writing their records) and waits
    /// for all of it.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.wait().await;
    }

    /// Waits until the server has stopped (after [`Self::shutdown`] or a fatal error).
    async fn wait(self) {
        match self.serve.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
        }
        if let Err(e) = self.watch.await {
            tracing::error!(error = %e, "account watch failed");
        }
        if let Err(e) = self.hub.await {
            tracing::error!(error = %e, "hub task failed");
        }
        self.store.close().await;
    }
}

/// Starts a server on `listener` with its data in `data_dir` (created owner-only if missing), and
/// its accounts and records in the database the configuration names (SQLite in `data_dir` if
/// none).
pub async fn start(listener: TcpListener, config: Config, data_dir: &Path, clock: Arc<dyn Clock>) -> Result<RunningServer, StartError> {
    let tls = prepare(&config, data_dir)?;
    let store = Store::open_configured(config.database.as_deref(), data_dir).await?;
    serve_on(listener, config, tls, data_dir, clock, store).await
}

/// Starts a server on storage the caller opened (tests wrap it to slow it down or make it fail).
pub async fn start_with_store(
    listener: TcpListener,
    config: Config,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
    store: Store,
) -> Result<RunningServer, StartError> {
    let tls = prepare(&config, data_dir)?;
    serve_on(listener, config, tls, data_dir, clock, store).await
}

/// Checks the configuration and the certificate, then makes the data folder: a bad certificate
/// stops the start before anything is set up.
fn prepare(config: &Config, data_dir: &Path) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    config.validate()?;
    let tls = match &config.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    create_private_dir(data_dir)?;
    Ok(tls)
}

async fn serve_on(
    listener: TcpListener,
    config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    data_dir: &Path,
    clock: Arc<dyn Clock>,
    store: Store,
) -> Result<RunningServer, StartError> {
    let secret = accounts::signing_key(config.signing_key.as_deref(), data_dir)?;
    let metrics = Arc::new(Metrics::default());
    let settings = RegistrySettings {
        max_participants: config.max_participants as usize,
        default_ring_timeout_s: config.ring_timeout_s,
        reconnect_grace_ms: i64::from(config.reconnect_grace_s) * 1000,
        service_accounts: config.service_accounts.iter().cloned().collect(),
    };
    let (call_prefix, session_prefix) = {
        let mut rng = rand::thread_rng();
        (rng.gen(), rng.gen())
    };
    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let hub = match config.nats.clone() {
        None => {
            let registry = CallRegistry::new(settings, call_prefix);
            let delivery = Box::new(delivery::LocalDelivery::default());
            tokio::spawn(Hub::new(registry, store.clone(), delivery, Arc::clone(&clock), Arc::clone(&metrics)).run(hub_rx))
        }
        #[cfg(feature = "cluster")]
        Some(nats) => {
            let node_id = config.node_id.clone().unwrap_or_else(|| delivery::SessionTag::new(session_prefix).hex());
            let cluster = cluster::ClusterSettings { nats, node_id, registry: settings };
            cluster::start(cluster, delivery::SessionTag::new(session_prefix), store.clone(), Arc::clone(&clock), Arc::clone(&metrics), hub_rx).await?
        }
        #[cfg(not(feature = "cluster"))]
        Some(_) => return Err(config::ConfigError::Invalid("this build has no cluster mode".into()).into()),
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Removals from before this start need nothing: their sessions died with the last process.
    let seen = store.last_account_event().await?;
    let watch = tokio::spawn(account_watch::run(
        store.clone(),
        hub_tx.clone(),
        seen,
        config.transport.account_watch_every,
        shutdown_rx.clone(),
    ));
    let listener_settings = ListenerSettings {
        connections_per_source: config.connections_per_source,
        timers: config.transport,
        tls,
    };
    let state = Arc::new(AppState {
        invites: RateLimiter::new(config.rate_limits.invites_per_minute),
        logins: RateLimiter::new(config.rate_limits.logins_per_minute),
        login_sources: RateLimiter::new(config.rate_limits.logins_per_source_per_minute),
        registrations: RateLimiter::new(config.rate_limits.registrations_per_minute),
        passwords: HashPool::new(HashPool::default_workers(), HASH_QUEUE, config.rate_limits.password_hashes_per_second, Arc::clone(&clock))?,
        known_sources: KnownSources::default(),
        config,
        store: store.clone(),
        secret,
        clock,
        metrics: Arc::clone(&metrics),
        hub: hub_tx,
        health: health::HealthCheck::default(),
        next_session: AtomicU64::new(1),
        session_tag: delivery::SessionTag::new(session_prefix),
        session_prefix,
        shutdown: shutdown_rx.clone(),
    });
    let addr = listener.local_addr()?;
    let app = http::router(state);
    let serve = tokio::spawn(listener::serve(listener, app, listener_settings, Arc::clone(&metrics), shutdown_rx));
    Ok(RunningServer { addr, shutdown: shutdown_tx, serve, hub, watch, store, metrics })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    Ok(())
}
