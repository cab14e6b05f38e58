//! Interop matrix, pjsua2 row (issue 12): PJSIP 2.15.1 through its Python binding
//! (PyPI `pjsua2-python==2.15.1.post1`, in the venv `scripts/test` makes; the test finds
//! its Python in `PJSUA2_PYTHON`, else `target/interop-venv/bin/python`), registered as
//! alice with a password to a default `serve` over UDP, TCP and TLS, with serve on the
//! wildcard address and on 127.0.0.1.
//!
//! `tests/interop/pjsua2_alice.py` registers, sends bob a MESSAGE, calls bob
//! (`switchboard phone`) through serve playing a WAV and recording the call with
//! pjsua2's `AudioMediaRecorder`, sends DTMF (RFC 4733), holds and resumes (re-INVITEs)
//! and hangs up. Both recordings must hold the other side's signal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/interop.rs"]
mod interop;
#[path = "../../media/tests/common/mod.rs"]
mod media_common;

use common::baresip::Proc;
use interop::{Audio, Listen, PASSWORD, Row, Serve, Transport};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// A Python that can import pjsua2, or why there is none.
fn python() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("PJSUA2_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/interop-venv/bin/python"),
        ],
    };
    for python in &candidates {
        let ok = Command::new(python)
            .args(["-c", "import pjsua2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(python.clone());
        }
    }
    Err(format!(
        "no Python with pjsua2 at {candidates:?} (scripts/test makes target/interop-venv \
         with pip install pjsua2-python==2.15.1.post1; or set PJSUA2_PYTHON)"
    ))
}

fn row(transport: Transport, listen: Listen) {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            interop::say(&format!("SKIPPED: pjsua2 over {}: {why}", transport.name()));
            return;
        }
    };
    let serve = Serve::start(listen, transport == Transport::Tls, &["alice", "bob"]);
    let tmp = tempfile::tempdir().unwrap();
    let audio = Audio::new(tmp.path(), 0.0);
    let client_records = tmp.path().join("pjsua2-records.wav");
    let mut row = Row::new("pjsua2 2.15.1", transport, listen);
    let Some(mut bob) = row.check("the far end registers", || {
        interop::answering_phone(&serve, Transport::Udp, &audio)
    }) else {
        return row.finish(&serve.log());
    };
    let script = format!(
        "{}/tests/interop/pjsua2_alice.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--server", &serve.addr(transport)])
        .args(["--transport", transport.name()])
        .args(["--user", "alice", "--password", PASSWORD])
        .args(["--sip-port", &interop::free_port().to_string()])
        .args(["--rtp-port", &interop::free_port_range(4).to_string()])
        .arg("--play")
        .arg(&audio.client_tone)
        .arg("--record")
        .arg(&client_records)
        .args(["--target", &serve.bob(), "--dtmf", "15#"]);
    if transport == Transport::Tls {
        match row.check("TLS certificate from serve", || serve.certificate()) {
            Some(ca) => {
                cmd.arg("--ca").arg(ca);
            }
            None => {
                for cell in [
                    "register",
                    "MESSAGE",
                    "call",
                    "audio both ways",
                    "DTMF",
                    "hold",
                ] {
                    row.not_reached(cell, "no certificate to trust");
                }
                return row.finish(&serve.log());
            }
        }
    }
    let mut alice = Proc::spawn(cmd);
    let registered = row
        .check("register", || {
            alice.expect("registered: 200", WAIT);
        })
        .is_some();
    row.check("MESSAGE", || {
        alice.expect("message: 200", WAIT);
        bob.expect("message: from sip:alice@127.0.0.1: hello from pjsua2", WAIT);
    });
    let called = row
        .check("call", || {
            alice.expect("call: confirmed", WAIT);
            bob.expect("answered: ", WAIT);
            alice.expect("call: disconnected", Duration::from_secs(30));
            bob.expect("ended: bye (remote)", WAIT);
        })
        .is_some();
    let _ = registered;
    if bob.printed().contains("answered: ") {
        row.check("DTMF", || {
            bob.expect("ended: ", Duration::from_secs(30));
            assert_eq!(bob.expect("dtmf: ", WAIT), "dtmf: 15#", "{}", bob.printed());
        });
        row.check("hold", || {
            bob.expect("held: remote", WAIT);
            bob.expect("resumed: remote", WAIT);
        });
        row.check("audio both ways", || {
            alice.expect("done", WAIT);
            interop::assert_holds(
                "bob's recording of pjsua2",
                &audio.client_tone,
                &audio.phone_records,
            );
            interop::assert_holds(
                "pjsua2's recording of bob",
                &audio.phone_plays,
                &client_records,
            );
        });
    } else {
        for cell in ["DTMF", "hold", "audio both ways"] {
            row.not_reached(cell, "no call");
        }
    }
    let _ = called;
    let diagnostics = format!(
        "--- pjsua2:\n{}\n--- bob:\n{}\n--- serve:\n{}",
        alice.printed(),
        bob.printed(),
        serve.log()
    );
    row.finish(&diagnostics);
}

#[test]
fn pjsua2_udp_wildcard() {
    row(Transport::Udp, Listen::Wildcard);
}

#[test]
fn pjsua2_udp_specific() {
    row(Transport::Udp, Listen::Specific);
}

#[test]
fn pjsua2_tcp_wildcard() {
    row(Transport::Tcp, Listen::Wildcard);
}

#[test]
fn pjsua2_tcp_specific() {
    row(Transport::Tcp, Listen::Specific);
}

#[test]
fn pjsua2_tls_wildcard() {
    row(Transport::Tls, Listen::Wildcard);
}

#[test]
fn pjsua2_tls_specific() {
    row(Transport::Tls, Listen::Specific);
}
