//! Issue 14, call detail records, with the real binary on loopback: `switchboard
//! phone`s registered to `serve` call each other through the proxy, and the rows
//! `switchboard cdr --json` prints match what happened in each call: answered and hung
//! up by the caller, answered and hung up by the callee, busy, cancelled by the caller,
//! and no answer (Timer C); the disposition, who hung up, the billable seconds (within
//! a second), the callee and the legs. Then the filters (--user, --limit, --since), the
//! table and the CSV; `[cdr] enabled = false` keeps none; a call up when the server
//! stops is recorded as ended by the system.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, ServerOptions, binary, free_port};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

/// A `switchboard phone` whose output goes to a file, killed when dropped.
struct Phone {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phone {
    fn start(server: &Server, user: &str, args: &[&str]) -> Phone {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.txt");
        let srv = format!("127.0.0.1:{}", server.port);
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new(binary())
            .arg("phone")
            .args(["--user", user, "--password", "pw", "--server", &srv])
            .args(["--domain", "example.test", "--listen", &listen])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err.txt")).unwrap())
            .spawn()
            .unwrap();
        Phone {
            child,
            out,
            _dir: dir,
        }
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn expect(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.printed().contains(what) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the phone did not print {what:?}:\n{}", self.printed());
    }

    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the phone did not exit:\n{}", self.printed());
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server (Timer C 3 s: the no-answer case ends soon) with alice and bob, bob with
/// extension 202.
fn start_server(extra_toml: &str) -> Server {
    let mut server = Server::start_stopped(ServerOptions {
        extra_toml: format!("[proxy]\ntimer_c_secs = 3\n{extra_toml}"),
        ..ServerOptions::default()
    });
    for (name, ext) in [("alice", "201"), ("bob", "202")] {
        let out = server.cli(&["user", "add", name, "--password", "pw", "--extension", ext]);
        assert!(out.status.success(), "{out:?}");
    }
    server.spawn();
    server
}

/// bob, registered, answering as `args` say.
fn bob(server: &Server, args: &[&str]) -> Phone {
    let bob = Phone::start(
        server,
        "bob",
        &[&["answer", "--calls", "1"][..], args].concat(),
    );
    bob.expect("registered: sip:bob@example.test");
    bob
}

/// alice calls 202 (bob) with `args`; her exit code.
fn alice_calls(server: &Server, args: &[&str]) -> i32 {
    let mut alice = Phone::start(
        server,
        "alice",
        &[&["call", "sip:202@example.test"][..], args].concat(),
    );
    alice.exit_code()
}

fn cdr(server: &Server, args: &[&str]) -> String {
    let out = server.cli(&[&["cdr"][..], args].concat());
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn cdr_json(server: &Server, args: &[&str]) -> Vec<Value> {
    let text = cdr(server, &[&["--json"][..], args].concat());
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The records, once `n` are stored (the writer batches them).
fn records(server: &Server, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = cdr_json(server, &[]);
        if rows.len() >= n || Instant::now() > deadline {
            assert_eq!(rows.len(), n, "{rows:#?}\nlog:\n{}", server.log());
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ms(v: &Value) -> i64 {
    let t: jiff::Timestamp = v.as_str().unwrap().parse().unwrap();
    t.as_millisecond()
}

/// Checks one row: disposition, who hung up, the reason's start, billable seconds.
fn check(
    row: &Value,
    disposition: &str,
    by: &str,
    reason: &str,
    billable: std::ops::RangeInclusive<u64>,
) {
    let what = format!("{row:#}");
    assert_eq!(row["kind"], "proxied", "{what}");
    assert_eq!(row["caller"], "alice", "{what}");
    assert_eq!(row["dialled"], "202", "{what}");
    assert_eq!(row["callee"], "bob", "{what}");
    assert_eq!(row["disposition"], disposition, "{what}");
    assert_eq!(row["hangup_by"], by, "{what}");
    assert!(
        row["hangup_reason"].as_str().unwrap().starts_with(reason),
        "{what}"
    );
    let secs = row["billable_secs"].as_u64().unwrap();
    assert!(billable.contains(&secs), "billable {secs}: {what}");
    assert_eq!(row["trunk"], Value::Null, "{what}");
    let call_ids = row["call_ids"].as_array().unwrap();
    assert_eq!(call_ids.len(), 1, "{what}");
    let legs = row["legs"].as_array().unwrap();
    assert_eq!(legs.len(), 1, "one registered phone: {what}");
    assert_eq!(legs[0]["call_id"], call_ids[0], "{what}");
    assert!(
        legs[0]["target"]
            .as_str()
            .unwrap()
            .starts_with("sip:bob@127.0.0.1:"),
        "{what}"
    );
    assert!(ms(&row["start"]) <= ms(&row["end"]), "{what}");
    if disposition == "answered" {
        assert_eq!(legs[0]["status"], 200, "{what}");
        assert!(ms(&row["start"]) <= ms(&row["answer"]), "{what}");
    } else {
        assert_eq!(row["answer"], Value::Null, "{what}");
    }
}

#[test]
fn each_call_leaves_a_record_that_matches_what_happened() {
    let mut server = start_server("");

    // 1. Answered; alice hangs up 2 s after the answer.
    let mut b = bob(&server, &["--auto"]);
    assert_eq!(alice_calls(&server, &["--hangup-after", "2"]), 0);
    // bob exits after the call, unregistered: the next bob is the only binding.
    b.exit_code();
    let rows = records(&server, 1);
    check(&rows[0], "answered", "caller", "BYE", 2..=3);
    let talk = ms(&rows[0]["end"]) - ms(&rows[0]["answer"]);
    assert!((1_800..=2_800).contains(&talk), "talked {talk} ms");

    // 2. Answered; bob hangs up after 1.5 s.
    let mut b = bob(&server, &["--auto", "--hangup-after", "1.5"]);
    assert_eq!(alice_calls(&server, &[]), 0);
    b.exit_code();
    let rows = records(&server, 2);
    check(&rows[1], "answered", "callee", "BYE", 1..=3);

    // 3. Busy.
    let mut b = bob(&server, &["--reject", "486"]);
    assert_ne!(alice_calls(&server, &[]), 0);
    b.exit_code();
    let rows = records(&server, 3);
    check(&rows[2], "busy", "callee", "486", 0..=0);
    assert_eq!(rows[2]["legs"][0]["status"], 486);

    // 4. Ringing; alice gives up after 1 s: CANCEL, 487.
    let mut b = bob(&server, &[]);
    assert_ne!(alice_calls(&server, &["--answer-timeout", "1"]), 0);
    b.exit_code();
    let rows = records(&server, 4);
    check(&rows[3], "cancelled", "caller", "487", 0..=0);
    assert_eq!(rows[3]["legs"][0]["status"], 487);
    let rang = ms(&rows[3]["end"]) - ms(&rows[3]["start"]);
    assert!((700..=3_000).contains(&rang), "rang {rang} ms");

    // 5. Ringing, nobody answers: Timer C (3 s) ends it with 408.
    let mut b = bob(&server, &[]);
    assert_ne!(alice_calls(&server, &["--answer-timeout", "10"]), 0);
    b.exit_code();
    let rows = records(&server, 5);
    check(&rows[4], "no_answer", "system", "408", 0..=0);
    let rang = ms(&rows[4]["end"]) - ms(&rows[4]["start"]);
    assert!((2_500..=5_000).contains(&rang), "rang {rang} ms");

    // Filters: by user (name or extension), the latest N, a time ago.
    assert_eq!(cdr_json(&server, &["--user", "bob"]).len(), 5);
    assert_eq!(cdr_json(&server, &["--user", "202"]).len(), 5);
    assert_eq!(cdr_json(&server, &["--user", "carol"]).len(), 0);
    let last2 = cdr_json(&server, &["--limit", "2"]);
    assert_eq!(
        (
            last2[0]["disposition"].as_str(),
            last2[1]["disposition"].as_str()
        ),
        (Some("cancelled"), Some("no_answer"))
    );
    assert_eq!(cdr_json(&server, &["--since", "10m"]).len(), 5);
    assert_eq!(cdr_json(&server, &["--until", "10m"]).len(), 0);
    assert_eq!(
        cdr_json(
            &server,
            &[
                "--since",
                "2000-01-01T00:00:00Z",
                "--until",
                "2100-01-01T00:00:00Z"
            ]
        )
        .len(),
        5
    );

    // The table and the CSV.
    let table = cdr(&server, &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("START") && lines[0].contains("ENDED BY"),
        "{table}"
    );
    assert_eq!(lines.len(), 6, "{table}");
    assert!(
        lines[3].contains("busy") && lines[3].contains("callee (486"),
        "{table}"
    );
    let csv = cdr(&server, &["--csv", "--user", "alice"]);
    let csv: Vec<&str> = csv.lines().collect();
    assert!(
        csv[0].starts_with("id,start,answer,end,billable_secs,caller"),
        "{csv:?}"
    );
    assert_eq!(csv.len(), 6, "{csv:?}");

    // A bad time is refused with exit code 2, naming the option.
    let out = server.cli(&["cdr", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since \"yesterday\""));

    // 6. A call up when the server stops is recorded as ended by the system.
    let _b = bob(&server, &["--auto"]);
    let alice = Phone::start(&server, "alice", &["call", "sip:202@example.test"]);
    alice.expect("answered: ");
    server.stop();
    let rows = records(&server, 6);
    check(&rows[5], "answered", "system", "server stopped", 0..=2);
}

#[test]
fn no_records_when_disabled_and_none_for_strangers() {
    let server = start_server("[cdr]\nenabled = false\n");
    let b = bob(&server, &["--auto"]);
    assert_eq!(alice_calls(&server, &["--hangup-after", "0.2"]), 0);
    drop(b);
    std::thread::sleep(Duration::from_millis(500));
    assert!(cdr_json(&server, &[]).is_empty());
    assert_eq!(cdr(&server, &[]).trim(), "no calls recorded match");

    // Records on: a caller with the wrong password, straight to the server (no
    // registration), is challenged, never reaches anyone, and leaves no record.
    let server = start_server("");
    let b = bob(&server, &["--auto"]);
    let target = format!("sip:202@127.0.0.1:{}", server.port);
    let mut mallory = Command::new(binary())
        .args(["phone", "--user", "alice", "--password", "wrong"])
        .args([
            "--domain",
            "example.test",
            "call",
            &target,
            "--answer-timeout",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = mallory.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the stranger's phone did not give up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    drop(b);
    std::thread::sleep(Duration::from_millis(500));
    assert!(cdr_json(&server, &[]).is_empty(), "{}", server.log());
}
