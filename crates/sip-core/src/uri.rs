//! URIs as SIP uses them (RFC 3261 §19.1, RFC 3966, RFC 5118): `sip:` and `sips:` with
//! every part, `tel:`, and any other absolute URI kept as it is, because a proxy must be
//! able to route what it does not understand.
//!
//! Parsing borrows from the input; escapes are validated but left in place, and decoded
//! only on request ([`SipUri::user_decoded`]), so writing a parsed URI reproduces it
//! byte for byte.

use crate::params::Params;
use crate::scan::{clip, hex_val, is_hnv, is_param, is_password, is_user, percent_decode};
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a URI was refused, with the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(pub String);

fn err<T>(args: fmt::Arguments<'_>) -> Result<T, UriError> {
    Err(UriError(args.to_string()))
}

/// Any URI a SIP message may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:` (RFC 3966).
    Tel(TelUri<'a>),
    /// Any other absolute URI (`http:`, `urn:`, `isbn:`...), kept verbatim.
    Other {
        /// The scheme, as written.
        scheme: &'a str,
        /// The whole URI.
        raw: &'a str,
    },
}

/// The host part of a SIP URI or a Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written.
    Name(&'a str),
    /// A dotted-quad IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference: the text between the brackets, as written. RFC 5118 §4.10
    /// asks us to tolerate forms `Ipv6Addr` refuses, so the text is kept.
    V6(&'a str),
}

impl Host<'_> {
    /// The address, when the host is an IP literal that the standard library can read.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(s) => s.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(s) => write!(f, "[{s}]"),
        }
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, escapes left in place.
    pub user: Option<&'a str>,
    /// The password, escapes left in place.
    pub password: Option<&'a str>,
    /// The host.
    pub host: Host<'a>,
    /// The port, when given.
    pub port: Option<u16>,
    /// The uri-parameters (`transport`, `lr`, `maddr`...).
    pub params: Params<'a>,
    /// The headers after `?`, raw, when given.
    pub headers: Option<&'a str>,
}

/// A `tel:` URI (RFC 3966).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelUri<'a> {
    /// The number with its visual separators, as written.
    pub number: &'a str,
    /// Parameters after the number.
    pub params: Params<'a>,
}

impl<'a> Uri<'a> {
    /// Parses a URI. The input must be exactly the URI: no angle brackets, no spaces.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        let Some(colon) = s.find(':') else {
            return err(format_args!("URI \"{}\" has no scheme", clip(s)));
        };
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        if !valid_scheme(scheme) {
            return err(format_args!("URI \"{}\" has an invalid scheme", clip(s)));
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            parse_sip(scheme.len() == 4, rest, s).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(rest, s).map(Uri::Tel)
        } else {
            if rest.is_empty() || rest.bytes().any(|c| c <= b' ' || c == 0x7f) {
                return err(format_args!(
                    "URI \"{}\" contains spaces or controls",
                    clip(s)
                ));
            }
            Ok(Uri::Other { scheme, raw: s })
        }
    }

    /// The SIP URI inside, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme in lower case form when it is one we know, else as written.
    pub fn scheme(&self) -> &'a str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }
}

impl<'a> SipUri<'a> {
    /// The user part with `%HH` escapes decoded (RFC 3261 §19.1.4 compares users that
    /// way). It may hold any byte, NUL included (RFC 4475 §3.1.1.4).
    pub fn user_decoded(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(percent_decode)
    }
    /// The `transport` uri-parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }
    /// Whether the URI carries `lr` (a loose router, RFC 3261 §16.12).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }
    /// The `maddr` uri-parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }
}

fn valid_scheme(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Checks that `s` has only characters allowed by `allowed` or valid `%HH` escapes.
fn check_chars(s: &str, allowed: fn(u8) -> bool) -> Result<(), usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (
                b.get(i + 1).and_then(|c| hex_val(*c)),
                b.get(i + 2).and_then(|c| hex_val(*c)),
            ) {
                (Some(_), Some(_)) => i += 3,
                _ => return Err(i),
            }
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return Err(i);
        }
    }
    Ok(())
}

fn parse_sip<'a>(secure: bool, rest: &'a str, whole: &'a str) -> Result<SipUri<'a>, UriError> {
    // `@` is in none of the character sets after the userinfo, so the first one ends it.
    let (user, password, hostpart) = match rest.find('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let (user, password) = match userinfo.find(':') {
                Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return err(format_args!(
                    "URI \"{}\" has an empty user part",
                    clip(whole)
                ));
            }
            if let Err(i) = check_chars(user, is_user) {
                return err(format_args!(
                    "URI \"{}\" has a bad character in its user part at offset {i}",
                    clip(whole)
                ));
            }
            if let Some(p) = password
                && check_chars(p, is_password).is_err()
            {
                return err(format_args!("URI \"{}\" has a bad password", clip(whole)));
            }
            (Some(user), password, &rest[at + 1..])
        }
        None => (None, None, rest),
    };
    let (host, after_host) = parse_host(hostpart, whole)?;
    let mut after = after_host;
    let mut port = None;
    if let Some(p) = after.strip_prefix(':') {
        let end = p.find([';', '?']).unwrap_or(p.len());
        let digits = &p[..end];
        match crate::scan::parse_u64(digits).and_then(|v| u16::try_from(v).ok()) {
            Some(v) => port = Some(v),
            None => {
                return err(format_args!(
                    "URI \"{}\" has a bad port \"{}\"",
                    clip(whole),
                    clip(digits)
                ));
            }
        }
        after = &p[end..];
    }
    let mut params = Params::default();
    if let Some(p) = after.strip_prefix(';') {
        let end = p.find('?').unwrap_or(p.len());
        let raw = &p[..end];
        for piece in raw.split(';') {
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (piece, None),
            };
            if name.is_empty() || check_chars(name, is_param).is_err() {
                return err(format_args!(
                    "URI \"{}\" has a bad parameter \"{}\"",
                    clip(whole),
                    clip(piece)
                ));
            }
            if let Some(v) = value
                && check_chars(v, is_param).is_err()
            {
                return err(format_args!(
                    "URI \"{}\" has a bad parameter value \"{}\"",
                    clip(whole),
                    clip(v)
                ));
            }
        }
        params = Params::from_raw(raw);
        after = &p[end..];
    }
    let mut headers = None;
    if let Some(h) = after.strip_prefix('?') {
        for piece in h.split('&') {
            let ok = piece.split_once('=').is_some_and(|(n, v)| {
                !n.is_empty() && check_chars(n, is_hnv).is_ok() && check_chars(v, is_hnv).is_ok()
            });
            if !ok {
                return err(format_args!(
                    "URI \"{}\" has a bad header \"{}\"",
                    clip(whole),
                    clip(piece)
                ));
            }
        }
        headers = Some(h);
        after = "";
    }
    if !after.is_empty() {
        return err(format_args!(
            "URI \"{}\" has unexpected text \"{}\" after the host",
            clip(whole),
            clip(after)
        ));
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// Reads a host at the start of `s`; returns it and the text after it.
pub(crate) fn parse_host<'a>(s: &'a str, whole: &str) -> Result<(Host<'a>, &'a str), UriError> {
    if let Some(v6) = s.strip_prefix('[') {
        let Some(close) = v6.find(']') else {
            return err(format_args!(
                "\"{}\": unterminated IPv6 reference",
                clip(whole)
            ));
        };
        let inner = &v6[..close];
        if !valid_ipv6_text(inner) {
            return err(format_args!(
                "\"{}\": bad IPv6 reference \"[{}]\"",
                clip(whole),
                clip(inner)
            ));
        }
        return Ok((Host::V6(inner), &v6[close + 1..]));
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let name = &s[..end];
    if name.is_empty() || name.starts_with(['-', '.']) {
        return err(format_args!("\"{}\" has no valid host", clip(whole)));
    }
    let host = match name.parse::<Ipv4Addr>() {
        Ok(a) => Host::V4(a),
        Err(_) => Host::Name(name),
    };
    Ok((host, &s[end..]))
}

/// The loose check RFC 5118 §4.10 asks for: hex groups, colons and an optional dotted
/// IPv4 tail, with at least two colons; a stray third colon is tolerated.
fn valid_ipv6_text(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().filter(|c| *c == b':').count() >= 2
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
}

fn parse_tel<'a>(rest: &'a str, whole: &'a str) -> Result<TelUri<'a>, UriError> {
    let (number, params) = match rest.split_once(';') {
        Some((n, p)) => (n, p),
        None => (rest, ""),
    };
    let ok_char = |c: u8| {
        c.is_ascii_hexdigit() || matches!(c, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#')
    };
    if number.is_empty() || !number.bytes().all(ok_char) {
        return err(format_args!("tel URI \"{}\" has a bad number", clip(whole)));
    }
    for piece in params.split(';').filter(|p| !p.is_empty()) {
        let name = piece.split_once('=').map_or(piece, |(n, _)| n);
        if name.is_empty() || check_chars(piece, |c| is_param(c) || c == b'=').is_err() {
            return err(format_args!(
                "tel URI \"{}\" has a bad parameter",
                clip(whole)
            ));
        }
    }
    Ok(TelUri {
        number,
        params: Params::from_raw(params),
    })
}

impl fmt::Display for SipUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = self.user {
            f.write_str(u)?;
            if let Some(p) = self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if !self.params.is_empty() {
            write!(f, ";{}", self.params.as_str())?;
        }
        if let Some(h) = self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => {
                write!(f, "tel:{}", t.number)?;
                if !t.params.is_empty() {
                    write!(f, ";{}", t.params.as_str())?;
                }
                Ok(())
            }
            Uri::Other { raw, .. } => f.write_str(raw),
        }
    }
}
