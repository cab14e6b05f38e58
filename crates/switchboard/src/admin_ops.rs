//! `admin::Operations` for `serve`: what the admin API may see and change, over the
//! same stores and router the SIP side uses.
//!
//! - Registrations are read from the location cache's reader (a lock, never the SIP
//!   loop); removing one is asked of the router on its side channel, which stores it
//!   with its next batch.
//! - Users are read and changed in the SQLite file through the operations the CLI
//!   uses (`user_ops`); the router is then told, and its registrar's user cache
//!   reloads them before the next request (a change by `switchboard user` is noticed
//!   within a second).
//! - Counters are asked of the router, which answers on its next turn.
//! - Administrators and token digests are read from their tables.
//!
//! Every method runs on the admin server's blocking pool, never on the SIP loop.

use crate::router::{AdminRequest, RouterInput};
use crate::user_ops;
use admin::{
    ErrorKind, NewUser, OpError, Operations, Registration, SipFigures, UserChange, UserView,
    registration_id,
};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use store::{Binding, LocationReader, SqliteAdminStore, SqliteUserStore, UserStore};
use tokio::sync::mpsc;

/// How long an operation waits for the router's answer, or for a removal to be stored.
const ROUTER_WAIT: Duration = Duration::from_secs(2);

/// `serve`'s side of the admin API.
pub struct ServeOps {
    realm: String,
    database: PathBuf,
    location: LocationReader,
    router: mpsc::Sender<RouterInput>,
    users: Mutex<Option<SqliteUserStore>>,
    admins: Mutex<Option<SqliteAdminStore>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn internal(e: impl std::fmt::Display) -> OpError {
    OpError::new(ErrorKind::Internal, None, e.to_string())
}

fn unavailable(what: &str) -> OpError {
    OpError::new(
        ErrorKind::Unavailable,
        None,
        format!("the SIP side did not answer in time ({what}); try again"),
    )
}

fn view(b: &Binding, now: u64) -> Registration {
    Registration {
        id: registration_id(&b.aor, &b.contact),
        aor: b.aor.clone(),
        contact: b.contact.clone(),
        expires_in: b.expires_in(now),
        expires_at: b.expires_at,
        q: b.q.map(|q| f64::from(q) / 1000.0),
        transport: b.transport.name().to_owned(),
        source: b.source.to_string(),
        user_agent: b.user_agent.clone(),
        registered_at: b.registered_at,
    }
}

impl ServeOps {
    /// Over the SQLite file `database` (users and administrators), the location
    /// reader, and the router's side channel.
    pub fn new(
        realm: &str,
        database: PathBuf,
        location: LocationReader,
        router: mpsc::Sender<RouterInput>,
    ) -> ServeOps {
        ServeOps {
            realm: realm.to_owned(),
            database,
            location,
            router,
            users: Mutex::new(None),
            admins: Mutex::new(None),
        }
    }

    /// Runs `f` on the user store, opened on first use and kept.
    fn with_users<T>(
        &self,
        f: impl FnOnce(&mut SqliteUserStore) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let mut slot = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(SqliteUserStore::open_existing(&self.database).map_err(internal)?);
        }
        match slot.as_mut() {
            Some(users) => f(users),
            None => Err(internal("no user store")),
        }
    }

    fn with_admins<T>(
        &self,
        f: impl FnOnce(&mut SqliteAdminStore) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let mut slot = self.admins.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(SqliteAdminStore::open_existing(&self.database).map_err(internal)?);
        }
        match slot.as_mut() {
            Some(admins) => f(admins),
            None => Err(internal("no administrator store")),
        }
    }

    /// Hands a request to the router without waiting: a full channel means the SIP
    /// side is busy, and the API says so rather than queueing behind it.
    fn ask(&self, request: AdminRequest, what: &str) -> Result<(), OpError> {
        self.router
            .try_send(RouterInput::Admin(request))
            .map_err(|_| unavailable(what))
    }
}

/// Tells the router, when dropped (after the write, whatever its outcome), that the
/// users may have changed, so that a password change or a removal counts at once rather
/// than within a second. A full channel only loses that haste.
struct UsersChanged<'a>(&'a ServeOps);

impl Drop for UsersChanged<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .router
            .try_send(RouterInput::Admin(AdminRequest::UsersChanged));
    }
}

impl Operations for ServeOps {
    fn registrations(&self) -> Result<Vec<Registration>, OpError> {
        let now = unix_now();
        let mut list = self.location.list_all(now);
        list.sort_by(|a, b| a.aor.cmp(&b.aor).then_with(|| Binding::priority_cmp(a, b)));
        Ok(list.iter().map(|b| view(b, now)).collect())
    }

    fn remove_registration(&self, id: &str) -> Result<Registration, OpError> {
        let now = unix_now();
        let Some(binding) = self
            .location
            .list_all(now)
            .into_iter()
            .find(|b| registration_id(&b.aor, &b.contact) == id)
        else {
            return Err(OpError::new(
                ErrorKind::NotFound,
                Some("id"),
                format!("no registration {id} (it may have expired or been removed)"),
            ));
        };
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.ask(
            AdminRequest::RemoveBinding {
                aor: binding.aor.clone(),
                contact: binding.contact.clone(),
                done,
            },
            "removing a registration",
        )?;
        answer
            .recv_timeout(ROUTER_WAIT)
            .map_err(|_| unavailable("removing a registration"))?;
        // Answered once stored: readers (and so routing) no longer see it.
        let until = Instant::now() + ROUTER_WAIT;
        while self
            .location
            .lookup(&binding.aor, now)
            .iter()
            .any(|b| b.contact == binding.contact)
        {
            if Instant::now() >= until {
                return Err(unavailable("storing the removal"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(view(&binding, now))
    }

    fn users(&self) -> Result<Vec<UserView>, OpError> {
        self.with_users(|users| {
            Ok(users
                .list()
                .map_err(user_ops::store_error)?
                .iter()
                .map(user_ops::view)
                .collect())
        })
    }

    fn user(&self, name: &str) -> Result<UserView, OpError> {
        self.with_users(|users| user_ops::get(&*users, name).map(|u| user_ops::view(&u)))
    }

    fn add_user(&self, new: &NewUser) -> Result<UserView, OpError> {
        let _changed = UsersChanged(self);
        self.with_users(|users| {
            let u = user_ops::add(
                users,
                &self.realm,
                &new.name,
                &new.password,
                new.extension.as_deref(),
                unix_now(),
            )?;
            Ok(user_ops::view(&u))
        })
    }

    fn change_user(&self, name: &str, change: &UserChange) -> Result<UserView, OpError> {
        let _changed = UsersChanged(self);
        self.with_users(|users| {
            // Refused as a whole before anything is written when the user is not there.
            user_ops::get(&*users, name)?;
            if let Some(extension) = &change.extension {
                user_ops::set_extension(users, name, extension.as_deref())?;
            }
            if let Some(password) = &change.password {
                user_ops::set_password(users, &self.realm, name, password)?;
            }
            user_ops::get(&*users, name).map(|u| user_ops::view(&u))
        })
    }

    fn remove_user(&self, name: &str) -> Result<(), OpError> {
        let _changed = UsersChanged(self);
        self.with_users(|users| user_ops::remove(users, name))
    }

    fn sip_figures(&self) -> Result<SipFigures, OpError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.ask(AdminRequest::Figures(reply), "reading the counters")?;
        answer
            .recv_timeout(ROUTER_WAIT)
            .map_err(|_| unavailable("reading the counters"))
    }

    fn admin_password_hash(&self, name: &str) -> Result<Option<String>, OpError> {
        self.with_admins(|admins| admins.password_hash(name).map_err(internal))
    }

    fn token_owner(&self, sha256_hex: &str) -> Result<Option<String>, OpError> {
        self.with_admins(|admins| admins.token_owner(sha256_hex).map_err(internal))
    }
}

/// Starts the admin API as `[admin]` says, or says in the log why it is not running:
/// a busy port, a missing certificate or an in-memory database stop the API, never the
/// SIP service.
pub fn start(
    config: &crate::config::Config,
    location: LocationReader,
    router: mpsc::Sender<RouterInput>,
) -> Option<admin::AdminServer> {
    let settings = &config.admin;
    if !settings.enabled {
        return None;
    }
    let database = match store::Backend::parse(&config.storage.database) {
        Ok(store::Backend::Sqlite(file)) => std::path::absolute(&file).unwrap_or(file),
        _ => {
            tracing::warn!(
                "admin API not started: its administrators live in an SQLite database, and \
                 [storage] database = \"{}\" keeps nothing on disk",
                config.storage.database
            );
            return None;
        }
    };
    let listen = match settings.listen_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("admin API not started: [admin] listen {e}");
            return None;
        }
    };
    let tls = match (&settings.certificate, &settings.private_key) {
        (Some(cert), Some(key)) => match sip_net::tls::server_config_from_pem_files(cert, key) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("admin API not started: [admin] certificate: {e}");
                return None;
            }
        },
        _ => None,
    };
    // Made here when missing, so the tables exist before anyone logs in.
    let admins = match SqliteAdminStore::open(&database).and_then(|a| a.list()) {
        Ok(list) => list.len(),
        Err(e) => {
            tracing::error!("admin API not started: {e}");
            return None;
        }
    };
    let ops = ServeOps::new(&config.sip.domain, database, location, router);
    match admin::AdminServer::start(admin::AdminConfig { listen, tls }, std::sync::Arc::new(ops)) {
        Ok(server) => {
            tracing::info!("admin API on {}", server.url());
            if admins == 0 {
                tracing::warn!(
                    "admin API: no administrator yet; add one with `switchboard admin add NAME`"
                );
            }
            Some(server)
        }
        Err(e) => {
            tracing::error!(
                "admin API not started: {e}; SIP is served all the same (set [admin] listen \
                 to a free address, or enabled = false)"
            );
            None
        }
    }
}
