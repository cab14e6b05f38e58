//! Errors of the message layer. Each one names the fault and where it is, because the
//! text goes into a 400's reason phrase and an admin's terminal.

use std::fmt;

/// What is wrong with a message, and which response (if any) it earns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes do not form a SIP message at all (no start line, binary junk).
    #[error("{0}")]
    Malformed(String),
    /// A header's value does not follow its grammar.
    #[error("bad {header} header: {reason}")]
    BadHeader {
        /// The header's canonical name.
        header: &'static str,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// A header that may appear once appears more than once.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    /// A header every request or response must carry is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The SIP version is not 2.0 (RFC 3261 §8.2.4 wants 505 for requests).
    #[error("unsupported SIP version \"{0}\"")]
    Version(String),
    /// The CSeq method differs from the request method.
    #[error("CSeq method \"{cseq}\" does not match request method \"{method}\"")]
    CSeqMismatch {
        /// The method of the request line.
        method: String,
        /// The method in CSeq.
        cseq: String,
        /// Whether the request method is one we do not know (501 rather than 400).
        unknown_method: bool,
    },
    /// The body is shorter than Content-Length says.
    #[error("body is {got} bytes but Content-Length says {declared}")]
    Truncated {
        /// The declared Content-Length.
        declared: usize,
        /// The bytes actually present.
        got: usize,
    },
}

impl ParseError {
    pub(crate) fn malformed(args: fmt::Arguments<'_>) -> Self {
        ParseError::Malformed(args.to_string())
    }
    pub(crate) fn header(header: &'static str, reason: impl Into<String>) -> Self {
        ParseError::BadHeader {
            header,
            reason: reason.into(),
        }
    }

    /// The status code a server answers a request with when it fails this way:
    /// 505 for a bad version, 501 for an unknown method with a CSeq mismatch
    /// (RFC 4475 §3.1.2.18), 400 for everything else.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::Version(_) => 505,
            ParseError::CSeqMismatch {
                unknown_method: true,
                ..
            } => 501,
            _ => 400,
        }
    }

    /// A reason phrase for the error response: the error text, cut to a sane length and
    /// stripped of anything that cannot stand in a reason phrase.
    pub fn reason_phrase(&self) -> String {
        let prefix = match self.status_code() {
            505 => "Version Not Supported",
            501 => "Not Implemented",
            _ => "Bad Request",
        };
        let detail: String = self
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(120)
            .collect();
        format!("{prefix} ({detail})")
    }
}
