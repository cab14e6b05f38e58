//! Who "we" are, in one place for the registrar and the proxy (as Kamailio's `myself`):
//! the configured domain, its aliases, and every (transport, address, port) we listen
//! on. A wildcard listener (0.0.0.0 or [::]) owns every address of the host, which the
//! I/O shell enumerates ([`host_addresses`]) and hands in: the rest is sans-IO.
//!
//! A URI *names us* when its host is one of our addresses and its port (the
//! transport's default when absent) is one we listen on at that address, or when its
//! host is the domain or an alias and its port is absent or one of ours. So a
//! Route `<sip:127.0.0.1:5060;lr>` names a server on 0.0.0.0:5060, while a phone's
//! Contact at 127.0.0.1:5070 does not: requests to it are routed to the phone.
//! Addresses compare as addresses: `[::1]`, `[0:0::1]` and the alias `::1` are one.

use sip_core::{Host, SipUri, Transport};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Our names and addresses (see the module documentation).
#[derive(Debug, Clone)]
pub struct Myself {
    /// The configured domain, lowercase, without a trailing dot.
    domain: String,
    /// Aliases that are names, lowercase, without a trailing dot.
    alias_names: Vec<String>,
    /// Aliases that are IP literals.
    alias_addrs: Vec<IpAddr>,
    /// Every address we receive on, wildcards expanded, with the port.
    listeners: Vec<(Transport, SocketAddr)>,
}

/// A host name as compared: lowercase, without the root's trailing dot.
fn normal_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// An alias or a host written as an address (`::1`, `[::1]`, `127.0.0.1`), if it is one.
fn literal_ip(text: &str) -> Option<IpAddr> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse().ok()
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are the IPv4 address they carry: a
/// dual-stack socket reports IPv4 peers that way.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Myself {
    /// Us: `domain`, `aliases` (names or IP literals), the sockets we are bound to
    /// (`listeners`), and, for wildcard sockets, the host's addresses (`host_addrs`,
    /// from [`host_addresses`]).
    pub fn new(
        domain: &str,
        aliases: &[String],
        listeners: &[(Transport, SocketAddr)],
        host_addrs: &[IpAddr],
    ) -> Myself {
        let mut alias_names = Vec::new();
        let mut alias_addrs = Vec::new();
        for a in aliases {
            match literal_ip(a.trim()) {
                Some(ip) => alias_addrs.push(canonical(ip)),
                None => alias_names.push(normal_name(a.trim())),
            }
        }
        let mut expanded = Vec::new();
        for &(transport, addr) in listeners {
            let ip = addr.ip();
            if ip.is_unspecified() {
                // [::] takes IPv4 too on a dual-stack host (Linux's default).
                let v6 = ip.is_ipv6();
                for &h in host_addrs {
                    if v6 || h.is_ipv4() {
                        expanded.push((transport, SocketAddr::new(canonical(h), addr.port())));
                    }
                }
            } else {
                expanded.push((transport, SocketAddr::new(canonical(ip), addr.port())));
            }
        }
        Myself {
            domain: normal_name(domain),
            alias_names,
            alias_addrs,
            listeners: expanded,
        }
    }

    /// The configured domain (lowercase): the domain of local AORs.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `host` is the domain or an alias (an alias may be an address).
    pub fn is_domain(&self, host: &Host<'_>) -> bool {
        match host.ip() {
            Some(ip) => self.alias_addrs.contains(&canonical(ip)),
            None => {
                let text = host.to_string();
                let name = normal_name(&text);
                name == self.domain || self.alias_names.contains(&name)
            }
        }
    }

    /// Whether `ip` is one we listen on (any port).
    pub fn is_own_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.listeners.iter().any(|(_, a)| a.ip() == ip)
    }

    /// Whether `host` means this server whatever the port: the domain, an alias, or an
    /// address we listen on. For the domain part of an address of record.
    pub fn is_own_host(&self, host: &Host<'_>) -> bool {
        self.is_domain(host) || host.ip().is_some_and(|ip| self.is_own_ip(ip))
    }

    /// Whether we listen on `addr` (a request sent from there is one we sent).
    pub fn is_own_addr(&self, addr: SocketAddr) -> bool {
        let addr = SocketAddr::new(canonical(addr.ip()), addr.port());
        self.listeners.iter().any(|(_, a)| *a == addr)
    }

    /// Whether we listen on `port` at any address.
    fn listens_on_port(&self, port: u16) -> bool {
        self.listeners.iter().any(|(_, a)| a.port() == port)
    }

    /// Whether a SIP URI names this server (see the module documentation).
    pub fn names_us(&self, uri: &SipUri<'_>) -> bool {
        if self.is_domain(&uri.host) {
            return uri.port.is_none_or(|p| self.listens_on_port(p));
        }
        let Some(ip) = uri.host.ip() else {
            return false;
        };
        let transport = uri
            .transport()
            .and_then(Transport::from_token)
            .unwrap_or(if uri.secure {
                Transport::Tls
            } else {
                Transport::Udp
            });
        let port = uri.port.unwrap_or_else(|| transport.default_port());
        self.is_own_addr(SocketAddr::new(ip, port))
    }
}

/// The host's addresses, for wildcard listeners: every interface's, loopback included
/// (127.0.0.1 and ::1 are always there, even where interfaces cannot be listed).
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    match nix::ifaddrs::getifaddrs() {
        Ok(list) => {
            for ifa in list {
                let Some(addr) = ifa.address else { continue };
                let ip = if let Some(v4) = addr.as_sockaddr_in() {
                    IpAddr::V4(v4.ip())
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    IpAddr::V6(v6.ip())
                } else {
                    continue;
                };
                if !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        Err(e) => tracing::warn!(
            "cannot list the host's addresses ({e}): a wildcard listener is known by its loopback addresses only"
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sip_core::Uri;

    fn names_us(me: &Myself, uri: &str) -> bool {
        let u = Uri::parse(uri).unwrap();
        me.names_us(u.as_sip().unwrap())
    }

    fn wildcard() -> Myself {
        let host: Vec<IpAddr> = ["127.0.0.1", "::1", "192.0.2.7", "2001:db8::7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        Myself::new(
            "example.test",
            &["Alias.Test.".into(), "::1".into()],
            &[
                (Transport::Udp, "0.0.0.0:5060".parse().unwrap()),
                (Transport::Tcp, "[::]:5070".parse().unwrap()),
            ],
            &host,
        )
    }

    #[test]
    fn a_wildcard_listener_owns_every_host_address_on_its_port_only() {
        let me = wildcard();
        assert!(names_us(&me, "sip:127.0.0.1:5060;lr"));
        assert!(names_us(&me, "sip:127.0.0.1;lr"), "no port: 5060");
        assert!(names_us(&me, "sip:192.0.2.7:5060"));
        assert!(
            !names_us(&me, "sip:127.0.0.1:5080"),
            "a phone on another port"
        );
        assert!(!names_us(&me, "sip:bob@192.0.2.99:5060"), "another host");
        // 0.0.0.0 is IPv4 only; [::] is both.
        assert!(!names_us(&me, "sip:[2001:db8::7]:5060"));
        assert!(names_us(&me, "sip:[2001:db8::7]:5070;transport=tcp"));
        assert!(names_us(&me, "sip:192.0.2.7:5070"));
        assert!(
            names_us(&me, "sip:[0:0::1]:5070"),
            "IPv6 compared as addresses"
        );
        assert!(!names_us(&me, "sips:127.0.0.1"), "sips: defaults to 5061");
        assert!(me.is_own_addr("[::ffff:127.0.0.1]:5060".parse().unwrap()));
    }

    #[test]
    fn the_domain_and_aliases_with_or_without_our_port() {
        let me = wildcard();
        assert!(names_us(&me, "sip:bob@EXAMPLE.test"));
        assert!(names_us(&me, "sip:bob@example.test.:5070"));
        assert!(!names_us(&me, "sip:bob@example.test:5090"));
        assert!(names_us(&me, "sip:alias.test"));
        assert!(names_us(&me, "sip:bob@[::1]"), "the alias ::1");
        assert!(names_us(&me, "sip:bob@[0::1]:5070"));
        assert!(!names_us(&me, "sip:bob@other.test"));
        let u = Uri::parse("sip:bob@[::1]").unwrap();
        assert!(me.is_domain(&u.as_sip().unwrap().host));
        let u = Uri::parse("sip:bob@192.0.2.7:9999").unwrap();
        assert!(me.is_own_host(&u.as_sip().unwrap().host));
        assert!(!me.is_domain(&u.as_sip().unwrap().host));
    }

    #[test]
    fn a_specific_listener_owns_its_address_only() {
        let me = Myself::new(
            "localhost",
            &[],
            &[(Transport::Udp, "127.0.0.1:5060".parse().unwrap())],
            &["192.0.2.7".parse().unwrap()],
        );
        assert!(names_us(&me, "sip:127.0.0.1"));
        assert!(!names_us(&me, "sip:192.0.2.7"));
        assert!(names_us(&me, "sip:alice@localhost"));
    }

    #[test]
    fn the_host_addresses_include_loopback() {
        let all = host_addresses();
        assert!(all.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(all.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
}
