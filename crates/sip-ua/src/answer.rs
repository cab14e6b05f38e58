//! Calls we receive: the INVITE (ring, answer or refuse), our 2xx retransmitted until
//! the ACK, CANCEL, and the requests the far end sends inside the dialog (BYE, re-INVITE
//! and UPDATE offers, INFO digits).

use super::*;

impl Core {
    pub(super) fn on_invite(
        &mut self,
        key: TransactionKey,
        request: Message,
        flow: Flow,
        now: Instant,
    ) {
        let answer = match &self.task {
            Task::Answer(a) => a.clone(),
            _ => {
                self.respond(key, &request, 486, &[], None, now);
                return;
            }
        };
        if self.call.is_some() {
            self.respond(key, &request, 486, &[], None, now);
            return;
        }
        let from = request
            .get(HeaderName::From)
            .map(|f| f.split(";tag=").next().unwrap_or(f).trim().to_owned())
            .unwrap_or_default();
        let call_id = request.call_id().unwrap_or("").to_owned();
        let local_tag = self.random_hex(6);
        let contact = self.contact_uri(flow.transport);
        let local_seq = self.random_u32() >> 2;
        let dialog = match Dialog::from_uas(&request, &local_tag, &contact, local_seq) {
            Ok(d) => d,
            Err(e) => {
                let reason = e.to_string();
                self.respond(key, &request, 400, &[], None, now);
                tracing::debug!("refused INVITE: {reason}");
                return;
            }
        };
        let media = match self.take_media() {
            Ok(m) => m,
            Err(e) => {
                self.out.warn(&format!("no RTP port: {e}"));
                self.respond(key, &request, 500, &[], None, now);
                return;
            }
        };
        let mut call = self.new_call(Role::Uas, call_id, local_tag, flow, media);
        call.dialog = Some(dialog);
        call.invite_key = Some(key);
        call.request = Some(request.clone());
        call.play = answer.play.clone();
        call.record = answer.record.as_ref().map(|p| {
            let n = (self.calls_done + 1).to_string();
            PathBuf::from(p.to_string_lossy().replace("{n}", &n))
        });
        self.call = Some(call);
        self.out
            .event("incoming", Some(&from), &[("from", json!(from))]);
        if let Some(code) = answer.reject {
            self.respond(key, &request, code, &[], None, now);
            self.end_call(&format!("rejected ({code})"), exit::OK);
            return;
        }
        if has_sdp(&request) {
            if let Some(c) = self.call.as_mut() {
                let _ = c.oa.receive_offer();
            }
            let acceptable = SessionDescription::parse(request.body())
                .ok()
                .and_then(|s| s.audio_stream(&self.s.codecs))
                .is_some();
            if !acceptable {
                self.respond(key, &request, 488, &[], None, now);
                self.end_call("rejected (488 no common codec)", exit::REJECTED);
                return;
            }
        }
        let headers = [("Contact", format!("<{contact}>"))];
        self.respond(key, &request, 180, &headers, None, now);
        if answer.auto {
            self.answer_ringing_call(now);
        } else {
            self.out
                .event("ringing", Some("press Enter to answer"), &[]);
        }
    }

    pub(super) fn answer_ringing_call(&mut self, now: Instant) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        if call.role != Role::Uas || call.state != CallState::Setup {
            return;
        }
        let (Some(key), Some(request)) = (call.invite_key, call.request.clone()) else {
            return;
        };
        let contact = self.contact_uri(call.flow.transport);
        let mut headers = vec![
            ("Contact", format!("<{contact}>")),
            ("Allow", ALLOW.to_owned()),
        ];
        // RFC 4028: a UAC that asked for a session timer gets one; it refreshes unless
        // it said otherwise.
        if let Ok(Some(se)) = request.session_expires() {
            let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
            headers.push((
                "Session-Expires",
                format!("{};refresher={refresher}", se.delta),
            ));
            if tokens_contain(&request, HeaderName::Supported, "timer") {
                headers.push(("Require", "timer".to_owned()));
            }
        }
        let sdp = if has_sdp(&request) {
            let Ok(offer) = SessionDescription::parse(request.body()) else {
                return;
            };
            let ip = self.local_ip();
            let Some(call) = self.call.as_mut() else {
                return;
            };
            let port = call.media_port;
            let Some(answer) = SessionDescription::answer(
                &offer,
                &self.s.user,
                call.local_sdp.origin.session_id,
                ip,
                port,
                &self.s.codecs,
                Direction::SendRecv,
            ) else {
                return;
            };
            call.local_sdp = answer.clone();
            let _ = call.oa.send_answer();
            self.apply_remote_sdp(request.body(), now);
            answer.to_bytes()
        } else {
            // A delayed offer: we offer in the 2xx; the answer comes in the ACK.
            let Some(call) = self.call.as_mut() else {
                return;
            };
            let _ = call.oa.send_offer();
            call.local_sdp.to_bytes()
        };
        let mut b = response_to(
            &request,
            200,
            self.call.as_ref().map(|c| c.local_tag.as_str()),
        );
        for (n, v) in &headers {
            b.push(n, v);
        }
        let Ok(ok) = b.body("application/sdp", Bytes::from(sdp)).build() else {
            return;
        };
        let bytes = ok.as_bytes().clone();
        let flow = sip_core::response_target(
            &self.call.as_ref().map_or(self.fallback_flow(), |c| c.flow),
            &request,
        );
        if let Err(e) = self.txl.send_response(now, key, ok.clone()) {
            tracing::debug!("2xx not sent: {e}");
        }
        if let Some(c) = self.call.as_mut() {
            c.session_timer = SessionTimer::from_response(&ok, false, now);
        }
        self.retransmit_until_ack(bytes, flow, &request, now);
        self.call_answered(now);
    }

    pub(super) fn fallback_flow(&self) -> Flow {
        Flow {
            transport: self.s.transport,
            remote: SocketAddr::from(([127, 0, 0, 1], 5060)),
            local: None,
            connection: None,
        }
    }

    /// Keeps sending our 2xx to `request` (an INVITE) from T1, doubling up to T2, until
    /// its ACK arrives or 64·T1 pass (RFC 3261 §13.3.1.4), with the transaction
    /// layer's T1 and T2 ([`Settings::timers`]).
    pub(super) fn retransmit_until_ack(
        &mut self,
        bytes: Bytes,
        flow: Flow,
        request: &Message,
        now: Instant,
    ) {
        let t1 = self.s.timers.t1;
        if let Some(c) = self.call.as_mut() {
            c.ok_retx = Some(OkRetransmit {
                bytes,
                flow,
                cseq: request.cseq().map(|c| c.seq).unwrap_or(0),
                interval: t1,
                next: now + t1,
                until: now + t1 * 64,
            });
        }
        self.arm_call(now + t1, CallTimer::Retransmit);
    }

    pub(super) fn retransmit_ok(&mut self, now: Instant) {
        let t2 = self.s.timers.t2;
        let Some(call) = self.call.as_mut() else {
            return;
        };
        let Some(r) = call.ok_retx.as_mut() else {
            return;
        };
        if now >= r.until {
            call.ok_retx = None;
            self.out.warn("no ACK for our 2xx: hanging up");
            self.send_bye(now);
            return;
        }
        if now >= r.next {
            self.txl.send_stateless(r.flow, r.bytes.clone());
            r.interval = (r.interval * 2).min(t2);
            r.next = now + r.interval;
        }
        let next = r.next;
        self.arm_call(next, CallTimer::Retransmit);
    }

    pub(super) fn on_ack(&mut self, ack: &Message, now: Instant) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.dialog.as_ref().is_some_and(|d| d.matches(ack)) {
            return;
        }
        let seq = ack.cseq().map(|c| c.seq).unwrap_or(0);
        if call.ok_retx.as_ref().is_some_and(|r| r.cseq == seq) {
            call.ok_retx = None;
            self.disarm_call(CallTimer::Retransmit);
        }
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa == OfferAnswer::LocalOffer && has_sdp(ack) {
            let _ = call.oa.receive_answer();
            self.apply_remote_sdp(ack.body(), now);
        }
    }

    pub(super) fn on_cancel(&mut self, key: TransactionKey, cancel: &Message, now: Instant) {
        let cancelled = self.txl.find_cancelled(cancel);
        let ours = self.call.as_ref().is_some_and(|c| {
            c.role == Role::Uas
                && c.state == CallState::Setup
                && c.invite_key == cancelled
                && cancelled.is_some()
        });
        if !ours {
            self.respond(key, cancel, 481, &[], None, now);
            return;
        }
        self.respond(key, cancel, 200, &[], None, now);
        if let Some((ikey, req)) = self
            .call
            .as_ref()
            .and_then(|c| c.invite_key.zip(c.request.clone()))
        {
            self.respond(ikey, &req, 487, &[], None, now);
        }
        self.end_call("cancelled (by the caller)", exit::OK);
    }

    pub(super) fn on_in_dialog_request(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let matched = self
            .call
            .as_ref()
            .is_some_and(|c| c.dialog.as_ref().is_some_and(|d| d.matches(request)));
        if !matched {
            self.respond(key, request, 481, &[], None, now);
            return;
        }
        let refusal = self
            .call
            .as_mut()
            .and_then(|c| c.dialog.as_mut())
            .and_then(|d| d.receive_request(request).err());
        if let Some(r) = refusal {
            let b = sip_core::builder::response_to_with_reason(request, r.status, r.reason, None);
            if let Ok(msg) = b.build() {
                let _ = self.txl.send_response(now, key, msg);
            }
            return;
        }
        match method {
            Method::Bye => {
                self.respond(key, request, 200, &[], None, now);
                self.end_call("bye (remote)", exit::OK);
            }
            Method::Invite | Method::Update => self.on_remote_offer(key, method, request, now),
            Method::Info => {
                let body = String::from_utf8_lossy(request.body()).into_owned();
                self.respond(key, request, 200, &[], None, now);
                if let Some(d) = body
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Signal="))
                    .and_then(|s| s.trim().chars().next())
                {
                    self.on_media(MediaEvent::Dtmf(d));
                }
            }
            // RFC 3262 §3: a PRACK that matches no unacknowledged reliable provisional
            // response gets 481. We send none (we do not support 100rel as UAS), so
            // none can match, whatever its RAck says or whether it has one.
            Method::Prack => self.respond(key, request, 481, &[], None, now),
            Method::Message => self.on_incoming_message(key, request, now),
            other => self.refuse_method(key, other, request, now),
        }
    }

    /// A re-INVITE or UPDATE from the far end: answer its offer (491 while ours is
    /// outstanding), update media, report hold and resume.
    pub(super) fn on_remote_offer(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let ip = self.local_ip();
        let user = self.s.user.clone();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if call.oa != OfferAnswer::Stable {
            self.respond(key, request, 491, &[], None, now);
            return;
        }
        let contact = call
            .dialog
            .as_ref()
            .map(|d| d.local_contact.clone())
            .unwrap_or_default();
        let mut headers = vec![("Contact", format!("<{contact}>"))];
        if let Ok(Some(se)) = request.session_expires() {
            let refresher = se.refresher().unwrap_or("uac").to_ascii_lowercase();
            headers.push((
                "Session-Expires",
                format!("{};refresher={refresher}", se.delta),
            ));
            let refresher = if refresher == "uas" {
                Refresher::Us
            } else {
                Refresher::Them
            };
            call.session_timer = Some(SessionTimer::new(se.delta, refresher, now));
        } else if let Some(t) = call.session_timer.as_mut() {
            t.refreshed(now);
        }
        let body = if has_sdp(request) {
            let Ok(offer) = SessionDescription::parse(request.body()) else {
                self.respond(key, request, 400, &[], None, now);
                return;
            };
            let port = call.media_port;
            let version = call.local_sdp.origin.session_version;
            let Some(mut answer) = SessionDescription::answer(
                &offer,
                &user,
                call.local_sdp.origin.session_id,
                ip,
                port,
                &self.s.codecs,
                call.wanted,
            ) else {
                self.respond(key, request, 488, &[], None, now);
                return;
            };
            answer.origin.session_version = version + 1;
            call.local_sdp = answer.clone();
            // Held: the far end will not receive, or says so the RFC 2543 way
            // (c=0.0.0.0).
            let remote_held = offer.audio_stream(&self.s.codecs).is_some_and(|s| {
                !s.direction.receives() || s.port == 0 || s.address.is_unspecified()
            });
            self.apply_remote_sdp(request.body(), now);
            self.report_hold_change(remote_held, false);
            Some(answer.to_bytes())
        } else {
            // An offerless re-INVITE: offer what we have; the answer comes in the ACK.
            if *method == Method::Invite {
                let _ = call.oa.send_offer();
            }
            Some(call.local_sdp.to_bytes())
        };
        let tag = self.call.as_ref().map(|c| c.local_tag.clone());
        let mut b = response_to(request, 200, tag.as_deref());
        for (n, v) in &headers {
            b.push(n, v);
        }
        if let Some(body) = body {
            b = b.body("application/sdp", Bytes::from(body));
        }
        let Ok(ok) = b.build() else {
            return;
        };
        if *method == Method::Invite {
            let flow = sip_core::response_target(
                &self.call.as_ref().map_or(self.fallback_flow(), |c| c.flow),
                request,
            );
            self.retransmit_until_ack(ok.as_bytes().clone(), flow, request, now);
        }
        let _ = self.txl.send_response(now, key, ok);
        self.arm_session_timer();
    }
}
