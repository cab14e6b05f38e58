//! Bytes of heap per live transaction, counted by an instrumenting global allocator
//! while 100,000 transactions of each kind are created and kept live. A separate bench
//! target from `transaction` so that the counting allocator's atomics do not slow the
//! throughput figures.
//!
//! Run: `cargo bench -p sip-core --bench transaction_memory`

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sip_core::transaction::{Event, TransactionKey, TransactionLayer};
use sip_core::{Flow, Message, Transport, response_to};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn udp() -> Flow {
    Flow {
        transport: Transport::Udp,
        remote: "192.0.2.1:5060".parse().unwrap(),
        local: None,
        connection: None,
    }
}

/// A typical small request (about 330 bytes), unique by branch and Call-ID.
fn request(method: &str, i: usize) -> Message {
    let text = format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{i:08x}\r\n\
         Max-Forwards: 70\r\n\
         To: Bob <sip:bob@example.com>\r\n\
         From: Alice <sip:alice@example.com>;tag=a{i}\r\n\
         Call-ID: {i:08x}@192.0.2.1\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@192.0.2.1:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn pairs(method: &str, n: usize) -> Vec<(Message, Message)> {
    (0..n)
        .map(|i| {
            let req = request(method, i);
            let resp = response_to(&req, 200, Some("b1")).build().unwrap();
            (req, resp)
        })
        .collect()
}

fn drain(layer: &mut TransactionLayer) -> Option<TransactionKey> {
    while let Some(t) = layer.poll_transmit() {
        let _ = black_box(t);
    }
    let mut key = None;
    while let Some(e) = layer.poll_event() {
        if let Event::Request { key: k, .. } = e {
            key = Some(k);
        }
    }
    key
}

/// Bytes live on the heap right now, by the instrumenting allocator's count.
fn live_bytes() -> isize {
    let s = GLOBAL.stats();
    // Reallocations are already folded into both totals.
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

/// Bytes per live transaction for 100,000 of one kind, created by `make`: everything
/// the heap holds afterwards that it did not hold before the messages were parsed,
/// so it counts the layer's tables and the messages transactions keep (a client's
/// request, a server's last response), and not what the TU was handed and dropped.
fn measure(
    label: &str,
    method: &str,
    make: impl Fn(&mut TransactionLayer, Instant, Message, Message),
) {
    const N: usize = 100_000;
    let before = live_bytes();
    let msgs = pairs(method, N);
    let request_size = msgs[0].0.as_bytes().len();
    let base = Instant::now();
    let mut layer = TransactionLayer::default();
    for (req, resp) in msgs {
        make(&mut layer, base, req, resp);
    }
    let bytes = live_bytes() - before;
    assert_eq!(layer.len(), N);
    println!(
        "memory: {label:<44} {:>6} bytes/transaction (100,000 live; request {request_size} bytes on the wire)",
        bytes / N as isize
    );
    drop(layer);
}

fn memory() {
    measure(
        "server non-INVITE, Trying (no response yet)",
        "OPTIONS",
        |l, now, req, _| {
            l.handle_message(now, req, udp()).unwrap();
            drain(l);
        },
    );
    measure(
        "server non-INVITE, Completed (200 kept)",
        "OPTIONS",
        |l, now, req, resp| {
            l.handle_message(now, req, udp()).unwrap();
            let key = drain(l).unwrap();
            l.send_response(now, key, resp).unwrap();
            drain(l);
        },
    );
    measure(
        "server INVITE, Proceeding (request kept)",
        "INVITE",
        |l, now, req, _| {
            l.handle_message(now, req, udp()).unwrap();
            drain(l);
        },
    );
    measure(
        "client non-INVITE, Trying (request kept)",
        "OPTIONS",
        |l, now, req, _| {
            l.send_request(now, req, udp()).unwrap();
            drain(l);
        },
    );
    measure(
        "client INVITE, Calling (request kept)",
        "INVITE",
        |l, now, req, _| {
            l.send_request(now, req, udp()).unwrap();
            drain(l);
        },
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter that names nothing here skips the run.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !args.is_empty()
        && !args
            .iter()
            .any(|a| "transaction_memory".contains(a.as_str()))
    {
        return;
    }
    memory();
}
