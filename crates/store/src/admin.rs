//! The administrators of the HTTP admin API: their names, password hashes and the
//! SHA-256 digests of their API tokens, in the `admins` and `admin_tokens` tables of the
//! same SQLite file as the users.
//!
//! The tables are made when missing by whoever opens an [`SqliteAdminStore`], without
//! touching `PRAGMA user_version`: they are a part of the file of their own, so a file
//! from before them, or one that other parts of Switchboard add tables to, keeps
//! working. Nothing here hashes: the admin crate makes the password hashes (argon2id,
//! PHC strings) and token digests, and this module keeps them as text.

use crate::StoreError;
use crate::sqlite::{Create, open_connection, sql};
use crate::{Durability, check_user_name};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Made when missing; tokens go with their administrator (removed in the same
/// transaction, as foreign keys are off in SQLite by default).
const ADMIN_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS admins (
    name          TEXT    NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_tokens (
    sha256     TEXT    NOT NULL PRIMARY KEY,
    admin      TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_tokens_admin ON admin_tokens (admin);
";

/// One administrator, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccount {
    /// The login name.
    pub name: String,
    /// When added, Unix seconds.
    pub created_at: u64,
    /// How many API tokens they hold.
    pub tokens: u64,
}

/// The administrators in an SQLite file; see the module documentation.
#[derive(Debug)]
pub struct SqliteAdminStore {
    conn: Connection,
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl SqliteAdminStore {
    /// Opens or creates the file, and the tables.
    pub fn open(path: &Path) -> Result<SqliteAdminStore, StoreError> {
        Self::with(path, Create::IfMissing)
    }

    /// Opens the file only if it exists ([`StoreError::Missing`] otherwise).
    pub fn open_existing(path: &Path) -> Result<SqliteAdminStore, StoreError> {
        Self::with(path, Create::Never)
    }

    fn with(path: &Path, create: Create) -> Result<SqliteAdminStore, StoreError> {
        let conn = open_connection(path, Durability::Power, create)?;
        conn.execute_batch(ADMIN_SCHEMA)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(SqliteAdminStore { conn })
    }

    /// Adds an administrator with this password hash; [`StoreError::AdminExists`] if
    /// the name is taken. Names follow the rules of user names.
    pub fn add(&mut self, name: &str, password_hash: &str, now: u64) -> Result<(), StoreError> {
        check_user_name(name)?;
        let added = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO admins (name, password_hash, created_at) VALUES (?1, ?2, ?3)",
                params![name, password_hash, secs(now)],
            )
            .map_err(sql("adding an administrator"))?;
        if added == 0 {
            return Err(StoreError::AdminExists(name.to_owned()));
        }
        Ok(())
    }

    /// Replaces an administrator's password hash.
    pub fn set_password(&mut self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let changed = self
            .conn
            .execute(
                "UPDATE admins SET password_hash = ?2 WHERE name = ?1",
                params![name, password_hash],
            )
            .map_err(sql("changing an administrator's password"))?;
        if changed == 0 {
            return Err(StoreError::NoSuchAdmin(name.to_owned()));
        }
        Ok(())
    }

    /// Removes an administrator and their tokens.
    pub fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction()
            .map_err(sql("removing an administrator"))?;
        tx.execute("DELETE FROM admin_tokens WHERE admin = ?1", params![name])
            .map_err(sql("removing an administrator's tokens"))?;
        let removed = tx
            .execute("DELETE FROM admins WHERE name = ?1", params![name])
            .map_err(sql("removing an administrator"))?;
        if removed == 0 {
            return Err(StoreError::NoSuchAdmin(name.to_owned()));
        }
        tx.commit().map_err(sql("removing an administrator"))
    }

    /// Every administrator, by name.
    pub fn list(&self) -> Result<Vec<AdminAccount>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT a.name, a.created_at, \
                 (SELECT COUNT(*) FROM admin_tokens t WHERE t.admin = a.name) \
                 FROM admins a ORDER BY a.name",
            )
            .map_err(sql("listing administrators"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AdminAccount {
                    name: r.get(0)?,
                    created_at: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    tokens: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                })
            })
            .map_err(sql("listing administrators"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql("listing administrators"))
    }

    /// The password hash of an administrator, if there is one by that name.
    pub fn password_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT password_hash FROM admins WHERE name = ?1")
            .and_then(|mut s| s.query_row(params![name], |r| r.get(0)).optional())
            .map_err(sql("reading an administrator"))
    }

    /// Keeps a token's digest for an administrator.
    pub fn add_token(&mut self, name: &str, sha256: &str, now: u64) -> Result<(), StoreError> {
        if self.password_hash(name)?.is_none() {
            return Err(StoreError::NoSuchAdmin(name.to_owned()));
        }
        self.conn
            .execute(
                "INSERT INTO admin_tokens (sha256, admin, created_at) VALUES (?1, ?2, ?3)",
                params![sha256, name, secs(now)],
            )
            .map_err(sql("adding a token"))?;
        Ok(())
    }

    /// The administrator a token digest belongs to.
    pub fn token_owner(&self, sha256: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT admin FROM admin_tokens WHERE sha256 = ?1")
            .and_then(|mut s| s.query_row(params![sha256], |r| r.get(0)).optional())
            .map_err(sql("reading a token"))
    }

    /// Removes every token of an administrator; how many there were.
    pub fn revoke_tokens(&mut self, name: &str) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM admin_tokens WHERE admin = ?1", params![name])
            .map_err(sql("removing tokens"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{SqliteUserStore, User, UserStore};

    #[test]
    fn admins_and_tokens_live_beside_the_users() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sb.db");
        let mut users = SqliteUserStore::open(&db).unwrap();
        users
            .add(&User::new("alice", "example.test", "pw", 5).unwrap())
            .unwrap();
        let mut admins = SqliteAdminStore::open(&db).unwrap();
        admins.add("root", "$argon2id$x", 7).unwrap();
        assert!(matches!(
            admins.add("root", "$argon2id$y", 8),
            Err(StoreError::AdminExists(_))
        ));
        assert!(admins.add("bad name", "h", 8).is_err());
        admins.add_token("root", "abc", 9).unwrap();
        assert!(matches!(
            admins.add_token("nobody", "def", 9),
            Err(StoreError::NoSuchAdmin(_))
        ));
        assert_eq!(admins.token_owner("abc").unwrap().as_deref(), Some("root"));
        assert_eq!(admins.token_owner("def").unwrap(), None);
        assert_eq!(
            admins.list().unwrap(),
            [AdminAccount {
                name: "root".into(),
                created_at: 7,
                tokens: 1
            }]
        );
        admins.set_password("root", "$argon2id$z").unwrap();
        assert_eq!(
            admins.password_hash("root").unwrap().as_deref(),
            Some("$argon2id$z")
        );
        // Users are untouched, and a reopened file keeps everything.
        drop(admins);
        let mut admins = SqliteAdminStore::open_existing(&db).unwrap();
        assert_eq!(users.list().unwrap().len(), 1);
        admins.remove("root").unwrap();
        assert_eq!(admins.token_owner("abc").unwrap(), None);
        assert!(matches!(
            admins.remove("root"),
            Err(StoreError::NoSuchAdmin(_))
        ));
    }

    #[test]
    fn an_older_file_gets_the_tables_and_keeps_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sb.db");
        drop(SqliteUserStore::open(&db).unwrap());
        let version = |db: &Path| -> i64 {
            Connection::open(db)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        let before = version(&db);
        let mut admins = SqliteAdminStore::open_existing(&db).unwrap();
        admins.add("root", "h", 1).unwrap();
        assert_eq!(version(&db), before);
        assert!(SqliteAdminStore::open_existing(&dir.path().join("none.db")).is_err());
    }
}
