//! The registrar's answers: refusals on their way out, the response with its To tag and
//! Server header, the 401 challenge, and the Contact and Date values of the 200.

use super::*;

/// Extra headers of a response, in order.
pub(super) type Headers = Vec<(&'static str, String)>;

/// A refusal on the way: status, reason phrase (standard when `None`), extra headers.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) code: u16,
    pub(super) reason: Option<String>,
    pub(super) headers: Headers,
}

impl Refusal {
    pub(super) fn new(code: u16) -> Refusal {
        Refusal {
            code,
            reason: None,
            headers: Vec::new(),
        }
    }
    pub(super) fn because(code: u16, reason: impl Into<String>) -> Refusal {
        // A reason phrase is one line: whatever text we quote in it must not break that.
        let reason: String = reason
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Refusal {
            code,
            reason: Some(reason),
            headers: Vec::new(),
        }
    }
    pub(super) fn with(mut self, name: &'static str, value: impl Into<String>) -> Refusal {
        self.headers.push((name, value.into()));
        self
    }
}

impl<L: LocationStore, U: UserStore> Registrar<L, U> {
    /// The response to `req` with this status, reason (standard when `None`) and extra
    /// headers, a To tag and our Server header.
    pub(super) fn respond(
        &self,
        req: &Message,
        code: u16,
        reason: Option<&str>,
        headers: &Headers,
    ) -> Option<Bytes> {
        let tag = self.to_tag(req);
        let mut b = response_to_with_reason(req, code, reason.unwrap_or(""), Some(&tag));
        for (name, value) in headers {
            b.push(name, value);
        }
        b.push("Server", &self.settings.server_name);
        // The request validated, so the copied headers are sound and ours are built
        // from checked values: an error here would be our bug; answer nothing then.
        b.into_bytes().ok()
    }

    /// A 401 with one fresh nonce for each configured algorithm (RFC 8760 §2.4:
    /// strongest first, unless configured otherwise). Every 401 has this one form,
    /// whatever led to it.
    pub(super) fn challenge(&self, now: u64, stale: bool) -> Refusal {
        let mut refusal = Refusal::new(401);
        for value in self.auth.challenges(now, stale) {
            refusal = refusal.with("WWW-Authenticate", value);
        }
        refusal
    }

    pub(super) fn store_failed(&mut self, e: &StoreError) -> Refusal {
        self.stats.store_errors += 1;
        tracing::error!(error = %e, "registrar: storage failed; answering 500");
        Refusal::because(500, STORAGE_FAILED)
    }

    /// A To tag stable across retransmissions of one request (the challenges are
    /// stateless, RFC 3261 §8.2.7) and unguessable by others (RFC 3261 §19.3).
    pub(super) fn to_tag(&self, req: &Message) -> String {
        let call_id = req.call_id().unwrap_or("");
        let seq = req.cseq().map(|c| c.seq).unwrap_or(0).to_be_bytes();
        let from_tag = req.from().ok().and_then(|f| f.tag()).unwrap_or("");
        self.ids
            .derive(&[call_id.as_bytes(), &seq, from_tag.as_bytes()])
    }
}

/// A Contact of the 200: the URI, its remaining expiry, q and the outbound identity.
pub(super) fn contact_value(b: &Binding, now: u64) -> String {
    let mut s = format!("<{}>;expires={}", b.contact, b.expires_in(now));
    if let Some(q) = b.q {
        s.push_str(";q=");
        s.push_str(&format_q(q));
    }
    if let Some(i) = &b.instance_id {
        s.push_str(";+sip.instance=");
        s.push_str(&sip_core::scan::quote(i));
    }
    if let Some(r) = b.reg_id {
        s.push_str(&format!(";reg-id={r}"));
    }
    s
}

/// A qvalue in thousandths written as RFC 3261 writes it: 1, 0.5, 0.25, 0.
pub(super) fn format_q(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let s = format!("0.{q:03}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// An RFC 1123 date (the SIP Date header, RFC 3261 §20.17) for Unix seconds.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = usize::try_from(month - 1)
        .ok()
        .and_then(|m| MONTHS.get(m))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {day:02} {mon} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
