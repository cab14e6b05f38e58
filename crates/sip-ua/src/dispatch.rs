//! What the transaction and dialog layers report, routed: requests we received (refused
//! here when no part of us serves them, else handed to the call or MESSAGE code),
//! responses to the requests we sent, the requests that got no final response, and what
//! the dialog layer sends and ends on its own.

use super::*;

impl UserAgent {
    pub(crate) fn respond(
        &mut self,
        key: TransactionKey,
        request: &Message,
        code: u16,
        headers: &[(&str, String)],
        body: Option<(&str, Bytes)>,
        now: Instant,
    ) {
        let tag = self
            .call_of(request)
            .and_then(|cid| self.call(cid))
            .map(|c| c.local_tag.clone())
            .unwrap_or_else(|| self.ids.tag());
        let mut b = response_to(request, code, Some(&tag));
        for (name, value) in headers {
            b.push(name, value);
        }
        if let Some((ct, body)) = body {
            b = b.body(ct, body);
        }
        match b.build() {
            Ok(msg) => {
                if let Err(e) = self.txl.send_response(now, key, msg) {
                    tracing::debug!("response not sent: {e}");
                }
            }
            Err(e) => tracing::warn!("built a response that does not parse: {e}"),
        }
    }

    pub(crate) fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Request { key, request, flow } => self.on_request(key, request, flow, now),
            Event::Response { key, response } => self.on_response(key, response, now),
            Event::Ack { request, .. } => self.on_ack(&request, now),
            Event::Timeout { key, .. } => {
                if let Some(p) = self.pending.remove(&key) {
                    self.on_request_failed(p, None, now);
                }
            }
            Event::TransportError { key } => {
                let reason = self
                    .send_errors
                    .remove(&key)
                    .unwrap_or_else(|| "cannot reach it".to_owned());
                if let Some(p) = self.pending.remove(&key) {
                    self.on_request_failed(p, Some(reason), now);
                }
            }
            Event::Terminated { key } => {
                self.pending.remove(&key);
                self.send_errors.remove(&key);
            }
            _ => {}
        }
    }

    pub(crate) fn on_request(
        &mut self,
        key: TransactionKey,
        request: Message,
        flow: Flow,
        now: Instant,
    ) {
        let Some(method) = request.method().cloned() else {
            return;
        };
        // RFC 3261 §8.2.2.3: an extension we are required to support and do not is a
        // 420. We send no reliable provisionals, so 100rel is among them as UAS.
        if !matches!(method, Method::Ack | Method::Cancel) {
            let unsupported: Vec<&str> = request
                .tokens(HeaderName::Require)
                .filter_map(Result::ok)
                .filter(|t| !t.eq_ignore_ascii_case("timer"))
                .collect();
            if !unsupported.is_empty() {
                let list = unsupported.join(", ");
                self.respond(key, &request, 420, &[("Unsupported", list)], None, now);
                return;
            }
        }
        let in_dialog = request.to().ok().and_then(|t| t.tag()).is_some();
        if in_dialog && !matches!(method, Method::Message | Method::Options) {
            self.on_in_dialog_request(key, &method, &request, now);
            return;
        }
        match method {
            Method::Invite => self.on_invite(key, request, flow, now),
            Method::Cancel => self.on_cancel(key, &request, now),
            Method::Message => self.on_incoming_message(key, &request, now),
            Method::Options => {
                let headers = [
                    ("Allow", UA_ALLOW.to_owned()),
                    ("Accept", "application/sdp, text/plain".to_owned()),
                    ("Supported", "timer, replaces".to_owned()),
                ];
                self.respond(key, &request, 200, &headers, None, now);
            }
            Method::Ack => {}
            Method::Bye | Method::Update | Method::Prack | Method::Info => {
                self.respond(key, &request, 481, &[], None, now);
            }
            other => self.refuse_method(key, &other, &request, now),
        }
    }

    /// A method we do not serve: 405 with what we allow when it is one we know of
    /// (REGISTER, SUBSCRIBE...), 501 when we have never heard of it (RFC 3261 §8.2.1).
    pub(crate) fn refuse_method(
        &mut self,
        key: TransactionKey,
        method: &Method,
        request: &Message,
        now: Instant,
    ) {
        if matches!(method, Method::Extension(_)) {
            self.respond(key, request, 501, &[], None, now);
        } else {
            self.respond(
                key,
                request,
                405,
                &[("Allow", UA_ALLOW.to_owned())],
                None,
                now,
            );
        }
    }

    pub(crate) fn on_response(&mut self, key: TransactionKey, response: Message, now: Instant) {
        let Some(pending) = self.pending.get(&key).cloned() else {
            return;
        };
        let fin = response.status().is_some_and(|s| s >= 200);
        match pending {
            Pending::Register(o) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_register_response(o, &response, now, false);
            }
            Pending::Unregister(o) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_register_response(o, &response, now, true);
            }
            Pending::Message(o) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_message_response(o, &response, now);
            }
            Pending::Invite(cid) => self.on_invite_response(cid, key, &response, now),
            Pending::Bye(cid) => {
                if fin {
                    self.pending.remove(&key);
                    // Why we hung up, when it was not the script's choice.
                    let (reason, code) = self
                        .call(cid)
                        .and_then(|c| c.cancelled)
                        .unwrap_or(("bye (local)", exit::OK));
                    self.end_call(cid, reason, code);
                }
            }
            Pending::Modify {
                call,
                method,
                direction,
                refresh,
            } => self.on_modify_response(call, key, &method, direction, refresh, &response, now),
            Pending::Refer(cid) => {
                if fin {
                    self.pending.remove(&key);
                }
                self.on_refer_response(cid, &response, now);
            }
            Pending::Other => {}
        }
    }

    /// A client transaction got no final response: it timed out, or the transport
    /// could not send it (`unreachable` says why).
    pub(crate) fn on_request_failed(
        &mut self,
        pending: Pending,
        unreachable: Option<String>,
        now: Instant,
    ) {
        let no_response = unreachable.as_deref().unwrap_or("no response");
        match pending {
            Pending::Register(_) => {
                let why = unreachable
                    .as_deref()
                    .unwrap_or("no response from the server");
                self.out.event("registration failed", Some(why), &[]);
                self.registered = false;
                if !self.task_started {
                    self.finish(exit::FAILED);
                } else {
                    self.retry_registration_later(now);
                }
            }
            Pending::Unregister(_) => self.exit_ready = true,
            Pending::Message(_) => {
                self.out.event("message failed", Some(no_response), &[]);
                self.finish(exit::FAILED);
            }
            Pending::Invite(cid) => {
                if self
                    .call(cid)
                    .is_some_and(|c| c.state != CallState::Answered)
                {
                    let fallback = match &unreachable {
                        Some(why) => (format!("failed ({why})"), exit::FAILED),
                        None => ("no answer (timeout)".to_owned(), exit::NO_ANSWER),
                    };
                    let (reason, code) = self
                        .call(cid)
                        .and_then(|c| c.cancelled)
                        .map_or(fallback, |(r, c)| (r.to_owned(), c));
                    self.end_call(cid, &reason, code);
                }
            }
            Pending::Bye(cid) => self.end_call(cid, "bye (local, no response)", exit::OK),
            Pending::Modify { call, .. } => {
                if let Some(c) = self.call_mut(call) {
                    c.oa.offer_rejected();
                }
                self.out.warn("the far end did not answer a session change");
            }
            Pending::Refer(cid) => self.on_refer_failed(cid, no_response, now),
            Pending::Other => {}
        }
    }

    /// Sends what the dialog layer queued (ACKs and 2xx retransmissions as they are;
    /// its own BYEs in client transactions, a call's own BYE answered like ours) and
    /// handles its events. `true` if there was anything.
    pub(crate) fn pump_dialogs(&mut self, now: Instant) -> bool {
        let mut any = self.send_dialog_transmits(now);
        while let Some(event) = self.dialogs.poll_event() {
            any = true;
            match event {
                DialogEvent::RefreshDue { id } => {
                    if let Some(cid) = self.call_of_dialog(&id) {
                        self.on_refresh_due(cid, now);
                    }
                }
                DialogEvent::Terminated { id, reason } => {
                    if let Some(cid) = self.call_of_dialog(&id) {
                        self.on_dialog_ended(cid, reason, now);
                    }
                }
                _ => {}
            }
        }
        any
    }

    /// Hands what the dialog layer queued to the transaction layer, in order. Called
    /// right after the dialog layer takes a message too, so that an ACK it queued
    /// leaves before a request the call sends next (the BYE after an unusable answer).
    pub(crate) fn send_dialog_transmits(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(t) = self.dialogs.poll_transmit() {
            any = true;
            match t {
                DialogTransmit::Stateless(t) => self.txl.send_stateless(t.flow, t.bytes),
                DialogTransmit::Request { id, request, flow } => {
                    let pending = match self.call_of_dialog(&id) {
                        Some(cid) if request.method() == Some(&Method::Bye) => Pending::Bye(cid),
                        _ => Pending::Other,
                    };
                    match self.txl.send_request(now, request, flow) {
                        Ok(key) => {
                            self.pending.insert(key, pending);
                        }
                        Err(e) => tracing::debug!("in-dialog request not sent: {e}"),
                    }
                }
            }
        }
        any
    }
}
