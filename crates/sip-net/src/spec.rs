//! Listen specifications: `udp:127.0.0.1:5060`, `tls:[::1]:5061`, `ws:0.0.0.0:8088`.

use sip_core::Transport;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// One address to listen on, with its transport. Parsed from `transport:ip:port`.
///
/// ```
/// use sip_net::ListenSpec;
/// let spec: ListenSpec = "tcp:127.0.0.1:5060".parse().unwrap();
/// assert_eq!(spec.addr.port(), 5060);
/// assert!("sctp:127.0.0.1:5060".parse::<ListenSpec>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenSpec {
    /// The transport to serve.
    pub transport: Transport,
    /// The local address; port 0 picks a free port (see `Endpoint::local_addr`).
    pub addr: SocketAddr,
}

impl ListenSpec {
    /// A spec from its parts.
    pub fn new(transport: Transport, addr: SocketAddr) -> Self {
        ListenSpec { transport, addr }
    }
}

/// Why a listen spec was refused; the text names the bad part and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListenSpecError {
    /// No `transport:` prefix.
    #[error(
        "listen spec \"{0}\" has no transport; write it as transport:ip:port, e.g. udp:0.0.0.0:5060"
    )]
    MissingTransport(String),
    /// The transport is not one of udp, tcp, tls, ws, wss.
    #[error(
        "unknown transport \"{transport}\" in listen spec \"{spec}\"; use udp, tcp, tls, ws or wss"
    )]
    UnknownTransport {
        /// The transport as written.
        transport: String,
        /// The whole spec.
        spec: String,
    },
    /// The address part is not `ip:port`.
    #[error(
        "bad address \"{addr}\" in listen spec \"{spec}\": {reason}; write ip:port, with IPv6 in brackets ([::1]:5060)"
    )]
    BadAddress {
        /// The address as written.
        addr: String,
        /// The whole spec.
        spec: String,
        /// What the address parser said.
        reason: String,
    },
}

impl FromStr for ListenSpec {
    type Err = ListenSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let Some((transport, addr)) = s.split_once(':') else {
            return Err(ListenSpecError::MissingTransport(s.to_owned()));
        };
        let Some(transport) = Transport::from_token(transport) else {
            // `127.0.0.1:5060` splits into "127.0.0.1" and "5060": say the transport is missing.
            if transport.parse::<std::net::IpAddr>().is_ok() || transport.starts_with('[') {
                return Err(ListenSpecError::MissingTransport(s.to_owned()));
            }
            return Err(ListenSpecError::UnknownTransport {
                transport: transport.to_owned(),
                spec: s.to_owned(),
            });
        };
        let addr = addr
            .parse::<SocketAddr>()
            .map_err(|e| ListenSpecError::BadAddress {
                addr: addr.to_owned(),
                spec: s.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(ListenSpec { transport, addr })
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.name(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        for s in [
            "udp:127.0.0.1:5060",
            "tls:[::1]:5061",
            "wss:0.0.0.0:8089",
            "ws:127.0.0.1:0",
        ] {
            let spec: ListenSpec = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(spec.to_string(), s);
        }
        let spec: ListenSpec = "TCP:127.0.0.1:5060"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.transport, Transport::Tcp);
    }

    #[test]
    fn errors_name_the_bad_part() {
        let e = "sctp:127.0.0.1:5060"
            .parse::<ListenSpec>()
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "unknown transport \"sctp\" in listen spec \"sctp:127.0.0.1:5060\"; use udp, tcp, tls, ws or wss"
            )
        );
        let e = "127.0.0.1:5060".parse::<ListenSpec>().err();
        assert!(
            matches!(e, Some(ListenSpecError::MissingTransport(_))),
            "{e:?}"
        );
        let e = "udp:localhost:5060"
            .parse::<ListenSpec>()
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("bad address \"localhost:5060\"")),
            "{e:?}"
        );
        let e = "udp".parse::<ListenSpec>().err();
        assert!(
            matches!(e, Some(ListenSpecError::MissingTransport(_))),
            "{e:?}"
        );
    }
}
