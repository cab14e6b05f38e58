//! Errors of the transaction layer, split by whose fault they are: the peer's (a message
//! that cannot be matched to a transaction) or the caller's (an API call that makes no
//! sense in the transaction's state).

use super::{State, TransactionKey};
use crate::error::ParseError;

/// What went wrong in a [`TransactionLayer`](super::TransactionLayer) call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The peer's fault: a received message lacks or garbles a header that transaction
    /// matching needs (top Via, CSeq, From, To, Call-ID). A request like this deserves a
    /// 400 from whoever can still answer it; a response is dropped.
    #[error("cannot match message to a transaction: {0}")]
    Unmatchable(ParseError),

    /// The caller's fault: a request handed to `send_request` has no usable Via branch.
    /// Add a top Via whose branch starts with `z9hG4bK` (RFC 3261 §8.1.1.7).
    #[error(
        "request has no RFC 3261 branch in its top Via (got {0:?}); generate one starting with z9hG4bK"
    )]
    NoBranch(Option<String>),

    /// The caller's fault: the message is a response where a request belongs or the
    /// other way round.
    #[error("expected a {expected}, got a {got}")]
    WrongKind {
        /// What the call takes.
        expected: &'static str,
        /// What it was given.
        got: &'static str,
    },

    /// The caller's fault: ACK is not sent in a client transaction (RFC 3261 §17.1.1.3
    /// for non-2xx, which the INVITE client transaction sends itself; §13.2.2.4 for 2xx,
    /// which the TU sends directly). Use `send_stateless` for the ACK to a 2xx.
    #[error("ACK is not a transaction; send the ACK to a 2xx with send_stateless")]
    AckIsNotATransaction,

    /// The caller's fault, or a race it must tolerate: the transaction has terminated
    /// (and was removed) or never existed. A TU answering late sees this.
    #[error("no live transaction {0}; it has terminated or never existed")]
    UnknownTransaction(TransactionKey),

    /// The caller's fault: a transaction with the same matching key is already live,
    /// so responses could not be told apart. Use a fresh branch for every request.
    #[error("a transaction with branch {0:?} and this method is already live; use a fresh branch")]
    DuplicateBranch(String),

    /// The caller's fault: the call does not fit the transaction's state (a second final
    /// response, a response from a client transaction, CANCEL before any provisional).
    #[error("transaction {key} is {state:?} and cannot {action}")]
    InvalidState {
        /// The transaction.
        key: TransactionKey,
        /// Its state.
        state: State,
        /// What was attempted, with the fix when there is one.
        action: &'static str,
    },

    /// The caller's fault: a response or request could not be built from the stored
    /// messages (for example a CANCEL of an INVITE whose headers do not parse).
    #[error("cannot build {what}: {source}")]
    Build {
        /// What was being built.
        what: &'static str,
        /// Why.
        source: ParseError,
    },
}
