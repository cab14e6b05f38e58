//! The hot copy of the location service: every current binding in memory, in front of a
//! backend that is the source of truth.
//!
//! Writes go to the backend first and reach the memory copy only once the backend has
//! committed them, so a reader never sees a binding that a crash could lose, and a failed
//! write leaves both unchanged. Reads never touch the backend.
//!
//! Group commit: a writer handling many REGISTERs at once may [`CachedStore::stage`]
//! each one's changes and store them all with one [`CachedStore::commit_staged`], one
//! backend transaction instead of one per REGISTER. Staged changes are visible to the
//! writer's own [`LocationStore::lookup`] (so the next REGISTER of the same AOR in the
//! batch is checked against them), never to a [`LocationReader`].

use crate::memory::BindingMap;
use crate::{Binding, Change, LocationStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A [`LocationStore`] with an in-memory copy of all bindings in front of backend `S`.
///
/// It assumes it is the only writer of the backend (one Switchboard process per SQLite
/// file); a shared backend (PostgreSQL, Redis) with several writers would need
/// invalidation, which is for when those backends exist.
#[derive(Debug)]
pub struct CachedStore<S> {
    backend: S,
    shared: Arc<RwLock<BindingMap>>,
    /// Changes staged for the next commit, in order.
    staged: Vec<Change>,
    /// The bindings each AOR touched by `staged` will have once it commits (expired ones
    /// included, unsorted); an empty list is an AOR all of whose bindings go.
    staged_view: HashMap<String, Vec<Binding>>,
}

/// A cheap, cloneable, thread-safe read handle on a [`CachedStore`]'s memory copy: what
/// a proxy uses to route, from any task, without waiting for the disk.
#[derive(Debug, Clone)]
pub struct LocationReader {
    shared: Arc<RwLock<BindingMap>>,
}

// A panic while holding the lock cannot leave the map half-updated in a way that matters
// more than losing the whole location service, so a poisoned lock is used as it is.
fn read(lock: &RwLock<BindingMap>) -> RwLockReadGuard<'_, BindingMap> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<BindingMap>) -> RwLockWriteGuard<'_, BindingMap> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl<S: LocationStore> CachedStore<S> {
    /// Wraps `backend`, deleting its bindings expired at `now` and loading the others.
    pub fn new(mut backend: S, now: u64) -> Result<CachedStore<S>, StoreError> {
        backend.sweep(now)?;
        let mut map = BindingMap::default();
        let all = backend.list_all(now)?;
        let changes: Vec<Change> = all.into_iter().map(Change::Upsert).collect();
        map.apply(&changes);
        Ok(CachedStore {
            backend,
            shared: Arc::new(RwLock::new(map)),
            staged: Vec::new(),
            staged_view: HashMap::new(),
        })
    }

    /// Adds changes to the next [`CachedStore::commit_staged`]. Until then they are
    /// visible to this store's `lookup` and `is_staged`, and to nothing else.
    pub fn stage(&mut self, changes: Vec<Change>) {
        for change in &changes {
            let aor = match change {
                Change::Upsert(b) => &b.aor,
                Change::Remove { aor, .. } | Change::RemoveAll { aor } => aor,
            };
            if !self.staged_view.contains_key(aor.as_str()) {
                let committed = read(&self.shared).bindings_of(aor).to_vec();
                self.staged_view.insert(aor.clone(), committed);
            }
            let Some(list) = self.staged_view.get_mut(aor.as_str()) else {
                continue;
            };
            match change {
                Change::Upsert(b) => match list.iter_mut().find(|x| x.contact == b.contact) {
                    Some(slot) => *slot = b.clone(),
                    None => list.push(b.clone()),
                },
                Change::Remove { contact, .. } => list.retain(|x| x.contact != *contact),
                Change::RemoveAll { .. } => list.clear(),
            }
        }
        self.staged.extend(changes);
    }

    /// Whether changes to this AOR are staged and not yet committed.
    pub fn is_staged(&self, aor: &str) -> bool {
        self.staged_view.contains_key(aor)
    }

    /// Whether anything is staged.
    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// Stores every staged change in one backend transaction, then shows them to the
    /// readers. On an error none is stored and all are dropped: the writer must answer
    /// every request whose changes were staged as failed.
    pub fn commit_staged(&mut self) -> Result<(), StoreError> {
        self.staged_view.clear();
        let staged = std::mem::take(&mut self.staged);
        if staged.is_empty() {
            return Ok(());
        }
        let result = self.backend.apply(&staged);
        if result.is_ok() {
            write(&self.shared).apply(&staged);
        }
        // The vector is kept for its capacity: the next batch reuses it.
        self.staged = staged;
        self.staged.clear();
        result
    }

    /// Drops every staged change.
    pub fn discard_staged(&mut self) {
        self.staged.clear();
        self.staged_view.clear();
    }

    /// A read handle that sees every committed write.
    pub fn reader(&self) -> LocationReader {
        LocationReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The backend, for what the cache does not offer.
    pub fn backend(&self) -> &S {
        &self.backend
    }
}

impl<S: LocationStore> LocationStore for CachedStore<S> {
    /// Stores `changes` at once, together with anything staged before them.
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.stage(changes.to_vec());
        self.commit_staged()
    }

    /// The writer's view: committed bindings with the staged changes on top.
    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
        match self.staged_view.get(aor) {
            Some(list) => {
                let mut v: Vec<Binding> = list
                    .iter()
                    .filter(|b| !b.is_expired(now))
                    .cloned()
                    .collect();
                v.sort_by(Binding::priority_cmp);
                Ok(v)
            }
            None => Ok(read(&self.shared).lookup(aor, now)),
        }
    }

    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
        Ok(read(&self.shared).list_all(now))
    }

    /// Deletes the expired bindings the memory copy holds, by key: the backend needs no
    /// index on expiry times (one page less to write per REGISTER) and is not scanned.
    /// What expired before the copy was loaded was swept then.
    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        let expired = read(&self.shared).expired(now);
        if expired.is_empty() {
            return Ok(0);
        }
        // Reads already hide them: if the backend fails, the next sweep tries again.
        self.backend.apply(&expired)?;
        write(&self.shared).apply(&expired);
        Ok(expired.len())
    }
}

impl LocationReader {
    /// The current bindings of an AOR, best first ([`Binding::priority_cmp`]).
    pub fn lookup(&self, aor: &str, now: u64) -> Vec<Binding> {
        read(&self.shared).lookup(aor, now)
    }

    /// Every current binding.
    pub fn list_all(&self, now: u64) -> Vec<Binding> {
        read(&self.shared).list_all(now)
    }

    /// Bindings held in memory, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        read(&self.shared).len()
    }

    /// Whether no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Addresses-of-record with at least one binding held.
    pub fn aor_count(&self) -> usize {
        read(&self.shared).aors()
    }

    /// An estimate of the heap bytes the memory copy holds (table, vectors and strings,
    /// without allocator overhead): for a metrics gauge.
    pub fn approx_bytes(&self) -> usize {
        read(&self.shared).approx_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{MemoryLocationStore, Transport};

    pub(crate) fn binding(aor: &str, contact: &str, expires_at: u64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            expires_at,
            q: None,
            call_id: "call-1".into(),
            cseq: 1,
            transport: Transport::Tcp,
            source: "192.0.2.9:40000".parse().unwrap(),
            path: vec![],
            instance_id: None,
            reg_id: None,
            user_agent: None,
            registered_at: 0,
        }
    }

    /// A backend whose writes fail on demand.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryLocationStore,
        fail: bool,
    }

    impl LocationStore for Flaky {
        fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
            if self.fail {
                return Err(StoreError::Corrupt {
                    what: "test",
                    detail: "write refused".into(),
                });
            }
            self.inner.apply(changes)
        }
        fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
            self.inner.lookup(aor, now)
        }
        fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
            self.inner.list_all(now)
        }
        fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
            self.inner.sweep(now)
        }
    }

    #[test]
    fn writes_reach_memory_only_after_the_backend() {
        let mut backend = Flaky::default();
        backend.upsert(binding("sip:a@x", "sip:old", 50)).unwrap();
        backend.upsert(binding("sip:a@x", "sip:gone", 5)).unwrap();
        let mut c = CachedStore::new(backend, 10).unwrap();
        let r = c.reader();
        // Loaded at start, without what had expired.
        assert_eq!(r.len(), 1);
        c.upsert(binding("sip:a@x", "sip:new", 100)).unwrap();
        assert_eq!(r.lookup("sip:a@x", 20).len(), 2);
        c.backend.fail = true;
        assert!(c.remove_all("sip:a@x").is_err());
        assert_eq!(
            r.lookup("sip:a@x", 20).len(),
            2,
            "failed write left no trace"
        );
        c.backend.fail = false;
        c.remove("sip:a@x", "sip:old").unwrap();
        assert_eq!(c.lookup("sip:a@x", 20).unwrap().len(), 1);
        // The binding that had expired before the cache was loaded was swept then.
        assert_eq!(c.backend.inner.lookup("sip:a@x", 0).unwrap().len(), 1);
        assert_eq!(c.sweep(100).unwrap(), 1);
        assert!(c.backend.inner.list_all(0).unwrap().is_empty());
        assert!(r.is_empty() && r.aor_count() == 0);
    }

    #[test]
    fn staged_changes_are_the_writers_view_until_one_commit_stores_them() {
        let mut c = CachedStore::new(Flaky::default(), 0).unwrap();
        c.upsert(binding("sip:a@x", "sip:1", 100)).unwrap();
        let r = c.reader();
        c.stage(vec![Change::Upsert(binding("sip:a@x", "sip:2", 100))]);
        c.stage(vec![
            Change::Remove {
                aor: "sip:a@x".into(),
                contact: "sip:1".into(),
            },
            Change::Upsert(binding("sip:b@x", "sip:3", 100)),
        ]);
        assert!(c.is_staged("sip:a@x") && c.is_staged("sip:b@x") && c.has_staged());
        let contacts = |v: Vec<Binding>| v.into_iter().map(|b| b.contact).collect::<Vec<_>>();
        assert_eq!(contacts(c.lookup("sip:a@x", 1).unwrap()), ["sip:2"]);
        assert_eq!(contacts(c.lookup("sip:b@x", 1).unwrap()), ["sip:3"]);
        // Readers and the backend see none of it yet.
        assert_eq!(contacts(r.lookup("sip:a@x", 1)), ["sip:1"]);
        assert!(c.backend.inner.lookup("sip:b@x", 1).unwrap().is_empty());
        c.commit_staged().unwrap();
        assert!(!c.has_staged() && !c.is_staged("sip:a@x"));
        assert_eq!(contacts(r.lookup("sip:a@x", 1)), ["sip:2"]);
        assert_eq!(
            contacts(c.backend.inner.lookup("sip:b@x", 1).unwrap()),
            ["sip:3"]
        );

        // A failed commit drops the whole batch: nothing reaches the backend or readers.
        c.stage(vec![Change::RemoveAll {
            aor: "sip:a@x".into(),
        }]);
        assert!(c.lookup("sip:a@x", 1).unwrap().is_empty());
        c.backend.fail = true;
        assert!(c.commit_staged().is_err());
        assert!(!c.has_staged());
        assert_eq!(contacts(c.lookup("sip:a@x", 1).unwrap()), ["sip:2"]);
        assert_eq!(contacts(r.lookup("sip:a@x", 1)), ["sip:2"]);
        c.backend.fail = false;
        c.stage(vec![Change::RemoveAll {
            aor: "sip:a@x".into(),
        }]);
        c.discard_staged();
        assert_eq!(contacts(c.lookup("sip:a@x", 1).unwrap()), ["sip:2"]);
    }

    #[test]
    fn reader_is_send_sync_and_store_is_send() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<LocationReader>();
        send::<CachedStore<crate::SqliteLocationStore>>();
        send::<crate::SqliteUserStore>();
        send::<Box<dyn LocationStore>>();
    }
}
