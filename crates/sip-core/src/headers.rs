//! Typed header values, parsed on demand from a header's raw text and borrowing from it.
//! Each parser follows the RFC 3261 §25 grammar for its header, and its errors name the
//! header and quote the offending text.

use crate::error::ParseError;
use crate::method::Method;
use crate::params::Params;
use crate::scan::{Cursor, clip, is_token, parse_u32, unquote};
use crate::uri::{Host, Uri, parse_host};
use std::borrow::Cow;
use std::fmt;

/// Splits a header value into its comma-separated elements, ignoring commas inside
/// quoted strings and `<...>`. Empty elements are kept, so that `a,,b` is refused by
/// the element's parser rather than silently accepted.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let s = rest?;
        let b = s.as_bytes();
        let mut i = 0;
        let mut in_quote = false;
        let mut in_angle = false;
        while i < b.len() {
            match b[i] {
                b'\\' if in_quote => i += 1,
                b'"' => in_quote = !in_quote,
                b'<' if !in_quote => in_angle = true,
                b'>' if !in_quote => in_angle = false,
                b',' if !in_quote && !in_angle => break,
                _ => {}
            }
            i += 1;
        }
        if i >= b.len() {
            rest = None;
            Some(s.trim_matches(|c: char| c.is_ascii_whitespace()))
        } else {
            rest = Some(&s[i + 1..]);
            Some(s[..i].trim_matches(|c: char| c.is_ascii_whitespace()))
        }
    })
}

/// Parses `*( SEMI generic-param )` at the cursor; returns the raw parameter text
/// (without the first `;`). Values may be tokens, hosts (IPv6 with or without brackets,
/// as RFC 5118 §4.5 asks) or quoted strings.
fn parse_params<'a>(c: &mut Cursor<'a>, header: &'static str) -> Result<Params<'a>, ParseError> {
    let mut first = None;
    let mut last = c.pos;
    while c.eat_sep(b';') {
        if first.is_none() {
            first = Some(c.pos);
        }
        let Some(name) = c.token() else {
            return Err(ParseError::header(
                header,
                format!("empty or bad parameter name at \"{}\"", clip(c.rest())),
            ));
        };
        if c.eat_sep(b'=') {
            match c.quoted() {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let v = c.take_while(|b| is_token(b) || matches!(b, b':' | b'[' | b']'));
                    if v.is_empty() {
                        return Err(ParseError::header(
                            header,
                            format!("parameter \"{name}\" has an empty value"),
                        ));
                    }
                }
                Err(_) => {
                    return Err(ParseError::header(
                        header,
                        format!("unterminated quoted value of parameter \"{name}\""),
                    ));
                }
            }
        }
        last = c.pos;
    }
    Ok(match first {
        Some(f) => Params::from_raw(c.s.get(f..last).unwrap_or("")),
        None => Params::default(),
    })
}

fn expect_end(c: &mut Cursor<'_>, header: &'static str) -> Result<(), ParseError> {
    c.skip_lws();
    if c.at_end() {
        Ok(())
    } else {
        Err(ParseError::header(
            header,
            format!("unexpected \"{}\"", clip(c.rest())),
        ))
    }
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name and version, e.g. `SIP` and `2.0`.
    pub protocol: (&'a str, &'a str),
    /// The transport token as written (`UDP`, `TCP`, `TLS`, `WS`, `WSS`, `SCTP`, or any
    /// other token, kept opaque).
    pub transport: &'a str,
    /// The sent-by host.
    pub host: Host<'a>,
    /// The sent-by port, when given.
    pub port: Option<u16>,
    /// Parameters: branch, received, rport, maddr, ttl, and extensions.
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// Parses one Via value (one element of the comma list).
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let name = c.token();
        let slash1 = c.eat_sep(b'/');
        let version = c.token();
        let slash2 = c.eat_sep(b'/');
        let transport = c.token();
        let (Some(name), true, Some(version), true, Some(transport)) =
            (name, slash1, version, slash2, transport)
        else {
            return Err(ParseError::header(
                "Via",
                format!("\"{}\" has no SIP/2.0/<transport>", clip(s)),
            ));
        };
        if !c.skip_lws() {
            return Err(ParseError::header(
                "Via",
                format!("no space before sent-by in \"{}\"", clip(s)),
            ));
        }
        let (host, rest) = parse_host(c.rest(), s).map_err(|e| ParseError::header("Via", e.0))?;
        c.pos = s.len() - rest.len();
        let mut port = None;
        if c.eat_sep(b':') {
            let digits = c.take_while(|b| b.is_ascii_digit());
            port = Some(
                crate::scan::parse_u64(digits)
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or_else(|| {
                        ParseError::header("Via", format!("bad port in \"{}\"", clip(s)))
                    })?,
            );
        }
        let params = parse_params(&mut c, "Via")?;
        expect_end(&mut c, "Via")?;
        Ok(Via {
            protocol: (name, version),
            transport,
            host,
            port,
            params,
        })
    }
    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }
    /// The received parameter (brackets around an IPv6 address removed).
    pub fn received(&self) -> Option<&'a str> {
        self.params
            .get("received")
            .flatten()
            .map(|r| r.trim_start_matches('[').trim_end_matches(']'))
    }
    /// `rport` (RFC 3581): `None` when absent, `Some(None)` when present without a value.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }
    /// Whether the branch carries RFC 3261's magic cookie (and something after it).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol.0, self.protocol.1, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if !self.params.is_empty() {
            write!(f, ";{}", self.params.as_str())?;
        }
        Ok(())
    }
}

/// A name-addr or addr-spec with header parameters: From, To, Contact, Route,
/// Record-Route, Path, Reply-To (RFC 3261 §20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: a quoted string with its quotes, or tokens.
    pub display_name: Option<&'a str>,
    /// The URI.
    pub uri: Uri<'a>,
    /// The URI exactly as written.
    pub uri_text: &'a str,
    /// Whether the URI was in `<...>`.
    pub angle: bool,
    /// Header parameters (tag, expires, q, lr on a Route URI is inside `uri`).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value; `header` names it in errors.
    pub fn parse(s: &'a str, header: &'static str) -> Result<NameAddr<'a>, ParseError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let mut display_name = None;
        let angle;
        let uri_text;
        match c.quoted() {
            Err(_) => {
                return Err(ParseError::header(
                    header,
                    format!("unterminated quoted display name in \"{}\"", clip(s)),
                ));
            }
            Ok(Some(q)) => {
                display_name = Some(q);
                c.skip_lws();
                if !c.eat(b'<') {
                    return Err(ParseError::header(
                        header,
                        format!("no <URI> after the display name in \"{}\"", clip(s)),
                    ));
                }
                angle = true;
            }
            Ok(None) => {
                // Tokens followed by `<` are a display name (RFC 4475 §3.1.1.6 allows no
                // LWS before `<`); anything else is an addr-spec.
                let start = c.pos;
                let mut probe = c;
                let mut last_token_end = start;
                while probe.token().is_some() {
                    last_token_end = probe.pos;
                    probe.skip_lws();
                }
                if probe.peek() == Some(b'<') {
                    if last_token_end > start {
                        display_name = c.s.get(start..last_token_end);
                    }
                    c = probe;
                    c.pos += 1;
                    angle = true;
                } else {
                    angle = false;
                }
            }
        }
        if angle {
            let rest = c.rest();
            let Some(close) = rest.find('>') else {
                return Err(ParseError::header(
                    header,
                    format!("unterminated <URI> in \"{}\"", clip(s)),
                ));
            };
            uri_text = &rest[..close];
            if uri_text.bytes().any(crate::scan::is_lws) {
                return Err(ParseError::header(
                    header,
                    format!("white space inside <{}>", clip(uri_text)),
                ));
            }
            c.pos += close + 1;
        } else {
            // addr-spec: the URI ends at the first `;` (those are header parameters), and
            // RFC 3261 §20 requires <> around a URI with `,`, `?` or `;`.
            let rest = c.rest();
            let end = rest
                .find(|ch: char| ch == ';' || ch.is_ascii_whitespace())
                .unwrap_or(rest.len());
            uri_text = &rest[..end];
            if uri_text.contains(['?', ',']) {
                return Err(ParseError::header(
                    header,
                    format!(
                        "URI \"{}\" with ? or , must be enclosed in <>",
                        clip(uri_text)
                    ),
                ));
            }
            c.pos += end;
        }
        let uri = Uri::parse(uri_text).map_err(|e| ParseError::header(header, e.0))?;
        let params = parse_params(&mut c, header)?;
        expect_end(&mut c, header)?;
        Ok(NameAddr {
            display_name,
            uri,
            uri_text,
            angle,
            params,
        })
    }
    /// The tag parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
    /// The display name with quotes and escapes removed.
    pub fn display_name_text(&self) -> Option<Cow<'a, str>> {
        self.display_name.map(unquote)
    }
    /// The `expires` parameter (Contact), checked to fit delta-seconds.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.params
            .get("expires")
            .map(|v| {
                v.and_then(parse_u32).ok_or_else(|| {
                    ParseError::header(
                        "Contact",
                        format!("expires \"{}\" is not delta-seconds", v.unwrap_or("")),
                    )
                })
            })
            .transpose()
    }
    /// The `q` parameter (Contact) in thousandths: `q=0.5` is 500. `None` when absent
    /// or not a valid qvalue.
    pub fn q(&self) -> Option<u16> {
        let v = self.params.get("q").flatten()?;
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut milli: u16 = match int {
            "0" => 0,
            "1" => 1000,
            _ => return None,
        };
        let mut scale = 100;
        for d in frac.bytes() {
            milli += u16::from(d - b'0') * scale;
            scale /= 10;
        }
        (milli <= 1000).then_some(milli)
    }
}

impl fmt::Display for NameAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.display_name {
            write!(f, "{d} ")?;
        }
        if self.angle || self.display_name.is_some() {
            write!(f, "<{}>", self.uri_text)?;
        } else {
            f.write_str(self.uri_text)?;
        }
        if !self.params.is_empty() {
            write!(f, ";{}", self.params.as_str())?;
        }
        Ok(())
    }
}

/// A Contact value: `*` or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (remove every binding, RFC 3261 §10.2.2).
    Star,
    /// An address with its parameters.
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(s: &'a str) -> Result<Contact<'a>, ParseError> {
        if s.trim() == "*" {
            Ok(Contact::Star)
        } else {
            NameAddr::parse(s, "Contact").map(Contact::Addr)
        }
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number (at most 2³²-1).
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value.
    pub fn parse(s: &str) -> Result<CSeq, ParseError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let digits = c.take_while(|b| b.is_ascii_digit());
        let seq = parse_u32(digits).ok_or_else(|| {
            ParseError::header(
                "CSeq",
                format!(
                    "sequence number \"{}\" is not a 32-bit number",
                    clip(digits)
                ),
            )
        })?;
        if !c.skip_lws() {
            return Err(ParseError::header(
                "CSeq",
                format!("\"{}\" has no method", clip(s)),
            ));
        }
        let method = c
            .token()
            .ok_or_else(|| ParseError::header("CSeq", format!("\"{}\" has no method", clip(s))))?;
        expect_end(&mut c, "CSeq")?;
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// RAck (RFC 3262 §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RAck {
    /// The RSeq of the reliable provisional response acknowledged.
    pub rseq: u32,
    /// The CSeq number of the INVITE.
    pub cseq: u32,
    /// The CSeq method (INVITE).
    pub method: Method,
}

impl RAck {
    /// Parses a RAck value.
    pub fn parse(s: &str) -> Result<RAck, ParseError> {
        let mut it = s.split_ascii_whitespace();
        match (
            it.next().and_then(parse_u32),
            it.next().and_then(parse_u32),
            it.next(),
            it.next(),
        ) {
            (Some(rseq), Some(cseq), Some(m), None) if crate::scan::is_token_str(m) => Ok(RAck {
                rseq,
                cseq,
                method: Method::from_token(m),
            }),
            _ => Err(ParseError::header(
                "RAck",
                format!("\"{}\" is not \"RSEQ CSEQ METHOD\"", clip(s)),
            )),
        }
    }
}

/// A media type (Content-Type, RFC 3261 §20.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// Type, e.g. `application`.
    pub mtype: &'a str,
    /// Subtype, e.g. `sdp`.
    pub subtype: &'a str,
    /// Parameters (`boundary`, `charset`...).
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parses a media type.
    pub fn parse(s: &'a str) -> Result<MediaType<'a>, ParseError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let t = c.token();
        let slash = c.eat_sep(b'/');
        let st = c.token();
        let (Some(mtype), true, Some(subtype)) = (t, slash, st) else {
            return Err(ParseError::header(
                "Content-Type",
                format!("\"{}\" is not type/subtype", clip(s)),
            ));
        };
        let params = parse_params(&mut c, "Content-Type")?;
        expect_end(&mut c, "Content-Type")?;
        Ok(MediaType {
            mtype,
            subtype,
            params,
        })
    }
    /// Whether this is `type/subtype`, compared case-insensitively.
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

/// A token with parameters: Event and Subscription-State (RFC 6665).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event package or subscription state.
    pub value: &'a str,
    /// Parameters (`id`, `expires`, `reason`...).
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    /// Parses `token *(SEMI param)`.
    pub fn parse(s: &'a str, header: &'static str) -> Result<Event<'a>, ParseError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let value = c
            .token()
            .ok_or_else(|| ParseError::header(header, format!("\"{}\" has no token", clip(s))))?;
        let params = parse_params(&mut c, header)?;
        expect_end(&mut c, header)?;
        Ok(Event { value, params })
    }
}

/// Session-Expires (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires<'a> {
    /// The session interval in seconds.
    pub delta: u32,
    /// Parameters, notably `refresher=uac|uas`.
    pub params: Params<'a>,
}

impl<'a> SessionExpires<'a> {
    /// Parses a Session-Expires value.
    pub fn parse(s: &'a str) -> Result<SessionExpires<'a>, ParseError> {
        let mut c = Cursor::new(s);
        c.skip_lws();
        let digits = c.take_while(|b| b.is_ascii_digit());
        let delta = parse_u32(digits).ok_or_else(|| {
            ParseError::header(
                "Session-Expires",
                format!("\"{}\" is not delta-seconds", clip(s)),
            )
        })?;
        let params = parse_params(&mut c, "Session-Expires")?;
        expect_end(&mut c, "Session-Expires")?;
        Ok(SessionExpires { delta, params })
    }
    /// The `refresher` parameter.
    pub fn refresher(&self) -> Option<&'a str> {
        self.params.get("refresher").flatten()
    }
}

/// Checks Call-ID's grammar: `word ["@" word]`.
pub fn parse_call_id(s: &str) -> Result<&str, ParseError> {
    let ok = |w: &str| !w.is_empty() && w.bytes().all(crate::scan::is_word);
    let valid = match s.split_once('@') {
        Some((a, b)) => ok(a) && ok(b),
        None => ok(s),
    };
    if valid {
        Ok(s)
    } else {
        Err(ParseError::header(
            "Call-ID",
            format!("\"{}\" is not word[@word]", clip(s)),
        ))
    }
}

/// Reads Max-Forwards (0 to 255; RFC 4475 §3.1.2.4 calls larger values invalid).
pub fn parse_max_forwards(s: &str) -> Result<u8, ParseError> {
    crate::scan::parse_u64(s.trim())
        .and_then(|v| u8::try_from(v).ok())
        .ok_or_else(|| {
            ParseError::header("Max-Forwards", format!("\"{}\" is not 0 to 255", clip(s)))
        })
}

/// Reads delta-seconds (at most 2³²-1).
pub fn parse_delta(header: &'static str, s: &str) -> Result<u32, ParseError> {
    crate::message::delta(s)
        .ok_or_else(|| ParseError::header(header, format!("\"{}\" is not delta-seconds", clip(s))))
}

/// Checks Date: `wkday "," SP date1 SP time SP "GMT"` (RFC 3261 §20.17 allows only GMT).
pub fn check_date(s: &str) -> Result<(), ParseError> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let ok = parts.len() == 6
        && parts[0].len() == 4
        && parts[0].ends_with(',')
        && parts[1].len() == 2
        && parts[1].bytes().all(|c| c.is_ascii_digit())
        && parts[2].len() == 3
        && parts[3].len() == 4
        && parts[3].bytes().all(|c| c.is_ascii_digit())
        && parts[4].len() == 8
        && parts[5] == "GMT";
    if ok {
        Ok(())
    } else {
        Err(ParseError::header(
            "Date",
            format!("\"{}\" is not an RFC 1123 date in GMT", clip(s)),
        ))
    }
}
