//! MESSAGE (RFC 3428) and OPTIONS outside any dialog: sent with the answers printed, and
//! MESSAGEs received.

use super::*;

/// The events printed for the answer to a MESSAGE or an OPTIONS: (success, failure).
fn simple_event_names(method: &Method) -> (&'static str, &'static str) {
    match method {
        Method::Options => ("options", "options failed"),
        _ => ("message sent", "message failed"),
    }
}

impl UserAgent {
    /// Sends a MESSAGE with `text`, or an OPTIONS, outside any dialog.
    pub(crate) fn send_simple(
        &mut self,
        method: Method,
        target: &str,
        text: Option<String>,
        now: Instant,
    ) {
        let (_, failed) = simple_event_names(&method);
        let flow = match self.flow_for(target) {
            Ok(f) => f,
            Err(e) => {
                self.out.event(failed, Some(&e), &[]);
                self.finish(exit::FAILED);
                return;
            }
        };
        let o = Outgoing {
            method,
            uri: target.to_owned(),
            to: format!("<{target}>"),
            call_id: format!("{}@{}", self.ids.next_id(), self.local_ip()),
            from_tag: self.ids.tag(),
            cseq: 1,
            headers: Vec::new(),
            body: text.map(|t| ("text/plain;charset=UTF-8", Bytes::from(t))),
            auth: None,
            answered: Vec::new(),
            flow,
        };
        match self.send_outgoing(&o, now) {
            Ok((key, _)) => {
                self.pending.insert(key, Pending::Message(o));
            }
            Err(e) => {
                self.out.event(failed, Some(&e), &[]);
                self.finish(exit::FAILED);
            }
        }
    }

    pub(crate) fn on_message_response(
        &mut self,
        mut o: Outgoing,
        response: &Message,
        now: Instant,
    ) {
        let status = response.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        if matches!(status, 401 | 407)
            && self.authenticate(&mut o, response)
            && let Ok((key, _)) = self.send_outgoing(&o, now)
        {
            self.pending.insert(key, Pending::Message(o));
            return;
        }
        let (sent, failed) = simple_event_names(&o.method);
        let reason = format!("{status} {}", response.reason().unwrap_or(""));
        let allow = response.get(HeaderName::Allow).unwrap_or("").to_owned();
        let detail = if o.method == Method::Options && !allow.is_empty() {
            format!("{} (Allow: {allow})", reason.trim())
        } else {
            reason.trim().to_owned()
        };
        let fields = [("status", json!(status)), ("allow", json!(allow))];
        if (200..300).contains(&status) {
            self.out.event(sent, Some(&detail), &fields);
            self.finish(exit::OK);
        } else {
            self.out.event(failed, Some(&detail), &fields);
            self.finish(exit_for_status(status));
        }
    }

    pub(crate) fn on_incoming_message(
        &mut self,
        key: TransactionKey,
        request: &Message,
        now: Instant,
    ) {
        let from = request
            .from()
            .map(|f| f.uri_text.to_owned())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(request.body()).into_owned();
        self.respond(key, request, 200, &[], None, now);
        self.out.event(
            "message",
            Some(&format!("from {from}: {text}")),
            &[("from", json!(from)), ("text", json!(text))],
        );
        self.messages_seen += 1;
        if let Task::Listen { count: Some(n) } = self.task
            && self.messages_seen >= n
        {
            self.finish(exit::OK);
        }
    }
}
