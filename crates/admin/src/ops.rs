//! What the admin API asks of the SIP side ([`Operations`]), and the shapes it answers
//! with. The trait is synchronous: the server calls it on its blocking pool, so an
//! implementation may read a database or wait a little for the SIP loop's answer.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::Digest;
use utoipa::ToSchema;

/// One registration (a binding of an address-of-record to a contact).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Registration {
    /// Names this registration in `DELETE /api/registrations/{id}`: stable while the
    /// address-of-record and the contact stay the same.
    pub id: String,
    /// The address-of-record, `sip:user@domain`.
    pub aor: String,
    /// Where calls for it go.
    pub contact: String,
    /// Seconds left before it expires.
    pub expires_in: u64,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
    /// The q-value the phone gave, 0 to 1.
    pub q: Option<f64>,
    /// The transport it registered over: udp, tcp, tls, ws, wss.
    pub transport: String,
    /// The address the REGISTER came from.
    pub source: String,
    /// The phone's User-Agent.
    pub user_agent: Option<String>,
    /// When it was made or last refreshed, Unix seconds.
    pub registered_at: u64,
}

/// The [`Registration::id`] of a binding: 16 bytes of SHA-256 over the AOR and the
/// contact, in hex.
pub fn registration_id(aor: &str, contact: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(aor.as_bytes());
    h.update(b"\n");
    h.update(contact.as_bytes());
    crate::accounts::hex(&h.finalize()[..16])
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserView {
    /// The name: the user part of the address and the digest username.
    pub name: String,
    /// The extension number, if any.
    pub extension: Option<String>,
    /// The realm the password hashes are for (the server's domain).
    pub realm: String,
    /// When added, Unix seconds.
    pub created_at: u64,
    /// Call forwarding.
    pub forwarding: ForwardingView,
}

/// A user's call forwarding (set with `switchboard user forward`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForwardingView {
    /// Every call goes there, without ringing.
    pub always: Option<String>,
    /// When the phones answer busy.
    pub busy: Option<String>,
    /// When nobody answers within `no_answer_secs`.
    pub no_answer: Option<String>,
    /// Seconds the phones ring before `no_answer` applies.
    pub no_answer_secs: u32,
    /// When no phone can be reached.
    pub unreachable: Option<String>,
}

/// `POST /api/users`: a new user.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The name (letters, digits and `-_.!~*'()&=+$,;?/` as a SIP user part allows).
    pub name: String,
    /// The password; only its digest hashes are kept.
    pub password: String,
    /// An extension number, 1 to 16 digits, unique.
    #[serde(default)]
    pub extension: Option<String>,
}

/// `PATCH /api/users/{name}`: what to change; what is absent stays.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// A new password.
    #[serde(default)]
    pub password: Option<String>,
    /// A new extension number, or `null` to take it away.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub extension: Option<Option<String>>,
}

/// A field that is there, even as `null`, is `Some`: absent stays `None` by default.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The SIP side's figures for `/metrics`, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct SipFigures {
    /// Registrations (bindings) held.
    pub registrations: u64,
    /// Addresses-of-record with at least one registration.
    pub registered_aors: u64,
    /// Requests received, by method.
    pub requests_received: Vec<(String, u64)>,
    /// Responses sent (relayed or our own, retransmissions included), by status code.
    pub responses_sent: Vec<(u16, u64)>,
    /// Transactions live.
    pub transactions: u64,
    /// Calls (INVITEs) the proxy routed.
    pub calls_routed: u64,
    /// Calls whose INVITE is being proxied now.
    pub calls_in_progress: u64,
    /// Requests the proxy forwarded.
    pub requests_forwarded: u64,
    /// Calls the PBX (B2BUA) has under way.
    pub pbx_calls_in_progress: u64,
    /// Calls the PBX (B2BUA) took since the start.
    pub pbx_calls_started: u64,
    /// REGISTER requests handled.
    pub register_requests: u64,
    /// 401 and 407 challenges sent.
    pub challenges: u64,
    /// Failed digest authentications.
    pub auth_failures: u64,
    /// Sources banned after failed authentications.
    pub bans: u64,
    /// Requests refused because their source was banned.
    pub refused_banned: u64,
    /// Storage failures (answered 500).
    pub store_errors: u64,
    /// Call detail records stored.
    pub call_records_written: u64,
    /// Call detail records lost (a failed database, a full queue).
    pub call_records_dropped: u64,
    /// Calls left unrecorded because `[cdr] max_calls` were followed already.
    pub calls_unrecorded: u64,
}

/// What kind of failure an [`OpError`] is: it picks the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (400).
    Invalid,
    /// No such thing (404).
    NotFound,
    /// Taken already (409).
    Conflict,
    /// The SIP side cannot answer now (503).
    Unavailable,
    /// Anything else (500).
    Internal,
}

/// A failed operation: its kind, the input field at fault if one is, and what to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// The kind.
    pub kind: ErrorKind,
    /// The field of the request at fault (`"extension"`), when one is.
    pub field: Option<String>,
    /// A sentence for a person.
    pub message: String,
}

impl OpError {
    /// A failure of this kind about `field`.
    pub fn new(kind: ErrorKind, field: Option<&str>, message: impl Into<String>) -> OpError {
        OpError {
            kind,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// The one shape of every error the API answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A word for scripts: `invalid`, `not_found`, `conflict`, `unauthenticated`,
    /// `too_many_attempts`, `unsupported_media_type`, `unavailable`, `internal`.
    pub code: String,
    /// The request field at fault, when one is (`"extension"`, `"name"`).
    pub field: Option<String>,
    /// A sentence for a person.
    pub message: String,
}

/// The SIP side as the admin API sees it; `switchboard serve` implements it. Each
/// method may block briefly (a database read, a round trip to the SIP loop).
pub trait Operations: Send + Sync + 'static {
    /// The current registrations.
    fn registrations(&self) -> Result<Vec<Registration>, OpError>;
    /// Removes the registration with this [`Registration::id`]; what it was.
    fn remove_registration(&self, id: &str) -> Result<Registration, OpError>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<UserView>, OpError>;
    /// One user.
    fn user(&self, name: &str) -> Result<UserView, OpError>;
    /// Adds a user, as `switchboard user add` does.
    fn add_user(&self, user: &NewUser) -> Result<UserView, OpError>;
    /// Changes a user's password or extension, as `switchboard user passwd` and
    /// `user extension` do.
    fn change_user(&self, name: &str, change: &UserChange) -> Result<UserView, OpError>;
    /// Removes a user, as `switchboard user remove` does.
    fn remove_user(&self, name: &str) -> Result<(), OpError>;
    /// The SIP side's counters now.
    fn sip_figures(&self) -> Result<SipFigures, OpError>;
    /// The argon2id hash (PHC string) of an administrator's password, if there is an
    /// administrator by that name.
    fn admin_password_hash(&self, name: &str) -> Result<Option<String>, OpError>;
    /// The administrator holding the API token with this SHA-256 digest (hex).
    fn token_owner(&self, sha256_hex: &str) -> Result<Option<String>, OpError>;
}
