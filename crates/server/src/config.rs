//! The server's configuration: a TOML file, every key optional, overridable by flags.

use std::path::Path;

use hark_protocol::IceTransportPolicy;
use serde::Deserialize;

/// Everything a server can be told. Defaults match PROTOCOL.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen (`--listen` overrides).
    pub listen: String,
    /// Refuse `POST /v1/register` with `registration_closed`.
    pub closed_registration: bool,
    /// Lifetime of tokens minted at login, in seconds.
    pub token_ttl_s: i64,
    /// Most people in one call, caller included.
    pub max_participants: u32,
    /// Ring timeout when an invite names none, in seconds.
    pub ring_timeout_s: u32,
    /// How long a joined session may be away before it counts as left, in seconds.
    pub reconnect_grace_s: u32,
    /// Origins allowed for CORS and WebSocket upgrades; empty means any.
    pub allowed_origins: Vec<String>,
    /// `all` or `relay`.
    pub ice_transport_policy: IceTransportPolicy,
    /// STUN servers handed to clients.
    pub stun_urls: Vec<String>,
    /// A TURN server with TURN REST credentials, if any.
    pub turn: Option<TurnConfig>,
    /// Request budgets per user and per source address.
    pub rate_limits: RateLimits,
    /// Most TCP connections open at once from one source address (an IPv6 /64 counts as one);
    /// beyond it a new connection is answered `429 rate_limited` and closed.
    pub connections_per_source: u32,
    /// Serve HTTPS and WSS with this certificate; plain HTTP without it (loopback and tests).
    pub tls: Option<TlsConfig>,
    /// Service accounts (like the echo test service) that are never busy and may be in many
    /// calls at once, one per session.
    pub service_accounts: Vec<String>,
    /// PostgreSQL to keep accounts, contacts and records in (`postgres://user@host/db`; `--database`
    /// overrides), shared by every node of a cluster. Without it they are kept in SQLite in the
    /// data folder.
    pub database: Option<String>,
    /// The token signing key, from a file the operator made (`--signing-key` overrides):
    /// servers that share a database share it. Without it the key is `signing.key` in the data
    /// folder, made on first start.
    pub signing_key: Option<std::path::PathBuf>,
    /// Cluster mode: the NATS server every node shares (`nats://HOST:PORT`; `--nats` overrides).
    /// Needs `database` and `signing_key`, which every node shares too.
    pub nats: Option<String>,
    /// This node's name in logs and `/metrics` (`--node-id` overrides); the host name if unset.
    pub node_id: Option<String>,
    /// Transport timers. Not read from the file: they are protocol constants, shortened only by
    /// tests that check them.
    #[serde(skip)]
    pub transport: TransportTimers,
}

/// The session-level timers of PROTOCOL.md section 3.
#[derive(Debug, Clone, Copy)]
pub struct TransportTimers {
    /// `hello` must arrive within this.
    pub hello_within: std::time::Duration,
    /// A WebSocket ping goes out this often.
    pub ping_every: std::time::Duration,
    /// A session silent this long (no frame, no pong) is closed.
    pub idle_limit: std::time::Duration,
    /// An HTTP request's headers, and a body the server reads, must arrive within this.
    pub request_within: std::time::Duration,
    /// A write to a client that makes no progress for this long ends the connection (a client
    /// that stopped reading).
    pub write_stall: std::time::Duration,
    /// How often the server looks for accounts removed by `hark-server user remove`.
    pub account_watch_every: std::time::Duration,
}

impl Default for TransportTimers {
    fn default() -> Self {
        use std::time::Duration;
        TransportTimers {
            hello_within: Duration::from_secs(10),
            ping_every: Duration::from_secs(15),
            idle_limit: Duration::from_secs(30),
            request_within: Duration::from_secs(10),
            write_stall: Duration::from_secs(10),
            account_watch_every: Duration::from_secs(1),
        }
    }
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
}

/// TURN servers sharing one `use-auth-secret` secret with the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnConfig {
    /// `turn:` and `turns:` URLs (UDP, `?transport=tcp`, TLS), all handed out with one credential.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: String,
    /// Lifetime of the credentials, in seconds.
    #[serde(default = "default_turn_ttl")]
    pub ttl_s: i64,
}

fn default_turn_ttl() -> i64 {
    86_400
}

/// Request budgets, as sustained rates with a burst of the same size.
///
/// Logins are limited by source and account together, as login services do: a stranger's wrong
/// passwords use up the stranger's budget, never the owner's.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// `call.invite` and `call.invite_more` per user per minute.
    pub invites_per_minute: u32,
    /// Failed `POST /v1/login` attempts per source address and user id per minute.
    pub logins_per_minute: u32,
    /// `POST /v1/login` attempts per source address per minute, whatever the user id (each
    /// costs a password hash, a decoy one for unknown ids).
    pub logins_per_source_per_minute: u32,
    /// `POST /v1/register` per source address per minute (each costs a password hash).
    pub registrations_per_minute: u32,
    /// Password hashes (logins and registrations) started per second for everyone together, in
    /// bursts of twice that; logins from where an account signed in before are not counted.
    pub password_hashes_per_second: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            invites_per_minute: 30,
            logins_per_minute: 10,
            logins_per_source_per_minute: 60,
            registrations_per_minute: 10,
            password_hashes_per_second: 5,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7600".into(),
            closed_registration: false,
            token_ttl_s: 7 * 24 * 3600,
            max_participants: 9,
            ring_timeout_s: 30,
            reconnect_grace_s: 20,
            allowed_origins: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            stun_urls: Vec::new(),
            turn: None,
            rate_limits: RateLimits::default(),
            connections_per_source: 256,
            service_accounts: Vec::new(),
            tls: None,
            database: None,
            signing_key: None,
            nats: None,
            node_id: None,
            transport: TransportTimers::default(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// The file is not valid TOML for [`Config`].
    #[error("bad configuration in {path}: {source}")]
    Parse { path: String, source: Box<toml::de::Error> },
    /// A value is out of range.
    #[error("bad configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let config: Config = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.display().to_string(), source: Box::new(source) })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(2..=64).contains(&self.max_participants) {
            return Err(ConfigError::Invalid("max_participants must be 2 to 64".into()));
        }
        if !hark_protocol::RING_TIMEOUT_RANGE_S.contains(&self.ring_timeout_s) {
            return Err(ConfigError::Invalid("ring_timeout_s must be 5 to 120".into()));
        }
        if self.connections_per_source == 0 {
            return Err(ConfigError::Invalid("connections_per_source must be at least 1".into()));
        }
        if self.token_ttl_s <= 0 {
            return Err(ConfigError::Invalid("token_ttl_s must be positive".into()));
        }
        let limits = &self.rate_limits;
        if limits.invites_per_minute == 0
            || limits.logins_per_minute == 0
            || limits.logins_per_source_per_minute == 0
            || limits.registrations_per_minute == 0
            || limits.password_hashes_per_second == 0
        {
            return Err(ConfigError::Invalid("rate limits must be at least 1 per minute".into()));
        }
        for url in &self.stun_urls {
            check_ice_url(url, &["stun", "stuns"], "stun_urls")?;
        }
        if let Some(turn) = &self.turn {
            if turn.urls.is_empty() {
                return Err(ConfigError::Invalid("turn.urls must name at least one TURN server".into()));
            }
            for url in &turn.urls {
                check_ice_url(url, &["turn", "turns"], "turn.urls")?;
            }
        }
        if let Some(nats) = &self.nats {
            if !cfg!(feature = "cluster") {
                return Err(ConfigError::Invalid("this build has no cluster mode: nats cannot be set".into()));
            }
            if !nats.starts_with("nats://") && !nats.starts_with("tls://") {
                return Err(ConfigError::Invalid(format!("nats: {nats:?} is not a nats:// URL")));
            }
            if !self.database.as_deref().is_some_and(|d| d.starts_with("postgres")) || self.signing_key.is_none() {
                return Err(ConfigError::Invalid(
                    "a cluster's nodes share their database and signing key: set database (postgres://…) and signing_key too".into(),
                ));
            }
        }
        if self.node_id.as_deref().is_some_and(|id| id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))) {
            return Err(ConfigError::Invalid("node_id must be 1 to 64 letters, digits, '-', '_' or '.'".into()));
        }
        Ok(())
    }
}

/// An ICE server URL as RFC 7064/7065 write them: `SCHEME:HOST[:PORT][?transport=udp|tcp]`, the
/// scheme one of `schemes` (a typo would reach every client, and fail only their calls).
fn check_ice_url(url: &str, schemes: &[&str], key: &str) -> Result<(), ConfigError> {
    let invalid = || ConfigError::Invalid(format!("{key}: {url:?} is not a {} URL ({}:HOST[:PORT][?transport=udp|tcp])", schemes.join(": or "), schemes[0]));
    let (scheme, rest) = url.split_once(':').ok_or_else(invalid)?;
    if !schemes.contains(&scheme) {
        return Err(invalid());
    }
    let (address, query) = rest.split_once('?').map_or((rest, None), |(a, q)| (a, Some(q)));
    if let Some(query) = query {
        if !scheme.starts_with("turn") || !matches!(query, "transport=udp" | "transport=tcp") {
            return Err(invalid());
        }
    }
    let (host, port) = match address.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(invalid)?;
            (host, after.strip_prefix(':'))
        }
        None => address.split_once(':').map_or((address, None), |(h, p)| (h, Some(p))),
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok_and(|p| p > 0));
    if host.is_empty() || host.contains(['/', '@', ' ']) || !port_ok {
        return Err(invalid());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example the server's package installs as /etc/hark/server.toml.
    const PACKAGED_EXAMPLE: &str = include_str!("../packaging/server.toml");

    /// A commented-out setting or table header of the example (`# key = …`, `# [table]`), not
    /// prose.
    fn commented_setting(line: &str) -> Option<&str> {
        let rest = line.strip_prefix("# ")?;
        let key = rest.split(" = ").next()?;
        let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') && rest.contains(" = ");
        let is_table = rest.starts_with('[') && rest.ends_with(']');
        (is_key || is_table).then_some(rest)
    }

    fn parse_checked(text: &str) -> Config {
        let config: Config = toml::from_str(text).expect("valid TOML for Config");
        config.validate().expect("values in range");
        config
    }

    #[test]
    fn the_packaged_example_is_the_defaults_and_names_only_real_keys() {
        let shipped = parse_checked(PACKAGED_EXAMPLE);
        assert_eq!(shipped.listen, Config::default().listen, "as shipped, every setting is commented out");

        let uncommented: Vec<&str> = PACKAGED_EXAMPLE.lines().map(|line| commented_setting(line).unwrap_or(line)).collect();
        let settings = uncommented.iter().zip(PACKAGED_EXAMPLE.lines()).filter(|(now, was)| *now != was).count();
        assert!(settings >= 20, "only {settings} settings were found to uncomment");
        // Unknown keys are refused (deny_unknown_fields), so a typo in the example fails here.
        let every_key = parse_checked(&uncommented.join("\n"));
        let defaults = Config::default();
        assert_eq!(every_key.listen, defaults.listen);
        assert_eq!(every_key.closed_registration, defaults.closed_registration);
        assert_eq!(every_key.token_ttl_s, defaults.token_ttl_s);
        assert_eq!(every_key.max_participants, defaults.max_participants);
        assert_eq!(every_key.ring_timeout_s, defaults.ring_timeout_s);
        assert_eq!(every_key.reconnect_grace_s, defaults.reconnect_grace_s);
        assert_eq!(every_key.ice_transport_policy, defaults.ice_transport_policy);
        assert_eq!(every_key.connections_per_source, defaults.connections_per_source);
        let (limits, default_limits) = (&every_key.rate_limits, &defaults.rate_limits);
        assert_eq!(limits.invites_per_minute, default_limits.invites_per_minute);
        assert_eq!(limits.logins_per_minute, default_limits.logins_per_minute);
        assert_eq!(limits.logins_per_source_per_minute, default_limits.logins_per_source_per_minute);
        assert_eq!(limits.registrations_per_minute, default_limits.registrations_per_minute);
        assert_eq!(limits.password_hashes_per_second, default_limits.password_hashes_per_second);
    }

    #[test]
    fn a_full_file_parses() {
        let config: Config = toml::from_str(
            r#"
            listen = "0.0.0.0:7600"
            closed_registration = true
            ice_transport_policy = "relay"
            stun_urls = ["stun:127.0.0.1:3478"]
            [turn]
            urls = ["turn:127.0.0.1:3478"]
            secret = "s3cret"
            [rate_limits]
            invites_per_minute = 5
            "#,
        )
        .unwrap();
        assert!(config.closed_registration);
        assert_eq!(config.ice_transport_policy, IceTransportPolicy::Relay);
        assert_eq!(config.turn.unwrap().ttl_s, 86_400);
        assert_eq!(config.rate_limits.logins_per_minute, 10);
        assert_eq!(config.max_participants, 9);
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let readme = include_str!("../../../README.md");
        // The server's section: the desktop's policy file has a TOML example of its own before it.
        let section = readme.find("\n## hark-server").expect("README has a hark-server section");
        let start = section + readme[section..].find("```toml\n").expect("README has a TOML example") + "```toml\n".len();
        let end = start + readme[start..].find("```").expect("closed");
        let config: Config = toml::from_str(&readme[start..end]).expect("the README's example parses");
        config.validate().unwrap();
    }

    #[test]
    fn ice_urls_are_checked_and_several_turn_transports_are_taken() {
        let with = |stun: &[&str], turn: &[&str]| Config {
            stun_urls: stun.iter().map(|s| s.to_string()).collect(),
            turn: Some(TurnConfig { urls: turn.iter().map(|s| s.to_string()).collect(), secret: "s".into(), ttl_s: 60 }),
            ..Config::default()
        };
        with(&["stun:stun.example.org", "stun:[2001:db8::1]:3478"], &["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp", "turns:turn.example.org:5349"])
            .validate()
            .unwrap();
        for (stun, turn) in [
            (&["turn:x:3478"][..], &["turn:x"][..]),
            (&["stun:x?transport=udp"], &["turn:x"]),
            (&[], &["tun:x:3478"]),
            (&[], &["turn:x:99999"]),
            (&[], &["turn:x:3478?transport=sctp"]),
            (&[], &["turn:"]),
            (&[], &["turn://x:3478"]),
            (&[], &[]),
        ] {
            let refused = with(stun, turn).validate();
            assert!(matches!(&refused, Err(ConfigError::Invalid(_))), "{stun:?} {turn:?}: {refused:?}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_refused() {
        assert!(toml::from_str::<Config>("listne = \"x\"").is_err());
        let config = Config { ring_timeout_s: 3, ..Config::default() };
        assert!(config.validate().is_err());
    }
}
