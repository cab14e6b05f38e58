//! The steps of RFC 3261 §10.3 for one REGISTER: the Request-URI, Require, the AOR,
//! authentication and authorization, `Contact: *`, each contact's expiry with Path and
//! outbound (step 7), and the bindings the 200 lists (step 8). `process` runs them in
//! order, each a function named for what it checks or makes.

use super::*;

impl<L: LocationStore, U: UserStore> Registrar<L, U> {
    /// §10.3 steps 1 to 8; `Ok` carries the headers of the 200.
    pub(super) fn process(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
        transport: Transport,
        aor_out: &mut Option<String>,
    ) -> Result<Headers, Refusal> {
        self.check_request_uri(req)?;
        check_required_extensions(req)?;
        let user = self.user_of_aor(req)?;
        self.authorize(now, req, source, &user)?;
        let aor = format!("sip:{user}@{}", self.settings.domain.to_ascii_lowercase());
        *aor_out = Some(aor.clone());
        let contacts = contacts_of(req)?;
        let mut extra = Vec::new();
        if !contacts.is_empty() {
            let (changes, headers) =
                self.binding_changes(now, req, &aor, &contacts, source, transport)?;
            extra = headers;
            // Step 7's commit: all or nothing, staged here and stored by `commit`
            // before the 200 may be sent.
            self.location.stage(changes);
        }
        self.ok_headers(now, &aor, extra)
    }

    /// Step 1 (and a REGISTER at all): is the Request-URI ours?
    fn check_request_uri(&self, req: &Message) -> Result<(), Refusal> {
        if req.method() != Some(&Method::Register) {
            return Err(Refusal::new(405).with("Allow", "REGISTER"));
        }
        let Some(Uri::Sip(ruri)) = req.request_uri() else {
            return Err(Refusal::new(416));
        };
        if !self.is_us(&ruri.host) {
            return Err(Refusal::because(
                403,
                "Forbidden (domain not served by this registrar)",
            ));
        }
        Ok(())
    }

    /// Step 5, first half: the user of the AOR in To, needed to know whom to
    /// authenticate for.
    fn user_of_aor(&self, req: &Message) -> Result<String, Refusal> {
        let to = req
            .to()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?;
        let Uri::Sip(to_uri) = to.uri else {
            return Err(Refusal::because(
                400,
                "Bad Request (To is not a sip or sips URI)",
            ));
        };
        if !self.is_our_domain(&to_uri.host) {
            return Err(Refusal::because(
                404,
                "Not Found (not a domain of this registrar)",
            ));
        }
        aor_user(&to_uri).ok_or_else(|| Refusal::because(404, "Not Found (no such user)"))
    }

    /// Steps 3 and 4: the sender proves to be `user` (or, without authentication, `user`
    /// exists).
    fn authorize(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
        user: &str,
    ) -> Result<(), Refusal> {
        if self.settings.rules.require_auth {
            let who = self.authenticate(now, req, source)?;
            if who != user {
                return Err(Refusal::because(
                    403,
                    "Forbidden (may not register this address-of-record)",
                ));
            }
            return Ok(());
        }
        match self.users.get_at(user, now) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Refusal::because(404, "Not Found (no such user)")),
            Err(e) => Err(self.store_failed(&e)),
        }
    }

    /// Steps 6 and 7 for a REGISTER with contacts: the changes to the AOR's bindings
    /// and the extra headers of the 200.
    fn binding_changes(
        &mut self,
        now: u64,
        req: &Message,
        aor: &str,
        contacts: &[Contact<'_>],
        source: SocketAddr,
        transport: Transport,
    ) -> Result<(Vec<Change>, Headers), Refusal> {
        let current = self
            .location
            .lookup(aor, now)
            .map_err(|e| self.store_failed(&e))?;
        let call_id = req
            .call_id()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?;
        let cseq = req
            .cseq()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?
            .seq;
        let expires_header = req
            .expires()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?;
        if contacts.iter().any(|c| matches!(c, Contact::Star)) {
            let changes = remove_all(aor, contacts, expires_header, &current, call_id, cseq)?;
            return Ok((changes, Vec::new()));
        }
        let facts = RequestFacts {
            aor,
            call_id,
            cseq,
            expires_header,
            source,
            transport,
            now,
        };
        self.plan(req, &facts, contacts, &current)
    }

    /// Step 8: every current binding, best first, then `extra` and the Date.
    fn ok_headers(&mut self, now: u64, aor: &str, extra: Headers) -> Result<Headers, Refusal> {
        let bindings = self
            .location
            .lookup(aor, now)
            .map_err(|e| self.store_failed(&e))?;
        let mut headers: Headers = bindings
            .iter()
            .map(|b| ("Contact", contact_value(b, now)))
            .collect();
        headers.extend(extra);
        headers.push(("Date", http_date(now)));
        Ok(headers)
    }

    /// Step 7 for a list of contact addresses: the changes to make and the extra headers
    /// of the 200 (Path echo, Require: outbound).
    pub(super) fn plan(
        &self,
        req: &Message,
        facts: &RequestFacts<'_>,
        contacts: &[Contact<'_>],
        current: &[Binding],
    ) -> Result<(Vec<Change>, Headers), Refusal> {
        let supported = |tag: &str| {
            req.tokens(HeaderName::Supported)
                .filter_map(Result::ok)
                .any(|t| t.eq_ignore_ascii_case(tag))
        };
        let mut headers = Vec::new();

        // Path (RFC 3327 §5.3).
        let mut path = Vec::new();
        let mut first_path_ob = false;
        for (i, p) in req.paths().enumerate() {
            let p = p.map_err(|e| Refusal::because(400, e.reason_phrase()))?;
            if i == 0 {
                first_path_ob = p.uri.as_sip().is_some_and(|u| u.params.contains("ob"));
            }
            path.push(route_value(&p));
        }
        if !path.is_empty() {
            if !supported("path") {
                return Err(Refusal::new(420).with("Unsupported", "path"));
            }
            headers.push(("Path", path.join(", ")));
        }

        // Outbound (RFC 5626 §6): is outbound processing possible at all?
        let first_hop = req.vias().count() == 1;
        let outbound_ok = first_hop || first_path_ob;

        let mut parsed = Vec::with_capacity(contacts.len());
        for c in contacts {
            let Contact::Addr(na) = c else { continue };
            parsed.push(self.parse_contact(na, facts)?);
        }
        if parsed.iter().any(|c| c.reg_id.is_some()) {
            if !outbound_ok {
                if supported("outbound") {
                    return Err(Refusal::new(439));
                }
                for c in &mut parsed {
                    c.reg_id = None;
                }
            } else if parsed.iter().filter(|c| c.expires > 0).count() > 1 {
                return Err(Refusal::because(
                    400,
                    "Bad Request (several Contacts with a non-zero expiry and a reg-id)",
                ));
            }
        }
        // 423 before any change: "It then skips the remaining steps".
        let min = self.settings.rules.min_expires;
        if parsed
            .iter()
            .any(|c| c.expires > 0 && c.expires < ONE_HOUR && c.expires < min)
        {
            return Err(Refusal::new(423).with("Min-Expires", min.to_string()));
        }
        let user_agent = req.user_agent().map(|ua| {
            let mut ua: String = ua
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            if ua.len() > MAX_USER_AGENT {
                let mut end = MAX_USER_AGENT;
                while !ua.is_char_boundary(end) {
                    end -= 1;
                }
                ua.truncate(end);
            }
            ua
        });

        let mut changes = Vec::new();
        let mut used_reg_id = false;
        for c in parsed {
            let matched: Vec<&Binding> = current.iter().filter(|b| c.matches(b)).collect();
            for b in &matched {
                check_order(b, facts.call_id, facts.cseq)?;
            }
            for b in &matched {
                // A binding found by instance/reg-id under another URI is replaced; one
                // under the same URI is overwritten by the upsert (or removed below).
                if b.contact != c.uri || c.expires == 0 {
                    changes.push(Change::Remove {
                        aor: b.aor.clone(),
                        contact: b.contact.clone(),
                    });
                }
            }
            if c.expires == 0 {
                continue;
            }
            used_reg_id |= c.reg_id.is_some();
            let granted = c.expires.min(self.settings.rules.max_expires);
            changes.push(Change::Upsert(Binding {
                aor: facts.aor.to_owned(),
                contact: c.uri,
                expires_at: facts.now + u64::from(granted),
                q: c.q,
                call_id: facts.call_id.to_owned(),
                cseq: facts.cseq,
                transport: facts.transport,
                source: facts.source,
                path: path.clone(),
                instance_id: c.instance_id,
                reg_id: c.reg_id,
                user_agent: user_agent.clone(),
                registered_at: facts.now,
            }));
        }
        if used_reg_id && supported("outbound") {
            headers.push(("Require", "outbound".into()));
        }
        Ok((changes, headers))
    }

    /// One Contact address with its requested expiry and outbound identity.
    pub(super) fn parse_contact(
        &self,
        na: &NameAddr<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<NewContact, Refusal> {
        let bad = |what: String| Refusal::because(400, format!("Bad Request ({what})"));
        let expires = na
            .expires()
            .map_err(|e| Refusal::because(400, e.reason_phrase()))?
            .or(facts.expires_header)
            .unwrap_or(self.settings.rules.default_expires);
        let q = match na.params.get("q") {
            None => None,
            Some(v) => Some(
                na.q()
                    .ok_or_else(|| bad(format!("q \"{}\" is not a qvalue", v.unwrap_or(""))))?,
            ),
        };
        let instance_id = match na.params.get("+sip.instance") {
            None => None,
            Some(Some(v)) => Some(unquote(v).into_owned()),
            Some(None) => return Err(bad("+sip.instance without a value".into())),
        };
        let reg_id = match na.params.get("reg-id") {
            None => None,
            Some(v) => Some(
                v.and_then(|v| v.parse::<u32>().ok())
                    .filter(|r| *r > 0)
                    .ok_or_else(|| {
                        bad(format!("reg-id \"{}\" is not 1 to 2^31-1", v.unwrap_or("")))
                    })?,
            ),
        };
        Ok(NewContact {
            uri: na.uri_text.to_owned(),
            expires,
            q,
            // RFC 5626 §6: a reg-id without an instance-id is ignored.
            reg_id: reg_id.filter(|_| instance_id.is_some()),
            instance_id,
        })
    }

    /// Steps 3 and 4's authentication: the user name the credentials prove, or the
    /// refusal to send (a challenge, mostly).
    pub(super) fn authenticate(
        &mut self,
        now: u64,
        req: &Message,
        source: SocketAddr,
    ) -> Result<String, Refusal> {
        let users = &mut self.users;
        let checked = self.auth.check_from(
            now,
            req,
            HeaderName::Authorization,
            Some(source.ip()),
            |name| users.get_at(name, now),
        );
        match checked {
            Ok(AuthCheck::User(name)) => Ok(name),
            Ok(AuthCheck::Challenge { stale }) => Err(self.challenge(now, stale)),
            Ok(AuthCheck::Refuse(code, reason)) => Err(Refusal::because(code, reason)),
            Err(e) => Err(self.store_failed(&e)),
        }
    }

    /// Whether a Request-URI host names this registrar: an IP literal (the request
    /// reached us, so an address can only mean us, even one NAT put in front of us),
    /// or what [`Registrar::is_our_domain`] accepts.
    pub(super) fn is_us(&self, host: &Host<'_>) -> bool {
        matches!(host, Host::V4(_) | Host::V6(_)) || self.is_our_domain(host)
    }

    /// Whether a host is ours for an address of record: the domain, an alias, or an
    /// address we listen on (`phone --server 127.0.0.1:5060` registers
    /// `alice@127.0.0.1`, which is `alice@DOMAIN`).
    pub(super) fn is_our_domain(&self, host: &Host<'_>) -> bool {
        self.myself.is_own_host(host)
    }
}

/// Step 2: extensions the UA requires that we lack (we know Path and outbound).
fn check_required_extensions(req: &Message) -> Result<(), Refusal> {
    let unsupported: Vec<&str> = req
        .tokens(HeaderName::Require)
        .filter_map(Result::ok)
        .filter(|t| !t.eq_ignore_ascii_case("path") && !t.eq_ignore_ascii_case("outbound"))
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(Refusal::new(420).with("Unsupported", unsupported.join(", ")))
    }
}

/// The Contact header fields of a REGISTER, every one well formed.
fn contacts_of(req: &Message) -> Result<Vec<Contact<'_>>, Refusal> {
    req.contacts()
        .map(|c| c.map_err(|e| Refusal::because(400, e.reason_phrase())))
        .collect()
}

/// Step 6: `Contact: *` alone with `Expires: 0` removes every binding of `aor`, none of
/// them newer on the same Call-ID.
fn remove_all(
    aor: &str,
    contacts: &[Contact<'_>],
    expires_header: Option<u32>,
    current: &[Binding],
    call_id: &str,
    cseq: u32,
) -> Result<Vec<Change>, Refusal> {
    if contacts.len() > 1 {
        return Err(Refusal::because(
            400,
            "Bad Request (Contact: * must be the only Contact)",
        ));
    }
    if expires_header != Some(0) {
        return Err(Refusal::because(
            400,
            "Bad Request (Contact: * needs Expires: 0)",
        ));
    }
    for b in current {
        check_order(b, call_id, cseq)?;
    }
    Ok(vec![Change::RemoveAll {
        aor: aor.to_owned(),
    }])
}

/// What one REGISTER says about every binding it makes.
pub(super) struct RequestFacts<'a> {
    pub(super) aor: &'a str,
    pub(super) call_id: &'a str,
    pub(super) cseq: u32,
    pub(super) expires_header: Option<u32>,
    pub(super) source: SocketAddr,
    pub(super) transport: Transport,
    pub(super) now: u64,
}

/// §10.3 steps 6 and 7: a REGISTER on the same Call-ID must be newer than the binding.
pub(super) fn check_order(b: &Binding, call_id: &str, cseq: u32) -> Result<(), Refusal> {
    if b.call_id == call_id && cseq <= b.cseq {
        return Err(Refusal::because(
            500,
            format!(
                "Server Internal Error (out-of-order REGISTER: CSeq {cseq} is not above {})",
                b.cseq
            ),
        ));
    }
    Ok(())
}

/// The user part of an AOR, unescaped, if it can name a user (§10.3 step 5's canonical
/// form drops the parameters and decodes escapes).
pub(super) fn aor_user(uri: &SipUri<'_>) -> Option<String> {
    let raw = uri.user_decoded()?;
    let user = String::from_utf8(raw.into_owned()).ok()?;
    store::check_user_name(&user).ok()?;
    Some(user)
}

/// A Path value as stored and echoed: `<uri>;params`, without display name or line folds.
pub(super) fn route_value(na: &NameAddr<'_>) -> String {
    let mut s = format!("<{}>", na.uri_text);
    if !na.params.is_empty() {
        s.push(';');
        s.extend(na.params.as_str().chars().filter(|c| !c.is_whitespace()));
    }
    s
}
