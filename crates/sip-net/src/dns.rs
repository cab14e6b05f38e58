//! Locating SIP servers (RFC 3263 §4): from a SIP URI to an ordered list of
//! (transport, address) targets, through NAPTR, SRV and A/AAAA records.
//!
//! A numeric host needs no DNS at all; a host with an explicit port or `transport=`
//! skips the steps that would have chosen them. The caller tries the targets in order
//! and moves to the next on a transport error or a timeout (`Endpoint::send` does).

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use sip_core::{Host, Transport, Uri};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Most targets one URI may expand to: a hostile zone must not make us try thousands.
pub const MAX_TARGETS: usize = 16;

/// One place to send a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// The transport to use.
    pub transport: Transport,
    /// The address and port.
    pub addr: SocketAddr,
    /// The host name the address came from (the SRV target, or the URI host), used as
    /// the TLS server name. For a numeric URI host, the address as text.
    pub host: String,
}

/// Why a URI could not be turned into targets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The text is not a URI.
    #[error("cannot locate \"{uri}\": {reason}")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URI host is a name and no resolver is configured.
    #[error(
        "\"{0}\" needs a DNS lookup but no resolver is configured; set EndpointConfig::resolver"
    )]
    NoResolver(String),
    /// No record leads anywhere.
    #[error("no SIP server found for \"{name}\" (no NAPTR, SRV, A or AAAA records answered)")]
    NotFound {
        /// The name looked up.
        name: String,
    },
    /// The resolver could not be built from the system configuration.
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConf(String),
}

/// An RFC 3263 resolver over `hickory-resolver`.
#[derive(Clone)]
pub struct SipResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for SipResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipResolver").finish_non_exhaustive()
    }
}

impl SipResolver {
    /// A resolver using the system configuration (`/etc/resolv.conf`).
    pub fn from_system_conf() -> Result<Self, DnsError> {
        let builder =
            TokioResolver::builder_tokio().map_err(|e| DnsError::SystemConf(e.to_string()))?;
        let inner = builder
            .build()
            .map_err(|e| DnsError::SystemConf(e.to_string()))?;
        Ok(SipResolver { inner })
    }

    /// A resolver asking exactly these name servers, over UDP then TCP, each query
    /// given `timeout`. Non-standard ports are fine (tests run a server on loopback).
    pub fn with_nameservers(servers: &[SocketAddr], timeout: Duration) -> Result<Self, DnsError> {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::SystemConf(e.to_string()))?;
        Ok(SipResolver { inner })
    }

    /// The ordered targets for `uri` (RFC 3263 §4.1 to §4.2):
    ///
    /// 1. transport: the `transport` parameter; else, for a numeric host or an explicit
    ///    port, UDP (TLS for `sips:`); else the NAPTR records of the host, in order and
    ///    preference, keeping the services we speak (`SIP+D2U`, `SIP+D2T`, `SIPS+D2T`,
    ///    `SIP+D2W`, `SIPS+D2W`; only `SIPS` ones for `sips:`); without NAPTR, SRV queries
    ///    for UDP, TCP and TLS (TLS only for `sips:`).
    /// 2. addresses: a numeric host as it is; with an explicit port, A/AAAA of the host;
    ///    else SRV records by priority, then by weight (highest first: a deterministic
    ///    reading of RFC 2782's weighted choice), each target's A/AAAA; without SRV, A/AAAA
    ///    of the host and the transport's default port.
    ///
    /// At most [`MAX_TARGETS`] are returned.
    pub async fn locate(&self, uri: &str) -> Result<Vec<ResolvedTarget>, DnsError> {
        let req = Request::parse(uri)?;
        if let Some(targets) = req.numeric() {
            return Ok(targets);
        }
        let name = req.host.clone();
        let mut out = Vec::new();
        if let Some(port) = req.port {
            let t = req.transport.unwrap_or(req.default_transport());
            self.addresses(&name, port, t, &mut out).await;
        } else if let Some(t) = req.transport {
            self.srv(&srv_name(t, &name), t, &mut out).await;
            if out.is_empty() {
                self.addresses(&name, t.default_port(), t, &mut out).await;
            }
        } else {
            for (t, replacement) in self.naptr(&name, req.secure).await {
                self.srv(&replacement, t, &mut out).await;
            }
            if out.is_empty() {
                let transports: &[Transport] = if req.secure {
                    &[Transport::Tls]
                } else {
                    &[Transport::Udp, Transport::Tcp, Transport::Tls]
                };
                for t in transports {
                    self.srv(&srv_name(*t, &name), *t, &mut out).await;
                }
            }
            if out.is_empty() {
                let t = req.default_transport();
                self.addresses(&name, t.default_port(), t, &mut out).await;
            }
        }
        out.truncate(MAX_TARGETS);
        if out.is_empty() {
            return Err(DnsError::NotFound { name });
        }
        Ok(out)
    }

    /// NAPTR records of `name` that we can use, as (transport, SRV name), in order.
    async fn naptr(&self, name: &str, secure: bool) -> Vec<(Transport, String)> {
        let lookup = match self.inner.lookup(fqdn(name), RecordType::NAPTR).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(%name, error = %e, "no NAPTR records");
                return Vec::new();
            }
        };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::NAPTR(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|n| (n.order, n.preference));
        records
            .into_iter()
            .filter(|n| n.flags.eq_ignore_ascii_case(b"s"))
            .filter_map(|n| {
                let service = std::str::from_utf8(&n.services).ok()?;
                let t = naptr_transport(service)?;
                (!secure || t.is_secure()).then(|| (t, n.replacement.to_ascii()))
            })
            .take(MAX_TARGETS)
            .collect()
    }

    /// Appends the targets of one SRV name.
    async fn srv(&self, srv_name: &str, transport: Transport, out: &mut Vec<ResolvedTarget>) {
        let lookup = match self.inner.lookup(fqdn(srv_name), RecordType::SRV).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(name = %srv_name, error = %e, "no SRV records");
                return;
            }
        };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|s| (s.priority, std::cmp::Reverse(s.weight)));
        for s in records {
            // RFC 2782: a target of "." means the service is decidedly not available.
            if s.target.is_root() || out.len() >= MAX_TARGETS {
                continue;
            }
            let host = s.target.to_ascii();
            self.addresses(&host, s.port, transport, out).await;
        }
    }

    /// Appends the A/AAAA addresses of `host`.
    async fn addresses(
        &self,
        host: &str,
        port: u16,
        transport: Transport,
        out: &mut Vec<ResolvedTarget>,
    ) {
        match self.inner.lookup_ip(fqdn(host)).await {
            Ok(ips) => {
                let host = host.trim_end_matches('.').to_owned();
                for ip in ips.iter().take(MAX_TARGETS.saturating_sub(out.len())) {
                    out.push(ResolvedTarget {
                        transport,
                        addr: SocketAddr::new(ip, port),
                        host: host.clone(),
                    });
                }
            }
            Err(e) => tracing::debug!(%host, error = %e, "no A/AAAA records"),
        }
    }
}

/// The target of a URI whose host is an IP address, which needs no DNS: `Ok(None)`
/// when the host is a name.
pub fn numeric_target(uri: &str) -> Result<Option<Vec<ResolvedTarget>>, DnsError> {
    Ok(Request::parse(uri)?.numeric())
}

/// What RFC 3263 reads from the URI.
struct Request {
    secure: bool,
    host: String,
    ip: Option<IpAddr>,
    port: Option<u16>,
    transport: Option<Transport>,
}

impl Request {
    fn parse(uri: &str) -> Result<Request, DnsError> {
        let bad = |reason: String| DnsError::BadUri {
            uri: uri.to_owned(),
            reason,
        };
        let parsed = Uri::parse(uri.trim()).map_err(|e| bad(e.0))?;
        let Some(sip) = parsed.as_sip() else {
            return Err(bad(format!(
                "\"{}:\" is not a sip: or sips: URI",
                parsed.scheme()
            )));
        };
        let mut transport = match sip.transport() {
            None => None,
            Some(t) => Some(Transport::from_token(t).ok_or_else(|| {
                bad(format!(
                    "unsupported transport \"{t}\"; use udp, tcp, tls, ws or wss"
                ))
            })?),
        };
        if sip.secure {
            // RFC 3261 §26.2: sips: over "tcp" means TLS; over UDP it cannot be secure.
            transport = match transport {
                Some(Transport::Tcp) => Some(Transport::Tls),
                Some(Transport::Ws) => Some(Transport::Wss),
                Some(Transport::Udp) => {
                    return Err(bad("a sips: URI cannot use transport=udp".into()));
                }
                t => t,
            };
        }
        // maddr overrides the host (RFC 3263 §4.2).
        let (host, ip) = match sip.maddr() {
            Some(m) => (
                m.to_owned(),
                m.trim_matches(|c| c == '[' || c == ']').parse().ok(),
            ),
            None => match sip.host {
                Host::Name(n) => (n.to_owned(), None),
                h => (h.to_string(), h.ip()),
            },
        };
        Ok(Request {
            secure: sip.secure,
            host,
            ip,
            port: sip.port,
            transport,
        })
    }

    fn default_transport(&self) -> Transport {
        if self.secure {
            Transport::Tls
        } else {
            Transport::Udp
        }
    }

    fn numeric(&self) -> Option<Vec<ResolvedTarget>> {
        let ip = self.ip?;
        let transport = self.transport.unwrap_or(self.default_transport());
        let port = self.port.unwrap_or(transport.default_port());
        Some(vec![ResolvedTarget {
            transport,
            addr: SocketAddr::new(ip, port),
            host: ip.to_string(),
        }])
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn srv_name(t: Transport, name: &str) -> String {
    let prefix = match t {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
        // Not registered by RFC 7118, but used in the wild; harmless when absent.
        Transport::Ws => "_sip._ws",
        Transport::Wss => "_sips._ws",
    };
    format!("{prefix}.{}", name.trim_end_matches('.'))
}

fn naptr_transport(service: &str) -> Option<Transport> {
    [
        ("SIP+D2U", Transport::Udp),
        ("SIP+D2T", Transport::Tcp),
        ("SIPS+D2T", Transport::Tls),
        ("SIP+D2W", Transport::Ws),
        ("SIPS+D2W", Transport::Wss),
    ]
    .into_iter()
    .find(|(s, _)| s.eq_ignore_ascii_case(service))
    .map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numeric_hosts_skip_dns() {
        let t = numeric_target("sip:alice@127.0.0.1:5070").unwrap().unwrap();
        assert_eq!(t[0].transport, Transport::Udp);
        assert_eq!(t[0].addr, "127.0.0.1:5070".parse().unwrap());
        let t = numeric_target("sips:[::1]").unwrap().unwrap();
        assert_eq!((t[0].transport, t[0].addr.port()), (Transport::Tls, 5061));
        let t = numeric_target("sip:10.0.0.1;transport=tcp")
            .unwrap()
            .unwrap();
        assert_eq!((t[0].transport, t[0].addr.port()), (Transport::Tcp, 5060));
        assert!(numeric_target("sip:example.com").unwrap().is_none());
        let e = numeric_target("sips:10.0.0.1;transport=udp")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("cannot use transport=udp")));
        assert!(numeric_target("tel:+1234").is_err());
    }
}
