//! Signaling through an HTTP proxy, for networks where the only way out is one (the reference
//! product's `setNetworkProxy`). The WebSocket goes through a `CONNECT` tunnel (RFC 9110 §9.3.6),
//! so `wss://` stays end-to-end TLS and the proxy sees only the host and port; the HTTP calls
//! (log in, register) go through the same proxy by reqwest's own proxy support.
//!
//! Which proxy: the person's setting when there is one, otherwise the environment as curl reads
//! it (`https_proxy`/`HTTPS_PROXY` for an `https://` server, `http_proxy`/`HTTP_PROXY` for an
//! `http://` one, and `no_proxy`/`NO_PROXY` naming the hosts that skip it), except that a server
//! on this machine (localhost, a loopback address) never goes through the environment's proxy,
//! as Go's `ProxyFromEnvironment` and browsers decide: a proxy cannot reach our loopback. The
//! proxy itself is
//! spoken to in plain HTTP (`http://[user:password@]host[:port]`, port 1080 by default as in
//! curl); media never goes through it (that is TURN's job).

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most a proxy's answer to `CONNECT` may take before its blank line.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// curl's default proxy port.
const DEFAULT_PORT: u16 = 1080;

/// Why the proxy could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The proxy's address is not one this speaks to.
    #[error("proxy address {0:?}: use http://[user:password@]host[:port]")]
    BadAddress(String),
    /// The proxy could not be reached, or dropped the connection.
    #[error("proxy {proxy}: {error}")]
    Unreachable {
        /// The proxy.
        proxy: String,
        /// What went wrong.
        error: String,
    },
    /// The proxy wants credentials it was not given, or refused the ones it was.
    #[error("proxy {0} asks for credentials, or refused the ones given")]
    NeedsCredentials(String),
    /// The proxy would not open the tunnel.
    #[error("proxy {proxy} refused the tunnel to {target}: {status}")]
    Refused {
        /// The proxy.
        proxy: String,
        /// Where to.
        target: String,
        /// Its status line.
        status: String,
    },
}

/// An HTTP proxy to reach the server through.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpProxy {
    host: String,
    port: u16,
    /// `user:password`, when the address carried them.
    credentials: Option<String>,
}

// Credentials stay out of logs.
impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpProxy({})", self.address())
    }
}

impl HttpProxy {
    /// Reads `http://[user:password@]host[:port][/]` (the scheme may be left out, as curl allows).
    pub fn parse(text: &str) -> Result<HttpProxy, ProxyError> {
        let bad = || ProxyError::BadAddress(text.to_owned());
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad()),
            None => text,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(bad());
        }
        let (credentials, authority) = match rest.rsplit_once('@') {
            Some((credentials, authority)) => (Some(percent_decoded(credentials).ok_or_else(bad)?), authority),
            None => (None, rest),
        };
        let (host, port) = split_host_port(authority).ok_or_else(bad)?;
        let port = port.map_or(Ok(DEFAULT_PORT), |port| port.parse::<u16>().map_err(|_| bad()))?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(HttpProxy { host: host.to_owned(), port, credentials })
    }

    /// `host:port`, for messages (never the credentials).
    pub fn address(&self) -> String {
        if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) }
    }

    /// The proxy as reqwest takes it.
    pub fn for_http_client(&self) -> Result<reqwest::Proxy, ProxyError> {
        let proxy = reqwest::Proxy::all(format!("http://{}", self.address())).map_err(|e| ProxyError::BadAddress(e.to_string()))?;
        Ok(match self.credentials.as_deref().map(|c| c.split_once(':').unwrap_or((c, ""))) {
            Some((user, password)) => proxy.basic_auth(user, password),
            None => proxy,
        })
    }

    /// A TCP stream to `host:port` through the proxy's `CONNECT` tunnel.
    pub async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream, ProxyError> {
        let unreachable = |error: &dyn std::fmt::Display| ProxyError::Unreachable { proxy: self.address(), error: error.to_string() };
        let mut stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| unreachable(&e))?;
        let _ = stream.set_nodelay(true);
        let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(credentials) = &self.credentials {
            request.push_str(&format!("Proxy-Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(credentials)));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.map_err(|e| unreachable(&e))?;

        // Read to the end of the answer's head, and no further: what follows belongs to the
        // server (a proxy sends nothing after a 200 until the client speaks, but be exact).
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_ANSWER_BYTES {
                return Err(unreachable(&"an answer to CONNECT over 16 KiB"));
            }
            match stream.read(&mut byte).await.map_err(|e| unreachable(&e))? {
                0 => return Err(unreachable(&"closed the connection before answering CONNECT")),
                _ => head.push(byte[0]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default().trim().to_owned();
        match status_code(&status_line) {
            Some(200..=299) => Ok(stream),
            // 407 is the standard's; tinyproxy answers wrong credentials with 401.
            Some(401 | 407) => Err(ProxyError::NeedsCredentials(self.address())),
            Some(_) => Err(ProxyError::Refused { proxy: self.address(), target, status: status_line }),
            None => Err(unreachable(&format!("not an HTTP answer: {status_line:?}"))),
        }
    }
}

/// Whether and how to use a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// The environment's (`HTTPS_PROXY` and the like), if any.
    #[default]
    FromEnvironment,
    /// None: straight to the server (an app's own built-in server, say).
    Direct,
    /// This one (`http://[user:password@]host[:port]`).
    Http(String),
}

impl ProxySetting {
    /// A person's setting as text: blank for the environment's, `none` (or `direct`) for none,
    /// otherwise the proxy's address.
    pub fn from_text(text: &str) -> ProxySetting {
        match text.trim() {
            "" => ProxySetting::FromEnvironment,
            none if none.eq_ignore_ascii_case("none") || none.eq_ignore_ascii_case("direct") => ProxySetting::Direct,
            address => ProxySetting::Http(address.to_owned()),
        }
    }
}

/// The proxy to reach `server_url` through, as `setting` says; from the environment (read by
/// `env`) unless `no_proxy` names the server's host or the server is on this machine.
pub fn proxy_for(server_url: &str, setting: &ProxySetting, env: impl Fn(&str) -> Option<String>) -> Result<Option<HttpProxy>, ProxyError> {
    match setting {
        ProxySetting::Direct => return Ok(None),
        ProxySetting::Http(address) => return HttpProxy::parse(address).map(Some),
        ProxySetting::FromEnvironment => {}
    }
    let secure = ["https://", "wss://"].iter().any(|scheme| server_url.get(..scheme.len()).is_some_and(|s| s.eq_ignore_ascii_case(scheme)));
    let names: &[&str] = if secure { &["https_proxy", "HTTPS_PROXY"] } else { &["http_proxy", "HTTP_PROXY"] };
    let Some(address) = names.iter().find_map(|name| env(name).filter(|v| !v.trim().is_empty())) else { return Ok(None) };
    let host = server_host(server_url);
    let skipped = is_loopback(&host) || env("no_proxy").or_else(|| env("NO_PROXY")).is_some_and(|list| skips(&list, &host));
    if skipped { Ok(None) } else { HttpProxy::parse(&address).map(Some) }
}

/// Whether curl's `no_proxy` `list` names `host`: `*`, the host itself, or a domain it is in
/// (`example.com` and `.example.com` both cover `a.example.com`). Case does not matter.
fn skips(list: &str, host: &str) -> bool {
    let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
    list.split(',').map(|entry| entry.trim().to_ascii_lowercase()).filter(|entry| !entry.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.trim_start_matches('.').trim_matches(['[', ']']);
        host == entry || host.ends_with(&format!(".{entry}"))
    })
}

/// `localhost` (and its subdomains, RFC 6761) or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']).trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of a URL like `https://host:port/path`.
fn server_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    split_host_port(authority).map_or(authority, |(host, _)| host).to_owned()
}

/// `host[:port]`, `[v6][:port]`.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None => Some((authority, None)),
    }
}

/// `%XX` decoded (user names and passwords in URLs may carry `@`, `:` and the like escaped).
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The status code of an HTTP status line (`HTTP/1.1 200 Connection established`).
fn status_code(line: &str) -> Option<u16> {
    let mut words = line.split_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn addresses_read_as_curl_reads_them() {
        let proxy = HttpProxy::parse("http://proxy.corp:3128/").unwrap();
        assert_eq!((proxy.address(), proxy.credentials), ("proxy.corp:3128".to_owned(), None));
        assert_eq!(HttpProxy::parse("proxy.corp").unwrap().address(), "proxy.corp:1080", "curl's default port");
        assert_eq!(HttpProxy::parse("HTTP://[::1]:8888").unwrap().address(), "[::1]:8888");
        let with_credentials = HttpProxy::parse("http://ann:p%40ss:word@10.0.0.1:8080").unwrap();
        assert_eq!(with_credentials.credentials.as_deref(), Some("ann:p@ss:word"));
        assert!(!format!("{with_credentials:?}").contains("word"), "credentials stay out of logs");
        for bad in ["", "socks5://h:1", "https://h:1", "http://h:99999", "http://h:0", "http://h:1/path", "http://:8080", "http://u:%zz@h:1", "h:1:2"] {
            assert!(matches!(HttpProxy::parse(bad), Err(ProxyError::BadAddress(_))), "{bad:?} was taken");
        }
    }

    #[test]
    fn the_setting_wins_then_the_environment_by_scheme_unless_no_proxy_names_the_host() {
        let vars = [("https_proxy", "http://secure-proxy:3128"), ("HTTP_PROXY", "http://plain-proxy:3128")];
        let address = |found: Result<Option<HttpProxy>, ProxyError>| found.unwrap().map(|p| p.address());
        let mine = ProxySetting::from_text(" http://mine:8080 ");
        let (none, environment) = (ProxySetting::from_text("None"), ProxySetting::from_text("  "));
        assert_eq!(address(proxy_for("https://hark.example", &mine, env(&vars))).as_deref(), Some("mine:8080"));
        assert_eq!(address(proxy_for("https://hark.example", &environment, env(&vars))).as_deref(), Some("secure-proxy:3128"), "a blank setting is the environment's");
        assert_eq!(address(proxy_for("https://hark.example", &none, env(&vars))), None, "none is none");
        assert_eq!(address(proxy_for("http://hark.example:7600", &environment, env(&vars))).as_deref(), Some("plain-proxy:3128"));
        assert_eq!(address(proxy_for("http://hark.example", &environment, env(&[]))), None);
        for here in ["http://127.0.0.1:7600", "http://localhost:7600", "https://[::1]:7600", "http://app.localhost"] {
            assert_eq!(address(proxy_for(here, &environment, env(&vars))), None, "{here}: the environment's proxy cannot reach this machine");
        }
        assert_eq!(address(proxy_for("http://127.0.0.1:7600", &mine, env(&vars))).as_deref(), Some("mine:8080"), "a proxy the person chose is used");

        let skipping = [("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "localhost, .corp.example,10.1.2.3")];
        assert_eq!(address(proxy_for("https://hark.corp.example", &environment, env(&skipping))), None);
        assert_eq!(address(proxy_for("https://corp.example:443/x", &environment, env(&skipping))), None);
        assert_eq!(address(proxy_for("https://10.1.2.3:7600", &environment, env(&skipping))), None);
        assert_eq!(address(proxy_for("https://notcorp.example", &environment, env(&skipping))).as_deref(), Some("p:1"));
        assert_eq!(address(proxy_for("https://hark.example", &environment, env(&[("https_proxy", "http://p:1"), ("no_proxy", "*")]))), None);
        assert_eq!(address(proxy_for("https://hark.corp.example", &ProxySetting::Http("http://mine:1".into()), env(&skipping))).as_deref(), Some("mine:1"), "the person's own setting is always used");
        assert!(proxy_for("https://h", &environment, env(&[("HTTPS_PROXY", "socks5://p:1")])).is_err(), "a proxy that cannot be used is said, not skipped");
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code("HTTP/1.1 200 Connection established"), Some(200));
        assert_eq!(status_code("HTTP/1.0 407 Proxy Authentication Required"), Some(407));
        assert_eq!(status_code("SSH-2.0-OpenSSH"), None);
        assert_eq!(server_host("wss://user@[::1]:7600/v1/ws"), "::1");
    }
}
