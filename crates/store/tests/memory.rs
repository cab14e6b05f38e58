//! How much memory the location cache needs per binding: 100,000 realistic bindings
//! (one per AOR, as phones register) inserted into a `CachedStore`, with every heap
//! allocation counted by an instrumented global allocator. The budget is 1 KB each.
#![allow(clippy::unwrap_used)]

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use store::{
    Binding, CachedStore, CachedUsers, Change, Ha1Set, LocationStore, MemoryLocationStore,
    MemoryUserStore, Transport, User, UserStore,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 100_000;

/// The allocator counts are process-wide: the tests must not run at the same time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A binding as a typical phone makes it: Call-ID of a common length, an instance-id,
/// a User-Agent, no Path.
fn binding(i: usize) -> Binding {
    Binding {
        aor: format!("sip:user{i}@example.test"),
        contact: format!(
            "sip:user{i}@198.51.{}.{}:5060;transport=udp",
            i / 250 % 250,
            i % 250
        ),
        expires_at: 10_000 + 3600,
        q: None,
        call_id: format!("{i:08x}-5f3c2a1b9e8d7c6b@198.51.100.7"),
        cseq: 1,
        transport: Transport::Udp,
        source: format!("198.51.{}.{}:5060", i / 250 % 250, i % 250)
            .parse()
            .unwrap(),
        path: vec![],
        instance_id: Some(format!(
            "<urn:uuid:f81d4fae-7dec-11d0-a765-{:012x}>",
            i as u64
        )),
        reg_id: Some(1),
        user_agent: Some("Yealink SIP-T46S 66.86.0.15".into()),
        registered_at: 10_000,
    }
}

#[test]
fn a_cached_binding_costs_under_1_kb() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The backend holds its own copy; measure the cache's by giving it a backend that is
    // filled afterwards through the cache itself, and subtract the backend's share.
    let backend = MemoryLocationStore::default();
    let mut cache = CachedStore::new(backend, 0).unwrap();
    let reader = cache.reader();
    let bindings: Vec<Binding> = (0..N).map(binding).collect();

    // One write per REGISTER, as the registrar does it: the change list is built, applied
    // and dropped; what remains allocated is what the two maps hold.
    let region = Region::new(GLOBAL);
    for b in &bindings {
        cache.apply(&[Change::Upsert(b.clone())]).unwrap();
    }
    let stats = region.change();
    // stats_alloc already counts a realloc's growth or shrink in these two totals.
    let held = stats.bytes_allocated as f64 - stats.bytes_deallocated as f64;
    // Two identical maps (the backend's and the cache's): each holds half.
    let per_binding = held / 2.0 / N as f64;
    let estimate = reader.approx_bytes() as f64 / N as f64;
    println!(
        "cache: {per_binding:.0} bytes per binding measured (allocator-counted), \
         {estimate:.0} estimated from sizes; size_of::<Binding>() = {}",
        std::mem::size_of::<Binding>()
    );
    assert_eq!(reader.len(), N);
    assert!(per_binding < 1024.0, "{per_binding} bytes per binding");
    assert!(estimate < 1024.0, "{estimate} bytes per binding");
}

/// The registrar also holds every user in memory ([`CachedUsers`]): what one costs, with
/// its three HA1 hashes, for the total per registered phone.
#[test]
fn a_cached_user_costs_under_1_kb() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut backend = MemoryUserStore::default();
    let users: Vec<User> = (0..N)
        .map(|i| User {
            name: format!("user{i}"),
            realm: "example.test".into(),
            ha1: Ha1Set::compute(&format!("user{i}"), "example.test", "pw"),
            created_at: 10_000,
            extension: None,
            forwarding: store::Forwarding::default(),
        })
        .collect();
    backend.import(&users).unwrap();
    drop(users);
    let region = Region::new(GLOBAL);
    let cache = CachedUsers::new(backend, 10_000).unwrap();
    let stats = region.change();
    let per_user = (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64) / N as f64;
    println!("users: {per_user:.0} bytes per cached user (allocator-counted)");
    assert_eq!(cache.len(), N);
    assert!(per_user < 1024.0, "{per_user} bytes per user");
}
