//! The longest pause one message causes while the transaction table grows: 600,000
//! REGISTER server transactions are started and answered, none ends (as when 16,000
//! arrive a second and Timer J keeps each 32 s), and every `handle_message` and
//! `send_response` is timed. A table that grows by copying or rehashing everything
//! at once shows up here as one long pause at each doubling; `serve` reads its
//! sockets on the same thread, so such a pause is datagrams lost.
//!
//! Uses mimalloc and turns transparent huge pages off, as `switchboard serve` does
//! (`KEEP_THP=1` leaves them on, to see what they cost). Run:
//! `cargo bench -p sip-core --bench transaction_pause`

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use sip_core::transaction::{Event, TransactionLayer};
use sip_core::{Flow, Message, Transport, response_to};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TRANSACTIONS: usize = 600_000;

fn register(i: usize) -> Message {
    let text = format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{i:08x}\r\n\
         Max-Forwards: 70\r\n\
         To: <sip:u{i}@example.com>\r\n\
         From: <sip:u{i}@example.com>;tag=a{i}\r\n\
         Call-ID: {i:08x}@192.0.2.1\r\n\
         CSeq: 2 REGISTER\r\n\
         Contact: <sip:u{i}@192.0.2.1:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn main() {
    let flow = Flow {
        transport: Transport::Udp,
        remote: "192.0.2.1:5060".parse().unwrap(),
        local: None,
        connection: None,
    };
    let keep_thp = std::env::var_os("KEEP_THP").is_some_and(|v| v == "1");
    if !keep_thp {
        nix::sys::prctl::set_thp_disable(true).unwrap();
    }
    println!(
        "transparent huge pages {}",
        if keep_thp { "on" } else { "off" }
    );
    let mut layer = TransactionLayer::default();
    let now = Instant::now();
    // (pause, which transaction, which call)
    let mut pauses: Vec<(Duration, usize, &str)> = Vec::new();
    let started = Instant::now();
    for i in 0..TRANSACTIONS {
        let request = register(i);
        let ok = response_to(&request, 200, Some("b1")).build().unwrap();

        let t0 = Instant::now();
        layer.handle_message(now, request, flow).unwrap();
        pauses.push((t0.elapsed(), i, "handle_message"));
        let mut key = None;
        while let Some(e) = layer.poll_event() {
            if let Event::Request { key: k, .. } = e {
                key = Some(k);
            }
        }
        let t1 = Instant::now();
        layer.send_response(now, key.unwrap(), ok).unwrap();
        pauses.push((t1.elapsed(), i, "send_response"));
        while layer.poll_transmit().is_some() {}
        // Keep only the longest few, so the record itself does not grow.
        if pauses.len() > 64 {
            pauses.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
            pauses.truncate(16);
        }
    }
    let total = started.elapsed();
    pauses.sort_unstable_by_key(|p| std::cmp::Reverse(p.0));
    println!(
        "{TRANSACTIONS} server transactions started and answered in {:.2} s; longest pauses:",
        total.as_secs_f64()
    );
    for (pause, i, call) in pauses.iter().take(8) {
        println!(
            "  {:>8.2} ms  {call} of transaction {i}",
            pause.as_secs_f64() * 1e3
        );
    }
}
