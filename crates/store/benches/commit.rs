//! What one group commit of the registrar costs in SQLite: `apply` of a batch of
//! upserts (refreshes of bindings of random users among 10,000), as `serve` does after
//! each commit window, through a server store (WAL, synchronous=NORMAL, checkpoints on
//! their own thread).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::net::SocketAddr;
use std::time::Duration;
use store::{Binding, Change, Durability, LocationStore, SqliteLocationStore, Transport};

const USERS: u64 = 10_000;

fn binding(user: u64, now: u64) -> Binding {
    Binding {
        aor: format!("sip:u{user:05}@example.test"),
        contact: format!("sip:u{user:05}@127.0.0.1:15070;transport=udp"),
        expires_at: now + 3600,
        q: None,
        call_id: format!("{user}-{now}@127.0.0.1"),
        cseq: 2,
        transport: Transport::Udp,
        source: SocketAddr::from(([127, 0, 0, 1], 15070)),
        path: Vec::new(),
        instance_id: None,
        reg_id: None,
        user_agent: Some("SIPp".into()),
        registered_at: now,
    }
}

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("bench.db");
    let mut store =
        SqliteLocationStore::open_for_server(&path, Durability::Process, Duration::from_secs(1))
            .expect("store");
    let all: Vec<Change> = (0..USERS)
        .map(|u| Change::Upsert(binding(u, 1_000)))
        .collect();
    store.apply(&all).expect("preload");
    let mut group = c.benchmark_group("sqlite_commit");
    for batch in [1u64, 4, 16] {
        // A cheap generator walks the users in a scattered order, as REGISTERs do.
        let mut next = 0u64;
        let mut now = 2_000u64;
        group.bench_with_input(BenchmarkId::new("upserts", batch), &batch, |b, &batch| {
            b.iter(|| {
                now += 1;
                let changes: Vec<Change> = (0..batch)
                    .map(|_| {
                        next = (next + 7_919) % USERS;
                        Change::Upsert(binding(next, now))
                    })
                    .collect();
                store.apply(&changes).expect("commit");
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(4));
    targets = commit
}
criterion_main!(benches);
