//! Call transfer, both ways: REFER (RFC 3515) with its implicit subscription reported by
//! NOTIFYs of `message/sipfrag` (RFC 3420), Referred-By (RFC 3892) and Replaces (RFC
//! 3891).
//!
//! - Transferor: [`UserAgent::transfer`] sends a REFER in a call's dialog (blind:
//!   `Refer-To: <target>`); an attended transfer holds the call, places a consult call,
//!   and once that is answered sends a REFER whose Refer-To carries
//!   `?Replaces=<consult Call-ID>;to-tag=..;from-tag=..`. The NOTIFYs that follow say
//!   how the transferee's new call goes; a 2xx ends our call (`ended: transferred`).
//! - Transferee: a REFER in an answered call is accepted (202) and a NOTIFY `100
//!   Trying` sent at once; a new call goes to the Refer-To URI with Referred-By (and
//!   Replaces when the URI has one); its answer is NOTIFYed `200 OK` (terminating the
//!   subscription) and the old call hung up unless the transferor does so first; its
//!   failure is NOTIFYed with its status and the old call stays.
//! - Target: an INVITE with Replaces that names a confirmed call of ours is answered
//!   at once (whatever the phone's task or its room for calls) and the replaced call
//!   hung up (`ended: replaced`).
//!
//! `switchboard phone` scripts it with a [`TransferScript`] (`--transfer-to`,
//! `--consult`, `--transfer-after`), and Enter transfers the call up.

use super::*;
use std::path::Path;

/// How long the transferee leaves the transferor to hang up the old call once the new
/// one is answered, before hanging it up itself (both may; this spares a crossed BYE).
const TRANSFEREE_HANG_UP_AFTER: Duration = Duration::from_secs(2);

/// How long the transferor leaves the target to end the consult call it replaced
/// (RFC 3891 §3: the target sends the BYE) before hanging it up itself.
const CONSULT_HANG_UP_AFTER: Duration = Duration::from_secs(3);

/// The longest a REFER's implicit subscription lasts, in our NOTIFYs' Subscription-State.
const REFER_SUBSCRIPTION_SECS: u32 = 60;

/// What the person asked the phone to do with an answered call: `--transfer-to`
/// (blind), `--consult` (attended) and `--transfer-after`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransferScript {
    /// Blind transfer: where to send the far end (a SIP URI); Enter transfers there too.
    pub to: Option<String>,
    /// Attended transfer: whom to consult (a SIP URI), the first call on hold meanwhile.
    pub consult: Option<String>,
    /// Seconds after the first call's answer to hold it and call `consult`.
    pub consult_after: f64,
    /// Seconds after the answer to send the REFER: the first call's for a blind
    /// transfer, the consult call's for an attended one. `None`: on Enter only.
    pub after: Option<f64>,
}

/// A step of a transfer, as a call timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferStep {
    /// Hold the call and place the consult call.
    Consult,
    /// Send the REFER: blind from the first call, attended from the consult call.
    Refer,
    /// Transferee: the transfer succeeded and the transferor did not hang up: we do.
    HangUpTransferred,
    /// Transferor: the target took our consult call over but did not end it: we do.
    HangUpConsult,
}

/// The transfers under way, both ways.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    script: Option<TransferScript>,
    /// Transferor: calls whose REFER went out, with the consult call its Replaces
    /// names (attended).
    referring: HashMap<CallId, Option<CallId>>,
    /// Transferor: each consult call, with the call held while it is up.
    consults: HashMap<CallId, CallId>,
    /// Transferee: each call placed for a REFER, with the call the REFER came in (told
    /// of its progress by NOTIFY).
    placed: HashMap<CallId, CallId>,
    /// Transferee: NOTIFYs owed for calls placed for a REFER that ended unanswered:
    /// (the REFER's call, the sipfrag status line).
    failed: Vec<(CallId, String)>,
    /// Transferor: held calls whose consult call ended before any transfer: resumed.
    resume: Vec<CallId>,
}

/// A sipfrag status line for `status`: `SIP/2.0 200 OK`.
fn sipfrag(status: u16, reason: &str) -> String {
    let reason = if reason.trim().is_empty() {
        default_reason(status)
    } else {
        reason.trim()
    };
    format!("SIP/2.0 {status} {reason}")
}

fn default_reason(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200..=299 => "OK",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "",
    }
}

/// The status of a sipfrag body's first line (`SIP/2.0 180 Ringing`), with its text.
fn sipfrag_status(body: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let code: u16 = rest.get(..3)?.parse().ok()?;
    Some((code, line.to_owned()))
}

/// The URI of a Refer-To value (`<sip:c@x?Replaces=..>`, `"C" <sip:..>;p=1` or a bare
/// URI) and the headers its `?` part carries, percent-decoded (RFC 3261 §19.1.1).
fn refer_target(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let value = value.trim();
    let uri = match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        (None, None) => value.split(';').next().unwrap_or(value),
        _ => return None,
    };
    let (target, headers) = match uri.split_once('?') {
        Some((t, h)) => (t, h),
        None => (uri, ""),
    };
    let parsed = sip_core::Uri::parse(target.trim()).ok()?;
    parsed.as_sip()?;
    let headers = headers
        .split('&')
        .filter(|h| !h.is_empty())
        .filter_map(|h| {
            let (name, v) = h.split_once('=')?;
            Some((percent_decode(name)?, percent_decode(v)?))
        })
        .collect();
    Some((target.trim().to_owned(), headers))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes what a URI header value may not hold as it is (RFC 3261 §25.1 `hvalue`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()[]/:+$".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Replaces value's dialog: (Call-ID, to-tag, from-tag, early-only).
fn parse_replaces(value: &str) -> Option<(String, String, String, bool)> {
    let mut parts = value.split(';');
    let call_id = parts.next()?.trim().to_owned();
    let (mut to_tag, mut from_tag, mut early_only) = (None, None, false);
    for p in parts {
        let (name, v) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => (p.trim(), ""),
        };
        if name.eq_ignore_ascii_case("to-tag") {
            to_tag = Some(v.to_owned());
        } else if name.eq_ignore_ascii_case("from-tag") {
            from_tag = Some(v.to_owned());
        } else if name.eq_ignore_ascii_case("early-only") {
            early_only = true;
        }
    }
    if call_id.is_empty() {
        return None;
    }
    Some((call_id, to_tag?, from_tag?, early_only))
}

/// A recording's path for call number `n` beside another call's: `{n}` replaced, or
/// `-n` before the extension (`a.wav` -> `a-2.wav`), so that two calls up at once never
/// write one file.
pub(crate) fn numbered_recording(path: &Path, n: u64) -> PathBuf {
    let text = path.to_string_lossy();
    if text.contains("{n}") {
        return PathBuf::from(text.replace("{n}", &n.to_string()));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

impl Transfers {
    /// Whether no transfer is under way either way (the script aside).
    pub(crate) fn is_idle(&self) -> bool {
        self.referring.is_empty()
            && self.consults.is_empty()
            && self.placed.is_empty()
            && self.failed.is_empty()
            && self.resume.is_empty()
    }
}

impl UserAgent {
    /// What to do with answered calls: transfer them blind or attended, after a time
    /// or on Enter (see [`TransferScript`]).
    pub fn set_transfer_script(&mut self, script: TransferScript) {
        self.transfers.script = Some(script);
    }

    /// Transfers call `cid` (answered) to `target` (a SIP URI), blind: a REFER in its
    /// dialog with Refer-To and Referred-By. The NOTIFYs that follow are printed; a
    /// success ends the call.
    pub fn transfer(&mut self, cid: CallId, target: &str, now: Instant) {
        let refer_to = format!("<{target}>");
        self.send_refer(cid, refer_to, target, None, now);
    }

    /// Transfers call `cid` to the far end of our answered call `consult`, attended:
    /// the REFER's Refer-To names the consult call's dialog in a Replaces header, so
    /// that the transferee's call takes the consult call's place at its far end.
    pub fn transfer_to_call(&mut self, cid: CallId, consult: CallId, now: Instant) {
        let Some(c) = self.call(consult) else {
            return;
        };
        let answered = c.state == CallState::Answered;
        let (Some(id), Some(target)) = (
            c.dialog.clone(),
            c.script.as_ref().map(|t| t.target.clone()),
        ) else {
            self.out.call_event(
                cid,
                "transfer failed",
                Some("the consult call has no dialog"),
                &[],
            );
            return;
        };
        if !answered {
            self.out.call_event(
                cid,
                "transfer failed",
                Some("the consult call is not answered"),
                &[],
            );
            return;
        }
        // RFC 3891 §3: the to-tag is the target's own tag, the from-tag ours.
        let replaces = format!(
            "{};to-tag={};from-tag={}",
            id.call_id, id.remote_tag, id.local_tag
        );
        let refer_to = format!("<{target}?Replaces={}>", percent_encode(&replaces));
        self.send_refer(cid, refer_to, &target, Some(consult), now);
    }

    fn send_refer(
        &mut self,
        cid: CallId,
        refer_to: String,
        target: &str,
        consult: Option<CallId>,
        now: Instant,
    ) {
        let Some(call) = self.call(cid) else {
            return;
        };
        let dialog = call.dialog.clone();
        if call.state != CallState::Answered || self.transfers.referring.contains_key(&cid) {
            self.out.call_event(
                cid,
                "transfer failed",
                Some("the call is not up, or a transfer is under way"),
                &[],
            );
            return;
        }
        let Some(id) = dialog else {
            return;
        };
        let referred_by = format!("<{}>", self.aor());
        let built = self
            .dialogs
            .request(&id, &Method::Refer)
            .and_then(|(b, flow)| {
                let msg = b
                    .header("Refer-To", &refer_to)
                    .header("Referred-By", &referred_by)
                    .build()?;
                Ok((msg, flow))
            });
        let (msg, flow) = match built {
            Ok(r) => r,
            Err(e) => {
                let why = format!("cannot build the REFER: {e}");
                self.out.call_event(cid, "transfer failed", Some(&why), &[]);
                return;
            }
        };
        match self.txl.send_request(now, msg, flow) {
            Ok(key) => {
                self.pending.insert(key, Pending::Refer(cid));
                self.transfers.referring.insert(cid, consult);
                let kind = if consult.is_some() {
                    "attended"
                } else {
                    "blind"
                };
                self.out.call_event(
                    cid,
                    "transferring",
                    Some(&format!("{target} ({kind})")),
                    &[("target", json!(target)), ("kind", json!(kind))],
                );
            }
            Err(e) => {
                let why = format!("REFER not sent: {e}");
                self.out.call_event(cid, "transfer failed", Some(&why), &[]);
            }
        }
    }

    /// The transferee's answer to our REFER: 202 accepts it (the NOTIFYs follow);
    /// anything else refuses it, and the call stays as it is.
    pub(super) fn on_refer_response(&mut self, cid: CallId, response: &Message, _now: Instant) {
        let status = response.status().unwrap_or(0);
        let line = sipfrag(status, response.reason().unwrap_or(""));
        let fields = [("status", json!(status))];
        match status {
            0..=199 => {}
            200..=299 => self
                .out
                .call_event(cid, "transfer accepted", Some(&line), &fields),
            _ => {
                self.transfers.referring.remove(&cid);
                self.out
                    .call_event(cid, "transfer failed", Some(&line), &fields);
            }
        }
    }

    /// Our REFER got no answer (or could not be sent).
    pub(super) fn on_refer_failed(&mut self, cid: CallId, why: &str, _now: Instant) {
        if self.transfers.referring.remove(&cid).is_some() {
            self.out
                .call_event(cid, "transfer failed", Some(&format!("REFER: {why}")), &[]);
        }
    }

    /// A NOTIFY in call `cid`'s dialog: how the transfer we asked for goes (RFC 3515
    /// §2.4.5). A 2xx in its sipfrag hangs our call up; a failure leaves it.
    pub(super) fn on_notify(
        &mut self,
        cid: CallId,
        key: TransactionKey,
        request: &Message,
        now: Instant,
    ) {
        let event = request.get(HeaderName::Event).map(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        if event.as_deref() != Some("refer") {
            self.respond(key, request, 489, &[], None, now);
            return;
        }
        let Some(&consult) = self.transfers.referring.get(&cid) else {
            // No REFER of ours in this dialog: no such subscription.
            self.respond(key, request, 481, &[], None, now);
            return;
        };
        self.respond(key, request, 200, &[], None, now);
        let terminated = request
            .get(HeaderName::SubscriptionState)
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        let Some((status, line)) = sipfrag_status(request.body()) else {
            if terminated {
                self.transfers.referring.remove(&cid);
                self.out.call_event(
                    cid,
                    "transfer failed",
                    Some("the transferee ended the subscription without a result"),
                    &[],
                );
            }
            return;
        };
        let fields = [("status", json!(status))];
        match status {
            0..=199 => self
                .out
                .call_event(cid, "transfer progress", Some(&line), &fields),
            200..=299 => {
                self.transfers.referring.remove(&cid);
                self.out
                    .call_event(cid, "transferred", Some(&line), &fields);
                if let Some(c) = self.call_mut(cid) {
                    c.cancelled = Some(("transferred", exit::OK));
                }
                self.hang_up(cid, now);
                if let Some(consult) = consult {
                    self.arm_call(
                        consult,
                        now + CONSULT_HANG_UP_AFTER,
                        CallTimer::Transfer(TransferStep::HangUpConsult),
                    );
                }
            }
            _ => {
                self.transfers.referring.remove(&cid);
                self.out
                    .call_event(cid, "transfer failed", Some(&line), &fields);
            }
        }
    }

    /// A REFER in call `cid`'s dialog (we are the transferee): accepted with 202 and a
    /// NOTIFY `100 Trying`, then a new call to the Refer-To URI with Referred-By (and
    /// Replaces when the URI carries one), whose progress is NOTIFYed.
    pub(super) fn on_refer(
        &mut self,
        cid: CallId,
        key: TransactionKey,
        request: &Message,
        now: Instant,
    ) {
        let mut values = request.get_all(HeaderName::ReferTo);
        let (Some(value), None) = (values.next(), values.next()) else {
            // RFC 3515 §2.4.1: exactly one Refer-To.
            self.respond(key, request, 400, &[], None, now);
            return;
        };
        // A target we could not even start a call to (a host name without a server to
        // resolve it) is refused here, not reported later.
        let Some((target, headers)) = refer_target(value).filter(|(t, _)| self.flow_for(t).is_ok())
        else {
            self.respond(key, request, 400, &[], None, now);
            return;
        };
        let Some(old) = self.call(cid) else {
            return;
        };
        let answered = old.state == CallState::Answered;
        // The new call carries on the old one's audio, recording beside it.
        let n = self.next_call;
        let task = CallTask {
            target: target.clone(),
            play: old.play.clone(),
            record: old.record.as_deref().map(|p| numbered_recording(p, n)),
            dtmf: None,
            dtmf_after: 0.0,
            hold_after: None,
            resume_after: None,
            hold_with_update: false,
            hangup_after: old.script.as_ref().and_then(|t| t.hangup_after),
            hold_inactive: false,
            change_codec: None,
            answer_timeout: old.script.as_ref().map_or(60.0, |t| t.answer_timeout),
        };
        if !answered {
            self.respond(key, request, 603, &[], None, now);
            return;
        }
        if self.needs_media_port() {
            // No RTP session for the new call yet: the transferor may try again.
            self.respond(
                key,
                request,
                503,
                &[("Retry-After", "1".to_owned())],
                None,
                now,
            );
            return;
        }
        let referred_by = request
            .get(HeaderName::ReferredBy)
            .map(str::to_owned)
            .or_else(|| request.from().ok().map(|f| format!("<{}>", f.uri_text)));
        let mut extra: Vec<(&'static str, String)> = Vec::new();
        if let Some(r) = &referred_by {
            extra.push(("Referred-By", r.clone()));
        }
        for (name, value) in &headers {
            if name.eq_ignore_ascii_case("Replaces") {
                extra.push(("Replaces", value.clone()));
            }
        }
        self.respond(key, request, 202, &[], None, now);
        let by = referred_by.unwrap_or_default();
        self.out.call_event(
            cid,
            "transfer requested",
            Some(&format!("to {target} by {by}")),
            &[("target", json!(target)), ("referred_by", json!(by))],
        );
        self.notify_refer(cid, "SIP/2.0 100 Trying", false, now);
        match self.place_call_with(task, extra, now) {
            Some(new) => {
                self.transfers.placed.insert(new, cid);
            }
            None => self.notify_refer(cid, "SIP/2.0 503 Service Unavailable", true, now),
        }
    }

    /// Sends the NOTIFY of a REFER's implicit subscription in call `cid`'s dialog: the
    /// new call's status as a sipfrag, the subscription ended with a final status.
    fn notify_refer(&mut self, cid: CallId, status_line: &str, terminated: bool, now: Instant) {
        let Some(id) = self.call(cid).and_then(|c| c.dialog.clone()) else {
            return;
        };
        let state = if terminated {
            "terminated;reason=noresource".to_owned()
        } else {
            format!("active;expires={REFER_SUBSCRIPTION_SECS}")
        };
        let body = Bytes::from(format!("{status_line}\r\n"));
        let built = self
            .dialogs
            .request(&id, &Method::Notify)
            .and_then(|(b, flow)| {
                let msg = b
                    .header("Event", "refer")
                    .header("Subscription-State", state)
                    .body("message/sipfrag;version=2.0", body)
                    .build()?;
                Ok((msg, flow))
            });
        match built {
            Ok((msg, flow)) => match self.txl.send_request(now, msg, flow) {
                Ok(key) => {
                    self.pending.insert(key, Pending::Other);
                }
                Err(e) => tracing::debug!("NOTIFY not sent: {e}"),
            },
            Err(e) => tracing::debug!("NOTIFY not built: {e}"),
        }
    }

    /// A response to the INVITE of call `cid`: kept for a transfer's NOTIFY, and a
    /// provisional one NOTIFYed at once when the call was placed for a REFER.
    pub(super) fn transfer_progress(&mut self, cid: CallId, response: &Message, now: Instant) {
        let status = response.status().unwrap_or(0);
        let reason = response.reason().unwrap_or("").to_owned();
        if let Some(c) = self.call_mut(cid) {
            c.last_status = Some((status, reason.clone()));
        }
        if (101..200).contains(&status)
            && let Some(&origin) = self.transfers.placed.get(&cid)
        {
            self.notify_refer(origin, &sipfrag(status, &reason), false, now);
        }
    }

    /// Call `cid` was answered: a call placed for a REFER reports success and ends the
    /// old call; a call of ours starts the person's transfer script.
    pub(super) fn transfer_on_answer(&mut self, cid: CallId, now: Instant) {
        if let Some(origin) = self.transfers.placed.remove(&cid) {
            self.notify_refer(origin, "SIP/2.0 200 OK", true, now);
            if let Some(c) = self.call_mut(origin) {
                c.cancelled = Some(("transferred", exit::OK));
            }
            let target = self
                .call(cid)
                .and_then(|c| c.script.as_ref())
                .map(|t| t.target.clone())
                .unwrap_or_default();
            self.out.call_event(
                origin,
                "transferred",
                Some(&format!("to {target}")),
                &[("target", json!(target))],
            );
            self.arm_call(
                origin,
                now + TRANSFEREE_HANG_UP_AFTER,
                CallTimer::Transfer(TransferStep::HangUpTransferred),
            );
            return;
        }
        let Some(script) = self.transfers.script.clone() else {
            return;
        };
        if self.transfers.consults.contains_key(&cid) {
            if let Some(after) = script.after {
                self.arm_call(
                    cid,
                    now + secs(after),
                    CallTimer::Transfer(TransferStep::Refer),
                );
            }
            return;
        }
        if self.transfers.consults.values().any(|held| *held == cid) {
            return;
        }
        if script.consult.is_some() {
            self.arm_call(
                cid,
                now + secs(script.consult_after),
                CallTimer::Transfer(TransferStep::Consult),
            );
        } else if let (Some(_), Some(after)) = (&script.to, script.after) {
            self.arm_call(
                cid,
                now + secs(after),
                CallTimer::Transfer(TransferStep::Refer),
            );
        }
    }

    pub(super) fn on_transfer_step(&mut self, cid: CallId, step: TransferStep, now: Instant) {
        match step {
            TransferStep::Consult => self.consult(cid, now),
            TransferStep::Refer => {
                if let Some(&held) = self.transfers.consults.get(&cid) {
                    self.transfer_to_call(held, cid, now);
                } else if let Some(to) = self.transfers.script.as_ref().and_then(|s| s.to.clone()) {
                    self.transfer(cid, &to, now);
                }
            }
            TransferStep::HangUpTransferred => self.hang_up(cid, now),
            TransferStep::HangUpConsult => {
                if let Some(c) = self.call_mut(cid) {
                    c.cancelled = Some(("replaced", exit::OK));
                }
                self.hang_up(cid, now);
            }
        }
    }

    /// Attended transfer, first half: holds call `cid` and calls the consult target.
    fn consult(&mut self, cid: CallId, now: Instant) {
        let Some(target) = self
            .transfers
            .script
            .as_ref()
            .and_then(|s| s.consult.clone())
        else {
            return;
        };
        let Some(held) = self.call(cid) else {
            return;
        };
        if held.state != CallState::Answered {
            return;
        }
        let n = self.next_call;
        let task = CallTask {
            target: target.clone(),
            play: held.play.clone(),
            record: held.record.as_deref().map(|p| numbered_recording(p, n)),
            dtmf: None,
            dtmf_after: 0.0,
            hold_after: None,
            resume_after: None,
            hold_with_update: false,
            hangup_after: None,
            hold_inactive: false,
            change_codec: None,
            answer_timeout: 60.0,
        };
        self.modify(cid, Direction::SendOnly, now);
        self.out.call_event(
            cid,
            "consulting",
            Some(&target),
            &[("target", json!(target))],
        );
        if self.needs_media_port() {
            self.out.call_event(
                cid,
                "transfer failed",
                Some("no RTP port for the consult call"),
                &[],
            );
            self.transfers.resume.push(cid);
            return;
        }
        match self.place_call_with(task, Vec::new(), now) {
            Some(consult) => {
                self.transfers.consults.insert(consult, cid);
            }
            None => self.transfers.resume.push(cid),
        }
    }

    /// Enter during a call: transfers it (attended when a consult call is answered,
    /// else blind to `--transfer-to`).
    pub(super) fn transfer_on_enter(&mut self, now: Instant) {
        let Some(script) = self.transfers.script.clone() else {
            return;
        };
        let consult = self
            .transfers
            .consults
            .iter()
            .find(|(c, _)| {
                self.call(**c)
                    .is_some_and(|c| c.state == CallState::Answered)
            })
            .map(|(c, held)| (*c, *held));
        if let Some((consult, held)) = consult {
            self.transfer_to_call(held, consult, now);
            return;
        }
        let Some(to) = script.to else {
            return;
        };
        let up = self
            .calls
            .values()
            .find(|c| {
                c.state == CallState::Answered && !self.transfers.referring.contains_key(&c.id)
            })
            .map(|c| c.id);
        if let Some(cid) = up {
            self.transfer(cid, &to, now);
        }
    }

    /// Call `call` has ended: what transfers it was part of learn it.
    pub(super) fn transfer_call_ended(&mut self, call: &Call) {
        let t = &mut self.transfers;
        let id = call.id;
        if let Some(origin) = t.placed.remove(&id) {
            let line = match &call.last_status {
                Some((status, reason)) if *status >= 300 => sipfrag(*status, reason),
                _ => "SIP/2.0 408 Request Timeout".to_owned(),
            };
            t.failed.push((origin, line));
        }
        t.placed.retain(|_, origin| *origin != id);
        // A REFER naming a consult call stays under way when that call ends: the target
        // ends it once the transferee's call replaced it, often before the NOTIFY of
        // success reaches us.
        t.referring.remove(&id);
        if let Some(held) = t.consults.remove(&id) {
            // The consult call ended before any transfer of the held call: back to it.
            if !t.referring.contains_key(&held) {
                t.resume.push(held);
            }
        }
        t.consults.retain(|_, held| *held != id);
    }

    /// Sends what ended calls left owed: NOTIFYs of failed transfers, resumptions of
    /// held calls. `true` if there was anything.
    pub(super) fn pump_transfers(&mut self, now: Instant) -> bool {
        let failed = std::mem::take(&mut self.transfers.failed);
        let resume = std::mem::take(&mut self.transfers.resume);
        let any = !failed.is_empty() || !resume.is_empty();
        for (origin, line) in failed {
            self.notify_refer(origin, &line, true, now);
            self.out
                .call_event(origin, "transfer failed", Some(&line), &[]);
        }
        for cid in resume {
            if self
                .call(cid)
                .is_some_and(|c| c.held_by_us || c.wanted != Direction::SendRecv)
            {
                self.modify(cid, Direction::SendRecv, now);
            }
        }
        any
    }

    /// The call an INVITE's Replaces header names (RFC 3891 §3): `Ok(None)` without
    /// one, `Err(status)` to refuse the INVITE with (481 no such dialog, 486 a
    /// confirmed dialog with `early-only`, 603 one already ending).
    pub(super) fn replaced_call(&self, request: &Message) -> Result<Option<CallId>, u16> {
        let Some(value) = request.get_by_name("Replaces") else {
            return Ok(None);
        };
        let (call_id, to_tag, from_tag, early_only) = parse_replaces(value).ok_or(400u16)?;
        let cid = *self.by_call_id.get(&call_id).ok_or(481u16)?;
        let call = self.call(cid).ok_or(481u16)?;
        let matches = call.dialog.as_ref().is_some_and(|d| {
            d.local_tag == to_tag && d.remote_tag == from_tag && d.call_id == call_id
        });
        if !matches {
            return Err(481);
        }
        match call.state {
            CallState::Answered if early_only => Err(486),
            CallState::Answered => Ok(Some(cid)),
            CallState::Ending => Err(603),
            // An early dialog: we take over only confirmed calls.
            CallState::Setup => Err(481),
        }
    }

    /// What a phone whose task is not to answer does with an INVITE replacing call
    /// `old`: answers at once with the old call's audio.
    pub(super) fn answer_task_replacing(&self, old: CallId) -> AnswerTask {
        let old = self.call(old);
        AnswerTask {
            auto: true,
            play: old.and_then(|c| c.play.clone()),
            record: old.and_then(|c| c.record.clone()),
            reject: None,
            hangup_after: old
                .and_then(|c| c.script.as_ref())
                .and_then(|t| t.hangup_after),
            calls: None,
        }
    }

    /// The INVITE of call `cid` replaces call `old`: answered at once, and `old` hung
    /// up (`ended: replaced`).
    pub(super) fn answer_replacing(&mut self, cid: CallId, old: CallId, now: Instant) {
        let old_record = self.call(old).and_then(|c| c.record.clone());
        if let Some(c) = self.call_mut(cid)
            && c.record.is_some()
            && c.record == old_record
        {
            c.record = c.record.as_deref().map(|p| numbered_recording(p, cid.0));
        }
        self.out.call_event(
            cid,
            "replacing",
            Some(&old.to_string()),
            &[("replaces", json!(old.0))],
        );
        self.answer_ringing_call(cid, now);
        if let Some(c) = self.call_mut(old) {
            c.cancelled = Some(("replaced", exit::OK));
        }
        self.hang_up(old, now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn refer_to_values_and_their_replaces() {
        let (t, h) = refer_target(
            "<sip:carol@example.test?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2>",
        )
        .unwrap();
        assert_eq!(t, "sip:carol@example.test");
        assert_eq!(
            h,
            vec![(
                "Replaces".to_owned(),
                "abc@host;to-tag=1;from-tag=2".to_owned()
            )]
        );
        let (t, h) = refer_target("\"Carol\" <sip:carol@example.test;transport=tcp>;x=1").unwrap();
        assert_eq!(t, "sip:carol@example.test;transport=tcp");
        assert!(h.is_empty());
        assert_eq!(
            refer_target("sip:carol@example.test").unwrap().0,
            "sip:carol@example.test"
        );
        assert!(refer_target("<mailto:carol@example.test>").is_none());
        assert!(refer_target("<sip:carol@example.test").is_none());
    }

    #[test]
    fn replaces_encoded_in_a_uri_decodes_back() {
        let value = "a b@1.2.3.4;to-tag=x;from-tag=y";
        let encoded = percent_encode(value);
        assert!(!encoded.contains([';', '@', ' ', '=']));
        assert_eq!(percent_decode(&encoded).unwrap(), value);
        assert_eq!(
            parse_replaces("abc@h;to-tag=1;from-tag=2;early-only"),
            Some(("abc@h".into(), "1".into(), "2".into(), true))
        );
        assert_eq!(parse_replaces("abc@h;to-tag=1"), None);
    }

    #[test]
    fn sipfrag_lines() {
        assert_eq!(sipfrag(200, ""), "SIP/2.0 200 OK");
        assert_eq!(sipfrag(486, "Busy"), "SIP/2.0 486 Busy");
        assert_eq!(
            sipfrag_status(b"SIP/2.0 180 Ringing\r\n"),
            Some((180, "SIP/2.0 180 Ringing".into()))
        );
        assert_eq!(sipfrag_status(b"garbage"), None);
    }

    #[test]
    fn recordings_of_a_second_call_are_numbered() {
        assert_eq!(
            numbered_recording(Path::new("/tmp/a.wav"), 2),
            PathBuf::from("/tmp/a-2.wav")
        );
        assert_eq!(
            numbered_recording(Path::new("/tmp/c-{n}.wav"), 3),
            PathBuf::from("/tmp/c-3.wav")
        );
    }
}
