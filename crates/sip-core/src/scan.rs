//! Byte-level grammar of RFC 3261 §25: character classes, linear white space and
//! quoted strings. Every typed parser in the crate is built from these few pieces, so
//! the grammar's corner cases (folding, escapes) are handled in exactly one place.

/// `token` characters (RFC 3261 §25.1): alphanum and `-.!%*_+`'~`.
const TOKEN: u8 = 1;
/// `word` characters (Call-ID): token plus `()<>:\"/[]?{}`.
const WORD: u8 = 2;
/// Characters allowed unescaped in a URI user part: unreserved plus user-unreserved.
const USER: u8 = 4;
/// Characters allowed unescaped in a URI parameter: unreserved plus param-unreserved.
const PARAM: u8 = 8;
/// Characters allowed unescaped in a URI header name or value.
const HNV: u8 = 16;
/// Characters allowed unescaped in a URI password.
const PASSWORD: u8 = 32;

const fn build_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alnum = c.is_ascii_alphanumeric();
        let mark = matches!(
            c,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        );
        let unreserved = alnum || mark;
        let mut v = 0;
        if alnum
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            v |= TOKEN;
        }
        if v & TOKEN != 0
            || matches!(
                c,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'{'
                    | b'}'
            )
        {
            v |= WORD;
        }
        if unreserved || matches!(c, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            v |= USER;
        }
        if unreserved || matches!(c, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            v |= PARAM;
        }
        if unreserved || matches!(c, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            v |= HNV;
        }
        if unreserved || matches!(c, b'&' | b'=' | b'+' | b'$' | b',') {
            v |= PASSWORD;
        }
        t[i] = v;
        i += 1;
    }
    t
}

static CLASSES: [u8; 256] = build_classes();

#[inline]
pub(crate) fn is_token(c: u8) -> bool {
    CLASSES[c as usize] & TOKEN != 0
}
#[inline]
pub(crate) fn is_word(c: u8) -> bool {
    CLASSES[c as usize] & WORD != 0
}
#[inline]
pub(crate) fn is_user(c: u8) -> bool {
    CLASSES[c as usize] & USER != 0
}
#[inline]
pub(crate) fn is_param(c: u8) -> bool {
    CLASSES[c as usize] & PARAM != 0
}
#[inline]
pub(crate) fn is_hnv(c: u8) -> bool {
    CLASSES[c as usize] & HNV != 0
}
#[inline]
pub(crate) fn is_password(c: u8) -> bool {
    CLASSES[c as usize] & PASSWORD != 0
}

/// True when `s` is a non-empty run of token characters.
pub(crate) fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// Linear white space inside a header value: SP, HTAB and the CRLF of a folded line.
/// The header index only lets CR/LF into a value when a folding SP/HTAB follows them.
#[inline]
pub(crate) fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// A cursor over one header value. Methods return `None` rather than panicking at the
/// end of input, so parsers built on it cannot index out of bounds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor<'a> {
    pub(crate) s: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Cursor { s, pos: 0 }
    }
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }
    #[inline]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }
    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }
    /// Skips LWS; returns whether any was skipped.
    pub(crate) fn skip_lws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
        self.pos > start
    }
    /// Consumes `c` (with LWS allowed on both sides, as SEMI/COMMA/EQUAL/SLASH/COLON are
    /// defined in RFC 3261 §25.1) and returns whether it was there.
    pub(crate) fn eat_sep(&mut self, c: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.peek() == Some(c) {
            self.pos += 1;
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    /// Takes a run of bytes matching `f` (possibly empty).
    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        // Every predicate used stops only on ASCII bytes, so the cut is on a char boundary;
        // `get` keeps that an assumption that cannot panic.
        self.s.get(start..self.pos).unwrap_or("")
    }
    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token);
        (!t.is_empty()).then_some(t)
    }
    /// Takes a quoted-string including its quotes; `None` when there is no opening quote
    /// here, `Err` (with the position of the opening quote) when it is not terminated.
    pub(crate) fn quoted(&mut self) -> Result<Option<&'a str>, usize> {
        if self.peek() != Some(b'"') {
            return Ok(None);
        }
        let start = self.pos;
        let b = self.s.as_bytes();
        let mut i = start + 1;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(self.s.get(start..self.pos));
                }
                // quoted-pair: `\` then any byte but CR/LF (RFC 3261 §25.1).
                b'\\' => match b.get(i + 1) {
                    Some(b'\r' | b'\n') | None => return Err(start),
                    Some(_) => i += 2,
                },
                _ => i += 1,
            }
        }
        Err(start)
    }
}

/// Removes the quotes and quoted-pair escapes of a quoted-string. Borrows when there is
/// nothing to unescape, which is nearly always.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let inner = s
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s);
    if !inner.contains('\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Quotes `s` as a quoted-string, escaping `"` and `\`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decodes `%HH` escapes. Borrows when there are none. A `%` not followed by two hex
/// digits is kept as it is (URIs are validated before they get here).
pub fn percent_decode(s: &str) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains('%') {
        return std::borrow::Cow::Borrowed(s.as_bytes());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| hex_val(*c)),
                b.get(i + 2).and_then(|c| hex_val(*c)),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Parses a run of ASCII digits into a u64, refusing empty input and overflow.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Parses digits into a u32 (the range of CSeq, Expires and other delta-seconds).
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// Replaces each folded line break (CRLF or LF followed by white space) with one space,
/// so that a received value can be written into a new message on one line.
pub fn unfold(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\r', '\n']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while chars
                .peek()
                .is_some_and(|n| matches!(n, '\r' | '\n' | ' ' | '\t'))
            {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// At most the first 80 bytes of `s`, cut on a character boundary: enough of a bad value
/// to recognise it in an error message without echoing a whole hostile input.
pub(crate) fn clip(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
