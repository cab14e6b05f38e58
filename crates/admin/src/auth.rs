//! Who may use the API: logins with a session cookie, API tokens, and the limit on
//! failed attempts per address.
//!
//! Sessions live in memory (a restart logs everybody out) and last [`SESSION_TTL`]. The
//! cookie is `HttpOnly` and `SameSite=Strict` (another site's page cannot make a
//! browser send it), and `Secure` when the API is served over TLS. Failed logins and
//! unknown tokens count per source address: after [`MAX_FAILURES`] within
//! [`FAILURE_WINDOW`], that address is answered 429 until the window has passed,
//! without its password even being checked (a valid API token still works).

use crate::accounts;
use crate::json::ApiError;
use crate::ops::Operations;
use axum::http::{HeaderMap, StatusCode, header};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "switchboard_session";
/// How long a login lasts.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Failed attempts from one address that lock it out for the rest of the window.
pub(crate) const MAX_FAILURES: usize = 5;
/// The window failures are counted in.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sessions and failing addresses kept at most: beyond, the oldest go.
const MAX_ENTRIES: usize = 10_000;

/// The administrator a request was authenticated as.
#[derive(Debug, Clone)]
pub(crate) struct Admin(pub String);

#[derive(Debug)]
struct Session {
    admin: String,
    expires: Instant,
}

/// Sessions and failure counts, shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Vec<Instant>>>,
    /// Whether cookies carry `Secure` (the API is on TLS).
    pub secure: bool,
    /// Failed logins and token checks since start, for `/metrics`.
    pub failed_total: std::sync::atomic::AtomicU64,
}

impl Auth {
    pub fn new(secure: bool) -> Auth {
        Auth {
            secure,
            ..Auth::default()
        }
    }

    /// Refuses an address that failed too often lately: 429 with when to come back.
    pub fn check_not_locked(&self, ip: IpAddr, now: Instant) -> Result<(), ApiError> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(times) = failures.get(&ip) else {
            return Ok(());
        };
        let recent: Vec<&Instant> = times
            .iter()
            .filter(|t| now.duration_since(**t) < FAILURE_WINDOW)
            .collect();
        if recent.len() < MAX_FAILURES {
            return Ok(());
        }
        let oldest = recent.iter().min().map_or(now, |t| **t);
        let wait = FAILURE_WINDOW.saturating_sub(now.duration_since(oldest));
        Err(ApiError {
            retry_after: Some(wait.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "too many failed attempts from {ip}; try again in {} s",
                    wait.as_secs().max(1)
                ),
            )
        })
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        self.failed_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_ENTRIES {
            failures.retain(|_, times| {
                times
                    .last()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
        }
        let times = failures.entry(ip).or_default();
        times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
        times.push(now);
    }

    /// A login succeeded: the address starts afresh.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ip);
    }

    /// Opens a session for `admin`; its id for the cookie.
    pub fn open_session(&self, admin: &str, now: Instant) -> Result<String, ApiError> {
        let id = accounts::hex(&accounts::random_bytes::<32>().map_err(ApiError::internal)?);
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.len() >= MAX_ENTRIES {
            sessions.retain(|_, s| s.expires > now);
            if sessions.len() >= MAX_ENTRIES {
                // Still full of live sessions: the one closest to its end goes.
                if let Some(k) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.expires)
                    .map(|(k, _)| k.clone())
                {
                    sessions.remove(&k);
                }
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                admin: admin.to_owned(),
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    /// The administrator of a live session.
    pub fn session(&self, id: &str, now: Instant) -> Option<String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        match sessions.get(id) {
            Some(s) if s.expires > now => Some(s.admin.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn close_session(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The `Set-Cookie` value that carries a session id.
    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            SESSION_TTL.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that makes a browser forget the session.
    pub fn expired_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// The session id in a request's cookies.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Who sent the request: a live session, else a known token; an unknown token counts
/// as a failed attempt from `ip`.
pub(crate) async fn authenticate(
    auth: &Auth,
    ops: &Arc<dyn Operations>,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Result<Admin, ApiError> {
    let now = Instant::now();
    if let Some(id) = session_cookie(headers)
        && let Some(admin) = auth.session(&id, now)
    {
        return Ok(Admin(admin));
    }
    let Some(token) = bearer(headers) else {
        return Err(ApiError::unauthenticated(
            "log in first (POST /api/login) or send Authorization: Bearer TOKEN \
             (switchboard admin token NAME makes one)",
        ));
    };
    let digest = accounts::token_digest(&token);
    let ops = Arc::clone(ops);
    let owner = tokio::task::spawn_blocking(move || ops.token_owner(&digest))
        .await
        .map_err(|e| ApiError::internal(format!("token check failed: {e}")))??;
    match owner {
        // A valid token works from a locked-out address too: a script must not be shut
        // out by someone guessing passwords from the same host, and 256 random bits are
        // not guessed.
        Some(admin) => Ok(Admin(admin)),
        None => {
            auth.check_not_locked(ip, now)?;
            auth.failed(ip, now);
            tracing::warn!(source = %ip, "admin API: unknown token refused");
            Err(ApiError::unauthenticated("this token is not valid"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_address_is_locked_out_after_repeated_failures_for_the_window() {
        let auth = Auth::new(false);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(auth.check_not_locked(ip, t0).is_ok());
            auth.failed(ip, t0);
        }
        let e = auth.check_not_locked(ip, t0).err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(60));
        assert!(auth.check_not_locked(other, t0).is_ok());
        assert!(auth.check_not_locked(ip, t0 + FAILURE_WINDOW).is_ok());
        auth.succeeded(ip);
        assert!(auth.check_not_locked(ip, t0).is_ok());
    }

    #[test]
    fn sessions_end_at_logout_or_expiry() {
        let auth = Auth::new(true);
        let t0 = Instant::now();
        let id = auth.open_session("root", t0).unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(auth.session(&id, t0).as_deref(), Some("root"));
        assert_eq!(auth.session(&id, t0 + SESSION_TTL), None);
        let id = auth.open_session("root", t0).unwrap();
        auth.close_session(&id);
        assert_eq!(auth.session(&id, t0), None);
        assert!(auth.cookie("x").ends_with("; Secure"));
    }

    #[test]
    fn credentials_are_read_from_cookie_and_authorization_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "theme=dark; switchboard_session=abc".parse().unwrap(),
        );
        h.insert(header::AUTHORIZATION, "bearer sbt_1".parse().unwrap());
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(bearer(&h).as_deref(), Some("sbt_1"));
        h.insert(header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
