//! Users as the registrar needs them: a name and the digest HA1 per algorithm.

use crate::StoreError;
use sip_core::auth::{Algorithm, ha1};
use std::fmt;

/// A user who may register, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name: the user part of the AOR and the digest username.
    pub name: String,
    /// The realm the hashes were computed for (the served domain): if the domain changes,
    /// the hashes no longer verify and the password must be set again.
    pub realm: String,
    /// H(name:realm:password) per algorithm.
    pub ha1: Ha1Set,
    /// When the user was added, in Unix seconds.
    pub created_at: u64,
    /// The user's extension number (`201`), which callers may dial instead of the
    /// name; see [`check_extension`].
    pub extension: Option<String>,
    /// Where the user's calls are forwarded, and when.
    pub forwarding: Forwarding,
}

/// A user's call forwarding, as stored. Each target is an extension number, a user
/// name, or a number the dial plan routes (see [`check_forward_target`]); the PBX
/// follows them (`pbx::hunt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// Every call, without ringing the user's phones.
    pub always: Option<String>,
    /// When the phones answer busy.
    pub busy: Option<String>,
    /// When nobody answers within `no_answer_secs`.
    pub no_answer: Option<String>,
    /// Seconds the phones ring before a no-answer forward: 1 to
    /// [`Forwarding::MAX_NO_ANSWER_SECS`].
    pub no_answer_secs: u32,
    /// When no phone can be reached (none registered, or they do not respond).
    pub unreachable: Option<String>,
}

impl Forwarding {
    /// Seconds before a no-answer forward when not given.
    pub const DEFAULT_NO_ANSWER_SECS: u32 = 20;
    /// The longest a no-answer forward may wait.
    pub const MAX_NO_ANSWER_SECS: u32 = 600;

    /// Whether nothing is forwarded.
    pub fn is_empty(&self) -> bool {
        self.always.is_none()
            && self.busy.is_none()
            && self.no_answer.is_none()
            && self.unreachable.is_none()
    }

    /// The targets that are set, each with its kind (`always`, `busy`, `no_answer`,
    /// `unreachable`).
    pub fn targets(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("always", &self.always),
            ("busy", &self.busy),
            ("no_answer", &self.no_answer),
            ("unreachable", &self.unreachable),
        ]
        .into_iter()
        .filter_map(|(kind, t)| Some((kind, t.as_deref()?)))
    }

    /// Checks every target's form and the no-answer time.
    pub fn check(&self) -> Result<(), StoreError> {
        for (_, target) in self.targets() {
            check_forward_target(target)?;
        }
        if !(1..=Forwarding::MAX_NO_ANSWER_SECS).contains(&self.no_answer_secs) {
            return Err(StoreError::InvalidForwarding {
                target: self.no_answer.clone().unwrap_or_default(),
                why: "the no-answer time must be 1 to 600 seconds",
            });
        }
        Ok(())
    }
}

impl Default for Forwarding {
    fn default() -> Forwarding {
        Forwarding {
            always: None,
            busy: None,
            no_answer: None,
            no_answer_secs: Forwarding::DEFAULT_NO_ANSWER_SECS,
            unreachable: None,
        }
    }
}

/// Checks `forwarding` for the user `user`: the form of each target, and that none is
/// the user themself.
pub(crate) fn check_forwarding_of(user: &User, forwarding: &Forwarding) -> Result<(), StoreError> {
    forwarding.check()?;
    for (_, target) in forwarding.targets() {
        if target == user.name || Some(target) == user.extension.as_deref() {
            return Err(StoreError::InvalidForwarding {
                target: target.to_owned(),
                why: "that is the user themself: their calls would come back to them",
            });
        }
    }
    Ok(())
}

/// Checks a forward target's form: 1 to 64 characters that a phone can dial or a SIP
/// URI's user part can hold as they are: letters, digits and `-_.!~*'()+&=$#`.
/// Whether it reaches anybody is for the caller to check (the user store does not know
/// the dial plan).
pub fn check_forward_target(target: &str) -> Result<(), StoreError> {
    let bad = |why| {
        Err(StoreError::InvalidForwarding {
            target: target.to_owned(),
            why,
        })
    };
    if target.is_empty() {
        return bad("it is empty");
    }
    if target.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !target
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.!~*'()+&=$#".contains(&c))
    {
        return bad(
            "use an extension, a user name or a number (letters, digits and -_.!~*'()+&=$# only)",
        );
    }
    Ok(())
}

impl User {
    /// A user with the hashes of `password` for `realm`; the name is checked with
    /// [`check_user_name`]. The password itself is not kept.
    pub fn new(name: &str, realm: &str, password: &str, now: u64) -> Result<User, StoreError> {
        check_user_name(name)?;
        Ok(User {
            name: name.to_owned(),
            realm: realm.to_owned(),
            ha1: Ha1Set::compute(name, realm, password),
            created_at: now,
            extension: None,
            forwarding: Forwarding::default(),
        })
    }
}

/// The HA1 hashes of one user, one per base digest algorithm, in lowercase hex.
///
/// An HA1 is as good as the password against this realm (whoever has it can answer any
/// challenge), so `Debug` does not print them.
#[derive(Clone, PartialEq, Eq)]
pub struct Ha1Set {
    /// MD5 (RFC 3261).
    pub md5: String,
    /// SHA-256 (RFC 8760).
    pub sha256: String,
    /// SHA-512/256 (RFC 8760).
    pub sha512_256: String,
}

impl Ha1Set {
    /// The hashes of `password` for `name` in `realm`.
    pub fn compute(name: &str, realm: &str, password: &str) -> Ha1Set {
        Ha1Set {
            md5: ha1(Algorithm::Md5, name, realm, password),
            sha256: ha1(Algorithm::Sha256, name, realm, password),
            sha512_256: ha1(Algorithm::Sha512_256, name, realm, password),
        }
    }

    /// The hash for an algorithm (a `-sess` variant uses its base algorithm's HA1).
    pub fn get(&self, alg: Algorithm) -> &str {
        match alg.base() {
            Algorithm::Sha256 => &self.sha256,
            Algorithm::Sha512_256 => &self.sha512_256,
            _ => &self.md5,
        }
    }
}

impl fmt::Debug for Ha1Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ha1Set(..)")
    }
}

/// Checks an extension number: 1 to 16 digits. Only digits, so that an extension can
/// never be mistaken for a user name (names must not be one) and every phone can dial it.
pub fn check_extension(extension: &str) -> Result<(), StoreError> {
    let bad = |why| {
        Err(StoreError::InvalidExtension {
            extension: extension.to_owned(),
            why,
        })
    };
    if extension.is_empty() || extension.len() > 16 {
        return bad("use 1 to 16 digits");
    }
    if !extension.bytes().all(|c| c.is_ascii_digit()) {
        return bad("use digits only");
    }
    Ok(())
}

/// What [`crate::UserStore::import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// New users.
    pub added: usize,
    /// Existing users whose hashes were replaced.
    pub updated: usize,
}

/// Checks that a name can be used as it is as the user part of a SIP URI and as a digest
/// username: 1 to 64 characters among letters, digits and `-_.!~*'()+&=$`.
///
/// The set is RFC 3261's `unreserved` plus some `user-unreserved` characters, minus those
/// (`,;?/`) that would need escaping or quoting somewhere on the way, so that the name in
/// the database, in the To header and in the Authorization header is the same string.
pub fn check_user_name(name: &str) -> Result<(), StoreError> {
    let bad = |why| {
        Err(StoreError::InvalidUserName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-_.!~*'()+&=$".contains(&c))
    {
        return bad("use letters, digits and -_.!~*'()+&=$ only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_match_sip_core_and_hide_in_debug() {
        let u = User::new("alice", "example.test", "secret", 7).unwrap();
        assert_eq!(
            u.ha1.get(Algorithm::Md5),
            ha1(Algorithm::Md5, "alice", "example.test", "secret")
        );
        assert_eq!(u.ha1.get(Algorithm::Sha256Sess), u.ha1.sha256);
        assert_eq!(u.ha1.sha256.len(), 64);
        assert_eq!(u.ha1.md5.len(), 32);
        let dbg = format!("{u:?}");
        assert!(
            !dbg.contains(&u.ha1.md5) && !dbg.contains("secret"),
            "{dbg}"
        );
    }

    #[test]
    fn names() {
        check_user_name("alice").unwrap();
        check_user_name("user.10000+x").unwrap();
        for (bad, why) in [
            ("", "it is empty"),
            ("a b", "use letters"),
            ("a@b", "use letters"),
            ("a:b", "use letters"),
            ("ä", "use letters"),
        ] {
            let e = check_user_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_user_name(&"a".repeat(65)).is_err());
    }
}
