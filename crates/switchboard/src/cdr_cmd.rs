//! `switchboard cdr`: prints the call detail records `serve` stored, as a table, JSON
//! or CSV, filtered by time, user and count.

use crate::user_cmd::{Database, emit, load_config, print_table};
use cdr::CallRecord;
use clap::Args;
use jiff::Timestamp;
use std::path::PathBuf;
use std::process::ExitCode;
use store::{Backend, CdrQuery, StoredCdr};

/// The arguments of `switchboard cdr`.
#[derive(Args, Debug)]
#[command(
    after_help = "Times (--since, --until) are RFC 3339 (2026-12-06T09:00:00Z, \
2026-12-06T10:00:00+01:00) or a time ago: 90s, 15m, 1h, 2d, 1w.

Examples:
  switchboard cdr                          every call, oldest first
  switchboard cdr --since 1h               the calls of the last hour
  switchboard cdr --user alice --limit 20  alice's last 20 calls (made, received or dialled)
  switchboard cdr --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z --csv > day.csv
  switchboard cdr --since 1d --json | jq '[.[] | .billable_secs] | add'

Columns: START (local time), TALK (billable seconds, from the answer to the end, a started
second counting as one), CALLER, DIALLED (as the caller dialled it), CALLEE (the user it
was routed to), RESULT (answered, busy, no_answer, failed, cancelled), ENDED BY (caller,
callee or system, and why: BYE, the final response, a timeout), LEGS (devices or numbers
rung). JSON and CSV hold every field: each leg with its target, Call-ID, times and final
status, and every Call-ID of the call.

Exit codes: 0 done (also when nothing matches); 2 a bad option; 1 anything else (an
unreadable configuration, no database)."
)]
pub struct CdrArgs {
    /// The configuration `serve` uses: its `[storage] database` holds the records.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Only calls that started at or after this time.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only calls that started before this time.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only calls this user made, received or dialled (a name or an extension).
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only the latest N calls (still printed oldest first).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print a JSON array of records instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (a header line, then one line per call) instead of a table.
    #[arg(long)]
    csv: bool,
}

/// Runs `switchboard cdr`.
pub fn run(args: CdrArgs) -> ExitCode {
    let now = Timestamp::now();
    let query = match to_query(&args, now) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| {
        let config = load_config(args.config.as_deref())?;
        if matches!(
            Backend::parse(&config.storage.database),
            Ok(Backend::Memory)
        ) {
            return Err(format!(
                "[storage] database = \"{}\" keeps call records in the server's memory only; \
                 there are none to read",
                config.storage.database
            ));
        }
        let db = Database::of(&config, args.config.as_deref())?;
        let store = db.existing_cdrs()?;
        store.query(&query).map_err(|e| e.to_string())
    })();
    let records = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let rows: Vec<serde_json::Value> = records.iter().map(to_json).collect();
        emit(serde_json::Value::Array(rows));
    } else if args.csv {
        print_csv(&records);
    } else if records.is_empty() {
        emit("no calls recorded match");
    } else {
        print_records(&records);
    }
    ExitCode::SUCCESS
}

/// The query the options ask for, times read at `now`.
fn to_query(args: &CdrArgs, now: Timestamp) -> Result<CdrQuery, String> {
    let time = |opt: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| parse_time(t, now).map_err(|e| format!("{opt} \"{t}\": {e}")))
            .transpose()
    };
    Ok(CdrQuery {
        since_ms: time("--since", &args.since)?,
        until_ms: time("--until", &args.until)?,
        user: args.user.clone(),
        limit: args.limit,
    })
}

/// A time as Unix milliseconds: RFC 3339, or a time ago (`90s`, `15m`, `1h`, `2d`,
/// `1w`) from `now`.
fn parse_time(text: &str, now: Timestamp) -> Result<u64, String> {
    let t = text.trim();
    let unit = t
        .char_indices()
        .last()
        .filter(|&(i, _)| i > 0 && t[..i].bytes().all(|b| b.is_ascii_digit()));
    if let Some((i, u)) = unit {
        let secs_per = match u {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err("expected a unit s, m, h, d or w after the number".into()),
        };
        let n: u64 = t[..i].parse().map_err(|_| "the number is too large")?;
        let ago_ms = n
            .checked_mul(secs_per * 1000)
            .ok_or("the number is too large")?;
        return Ok(ms_of(now).saturating_sub(ago_ms));
    }
    let ts: Timestamp = t.parse().map_err(|_| {
        "expected RFC 3339 (2026-12-06T09:00:00Z, or with an offset such as +01:00) or a \
         time ago (90s, 15m, 1h, 2d, 1w)"
            .to_owned()
    })?;
    Ok(ms_of(ts))
}

fn ms_of(ts: Timestamp) -> u64 {
    u64::try_from(ts.as_millisecond()).unwrap_or(0)
}

/// A stored time as RFC 3339 in UTC, with milliseconds.
fn rfc3339(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|m| Timestamp::from_millisecond(m).ok())
        .map_or_else(|| ms.to_string(), |t| format!("{t:.3}"))
}

/// A stored time in the local time zone, to the second, for the table.
fn local(ms: u64, tz: &jiff::tz::TimeZone) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|m| Timestamp::from_millisecond(m).ok())
        .map_or_else(
            || ms.to_string(),
            |t| {
                t.to_zoned(tz.clone())
                    .strftime("%Y-%m-%d %H:%M:%S")
                    .to_string()
            },
        )
}

fn to_json(s: &StoredCdr) -> serde_json::Value {
    let r = &s.record;
    let legs: Vec<serde_json::Value> = r
        .legs
        .iter()
        .map(|l| {
            serde_json::json!({
                "target": l.target,
                "call_id": l.call_id,
                "start": rfc3339(l.start_ms),
                "answer": l.answer_ms.map(rfc3339),
                "end": rfc3339(l.end_ms),
                "status": l.status,
            })
        })
        .collect();
    serde_json::json!({
        "id": s.id,
        "kind": r.kind.as_str(),
        "caller": r.caller,
        "dialled": r.dialled,
        "callee": r.callee,
        "start": rfc3339(r.start_ms),
        "answer": r.answer_ms.map(rfc3339),
        "end": rfc3339(r.end_ms),
        "duration_ms": r.duration_ms(),
        "billable_secs": r.billable_secs(),
        "disposition": r.disposition.as_str(),
        "hangup_by": r.hangup_by.as_str(),
        "hangup_reason": r.hangup_reason,
        "trunk": r.trunk,
        "call_ids": r.call_ids,
        "legs": legs,
    })
}

/// The legs in one cell: each target with its final status.
fn legs_cell(r: &CallRecord) -> String {
    r.legs
        .iter()
        .map(|l| match l.status {
            Some(s) => format!("{} {s}", l.target),
            None => l.target.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_records(records: &[StoredCdr]) {
    let tz = jiff::tz::TimeZone::system();
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|s| {
            let r = &s.record;
            let talk = match r.answer_ms {
                Some(_) => format!("{} s", r.billable_secs()),
                None => "-".into(),
            };
            [
                local(r.start_ms, &tz),
                talk,
                r.caller.clone(),
                r.dialled.clone(),
                r.callee.clone().unwrap_or_else(|| "-".into()),
                r.disposition.as_str().to_owned(),
                format!("{} ({})", r.hangup_by, r.hangup_reason),
                legs_cell(r),
            ]
        })
        .collect();
    print_table(
        &[
            "START", "TALK", "CALLER", "DIALLED", "CALLEE", "RESULT", "ENDED BY", "LEGS",
        ],
        &rows,
    );
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn print_csv(records: &[StoredCdr]) {
    emit(
        "id,start,answer,end,billable_secs,caller,dialled,callee,disposition,hangup_by,\
         hangup_reason,kind,trunk,call_ids,legs",
    );
    for s in records {
        let r = &s.record;
        let fields = [
            s.id.to_string(),
            rfc3339(r.start_ms),
            r.answer_ms.map(rfc3339).unwrap_or_default(),
            rfc3339(r.end_ms),
            r.billable_secs().to_string(),
            r.caller.clone(),
            r.dialled.clone(),
            r.callee.clone().unwrap_or_default(),
            r.disposition.as_str().to_owned(),
            r.hangup_by.as_str().to_owned(),
            r.hangup_reason.clone(),
            r.kind.as_str().to_owned(),
            r.trunk.clone().unwrap_or_default(),
            r.call_ids.join(" "),
            legs_cell(r),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        emit(line.join(","));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn times_absolute_and_ago() {
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let at = |s| parse_time(s, now);
        assert_eq!(at("2026-12-06T09:00:00Z").unwrap(), ms_of(now) - 3_600_000);
        assert_eq!(
            at("2026-12-06T10:00:00+01:00").unwrap(),
            ms_of(now) - 3_600_000
        );
        assert_eq!(at("90s").unwrap(), ms_of(now) - 90_000);
        assert_eq!(at("15m").unwrap(), ms_of(now) - 900_000);
        assert_eq!(at("1h").unwrap(), ms_of(now) - 3_600_000);
        assert_eq!(at("2d").unwrap(), ms_of(now) - 2 * 86_400_000);
        assert_eq!(at("1w").unwrap(), ms_of(now) - 604_800_000);
        assert!(at("3y").unwrap_err().contains("unit s, m, h, d or w"));
        assert!(at("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(at("h").is_err());
        assert!(
            at("99999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_times_print_in_utc() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("486 \"Busy\""), "\"486 \"\"Busy\"\"\"");
        assert_eq!(rfc3339(1_765_000_000_123), "2025-12-06T05:46:40.123Z");
    }
}
