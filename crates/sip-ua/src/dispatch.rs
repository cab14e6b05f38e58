//! What the transaction layer reports, routed: requests we received (refused here when
//! no part of us serves them, else handed to the call or MESSAGE code), responses to the
//! requests we sent, and the requests that got no final response.

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
            .call
            .as_ref()
            .filter(|c| c.call_id == request.call_id().unwrap_or(""))
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
                    ("Allow", ALLOW.to_owned()),
                    ("Accept", "application/sdp, text/plain".to_owned()),
                    ("Supported", "timer".to_owned()),
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
            self.respond(key, request, 405, &[("Allow", ALLOW.to_owned())], None, now);
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
            Pending::Invite => self.on_invite_response(key, &response, now),
            Pending::Bye => {
                if fin {
                    self.pending.remove(&key);
                    // Why we hung up, when it was not the script's choice.
                    let (reason, code) = self
                        .call
                        .as_ref()
                        .and_then(|c| c.cancelled)
                        .unwrap_or(("bye (local)", exit::OK));
                    self.end_call(reason, code);
                }
            }
            Pending::Modify {
                method,
                direction,
                refresh,
            } => self.on_modify_response(key, &method, direction, refresh, &response, now),
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
            Pending::Invite => {
                if self
                    .call
                    .as_ref()
                    .is_some_and(|c| c.state != CallState::Answered)
                {
                    let fallback = match &unreachable {
                        Some(why) => (format!("failed ({why})"), exit::FAILED),
                        None => ("no answer (timeout)".to_owned(), exit::NO_ANSWER),
                    };
                    let (reason, code) = self
                        .call
                        .as_ref()
                        .and_then(|c| c.cancelled)
                        .map_or(fallback, |(r, c)| (r.to_owned(), c));
                    self.end_call(&reason, code);
                }
            }
            Pending::Bye => self.end_call("bye (local, no response)", exit::OK),
            Pending::Modify { .. } => {
                if let Some(c) = self.call.as_mut() {
                    c.oa.offer_rejected();
                }
                self.out.warn("the far end did not answer a session change");
            }
            Pending::Other => {}
        }
    }
}
