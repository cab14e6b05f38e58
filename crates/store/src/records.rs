//! Call detail records in the database: the `cdrs` table ([`CdrStore`]) and the thread
//! that writes them in batches off the protocol loop ([`CdrWriter`]).
//!
//! The table is created in any database file that lacks it, whatever its schema
//! version: it stands alone (no other table refers to it), so a file made before call
//! records existed gains it the first time `serve` opens it, and older Switchboards
//! ignore it. A call's legs are kept in a column of its row, one line per leg, not in a
//! table of their own: a record is written once and read whole, so one row per call
//! needs no join and no second index. Writing costs the same either way:
//! `cargo bench -p store --bench cdr` stores 50 calls of two legs into 100,000 in
//! 0.52-0.56 ms with the column and 0.48-0.69 ms with a legs table (two runs each on a
//! loaded 2-core machine: equal within the noise, about 11 µs a call).
//!
//! A full disk or a broken database must not stop calls: the writer drops the batch
//! it could not store, counts the records lost, reports it through its callback and
//! goes on; a queue that is full (the disk far behind) drops records the same way.

use crate::StoreError;
use crate::sqlite::{Create, Durability, open_connection};
use cdr::{CallKind, CallRecord, Disposition, HangupBy, Leg, RecordSink};
use rusqlite::{Connection, Row, params};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The table, created when missing. Times are Unix milliseconds. `call_ids` holds one
/// Call-ID per line; `legs` one leg per line (see [`encode_legs`]).
const CDR_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cdrs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT    NOT NULL,
    caller        TEXT    NOT NULL,
    dialled       TEXT    NOT NULL,
    callee        TEXT,
    start_ms      INTEGER NOT NULL,
    answer_ms     INTEGER,
    end_ms        INTEGER NOT NULL,
    billable_secs INTEGER NOT NULL,
    disposition   TEXT    NOT NULL,
    hangup_by     TEXT    NOT NULL,
    hangup_reason TEXT    NOT NULL,
    trunk         TEXT,
    call_ids      TEXT    NOT NULL,
    legs          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS cdrs_start ON cdrs (start_ms);
";

const CDR_COLUMNS: &str = "id, kind, caller, dialled, callee, start_ms, answer_ms, end_ms, \
                           disposition, hangup_by, hangup_reason, trunk, call_ids, legs";

const INSERT_CDR: &str = "INSERT INTO cdrs (kind, caller, dialled, callee, start_ms, \
                          answer_ms, end_ms, billable_secs, disposition, hangup_by, \
                          hangup_reason, trunk, call_ids, legs) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

fn sql(doing: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { doing, source }
}

fn ms_to_sql(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn ms_from_sql(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// A text field as one line of a column: tabs and line breaks (which SIP values do not
/// hold anyway) become spaces, so the fields and lines of [`encode_legs`] stay apart.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\t', '\n', '\r']) {
        s.replace(['\t', '\n', '\r'], " ").into()
    } else {
        s.into()
    }
}

/// The legs as a column: one line per leg, its fields tab-separated: target, Call-ID,
/// start, answer (empty when none), end, status (empty when none).
fn encode_legs(legs: &[Leg]) -> String {
    let mut out = String::new();
    for (i, l) in legs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let answer = l.answer_ms.map(|a| a.to_string()).unwrap_or_default();
        let status = l.status.map(|s| s.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "{}\t{}\t{}\t{answer}\t{}\t{status}",
            one_line(&l.target),
            one_line(&l.call_id),
            l.start_ms,
            l.end_ms
        ));
    }
    out
}

fn decode_legs(text: &str) -> Result<Vec<Leg>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "cdrs.legs",
        detail: text.chars().take(200).collect(),
    };
    let mut legs = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [target, call_id, start, answer, end, status] = f[..] else {
            return Err(corrupt());
        };
        let opt = |s: &str| -> Result<Option<u64>, StoreError> {
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse().map(Some).map_err(|_| corrupt())
            }
        };
        legs.push(Leg {
            target: target.to_owned(),
            call_id: call_id.to_owned(),
            start_ms: start.parse().map_err(|_| corrupt())?,
            answer_ms: opt(answer)?,
            end_ms: end.parse().map_err(|_| corrupt())?,
            status: opt(status)?
                .map(|s| u16::try_from(s).map_err(|_| corrupt()))
                .transpose()?,
        });
    }
    Ok(legs)
}

/// Which records a query wants: a time range on the start, a user, a count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdrQuery {
    /// Calls that started at or after this time (Unix milliseconds).
    pub since_ms: Option<u64>,
    /// Calls that started before this time.
    pub until_ms: Option<u64>,
    /// Calls this user made, was called in, or dialled ([`CallRecord::involves`]).
    pub user: Option<String>,
    /// At most this many: the latest ones.
    pub limit: Option<usize>,
}

/// A record as stored, with its row number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCdr {
    /// The row's id: increasing in the order the records were stored.
    pub id: i64,
    /// The record.
    pub record: CallRecord,
}

/// The call records of a database file (or of memory, for `memory:` and tests).
#[derive(Debug)]
pub struct CdrStore {
    conn: Connection,
}

impl CdrStore {
    /// Opens the file, making it (and the table) when missing: for `serve`.
    pub fn open(path: &Path) -> Result<CdrStore, StoreError> {
        Self::with_table(
            open_connection(path, Durability::Process, Create::IfMissing)?,
            path,
        )
    }

    /// Opens the file only if it exists ([`StoreError::Missing`] otherwise): for a
    /// command that reads the records of a server.
    pub fn open_existing(path: &Path) -> Result<CdrStore, StoreError> {
        Self::with_table(
            open_connection(path, Durability::Process, Create::Never)?,
            path,
        )
    }

    /// Records kept in memory only, gone with the process.
    pub fn in_memory() -> Result<CdrStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(sql("opening an in-memory database"))?;
        Self::with_table(conn, Path::new(":memory:"))
    }

    fn with_table(conn: Connection, path: &Path) -> Result<CdrStore, StoreError> {
        conn.execute_batch(CDR_SCHEMA)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(CdrStore { conn })
    }

    /// Stores the records in one transaction: all of them or none.
    pub fn insert(&mut self, records: &[CallRecord]) -> Result<(), StoreError> {
        const DOING: &str = "storing call records";
        let tx = self.conn.transaction().map_err(sql(DOING))?;
        {
            let mut insert = tx.prepare_cached(INSERT_CDR).map_err(sql(DOING))?;
            for r in records {
                insert
                    .execute(params![
                        r.kind.as_str(),
                        r.caller,
                        r.dialled,
                        r.callee,
                        ms_to_sql(r.start_ms),
                        r.answer_ms.map(ms_to_sql),
                        ms_to_sql(r.end_ms),
                        ms_to_sql(r.billable_secs()),
                        r.disposition.as_str(),
                        r.hangup_by.as_str(),
                        r.hangup_reason,
                        r.trunk,
                        r.call_ids
                            .iter()
                            .map(|c| one_line(c))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        encode_legs(&r.legs),
                    ])
                    .map_err(sql(DOING))?;
            }
        }
        tx.commit().map_err(sql(DOING))
    }

    /// The records `query` asks for, oldest first (with a limit, the latest that many).
    pub fn query(&self, query: &CdrQuery) -> Result<Vec<StoredCdr>, StoreError> {
        const DOING: &str = "reading call records";
        let limit = query
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CDR_COLUMNS} FROM cdrs WHERE start_ms >= ?1 AND start_ms < ?2 \
                 AND (?3 IS NULL OR caller = ?3 OR callee = ?3 OR dialled = ?3) \
                 ORDER BY start_ms DESC, id DESC LIMIT ?4"
            ))
            .map_err(sql(DOING))?;
        let rows = stmt
            .query_map(
                params![
                    ms_to_sql(query.since_ms.unwrap_or(0)),
                    query.until_ms.map_or(i64::MAX, ms_to_sql),
                    query.user,
                    limit
                ],
                RawCdr::from_row,
            )
            .map_err(sql(DOING))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(sql(DOING))?.into_stored()?);
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes the records of calls that started before `before_ms`; how many.
    pub fn prune(&mut self, before_ms: u64) -> Result<usize, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM cdrs WHERE start_ms < ?1")
            .and_then(|mut s| s.execute(params![ms_to_sql(before_ms)]))
            .map_err(sql("pruning old call records"))
    }
}

/// A row as SQLite types it.
struct RawCdr {
    id: i64,
    kind: String,
    caller: String,
    dialled: String,
    callee: Option<String>,
    start_ms: i64,
    answer_ms: Option<i64>,
    end_ms: i64,
    disposition: String,
    hangup_by: String,
    hangup_reason: String,
    trunk: Option<String>,
    call_ids: String,
    legs: String,
}

impl RawCdr {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawCdr> {
        Ok(RawCdr {
            id: r.get(0)?,
            kind: r.get(1)?,
            caller: r.get(2)?,
            dialled: r.get(3)?,
            callee: r.get(4)?,
            start_ms: r.get(5)?,
            answer_ms: r.get(6)?,
            end_ms: r.get(7)?,
            disposition: r.get(8)?,
            hangup_by: r.get(9)?,
            hangup_reason: r.get(10)?,
            trunk: r.get(11)?,
            call_ids: r.get(12)?,
            legs: r.get(13)?,
        })
    }

    fn into_stored(self) -> Result<StoredCdr, StoreError> {
        let corrupt = |what, detail: &str| StoreError::Corrupt {
            what,
            detail: detail.to_owned(),
        };
        Ok(StoredCdr {
            id: self.id,
            record: CallRecord {
                kind: CallKind::parse(&self.kind)
                    .ok_or_else(|| corrupt("cdrs.kind", &self.kind))?,
                disposition: Disposition::parse(&self.disposition)
                    .ok_or_else(|| corrupt("cdrs.disposition", &self.disposition))?,
                hangup_by: HangupBy::parse(&self.hangup_by)
                    .ok_or_else(|| corrupt("cdrs.hangup_by", &self.hangup_by))?,
                legs: decode_legs(&self.legs)?,
                caller: self.caller,
                dialled: self.dialled,
                callee: self.callee,
                start_ms: ms_from_sql(self.start_ms),
                answer_ms: self.answer_ms.map(ms_from_sql),
                end_ms: ms_from_sql(self.end_ms),
                hangup_reason: self.hangup_reason,
                trunk: self.trunk,
                call_ids: self
                    .call_ids
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
        })
    }
}

/// How the [`CdrWriter`] batches and prunes.
#[derive(Debug, Clone)]
pub struct CdrWriterSettings {
    /// Records waiting for the thread at most; more are dropped (and counted).
    pub queue: usize,
    /// Records stored in one transaction at most.
    pub max_batch: usize,
    /// How long the thread waits for more records after the first of a batch: at a
    /// few hundred calls a second, one transaction then holds dozens.
    pub linger: Duration,
    /// Records of calls older than this are deleted (`None`: kept for ever).
    pub keep: Option<Duration>,
    /// How often old records are looked for.
    pub prune_every: Duration,
}

impl Default for CdrWriterSettings {
    fn default() -> Self {
        CdrWriterSettings {
            queue: 10_000,
            max_batch: 500,
            linger: Duration::from_millis(50),
            keep: None,
            prune_every: Duration::from_secs(3600),
        }
    }
}

/// What went wrong on the writer thread, reported through its callback.
#[derive(Debug, thiserror::Error)]
pub enum CdrTrouble {
    /// A batch could not be stored: its records are lost.
    #[error("{dropped} call records lost: {error}")]
    Write {
        /// Why.
        error: StoreError,
        /// How many records the batch held.
        dropped: usize,
    },
    /// The queue was full (the database far behind): records were dropped before
    /// reaching the thread.
    #[error("{dropped} call records dropped: the writer's queue was full")]
    QueueFull {
        /// How many since the last report.
        dropped: u64,
    },
    /// Old records could not be deleted (they are tried again later).
    #[error("pruning old call records failed: {0}")]
    Prune(StoreError),
}

/// Counters shared by the writer and its senders.
#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    /// Lost in failed batches.
    failed: AtomicU64,
    /// Dropped because the queue was full or the thread gone.
    refused: AtomicU64,
}

/// A handle the services hand finished records to ([`RecordSink`]): it never blocks;
/// a record that finds the queue full is dropped and counted.
#[derive(Debug, Clone)]
pub struct CdrSender {
    queue: SyncSender<CallRecord>,
    counters: Arc<Counters>,
}

impl CdrSender {
    /// Records stored so far (by the writer this handle feeds).
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Records lost so far: in failed batches, or dropped on a full queue.
    pub fn dropped(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed) + self.counters.refused.load(Ordering::Relaxed)
    }
}

impl RecordSink for CdrSender {
    fn record(&mut self, record: CallRecord) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A [`CdrStore`] on a thread of its own, storing the records its [`CdrSender`]s hand
/// it in batches, and deleting old ones. Dropping it stores what is queued and stops
/// the thread.
#[derive(Debug)]
pub struct CdrWriter {
    sender: CdrSender,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CdrWriter {
    /// Moves `store` to a new thread. `clock` gives the wall-clock time in Unix
    /// milliseconds (for pruning); `trouble` hears of every failure, on that thread.
    pub fn spawn(
        store: CdrStore,
        settings: CdrWriterSettings,
        clock: impl Fn() -> u64 + Send + 'static,
        trouble: impl FnMut(CdrTrouble) + Send + 'static,
    ) -> std::io::Result<CdrWriter> {
        let (queue, records) = mpsc::sync_channel(settings.queue.max(1));
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = WriterThread {
            store,
            settings,
            records,
            counters: counters.clone(),
            stop: stop.clone(),
            clock: Box::new(clock),
            trouble: Box::new(trouble),
            refused_reported: 0,
        };
        let thread = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || worker.run())?;
        Ok(CdrWriter {
            sender: CdrSender { queue, counters },
            stop,
            thread: Some(thread),
        })
    }

    /// A handle to give records to.
    pub fn sender(&self) -> CdrSender {
        self.sender.clone()
    }

    /// Records stored so far.
    pub fn written(&self) -> u64 {
        self.sender.written()
    }

    /// Records lost so far: in failed batches, or dropped on a full queue.
    pub fn dropped(&self) -> u64 {
        self.sender.dropped()
    }
}

impl Drop for CdrWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the thread looks at the stop flag and the prune clock when idle.
const TICK: Duration = Duration::from_millis(100);

struct WriterThread {
    store: CdrStore,
    settings: CdrWriterSettings,
    records: Receiver<CallRecord>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    clock: Box<dyn Fn() -> u64 + Send>,
    trouble: Box<dyn FnMut(CdrTrouble) + Send>,
    refused_reported: u64,
}

impl WriterThread {
    fn run(&mut self) {
        let mut batch: Vec<CallRecord> = Vec::new();
        let mut next_prune = Instant::now();
        loop {
            if self.settings.keep.is_some() && Instant::now() >= next_prune {
                self.prune();
                next_prune = Instant::now() + self.settings.prune_every;
            }
            // The senders live in the protocol loop: the flag, not a closed channel,
            // says when to stop.
            let stopping = self.stop.load(Ordering::SeqCst);
            let wait = if stopping { Duration::ZERO } else { TICK };
            match self.records.recv_timeout(wait) {
                Ok(first) => {
                    batch.push(first);
                    self.gather(&mut batch, stopping);
                    self.write(&mut batch);
                }
                Err(RecvTimeoutError::Timeout) if stopping => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.report_refused();
        }
        self.report_refused();
    }

    /// More records for the batch, for up to `linger` (none when stopping).
    fn gather(&mut self, batch: &mut Vec<CallRecord>, stopping: bool) {
        let until = Instant::now()
            + if stopping {
                Duration::ZERO
            } else {
                self.settings.linger
            };
        while batch.len() < self.settings.max_batch {
            let left = until.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                self.records.try_recv().ok()
            } else {
                self.records.recv_timeout(left).ok()
            };
            match next {
                Some(r) => batch.push(r),
                None => break,
            }
        }
    }

    fn write(&mut self, batch: &mut Vec<CallRecord>) {
        let n = batch.len();
        match self.store.insert(batch) {
            Ok(()) => {
                self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.counters.failed.fetch_add(n as u64, Ordering::Relaxed);
                (self.trouble)(CdrTrouble::Write { error, dropped: n });
            }
        }
        batch.clear();
    }

    fn prune(&mut self) {
        let Some(keep) = self.settings.keep else {
            return;
        };
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        let before = (self.clock)().saturating_sub(keep_ms);
        if let Err(e) = self.store.prune(before) {
            (self.trouble)(CdrTrouble::Prune(e));
        }
    }

    fn report_refused(&mut self) {
        let refused = self.counters.refused.load(Ordering::Relaxed);
        if refused > self.refused_reported {
            (self.trouble)(CdrTrouble::QueueFull {
                dropped: refused - self.refused_reported,
            });
            self.refused_reported = refused;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cdr::OpenCall;
    use std::sync::Mutex;

    fn record(caller: &str, callee: &str, start_ms: u64) -> CallRecord {
        let mut c = OpenCall::new(
            CallKind::Proxied,
            caller,
            "201",
            &format!("cid-{start_ms}"),
            start_ms,
        );
        c.set_callee(callee);
        let a = c.leg_started("sip:bob@192.0.2.1:5060;transport=udp", "cid", start_ms + 5);
        let b = c.leg_started("sip:bob@192.0.2.2:5060", "cid", start_ms + 6);
        c.leg_ringing(a);
        c.leg_answered(a, start_ms + 2_000);
        c.answered(start_ms + 2_000);
        c.leg_ended(b, Some(487), start_ms + 2_010);
        c.finish_hangup(HangupBy::Caller, "BYE", start_ms + 7_500)
    }

    #[test]
    fn records_round_trip_and_are_queried_by_time_user_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let mut store = CdrStore::open(&path).unwrap();
        let first = record("alice", "bob", 1_000_000);
        let mut odd = OpenCall::new(CallKind::Pbx, "carol\tx", "0", "c\nd", 2_000_000)
            .finish_unanswered(486, "Busy Here", 2_000_100);
        odd.trunk = Some("carrier1".into());
        store.insert(&[first.clone(), odd.clone()]).unwrap();
        store.insert(&[record("bob", "alice", 3_000_000)]).unwrap();
        drop(store);

        let store = CdrStore::open_existing(&path).unwrap();
        let all = store.query(&CdrQuery::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all[0].id < all[1].id && all[1].id < all[2].id);
        assert_eq!(all[0].record, first);
        assert_eq!(all[0].record.billable_secs(), 6);
        // A column of its own keeps any text; in the lists, line breaks are flattened.
        assert_eq!(all[1].record.caller, "carol\tx");
        assert_eq!(all[1].record.call_ids, ["c d"]);
        assert_eq!(all[1].record.trunk.as_deref(), Some("carrier1"));
        assert_eq!(all[1].record.disposition, Disposition::Busy);

        let q = |since, until, user: Option<&str>, limit| {
            store
                .query(&CdrQuery {
                    since_ms: since,
                    until_ms: until,
                    user: user.map(str::to_owned),
                    limit,
                })
                .unwrap()
                .into_iter()
                .map(|s| s.record.start_ms)
                .collect::<Vec<_>>()
        };
        assert_eq!(q(Some(2_000_000), None, None, None), [2_000_000, 3_000_000]);
        assert_eq!(q(None, Some(2_000_000), None, None), [1_000_000]);
        assert_eq!(q(None, None, Some("alice"), None), [1_000_000, 3_000_000]);
        assert_eq!(q(None, None, Some("201"), Some(1)), [3_000_000]);
        assert_eq!(q(None, None, None, Some(2)), [2_000_000, 3_000_000]);
        assert_eq!(q(None, None, Some("nobody"), None), Vec::<u64>::new());
        assert_eq!(q(None, None, None, Some(0)), Vec::<u64>::new());
    }

    #[test]
    fn old_files_gain_the_table_and_a_reader_never_makes_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        assert!(matches!(
            CdrStore::open_existing(&path),
            Err(StoreError::Missing { .. })
        ));
        assert!(!path.exists());
        // A file as the user store made it, before call records.
        let mut users = crate::SqliteUserStore::open(&path).unwrap();
        crate::UserStore::add(
            &mut users,
            &crate::User::new("alice", "r", "pw", 1).unwrap(),
        )
        .unwrap();
        drop(users);
        let mut store = CdrStore::open_existing(&path).unwrap();
        assert!(store.query(&CdrQuery::default()).unwrap().is_empty());
        store.insert(&[record("alice", "bob", 5)]).unwrap();
        let users = crate::SqliteUserStore::open_existing(&path).unwrap();
        assert!(crate::UserStore::get(&users, "alice").unwrap().is_some());
    }

    #[test]
    fn prune_deletes_calls_started_before() {
        let mut store = CdrStore::in_memory().unwrap();
        store
            .insert(&[
                record("a", "b", 100),
                record("a", "b", 200),
                record("a", "b", 300),
            ])
            .unwrap();
        assert_eq!(store.prune(200).unwrap(), 1);
        assert_eq!(store.prune(200).unwrap(), 0);
        assert_eq!(store.query(&CdrQuery::default()).unwrap().len(), 2);
    }

    fn troubles() -> (
        Arc<Mutex<Vec<String>>>,
        impl FnMut(CdrTrouble) + Send + 'static,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, move |t: CdrTrouble| {
            s.lock().unwrap().push(t.to_string())
        })
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_writer_batches_prunes_and_stores_what_is_queued_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let (seen, trouble) = troubles();
        let settings = CdrWriterSettings {
            keep: Some(Duration::from_millis(1_000)),
            ..CdrWriterSettings::default()
        };
        // A record from before the keep window is pruned when the thread starts.
        CdrStore::open(&path)
            .unwrap()
            .insert(&[record("old", "b", 1)])
            .unwrap();
        let writer =
            CdrWriter::spawn(CdrStore::open(&path).unwrap(), settings, || 10_000, trouble).unwrap();
        let mut sender = writer.sender();
        for i in 0..1_000 {
            sender.record(record("alice", "bob", 20_000 + i));
        }
        wait_until("1,000 records stored", || writer.written() == 1_000);
        sender.record(record("alice", "bob", 30_000));
        drop(writer); // stores the last one, then stops
        let reader = CdrStore::open_existing(&path).unwrap();
        let all = reader.query(&CdrQuery::default()).unwrap();
        assert_eq!(all.len(), 1_001);
        assert!(all.iter().all(|s| s.record.caller == "alice"));
        assert!(
            seen.lock().unwrap().is_empty(),
            "{:?}",
            seen.lock().unwrap()
        );
        // After the writer is gone, a sender drops and counts.
        sender.record(record("late", "b", 40_000));
        assert_eq!(sender.counters.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_broken_database_loses_records_counts_them_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        let (seen, trouble) = troubles();
        let writer = CdrWriter::spawn(
            CdrStore::open(&path).unwrap(),
            CdrWriterSettings {
                linger: Duration::ZERO,
                ..CdrWriterSettings::default()
            },
            || 0,
            trouble,
        )
        .unwrap();
        let mut sender = writer.sender();
        sender.record(record("alice", "bob", 1));
        wait_until("the first stored", || writer.written() == 1);
        // The table vanishes under the writer (a damaged or replaced file).
        let other = Connection::open(&path).unwrap();
        other.execute_batch("DROP TABLE cdrs;").unwrap();
        sender.record(record("alice", "bob", 2));
        sender.record(record("alice", "bob", 3));
        wait_until("the lost ones counted", || writer.dropped() == 2);
        let said = seen.lock().unwrap().join("\n");
        assert!(
            said.contains("call records lost: database error while storing call records"),
            "{said}"
        );
        // It comes back: the writer goes on storing.
        other.execute_batch(CDR_SCHEMA).unwrap();
        sender.record(record("alice", "bob", 4));
        wait_until("stored again", || writer.written() == 2);
        drop(writer);
    }

    #[test]
    fn a_full_queue_drops_and_reports() {
        let (seen, trouble) = troubles();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sb.db");
        // Another connection holds the write lock: the thread waits on its first batch
        // while the queue of 2 fills.
        let blocker = Connection::open(&path).unwrap();
        let store = CdrStore::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE;").unwrap();
        let writer = CdrWriter::spawn(
            store,
            CdrWriterSettings {
                queue: 2,
                max_batch: 1,
                linger: Duration::ZERO,
                ..CdrWriterSettings::default()
            },
            || 0,
            trouble,
        )
        .unwrap();
        let mut sender = writer.sender();
        for i in 0..10 {
            sender.record(record("alice", "bob", i));
        }
        assert!(writer.dropped() >= 7, "{}", writer.dropped());
        blocker.execute_batch("COMMIT;").unwrap();
        wait_until("the queued ones stored", || {
            writer.written() + writer.dropped() == 10
        });
        drop(writer);
        let said = seen.lock().unwrap().join("\n");
        assert!(said.contains("writer's queue was full"), "{said}");
    }
}
