//! Which existing bindings a Contact of a REGISTER refers to: by instance and reg-id
//! (RFC 5626 §6, outbound), by instance alone (RFC 5627), and by URI equality
//! (RFC 3261 §19.1.4).

use super::*;

/// A Contact address of the request, checked.
#[derive(Debug)]
pub(super) struct NewContact {
    pub(super) uri: String,
    pub(super) expires: u32,
    pub(super) q: Option<u16>,
    pub(super) instance_id: Option<String>,
    pub(super) reg_id: Option<u32>,
}

impl NewContact {
    /// Whether this contact refers to an existing binding: by (instance-id, reg-id) for
    /// outbound (RFC 5626 §6), by instance-id alone for a GRUU-style contact without
    /// reg-id (RFC 5627), and always by URI (RFC 3261 §19.1.4), which is also the store's
    /// key.
    pub(super) fn matches(&self, b: &Binding) -> bool {
        let by_instance = match (&self.instance_id, self.reg_id) {
            (Some(i), Some(r)) => b.instance_id.as_ref() == Some(i) && b.reg_id == Some(r),
            (Some(i), None) => b.instance_id.as_ref() == Some(i) && b.reg_id.is_none(),
            (None, _) => false,
        };
        by_instance || b.contact == self.uri || uris_equal(&b.contact, &self.uri)
    }
}

/// RFC 3261 §19.1.4 URI equality, for SIP URIs: scheme, user and password exactly,
/// host without case, same port (absent is not 5060), the parameters `transport`, `user`,
/// `ttl`, `method` and `maddr` equal when either has them, any other parameter equal
/// when both have it. Other schemes compare as case-insensitive text.
pub(super) fn uris_equal(a: &str, b: &str) -> bool {
    let (Ok(Uri::Sip(x)), Ok(Uri::Sip(y))) = (Uri::parse(a), Uri::parse(b)) else {
        return a.eq_ignore_ascii_case(b);
    };
    if x.secure != y.secure
        || x.user_decoded() != y.user_decoded()
        || x.password != y.password
        || !x.host.to_string().eq_ignore_ascii_case(&y.host.to_string())
        || x.port != y.port
    {
        return false;
    }
    const MUST_MATCH: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];
    let same = |n: &str| {
        let (p, q) = (x.params.get(n), y.params.get(n));
        match (p, q) {
            (Some(p), Some(q)) => p.unwrap_or("").eq_ignore_ascii_case(q.unwrap_or("")),
            (None, None) => true,
            _ => !MUST_MATCH.iter().any(|m| m.eq_ignore_ascii_case(n)),
        }
    };
    x.params.iter().all(|(n, _)| same(n)) && y.params.iter().all(|(n, _)| same(n))
}
