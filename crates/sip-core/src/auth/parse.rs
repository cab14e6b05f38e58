//! Parsing challenge and credentials header values (RFC 3261 §25.1, RFC 7235, RFC 7616).

use super::*;
use std::borrow::Cow;

/// RFC 3261 `token` characters.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// RFC 7235 `token68` characters (without the trailing '=' padding).
pub(super) fn is_token68_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

/// Whitespace outside quoted strings; CR and LF are accepted anywhere there so that folded
/// values (RFC 3261 §7.3.1) parse whether or not the caller unfolded them.
pub(super) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// A cursor over the value. Positions only ever stop at ASCII bytes or at the end, so slicing
/// at them is always on a char boundary.
pub(super) struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(s: &'a str) -> Self {
        Lexer { s, pos: 0 }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Skips whitespace; says whether there was any.
    pub(super) fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos > start
    }

    pub(super) fn skip_lws_and_commas(&mut self) {
        while self.peek().is_some_and(|b| is_lws(b) || b == b',') {
            self.pos += 1;
        }
    }

    pub(super) fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_token_byte) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// A quoted string starting at the current '"': unescaped, and borrowed when it holds no
    /// escape and no folding.
    pub(super) fn quoted(&mut self) -> Result<Cow<'a, str>, AuthError> {
        let s = self.s;
        let bytes = s.as_bytes();
        let open = self.pos;
        self.pos += 1;
        let start = self.pos;
        // Text before `seg` is already in `owned`, once an escape or a fold forced a copy.
        let mut owned: Option<String> = None;
        let mut seg = start;
        loop {
            let Some(&b) = bytes.get(self.pos) else {
                return Err(AuthError::UnterminatedQuote { at: open });
            };
            match b {
                b'"' => {
                    let value = match owned {
                        Some(mut o) => {
                            o.push_str(&s[seg..self.pos]);
                            Cow::Owned(o)
                        }
                        None => Cow::Borrowed(&s[start..self.pos]),
                    };
                    self.pos += 1;
                    return Ok(value);
                }
                b'\\' => {
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(&s[seg..self.pos]);
                    let Some(c) = s[self.pos + 1..].chars().next() else {
                        return Err(AuthError::UnterminatedQuote { at: open });
                    };
                    if c == '\r' || c == '\n' {
                        return Err(AuthError::BadQuotedChar {
                            ch: c,
                            at: self.pos + 1,
                        });
                    }
                    o.push(c);
                    self.pos += 1 + c.len_utf8();
                    seg = self.pos;
                }
                b'\r' | b'\n' => {
                    // Folding: CRLF (or a bare LF) followed by white space stands for one SP.
                    let mut p = self.pos;
                    if b == b'\r' {
                        p += 1;
                        if bytes.get(p) != Some(&b'\n') {
                            return Err(AuthError::BadQuotedChar {
                                ch: '\r',
                                at: self.pos,
                            });
                        }
                    }
                    p += 1;
                    if !matches!(bytes.get(p), Some(b' ' | b'\t')) {
                        return Err(AuthError::BadQuotedChar {
                            ch: char::from(b),
                            at: self.pos,
                        });
                    }
                    while matches!(bytes.get(p), Some(b' ' | b'\t')) {
                        p += 1;
                    }
                    let o = owned.get_or_insert_with(String::new);
                    o.push_str(&s[seg..self.pos]);
                    o.push(' ');
                    self.pos = p;
                    seg = p;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// `name LWS? = LWS? (token / quoted-string)`.
    pub(super) fn param(&mut self) -> Result<AuthParam<'a>, AuthError> {
        let name_at = self.pos;
        let name = self.token();
        if name.is_empty() {
            return Err(AuthError::Expected {
                expected: "a parameter name",
                at: name_at,
            });
        }
        self.skip_lws();
        if self.peek() != Some(b'=') {
            return Err(AuthError::Expected {
                expected: "'='",
                at: self.pos,
            });
        }
        self.pos += 1;
        self.skip_lws();
        let (value, quoted) = if self.peek() == Some(b'"') {
            (self.quoted()?, true)
        } else {
            let at = self.pos;
            let v = self.token();
            if v.is_empty() {
                return Err(AuthError::Expected {
                    expected: "a token or quoted string",
                    at,
                });
            }
            (Cow::Borrowed(v), false)
        };
        Ok(AuthParam {
            name: Cow::Borrowed(name),
            value,
            quoted,
        })
    }

    /// After a comma in a list of challenges: does a new challenge start here? It does when a
    /// token is followed by white space and then by neither '=' nor ',' (or by the end), so
    /// the `auth-int` of `qop=auth, auth-int` is not mistaken for one (it is followed by the
    /// end or a comma without an '=').
    pub(super) fn scheme_starts_here(&self) -> bool {
        let bytes = self.s.as_bytes();
        let mut p = self.pos;
        while bytes.get(p).copied().is_some_and(is_token_byte) {
            p += 1;
        }
        if p == self.pos {
            return false;
        }
        let after_token = p;
        while bytes.get(p).copied().is_some_and(is_lws) {
            p += 1;
        }
        match bytes.get(p) {
            None => true,
            Some(b'=' | b',') => false,
            Some(_) => p > after_token,
        }
    }

    /// A token68 (RFC 7235) filling the rest of the value or of the list item, for schemes
    /// like Basic whose credentials are not auth-params.
    pub(super) fn try_token68(&mut self, list: bool) -> Option<&'a str> {
        let bytes = self.s.as_bytes();
        let start = self.pos;
        let mut p = start;
        while bytes.get(p).copied().is_some_and(is_token68_byte) {
            p += 1;
        }
        if p == start {
            return None;
        }
        while bytes.get(p) == Some(&b'=') {
            p += 1;
        }
        let end = p;
        while bytes.get(p).copied().is_some_and(is_lws) {
            p += 1;
        }
        match bytes.get(p) {
            None => {}
            Some(b',') if list => {}
            Some(_) => return None,
        }
        self.pos = end;
        Some(&self.s[start..end])
    }
}

pub(super) enum Body<'a> {
    Params(Vec<AuthParam<'a>>),
    Token68(&'a str),
}

/// `auth-scheme LWS auth-param *(COMMA auth-param)`. In `list` mode, stops before a comma
/// that starts the next challenge.
pub(super) fn parse_item<'a>(
    lx: &mut Lexer<'a>,
    list: bool,
) -> Result<(&'a str, Body<'a>), AuthError> {
    lx.skip_lws();
    let at = lx.pos;
    let scheme = lx.token();
    if scheme.is_empty() {
        return Err(AuthError::MissingScheme { at });
    }
    let had_space = lx.skip_lws();
    if lx.at_end() || (list && lx.peek() == Some(b',')) {
        return Ok((scheme, Body::Params(Vec::new())));
    }
    if !had_space {
        return Err(AuthError::Expected {
            expected: "white space after the auth scheme",
            at: lx.pos,
        });
    }
    // Digest is always auth-params; other schemes may use the token68 form.
    let token68 = if scheme.eq_ignore_ascii_case("digest") {
        None
    } else {
        lx.try_token68(list)
    };
    if let Some(t) = token68 {
        return Ok((scheme, Body::Token68(t)));
    }
    // Digest credentials carry nine or ten parameters: room for them at once.
    let mut params = Vec::with_capacity(12);
    loop {
        params.push(lx.param()?);
        lx.skip_lws();
        match lx.peek() {
            None => break,
            Some(b',') => {
                let comma = lx.pos;
                // Empty list elements are allowed (RFC 7230 §7), so are trailing commas.
                lx.skip_lws_and_commas();
                if lx.at_end() {
                    break;
                }
                if list && lx.scheme_starts_here() {
                    lx.pos = comma;
                    break;
                }
            }
            Some(_) => {
                return Err(AuthError::Expected {
                    expected: "',' between parameters",
                    at: lx.pos,
                });
            }
        }
    }
    Ok((scheme, Body::Params(params)))
}

pub(super) fn other_auth<'a>(scheme: &'a str, body: Body<'a>) -> OtherAuth<'a> {
    match body {
        Body::Params(params) => OtherAuth {
            scheme: Cow::Borrowed(scheme),
            token68: None,
            params,
        },
        Body::Token68(t) => OtherAuth {
            scheme: Cow::Borrowed(scheme),
            token68: Some(Cow::Borrowed(t)),
            params: Vec::new(),
        },
    }
}

pub(super) fn build_challenge<'a>(
    scheme: &'a str,
    body: Body<'a>,
) -> Result<Challenge<'a>, AuthError> {
    match body {
        Body::Params(params) if scheme.eq_ignore_ascii_case("digest") => {
            digest_challenge(params).map(Challenge::Digest)
        }
        body => Ok(Challenge::Other(other_auth(scheme, body))),
    }
}

/// Lowercases a parameter name, copying only when it has uppercase letters.
pub(super) fn lower(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

pub(super) fn put<T>(
    slot: &mut Option<T>,
    value: T,
    param: &'static str,
    what: &'static str,
) -> Result<(), AuthError> {
    if slot.is_some() {
        return Err(AuthError::Duplicate { param, what });
    }
    *slot = Some(value);
    Ok(())
}

/// RFC 7616: anything but a case-insensitive "true" is false.
pub(super) fn is_true(v: &str) -> bool {
    v.eq_ignore_ascii_case("true")
}

/// Splits `qop="auth, auth-int"` into its values.
pub(super) fn parse_qop_list(v: Cow<'_, str>) -> Vec<Qop<'_>> {
    pub(super) fn split(s: &str) -> impl Iterator<Item = &str> {
        s.split(',')
            .map(|x| x.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8)))
            .filter(|x| !x.is_empty())
    }
    match v {
        Cow::Borrowed(s) => split(s).map(|x| Qop::parse(Cow::Borrowed(x))).collect(),
        Cow::Owned(s) => split(&s)
            .map(|x| Qop::parse(Cow::Owned(x.to_owned())))
            .collect(),
    }
}

pub(super) fn parse_nc(v: &str) -> Result<u32, AuthError> {
    let bad = || AuthError::BadNc {
        value: v.to_owned(),
    };
    if v.len() != 8 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u32::from_str_radix(v, 16).map_err(|_| bad())
}

pub(super) fn digest_challenge(
    params: Vec<AuthParam<'_>>,
) -> Result<DigestChallenge<'_>, AuthError> {
    const WHAT: &str = "challenge";
    let (mut realm, mut domain, mut nonce, mut opaque, mut charset) =
        (None, None, None, None, None);
    let (mut stale, mut userhash, mut algorithm, mut qop) = (None, None, None, None);
    let mut other = Vec::new();
    for p in params {
        match &*lower(&p.name) {
            "realm" => put(&mut realm, p.value, "realm", WHAT)?,
            "domain" => put(&mut domain, p.value, "domain", WHAT)?,
            "nonce" => put(&mut nonce, p.value, "nonce", WHAT)?,
            "opaque" => put(&mut opaque, p.value, "opaque", WHAT)?,
            "charset" => put(&mut charset, p.value, "charset", WHAT)?,
            "stale" => put(&mut stale, is_true(&p.value), "stale", WHAT)?,
            "userhash" => put(&mut userhash, is_true(&p.value), "userhash", WHAT)?,
            "algorithm" => put(
                &mut algorithm,
                AlgorithmParam::parse(p.value),
                "algorithm",
                WHAT,
            )?,
            "qop" => put(&mut qop, parse_qop_list(p.value), "qop", WHAT)?,
            _ => other.push(p),
        }
    }
    Ok(DigestChallenge {
        realm: realm.ok_or(AuthError::Missing {
            param: "realm",
            what: WHAT,
        })?,
        domain,
        nonce: nonce.ok_or(AuthError::Missing {
            param: "nonce",
            what: WHAT,
        })?,
        opaque,
        stale: stale.unwrap_or(false),
        algorithm,
        qop: qop.unwrap_or_default(),
        charset,
        userhash: userhash.unwrap_or(false),
        other,
    })
}

pub(super) fn digest_credentials(
    params: Vec<AuthParam<'_>>,
) -> Result<DigestCredentials<'_>, AuthError> {
    const WHAT: &str = "credentials";
    let (mut username, mut realm, mut nonce, mut uri, mut response) =
        (None, None, None, None, None);
    let (mut cnonce, mut opaque, mut algorithm, mut qop, mut nc, mut userhash) =
        (None, None, None, None, None, None);
    let mut other = Vec::new();
    for p in params {
        match &*lower(&p.name) {
            "username" => put(&mut username, p.value, "username", WHAT)?,
            "realm" => put(&mut realm, p.value, "realm", WHAT)?,
            "nonce" => put(&mut nonce, p.value, "nonce", WHAT)?,
            "uri" => put(&mut uri, p.value, "uri", WHAT)?,
            "response" => put(&mut response, p.value, "response", WHAT)?,
            "cnonce" => put(&mut cnonce, p.value, "cnonce", WHAT)?,
            "opaque" => put(&mut opaque, p.value, "opaque", WHAT)?,
            "algorithm" => put(
                &mut algorithm,
                AlgorithmParam::parse(p.value),
                "algorithm",
                WHAT,
            )?,
            "qop" => put(&mut qop, Qop::parse(p.value), "qop", WHAT)?,
            "nc" => put(&mut nc, parse_nc(&p.value)?, "nc", WHAT)?,
            "userhash" => put(&mut userhash, is_true(&p.value), "userhash", WHAT)?,
            _ => other.push(p),
        }
    }
    let missing = |param| AuthError::Missing { param, what: WHAT };
    Ok(DigestCredentials {
        username: username.ok_or(missing("username"))?,
        realm: realm.ok_or(missing("realm"))?,
        nonce: nonce.ok_or(missing("nonce"))?,
        uri: uri.ok_or(missing("uri"))?,
        response: response.ok_or(missing("response"))?,
        algorithm,
        cnonce,
        opaque,
        qop,
        nc,
        userhash: userhash.unwrap_or(false),
        other,
    })
}
