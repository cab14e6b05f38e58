//! What storing call records costs, and whether a call's legs belong in a column of its
//! row (what `CdrStore` does) or in a table of their own: one transaction of 50 calls of
//! two legs each, as the writer thread stores them at a few hundred calls a second,
//! into a file that already holds 100,000 calls.

use cdr::{CallKind, CallRecord, HangupBy, OpenCall};
use criterion::{Criterion, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use std::time::Duration;
use store::CdrStore;

const BATCH: u64 = 50;
const PRELOAD: u64 = 100_000;

fn record(n: u64) -> CallRecord {
    let start = 1_765_000_000_000 + n * 1_000;
    let call_id = format!("{n:016x}-4f2a9c@192.0.2.10");
    let mut c = OpenCall::new(CallKind::Proxied, "alice", "201", &call_id, start);
    c.set_callee("bob");
    let desk = c.leg_started("sip:bob@192.0.2.21:5060;transport=udp", &call_id, start + 3);
    let mobile = c.leg_started("sip:bob@192.0.2.22:5062;transport=tcp", &call_id, start + 3);
    c.leg_ringing(desk);
    c.leg_answered(desk, start + 4_000);
    c.answered(start + 4_000);
    c.leg_ended(mobile, Some(487), start + 4_010);
    c.finish_hangup(HangupBy::Caller, "BYE", start + 64_000)
}

/// The other layout: the same columns but `legs`, and a `cdr_legs` table.
const LEGS_TABLE_SCHEMA: &str = "
PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA page_size=1024;
CREATE TABLE cdrs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, caller TEXT NOT NULL,
    dialled TEXT NOT NULL, callee TEXT, start_ms INTEGER NOT NULL, answer_ms INTEGER,
    end_ms INTEGER NOT NULL, billable_secs INTEGER NOT NULL, disposition TEXT NOT NULL,
    hangup_by TEXT NOT NULL, hangup_reason TEXT NOT NULL, trunk TEXT, call_ids TEXT NOT NULL);
CREATE INDEX cdrs_start ON cdrs (start_ms);
CREATE TABLE cdr_legs (cdr INTEGER NOT NULL REFERENCES cdrs (id), n INTEGER NOT NULL,
    target TEXT NOT NULL, call_id TEXT NOT NULL, start_ms INTEGER NOT NULL,
    answer_ms INTEGER, end_ms INTEGER NOT NULL, status INTEGER, PRIMARY KEY (cdr, n))
    WITHOUT ROWID;
";

fn insert_with_legs_table(conn: &mut Connection, records: &[CallRecord]) {
    let tx = conn.transaction().expect("begin");
    {
        let mut cdr = tx
            .prepare_cached(
                "INSERT INTO cdrs (kind, caller, dialled, callee, start_ms, answer_ms, end_ms, \
                 billable_secs, disposition, hangup_by, hangup_reason, trunk, call_ids) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .expect("prepare");
        let mut leg = tx
            .prepare_cached(
                "INSERT INTO cdr_legs (cdr, n, target, call_id, start_ms, answer_ms, end_ms, \
                 status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .expect("prepare");
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for r in records {
            cdr.execute(params![
                r.kind.as_str(),
                r.caller,
                r.dialled,
                r.callee,
                ms(r.start_ms),
                r.answer_ms.map(ms),
                ms(r.end_ms),
                ms(r.billable_secs()),
                r.disposition.as_str(),
                r.hangup_by.as_str(),
                r.hangup_reason,
                r.trunk,
                r.call_ids.join("\n"),
            ])
            .expect("insert");
            let id = tx.last_insert_rowid();
            for (n, l) in r.legs.iter().enumerate() {
                leg.execute(params![
                    id,
                    n as i64,
                    l.target,
                    l.call_id,
                    ms(l.start_ms),
                    l.answer_ms.map(ms),
                    ms(l.end_ms),
                    l.status
                ])
                .expect("insert leg");
            }
        }
    }
    tx.commit().expect("commit");
}

fn cdr_inserts(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut column = CdrStore::open(&dir.path().join("column.db")).expect("store");
    let mut table = Connection::open(dir.path().join("table.db")).expect("db");
    table.execute_batch(LEGS_TABLE_SCHEMA).expect("schema");
    let preload: Vec<CallRecord> = (0..PRELOAD).map(record).collect();
    for chunk in preload.chunks(1_000) {
        column.insert(chunk).expect("preload");
        insert_with_legs_table(&mut table, chunk);
    }
    let mut group = c.benchmark_group("cdr_insert_50_calls");
    let mut n = PRELOAD;
    group.bench_function("legs_in_a_column", |b| {
        b.iter(|| {
            let batch: Vec<CallRecord> = (n..n + BATCH).map(record).collect();
            n += BATCH;
            column.insert(&batch).expect("insert");
        })
    });
    let mut n = PRELOAD;
    group.bench_function("legs_table", |b| {
        b.iter(|| {
            let batch: Vec<CallRecord> = (n..n + BATCH).map(record).collect();
            n += BATCH;
            insert_with_legs_table(&mut table, &batch);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4)).sample_size(30);
    targets = cdr_inserts
}
criterion_main!(benches);
