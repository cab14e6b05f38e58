//! The SDP data model: a session description, its media sections and their lines,
//! with typed views (direction, `rtpmap`, `rtcp`, connection address) computed on demand.

use std::net::IpAddr;

/// A complete SDP session description.
///
/// Writing it (via [`std::fmt::Display`] or [`SessionDescription::write_to`]) emits the fields in
/// RFC 8866 order with CRLF line ends; parsing that output yields an equal value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SessionDescription {
    /// `v=`: protocol version; always 0, the only version defined.
    pub version: u32,
    /// `o=`: originator and session identifier.
    pub origin: Origin,
    /// `s=`: session name. RFC 8866 asks for `-` rather than empty, but empty is accepted
    /// because deployed user agents send `s=`.
    pub session_name: String,
    /// `i=`: session information.
    pub information: Option<String>,
    /// `u=`: URI of the description.
    pub uri: Option<String>,
    /// `e=`: email addresses.
    pub emails: Vec<String>,
    /// `p=`: phone numbers.
    pub phones: Vec<String>,
    /// `c=`: session-level connection data, the default for media sections without their own.
    pub connection: Option<Connection>,
    /// `b=`: session-level bandwidth lines.
    pub bandwidths: Vec<Bandwidth>,
    /// `t=` lines, each with its `r=` repeats.
    pub timings: Vec<Timing>,
    /// `z=`: time zone adjustments, raw.
    pub time_zones: Option<String>,
    /// `k=`: encryption key, raw (obsolete in RFC 8866, kept so it is not silently lost).
    pub encryption_key: Option<String>,
    /// `a=`: session-level attributes, in order.
    pub attributes: Vec<Attribute>,
    /// `m=` sections, in order; offer/answer matches them by index.
    pub media: Vec<MediaDescription>,
}

/// The `o=` line: who created the session and which version of it this is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Origin {
    /// Login of the originating user, `-` when not available.
    pub username: String,
    /// Globally unique session identifier.
    pub session_id: u64,
    /// Incremented on every change of the description (RFC 3264 §8).
    pub session_version: u64,
    /// Network type, `IN` in practice.
    pub nettype: String,
    /// Address type: `IP4` or `IP6`.
    pub addrtype: String,
    /// Address or FQDN of the originating host.
    pub unicast_address: String,
}

/// A `c=` line (also the optional address part of `a=rtcp`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Connection {
    /// Network type, `IN` in practice.
    pub nettype: String,
    /// Address type: `IP4` or `IP6`.
    pub addrtype: String,
    /// Connection address exactly as written: an IP literal, an FQDN, or a multicast
    /// address with `/ttl` and `/count` suffixes.
    pub address: String,
}

/// A `b=<bwtype>:<bandwidth>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Bandwidth {
    /// Bandwidth modifier, e.g. `AS`, `CT`, `TIAS`.
    pub bwtype: String,
    /// Value, in the unit the modifier defines (kbit/s for `AS` and `CT`).
    pub bandwidth: u64,
}

/// A `t=` line and the `r=` lines that follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Timing {
    /// Start time (NTP seconds), 0 for unbounded.
    pub start: u64,
    /// Stop time (NTP seconds), 0 for unbounded.
    pub stop: u64,
    /// `r=` values, raw: SIP sessions are unbounded and never need them interpreted.
    pub repeats: Vec<String>,
}

/// An `a=` line: `a=<name>` or `a=<name>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Attribute {
    /// Attribute name, the text before the first `:`.
    pub name: String,
    /// Everything after the first `:`; `None` for flag attributes such as `a=sendrecv`.
    pub value: Option<String>,
}

/// An `m=` section: one media stream and the lines that belong to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MediaDescription {
    /// Media type: `audio`, `video`, `application`, ...
    pub media: String,
    /// Transport port; 0 rejects or disables the stream (RFC 3264 §6).
    pub port: u16,
    /// The `/<number of ports>` suffix of the port, if present.
    pub port_count: Option<u16>,
    /// Transport protocol, e.g. `RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`.
    pub proto: String,
    /// Media formats; RTP payload type numbers for RTP protocols.
    pub formats: Vec<String>,
    /// `i=`: media title.
    pub information: Option<String>,
    /// `c=` lines of this section; several are allowed for layered multicast.
    pub connections: Vec<Connection>,
    /// `b=` lines of this section.
    pub bandwidths: Vec<Bandwidth>,
    /// `k=`: encryption key, raw.
    pub encryption_key: Option<String>,
    /// `a=` lines of this section, in order.
    pub attributes: Vec<Attribute>,
}

/// An `a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]` attribute, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RtpMap {
    /// RTP payload type number.
    pub payload_type: u8,
    /// Encoding name, e.g. `PCMU`, `opus`, `telephone-event`.
    pub encoding: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channel count, when given.
    pub channels: Option<u16>,
}

/// An `a=rtcp` attribute (RFC 3605): where RTCP goes when it is not on RTP port + 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rtcp {
    /// RTCP port.
    pub port: u16,
    /// RTCP address, when it differs from the media connection address.
    pub connection: Option<Connection>,
}

/// Media direction attribute (RFC 8866 §6.7, RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Direction {
    /// `a=sendrecv`: send and receive; the default when no direction is given.
    SendRecv,
    /// `a=sendonly`: send only.
    SendOnly,
    /// `a=recvonly`: receive only.
    RecvOnly,
    /// `a=inactive`: neither send nor receive.
    Inactive,
}

impl SessionDescription {
    pub fn direction(&self) -> Direction {
        direction_in(&self.attributes).unwrap_or(Direction::SendRecv)
    }

    /// The direction in force for `media`: its own attribute, else the session-level one,
    /// else `SendRecv` (RFC 8866 §6.7).
    pub fn effective_direction(&self, media: &MediaDescription) -> Direction {
        media.direction().unwrap_or_else(|| self.direction())
    }

    /// The connection in force for `media`: its first `c=`, else the session `c=`.
    pub fn effective_connection<'a>(
        &'a self,
        media: &'a MediaDescription,
    ) -> Option<&'a Connection> {
        media.connections.first().or(self.connection.as_ref())
    }
}

impl MediaDescription {
    /// This section's own direction attribute, if any. Use
    /// [`SessionDescription::effective_direction`] to fall back to the session level.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.attributes)
    }
}

/// Attribute helpers shared by the session and media levels.
macro_rules! attribute_helpers {
    ($ty:ty) => {
        impl $ty {
            /// The value of the first attribute called `name`; `Some("")` for a flag
            /// attribute such as `a=sendrecv`.
            pub fn attribute(&self, name: &str) -> Option<&str> {
                self.attributes
                    .iter()
                    .find(|a| a.name == name)
                    .map(|a| a.value.as_deref().unwrap_or(""))
            }

            /// The well-formed `a=rtpmap` attributes, in order. Malformed ones (such as
            /// `a=rtpmap:31 LPC`, lacking a clock rate) are skipped rather than failing the
            /// whole body, since the formats they describe can simply go unused.
            pub fn rtpmaps(&self) -> impl Iterator<Item = RtpMap> + '_ {
                self.attributes
                    .iter()
                    .filter(|a| a.name == "rtpmap")
                    .filter_map(|a| a.value.as_deref().and_then(parse_rtpmap))
            }

            /// The `a=rtpmap` for `payload_type`, if present and well formed.
            pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
                self.rtpmaps().find(|m| m.payload_type == payload_type)
            }

            /// The format parameters of `a=fmtp:<payload_type> <params>`.
            pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
                self.attributes
                    .iter()
                    .filter(|a| a.name == "fmtp")
                    .filter_map(|a| a.value.as_deref())
                    .find_map(|value| {
                        let (pt, params) = value.split_once(' ').unwrap_or((value, ""));
                        (pt.parse::<u8>().ok() == Some(payload_type)).then(|| params.trim_start())
                    })
            }

            /// `a=ptime` in milliseconds, if present and a whole number.
            pub fn ptime(&self) -> Option<u32> {
                self.attribute("ptime")
                    .and_then(|value| value.trim().parse().ok())
            }

            /// `a=rtcp` (RFC 3605), if present and well formed.
            pub fn rtcp(&self) -> Option<Rtcp> {
                self.attribute("rtcp").and_then(parse_rtcp)
            }

            /// Replaces any direction attribute with `direction`. The first existing one is
            /// replaced in place (so attribute order stays stable across re-offers) and the
            /// rest are removed; with none, it is appended.
            pub fn set_direction(&mut self, direction: Direction) {
                let mut placed = false;
                self.attributes.retain_mut(|a| {
                    if Direction::from_name(&a.name).is_none() || a.value.is_some() {
                        return true;
                    }
                    if placed {
                        return false;
                    }
                    *a = direction.to_attribute();
                    placed = true;
                    true
                });
                if !placed {
                    self.attributes.push(direction.to_attribute());
                }
            }
        }
    };
}

attribute_helpers!(SessionDescription);
attribute_helpers!(MediaDescription);

pub(super) fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_name(&a.name))
}

pub(super) fn parse_rtpmap(value: &str) -> Option<RtpMap> {
    let (pt, encoding) = value.split_once(' ')?;
    let mut parts = encoding.trim().split('/');
    let encoding = parts.next().filter(|e| !e.is_empty())?;
    let clock_rate = parts.next()?.parse().ok()?;
    let channels = parts.next().map(str::parse).transpose().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(RtpMap {
        payload_type: pt.parse().ok()?,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

pub(super) fn parse_rtcp(value: &str) -> Option<Rtcp> {
    let mut parts = value.split_ascii_whitespace();
    let port = parts.next()?.parse().ok()?;
    let connection = match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) => None,
        (Some(nettype), Some(addrtype), Some(address)) => Some(Connection {
            nettype: nettype.to_owned(),
            addrtype: addrtype.to_owned(),
            address: address.to_owned(),
        }),
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Rtcp { port, connection })
}

impl Attribute {
    /// An attribute with the given name and optional value.
    pub fn new(name: impl Into<String>, value: Option<String>) -> Attribute {
        Attribute {
            name: name.into(),
            value,
        }
    }
}

impl Connection {
    /// The address without multicast `/ttl` or `/count` suffixes, parsed as an IP address;
    /// `None` for FQDNs. An IPv6 address in brackets (`[::1]`, as SIPp's `[local_ip]`
    /// writes it) is read too: RFC 8866 wants it bare, but the address is unambiguous and
    /// refusing it would fail the call for a bracket.
    pub fn ip(&self) -> Option<IpAddr> {
        let address = self.address.split('/').next()?;
        let bare = address
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(address);
        bare.parse().ok()
    }
}

impl Direction {
    /// The attribute name, e.g. `sendrecv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction named by an attribute name, if it is one.
    pub fn from_name(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The direction seen from the other end, which is what an answer mirrors for an
    /// accepted stream (RFC 3264 §6.1): sendonly and recvonly swap.
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// The flag attribute carrying this direction.
    pub fn to_attribute(self) -> Attribute {
        Attribute::new(self.as_str(), None)
    }
}
