//! Requests outside any dialog ([`Outgoing`]): built, sent through the transaction
//! layer, and sent again with credentials when a 401 or 407 asks for them (once per
//! realm: a second challenge for a realm answered means the password is wrong).

use super::*;

impl UserAgent {
    pub(crate) fn build_outgoing(&mut self, o: &Outgoing) -> Result<Message, String> {
        let via = self.via(o.flow.transport);
        let mut b = MessageBuilder::request(&o.method, &o.uri);
        b.push("Via", via);
        b.push("Max-Forwards", 70);
        b.push("From", self.our_from(&o.from_tag));
        b.push("To", &o.to);
        b.push("Call-ID", &o.call_id);
        b.push("CSeq", format_args!("{} {}", o.cseq, o.method));
        for (name, value) in &o.headers {
            b.push(name, value);
        }
        if let Some((name, value)) = &o.auth {
            b.push(name, value);
        }
        b.push(
            "User-Agent",
            concat!("switchboard-phone/", env!("CARGO_PKG_VERSION")),
        );
        if let Some((ct, body)) = &o.body {
            b = b.body(ct, body.clone());
        }
        b.build()
            .map_err(|e| format!("cannot build {}: {e}", o.method))
    }

    pub(crate) fn send_outgoing(
        &mut self,
        o: &Outgoing,
        now: Instant,
    ) -> Result<(TransactionKey, Message), String> {
        let msg = self.build_outgoing(o)?;
        let key = self
            .txl
            .send_request(now, msg.clone(), o.flow)
            .map_err(|e| e.to_string())?;
        Ok((key, msg))
    }

    /// Answers a 401/407 by computing credentials for `o`; `false` when it cannot (no
    /// password, nothing answerable, or the same challenge again: a wrong password).
    pub(crate) fn authenticate(&mut self, o: &mut Outgoing, response: &Message) -> bool {
        let Some(password) = self.s.password.clone() else {
            return false;
        };
        let (challenge_header, auth_header) = if response.status() == Some(407) {
            (HeaderName::ProxyAuthenticate, "Proxy-Authorization")
        } else {
            (HeaderName::WwwAuthenticate, "Authorization")
        };
        let mut challenges: Vec<Challenge<'_>> = Vec::new();
        for value in response.get_all(challenge_header) {
            if let Ok(list) = Challenge::parse_list(value) {
                challenges.extend(list);
            }
        }
        let Some(challenge) = pick_best(&challenges) else {
            return false;
        };
        let Some(d) = challenge.as_digest() else {
            return false;
        };
        // A second challenge for a realm we already answered, not marked stale, means
        // the server refused our credentials: answering again would loop forever.
        let realm_key = format!("{auth_header} {}", d.realm);
        if o.answered.contains(&realm_key) && !d.stale {
            return false;
        }
        let cnonce = self.ids.next_id();
        match answer_challenge(
            challenge,
            &self.s.user,
            &password,
            o.method.as_str(),
            &o.uri,
            &cnonce,
            1,
        ) {
            Ok(creds) => {
                if !o.answered.contains(&realm_key) {
                    o.answered.push(realm_key);
                }
                o.auth = Some((auth_header, creds.to_string()));
                o.cseq += 1;
                true
            }
            Err(e) => {
                tracing::debug!("cannot answer the challenge: {e}");
                false
            }
        }
    }
}
