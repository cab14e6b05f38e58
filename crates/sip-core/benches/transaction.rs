//! Transaction layer throughput.
//!
//! Transactions created, matched and finished per second (criterion): server
//! non-INVITE (request in, 200 out, timer J) and client non-INVITE (request out, 200
//! in, timer K), over UDP so every transaction lingers and is ended by its timer.
//! Messages are parsed outside the timed part; dropping them is inside. Memory per
//! transaction is measured by the `transaction_memory` bench.
//!
//! Run: `cargo bench -p sip-core --bench transaction -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput};
use sip_core::transaction::{Event, TransactionLayer};
use sip_core::{Flow, Message, Transport, response_to};
use std::hint::black_box;
use std::time::{Duration, Instant};

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

fn drain(layer: &mut TransactionLayer) -> Option<sip_core::transaction::TransactionKey> {
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

const BATCH: usize = 1_000;

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("transaction");
    group.throughput(Throughput::Elements(BATCH as u64));

    let pool = pairs("OPTIONS", BATCH);
    let mut layer = TransactionLayer::default();
    let mut now = Instant::now();
    group.bench_function("server_non_invite_request_200_timer_j", |b| {
        b.iter_batched(
            || pool.clone(),
            |msgs| {
                for (req, resp) in msgs {
                    layer.handle_message(now, req, udp()).unwrap();
                    let key = drain(&mut layer).unwrap();
                    layer.send_response(now, key, resp).unwrap();
                    drain(&mut layer);
                }
                now += Duration::from_secs(40);
                layer.handle_timeout(now);
                drain(&mut layer);
                assert_eq!(layer.len(), 0);
            },
            BatchSize::LargeInput,
        )
    });

    let mut layer = TransactionLayer::default();
    group.bench_function("client_non_invite_request_200_timer_k", |b| {
        b.iter_batched(
            || pool.clone(),
            |msgs| {
                for (req, resp) in msgs {
                    layer.send_request(now, req, udp()).unwrap();
                    layer.handle_message(now, resp, udp()).unwrap();
                    drain(&mut layer);
                }
                now += Duration::from_secs(40);
                layer.handle_timeout(now);
                drain(&mut layer);
                assert_eq!(layer.len(), 0);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    c.final_summary();
}
