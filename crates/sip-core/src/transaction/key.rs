//! Transaction identity: the opaque [`TransactionKey`] the TU holds, and the matching
//! keys the layer indexes transactions by (RFC 3261 §17.1.3 for clients, §17.2.3 for
//! servers, with the RFC 2543 fallback for branches without the magic cookie).
//!
//! A matching key is one string, so the index costs one allocation per transaction and
//! one hash per look-up. Fields are joined with `\n`, which no header value can contain
//! (the parser unfolds nothing into values and the builder refuses line breaks).

use crate::error::ParseError;
use crate::message::Message;
use crate::method::Method;
use crate::name::HeaderName;
use crate::transport::Transport;
use std::fmt::{self, Write as _};

/// Names one live transaction for the TU. `Copy` and small; a key is never reused for a
/// later transaction (a generation counter tells slots apart), so a stale key held by a
/// slow TU gets [`TransactionError::UnknownTransaction`](super::TransactionError) rather
/// than someone else's transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionKey {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl TransactionKey {
    /// The key as one number, for I/O layers that carry an opaque token with a send
    /// and give it back when the send fails later (sip-net's `send_nowait`).
    pub fn to_token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The key a [`TransactionKey::to_token`] number stands for. Any number makes some
    /// key; one that names no live transaction is refused by the layer as unknown.
    pub fn from_token(token: u64) -> TransactionKey {
        TransactionKey {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}.{}", self.index, self.generation)
    }
}

/// ACK belongs to the INVITE transaction it acknowledges (§17.2.3); every other method,
/// CANCEL included, is its own transaction.
fn method_class(m: &Method) -> &str {
    match m {
        Method::Ack => "INVITE",
        other => other.as_str(),
    }
}

#[cfg(test)]
#[test]
fn a_key_survives_its_token() {
    let key = TransactionKey {
        index: 7,
        generation: 3,
    };
    assert_eq!(TransactionKey::from_token(key.to_token()), key);
}

/// The server matching key of a request. `class` overrides the method (CANCEL looks up
/// its INVITE with `Some(&Method::Invite)`); `drop_to_tag` builds the RFC 2543 key without
/// the To tag (an ACK to an initial INVITE carries the tag the INVITE lacked).
///
/// Returns the key and whether it is an RFC 2543 key.
pub(crate) fn server_key(
    msg: &Message,
    class: Option<&Method>,
    drop_to_tag: bool,
) -> Result<(String, bool), ParseError> {
    let method = msg
        .method()
        .ok_or_else(|| ParseError::Malformed("a response has no server transaction".into()))?;
    let class = method_class(class.unwrap_or(method));
    let via = msg.top_via()?;
    let mut key = String::with_capacity(96);
    if let Some(branch) = via.branch().filter(|_| via.has_rfc3261_branch()) {
        // §17.2.3: branch, sent-by and method. The host compares case-insensitively and
        // an absent port is the transport's default, so both spellings of one sent-by
        // match.
        let port = via.port.unwrap_or_else(|| {
            Transport::from_token(via.transport).map_or(5060, Transport::default_port)
        });
        let _ = write!(key, "s\n{class}\n{branch}\n");
        let host_start = key.len();
        let _ = write!(key, "{}", via.host);
        key[host_start..].make_ascii_lowercase();
        let _ = write!(key, ":{port}");
        Ok((key, false))
    } else {
        // §17.2.3, RFC 2543 fallback: Request-URI, To tag, From tag, Call-ID, CSeq number
        // and method class, and the top Via, all as written.
        let uri = msg.request_uri_str().unwrap_or("");
        let to_tag = if drop_to_tag { None } else { msg.to()?.tag() };
        let from_tag = msg.from()?.tag();
        let call_id = msg.call_id()?;
        let seq = msg.cseq()?.seq;
        let top_via = msg
            .get_all(HeaderName::Via)
            .flat_map(crate::headers::split_list)
            .next()
            .unwrap_or("");
        let _ = write!(
            key,
            "o\n{class}\n{uri}\n{}\n{}\n{call_id}\n{seq}\n{top_via}",
            to_tag.unwrap_or(""),
            from_tag.unwrap_or("")
        );
        Ok((key, true))
    }
}

/// The client matching key (§17.1.3): the top Via branch and the CSeq method. Works
/// for the request a client sends and the responses it receives alike.
pub(crate) fn client_key(msg: &Message) -> Result<String, ParseError> {
    let via = msg.top_via()?;
    let branch = via
        .branch()
        .ok_or_else(|| ParseError::header("Via", "top Via has no branch parameter"))?;
    Ok(client_key_of(branch, &msg.cseq()?.method))
}

/// [`client_key`] from its parts, for a caller that has parsed them already.
pub(crate) fn client_key_of(branch: &str, method: &Method) -> String {
    let mut key = String::with_capacity(branch.len() + 16);
    let _ = write!(key, "c\n{method}\n{branch}");
    key
}
