//! Calls: placing one (INVITE, provisional and final responses, PRACK, ACK, CANCEL),
//! the media it starts, changing the session (hold and resume by re-INVITE or UPDATE,
//! 491 glare, session timer refreshes and expiry), hanging up and ending.

use super::*;

impl Core {
    /// A Via with a fresh branch for a request in the current call, on its transport.
    pub(super) fn call_via(&mut self) -> String {
        let transport = self
            .call
            .as_ref()
            .map_or(self.s.transport, |c| c.flow.transport);
        self.via(transport)
    }

    pub(super) fn new_call(
        &mut self,
        role: Role,
        call_id: String,
        local_tag: String,
        flow: Flow,
        media_port: u16,
    ) -> Call {
        let generation = self.next_generation;
        self.next_generation += 1;
        let sid = u64::from(self.random_u32());
        let local_sdp = SessionDescription::new_audio_offer(
            &self.s.user,
            sid,
            self.local_ip(),
            media_port,
            &self.s.codecs,
        );
        Call {
            generation,
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
            ack: None,
            fork_acks: Vec::new(),
            ok_retx: None,
            digits: String::new(),
            play: None,
            record: None,
            answered_at: None,
            cancelled: None,
            rseq_acked: None,
            session_timer: None,
            ringing_printed: false,
        }
    }

    pub(super) fn place_call(&mut self, task: CallTask, now: Instant) {
        let flow = match self.flow_for(&task.target) {
            Ok(f) => f,
            Err(e) => {
                self.out.event("ended", Some(&format!("failed ({e})")), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let media = match self.take_media() {
            Ok(m) => m,
            Err(e) => {
                self.out
                    .event("ended", Some(&format!("failed (no RTP port: {e})")), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let call_id = format!("{}@{}", self.random_hex(10), self.local_ip());
        let local_tag = self.random_hex(6);
        let mut call = self.new_call(Role::Uac, call_id.clone(), local_tag.clone(), flow, media);
        call.play = task.play.clone();
        call.record = task.record.clone();
        let _ = call.oa.send_offer();
        let sdp = Bytes::from(call.local_sdp.to_bytes());
        let mut headers = vec![
            ("Contact", format!("<{}>", self.contact_uri(flow.transport))),
            ("Allow", ALLOW.to_owned()),
            ("Supported", "timer, 100rel".to_owned()),
        ];
        if let Some(se) = self.s.session_expires {
            headers.push(("Session-Expires", format!("{se};refresher=uac")));
            headers.push(("Min-SE", "90".to_owned()));
        }
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
        self.call = Some(call);
        self.out.event(
            "calling",
            Some(&task.target),
            &[("target", json!(task.target))],
        );
        self.send_invite(o, now);
        self.arm_call(now + secs(task.answer_timeout), CallTimer::AnswerTimeout);
    }

    pub(super) fn send_invite(&mut self, o: Outgoing, now: Instant) {
        match self.send_outgoing(&o, now) {
            Ok((key, msg)) => {
                self.pending.insert(key, Pending::Invite);
                if let Some(c) = self.call.as_mut() {
                    c.invite = Some(msg);
                    c.invite_key = Some(key);
                    c.invite_out = Some(o);
                }
            }
            Err(e) => self.end_call(&format!("failed ({e})"), exit::FAILED),
        }
    }

    pub(super) fn on_invite_response(
        &mut self,
        key: TransactionKey,
        response: &Message,
        now: Instant,
    ) {
        let status = response.status().unwrap_or(0);
        let contact = self.contact_uri(
            self.call
                .as_ref()
                .map_or(self.s.transport, |c| c.flow.transport),
        );
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.invite_key != Some(key) {
            return;
        }
        let Some(invite) = call.invite.clone() else {
            return;
        };
        let invite_seq = invite.cseq().map(|c| c.seq).unwrap_or(1);
        match status {
            100 => self.out.event("trying", None, &[]),
            101..=199 => {
                let to_tag = response.to().ok().and_then(|t| t.tag()).map(str::to_owned);
                if to_tag.is_some()
                    && call.dialog.is_none()
                    && let Ok(d) = Dialog::from_uac(&invite, response, &contact)
                {
                    call.dialog = Some(d);
                }
                if !call.ringing_printed || status == 183 {
                    call.ringing_printed = true;
                    let name = if status == 180 { "ringing" } else { "progress" };
                    self.out.event(
                        name,
                        Some(&status.to_string()),
                        &[("status", json!(status))],
                    );
                }
                if has_sdp(response) && call.oa == OfferAnswer::LocalOffer {
                    let _ = call.oa.receive_answer();
                    self.out.event("early media", None, &[]);
                    self.apply_remote_sdp(response.body(), now);
                }
                self.maybe_prack(response, invite_seq, now);
            }
            200..=299 => self.on_invite_2xx(response, &invite, invite_seq, &contact, now),
            _ => {
                let cancelled = call.cancelled;
                if matches!(status, 401 | 407) {
                    let mut o = call.invite_out.clone();
                    if let Some(o) = o.as_mut()
                        && self.authenticate(o, response)
                    {
                        let o = o.clone();
                        self.send_invite(o, now);
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
                self.end_call(&what, code);
            }
        }
    }

    pub(super) fn maybe_prack(&mut self, response: &Message, invite_seq: u32, now: Instant) {
        let Some(rseq) = response.rseq().ok().flatten() else {
            return;
        };
        if !tokens_contain(response, HeaderName::Require, "100rel") {
            return;
        }
        let via = self.call_via();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.rseq_acked.is_some_and(|r| r >= rseq) {
            return;
        }
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        call.rseq_acked = Some(rseq);
        let Ok(prack) = dialog.prack(rseq, invite_seq, &via).build() else {
            return;
        };
        let flow = call.flow;
        let flow = self
            .call
            .as_ref()
            .and_then(|c| c.dialog.as_ref())
            .map_or(flow, |d| self.dialog_flow(d, flow));
        if let Ok(key) = self.txl.send_request(now, prack, flow) {
            self.pending.insert(key, Pending::Other);
        }
    }

    fn on_invite_2xx(
        &mut self,
        response: &Message,
        invite: &Message,
        invite_seq: u32,
        contact: &str,
        now: Instant,
    ) {
        let to_tag = response
            .to()
            .ok()
            .and_then(|t| t.tag())
            .unwrap_or("")
            .to_owned();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if let Some((bytes, flow, tag)) = &call.ack {
            if *tag == to_tag {
                // A retransmitted 2xx: the ACK was lost.
                self.txl.send_stateless(*flow, bytes.clone());
            } else {
                self.hang_up_fork(response, invite, invite_seq, contact, &to_tag, now);
            }
            return;
        }
        match call.dialog.as_mut() {
            Some(d) if d.id.remote_tag == to_tag => d.receive_response(response, true),
            _ => match Dialog::from_uac(invite, response, contact) {
                Ok(d) => call.dialog = Some(d),
                Err(e) => {
                    self.out.warn(&format!("unusable 2xx: {e}"));
                    return;
                }
            },
        }
        let fallback = call.flow;
        let transport = fallback.transport;
        let via = self.via(transport);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(dialog) = call.dialog.clone() else {
            return;
        };
        let flow = self.dialog_flow(&dialog, fallback);
        match dialog.ack(invite_seq, &via).into_bytes() {
            Ok(bytes) => {
                self.txl.send_stateless(flow, bytes.clone());
                if let Some(c) = self.call.as_mut() {
                    c.ack = Some((bytes, flow, to_tag));
                    c.flow = flow;
                }
            }
            Err(e) => self.out.warn(&format!("cannot build the ACK: {e}")),
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa == OfferAnswer::LocalOffer {
            let usable = has_sdp(response) && {
                let _ = call.oa.receive_answer();
                self.apply_remote_sdp(response.body(), now).is_some()
            };
            if !usable {
                // Our offer went unanswered or answered with nothing we can use: the
                // call cannot carry audio. ACKed above; now hang it up.
                if let Some(c) = self.call.as_mut() {
                    c.cancelled = Some(("failed (no usable SDP answer)", exit::FAILED));
                }
                self.send_bye(now);
                return;
            }
        }
        if let Some(c) = self.call.as_mut() {
            c.session_timer = SessionTimer::from_response(response, true, now);
        }
        self.call_answered(now);
    }

    /// A 2xx from another fork of our INVITE once one was taken: one call is enough.
    /// RFC 3261 §13.2.2.4: ACK it, then BYE that dialog. Its retransmissions get the
    /// same ACK and no second BYE.
    fn hang_up_fork(
        &mut self,
        response: &Message,
        invite: &Message,
        invite_seq: u32,
        contact: &str,
        to_tag: &str,
        now: Instant,
    ) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        if let Some((_, bytes, flow)) = call.fork_acks.iter().find(|(t, _, _)| t == to_tag) {
            self.txl.send_stateless(*flow, bytes.clone());
            return;
        }
        let fallback = call.flow;
        let mut dialog = match Dialog::from_uac(invite, response, contact) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!("unusable 2xx from a second fork ({to_tag}): {e}");
                return;
            }
        };
        let flow = self.dialog_flow(&dialog, fallback);
        let via = self.via(flow.transport);
        let Ok(ack) = dialog.ack(invite_seq, &via).into_bytes() else {
            return;
        };
        self.txl.send_stateless(flow, ack.clone());
        if let Some(c) = self.call.as_mut() {
            c.fork_acks.push((to_tag.to_owned(), ack, flow));
        }
        tracing::debug!("2xx from a second fork ({to_tag}): ACKed, hanging it up");
        let via = self.via(flow.transport);
        match dialog.request(&Method::Bye, &via).build() {
            Ok(bye) => {
                if let Ok(key) = self.txl.send_request(now, bye, flow) {
                    self.pending.insert(key, Pending::Other);
                }
            }
            Err(e) => tracing::debug!("cannot build the BYE for a second fork: {e}"),
        }
    }

    /// Takes the far end's SDP (an answer, or an offer we answered): starts media the
    /// first time, updates it after. Returns the stream.
    pub(super) fn apply_remote_sdp(&mut self, body: &[u8], _now: Instant) -> Option<AudioStream> {
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
        let call = self.call.as_mut()?;
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
        if call.media_started {
            self.media(MediaCommand::Update(params));
            if previous.is_some_and(|p| p.codec.encoding != stream.codec.encoding) {
                let codec = stream.codec.encoding.clone();
                self.out
                    .event("codec changed", Some(&codec), &[("codec", json!(codec))]);
            }
        } else {
            call.media_started = true;
            let source = call
                .play
                .clone()
                .map(AudioSource::Wav)
                .unwrap_or(AudioSource::Silence);
            let record = call.record.clone();
            self.media(MediaCommand::Start {
                params,
                source,
                record,
            });
        }
        Some(stream)
    }

    pub(super) fn call_answered(&mut self, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.state == CallState::Answered {
            return;
        }
        call.state = CallState::Answered;
        call.answered_at = Some(now);
        if let Some(d) = call.dialog.as_mut() {
            d.state = sip_core::dialog::DialogState::Confirmed;
        }
        // With a delayed offer the codec is known only once the ACK brings the answer.
        let codec = call.remote.as_ref().map(|s| s.codec.encoding.clone());
        self.out
            .event("answered", codec.as_deref(), &[("codec", json!(codec))]);
        self.disarm_call(CallTimer::AnswerTimeout);
        let task = self.task.clone();
        match task {
            Task::Call(t) => {
                if t.dtmf.is_some() {
                    self.arm_call(now + secs(t.dtmf_after), CallTimer::Dtmf);
                }
                if let Some(h) = t.hold_after {
                    self.arm_call(now + secs(h), CallTimer::Hold);
                }
                if let Some(r) = t.resume_after {
                    self.arm_call(now + secs(r), CallTimer::Resume);
                }
                if let Some(h) = t.hangup_after {
                    self.arm_call(now + secs(h), CallTimer::Hangup);
                }
                if let Some((after, _)) = t.change_codec {
                    self.arm_call(now + secs(after), CallTimer::ChangeCodec);
                }
            }
            Task::Answer(a) => {
                if let Some(h) = a.hangup_after {
                    self.arm_call(now + secs(h), CallTimer::Hangup);
                }
            }
            _ => {}
        }
        self.arm_session_timer();
    }

    pub(super) fn arm_session_timer(&mut self) {
        if let Some(deadline) = self
            .call
            .as_ref()
            .and_then(|c| c.session_timer.as_ref())
            .map(SessionTimer::deadline)
        {
            self.arm_call(deadline, CallTimer::Session);
        }
    }

    pub(super) fn disarm_call(&mut self, timer: CallTimer) {
        if let Some(generation) = self.call.as_ref().map(|c| c.generation) {
            self.disarm(Timer::Call(generation, timer));
        }
    }

    pub(super) fn on_call_timer(&mut self, timer: CallTimer, now: Instant) {
        match timer {
            CallTimer::Dtmf => {
                let digits = match &self.task {
                    Task::Call(t) => t.dtmf.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                if self.call.is_some() {
                    self.media(MediaCommand::SendDtmf(digits.clone()));
                    for d in digits.chars() {
                        self.out.event(
                            "dtmf sent",
                            Some(&d.to_string()),
                            &[("digit", json!(d.to_string()))],
                        );
                    }
                }
            }
            CallTimer::Hold => {
                let inactive = matches!(&self.task, Task::Call(t) if t.hold_inactive);
                let direction = if inactive {
                    Direction::Inactive
                } else {
                    Direction::SendOnly
                };
                self.modify(direction, now);
            }
            CallTimer::ChangeCodec => self.change_codec(now),
            CallTimer::Resume => self.modify(Direction::SendRecv, now),
            CallTimer::GlareRetry(d) => self.modify(d, now),
            CallTimer::Hangup => self.hang_up(now),
            CallTimer::AnswerTimeout => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state == CallState::Setup)
                {
                    if let Some(c) = self.call.as_mut() {
                        c.cancelled = Some(("no answer (timeout)", exit::NO_ANSWER));
                    }
                    let silent = self
                        .call
                        .as_ref()
                        .and_then(|c| c.invite_key)
                        .and_then(|k| self.txl.state(k))
                        == Some(sip_core::transaction::State::Calling);
                    if silent {
                        // Not even a provisional: a CANCEL is not allowed yet (§9.1)
                        // and nothing is ringing; give up here rather than wait for
                        // Timer B.
                        self.end_call("no answer (timeout)", exit::NO_ANSWER);
                    } else {
                        self.cancel_call(now);
                    }
                }
            }
            CallTimer::Retransmit => self.retransmit_ok(now),
            CallTimer::EndFallback => self.end_call("bye (local, no response)", exit::OK),
            CallTimer::Session => self.on_session_timer(now),
        }
    }

    pub(super) fn cancel_call(&mut self, now: Instant) {
        let Some(key) = self.call.as_ref().and_then(|c| c.invite_key) else {
            return;
        };
        match self.txl.cancel(now, key) {
            Ok(k) => {
                self.pending.insert(k, Pending::Other);
                if let Some(c) = self.call.as_mut() {
                    c.state = CallState::Ending;
                }
                self.arm_call(now + Duration::from_secs(32), CallTimer::EndFallback);
            }
            Err(_) => {
                // Nothing heard yet: a CANCEL could overtake the INVITE (§9.1). Try again
                // shortly; the INVITE times out by itself otherwise.
                self.arm_call(now + Duration::from_millis(200), CallTimer::AnswerTimeout);
            }
        }
    }

    /// Ends the call from our side: BYE when answered, CANCEL while it rings.
    pub(super) fn hang_up(&mut self, now: Instant) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        match (call.state, call.role) {
            (CallState::Answered, _) => self.send_bye(now),
            (CallState::Setup, Role::Uac) => {
                if let Some(c) = self.call.as_mut() {
                    c.cancelled = Some(("cancelled", exit::OK));
                }
                self.cancel_call(now);
            }
            (CallState::Setup, Role::Uas) => {
                if let (Some(key), Some(req)) = (call.invite_key, call.request.clone()) {
                    self.respond(key, &req, 480, &[], None, now);
                }
                self.end_call("declined", exit::OK);
            }
            (CallState::Ending, _) => {}
        }
    }

    pub(super) fn send_bye(&mut self, now: Instant) {
        let via = self.call_via();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.state = CallState::Ending;
        call.ok_retx = None;
        let fallback = call.flow;
        let Some(dialog) = call.dialog.as_mut() else {
            self.end_call("bye (local)", exit::OK);
            return;
        };
        let bye = dialog.request(&Method::Bye, &via).build();
        let dialog = dialog.clone();
        let flow = self.dialog_flow(&dialog, fallback);
        match bye {
            Ok(bye) => match self.txl.send_request(now, bye, flow) {
                Ok(key) => {
                    self.pending.insert(key, Pending::Bye);
                    self.arm_call(now + Duration::from_secs(33), CallTimer::EndFallback);
                }
                Err(e) => self.end_call(&format!("bye (local, not sent: {e})"), exit::OK),
            },
            Err(e) => self.end_call(&format!("bye (local, not built: {e})"), exit::OK),
        }
    }

    /// Hold (`SendOnly`) or resume (`SendRecv`) with a re-INVITE or UPDATE carrying a
    /// new offer.
    /// Re-offers the session with only the `--change-codec` codec (and telephone-event).
    pub(super) fn change_codec(&mut self, now: Instant) {
        let Task::Call(CallTask {
            change_codec: Some((_, codec)),
            ..
        }) = &self.task
        else {
            return;
        };
        let codecs = [*codec, TELEPHONE_EVENT];
        let ip = self.local_ip();
        let user = self.s.user.clone();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa != OfferAnswer::Stable {
            self.arm_call(now + Duration::from_millis(500), CallTimer::ChangeCodec);
            return;
        }
        let port = call.media_port;
        let origin = call.local_sdp.origin.clone();
        let fresh =
            SessionDescription::new_audio_offer(&user, origin.session_id, ip, port, &codecs);
        call.local_sdp.media = fresh.media;
        call.local_sdp.origin.session_version = origin.session_version + 1;
        let wanted = call.wanted;
        let use_update = matches!(&self.task, Task::Call(t) if t.hold_with_update);
        // The version is bumped here; no hold change to report.
        self.send_offer(wanted, use_update, true, now);
    }

    pub(super) fn modify(&mut self, direction: Direction, now: Instant) {
        let use_update = matches!(&self.task, Task::Call(t) if t.hold_with_update);
        self.send_offer(direction, use_update, false, now);
    }

    pub(super) fn send_offer(
        &mut self,
        direction: Direction,
        use_update: bool,
        refresh: bool,
        now: Instant,
    ) {
        let via = self.call_via();
        let session_expires = self
            .call
            .as_ref()
            .and_then(|c| c.session_timer)
            .map(|t| t.interval);
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.state != CallState::Answered {
            return;
        }
        if call.oa != OfferAnswer::Stable {
            // An offer is already outstanding either way: try again shortly.
            self.arm_call(
                now + Duration::from_millis(500),
                CallTimer::GlareRetry(direction),
            );
            return;
        }
        let _ = call.oa.send_offer();
        call.wanted = direction;
        if !refresh {
            call.local_sdp.origin.session_version += 1;
        }
        for m in &mut call.local_sdp.media {
            m.set_direction(direction);
        }
        let sdp = Bytes::from(call.local_sdp.to_bytes());
        let fallback = call.flow;
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        let method = if use_update {
            Method::Update
        } else {
            Method::Invite
        };
        let mut b = dialog.request(&method, &via);
        if let Some(se) = session_expires {
            b.push("Session-Expires", format_args!("{se};refresher=uac"));
            b.push("Supported", "timer");
        }
        let msg = b.body("application/sdp", sdp).build();
        let dialog = dialog.clone();
        let flow = self.dialog_flow(&dialog, fallback);
        match msg {
            Ok(msg) => match self.txl.send_request(now, msg, flow) {
                Ok(key) => {
                    self.pending.insert(
                        key,
                        Pending::Modify {
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

    pub(super) fn on_modify_response(
        &mut self,
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
        let via = self.call_via();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if *method == Method::Invite {
            if (200..300).contains(&status) {
                // Every 2xx to a re-INVITE is ACKed, retransmissions included.
                let seq = response.cseq().map(|c| c.seq).unwrap_or(0);
                if let Some(d) = call.dialog.as_mut() {
                    d.receive_response(response, false);
                    if let Ok(ack) = d.ack(seq, &via).into_bytes() {
                        let flow = call.flow;
                        self.txl.send_stateless(flow, ack);
                    }
                }
            }
            let Some(call) = self.call.as_mut() else {
                return;
            };
            if call.oa != OfferAnswer::LocalOffer {
                // A retransmitted 2xx: ACKed above, nothing else to do.
                return;
            }
        } else {
            self.pending.remove(&key);
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if (200..300).contains(&status) {
            let _ = call.oa.receive_answer();
            if let Some(t) = call.session_timer.as_mut() {
                t.refreshed(now);
            }
            if has_sdp(response) {
                self.apply_remote_sdp(response.body(), now);
            }
            self.arm_session_timer();
            if !refresh {
                self.report_hold_change(direction != Direction::SendRecv, true);
            }
        } else if status == 491 {
            call.oa.offer_rejected();
            let wait = glare_retry_after(call.role == Role::Uac, self.rng.next_u32());
            self.out.event("glare", Some("491, retrying"), &[]);
            self.arm_call(now + wait, CallTimer::GlareRetry(direction));
        } else if matches!(status, 408 | 481) {
            call.oa.offer_rejected();
            self.end_call(
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
    pub(super) fn report_hold_change(&mut self, held: bool, by_us: bool) {
        let Some(call) = self.call.as_mut() else {
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
        self.out.event(event, Some(by), &[("by", json!(by))]);
    }

    pub(super) fn on_session_timer(&mut self, now: Instant) {
        let Some(action) = self
            .call
            .as_ref()
            .and_then(|c| c.session_timer.as_ref())
            .and_then(|t| t.poll(now))
        else {
            self.arm_session_timer();
            return;
        };
        match action {
            SessionTimerAction::Refresh => {
                let wanted = self.call.as_ref().map_or(Direction::SendRecv, |c| c.wanted);
                self.send_offer(wanted, false, true, now);
                // Check again at the expiry: a refresh that never succeeds ends the call.
                if let Some(t) = self.call.as_mut().and_then(|c| c.session_timer.as_mut()) {
                    t.refresher = Refresher::Us;
                    t.refreshed(now);
                }
                self.arm_session_timer();
            }
            SessionTimerAction::Expire => {
                self.out
                    .warn("session timer expired: the far end did not refresh");
                if let Some(c) = self.call.as_mut() {
                    c.cancelled = Some(("session expired", exit::FAILED));
                }
                self.send_bye(now);
            }
        }
    }

    /// Stops the call: media stopped (recording finalized), digits and the end printed,
    /// the task told.
    pub(super) fn end_call(&mut self, reason: &str, code: u8) {
        let Some(call) = self.call.take() else {
            return;
        };
        self.media(MediaCommand::Stop);
        self.timers
            .retain(|(_, t)| !matches!(t, Timer::Call(g, _) if *g == call.generation));
        if !call.digits.is_empty() {
            self.out.event(
                "dtmf",
                Some(&call.digits),
                &[("digits", json!(call.digits))],
            );
        }
        self.out
            .event("ended", Some(reason), &[("code", json!(code))]);
        match &self.task {
            Task::Call(_) => self.finish(code),
            Task::Answer(a) => {
                self.calls_done += 1;
                if self.interrupted || a.calls.is_some_and(|n| self.calls_done >= n) {
                    self.finish(code);
                }
            }
            _ => {
                if self.interrupted {
                    self.finish(code);
                }
            }
        }
    }

    /// Something the media session reported.
    pub fn on_media(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Dtmf(d) => {
                if let Some(c) = self.call.as_mut() {
                    c.digits.push(d);
                }
                self.out.event(
                    "dtmf received",
                    Some(&d.to_string()),
                    &[("digit", json!(d.to_string()))],
                );
            }
            MediaEvent::SourceFinished => self.out.event("playback finished", None, &[]),
            MediaEvent::RtpTimeout => self.out.warn("no RTP from the far end"),
            MediaEvent::RemoteAddressLatched(a) => {
                tracing::debug!("media latched to {a}");
            }
        }
    }
}
