//! Calls we receive: the INVITE (ring, answer or refuse), our 2xx (which the dialog
//! layer sends again until the ACK), CANCEL, and the requests the far end sends inside
//! a dialog (BYE, re-INVITE and UPDATE offers, INFO digits).

use super::*;

impl UserAgent {
    pub(super) fn on_invite(
        &mut self,
        key: TransactionKey,
        request: Message,
        flow: Flow,
        now: Instant,
    ) {
        // An INVITE with Replaces (RFC 3891) takes over a call of ours, whatever the
        // task and the room for calls.
        let replaced = match self.replaced_call(&request) {
            Ok(r) => r,
            Err(code) => {
                self.respond(key, &request, code, &[], None, now);
                return;
            }
        };
        let answer = match (&self.task, replaced) {
            (Task::Answer(a), _) => a.clone(),
            (_, Some(old)) => self.answer_task_replacing(old),
            _ => {
                self.respond(key, &request, 486, &[], None, now);
                return;
            }
        };
        let busy = self.calls.len() >= self.max_calls && replaced.is_none();
        if busy || self.call_of(&request).is_some() {
            self.respond(key, &request, 486, &[], None, now);
            return;
        }
        let from = request
            .get(HeaderName::From)
            .map(|f| f.split(";tag=").next().unwrap_or(f).trim().to_owned())
            .unwrap_or_default();
        let call_id = request.call_id().unwrap_or("").to_owned();
        let local_tag = self.ids.tag();
        let contact = self.contact_uri(flow.transport);
        let local_seq = self.random_u32() >> 2;
        let local = self.local_end(flow);
        let dialog = match self
            .dialogs
            .create_uas(&request, &local_tag, local_seq, local)
        {
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
                self.dialogs.remove(&dialog);
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
            // Numbered among the calls up too: two at once (a transfer) never share a
            // file.
            let n = (self.calls_done as usize + self.calls.len() + 1).to_string();
            PathBuf::from(p.to_string_lossy().replace("{n}", &n))
        });
        let cid = self.insert_call(call);
        self.out
            .call_event(cid, "incoming", Some(&from), &[("from", json!(from))]);
        if let Some(code) = answer.reject {
            self.respond(key, &request, code, &[], None, now);
            self.end_call(cid, &format!("rejected ({code})"), exit::OK);
            return;
        }
        if has_sdp(&request) {
            if let Some(c) = self.call_mut(cid) {
                let _ = c.oa.receive_offer();
            }
            let acceptable = SessionDescription::parse(request.body())
                .ok()
                .and_then(|s| s.audio_stream(&self.s.codecs))
                .is_some();
            if !acceptable {
                self.respond(key, &request, 488, &[], None, now);
                self.end_call(cid, "rejected (488 no common codec)", exit::REJECTED);
                return;
            }
        }
        if let Some(old) = replaced {
            self.answer_replacing(cid, old, now);
            return;
        }
        let headers = [("Contact", format!("<{contact}>"))];
        self.respond(key, &request, 180, &headers, None, now);
        if answer.auto {
            self.answer_ringing_call(cid, now);
        } else {
            self.out
                .call_event(cid, "ringing", Some("press Enter to answer"), &[]);
        }
    }

    /// Answers call `cid`, ringing here, with a 2xx (which the dialog layer sends again
    /// until the ACK).
    pub fn answer_ringing_call(&mut self, cid: CallId, now: Instant) {
        let Some(call) = self.call(cid) else {
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
            ("Allow", UA_ALLOW.to_owned()),
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
            let Some(call) = self.calls.get_mut(&cid) else {
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
            self.apply_remote_sdp(cid, request.body(), now);
            answer.to_bytes()
        } else {
            // A delayed offer: we offer in the 2xx; the answer comes in the ACK.
            let Some(call) = self.call_mut(cid) else {
                return;
            };
            let _ = call.oa.send_offer();
            call.local_sdp.to_bytes()
        };
        let mut b = response_to(&request, 200, self.call(cid).map(|c| c.local_tag.as_str()));
        for (n, v) in &headers {
            b.push(n, v);
        }
        let Ok(ok) = b.body("application/sdp", Bytes::from(sdp)).build() else {
            return;
        };
        let flow = sip_core::response_target(
            &self.call(cid).map_or(self.fallback_flow(), |c| c.flow),
            &request,
        );
        if let Err(e) = self.txl.send_response(now, key, ok.clone()) {
            tracing::debug!("2xx not sent: {e}");
        }
        if let Some(id) = self.call(cid).and_then(|c| c.dialog.clone()) {
            if let Err(e) = self.dialogs.send_2xx(now, &id, &ok, flow) {
                tracing::debug!("2xx not retransmitted: {e}");
            }
            self.dialogs
                .set_session_timer(&id, SessionTimer::from_response(&ok, false, now));
        }
        self.call_answered(cid, now);
    }

    pub(super) fn fallback_flow(&self) -> Flow {
        Flow {
            transport: self.s.transport,
            remote: SocketAddr::from(([127, 0, 0, 1], 5060)),
            local: None,
            connection: None,
        }
    }

    pub(super) fn on_ack(&mut self, ack: &Message, now: Instant) {
        let Some(cid) = self.call_of(ack) else {
            return;
        };
        // The dialog layer stops our 2xx; an ACK of no dialog of ours is dropped.
        let Ok(id) = self.dialogs.handle_request(now, ack) else {
            return;
        };
        let Some(call) = self.call_mut(cid) else {
            return;
        };
        if call.dialog.as_ref() != Some(&id) {
            return;
        }
        if call.oa == OfferAnswer::LocalOffer && has_sdp(ack) {
            let _ = call.oa.receive_answer();
            self.apply_remote_sdp(cid, ack.body(), now);
        }
    }

    pub(super) fn on_cancel(&mut self, key: TransactionKey, cancel: &Message, now: Instant) {
        let cancelled = self.txl.find_cancelled(cancel);
        let ours = self.call_of(cancel).filter(|cid| {
            self.call(*cid).is_some_and(|c| {
                c.role == Role::Uas
                    && c.state == CallState::Setup
                    && c.invite_key == cancelled
                    && cancelled.is_some()
            })
        });
        let Some(cid) = ours else {
            self.respond(key, cancel, 481, &[], None, now);
            return;
        };
        self.respond(key, cancel, 200, &[], None, now);
        if let Some((ikey, req)) = self
            .call(cid)
            .and_then(|c| c.invite_key.zip(c.request.clone()))
        {
            self.respond(ikey, &req, 487, &[], None, now);
        }
        self.end_call(cid, "cancelled (by the caller)", exit::OK);
    }

    pub(super) fn on_in_dialog_request(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let cid = self.call_of(request);
        // The dialog layer checks the request against the dialog: 481 when there is
        // none, 500 for a CSeq out of order; a BYE ends the dialog there.
        let checked = self.dialogs.handle_request(now, request);
        let cid = match (cid, checked) {
            (Some(cid), Ok(id)) if self.call(cid).and_then(|c| c.dialog.as_ref()) == Some(&id) => {
                cid
            }
            (_, Err(r)) if r.status != 481 => {
                let b =
                    sip_core::builder::response_to_with_reason(request, r.status, r.reason, None);
                if let Ok(msg) = b.build() {
                    let _ = self.txl.send_response(now, key, msg);
                }
                return;
            }
            _ => {
                self.respond(key, request, 481, &[], None, now);
                return;
            }
        };
        match method {
            Method::Bye => {
                self.respond(key, request, 200, &[], None, now);
                // A call transferred away ends as such, whoever hangs it up.
                let reason = self
                    .call(cid)
                    .and_then(|c| c.cancelled)
                    .filter(|(why, _)| *why == "transferred")
                    .map_or("bye (remote)", |(why, _)| why);
                self.end_call(cid, reason, exit::OK);
            }
            Method::Invite | Method::Update => self.on_remote_offer(cid, key, method, request, now),
            Method::Info => {
                let body = String::from_utf8_lossy(request.body()).into_owned();
                self.respond(key, request, 200, &[], None, now);
                if let Some(d) = body
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Signal="))
                    .and_then(|s| s.trim().chars().next())
                {
                    if let Some(c) = self.call_mut(cid) {
                        c.digits.push(d);
                    }
                    self.out.call_event(
                        cid,
                        "dtmf received",
                        Some(&d.to_string()),
                        &[("digit", json!(d.to_string()))],
                    );
                }
            }
            // RFC 3262 §3: a PRACK that matches no unacknowledged reliable provisional
            // response gets 481. We send none (we do not support 100rel as UAS), so
            // none can match, whatever its RAck says or whether it has one.
            Method::Prack => self.respond(key, request, 481, &[], None, now),
            Method::Message => self.on_incoming_message(key, request, now),
            Method::Refer => self.on_refer(cid, key, request, now),
            Method::Notify => self.on_notify(cid, key, request, now),
            other => self.refuse_method(key, other, request, now),
        }
    }

    /// A re-INVITE or UPDATE from the far end: answer its offer (491 while ours is
    /// outstanding), update media, report hold and resume.
    pub(super) fn on_remote_offer(
        &mut self,
        cid: CallId,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        let ip = self.local_ip();
        let user = self.s.user.clone();
        let Some(id) = self.call(cid).and_then(|c| c.dialog.clone()) else {
            return;
        };
        let contact = self
            .dialogs
            .get(&id)
            .map(|d| d.local_contact.clone())
            .unwrap_or_default();
        let Some(call) = self.calls.get_mut(&cid) else {
            return;
        };
        if call.oa != OfferAnswer::Stable {
            self.respond(key, request, 491, &[], None, now);
            return;
        }
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
            self.dialogs
                .set_session_timer(&id, Some(SessionTimer::new(se.delta, refresher, now)));
        } else {
            self.dialogs.session_refreshed(now, &id);
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
            self.apply_remote_sdp(cid, request.body(), now);
            self.report_hold_change(cid, remote_held, false);
            Some(answer.to_bytes())
        } else {
            // An offerless re-INVITE: offer what we have; the answer comes in the ACK.
            if *method == Method::Invite {
                let _ = call.oa.send_offer();
            }
            Some(call.local_sdp.to_bytes())
        };
        let tag = self.call(cid).map(|c| c.local_tag.clone());
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
                &self.call(cid).map_or(self.fallback_flow(), |c| c.flow),
                request,
            );
            if let Err(e) = self.dialogs.send_2xx(now, &id, &ok, flow) {
                tracing::debug!("2xx not retransmitted: {e}");
            }
        }
        let _ = self.txl.send_response(now, key, ok);
    }
}
