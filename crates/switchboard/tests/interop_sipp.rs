//! Interop matrix, SIPp row (issue 12): Debian's SIPp 3.6.1 (`sip-tester`, installed by
//! `scripts/test`; built without TLS) as alice with a password against a default
//! `serve` over UDP and TCP, with serve on the wildcard address and on 127.0.0.1.
//!
//! SIPp has no REGISTER, MESSAGE or authenticated call of its own, so the scenarios
//! are ours (`tests/sipp/interop_*.xml`) and the digest is SIPp's (`-au`/`-ap`, its
//! defaults otherwise). The call reaches bob (`switchboard phone`) through serve; SIPp
//! echoes the RTP it receives (`-rtp_echo`), so bob's recording holds what bob played
//! only if audio went both ways; DTMF is RFC 4733 from the captures sip-tester ships;
//! hold and resume are re-INVITEs along the record-routed dialog.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/interop.rs"]
mod interop;
#[path = "../../media/tests/common/mod.rs"]
mod media_common;

use interop::{Audio, Listen, PASSWORD, Row, Serve, Transport};
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);
/// Debian's SIPp; another build may come first in PATH.
const SIPP: &str = "/usr/bin/sipp";

/// Runs SIPp's `scenario` as alice against serve over `transport`, bounded in time;
/// returns its exit code (0: the scenario passed) and what it printed.
fn sipp(serve: &Serve, transport: Transport, scenario: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(SIPP)
        .current_dir(dir.path())
        .arg(serve.addr(transport))
        .args(["-sf", &file, "-s", "alice", "-au", "alice", "-ap", PASSWORD])
        .args(["-i", "127.0.0.1", "-p", &interop::free_port().to_string()])
        .args(["-m", "1", "-nostdin", "-trace_err", "-timeout", "30s"])
        .arg("-timeout_error")
        .args([
            "-t",
            if transport == Transport::Tcp {
                "t1"
            } else {
                "u1"
            },
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with("errors.log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    // The last screen is enough to see where a scenario stopped.
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    (out.status.code().unwrap_or(-1), tail.join("\n"))
}

fn row(transport: Transport, listen: Listen) {
    if !interop::installed(SIPP) {
        interop::say(
            "SKIPPED: /usr/bin/sipp is not installed (scripts/test installs Debian's sip-tester)",
        );
        return;
    }
    let serve = Serve::start(listen, false, &["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let audio = Audio::new(tmp.path(), 0.0);
    let mut row = Row::new("SIPp 3.6.1", transport, listen);
    let Some(mut bob) = row.check("the far end registers", || {
        interop::answering_phone(&serve, Transport::Udp, &audio)
    }) else {
        return row.finish(&serve.log());
    };
    let mut printed = String::new();

    let (code, out) = sipp(&serve, transport, "interop_register.xml", &[]);
    printed.push_str(&format!("--- sipp register:\n{out}\n"));
    row.check("register", || {
        assert_eq!(code, 0, "SIPp's REGISTER scenario failed:\n{out}");
        assert!(
            serve.location().contains("sip:alice@"),
            "{}",
            serve.location()
        );
    });

    let (code, out) = sipp(&serve, transport, "interop_message.xml", &[]);
    printed.push_str(&format!("--- sipp message:\n{out}\n"));
    row.check("MESSAGE", || {
        assert_eq!(code, 0, "SIPp's MESSAGE scenario failed:\n{out}");
        bob.expect("message: from sip:alice@127.0.0.1: hello from sipp", WAIT);
    });

    let media_port = interop::free_port_range(4).to_string();
    let (code, out) = sipp(
        &serve,
        transport,
        "interop_call.xml",
        &["-mp", &media_port, "-rtp_echo"],
    );
    printed.push_str(&format!("--- sipp call:\n{out}\n"));
    let called = row
        .check("call", || {
            bob.expect("answered: ", WAIT);
            bob.expect("ended: bye (remote)", WAIT);
            assert_eq!(code, 0, "SIPp's call scenario failed:\n{out}");
        })
        .is_some();
    let answered = bob.printed().contains("answered: ");
    if answered {
        row.check("audio both ways", || {
            bob.expect("ended: ", WAIT);
            interop::wait_for_file(&audio.phone_records, WAIT);
            interop::assert_holds(
                "bob's recording of his own audio, echoed by SIPp",
                &audio.phone_plays,
                &audio.phone_records,
            );
        });
        row.check("DTMF", || {
            // Each digit once: the summary bob prints when the call ends.
            bob.expect("ended: ", WAIT);
            let digits = bob.expect("dtmf: ", WAIT);
            assert_eq!(digits, "dtmf: 1#", "{}", bob.printed());
        });
        row.check("hold", || {
            bob.expect("held: remote", WAIT);
            bob.expect("resumed: remote", WAIT);
        });
    } else {
        for cell in ["audio both ways", "DTMF", "hold"] {
            row.not_reached(cell, "no call");
        }
    }
    let _ = called;
    let diagnostics = format!(
        "{printed}--- bob:\n{}\n--- serve:\n{}",
        bob.printed(),
        serve.log()
    );
    row.finish(&diagnostics);
}

#[test]
fn sipp_udp_wildcard() {
    row(Transport::Udp, Listen::Wildcard);
}

#[test]
fn sipp_udp_specific() {
    row(Transport::Udp, Listen::Specific);
}

#[test]
fn sipp_tcp_wildcard() {
    row(Transport::Tcp, Listen::Wildcard);
}

#[test]
fn sipp_tcp_specific() {
    row(Transport::Tcp, Listen::Specific);
}

/// The TLS cell is "not applicable": Debian builds SIPp without TLS. This checks that
/// it still is so (a SIPp with TLS would need a TLS row here).
#[test]
fn sipp_has_no_tls() {
    if !interop::installed(SIPP) {
        interop::say("SKIPPED: /usr/bin/sipp is not installed");
        return;
    }
    let out = Command::new(SIPP)
        .args([
            "-t",
            "l1",
            "-sn",
            "uac",
            "127.0.0.1:9",
            "-m",
            "1",
            "-nostdin",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("compile SIPp with OpenSSL"),
        "this SIPp may have TLS: add a TLS row to the matrix\n{text}"
    );
    interop::say("SIPp 3.6.1 over TLS: not applicable, Debian builds SIPp without TLS");
}
