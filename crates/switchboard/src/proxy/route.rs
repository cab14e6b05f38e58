//! Where a request goes next: our own addresses (to recognise our Record-Route values
//! and Vias), Route processing (RFC 3261 §16.4), and next hops for bindings, routes and
//! URIs (§16.6 steps 6 and 7, strict routers included). Next hops are IP addresses:
//! nothing here waits for DNS.

use crate::myself::Myself;
use sip_core::headers::{NameAddr, Via, split_list};
use sip_core::{Flow, HeaderName, Message, SipUri, Transport, Uri};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use store::Binding;

/// One of our listening addresses as we advertise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The transport.
    pub transport: Transport,
    /// The host as written in a URI or Via (IPv6 in brackets; our domain when we listen
    /// on a wildcard address).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Interface {
    /// The interface for a bound socket: its address, or `domain` for a wildcard one.
    pub fn new(transport: Transport, addr: SocketAddr, domain: &str) -> Interface {
        let host = match addr.ip() {
            ip if ip.is_unspecified() => domain.to_owned(),
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        Interface {
            transport,
            host,
            port: addr.port(),
        }
    }

    /// Our Via value for a request going out here with `branch`.
    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch}",
            self.transport.via_token(),
            self.host,
            self.port
        )
    }

    /// Our Record-Route value on this side (loose routing, §16.6 step 4), carrying
    /// `token` (see [`RR_TOKEN`]): the dialog's requests bring it back in their Route.
    pub fn record_route(&self, token: &str) -> String {
        format!(
            "<sip:{}:{};transport={};lr;{RR_TOKEN}={token}>",
            self.host,
            self.port,
            self.transport.name()
        )
    }
}

/// The URI parameter of our Record-Route values that proves we record-routed the
/// dialog: a MAC of its Call-ID under our key. An in-dialog request whose Route names
/// us without it (or with another) is not one of our dialogs, only a way to relay.
pub const RR_TOKEN: &str = "sbd";

/// All our interfaces, and the names that mean us.
#[derive(Debug, Clone)]
pub(super) struct Interfaces {
    list: Vec<Interface>,
    myself: Myself,
}

/// A next hop: where to send, and what to change for it.
#[derive(Debug, Clone)]
pub(super) struct Hop {
    /// The new Request-URI (a binding's contact; a strict router's Route), if any.
    pub request_uri: Option<String>,
    /// The Route set to send (a binding's Path; a strict router's rewrite), if it
    /// differs from the context's.
    pub routes: Option<Vec<String>>,
    /// Where to send.
    pub flow: Flow,
    /// Where to send instead when `flow` cannot be used: a plain binding registered
    /// over a connection that has closed is tried at its Contact address (a new
    /// connection). Outbound bindings (RFC 5626 §5.3) and Path ones have none.
    pub fallback: Option<Flow>,
}

/// What Route processing (§16.4) made of a request.
#[derive(Debug, Clone, Default)]
pub(super) struct RouteInfo {
    /// How many of our own values were popped off the top of Route.
    pub popped: usize,
    /// The Route values left, in order.
    pub remaining: Vec<String>,
    /// The Request-URI taken from the last Route when a strict router sent the request
    /// to us with our own URI as Request-URI.
    pub request_uri: Option<String>,
    /// The transport named by the last of our values popped: the side the request
    /// leaves on (after a double Record-Route, the other side's transport).
    pub next_transport: Option<Transport>,
    /// The [`RR_TOKEN`] of our values popped (or of our URI a strict router put in the
    /// Request-URI), if they carry one.
    pub token: Option<String>,
}

/// The [`RR_TOKEN`] parameter of one of our URIs.
fn token_of(uri: &SipUri<'_>) -> Option<String> {
    uri.params.get(RR_TOKEN).flatten().map(str::to_owned)
}

impl RouteInfo {
    /// §16.4 on `req`.
    pub fn read(req: &Message, ifaces: &Interfaces) -> Result<RouteInfo, String> {
        let mut values: Vec<&str> = req
            .get_all(HeaderName::Route)
            .flat_map(split_list)
            .map(str::trim)
            .collect();
        let mut info = RouteInfo::default();
        let ruri = req.request_uri();
        let strict_uri = ruri
            .as_ref()
            .and_then(Uri::as_sip)
            .filter(|u| u.user.is_none() && ifaces.is_own(u));
        if let Some(u) = strict_uri {
            info.token = token_of(u);
        }
        if strict_uri.is_some()
            && let Some(last) = values.pop()
        {
            let na = NameAddr::parse(last, "Route").map_err(|e| e.to_string())?;
            info.request_uri = Some(na.uri_text.to_owned());
        }
        while let Some(first) = values.first() {
            let na = NameAddr::parse(first, "Route").map_err(|e| e.to_string())?;
            let Some(uri) = na.uri.as_sip() else {
                break;
            };
            if !ifaces.is_own(uri) {
                break;
            }
            info.popped += 1;
            info.next_transport = uri.transport().and_then(Transport::from_token);
            if let Some(t) = token_of(uri) {
                info.token = Some(t);
            }
            values.remove(0);
        }
        info.remaining = values.into_iter().map(str::to_owned).collect();
        Ok(info)
    }

    /// The Route set to send when it changed, `None` to keep the received lines.
    pub fn routes_to_send(&self) -> Option<Vec<String>> {
        (self.popped > 0 || self.request_uri.is_some()).then(|| self.remaining.clone())
    }
}

impl Interfaces {
    pub fn new(list: Vec<Interface>, myself: Myself) -> Interfaces {
        Interfaces { list, myself }
    }

    /// The interface requests over `t` leave from.
    pub fn for_transport(&self, t: Transport) -> Option<&Interface> {
        self.list.iter().find(|i| i.transport == t)
    }

    /// Whether a SIP URI names us (a Route or Record-Route value of ours): see
    /// [`Myself::names_us`].
    pub fn is_own(&self, uri: &SipUri<'_>) -> bool {
        self.myself.names_us(uri)
    }

    /// Whether a host is our domain, an alias or one of our addresses, whatever the port.
    pub fn is_own_host(&self, host: &sip_core::Host<'_>) -> bool {
        self.myself.is_own_host(host)
    }

    /// Whether a socket address is one of ours (a request we sent to ourselves).
    pub fn is_own_addr(&self, addr: SocketAddr) -> bool {
        self.myself.is_own_addr(addr)
    }

    /// Whether a Via's sent-by is ours: one we advertise, or an address of ours.
    pub fn is_own_via(&self, via: &Via<'_>) -> bool {
        let host = via.host.to_string();
        let advertised = self.list.iter().any(|i| {
            i.host.eq_ignore_ascii_case(&host)
                && via.port.unwrap_or_else(|| i.transport.default_port()) == i.port
        });
        advertised
            || via.host.ip().is_some_and(|ip| {
                let t = Transport::from_token(via.transport).unwrap_or(Transport::Udp);
                let port = via.port.unwrap_or_else(|| t.default_port());
                self.myself.is_own_addr(SocketAddr::new(ip, port))
            })
    }

    /// §16.3 step 4: one of our Vias carries a branch computed from these same
    /// identifying fields, so the request came back unchanged.
    pub fn has_looped(&self, req: &Message, branch_base: &str) -> bool {
        req.vias().flatten().any(|v| {
            self.is_own_via(&v)
                && v.branch().is_some_and(|b| {
                    b.strip_prefix(branch_base)
                        .is_some_and(|rest| rest.starts_with('.'))
                })
        })
    }

    /// The hop for the next Route value `next` (§16.6 steps 6–7). A strict router
    /// (no `lr`) gets the Route as Request-URI and the Request-URI appended to Route.
    pub fn hop_to_route(&self, next: &str, ruri: &str, info: &RouteInfo) -> Option<Hop> {
        let na = NameAddr::parse(next, "Route").ok()?;
        let uri = na.uri.as_sip()?;
        let flow = resolve(uri, info.next_transport.filter(|_| info.popped > 0))?;
        if uri.lr() {
            return Some(Hop {
                request_uri: info.request_uri.clone(),
                routes: None,
                flow,
                fallback: None,
            });
        }
        let mut routes: Vec<String> = info.remaining.iter().skip(1).cloned().collect();
        routes.push(format!("<{ruri}>"));
        Some(Hop {
            request_uri: Some(na.uri_text.to_owned()),
            routes: Some(routes),
            flow,
            fallback: None,
        })
    }

    /// The hop straight to a URI (a dialog's remote target), its transport from its
    /// `transport` parameter, else `hint`, else UDP.
    pub fn hop_to_uri(&self, uri: &str, hint: Option<Transport>) -> Option<Hop> {
        let parsed = Uri::parse(uri).ok()?;
        let flow = resolve(parsed.as_sip()?, hint)?;
        Some(Hop {
            request_uri: None,
            routes: None,
            flow,
            fallback: None,
        })
    }

    /// The hops for an AOR's bindings, sorted best first: one group per q-value, in
    /// order, so equal q's are tried in parallel and lower q's after (§16.6, RFC 3261
    /// §16.6's serial search by q). Bindings with no reachable address are left out.
    pub fn hops_for_bindings(&self, bindings: &[Binding]) -> VecDeque<Vec<Hop>> {
        let mut groups: VecDeque<Vec<Hop>> = VecDeque::new();
        let mut last_q = None;
        for b in bindings {
            let Some(hop) = hop_for_binding(b) else {
                tracing::debug!(contact = %b.contact, "binding has no reachable address");
                continue;
            };
            let q = b.q.unwrap_or(1000);
            match groups.back_mut() {
                Some(g) if last_q == Some(q) => g.push(hop),
                _ => groups.push_back(vec![hop]),
            }
            last_q = Some(q);
        }
        groups
    }
}

/// A binding's next hop: its first Path hop; the flow it registered over for
/// connection-oriented transports and outbound (so the phone's own connection, through
/// its NAT, is reused), with the contact address as fallback for a plain (not outbound)
/// binding whose connection has closed; its contact address otherwise.
fn hop_for_binding(b: &Binding) -> Option<Hop> {
    if let Some(first) = b.path.first() {
        let na = NameAddr::parse(first, "Path").ok()?;
        let flow = resolve(na.uri.as_sip()?, None)?;
        return Some(Hop {
            request_uri: Some(b.contact.clone()),
            routes: Some(b.path.clone()),
            flow,
            fallback: None,
        });
    }
    let outbound = b.instance_id.is_some() && b.reg_id.is_some();
    let contact = Uri::parse(&b.contact)
        .ok()
        .and_then(|u| resolve(u.as_sip()?, Some(b.transport)));
    let (flow, fallback) = if b.transport.is_reliable() || outbound {
        let flow = Flow {
            transport: b.transport,
            remote: b.source,
            local: None,
            connection: None,
        };
        // With outbound a closed flow makes the binding unusable (RFC 5626 §5.3): no
        // second chance. A plain binding's Contact is where the phone said it listens.
        let fallback = contact.filter(|c| !outbound && c.remote != b.source);
        (flow, fallback)
    } else {
        (contact?, None)
    };
    Some(Hop {
        request_uri: Some(b.contact.clone()),
        routes: None,
        flow,
        fallback,
    })
}

/// The flow to a SIP URI with an IP host: its `transport` parameter, else `hint`, else
/// TLS for `sips:` and UDP for `sip:`; its port, else the transport's default.
fn resolve(uri: &SipUri<'_>, hint: Option<Transport>) -> Option<Flow> {
    let ip = uri
        .maddr()
        .and_then(|m| m.trim_matches(|c| c == '[' || c == ']').parse().ok())
        .or_else(|| uri.host.ip())?;
    let transport = match uri.transport().and_then(Transport::from_token) {
        Some(t) => t,
        None => hint.unwrap_or(if uri.secure {
            Transport::Tls
        } else {
            Transport::Udp
        }),
    };
    let port = uri.port.unwrap_or_else(|| transport.default_port());
    Some(Flow {
        transport,
        remote: SocketAddr::new(ip, port),
        local: None,
        connection: None,
    })
}

/// Where a response goes by its top Via (§18.2.2): `received` and `rport` when the
/// previous hop stamped them, else the sent-by address.
pub(super) fn via_target(msg: &Message) -> Option<Flow> {
    let via = msg.top_via().ok()?;
    let transport = Transport::from_token(via.transport)?;
    let ip: IpAddr = via
        .received()
        .and_then(|r| r.parse().ok())
        .or_else(|| via.host.ip())?;
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.port.unwrap_or_else(|| transport.default_port()),
    };
    Some(Flow {
        transport,
        remote: SocketAddr::new(ip, port),
        local: None,
        connection: None,
    })
}
