//! Reads criterion's results for this benchmark and prints the README table: time per
//! message, messages per second, and how many times faster ours is than each competitor.
//!
//! `cargo run -p parser-bench --release --bin report [CRITERION_DIR]`; the directory
//! defaults to the workspace's `target/criterion`.

use parser_bench::{Parser, messages};
use std::path::{Path, PathBuf};

/// Nanoseconds per iteration as criterion prints it: the slope estimate when it has one
/// (linear sampling), else the mean.
fn estimate_ns(dir: &Path, group: &str, parser: Parser) -> Option<f64> {
    let path = dir
        .join(group)
        .join(parser.name())
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    ["slope", "mean"]
        .iter()
        .find_map(|k| json.get(k)?.get("point_estimate")?.as_f64())
}

/// Messages per second, shortened: `2.41 M`, `312 k`.
fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn main() {
    let dir = std::env::args().nth(1).map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/criterion"
            ))
        },
        PathBuf::from,
    );
    let mut groups: Vec<(&str, u64)> = messages::ALL.iter().map(|s| (s.name, 1)).collect();
    // One mix iteration parses every message once.
    groups.push(("mix", messages::ALL.len() as u64));

    print!("| message |");
    for p in Parser::ALL {
        print!(" {0} ns/msg | {0} msg/s |", p.name());
    }
    for p in &Parser::ALL[1..] {
        print!(" ours vs {} |", p.name());
    }
    println!(" ours vs fastest competitor |");
    println!("|---|{}", "---:|".repeat(Parser::ALL.len() * 3));
    for (group, per_iter) in groups {
        let ns: Vec<Option<f64>> = Parser::ALL
            .iter()
            .map(|p| estimate_ns(&dir, group, *p).map(|t| t / per_iter as f64))
            .collect();
        print!("| {group} |");
        for t in &ns {
            match t {
                Some(t) => print!(" {t:.0} | {} |", rate(1e9 / t)),
                None => print!(" n/a | n/a |"),
            }
        }
        for t in &ns[1..] {
            match (ns[0], t) {
                (Some(ours), Some(theirs)) => print!(" {:.1}x |", theirs / ours),
                _ => print!(" n/a |"),
            }
        }
        // The goal is stated against the fastest competitor, which differs by message.
        let fastest = ns[1..]
            .iter()
            .zip(&Parser::ALL[1..])
            .filter_map(|(t, p)| Some((t.as_ref()?, p)))
            .min_by(|a, b| a.0.total_cmp(b.0));
        match (ns[0], fastest) {
            (Some(ours), Some((theirs, p))) => {
                println!(" {:.1}x ({}) |", theirs / ours, p.name())
            }
            _ => println!(" n/a |"),
        }
    }
}
