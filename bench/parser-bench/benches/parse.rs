//! Parse + proxy header reads, per message and over the mix, for each parser.
//!
//! `cargo bench -p parser-bench -- --warm-up-time 1 --measurement-time 3`, then
//! `cargo run -p parser-bench --release --bin report` for the table with ratios.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parser_bench::{Parser, messages};
use std::hint::black_box;

fn per_message(c: &mut Criterion) {
    for sample in messages::ALL {
        let buf = sample.buf();
        let mut group = c.benchmark_group(sample.name);
        // One element = one message, so criterion prints messages/s next to the time.
        group.throughput(Throughput::Elements(1));
        for parser in Parser::ALL {
            // A parser that cannot read a message is left out of its group (and the
            // report says so) rather than timed on its error path.
            if let Err(e) = parser.run(&buf) {
                eprintln!("{}/{}: skipped, {e}", sample.name, parser.name());
                continue;
            }
            group.bench_function(parser.name(), |b| {
                b.iter(|| parser.run(black_box(&buf)));
            });
        }
        group.finish();
    }
}

fn mix(c: &mut Criterion) {
    let bufs: Vec<_> = messages::ALL.iter().map(|s| s.buf()).collect();
    let mut group = c.benchmark_group("mix");
    group.throughput(Throughput::Elements(bufs.len() as u64));
    for parser in Parser::ALL {
        // The mix is only comparable if the parser reads every message in it.
        if let Some(e) = bufs.iter().find_map(|b| parser.run(b).err()) {
            eprintln!("mix/{}: skipped, {e}", parser.name());
            continue;
        }
        group.bench_function(parser.name(), |b| {
            b.iter(|| {
                for buf in &bufs {
                    let _ = parser.run(black_box(buf));
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, per_message, mix);
criterion_main!(benches);
