//! The embedded backend: one SQLite file holding the `location` and `users` tables.
//!
//! The file is opened in WAL mode, so one writer and any number of readers work at once:
//! `switchboard user add` or `switchboard location` run while `serve` holds the file.
//! Every connection sets a busy timeout, so a writer that finds the file locked by
//! another process waits for it instead of failing.
//!
//! Durability: in WAL mode a commit appends the transaction to the `-wal` file before it
//! returns. With `synchronous=NORMAL` ([`Durability::Process`], the default) that append is
//! not fsync'ed: the data is in the operating system's page cache, so a committed
//! transaction survives the process being killed (`kill -9`, a panic, an OOM kill) but the
//! last commits may be lost if the machine loses power or the kernel crashes. Phones
//! re-register within their refresh interval, so that window costs little, and skipping
//! an fsync per REGISTER is what lets one disk keep up with thousands of registrations a
//! second. `synchronous=FULL` ([`Durability::Power`]) fsyncs the WAL at every commit and
//! survives power loss too, at the disk's fsync latency per write.

use crate::{
    Binding, Change, Forwarding, Ha1Set, ImportReport, LocationStore, StoreError, Transport, User,
    UserStore,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page size of a new database file, in bytes (see `open_connection`).
const PAGE_SIZE: u32 = 1024;

/// The page cache of the server's writer, in KiB (SQLite's default is 2,000 KiB). The
/// location table of 10,000 bindings is about 2.5 MB: a REGISTER whose page was evicted
/// reads it back with a system call. The cache fills only as far as the file is large.
const SERVER_CACHE_KIB: u32 = 16 * 1024;

/// The schema version in `PRAGMA user_version`: 1 had no extensions, 2 adds
/// `users.extension` (see [`MIGRATE_TO_2`]), 3 was set aside for the call records,
/// 4 the users' call forwarding (see [`MIGRATE_TO_4`]). Each migration is applied when
/// what it adds is missing, so a file of any earlier version reaches this one. Tables
/// that stand alone (the call records, `records.rs`) are created when missing, with no
/// version of their own.
const SCHEMA_VERSION: i64 = 4;

/// From version 3 (or 2) to 4: users get call forwarding, one target column per kind,
/// all empty for existing users (the no-answer time empty means the default).
const MIGRATE_TO_4: &str = "
ALTER TABLE users ADD COLUMN forward_always TEXT;
ALTER TABLE users ADD COLUMN forward_busy TEXT;
ALTER TABLE users ADD COLUMN forward_no_answer TEXT;
ALTER TABLE users ADD COLUMN forward_no_answer_secs INTEGER;
ALTER TABLE users ADD COLUMN forward_unreachable TEXT;
";

/// From version 1 (or a new file, made as version 1 by [`SCHEMA`]) to 2: users get an
/// extension number, unique when set. Existing users have none.
const MIGRATE_TO_2: &str = "
ALTER TABLE users ADD COLUMN extension TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS users_extension ON users (extension);
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS location (
    aor           TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    expires_at    INTEGER NOT NULL,
    q             INTEGER,
    call_id       TEXT    NOT NULL,
    cseq          INTEGER NOT NULL,
    transport     TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    path          TEXT    NOT NULL DEFAULT '',
    instance_id   TEXT,
    reg_id        INTEGER,
    user_agent    TEXT,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (aor, contact)
) WITHOUT ROWID;
-- No index on expires_at: the server sweeps expired bindings by key (it holds them all
-- in memory), and an index would cost a page write per REGISTER. Dropped from files
-- made before.
DROP INDEX IF EXISTS location_expires_at;
CREATE TABLE IF NOT EXISTS users (
    name           TEXT    NOT NULL PRIMARY KEY,
    realm          TEXT    NOT NULL,
    ha1_md5        TEXT    NOT NULL,
    ha1_sha256     TEXT    NOT NULL,
    ha1_sha512_256 TEXT    NOT NULL,
    created_at     INTEGER NOT NULL
);
-- A counter every change to `users` bumps, whoever makes it, so that a server holding
-- the users in memory (CachedUsers) learns of a change by reading one small row.
CREATE TABLE IF NOT EXISTS users_version (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO users_version (id, version) VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS users_inserted AFTER INSERT ON users
    BEGIN UPDATE users_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS users_updated AFTER UPDATE ON users
    BEGIN UPDATE users_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS users_deleted AFTER DELETE ON users
    BEGIN UPDATE users_version SET version = version + 1; END;
";

/// How hard a commit tries to reach the disk; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: survives a process crash, not a power loss.
    #[default]
    Process,
    /// `synchronous=FULL`: survives a power loss, one fsync per commit.
    Power,
}

pub(crate) fn sql(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { doing, source }
}

/// Whether opening may make a new database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Make the file when it is not there (the server, and commands that add users).
    IfMissing,
    /// Refuse with [`StoreError::Missing`]: a command that only reads must not leave an
    /// empty database behind where it was run by mistake.
    Never,
}

/// Opens the database file with the settings every connection needs, and makes sure the
/// tables exist.
pub(crate) fn open_connection(
    path: &Path,
    durability: Durability,
    create: Create,
) -> Result<Connection, StoreError> {
    let opened = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create == Create::IfMissing {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    } else if !path.exists() {
        // SQLite would say only "unable to open database file".
        return Err(StoreError::Missing {
            path: path.to_owned(),
        });
    }
    let conn = Connection::open_with_flags(path, flags).map_err(opened)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(opened)?;
    // Only a new file takes this (a file in WAL mode keeps its page size). Every REGISTER
    // rewrites one row of ~250 bytes, and the WAL receives the whole page it sits on,
    // checksummed: with 1 KiB pages a commit writes and sums a quarter of what 4 KiB
    // pages cost (`cargo bench -p store --bench commit`: 11.6 against 22.3 µs for one
    // upsert, 141 against 261 µs for sixteen).
    conn.execute_batch(&format!("PRAGMA page_size={PAGE_SIZE};"))
        .map_err(opened)?;
    // journal_mode answers with the mode in force; a file that cannot do WAL (some network
    // file systems) would say "delete", which still works, one process at a time.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(opened)?;
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous={sync};"))
        .map_err(opened)?;
    // The version is read inside the write transaction: two processes opening an old
    // file at once migrate it once.
    conn.execute_batch("BEGIN IMMEDIATE;").map_err(opened)?;
    let migrated = (|| {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Ok(Some(version));
        }
        conn.execute_batch(SCHEMA)?;
        let has_extension: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('users') WHERE name = 'extension'")?
            .exists([])?;
        if !has_extension {
            conn.execute_batch(MIGRATE_TO_2)?;
        }
        let has_forwarding: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('users') WHERE name = 'forward_always'")?
            .exists([])?;
        if !has_forwarding {
            conn.execute_batch(MIGRATE_TO_4)?;
        }
        conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"))?;
        Ok(None)
    })();
    match migrated {
        Ok(None) => Ok(conn),
        Ok(Some(version)) => {
            let _ = conn.execute_batch("ROLLBACK;");
            Err(StoreError::Corrupt {
                what: "schema version",
                detail: format!(
                    "{version} is newer than this Switchboard knows ({SCHEMA_VERSION}); upgrade it"
                ),
            })
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK;");
            Err(opened(e))
        }
    }
}

fn to_sql_secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn from_sql_secs(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}

/// The SQLite location store.
#[derive(Debug)]
pub struct SqliteLocationStore {
    conn: Connection,
    path: PathBuf,
    /// The thread that checkpoints the WAL, when [`SqliteLocationStore::open_for_server`]
    /// started one; it stops when this handle drops.
    checkpointer: Option<Checkpointer>,
}

/// A thread that copies the WAL into the database file now and then; see
/// [`SqliteLocationStore::open_for_server`].
#[derive(Debug)]
struct Checkpointer {
    /// Dropping it wakes the thread and tells it to stop.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteLocationStore {
    /// Opens or creates the file.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteLocationStore, StoreError> {
        Ok(SqliteLocationStore {
            conn: open_connection(path, durability, Create::IfMissing)?,
            path: path.to_owned(),
            checkpointer: None,
        })
    }

    /// Opens the file only if it exists ([`StoreError::Missing`] otherwise), for a
    /// command that looks at the registrations of a server.
    pub fn open_existing(
        path: &Path,
        durability: Durability,
    ) -> Result<SqliteLocationStore, StoreError> {
        Ok(SqliteLocationStore {
            conn: open_connection(path, durability, Create::Never)?,
            path: path.to_owned(),
            checkpointer: None,
        })
    }

    /// Opens the file for a long-running writer (`serve`): as [`SqliteLocationStore::open`],
    /// but the WAL is checkpointed (copied into the database file, with an fsync) by a
    /// thread of its own every `every`, not by whichever commit crosses SQLite's
    /// 1,000-page mark. That copy and fsync take milliseconds, which the server's one
    /// protocol thread would otherwise spend blocked, receiving nothing.
    pub fn open_for_server(
        path: &Path,
        durability: Durability,
        every: Duration,
    ) -> Result<SqliteLocationStore, StoreError> {
        let mut store = SqliteLocationStore::open(path, durability)?;
        let checkpoints = open_connection(path, durability, Create::Never)?;
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-{SERVER_CACHE_KIB};"
            ))
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    // PASSIVE never blocks the writer; what it cannot copy now, it copies
                    // next time. A failure (disk full) leaves the WAL growing, and
                    // commits still work.
                    let _ = checkpoints.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .ok();
        if thread.is_none() {
            // No thread: let the commits checkpoint, as by default.
            let _ = store.conn.execute_batch("PRAGMA wal_autocheckpoint=1000;");
        }
        store.checkpointer = Some(Checkpointer {
            stop: Some(stop),
            thread,
        });
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The statements of `changes`, in the open transaction.
    fn write_changes(&self, changes: &[Change]) -> rusqlite::Result<()> {
        for change in changes {
            match change {
                Change::Upsert(b) => {
                    self.conn.prepare_cached(UPSERT_BINDING)?.execute(params![
                        b.aor,
                        b.contact,
                        to_sql_secs(b.expires_at),
                        b.q,
                        b.call_id,
                        b.cseq,
                        b.transport.name(),
                        b.source.to_string(),
                        b.path.join("\n"),
                        b.instance_id,
                        b.reg_id,
                        b.user_agent,
                        to_sql_secs(b.registered_at),
                    ])?;
                }
                Change::Remove { aor, contact } => {
                    self.conn
                        .prepare_cached("DELETE FROM location WHERE aor = ?1 AND contact = ?2")?
                        .execute(params![aor, contact])?;
                }
                Change::RemoveAll { aor } => {
                    self.conn
                        .prepare_cached("DELETE FROM location WHERE aor = ?1")?
                        .execute(params![aor])?;
                }
            }
        }
        Ok(())
    }

    fn query(&self, sql_text: &str, p: impl rusqlite::Params) -> Result<Vec<Binding>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql_text)
            .map_err(sql("reading bindings"))?;
        let rows = stmt
            .query_map(p, RawBinding::from_row)
            .map_err(sql("reading bindings"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(sql("reading bindings"))?.into_binding()?);
        }
        Ok(out)
    }
}

const BINDING_COLUMNS: &str = "aor, contact, expires_at, q, call_id, cseq, transport, source, \
                               path, instance_id, reg_id, user_agent, registered_at";

/// Inserts or replaces one binding; the columns are [`BINDING_COLUMNS`], in order.
const UPSERT_BINDING: &str = "INSERT OR REPLACE INTO location (aor, contact, expires_at, q, \
                              call_id, cseq, transport, source, path, instance_id, reg_id, \
                              user_agent, registered_at) \
                              VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";

/// A row as SQLite types it, before the checks that turn it into a [`Binding`].
struct RawBinding {
    aor: String,
    contact: String,
    expires_at: i64,
    q: Option<i64>,
    call_id: String,
    cseq: i64,
    transport: String,
    source: String,
    path: String,
    instance_id: Option<String>,
    reg_id: Option<i64>,
    user_agent: Option<String>,
    registered_at: i64,
}

impl RawBinding {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawBinding> {
        Ok(RawBinding {
            aor: r.get(0)?,
            contact: r.get(1)?,
            expires_at: r.get(2)?,
            q: r.get(3)?,
            call_id: r.get(4)?,
            cseq: r.get(5)?,
            transport: r.get(6)?,
            source: r.get(7)?,
            path: r.get(8)?,
            instance_id: r.get(9)?,
            reg_id: r.get(10)?,
            user_agent: r.get(11)?,
            registered_at: r.get(12)?,
        })
    }

    fn into_binding(self) -> Result<Binding, StoreError> {
        let corrupt = |what, detail: String| StoreError::Corrupt { what, detail };
        let transport = Transport::from_token(&self.transport)
            .ok_or_else(|| corrupt("location.transport", self.transport.clone()))?;
        let source: SocketAddr = self
            .source
            .parse()
            .map_err(|_| corrupt("location.source", self.source.clone()))?;
        let cseq = u32::try_from(self.cseq)
            .map_err(|_| corrupt("location.cseq", self.cseq.to_string()))?;
        let q = self
            .q
            .map(|q| u16::try_from(q).map_err(|_| corrupt("location.q", q.to_string())))
            .transpose()?;
        let reg_id = self
            .reg_id
            .map(|r| u32::try_from(r).map_err(|_| corrupt("location.reg_id", r.to_string())))
            .transpose()?;
        Ok(Binding {
            aor: self.aor,
            contact: self.contact,
            expires_at: from_sql_secs(self.expires_at),
            q,
            call_id: self.call_id,
            cseq,
            transport,
            source,
            // Path values are stored one per line: a header value cannot hold a line break.
            path: if self.path.is_empty() {
                Vec::new()
            } else {
                self.path.split('\n').map(str::to_owned).collect()
            },
            instance_id: self.instance_id,
            reg_id,
            user_agent: self.user_agent,
            registered_at: from_sql_secs(self.registered_at),
        })
    }
}

impl LocationStore for SqliteLocationStore {
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        const DOING: &str = "storing bindings";
        // IMMEDIATE takes the write lock up front, so the transaction cannot fail half way
        // through for a lock another process took meanwhile. BEGIN and COMMIT are cached
        // statements like the writes: a server runs them thousands of times a second.
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut s| s.execute([]))
            .map_err(sql(DOING))?;
        let written = self
            .write_changes(changes)
            .and_then(|()| self.conn.prepare_cached("COMMIT")?.execute([]).map(drop));
        if let Err(e) = written {
            // Nothing of it stays: the transaction is still open after a failed write or
            // a failed COMMIT, and this undoes it (or finds none to undo).
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(StoreError::Sqlite {
                doing: DOING,
                source: e,
            });
        }
        Ok(())
    }

    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
        let mut v = self.query(
            &format!("SELECT {BINDING_COLUMNS} FROM location WHERE aor = ?1 AND expires_at > ?2"),
            params![aor, to_sql_secs(now)],
        )?;
        v.sort_by(Binding::priority_cmp);
        Ok(v)
    }

    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
        let mut v = self.query(
            &format!("SELECT {BINDING_COLUMNS} FROM location WHERE expires_at > ?1 ORDER BY aor"),
            params![to_sql_secs(now)],
        )?;
        v.sort_by(|a, b| a.aor.cmp(&b.aor).then_with(|| Binding::priority_cmp(a, b)));
        Ok(v)
    }

    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "DELETE FROM location WHERE expires_at <= ?1",
                params![to_sql_secs(now)],
            )
            .map_err(sql("sweeping expired bindings"))
    }
}

/// The SQLite user store (the `users` table of the same file).
#[derive(Debug)]
pub struct SqliteUserStore {
    conn: Connection,
}

const USER_COLUMNS: &str = "name, realm, ha1_md5, ha1_sha256, ha1_sha512_256, created_at, \
                            extension, forward_always, forward_busy, forward_no_answer, \
                            forward_no_answer_secs, forward_unreachable";

/// The no-answer time as stored: empty for the default.
fn no_answer_secs_to_sql(secs: u32) -> Option<u32> {
    (secs != Forwarding::DEFAULT_NO_ANSWER_SECS).then_some(secs)
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        realm: r.get(1)?,
        ha1: Ha1Set {
            md5: r.get(2)?,
            sha256: r.get(3)?,
            sha512_256: r.get(4)?,
        },
        created_at: from_sql_secs(r.get(5)?),
        extension: r.get(6)?,
        forwarding: Forwarding {
            always: r.get(7)?,
            busy: r.get(8)?,
            no_answer: r.get(9)?,
            no_answer_secs: r
                .get::<_, Option<i64>>(10)?
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(Forwarding::DEFAULT_NO_ANSWER_SECS),
            unreachable: r.get(11)?,
        },
    })
}

impl SqliteUserStore {
    /// Opens or creates the file. User changes are rare and precious, so they are always
    /// written with [`Durability::Power`].
    pub fn open(path: &Path) -> Result<SqliteUserStore, StoreError> {
        Ok(SqliteUserStore {
            conn: open_connection(path, Durability::Power, Create::IfMissing)?,
        })
    }

    /// Opens the file only if it exists ([`StoreError::Missing`] otherwise), for a
    /// command that reads or changes users who must already be there.
    pub fn open_existing(path: &Path) -> Result<SqliteUserStore, StoreError> {
        Ok(SqliteUserStore {
            conn: open_connection(path, Durability::Power, Create::Never)?,
        })
    }
}

impl SqliteUserStore {
    /// Who other than `except` already has `value` as name or extension.
    fn taken(&self, what: &'static str, value: &str, except: &str) -> Result<(), StoreError> {
        let by: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT name FROM users WHERE (name = ?1 OR extension = ?1) AND name != ?2",
            )
            .and_then(|mut s| s.query_row(params![value, except], |r| r.get(0)).optional())
            .map_err(sql("checking an extension"))?;
        match by {
            Some(by) => Err(StoreError::ExtensionTaken {
                what,
                value: value.to_owned(),
                by,
            }),
            None => Ok(()),
        }
    }
}

impl UserStore for SqliteUserStore {
    fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
            .and_then(|mut s| s.query_row(params![name], user_from_row).optional())
            .map_err(sql("reading a user"))
    }

    fn list(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .map_err(sql("listing users"))?;
        let rows = stmt
            .query_map([], user_from_row)
            .map_err(sql("listing users"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("listing users"))
    }

    fn add(&mut self, user: &User) -> Result<(), StoreError> {
        if self.get(&user.name)?.is_some() {
            return Err(StoreError::UserExists(user.name.clone()));
        }
        self.taken("name", &user.name, &user.name)?;
        if let Some(ext) = &user.extension {
            crate::check_extension(ext)?;
            self.taken("extension", ext, &user.name)?;
        }
        crate::user::check_forwarding_of(user, &user.forwarding)?;
        let f = &user.forwarding;
        let n = self
            .conn
            .execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                     ON CONFLICT (name) DO NOTHING"
                ),
                params![
                    user.name,
                    user.realm,
                    user.ha1.md5,
                    user.ha1.sha256,
                    user.ha1.sha512_256,
                    to_sql_secs(user.created_at),
                    user.extension,
                    f.always,
                    f.busy,
                    f.no_answer,
                    no_answer_secs_to_sql(f.no_answer_secs),
                    f.unreachable,
                ],
            )
            .map_err(sql("adding a user"))?;
        if n == 0 {
            return Err(StoreError::UserExists(user.name.clone()));
        }
        Ok(())
    }

    fn set_ha1(&mut self, name: &str, realm: &str, ha1: &Ha1Set) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE users SET realm = ?2, ha1_md5 = ?3, ha1_sha256 = ?4, ha1_sha512_256 = ?5 \
                 WHERE name = ?1",
                params![name, realm, ha1.md5, ha1.sha256, ha1.sha512_256],
            )
            .map_err(sql("changing a password"))?;
        if n == 0 {
            return Err(StoreError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(sql("removing a user"))?;
        if n == 0 {
            return Err(StoreError::NoSuchUser(name.to_owned()));
        }
        Ok(())
    }

    fn set_extension(&mut self, name: &str, extension: Option<&str>) -> Result<(), StoreError> {
        if self.get(name)?.is_none() {
            return Err(StoreError::NoSuchUser(name.to_owned()));
        }
        if let Some(ext) = extension {
            crate::check_extension(ext)?;
            self.taken("extension", ext, name)?;
        }
        self.conn
            .execute(
                "UPDATE users SET extension = ?2 WHERE name = ?1",
                params![name, extension],
            )
            .map_err(sql("setting an extension"))?;
        Ok(())
    }

    fn set_forwarding(&mut self, name: &str, forwarding: &Forwarding) -> Result<(), StoreError> {
        let user = self
            .get(name)?
            .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
        crate::user::check_forwarding_of(&user, forwarding)?;
        let f = forwarding;
        self.conn
            .execute(
                "UPDATE users SET forward_always = ?2, forward_busy = ?3, \
                 forward_no_answer = ?4, forward_no_answer_secs = ?5, \
                 forward_unreachable = ?6 WHERE name = ?1",
                params![
                    name,
                    f.always,
                    f.busy,
                    f.no_answer,
                    no_answer_secs_to_sql(f.no_answer_secs),
                    f.unreachable
                ],
            )
            .map_err(sql("setting call forwarding"))?;
        Ok(())
    }

    fn by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE extension = ?1"
            ))
            .and_then(|mut s| s.query_row(params![extension], user_from_row).optional())
            .map_err(sql("reading a user by extension"))
    }

    fn import(&mut self, users: &[User]) -> Result<ImportReport, StoreError> {
        for u in users {
            self.taken("name", &u.name, &u.name)?;
        }
        const DOING: &str = "importing users";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(DOING))?;
        let mut report = ImportReport::default();
        {
            let mut exists = tx
                .prepare("SELECT 1 FROM users WHERE name = ?1")
                .map_err(sql(DOING))?;
            let mut upsert = tx
                .prepare(
                    "INSERT INTO users (name, realm, ha1_md5, ha1_sha256, ha1_sha512_256, \
                     created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (name) DO UPDATE SET realm = excluded.realm, \
                     ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256, \
                     ha1_sha512_256 = excluded.ha1_sha512_256",
                )
                .map_err(sql(DOING))?;
            for u in users {
                if exists.exists(params![u.name]).map_err(sql(DOING))? {
                    report.updated += 1;
                } else {
                    report.added += 1;
                }
                upsert
                    .execute(params![
                        u.name,
                        u.realm,
                        u.ha1.md5,
                        u.ha1.sha256,
                        u.ha1.sha512_256,
                        to_sql_secs(u.created_at)
                    ])
                    .map_err(sql(DOING))?;
            }
        }
        tx.commit().map_err(sql(DOING))?;
        Ok(report)
    }

    fn version(&self) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached("SELECT version FROM users_version WHERE id = 0")
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(|v| u64::try_from(v).unwrap_or_default())
            .map_err(sql("reading the users' version"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn binding(aor: &str, contact: &str, expires_at: u64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            expires_at,
            q: Some(500),
            call_id: "c@h".into(),
            cseq: 7,
            transport: Transport::Tls,
            source: "[2001:db8::1]:5061".parse().unwrap(),
            path: vec![
                "<sip:edge1.example;lr;ob>".into(),
                "<sip:edge2.example;lr>".into(),
            ],
            instance_id: Some("<urn:uuid:00000000-0000-1000-8000-000A95A0E128>".into()),
            reg_id: Some(1),
            user_agent: Some("Phone \"X\" 1.0".into()),
            registered_at: 90,
        }
    }

    #[test]
    fn open_existing_never_creates_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let e = SqliteUserStore::open_existing(&path).unwrap_err();
        assert!(
            matches!(&e, StoreError::Missing { path: p } if *p == path),
            "{e}"
        );
        assert_eq!(e.to_string(), format!("no database at {}", path.display()));
        let e = SqliteLocationStore::open_existing(&path, Durability::Process).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e}");
        assert!(!path.exists(), "nothing was created");

        let mut users = SqliteUserStore::open(&path).unwrap();
        users
            .add(&User::new("alice", "example.test", "pw", 1).unwrap())
            .unwrap();
        drop(users);
        let users = SqliteUserStore::open_existing(&path).unwrap();
        assert_eq!(users.list().unwrap().len(), 1);
        let loc = SqliteLocationStore::open_existing(&path, Durability::Process).unwrap();
        assert!(loc.list_all(0).unwrap().is_empty());
    }

    #[test]
    fn bindings_and_users_survive_reopen_and_no_password_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let b1 = binding("sip:alice@example.test", "sip:alice@192.0.2.1", 1000);
        let mut b2 = binding("sip:alice@example.test", "sip:alice@192.0.2.2", 2000);
        b2.q = None;
        b2.path.clear();
        b2.instance_id = None;
        b2.reg_id = None;
        b2.user_agent = None;
        {
            let mut loc = SqliteLocationStore::open(&path, Durability::Process).unwrap();
            loc.apply(&[Change::Upsert(b1.clone()), Change::Upsert(b2.clone())])
                .unwrap();
            loc.upsert(binding("sip:bob@example.test", "sip:bob@x", 500))
                .unwrap();
            let mut users = SqliteUserStore::open(&path).unwrap();
            users
                .add(&User::new("alice", "example.test", "pa55word-XYZ", 10).unwrap())
                .unwrap();
        }
        let loc = SqliteLocationStore::open(&path, Durability::Power).unwrap();
        assert_eq!(
            loc.lookup("sip:alice@example.test", 100).unwrap(),
            vec![b2.clone(), b1.clone()],
            "absent q counts as 1.0 and sorts first"
        );
        assert_eq!(
            loc.lookup("sip:alice@example.test", 1000).unwrap(),
            vec![b2]
        );
        assert_eq!(loc.list_all(100).unwrap().len(), 3);
        let users = SqliteUserStore::open(&path).unwrap();
        let alice = users.get("alice").unwrap().unwrap();
        assert_eq!(alice.created_at, 10);
        assert_eq!(
            alice.ha1,
            Ha1Set::compute("alice", "example.test", "pa55word-XYZ")
        );
        assert!(users.get("bob").unwrap().is_none());
        drop((loc, users));
        let raw = std::fs::read(&path).unwrap();
        let wal = std::fs::read(dir.path().join("sb.db-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(
                !bytes.windows(12).any(|w| w == b"pa55word-XYZ"),
                "the password reached the file"
            );
        }
    }

    #[test]
    fn apply_is_atomic_and_sweep_deletes_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let mut loc = SqliteLocationStore::open(&path, Durability::Process).unwrap();
        loc.upsert(binding("sip:a@x", "sip:1", 100)).unwrap();
        loc.upsert(binding("sip:a@x", "sip:2", 200)).unwrap();
        // A second connection holds the write lock: the whole apply fails, nothing changes.
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE;").unwrap();
        loc.conn.busy_timeout(Duration::from_millis(10)).unwrap();
        let e = loc
            .apply(&[
                Change::RemoveAll {
                    aor: "sip:a@x".into(),
                },
                Change::Upsert(binding("sip:a@x", "sip:3", 300)),
            ])
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("database error while storing bindings"),
            "{e}"
        );
        other.execute_batch("ROLLBACK;").unwrap();
        assert_eq!(loc.lookup("sip:a@x", 0).unwrap().len(), 2);
        loc.apply(&[
            Change::RemoveAll {
                aor: "sip:a@x".into(),
            },
            Change::Upsert(binding("sip:a@x", "sip:3", 300)),
            Change::Remove {
                aor: "sip:nobody@x".into(),
                contact: "sip:9".into(),
            },
        ])
        .unwrap();
        assert_eq!(loc.lookup("sip:a@x", 0).unwrap().len(), 1);
        loc.upsert(binding("sip:b@x", "sip:1", 100)).unwrap();
        assert_eq!(loc.sweep(100).unwrap(), 1);
        assert_eq!(loc.sweep(100).unwrap(), 0);
        assert_eq!(loc.list_all(0).unwrap().len(), 1);
    }

    #[test]
    fn a_server_store_checkpoints_on_its_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let mut loc = SqliteLocationStore::open_for_server(
            &path,
            Durability::Process,
            Duration::from_millis(10),
        )
        .unwrap();
        for i in 0..50 {
            loc.upsert(binding(&format!("sip:u{i}@x"), "sip:c", 1000))
                .unwrap();
        }
        // The commits do not checkpoint; the thread does: the database file alone,
        // without its WAL, soon holds every binding.
        let copy = dir.path().join("copy.db");
        let mut found = 0;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::copy(&path, &copy).unwrap();
            // A copy taken in the middle of a checkpoint may be torn: that is "not yet".
            found = SqliteLocationStore::open(&copy, Durability::Process)
                .ok()
                .and_then(|s| s.list_all(0).ok())
                .map_or(0, |v| v.len());
            std::fs::remove_file(&copy).unwrap();
            if found == 50 {
                break;
            }
        }
        assert_eq!(found, 50);
        // A new file has the small pages a REGISTER's commit is cheaper with, and the
        // server's writer the larger cache.
        let page: u32 = loc
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, PAGE_SIZE);
        let cache: i64 = loc
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cache, -i64::from(SERVER_CACHE_KIB));
        drop(loc); // stops and joins the thread
    }

    #[test]
    fn user_operations() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = SqliteUserStore::open(&dir.path().join("u.db")).unwrap();
        let alice = User::new("alice", "r", "one", 1).unwrap();
        users.add(&alice).unwrap();
        assert!(matches!(users.add(&alice), Err(StoreError::UserExists(n)) if n == "alice"));
        users
            .set_ha1("alice", "r", &Ha1Set::compute("alice", "r", "two"))
            .unwrap();
        assert_eq!(
            users.get("alice").unwrap().unwrap().ha1,
            Ha1Set::compute("alice", "r", "two")
        );
        assert!(matches!(
            users.set_ha1("zed", "r", &alice.ha1),
            Err(StoreError::NoSuchUser(_))
        ));
        let batch: Vec<User> = (0..1000)
            .map(|i| User::new(&format!("u{i}"), "r", "pw", 5).unwrap())
            .chain([User::new("alice", "r", "three", 5).unwrap()])
            .collect();
        let report = users.import(&batch).unwrap();
        assert_eq!(
            report,
            ImportReport {
                added: 1000,
                updated: 1
            }
        );
        let a = users.get("alice").unwrap().unwrap();
        assert_eq!(a.created_at, 1, "an update keeps the creation time");
        assert_eq!(a.ha1, Ha1Set::compute("alice", "r", "three"));
        assert_eq!(users.list().unwrap().len(), 1001);
        users.remove("alice").unwrap();
        assert!(matches!(
            users.remove("alice"),
            Err(StoreError::NoSuchUser(_))
        ));
    }

    #[test]
    fn extensions_are_unique_and_never_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut users = SqliteUserStore::open(&dir.path().join("u.db")).unwrap();
        let mut alice = User::new("alice", "r", "pw", 1).unwrap();
        alice.extension = Some("201".into());
        users.add(&alice).unwrap();
        users.add(&User::new("bob", "r", "pw", 1).unwrap()).unwrap();
        assert_eq!(users.by_extension("201").unwrap().unwrap().name, "alice");
        assert!(users.by_extension("202").unwrap().is_none());
        let e = users.set_extension("bob", Some("201")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "extension \"201\" is already taken by user \"alice\""
        );
        let e = users.set_extension("bob", Some("alice")).unwrap_err();
        assert!(matches!(e, StoreError::InvalidExtension { .. }), "{e}");
        let e = users
            .add(&User::new("201", "r", "pw", 1).unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "name \"201\" is already taken by user \"alice\""
        );
        assert!(
            users
                .import(&[User::new("201", "r", "pw", 1).unwrap()])
                .is_err()
        );
        users.set_extension("alice", Some("201")).unwrap(); // her own: fine
        users.set_extension("bob", Some("202")).unwrap();
        users.set_extension("alice", None).unwrap();
        assert!(users.by_extension("201").unwrap().is_none());
        assert!(matches!(
            users.set_extension("zed", Some("209")),
            Err(StoreError::NoSuchUser(_))
        ));
        // An import (a password change) keeps the extension.
        users
            .import(&[User::new("bob", "r", "new", 1).unwrap()])
            .unwrap();
        assert_eq!(
            users.get("bob").unwrap().unwrap().extension.as_deref(),
            Some("202")
        );
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // The users table as version 1 made it, with one user.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA} PRAGMA user_version=1; INSERT INTO users VALUES ('alice', 'r', 'a', 'b', 'c', 7);"
            ))
            .unwrap();
        }
        let mut users = SqliteUserStore::open_existing(&path).unwrap();
        let alice = users.get("alice").unwrap().unwrap();
        assert_eq!((alice.created_at, alice.extension), (7, None));
        users.set_extension("alice", Some("201")).unwrap();
        drop(users);
        // Opened again: not migrated twice, the extension is there.
        let users = SqliteUserStore::open_existing(&path).unwrap();
        assert_eq!(users.by_extension("201").unwrap().unwrap().name, "alice");
        let version: i64 = users
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn forwarding_is_stored_checked_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let mut users = SqliteUserStore::open(&path).unwrap();
        let mut alice = User::new("alice", "r", "pw", 1).unwrap();
        alice.extension = Some("201".into());
        users.add(&alice).unwrap();
        users.add(&User::new("bob", "r", "pw", 1).unwrap()).unwrap();
        assert_eq!(
            users.get("alice").unwrap().unwrap().forwarding,
            Forwarding::default()
        );
        let f = Forwarding {
            busy: Some("bob".into()),
            no_answer: Some("+33612345678".into()),
            no_answer_secs: 25,
            unreachable: Some("*98#".into()),
            ..Forwarding::default()
        };
        users.set_forwarding("alice", &f).unwrap();
        // A password change (import) and an extension change keep it.
        users
            .import(&[User::new("alice", "r", "new", 1).unwrap()])
            .unwrap();
        users.set_extension("alice", Some("209")).unwrap();
        drop(users);
        let mut users = SqliteUserStore::open_existing(&path).unwrap();
        assert_eq!(users.get("alice").unwrap().unwrap().forwarding, f);
        assert_eq!(users.by_extension("209").unwrap().unwrap().forwarding, f);
        // Faults: no user, a bad target, oneself, a time out of range.
        let e = users.set_forwarding("zed", &f).unwrap_err();
        assert_eq!(e.to_string(), "no user \"zed\"");
        for (target, why) in [
            (
                "bob@example.test",
                "use an extension, a user name or a number",
            ),
            ("", "it is empty"),
            ("alice", "that is the user themself"),
            ("209", "that is the user themself"),
        ] {
            let bad = Forwarding {
                always: Some(target.into()),
                ..Forwarding::default()
            };
            let e = users.set_forwarding("alice", &bad).unwrap_err().to_string();
            assert!(e.contains(why), "{target}: {e}");
        }
        let e = users
            .set_forwarding(
                "alice",
                &Forwarding {
                    no_answer: Some("bob".into()),
                    no_answer_secs: 0,
                    ..Forwarding::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("1 to 600 seconds"), "{e}");
        assert_eq!(
            users.get("alice").unwrap().unwrap().forwarding,
            f,
            "unchanged"
        );
        users
            .set_forwarding("alice", &Forwarding::default())
            .unwrap();
        assert!(users.get("alice").unwrap().unwrap().forwarding.is_empty());
    }

    #[test]
    fn a_version_2_database_gets_forwarding_and_keeps_its_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            // The file as version 2 made it: users with extensions, no forwarding.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA} {MIGRATE_TO_2} PRAGMA user_version=2; \
                 INSERT INTO users VALUES ('alice', 'r', 'a', 'b', 'c', 7, '201');"
            ))
            .unwrap();
        }
        let mut users = SqliteUserStore::open_existing(&path).unwrap();
        let alice = users.get("alice").unwrap().unwrap();
        assert_eq!(alice.extension.as_deref(), Some("201"));
        assert!(alice.forwarding.is_empty());
        let f = Forwarding {
            always: Some("202".into()),
            ..Forwarding::default()
        };
        users.set_forwarding("alice", &f).unwrap();
        drop(users);
        let users = SqliteUserStore::open_existing(&path).unwrap();
        assert_eq!(users.get("alice").unwrap().unwrap().forwarding, f);
        let version: i64 = users
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
    }
}
