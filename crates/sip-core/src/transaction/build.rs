//! The two requests a transaction's rules build from another request: the ACK for a
//! non-2xx final response (RFC 3261 §17.1.1.3) and the CANCEL of an INVITE (§9.1).
//! Header values are copied as written, because both rules say "equal to".

use super::TransactionError;
use crate::builder::MessageBuilder;
use crate::error::ParseError;
use crate::headers::split_list;
use crate::message::Message;
use crate::method::Method;
use crate::name::HeaderName;

/// Builds the ACK an INVITE client transaction sends for a 300–699 `response` to
/// `invite` (RFC 3261 §17.1.1.3): the INVITE's Request-URI, Call-ID, From, top Via only,
/// Route headers and CSeq number with method ACK, and the To of the response (which
/// carries the tag the UAS chose).
pub fn build_ack(invite: &Message, response: &Message) -> Result<Message, TransactionError> {
    let to = response
        .get(HeaderName::To)
        .ok_or(ParseError::Missing("To"))
        .map_err(|source| TransactionError::Build {
            what: "ACK",
            source,
        })?;
    build_from_invite(invite, Method::Ack, to, "ACK")
}

/// Builds the CANCEL for a client INVITE (RFC 3261 §9.1): the INVITE's Request-URI,
/// Call-ID, From, To (tags included), top Via only (so the CANCEL's branch is the
/// INVITE's), Route headers and CSeq number with method CANCEL.
///
/// Send it in a new non-INVITE client transaction on the same flow as the INVITE, and
/// only once a provisional response has arrived (§9.1);
/// [`TransactionLayer::cancel`](super::TransactionLayer::cancel) does both.
pub fn build_cancel(invite: &Message) -> Result<Message, TransactionError> {
    let to = invite
        .get(HeaderName::To)
        .ok_or(ParseError::Missing("To"))
        .map_err(|source| TransactionError::Build {
            what: "CANCEL",
            source,
        })?;
    build_from_invite(invite, Method::Cancel, to, "CANCEL")
}

fn build_from_invite(
    invite: &Message,
    method: Method,
    to: &str,
    what: &'static str,
) -> Result<Message, TransactionError> {
    let err = |source| TransactionError::Build { what, source };
    let uri = invite
        .request_uri_str()
        .ok_or(TransactionError::WrongKind {
            expected: "request",
            got: "response",
        })?;
    let via = invite
        .get_all(HeaderName::Via)
        .flat_map(split_list)
        .next()
        .ok_or(ParseError::Missing("Via"))
        .map_err(err)?;
    let from = invite
        .get(HeaderName::From)
        .ok_or(ParseError::Missing("From"))
        .map_err(err)?;
    let call_id = invite
        .get(HeaderName::CallId)
        .ok_or(ParseError::Missing("Call-ID"))
        .map_err(err)?;
    let seq = invite.cseq().map_err(err)?.seq;
    let mut b = MessageBuilder::request(&method, uri);
    b.push("Via", via);
    b.push("Max-Forwards", 70);
    b.push("From", from);
    b.push("To", to);
    b.push("Call-ID", call_id);
    b.push("CSeq", format_args!("{seq} {method}"));
    for route in invite.get_all(HeaderName::Route) {
        b.push("Route", route);
    }
    b.build().map_err(err)
}
