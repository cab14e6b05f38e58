//! The hot copy of the location service: every current binding in memory, in front of a
//! backend that is the source of truth.
//!
//! Writes go to the backend first and reach the memory copy only once the backend has
//! committed them, so a reader never sees a binding that a crash could lose, and a failed
//! write leaves both unchanged. Reads never touch the backend.

use crate::memory::BindingMap;
use crate::{Binding, Change, LocationStore, StoreError};
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
    /// Wraps `backend`, loading its bindings still current at `now`.
    pub fn new(backend: S, now: u64) -> Result<CachedStore<S>, StoreError> {
        let mut map = BindingMap::default();
        let all = backend.list_all(now)?;
        let changes: Vec<Change> = all.into_iter().map(Change::Upsert).collect();
        map.apply(&changes);
        Ok(CachedStore {
            backend,
            shared: Arc::new(RwLock::new(map)),
        })
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
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.backend.apply(changes)?;
        write(&self.shared).apply(changes);
        Ok(())
    }

    fn lookup(&self, aor: &str, now: u64) -> Result<Vec<Binding>, StoreError> {
        Ok(read(&self.shared).lookup(aor, now))
    }

    fn list_all(&self, now: u64) -> Result<Vec<Binding>, StoreError> {
        Ok(read(&self.shared).list_all(now))
    }

    fn sweep(&mut self, now: u64) -> Result<usize, StoreError> {
        // Reads already hide expired bindings, so the memory copy may shed them before the
        // backend does; the count reported is the backend's, the source of truth.
        write(&self.shared).sweep(now);
        self.backend.sweep(now)
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
        // The backend still held the binding that had expired before the cache was loaded.
        assert_eq!(c.sweep(100).unwrap(), 2);
        assert!(r.is_empty() && r.aor_count() == 0);
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
