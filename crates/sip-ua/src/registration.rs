//! The registration client (REGISTER at start, refreshed at half the granted time, 423
//! Min-Expires, challenges, back-off after failures, removal at exit), and the task's
//! start and exit around it.

use super::*;

/// The first wait before a failed registration is tried again.
const REGISTER_RETRY_BASE: Duration = Duration::from_secs(30);
/// The longest wait between two tries of a failing registration.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(1800);

/// What a registrar's refusal means to the person who ran the phone, with the status
/// line after it: `wrong user name or password (401 Unauthorized)`.
pub(crate) fn registration_refusal(status: u16, reason: &str, had_password: bool) -> String {
    let status_line = format!("{status} {reason}");
    let status_line = status_line.trim();
    let meaning = match status {
        // Our credentials were sent and challenged again: the authenticate step gave up.
        401 | 407 if had_password => "wrong user name or password",
        401 | 407 => "the server asks for a password: pass --password",
        403 => "the server does not allow this user to register here",
        404 => "no such user or domain on this server: check --user and --domain",
        _ => return status_line.to_owned(),
    };
    format!("{meaning} ({status_line})")
}

impl UserAgent {
    pub(crate) fn register(&mut self, now: Instant, expires: u32) {
        let Some(server) = self.s.server else {
            return;
        };
        let transport = self.s.transport;
        let mut o = match self.register_out.clone() {
            Some(mut o) => {
                o.cseq += 1;
                o.auth = None;
                o
            }
            None => Outgoing {
                method: Method::Register,
                uri: format!("sip:{}", self.s.domain),
                to: format!("<{}>", self.aor()),
                call_id: format!("{}@{}", self.ids.next_id(), self.local_ip()),
                from_tag: self.ids.tag(),
                cseq: 1,
                headers: Vec::new(),
                body: None,
                auth: None,
                answered: Vec::new(),
                flow: Flow {
                    transport,
                    remote: server,
                    local: None,
                    connection: None,
                },
            },
        };
        o.answered.clear();
        o.headers = vec![
            ("Contact", format!("<{}>", self.contact_uri(transport))),
            ("Expires", expires.to_string()),
            ("Allow", UA_ALLOW.to_owned()),
        ];
        self.register_out = Some(o.clone());
        match self.send_outgoing(&o, now) {
            Ok((key, _)) => {
                let pending = if expires == 0 {
                    Pending::Unregister(o)
                } else {
                    Pending::Register(o)
                };
                self.pending.insert(key, pending);
            }
            Err(e) => {
                self.out.event("registration failed", Some(&e), &[]);
                self.finish(exit::FAILED);
            }
        }
    }

    pub(crate) fn on_register_response(
        &mut self,
        mut o: Outgoing,
        response: &Message,
        now: Instant,
        unregister: bool,
    ) {
        let status = response.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        if matches!(status, 401 | 407) && self.authenticate(&mut o, response) {
            self.register_out = Some(o.clone());
            if let Ok((key, _)) = self.send_outgoing(&o, now) {
                let p = if unregister {
                    Pending::Unregister(o)
                } else {
                    Pending::Register(o)
                };
                self.pending.insert(key, p);
                return;
            }
        }
        // 423 Interval Too Brief: ask again for what the registrar accepts (once: the
        // new interval is larger, so this cannot loop).
        if status == 423
            && !unregister
            && let Ok(Some(min)) = response.min_expires()
            && min > self.s.expires
        {
            self.s.expires = min;
            self.register(now, min);
            return;
        }
        if unregister {
            if (200..300).contains(&status) {
                self.out.event("unregistered", None, &[]);
            }
            self.registered = false;
            self.exit_ready = true;
            return;
        }
        if !(200..300).contains(&status) {
            let detail = registration_refusal(
                status,
                response.reason().unwrap_or(""),
                self.s.password.is_some(),
            );
            self.out.event(
                "registration refused",
                Some(&detail),
                &[("status", json!(status))],
            );
            self.registered = false;
            if !self.task_started {
                self.finish(exit::FAILED);
            } else {
                self.retry_registration_later(now);
            }
            return;
        }
        self.register_failures = 0;
        let ours = self.contact_uri(self.s.transport);
        let granted = response
            .contacts()
            .filter_map(Result::ok)
            .find_map(|c| match c {
                sip_core::headers::Contact::Addr(na) if na.uri_text == ours => {
                    na.expires().ok().flatten()
                }
                _ => None,
            })
            .or_else(|| response.expires().ok().flatten())
            .unwrap_or(self.s.expires);
        let event = if self.registered {
            "registration refreshed"
        } else {
            "registered"
        };
        self.out.event(
            event,
            Some(&format!("{} for {granted} s", self.aor())),
            &[("aor", json!(self.aor())), ("expires", json!(granted))],
        );
        self.registered = true;
        // Refresh at half the granted time (at least a second from now).
        let refresh = Duration::from_secs(u64::from(granted.max(2) / 2));
        self.arm(now + refresh, Timer::RegisterRefresh);
        if !self.task_started {
            self.start_task(now);
        }
    }

    /// A registration that failed while the task runs is tried again after a wait
    /// that doubles with each failure in a row, from 30 s up to 30 min, and is drawn
    /// between half of that and all of it (RFC 5626 §4.5's back-off): a registrar
    /// that restarts is not met by every phone at once.
    pub(crate) fn retry_registration_later(&mut self, now: Instant) {
        self.register_failures = self.register_failures.saturating_add(1);
        let doublings = self.register_failures.saturating_sub(1).min(6);
        let bound = (REGISTER_RETRY_BASE * 2u32.pow(doublings)).min(REGISTER_RETRY_MAX);
        let fraction = 0.5 + f64::from(self.random_u32()) / f64::from(u32::MAX) / 2.0;
        self.arm(now + bound.mul_f64(fraction), Timer::RegisterRefresh);
    }

    pub(crate) fn finish(&mut self, code: u8) {
        if self.finished.is_none() {
            self.finished = Some(code);
        }
    }

    /// Removes the registration (waiting at most 2 s for the answer) before exiting.
    pub fn begin_exit(&mut self, now: Instant) {
        if self.exiting {
            return;
        }
        self.exiting = true;
        let wait = if self.registered && self.s.server.is_some() {
            self.registered = false;
            self.disarm(Timer::RegisterRefresh);
            self.register(now, 0);
            Duration::from_secs(2)
        } else if self.calls.is_empty() {
            // A moment for what is queued on connections to be written (the 200 to a
            // BYE, say) before the endpoint shuts down.
            Duration::from_millis(300)
        } else {
            Duration::from_secs(2)
        };
        let at = self
            .timers
            .iter()
            .filter(|(_, t)| *t == Timer::ExitDeadline)
            .map(|(at, _)| *at)
            .chain([now + wait])
            .min()
            .unwrap_or(now + wait);
        self.arm(at, Timer::ExitDeadline);
    }

    /// Ctrl-C or SIGTERM: hang up what is up, then exit through [`UserAgent::begin_exit`].
    pub fn interrupt(&mut self, now: Instant) {
        self.interrupted = true;
        if !self.calls.is_empty() {
            // The calls' end finishes the task (see `end_call`); a far end that does
            // not answer our BYE gets 3 s.
            let calls: Vec<CallId> = self.calls.keys().copied().collect();
            for cid in calls {
                self.hang_up(cid, now);
            }
            self.arm(now + Duration::from_secs(3), Timer::ExitDeadline);
        } else {
            self.finish(exit::OK);
        }
    }

    pub(crate) fn start_task(&mut self, now: Instant) {
        self.task_started = true;
        match self.task.clone() {
            Task::Call(c) => {
                self.place_call(c, now);
            }
            Task::Message { target, text } => {
                self.send_simple(Method::Message, &target, Some(text), now)
            }
            Task::Options { target } => self.send_simple(Method::Options, &target, None, now),
            Task::Answer(_) => self.out.event("waiting for calls", None, &[]),
            Task::Listen { .. } => self.out.event("waiting for messages", None, &[]),
        }
    }
}
