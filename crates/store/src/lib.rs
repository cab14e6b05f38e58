//! `store`: what Switchboard keeps across restarts, behind traits.
//!
//! Three kinds of records live here:
//!
//! - the **location service** ([`LocationStore`]): the registrar's bindings of an
//!   address-of-record (AOR) to contact URIs, with their expiry, q-value, Call-ID/CSeq,
//!   Path and outbound (RFC 5626) identity;
//! - the **users** ([`UserStore`]): names with their digest HA1 hashes (never a
//!   password), extension numbers and call [`Forwarding`];
//! - the **call detail records** ([`CdrStore`]), written in batches by a thread of
//!   their own ([`CdrWriter`]) from the records the services hand its [`CdrSender`].
//!
//! SQLite ([`SqliteLocationStore`], [`SqliteUserStore`]) is the embedded backend, and both
//! kinds share one file. The traits leave room for PostgreSQL or Redis, which would let
//! several Switchboard nodes share one location service; [`Backend::parse`] reads the
//! `[storage] database` setting and names the backends that are not built in yet.
//! [`CachedStore`] puts an in-memory copy of the bindings in front of any location store,
//! so that routing reads never touch the disk; its [`LocationReader`] is a cheap,
//! cloneable, thread-safe handle for those reads. [`CachedUsers`] does the same for the
//! users a registrar authenticates, and notices changes made by other processes.
//!
//! Everything is synchronous (rusqlite). Every store is `Send + 'static`, so an async
//! server owns it on a dedicated thread or moves it into `spawn_blocking`. Time is passed
//! in as Unix seconds: nothing here reads the clock, so tests run on a fake one.
//!
//! Stage, commit, committed: a server's protocol loop must not wait for the disk. It
//! [`CachedStore::stage`]s each request's changes (visible at once to its own lookups),
//! takes them as a [`Batch`] with [`CachedStore::begin_commit`], hands the batch to a
//! [`BackgroundWriter`] (a thread owning the backend), goes on with other work, and
//! applies the [`Committed`] result with [`CachedStore::end_commit`] when it comes back:
//! only then do readers see the changes, and only then may the requests be answered. A
//! networked backend (PostgreSQL, Redis) stands behind the same three calls.
//!
//! ```
//! use store::{Binding, CachedStore, LocationStore, MemoryLocationStore};
//! use sip_core::Transport;
//!
//! let mut loc = CachedStore::new(MemoryLocationStore::default(), 1_000).unwrap();
//! let reader = loc.reader();
//! loc.upsert(Binding {
//!     aor: "sip:alice@example.test".into(),
//!     contact: "sip:alice@192.0.2.7:5060".into(),
//!     expires_at: 1_000 + 3600,
//!     q: None,
//!     call_id: "a84b4c76e66710".into(),
//!     cseq: 1,
//!     transport: Transport::Udp,
//!     source: "192.0.2.7:5060".parse().unwrap(),
//!     path: vec![],
//!     instance_id: None,
//!     reg_id: None,
//!     user_agent: Some("Phone/1.0".into()),
//!     registered_at: 1_000,
//! })
//! .unwrap();
//! assert_eq!(reader.lookup("sip:alice@example.test", 1_001).len(), 1);
//! assert!(reader.lookup("sip:alice@example.test", 1_000 + 3600).is_empty()); // expired
//! ```

#![deny(missing_docs)]

mod admin;
mod cache;
mod memory;
mod records;
mod sqlite;
mod user;
mod user_cache;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use admin::{AdminAccount, SqliteAdminStore};
pub use cache::{Batch, CachedStore, LocationReader};
pub use memory::{MemoryLocationStore, MemoryUserStore};
pub use records::{
    CdrQuery, CdrSender, CdrStore, CdrTrouble, CdrWriter, CdrWriterSettings, StoredCdr,
};
pub use sip_core::Transport;
pub use sqlite::{Durability, SqliteLocationStore, SqliteUserStore};
pub use user::{
    Forwarding, Ha1Set, ImportReport, User, check_extension, check_forward_target, check_user_name,
};
pub use user_cache::CachedUsers;
pub use writer::{BackgroundWriter, Committed};

/// One registration: an address-of-record bound to a contact (RFC 3261 §10).
///
/// A binding is identified by (`aor`, `contact`) in a store. The registrar decides which
/// existing binding a REGISTER refers to (URI comparison, or the outbound instance-id and
/// reg-id of RFC 5626) and turns that into [`Change`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The address-of-record in canonical form (`sip:user@domain`, no parameters).
    pub aor: String,
    /// The contact URI as the UA sent it, without `<>`: where requests for the AOR go.
    pub contact: String,
    /// When the binding expires, in Unix seconds.
    pub expires_at: u64,
    /// The q-value in thousandths (`q=0.5` is 500), when the UA gave one.
    pub q: Option<u16>,
    /// The Call-ID of the REGISTER that made or last refreshed the binding.
    pub call_id: String,
    /// Its CSeq number: a later REGISTER with the same Call-ID must have a higher one.
    pub cseq: u32,
    /// The transport the REGISTER arrived on.
    pub transport: Transport,
    /// The address it came from (what NAT traversal and outbound flows send to).
    pub source: SocketAddr,
    /// The Path header values (RFC 3327), in order, each as `<uri>;params`.
    pub path: Vec<String>,
    /// The `+sip.instance` value (RFC 5626), without the quotes, e.g. `<urn:uuid:…>`.
    pub instance_id: Option<String>,
    /// The `reg-id` (RFC 5626), kept only when an instance-id came with it.
    pub reg_id: Option<u32>,
    /// The User-Agent header of the REGISTER.
    pub user_agent: Option<String>,
    /// When the binding was made or last refreshed, in Unix seconds.
    pub registered_at: u64,
}

impl Binding {
    /// Seconds left at `now` (0 once expired).
    pub fn expires_in(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }

    /// Whether the binding is over at `now`: a binding is valid strictly before `expires_at`.
    pub fn is_expired(&self, now: u64) -> bool {
        self.expires_at <= now
    }

    /// The order in which a proxy should try contacts: highest q first (an absent q counts
    /// as 1.0, as most registrars and UAs read it), then the most recently registered,
    /// then by contact so the order is stable.
    pub fn priority_cmp(a: &Binding, b: &Binding) -> std::cmp::Ordering {
        let q = |x: &Binding| x.q.unwrap_or(1000);
        q(b).cmp(&q(a))
            .then(b.registered_at.cmp(&a.registered_at))
            .then_with(|| a.contact.cmp(&b.contact))
    }
}

/// One write to the location store. [`LocationStore::apply`] performs a list of them as
/// one transaction: RFC 3261 §10.3 wants a REGISTER processed "completely or not at all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert the binding, or replace the one with the same (aor, contact).
    Upsert(Binding),
    /// Remove one binding; removing one that is not there is not an error.
    Remove {
        /// The address-of-record.
        aor: String,
        /// The contact URI as stored.
        contact: String,
    },
    /// Remove every binding of an address-of-record (`Contact: *`).
    RemoveAll {
        /// The address-of-record.
        aor: String,
    },
}

/// The location service: bindings per address-of-record.
///
/// Reads take `now` and never return expired bindings, whether or not they were swept
/// yet; [`LocationStore::sweep`] deletes them. Results are in [`Binding::priority_cmp`]
/// order.
pub trait LocationStore: Send + 'static {
    /// Performs all the changes, in order, atomically and durably (as the backend defines
    /// durable; see [`Durability`] for SQLite): when this returns `Ok`, they are stored;
    /// when it returns an error, none is.
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError>;

    /// The current bindings of an AOR.
    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError>;

    /// Every current binding, grouped by AOR (AORs in no particular order).
    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError>;

    /// Deletes the bindings expired at `now`; returns how many.
    fn sweep(&mut self, now: u64) -> Result<usize, StoreError>;

    /// Inserts or replaces one binding.
    fn upsert(&mut self, binding: Binding) -> Result<(), StoreError> {
        self.apply(&[Change::Upsert(binding)])
    }

    /// Removes one binding.
    fn remove(&mut self, aor: &str, contact: &str) -> Result<(), StoreError> {
        self.apply(&[Change::Remove {
            aor: aor.into(),
            contact: contact.into(),
        }])
    }

    /// Removes every binding of an AOR.
    fn remove_all(&mut self, aor: &str) -> Result<(), StoreError> {
        self.apply(&[Change::RemoveAll { aor: aor.into() }])
    }
}

impl<T: LocationStore + ?Sized> LocationStore for Box<T> {
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        (**self).apply(changes)
    }
    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
        (**self).lookup(aor, now)
    }
    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
        (**self).list_all(now)
    }
    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        (**self).sweep(now)
    }
}

/// The users who may register: name, realm and HA1 hashes.
///
/// Names are unique. There is no password anywhere: [`User::new`] hashes it on the way in.
pub trait UserStore: Send + 'static {
    /// The user with this name.
    fn get(&self, name: &str) -> Result<Option<User>, StoreError>;

    /// Every user, by name.
    fn list(&self) -> Result<Vec<User>, StoreError>;

    /// Adds a new user; [`StoreError::UserExists`] if the name is taken.
    fn add(&mut self, user: &User) -> Result<(), StoreError>;

    /// Replaces a user's realm and hashes (a password change);
    /// [`StoreError::NoSuchUser`] if there is none by that name.
    fn set_ha1(&mut self, name: &str, realm: &str, ha1: &Ha1Set) -> Result<(), StoreError>;

    /// Removes a user; [`StoreError::NoSuchUser`] if there is none by that name.
    fn remove(&mut self, name: &str) -> Result<(), StoreError>;

    /// Gives a user an extension number, or takes it away (`None`). An extension is
    /// unique, and may not be another user's name: [`StoreError::ExtensionTaken`].
    fn set_extension(&mut self, name: &str, extension: Option<&str>) -> Result<(), StoreError>;

    /// Replaces a user's forwarding ([`Forwarding::check`]ed first);
    /// [`StoreError::NoSuchUser`] if there is none by that name. A target naming the
    /// user themself (by name or extension) is refused: their calls would come back.
    fn set_forwarding(&mut self, name: &str, forwarding: &Forwarding) -> Result<(), StoreError>;

    /// The user whose extension this is.
    fn by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .list()?
            .into_iter()
            .find(|u| u.extension.as_deref() == Some(extension)))
    }

    /// Adds or updates many users in one transaction: all of them or none. An existing
    /// user keeps its creation time and gets the new realm and hashes.
    fn import(&mut self, users: &[User]) -> Result<ImportReport, StoreError>;

    /// A number that changes whenever any user is added, changed or removed, by this
    /// handle or by another process sharing the backend: what [`CachedUsers`] compares
    /// to know that its copy is stale. Cheap to read.
    fn version(&self) -> Result<u64, StoreError>;
}

impl<T: UserStore + ?Sized> UserStore for Box<T> {
    fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        (**self).get(name)
    }
    fn list(&self) -> Result<Vec<User>, StoreError> {
        (**self).list()
    }
    fn add(&mut self, user: &User) -> Result<(), StoreError> {
        (**self).add(user)
    }
    fn set_ha1(&mut self, name: &str, realm: &str, ha1: &Ha1Set) -> Result<(), StoreError> {
        (**self).set_ha1(name, realm, ha1)
    }
    fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        (**self).remove(name)
    }
    fn set_extension(&mut self, name: &str, extension: Option<&str>) -> Result<(), StoreError> {
        (**self).set_extension(name, extension)
    }
    fn set_forwarding(&mut self, name: &str, forwarding: &Forwarding) -> Result<(), StoreError> {
        (**self).set_forwarding(name, forwarding)
    }
    fn by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        (**self).by_extension(extension)
    }
    fn import(&mut self, users: &[User]) -> Result<ImportReport, StoreError> {
        (**self).import(users)
    }
    fn version(&self) -> Result<u64, StoreError> {
        (**self).version()
    }
}

/// Why a store operation failed, naming what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or prepared.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database file is not there, and was not to be created.
    #[error("no database at {}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A query or a write failed.
    #[error("database error while {doing}: {source}")]
    Sqlite {
        /// What was being done, e.g. "storing bindings".
        doing: &'static str,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored value cannot be read back (written by something else, or damaged).
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// The column or record.
        what: &'static str,
        /// The bad value.
        detail: String,
    },
    /// `add` of a name that exists.
    #[error("user \"{0}\" already exists")]
    UserExists(String),
    /// An extension, or a user name, that is already another user's extension or name.
    #[error("{what} \"{value}\" is already taken by user \"{by}\"")]
    ExtensionTaken {
        /// "extension" or "name".
        what: &'static str,
        /// The extension or name asked for.
        value: String,
        /// The user who has it.
        by: String,
    },
    /// An extension that is not 1 to 16 digits.
    #[error("invalid extension \"{extension}\": {why}")]
    InvalidExtension {
        /// The extension.
        extension: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A forward target that cannot be one, or a no-answer time out of range.
    #[error("invalid forwarding \"{target}\": {why}")]
    InvalidForwarding {
        /// The target.
        target: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `set_ha1` or `remove` of a name that does not exist.
    #[error("no user \"{0}\"")]
    NoSuchUser(String),
    /// An administrator account that is not there.
    #[error("no administrator \"{0}\"")]
    NoSuchAdmin(String),
    /// Adding an administrator whose name is taken.
    #[error("administrator \"{0}\" already exists")]
    AdminExists(String),
    /// A user name that cannot be the user part of a SIP URI as it is.
    #[error("invalid user name \"{name}\": {why}")]
    InvalidUserName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The backend was handed to a [`BackgroundWriter`]: writes go through
    /// [`CachedStore::begin_commit`] and [`CachedStore::end_commit`] now.
    #[error("the location backend is on its writer thread; commit through begin_commit")]
    Detached,
    /// The [`BackgroundWriter`]'s thread is gone (it panicked, or was shut down).
    #[error("the storage writer thread has stopped")]
    WriterGone,
    /// A `database` setting naming a backend this build does not have.
    #[error(
        "database \"{url}\": the {scheme} backend is not built in yet; use an SQLite file path"
    )]
    UnsupportedBackend {
        /// The setting.
        url: String,
        /// Its scheme.
        scheme: String,
    },
}

/// Which backend the `[storage] database` setting names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An SQLite file: a plain path, or `sqlite:PATH` / `sqlite://PATH`.
    Sqlite(PathBuf),
    /// `memory:`: nothing persists, and users cannot be provisioned from the command line
    /// (each process has its own); for tests and throwaway runs.
    Memory,
}

impl Backend {
    /// Reads a `database` setting. `postgres://…`, `postgresql://…` and `redis://…` are
    /// recognised and refused with [`StoreError::UnsupportedBackend`] until they are built;
    /// so is any other `scheme://`.
    pub fn parse(database: &str) -> Result<Backend, StoreError> {
        let d = database.trim();
        if d == "memory:" || d == ":memory:" {
            return Ok(Backend::Memory);
        }
        if let Some(rest) = d.strip_prefix("sqlite://") {
            return Ok(Backend::Sqlite(PathBuf::from(rest)));
        }
        if let Some(rest) = d.strip_prefix("sqlite:") {
            return Ok(Backend::Sqlite(PathBuf::from(rest)));
        }
        if let Some((scheme, _)) = d.split_once("://") {
            return Err(StoreError::UnsupportedBackend {
                url: d.to_owned(),
                scheme: scheme.to_owned(),
            });
        }
        Ok(Backend::Sqlite(PathBuf::from(d)))
    }

    /// Opens the location store of this backend.
    pub fn open_location(
        &self,
        durability: Durability,
    ) -> Result<Box<dyn LocationStore>, StoreError> {
        Ok(match self {
            Backend::Sqlite(p) => Box::new(SqliteLocationStore::open(p, durability)?),
            Backend::Memory => Box::new(MemoryLocationStore::default()),
        })
    }

    /// Opens the location store of this backend for a long-running server: SQLite's WAL
    /// is then checkpointed by a thread of its own every `checkpoint_every`
    /// ([`SqliteLocationStore::open_for_server`]).
    pub fn open_server_location(
        &self,
        durability: Durability,
        checkpoint_every: std::time::Duration,
    ) -> Result<Box<dyn LocationStore>, StoreError> {
        Ok(match self {
            Backend::Sqlite(p) => Box::new(SqliteLocationStore::open_for_server(
                p,
                durability,
                checkpoint_every,
            )?),
            Backend::Memory => Box::new(MemoryLocationStore::default()),
        })
    }

    /// Opens the call records of this backend, making the file and the table when
    /// missing (`memory:` keeps them in memory, for this process only).
    pub fn open_cdrs(&self) -> Result<CdrStore, StoreError> {
        match self {
            Backend::Sqlite(p) => CdrStore::open(p),
            Backend::Memory => CdrStore::in_memory(),
        }
    }

    /// Opens the user store of this backend.
    pub fn open_users(&self) -> Result<Box<dyn UserStore>, StoreError> {
        Ok(match self {
            Backend::Sqlite(p) => Box::new(SqliteUserStore::open(p)?),
            Backend::Memory => Box::new(MemoryUserStore::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backend_settings() {
        assert_eq!(
            Backend::parse("switchboard.db").unwrap(),
            Backend::Sqlite("switchboard.db".into())
        );
        assert_eq!(
            Backend::parse("sqlite:///var/lib/sb.db").unwrap(),
            Backend::Sqlite("/var/lib/sb.db".into())
        );
        assert_eq!(
            Backend::parse("sqlite:sb.db").unwrap(),
            Backend::Sqlite("sb.db".into())
        );
        assert_eq!(Backend::parse(":memory:").unwrap(), Backend::Memory);
        let e = Backend::parse("postgres://db.example/sb").unwrap_err();
        assert_eq!(
            e.to_string(),
            "database \"postgres://db.example/sb\": the postgres backend is not built in yet; use an SQLite file path"
        );
        assert!(Backend::parse("redis://127.0.0.1/").is_err());
    }

    #[test]
    fn priority_order() {
        let b = |contact: &str, q: Option<u16>, at: u64| Binding {
            aor: "sip:a@x".into(),
            contact: contact.into(),
            expires_at: 100,
            q,
            call_id: "c".into(),
            cseq: 1,
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            path: vec![],
            instance_id: None,
            reg_id: None,
            user_agent: None,
            registered_at: at,
        };
        let mut v = [
            b("sip:low", Some(100), 5),
            b("sip:none-old", None, 1),
            b("sip:half", Some(500), 9),
            b("sip:none-new", None, 2),
            b("sip:one", Some(1000), 2),
        ];
        v.sort_by(Binding::priority_cmp);
        let order: Vec<&str> = v.iter().map(|b| b.contact.as_str()).collect();
        assert_eq!(
            order,
            [
                "sip:none-new",
                "sip:one",
                "sip:none-old",
                "sip:half",
                "sip:low"
            ]
        );
        assert_eq!(v[0].expires_in(40), 60);
        assert!(v[0].is_expired(100) && !v[0].is_expired(99));
    }
}
