//! SDP (RFC 8866) session descriptions: parse, inspect and write the bodies that carry
//! offer/answer (RFC 3264) in SIP.
//!
//! The model is owned and close to the wire: every line the RFC defines is kept, values
//! that have no typed use in a softphone (`r=`, `z=`, `k=`, attribute values) stay raw
//! strings, and addresses stay strings so IPv6 and multicast `/ttl` forms survive a round
//! trip untouched. Typed views over attributes (`rtpmap`, `fmtp`, direction, `ptime`,
//! `rtcp`) are computed on demand instead of stored, so the attribute list remains the
//! single source of truth and writing reproduces it in order.

mod model;
mod offer_answer;
mod parse;
mod write;

pub use model::*;
pub use offer_answer::*;

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
