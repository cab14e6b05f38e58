//! `parser-bench`: how fast Switchboard's parser (`sip-core`) does a proxy's per-message
//! work, next to the best Rust SIP parsers on crates.io (`rsip`, `ezk-sip-types`).
//!
//! The work measured is what a proxy does with every message it forwards: parse it, then
//! read the top Via branch, the From and To tags, Call-ID, CSeq (number and method),
//! Max-Forwards, and every Route value (each one parsed). Each parser does that through its
//! own typed API, in [`ours`], [`rsip_parser`] and [`ezk_parser`]; each hands the values to
//! a callback as [`Fields`], so the benchmark and the tests read the same things.
//!
//! The messages are in `messages/` (CRLF line ends, as sent on the wire) and compiled in
//! by [`messages::ALL`]. [`alloc_count`] counts heap allocations for the "no allocation
//! per header" check. The `report` binary turns criterion's results into the README table.

pub mod alloc_count;
pub mod ezk_parser;
pub mod messages;
pub mod ours;
pub mod rsip_parser;

use std::fmt::Display;

/// The values a proxy reads from each message, borrowed from whatever the parser built.
/// `M` is the parser's own method type: turning it into a string would cost an
/// allocation in some parsers that the proxy itself would not pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a, M> {
    /// The branch parameter of the top Via.
    pub branch: Option<&'a str>,
    /// The From tag.
    pub from_tag: Option<&'a str>,
    /// The To tag (absent on an initial request).
    pub to_tag: Option<&'a str>,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub method: M,
    /// Max-Forwards, when present (responses have none).
    pub max_forwards: Option<u32>,
    /// How many Route values were found and parsed.
    pub routes: usize,
}

impl<M: Display> Fields<'_, M> {
    /// An owned copy with the method as text, so that results from different parsers
    /// can be compared (used by the tests and the allocation report, never when timing).
    pub fn to_owned_summary(&self) -> Summary {
        Summary {
            branch: self.branch.map(str::to_owned),
            from_tag: self.from_tag.map(str::to_owned),
            to_tag: self.to_tag.map(str::to_owned),
            call_id: self.call_id.to_owned(),
            cseq: self.cseq,
            method: self.method.to_string(),
            max_forwards: self.max_forwards,
            routes: self.routes,
        }
    }
}

/// [`Fields`] owned and parser-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// See [`Fields::branch`].
    pub branch: Option<String>,
    /// See [`Fields::from_tag`].
    pub from_tag: Option<String>,
    /// See [`Fields::to_tag`].
    pub to_tag: Option<String>,
    /// See [`Fields::call_id`].
    pub call_id: String,
    /// See [`Fields::cseq`].
    pub cseq: u32,
    /// See [`Fields::method`].
    pub method: String,
    /// See [`Fields::max_forwards`].
    pub max_forwards: Option<u32>,
    /// See [`Fields::routes`].
    pub routes: usize,
}

/// Why a parser could not do the work. Built only on failure, so it costs nothing when
/// the parse succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// Turns any displayable error into a [`Failure`] prefixed with what was being read.
pub(crate) fn fail(what: &str, e: impl Display) -> Failure {
    Failure(format!("{what}: {e}"))
}

/// The parsers compared, in the order the tables list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parser {
    /// `sip-core`, this workspace.
    Switchboard,
    /// `rsip`.
    Rsip,
    /// `ezk-sip-types`.
    Ezk,
}

impl Parser {
    /// Every parser, ours first.
    pub const ALL: [Parser; 3] = [Parser::Switchboard, Parser::Rsip, Parser::Ezk];

    /// The name used for benchmark ids and in the README.
    pub fn name(self) -> &'static str {
        match self {
            Parser::Switchboard => "switchboard",
            Parser::Rsip => "rsip",
            Parser::Ezk => "ezk-sip-types",
        }
    }

    /// Does the proxy work on `buf` and returns the values read, owned. For tests and
    /// reports; the benchmark calls the per-parser functions directly.
    pub fn summarize(self, buf: &bytes::Bytes) -> Result<Summary, Failure> {
        match self {
            Parser::Switchboard => ours::proxy_read(buf, |f| f.to_owned_summary()),
            Parser::Rsip => rsip_parser::proxy_read(buf, |f| f.to_owned_summary()),
            Parser::Ezk => ezk_parser::proxy_read(buf, |f| f.to_owned_summary()),
        }
    }

    /// Does the proxy work on `buf` and drops the result: what is timed and what the
    /// allocation count measures.
    pub fn run(self, buf: &bytes::Bytes) -> Result<(), Failure> {
        match self {
            Parser::Switchboard => ours::proxy_read(buf, |f| {
                std::hint::black_box(&f);
            }),
            Parser::Rsip => rsip_parser::proxy_read(buf, |f| {
                std::hint::black_box(&f);
            }),
            Parser::Ezk => ezk_parser::proxy_read(buf, |f| {
                std::hint::black_box(&f);
            }),
        }
    }
}
