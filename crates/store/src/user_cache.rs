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

//!
//! [`CachedUsers`] is itself a [`UserStore`], for readers that hold it shared (the
//! proxy's authentication): their reads revalidate by the wall clock, and changes made
//! through it go to the backend and reload the copy.

use crate::{Forwarding, Ha1Set, ImportReport, StoreError, User, UserStore};
use std::cell::RefCell;
use std::collections::HashMap;

/// A [`UserStore`] read through an in-memory copy; see the module documentation.
#[derive(Debug)]
pub struct CachedUsers<U> {
    backend: U,
    /// Behind a `RefCell` so that shared readers ([`UserStore::get`]) can refresh it.
    copy: RefCell<UserCopy>,
}

/// The in-memory copy and how fresh it is.
#[derive(Debug)]
struct UserCopy {
    users: HashMap<String, User>,
    /// Extension to user name: a call to a number costs one map lookup.
    extensions: HashMap<String, String>,
    /// The backend's version the copy was loaded at.
    version: u64,
    /// When (Unix seconds) the version was last compared.
    checked_at: u64,
}

impl<U: UserStore> CachedUsers<U> {
    /// Loads every user of `backend`.
    pub fn new(backend: U, now: u64) -> Result<CachedUsers<U>, StoreError> {
        let mut copy = UserCopy {
            users: HashMap::new(),
            extensions: HashMap::new(),
            version: 0,
            checked_at: now,
        };
        copy.reload(&backend)?;
        Ok(CachedUsers {
            backend,
            copy: RefCell::new(copy),
        })
    }

    /// The user with this name at `now`; see the module documentation for how fresh.
    pub fn get_at(&mut self, name: &str, now: u64) -> Result<Option<&User>, StoreError> {
        let copy = self.copy.get_mut();
        if now != copy.checked_at || !copy.users.contains_key(name) {
            copy.revalidate(&self.backend, now)?;
        }
        Ok(copy.users.get(name))
    }

    /// Compares the backend's version now and reloads if it moved: for a change known to
    /// have been made (through the admin API), which then counts without waiting for the
    /// next second.
    pub fn recheck(&mut self, now: u64) -> Result<(), StoreError> {
        self.copy.get_mut().revalidate(&self.backend, now)
    }

    /// How many users are held.
    pub fn len(&self) -> usize {
        self.copy.borrow().users.len()
    }

    /// Whether no user is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The backend, for what the cache does not offer.
    pub fn backend(&self) -> &U {
        &self.backend
    }

    /// Reloads the copy after a change made through this handle.
    fn changed(&mut self) -> Result<(), StoreError> {
        self.copy.get_mut().reload(&self.backend)
    }
}

impl UserCopy {
    fn revalidate(&mut self, backend: &dyn UserStore, now: u64) -> Result<(), StoreError> {
        self.checked_at = now;
        if backend.version()? != self.version {
            self.reload(backend)?;
        }
        Ok(())
    }

    fn reload(&mut self, backend: &dyn UserStore) -> Result<(), StoreError> {
        // The version is read first: a change landing between the two reads leaves a
        // newer copy under an older version, which only costs one more reload.
        let version = backend.version()?;
        self.users = backend
            .list()?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        self.extensions = self
            .users
            .values()
            .filter_map(|u| Some((u.extension.clone()?, u.name.clone())))
            .collect();
        self.version = version;
        Ok(())
    }
}

/// Unix seconds by the wall clock, for readers that do not pass `now`.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl<U: UserStore> UserStore for CachedUsers<U> {
    fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        let mut copy = self.copy.borrow_mut();
        let now = unix_now();
        if now != copy.checked_at || !copy.users.contains_key(name) {
            copy.revalidate(&self.backend, now)?;
        }
        Ok(copy.users.get(name).cloned())
    }
    fn list(&self) -> Result<Vec<User>, StoreError> {
        let mut users: Vec<User> = self.copy.borrow().users.values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }
    fn add(&mut self, user: &User) -> Result<(), StoreError> {
        self.backend.add(user)?;
        self.changed()
    }
    fn set_ha1(&mut self, name: &str, realm: &str, ha1: &Ha1Set) -> Result<(), StoreError> {
        self.backend.set_ha1(name, realm, ha1)?;
        self.changed()
    }
    fn remove(&mut self, name: &str) -> Result<(), StoreError> {
        self.backend.remove(name)?;
        self.changed()
    }
    fn set_extension(&mut self, name: &str, extension: Option<&str>) -> Result<(), StoreError> {
        self.backend.set_extension(name, extension)?;
        self.changed()
    }
    fn set_forwarding(&mut self, name: &str, forwarding: &Forwarding) -> Result<(), StoreError> {
        self.backend.set_forwarding(name, forwarding)?;
        self.changed()
    }
    fn by_extension(&self, extension: &str) -> Result<Option<User>, StoreError> {
        let mut copy = self.copy.borrow_mut();
        let now = unix_now();
        if now != copy.checked_at {
            copy.revalidate(&self.backend, now)?;
        }
        let find = |copy: &UserCopy| {
            copy.extensions
                .get(extension)
                .and_then(|name| copy.users.get(name))
                .cloned()
        };
        match find(&copy) {
            Some(u) => Ok(Some(u)),
            None => {
                // A miss looks again, as for names: an extension set a moment ago works.
                copy.revalidate(&self.backend, now)?;
                Ok(find(&copy))
            }
        }
    }
    fn import(&mut self, users: &[User]) -> Result<ImportReport, StoreError> {
        let report = self.backend.import(users)?;
        self.changed()?;
        Ok(report)
    }
    fn version(&self) -> Result<u64, StoreError> {
        self.backend.version()
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
        assert_eq!(cache.get_at("alice", 100).unwrap().unwrap().ha1, one);

        // A new name is found at once: a miss looks again.
        other.add(&User::new("bob", "r", "b", 1).unwrap()).unwrap();
        assert!(cache.get_at("bob", 100).unwrap().is_some());
        assert!(cache.get_at("carol", 100).unwrap().is_none());

        // A password change shows once the clock has moved on.
        other
            .set_ha1("alice", "r", &Ha1Set::compute("alice", "r", "two"))
            .unwrap();
        assert_eq!(cache.get_at("alice", 100).unwrap().unwrap().ha1, one);
        assert_eq!(
            cache.get_at("alice", 101).unwrap().unwrap().ha1,
            Ha1Set::compute("alice", "r", "two")
        );
        other.remove("alice").unwrap();
        assert!(cache.get_at("alice", 102).unwrap().is_none());
        other
            .import(&[User::new("dave", "r", "d", 1).unwrap()])
            .unwrap();
        assert!(cache.get_at("dave", 102).unwrap().is_some());
        assert_eq!(cache.len(), 2);

        // Told of a change, the cache has it within the same second.
        other
            .set_ha1("bob", "r", &Ha1Set::compute("bob", "r", "new"))
            .unwrap();
        cache.recheck(102).unwrap();
        assert_eq!(
            cache.get_at("bob", 102).unwrap().unwrap().ha1,
            Ha1Set::compute("bob", "r", "new")
        );
    }

    #[test]
    fn a_shared_reader_sees_the_copy_and_changes_through_it() {
        let mut m = MemoryUserStore::default();
        m.add(&User::new("alice", "r", "one", 1).unwrap()).unwrap();
        let mut cache = CachedUsers::new(m, 100).unwrap();
        let shared: &dyn UserStore = &cache;
        assert_eq!(shared.get("alice").unwrap().unwrap().name, "alice");
        assert!(shared.get("bob").unwrap().is_none());
        cache.add(&User::new("bob", "r", "b", 1).unwrap()).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(UserStore::list(&cache).unwrap().len(), 2);
        cache.remove("alice").unwrap();
        assert!(cache.get_at("alice", 100).unwrap().is_none());
        assert!(UserStore::get(&cache, "bob").unwrap().is_some());
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

    #[test]
    fn extensions_through_the_cache_and_the_memory_backend() {
        let mut m = MemoryUserStore::default();
        m.add(&User::new("alice", "r", "pw", 1).unwrap()).unwrap();
        let mut cache = CachedUsers::new(m, 100).unwrap();
        let mut bob = User::new("bob", "r", "pw", 1).unwrap();
        bob.extension = Some("202".into());
        cache.add(&bob).unwrap();
        assert_eq!(cache.by_extension("202").unwrap().unwrap().name, "bob");
        assert!(cache.by_extension("201").unwrap().is_none());
        cache.set_extension("alice", Some("201")).unwrap();
        assert_eq!(cache.by_extension("201").unwrap().unwrap().name, "alice");
        for (name, ext) in [("alice", "202"), ("bob", "201")] {
            let e = cache.set_extension(name, Some(ext)).unwrap_err();
            assert!(matches!(e, StoreError::ExtensionTaken { .. }), "{e}");
        }
        let e = cache
            .add(&User::new("201", "r", "pw", 1).unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "name \"201\" is already taken by user \"alice\""
        );
        assert!(
            cache
                .import(&[User::new("202", "r", "pw", 1).unwrap()])
                .is_err()
        );
        assert!(matches!(
            cache.set_extension("bob", Some("x1")),
            Err(StoreError::InvalidExtension { .. })
        ));
        cache.set_extension("alice", None).unwrap();
        assert!(cache.by_extension("201").unwrap().is_none());
    }

    #[test]
    fn forwarding_through_the_cache_and_the_memory_backend() {
        let mut m = MemoryUserStore::default();
        let mut alice = User::new("alice", "r", "pw", 1).unwrap();
        alice.extension = Some("201".into());
        m.add(&alice).unwrap();
        m.add(&User::new("bob", "r", "pw", 1).unwrap()).unwrap();
        let mut cache = CachedUsers::new(m, 100).unwrap();
        let version = cache.version().unwrap();
        let f = Forwarding {
            no_answer: Some("bob".into()),
            no_answer_secs: 30,
            ..Forwarding::default()
        };
        cache.set_forwarding("alice", &f).unwrap();
        assert!(
            cache.version().unwrap() > version,
            "a change like any other"
        );
        assert_eq!(cache.get_at("alice", 100).unwrap().unwrap().forwarding, f);
        assert_eq!(cache.by_extension("201").unwrap().unwrap().forwarding, f);
        for (name, target) in [("zed", "bob"), ("alice", "201"), ("alice", "a b")] {
            let bad = Forwarding {
                busy: Some(target.into()),
                ..Forwarding::default()
            };
            assert!(cache.set_forwarding(name, &bad).is_err(), "{name} {target}");
        }
        assert_eq!(cache.backend().get("alice").unwrap().unwrap().forwarding, f);
    }
}
