//! The thread that stores batches, so that the protocol loop never waits for the disk.
//!
//! A [`BackgroundWriter`] owns a location backend on a thread of its own. The loop hands
//! it each [`Batch`] from [`crate::CachedStore::begin_commit`] and goes on; the thread
//! applies the batch in one backend transaction and reports a [`Committed`] through the
//! callback it was given (a server forwards it to its event loop), which the loop
//! applies with [`crate::CachedStore::end_commit`].

use crate::{Batch, LocationStore, StoreError};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// The outcome of one batch.
#[derive(Debug)]
pub struct Committed {
    /// The batch's id.
    pub id: u64,
    /// Whether every change of it was stored (all or none).
    pub result: Result<(), StoreError>,
}

/// A location backend on its own thread, storing batches in the order they come.
#[derive(Debug)]
pub struct BackgroundWriter {
    jobs: Option<mpsc::Sender<Batch>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundWriter {
    /// Moves `backend` to a new thread; each batch's outcome goes to `committed`, called
    /// on that thread.
    pub fn spawn<S: LocationStore>(
        mut backend: S,
        mut committed: impl FnMut(Committed) + Send + 'static,
    ) -> std::io::Result<BackgroundWriter> {
        let (jobs, queue) = mpsc::channel::<Batch>();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                while let Ok(batch) = queue.recv() {
                    let result = backend.apply(&batch.changes);
                    committed(Committed {
                        id: batch.id,
                        result,
                    });
                }
            })?;
        Ok(BackgroundWriter {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues a batch; its outcome comes through the callback. An error only when the
    /// thread is gone: then the batch is not stored.
    pub fn submit(&self, batch: Batch) -> Result<(), StoreError> {
        match &self.jobs {
            Some(jobs) => jobs.send(batch).map_err(|_| StoreError::WriterGone),
            None => Err(StoreError::WriterGone),
        }
    }
}

impl Drop for BackgroundWriter {
    /// Stores what was queued, then stops the thread.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Binding, CachedStore, Change, LocationStore, MemoryLocationStore, Transport};
    use std::sync::mpsc::channel;
    use std::time::Duration;

    fn binding(aor: &str, contact: &str) -> Binding {
        Binding {
            aor: aor.into(),
            contact: contact.into(),
            expires_at: 1_000,
            q: None,
            call_id: "c".into(),
            cseq: 1,
            transport: Transport::Udp,
            source: "192.0.2.1:5060".parse().unwrap(),
            path: vec![],
            instance_id: None,
            reg_id: None,
            user_agent: None,
            registered_at: 0,
        }
    }

    /// A backend that fails while told to.
    struct Flaky {
        inner: MemoryLocationStore,
        fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }
    impl LocationStore for Flaky {
        fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::WriterGone);
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
    fn stage_commit_committed_on_a_thread() {
        let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let backend = Flaky {
            inner: MemoryLocationStore::default(),
            fail: fail.clone(),
        };
        let mut cache = CachedStore::new(backend, 0).unwrap();
        let reader = cache.reader();
        let (tx, rx) = channel();
        let writer = BackgroundWriter::spawn(cache.detach_backend().unwrap(), move |c| {
            tx.send(c).unwrap();
        })
        .unwrap();
        assert!(matches!(cache.commit_staged(), Err(StoreError::Detached)));

        cache.stage(vec![Change::Upsert(binding("sip:a@x", "sip:a@1"))]);
        let batch = cache.begin_commit().unwrap();
        // Staged while the first is in flight: waits for the next batch.
        cache.stage(vec![Change::Upsert(binding("sip:a@x", "sip:a@2"))]);
        assert!(cache.begin_commit().is_none(), "one batch at a time");
        assert_eq!(
            cache.lookup("sip:a@x", 1).unwrap().len(),
            2,
            "the writer sees both"
        );
        assert!(
            reader.lookup("sip:a@x", 1).is_empty(),
            "readers see nothing yet"
        );
        writer.submit(batch).unwrap();
        let done = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        cache.end_commit(done.id, done.result).unwrap();
        assert_eq!(reader.lookup("sip:a@x", 1).len(), 1);
        assert_eq!(cache.lookup("sip:a@x", 1).unwrap().len(), 2);

        // The second batch fails: nothing of it shows, and the view is the committed one.
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let batch = cache.begin_commit().unwrap();
        cache.stage(vec![Change::Upsert(binding("sip:b@x", "sip:b@1"))]);
        writer.submit(batch).unwrap();
        let done = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(cache.end_commit(done.id, done.result).is_err());
        assert_eq!(reader.lookup("sip:a@x", 1).len(), 1);
        assert_eq!(cache.lookup("sip:a@x", 1).unwrap().len(), 1);
        assert!(
            cache.lookup("sip:b@x", 1).unwrap().is_empty(),
            "staged after it went too"
        );
        assert!(cache.begin_commit().is_none());

        // Sweeping a detached store stages the removals.
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(cache.sweep(2_000).unwrap(), 1);
        let batch = cache.begin_commit().unwrap();
        writer.submit(batch).unwrap();
        let done = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        cache.end_commit(done.id, done.result).unwrap();
        assert_eq!(reader.len(), 0);
    }
}
