//! Parameter lists (`;name=value;flag`) of URIs and header fields, kept as the raw text
//! they came in and split only when somebody asks, because most are never read.

use std::fmt;

/// A `;`-separated parameter list, borrowed from the message (without the leading `;`).
/// Names compare case-insensitively; values are returned as written (quoted values keep
/// their quotes; use [`crate::scan::unquote`] to read them).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Wraps already validated parameter text (no leading `;`).
    pub fn from_raw(raw: &'a str) -> Self {
        Params { raw }
    }
    /// The text as it came, without the leading `;`.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
    /// True when there is no parameter.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Every parameter as (name, value), in order.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.raw }
    }
    /// The value of the first parameter named `name`: `Some(None)` for a flag such as
    /// `lr`, `None` when absent.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// Whether a parameter named `name` is present, with or without a value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Iterator over a [`Params`] list.
#[derive(Clone)]
pub struct ParamIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);
    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            // Split at the next `;` outside a quoted string.
            let b = self.rest.as_bytes();
            let mut i = 0;
            let mut in_quote = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if in_quote => i += 1,
                    b'"' => in_quote = !in_quote,
                    b';' if !in_quote => break,
                    _ => {}
                }
                i += 1;
            }
            let i = i.min(b.len());
            let piece = self.rest.get(..i).unwrap_or("");
            self.rest = self.rest.get(i + 1..).unwrap_or("");
            let piece = piece.trim_matches(|c: char| c.is_ascii_whitespace());
            if piece.is_empty() {
                continue;
            }
            return Some(match piece.split_once('=') {
                Some((n, v)) => (
                    n.trim_end_matches(|c: char| c.is_ascii_whitespace()),
                    Some(v.trim_start_matches(|c: char| c.is_ascii_whitespace())),
                ),
                None => (piece, None),
            });
        }
        None
    }
}
