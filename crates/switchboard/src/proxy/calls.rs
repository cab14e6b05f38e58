//! Call detail records for the calls the proxy relays: a [`CallTracker`] follows each
//! out-of-dialog INVITE from a caller who authenticated (or is trusted) as the proxy
//! handles it, and hands one [`cdr::CallRecord`] per call to its [`RecordSink`] when
//! the call ends.
//!
//! What it is told, by the proxy, keyed by Call-ID:
//! - the INVITE (the caller, what was dialled, the From tag, the CSeq number) and the
//!   user the dial plan routed it to;
//! - each branch forwarded (a leg: its target) and each branch's responses;
//! - every response sent back to the caller: a provisional above 100 means ringing, the
//!   first 2xx the answer, a final non-2xx the end of an unanswered call (busy, no
//!   answer, cancelled, failed: see [`cdr::Disposition::from_final_status`]). Responses
//!   to re-INVITEs (another CSeq number) change nothing;
//! - a BYE forwarded in the dialog: its From tag says who hung up (the caller's tag,
//!   or the callee's).
//!
//! ACKs change nothing: a 2xx never ACKed ends with the callee's BYE like any other.
//! Bounded: at most `max_calls` calls are followed at once (more go unrecorded, and
//! are counted), and an answered call with no BYE after `max_call` (or an unanswered one
//! with no final response) is closed by [`CallTracker::sweep`] as ended by the system.
//!
//! Sans-IO: times are the transaction layer's instants, turned into wall-clock
//! milliseconds by a [`WallClock`] anchored by the caller.

use cdr::{CallKind, HangupBy, OpenCall, RecordSink};
use sip_core::transaction::TransactionKey;
use sip_core::{Message, Method};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wall-clock time for the monotonic instants the proxy runs on: one pair of readings
/// of both clocks, moved when the wall clock is seen to have stepped.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    unix_ms: u64,
}

/// How far the wall clock may drift from the anchored one before it is re-read: a
/// step of the system clock (NTP, an admin) shows in the records from then on.
const CLOCK_SLACK_MS: u64 = 2_000;

impl WallClock {
    /// `instant` and `unix_ms` read at the same moment.
    pub fn new(instant: Instant, unix_ms: u64) -> WallClock {
        WallClock { instant, unix_ms }
    }

    /// The Unix milliseconds at `at`.
    pub fn ms(&self, at: Instant) -> u64 {
        if at >= self.instant {
            let d = u64::try_from(at.duration_since(self.instant).as_millis()).unwrap_or(0);
            self.unix_ms.saturating_add(d)
        } else {
            let d = u64::try_from(self.instant.duration_since(at).as_millis()).unwrap_or(0);
            self.unix_ms.saturating_sub(d)
        }
    }

    /// A reading of the wall clock in seconds at `at`: re-anchors when it is more than
    /// [`CLOCK_SLACK_MS`] away from what the anchor says.
    pub fn observe(&mut self, at: Instant, unix_secs: u64) {
        let told = unix_secs.saturating_mul(1000);
        let ours = self.ms(at);
        // The reading is whole seconds: up to 999 ms behind the true time.
        if ours.abs_diff(told + 500) > CLOCK_SLACK_MS {
            *self = WallClock::new(at, told);
        }
    }
}

/// What bounds the tracker (`[cdr] max_calls`, `max_call_secs`).
#[derive(Debug, Clone, Copy)]
pub struct CallTrackerSettings {
    /// Calls followed at once at most.
    pub max_calls: usize,
    /// How long an answered call may last without a BYE before it is closed.
    pub max_call: Duration,
}

/// Counters for the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls followed now.
    pub in_progress: usize,
    /// Records handed to the sink.
    pub recorded: u64,
    /// Calls not followed because `max_calls` were.
    pub untracked: u64,
    /// Calls closed by the sweep for lack of a BYE or a final response.
    pub closed_by_sweep: u64,
}

/// One call followed.
struct Tracked {
    call: OpenCall,
    /// The caller's From tag: a BYE carrying it as its From tag comes from the caller.
    caller_tag: String,
    /// The INVITE's CSeq number: responses with another are to re-INVITEs.
    cseq: u32,
    started: Instant,
    answered: Option<Instant>,
    /// Branch (client transaction token) to leg index.
    legs: Vec<(u64, usize)>,
}

impl Tracked {
    fn leg(&self, branch: TransactionKey) -> Option<usize> {
        let token = branch.to_token();
        self.legs.iter().find(|(t, _)| *t == token).map(|&(_, i)| i)
    }
}

/// The calls in progress through the proxy; see the module documentation.
pub struct CallTracker {
    calls: HashMap<String, Tracked>,
    sink: Box<dyn RecordSink>,
    settings: CallTrackerSettings,
    clock: WallClock,
    stats: CallStats,
}

impl std::fmt::Debug for CallTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallTracker")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The user part of a SIP URI, decoded, else the URI as written.
fn party(uri: &sip_core::Uri<'_>, text: &str) -> String {
    uri.as_sip().and_then(|u| u.user_decoded()).map_or_else(
        || text.to_owned(),
        |u| String::from_utf8_lossy(&u).into_owned(),
    )
}

/// The Call-ID and CSeq of a message, when it has them.
fn ids(msg: &Message) -> Option<(&str, sip_core::headers::CSeq)> {
    Some((msg.call_id().ok()?, msg.cseq().ok()?))
}

impl CallTracker {
    /// A tracker handing records to `sink`.
    pub fn new(
        settings: CallTrackerSettings,
        clock: WallClock,
        sink: Box<dyn RecordSink>,
    ) -> CallTracker {
        CallTracker {
            calls: HashMap::new(),
            sink,
            settings,
            clock,
            stats: CallStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> CallStats {
        CallStats {
            in_progress: self.calls.len(),
            ..self.stats
        }
    }

    /// An out-of-dialog INVITE from a caller who authenticated or is trusted, about to
    /// be routed; `dialled` is what its Request-URI names. The INVITE of a call
    /// followed already (a spiral through us) changes nothing.
    pub fn invite(&mut self, now: Instant, unix_secs: u64, request: &Message, dialled: &str) {
        self.clock.observe(now, unix_secs);
        let (Some((call_id, cseq)), Ok(from)) = (ids(request), request.from()) else {
            return;
        };
        if self.calls.contains_key(call_id) {
            return;
        }
        if self.calls.len() >= self.settings.max_calls {
            self.stats.untracked += 1;
            return;
        }
        let caller = party(&from.uri, from.uri_text);
        let call = OpenCall::new(
            CallKind::Proxied,
            &caller,
            dialled,
            call_id,
            self.clock.ms(now),
        );
        self.calls.insert(
            call_id.to_owned(),
            Tracked {
                call,
                caller_tag: from.tag().unwrap_or("").to_owned(),
                cseq: cseq.seq,
                started: now,
                answered: None,
                legs: Vec::new(),
            },
        );
    }

    /// The call of `request` is no longer the proxy's (the B2BUA took it, and records
    /// it): dropped without a record.
    pub fn forget(&mut self, request: &Message) {
        if let Ok(call_id) = request.call_id() {
            self.calls.remove(call_id);
        }
    }

    /// The dial plan routed the call of `request` to local user `callee`.
    pub fn routed_to(&mut self, request: &Message, callee: &str) {
        if let Some(t) = self.initial(request) {
            t.call.set_callee(callee);
        }
    }

    /// The call of `request` (its initial INVITE, not a re-INVITE) before its answer.
    fn initial(&mut self, request: &Message) -> Option<&mut Tracked> {
        let (call_id, cseq) = ids(request)?;
        let t = self.calls.get_mut(call_id)?;
        (cseq.method == Method::Invite && cseq.seq == t.cseq && t.answered.is_none()).then_some(t)
    }

    /// A branch of `request` went out in client transaction `branch`, to `target`.
    pub fn leg_started(
        &mut self,
        now: Instant,
        request: &Message,
        branch: TransactionKey,
        target: &str,
    ) {
        let at = self.clock.ms(now);
        let Some(t) = self.initial(request) else {
            return;
        };
        let call_id = request.call_id().unwrap_or("");
        let index = t.call.leg_started(target, call_id, at);
        t.legs.push((branch.to_token(), index));
    }

    /// Branch `branch` of `request` got a response `status` (or failed as if with it:
    /// 408 for a timeout, 503 for a transport error).
    pub fn leg_response(
        &mut self,
        now: Instant,
        request: &Message,
        branch: TransactionKey,
        status: u16,
    ) {
        let at = self.clock.ms(now);
        let Some((call_id, _)) = ids(request) else {
            return;
        };
        let Some(t) = self.calls.get_mut(call_id) else {
            return;
        };
        let Some(leg) = t.leg(branch) else {
            return;
        };
        match status {
            0..=100 => {}
            101..=199 => t.call.leg_ringing(leg),
            200..=299 => t.call.leg_answered(leg, at),
            _ => t.call.leg_ended(leg, Some(status), at),
        }
    }

    /// A response went back to the caller (relayed or ours).
    pub fn response_sent(&mut self, now: Instant, response: &Message) {
        let Some(status) = response.status() else {
            return;
        };
        let Some((call_id, cseq)) = ids(response) else {
            return;
        };
        if cseq.method != Method::Invite {
            return;
        }
        let Some(t) = self.calls.get_mut(call_id) else {
            return;
        };
        if cseq.seq != t.cseq || t.answered.is_some() {
            return; // a re-INVITE's, or another fork's 2xx
        }
        match status {
            0..=100 => {}
            101..=199 => t.call.ringing(),
            200..=299 => {
                t.call.answered(self.clock.ms(now));
                t.answered = Some(now);
            }
            _ => {
                let at = self.clock.ms(now);
                if let Some(t) = self.calls.remove(call_id) {
                    let reason = response.reason().unwrap_or("");
                    self.emit(t.call.finish_unanswered(status, reason, at));
                }
            }
        }
    }

    /// A BYE in the dialog of a call is forwarded: the call ends, hung up by whoever
    /// sent it.
    pub fn bye(&mut self, now: Instant, request: &Message) {
        let Some(call_id) = request.call_id().ok() else {
            return;
        };
        let answered = self
            .calls
            .get(call_id)
            .is_some_and(|t| t.answered.is_some());
        if !answered {
            // Before the answer the INVITE's final response ends the call.
            return;
        }
        let Some(t) = self.calls.remove(call_id) else {
            return;
        };
        let from_tag = request.from().ok().and_then(|f| f.tag().map(str::to_owned));
        let by = if from_tag.as_deref() == Some(t.caller_tag.as_str()) {
            HangupBy::Caller
        } else {
            HangupBy::Callee
        };
        let at = self.clock.ms(now);
        self.emit(t.call.finish_hangup(by, "BYE", at));
    }

    /// Closes the calls that outlived `max_call` with no BYE (or no final response),
    /// as ended by the system. Run now and then (the router's sweep).
    pub fn sweep(&mut self, now: Instant, unix_secs: u64) {
        self.clock.observe(now, unix_secs);
        let max = self.settings.max_call;
        let stale: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(t.answered.unwrap_or(t.started)) >= max)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(t) = self.calls.remove(&id) {
                self.stats.closed_by_sweep += 1;
                let why = if t.answered.is_some() {
                    format!("no BYE within {} s", max.as_secs())
                } else {
                    format!("no final response within {} s", max.as_secs())
                };
                let at = self.clock.ms(now);
                self.emit(t.call.finish_hangup(HangupBy::System, &why, at));
            }
        }
    }

    /// Closes every call in progress, as ended by the system for `reason` (the server
    /// is stopping).
    pub fn close_all(&mut self, now: Instant, reason: &str) {
        let at = self.clock.ms(now);
        let calls: Vec<Tracked> = self.calls.drain().map(|(_, t)| t).collect();
        for t in calls {
            self.emit(t.call.finish_hangup(HangupBy::System, reason, at));
        }
    }

    fn emit(&mut self, record: cdr::CallRecord) {
        self.stats.recorded += 1;
        self.sink.record(record);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cdr::{CallRecord, Disposition};
    use std::sync::{Arc, Mutex};

    type Records = Arc<Mutex<Vec<CallRecord>>>;

    fn tracker(max_calls: usize) -> (CallTracker, Records, Instant) {
        let records: Records = Arc::default();
        let t0 = Instant::now();
        let tracker = CallTracker::new(
            CallTrackerSettings {
                max_calls,
                max_call: Duration::from_secs(3600),
            },
            WallClock::new(t0, 1_000_000_000),
            Box::new(records.clone()),
        );
        (tracker, records, t0)
    }

    fn msg(text: &str) -> Message {
        Message::parse(text.replace('\n', "\r\n").into_bytes().into()).unwrap()
    }

    fn invite(call_id: &str, seq: u32) -> Message {
        msg(&format!(
            "INVITE sip:201@example.test SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa{seq}\n\
             From: <sip:alice@example.test>;tag=atag\n\
             To: <sip:201@example.test>\n\
             Call-ID: {call_id}\n\
             CSeq: {seq} INVITE\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n\n"
        ))
    }

    fn response(call_id: &str, seq: u32, method: &str, status: u16, reason: &str) -> Message {
        msg(&format!(
            "SIP/2.0 {status} {reason}\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa{seq}\n\
             From: <sip:alice@example.test>;tag=atag\n\
             To: <sip:201@example.test>;tag=btag\n\
             Call-ID: {call_id}\n\
             CSeq: {seq} {method}\n\
             Content-Length: 0\n\n"
        ))
    }

    fn bye(call_id: &str, from_tag: &str) -> Message {
        msg(&format!(
            "BYE sip:x@192.0.2.9 SIP/2.0\n\
             Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye\n\
             From: <sip:someone@example.test>;tag={from_tag}\n\
             To: <sip:other@example.test>;tag=other\n\
             Call-ID: {call_id}\n\
             CSeq: 9 BYE\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n\n"
        ))
    }

    fn key(n: u64) -> TransactionKey {
        TransactionKey::from_token(n)
    }

    /// An INVITE routed to bob with two legs, ringing on the first.
    fn ringing(tracker: &mut CallTracker, t0: Instant, call_id: &str) -> Message {
        let inv = invite(call_id, 2);
        tracker.invite(t0, 1_000_000, &inv, "201");
        tracker.routed_to(&inv, "bob");
        tracker.leg_started(t0, &inv, key(1), "sip:bob@192.0.2.5:5060");
        tracker.leg_started(t0, &inv, key(2), "sip:bob@192.0.2.6:5060");
        let ms100 = t0 + Duration::from_millis(100);
        tracker.leg_response(ms100, &inv, key(1), 180);
        tracker.response_sent(ms100, &response(call_id, 2, "INVITE", 180, "Ringing"));
        inv
    }

    #[test]
    fn answered_then_the_caller_hangs_up() {
        let (mut tr, records, t0) = tracker(10);
        let inv = ringing(&mut tr, t0, "c1");
        let at = |ms| t0 + Duration::from_millis(ms);
        tr.leg_response(at(2_000), &inv, key(1), 200);
        tr.response_sent(at(2_000), &response("c1", 2, "INVITE", 200, "OK"));
        tr.leg_response(at(2_010), &inv, key(2), 487);
        // A re-INVITE's answers and another fork's 2xx change nothing.
        tr.response_sent(
            at(3_000),
            &response("c1", 3, "INVITE", 491, "Request Pending"),
        );
        tr.response_sent(at(3_000), &response("c1", 2, "INVITE", 200, "OK"));
        assert_eq!(tr.stats().in_progress, 1);
        tr.bye(at(7_400), &bye("c1", "atag"));
        assert_eq!(tr.stats().in_progress, 0);
        let r = records.lock().unwrap().pop().unwrap();
        assert_eq!(r.kind, CallKind::Proxied);
        assert_eq!((r.caller.as_str(), r.dialled.as_str()), ("alice", "201"));
        assert_eq!(r.callee.as_deref(), Some("bob"));
        assert_eq!(r.disposition, Disposition::Answered);
        assert_eq!(
            (r.hangup_by, r.hangup_reason.as_str()),
            (HangupBy::Caller, "BYE")
        );
        assert_eq!(r.start_ms, 1_000_000_000);
        assert_eq!(r.answer_ms, Some(1_000_002_000));
        assert_eq!(r.end_ms, 1_000_007_400);
        assert_eq!(r.billable_secs(), 6);
        assert_eq!(r.legs.len(), 2);
        assert_eq!(
            (r.legs[0].status, r.legs[0].answer_ms),
            (Some(200), Some(1_000_002_000))
        );
        assert_eq!(
            (r.legs[1].status, r.legs[1].end_ms),
            (Some(487), 1_000_002_010)
        );
        assert_eq!(r.call_ids, ["c1"]);
    }

    #[test]
    fn answered_then_the_callee_hangs_up() {
        let (mut tr, records, t0) = tracker(10);
        ringing(&mut tr, t0, "c2");
        tr.response_sent(
            t0 + Duration::from_secs(1),
            &response("c2", 2, "INVITE", 200, "OK"),
        );
        tr.bye(t0 + Duration::from_secs(3), &bye("c2", "btag"));
        let r = records.lock().unwrap().pop().unwrap();
        assert_eq!(
            (r.disposition, r.hangup_by),
            (Disposition::Answered, HangupBy::Callee)
        );
        assert_eq!(r.billable_secs(), 2);
    }

    #[test]
    fn each_unanswered_disposition() {
        let cases = [
            (486, "Busy Here", true, Disposition::Busy, HangupBy::Callee),
            (603, "Decline", true, Disposition::Busy, HangupBy::Callee),
            (
                487,
                "Request Terminated",
                true,
                Disposition::Cancelled,
                HangupBy::Caller,
            ),
            (
                408,
                "Request Timeout",
                true,
                Disposition::NoAnswer,
                HangupBy::System,
            ),
            (
                480,
                "Temporarily Unavailable",
                true,
                Disposition::NoAnswer,
                HangupBy::Callee,
            ),
            (
                480,
                "Temporarily Unavailable",
                false,
                Disposition::Failed,
                HangupBy::System,
            ),
            (
                404,
                "Not Found",
                false,
                Disposition::Failed,
                HangupBy::System,
            ),
        ];
        for (status, reason, rings, disposition, by) in cases {
            let (mut tr, records, t0) = tracker(10);
            if rings {
                ringing(&mut tr, t0, "c");
            } else {
                tr.invite(t0, 1_000_000, &invite("c", 1), "201");
            }
            let seq = if rings { 2 } else { 1 };
            // A BYE before the answer ends nothing: the final response does.
            tr.bye(t0, &bye("c", "atag"));
            tr.response_sent(
                t0 + Duration::from_secs(2),
                &response("c", seq, "INVITE", status, reason),
            );
            let r = records.lock().unwrap().pop().unwrap();
            assert_eq!((r.disposition, r.hangup_by), (disposition, by), "{status}");
            assert_eq!(r.hangup_reason, format!("{status} {reason}"));
            assert_eq!(
                (r.answer_ms, r.billable_secs(), r.duration_ms()),
                (None, 0, 2_000)
            );
            assert_eq!(tr.stats().in_progress, 0);
        }
    }

    #[test]
    fn responses_to_other_requests_and_calls_are_ignored() {
        let (mut tr, records, t0) = tracker(10);
        ringing(&mut tr, t0, "c");
        tr.response_sent(t0, &response("c", 2, "CANCEL", 200, "OK"));
        tr.response_sent(t0, &response("other", 2, "INVITE", 486, "Busy Here"));
        tr.response_sent(t0, &response("c", 2, "INVITE", 100, "Trying"));
        assert!(records.lock().unwrap().is_empty());
        assert_eq!(tr.stats().in_progress, 1);
    }

    #[test]
    fn bounded_in_number_and_in_time() {
        let (mut tr, records, t0) = tracker(2);
        for id in ["a", "b", "c"] {
            tr.invite(t0, 1_000_000, &invite(id, 1), "201");
        }
        // The same INVITE again (a spiral) is the same call.
        tr.invite(t0, 1_000_000, &invite("a", 1), "201");
        assert_eq!(tr.stats().in_progress, 2);
        assert_eq!(tr.stats().untracked, 1);
        tr.response_sent(t0, &response("a", 1, "INVITE", 200, "OK"));
        let hour = Duration::from_secs(3600);
        tr.sweep(t0 + hour - Duration::from_secs(1), 1_003_599);
        assert!(records.lock().unwrap().is_empty());
        tr.sweep(t0 + hour, 1_003_600);
        let mut r = std::mem::take(&mut *records.lock().unwrap());
        r.sort_by_key(|r| r.answer_ms.is_some());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].hangup_reason, "no final response within 3600 s");
        assert_eq!(r[0].disposition, Disposition::Failed);
        assert_eq!(r[1].hangup_reason, "no BYE within 3600 s");
        assert_eq!(
            (r[1].disposition, r[1].hangup_by),
            (Disposition::Answered, HangupBy::System)
        );
        assert_eq!(r[1].billable_secs(), 3600);
        assert_eq!(tr.stats().closed_by_sweep, 2);
        tr.invite(t0 + hour, 1_003_600, &invite("d", 1), "201");
        tr.close_all(t0 + hour, "server stopped");
        let r = records.lock().unwrap().pop().unwrap();
        assert_eq!(
            (r.hangup_by, r.hangup_reason.as_str()),
            (HangupBy::System, "server stopped")
        );
        assert_eq!(tr.stats().recorded, 3);
    }

    #[test]
    fn the_wall_clock_follows_a_step() {
        let t0 = Instant::now();
        let mut c = WallClock::new(t0, 5_000_000);
        assert_eq!(c.ms(t0 + Duration::from_millis(1_234)), 5_001_234);
        c.observe(t0 + Duration::from_secs(10), 5_010);
        assert_eq!(
            c.ms(t0 + Duration::from_secs(10)),
            5_010_000,
            "no step: kept"
        );
        c.observe(t0 + Duration::from_secs(10), 6_000);
        assert_eq!(
            c.ms(t0 + Duration::from_secs(10)),
            6_000_000,
            "stepped: re-read"
        );
    }
}
