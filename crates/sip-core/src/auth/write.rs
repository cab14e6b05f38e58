//! Writing challenge and credentials header values back (`Display`), quoting as RFC 3261
//! §25.1 requires.

use super::*;
use std::fmt::{self, Write as _};

/// Writes `name=value` pairs separated by ", " after the scheme.
pub(super) struct ParamWriter<'f, 'g> {
    f: &'f mut fmt::Formatter<'g>,
    first: bool,
}

impl<'f, 'g> ParamWriter<'f, 'g> {
    pub(super) fn new(f: &'f mut fmt::Formatter<'g>) -> Self {
        ParamWriter { f, first: true }
    }

    pub(super) fn name(&mut self, name: &str) -> fmt::Result {
        self.f.write_str(if self.first { " " } else { ", " })?;
        self.first = false;
        self.f.write_str(name)?;
        self.f.write_char('=')
    }

    pub(super) fn quoted(&mut self, name: &str, value: &str) -> fmt::Result {
        self.name(name)?;
        write_quoted(self.f, value)
    }

    /// A token-valued parameter; quoted anyway if the value is not a token, so the output
    /// always parses back.
    pub(super) fn token(&mut self, name: &str, value: &str) -> fmt::Result {
        self.name(name)?;
        if is_token(value) {
            self.f.write_str(value)
        } else {
            write_quoted(self.f, value)
        }
    }

    pub(super) fn param(&mut self, p: &AuthParam<'_>) -> fmt::Result {
        if p.quoted {
            self.quoted(&p.name, &p.value)
        } else {
            self.token(&p.name, &p.value)
        }
    }
}

/// Writes a quoted-string: '"' and '\' and control characters escaped; CR and LF, which no
/// quoted-pair can carry (RFC 3261 §25.1), become spaces.
pub(super) fn write_quoted(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    f.write_char('"')?;
    let mut seg = 0;
    for (i, c) in v.char_indices() {
        let special = matches!(c, '"' | '\\' | '\r' | '\n') || (c.is_ascii_control() && c != '\t');
        if !special {
            continue;
        }
        f.write_str(&v[seg..i])?;
        if c == '\r' || c == '\n' {
            f.write_char(' ')?;
        } else {
            f.write_char('\\')?;
            f.write_char(c)?;
        }
        seg = i + c.len_utf8();
    }
    f.write_str(&v[seg..])?;
    f.write_char('"')
}

impl fmt::Display for OtherAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        if let Some(t) = &self.token68 {
            f.write_char(' ')?;
            return f.write_str(t);
        }
        let mut w = ParamWriter::new(f);
        for p in &self.params {
            w.param(p)?;
        }
        Ok(())
    }
}

impl fmt::Display for DigestChallenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest")?;
        let mut w = ParamWriter::new(f);
        w.quoted("realm", &self.realm)?;
        if let Some(d) = &self.domain {
            w.quoted("domain", d)?;
        }
        w.quoted("nonce", &self.nonce)?;
        if let Some(o) = &self.opaque {
            w.quoted("opaque", o)?;
        }
        if self.stale {
            w.token("stale", "true")?;
        }
        if let Some(a) = &self.algorithm {
            w.token("algorithm", a.as_str())?;
        }
        if !self.qop.is_empty() {
            let list: Vec<&str> = self.qop.iter().map(Qop::as_str).collect();
            w.quoted("qop", &list.join(","))?;
        }
        if let Some(c) = &self.charset {
            w.token("charset", c)?;
        }
        if self.userhash {
            w.token("userhash", "true")?;
        }
        for p in &self.other {
            w.param(p)?;
        }
        Ok(())
    }
}

impl fmt::Display for DigestCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest")?;
        let mut w = ParamWriter::new(f);
        w.quoted("username", &self.username)?;
        w.quoted("realm", &self.realm)?;
        w.quoted("nonce", &self.nonce)?;
        w.quoted("uri", &self.uri)?;
        w.quoted("response", &self.response)?;
        if let Some(a) = &self.algorithm {
            w.token("algorithm", a.as_str())?;
        }
        if let Some(c) = &self.cnonce {
            w.quoted("cnonce", c)?;
        }
        if let Some(o) = &self.opaque {
            w.quoted("opaque", o)?;
        }
        if let Some(q) = &self.qop {
            w.token("qop", q.as_str())?;
        }
        if let Some(nc) = self.nc {
            w.name("nc")?;
            write!(w.f, "{nc:08x}")?;
        }
        if self.userhash {
            w.token("userhash", "true")?;
        }
        for p in &self.other {
            w.param(p)?;
        }
        Ok(())
    }
}

impl fmt::Display for Challenge<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Challenge::Digest(d) => d.fmt(f),
            Challenge::Other(o) => o.fmt(f),
        }
    }
}

impl fmt::Display for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Digest(d) => d.fmt(f),
            Credentials::Other(o) => o.fmt(f),
        }
    }
}
