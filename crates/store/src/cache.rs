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
    /// `None` once handed to a writer thread ([`CachedStore::detach_backend`]).
    backend: Option<S>,
    shared: Arc<RwLock<BindingMap>>,
    /// Changes staged for the next commit, in order.
    staged: Vec<Change>,
    /// The bindings each AOR touched by `staged` or by the batch in flight will have once
    /// they commit (expired ones included, unsorted); an empty list is an AOR all of
    /// whose bindings go.
    staged_view: HashMap<String, Vec<Binding>>,
    /// For each AOR in `staged_view`, the id of the last batch that touches it (the
    /// staged changes belong to batch `next_batch`): its view may go once that batch is
    /// committed.
    view_owner: HashMap<String, u64>,
    /// The batch handed out by `begin_commit` and not yet ended: one at a time, so a
    /// failed batch never has later ones built on it already stored.
    in_flight: Option<Batch>,
    next_batch: u64,
}

/// Staged changes on their way to the backend ([`CachedStore::begin_commit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Names the batch in [`CachedStore::end_commit`].
    pub id: u64,
    /// The changes, in order: store all or none.
    pub changes: Vec<Change>,
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
            backend: Some(backend),
            shared: Arc::new(RwLock::new(map)),
            staged: Vec::new(),
            staged_view: HashMap::new(),
            view_owner: HashMap::new(),
            in_flight: None,
            next_batch: 0,
        })
    }

    /// Hands the backend over (to a [`crate::BackgroundWriter`]): from now on changes
    /// are stored through [`CachedStore::begin_commit`] / [`CachedStore::end_commit`],
    /// and [`CachedStore::commit_staged`] answers [`StoreError::Detached`]. `None` if
    /// it was handed over already.
    pub fn detach_backend(&mut self) -> Option<S> {
        self.backend.take()
    }

    /// Takes what is staged as a batch for someone else to store, unless a batch is in
    /// flight already or nothing is staged. The changes stay visible to this store's
    /// `lookup` (later requests are checked against them), never to a reader, until
    /// [`CachedStore::end_commit`].
    pub fn begin_commit(&mut self) -> Option<Batch> {
        if self.in_flight.is_some() || self.staged.is_empty() {
            return None;
        }
        let batch = Batch {
            id: self.next_batch,
            changes: std::mem::take(&mut self.staged),
        };
        self.next_batch += 1;
        self.in_flight = Some(batch.clone());
        Some(batch)
    }

    /// Whether a batch from [`CachedStore::begin_commit`] awaits its
    /// [`CachedStore::end_commit`].
    pub fn commit_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The backend stored batch `id` (`Ok`: readers see it now), or did not. A failed
    /// batch takes the changes staged since with it, as they were made on top of it:
    /// every request whose changes were in the batch or staged must be answered as
    /// failed. An id that is not the batch in flight changes nothing.
    pub fn end_commit(
        &mut self,
        id: u64,
        result: Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(batch) = self.in_flight.take_if(|b| b.id == id) else {
            return Ok(());
        };
        match result {
            Ok(()) => {
                write(&self.shared).apply(&batch.changes);
                for change in &batch.changes {
                    let aor = change_aor(change);
                    if self.view_owner.get(aor) == Some(&id) {
                        self.view_owner.remove(aor);
                        self.staged_view.remove(aor);
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.discard_staged();
                Err(e)
            }
        }
    }

    /// Adds changes to the next [`CachedStore::commit_staged`]. Until then they are
    /// visible to this store's `lookup` and `is_staged`, and to nothing else.
    pub fn stage(&mut self, changes: Vec<Change>) {
        for change in &changes {
            let aor = change_aor(change);
            self.view_owner.insert(aor.to_owned(), self.next_batch);
            if !self.staged_view.contains_key(aor) {
                let committed = read(&self.shared).bindings_of(aor).to_vec();
                self.staged_view.insert(aor.to_owned(), committed);
            }
            let Some(list) = self.staged_view.get_mut(aor) else {
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
        let Some(backend) = self.backend.as_mut() else {
            return Err(StoreError::Detached);
        };
        self.staged_view.clear();
        self.view_owner.clear();
        let staged = std::mem::take(&mut self.staged);
        if staged.is_empty() {
            return Ok(());
        }
        let result = backend.apply(&staged);
        if result.is_ok() {
            write(&self.shared).apply(&staged);
        }
        // The vector is kept for its capacity: the next batch reuses it.
        self.staged = staged;
        self.staged.clear();
        result
    }

    /// Drops every staged change (and the view of a batch in flight: its AORs are read
    /// from the committed copy until it ends).
    pub fn discard_staged(&mut self) {
        self.staged.clear();
        self.staged_view.clear();
        self.view_owner.clear();
        if let Some(batch) = &self.in_flight {
            // The batch in flight may still commit: rebuild its view alone.
            let changes = batch.changes.clone();
            let id = batch.id;
            let next = std::mem::replace(&mut self.next_batch, id);
            self.stage(changes);
            self.staged.clear();
            self.next_batch = next;
        }
    }

    /// A read handle that sees every committed write.
    pub fn reader(&self) -> LocationReader {
        LocationReader {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The backend, for what the cache does not offer; `None` once detached.
    pub fn backend(&self) -> Option<&S> {
        self.backend.as_ref()
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
        let count = expired.len();
        // Reads already hide them: if the backend fails, the next sweep tries again.
        match self.backend.as_mut() {
            Some(backend) => {
                backend.apply(&expired)?;
                write(&self.shared).apply(&expired);
            }
            // On a writer thread: the removals go with the next batch.
            None => {
                let untouched: Vec<Change> = expired
                    .into_iter()
                    .filter(|c| !self.staged_view.contains_key(change_aor(c)))
                    .collect();
                self.stage(untouched);
            }
        }
        Ok(count)
    }
}

fn change_aor(change: &Change) -> &str {
    match change {
        Change::Upsert(b) => &b.aor,
        Change::Remove { aor, .. } | Change::RemoveAll { aor } => aor,
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
        c.backend.as_mut().unwrap().fail = true;
        assert!(c.remove_all("sip:a@x").is_err());
        assert_eq!(
            r.lookup("sip:a@x", 20).len(),
            2,
            "failed write left no trace"
        );
        c.backend.as_mut().unwrap().fail = false;
        c.remove("sip:a@x", "sip:old").unwrap();
        assert_eq!(c.lookup("sip:a@x", 20).unwrap().len(), 1);
        // The binding that had expired before the cache was loaded was swept then.
        assert_eq!(
            c.backend
                .as_mut()
                .unwrap()
                .inner
                .lookup("sip:a@x", 0)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(c.sweep(100).unwrap(), 1);
        assert!(
            c.backend
                .as_mut()
                .unwrap()
                .inner
                .list_all(0)
                .unwrap()
                .is_empty()
        );
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
        assert!(
            c.backend
                .as_mut()
                .unwrap()
                .inner
                .lookup("sip:b@x", 1)
                .unwrap()
                .is_empty()
        );
        c.commit_staged().unwrap();
        assert!(!c.has_staged() && !c.is_staged("sip:a@x"));
        assert_eq!(contacts(r.lookup("sip:a@x", 1)), ["sip:2"]);
        assert_eq!(
            contacts(
                c.backend
                    .as_mut()
                    .unwrap()
                    .inner
                    .lookup("sip:b@x", 1)
                    .unwrap()
            ),
            ["sip:3"]
        );

        // A failed commit drops the whole batch: nothing reaches the backend or readers.
        c.stage(vec![Change::RemoveAll {
            aor: "sip:a@x".into(),
        }]);
        assert!(c.lookup("sip:a@x", 1).unwrap().is_empty());
        c.backend.as_mut().unwrap().fail = true;
        assert!(c.commit_staged().is_err());
        assert!(!c.has_staged());
        assert_eq!(contacts(c.lookup("sip:a@x", 1).unwrap()), ["sip:2"]);
        assert_eq!(contacts(r.lookup("sip:a@x", 1)), ["sip:2"]);
        c.backend.as_mut().unwrap().fail = false;
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
