//! What the admin API asks of the router, and the counters it keeps for `/metrics`.
//!
//! Requests come on the driver's side channel ([`RouterInput::Admin`]) beside the
//! storage writer's reports, so the router answers them on its own turn, between SIP
//! messages, and nothing of the HTTP side runs on the SIP loop. Answers go back on a
//! `std::sync::mpsc::SyncSender` with room for one: sending never waits, and an asker
//! who gave up is no matter.

use super::Router;
use sip_core::Method;
use sip_net::Now;
use std::sync::mpsc::SyncSender;
use store::Change;

/// An input on the router's side channel.
#[derive(Debug)]
pub enum RouterInput {
    /// The storage writer stored a batch (or failed to).
    Committed(store::Committed),
    /// A question or an order from the admin API.
    Admin(AdminRequest),
}

/// What the admin API asks of the router.
#[derive(Debug)]
pub enum AdminRequest {
    /// The counters now.
    Figures(SyncSender<admin::SipFigures>),
    /// Users were added, changed or removed: authentication uses the change at once.
    UsersChanged,
    /// Remove one registration: it goes with the next storage batch, and readers stop
    /// seeing it once that batch is stored. Answers whether it was there.
    RemoveBinding {
        /// The address-of-record.
        aor: String,
        /// The contact, as stored.
        contact: String,
        /// Whether it was there.
        done: SyncSender<bool>,
    },
}

/// The methods counted one by one; others count as `other`.
const METHODS: [&str; 15] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
    "other",
];

/// The lowest and highest status codes counted (RFC 3261 §7.2: three digits, 1xx-6xx).
const FIRST_CODE: usize = 100;
const LAST_CODE: usize = 699;

/// Requests received by method and responses sent by code: plain additions on the SIP
/// loop, read by [`AdminRequest::Figures`].
#[derive(Debug)]
pub struct SipCounts {
    requests: [u64; METHODS.len()],
    responses: Box<[u64; LAST_CODE - FIRST_CODE + 1]>,
}

impl Default for SipCounts {
    fn default() -> Self {
        SipCounts {
            requests: [0; METHODS.len()],
            responses: Box::new([0; LAST_CODE - FIRST_CODE + 1]),
        }
    }
}

impl SipCounts {
    /// A request received.
    pub fn request(&mut self, method: Option<&Method>) {
        let i = match method {
            Some(Method::Invite) => 0,
            Some(Method::Ack) => 1,
            Some(Method::Bye) => 2,
            Some(Method::Cancel) => 3,
            Some(Method::Register) => 4,
            Some(Method::Options) => 5,
            Some(Method::Info) => 6,
            Some(Method::Update) => 7,
            Some(Method::Prack) => 8,
            Some(Method::Subscribe) => 9,
            Some(Method::Notify) => 10,
            Some(Method::Refer) => 11,
            Some(Method::Message) => 12,
            Some(Method::Publish) => 13,
            _ => 14,
        };
        self.requests[i] += 1;
    }

    /// A message sent: counted when it is a response (`SIP/2.0 NNN`).
    pub fn sent(&mut self, bytes: &[u8]) {
        let Some(code) = bytes
            .strip_prefix(b"SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
        else {
            return;
        };
        if !code.iter().all(u8::is_ascii_digit) {
            return;
        }
        let code = code
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if let Some(slot) = code
            .checked_sub(FIRST_CODE)
            .and_then(|i| self.responses.get_mut(i))
        {
            *slot += 1;
        }
    }

    fn requests(&self) -> Vec<(String, u64)> {
        METHODS
            .iter()
            .zip(self.requests)
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| ((*m).to_owned(), n))
            .collect()
    }

    fn responses(&self) -> Vec<(u16, u64)> {
        self.responses
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(i, n)| Some((u16::try_from(i + FIRST_CODE).ok()?, *n)))
            .collect()
    }
}

impl Router {
    /// Handles one input of the side channel.
    pub(crate) fn handle_input(&mut self, now: Now, input: RouterInput) {
        match input {
            RouterInput::Committed(c) => self.handle_committed(now, c),
            RouterInput::Admin(req) => self.handle_admin(now, req),
        }
    }

    /// Answers or carries out what the admin API asked.
    pub(crate) fn handle_admin(&mut self, now: Now, request: AdminRequest) {
        match request {
            AdminRequest::Figures(reply) => {
                let _ = reply.try_send(self.figures());
            }
            AdminRequest::UsersChanged => self.registrar.users_changed(now.unix_secs),
            AdminRequest::RemoveBinding { aor, contact, done } => {
                let there = self
                    .location
                    .lookup(&aor, now.unix_secs)
                    .iter()
                    .any(|b| b.contact == contact);
                if there {
                    tracing::info!(%aor, %contact, "registration removed by an administrator");
                    self.registrar
                        .stage_changes(vec![Change::Remove { aor, contact }]);
                    // Stored with the next batch, without waiting for a REGISTER.
                    self.commit_due = Some(now.instant);
                    if self.commits == super::Commits::InPlace {
                        let _ = self.registrar.commit();
                    }
                }
                let _ = done.try_send(there);
            }
        }
    }

    fn figures(&self) -> admin::SipFigures {
        let r = self.registrar.stats();
        let p = self.proxy.stats();
        admin::SipFigures {
            registrations: self.location.len() as u64,
            registered_aors: self.location.aor_count() as u64,
            requests_received: self.counts.requests(),
            responses_sent: self.counts.responses(),
            transactions: self.transactions.len() as u64,
            calls_routed: p.calls_routed,
            calls_in_progress: p.contexts as u64,
            requests_forwarded: p.requests_forwarded,
            pbx_calls_in_progress: self.b2bua.as_ref().map_or(0, |b| b.calls() as u64),
            pbx_calls_started: self.b2bua.as_ref().map_or(0, |b| b.counts().0),
            register_requests: r.requests,
            challenges: r.challenges + p.challenges,
            auth_failures: r.auth_failures,
            bans: r.bans,
            refused_banned: r.refused_banned,
            store_errors: r.store_errors,
            call_records_written: self.cdr_counters.as_ref().map_or(0, |c| c.written()),
            call_records_dropped: self.cdr_counters.as_ref().map_or(0, |c| c.dropped()),
            calls_unrecorded: self.proxy.call_stats().map_or(0, |s| s.untracked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_method_and_responses_by_code() {
        let mut c = SipCounts::default();
        c.request(Some(&Method::Invite));
        c.request(Some(&Method::Invite));
        c.request(None);
        c.sent(b"SIP/2.0 200 OK\r\n");
        c.sent(b"SIP/2.0 407 Proxy Authentication Required\r\n");
        c.sent(b"SIP/2.0 407 Proxy Authentication Required\r\n");
        c.sent(b"INVITE sip:bob@example.test SIP/2.0\r\n");
        c.sent(b"SIP/2.0 99 Nope\r\n");
        c.sent(b"SIP/2.0 7");
        assert_eq!(c.requests(), [("INVITE".into(), 2), ("other".into(), 1)]);
        assert_eq!(c.responses(), [(200, 1), (407, 2)]);
    }
}
