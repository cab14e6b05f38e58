//! Administrator credentials: password hashes (argon2id, as PHC strings such as
//! `$argon2id$v=19$m=19456,t=2,p=1$...`) and API tokens, of which only a SHA-256
//! digest is kept, so a copy of the database lets nobody in.

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha2::Digest;

/// What every API token starts with, so that one pasted into a log or a chat is
/// recognised for what it is.
pub const TOKEN_PREFIX: &str = "sbt_";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// `n` fresh random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
    Ok(b)
}

/// The argon2id hash of a password with a fresh salt (argon2's default cost: 19 MiB,
/// two passes), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| format!("cannot make a salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches a PHC hash made by [`hash_password`]; a hash that does
/// not parse matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash that no password matches in practice, verified when the name is unknown so
/// that a wrong name costs the same time as a wrong password.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let random = random_bytes::<24>().map(|b| hex(&b)).unwrap_or_default();
        hash_password(&format!("decoy-{random}")).unwrap_or_default()
    })
}

/// A new API token (`sbt_` and 64 hex digits) and the digest to keep of it.
pub fn new_token() -> Result<(String, String), String> {
    let token = format!("{TOKEN_PREFIX}{}", hex(&random_bytes::<32>()?));
    let digest = token_digest(&token);
    Ok((token, digest))
}

/// The SHA-256 of a token, in hex: what the store keeps and looks up.
pub fn token_digest(token: &str) -> String {
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("s3cret", &h));
        assert!(!verify_password("s3cret ", &h));
        assert!(!verify_password("s3cret", "not a hash"));
        assert_ne!(hash_password("s3cret").unwrap(), h, "salted");
        assert!(hash_password("").is_err());
        assert!(!verify_password("", decoy_hash()));
    }

    #[test]
    fn tokens_are_random_and_kept_as_digests() {
        let (t1, d1) = new_token().unwrap();
        let (t2, _) = new_token().unwrap();
        assert_ne!(t1, t2);
        assert!(t1.starts_with(TOKEN_PREFIX) && t1.len() == 4 + 64, "{t1}");
        assert_eq!(token_digest(&t1), d1);
        assert_eq!(d1.len(), 64);
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
