//! SIP dialogs (RFC 3261 §12), sans-IO: the peer-to-peer relationship an INVITE (or
//! another dialog-creating request) sets up, and everything a user agent needs to keep it.
//!
//! A [`Dialog`] holds the §12 state: its identity ([`DialogId`]: Call-ID, local and
//! remote tag), the local and remote CSeq numbers, the route set from Record-Route, the
//! remote target from Contact, and the secure flag. It is created as UAC from a
//! response with a To tag ([`Dialog::from_uac`]) and as UAS from the request
//! ([`Dialog::from_uas`]), builds the requests sent inside it ([`Dialog::request`],
//! [`Dialog::ack`], [`Dialog::prack`]) with the Request-URI and Route set computed by
//! §12.2.1.1 (loose and strict routing), and checks the requests received inside it
//! ([`Dialog::receive_request`]: CSeq order, §12.2.2, and target refresh).
//!
//! Beside it:
//! - [`glare_retry_after`]: the §14.1 random wait before retrying a re-INVITE that got
//!   491 Request Pending;
//! - [`SessionTimer`]: RFC 4028 session timers, when to refresh and when the session has
//!   expired because the far end vanished.
//!
//! - [`DialogLayer`]: every dialog of a user agent (or both legs of a B2BUA) in one
//!   table, in the handle/poll shape of the transaction layer: the 2xx retransmitted
//!   until its ACK (§13.3.1.4) and the BYE when none comes, the ACK to every 2xx,
//!   early dialogs and forked 2xx (§13.2.2.4), CSeq order and 481 (§12.2.2), target
//!   refresh, and the session timers, each on one timer queue.
//!
//! Nothing here reads a clock or a random source: the caller passes `now` and random
//! numbers in (or an [`IdGenerator`](crate::ids::IdGenerator) keyed by them), so every
//! rule is tested with a fake clock.

use crate::builder::MessageBuilder;
use crate::error::ParseError;
use crate::headers::{Contact, NameAddr, split_list};
use crate::message::Message;
use crate::method::Method;
use crate::name::HeaderName;
use crate::uri::Uri;
use std::time::{Duration, Instant};

mod layer;
#[cfg(test)]
mod layer_tests;

pub use layer::{
    DialogEvent, DialogLayer, DialogTransmit, ForkPolicy, LocalEnd, ResponseOutcome,
    TerminationReason, route_flow,
};

/// Why a dialog could not be created or a request could not be taken into one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A header the dialog needs is missing or malformed.
    #[error("cannot form a dialog: {0}")]
    Parse(#[from] ParseError),
    /// The response or request has no tag where the dialog needs one.
    #[error("no {0} tag: no dialog can be formed")]
    NoTag(&'static str),
    /// The message has no usable Contact (the remote target).
    #[error("no Contact with a SIP URI: the remote target is unknown")]
    NoContact,
    /// The [`DialogLayer`] holds no dialog with this id (it ended, or never was).
    #[error("no such dialog: it ended or never was")]
    NoDialog,
}

/// What identifies a dialog at this end (RFC 3261 §12): Call-ID, local tag, remote tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// Our tag: the From tag of our requests as UAC, the To tag we chose as UAS.
    pub local_tag: String,
    /// The far end's tag.
    pub remote_tag: String,
}

impl DialogId {
    /// The identity of the dialog `msg` belongs to, seen from our side: for a request we
    /// received, the local tag is in To and the remote in From; for a response to our
    /// request, the reverse. `None` when a tag is missing (no dialog yet).
    pub fn of_received(msg: &Message) -> Option<DialogId> {
        let call_id = msg.call_id().ok()?.to_owned();
        let from = msg.from().ok()?.tag()?.to_owned();
        let to = msg.to().ok()?.tag()?.to_owned();
        Some(if msg.is_request() {
            DialogId {
                call_id,
                local_tag: to,
                remote_tag: from,
            }
        } else {
            DialogId {
                call_id,
                local_tag: from,
                remote_tag: to,
            }
        })
    }
}

/// Early (after a provisional response with a tag) or confirmed (after a 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialogState {
    /// Created by a 1xx with a To tag; a 2xx confirms it, a non-2xx final ends it.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// Why a request received inside a dialog is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer with.
    pub status: u16,
    /// Why, for the reason phrase and logs.
    pub reason: &'static str,
}

/// One dialog's state (RFC 3261 §12.1): see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Early or confirmed.
    pub state: DialogState,
    /// Our URI as it appears in From of our requests, name-addr form without the tag.
    pub local_uri: String,
    /// The far end's URI, as it appears in To of our requests, without the tag.
    pub remote_uri: String,
    /// The CSeq number of the last request we sent in the dialog (§12.1: the next one
    /// takes one more).
    pub local_seq: u32,
    /// The CSeq number of the last request the far end sent, `None` before the first.
    pub remote_seq: Option<u32>,
    /// Where requests go: the far end's Contact URI (updated by target refreshes).
    pub remote_target: String,
    /// The route set, in the order our requests carry it as Route.
    pub route_set: Vec<String>,
    /// Set up over TLS with a `sips:` Request-URI (§12.1.1).
    pub secure: bool,
    /// Our Contact, sent in target refresh requests and their responses.
    pub local_contact: String,
}

fn strip_tag(field: &str) -> String {
    // The header value without its tag parameter, keeping the rest as written.
    match NameAddr::parse(field, "From/To") {
        Ok(na) => {
            let params: Vec<&str> = na
                .params
                .as_str()
                .split(';')
                .filter(|p| {
                    let name = p.split('=').next().unwrap_or("").trim();
                    !name.is_empty() && !name.eq_ignore_ascii_case("tag")
                })
                .collect();
            let mut s = match na.display_name {
                Some(d) => format!("{d} <{}>", na.uri_text),
                None => format!("<{}>", na.uri_text),
            };
            for p in params {
                s.push(';');
                s.push_str(p.trim());
            }
            s
        }
        Err(_) => field.trim().to_owned(),
    }
}

fn contact_uri(msg: &Message) -> Result<String, DialogError> {
    for value in msg.contacts() {
        if let Ok(Contact::Addr(na)) = value {
            return Ok(na.uri_text.to_owned());
        }
    }
    Err(DialogError::NoContact)
}

fn record_route(msg: &Message) -> Vec<String> {
    msg.get_all(HeaderName::RecordRoute)
        .flat_map(split_list)
        .map(|s| s.trim().to_owned())
        .collect()
}

fn is_target_refresh(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify | Method::Refer
    )
}

impl Dialog {
    /// The dialog a UAC forms from a response with a To tag (a 101–199 makes it early,
    /// a 2xx confirmed) to its dialog-creating `request` (§12.1.2): route set from the
    /// response's Record-Route in reverse, remote target from its Contact, local CSeq
    /// from the request.
    pub fn from_uac(
        request: &Message,
        response: &Message,
        local_contact: &str,
    ) -> Result<Dialog, DialogError> {
        let from = request
            .get(HeaderName::From)
            .ok_or(ParseError::Missing("From"))?;
        let to = response
            .get(HeaderName::To)
            .ok_or(ParseError::Missing("To"))?;
        let local_tag = request.from()?.tag().ok_or(DialogError::NoTag("From"))?;
        let remote_tag = response.to()?.tag().ok_or(DialogError::NoTag("To"))?;
        let mut route_set = record_route(response);
        route_set.reverse();
        let secure = request
            .request_uri()
            .and_then(|u| u.as_sip().map(|s| s.secure))
            .unwrap_or(false);
        let state = if response.status().is_some_and(|s| (200..300).contains(&s)) {
            DialogState::Confirmed
        } else {
            DialogState::Early
        };
        Ok(Dialog {
            id: DialogId {
                call_id: request.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            state,
            local_uri: strip_tag(from),
            remote_uri: strip_tag(to),
            local_seq: request.cseq()?.seq,
            remote_seq: None,
            remote_target: contact_uri(response)?,
            route_set,
            secure,
            local_contact: local_contact.to_owned(),
        })
    }

    /// The dialog a UAS forms when it answers `request` with a 1xx or 2xx carrying
    /// `local_tag` (§12.1.1): route set from Record-Route in order, remote target from
    /// Contact, remote CSeq from the request. `local_seq` is where our own CSeq numbering
    /// starts (any value; §8.1.1.5 asks it be under 2³¹).
    pub fn from_uas(
        request: &Message,
        local_tag: &str,
        local_contact: &str,
        local_seq: u32,
    ) -> Result<Dialog, DialogError> {
        let from = request
            .get(HeaderName::From)
            .ok_or(ParseError::Missing("From"))?;
        let to = request
            .get(HeaderName::To)
            .ok_or(ParseError::Missing("To"))?;
        let remote_tag = request.from()?.tag().ok_or(DialogError::NoTag("From"))?;
        let secure = request
            .request_uri()
            .and_then(|u| u.as_sip().map(|s| s.secure))
            .unwrap_or(false);
        Ok(Dialog {
            id: DialogId {
                call_id: request.call_id()?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: remote_tag.to_owned(),
            },
            state: DialogState::Early,
            local_uri: strip_tag(to),
            remote_uri: strip_tag(from),
            local_seq,
            remote_seq: Some(request.cseq()?.seq),
            remote_target: contact_uri(request)?,
            route_set: record_route(request),
            secure,
            local_contact: local_contact.to_owned(),
        })
    }

    /// Takes a response to a request we sent in this dialog (or to the
    /// dialog-creating INVITE). A 2xx confirms an early dialog and, as UAC, fixes the
    /// route set from its Record-Route (§13.2.2.4); a 1xx/2xx to a target refresh
    /// updates the remote target from its Contact (§12.2.1.2).
    pub fn receive_response(&mut self, response: &Message, as_uac_of_invite: bool) {
        let Some(status) = response.status() else {
            return;
        };
        let Ok(cseq) = response.cseq() else {
            return;
        };
        if (200..300).contains(&status) {
            if self.state == DialogState::Early && as_uac_of_invite {
                let mut route_set = record_route(response);
                route_set.reverse();
                self.route_set = route_set;
            }
            self.state = DialogState::Confirmed;
        }
        if is_target_refresh(&cseq.method)
            && status < 300
            && let Ok(target) = contact_uri(response)
        {
            self.remote_target = target;
        }
    }

    /// Checks a request the far end sent inside this dialog (§12.2.2): a CSeq lower than
    /// the last one is refused with 500; otherwise the remote CSeq advances and a target
    /// refresh (INVITE, UPDATE...) with a Contact updates the remote target. ACK and
    /// CANCEL carry the CSeq of what they acknowledge or cancel and are not checked.
    pub fn receive_request(&mut self, request: &Message) -> Result<(), Refusal> {
        let Some(method) = request.method() else {
            return Ok(());
        };
        if matches!(method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        let cseq = request.cseq().map_err(|_| Refusal {
            status: 400,
            reason: "Bad CSeq",
        })?;
        if self.remote_seq.is_some_and(|last| cseq.seq <= last) {
            // Equal is a retransmission the transaction layer absorbs; reaching here
            // it is a new request reusing a number, out of order all the same.
            return Err(Refusal {
                status: 500,
                reason: "CSeq Out of Order",
            });
        }
        self.remote_seq = Some(cseq.seq);
        if is_target_refresh(method)
            && let Ok(target) = contact_uri(request)
        {
            self.remote_target = target;
        }
        Ok(())
    }

    /// Whether a request we received belongs to this dialog (Call-ID and both tags).
    pub fn matches(&self, msg: &Message) -> bool {
        DialogId::of_received(msg).as_ref() == Some(&self.id)
    }

    /// The Request-URI and Route values of a request in this dialog (§12.2.1.1): with
    /// an empty route set or a loose router first (`;lr`), the remote target and the
    /// route set as is; with a strict router first, its URI as Request-URI and the rest
    /// of the route set followed by the remote target.
    pub fn request_target(&self) -> (String, Vec<String>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let loose = NameAddr::parse(first, "Route")
            .ok()
            .and_then(|na| na.uri.as_sip().map(|s| s.lr()))
            .unwrap_or(true);
        if loose {
            return (self.remote_target.clone(), self.route_set.clone());
        }
        let uri = NameAddr::parse(first, "Route")
            .map(|na| strip_uri_params_not_allowed(na.uri_text))
            .unwrap_or_else(|_| first.clone());
        let mut routes: Vec<String> = self.route_set[1..].to_vec();
        routes.push(format!("<{}>", self.remote_target));
        (uri, routes)
    }

    /// Where the next hop is: the first Route's URI, else the remote target. This is
    /// the URI the transport locates (RFC 3263).
    pub fn next_hop(&self) -> String {
        match self.route_set.first() {
            Some(first) => NameAddr::parse(first, "Route")
                .map(|na| na.uri_text.to_owned())
                .unwrap_or_else(|_| first.clone()),
            None => self.remote_target.clone(),
        }
    }

    /// Starts a new request in this dialog (§12.2.1.1): takes the next local CSeq and
    /// writes the request line, `via` (our Via value with its fresh branch),
    /// Max-Forwards, From, To, Call-ID, CSeq, Route, and Contact for target refreshes.
    /// The caller adds a body and other headers. Not for ACK (use [`Dialog::ack`]) or
    /// CANCEL (built from the INVITE by the transaction layer).
    pub fn request(&mut self, method: &Method, via: &str) -> MessageBuilder {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.build(method, via, self.local_seq)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4): same CSeq
    /// number, method ACK, a new branch in `via`. It is sent outside any transaction.
    pub fn ack(&self, invite_seq: u32, via: &str) -> MessageBuilder {
        self.build(&Method::Ack, via, invite_seq)
    }

    /// A PRACK for a reliable provisional response with `rseq` to the INVITE with CSeq
    /// `invite_seq` (RFC 3262 §7.2): a new request in the (early) dialog with
    /// `RAck: <rseq> <invite_seq> INVITE`.
    pub fn prack(&mut self, rseq: u32, invite_seq: u32, via: &str) -> MessageBuilder {
        self.request(&Method::Prack, via)
            .header("RAck", format_args!("{rseq} {invite_seq} INVITE"))
    }

    fn build(&self, method: &Method, via: &str, seq: u32) -> MessageBuilder {
        let (uri, routes) = self.request_target();
        let mut b = MessageBuilder::request(method, &uri);
        b.push("Via", via);
        b.push("Max-Forwards", 70);
        b.push(
            "From",
            format_args!("{};tag={}", self.local_uri, self.id.local_tag),
        );
        b.push(
            "To",
            format_args!("{};tag={}", self.remote_uri, self.id.remote_tag),
        );
        b.push("Call-ID", &self.id.call_id);
        b.push("CSeq", format_args!("{seq} {method}"));
        for r in &routes {
            b.push("Route", r);
        }
        if is_target_refresh(method) {
            b.push("Contact", format_args!("<{}>", self.local_contact));
        }
        b
    }
}

/// A strict router's URI as a Request-URI: without `?headers`, which RFC 3261 §19.1.1
/// does not allow there.
fn strip_uri_params_not_allowed(uri: &str) -> String {
    uri.split('?').next().unwrap_or(uri).to_owned()
}

/// The URI in a Contact or Route value, as a parsed [`Uri`], when it is one.
pub fn uri_of(value: &str) -> Option<Uri<'_>> {
    NameAddr::parse(value, "Contact").ok().map(|na| na.uri)
}

/// How long to wait before retrying a re-INVITE or UPDATE that got 491 Request Pending
/// (RFC 3261 §14.1): when we own the Call-ID (we sent the dialog-creating INVITE), a
/// random time in 2.1–4 s in steps of 10 ms; otherwise 0–2 s in steps of 10 ms.
/// `random` is any random number; it picks the step.
pub fn glare_retry_after(we_own_call_id: bool, random: u32) -> Duration {
    if we_own_call_id {
        Duration::from_millis(2100 + u64::from(random % 191) * 10)
    } else {
        Duration::from_millis(u64::from(random % 201) * 10)
    }
}

/// Who refreshes the session (RFC 4028 §7, §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// We send the refresh (re-INVITE or UPDATE) at half the interval.
    Us,
    /// The far end does; we end the session when it misses it.
    Them,
}

/// What a [`SessionTimer`] asks for when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTimerAction {
    /// Send a session refresh now.
    Refresh,
    /// No refresh came in time: send BYE and end the session (RFC 4028 §10).
    Expire,
}

/// An RFC 4028 session timer for one dialog: refreshed by every successful session
/// refresh, firing at half the interval when we refresh and, when the far end
/// refreshes, at the interval minus min(32 s, interval/3) (§10), after which the session
/// is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    /// The negotiated Session-Expires, in seconds.
    pub interval: u32,
    /// Who refreshes.
    pub refresher: Refresher,
    last_refresh: Instant,
}

impl SessionTimer {
    /// A timer for a session refreshed at `now` (the 2xx that set it up).
    pub fn new(interval: u32, refresher: Refresher, now: Instant) -> SessionTimer {
        SessionTimer {
            interval: interval.max(1),
            refresher,
            last_refresh: now,
        }
    }

    /// The timer from a 2xx to an INVITE or UPDATE that carried `Session-Expires`
    /// (RFC 4028 §7.2, §9): `we_are_uac` says whether we sent that request, which
    /// decides what `refresher=uac|uas` means. `None` when the 2xx has no
    /// Session-Expires: the session has no timer.
    pub fn from_response(
        response: &Message,
        we_are_uac: bool,
        now: Instant,
    ) -> Option<SessionTimer> {
        let se = response.session_expires().ok()??;
        let uac_refreshes = !matches!(se.refresher(), Some(r) if r.eq_ignore_ascii_case("uas"));
        let refresher = if uac_refreshes == we_are_uac {
            Refresher::Us
        } else {
            Refresher::Them
        };
        Some(SessionTimer::new(se.delta, refresher, now))
    }

    /// A refresh succeeded at `now` (a 2xx to a re-INVITE or UPDATE, either way).
    pub fn refreshed(&mut self, now: Instant) {
        self.last_refresh = now;
    }

    /// When the timer fires next.
    pub fn deadline(&self) -> Instant {
        let interval = Duration::from_secs(u64::from(self.interval));
        match self.refresher {
            Refresher::Us => self.last_refresh + interval / 2,
            Refresher::Them => {
                let margin = Duration::from_secs(u64::from((self.interval / 3).min(32)));
                self.last_refresh + interval - margin
            }
        }
    }

    /// What to do at `now`: `None` before the deadline.
    pub fn poll(&self, now: Instant) -> Option<SessionTimerAction> {
        if now < self.deadline() {
            return None;
        }
        Some(match self.refresher {
            Refresher::Us => SessionTimerAction::Refresh,
            Refresher::Them => SessionTimerAction::Expire,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::response_to;
    use bytes::Bytes;

    fn parse(s: &str) -> Message {
        Message::parse(Bytes::from(s.replace('\n', "\r\n"))).unwrap()
    }

    fn invite() -> Message {
        parse(
            "INVITE sip:bob@biloxi.example SIP/2.0\n\
             Via: SIP/2.0/UDP pc33.atlanta.example;branch=z9hG4bK776asdhds\n\
             Max-Forwards: 70\n\
             To: Bob <sip:bob@biloxi.example>\n\
             From: Alice <sip:alice@atlanta.example>;tag=1928301774\n\
             Call-ID: a84b4c76e66710\n\
             CSeq: 314159 INVITE\n\
             Contact: <sip:alice@pc33.atlanta.example>\n\
             Record-Route: <sip:p2.example;lr>, <sip:p1.example;lr>\n\
             Content-Length: 0\n\n",
        )
    }

    fn ok_from_bob(invite: &Message) -> Message {
        response_to(invite, 200, Some("a6c85cf"))
            .header("Contact", "<sip:bob@192.0.2.4>")
            .build()
            .unwrap()
    }

    #[test]
    fn uac_dialog_from_2xx_reverses_the_record_route() {
        let inv = invite();
        let d =
            Dialog::from_uac(&inv, &ok_from_bob(&inv), "sip:alice@pc33.atlanta.example").unwrap();
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.id.local_tag, "1928301774");
        assert_eq!(d.id.remote_tag, "a6c85cf");
        assert_eq!(d.remote_target, "sip:bob@192.0.2.4");
        assert_eq!(
            d.route_set,
            vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        assert_eq!(d.local_seq, 314159);
        assert_eq!(d.local_uri, "Alice <sip:alice@atlanta.example>");
        assert_eq!(d.remote_uri, "Bob <sip:bob@biloxi.example>");
        assert_eq!(d.next_hop(), "sip:p1.example;lr");
    }

    #[test]
    fn uas_dialog_keeps_the_record_route_order_and_the_remote_cseq() {
        let d = Dialog::from_uas(&invite(), "xyz", "sip:bob@192.0.2.4", 1).unwrap();
        assert_eq!(d.state, DialogState::Early);
        assert_eq!(d.id.local_tag, "xyz");
        assert_eq!(d.id.remote_tag, "1928301774");
        assert_eq!(d.remote_seq, Some(314159));
        assert_eq!(
            d.route_set,
            vec!["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
        );
        assert_eq!(d.remote_target, "sip:alice@pc33.atlanta.example");
    }

    #[test]
    fn early_dialog_from_180_then_2xx_confirms_it_and_fixes_the_route_set() {
        let inv = invite();
        let ringing = response_to(&inv, 180, Some("a6c85cf"))
            .header("Contact", "<sip:bob@192.0.2.4>")
            .build()
            .unwrap();
        let mut d = Dialog::from_uac(&inv, &ringing, "sip:alice@a").unwrap();
        assert_eq!(d.state, DialogState::Early);
        let ok = response_to(&inv, 200, Some("a6c85cf"))
            .header("Contact", "<sip:bob@192.0.2.99>")
            .build()
            .unwrap();
        d.receive_response(&ok, true);
        assert_eq!(d.state, DialogState::Confirmed);
        assert_eq!(d.remote_target, "sip:bob@192.0.2.99");
    }

    #[test]
    fn in_dialog_requests_carry_the_dialog_and_count_cseq() {
        let inv = invite();
        let mut d = Dialog::from_uac(&inv, &ok_from_bob(&inv), "sip:alice@pc33").unwrap();
        let bye = d
            .request(&Method::Bye, "SIP/2.0/UDP pc33;branch=z9hG4bKbye1")
            .build()
            .unwrap();
        assert_eq!(bye.request_uri_str(), Some("sip:bob@192.0.2.4"));
        assert_eq!(bye.cseq().unwrap().seq, 314160);
        assert_eq!(bye.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(bye.to().unwrap().tag(), Some("a6c85cf"));
        let routes: Vec<&str> = bye.get_all(HeaderName::Route).collect();
        assert_eq!(routes, vec!["<sip:p1.example;lr>", "<sip:p2.example;lr>"]);
        assert!(bye.get(HeaderName::Contact).is_none());
        let reinvite = d
            .request(&Method::Invite, "SIP/2.0/UDP pc33;branch=z9hG4bKre1")
            .build()
            .unwrap();
        assert_eq!(reinvite.cseq().unwrap().seq, 314161);
        assert_eq!(reinvite.get(HeaderName::Contact), Some("<sip:alice@pc33>"));
        let ack = d
            .ack(314159, "SIP/2.0/UDP pc33;branch=z9hG4bKack1")
            .build()
            .unwrap();
        assert_eq!(ack.cseq().unwrap().to_string(), "314159 ACK");
        assert_eq!(d.local_seq, 314161, "an ACK takes no new CSeq");
        let prack = d
            .prack(1, 314159, "SIP/2.0/UDP pc33;branch=z9hG4bKpr1")
            .build()
            .unwrap();
        assert_eq!(prack.rack().unwrap().unwrap().rseq, 1);
        assert_eq!(prack.cseq().unwrap().seq, 314162);
    }

    #[test]
    fn strict_router_becomes_the_request_uri() {
        let inv = invite();
        let mut d = Dialog::from_uac(&inv, &ok_from_bob(&inv), "sip:alice@pc33").unwrap();
        d.route_set = vec!["<sip:strict.example>".into(), "<sip:p2.example;lr>".into()];
        let (uri, routes) = d.request_target();
        assert_eq!(uri, "sip:strict.example");
        assert_eq!(routes, vec!["<sip:p2.example;lr>", "<sip:bob@192.0.2.4>"]);
    }

    fn in_dialog(method: &str, seq: u32, contact: Option<&str>) -> Message {
        let contact = contact
            .map(|c| format!("Contact: <{c}>\n"))
            .unwrap_or_default();
        parse(&format!(
            "{method} sip:bob@192.0.2.4 SIP/2.0\n\
             Via: SIP/2.0/UDP pc33.atlanta.example;branch=z9hG4bK{seq}\n\
             Max-Forwards: 70\n\
             To: Bob <sip:bob@biloxi.example>;tag=xyz\n\
             From: Alice <sip:alice@atlanta.example>;tag=1928301774\n\
             Call-ID: a84b4c76e66710\n\
             CSeq: {seq} {method}\n{contact}\
             Content-Length: 0\n\n"
        ))
    }

    #[test]
    fn out_of_order_cseq_is_refused_with_500_and_refreshes_move_the_target() {
        let mut d = Dialog::from_uas(&invite(), "xyz", "sip:bob@192.0.2.4", 1).unwrap();
        let reinvite = in_dialog("INVITE", 314160, Some("sip:alice@198.51.100.7"));
        assert!(d.matches(&reinvite));
        assert_eq!(d.receive_request(&reinvite), Ok(()));
        assert_eq!(d.remote_target, "sip:alice@198.51.100.7");
        assert_eq!(d.remote_seq, Some(314160));
        let old = in_dialog("BYE", 314150, None);
        assert_eq!(d.receive_request(&old).unwrap_err().status, 500);
        let ack = in_dialog("ACK", 314160, None);
        assert_eq!(d.receive_request(&ack), Ok(()));
        let bye = in_dialog("BYE", 314161, None);
        assert_eq!(d.receive_request(&bye), Ok(()));
        assert_eq!(d.remote_target, "sip:alice@198.51.100.7");
    }

    #[test]
    fn dialog_id_of_received_messages() {
        let r = in_dialog("BYE", 5, None);
        let id = DialogId::of_received(&r).unwrap();
        assert_eq!(id.local_tag, "xyz");
        assert_eq!(id.remote_tag, "1928301774");
        assert!(DialogId::of_received(&invite()).is_none());
    }

    #[test]
    fn glare_retry_ranges() {
        for r in [0, 1, 190, 191, 5000, u32::MAX] {
            let owner = glare_retry_after(true, r);
            assert!(owner >= Duration::from_millis(2100) && owner <= Duration::from_secs(4));
            let other = glare_retry_after(false, r);
            assert!(other <= Duration::from_secs(2));
            assert_eq!(other.as_millis() % 10, 0);
        }
    }

    #[test]
    fn session_timer_refreshes_at_half_and_expires_before_the_interval() {
        let t0 = Instant::now();
        let mut ours = SessionTimer::new(90, Refresher::Us, t0);
        assert_eq!(ours.poll(t0 + Duration::from_secs(44)), None);
        assert_eq!(
            ours.poll(t0 + Duration::from_secs(45)),
            Some(SessionTimerAction::Refresh)
        );
        ours.refreshed(t0 + Duration::from_secs(45));
        assert_eq!(ours.deadline(), t0 + Duration::from_secs(90));

        let theirs = SessionTimer::new(90, Refresher::Them, t0);
        // 90 - min(32, 30) = 60 s.
        assert_eq!(theirs.deadline(), t0 + Duration::from_secs(60));
        assert_eq!(
            theirs.poll(t0 + Duration::from_secs(60)),
            Some(SessionTimerAction::Expire)
        );
        let long = SessionTimer::new(1800, Refresher::Them, t0);
        assert_eq!(long.deadline(), t0 + Duration::from_secs(1800 - 32));
    }

    #[test]
    fn session_timer_from_a_2xx_reads_the_refresher() {
        let inv = invite();
        let ok = response_to(&inv, 200, Some("t"))
            .header("Session-Expires", "120;refresher=uas")
            .build()
            .unwrap();
        let t0 = Instant::now();
        let uac = SessionTimer::from_response(&ok, true, t0).unwrap();
        assert_eq!(uac.refresher, Refresher::Them);
        assert_eq!(uac.interval, 120);
        let uas = SessionTimer::from_response(&ok, false, t0).unwrap();
        assert_eq!(uas.refresher, Refresher::Us);
        assert!(SessionTimer::from_response(&ok_from_bob(&inv), true, t0).is_none());
    }
}
