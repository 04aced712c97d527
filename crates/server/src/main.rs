//! The `hark-server` command: serve, mint tokens, manage accounts.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hark_server::clock::{Clock, SystemClock};
use hark_server::config::Config;
use hark_server::store::Store;

#[derive(Parser)]
#[command(name = "hark-server", version, about = "Hark signaling server (protocol v1)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve {
        /// Address to listen on (overrides the config file).
        #[arg(long)]
        listen: Option<String>,
        /// Folder for the database and the signing secret.
        #[arg(long)]
        data_dir: PathBuf,
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Refuse new registrations.
        #[arg(long)]
        closed_registration: bool,
        /// Keep accounts and records in this PostgreSQL database (postgres://…), shared by a
        /// cluster's nodes, instead of SQLite in the data folder (overrides the config file).
        #[arg(long)]
        database: Option<String>,
        /// Sign tokens with the key in this file (owner-only, at least 32 characters), shared by
        /// every server of a cluster, instead of the data folder's (overrides the config file).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Cluster mode: share calls, sessions and presence with the other nodes on this NATS
        /// server (nats://HOST:PORT); needs --database and --signing-key (overrides the config file).
        #[arg(long)]
        nats: Option<String>,
        /// This node's name in logs and /metrics (overrides the config file).
        #[arg(long)]
        node_id: Option<String>,
        /// Serve HTTPS/WSS with this certificate chain (PEM); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Mints a token for USER with the server's secret (creating the account if there is none).
    Token {
        /// The user id.
        user: String,
        /// Lifetime: 30s, 15m, 12h, 7d.
        #[arg(long, default_value = "7d")]
        ttl: String,
        /// The server's data folder (its signing secret).
        #[arg(long)]
        data_dir: PathBuf,
        /// The server's PostgreSQL database, if it keeps its accounts there.
        #[arg(long)]
        database: Option<String>,
        /// The server's signing key file, if it uses one instead of the data folder's.
        #[arg(long)]
        signing_key: Option<PathBuf>,
    },
    /// Manages accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Adds an account; the password is read from the first line of stdin.
    Add {
        /// The user id.
        user: String,
        /// Display name.
        #[arg(long)]
        nickname: Option<String>,
        #[command(flatten)]
        accounts: Accounts,
    },
    /// Removes an account: its tokens stop working, and a running server closes its sessions
    /// within a couple of seconds.
    Remove {
        /// The user id.
        user: String,
        #[command(flatten)]
        accounts: Accounts,
    },
    /// Lists accounts.
    List {
        #[command(flatten)]
        accounts: Accounts,
    },
}

/// Where a server keeps its accounts.
#[derive(clap::Args)]
struct Accounts {
    /// The server's data folder (its SQLite database).
    #[arg(long, required_unless_present = "database")]
    data_dir: Option<PathBuf>,
    /// The server's PostgreSQL database (postgres://…), when it keeps its accounts there (the
    /// data folder is then not read).
    #[arg(long)]
    database: Option<String>,
}

impl Accounts {
    async fn open(&self) -> anyhow::Result<Store> {
        match (&self.database, &self.data_dir) {
            (Some(url), _) => Ok(Store::connect(url).await?),
            (None, Some(dir)) => Ok(Store::open(dir).await?),
            (None, None) => bail!("say where the accounts are: --data-dir or --database"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "hark_server=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { listen, data_dir, config, closed_registration, database, signing_key, nats, node_id, tls_cert, tls_key } => {
            let mut config = match config {
                Some(path) => Config::from_file(&path)?,
                None => Config::default(),
            };
            if let Some(listen) = listen {
                config.listen = listen;
            }
            config.closed_registration |= closed_registration;
            if database.is_some() {
                config.database = database;
            }
            if signing_key.is_some() {
                config.signing_key = signing_key;
            }
            if nats.is_some() {
                config.nats = nats;
            }
            if node_id.is_some() {
                config.node_id = node_id;
            }
            if let (Some(cert), Some(key)) = (tls_cert, tls_key) {
                config.tls = Some(hark_server::config::TlsConfig { cert, key });
            }
            serve(config, &data_dir).await
        }
        Command::Token { user, ttl, data_dir, database, signing_key } => {
            if !hark_protocol::valid_user_id(&user) {
                bail!("'{user}' is not a valid user id");
            }
            let ttl_s = parse_duration(&ttl)?;
            let secret = match &signing_key {
                Some(path) => hark_server::accounts::load_key_file(path).with_context(|| format!("the signing key {}", path.display()))?,
                None => hark_server::accounts::load_secret(&data_dir)
                    .with_context(|| format!("no signing secret in {} (start the server once first)", data_dir.display()))?,
            };
            let store = Store::open_configured(database.as_deref(), &data_dir).await?;
            let now = SystemClock.now_ms();
            if store.ensure_user(&user, now).await? == hark_server::store::AccountState::Removed {
                bail!("'{user}' was removed; add the account again first");
            }
            println!("{}", hark_protocol::token::mint_issued(&secret, &user, now / 1000, now / 1000 + ttl_s));
            Ok(())
        }
        Command::User { action } => manage_users(action).await,
    }
}

async fn serve(config: Config, data_dir: &Path) -> anyhow::Result<()> {
    raise_fd_limit();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let server = hark_server::start(listener, config, data_dir, Arc::new(SystemClock)).await?;
    println!("hark-server listening on {scheme}://{}", server.addr());
    std::io::stdout().flush()?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn manage_users(action: UserAction) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    match action {
        UserAction::Add { user, nickname, accounts } => {
            if !hark_protocol::valid_user_id(&user) {
                bail!("'{user}' is not a valid user id");
            }
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password).context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.len() < 8 {
                bail!("passwords are at least 8 bytes");
            }
            let mut memory = hark_server::hashing::ArgonMemory::new(hark_server::hashing::DEFAULT_BLOCKS).context("memory for hashing")?;
            let hash = hark_server::hashing::hash_password(password, &mut memory).map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
            let store = accounts.open().await?;
            if !store.create_user(&user, Some(&hash), nickname.as_deref(), now).await? {
                bail!("'{user}' already exists");
            }
            println!("added {user}");
        }
        UserAction::Remove { user, accounts } => {
            let store = accounts.open().await?;
            if !store.remove_user(&user, now).await? {
                bail!("no user '{user}'");
            }
            println!("removed {user}");
        }
        UserAction::List { accounts } => {
            let store = accounts.open().await?;
            for (user, nickname, _) in store.list_users().await? {
                println!("{user}\t{}", nickname.unwrap_or_default());
            }
        }
    }
    Ok(())
}

/// Seconds in `30s`, `15m`, `12h`, `7d` or a bare number of seconds.
fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = digits.parse().with_context(|| format!("bad duration '{text}'"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("bad duration unit in '{text}' (use s, m, h or d)"),
    };
    if n <= 0 {
        bail!("durations must be positive");
    }
    Ok(n * scale)
}

/// Lets the server hold as many sockets as the system allows: every session is one.
fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = libc::rlimit { rlim_cur: 1 << 20, rlim_max: 1 << 20 };
        // Raising the hard limit needs privilege; fall back to the current hard limit.
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
