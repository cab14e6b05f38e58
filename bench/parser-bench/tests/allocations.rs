//! "No allocation per header": `sip-core` makes one allocation per message (its header
//! index) for the whole proxy read, whatever the header count. The counter itself is
//! checked first, so a 1 here cannot come from a counter that counts nothing.

use parser_bench::alloc_count::{CountingAlloc, count};
use parser_bench::{Parser, messages};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn counter_counts_allocs_and_reallocs() {
    let (v, n) = count(|| {
        let mut v: Vec<u64> = Vec::with_capacity(1);
        v.extend([1, 2, 3, 4, 5, 6, 7, 8, 9]);
        std::hint::black_box(v)
    });
    assert_eq!(v.len(), 9);
    // One alloc, then at least one realloc as it grows.
    assert!(n >= 2, "counted {n}");
    let ((), n) = count(|| {
        std::hint::black_box(1 + 1);
    });
    assert_eq!(n, 0);
}

#[test]
fn ours_allocates_once_per_message() {
    for sample in messages::ALL {
        let buf = sample.buf();
        let (r, n) = count(|| Parser::Switchboard.run(&buf));
        assert_eq!(r, Ok(()), "{}", sample.name);
        assert_eq!(n, 1, "{}: switchboard made {n} allocations", sample.name);
    }
}

#[test]
fn competitors_allocate_per_header() {
    // Not a goal for them, but it shows the counter sees their work: each makes more
    // allocations than the message has header lines.
    for sample in messages::ALL {
        let buf = sample.buf();
        let headers = sip_core::Message::parse(buf.clone())
            .expect("parses")
            .header_count() as u64;
        for parser in [Parser::Rsip, Parser::Ezk] {
            let _ = parser.run(&buf);
            let (r, n) = count(|| parser.run(&buf));
            assert_eq!(r, Ok(()), "{} on {}", parser.name(), sample.name);
            assert!(n > headers, "{} on {}: {n}", parser.name(), sample.name);
        }
    }
}
