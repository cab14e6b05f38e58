//! SDP (RFC 8866) session descriptions: parse, inspect and write the bodies that carry
//! offer/answer (RFC 3264) in SIP.
//!
//! The model is owned and close to the wire: every line the RFC defines is kept, values
//! that have no typed use in a softphone (`r=`, `z=`, `k=`, attribute values) stay raw
//! strings, and addresses stay strings so IPv6 and multicast `/ttl` forms survive a round
//! trip untouched. Typed views over attributes (`rtpmap`, `fmtp`, direction, `ptime`,
//! `rtcp`) are computed on demand instead of stored, so the attribute list remains the
//! single source of truth and writing reproduces it in order.

use std::fmt;
use std::net::IpAddr;

/// A complete SDP session description.
///
/// Writing it (via [`fmt::Display`] or [`SessionDescription::write_to`]) emits the fields in
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

/// Why an SDP body could not be parsed. Every variant names the 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The line is not valid UTF-8.
    #[error("line {line}: not valid utf-8")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// The line contains a NUL or a carriage return, which SDP text may not hold.
    #[error("line {line}: contains a nul or carriage return character")]
    ControlCharacter {
        /// 1-based line number.
        line: usize,
    },
    /// The line is not of the form `<letter>=<value>`.
    #[error("line {line}: {text:?} is not a <type>=<value> line")]
    NotAField {
        /// 1-based line number.
        line: usize,
        /// The start of the offending line.
        text: String,
    },
    /// The line type letter is not one RFC 8866 defines.
    #[error("line {line}: unknown line type '{letter}='")]
    UnknownType {
        /// 1-based line number.
        line: usize,
        /// The unknown type letter.
        letter: char,
    },
    /// A mandatory line (`v=`, `o=`, `s=`) was expected but another one came.
    #[error("line {line}: expected {expected}= line, found {found}= line")]
    UnexpectedLine {
        /// 1-based line number.
        line: usize,
        /// Type letter that must come here.
        expected: char,
        /// Type letter that came instead.
        found: char,
    },
    /// The body ended before a mandatory line.
    #[error("line {line}: sdp ends where a {expected}= line is required")]
    UnexpectedEnd {
        /// 1-based number of the missing line.
        line: usize,
        /// Type letter that must come here.
        expected: char,
    },
    /// A line that may appear at most once in its section appeared again.
    #[error("line {line}: more than one {letter}= line")]
    Duplicate {
        /// 1-based line number.
        line: usize,
        /// Type letter of the repeated line.
        letter: char,
    },
    /// A session-level line appeared inside a media section.
    #[error("line {line}: {letter}= is not allowed inside a media description")]
    NotInMedia {
        /// 1-based line number.
        line: usize,
        /// Type letter of the misplaced line.
        letter: char,
    },
    /// An `r=` line with no `t=` line before it to repeat.
    #[error("line {line}: r= line without a preceding t= line")]
    RepeatWithoutTime {
        /// 1-based line number.
        line: usize,
    },
    /// A field of a line has a value that does not fit its grammar.
    #[error("line {line}: {field} {value:?} {problem}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// Which field, e.g. `m= port`.
        field: &'static str,
        /// The offending value (shortened if long).
        value: String,
        /// What is wrong with it, e.g. `is not a number`.
        problem: &'static str,
    },
}

impl SdpError {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            Self::InvalidUtf8 { line }
            | Self::ControlCharacter { line }
            | Self::NotAField { line, .. }
            | Self::UnknownType { line, .. }
            | Self::UnexpectedLine { line, .. }
            | Self::UnexpectedEnd { line, .. }
            | Self::Duplicate { line, .. }
            | Self::NotInMedia { line, .. }
            | Self::RepeatWithoutTime { line }
            | Self::BadValue { line, .. } => *line,
        }
    }
}

/// Error values can echo attacker-controlled input into logs; cap what they carry.
fn snippet(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

fn bad(line: usize, field: &'static str, value: &str, problem: &'static str) -> SdpError {
    SdpError::BadValue {
        line,
        field,
        value: snippet(value),
        problem,
    }
}

/// Parses a decimal field, telling "not a number" apart from "too large" in the error.
fn number<T: std::str::FromStr>(
    line: usize,
    field: &'static str,
    value: &str,
) -> Result<T, SdpError> {
    value.parse().map_err(|_| {
        let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        bad(
            line,
            field,
            value,
            if digits {
                "is out of range"
            } else {
                "is not a number"
            },
        )
    })
}

/// Splits a value into exactly `N` whitespace-separated fields.
fn fields<'a, const N: usize>(
    line: usize,
    field: &'static str,
    value: &'a str,
    problem: &'static str,
) -> Result<[&'a str; N], SdpError> {
    let mut out = [""; N];
    let mut parts = value.split_ascii_whitespace();
    for slot in &mut out {
        *slot = parts
            .next()
            .ok_or_else(|| bad(line, field, value, problem))?;
    }
    if parts.next().is_some() {
        return Err(bad(line, field, value, problem));
    }
    Ok(out)
}

/// One `<type>=<value>` line, already checked for encoding.
struct Line<'a> {
    number: usize,
    letter: char,
    value: &'a str,
}

/// Every line type RFC 8866 defines; anything else is refused rather than dropped, since a
/// typo'd letter silently vanishing would change the session's meaning.
const KNOWN_TYPES: &[u8] = b"vosiuepcbtrzkam";

fn split_line(number: usize, raw: &[u8]) -> Result<Line<'_>, SdpError> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let not_a_field = || SdpError::NotAField {
        line: number,
        text: snippet(&String::from_utf8_lossy(raw)),
    };
    let (&letter, rest) = raw.split_first().ok_or_else(not_a_field)?;
    let value = rest.strip_prefix(b"=").ok_or_else(not_a_field)?;
    if !letter.is_ascii_graphic() {
        return Err(not_a_field());
    }
    if !KNOWN_TYPES.contains(&letter) {
        return Err(SdpError::UnknownType {
            line: number,
            letter: char::from(letter),
        });
    }
    if value.iter().any(|&b| b == 0 || b == b'\r') {
        return Err(SdpError::ControlCharacter { line: number });
    }
    let value = std::str::from_utf8(value).map_err(|_| SdpError::InvalidUtf8 { line: number })?;
    Ok(Line {
        number,
        letter: char::from(letter),
        value,
    })
}

fn parse_version(line: &Line<'_>) -> Result<u32, SdpError> {
    let version: u32 = number(line.number, "v=", line.value.trim())?;
    if version != 0 {
        return Err(bad(
            line.number,
            "v=",
            line.value,
            "is not a supported version (only 0)",
        ));
    }
    Ok(version)
}

fn parse_origin(line: &Line<'_>) -> Result<Origin, SdpError> {
    let [username, id, version, nettype, addrtype, address] = fields(
        line.number,
        "o=",
        line.value,
        "must have 6 fields: username sess-id sess-version nettype addrtype address",
    )?;
    Ok(Origin {
        username: username.to_owned(),
        session_id: number(line.number, "o= sess-id", id)?,
        session_version: number(line.number, "o= sess-version", version)?,
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        unicast_address: address.to_owned(),
    })
}

fn parse_connection(line: &Line<'_>) -> Result<Connection, SdpError> {
    let [nettype, addrtype, address] = fields(
        line.number,
        "c=",
        line.value,
        "must have 3 fields: nettype addrtype address",
    )?;
    Ok(Connection {
        nettype: nettype.to_owned(),
        addrtype: addrtype.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_bandwidth(line: &Line<'_>) -> Result<Bandwidth, SdpError> {
    let (bwtype, value) = line
        .value
        .split_once(':')
        .filter(|(bwtype, _)| !bwtype.is_empty())
        .ok_or_else(|| bad(line.number, "b=", line.value, "is not <bwtype>:<bandwidth>"))?;
    Ok(Bandwidth {
        bwtype: bwtype.to_owned(),
        bandwidth: number(line.number, "b= bandwidth", value.trim())?,
    })
}

fn parse_timing(line: &Line<'_>) -> Result<Timing, SdpError> {
    let [start, stop] = fields(
        line.number,
        "t=",
        line.value,
        "must have 2 fields: start-time stop-time",
    )?;
    Ok(Timing {
        start: number(line.number, "t= start-time", start)?,
        stop: number(line.number, "t= stop-time", stop)?,
        repeats: Vec::new(),
    })
}

fn parse_attribute(line: &Line<'_>) -> Result<Attribute, SdpError> {
    let (name, value) = match line.value.split_once(':') {
        Some((name, value)) => (name, Some(value.to_owned())),
        None => (line.value, None),
    };
    if name.is_empty() {
        return Err(bad(
            line.number,
            "a=",
            line.value,
            "has an empty attribute name",
        ));
    }
    Ok(Attribute {
        name: name.to_owned(),
        value,
    })
}

fn parse_media(line: &Line<'_>) -> Result<MediaDescription, SdpError> {
    let mut parts = line.value.split_ascii_whitespace();
    let short = || {
        bad(
            line.number,
            "m=",
            line.value,
            "must be <media> <port>[/<count>] <proto> <fmt> ...",
        )
    };
    let media = parts.next().ok_or_else(short)?;
    let port_field = parts.next().ok_or_else(short)?;
    let proto = parts.next().ok_or_else(short)?;
    let formats: Vec<String> = parts.map(str::to_owned).collect();
    if formats.is_empty() {
        return Err(bad(line.number, "m=", line.value, "has no media formats"));
    }
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(number(line.number, "m= port count", count)?)),
        None => (port_field, None),
    };
    Ok(MediaDescription {
        media: media.to_owned(),
        port: number(line.number, "m= port", port)?,
        port_count,
        proto: proto.to_owned(),
        formats,
        information: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        encryption_key: None,
        attributes: Vec::new(),
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T, line: &Line<'_>) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(SdpError::Duplicate {
            line: line.number,
            letter: line.letter,
        });
    }
    *slot = Some(value);
    Ok(())
}

impl SessionDescription {
    /// Parses an SDP body.
    ///
    /// Accepts CRLF or bare LF line ends and trailing empty lines. `v=`, `o=` and `s=` must
    /// come first and in that order; after them session-level lines are accepted in any order
    /// (deployed stacks do not all follow RFC 8866 order) up to the first `m=`, after which
    /// only media-level lines (`i=`, `c=`, `b=`, `k=`, `a=`, `m=`) may appear. A missing
    /// `t=` is tolerated. Unknown line type letters are refused.
    pub fn parse(input: &[u8]) -> Result<SessionDescription, SdpError> {
        let mut raw_lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        // Trailing blank lines are an artefact of framing (a final CRLF, padding), not content.
        while raw_lines
            .last()
            .is_some_and(|l| l.is_empty() || *l == b"\r")
        {
            raw_lines.pop();
        }
        let mut lines = raw_lines
            .iter()
            .enumerate()
            .map(|(index, raw)| split_line(index + 1, raw));
        let end_line = raw_lines.len() + 1;

        let mut mandatory = |expected: char| -> Result<Line<'_>, SdpError> {
            match lines.next() {
                None => Err(SdpError::UnexpectedEnd {
                    line: end_line,
                    expected,
                }),
                Some(line) => {
                    let line = line?;
                    if line.letter == expected {
                        Ok(line)
                    } else {
                        Err(SdpError::UnexpectedLine {
                            line: line.number,
                            expected,
                            found: line.letter,
                        })
                    }
                }
            }
        };
        let version = parse_version(&mandatory('v')?)?;
        let origin = parse_origin(&mandatory('o')?)?;
        let session_name = mandatory('s')?.value.to_owned();

        let mut sdp = SessionDescription {
            version,
            origin,
            session_name,
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            timings: Vec::new(),
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };

        for line in lines {
            let line = line?;
            if line.letter == 'm' {
                sdp.media.push(parse_media(&line)?);
                continue;
            }
            match sdp.media.last_mut() {
                Some(media) => media.parse_line(&line)?,
                None => sdp.parse_session_line(&line)?,
            }
        }
        Ok(sdp)
    }

    fn parse_session_line(&mut self, line: &Line<'_>) -> Result<(), SdpError> {
        let value = line.value;
        match line.letter {
            'i' => set_once(&mut self.information, value.to_owned(), line)?,
            'u' => set_once(&mut self.uri, value.to_owned(), line)?,
            'e' => self.emails.push(value.to_owned()),
            'p' => self.phones.push(value.to_owned()),
            'c' => set_once(&mut self.connection, parse_connection(line)?, line)?,
            'b' => self.bandwidths.push(parse_bandwidth(line)?),
            't' => self.timings.push(parse_timing(line)?),
            'r' => self
                .timings
                .last_mut()
                .ok_or(SdpError::RepeatWithoutTime { line: line.number })?
                .repeats
                .push(value.to_owned()),
            'z' => set_once(&mut self.time_zones, value.to_owned(), line)?,
            'k' => set_once(&mut self.encryption_key, value.to_owned(), line)?,
            'a' => self.attributes.push(parse_attribute(line)?),
            // v, o and s were consumed up front, so any other occurrence is a repeat.
            letter => {
                return Err(SdpError::Duplicate {
                    line: line.number,
                    letter,
                });
            }
        }
        Ok(())
    }

    /// Writes the description as canonical SDP (RFC 8866 order, CRLF line ends).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.to_string().as_bytes());
    }

    /// The description as canonical SDP bytes, ready for a SIP body.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Builds a minimal audio offer for a softphone: one `m=audio` RTP/AVP stream on
    /// `ip`:`rtp_port` with one `rtpmap` per codec `(payload type, encoding, clock rate)`,
    /// `fmtp:<pt> 0-16` for every `telephone-event` codec (DTMF digits, RFC 4733),
    /// `ptime:20` and `sendrecv`.
    ///
    /// The session version starts equal to the session id, as in the RFC 3264 examples;
    /// bump `origin.session_version` for every re-offer.
    pub fn new_audio_offer(
        origin_user: &str,
        session_id: u64,
        ip: IpAddr,
        rtp_port: u16,
        codecs: &[(u8, &str, u32)],
    ) -> SessionDescription {
        let addrtype = match ip {
            IpAddr::V4(_) => "IP4",
            IpAddr::V6(_) => "IP6",
        };
        let mut attributes = Vec::new();
        for &(payload_type, encoding, clock_rate) in codecs {
            let rtpmap = RtpMap {
                payload_type,
                encoding: encoding.to_owned(),
                clock_rate,
                channels: None,
            };
            attributes.push(Attribute::new("rtpmap", Some(rtpmap.to_string())));
        }
        for &(payload_type, encoding, _) in codecs {
            if encoding.eq_ignore_ascii_case("telephone-event") {
                attributes.push(Attribute::new("fmtp", Some(format!("{payload_type} 0-16"))));
            }
        }
        attributes.push(Attribute::new("ptime", Some("20".to_owned())));
        attributes.push(Direction::SendRecv.to_attribute());

        SessionDescription {
            version: 0,
            origin: Origin {
                username: origin_user.to_owned(),
                session_id,
                session_version: session_id,
                nettype: "IN".to_owned(),
                addrtype: addrtype.to_owned(),
                unicast_address: ip.to_string(),
            },
            session_name: "-".to_owned(),
            information: None,
            uri: None,
            emails: Vec::new(),
            phones: Vec::new(),
            connection: Some(Connection {
                nettype: "IN".to_owned(),
                addrtype: addrtype.to_owned(),
                address: ip.to_string(),
            }),
            bandwidths: Vec::new(),
            timings: vec![Timing {
                start: 0,
                stop: 0,
                repeats: Vec::new(),
            }],
            time_zones: None,
            encryption_key: None,
            attributes: Vec::new(),
            media: vec![MediaDescription {
                media: "audio".to_owned(),
                port: rtp_port,
                port_count: None,
                proto: "RTP/AVP".to_owned(),
                formats: codecs.iter().map(|(pt, _, _)| pt.to_string()).collect(),
                information: None,
                connections: Vec::new(),
                bandwidths: Vec::new(),
                encryption_key: None,
                attributes,
            }],
        }
    }

    /// The session-level direction: the session's direction attribute, else `SendRecv`.
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
    fn parse_line(&mut self, line: &Line<'_>) -> Result<(), SdpError> {
        match line.letter {
            'i' => set_once(&mut self.information, line.value.to_owned(), line)?,
            'c' => self.connections.push(parse_connection(line)?),
            'b' => self.bandwidths.push(parse_bandwidth(line)?),
            'k' => set_once(&mut self.encryption_key, line.value.to_owned(), line)?,
            'a' => self.attributes.push(parse_attribute(line)?),
            letter => {
                return Err(SdpError::NotInMedia {
                    line: line.number,
                    letter,
                });
            }
        }
        Ok(())
    }

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

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes
        .iter()
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_name(&a.name))
}

fn parse_rtpmap(value: &str) -> Option<RtpMap> {
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

fn parse_rtcp(value: &str) -> Option<Rtcp> {
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

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of an `o=` line, without the `o=`.
impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.nettype,
            self.addrtype,
            self.unicast_address
        )
    }
}

/// The value of a `c=` line, without the `c=`.
impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.nettype, self.addrtype, self.address)
    }
}

/// The value of a `b=` line, without the `b=`.
impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.bwtype, self.bandwidth)
    }
}

/// The value of an `a=` line, without the `a=`.
impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}:{}", self.name, value),
            None => f.write_str(&self.name),
        }
    }
}

/// The value of an `a=rtpmap` attribute, e.g. `0 PCMU/8000`.
impl fmt::Display for RtpMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.payload_type, self.encoding, self.clock_rate
        )?;
        if let Some(channels) = self.channels {
            write!(f, "/{channels}")?;
        }
        Ok(())
    }
}

/// The value of an `a=rtcp` attribute, e.g. `53020 IN IP4 126.16.64.4`.
impl fmt::Display for Rtcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.port)?;
        if let Some(connection) = &self.connection {
            write!(f, " {connection}")?;
        }
        Ok(())
    }
}

/// The whole `m=` section, with CRLF line ends.
impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", self.proto)?;
        for format in &self.formats {
            write!(f, " {format}")?;
        }
        f.write_str("\r\n")?;
        if let Some(information) = &self.information {
            write!(f, "i={information}\r\n")?;
        }
        for connection in &self.connections {
            write!(f, "c={connection}\r\n")?;
        }
        for bandwidth in &self.bandwidths {
            write!(f, "b={bandwidth}\r\n")?;
        }
        if let Some(key) = &self.encryption_key {
            write!(f, "k={key}\r\n")?;
        }
        for attribute in &self.attributes {
            write!(f, "a={attribute}\r\n")?;
        }
        Ok(())
    }
}

/// The whole body in RFC 8866 order with CRLF line ends. Values are written as they are;
/// a value holding a line break (impossible after parsing) would produce invalid SDP.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v={}\r\n", self.version)?;
        write!(f, "o={}\r\n", self.origin)?;
        write!(f, "s={}\r\n", self.session_name)?;
        if let Some(information) = &self.information {
            write!(f, "i={information}\r\n")?;
        }
        if let Some(uri) = &self.uri {
            write!(f, "u={uri}\r\n")?;
        }
        for email in &self.emails {
            write!(f, "e={email}\r\n")?;
        }
        for phone in &self.phones {
            write!(f, "p={phone}\r\n")?;
        }
        if let Some(connection) = &self.connection {
            write!(f, "c={connection}\r\n")?;
        }
        for bandwidth in &self.bandwidths {
            write!(f, "b={bandwidth}\r\n")?;
        }
        for timing in &self.timings {
            write!(f, "t={} {}\r\n", timing.start, timing.stop)?;
            for repeat in &timing.repeats {
                write!(f, "r={repeat}\r\n")?;
            }
        }
        if let Some(zones) = &self.time_zones {
            write!(f, "z={zones}\r\n")?;
        }
        if let Some(key) = &self.encryption_key {
            write!(f, "k={key}\r\n")?;
        }
        for attribute in &self.attributes {
            write!(f, "a={attribute}\r\n")?;
        }
        for media in &self.media {
            write!(f, "{media}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Offer/answer (RFC 3264)
// ---------------------------------------------------------------------------------------

/// The encoding of static RTP payload types (RFC 3551 table 4) for offers that list
/// them without an `a=rtpmap`.
fn static_payload(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        3 => Some(("GSM", 8000)),
        8 => Some(("PCMA", 8000)),
        9 => Some(("G722", 8000)),
        18 => Some(("G729", 8000)),
        _ => None,
    }
}

impl MediaDescription {
    /// The encoding of format `pt` in this section: its `a=rtpmap`, else the RFC 3551
    /// static assignment.
    pub fn codec_of(&self, pt: u8) -> Option<RtpMap> {
        self.rtpmap(pt).or_else(|| {
            static_payload(pt).map(|(encoding, clock_rate)| RtpMap {
                payload_type: pt,
                encoding: encoding.to_owned(),
                clock_rate,
                channels: None,
            })
        })
    }

    /// The RTP payload types of this section, in order (non-numeric formats skipped).
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

fn same_codec(map: &RtpMap, encoding: &str, clock_rate: u32) -> bool {
    map.encoding.eq_ignore_ascii_case(encoding) && map.clock_rate == clock_rate
}

fn is_dtmf(encoding: &str) -> bool {
    encoding.eq_ignore_ascii_case("telephone-event")
}

/// The audio stream an offer/answer exchange settled on, read from the far end's
/// description: where to send, with which codec and payload type, and which direction
/// the far end asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    /// Index of the `m=` section.
    pub index: usize,
    /// The far end's RTP address (its `c=`).
    pub address: IpAddr,
    /// The far end's RTP port.
    pub port: u16,
    /// The voice codec, with the payload type the far end uses for it.
    pub codec: RtpMap,
    /// The payload type of `telephone-event` (RFC 4733), when both sides have it.
    pub telephone_event: Option<u8>,
    /// The direction in the far end's description, from its point of view.
    pub direction: Direction,
    /// `a=ptime`, when given.
    pub ptime: Option<u32>,
}

impl SessionDescription {
    /// The first audio stream of this (remote) description that is not rejected and
    /// has a codec in `supported` `(payload type, encoding, clock rate)`: for an offer,
    /// the codec an answer built by [`SessionDescription::answer`] picks; for an
    /// answer, the codec the far end chose. `None` when there is none (answer 488).
    pub fn audio_stream(&self, supported: &[(u8, &str, u32)]) -> Option<AudioStream> {
        self.media.iter().enumerate().find_map(|(index, m)| {
            if m.media != "audio" || m.port == 0 || !m.proto.starts_with("RTP/") {
                return None;
            }
            let codec = m.payload_types().find_map(|pt| {
                let map = m.codec_of(pt)?;
                let ours = supported
                    .iter()
                    .any(|(_, e, r)| !is_dtmf(e) && same_codec(&map, e, *r));
                ours.then_some(map)
            })?;
            let telephone_event = m.payload_types().find(|pt| {
                m.codec_of(*pt)
                    .is_some_and(|map| is_dtmf(&map.encoding) && map.clock_rate == codec.clock_rate)
            });
            let telephone_event =
                telephone_event.filter(|_| supported.iter().any(|(_, e, _)| is_dtmf(e)));
            let address = self.effective_connection(m)?.ip()?;
            Some(AudioStream {
                index,
                address,
                port: m.port,
                codec,
                telephone_event,
                direction: self.effective_direction(m),
                ptime: m.ptime(),
            })
        })
    }

    /// The answer to `offer` (RFC 3264 §6): one `m=` line per offered one, in the same
    /// order; the first acceptable audio stream answered on `ip`:`rtp_port` with every
    /// offered codec we support (in the offerer's order and with its payload type
    /// numbers, §6.1) plus telephone-event when both have it, and the direction the
    /// offer allows nearest to `wanted` (sendonly offered: we can only receive); every
    /// other stream rejected with port 0.
    ///
    /// Returns `None` when no audio stream can be accepted: answer the request with
    /// 488 Not Acceptable Here.
    pub fn answer(
        offer: &SessionDescription,
        origin_user: &str,
        session_id: u64,
        ip: IpAddr,
        rtp_port: u16,
        supported: &[(u8, &str, u32)],
        wanted: Direction,
    ) -> Option<SessionDescription> {
        let chosen = offer.audio_stream(supported)?;
        let mut answer =
            SessionDescription::new_audio_offer(origin_user, session_id, ip, rtp_port, &[]);
        let template = answer.media.pop()?;
        for (index, offered) in offer.media.iter().enumerate() {
            if index != chosen.index {
                answer.media.push(MediaDescription {
                    port: 0,
                    attributes: Vec::new(),
                    connections: Vec::new(),
                    bandwidths: Vec::new(),
                    ..offered.clone()
                });
                continue;
            }
            let mut m = template.clone();
            m.attributes.clear();
            m.formats.clear();
            for pt in offered.payload_types() {
                let Some(map) = offered.codec_of(pt) else {
                    continue;
                };
                let ours = if is_dtmf(&map.encoding) {
                    Some(pt) == chosen.telephone_event
                } else {
                    supported
                        .iter()
                        .any(|(_, e, r)| !is_dtmf(e) && same_codec(&map, e, *r))
                };
                if !ours {
                    continue;
                }
                m.formats.push(pt.to_string());
                m.attributes
                    .push(Attribute::new("rtpmap", Some(map.to_string())));
                if is_dtmf(&map.encoding) {
                    let events = offered.fmtp(pt).unwrap_or("0-15").to_owned();
                    m.attributes
                        .push(Attribute::new("fmtp", Some(format!("{pt} {events}"))));
                }
            }
            m.attributes.push(Attribute::new(
                "ptime",
                Some(chosen.ptime.unwrap_or(20).to_string()),
            ));
            m.attributes
                .push(answer_direction(chosen.direction, wanted).to_attribute());
            answer.media.push(m);
        }
        Some(answer)
    }
}

/// The direction to answer with when the offer says `offered` and we would like
/// `wanted` (RFC 3264 §6.1): what we may do is the offer's direction reversed, and we
/// do at most that.
pub fn answer_direction(offered: Direction, wanted: Direction) -> Direction {
    let allowed = offered.reversed();
    let (send, recv) = (
        allowed.sends() && wanted.sends(),
        allowed.receives() && wanted.receives(),
    );
    match (send, recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

impl Direction {
    /// Whether this side sends media in this direction.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media in this direction.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Where an offer/answer exchange stands in a dialog (RFC 3264 §4, RFC 6337): at most
/// one offer may be outstanding at a time, and a second one is refused (491 in an
/// INVITE or UPDATE, §14.1 of RFC 3261, RFC 3311 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfferAnswer {
    /// No offer outstanding: either side may make one.
    #[default]
    Stable,
    /// We sent an offer and wait for the answer.
    LocalOffer,
    /// We received an offer and owe the answer.
    RemoteOffer,
}

/// An offer/answer step not allowed in the current [`OfferAnswer`] state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} while {state:?}")]
pub struct OfferAnswerError {
    /// What was attempted.
    pub what: &'static str,
    /// The state it was attempted in.
    pub state: OfferAnswer,
}

impl OfferAnswer {
    /// We send an offer. Refused while any offer is outstanding (glare: the far end's
    /// pending offer wins and ours waits, or ours is pending).
    pub fn send_offer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::Stable,
            OfferAnswer::LocalOffer,
            "sending an offer",
        )
    }

    /// An offer arrived. Refused while one is outstanding: answer 491.
    pub fn receive_offer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::Stable,
            OfferAnswer::RemoteOffer,
            "receiving an offer",
        )
    }

    /// We answer the far end's offer.
    pub fn send_answer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::RemoteOffer,
            OfferAnswer::Stable,
            "sending an answer",
        )
    }

    /// The answer to our offer arrived.
    pub fn receive_answer(&mut self) -> Result<(), OfferAnswerError> {
        self.step(
            OfferAnswer::LocalOffer,
            OfferAnswer::Stable,
            "receiving an answer",
        )
    }

    /// Our offer was refused (a non-2xx final response to the request that carried
    /// it): back to the state before it (RFC 3264 §4, RFC 6337 §3.1.1).
    pub fn offer_rejected(&mut self) {
        *self = OfferAnswer::Stable;
    }

    fn step(
        &mut self,
        from: OfferAnswer,
        to: OfferAnswer,
        what: &'static str,
    ) -> Result<(), OfferAnswerError> {
        if *self != from {
            return Err(OfferAnswerError { what, state: *self });
        }
        *self = to;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> SessionDescription {
        SessionDescription::parse(text.as_bytes()).unwrap()
    }

    fn error(text: &str) -> String {
        SessionDescription::parse(text.as_bytes())
            .unwrap_err()
            .to_string()
    }

    /// Parses, then checks that writing and re-parsing gives the same value.
    fn round_trip(text: &str) -> SessionDescription {
        let sdp = parse(text);
        let written = sdp.to_string();
        assert_eq!(SessionDescription::parse(written.as_bytes()).unwrap(), sdp);
        sdp
    }

    // RFC 3264 §10.1, Bob's second offer.
    const BASERIP_LIKE_OFFER: &str = "v=0\r\n\
        o=- 1 2 IN IP4 192.0.2.10\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        m=video 5000 RTP/AVP 96\r\n\
        a=rtpmap:96 H264/90000\r\n\
        m=audio 4000 RTP/AVP 9 8 0 101\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=sendonly\r\n";

    const OURS: &[(u8, &str, u32)] = &[
        (0, "PCMU", 8000),
        (8, "PCMA", 8000),
        (101, "telephone-event", 8000),
    ];

    #[test]
    fn answer_keeps_m_line_order_rejects_other_streams_and_reverses_direction() {
        let offer = parse(BASERIP_LIKE_OFFER);
        let ip: IpAddr = "192.0.2.20".parse().unwrap();
        let answer =
            SessionDescription::answer(&offer, "bob", 7, ip, 6000, OURS, Direction::SendRecv)
                .unwrap();
        assert_eq!(answer.media.len(), 2);
        assert_eq!(answer.media[0].media, "video");
        assert_eq!(answer.media[0].port, 0);
        let audio = &answer.media[1];
        assert_eq!(audio.port, 6000);
        // G.722 is not ours; PCMA comes first because the offerer listed it first.
        assert_eq!(audio.formats, vec!["8", "0", "101"]);
        assert_eq!(audio.direction(), Some(Direction::RecvOnly));
        assert_eq!(audio.fmtp(101), Some("0-15"));
        // The answer parses back, and read from the offerer's side it names PCMA.
        let back = SessionDescription::parse(&answer.to_bytes()).unwrap();
        let stream = back.audio_stream(OURS).unwrap();
        assert_eq!(stream.codec.encoding, "PCMA");
        assert_eq!(stream.port, 6000);
        assert_eq!(stream.telephone_event, Some(101));
        let offered = offer.audio_stream(OURS).unwrap();
        assert_eq!(offered.index, 1);
        assert_eq!(offered.direction, Direction::SendOnly);
        assert_eq!(offered.address, "192.0.2.10".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_ipv6_offer_is_answered_with_its_address_bare_or_in_brackets() {
        // SIPp's `[local_ip]` puts an IPv6 address in brackets; RFC 8866 writes it bare.
        for address in ["::1", "[::1]"] {
            let offer = SessionDescription::parse(
                format!(
                    "v=0\r\no=sipp 1 1 IN IP6 {address}\r\ns=-\r\nc=IN IP6 {address}\r\n\
                     t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
            let stream = offer.audio_stream(OURS).expect(address);
            assert_eq!(stream.address, "::1".parse::<IpAddr>().unwrap());
            let ip: IpAddr = "::1".parse().unwrap();
            let answer =
                SessionDescription::answer(&offer, "us", 1, ip, 7000, OURS, Direction::SendRecv)
                    .expect(address);
            let text = String::from_utf8(answer.to_bytes()).unwrap();
            assert!(text.contains("c=IN IP6 ::1\r\n"), "{text}");
        }
    }

    #[test]
    fn no_common_codec_means_no_answer() {
        let offer = parse(BASERIP_LIKE_OFFER);
        let ip: IpAddr = "192.0.2.20".parse().unwrap();
        assert!(
            SessionDescription::answer(
                &offer,
                "b",
                1,
                ip,
                1,
                &[(96, "opus", 48000)],
                Direction::SendRecv
            )
            .is_none()
        );
    }

    #[test]
    fn answer_directions() {
        use Direction::*;
        assert_eq!(answer_direction(SendRecv, SendRecv), SendRecv);
        assert_eq!(answer_direction(SendOnly, SendRecv), RecvOnly);
        assert_eq!(answer_direction(RecvOnly, SendRecv), SendOnly);
        assert_eq!(answer_direction(Inactive, SendRecv), Inactive);
        assert_eq!(answer_direction(SendRecv, SendOnly), SendOnly);
        assert_eq!(answer_direction(SendOnly, SendOnly), Inactive);
    }

    #[test]
    fn one_offer_at_a_time() {
        let mut oa = OfferAnswer::default();
        oa.send_offer().unwrap();
        assert!(oa.receive_offer().is_err(), "glare: answer 491");
        oa.receive_answer().unwrap();
        oa.receive_offer().unwrap();
        assert!(oa.send_offer().is_err());
        oa.send_answer().unwrap();
        assert_eq!(oa, OfferAnswer::Stable);
        oa.send_offer().unwrap();
        oa.offer_rejected();
        assert_eq!(oa, OfferAnswer::Stable);
    }

    const RFC3264_REOFFER: &str = "v=0\r\n\
        o=bob 2890844730 2890844731 IN IP4 host.example.com\r\n\
        s=\r\n\
        c=IN IP4 host.example.com\r\n\
        t=0 0\r\n\
        m=audio 65422 RTP/AVP 0\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        m=video 0 RTP/AVP 31\r\n\
        m=video 53000 RTP/AVP 32\r\n\
        a=rtpmap:32 MPV/90000\r\n\
        m=audio 51434 RTP/AVP 110\r\n\
        a=rtpmap:110 telephone-events/8000\r\n\
        a=recvonly\r\n";

    // RFC 3264 §10.2, Alice's initial one-of-N offer.
    const RFC3264_ONE_OF_N: &str = "v=0\n\
        o=alice 2890844526 2890844526 IN IP4 host.anywhere.com\n\
        s=\n\
        c=IN IP4 host.anywhere.com\n\
        t=0 0\n\
        m=audio 62986 RTP/AVP 0 4 18\n\
        a=rtpmap:0 PCMU/8000\n\
        a=rtpmap:4 G723/8000\n\
        a=rtpmap:18 G729/8000\n\
        a=inactive\n";

    // Bodies of the RFC 4475 / RFC 5118 torture messages named after each constant.
    const IPV6_IN_SDP: &str = "v=0\r\n\
        o=assistant 971731711378798081 0 IN IP6 2001:db8::20\r\n\
        s=Live video feed for today's meeting\r\n\
        c=IN IP6 2001:db8::20\r\n\
        t=3338481189 3370017201\r\n\
        m=audio 6000 RTP/AVP 2\r\n\
        a=rtpmap:2 G726-32/8000\r\n\
        m=video 6024 RTP/AVP 107\r\n\
        a=rtpmap:107 H263-1998/90000\r\n";

    const MULT_IP_IN_SDP: &str = "v=0\r\n\
        o=bob 280744730 28977631 IN IP4 host.example.com\r\n\
        s=\r\n\
        t=0 0\r\n\
        m=audio 22334 RTP/AVP 0\r\n\
        c=IN IP4 192.0.2.1\r\n\
        m=video 6024 RTP/AVP 107\r\n\
        c=IN IP6 2001:db8::1\r\n\
        a=rtpmap:107 H263-1998/90000\r\n";

    const IPV4_MAPPED_IPV6: &str = "v=0\r\n\
        o=assistant 971731711378798081 0 IN IP6 ::ffff:192.0.2.2\r\n\
        s=Call me soon, please!\r\n\
        c=IN IP6 ::ffff:192.0.2.2\r\n\
        t=3338481189 3370017201\r\n\
        m=audio 6000 RTP/AVP 2\r\n\
        a=rtpmap:2 G726-32/8000\r\n\
        m=video 6024 RTP/AVP 107\r\n\
        a=rtpmap:107 H263-1998/90000\r\n";

    const SDP01: &str = "v=0\r\n\
        o=mhandley 29739 7272939 IN IP4 192.0.2.5\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.5\r\n\
        t=0 0\r\n\
        m=audio 49217 RTP/AVP 0 12\r\n\
        m=video 3227 RTP/AVP 31\r\n\
        a=rtpmap:31 LPC\r\n";

    // Every line type, several of each where allowed, to exercise the writer's ordering.
    const EVERYTHING: &str = "v=0\r\n\
        o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n\
        s=SDP Seminar\r\n\
        i=A Seminar on the session description protocol\r\n\
        u=http://www.example.com/seminars/sdp.pdf\r\n\
        e=j.doe@example.com (Jane Doe)\r\n\
        p=+1 617 555-6011\r\n\
        c=IN IP4 224.2.17.12/127\r\n\
        b=CT:128\r\n\
        t=2873397496 2873404696\r\n\
        r=7d 1h 0 25h\r\n\
        t=0 0\r\n\
        z=2882844526 -1h 2898848070 0\r\n\
        k=prompt\r\n\
        a=recvonly\r\n\
        a=tool:switchboard\r\n\
        m=audio 49170/2 RTP/SAVPF 0 101\r\n\
        i=voice\r\n\
        c=IN IP6 FF15::101/3\r\n\
        c=IN IP6 FF15::102/3\r\n\
        b=AS:64\r\n\
        k=clear:secret\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=ptime:30\r\n\
        a=rtcp:53020 IN IP6 2001:db8::7\r\n\
        a=sendonly\r\n\
        m=application 5000 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        a=sctp-port:5000\r\n";

    #[test]
    fn parses_rfc3264_reoffer() {
        let sdp = round_trip(RFC3264_REOFFER);
        assert_eq!(sdp.version, 0);
        assert_eq!(
            sdp.origin,
            Origin {
                username: "bob".into(),
                session_id: 2890844730,
                session_version: 2890844731,
                nettype: "IN".into(),
                addrtype: "IP4".into(),
                unicast_address: "host.example.com".into(),
            }
        );
        assert_eq!(sdp.session_name, "");
        assert_eq!(sdp.media.len(), 4);
        assert_eq!(sdp.media[1].port, 0);
        assert_eq!(sdp.media[1].formats, ["31"]);
        assert!(sdp.media[1].attributes.is_empty());
        let dtmf = &sdp.media[3];
        assert_eq!(
            dtmf.rtpmap(110),
            Some(RtpMap {
                payload_type: 110,
                encoding: "telephone-events".into(),
                clock_rate: 8000,
                channels: None,
            })
        );
        assert_eq!(dtmf.direction(), Some(Direction::RecvOnly));
        assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::SendRecv);
        assert_eq!(
            sdp.effective_connection(dtmf).unwrap().address,
            "host.example.com"
        );
        // The canonical writer reproduces an already-canonical body byte for byte.
        assert_eq!(sdp.to_string(), RFC3264_REOFFER);
    }

    #[test]
    fn parses_bare_lf_and_writes_crlf() {
        let sdp = round_trip(RFC3264_ONE_OF_N);
        assert_eq!(sdp.to_string(), RFC3264_ONE_OF_N.replace('\n', "\r\n"));
        let audio = &sdp.media[0];
        assert_eq!(audio.formats, ["0", "4", "18"]);
        let encodings: Vec<String> = audio.rtpmaps().map(|m| m.encoding).collect();
        assert_eq!(encodings, ["PCMU", "G723", "G729"]);
        assert_eq!(sdp.effective_direction(audio), Direction::Inactive);
    }

    #[test]
    fn parses_ipv6_in_sdp() {
        let sdp = round_trip(IPV6_IN_SDP);
        assert_eq!(sdp.origin.session_id, 971731711378798081);
        assert_eq!(sdp.origin.addrtype, "IP6");
        assert_eq!(sdp.origin.unicast_address, "2001:db8::20");
        assert_eq!(sdp.session_name, "Live video feed for today's meeting");
        let connection = sdp.connection.as_ref().unwrap();
        assert_eq!(connection.address, "2001:db8::20");
        assert_eq!(connection.ip(), Some("2001:db8::20".parse().unwrap()));
        assert_eq!(
            sdp.timings,
            [Timing {
                start: 3338481189,
                stop: 3370017201,
                repeats: vec![],
            }]
        );
        assert_eq!(sdp.media[1].rtpmap(107).unwrap().encoding, "H263-1998");
        assert_eq!(sdp.media[1].rtpmap(107).unwrap().clock_rate, 90000);
    }

    #[test]
    fn parses_mult_ip_in_sdp() {
        let sdp = round_trip(MULT_IP_IN_SDP);
        assert_eq!(sdp.session_name, "");
        assert_eq!(sdp.connection, None);
        let audio = sdp.effective_connection(&sdp.media[0]).unwrap();
        assert_eq!(
            (audio.addrtype.as_str(), audio.address.as_str()),
            ("IP4", "192.0.2.1")
        );
        let video = sdp.effective_connection(&sdp.media[1]).unwrap();
        assert_eq!(
            (video.addrtype.as_str(), video.address.as_str()),
            ("IP6", "2001:db8::1")
        );
    }

    #[test]
    fn parses_ipv4_mapped_ipv6() {
        let sdp = round_trip(IPV4_MAPPED_IPV6);
        assert_eq!(sdp.origin.unicast_address, "::ffff:192.0.2.2");
        let connection = sdp.effective_connection(&sdp.media[0]).unwrap();
        assert_eq!(connection.address, "::ffff:192.0.2.2");
        assert_eq!(connection.ip(), Some("::ffff:192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn sdp01_skips_malformed_rtpmap() {
        let sdp = round_trip(SDP01);
        assert_eq!(sdp.session_name, "-");
        assert_eq!(sdp.media[0].formats, ["0", "12"]);
        let video = &sdp.media[1];
        // "a=rtpmap:31 LPC" has no clock rate: kept raw, but not offered as a typed map.
        assert_eq!(video.attribute("rtpmap"), Some("31 LPC"));
        assert_eq!(video.rtpmaps().count(), 0);
        assert_eq!(video.rtpmap(31), None);
    }

    #[test]
    fn parses_every_field() {
        let sdp = round_trip(EVERYTHING);
        assert_eq!(sdp.to_string(), EVERYTHING);
        assert_eq!(
            sdp.information.as_deref(),
            Some("A Seminar on the session description protocol")
        );
        assert_eq!(
            sdp.uri.as_deref(),
            Some("http://www.example.com/seminars/sdp.pdf")
        );
        assert_eq!(sdp.emails, ["j.doe@example.com (Jane Doe)"]);
        assert_eq!(sdp.phones, ["+1 617 555-6011"]);
        assert_eq!(sdp.connection.as_ref().unwrap().address, "224.2.17.12/127");
        assert_eq!(
            sdp.connection.as_ref().unwrap().ip(),
            Some("224.2.17.12".parse().unwrap())
        );
        assert_eq!(
            sdp.bandwidths,
            [Bandwidth {
                bwtype: "CT".into(),
                bandwidth: 128,
            }]
        );
        assert_eq!(sdp.timings.len(), 2);
        assert_eq!(sdp.timings[0].repeats, ["7d 1h 0 25h"]);
        assert!(sdp.timings[1].repeats.is_empty());
        assert_eq!(
            sdp.time_zones.as_deref(),
            Some("2882844526 -1h 2898848070 0")
        );
        assert_eq!(sdp.encryption_key.as_deref(), Some("prompt"));
        assert_eq!(sdp.attribute("tool"), Some("switchboard"));
        assert_eq!(sdp.attribute("recvonly"), Some(""));

        let audio = &sdp.media[0];
        assert_eq!((audio.port, audio.port_count), (49170, Some(2)));
        assert_eq!(audio.proto, "RTP/SAVPF");
        assert_eq!(audio.information.as_deref(), Some("voice"));
        assert_eq!(audio.connections.len(), 2);
        assert_eq!(audio.connections[1].address, "FF15::102/3");
        assert_eq!(audio.bandwidths[0].to_string(), "AS:64");
        assert_eq!(audio.encryption_key.as_deref(), Some("clear:secret"));
        assert_eq!(audio.fmtp(101), Some("0-15"));
        assert_eq!(audio.fmtp(0), None);
        assert_eq!(audio.ptime(), Some(30));
        assert_eq!(
            audio.rtcp(),
            Some(Rtcp {
                port: 53020,
                connection: Some(Connection {
                    nettype: "IN".into(),
                    addrtype: "IP6".into(),
                    address: "2001:db8::7".into(),
                }),
            })
        );
        assert_eq!(
            audio.rtcp().unwrap().to_string(),
            "53020 IN IP6 2001:db8::7"
        );
        assert_eq!(
            sdp.effective_connection(audio).unwrap().address,
            "FF15::101/3"
        );

        let data = &sdp.media[1];
        assert_eq!(data.formats, ["webrtc-datachannel"]);
        assert_eq!(data.rtpmaps().count(), 0);
        assert_eq!(data.ptime(), None);
        assert_eq!(data.rtcp(), None);
        assert_eq!(
            sdp.effective_connection(data).unwrap().address,
            "224.2.17.12/127"
        );
    }

    #[test]
    fn rtpmap_channels_and_rtcp_port_only() {
        let sdp = parse(
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n\
             m=audio 5004 RTP/AVP 111\na=rtpmap:111 opus/48000/2\na=rtcp:5005\n\
             a=fmtp:111 minptime=10;useinbandfec=1\n",
        );
        let audio = &sdp.media[0];
        let opus = audio.rtpmap(111).unwrap();
        assert_eq!(opus.channels, Some(2));
        assert_eq!(opus.to_string(), "111 opus/48000/2");
        assert_eq!(
            audio.rtcp(),
            Some(Rtcp {
                port: 5005,
                connection: None,
            })
        );
        assert_eq!(audio.fmtp(111), Some("minptime=10;useinbandfec=1"));
        assert_eq!(sdp.effective_connection(audio), None);
    }

    #[test]
    fn direction_precedence() {
        let base = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
        // No attribute anywhere: sendrecv.
        let sdp = parse(&format!("{base}m=audio 4000 RTP/AVP 0\r\n"));
        assert_eq!(sdp.direction(), Direction::SendRecv);
        assert_eq!(sdp.media[0].direction(), None);
        assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::SendRecv);

        // Session level applies to media without their own.
        let sdp = parse(&format!(
            "{base}a=sendonly\r\nm=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\na=inactive\r\n"
        ));
        assert_eq!(sdp.direction(), Direction::SendOnly);
        assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::SendOnly);
        // Media level overrides session level.
        assert_eq!(sdp.effective_direction(&sdp.media[1]), Direction::Inactive);

        // A direction-named attribute with a value is not a direction.
        let sdp = parse(&format!("{base}m=audio 4000 RTP/AVP 0\r\na=recvonly:x\r\n"));
        assert_eq!(sdp.media[0].direction(), None);
    }

    #[test]
    fn set_direction_replaces_in_place() {
        let mut sdp = parse(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n\
             m=audio 4000 RTP/AVP 0\r\na=sendrecv\r\na=ptime:20\r\na=inactive\r\n",
        );
        sdp.media[0].set_direction(Direction::RecvOnly);
        let names: Vec<&str> = sdp.media[0]
            .attributes
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        assert_eq!(names, ["recvonly", "ptime"]);

        sdp.set_direction(Direction::SendOnly);
        assert_eq!(sdp.attributes, [Attribute::new("sendonly", None)]);
        assert_eq!(sdp.effective_direction(&sdp.media[0]), Direction::RecvOnly);
        assert_eq!(sdp.direction(), Direction::SendOnly);
    }

    #[test]
    fn direction_helpers() {
        assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reversed(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reversed(), Direction::Inactive);
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(Direction::from_name(&d.to_string()), Some(d));
        }
        assert_eq!(Direction::from_name("sendrecv2"), None);
    }

    #[test]
    fn audio_offer_builder() {
        let sdp = SessionDescription::new_audio_offer(
            "alice",
            4242,
            "192.0.2.10".parse().unwrap(),
            40000,
            &[
                (0, "PCMU", 8000),
                (8, "PCMA", 8000),
                (101, "telephone-event", 8000),
            ],
        );
        let expected = "v=0\r\n\
            o=alice 4242 4242 IN IP4 192.0.2.10\r\n\
            s=-\r\n\
            c=IN IP4 192.0.2.10\r\n\
            t=0 0\r\n\
            m=audio 40000 RTP/AVP 0 8 101\r\n\
            a=rtpmap:0 PCMU/8000\r\n\
            a=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-16\r\n\
            a=ptime:20\r\n\
            a=sendrecv\r\n";
        assert_eq!(sdp.to_string(), expected);
        assert_eq!(SessionDescription::parse(&sdp.to_bytes()).unwrap(), sdp);
        assert_eq!(sdp.media[0].fmtp(101), Some("0-16"));
        assert_eq!(sdp.media[0].ptime(), Some(20));

        let v6 = SessionDescription::new_audio_offer(
            "-",
            1,
            "2001:db8::1".parse().unwrap(),
            5004,
            &[(0, "PCMU", 8000)],
        );
        assert!(v6.to_string().contains("\r\nc=IN IP6 2001:db8::1\r\n"));
        assert_eq!(v6.media[0].fmtp(101), None);
        let mut out = Vec::new();
        v6.write_to(&mut out);
        assert_eq!(out, v6.to_bytes());
    }

    #[test]
    fn accepts_trailing_blank_lines_and_missing_final_newline() {
        let reference = parse(SDP01);
        assert_eq!(parse(&format!("{SDP01}\r\n\r\n")), reference);
        assert_eq!(parse(SDP01.trim_end()), reference);
    }

    #[test]
    fn error_messages() {
        let head = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
        let cases: &[(String, &str)] = &[
            (
                String::new(),
                "line 1: sdp ends where a v= line is required",
            ),
            (
                "o=- 1 1 IN IP4 h\r\nv=0\r\n".into(),
                "line 1: expected v= line, found o= line",
            ),
            (
                "v=0\r\n".into(),
                "line 2: sdp ends where a o= line is required",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 h\r\nt=0 0\r\ns=-\r\n".into(),
                "line 3: expected s= line, found t= line",
            ),
            (
                "v=1\r\n".into(),
                r#"line 1: v= "1" is not a supported version (only 0)"#,
            ),
            ("v=zero\r\n".into(), r#"line 1: v= "zero" is not a number"#),
            (
                "v=0\r\no=- 1 1 IN IP4\r\n".into(),
                r#"line 2: o= "- 1 1 IN IP4" must have 6 fields: username sess-id sess-version nettype addrtype address"#,
            ),
            (
                "v=0\r\no=- x1 1 IN IP4 h\r\n".into(),
                r#"line 2: o= sess-id "x1" is not a number"#,
            ),
            (
                "v=0\r\no=- 1 99999999999999999999 IN IP4 h\r\n".into(),
                r#"line 2: o= sess-version "99999999999999999999" is out of range"#,
            ),
            (
                format!("{head}m=audio abc RTP/AVP 0\r\n"),
                r#"line 5: m= port "abc" is not a number"#,
            ),
            (
                format!("{head}m=audio 70000 RTP/AVP 0\r\n"),
                r#"line 5: m= port "70000" is out of range"#,
            ),
            (
                format!("{head}m=audio 4000/x RTP/AVP 0\r\n"),
                r#"line 5: m= port count "x" is not a number"#,
            ),
            (
                format!("{head}m=audio 4000 RTP/AVP\r\n"),
                r#"line 5: m= "audio 4000 RTP/AVP" has no media formats"#,
            ),
            (
                format!("{head}m=audio\r\n"),
                r#"line 5: m= "audio" must be <media> <port>[/<count>] <proto> <fmt> ..."#,
            ),
            (format!("{head}x=1\r\n"), "line 5: unknown line type 'x='"),
            (format!("{head}A=1\r\n"), "line 5: unknown line type 'A='"),
            (
                format!("{head}this is not sdp\r\n"),
                r#"line 5: "this is not sdp" is not a <type>=<value> line"#,
            ),
            (
                format!("{head}a =rtpmap\r\n"),
                r#"line 5: "a =rtpmap" is not a <type>=<value> line"#,
            ),
            (
                format!("{head}\r\na=x\r\n"),
                r#"line 5: "" is not a <type>=<value> line"#,
            ),
            (
                format!("{head}a=\r\n"),
                r#"line 5: a= "" has an empty attribute name"#,
            ),
            (
                format!("{head}c=IN IP4\r\n"),
                r#"line 5: c= "IN IP4" must have 3 fields: nettype addrtype address"#,
            ),
            (
                format!("{head}b=AS\r\n"),
                r#"line 5: b= "AS" is not <bwtype>:<bandwidth>"#,
            ),
            (
                format!("{head}b=AS:fast\r\n"),
                r#"line 5: b= bandwidth "fast" is not a number"#,
            ),
            (
                format!("{head}t=now 0\r\n"),
                r#"line 5: t= start-time "now" is not a number"#,
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nr=1d 1h 0\r\n".into(),
                "line 4: r= line without a preceding t= line",
            ),
            (
                format!("{head}c=IN IP4 a\r\nc=IN IP4 b\r\n"),
                "line 6: more than one c= line",
            ),
            (
                format!("{head}o=- 1 1 IN IP4 h\r\n"),
                "line 5: more than one o= line",
            ),
            (
                format!("{head}m=audio 1 RTP/AVP 0\r\ni=a\r\ni=b\r\n"),
                "line 7: more than one i= line",
            ),
            (
                format!("{head}m=audio 1 RTP/AVP 0\r\nt=0 0\r\n"),
                "line 6: t= is not allowed inside a media description",
            ),
            (
                format!("{head}s=x\0y\r\n"),
                "line 5: contains a nul or carriage return character",
            ),
            (
                format!("{head}s=x\ry\r\n"),
                "line 5: contains a nul or carriage return character",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(&error(input), expected, "input: {input:?}");
        }
        let mut bad_utf8 = format!("{head}i=").into_bytes();
        bad_utf8.extend_from_slice(b"\xff\xfe\r\n");
        let err = SessionDescription::parse(&bad_utf8).unwrap_err();
        assert_eq!(err.to_string(), "line 5: not valid utf-8");
        assert_eq!(err.line(), 5);
    }

    #[test]
    fn long_bad_values_are_shortened() {
        let long = "9".repeat(200);
        let message = error(&format!("v=0\r\no=- {long} 1 IN IP4 h\r\n"));
        assert!(message.len() < 120, "{message}");
        assert!(message.ends_with(r#"..." is out of range"#), "{message}");
    }

    #[test]
    fn every_prefix_and_garbage_returns() {
        for body in [EVERYTHING, RFC3264_REOFFER, IPV6_IN_SDP, SDP01] {
            let bytes = body.as_bytes();
            for end in 0..=bytes.len() {
                let _ = SessionDescription::parse(&bytes[..end]);
                let _ = SessionDescription::parse(&bytes[end..]);
            }
        }
        let garbage: &[&[u8]] = &[
            b"",
            b"\n",
            b"\r\n\r\n",
            b"=",
            b"v",
            b"v=",
            b"\xff=0",
            b"v=0\no=\ns=\n",
            b"v=0\no=- - - - - -\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=\nm=\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=\nm=a 1/ p f\n",
            b"v=0\no=- 1 1 IN IP4 h\ns=\na=:\n",
            b"\0\0\0\0",
            "v=0\no=\u{e9}\u{1F600} 1 1 IN IP4 h\ns=\u{1F600}\n".as_bytes(),
        ];
        for input in garbage {
            let _ = SessionDescription::parse(input);
        }
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9.:/+_-]{1,12}"
    }

    /// Free text: anything but the characters that end or corrupt a line.
    fn text() -> impl Strategy<Value = String> {
        "[^\r\n\0]{0,16}"
    }

    fn connection() -> impl Strategy<Value = Connection> {
        (token(), token(), token()).prop_map(|(nettype, addrtype, address)| Connection {
            nettype,
            addrtype,
            address,
        })
    }

    fn bandwidth() -> impl Strategy<Value = Bandwidth> {
        ("[A-Za-z0-9-]{1,6}", any::<u64>())
            .prop_map(|(bwtype, bandwidth)| Bandwidth { bwtype, bandwidth })
    }

    fn attribute() -> impl Strategy<Value = Attribute> {
        ("[A-Za-z0-9-]{1,10}", proptest::option::of(text()))
            .prop_map(|(name, value)| Attribute { name, value })
    }

    fn attributes() -> impl Strategy<Value = Vec<Attribute>> {
        proptest::collection::vec(attribute(), 0..4)
    }

    fn media() -> impl Strategy<Value = MediaDescription> {
        (
            (
                token(),
                any::<u16>(),
                proptest::option::of(any::<u16>()),
                token(),
                proptest::collection::vec(token(), 1..4),
            ),
            (
                proptest::option::of(text()),
                proptest::collection::vec(connection(), 0..3),
                proptest::collection::vec(bandwidth(), 0..2),
                proptest::option::of(text()),
                attributes(),
            ),
        )
            .prop_map(
                |(
                    (media, port, port_count, proto, formats),
                    (information, connections, bandwidths, encryption_key, attributes),
                )| MediaDescription {
                    media,
                    port,
                    port_count,
                    proto,
                    formats,
                    information,
                    connections,
                    bandwidths,
                    encryption_key,
                    attributes,
                },
            )
    }

    fn timing() -> impl Strategy<Value = Timing> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(text(), 0..3),
        )
            .prop_map(|(start, stop, repeats)| Timing {
                start,
                stop,
                repeats,
            })
    }

    fn session() -> impl Strategy<Value = SessionDescription> {
        let origin = (
            token(),
            any::<u64>(),
            any::<u64>(),
            token(),
            token(),
            token(),
        )
            .prop_map(
                |(username, session_id, session_version, nettype, addrtype, unicast_address)| {
                    Origin {
                        username,
                        session_id,
                        session_version,
                        nettype,
                        addrtype,
                        unicast_address,
                    }
                },
            );
        (
            (
                origin,
                text(),
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::collection::vec(text(), 0..2),
                proptest::collection::vec(text(), 0..2),
                proptest::option::of(connection()),
            ),
            (
                proptest::collection::vec(bandwidth(), 0..2),
                proptest::collection::vec(timing(), 0..3),
                proptest::option::of(text()),
                proptest::option::of(text()),
                attributes(),
                proptest::collection::vec(media(), 0..3),
            ),
        )
            .prop_map(
                |(
                    (origin, session_name, information, uri, emails, phones, connection),
                    (bandwidths, timings, time_zones, encryption_key, attributes, media),
                )| SessionDescription {
                    version: 0,
                    origin,
                    session_name,
                    information,
                    uri,
                    emails,
                    phones,
                    connection,
                    bandwidths,
                    timings,
                    time_zones,
                    encryption_key,
                    attributes,
                    media,
                },
            )
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(sdp in session()) {
            let written = sdp.to_string();
            prop_assert_eq!(SessionDescription::parse(written.as_bytes()), Ok(sdp));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = SessionDescription::parse(&bytes);
        }

        /// Mutating a real body keeps most of it parseable, which reaches the deeper paths;
        /// whatever parses must then survive a canonical round trip.
        #[test]
        fn mutated_bodies_parse_or_fail_cleanly(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        ) {
            let mut bytes = EVERYTHING.as_bytes().to_vec();
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(sdp) = SessionDescription::parse(&bytes) {
                prop_assert_eq!(SessionDescription::parse(&sdp.to_bytes()), Ok(sdp));
            }
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_to_json() {
        let sdp = parse(RFC3264_REOFFER);
        let json = serde_json::to_value(&sdp).unwrap();
        assert_eq!(json["origin"]["session_version"], 2890844731_u64);
        assert_eq!(json["media"][3]["attributes"][1]["name"], "recvonly");
        assert_eq!(
            json["media"][3]["attributes"][1]["value"],
            serde_json::Value::Null
        );
        assert_eq!(
            serde_json::to_string(&Direction::SendOnly).unwrap(),
            r#""sendonly""#
        );
        let rtpmap = serde_json::to_value(sdp.media[0].rtpmap(0).unwrap()).unwrap();
        assert_eq!(rtpmap["encoding"], "PCMU");
    }
}
