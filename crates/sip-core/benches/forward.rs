//! What forwarding by editing bytes costs a proxy per message: an INVITE with SDP
//! forwarded (new Request-URI, our Via and Record-Route, Max-Forwards decremented) and
//! its 200 stripped of our Via, each with the parse of the result the transaction layer
//! needs.
//!
//! Run: `cargo bench -p sip-core --bench forward`

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use sip_core::Message;
use sip_core::forward::{RequestEdit, forward_request, strip_top_via};
use std::hint::black_box;

const INVITE: &str = "INVITE sip:bob@example.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.1\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.test>\r\n\
From: Alice <sip:alice@example.test>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.test\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5060>\r\n\
User-Agent: bench\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 131\r\n\r\n\
v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn bench(c: &mut Criterion) {
    let invite = Message::parse(Bytes::from_static(INVITE.as_bytes())).unwrap();
    let edit = RequestEdit {
        request_uri: Some("sip:bob@192.0.2.20:5062"),
        routes: None,
        via: "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsb0123456789abcdef.0",
        record_route: &["<sip:10.0.0.1:5060;transport=udp;lr>"],
    };
    c.bench_function("forward INVITE (edit + parse)", |b| {
        b.iter(|| {
            let out = forward_request(black_box(&invite), &edit).unwrap();
            Message::parse(out).unwrap()
        })
    });
    let forwarded = Message::parse(forward_request(&invite, &edit).unwrap()).unwrap();
    let ok = sip_core::response_to(&forwarded, 200, Some("b1"))
        .build()
        .unwrap();
    c.bench_function("strip top Via of a 200 (edit + parse)", |b| {
        b.iter(|| Message::parse(strip_top_via(black_box(&ok)).unwrap()).unwrap())
    });
    c.bench_function("parse the INVITE (for scale)", |b| {
        b.iter(|| Message::parse(black_box(Bytes::from_static(INVITE.as_bytes()))).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
