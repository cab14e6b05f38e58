//! `cdr`: call detail records. One [`CallRecord`] for every call the server handles,
//! proxied or carried by the PBX: who called, what they dialled, who answered, each leg
//! rung, the start, answer and end times, the billable seconds, how it ended
//! ([`Disposition`]), who hung up and why ([`HangupBy`]), the trunk and the Call-IDs.
//!
//! The services build a record while the call runs with an [`OpenCall`] (start, legs,
//! ringing, answer) and close it with [`OpenCall::finish_unanswered`] or
//! [`OpenCall::finish_hangup`]; the finished record goes to a [`RecordSink`] (the store's
//! writer thread in `serve`, a `Vec` in tests). Nothing here reads a clock or touches a
//! file: times are Unix milliseconds handed in by the caller.
//!
//! ```
//! use cdr::{CallKind, Disposition, HangupBy, OpenCall, RecordSink};
//!
//! let mut call = OpenCall::new(CallKind::Proxied, "alice", "201", "a84b4c76e66710", 1_000);
//! call.set_callee("bob");
//! let leg = call.leg_started("sip:bob@192.0.2.4:5060", "a84b4c76e66710", 1_010);
//! call.leg_ringing(leg);
//! call.leg_answered(leg, 3_000);
//! call.answered(3_000);
//! let record = call.finish_hangup(HangupBy::Caller, "BYE", 65_500);
//! assert_eq!(record.disposition, Disposition::Answered);
//! assert_eq!(record.billable_secs(), 63); // 62.5 s, a started second counts
//! let mut sink: Vec<cdr::CallRecord> = Vec::new();
//! sink.record(record);
//! assert_eq!(sink[0].legs[0].status, Some(200));
//! ```

#![deny(missing_docs)]

use std::fmt;

/// Which service carried the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// The proxy relayed it between the two phones (one dialog end to end).
    Proxied,
    /// The PBX's back-to-back user agent carried it (a dialog per leg).
    Pbx,
}

impl CallKind {
    /// The name stored and printed: `proxied`, `pbx`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Proxied => "proxied",
            CallKind::Pbx => "pbx",
        }
    }

    /// The kind a stored name stands for.
    pub fn parse(s: &str) -> Option<CallKind> {
        match s {
            "proxied" => Some(CallKind::Proxied),
            "pbx" => Some(CallKind::Pbx),
            _ => None,
        }
    }
}

impl fmt::Display for CallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended, as a PBX's report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Somebody answered (a 2xx reached the caller).
    Answered,
    /// The callee was busy or declined (486, 600, 603).
    Busy,
    /// It rang and nobody answered in time (408, or 480 after ringing).
    NoAnswer,
    /// It could not be placed or was refused (404, 480 with nothing ringing, 5xx...).
    Failed,
    /// The caller gave up before the answer (CANCEL, 487).
    Cancelled,
}

impl Disposition {
    /// The name stored and printed: `answered`, `busy`, `no_answer`, `failed`,
    /// `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Busy => "busy",
            Disposition::NoAnswer => "no_answer",
            Disposition::Failed => "failed",
            Disposition::Cancelled => "cancelled",
        }
    }

    /// The disposition a stored name stands for.
    pub fn parse(s: &str) -> Option<Disposition> {
        [
            Disposition::Answered,
            Disposition::Busy,
            Disposition::NoAnswer,
            Disposition::Failed,
            Disposition::Cancelled,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// What the final response `status` to the caller's INVITE says of the call;
    /// `rang` when a phone rang (a provisional above 100 reached the caller) before it.
    pub fn from_final_status(status: u16, rang: bool) -> Disposition {
        match status {
            200..=299 => Disposition::Answered,
            486 | 600 | 603 => Disposition::Busy,
            487 => Disposition::Cancelled,
            408 => Disposition::NoAnswer,
            480 if rang => Disposition::NoAnswer,
            _ => Disposition::Failed,
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HangupBy {
    /// The calling party (its BYE, or its CANCEL before the answer).
    Caller,
    /// The called party (its BYE, or its busy or decline).
    Callee,
    /// The server (a timeout, a refusal, a call closed for lack of a BYE, a stop).
    System,
}

impl HangupBy {
    /// The name stored and printed: `caller`, `callee`, `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Callee => "callee",
            HangupBy::System => "system",
        }
    }

    /// The party a stored name stands for.
    pub fn parse(s: &str) -> Option<HangupBy> {
        match s {
            "caller" => Some(HangupBy::Caller),
            "callee" => Some(HangupBy::Callee),
            "system" => Some(HangupBy::System),
            _ => None,
        }
    }

    /// Who ended a call that got the final response `status` without an answer: the
    /// caller for 487 (it cancelled), the callee for what a phone says (busy, decline,
    /// unavailable after ringing), the server for the rest (timeouts, refusals).
    pub fn for_final_status(status: u16, rang: bool) -> HangupBy {
        match status {
            487 => HangupBy::Caller,
            486 | 600 | 603 => HangupBy::Callee,
            480 if rang => HangupBy::Callee,
            _ => HangupBy::System,
        }
    }
}

impl fmt::Display for HangupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt to reach a callee: a proxy branch, or a B2BUA's outgoing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// Where it went: the contact or number rung.
    pub target: String,
    /// Its Call-ID (the caller's for a proxied call; the B2BUA's own for a PBX leg).
    pub call_id: String,
    /// When it was sent, Unix milliseconds.
    pub start_ms: u64,
    /// When it answered, if it did.
    pub answer_ms: Option<u64>,
    /// When it ended.
    pub end_ms: u64,
    /// Its final response (200 for the leg that answered); `None` when it had none
    /// (the call was closed first).
    pub status: Option<u16>,
}

/// The record of one finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Proxied or PBX.
    pub kind: CallKind,
    /// The caller: the From user (a local user's name), else the From URI.
    pub caller: String,
    /// What the caller dialled: the Request-URI's user part as it came.
    pub dialled: String,
    /// Whom the call was for once routed (the local user an extension names), when
    /// known.
    pub callee: Option<String>,
    /// When the call came in, Unix milliseconds.
    pub start_ms: u64,
    /// When it was answered.
    pub answer_ms: Option<u64>,
    /// When it ended.
    pub end_ms: u64,
    /// How it ended.
    pub disposition: Disposition,
    /// Who ended it.
    pub hangup_by: HangupBy,
    /// Why, in words: `BYE`, `486 Busy Here`, `no BYE within 43200 s`...
    pub hangup_reason: String,
    /// The trunk used, for a call that left through one.
    pub trunk: Option<String>,
    /// Every Call-ID of the call, the caller's first.
    pub call_ids: Vec<String>,
    /// The legs, in the order they started.
    pub legs: Vec<Leg>,
}

impl CallRecord {
    /// The seconds from answer to end, a started second counting as one; 0 for a call
    /// never answered.
    pub fn billable_secs(&self) -> u64 {
        self.answer_ms
            .map_or(0, |a| self.end_ms.saturating_sub(a).div_ceil(1000))
    }

    /// The whole call, from the INVITE to the end, in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.end_ms.saturating_sub(self.start_ms)
    }

    /// Whether `user` took part: as caller, callee or the number dialled.
    pub fn involves(&self, user: &str) -> bool {
        self.caller == user || self.dialled == user || self.callee.as_deref() == Some(user)
    }
}

/// Where finished records go. `serve` hands them to the store's writer thread; a
/// sink must not block (the protocol loop calls it).
pub trait RecordSink: Send {
    /// Takes one finished record.
    fn record(&mut self, record: CallRecord);
}

impl RecordSink for Vec<CallRecord> {
    fn record(&mut self, record: CallRecord) {
        self.push(record);
    }
}

impl<T: RecordSink + ?Sized> RecordSink for Box<T> {
    fn record(&mut self, record: CallRecord) {
        (**self).record(record);
    }
}

impl<T: RecordSink> RecordSink for std::sync::Arc<std::sync::Mutex<T>> {
    fn record(&mut self, record: CallRecord) {
        if let Ok(mut sink) = self.lock() {
            sink.record(record);
        }
    }
}

/// A call in progress, becoming a [`CallRecord`]: what a service notes as the call
/// goes, with the times it passes in.
#[derive(Debug, Clone)]
pub struct OpenCall {
    record: CallRecord,
    /// A provisional above 100 reached the caller.
    rang: bool,
}

impl OpenCall {
    /// A call from `caller` to `dialled` whose first Call-ID is `call_id`, come in at
    /// `start_ms`.
    pub fn new(
        kind: CallKind,
        caller: &str,
        dialled: &str,
        call_id: &str,
        start_ms: u64,
    ) -> OpenCall {
        OpenCall {
            record: CallRecord {
                kind,
                caller: caller.to_owned(),
                dialled: dialled.to_owned(),
                callee: None,
                start_ms,
                answer_ms: None,
                end_ms: start_ms,
                disposition: Disposition::Failed,
                hangup_by: HangupBy::System,
                hangup_reason: String::new(),
                trunk: None,
                call_ids: vec![call_id.to_owned()],
                legs: Vec::new(),
            },
            rang: false,
        }
    }

    /// Whom the call is for, once routed; the first one given stays.
    pub fn set_callee(&mut self, callee: &str) {
        if self.record.callee.is_none() {
            self.record.callee = Some(callee.to_owned());
        }
    }

    /// The trunk the call leaves through.
    pub fn set_trunk(&mut self, trunk: &str) {
        self.record.trunk = Some(trunk.to_owned());
    }

    /// The caller, the number dialled and the callee so far.
    pub fn parties(&self) -> (&str, &str, Option<&str>) {
        (
            &self.record.caller,
            &self.record.dialled,
            self.record.callee.as_deref(),
        )
    }

    /// When the call came in.
    pub fn start_ms(&self) -> u64 {
        self.record.start_ms
    }

    /// When it was answered, if it was.
    pub fn answer_ms(&self) -> Option<u64> {
        self.record.answer_ms
    }

    /// Whether it was answered.
    pub fn is_answered(&self) -> bool {
        self.record.answer_ms.is_some()
    }

    /// Whether a phone rang.
    pub fn has_rung(&self) -> bool {
        self.rang
    }

    /// A leg sent to `target` with Call-ID `call_id` at `at_ms`; its index for the
    /// calls below. A Call-ID new to the call joins its list.
    pub fn leg_started(&mut self, target: &str, call_id: &str, at_ms: u64) -> usize {
        if !self.record.call_ids.iter().any(|c| c == call_id) {
            self.record.call_ids.push(call_id.to_owned());
        }
        self.record.legs.push(Leg {
            target: target.to_owned(),
            call_id: call_id.to_owned(),
            start_ms: at_ms,
            answer_ms: None,
            end_ms: at_ms,
            status: None,
        });
        self.record.legs.len() - 1
    }

    /// Leg `leg` rings (a provisional above 100).
    pub fn leg_ringing(&mut self, leg: usize) {
        if leg < self.record.legs.len() {
            self.rang = true;
        }
    }

    /// Leg `leg` answered at `at_ms` (its status is 200 unless it ends otherwise).
    pub fn leg_answered(&mut self, leg: usize, at_ms: u64) {
        if let Some(l) = self.record.legs.get_mut(leg)
            && l.answer_ms.is_none()
        {
            l.answer_ms = Some(at_ms);
            l.status = Some(200);
        }
    }

    /// Leg `leg` ended at `at_ms` with the final response `status` (`None`: without
    /// one). A leg that answered keeps its 200; a leg ends once.
    pub fn leg_ended(&mut self, leg: usize, status: Option<u16>, at_ms: u64) {
        let Some(l) = self.record.legs.get_mut(leg) else {
            return;
        };
        if l.answer_ms.is_none() && l.status.is_some() {
            return; // ended already
        }
        if l.answer_ms.is_none() {
            l.status = status;
            l.end_ms = at_ms;
        }
    }

    /// The caller heard ringing (a provisional above 100 reached it).
    pub fn ringing(&mut self) {
        self.rang = true;
    }

    /// The call was answered at `at_ms`; `false` if it was already.
    pub fn answered(&mut self, at_ms: u64) -> bool {
        if self.record.answer_ms.is_some() {
            return false;
        }
        self.record.answer_ms = Some(at_ms);
        true
    }

    /// The record of a call that ended without an answer, with the final response
    /// `status` (and its reason phrase) the caller got at `at_ms`: the disposition and
    /// who ended it follow from the status ([`Disposition::from_final_status`],
    /// [`HangupBy::for_final_status`]). Legs still ringing were cancelled: they are
    /// recorded with 487, what a cancelled INVITE is answered with.
    pub fn finish_unanswered(mut self, status: u16, reason_phrase: &str, at_ms: u64) -> CallRecord {
        for leg in &mut self.record.legs {
            if leg.status.is_none() {
                leg.status = Some(487);
                leg.end_ms = at_ms;
            }
        }
        let disposition = Disposition::from_final_status(status, self.rang);
        let by = HangupBy::for_final_status(status, self.rang);
        let why = if reason_phrase.is_empty() {
            status.to_string()
        } else {
            format!("{status} {reason_phrase}")
        };
        self.finish(disposition, by, why, at_ms)
    }

    /// The record of a call ended at `at_ms` by `by` for `reason`: answered if it was,
    /// else failed (a call closed before any final response).
    pub fn finish_hangup(self, by: HangupBy, reason: &str, at_ms: u64) -> CallRecord {
        let disposition = if self.is_answered() {
            Disposition::Answered
        } else {
            Disposition::Failed
        };
        self.finish(disposition, by, reason.to_owned(), at_ms)
    }

    fn finish(
        mut self,
        disposition: Disposition,
        by: HangupBy,
        reason: String,
        at_ms: u64,
    ) -> CallRecord {
        let end = at_ms.max(self.record.start_ms);
        let r = &mut self.record;
        r.end_ms = end;
        if let Some(a) = r.answer_ms {
            // The answer is never after the end, whatever order the clock gave.
            r.answer_ms = Some(a.min(end));
        }
        for leg in &mut r.legs {
            if leg.answer_ms.is_some() || leg.status.is_none() {
                leg.end_ms = end;
            }
        }
        r.disposition = disposition;
        r.hangup_by = by;
        r.hangup_reason = reason;
        self.record
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn call() -> OpenCall {
        let mut c = OpenCall::new(CallKind::Proxied, "alice", "201", "cid", 10_000);
        c.set_callee("bob");
        c.set_callee("not-bob"); // the first stays
        c
    }

    #[test]
    fn names_round_trip() {
        for d in [
            Disposition::Answered,
            Disposition::Busy,
            Disposition::NoAnswer,
            Disposition::Failed,
            Disposition::Cancelled,
        ] {
            assert_eq!(Disposition::parse(d.as_str()), Some(d));
        }
        for h in [HangupBy::Caller, HangupBy::Callee, HangupBy::System] {
            assert_eq!(HangupBy::parse(&h.to_string()), Some(h));
        }
        for k in [CallKind::Proxied, CallKind::Pbx] {
            assert_eq!(CallKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Disposition::parse("answered "), None);
    }

    #[test]
    fn final_statuses_map_to_dispositions_and_parties() {
        use Disposition::*;
        let cases = [
            (200, false, Answered, HangupBy::System),
            (486, true, Busy, HangupBy::Callee),
            (600, false, Busy, HangupBy::Callee),
            (603, true, Busy, HangupBy::Callee),
            (487, true, Cancelled, HangupBy::Caller),
            (408, true, NoAnswer, HangupBy::System),
            (480, true, NoAnswer, HangupBy::Callee),
            (480, false, Failed, HangupBy::System),
            (404, false, Failed, HangupBy::System),
            (500, true, Failed, HangupBy::System),
        ];
        for (status, rang, d, by) in cases {
            assert_eq!(Disposition::from_final_status(status, rang), d, "{status}");
            if status >= 300 {
                assert_eq!(HangupBy::for_final_status(status, rang), by, "{status}");
            }
        }
    }

    #[test]
    fn answered_call_with_a_losing_leg() {
        let mut c = call();
        let desk = c.leg_started("sip:bob@192.0.2.1", "cid", 10_005);
        let mobile = c.leg_started("sip:bob@192.0.2.2", "cid", 10_006);
        assert_eq!(c.parties(), ("alice", "201", Some("bob")));
        c.leg_ringing(desk);
        c.ringing();
        c.leg_answered(desk, 12_000);
        assert!(c.answered(12_000));
        assert!(!c.answered(13_000), "once");
        c.leg_ended(mobile, Some(487), 12_010);
        c.leg_ended(desk, Some(500), 12_020); // an answered leg keeps its 200
        let r = c.finish_hangup(HangupBy::Callee, "BYE", 20_001);
        assert_eq!(r.disposition, Disposition::Answered);
        assert_eq!(r.hangup_by, HangupBy::Callee);
        assert_eq!(r.billable_secs(), 9);
        assert_eq!(r.duration_ms(), 10_001);
        assert_eq!(r.call_ids, ["cid"]);
        assert_eq!(r.legs[0].status, Some(200));
        assert_eq!(r.legs[0].end_ms, 20_001);
        assert_eq!(r.legs[1].status, Some(487));
        assert_eq!(r.legs[1].end_ms, 12_010);
        assert!(r.involves("alice") && r.involves("201") && r.involves("bob"));
        assert!(!r.involves("carol"));
    }

    #[test]
    fn unanswered_calls() {
        let mut c = call();
        let leg = c.leg_started("sip:bob@192.0.2.1", "cid", 10_001);
        c.ringing();
        c.leg_ended(leg, Some(486), 11_000);
        let r = c.finish_unanswered(486, "Busy Here", 11_001);
        assert_eq!(
            (r.disposition, r.hangup_by, r.hangup_reason.as_str()),
            (Disposition::Busy, HangupBy::Callee, "486 Busy Here")
        );
        assert_eq!((r.billable_secs(), r.answer_ms), (0, None));

        let mut c = call();
        let leg = c.leg_started("sip:bob@192.0.2.1", "b2b-leg-1", 10_001);
        let r = c.clone().finish_unanswered(487, "", 10_002);
        assert_eq!(
            (r.disposition, r.hangup_reason.as_str()),
            (Disposition::Cancelled, "487")
        );
        assert_eq!(r.call_ids, ["cid", "b2b-leg-1"]);
        // Still ringing when the caller cancelled: the leg was cancelled too.
        assert_eq!(r.legs[0].status, Some(487));
        assert_eq!(r.legs[0].end_ms, 10_002);
        // Closed before any final response: the open leg ends with the call, unknown.
        let r = c
            .clone()
            .finish_hangup(HangupBy::System, "server stopped", 10_003);
        assert_eq!((r.legs[0].status, r.legs[0].end_ms), (None, 10_003));
        c.leg_ended(leg, None, 10_500);
        let r = c.finish_hangup(HangupBy::System, "server stopped", 9_000);
        assert_eq!(r.disposition, Disposition::Failed);
        assert_eq!(r.end_ms, 10_000, "never before the start");
    }

    #[test]
    fn billable_seconds_round_up_a_started_second() {
        let mut c = call();
        c.answered(10_000);
        assert_eq!(
            c.clone()
                .finish_hangup(HangupBy::Caller, "BYE", 10_000)
                .billable_secs(),
            0
        );
        assert_eq!(
            c.clone()
                .finish_hangup(HangupBy::Caller, "BYE", 10_001)
                .billable_secs(),
            1
        );
        assert_eq!(
            c.clone()
                .finish_hangup(HangupBy::Caller, "BYE", 12_000)
                .billable_secs(),
            2
        );
        let r = c.finish_hangup(HangupBy::Caller, "BYE", 5_000);
        assert_eq!(
            (r.answer_ms, r.end_ms, r.billable_secs()),
            (Some(10_000), 10_000, 0)
        );
    }

    #[test]
    fn sinks() {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut boxed: Box<dyn RecordSink> = Box::new(shared.clone());
        boxed.record(call().finish_hangup(HangupBy::System, "stop", 10_000));
        assert_eq!(shared.lock().unwrap().len(), 1);
    }
}
