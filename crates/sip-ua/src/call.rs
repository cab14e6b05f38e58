//! Calls: placing one (INVITE, provisional and final responses, PRACK, CANCEL), the
//! media it starts, changing the session (hold and resume by re-INVITE or UPDATE, 491
//! glare, session refreshes), hanging up and ending. Each call is addressed by its
//! [`CallId`]; its dialog (ACKs, forks, the session timer) is the dialog layer's.

use super::*;

impl UserAgent {
    pub(super) fn new_call(
        &mut self,
        role: Role,
        call_id: String,
        local_tag: String,
        flow: Flow,
        media_port: u16,
    ) -> Call {
        let id = CallId(self.next_call);
        self.next_call += 1;
        let sid = u64::from(self.random_u32());
        let local_sdp = SessionDescription::new_audio_offer(
            &self.s.user,
            sid,
            self.local_ip(),
            media_port,
            &self.s.codecs,
        );
        Call {
            id,
            role,
            state: CallState::Setup,
            call_id,
            local_tag,
            invite: None,
            invite_out: None,
            invite_key: None,
            request: None,
            dialog: None,
            flow,
            media_port,
            media_started: false,
            local_sdp,
            oa: OfferAnswer::default(),
            remote: None,
            wanted: Direction::SendRecv,
            held_by_us: false,
            held_by_them: false,
            digits: String::new(),
            play: None,
            record: None,
            answered_at: None,
            cancelled: None,
            rseq_acked: None,
            ringing_printed: false,
            script: None,
            last_status: None,
        }
    }

    /// The script of a call we placed (hang up, hold, digits... after the answer).
    fn script(&self, cid: CallId) -> Option<&CallTask> {
        self.call(cid).and_then(|c| c.script.as_ref())
    }

    /// Files a new call under its id and its Call-ID.
    pub(super) fn insert_call(&mut self, call: Call) -> CallId {
        let cid = call.id;
        self.by_call_id.insert(call.call_id.clone(), cid);
        self.calls.insert(cid, call);
        cid
    }

    /// Places a call as `task` says (the media session bound ahead is its own, see
    /// [`UserAgent::set_media_port`]); `None` when it could not even start (printed as
    /// `ended: failed (...)`). A [`Task::Call`] places one at start; a user agent with
    /// room for more ([`UserAgent::set_max_calls`]) may place more.
    pub fn place_call(&mut self, task: CallTask, now: Instant) -> Option<CallId> {
        self.place_call_with(task, Vec::new(), now)
    }

    /// [`UserAgent::place_call`] with `extra` headers in the INVITE (a transfer's
    /// Referred-By and Replaces).
    pub(super) fn place_call_with(
        &mut self,
        task: CallTask,
        extra: Vec<(&'static str, String)>,
        now: Instant,
    ) -> Option<CallId> {
        let flow = match self.flow_for(&task.target) {
            Ok(f) => f,
            Err(e) => {
                self.out.event("ended", Some(&format!("failed ({e})")), &[]);
                self.finish(exit::FAILED);
                return None;
            }
        };
        let media = match self.take_media() {
            Ok(m) => m,
            Err(e) => {
                self.out
                    .event("ended", Some(&format!("failed (no RTP port: {e})")), &[]);
                self.finish(exit::FAILED);
                return None;
            }
        };
        let call_id = format!("{}@{}", self.ids.next_id(), self.local_ip());
        let local_tag = self.ids.tag();
        let mut call = self.new_call(Role::Uac, call_id.clone(), local_tag.clone(), flow, media);
        call.play = task.play.clone();
        call.record = task.record.clone();
        call.script = Some(task.clone());
        let _ = call.oa.send_offer();
        let sdp = Bytes::from(call.local_sdp.to_bytes());
        let mut headers = vec![
            ("Contact", format!("<{}>", self.contact_uri(flow.transport))),
            ("Allow", UA_ALLOW.to_owned()),
            ("Supported", "timer, 100rel, replaces".to_owned()),
        ];
        if let Some(se) = self.s.session_expires {
            headers.push(("Session-Expires", format!("{se};refresher=uac")));
            headers.push(("Min-SE", "90".to_owned()));
        }
        headers.extend(extra);
        let o = Outgoing {
            method: Method::Invite,
            uri: task.target.clone(),
            to: format!("<{}>", task.target),
            call_id,
            from_tag: local_tag,
            cseq: 1,
            headers,
            body: Some(("application/sdp", sdp)),
            auth: None,
            answered: Vec::new(),
            flow,
        };
        let cid = self.insert_call(call);
        self.out.call_event(
            cid,
            "calling",
            Some(&task.target),
            &[("target", json!(task.target))],
        );
        self.send_invite(cid, o, now);
        self.arm_call(
            cid,
            now + secs(task.answer_timeout),
            CallTimer::AnswerTimeout,
        );
        Some(cid)
    }

    pub(super) fn send_invite(&mut self, cid: CallId, o: Outgoing, now: Instant) {
        match self.send_outgoing(&o, now) {
            Ok((key, msg)) => {
                self.pending.insert(key, Pending::Invite(cid));
                let local = self.local_end(o.flow);
                if let Err(e) = self.dialogs.invite_sent(&msg, local) {
                    tracing::debug!("the INVITE forms no dialog: {e}");
                }
                if let Some(c) = self.call_mut(cid) {
                    c.invite = Some(msg);
                    c.invite_key = Some(key);
                    c.invite_out = Some(o);
                }
            }
            Err(e) => self.end_call(cid, &format!("failed ({e})"), exit::FAILED),
        }
    }

    pub(super) fn on_invite_response(
        &mut self,
        cid: CallId,
        key: TransactionKey,
        response: &Message,
        now: Instant,
    ) {
        let status = response.status().unwrap_or(0);
        let Some(call) = self.call(cid) else {
            return;
        };
        if call.invite_key != Some(key) {
            return;
        }
        let Some(invite_seq) = call
            .invite
            .as_ref()
            .and_then(|i| i.cseq().ok())
            .map(|c| c.seq)
        else {
            return;
        };
        self.transfer_progress(cid, response, now);
        // The dialog layer forms, confirms and ACKs the dialogs; the call follows.
        let outcome = self.dialogs.handle_response(now, response);
        self.send_dialog_transmits(now);
        match status {
            100 => self.out.call_event(cid, "trying", None, &[]),
            101..=199 => {
                let early = match outcome {
                    ResponseOutcome::Early(id) => Some(id),
                    _ => None,
                };
                let Some(call) = self.call_mut(cid) else {
                    return;
                };
                if call.dialog.is_none() {
                    call.dialog = early.clone();
                }
                if !call.ringing_printed || status == 183 {
                    call.ringing_printed = true;
                    let name = if status == 180 { "ringing" } else { "progress" };
                    self.out.call_event(
                        cid,
                        name,
                        Some(&status.to_string()),
                        &[("status", json!(status))],
                    );
                }
                let Some(call) = self.call_mut(cid) else {
                    return;
                };
                if has_sdp(response) && call.oa == OfferAnswer::LocalOffer {
                    let _ = call.oa.receive_answer();
                    self.out.call_event(cid, "early media", None, &[]);
                    self.apply_remote_sdp(cid, response.body(), now);
                }
                if let Some(id) = early {
                    self.maybe_prack(cid, &id, response, invite_seq, now);
                }
            }
            200..=299 => self.on_invite_2xx(cid, response, outcome, now),
            _ => {
                let Some(call) = self.call(cid) else {
                    return;
                };
                let cancelled = call.cancelled;
                if matches!(status, 401 | 407) {
                    let mut o = call.invite_out.clone();
                    if let Some(o) = o.as_mut()
                        && self.authenticate(o, response)
                    {
                        let o = o.clone();
                        self.send_invite(cid, o, now);
                        return;
                    }
                }
                let reason = response.reason().unwrap_or("").to_owned();
                let (what, code) = match cancelled {
                    Some((what, code)) if status == 487 => (what.to_owned(), code),
                    _ => {
                        let kind = match exit_for_status(status) {
                            exit::BUSY => "busy",
                            exit::NO_ANSWER => "no answer",
                            _ => "rejected",
                        };
                        (
                            format!("{kind} ({status} {reason})"),
                            exit_for_status(status),
                        )
                    }
                };
                self.end_call(cid, &what, code);
            }
        }
    }

    /// PRACKs a reliable provisional response (RFC 3262) in the early dialog `id` it
    /// created, once per RSeq.
    pub(super) fn maybe_prack(
        &mut self,
        cid: CallId,
        id: &DialogId,
        response: &Message,
        invite_seq: u32,
        now: Instant,
    ) {
        let Some(rseq) = response.rseq().ok().flatten() else {
            return;
        };
        if !tokens_contain(response, HeaderName::Require, "100rel") {
            return;
        }
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if call.rseq_acked.is_some_and(|r| r >= rseq) {
            return;
        }
        call.rseq_acked = Some(rseq);
        let Ok((b, flow)) = self.dialogs.request(id, &Method::Prack) else {
            return;
        };
        let Ok(prack) = b
            .header("RAck", format_args!("{rseq} {invite_seq} INVITE"))
            .build()
        else {
            return;
        };
        if let Ok(key) = self.txl.send_request(now, prack, flow) {
            self.pending.insert(key, Pending::Other);
        }
    }

    fn on_invite_2xx(
        &mut self,
        cid: CallId,
        response: &Message,
        outcome: ResponseOutcome,
        now: Instant,
    ) {
        let id = match outcome {
            ResponseOutcome::Confirmed(id) => id,
            // A retransmission (the ACK was lost) or another fork's 2xx: the dialog
            // layer ACKed it (and hung the fork up); the call goes on untouched.
            ResponseOutcome::Retransmission(_)
            | ResponseOutcome::ExtraForkEnded(_)
            | ResponseOutcome::Forked(_) => return,
            _ => {
                self.out
                    .warn("unusable 2xx: no dialog can be formed from it");
                return;
            }
        };
        let flow = self.dialogs.flow(&id);
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        call.dialog = Some(id.clone());
        if let Some(flow) = flow {
            call.flow = flow;
        }
        if call.oa == OfferAnswer::LocalOffer {
            let usable = has_sdp(response) && {
                let _ = call.oa.receive_answer();
                self.apply_remote_sdp(cid, response.body(), now).is_some()
            };
            if !usable {
                // Our offer went unanswered or answered with nothing we can use: the
                // call cannot carry audio. ACKed; now hang it up.
                if let Some(c) = self.call_mut(cid) {
                    c.cancelled = Some(("failed (no usable SDP answer)", exit::FAILED));
                }
                self.send_bye(cid, now);
                return;
            }
        }
        self.dialogs
            .set_session_timer(&id, SessionTimer::from_response(response, true, now));
        self.call_answered(cid, now);
    }

    /// Takes the far end's SDP (an answer, or an offer we answered): starts media the
    /// first time, updates it after. Returns the stream.
    pub(super) fn apply_remote_sdp(
        &mut self,
        cid: CallId,
        body: &[u8],
        _now: Instant,
    ) -> Option<AudioStream> {
        let sdp = match SessionDescription::parse(body) {
            Ok(s) => s,
            Err(e) => {
                self.out
                    .warn(&format!("the far end's SDP does not parse: {e}"));
                return None;
            }
        };
        let Some(stream) = sdp.audio_stream(&self.s.codecs) else {
            self.out.warn("no common codec in the far end's SDP");
            return None;
        };
        let call = self.calls.get_mut(&cid)?;
        let direction = answer_direction(stream.direction, call.wanted);
        let codec = codec_of(&stream.codec.encoding)?;
        let params = StreamParams {
            remote: SocketAddr::new(stream.address, stream.port),
            codec,
            payload_type: stream.codec.payload_type,
            telephone_event_pt: stream.telephone_event,
            direction,
            ptime_ms: stream.ptime.unwrap_or(20),
        };
        let previous = call.remote.replace(stream.clone());
        let port = call.media_port;
        if call.media_started {
            self.media(port, MediaCommand::Update(params));
            if previous.is_some_and(|p| p.codec.encoding != stream.codec.encoding) {
                let codec = stream.codec.encoding.clone();
                self.out.call_event(
                    cid,
                    "codec changed",
                    Some(&codec),
                    &[("codec", json!(codec))],
                );
            }
        } else {
            call.media_started = true;
            let source = call
                .play
                .clone()
                .map(AudioSource::Wav)
                .unwrap_or(AudioSource::Silence);
            let record = call.record.clone();
            self.media(
                port,
                MediaCommand::Start {
                    params,
                    source,
                    record,
                },
            );
        }
        Some(stream)
    }

    pub(super) fn call_answered(&mut self, cid: CallId, now: Instant) {
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if call.state == CallState::Answered {
            return;
        }
        call.state = CallState::Answered;
        call.answered_at = Some(now);
        // With a delayed offer the codec is known only once the ACK brings the answer.
        let codec = call.remote.as_ref().map(|s| s.codec.encoding.clone());
        self.out.call_event(
            cid,
            "answered",
            codec.as_deref(),
            &[("codec", json!(codec))],
        );
        self.disarm_call(cid, CallTimer::AnswerTimeout);
        let script = self.call(cid).and_then(|c| c.script.clone());
        match (script, &self.task) {
            (Some(t), _) => {
                if t.dtmf.is_some() {
                    self.arm_call(cid, now + secs(t.dtmf_after), CallTimer::Dtmf);
                }
                if let Some(h) = t.hold_after {
                    self.arm_call(cid, now + secs(h), CallTimer::Hold);
                }
                if let Some(r) = t.resume_after {
                    self.arm_call(cid, now + secs(r), CallTimer::Resume);
                }
                if let Some(h) = t.hangup_after {
                    self.arm_call(cid, now + secs(h), CallTimer::Hangup);
                }
                if let Some((after, _)) = t.change_codec {
                    self.arm_call(cid, now + secs(after), CallTimer::ChangeCodec);
                }
            }
            (None, Task::Answer(a)) => {
                if let Some(h) = a.hangup_after {
                    self.arm_call(cid, now + secs(h), CallTimer::Hangup);
                }
            }
            _ => {}
        }
        self.transfer_on_answer(cid, now);
    }

    pub(super) fn disarm_call(&mut self, cid: CallId, timer: CallTimer) {
        self.disarm(Timer::Call(cid, timer));
    }

    pub(super) fn on_call_timer(&mut self, cid: CallId, timer: CallTimer, now: Instant) {
        match timer {
            CallTimer::Dtmf => {
                let digits = self
                    .script(cid)
                    .and_then(|t| t.dtmf.clone())
                    .unwrap_or_default();
                if let Some(port) = self.call(cid).map(|c| c.media_port) {
                    self.media(port, MediaCommand::SendDtmf(digits.clone()));
                    for d in digits.chars() {
                        self.out.call_event(
                            cid,
                            "dtmf sent",
                            Some(&d.to_string()),
                            &[("digit", json!(d.to_string()))],
                        );
                    }
                }
            }
            CallTimer::Hold => {
                let inactive = self.script(cid).is_some_and(|t| t.hold_inactive);
                let direction = if inactive {
                    Direction::Inactive
                } else {
                    Direction::SendOnly
                };
                self.modify(cid, direction, now);
            }
            CallTimer::ChangeCodec => self.change_codec(cid, now),
            CallTimer::Resume => self.modify(cid, Direction::SendRecv, now),
            CallTimer::GlareRetry(d) => self.modify(cid, d, now),
            CallTimer::Hangup => self.hang_up(cid, now),
            CallTimer::AnswerTimeout => {
                if self.call(cid).is_some_and(|c| c.state == CallState::Setup) {
                    if let Some(c) = self.call_mut(cid) {
                        c.cancelled = Some(("no answer (timeout)", exit::NO_ANSWER));
                    }
                    let silent = self
                        .call(cid)
                        .and_then(|c| c.invite_key)
                        .and_then(|k| self.txl.state(k))
                        == Some(sip_core::transaction::State::Calling);
                    if silent {
                        // Not even a provisional: a CANCEL is not allowed yet (§9.1)
                        // and nothing is ringing; give up here rather than wait for
                        // Timer B.
                        self.end_call(cid, "no answer (timeout)", exit::NO_ANSWER);
                    } else {
                        self.cancel_call(cid, now);
                    }
                }
            }
            CallTimer::EndFallback => self.end_call(cid, "bye (local, no response)", exit::OK),
            CallTimer::Transfer(step) => self.on_transfer_step(cid, step, now),
        }
    }

    pub(super) fn cancel_call(&mut self, cid: CallId, now: Instant) {
        let Some(key) = self.call(cid).and_then(|c| c.invite_key) else {
            return;
        };
        match self.txl.cancel(now, key) {
            Ok(k) => {
                self.pending.insert(k, Pending::Other);
                if let Some(c) = self.call_mut(cid) {
                    c.state = CallState::Ending;
                }
                self.arm_call(cid, now + Duration::from_secs(32), CallTimer::EndFallback);
            }
            Err(_) => {
                // Nothing heard yet: a CANCEL could overtake the INVITE (§9.1). Try again
                // shortly; the INVITE times out by itself otherwise.
                self.arm_call(
                    cid,
                    now + Duration::from_millis(200),
                    CallTimer::AnswerTimeout,
                );
            }
        }
    }

    /// Ends call `cid` from our side: BYE when answered, CANCEL while it rings (ours),
    /// 480 while it rings here.
    pub fn hang_up(&mut self, cid: CallId, now: Instant) {
        let Some(call) = self.call(cid) else {
            return;
        };
        match (call.state, call.role) {
            (CallState::Answered, _) => self.send_bye(cid, now),
            (CallState::Setup, Role::Uac) => {
                if let Some(c) = self.call_mut(cid) {
                    c.cancelled = Some(("cancelled", exit::OK));
                }
                self.cancel_call(cid, now);
            }
            (CallState::Setup, Role::Uas) => {
                if let (Some(key), Some(req)) = (call.invite_key, call.request.clone()) {
                    self.respond(key, &req, 480, &[], None, now);
                }
                self.end_call(cid, "declined", exit::OK);
            }
            (CallState::Ending, _) => {}
        }
    }

    pub(super) fn send_bye(&mut self, cid: CallId, now: Instant) {
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        call.state = CallState::Ending;
        let Some(id) = call.dialog.clone() else {
            self.end_call(cid, "bye (local)", exit::OK);
            return;
        };
        match self.dialogs.end(&id) {
            Ok((bye, flow)) => match self.txl.send_request(now, bye, flow) {
                Ok(key) => {
                    self.pending.insert(key, Pending::Bye(cid));
                    self.arm_call(cid, now + Duration::from_secs(33), CallTimer::EndFallback);
                }
                Err(e) => self.end_call(cid, &format!("bye (local, not sent: {e})"), exit::OK),
            },
            Err(e) => self.end_call(cid, &format!("bye (local, not built: {e})"), exit::OK),
        }
    }

    /// Re-offers the session with only the `--change-codec` codec (and telephone-event).
    pub(super) fn change_codec(&mut self, cid: CallId, now: Instant) {
        let Some((_, codec)) = self.script(cid).and_then(|t| t.change_codec) else {
            return;
        };
        let codecs = [codec, TELEPHONE_EVENT];
        let ip = self.local_ip();
        let user = self.s.user.clone();
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if call.oa != OfferAnswer::Stable {
            self.arm_call(
                cid,
                now + Duration::from_millis(500),
                CallTimer::ChangeCodec,
            );
            return;
        }
        let port = call.media_port;
        let origin = call.local_sdp.origin.clone();
        let fresh =
            SessionDescription::new_audio_offer(&user, origin.session_id, ip, port, &codecs);
        call.local_sdp.media = fresh.media;
        call.local_sdp.origin.session_version = origin.session_version + 1;
        let wanted = call.wanted;
        let use_update = self.script(cid).is_some_and(|t| t.hold_with_update);
        // The version is bumped here; no hold change to report.
        self.send_offer(cid, wanted, use_update, true, now);
    }

    /// Hold (`SendOnly`) or resume (`SendRecv`) with a re-INVITE or UPDATE carrying a
    /// new offer.
    pub(super) fn modify(&mut self, cid: CallId, direction: Direction, now: Instant) {
        let use_update = self.script(cid).is_some_and(|t| t.hold_with_update);
        self.send_offer(cid, direction, use_update, false, now);
    }

    pub(super) fn send_offer(
        &mut self,
        cid: CallId,
        direction: Direction,
        use_update: bool,
        refresh: bool,
        now: Instant,
    ) {
        let session_expires = self
            .call(cid)
            .and_then(|c| c.dialog.as_ref())
            .and_then(|id| self.dialogs.session_timer(id))
            .map(|t| t.interval);
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if call.state != CallState::Answered {
            return;
        }
        if call.oa != OfferAnswer::Stable {
            // An offer is already outstanding either way: try again shortly.
            self.arm_call(
                cid,
                now + Duration::from_millis(500),
                CallTimer::GlareRetry(direction),
            );
            return;
        }
        let Some(id) = call.dialog.clone() else {
            return;
        };
        let _ = call.oa.send_offer();
        call.wanted = direction;
        if !refresh {
            call.local_sdp.origin.session_version += 1;
        }
        for m in &mut call.local_sdp.media {
            m.set_direction(direction);
        }
        let sdp = Bytes::from(call.local_sdp.to_bytes());
        let method = if use_update {
            Method::Update
        } else {
            Method::Invite
        };
        let (mut b, flow) = match self.dialogs.request(&id, &method) {
            Ok(r) => r,
            Err(e) => {
                self.out
                    .warn(&format!("cannot build the session change: {e}"));
                return;
            }
        };
        if let Some(se) = session_expires {
            b.push("Session-Expires", format_args!("{se};refresher=uac"));
            b.push("Supported", "timer");
        }
        match b.body("application/sdp", sdp).build() {
            Ok(msg) => match self.txl.send_request(now, msg, flow) {
                Ok(key) => {
                    self.pending.insert(
                        key,
                        Pending::Modify {
                            call: cid,
                            method,
                            direction,
                            refresh,
                        },
                    );
                }
                Err(e) => self
                    .out
                    .warn(&format!("cannot send the session change: {e}")),
            },
            Err(e) => self
                .out
                .warn(&format!("cannot build the session change: {e}")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_modify_response(
        &mut self,
        cid: CallId,
        key: TransactionKey,
        method: &Method,
        direction: Direction,
        refresh: bool,
        response: &Message,
        now: Instant,
    ) {
        let status = response.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        // Target refresh, and the ACK to every 2xx to a re-INVITE (retransmissions
        // included): the dialog layer's.
        let outcome = self.dialogs.handle_response(now, response);
        self.send_dialog_transmits(now);
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if *method == Method::Invite {
            if call.oa != OfferAnswer::LocalOffer {
                // A retransmitted 2xx: ACKed, nothing else to do.
                return;
            }
        } else {
            self.pending.remove(&key);
        }
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if (200..300).contains(&status) {
            let _ = call.oa.receive_answer();
            if let ResponseOutcome::InDialog(id) = &outcome {
                self.dialogs.session_refreshed(now, id);
            }
            if has_sdp(response) {
                self.apply_remote_sdp(cid, response.body(), now);
            }
            if !refresh {
                self.report_hold_change(cid, direction != Direction::SendRecv, true);
            }
        } else if status == 491 {
            call.oa.offer_rejected();
            let wait = glare_retry_after(call.role == Role::Uac, self.rng.next_u32());
            self.out
                .call_event(cid, "glare", Some("491, retrying"), &[]);
            self.arm_call(cid, now + wait, CallTimer::GlareRetry(direction));
        } else if matches!(status, 408 | 481) {
            call.oa.offer_rejected();
            self.end_call(
                cid,
                &format!("failed ({status} to a session change)"),
                exit::FAILED,
            );
        } else {
            call.oa.offer_rejected();
            self.out
                .warn(&format!("the far end refused the session change: {status}"));
        }
    }

    /// Prints `held` or `resumed` when the hold state changes. `by_us`: we asked.
    pub(super) fn report_hold_change(&mut self, cid: CallId, held: bool, by_us: bool) {
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        let flag = if by_us {
            &mut call.held_by_us
        } else {
            &mut call.held_by_them
        };
        if *flag == held {
            return;
        }
        *flag = held;
        let by = if by_us { "local" } else { "remote" };
        let event = if held { "held" } else { "resumed" };
        self.out
            .call_event(cid, event, Some(by), &[("by", json!(by))]);
    }

    /// The dialog layer says our session refresh is due (RFC 4028): a re-INVITE with
    /// the session as it is.
    pub(super) fn on_refresh_due(&mut self, cid: CallId, now: Instant) {
        let wanted = self.call(cid).map_or(Direction::SendRecv, |c| c.wanted);
        self.send_offer(cid, wanted, false, true, now);
    }

    /// The dialog layer ended the call's dialog with a BYE of its own (whose answer
    /// ends the call, see `Pending::Bye`).
    pub(super) fn on_dialog_ended(&mut self, cid: CallId, reason: TerminationReason, now: Instant) {
        match reason {
            TerminationReason::NoAck => self.out.warn("no ACK for our 2xx: hanging up"),
            TerminationReason::SessionExpired => {
                self.out
                    .warn("session timer expired: the far end did not refresh");
                if let Some(c) = self.call_mut(cid) {
                    c.cancelled = Some(("session expired", exit::FAILED));
                }
            }
            _ => return,
        }
        if let Some(c) = self.call_mut(cid) {
            c.state = CallState::Ending;
        }
        self.arm_call(cid, now + Duration::from_secs(33), CallTimer::EndFallback);
    }

    /// Stops call `cid`: media stopped (recording finalized), digits and the end
    /// printed, its dialog state dropped, the task told.
    pub(super) fn end_call(&mut self, cid: CallId, reason: &str, code: u8) {
        let Some(call) = self.calls.remove(&cid) else {
            return;
        };
        if self.by_call_id.get(&call.call_id) == Some(&cid) {
            self.by_call_id.remove(&call.call_id);
        }
        if let Some(id) = &call.dialog {
            self.dialogs.remove(id);
        }
        if call.role == Role::Uac {
            // Early dialogs of other forks, and a late 2xx: no call to give them to.
            self.dialogs.forget_invite(&call.call_id, &call.local_tag);
        }
        self.media(call.media_port, MediaCommand::Stop);
        self.transfer_call_ended(&call);
        self.timers
            .retain(|(_, t)| !matches!(t, Timer::Call(c, _) if *c == cid));
        if !call.digits.is_empty() {
            self.out.call_event(
                cid,
                "dtmf",
                Some(&call.digits),
                &[("digits", json!(call.digits))],
            );
        }
        self.out
            .call_event(cid, "ended", Some(reason), &[("code", json!(code))]);
        // A call that another replaces (a transfer) leaves the task running: it ends
        // with the last call.
        let last = self.calls.is_empty();
        match &self.task {
            Task::Call(_) if last => self.finish(code),
            Task::Answer(a) => {
                self.calls_done += 1;
                if last && (self.interrupted || a.calls.is_some_and(|n| self.calls_done >= n)) {
                    self.finish(code);
                }
            }
            _ => {
                if last && self.interrupted {
                    self.finish(code);
                }
            }
        }
    }

    /// Something the media session reported (the phone's one session: its call is the
    /// oldest).
    pub fn on_media(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Dtmf(d) => {
                let digit = d.to_string();
                let fields = [("digit", json!(digit))];
                match self.calls.values_mut().next() {
                    Some(c) => {
                        c.digits.push(d);
                        let cid = c.id;
                        self.out
                            .call_event(cid, "dtmf received", Some(&digit), &fields);
                    }
                    None => self.out.event("dtmf received", Some(&digit), &fields),
                }
            }
            MediaEvent::SourceFinished => self.out.event("playback finished", None, &[]),
            MediaEvent::RtpTimeout => self.out.warn("no RTP from the far end"),
            MediaEvent::RemoteAddressLatched(a) => {
                tracing::debug!("media latched to {a}");
            }
        }
    }
}
