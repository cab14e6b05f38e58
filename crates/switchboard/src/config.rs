//! `switchboard serve --config FILE`: the TOML configuration, its defaults, and errors
//! that name the key and the line so an admin can fix a typo without guessing.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The whole configuration. Every section is optional; the defaults make a working
/// server on 5060 UDP/TCP with an SQLite file in the current directory.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[sip]`: listening and the served domain.
    pub sip: SipConfig,
    /// `[tls]`: certificate for `tls:` and `wss:` listeners.
    pub tls: TlsConfig,
    /// `[storage]`: where state is kept.
    pub storage: StorageConfig,
    /// `[registrar]`: REGISTER handling.
    pub registrar: RegistrarConfig,
    /// `[limits]`: protection against floods and oversize input.
    pub limits: LimitsConfig,
    /// `[proxy]`: routing calls and messages.
    pub proxy: ProxyConfig,
    /// `[pbx]`: the dial plan.
    pub pbx: PbxConfig,
    /// `[cdr]`: call detail records.
    pub cdr: CdrConfig,
    /// `[admin]`: the HTTP admin API and metrics.
    pub admin: AdminConfig,
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether `serve` runs the admin API.
    pub enabled: bool,
    /// Its address and port (loopback by default: put a reverse proxy or TLS in front
    /// before opening it wider).
    pub listen: String,
    /// PEM certificate chain: HTTPS when set (with `private_key`).
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub private_key: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: "127.0.0.1:8080".into(),
            certificate: None,
            private_key: None,
        }
    }
}

impl AdminConfig {
    /// The listen address.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "\"{}\" is not an address:port, like 127.0.0.1:8080 (IPv6 as [::1]:8080)",
                self.listen
            )
        })
    }
}

/// `[cdr]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    /// Keep a record of every call in the database.
    pub enabled: bool,
    /// Records of calls older than this many days are deleted (0: kept for ever).
    pub keep_days: u32,
    /// Calls followed at once at most; calls beyond go unrecorded (and are counted).
    pub max_calls: usize,
    /// An answered call with no BYE after this many seconds is closed as ended by the
    /// system (a phone that vanished, a BYE that went another way).
    pub max_call_secs: u64,
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            enabled: true,
            keep_days: 365,
            max_calls: 100_000,
            max_call_secs: 12 * 3600,
        }
    }
}

/// The most `[cdr] keep_days` may be: a hundred years.
const MAX_KEEP_DAYS: u32 = 36_500;

/// `[pbx]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbxConfig {
    /// The dial plan file (TOML, relative to the working directory); without one, every
    /// number or name dialled reaches the user with that extension or name.
    pub dial_plan: Option<PathBuf>,
    /// How long a B2BUA leg rings before it counts as not answered, seconds.
    pub ring_timeout_secs: u64,
    /// The RFC 4028 Session-Expires the B2BUA asks for on the legs it places, seconds
    /// (0: none); at least 90 (the Min-SE floor).
    pub session_expires: u32,
}

impl Default for PbxConfig {
    fn default() -> Self {
        PbxConfig {
            dial_plan: None,
            ring_timeout_secs: 30,
            session_expires: 1800,
        }
    }
}

/// The longest `ring_timeout_secs`: an hour of ringing is a mistake.
const MAX_RING_TIMEOUT_SECS: u64 = 3600;

/// `[sip]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Listen specs: `udp:127.0.0.1:5060`, `tcp:…`, `tls:…`, `ws:…`, `wss:…`.
    pub listen: Vec<String>,
    /// The domain of local users, and the authentication realm.
    pub domain: String,
    /// The User-Agent/Server string we send.
    pub server_name: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec!["udp:0.0.0.0:5060".into(), "tcp:0.0.0.0:5060".into()],
            domain: "localhost".into(),
            server_name: format!("Switchboard/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; without it a self-signed certificate is generated.
    pub certificate: Option<PathBuf>,
    /// PEM private key.
    pub private_key: Option<PathBuf>,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite file (relative to the working directory), or a URL for other backends.
    pub database: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            database: "switchboard.db".into(),
        }
    }
}

/// `[registrar]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Challenge REGISTER with digest authentication.
    pub require_auth: bool,
    /// Shortest registration accepted (423 Interval Too Brief below it).
    pub min_expires: u32,
    /// Longest registration granted.
    pub max_expires: u32,
    /// Granted when the phone asks for none.
    pub default_expires: u32,
    /// Failed authentications from one source, within the window, that ban it (0: never).
    pub max_auth_failures: u32,
    /// The window those failures are counted in, seconds.
    pub auth_failure_window_secs: u64,
    /// How long a ban lasts, seconds.
    pub ban_secs: u64,
    /// How long a nonce may be used before it is answered with `stale=true`, seconds.
    pub nonce_lifetime_secs: u64,
    /// Other host names that mean this server in a Request-URI or To URI.
    pub aliases: Vec<String>,
    /// Digest algorithms offered in a challenge, in order: "SHA-256", "MD5". The
    /// default is MD5 alone: SIPp 3.6 and baresip 1.0 answer only the first challenge
    /// and only in MD5, and fail to register when SHA-256 comes first. Set
    /// `["SHA-256", "MD5"]` for SHA-256 (RFC 8760) with MD5 for the others.
    pub digest_algorithms: Vec<String>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            require_auth: true,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_auth_failures: 10,
            auth_failure_window_secs: 60,
            ban_secs: 600,
            nonce_lifetime_secs: 300,
            aliases: Vec::new(),
            digest_algorithms: vec!["MD5".into()],
        }
    }
}

/// The most `[proxy] max_recursions` may be: each recursion can fork again.
const MAX_RECURSIONS: u32 = 10;

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Challenge (407) dialog-creating requests from local users.
    pub require_auth: bool,
    /// Sources (CIDR, e.g. `10.0.0.0/8`, or a plain address) exempt from the challenge.
    pub trusted_networks: Vec<String>,
    /// Forward requests for other domains (RFC 3263), for authenticated callers only.
    pub forward_foreign_domains: bool,
    /// Timer C: how long an INVITE branch may wait for a final response, seconds.
    pub timer_c_secs: u64,
    /// How many 3xx responses one request may recurse on (their Contacts in our domain
    /// are tried); 0 passes every 3xx on to the caller.
    pub max_recursions: u32,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            require_auth: true,
            trusted_networks: Vec::new(),
            forward_foreign_domains: false,
            timer_c_secs: 180,
            max_recursions: 3,
        }
    }
}

impl ProxyConfig {
    /// The trusted networks, parsed (a plain address is a /32 or /128).
    pub fn trusted(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_networks
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("\"{s}\" is not a network like 10.0.0.0/8"))
            })
            .collect()
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest SIP message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Connections accepted from one IP address.
    pub max_connections_per_ip: usize,
    /// Connections accepted in all.
    pub max_connections: usize,
    /// Seconds an idle TCP/TLS/WS connection is kept open.
    pub idle_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 65_535,
            max_connections_per_ip: 64,
            max_connections: 10_000,
            idle_timeout_secs: 300,
        }
    }
}

/// A configuration that cannot be used, with the file, line and key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML that does not parse, or a key or value that is wrong.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the fault.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            // Absolute: run from another folder, a relative name says nothing of where
            // it was looked for.
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_owned()),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            line: text[..offset.min(text.len())].matches('\n').count() + 1,
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            // toml's message carries its own snippet; the first line is the useful one.
            let message = plain_types(e.message().lines().next().unwrap_or("invalid"));
            // A wrong value is pointed at by its span, and serde's message names only the
            // type: the key it belongs to is read from the text.
            match key_of_value(text, offset) {
                Some(key) => invalid(offset, format!("{key}: {message}")),
                None => invalid(offset, message),
            }
        })?;
        config.check().map_err(|(key, message)| {
            let offset = find_key(text, key).unwrap_or(0);
            invalid(offset, format!("{key}: {message}"))
        })?;
        Ok(config)
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let r = &self.registrar;
        if r.min_expires > r.max_expires {
            return Err((
                "min_expires",
                format!(
                    "{} is greater than max_expires ({})",
                    r.min_expires, r.max_expires
                ),
            ));
        }
        if r.digest_algorithms.is_empty() {
            return Err((
                "digest_algorithms",
                "at least one algorithm is needed".into(),
            ));
        }
        for a in &r.digest_algorithms {
            if sip_core::auth::Algorithm::offered_from_name(a).is_none() {
                return Err((
                    "digest_algorithms",
                    format!("\"{a}\" is not one of \"SHA-256\", \"MD5\""),
                ));
            }
        }
        if self.sip.listen.is_empty() {
            return Err(("listen", "at least one listen address is needed".into()));
        }
        for spec in &self.sip.listen {
            check_listen(spec).map_err(|m| ("listen", format!("\"{spec}\": {m}")))?;
        }
        if self.sip.domain.trim().is_empty() {
            return Err(("domain", "must not be empty".into()));
        }
        self.proxy.trusted().map_err(|m| ("trusted_networks", m))?;
        if self.proxy.timer_c_secs == 0 {
            return Err(("timer_c_secs", "must be at least 1".into()));
        }
        if self.proxy.max_recursions > MAX_RECURSIONS {
            return Err((
                "max_recursions",
                format!("must be at most {MAX_RECURSIONS}"),
            ));
        }
        let cdr = &self.cdr;
        if cdr.keep_days > MAX_KEEP_DAYS {
            return Err((
                "keep_days",
                format!("must be at most {MAX_KEEP_DAYS} (0 keeps records for ever)"),
            ));
        }
        if cdr.max_calls == 0 {
            return Err(("max_calls", "must be at least 1".into()));
        }
        if cdr.max_call_secs < 60 {
            return Err(("max_call_secs", "must be at least 60".into()));
        }
        let pbx = &self.pbx;
        if pbx.ring_timeout_secs == 0 || pbx.ring_timeout_secs > MAX_RING_TIMEOUT_SECS {
            return Err((
                "ring_timeout_secs",
                format!("must be 1 to {MAX_RING_TIMEOUT_SECS}"),
            ));
        }
        if pbx.session_expires != 0 && pbx.session_expires < 90 {
            return Err((
                "session_expires",
                "must be 0 (none) or at least 90 (RFC 4028's Min-SE)".into(),
            ));
        }
        self.admin
            .listen_addr()
            .map_err(|m| ("listen", format!("[admin] {m}")))?;
        if self.admin.certificate.is_some() != self.admin.private_key.is_some() {
            return Err((
                "private_key",
                "[admin] certificate and private_key go together".into(),
            ));
        }
        if self.tls.certificate.is_some() != self.tls.private_key.is_some() {
            return Err((
                "certificate",
                "certificate and private_key go together".into(),
            ));
        }
        Ok(())
    }
}

/// Validates a `transport:address:port` listen spec.
pub fn check_listen(spec: &str) -> Result<(), String> {
    let Some((transport, addr)) = spec.split_once(':') else {
        return Err("expected transport:address:port, like udp:127.0.0.1:5060".into());
    };
    if sip_core::Transport::from_token(transport).is_none() {
        return Err(format!(
            "unknown transport \"{transport}\" (udp, tcp, tls, ws or wss)"
        ));
    }
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|_| format!("\"{addr}\" is not an address:port (IPv6 as [::1]:5060)"))
}

/// The key whose value holds `offset` (for a value spread over lines, the key that
/// opened it); `None` when `offset` is on a key itself or a table header, as for an
/// unknown key, whose message names it already.
fn key_of_value(text: &str, offset: usize) -> Option<&str> {
    let mut key = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        if line_start > offset {
            break;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            key = None;
        } else if let Some((name, _)) = trimmed.split_once('=') {
            let bare = name.trim();
            let is_key = !bare.is_empty()
                && bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if is_key {
                // The value starts after the '='; before it, the offset is on the key.
                let value_at = line_start + (line.len() - trimmed.len()) + name.len() + 1;
                key = (offset >= value_at).then_some(bare);
            }
        }
        // Any other line continues the value above it (an array over several lines).
        line_start += line.len();
    }
    key
}

/// serde's names of types, as an admin reads them.
fn plain_types(message: &str) -> String {
    const TYPES: [(&str, &str); 5] = [
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected a boolean", "expected true or false"),
    ];
    for (from, to) in TYPES {
        if let Some(start) = message.strip_suffix(from) {
            return format!("{start}{to}");
        }
    }
    match message.split_once("expected struct ") {
        Some((start, _)) => format!("{start}expected a table"),
        None => message.to_owned(),
    }
}

/// Where `key = ` first appears in the text, to point an error at its line.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("sb.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_parses() {
        let c = parse(
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\"]\ndomain = \"example.test\"\n[storage]\ndatabase = \"switchboard.db\"\n[registrar]\nrequire_auth = true\nmin_expires = 60\nmax_expires = 3600\n",
        )
        .unwrap();
        assert_eq!(c.sip.domain, "example.test");
        assert_eq!(c.registrar.max_expires, 3600);
        assert_eq!(c.sip.listen.len(), 2);
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.sip.listen, ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]);
        assert_eq!(c.storage.database, "switchboard.db");
        // Issue 12: what SIPp 3.6 and baresip 1.0 can answer; SHA-256 on request.
        assert_eq!(c.registrar.digest_algorithms, ["MD5"]);
        let c = parse("[registrar]\ndigest_algorithms = [\"SHA-256\", \"MD5\"]\n").unwrap();
        assert_eq!(c.registrar.digest_algorithms, ["SHA-256", "MD5"]);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("[sip]\ndomain = \"a\"\nlisten_on = []\n").unwrap_err();
        assert!(e.starts_with("sb.toml:3: unknown field `listen_on`"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let e = parse("[registrar]\n\nmin_expires = \"soon\"\n").unwrap_err();
        assert!(e.starts_with("sb.toml:3: "), "{e}");
        assert!(e.contains("string"), "{e}");
        let e = parse("[registrar]\nmin_expires = 600\nmax_expires = 60\n").unwrap_err();
        assert_eq!(
            e,
            "sb.toml:2: min_expires: 600 is greater than max_expires (60)"
        );
        let e = parse("[registrar]\ndigest_algorithms = [\"SHA-1\"]\n").unwrap_err();
        assert_eq!(
            e,
            "sb.toml:2: digest_algorithms: \"SHA-1\" is not one of \"SHA-256\", \"MD5\""
        );
        let e = parse("[sip]\n\nlisten = [\"sctp:1.2.3.4:5\"]\n").unwrap_err();
        assert!(
            e.starts_with("sb.toml:3: listen: \"sctp:1.2.3.4:5\": unknown transport"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        assert_eq!(
            parse("[registrar]\nrequire_auth = true\nmin_expires = \"sixty\"\n").unwrap_err(),
            "sb.toml:3: min_expires: invalid type: string \"sixty\", \
             expected a whole number from 0 to 4294967295"
        );
        assert_eq!(
            parse("[proxy]\n  require_auth=\"yes\"\n").unwrap_err(),
            "sb.toml:2: require_auth: invalid type: string \"yes\", expected true or false"
        );
        assert_eq!(
            parse("[registrar]\nmax_expires = -5\n").unwrap_err(),
            "sb.toml:2: max_expires: invalid value: integer `-5`, \
             expected a whole number from 0 to 4294967295"
        );
        // An array over several lines: its key, at the line of the bad element.
        assert_eq!(
            parse("[sip]\nlisten = [\n  \"udp:127.0.0.1:5060\",\n  5,\n]\n").unwrap_err(),
            "sb.toml:4: listen: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            parse("sip = 5\n").unwrap_err(),
            "sb.toml:1: sip: invalid type: integer `5`, expected a table"
        );
        // An unknown key is named by its own message, once.
        assert_eq!(
            parse("[sip]\nlisten_on = 5\n").unwrap_err(),
            "sb.toml:2: unknown field `listen_on`, expected one of `listen`, `domain`, `server_name`"
        );
        assert_eq!(key_of_value("a = 1\n", 0), None);
        assert_eq!(key_of_value("a = 1\n[b]\nc = 2\n", 8), None);
    }

    #[test]
    fn proxy_section() {
        let c = parse("").unwrap();
        assert!(c.proxy.require_auth && !c.proxy.forward_foreign_domains);
        assert_eq!(c.proxy.timer_c_secs, 180);
        assert_eq!(c.proxy.max_recursions, 3);
        let e = parse("[proxy]\nmax_recursions = 11\n").unwrap_err();
        assert_eq!(e, "sb.toml:2: max_recursions: must be at most 10");
        let c = parse(
            "[proxy]\nrequire_auth = false\ntrusted_networks = [\"10.0.0.0/8\", \"::1\"]\ntimer_c_secs = 5\n",
        )
        .unwrap();
        assert_eq!(c.proxy.trusted().unwrap().len(), 2);
        let e = parse("[proxy]\n\ntrusted_networks = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert_eq!(
            e,
            "sb.toml:3: trusted_networks: \"10.0.0.0/33\" is not a network like 10.0.0.0/8"
        );
    }

    #[test]
    fn cdr_section() {
        let c = parse("").unwrap();
        assert!(c.cdr.enabled);
        assert_eq!(
            (c.cdr.keep_days, c.cdr.max_calls, c.cdr.max_call_secs),
            (365, 100_000, 43_200)
        );
        let c =
            parse("[cdr]\nenabled = false\nkeep_days = 0\nmax_calls = 10\nmax_call_secs = 60\n")
                .unwrap();
        assert!(!c.cdr.enabled);
        assert_eq!((c.cdr.keep_days, c.cdr.max_calls), (0, 10));
        assert_eq!(
            parse("[cdr]\n\nmax_call_secs = 59\n").unwrap_err(),
            "sb.toml:3: max_call_secs: must be at least 60"
        );
        assert_eq!(
            parse("[cdr]\nmax_calls = 0\n").unwrap_err(),
            "sb.toml:2: max_calls: must be at least 1"
        );
        assert_eq!(
            parse("[cdr]\nkeep_days = 40000\n").unwrap_err(),
            "sb.toml:2: keep_days: must be at most 36500 (0 keeps records for ever)"
        );
        assert_eq!(
            parse("[cdr]\nenabled = \"yes\"\n").unwrap_err(),
            "sb.toml:2: enabled: invalid type: string \"yes\", expected true or false"
        );
        let e = parse("[cdr]\nkeep = 3\n").unwrap_err();
        assert!(e.starts_with("sb.toml:2: unknown field `keep`"), "{e}");
    }

    #[test]
    fn admin_section() {
        let c = parse("").unwrap();
        assert!(c.admin.enabled);
        assert_eq!(c.admin.listen_addr().unwrap().to_string(), "127.0.0.1:8080");
        let c = parse("[admin]\nenabled = false\nlisten = \"[::1]:9090\"\n").unwrap();
        assert!(!c.admin.enabled);
        assert_eq!(c.admin.listen_addr().unwrap().port(), 9090);
        let e = parse("[admin]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.contains("listen: [admin] \"localhost\" is not an address:port"),
            "{e}"
        );
        let e = parse("[admin]\ncertificate = \"c.pem\"\n").unwrap_err();
        assert!(
            e.ends_with("[admin] certificate and private_key go together"),
            "{e}"
        );
        let e = parse("[admin]\nport = 1\n").unwrap_err();
        assert!(e.starts_with("sb.toml:2: unknown field `port`"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse("[sip]\ndomain = \n").unwrap_err();
        assert!(e.starts_with("sb.toml:2: "), "{e}");
    }

    #[test]
    fn pbx_section_and_the_example_configuration() {
        assert!(parse("").unwrap().pbx.dial_plan.is_none());
        assert_eq!(parse("").unwrap().pbx.ring_timeout_secs, 30);
        let c = parse("[pbx]\nring_timeout_secs = 12\nsession_expires = 0\n").unwrap();
        assert_eq!((c.pbx.ring_timeout_secs, c.pbx.session_expires), (12, 0));
        let e = parse("[pbx]\n\nring_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3") && e.contains("ring_timeout_secs"), "{e}");
        let e = parse("[pbx]\nsession_expires = 30\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains(":2") && e.contains("session_expires"), "{e}");
        let c = parse("[pbx]\ndial_plan = \"plan.toml\"\n").unwrap();
        assert_eq!(c.pbx.dial_plan.as_deref(), Some(Path::new("plan.toml")));
        let e = parse("[pbx]\ndialplan = \"plan.toml\"\n").unwrap_err();
        assert!(e.starts_with("sb.toml:2: unknown field `dialplan`"), "{e}");
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/switchboard.toml"
        );
        let c = Config::load(Path::new(example)).unwrap();
        let plan = c.pbx.dial_plan.unwrap();
        assert_eq!(plan, Path::new("examples/dialplan.toml"));
        // The plan it names is a valid one.
        let from_top = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(plan);
        pbx::Plan::load(&from_top).unwrap();
    }
}
