//! Prints heap allocations per message for each parser doing the proxy work, and for
//! ours, which call made them. `cargo run -p parser-bench --release --bin allocs`.

use parser_bench::alloc_count::{CountingAlloc, count};
use parser_bench::{Parser, messages};
use sip_core::Message;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    print!("| message |");
    for p in Parser::ALL {
        print!(" {} |", p.name());
    }
    println!();
    println!("|---|{}", "---:|".repeat(Parser::ALL.len()));
    for sample in messages::ALL {
        let buf = sample.buf();
        print!("| {} |", sample.name);
        for p in Parser::ALL {
            // Once untimed first: lazily initialised statics inside a parser (e.g. a
            // table built on first use) are not per-message costs.
            let _ = p.run(&buf);
            match count(|| p.run(&buf)) {
                (Ok(()), n) => print!(" {n} |"),
                (Err(e), n) => print!(" {n} (failed: {e}) |"),
            }
        }
        println!();
    }
    println!();
    println!("switchboard, per call:");
    for sample in messages::ALL {
        print!("  {:<12}", sample.name);
        for (what, n) in ours_breakdown(&sample.buf()) {
            print!(" {what}={n}");
        }
        println!();
    }
}

/// Allocations of each `sip-core` call the proxy makes, so that one that allocates can
/// be named.
fn ours_breakdown(buf: &bytes::Bytes) -> Vec<(&'static str, u64)> {
    let mut out = Vec::with_capacity(8);
    let (msg, n) = count(|| Message::parse(buf.clone()));
    out.push(("parse", n));
    let Ok(msg) = msg else {
        return out;
    };
    out.push((
        "top_via",
        count(|| msg.top_via().map(|v| v.branch().is_some())).1,
    ));
    out.push(("from", count(|| msg.from().map(|v| v.tag().is_some())).1));
    out.push(("to", count(|| msg.to().map(|v| v.tag().is_some())).1));
    out.push(("call_id", count(|| msg.call_id().map(str::len)).1));
    out.push(("cseq", count(|| msg.cseq().map(|c| c.seq)).1));
    out.push(("max_forwards", count(|| msg.max_forwards().ok()).1));
    out.push((
        "routes",
        count(|| msg.routes().filter(Result::is_ok).count()).1,
    ));
    out
}
