//! The users a registrar authenticates, held in memory in front of a [`UserStore`].
//!
//! Every authenticated REGISTER needs its user's HA1. Reading it from SQLite costs a
//! query, and in a server that also commits bindings to the same file it costs page
//! reads too (each commit by one connection empties the other's page cache). The users
//! change rarely (`switchboard user add/passwd/remove/import`, from another process), so
//! [`CachedUsers`] keeps them all in a map and asks the backend only for its
//! [`UserStore::version`], a counter every change bumps:
//!
//! - at most once per second of `now` while names are found, so a password change or a
//!   removal takes effect within about a second;
//! - on every name that is not found, so a user added a moment ago can register at once
//!   (and a name that does not exist costs one small read, not a reload).
//!
//! When the version moved, the whole copy is reloaded: user changes are rare, and a
//! reload is one query.

use crate::{StoreError, User, UserStore};
use std::collections::HashMap;

/// A [`UserStore`] read through an in-memory copy; see the module documentation.
#[derive(Debug)]
pub struct CachedUsers<U> {
    backend: U,
    users: HashMap<String, User>,
    /// The backend's version the copy was loaded at.
    version: u64,
    /// When (Unix seconds) the version was last compared.
    checked_at: u64,
}

impl<U: UserStore> CachedUsers<U> {
    /// Loads every user of `backend`.
    pub fn new(backend: U, now: u64) -> Result<CachedUsers<U>, StoreError> {
        let mut cache = CachedUsers {
            backend,
            users: HashMap::new(),
            version: 0,
            checked_at: now,
        };
        cache.reload()?;
        Ok(cache)
    }

    /// The user with this name at `now`; see the module documentation for how fresh.
    pub fn get(&mut self, name: &str, now: u64) -> Result<Option<&User>, StoreError> {
        if now != self.checked_at || !self.users.contains_key(name) {
            self.revalidate(now)?;
        }
        Ok(self.users.get(name))
    }

    /// How many users are held.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is held.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The backend, for what the cache does not offer.
    pub fn backend(&self) -> &U {
        &self.backend
    }

    fn revalidate(&mut self, now: u64) -> Result<(), StoreError> {
        self.checked_at = now;
        if self.backend.version()? != self.version {
            self.reload()?;
        }
        Ok(())
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        // The version is read first: a change landing between the two reads leaves a
        // newer copy under an older version, which only costs one more reload.
        let version = self.backend.version()?;
        self.users = self
            .backend
            .list()?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        self.version = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Ha1Set, MemoryUserStore, SqliteUserStore};

    #[test]
    fn sees_changes_from_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let mut other = SqliteUserStore::open(&path).unwrap();
        other
            .add(&User::new("alice", "r", "one", 1).unwrap())
            .unwrap();
        let mut cache = CachedUsers::new(SqliteUserStore::open(&path).unwrap(), 100).unwrap();
        assert_eq!(cache.len(), 1);
        let one = Ha1Set::compute("alice", "r", "one");
        assert_eq!(cache.get("alice", 100).unwrap().unwrap().ha1, one);

        // A new name is found at once: a miss looks again.
        other.add(&User::new("bob", "r", "b", 1).unwrap()).unwrap();
        assert!(cache.get("bob", 100).unwrap().is_some());
        assert!(cache.get("carol", 100).unwrap().is_none());

        // A password change shows once the clock has moved on.
        other
            .set_ha1("alice", "r", &Ha1Set::compute("alice", "r", "two"))
            .unwrap();
        assert_eq!(cache.get("alice", 100).unwrap().unwrap().ha1, one);
        assert_eq!(
            cache.get("alice", 101).unwrap().unwrap().ha1,
            Ha1Set::compute("alice", "r", "two")
        );
        other.remove("alice").unwrap();
        assert!(cache.get("alice", 102).unwrap().is_none());
        other
            .import(&[User::new("dave", "r", "d", 1).unwrap()])
            .unwrap();
        assert!(cache.get("dave", 102).unwrap().is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn memory_backend_versions_every_change() {
        let mut m = MemoryUserStore::default();
        let v0 = m.version().unwrap();
        m.add(&User::new("a", "r", "p", 1).unwrap()).unwrap();
        let v1 = m.version().unwrap();
        m.set_ha1("a", "r", &Ha1Set::compute("a", "r", "q"))
            .unwrap();
        let v2 = m.version().unwrap();
        m.remove("a").unwrap();
        let v3 = m.version().unwrap();
        assert!(v0 < v1 && v1 < v2 && v2 < v3);
    }
}
